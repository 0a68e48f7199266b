// Connection reuse and pipelining in the engine, against loopback servers that count their connections.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  acceptAll,
  dropAfterRset,
  greylistOnce,
  pathOf,
  pipelining,
  refuseMailAfter,
  refuseNullSender,
  rejectSecondRcpt,
  startSmtpServer,
  testCertificate,
  usersOnly,
} from '../support/smtp-server.js';
import type { SmtpScript } from '../support/smtp-server.js';
import type { VerifyResult } from '../../src/verify/types.js';
import { mxZone, world, worldMaker } from './fixture.js';
import { until } from '../support/wait.js';
import { ManualTimers } from '../support/manual-time.js';

const make = worldMaker();

const MX = '127.0.0.2';
const DOMAINS = ['a.test', 'b.test', 'c.test', 'd.test', 'e.test'];
const sameMx = mxZone(Object.fromEntries(DOMAINS.map((d) => [d, MX])));

async function inTurn(engine: { verify(a: string): Promise<VerifyResult> }, addresses: string[]): Promise<VerifyResult[]> {
  const results: VerifyResult[] = [];
  for (const address of addresses) results.push(await engine.verify(address));
  return results;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('connection reuse', () => {
  it('one connection for several callouts to one exchanger address, each domain with its own catch-all probe', async () => {
    const w = await make(sameMx, { [MX]: usersOnly(['alice']) });
    const engine = w.engine();
    // Four random probes and bob: five refused RCPTs, as many as callout.connectionCache.maxRejectedRecipients allows.
    const domains = DOMAINS.slice(0, 4);
    const results = await inTurn(engine, [...domains.map((d) => `alice@${d}`), 'bob@a.test']);
    assert.deepEqual(results.map((r) => r.verdict), ['deliverable', 'deliverable', 'deliverable', 'deliverable', 'undeliverable']);
    assert.ok(results.every((r) => r.catchAll === 'refused'), 'results.every((r) => r.catchAll === \'refused\')');
    assert.equal(w.connections(MX), 1);
    const commands = w.commands(MX);
    assert.equal(commands.filter((c) => c.startsWith('EHLO')).length, 1);
    for (const d of domains) assert.equal(commands.filter((c) => new RegExp(`^RCPT TO:<callout-[a-z0-9]{12}@${d.replace('.', '\\.')}>$`).test(c)).length, 1, d);
    // The QUIT is written and its 221 not waited for: it may still be on its way.
    assert.ok(await until(() => w.commands(MX).at(-1) === 'QUIT'), 'closed after the fifth refused RCPT');
    assert.match(results[1]!.attempts[0]!.transcript[0]!.line, /^reusing the connection opened \d+ ms ago \(callout 2 on it\)$/);
    assert.equal(results[1]!.attempts[0]!.transcript.filter((e) => e.dir === 'sent')[0]!.line, 'MAIL FROM:<>', 'a reused dialogue starts at MAIL');
    assert.equal(engine.connections.stats.reused, 4);
    assert.equal(engine.connections.size, 0);
  });

  it('idle() closes the idle connections with QUIT', async () => {
    const w = await make(sameMx, { [MX]: usersOnly(['alice']) });
    const engine = w.engine();
    await engine.verify('alice@a.test');
    assert.equal(engine.connections.size, 1);
    assert.notEqual(w.commands(MX).at(-1), 'QUIT');
    await engine.idle();
    assert.equal(engine.connections.size, 0);
    assert.equal(w.commands(MX).at(-1), 'QUIT');
  });

  it('no more than limits.addressesPerConnection RCPTs on one connection in all, the probes included', async () => {
    const w = await make(sameMx, { [MX]: usersOnly(['alice']) });
    // Each callout sends two RCPTs (the random probe and alice): two callouts fill a connection.
    const engine = w.engine({ limits: { addressesPerConnection: 4 } });
    await inTurn(engine, DOMAINS.map((d) => `alice@${d}`));
    assert.equal(w.connections(MX), 3);
    assert.ok(await until(() => w.smtp.get(MX)!.sessions.slice(0, 2).every((s) => s.commands.at(-1) === 'QUIT')), 'a spent connection is closed with QUIT');
  });

  it('a connection that has answered limits.addressesPerConnection RCPTs is closed with QUIT at once, not parked', async () => {
    const w = await make(sameMx, { [MX]: usersOnly(['alice']) });
    const engine = w.engine({ limits: { addressesPerConnection: 4 } });
    await inTurn(engine, ['alice@a.test', 'alice@b.test']);
    assert.equal(engine.connections.size, 0);
    assert.ok(await until(() => w.smtp.get(MX)!.sessions[0]!.commands.at(-1) === 'QUIT'), 'await until(() => w.smtp.get(MX)!.sessions[0]!.commands.at(-1) === \'QUIT\')');
  });

  it('a batch that does not fit in what is left of an idle connection gets a new one, and the idle one is closed', async () => {
    const w = await make(sameMx, { [MX]: usersOnly(['alice']) });
    const engine = w.engine({ limits: { addressesPerConnection: 3 } });
    await engine.verify('alice@a.test');
    const batch = await engine.verifyMany(['alice@b.test', 'x@b.test', 'y@b.test']);
    assert.deepEqual(batch.map((r) => r.verdict), ['deliverable', 'undeliverable', 'undeliverable']);
    assert.equal(w.connections(MX), 2);
    assert.equal(w.smtp.get(MX)!.sessions[0]!.commands.at(-1), 'QUIT');
  });

  it('the random probe a callout will send counts when it asks an idle connection for room', async () => {
    const w = await make(sameMx, { [MX]: usersOnly(['alice']) });
    const engine = w.engine({ limits: { addressesPerConnection: 3 } });
    // Two RCPTs (random probe, alice) on the first; b.test's two more would make four.
    await inTurn(engine, ['alice@a.test', 'alice@b.test']);
    assert.equal(w.connections(MX), 2);
    const rcpts = w.smtp.get(MX)!.sessions.map((session) => session.commands.filter((c) => c.startsWith('RCPT')).length);
    assert.ok(rcpts.every((n) => n <= 3), `RCPTs per connection: ${rcpts.join(', ')}`);
  });

  it('closes a connection after callout.connectionCache.maxRejectedRecipients refused RCPTs', async () => {
    const w = await make(sameMx, { [MX]: usersOnly(['alice']) });
    // Each callout's random probe is refused: one refusal per callout.
    const engine = w.engine({ callout: { connectionCache: { maxRejectedRecipients: 2 } } });
    await inTurn(engine, DOMAINS.map((d) => `alice@${d}`));
    assert.equal(w.connections(MX), 3);
  });

  it('an idle connection expires after idleTime by the engine clock', async () => {
    const w = await make(sameMx, { [MX]: usersOnly(['alice']) });
    const engine = w.engine();
    await engine.verify('alice@a.test');
    // Idle for idleTime (2 s) exactly is idle too long.
    w.clock.advance(2_000);
    const r = await engine.verify('alice@b.test');
    assert.equal(r.verdict, 'deliverable');
    assert.equal(w.connections(MX), 2);
    assert.equal(w.smtp.get(MX)!.sessions[0]!.commands.at(-1), 'QUIT');
  });

  it('an idle connection is closed with QUIT when its idle time runs out', async () => {
    const w = await make(sameMx, { [MX]: usersOnly(['alice']) });
    const timers = new ManualTimers({ wall: w.clock });
    const engine = w.engine({}, undefined, undefined, timers);
    await engine.verify('alice@a.test');
    assert.deepEqual([engine.connections.size, timers.waiting], [1, 1], 'parked, its idle timer set');
    // Idle for idleTime (2 s) exactly is idle too long.
    await timers.advance(1_999);
    assert.equal(engine.connections.size, 1);
    await timers.advance(1);
    assert.equal(engine.connections.size, 0);
    assert.ok(await until(() => w.smtp.get(MX)!.sessions[0]!.commands.at(-1) === 'QUIT'), 'await until(() => w.smtp.get(MX)!.sessions[0]!.commands.at(-1) === \'QUIT\')');
  });

  it('a connection the server closed while idle is replaced by a new one, with the right verdict', async () => {
    const w = await make(sameMx, { [MX]: { ...usersOnly(['alice']), rset: () => ({ reply: '250 2.0.0 Ok', later: { afterMs: 30, drop: true } }) } });
    const engine = w.engine({ callout: { randomProbe: false } });
    await engine.verify('alice@a.test');
    await sleep(150);
    const r = await engine.verify('nobody@b.test');
    assert.equal(r.verdict, 'undeliverable');
    assert.equal(w.connections(MX), 2);
  });

  it('an unasked 421 while idle closes the connection; the next callout connects again', async () => {
    const w = await make(sameMx, { [MX]: { ...usersOnly(['alice']), rset: () => ({ reply: '250 2.0.0 Ok', later: { afterMs: 30, reply: '421 4.4.2 mx.callout.test Error: timeout exceeded' } }) } });
    const engine = w.engine({ callout: { randomProbe: false } });
    await engine.verify('alice@a.test');
    await sleep(150);
    assert.equal((await engine.verify('alice@b.test')).verdict, 'deliverable');
    assert.equal(w.connections(MX), 2);
  });

  it('a connection dropped as the next callout starts on it falls back to a new connection', async () => {
    // The server closes right after answering RSET: the client may still think the session idle.
    const w = await make(sameMx, { [MX]: { ...usersOnly(['alice']), ...dropAfterRset() } });
    const engine = w.engine({ callout: { randomProbe: false } });
    const results = await inTurn(engine, ['alice@a.test', 'nobody@b.test', 'alice@c.test']);
    assert.deepEqual(results.map((r) => r.verdict), ['deliverable', 'undeliverable', 'deliverable']);
    assert.equal(w.connections(MX), 3);
  });

  for (const [label, reply] of [
    ['421', '421 4.7.0 mx.callout.test Error: too many transactions'],
    ['a 5xx refusing the null sender', '550 5.7.1 No more mail from you on this connection'],
    ['a 4xx', '451 4.3.0 Try again later'],
  ] as const) {
    it(`${label} at MAIL on a reused connection: the callout runs again on a new one, never a wrong verdict`, async () => {
      const w = await make(sameMx, { [MX]: { ...usersOnly(['alice']), ...refuseMailAfter(1, reply) } });
      const engine = w.engine({ callout: { randomProbe: false } });
      const [first, second] = await inTurn(engine, ['alice@a.test', 'alice@b.test']);
      assert.equal(first!.verdict, 'deliverable');
      assert.equal(second!.verdict, 'deliverable');
      assert.equal(second!.reason, 'accepted');
      assert.equal(w.connections(MX), 2);
      assert.equal(second!.attempts.length, 2);
      assert.match(second!.attempts[0]!.outcome, /reused connection is given up/);
      assert.equal(second!.attempts[1]!.transcript.filter((e) => e.dir === 'sent')[0]!.line, 'EHLO verifier.callout.test');
    });
  }

  it('a refusal of us at RCPT on a reused connection is checked again on a new one', async () => {
    let rcpts = 0;
    const w = await make(sameMx, {
      [MX]: { rcpt: (_arg, session) => (++rcpts > 1 && session.commands.filter((c) => c.startsWith('MAIL')).length > 1 ? '550 5.7.1 Too many errors from your host' : '250 2.1.5 Ok') },
    });
    const engine = w.engine({ callout: { randomProbe: false } });
    const [, second] = await inTurn(engine, ['alice@a.test', 'bob@b.test']);
    assert.equal(second!.verdict, 'deliverable', 'the new connection answers');
    assert.equal(w.connections(MX), 2);
  });

  it('421 to the RSET before parking: the connection is not kept', async () => {
    const w = await make(sameMx, { [MX]: { ...usersOnly(['alice']), rset: () => '421 4.3.2 Shutting down' } });
    const engine = w.engine({ callout: { randomProbe: false } });
    const results = await inTurn(engine, ['alice@a.test', 'alice@b.test']);
    assert.ok(results.every((r) => r.verdict === 'deliverable'), 'results.every((r) => r.verdict === \'deliverable\')');
    assert.equal(w.connections(MX), 2);
    assert.equal(engine.connections.size, 0);
  });

  it('a 5xx to the RSET before parking: the connection is not kept, and is left with QUIT (RFC 5321 §4.1.1.10)', async () => {
    const w = await make(sameMx, { [MX]: { ...usersOnly(['alice']), rset: () => '502 5.5.2 Command not recognized' } });
    const engine = w.engine({ callout: { randomProbe: false } });
    assert.equal((await engine.verify('alice@a.test')).verdict, 'deliverable');
    assert.equal(engine.connections.size, 0);
    assert.ok(await until(() => w.smtp.get(MX)!.sessions[0]!.commands.at(-1) === 'QUIT'), 'QUIT after the refused RSET');
  });

  it('no reuse after a temporary failure (greylisting)', async () => {
    const w = await make(sameMx, { [MX]: greylistOnce() });
    const engine = w.engine({ callout: { randomProbe: false } });
    const [first, second] = await inTurn(engine, ['alice@a.test', 'alice@b.test']);
    assert.equal(first!.reason, 'greylisted');
    assert.equal(second!.reason, 'greylisted');
    assert.equal(w.connections(MX), 2);
    assert.ok(await until(() => w.smtp.get(MX)!.sessions.every((s) => s.commands.at(-1) === 'QUIT')), 'await until(() => w.smtp.get(MX)!.sessions.every((s) => s.commands.at(-1) === \'QUIT\'))');
  });

  it('no reuse after MAIL FROM:<> was refused (the fallback sender answers)', async () => {
    const w = await make(sameMx, { [MX]: { ...usersOnly(['alice']), ...refuseNullSender() } });
    const engine = w.engine({ callout: { fallbackSender: 'verify@callout.test' } });
    const results = await inTurn(engine, ['alice@a.test', 'alice@b.test']);
    assert.ok(results.every((r) => r.reason === 'null-sender-refused'), 'results.every((r) => r.reason === \'null-sender-refused\')');
    assert.equal(w.connections(MX), 2);
  });

  it('keeps at most maxIdlePerHost idle connections to one address', async () => {
    const w = await make(sameMx, { [MX]: { ...usersOnly(['alice']), greeting: () => ({ reply: '220 mx ESMTP', delayMs: 300 }) } });
    const engine = w.engine({ callout: { connectionCache: { maxIdlePerHost: 2 } } });
    const results = await Promise.all(DOMAINS.slice(0, 4).map((d) => engine.verify(`alice@${d}`)));
    assert.ok(results.every((r) => r.verdict === 'deliverable'), 'results.every((r) => r.verdict === \'deliverable\')');
    assert.equal(w.connections(MX), 4);
    assert.equal(engine.connections.size, 2);
    await until(() => w.smtp.get(MX)!.sessions.filter((s) => s.commands.at(-1) === 'QUIT').length >= 2);
    assert.equal(w.smtp.get(MX)!.sessions.filter((s) => s.commands.at(-1) === 'QUIT').length, 2);
  });

  it('keeps at most maxIdle idle connections in all, closing the longest idle', async () => {
    const hosts = ['127.0.0.2', '127.0.0.3', '127.0.0.4'];
    const w = await make(mxZone({ 'a.test': hosts[0]!, 'b.test': hosts[1]!, 'c.test': hosts[2]! }), Object.fromEntries(hosts.map((h) => [h, usersOnly(['alice'])])));
    const engine = w.engine({ callout: { connectionCache: { maxIdle: 2 } } });
    for (const address of ['alice@a.test', 'alice@b.test', 'alice@c.test']) {
      await engine.verify(address);
      // Parked at distinct times, so that "longest idle" names one of them.
      w.clock.advance(100);
    }
    assert.equal(engine.connections.size, 2);
    await engine.verify('alice@a.test'.replace('alice', 'bob'));
    assert.equal(w.connections('127.0.0.2'), 2, 'the first, longest idle, was closed');
  });

  it('the per-host concurrency limit still counts every callout on a reused connection', async () => {
    const w = await make(sameMx, { [MX]: { ...usersOnly(['alice']), rcpt: (arg) => ({ reply: /alice/.test(arg) ? '250 2.1.5 Ok' : '550 5.1.1 Unknown', delayMs: 300 }) } });
    const engine = w.engine({ limits: { perHostConcurrency: 1 } });
    await engine.verify('alice@a.test');
    const [b, c] = await Promise.all([engine.verify('alice@b.test'), engine.verify('alice@c.test')]);
    assert.deepEqual([b!.verdict, c!.reason].sort(), ['deliverable', 'rate-limited'].sort());
    assert.equal(w.connections(MX), 1);
  });

  it('connectionCache.enabled false: a connection per callout, each closed with QUIT', async () => {
    const w = await make(sameMx, { [MX]: usersOnly(['alice']) });
    const engine = w.engine({ callout: { connectionCache: { enabled: false } } });
    await inTurn(engine, DOMAINS.slice(0, 3).map((d) => `alice@${d}`));
    assert.equal(w.connections(MX), 3);
    // The QUIT is written, its 221 not waited for: the last one may still be on its way.
    assert.ok(await until(() => w.smtp.get(MX)!.sessions.every((s) => s.commands.at(-1) === 'QUIT')), 'await until(() => w.smtp.get(MX)!.sessions.every((s) => s.commands.at(-1) === \'QUIT\'))');
  });

  for (const pipelined of [false, true]) {
    it(`a connection not kept is left with QUIT: the verdict does not wait for a slow 221 (${pipelined ? 'QUIT pipelined' : 'one command at a time'})`, async () => {
      const w = await make(sameMx, { [MX]: { ...usersOnly(['alice']), ...(pipelined ? pipelining() : {}), quit: () => ({ reply: '221 2.0.0 Bye', delayMs: 10_000 }) } });
      const r = await w.engine({ callout: { connectionCache: { enabled: false } } }).verify('alice@a.test');
      assert.equal(r.verdict, 'deliverable');
      assert.ok(r.durationMs < 2000, `answered after ${r.durationMs} ms: not after callout.timeouts.command (2 s) waiting for the 221`);
      assert.ok(await until(() => w.commands(MX).at(-1) === 'QUIT'), 'QUIT was said');
      assert.equal(w.commands(MX).filter((c) => c === 'QUIT').length, 1, 'once, also when it ended a pipelined group');
    });
  }
});

/** The verdict-bearing fields of results, for comparing one mode with another. */
function gist(results: VerifyResult[]): Array<Pick<VerifyResult, 'address' | 'verdict' | 'reason' | 'catchAll' | 'postmaster'> & { code?: number }> {
  return results.map((r) => ({ address: r.address, verdict: r.verdict, reason: r.reason, catchAll: r.catchAll, postmaster: r.postmaster, ...(r.reply ? { code: r.reply.code } : {}) }));
}

interface Case {
  name: string;
  script: () => Partial<SmtpScript>;
  addresses: string[][];
  config?: Record<string, unknown>;
}

const one = (address: string) => [[address]];
const policyRcpt = (): Partial<SmtpScript> => ({ rcpt: () => '554 5.7.1 Client host [127.0.0.1] blocked using zen.spamhaus.org' });
const postmasterRefused = (): Partial<SmtpScript> => ({ rcpt: (arg) => (/alice/.test(arg) ? '250 2.1.5 Ok' : '550 5.1.1 Unknown') });

const CASES: Case[] = [
  { name: 'deliverable', script: () => usersOnly(['alice']), addresses: one('alice@a.test') },
  { name: 'undeliverable', script: () => usersOnly(['alice']), addresses: one('nobody@a.test') },
  { name: 'catch-all', script: acceptAll, addresses: one('anyone@a.test') },
  { name: 'catch-all, then another domain on the same connection', script: () => ({ rcpt: (arg) => (/@a\.test/.test(arg) || /alice/.test(arg) ? '250 2.1.5 Ok' : '550 5.1.1 Unknown') }), addresses: [['anyone@a.test'], ['alice@b.test'], ['bob@b.test']] },
  { name: 'null sender refused, no fallback', script: () => ({ ...usersOnly(['alice']), ...refuseNullSender() }), addresses: one('alice@a.test') },
  { name: 'null sender refused, fallback sender', script: () => ({ ...usersOnly(['alice']), ...refuseNullSender() }), addresses: [['alice@a.test', 'nobody@a.test']], config: { callout: { fallbackSender: 'verify@callout.test' } } },
  { name: 'greylisted', script: greylistOnce, addresses: one('alice@a.test') },
  { name: 'policy refusal at RCPT', script: policyRcpt, addresses: one('alice@a.test') },
  { name: 'tempfail at RCPT', script: () => ({ rcpt: () => '450 4.7.1 Client host rejected: cannot find your reverse hostname' }), addresses: one('alice@a.test') },
  { name: 'refused at MAIL', script: () => ({ mail: () => '550 5.7.1 Go away' }), addresses: one('alice@a.test'), config: { callout: { sender: 'probe@callout.test' } } },
  { name: 'postmaster refused', script: postmasterRefused, addresses: one('alice@a.test'), config: { callout: { postmasterProbe: 'postmaster' } } },
  { name: 'fullpostmaster', script: postmasterRefused, addresses: one('alice@a.test'), config: { callout: { postmasterProbe: 'fullpostmaster' } } },
  { name: 'one recipient per transaction (452)', script: () => ({ rcpt: (arg, session) => (session.rcptInTransaction >= 2 ? rejectSecondRcpt().rcpt!(arg, session) : usersOnly(['alice']).rcpt!(arg, session)) }), addresses: [['alice@a.test', 'bob@a.test', 'carol@a.test']] },
  { name: '452 for the only recipient', script: () => ({ rcpt: (arg) => (/callout-/.test(arg) ? '550 5.1.1 Unknown' : '452 4.5.3 Error: too many recipients') }), addresses: one('alice@a.test') },
  { name: 'drop after RSET', script: () => ({ ...usersOnly(['alice']), ...dropAfterRset() }), addresses: [['alice@a.test'], ['nobody@b.test']] },
  { name: 'drop at the random probe', script: () => ({ rcpt: (arg, session) => (/callout-/.test(arg) ? { drop: true } : usersOnly(['alice']).rcpt!(arg, session)) }), addresses: one('alice@a.test') },
  { name: 'RSET refused', script: () => ({ ...usersOnly(['alice']), rset: () => '502 5.5.2 Not here' }), addresses: [['alice@a.test'], ['alice@b.test']] },
  { name: 'several addresses', script: () => usersOnly(['alice', 'carol']), addresses: [['alice@a.test', 'bob@a.test', 'carol@a.test'], ['alice@b.test', 'dave@b.test']] },
  { name: 'an address that needs SMTPUTF8', script: () => usersOnly(['josé']), addresses: [['josé@a.test', 'zoë@a.test'], ['josé@b.test']] },
  { name: 'random probe off', script: acceptAll, addresses: [['x@a.test'], ['y@b.test']], config: { callout: { randomProbe: false } } },
  { name: 'VRFY configured', script: () => ({ ...usersOnly(['alice']), vrfy: (arg) => (/alice/.test(arg) ? '250 Alice <alice@a.test>' : '252 2.0.0 Try RCPT') }), addresses: [['alice@a.test', 'nobody@a.test']], config: { callout: { vrfy: true } } },
];

describe('pipelining gives the sequential verdicts', () => {
  for (const c of CASES) {
    it(c.name, async () => {
      const answers: Record<string, unknown> = {};
      for (const [mode, advertise, cache] of [
        ['sequential, no reuse', false, false],
        ['sequential, reuse', false, true],
        ['pipelined, no reuse', true, false],
        ['pipelined, reuse', true, true],
      ] as const) {
        const w = await world(sameMx, { [MX]: { ...c.script(), ...(advertise ? pipelining() : {}) } });
        const config = (c.config ?? {}) as { callout?: Record<string, unknown> };
        const engine = w.engine({ ...config, callout: { ...config.callout, connectionCache: { enabled: cache } } });
        const results: VerifyResult[] = [];
        for (const batch of c.addresses) results.push(...(await engine.verifyMany(batch)));
        answers[mode] = gist(results);
        await w.close();
      }
      const expected = answers['sequential, no reuse'];
      for (const [mode, got] of Object.entries(answers)) assert.deepEqual(got, expected, mode);
    });
  }
});

describe('pipelined groups', () => {
  /** Runs of consecutive sent lines in a transcript: one run is one write before any reply. */
  function groups(result: VerifyResult): string[][] {
    const runs: string[][] = [];
    let run: string[] | undefined;
    for (const entry of result.attempts.at(-1)!.transcript) {
      if (entry.dir === 'sent') {
        if (!run) runs.push((run = []));
        run.push(entry.line.replace(/callout-[a-z0-9]{12}/, 'callout-R'));
      } else if (entry.dir === 'received') {
        run = undefined;
      }
    }
    return runs;
  }

  it('MAIL, RCPT random, RSET, MAIL, RCPT and the RSET before parking go as one group', async () => {
    const w = await make(sameMx, { [MX]: { ...usersOnly(['alice']), ...pipelining() } });
    const engine = w.engine();
    const first = await engine.verify('alice@a.test');
    assert.deepEqual(groups(first), [
      ['EHLO verifier.callout.test'],
      ['MAIL FROM:<>', 'RCPT TO:<callout-R@a.test>', 'RSET', 'MAIL FROM:<>', 'RCPT TO:<alice@a.test>', 'RSET'],
    ]);
    const second = await engine.verify('nobody@b.test');
    assert.equal(second.verdict, 'undeliverable');
    assert.deepEqual(groups(second), [['MAIL FROM:<>', 'RCPT TO:<callout-R@b.test>', 'RSET', 'MAIL FROM:<>', 'RCPT TO:<nobody@b.test>', 'RSET']], 'one round trip on a reused connection');
  });

  it('without connection reuse the group ends with QUIT', async () => {
    const w = await make(sameMx, { [MX]: { ...usersOnly(['alice']), ...pipelining() } });
    const r = await w.engine({ callout: { connectionCache: { enabled: false } } }).verify('alice@a.test');
    assert.deepEqual(groups(r).at(-1), ['MAIL FROM:<>', 'RCPT TO:<callout-R@a.test>', 'RSET', 'MAIL FROM:<>', 'RCPT TO:<alice@a.test>', 'QUIT']);
  });

  it('a group that fills the connection to limits.addressesPerConnection ends with QUIT, not an RSET for parking', async () => {
    const w = await make(sameMx, { [MX]: { ...usersOnly(['alice']), ...pipelining() } });
    const r = await w.engine({ limits: { addressesPerConnection: 2 } }).verify('alice@a.test');
    assert.deepEqual(groups(r).at(-1), ['MAIL FROM:<>', 'RCPT TO:<callout-R@a.test>', 'RSET', 'MAIL FROM:<>', 'RCPT TO:<alice@a.test>', 'QUIT']);
  });

  it('a refused MAIL FROM:<> is followed by a new group with the fallback sender on the same connection', async () => {
    const w = await make(sameMx, { [MX]: { ...usersOnly(['alice']), ...refuseNullSender(), ...pipelining() } });
    const r = await w.engine({ callout: { fallbackSender: 'verify@callout.test', connectionCache: { enabled: false } } }).verify('alice@a.test');
    assert.equal(r.reason, 'null-sender-refused');
    assert.equal(w.connections(MX), 1);
    const runs = groups(r);
    assert.deepEqual(runs[1], ['MAIL FROM:<>', 'RCPT TO:<callout-R@a.test>', 'RSET', 'MAIL FROM:<>', 'RCPT TO:<alice@a.test>']);
    assert.deepEqual(runs[2], ['MAIL FROM:<verify@callout.test>', 'RCPT TO:<callout-R@a.test>', 'RSET', 'MAIL FROM:<verify@callout.test>', 'RCPT TO:<alice@a.test>', 'QUIT']);
  });

  it('over TLS: the upgraded session is pipelined and reused', async () => {
    const server = await startSmtpServer({ host: '127.0.0.5', script: { ...usersOnly(['alice']), ...pipelining() }, tls: testCertificate() });
    const w = await make(mxZone({ 'a.test': '127.0.0.5', 'b.test': '127.0.0.5' }), {});
    try {
      const engine = w.engine({ callout: { port: server.port } });
      const [first, second] = await inTurn(engine, ['alice@a.test', 'nobody@b.test']);
      assert.equal(first!.verdict, 'deliverable');
      assert.equal(second!.verdict, 'undeliverable');
      assert.equal(second!.attempts[0]!.tls, true);
      assert.equal(server.connectionCount, 1);
      assert.equal(groups(second!).length, 1);
      await engine.idle();
    } finally {
      await server.close();
    }
  });

  it('a server that does not advertise PIPELINING gets one command at a time', async () => {
    const w = await make(sameMx, { [MX]: usersOnly(['alice']) });
    const r = await w.engine().verify('alice@a.test');
    assert.ok(groups(r).every((run) => run.length === 1), 'groups(r).every((run) => run.length === 1)');
  });

  it('callout.pipelining false: one command at a time even when advertised', async () => {
    const w = await make(sameMx, { [MX]: { ...usersOnly(['alice']), ...pipelining() } });
    const r = await w.engine({ callout: { pipelining: false } }).verify('alice@a.test');
    assert.ok(groups(r).every((run) => run.length === 1), 'groups(r).every((run) => run.length === 1)');
  });

  it('fullpostmaster asks RCPT TO:<Postmaster> inside the transaction when pipelining (no RSET queued before it)', async () => {
    // A server that refuses postmaster@domain, takes the bare Postmaster, and refuses any RCPT
    // outside a transaction, as Postfix does.
    const strict: Partial<SmtpScript> = {
      ...pipelining(),
      rcpt: (arg, session) => {
        let inTransaction = false;
        for (const command of session.commands.slice(0, -1)) {
          if (/^MAIL/i.test(command)) inTransaction = true;
          if (/^RSET/i.test(command)) inTransaction = false;
        }
        if (!inTransaction) return '503 5.5.1 Error: need MAIL command';
        const path = pathOf(arg);
        return path === 'Postmaster' || path.startsWith('alice@') ? '250 2.1.5 Ok' : '550 5.1.1 User unknown';
      },
    };
    for (const pipelined of [true, false]) {
      const w = await make(mxZone({ 'a.test': MX }), { [MX]: strict });
      const r = await w.engine({ callout: { postmasterProbe: 'fullpostmaster', pipelining: pipelined } }).verify('alice@a.test');
      assert.deepEqual([r.verdict, r.postmaster], ['deliverable', 'accepted'], `pipelining ${pipelined}`);
    }
  });

  it('counts every RCPT a catch-all server answered, so its connections are retired too', async () => {
    const domains = Array.from({ length: 6 }, (_, i) => `d${i}.test`);
    const w = await make(mxZone(Object.fromEntries(domains.map((d) => [d, MX]))), { [MX]: { ...acceptAll(), ...pipelining() } });
    const engine = w.engine({ limits: { addressesPerConnection: 4 } });
    for (const d of domains) assert.deepEqual((await engine.verifyMany([`a@${d}`, `b@${d}`])).map((r) => r.verdict), ['risky', 'risky']);
    // Pipelined, each callout sends three RCPTs (random, a, b): one callout per connection.
    for (const session of w.smtp.get(MX)!.sessions) {
      assert.ok(session.commands.filter((c) => /^RCPT/i.test(c)).length <= 4, JSON.stringify(session.commands));
    }
    assert.equal(w.connections(MX), domains.length);
  });
});
