// The sender-callout stage as Postfix sees it: `callout serve` over real sockets, callouts to loopback SMTP servers.
// Only definite evidence about the sender (a 5xx at RCPT from its own exchanger, NXDOMAIN, a null MX)
// may become a permanent reject by default; risky and unknown verdicts must stay DUNNO or a deferral,
// and every answer must follow the stage's configured actions, codes and texts.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { startDnsServer } from '../../support/dns-server.js';
import type { Zone } from '../../support/dns-server.js';
import {
  acceptAll,
  greylistOnce,
  refuseNullSender,
  rejectGreeting,
  silentGreeting,
  startSmtpServers,
  usersOnly,
} from '../../support/smtp-server.js';
import type { SmtpScript } from '../../support/smtp-server.js';
import { postfixRequest } from '../../support/policy-client.js';
import { startDaemonWithClient } from '../../support/daemon.js';
import { mxZone } from '../../verify/fixture.js';
import { captureLog } from '../../support/log-capture.js';
import { startRedis } from '../../support/redis.js';
import { stageContext } from '../../support/stage-context.js';
import { turnsUntil, watch } from '../../support/wait.js';
import { validateConfig } from '../../../src/config/schema.js';
import { systemTimers } from '../../../src/core/clock.js';
import { ManualClock, ManualTimers } from '../../support/manual-time.js';
import { createLogger } from '../../../src/core/log.js';
import { createNodeResolver } from '../../../src/dns/node-resolver.js';
import { LateVerdicts, senderCalloutStage } from '../../../src/policy/stages/sender-callout.js';
import { formatCalloutResult } from '../../../src/checks/auth-results.js';
import { CONTROL_CHARACTER } from '../../../src/core/text.js';
import type { StageContext, StageVerdict } from '../../../src/policy/types.js';
import { MemoryStore } from '../../../src/store/memory.js';
import { RedisStore } from '../../../src/store/redis.js';
import { SqliteStore } from '../../../src/store/sqlite.js';
import { ASK_LATER, type Store } from '../../../src/store/types.js';
import { CalloutEngine } from '../../../src/verify/engine.js';
import { MAX_EVIDENCE_TEXT } from '../../../src/verify/interpret.js';
import { MAX_VERDICT_RECORD_LENGTH } from '../../../src/verify/cache.js';
import { paddedRecords } from '../../support/fuzz.js';
import { Metrics } from '../../../src/http/metrics.js';

const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

// 127.0.0.20-29 and 31-39 are this file's share of loopback (other test files run in parallel).
const SERVERS: Record<string, { host: string; script: Partial<SmtpScript> | (() => Partial<SmtpScript>) }> = {
  'users.test': { host: '127.0.0.20', script: usersOnly(['bob']) },
  'catchall.test': { host: '127.0.0.21', script: acceptAll() },
  'nobounce.test': { host: '127.0.0.22', script: refuseNullSender() },
  // Fresh per world: greylistOnce remembers the addresses it has greylisted.
  'grey.test': { host: '127.0.0.23', script: greylistOnce },
  'tempfail.test': { host: '127.0.0.24', script: { rcpt: () => '451 4.3.0 <x>: Temporary lookup failure' } },
  // A 5xx at RCPT that is about us (our client host), not about the address.
  'blocked.test': { host: '127.0.0.25', script: { rcpt: () => '554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using zen.spamhaus.org' } },
  'banner.test': { host: '127.0.0.26', script: rejectGreeting(554) },
  'tarpit.test': { host: '127.0.0.27', script: silentGreeting() },
  'slow.test': { host: '127.0.0.28', script: { ...usersOnly(['bob']), greeting: () => ({ reply: '220 slow', delayMs: 600 }) } },
  // One recipient per connection, the next refused with the 552 of RFC 821 that RFC 5321
  // §4.5.3.1.10 says clients should take as temporary.
  'toomany.test': {
    host: '127.0.0.31',
    script: { rcpt: (_arg, session) => (session.commands.filter((c) => /^RCPT /i.test(c)).length > 1 ? '552 5.5.3 Error: too many recipients' : '550 5.1.1 User unknown') },
  },
  // A protocol error at RCPT (RFC 3463 X.5.x) is about the dialogue, not the mailbox.
  'badsequence.test': { host: '127.0.0.32', script: { rcpt: () => '503 5.5.1 Error: need MAIL command' } },
  // bücher.test: an exchanger that takes ASCII addresses only (no SMTPUTF8 in its EHLO).
  'xn--bcher-kva.test': { host: '127.0.0.33', script: { ...usersOnly(['bob']), ehlo: (arg) => `250-mx.callout.test Hello ${arg}\r\n250 8BITMIME` } },
};
// Nothing listens here: connections are refused.
const DOWN_HOST = '127.0.0.29';

const ZONE: Zone = {
  ...mxZone({ ...Object.fromEntries(Object.entries(SERVERS).map(([domain, s]) => [domain, s.host])), 'down.test': DOWN_HOST }),
  'nullmx.test': { MX: [{ priority: 0, exchange: '.' }] },
  'servfail.test': { servfail: true },
  // The MX exists but its exchanger's addresses cannot be looked up just now.
  'mxfail.test': { MX: [{ priority: 10, exchange: 'mx1.mxfail.test' }] },
  'mx1.mxfail.test': { servfail: true },
  // No MX and no address: no implicit MX either. nxdomain.test is not in the zone at all.
  'txtonly.test': { TXT: ['v=spf1 -all'] },
  // An MX whose exchangers have no address, or do not exist.
  'noaddr.test': { MX: [{ priority: 10, exchange: 'mx1.noaddr.test' }, { priority: 20, exchange: 'mx2.noaddr.test' }] },
  'mx1.noaddr.test': { TXT: ['not a mail host'] },
};

interface World {
  ask(sender: string): Promise<{ action: string; decidedBy: unknown; stages: string[] }>;
}

let instances = 0;

/**
 * The stage over an engine of its own (an injected clock, a memory store), asking `domain`'s one
 * exchanger at `ip`, scripted by `script`; each dialogue step may take `step`, the whole two.
 */
async function stageWithOwnEngine(
  domain: string,
  ip: string,
  script: Partial<SmtpScript>,
  step: '1s' | '2s',
  shared?: { clock: ManualClock; store: Store; engineStore?: Store; log?: ReturnType<typeof createLogger>; options?: Record<string, unknown> },
) {
  const dns = await startDnsServer(mxZone({ [domain]: ip }));
  const [mx] = await startSmtpServers([ip], () => script);
  const clock = shared?.clock ?? new ManualClock();
  const store = shared?.store ?? new MemoryStore({ clock });
  const resolver = createNodeResolver({ servers: [dns.address], timeoutMs: 2000, tries: 1 });
  const overall = step === '1s' ? '2s' : '4s';
  const config = validateConfig({
    callout: { helo: 'verifier.callout.test', port: mx!.port, allowTargets: ['127.0.0.0/8'], timeouts: { connect: step, greeting: step, command: step, rcpt: step, overall } },
  });
  const engine = new CalloutEngine(config, { resolver, store: shared?.engineStore ?? store, clock });
  cleanups.push(async () => {
    await engine.idle();
    await mx!.close();
    await dns.close();
  });
  const stage = senderCalloutStage.create(senderCalloutStage.options.parse(shared?.options ?? {}) as never, { resolver, store, clock, engine, log: shared?.log ?? createLogger('silent') });
  return { stage, engine, clock, mx: mx! };
}

async function setup(stage: Record<string, unknown> = {}, policy: Record<string, unknown> = {}): Promise<World> {
  const dns = await startDnsServer(ZONE);
  const domains = Object.values(SERVERS);
  const servers = await startSmtpServers(
    domains.map((s) => s.host),
    (host) => {
      const script = domains.find((s) => s.host === host)!.script;
      return typeof script === 'function' ? script() : script;
    },
  );
  cleanups.push(async () => {
    await Promise.all(servers.map((s) => s.close()));
    await dns.close();
  });
  const { lines: logs, log: logger } = captureLog();
  const { client } = await startDaemonWithClient({
    overrides: {
      store: { kind: 'memory' },
      // 2 s for the DNS server in this process to answer: a loaded machine may not run it at once.
      dns: { servers: [dns.address], timeout: '2s', tries: 1 },
      callout: {
        helo: 'verifier.callout.test',
        port: servers[0]!.port,
        allowTargets: ['127.0.0.0/8'],
        // The tarpit must time out well inside the decision deadline (6 s), and every other
        // exchanger greet within the same timeout however loaded the machine: a second for each.
        timeouts: { connect: '1s', greeting: '1s', command: '1s', rcpt: '1s', overall: '3s' },
      },
      policy: { listen: '127.0.0.1:0', stages: [{ name: 'sender-callout', ...stage }], ...policy },
      metrics: { listen: '' },
    },
    log: logger,
  }, cleanups);
  return {
    async ask(sender) {
      const instance = `sc-${++instances}`;
      const action = await client.request(postfixRequest({ sender, instance }));
      const line = logs.find((l) => l.msg === 'decision' && l.instance === instance);
      assert.ok(line, `a decision line for ${sender}`);
      assert.equal(line.action, action, 'the log line shows the answer given');
      return { action, decidedBy: line.decidedBy, stages: line.stages as string[] };
    },
  };
}

/** The stage's entry in a decision line: "sender-callout=<verdict>: <reason>: <description>". */
function calloutStage(stages: string[]): string {
  const entry = stages.find((s) => s.startsWith('sender-callout='));
  assert.ok(entry, `a sender-callout entry in ${JSON.stringify(stages)}`);
  return entry;
}

describe('sender-callout: default actions', () => {
  it('rejects on a definite 5xx at RCPT from the sender\'s own MX', async () => {
    const { ask } = await setup();
    const { action, decidedBy, stages } = await ask('nobody@users.test');
    assert.equal(
      action,
      '550 5.7.1 Sender address rejected: mx1.users.test [127.0.0.20] answered RCPT TO:<nobody@users.test> with 550 5.1.1 <nobody@users.test>: Recipient address rejected: User unknown in local recipient table',
    );
    assert.equal(decidedBy, 'sender-callout');
    assert.match(calloutStage(stages), /^sender-callout=undeliverable: rejected-at-rcpt: /);
  });

  it('rejects a domain that publishes a null MX or does not exist', async () => {
    const { ask } = await setup();
    const nullMx = await ask('a@nullmx.test');
    assert.equal(nullMx.action, '550 5.7.1 Sender address rejected: nullmx.test publishes a null MX: it accepts no mail (RFC 7505)');
    assert.equal(nullMx.decidedBy, 'sender-callout');
    assert.match(calloutStage(nullMx.stages), /^sender-callout=no-mail-domain: null-mx: /);
    const missing = await ask('a@nxdomain.test');
    assert.equal(missing.action, '550 5.7.1 Sender address rejected: nxdomain.test does not exist (NXDOMAIN)');
    assert.match(calloutStage(missing.stages), /^sender-callout=no-mail-domain: nxdomain: /);
  });

  it('rejects a domain with no mail host, saying why once (it said the domain and its missing address three times over)', async () => {
    const { ask } = await setup();
    const bare = await ask('a@txtonly.test');
    assert.equal(bare.action, '550 5.7.1 Sender address rejected: txtonly.test has no MX record and no A or AAAA record: it accepts no mail');
    assert.equal(bare.decidedBy, 'sender-callout');
    assert.equal(calloutStage(bare.stages), 'sender-callout=no-mail-domain: no-mail-host: txtonly.test has no MX record and no A or AAAA record: it accepts no mail');
    const noAddress = await ask('a@noaddr.test');
    assert.equal(
      noAddress.action,
      '550 5.7.1 Sender address rejected: no mail exchanger of noaddr.test has an address, so it accepts no mail: mx1.noaddr.test has no AAAA or A records; mx2.noaddr.test does not exist (NXDOMAIN)',
    );
    assert.match(calloutStage(noAddress.stages), /^sender-callout=no-mail-domain: no-mail-host: no mail exchanger of noaddr\.test /);
  });

  it('lets a risky sender through: catch-all domain, and a domain that refuses the null sender', async () => {
    const { ask } = await setup();
    for (const sender of ['anyone@catchall.test', 'someone-else@catchall.test']) {
      const catchAll = await ask(sender);
      assert.equal(catchAll.action, 'DUNNO', `${sender}: a catch-all accepts every local part, which says nothing about this one`);
      assert.equal(catchAll.decidedBy, null);
      assert.match(calloutStage(catchAll.stages), /^sender-callout=risky: catch-all: .*accepts any local part/);
    }
    const noBounce = await ask('bob@nobounce.test');
    assert.equal(noBounce.action, 'DUNNO');
    assert.equal(noBounce.decidedBy, null);
    assert.match(calloutStage(noBounce.stages), /^sender-callout=risky: null-sender-refused: /);
  });

  it('lets an unknown sender through: refused connection, timeout, refusals of us, tempfail, DNS failure', async () => {
    const { ask } = await setup();
    const cases: Array<[string, RegExp]> = [
      ['bob@down.test', /^sender-callout=unknown: unreachable: .*ECONNREFUSED/],
      ['bob@tarpit.test', /^sender-callout=unknown: timeout: /],
      ['bob@banner.test', /^sender-callout=unknown: refused-at-greeting: .*554/],
      ['bob@tempfail.test', /^sender-callout=unknown: tempfail-at-rcpt: .*451 4\.3\.0/],
      ['bob@blocked.test', /^sender-callout=unknown: refused-at-rcpt: .*554 5\.7\.1/],
      ['bob@servfail.test', /^sender-callout=unknown: dns-tempfail: /],
      ['bob@mxfail.test', /^sender-callout=unknown: dns-tempfail: .*mx1\.mxfail\.test/],
    ];
    for (const [sender, stage] of cases) {
      const { action, decidedBy, stages } = await ask(sender);
      assert.equal(action, 'DUNNO', `${sender}: no definite evidence, so no rejection`);
      assert.equal(decidedBy, null, sender);
      assert.match(calloutStage(stages), stage);
    }
  });

  it('does not reject on 552 "too many recipients" at RCPT, which RFC 5321 §4.5.3.1.10 makes temporary', async () => {
    const { ask } = await setup();
    const { action, stages } = await ask('bob@toomany.test');
    assert.doesNotMatch(action, /^5\d\d /, calloutStage(stages));
    assert.match(calloutStage(stages), /^sender-callout=unknown: [a-z-]+: .*552 5\.5\.3/, 'the MX gave that answer to the sender\'s RCPT');
  });

  it('does not reject on a protocol error at RCPT (503 5.5.1 bad sequence): no evidence about the mailbox', async () => {
    const { ask } = await setup();
    const { action, stages } = await ask('bob@badsequence.test');
    assert.doesNotMatch(action, /^5\d\d /, calloutStage(stages));
    assert.match(calloutStage(stages), /^sender-callout=unknown: [a-z-]+: .*503 5\.5\.1/, 'the MX gave that answer to the sender\'s RCPT');
  });

  it('defers (4xx, never 5xx) when the sender\'s MX greylists the callout, also on the retry within greylistRetry', async () => {
    const { ask } = await setup();
    for (const attempt of ['first', 'second']) {
      const { action, decidedBy, stages } = await ask('bob@grey.test');
      assert.match(action, /^450 4\.7\.1 Sender address verification failed temporarily: .*450 4\.7\.1 .*Greylisted/, `${attempt} ask`);
      assert.equal(decidedBy, 'sender-callout');
      assert.match(calloutStage(stages), /^sender-callout=unknown: greylisted: /);
    }
  });

  it('answers DEFER_IF_PERMIT while the callout is still running at the deadline', async () => {
    const { ask } = await setup({}, { decisionTimeout: '200ms' });
    const { action, decidedBy, stages } = await ask('bob@slow.test');
    assert.equal(action, 'DEFER_IF_PERMIT 4.7.1 Sender address verification in progress');
    assert.equal(decidedBy, 'sender-callout');
    assert.match(calloutStage(stages), /^sender-callout=in-progress: /);
  });
});

describe('sender-callout: internationalised senders (Postfix with smtputf8_enable sends them as raw UTF-8)', () => {
  it('verifies an ASCII local part at a U-label domain by its A-label, and lets a UTF-8 local part the exchanger cannot take through', async () => {
    const { ask } = await setup();
    const known = await ask('bob@Bücher.test');
    assert.equal(known.action, 'DUNNO');
    assert.match(calloutStage(known.stages), /^sender-callout=deliverable: accepted: /);
    const unknown = await ask('nobody@bücher.test');
    assert.match(unknown.action, /^550 5\.7\.1 Sender address rejected: mx1\.xn--bcher-kva\.test \[127\.0\.0\.33\] answered RCPT TO:<nobody@xn--bcher-kva\.test> with 550 /);
    const utf8 = await ask('josé@bücher.test');
    assert.equal(utf8.action, 'DUNNO', 'an exchanger without SMTPUTF8 says nothing about the mailbox');
    assert.match(calloutStage(utf8.stages), /^sender-callout=unknown: smtputf8-unsupported: .*SMTPUTF8/);
  });
});

describe('sender-callout: configured actions, codes and texts', () => {
  const texts = {
    rejectCode: 554,
    rejectEnhanced: '5.7.9',
    rejectText: 'Refused {sender}: {reason}',
    deferCode: 451,
    deferEnhanced: '4.4.3',
    deferText: 'Try {sender} later: {reason}',
    inProgressText: 'Still checking {sender}',
  };

  it('answers each verdict with its configured action', async () => {
    const { ask } = await setup({
      ...texts,
      actions: { undeliverable: 'defer', noMailDomain: 'continue', risky: 'reject', unknown: 'defer-if-permit', greylisted: 'continue' },
    });
    const risky = await ask('anyone@catchall.test');
    assert.match(risky.action, /^554 5\.7\.9 Refused anyone@catchall\.test: mx1\.catchall\.test \[127\.0\.0\.21\] accepts any local part \(the random address \S+@catchall\.test got 250 2\.1\.5 Ok\)$/);
    assert.equal(risky.decidedBy, 'sender-callout');

    const undeliverable = await ask('nobody@users.test');
    assert.match(undeliverable.action, /^451 4\.4\.3 Try nobody@users\.test later: mx1\.users\.test \[127\.0\.0\.20\] answered RCPT TO:<nobody@users\.test> with 550 5\.1\.1 /);
    assert.equal(undeliverable.decidedBy, 'sender-callout');

    const noMailDomain = await ask('a@nullmx.test');
    assert.equal(noMailDomain.action, 'DUNNO');
    assert.equal(noMailDomain.decidedBy, null);
    assert.match(calloutStage(noMailDomain.stages), /^sender-callout=no-mail-domain: null-mx: /);

    const unknown = await ask('bob@tempfail.test');
    // The configured deferEnhanced leads the text, where Postfix's dsn_split takes it from.
    assert.match(unknown.action, /^DEFER_IF_PERMIT 4\.4\.3 Try bob@tempfail\.test later: mx1\.tempfail\.test \[127\.0\.0\.24\] answered RCPT TO:<bob@tempfail\.test> with 451 4\.3\.0 /);
    assert.equal(unknown.decidedBy, 'sender-callout');

    const greylisted = await ask('bob@grey.test');
    assert.equal(greylisted.action, 'DUNNO');
    assert.equal(greylisted.decidedBy, null);
    assert.match(calloutStage(greylisted.stages), /^sender-callout=unknown: greylisted: /);
  });

  it('uses the configured reject code, enhanced code and text for definite evidence', async () => {
    const { ask } = await setup({ ...texts, actions: { unknown: 'reject', greylisted: 'defer-if-permit' } });
    assert.equal((await ask('a@nullmx.test')).action, '554 5.7.9 Refused a@nullmx.test: nullmx.test publishes a null MX: it accepts no mail (RFC 7505)');
    assert.match((await ask('nobody@users.test')).action, /^554 5\.7\.9 Refused nobody@users\.test: .*550 5\.1\.1/);
    // An administrator may choose to reject unknown verdicts; the other defaults stay.
    assert.match((await ask('bob@tempfail.test')).action, /^554 5\.7\.9 Refused bob@tempfail\.test: .*451 4\.3\.0/);
    assert.equal((await ask('anyone@catchall.test')).action, 'DUNNO', 'risky keeps its default');
    assert.match((await ask('bob@grey.test')).action, /^DEFER_IF_PERMIT 4\.4\.3 Try bob@grey\.test later: .*Greylisted/);
  });

  it('puts a sender into the text as it is, even one that looks like a placeholder or a replacement pattern', async () => {
    const { ask } = await setup({ ...texts, actions: { undeliverable: 'reject' } });
    // Every character is atext (RFC 5322 §3.2.3): a client may send this local part as it stands.
    const sender = "a$`{reason}$'$&@users.test";
    const { action } = await ask(sender);
    assert.ok(action.startsWith(`554 5.7.9 Refused ${sender}: mx1.users.test [127.0.0.20] answered RCPT TO:<${sender}> with 550 5.1.1`), action);
  });

  it('uses the configured defer code, enhanced code and text for a greylisted callout', async () => {
    const { ask } = await setup(texts);
    assert.match((await ask('bob@grey.test')).action, /^451 4\.4\.3 Try bob@grey\.test later: mx1\.grey\.test \[127\.0\.0\.23\] answered RCPT TO:<bob@grey\.test> with 450 4\.7\.1 /);
  });

  it('answers a callout still running at the deadline as configured', async () => {
    const deferring = await setup({ ...texts, actions: { inProgress: 'defer' } }, { decisionTimeout: '200ms' });
    assert.equal((await deferring.ask('bob@slow.test')).action, '451 4.4.3 Still checking bob@slow.test');
    const passing = await setup({ actions: { inProgress: 'continue' } }, { decisionTimeout: '200ms' });
    const { action, decidedBy, stages } = await passing.ask('bob@slow.test');
    assert.equal(action, 'DUNNO');
    assert.equal(decidedBy, null);
    assert.match(calloutStage(stages), /^sender-callout=in-progress: /);
  });

  it('refuses codes of the wrong class and unknown action names', async () => {
    await assert.rejects(setup({ rejectCode: 450 }), /\.rejectCode \(sender-callout\): got 450/);
    await assert.rejects(setup({ deferCode: 550 }), /\.deferCode \(sender-callout\): got 550/);
    await assert.rejects(setup({ rejectEnhanced: '4.7.1' }), /\.rejectEnhanced \(sender-callout\): got "4\.7\.1"/);
    await assert.rejects(setup({ actions: { risky: 'accept' } }), /\.actions\.risky \(sender-callout\): got "accept"/);
    await assert.rejects(setup({ actions: { catchAll: 'reject' } }), /\.actions\.catchAll \(sender-callout\): unknown key/);
  });
});

describe('sender-callout: an exchanger that always outlasts the deadline', () => {
  it('answers the retry with the unknown verdict the previous callout ended with, not "in progress" again', async () => {
    // A firewall that drops us, or a greeting slower than the deadline: every callout is still
    // running at the deadline, and ends unknown (timeout) after it, remembered by the engine only
    // cache.tempfail (60 s). The client retries minutes later.
    const { stage, engine, clock } = await stageWithOwnEngine('dropping.test', '127.0.0.33', silentGreeting(), '1s');
    const ask = () => stage.evaluate(senderRequest(clock, 'bob@dropping.test', 200, 'mail.dropping.test'));
    const first = await ask();
    assert.equal(first.result, 'in-progress');
    assert.deepEqual(first.decision, { kind: 'defer-if-permit', enhanced: '4.7.1', text: 'Sender address verification in progress' });
    await engine.idle();
    clock.advance(10 * 60_000);
    const retry = await ask();
    assert.equal(retry.result, 'unknown', retry.reason);
    assert.match(retry.reason, /^timeout: .*\(the previous callout's answer: this one was still running at the deadline\)$/);
    assert.deepEqual(retry.decision, { kind: 'continue' }, 'actions.unknown, as for a callout that fails at once');
    await engine.idle();
    clock.advance(25 * 3_600_000);
    assert.equal((await ask()).result, 'in-progress', 'remembered for a day');
  });
});

/** A request about sender at RCPT, answered within ms (a real wait, unless on the ManualTimers given). */
function senderRequest(clock: ManualClock, sender: string, ms: number, heloName = 'mail.example.test', recipient = 'alice@receiver.test', timers?: ManualTimers): StageContext {
  const ctx = stageContext({ client_address: '192.0.2.7', helo_name: heloName, sender, recipient, instance: 'msg-1' }, { clock, deadlineMs: ms, timers });
  assert.ok(ctx.sender?.kind === 'mailbox', sender);
  return ctx;
}

describe('sender-callout: a wall clock stepped while the callout runs', () => {
  it('answers "in progress" at the deadline when the clock was stepped back an hour, not when the callout ends', async () => {
    // The callout ends at its greeting timeout (1 s of real time); the deadline is on the
    // pipeline's timers, which the stage waits on (StageContext.timers), and only they move.
    const timers = new ManualTimers();
    const clock = new ManualClock();
    const { stage, engine } = await stageWithOwnEngine('dropping.test', '127.0.0.40', silentGreeting(), '1s', { clock, store: new MemoryStore({ clock }) });
    const ctx = senderRequest(clock, 'bob@dropping.test', 200, undefined, undefined, timers);
    // NTP or a restored virtual machine, between the request's arrival and this stage.
    clock.advance(-3_600_000);
    const verdict = watch(stage.evaluate(ctx));
    await turnsUntil(() => timers.waiting === 1, 'the wait for the callout, bounded by the deadline');
    await timers.advance(199);
    assert.equal(verdict(), undefined, 'not answered before the deadline');
    await timers.advance(1);
    assert.equal(verdict()?.result, 'in-progress', verdict()?.reason);
    await engine.idle();
  });
});

describe('sender-callout: a late verdict is known to every process on the store', () => {
  it('answers a retry that reaches another worker (another store on the same SQLite file) with the late verdict the first one learnt', async () => {
    // policy.workers 2: each worker has its own stage and its own store on one file. The client's
    // retry reaches the other worker, whose own callout again outlasts the deadline.
    const dir = mkdtempSync(join(tmpdir(), 'callout-late-'));
    const clock = new ManualClock();
    const stores = [await SqliteStore.open(join(dir, 'callout.sqlite'), { clock }), await SqliteStore.open(join(dir, 'callout.sqlite'), { clock })];
    cleanups.push(async () => {
      for (const store of stores) await store.close();
      rmSync(dir, { recursive: true, force: true });
    });
    const first = await stageWithOwnEngine('dropping.test', '127.0.0.35', silentGreeting(), '1s', { clock, store: stores[0]! });
    const second = await stageWithOwnEngine('dropping.test', '127.0.0.36', silentGreeting(), '1s', { clock, store: stores[1]! });
    assert.equal((await first.stage.evaluate(senderRequest(clock, 'bob@dropping.test', 200))).result, 'in-progress');
    await first.engine.idle();
    // Read behind the first worker's write, so that it is committed.
    await stores[0]!.get('late:bob@dropping.test');
    clock.advance(10 * 60_000);
    const retry = await second.stage.evaluate(senderRequest(clock, 'bob@dropping.test', 200));
    assert.equal(retry.result, 'unknown', retry.reason);
    assert.match(retry.reason, /^timeout: .*\(the previous callout's answer: this one was still running at the deadline\)$/);
    assert.deepEqual(retry.decision, { kind: 'continue' });
    await second.engine.idle();
  });

  it('answers "in progress" in time when the store hangs (Redis stopped) or fails (closed), and logs the verdict it could not keep', async () => {
    const redis = await startRedis();
    const clock = new ManualClock();
    const hung = await RedisStore.open(redis.url, { clock });
    cleanups.push(async () => {
      redis.resume();
      await hung.close();
      await redis.stop();
    });
    const { log, lines } = captureLog();
    // The engine on a store of its own, so that only the late verdict's reads and writes meet the fault.
    const { stage, engine } = await stageWithOwnEngine('hung.test', '127.0.0.37', silentGreeting(), '1s', { clock, store: hung, engineStore: new MemoryStore({ clock }), log });
    redis.pause();
    const started = performance.now();
    const answer = await stage.evaluate(senderRequest(clock, 'bob@hung.test', 200));
    assert.equal(answer.result, 'in-progress');
    // The pipeline waits 500 ms past the deadline before it counts the stage as a fault.
    assert.ok(performance.now() - started < 700, `answered after ${Math.round(performance.now() - started)} ms`);
    await engine.idle();
    // The write of the late verdict fails after Redis's command timeout (1 s).
    const notStored = () => lines.some((l) => l.msg === 'late callout verdict not stored' && l.address === 'bob@hung.test');
    for (let waited = 0; waited < 3_000 && !notStored(); waited += 50) await new Promise((resolve) => setTimeout(resolve, 50));
    assert.ok(notStored(), 'the failed write is logged, not an unhandled rejection');

    const dir = mkdtempSync(join(tmpdir(), 'callout-late-'));
    const closed = await SqliteStore.open(join(dir, 'callout.sqlite'), { clock });
    await closed.close();
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const other = await stageWithOwnEngine('closed.test', '127.0.0.38', silentGreeting(), '1s', { clock, store: closed, engineStore: new MemoryStore({ clock }), log });
    assert.equal((await other.stage.evaluate(senderRequest(clock, 'bob@closed.test', 200))).result, 'in-progress');
    await other.engine.idle();
    const closedNotStored = () => lines.some((l) => l.msg === 'late callout verdict not stored' && l.address === 'bob@closed.test');
    for (let waited = 0; waited < 3_000 && !closedNotStored(); waited += 50) await new Promise((resolve) => setTimeout(resolve, 50));
    assert.ok(closedNotStored(), 'the write to the closed store is logged too');
    // With the stable code every other log line gives, not the class name String() led with.
    assert.match(String(lines.find((l) => l.msg === 'late callout verdict not stored' && l.address === 'bob@closed.test')?.err), /^STORE_UNAVAILABLE: sqlite store \S+callout\.sqlite: /);
  });
});

describe('sender-callout: a late verdict another version of callout stored', () => {
  it('answers with what it can read of it, the header included, and never fails on a field it lacks or gives in another form', async () => {
    // Workers and daemons on one Redis are upgraded one at a time: a value another version wrote
    // (no source, a reply of null) made the X-Callout-Result header throw, a stage fault that
    // policy.faultAction DEFER answers with 451 for every sender at that domain.
    const clock = new ManualClock();
    const store = new MemoryStore({ clock });
    const { stage, engine } = await stageWithOwnEngine('dropping.test', '127.0.0.39', silentGreeting(), '1s', { clock, store, options: { resultHeader: true, receiver: 'mx.callout.test' } });
    for (const [sender, stored] of [
      ['bob@dropping.test', { verdict: 'unknown', reason: 'timeout', description: 'no greeting within 1000 ms' }],
      ['carol@dropping.test', { verdict: 'unknown', reason: 'timeout', description: 'no greeting within 1000 ms', source: 'probe', reply: null, catchAll: 7 }],
    ] as const) {
      await store.set(`late:${sender}`, JSON.stringify(stored), 86_400_000);
      const answer = await stage.evaluate(senderRequest(clock, sender, 200));
      assert.equal(answer.result, 'unknown', answer.reason);
      assert.deepEqual(answer.decision, { kind: 'continue' });
      assert.match(answer.headers?.[0] ?? '', /^X-Callout-Result: unknown \(no greeting within 1000 ms .*\) receiver=mx\.callout\.test; sender=.*; reason=timeout; source=\S+;$/);
    }
    await engine.idle();
  });
});

describe('sender-callout: late verdicts kept and forgotten', () => {
  it('forgets a remembered unknown verdict once a later callout to the address ends with a definite one', async () => {
    // Else a retry whose callout again outlasts the deadline is let through (actions.unknown)
    // for a day on the strength of an answer the exchanger has since replaced with a 550.
    const clock = new ManualClock();
    const store = new MemoryStore({ clock });
    const late = new LateVerdicts(store);
    const unknown = { address: 'bob@example.test', verdict: 'unknown', reason: 'timeout', description: 'no greeting within 1000 ms', catchAll: 'not-run', postmaster: 'not-run', source: 'probe', stale: false, mxHosts: [], attempts: [], checkedAt: 1, durationMs: 2 } as const;
    await late.remember('bob@example.test', unknown as never);
    assert.equal((await late.recall('bob@example.test', systemTimers))?.reason, 'timeout');
    await late.remember('bob@example.test', { ...unknown, verdict: 'undeliverable', reason: 'rejected', description: '550 5.1.1 no such user' } as never);
    assert.equal(await store.get('late:bob@example.test'), undefined);
    assert.equal(await late.recall('bob@example.test', systemTimers), undefined);
  });

  it('waits for a store that does not answer (Redis hung) 200 ms on the timers it is given, exactly, then answers none', async () => {
    const timers = new ManualTimers();
    const hanging = { peek: () => ASK_LATER, get: () => new Promise<never>(() => undefined) } as unknown as Store;
    const recalled = watch(Promise.resolve(new LateVerdicts(hanging).recall('bob@example.test', timers)).then((answer) => ({ answer })));
    await timers.advance(199);
    assert.equal(recalled(), undefined, 'still waiting before 200 ms');
    await timers.advance(1);
    assert.deepEqual(recalled(), { answer: undefined }, 'none remembered, at 200 ms');
  });

  it('reads a stored verdict that is not unknown (another version, or a Redis administrator wrote it) as none', async () => {
    // Answered as unknown (DUNNO), it would let through a sender whose callout said 550.
    const clock = new ManualClock();
    const store = new MemoryStore({ clock });
    await store.set('late:bob@example.test', JSON.stringify({ verdict: 'undeliverable', reason: 'rejected', description: '550 5.1.1 no such user' }), 60_000);
    assert.equal(await new LateVerdicts(store).recall('bob@example.test', systemTimers), undefined);
  });
});

describe('sender-callout: a sender whose SPF passed', () => {
  it('makes no callout by default, counted as skipped (spf-pass), and calls out when skipOnSpfPass is false', async () => {
    const { engine, clock, mx } = await stageWithOwnEngine('spfpass.test', '127.0.0.38', usersOnly(['bob']), '1s');
    const spfPassed = () => {
      const ctx = senderRequest(clock, 'alice@spfpass.test', 3000);
      return { ...ctx, earlier: new Map<string, StageVerdict>([['spf', { stage: 'spf', result: 'pass', reason: 'pass', decision: { kind: 'continue' } }]]) };
    };
    const metrics = new Metrics();
    const deps = { resolver: undefined as never, store: new MemoryStore({ clock }), clock, engine, log: createLogger('silent'), metrics };
    const skipping = senderCalloutStage.create(senderCalloutStage.options.parse({}) as never, deps);
    const skipped = await skipping.evaluate(spfPassed());
    assert.equal(skipped.result, 'skipped', skipped.reason);
    assert.equal(mx.connectionCount, 0, 'no callout');
    const counted = await metrics.registry.getSingleMetric('callout_callouts_skipped_total')?.get();
    assert.deepEqual(counted?.values.map((v) => [v.labels['reason'], v.value]), [['spf-pass', 1]]);
    const checking = senderCalloutStage.create(senderCalloutStage.options.parse({ skipOnSpfPass: false }) as never, deps);
    const checked = await checking.evaluate(spfPassed());
    assert.equal(checked.result, 'undeliverable', checked.reason);
    assert.equal(checked.decision.kind, 'reject');
  });
});

describe('sender-callout: late verdicts read back, fuzzed', () => {
  /** A late verdict as the stage writes one. */
  const good = { verdict: 'unknown', reason: 'timeout', description: 'no greeting within 1000 ms', source: 'probe', catchAll: 'not-run', postmaster: 'not-run', stale: false, checkedAt: 1, durationMs: 2, reply: { stage: 'rcpt', code: 451, enhanced: '4.3.0', text: 'later' } };

  it('reads any stored text as an unknown verdict whose header can be written, or as none, without throwing', async () => {
    // The value is read back from a store that other versions of callout share (and that a Redis
    // administrator can write): whatever it holds, recall answers or says none is remembered.
    const clock = new ManualClock();
    const store = new MemoryStore({ clock });
    const late = new LateVerdicts(store);
    const stored = fc.oneof(
      fc.string({ maxLength: 80 }),
      fc.jsonValue({ maxDepth: 3 }).map((value) => JSON.stringify(value)),
      fc.tuple(fc.constantFrom(...Object.keys(good)), fc.jsonValue({ maxDepth: 2 })).map(([key, value]) => JSON.stringify({ ...good, [key]: value })),
      fc.constantFrom('{"verdict":"unknown","reason":"timeout","description":"x","checkedAt":1e400}', '{"verdict":"unknown","reason":"a\\r\\nX-Injected: 1","description":"b\\r\\nX-Injected: 1"}', JSON.stringify({ ...good, reply: { stage: 'rcpt', code: 1.5 } })),
    );
    await fc.assert(
      fc.asyncProperty(stored, async (value) => {
        await store.set('late:bob@example.test', value, 60_000);
        const answer = await late.recall('bob@example.test', systemTimers);
        if (answer === undefined) return;
        assert.equal(answer.verdict, 'unknown');
        assert.ok(typeof answer.reason === 'string' && typeof answer.description === 'string', value);
        assert.ok(Number.isFinite(answer.checkedAt) && Number.isFinite(answer.durationMs), value);
        assert.ok(answer.reply === undefined || Number.isInteger(answer.reply.code), value);
        const header = formatCalloutResult(answer, 'mx.callout.test');
        assert.match(header, /^X-Callout-Result: unknown /, value);
        assert.doesNotMatch(header.replace(/\r\n[ \t]/g, ' '), CONTROL_CHARACTER, value);
      }),
      { numRuns: 500 },
    );
  });

  it('reads a late verdict of up to MAX_VERDICT_RECORD_LENGTH characters, and none longer', async () => {
    const store = new MemoryStore({ clock: new ManualClock() });
    const late = new LateVerdicts(store);
    await fc.assert(
      fc.asyncProperty(paddedRecords(JSON.stringify(good), MAX_VERDICT_RECORD_LENGTH), async ({ text, readable }) => {
        await store.set('late:bob@example.test', text, 60_000);
        assert.equal((await late.recall('bob@example.test', systemTimers)) !== undefined, readable, `a stored verdict of ${text.length} characters`);
      }),
      { numRuns: 200 },
    );
  });
});

describe('sender-callout: one callout per sender, however many recipients and retries', () => {
  it('the RCPTs of one message, asked at once and again after "in progress", make one connection to the sender\'s exchanger', async () => {
    // Slower than the stage's deadline, so that the first answers are "in progress".
    const { stage, engine, clock, mx } = await stageWithOwnEngine('slowmx.test', '127.0.0.34', { ...usersOnly(['bob']), greeting: () => ({ reply: '220 slow', delayMs: 400 }) }, '2s');
    const ask = (sender: string, recipient: string) => stage.evaluate(senderRequest(clock, sender, 100, 'mail.slowmx.test', recipient));
    const first = await Promise.all(['a', 'b', 'c', 'd', 'e'].map((r) => ask('bob@slowmx.test', `${r}@receiver.test`)));
    assert.ok(first.every((v) => v.result === 'in-progress'), first.map((v) => v.result).join());
    // The sending server retries, with the sender's domain in another letter case.
    const again = await ask('bob@SLOWMX.test', 'a@receiver.test');
    assert.ok(['in-progress', 'deliverable'].includes(again.result), again.result);
    await engine.idle();
    const later = await Promise.all(['a', 'b'].map((r) => ask('bob@SlowMX.Test', `${r}@receiver.test`)));
    assert.deepEqual(later.map((v) => v.result), ['deliverable', 'deliverable']);
    assert.equal(mx.connectionCount, 1);
  });
});

describe('sender-callout: an exchanger that answers at length', () => {
  it('keeps at most MAX_EVIDENCE_TEXT characters of its reply: the decision line and the cached verdict stay small', async () => {
    // 100 lines of 2,000 characters: all the SMTP client takes in one reply (smtp/reply's limits).
    const longRefusal = Array.from({ length: 100 }, (_, i) => `550${i === 99 ? ' ' : '-'}5.1.1 ${'x'.repeat(2000)}`).join('\r\n');
    const dns = await startDnsServer(mxZone({ 'verbose.test': '127.0.0.34' }));
    const [mx] = await startSmtpServers(['127.0.0.34'], () => ({ rcpt: () => longRefusal }));
    cleanups.push(async () => {
      await mx!.close();
      await dns.close();
    });
    const { lines: logs, log } = captureLog();
    const { client } = await startDaemonWithClient({
      overrides: {
        store: { kind: 'memory' },
        dns: { servers: [dns.address], timeout: '2s', tries: 1 },
        callout: { helo: 'verifier.callout.test', port: mx!.port, allowTargets: ['127.0.0.0/8'], timeouts: { connect: '1s', greeting: '1s', command: '1s', rcpt: '1s', overall: '3s' } },
        policy: { listen: '127.0.0.1:0', stages: [{ name: 'sender-callout' }] },
        metrics: { listen: '' },
      },
      log,
    }, cleanups);
    for (const instance of ['verbose-1', 'verbose-2']) {
      const action = await client.request(postfixRequest({ sender: 'bob@verbose.test', instance }));
      assert.match(action, /^550 5\.7\.1 Sender address rejected: .* with 550 5\.1\.1 x+\.\.\.$/);
      const line = logs.find((l) => l.msg === 'decision' && l.instance === instance);
      assert.ok(line, 'line');
      const entry = calloutStage(line.stages as string[]);
      assert.match(entry, /^sender-callout=undeliverable: rejected-at-rcpt: .* with 550 5\.1\.1 x+\.\.\.$/);
      assert.ok(entry.length < MAX_EVIDENCE_TEXT + 200, `${instance}: ${entry.length} characters`);
    }
  });
});
