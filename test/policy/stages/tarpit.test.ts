// The tarpit and ratelimit stages in a real pipeline, with ManualClock, ManualTimers and an injected sleep.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { paddedRecords } from '../../support/fuzz.js';
import { createLogger, type Logger } from '../../../src/core/log.js';
import { sleep } from '../../../src/core/clock.js';
import { ManualClock, ManualTimers } from '../../support/manual-time.js';
import { Pipeline, buildPipeline } from '../../../src/policy/pipeline.js';
import { validateConfig } from '../../../src/config/schema.js';
import type { ConfiguredStage } from '../../../src/policy/pipeline.js';
import { createTarpit, deadlineCuts, tarpitStage } from '../../../src/policy/stages/tarpit.js';
import { ratelimitStage } from '../../../src/policy/stages/ratelimit.js';
import { greylistStage } from '../../../src/policy/stages/greylist.js';
import type { Stage, StageDeps, StageMode } from '../../../src/policy/types.js';
import { MemoryStore, SqliteStore } from '../../../src/store/index.js';
import type { Store } from '../../../src/store/index.js';
import { captureLog } from '../../support/log-capture.js';
import { turnsUntil, watch } from '../../support/wait.js';
import { onStoreWrite } from '../../support/store-writes.js';

const silent = createLogger('silent');
const MINUTE = 60_000;

function world(): { clock: ManualClock; deps: StageDeps; counts: Record<string, number> } {
  const clock = new ManualClock(Date.UTC(2026, 0, 1, 9));
  const counts: Record<string, number> = {};
  const metrics = { increment: (name: string, labels: Record<string, string> = {}) => void (counts[`${name}:${Object.values(labels).join(',')}`] = (counts[`${name}:${Object.values(labels).join(',')}`] ?? 0) + 1) };
  return { clock, deps: { resolver: undefined as never, store: new MemoryStore({ clock }), clock, log: silent, metrics }, counts };
}

const configured = (stage: Stage, mode: StageMode = 'enforce'): ConfiguredStage => ({ stage, mode, states: new Set(['RCPT']), acceptAction: 'DUNNO' });

/** Rejects recipients whose local part starts with "nobody", as a recipient check would. */
const recipientCheck: Stage = {
  name: 'recipients',
  states: new Set(['RCPT']),
  async evaluate(ctx) {
    const unknown = ctx.recipientText.startsWith('nobody');
    return { stage: 'recipients', result: unknown ? 'unknown' : 'known', reason: '', decision: unknown ? { kind: 'reject', code: 550, enhanced: '5.1.1', text: 'User unknown' } : { kind: 'continue' } };
  },
};

const request = (recipient: string, more: Record<string, string> = {}) => ({
  request: 'smtpd_access_policy',
  protocol_state: 'RCPT',
  client_address: '192.0.2.66',
  sender: 'harvester@spam.example',
  recipient,
  instance: 'msg1',
  client_port: '40001',
  ...more,
});

/** The stages in a pipeline as callout serve builds one (faults answer DUNNO, warn mode WARN). */
function pipelineOf(stages: ConfiguredStage[], clock: ManualClock, decisionTimeoutMs = 6000, log: Logger = silent, timers?: ManualTimers): Pipeline {
  return new Pipeline(stages, { decisionTimeoutMs, faultAction: 'DUNNO', warnAction: 'WARN', clock, timers, log });
}


/** A tarpit in front of the recipient check, limited per connection at soft 2, hard 5 and never per client. */
function harvestWorld(slept: number[] = []) {
  const { clock, deps } = world();
  const tarpit = createTarpit(tarpitStage.options.parse({ perConnection: { soft: 2, hard: 5 }, perClient: { soft: 100, hard: 200 } }) as never, deps, async (ms) => void slept.push(ms));
  return pipelineOf([configured(tarpit), configured(recipientCheck)], clock);
}

/** Refuses the message at END-OF-MESSAGE when asked to (reject_at_end=yes), as a content check there would. */
const endCheck: Stage = {
  name: 'end-check',
  states: new Set(['END-OF-MESSAGE']),
  async evaluate(ctx) {
    const refuse = ctx.attributes.reject_at_end === 'yes';
    return { stage: 'end-check', result: refuse ? 'refused' : 'passed', reason: '', decision: refuse ? { kind: 'reject', code: 550, enhanced: '5.7.1', text: 'Refused' } : { kind: 'continue' } };
  },
};

/**
 * harvestWorld's tarpit in its default states (RCPT and END-OF-MESSAGE), before the recipient
 * check and the end check; on the store storeOf makes of a MemoryStore.
 */
function deliveryWorld(storeOf: (store: Store) => Store = (store) => store) {
  const { clock, deps } = world();
  const store = storeOf(deps.store);
  const tarpit = createTarpit(tarpitStage.options.parse({ perConnection: { soft: 2, hard: 5 }, perClient: { soft: 100, hard: 200 } }) as never, { ...deps, store }, async () => undefined);
  const stages = [{ ...configured(tarpit), states: new Set(tarpitStage.defaultStates) }, configured(recipientCheck), { ...configured(endCheck), states: new Set(['END-OF-MESSAGE'] as const) }];
  return { clock, store, pipeline: pipelineOf(stages, clock) };
}

/** The store, with the key of each write (set, setIfAbsent, compareAndSet) added to `writes`. */
function countingWrites(store: Store, writes: string[]): Store {
  return onStoreWrite(store, (key, write) => {
    writes.push(key);
    return write();
  });
}

describe('tarpit stage', () => {
  it('delays answers past the soft limit progressively, refuses at the hard limit, per connection', async () => {
    const { clock, deps, counts } = world();
    const slept: number[] = [];
    const tarpit = createTarpit(tarpitStage.options.parse({ perConnection: { soft: 2, hard: 5 }, perClient: { soft: 100, hard: 200 }, sleep: '1s', maxSleep: '2500ms' }) as never, deps, async (ms) => void slept.push(ms));
    const pipeline = pipelineOf([configured(tarpit), configured(recipientCheck)], clock);
    const answers: string[] = [];
    for (let n = 0; n < 6; n += 1) answers.push((await pipeline.decide(request(`nobody${n}@example.test`))).action);
    assert.deepEqual(answers.slice(0, 5), Array(5).fill('550 5.1.1 User unknown'));
    assert.equal(answers[5], '421 4.7.0 Too many rejected recipients from 192.0.2.66, try again later');
    // errors 3, 4, 5 are past the soft limit of 2: 1 s, 2 s, then capped at 2.5 s; the refusal itself is not counted.
    assert.deepEqual(slept, [1000, 2000, 2500, 2500]);
    assert.equal(counts['tarpit:refused'], 1);
    const fresh = await pipeline.decide(request('alice@example.test', { instance: 'msg2', client_port: '40002' }));
    assert.equal(fresh.action, 'DUNNO', 'a new connection starts counting again');
  });

  it('counts one connection across its messages, so a new MAIL transaction every two RCPTs does not help', async () => {
    const slept: number[] = [];
    const pipeline = harvestWorld(slept);
    const answers: string[] = [];
    for (let n = 0; n < 6; n += 1) answers.push((await pipeline.decide(request(`nobody${n}@example.test`, { instance: `msg${Math.floor(n / 2)}` }))).action);
    assert.deepEqual(answers.slice(0, 5), Array(5).fill('550 5.1.1 User unknown'));
    assert.match(answers[5]!, /^421 4\.7\.0 /, 'the third message of the connection is refused at its 6th RCPT');
    assert.deepEqual(slept, [1000, 2000, 3000, 3000]);
    const next = await pipeline.decide(request('alice@example.test', { instance: 'msg3' }));
    assert.equal(next.action, '421 4.7.0 Too many rejected recipients from 192.0.2.66, try again later');
    assert.equal(next.verdicts[0]!.reason, 'hard limit reached: 5 rejected on this connection, 5.0 per 1h');
  });

  it('forgives a connection its errors once it starts a new message after one with a recipient not rejected, as Postfix after a delivery', async () => {
    const slept: number[] = [];
    const pipeline = harvestWorld(slept);
    // A bulk sender reusing one connection: each message has a stale recipient and a good one.
    for (let m = 0; m < 8; m += 1) {
      assert.equal((await pipeline.decide(request(`nobody${m}@example.test`, { instance: `bulk${m}` }))).action, '550 5.1.1 User unknown', `message ${m}`);
      assert.equal((await pipeline.decide(request('alice@example.test', { instance: `bulk${m}` }))).action, 'DUNNO', `message ${m}`);
    }
    assert.deepEqual(slept, [], 'never past the soft limit of 2: each new message after a good one starts again');
    const last = await pipeline.decide(request('alice@example.test', { instance: 'bulk8' }));
    assert.equal(last.verdicts[0]!.reason, '0 rejected on this connection, 8.0 per 1h', 'the per-client count goes on');
  });

  it('does not forgive a harvester that slips one valid recipient among its probes in each message', async () => {
    const pipeline = harvestWorld();
    const answers: string[] = [];
    for (let m = 0; m < 3; m += 1) {
      answers.push((await pipeline.decide(request('postmaster@example.test', { instance: `h${m}` }))).action);
      for (let n = 0; n < 3; n += 1) answers.push((await pipeline.decide(request(`nobody${m}x${n}@example.test`, { instance: `h${m}` }))).action);
    }
    assert.deepEqual(answers.slice(0, 4), ['DUNNO', '550 5.1.1 User unknown', '550 5.1.1 User unknown', '550 5.1.1 User unknown']);
    assert.deepEqual(answers.slice(4, 7), ['DUNNO', '550 5.1.1 User unknown', '550 5.1.1 User unknown'], 'the second message goes on counting: 5 errors');
    assert.match(answers[7]!, /^421 4\.7\.0 /, 'the hard limit of 5 on this connection is reached');
  });

  it('where Postfix sends END-OF-MESSAGE requests, forgives a connection on delivery only, as Postfix does', async () => {
    const { pipeline } = deliveryWorld();
    const end = (instance: string, more: Record<string, string> = {}) => pipeline.decide(request('', { protocol_state: 'END-OF-MESSAGE', recipient_count: '1', instance, ...more }));
    // Three stale addresses and one good one a message: more rejected than let through, which
    // the rule without END-OF-MESSAGE requests does not forgive, but the message is delivered.
    for (let m = 0; m < 4; m += 1) {
      for (let n = 0; n < 3; n += 1) assert.equal((await pipeline.decide(request(`nobody${m}x${n}@example.test`, { instance: `d${m}` }))).action, '550 5.1.1 User unknown', `message ${m}`);
      assert.equal((await pipeline.decide(request('alice@example.test', { instance: `d${m}` }))).action, 'DUNNO', `message ${m}`);
      const ended = await end(`d${m}`);
      assert.equal(ended.action, 'DUNNO');
      assert.equal(ended.verdicts[0]!.result, 'end-of-message');
    }
    assert.equal((await pipeline.decide(request('alice@example.test', { instance: 'd4' }))).verdicts[0]!.reason, '0 rejected on this connection, 12.0 per 1h', 'forgiven at each delivery');
    // Not delivered: no recipient accepted, or the pipeline refused the message there.
    for (let n = 0; n < 3; n += 1) await pipeline.decide(request(`nobody9x${n}@example.test`, { instance: 'd5' }));
    await end('d5', { recipient_count: '0' });
    await end('d5', { reject_at_end: 'yes' });
    assert.equal((await pipeline.decide(request('alice@example.test', { instance: 'd6' }))).verdicts[0]!.reason, '3 rejected on this connection, 15.0 per 1h');
    // At the hard limit the tarpit still answers nothing but DUNNO at the end of a message.
    for (let n = 0; n < 2; n += 1) await pipeline.decide(request(`nobody8x${n}@example.test`, { instance: 'd6' }));
    assert.match((await pipeline.decide(request('alice@example.test', { instance: 'd6' }))).action, /^421 /);
    assert.equal((await end('d6')).action, 'DUNNO');
    assert.equal((await pipeline.decide(request('alice@example.test', { instance: 'd7' }))).action, 'DUNNO', 'forgiven by that delivery');
  });

  it('where Postfix sends END-OF-MESSAGE requests, does not forgive a harvester whose extra probes Postfix rejects after callout let them through', async () => {
    const { pipeline } = deliveryWorld();
    // Another client's delivery shows that this server end sends END-OF-MESSAGE requests.
    await pipeline.decide(request('alice@example.test', { client_address: '192.0.2.10', instance: 'good' }));
    await pipeline.decide(request('', { client_address: '192.0.2.10', protocol_state: 'END-OF-MESSAGE', recipient_count: '1', instance: 'good' }));
    // The harvester never reaches DATA. Each message: three probes callout rejects, and three
    // unknown users of the site's own domain that callout lets through (DUNNO) and Postfix then
    // rejects itself (smtpd_reject_unlisted_recipient): as many let through as rejected.
    const answers: string[] = [];
    for (let m = 0; m < 3; m += 1) {
      for (let n = 0; n < 3; n += 1) answers.push((await pipeline.decide(request(`ghost${m}x${n}@example.test`, { instance: `h${m}` }))).action);
      for (let n = 0; n < 3; n += 1) answers.push((await pipeline.decide(request(`nobody${m}x${n}@example.test`, { instance: `h${m}` }))).action);
    }
    assert.deepEqual(answers.slice(0, 6), ['DUNNO', 'DUNNO', 'DUNNO', '550 5.1.1 User unknown', '550 5.1.1 User unknown', '550 5.1.1 User unknown']);
    assert.deepEqual(answers.slice(6, 10), ['DUNNO', 'DUNNO', 'DUNNO', '550 5.1.1 User unknown'], 'not forgiven at its second message: four errors');
    assert.match(answers[10]!, /^550 /, 'the fifth error');
    assert.match(answers[11]!, /^421 4\.7\.0 /, 'the hard limit of 5 on this connection is reached');
    // A server end that sends no END-OF-MESSAGE requests keeps the rule that forgives such a message.
    const elsewhere = (recipient: string, instance: string) => pipeline.decide(request(recipient, { server_address: '198.51.100.7', server_port: '25', instance }));
    for (let m = 0; m < 3; m += 1) {
      for (let n = 0; n < 3; n += 1) await elsewhere(`ghost${m}x${n}@example.test`, `e${m}`);
      for (let n = 0; n < 3; n += 1) assert.equal((await elsewhere(`nobody${m}x${n}@example.test`, `e${m}`)).action, '550 5.1.1 User unknown', `message ${m}`);
    }
  });

  it('keeps the rule for servers without END-OF-MESSAGE requests for a day after the last one', async () => {
    const { pipeline, clock } = deliveryWorld();
    await pipeline.decide(request('', { client_address: '192.0.2.10', protocol_state: 'END-OF-MESSAGE', recipient_count: '1', instance: 'good' }));
    clock.advance(25 * 60 * MINUTE);
    for (let m = 0; m < 3; m += 1) {
      for (let n = 0; n < 3; n += 1) await pipeline.decide(request(`ghost${m}x${n}@example.test`, { instance: `h${m}` }));
      for (let n = 0; n < 3; n += 1) assert.equal((await pipeline.decide(request(`nobody${m}x${n}@example.test`, { instance: `h${m}` }))).action, '550 5.1.1 User unknown', `message ${m}`);
    }
  });

  it('tallies the rejections of a stage placed before the tarpit too, so its harvester is not forgiven either', async () => {
    const { clock, deps } = world();
    const tarpit = createTarpit(tarpitStage.options.parse({ perConnection: { soft: 2, hard: 5 }, perClient: { soft: 100, hard: 200 } }) as never, deps, async () => undefined);
    const pipeline = pipelineOf([configured(recipientCheck), configured(tarpit)], clock);
    const answers: string[] = [];
    for (let m = 0; m < 3; m += 1) {
      answers.push((await pipeline.decide(request('postmaster@example.test', { instance: `p${m}` }))).action);
      for (let n = 0; n < 3; n += 1) await pipeline.decide(request(`nobody${m}x${n}@example.test`, { instance: `p${m}` }));
    }
    assert.deepEqual(answers.slice(0, 2), ['DUNNO', 'DUNNO']);
    assert.match(answers[2]!, /^421 /, 'six errors over two messages, never forgiven: the hard limit is reached where the tarpit judges');
  });

  it('does not add up errors of different connections from one client per connection', async () => {
    const slept: number[] = [];
    const pipeline = harvestWorld(slept);
    // 10 rejections, more than the hard limit of 5, over 5 connections (source ports) of one client.
    for (let n = 0; n < 10; n += 1) {
      const out = await pipeline.decide(request(`nobody${n}@example.test`, { client_port: String(40001 + (n % 5)), instance: `msg${n}` }));
      assert.equal(out.action, '550 5.1.1 User unknown', `rejection ${n}`);
    }
    assert.deepEqual(slept, [], 'no connection got past the soft limit of 2');
    for (let c = 0; c < 5; c += 1) {
      const out = await pipeline.decide(request('alice@example.test', { client_port: String(40001 + c), instance: `ok${c}` }));
      assert.equal(out.action, 'DUNNO', `connection ${c}`);
      assert.equal(out.verdicts[0]!.reason, '2 rejected on this connection, 10.0 per 1h');
    }
  });

  it('keeps connections to different servers apart when a source port reaches both', async () => {
    const pipeline = harvestWorld();
    const to = (server: string, n: number) => request(`nobody${n}@example.test`, { server_address: server, server_port: '25', instance: `${server}-${n}` });
    for (let n = 0; n < 4; n += 1) await pipeline.decide(to('198.51.100.1', n));
    for (let n = 0; n < 4; n += 1) await pipeline.decide(to('198.51.100.2', n));
    const out = await pipeline.decide(to('198.51.100.1', 9));
    assert.equal(out.action, '550 5.1.1 User unknown', 'four errors on each server, below the hard limit of 5');
    assert.match((await pipeline.decide(to('198.51.100.1', 10))).action, /^421 /, 'the fifth on one server reaches it');
  });

  it('counts one connection and one client across two workers sharing one SQLite file, whichever worker each request reaches', async () => {
    const { clock, deps } = world();
    const dir = mkdtempSync(join(tmpdir(), 'callout-tarpit-'));
    const stores = [await SqliteStore.open(join(dir, 'shared.db'), { clock }), await SqliteStore.open(join(dir, 'shared.db'), { clock })];
    try {
      const slept: number[] = [];
      const options = tarpitStage.options.parse({ perConnection: { soft: 2, hard: 5 }, perClient: { window: '10m', soft: 7, hard: 7 } }) as never;
      const workers = stores.map((store) => pipelineOf([configured(createTarpit(options, { ...deps, store }, async (ms) => void slept.push(ms))), configured(recipientCheck)], clock));
      const answers: string[] = [];
      // One connection's requests come one at a time; Postfix's policy client may reach either worker.
      for (let n = 0; n < 6; n += 1) answers.push((await workers[n % 2]!.decide(request(`nobody${n}@example.test`, { instance: `m${Math.floor(n / 3)}` }))).action);
      assert.deepEqual(answers.slice(0, 5), Array(5).fill('550 5.1.1 User unknown'));
      assert.match(answers[5]!, /^421 4\.7\.0 /, 'five errors on the connection, counted by both workers');
      assert.deepEqual(slept, [1000, 2000, 3000, 3000]);
      // Two more connections of the client, at once on both workers: the per-client window adds up all of them.
      const other = (port: string, n: number) => request(`nobody-${port}-${n}@example.test`, { client_port: port, instance: `p${port}` });
      await Promise.all([workers[0]!.decide(other('40100', 0)), workers[1]!.decide(other('40200', 0))]);
      const refused = await workers[0]!.decide(request('alice@example.test', { client_port: '40300', instance: 'fresh' }));
      assert.equal(refused.verdicts[0]!.reason, 'hard limit reached: 0 rejected on this connection, 7.0 per 10m');
    } finally {
      for (const store of stores) await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  for (const [label, port] of [['without client_port', undefined], ['with client_port "unknown"', 'unknown'], ['with an empty client_port', '']] as const) {
    it(`counts per message ${label} (older Postfix)`, async () => {
      const pipeline = harvestWorld();
      const ask = (recipient: string, instance: string) => {
        const { client_port: _dropped, ...attributes } = request(recipient, { instance });
        return pipeline.decide(port === undefined ? attributes : { ...attributes, client_port: port });
      };
      // Four errors in each of two messages: eight in all, but neither message reaches 5.
      for (let n = 0; n < 4; n += 1) assert.equal((await ask(`nobody${n}@example.test`, 'msgA')).action, '550 5.1.1 User unknown');
      for (let n = 0; n < 4; n += 1) assert.equal((await ask(`nobody${n}@example.test`, 'msgB')).action, '550 5.1.1 User unknown');
      const other = await ask('alice@example.test', 'msgC');
      assert.equal(other.action, 'DUNNO');
      assert.equal(other.verdicts[0]!.reason, '0 rejected in this message, 8.0 per 1h');
      await ask('nobody9@example.test', 'msgA');
      assert.match((await ask('alice@example.test', 'msgA')).action, /^421 /, 'the fifth error in one message reaches the limit');
    });
  }

  it('counts per client over the window, so reconnecting does not help, and forgets with time', async () => {
    const { clock, deps } = world();
    const tarpit = createTarpit(tarpitStage.options.parse({ perConnection: { soft: 100, hard: 100 }, perClient: { window: '10m', soft: 3, hard: 4 } }) as never, deps, async () => undefined);
    const pipeline = pipelineOf([configured(tarpit), configured(recipientCheck)], clock);
    for (let n = 0; n < 4; n += 1) await pipeline.decide(request(`nobody${n}@example.test`, { instance: `c${n}` }));
    assert.match((await pipeline.decide(request('alice@example.test', { instance: 'c9' }))).action, /^421 /);
    assert.equal((await pipeline.decide(request('alice@example.test', { client_address: '192.0.2.67', instance: 'c10' }))).action, 'DUNNO', 'another client is not affected');
    clock.advance(20 * MINUTE);
    assert.equal((await pipeline.decide(request('alice@example.test', { instance: 'c11' }))).action, 'DUNNO');
  });

  it('counts an IPv6 client by address, or by its /64 when asked, so probing from a new address each time does not help', async () => {
    const { clock, deps } = world();
    const byAddress = pipelineOf([configured(createTarpit(tarpitStage.options.parse({ perConnection: { soft: 100, hard: 100 }, perClient: { window: '10m', soft: 3, hard: 4 } }) as never, deps, async () => undefined)), configured(recipientCheck)], clock);
    for (let n = 0; n < 4; n += 1) await byAddress.decide(request(`nobody${n}@example.test`, { client_address: `2001:db8:9:2::${n + 1}`, instance: `a${n}` }));
    assert.equal((await byAddress.decide(request('alice@example.test', { client_address: '2001:db8:9:2::9', instance: 'a9' }))).action, 'DUNNO', 'by default each address is a client (a provider\'s servers share a /64)');
    const tarpit = createTarpit(tarpitStage.options.parse({ perConnection: { soft: 100, hard: 100 }, perClient: { window: '10m', soft: 3, hard: 4, ipv6Prefix: 64 } }) as never, deps, async () => undefined);
    const pipeline = pipelineOf([configured(tarpit), configured(recipientCheck)], clock);
    for (let n = 0; n < 4; n += 1) await pipeline.decide(request(`nobody${n}@example.test`, { client_address: `2001:db8:1:2::${n + 1}`, instance: `v${n}` }));
    assert.match((await pipeline.decide(request('alice@example.test', { client_address: '2001:db8:1:2:ffff::9', instance: 'v9' }))).action, /^421 /);
    assert.equal((await pipeline.decide(request('alice@example.test', { client_address: '2001:db8:1:3::1', instance: 'v10' }))).action, 'DUNNO', 'the next /64 is another client');
  });

  it('refuses a per-client window under a second (a window of 0 would never count)', () => {
    assert.throws(() => tarpitStage.options.parse({ perClient: { window: 0 } }), /expected at least 1s\b/);
  });

  it('refuses every exemptClients entry that is no address or network with the other problems, by its index and with what it expects (built, it said only the first, without its index)', () => {
    const exemptClients = ['192.0.2.0/24', 'mx.example.org', '2001:db8::/129', '2001:db8::/32', '198.51.100.7/24'];
    const expected = 'expected an IPv4 or IPv6 address or network';
    assert.throws(() => validateConfig({ policy: { stages: [{ name: 'tarpit', perClient: { window: 0 }, exemptClients }] } }), {
      code: 'CONFIG_INVALID',
      message: [
        'configuration: policy.stages.0.perClient.window (tarpit): got 0, expected at least 1s',
        `policy.stages.0.exemptClients.1 (tarpit): got "mx.example.org", ${expected} (192.0.2.0/24, 2001:db8::/32)`,
        `policy.stages.0.exemptClients.2 (tarpit): got "2001:db8::/129", ${expected} (prefix length must be 0 to 128: "129")`,
        `policy.stages.0.exemptClients.4 (tarpit): got "198.51.100.7/24", ${expected} (host bits set after the prefix: write the network, 198.51.100.0/24, or the address alone)`,
      ].join('; '),
    });
  });

  it('refuses a soft limit above its hard limit, which would never act; takes them equal, as Postfix does', async () => {
    assert.throws(() => tarpitStage.options.parse({ perConnection: { soft: 30, hard: 20 } }), /expected at most perConnection\.hard \(20\)/);
    assert.throws(() => tarpitStage.options.parse({ perConnection: { hard: 5 } }), /expected at most perConnection\.hard \(5\)/, 'the default soft limit, 10, is above it');
    assert.throws(() => tarpitStage.options.parse({ perClient: { soft: 51 } }), /expected at most perClient\.hard \(50\)/);
    // Equal limits refuse at the limit without slowing the client before it.
    const { clock, deps } = world();
    const slept: number[] = [];
    const tarpit = createTarpit(tarpitStage.options.parse({ perConnection: { soft: 3, hard: 3 } }) as never, deps, async (ms) => void slept.push(ms));
    const pipeline = pipelineOf([configured(tarpit), configured(recipientCheck)], clock);
    for (let n = 0; n < 3; n += 1) assert.equal((await pipeline.decide(request(`nobody${n}@example.test`))).action, '550 5.1.1 User unknown');
    assert.match((await pipeline.decide(request('nobody9@example.test'))).action, /^421 4\.7\.0 /);
    assert.deepEqual(slept, []);
  });

  it('never sleeps past the decision deadline, and not at all in warn mode', async () => {
    const { clock, deps } = world();
    const timers = new ManualTimers();
    const slept: number[] = [];
    const options = tarpitStage.options.parse({ perConnection: { soft: 0, hard: 50 }, sleep: '10s', maxSleep: '60s' }) as never;
    const enforce = pipelineOf([configured(createTarpit(options, deps, async (ms) => void slept.push(ms))), configured(recipientCheck)], clock, 2000, silent, timers);
    await enforce.decide(request('nobody@example.test'));
    assert.deepEqual(slept, [1750], 'the deadline 2 s less the 250 ms margin (the stages took no time on the ManualTimers)');
    const warn = pipelineOf([configured(createTarpit(options, deps, async (ms) => void slept.push(ms)), 'warn'), configured(recipientCheck)], clock, 2000, silent, timers);
    await warn.decide(request('nobody@example.test', { instance: 'w' }));
    assert.equal(slept.length, 1);
  });

  it('never sleeps past the decision deadline when the wall clock was stepped back while the request was decided', async () => {
    const { clock, deps } = world();
    const timers = new ManualTimers({ wall: clock });
    const slept: number[] = [];
    const options = tarpitStage.options.parse({ perConnection: { soft: 0, hard: 50 }, sleep: '10s', maxSleep: '60s' }) as never;
    // NTP or a restored virtual machine steps the clock back an hour while the recipient is
    // checked, which takes 300 ms of the deadline.
    const stepsBack: Stage = {
      ...recipientCheck,
      async evaluate(ctx) {
        clock.advance(-3_600_000);
        await sleep(300, timers);
        return recipientCheck.evaluate(ctx);
      },
    };
    const decided = watch(pipelineOf([configured(createTarpit(options, deps, async (ms) => void slept.push(ms))), configured(stepsBack)], clock, 2000, silent, timers).decide(request('nobody@example.test')));
    await timers.advance(300);
    assert.equal(decided()?.action, '550 5.1.1 User unknown');
    assert.deepEqual(slept, [1450], 'the 2 s deadline less the 300 ms taken and the 250 ms margin, not the 10 s of sleep');
  });

  it('names the sleep options the decision deadline cuts short, with the bound the delays stop at', () => {
    const entry = (options: Record<string, unknown>) => tarpitStage.options.parse(options);
    assert.deepEqual(deadlineCuts(entry({}), 0, 6000), [], 'the defaults (1 s, at most 5 s) fit the default 6 s');
    assert.deepEqual(deadlineCuts(entry({ maxSleep: '30s' }), 2, 6000), [
      'policy.stages.2.maxSleep (tarpit): 30s is above policy.decisionTimeout (6s) less 250 ms: tarpit delays stop at 5750ms',
    ], 'keyed as every problem of a stage option is (config/stage-key)');
    assert.deepEqual(deadlineCuts(entry({}), 0, 3000), [
      'policy.stages.0.maxSleep (tarpit): 5s is above policy.decisionTimeout (3s) less 250 ms: tarpit delays stop at 2750ms',
    ], 'a lowered decisionTimeout with the default maxSleep is warned about, not refused');
    assert.deepEqual(deadlineCuts(entry({ maxSleep: '5750ms' }), 0, 6000), [], 'a maxSleep at the bound is reached, not cut: the warning says "above"');
    assert.deepEqual(deadlineCuts(entry({ sleep: '10s', maxSleep: '1m' }), 0, 6000).map((line) => line.split(':')[0]), ['policy.stages.0.maxSleep (tarpit)', 'policy.stages.0.sleep (tarpit)']);
  });

  it('waits on the pipeline\'s timers, built as callout serve builds it: an answer not before sleep x errors past the soft limit, at it exactly, at most maxSleep', async () => {
    const { deps } = world();
    const timers = new ManualTimers();
    const config = validateConfig({
      policy: { stages: [{ name: 'tarpit', perConnection: { soft: 1, hard: 10 }, perClient: { soft: 100, hard: 200 }, sleep: '1s', maxSleep: '2500ms' }, { name: 'sender-syntax' }] },
    });
    const pipeline = buildPipeline(config, deps, undefined, timers);
    const refusal = "501 5.7.1 Bad sender address syntax: <not an address>: missing '@' at 14";
    const badSender = (n: number) => request(`alice${n}@example.test`, { sender: 'not an address' });
    const first = watch(pipeline.decide(badSender(0)));
    await timers.advance(0);
    assert.equal(first()?.action, refusal, 'the first error is not past the soft limit of 1: answered at once');
    // The 2nd, 3rd and 4th errors: 1 s, 2 s, then 3 s capped at maxSleep 2.5 s.
    for (const [n, delayMs] of [[1, 1000], [2, 2000], [3, 2500]] as const) {
      const answer = watch(pipeline.decide(badSender(n)));
      await timers.advance(delayMs - 1);
      assert.equal(answer(), undefined, `error ${n + 1}: not answered before ${delayMs} ms`);
      await timers.advance(1);
      assert.equal(answer()?.action, refusal, `error ${n + 1}: answered at ${delayMs} ms`);
    }
    await pipeline.close();
  });

  it('ends a delay at the decision deadline less its margin, on the pipeline\'s timers', async () => {
    const { deps } = world();
    const timers = new ManualTimers();
    const config = validateConfig({ policy: { decisionTimeout: '2s', stages: [{ name: 'tarpit', perConnection: { soft: 0, hard: 10 }, sleep: '10s', maxSleep: '60s' }, { name: 'sender-syntax' }] } });
    const pipeline = buildPipeline(config, deps, undefined, timers);
    const answer = watch(pipeline.decide(request('alice@example.test', { sender: 'not an address' })));
    await timers.advance(1749);
    assert.equal(answer(), undefined, 'not answered before the 2 s deadline less its 250 ms margin');
    await timers.advance(1);
    assert.equal(answer()?.action, "501 5.7.1 Bad sender address syntax: <not an address>: missing '@' at 14", 'answered at 1750 ms, not after the 10 s of sleep');
    await pipeline.close();
  });

  it('ends a delay still running when the stage is closed (shutdown, reload): the answer goes out at once', async () => {
    const { clock, deps, counts } = world();
    const timers = new ManualTimers();
    const tarpit = tarpitStage.create(tarpitStage.options.parse({ perConnection: { soft: 0, hard: 10 }, sleep: '30s', maxSleep: '30s' }) as never, deps);
    const pipeline = pipelineOf([configured(tarpit), configured(recipientCheck)], clock, 60_000, silent, timers);
    const answer = watch(pipeline.decide(request('nobody@example.test')));
    await turnsUntil(() => counts['tarpit:delayed'] === 1, 'the 30 s delay began');
    await timers.advance(29_999);
    assert.equal(answer(), undefined);
    assert.equal(timers.waiting, 2, 'the delay and the bound on the observers, on the pipeline\'s timers');
    await pipeline.close();
    await turnsUntil(() => answer() !== undefined, 'the answer');
    assert.equal(answer()?.action, '550 5.1.1 User unknown', 'the rejection goes out without the rest of its delay');
    assert.equal(timers.now(), 29_999, 'answered without moving the timers to the end of the delay');
    assert.equal(timers.waiting, 0, 'the delay\'s timer is cleared');
    assert.equal((await pipeline.decide(request('nobody2@example.test'))).action, '550 5.1.1 User unknown');
    assert.equal(counts['tarpit:delayed'], 1, 'a closed stage delays nothing more');
  });

  it('counts a refusal only when one is sent: in warn mode the hard limit is "warned"', async () => {
    const { clock, deps, counts } = world();
    const options = tarpitStage.options.parse({ perConnection: { soft: 2, hard: 2 }, perClient: { soft: 100, hard: 200 } }) as never;
    const warn = pipelineOf([configured(createTarpit(options, deps, async () => undefined), 'warn'), configured(recipientCheck)], clock);
    for (let n = 0; n < 4; n += 1) await warn.decide(request(`nobody${n}@example.test`));
    const out = await warn.decide(request('alice@example.test'));
    assert.match(out.action, /^WARN tarpit would answer 421 /, 'nothing refused');
    assert.equal(counts['tarpit:refused'], undefined);
    assert.equal(counts['tarpit:warned'], 3, 'the third, fourth and fifth requests reached the hard limit');
  });

  it('does not count its own 5xx refusals as rejected recipients, so the client is let back once its errors age out', async () => {
    const { clock, deps } = world();
    const tarpit = createTarpit(tarpitStage.options.parse({ perConnection: { soft: 100, hard: 100 }, perClient: { window: '10m', soft: 2, hard: 2 }, hardCode: 550 }) as never, deps, async () => undefined);
    const pipeline = pipelineOf([configured(tarpit), configured(recipientCheck)], clock);
    for (let n = 0; n < 2; n += 1) await pipeline.decide(request(`nobody${n}@example.test`, { instance: `r${n}` }));
    // A client that goes on trying every minute is refused, but its refusals add nothing.
    for (let m = 0; m < 5; m += 1) {
      const out = await pipeline.decide(request('alice@example.test', { instance: `x${m}` }));
      assert.equal(out.action, '550 5.7.0 Too many rejected recipients from 192.0.2.66, try again later');
      assert.equal(out.verdicts[0]!.reason, 'hard limit reached: 2 rejected on this connection, 2.0 per 10m', `attempt ${m}`);
    }
    clock.advance(20 * MINUTE);
    assert.equal((await pipeline.decide(request('alice@example.test', { instance: 'later' }))).action, 'DUNNO');
  });

  it('under stress (all smtpd processes busy) delays nothing and refuses past the soft limit, as Postfix\'s own limits drop to one', async () => {
    const slept: number[] = [];
    const pipeline = harvestWorld(slept);
    for (let n = 0; n < 3; n += 1) await pipeline.decide(request(`nobody${n}@example.test`));
    assert.deepEqual(slept, [1000], 'the third error, past the soft limit of 2, is delayed without stress');
    const stressed = await pipeline.decide(request('nobody9@example.test', { stress: 'yes' }));
    assert.equal(stressed.action, '421 4.7.0 Too many rejected recipients from 192.0.2.66, try again later');
    assert.equal(stressed.verdicts[0]!.reason, 'soft limit passed under stress: 3 rejected on this connection, 3.0 per 1h');
    assert.deepEqual(slept, [1000], 'and its answer is not delayed');
    assert.equal((await pipeline.decide(request('alice@example.test', { client_port: '40002', instance: 'fresh', stress: 'yes' }))).action, 'DUNNO', 'a connection below the soft limit goes on');
  });

  it('neither counts, delays nor refuses a client that authenticated (sasl_username), nor others at its address for it', async () => {
    const { clock, deps } = world();
    const slept: number[] = [];
    const tarpit = createTarpit(tarpitStage.options.parse({ perConnection: { soft: 1, hard: 3 }, perClient: { soft: 1, hard: 3 } }) as never, deps, async (ms) => void slept.push(ms));
    const pipeline = pipelineOf([configured(tarpit), configured(recipientCheck)], clock);
    for (let n = 0; n < 6; n += 1) {
      const out = await pipeline.decide(request(`nobody${n}@example.test`, { sasl_username: 'alice', instance: `own${n}` }));
      assert.equal(out.action, '550 5.1.1 User unknown', `rejection ${n}`);
      assert.equal(out.verdicts[0]!.result, 'exempt');
    }
    assert.deepEqual(slept, []);
    const other = await pipeline.decide(request('bob@example.test', { client_port: '40002', instance: 'other' }));
    assert.equal(other.action, 'DUNNO', 'another connection from the same address (a NAT) is not refused for it');
    assert.equal(other.verdicts[0]!.reason, '0 rejected on this connection, 0.0 per 1h');
  });

  it('says why a client is not counted: no usable address is no exemption', async () => {
    const { clock, deps } = world();
    const tarpit = createTarpit(tarpitStage.options.parse({ exemptClients: ['2001:db8:ffff::/48'] }) as never, deps, async () => undefined);
    const pipeline = pipelineOf([configured(tarpit), configured(recipientCheck)], clock);
    const verdict = async (more: Record<string, string>) => (await pipeline.decide(request('nobody@example.test', more))).verdicts[0]!;
    assert.deepEqual(await verdict({ client_address: 'unknown' }), { stage: 'tarpit', result: 'none', reason: 'no usable client address in the request ("unknown"): not counted', decision: { kind: 'continue' } });
    assert.equal((await verdict({ client_address: '' })).reason, 'no client address in the request: not counted');
    assert.equal((await verdict({ client_address: 'fe80::1%eth0' })).result, 'none', 'a zone id is refused, as Postfix never sends one');
    assert.deepEqual(await verdict({ client_address: '2001:DB8:FFFF::1' }).then((v) => [v.result, v.reason]), ['exempt', 'client 2001:DB8:FFFF::1 is in exemptClients: not counted']);
    assert.deepEqual(await verdict({ sasl_username: 'alice' }).then((v) => [v.result, v.reason]), ['exempt', 'client authenticated as alice: not counted']);
  });

  it('counts one client however its address is spelt: case, leading zeros, uncompressed, IPv4-mapped', async () => {
    const { clock, deps } = world();
    const tarpit = createTarpit(tarpitStage.options.parse({ perConnection: { soft: 100, hard: 200 }, perClient: { soft: 3, hard: 3 } }) as never, deps, async () => undefined);
    const pipeline = pipelineOf([configured(tarpit), configured(recipientCheck)], clock);
    const spellings = ['2001:db8:1:2::5', '2001:DB8:1:2::5', '2001:0db8:0001:0002:0000:0000:0000:0005'];
    for (const [n, client] of spellings.entries()) assert.equal((await pipeline.decide(request(`nobody${n}@example.test`, { client_address: client, client_port: String(41000 + n) }))).action, '550 5.1.1 User unknown');
    assert.match((await pipeline.decide(request('alice@example.test', { client_address: '2001:db8:1:2:0:0:0:5', client_port: '41009' }))).action, /^421 /, 'three errors of one client, the fourth spelling refused');
    for (const [n, client] of ['192.0.2.9', '::ffff:192.0.2.9', '::FFFF:c000:209'].entries()) await pipeline.decide(request(`nobody${n}@example.test`, { client_address: client, client_port: String(42000 + n) }));
    assert.match((await pipeline.decide(request('alice@example.test', { client_address: '0:0:0:0:0:ffff:192.0.2.9', client_port: '42009' }))).action, /^421 /, 'a mapped address is its IPv4 client');
  });

  it('defaults to Postfix\'s own error limits per connection and to the documented per-client limits', () => {
    for (const given of [{}, { perConnection: {}, perClient: {} }]) {
      const parsed = tarpitStage.options.parse(given) as { perConnection: unknown; perClient: unknown };
      assert.deepEqual(parsed.perConnection, { soft: 10, hard: 20 });
      assert.deepEqual(parsed.perClient, { window: '1h', soft: 20, hard: 50, ipv4Prefix: 32, ipv6Prefix: 128 });
    }
  });

  it('under stress refuses only past the soft limit, not at it', async () => {
    const pipeline = harvestWorld();
    for (let n = 0; n < 2; n += 1) await pipeline.decide(request(`nobody${n}@example.test`));
    assert.equal((await pipeline.decide(request('alice@example.test', { stress: 'yes' }))).action, 'DUNNO', 'two errors, the soft limit of 2');
  });

  it('keeps a connection\'s count for an hour, however slowly it probes', async () => {
    const { clock, deps } = world();
    const tarpit = createTarpit(tarpitStage.options.parse({ perConnection: { soft: 2, hard: 5 }, perClient: { soft: 100, hard: 200 } }) as never, deps, async () => undefined);
    const pipeline = pipelineOf([configured(tarpit), configured(recipientCheck)], clock);
    for (let n = 0; n < 3; n += 1) {
      await pipeline.decide(request(`nobody${n}@example.test`));
      clock.advance(10 * MINUTE);
    }
    assert.match((await pipeline.decide(request('alice@example.test'))).verdicts[0]!.reason, /^3 rejected on this connection/);
    clock.advance(61 * MINUTE);
    assert.match((await pipeline.decide(request('alice@example.test'))).verdicts[0]!.reason, /^0 rejected on this connection/);
  });

  it('does not give the forgiving rule back within the day after a server\'s last END-OF-MESSAGE request', async () => {
    const { pipeline, clock } = deliveryWorld();
    await pipeline.decide(request('', { client_address: '192.0.2.10', protocol_state: 'END-OF-MESSAGE', recipient_count: '1', instance: 'good' }));
    clock.advance(2 * 60 * MINUTE);
    const answers: string[] = [];
    for (let m = 0; m < 2; m += 1) {
      for (let n = 0; n < 3; n += 1) await pipeline.decide(request(`ghost${m}x${n}@example.test`, { instance: `h${m}` }));
      for (let n = 0; n < 3; n += 1) answers.push((await pipeline.decide(request(`nobody${m}x${n}@example.test`, { instance: `h${m}` }))).action);
    }
    assert.match(answers[5]!, /^421 /, 'the errors of both messages add up to the hard limit of 5');
  });

  it('writes a server end\'s END-OF-MESSAGE mark once an hour, not at every message, and it lasts a day after the last one', async () => {
    const writes: string[] = [];
    const { pipeline, clock, store } = deliveryWorld((inner) => countingWrites(inner, writes));
    const mark = 'tarpit:e:/0';
    const marks = () => writes.filter((key) => key === mark).length;
    const end = (n: number) => pipeline.decide(request('', { client_address: `192.0.2.${10 + (n % 50)}`, client_port: String(41000 + n), protocol_state: 'END-OF-MESSAGE', recipient_count: '1', instance: `e${n}` }));
    // A message every 10 minutes for three days: the mark is written once an hour, and at every
    // moment it holds for at least a day after the last request, for every process reading it.
    let last = 0;
    for (let n = 0; n < 6 * 72; n += 1) {
      await end(n);
      last = clock.now();
      assert.ok((await store.get(mark))!.expiresAt >= last + 24 * 60 * MINUTE, `message ${n}`);
      clock.advance(10 * MINUTE);
    }
    assert.equal(marks(), 72, 'once an hour for three days, not 432 times');
    // A clock stepped back (an NTP correction) writes it again at once.
    clock.set(last - 3 * 60 * MINUTE);
    await end(1000);
    assert.equal(marks(), 73);
    last = clock.now();
    await end(1001);
    assert.equal(marks(), 73);
    // Once the requests stop, the mark holds for a day and lapses within the hour after.
    clock.set(last + 24 * 60 * MINUTE - MINUTE);
    assert.ok(await store.get(mark), 'a day after the last request, less a minute');
    clock.set(last + 25 * 60 * MINUTE);
    assert.equal(await store.get(mark), undefined, 'an hour after that');
  });

  it('writes the END-OF-MESSAGE mark again at once when the store lost it (a Redis restarted without persistence), and does not forgive meanwhile', async () => {
    const writes: string[] = [];
    const { pipeline, store } = deliveryWorld((inner) => countingWrites(inner, writes));
    const mark = 'tarpit:e:/0';
    const end = (instance: string) => pipeline.decide(request('', { client_address: '192.0.2.10', client_port: '41000', protocol_state: 'END-OF-MESSAGE', recipient_count: '1', instance }));
    await end('good1');
    await store.delete(mark);
    await end('good2');
    assert.equal(writes.filter((key) => key === mark).length, 1, 'the second request skipped the write');
    // The padding harvester of the test above: forgiven at every message without the mark.
    const answers: string[] = [];
    for (let m = 0; m < 2; m += 1) {
      for (let n = 0; n < 3; n += 1) {
        answers.push((await pipeline.decide(request(`ghost${m}x${n}@example.test`, { instance: `h${m}` }))).action);
        // The first request of the second message reads the mark (to forgive or not): it writes it.
        if (m === 1 && n === 0) assert.ok(await store.get(mark), 'the mark is back for the other processes sharing the store, at once');
        else if (m === 0) assert.equal(await store.get(mark), undefined, `not read yet at ghost0x${n}`);
      }
      for (let n = 0; n < 3; n += 1) answers.push((await pipeline.decide(request(`nobody${m}x${n}@example.test`, { instance: `h${m}` }))).action);
    }
    assert.match(answers[11]!, /^421 4\.7\.0 /, 'not forgiven at its second message: the hard limit of 5 is reached');
  });

  it('puts the count that reached a hard limit in {errors}, also a per-client one', async () => {
    const { clock, deps } = world();
    const tarpit = createTarpit(tarpitStage.options.parse({ perConnection: { soft: 100, hard: 100 }, perClient: { soft: 2, hard: 2 }, text: '{errors} errors' }) as never, deps, async () => undefined);
    const pipeline = pipelineOf([configured(tarpit), configured(recipientCheck)], clock);
    for (let n = 0; n < 2; n += 1) await pipeline.decide(request(`nobody${n}@example.test`, { client_port: String(43000 + n) }));
    assert.equal((await pipeline.decide(request('alice@example.test', { client_port: '43009' }))).action, '421 4.7.0 2 errors');
  });
});

describe('ratelimit stage', () => {
  const limits = [
    { name: 'msgs', per: 'sender-domain', count: 'messages', max: 3, window: '1h' },
    { name: 'rcpts', per: 'sender', count: 'recipients', max: 5, window: '10m', action: 'warn' },
  ];

  it('counts messages once per instance and recipients per request, defers with a clear text', async () => {
    const { clock, deps, counts } = world();
    const stage = ratelimitStage.create(ratelimitStage.options.parse({ limits }) as never, deps);
    const pipeline = pipelineOf([configured(stage)], clock);
    for (let m = 0; m < 3; m += 1) {
      for (let r = 0; r < 2; r += 1) {
        const out = await pipeline.decide(request(`r${r}@example.test`, { instance: `m${m}`, sender: `s${m}@bulk.example` }));
        assert.equal(out.action, 'DUNNO', `message ${m} recipient ${r}`);
      }
    }
    const fourth = await pipeline.decide(request('r0@example.test', { instance: 'm3', sender: 'x@bulk.example' }));
    assert.equal(fourth.action, '450 4.7.1 Rate limit msgs exceeded for bulk.example: more than 3 messages in 1h, try again in 4800 seconds');
    assert.equal(counts['ratelimit:msgs,deferred'], 1);
    clock.advance(90 * 60_000);
    assert.equal((await pipeline.decide(request('r0@example.test', { instance: 'm4', sender: 'x@bulk.example' }))).action, 'DUNNO');
  });

  it('counts a defer limit as warned, and logs it so, when the stage itself is in warn mode: nothing was deferred', async () => {
    const { deps, counts } = world();
    const config = validateConfig({ policy: { stages: [{ name: 'ratelimit', mode: 'warn', limits: [{ name: 'one', per: 'client', count: 'recipients', max: 1, window: '1h' }] }] } });
    const pipeline = buildPipeline(config, deps);
    const outs = [];
    for (let r = 0; r < 3; r += 1) outs.push(await pipeline.decide(request(`r${r}@example.test`, { instance: 'w' })));
    assert.match(outs[2]!.action, /^WARN ratelimit would answer 450 4\.7\.1 Rate limit one exceeded/);
    assert.equal(counts['ratelimit:one,deferred'], undefined);
    assert.equal(counts['ratelimit:one,warned'], 2);
  });

  it('only warns for a warn limit, and exempts listed clients', async () => {
    const { clock, deps, counts } = world();
    const stage = ratelimitStage.create(ratelimitStage.options.parse({ limits, exemptClients: ['10.0.0.0/8'] }) as never, deps);
    const pipeline = pipelineOf([configured(stage)], clock);
    const outs = [];
    for (let r = 0; r < 7; r += 1) outs.push(await pipeline.decide(request(`r${r}@example.test`, { instance: 'one' })));
    assert.ok(outs.every((o) => o.action === 'DUNNO'), 'outs.every((o) => o.action === \'DUNNO\')');
    assert.equal(outs[6]!.verdicts[0]!.result, 'warn');
    assert.equal(counts['ratelimit:rcpts,warned'], 2);
    for (let r = 0; r < 10; r += 1) assert.equal((await pipeline.decide(request(`r${r}@example.test`, { instance: `e${r}`, client_address: '10.1.2.3' }))).verdicts[0]!.result, 'exempt');
  });

  it('does not count what it defers, so a sender MTA retrying its queue gets its mail through as the window slides', async () => {
    const { clock, deps } = world();
    const options = ratelimitStage.options.parse({ limits: [{ name: 'sender-day', per: 'sender', count: 'messages', max: 2, window: '1d' }, { name: 'client-rcpts', per: 'client', count: 'recipients', max: 1000, window: '1d' }] }) as never;
    const pipeline = pipelineOf([configured(ratelimitStage.create(options, deps))], clock);
    let attempt = 0;
    const send = async (message: number) => {
      attempt += 1;
      return (await pipeline.decide(request(`r${message}@example.test`, { instance: `q${message}.${attempt}`, client_port: String(30000 + attempt), sender: 'newsletter@shop.example' }))).action;
    };
    const queue = [0, 1, 2, 3];
    const delivered: Array<{ message: number; hours: number }> = [];
    const start = clock.now();
    // Four messages queued at once; the MTA retries what is deferred every hour (Postfix's
    // maximal_backoff_time is 4000 s) for five days (maximal_queue_lifetime).
    for (let hour = 0; hour < 5 * 24 && queue.length > 0; hour += 1) {
      for (const message of [...queue]) {
        const action = await send(message);
        if (action === 'DUNNO') {
          queue.splice(queue.indexOf(message), 1);
          delivered.push({ message, hours: (clock.now() - start) / 3_600_000 });
        } else {
          assert.match(action, /^450 4\.7\.1 Rate limit sender-day exceeded for newsletter@shop\.example: more than 2 messages in 1d, try again in \d+ seconds$/);
        }
      }
      clock.advance(3_600_000);
    }
    assert.deepEqual(queue, [], `still deferred after five days: ${JSON.stringify(delivered)}`);
    assert.deepEqual(delivered.map((d) => d.message), [0, 1, 2, 3]);
    // Two a day: the last of the four within the second day of the sliding window.
    assert.ok(delivered[3]!.hours <= 48, `delivered ${JSON.stringify(delivered)}`);
    const rcpts = (await pipeline.decide(request('x@example.test', { instance: 'last', sender: 'other@shop.example' }))).verdicts[0]!.evidence as Array<{ limit: string; estimate: number }>;
    assert.ok(rcpts.find((e) => e.limit === 'client-rcpts')!.estimate <= 5, 'deferred recipients are not counted by the limits that let them through either');
  });

  it('says when a deferred message will fit, and lets it through then', async () => {
    const { clock, deps } = world();
    const options = ratelimitStage.options.parse({ limits: [{ name: 'one', per: 'client', count: 'messages', max: 2, window: '1h' }] }) as never;
    const pipeline = pipelineOf([configured(ratelimitStage.create(options, deps))], clock);
    for (const instance of ['a', 'b']) assert.equal((await pipeline.decide(request('r@example.test', { instance }))).action, 'DUNNO');
    clock.advance(30 * MINUTE);
    const deferred = (await pipeline.decide(request('r@example.test', { instance: 'c' }))).action;
    // Two in 09:00-10:00: room for one more once 1/2 of them has slid out, at 10:30.
    assert.match(deferred, /try again in 3600 seconds$/);
    clock.advance(3600_000 - 1000);
    assert.match((await pipeline.decide(request('r@example.test', { instance: 'c2' }))).action, /try again in 1 seconds$/);
    clock.advance(1000);
    assert.equal((await pipeline.decide(request('r@example.test', { instance: 'c3' }))).action, 'DUNNO');
  });

  it('counts a message deferred at its first recipient when a later one is let through', async () => {
    const { clock, deps } = world();
    const options = ratelimitStage.options.parse({ limits: [{ name: 'one', per: 'client', count: 'messages', max: 1, window: '1h' }] }) as never;
    const pipeline = pipelineOf([configured(ratelimitStage.create(options, deps))], clock);
    assert.equal((await pipeline.decide(request('a@example.test', { instance: 'm1' }))).action, 'DUNNO');
    clock.advance(59 * MINUTE);
    assert.match((await pipeline.decide(request('a@example.test', { instance: 'm2' }))).action, /^450 /);
    clock.advance(2 * 60 * MINUTE); // the first message has slid out; the same transaction goes on
    assert.equal((await pipeline.decide(request('b@example.test', { instance: 'm2' }))).action, 'DUNNO');
    assert.equal((await pipeline.decide(request('c@example.test', { instance: 'm2' }))).action, 'DUNNO', 'one message, let through');
    assert.match((await pipeline.decide(request('a@example.test', { instance: 'm3' }))).action, /^450 /, 'm2 was counted');
  });

  it('counts an IPv6 client by its /64 when asked, and bounces per client only, never as one sender <> for everyone', async () => {
    const { clock, deps } = world();
    const perClient = { name: 'per-client', per: 'client', count: 'recipients', max: 3, window: '1h' };
    const perSender = { name: 'per-sender', per: 'sender', count: 'messages', max: 2, window: '1h' };
    const perDomain = { name: 'per-domain', per: 'sender-domain', count: 'messages', max: 2, window: '1h' };
    const stage = ratelimitStage.create(ratelimitStage.options.parse({ limits: [perClient, perSender, perDomain], ipv6Prefix: 64 }) as never, deps);
    const pipeline = pipelineOf([configured(stage)], clock);
    for (let n = 0; n < 3; n += 1) assert.equal((await pipeline.decide(request('r@example.test', { client_address: `2001:db8:1:2::${n + 1}`, instance: `v${n}`, sender: `s@v6-${n}.example` }))).action, 'DUNNO');
    assert.match((await pipeline.decide(request('r@example.test', { client_address: '2001:db8:1:2::99', instance: 'v9', sender: 's@v6-9.example' }))).action, /^450 4\.7\.1 Rate limit per-client exceeded for 2001:db8:1:2::\/64/);
    // Bounces from many clients: no shared counter fills up.
    for (let n = 0; n < 5; n += 1) {
      const out = await pipeline.decide(request('r@example.test', { client_address: `198.51.100.${n + 1}`, instance: `b${n}`, sender: '' }));
      assert.equal(out.action, 'DUNNO', `bounce ${n}`);
      assert.deepEqual((out.verdicts[0]!.evidence as Array<{ limit: string }>).map((e) => e.limit), ['per-client']);
    }
  });

  it('counts a sender written with a U-label and with its A-label in one bucket, folding only A-Z of its local part', async () => {
    const { clock, deps } = world();
    const perSender = { name: 'per-sender', per: 'sender', count: 'messages', max: 2, window: '1h' };
    // Three: a deferred attempt (the third) is counted by no limit.
    const perDomain = { name: 'per-domain', per: 'sender-domain', count: 'messages', max: 3, window: '1h' };
    const stage = ratelimitStage.create(ratelimitStage.options.parse({ limits: [perSender, perDomain] }) as never, deps);
    const pipeline = pipelineOf([configured(stage)], clock);
    assert.equal((await pipeline.decide(request('r@example.test', { instance: 'u1', sender: 'News@bücher.example' }))).action, 'DUNNO');
    assert.equal((await pipeline.decide(request('r@example.test', { instance: 'u2', sender: 'news@xn--bcher-kva.example' }))).action, 'DUNNO');
    // Two messages of one sender already, whichever way its domain was written.
    assert.match((await pipeline.decide(request('r@example.test', { instance: 'u3', sender: 'news@BÜCHER.example' }))).action, /^450 4\.7\.1 Rate limit per-sender exceeded/);
    // A local part that differs beyond A-Z is another sender; the domain's bucket is still one.
    assert.equal((await pipeline.decide(request('r@example.test', { instance: 'u4', sender: 'élise@bücher.example' }))).action, 'DUNNO');
    assert.match((await pipeline.decide(request('r@example.test', { instance: 'u5', sender: 'Élise@xn--bcher-kva.example' }))).action, /^450 4\.7\.1 Rate limit per-domain exceeded/);
  });

  it('keys an over-long sender and its domain by a bounded digest: the same one counts in one bucket, another apart', async () => {
    const { clock, deps } = world();
    const perSender = { name: 'per-sender', per: 'sender', count: 'recipients', max: 1, window: '1h' };
    const perDomain = { name: 'per-domain', per: 'sender-domain', count: 'recipients', max: 2, window: '1h' };
    const stage = ratelimitStage.create(ratelimitStage.options.parse({ limits: [perSender, perDomain] }) as never, deps);
    const pipeline = pipelineOf([configured(stage)], clock);
    const domain = `${'d'.repeat(250)}.example`;
    const [first, second] = [`${'x'.repeat(3000)}a@${domain}`, `${'x'.repeat(3000)}b@${domain}`];
    assert.equal((await pipeline.decide(request('r@example.test', { instance: 'l1', sender: first }))).action, 'DUNNO');
    assert.equal((await pipeline.decide(request('r@example.test', { instance: 'l2', sender: second }))).action, 'DUNNO', 'another sender: another bucket');
    assert.match((await pipeline.decide(request('r@example.test', { instance: 'l3', sender: first }))).action, /^450 4\.7\.1 Rate limit per-sender exceeded/);
    const keys = (await deps.store.scan('', 1000)).map((row) => row.key);
    assert.ok(keys.length > 0, 'keys.length > 0');
    // A counter lives two windows for every request: its key must not carry a 3 kB sender.
    for (const key of keys) assert.ok(Buffer.byteLength(key) < 400, `${Buffer.byteLength(key)} octets: ${key.slice(0, 80)}...`);
  });

  it('counts a message once across the cluster when its recipients reach two daemons (or a stage rebuilt by a reload)', async () => {
    const { clock, deps } = world();
    const options = ratelimitStage.options.parse({ limits: [{ name: 'one', per: 'client', count: 'messages', max: 1, window: '1h' }] }) as never;
    const daemons = [ratelimitStage.create(options, deps), ratelimitStage.create(options, deps)].map((stage) => pipelineOf([configured(stage)], clock));
    assert.equal((await daemons[0]!.decide(request('a@example.test', { instance: 'shared' }))).action, 'DUNNO');
    assert.equal((await daemons[1]!.decide(request('b@example.test', { instance: 'shared' }))).action, 'DUNNO', 'the same message, not a second one');
    assert.match((await daemons[1]!.decide(request('c@example.test', { instance: 'next' }))).action, /^450 /, 'a second message is over the limit');
  });

  it('tells apart two messages with one instance on two mail servers of a cluster', async () => {
    const { clock, deps } = world();
    const options = ratelimitStage.options.parse({ limits: [{ name: 'two', per: 'client', count: 'messages', max: 2, window: '1h' }] }) as never;
    const pipeline = pipelineOf([configured(ratelimitStage.create(options, deps))], clock);
    // smtpd's instance (pid, arrival time, count) is unique on one host only: mx1 and mx2 may both send 3f2.677a1b2c.4d3e.1.
    for (const server of ['203.0.113.1', '203.0.113.2']) {
      assert.equal((await pipeline.decide(request('a@example.test', { instance: '3f2.677a1b2c.4d3e.1', server_address: server, server_port: '25' }))).action, 'DUNNO');
    }
    assert.match((await pipeline.decide(request('a@example.test', { instance: 'third', server_address: '203.0.113.1', server_port: '25' }))).action, /^450 /, 'two messages counted, not one');
  });

  it('counts messages in each of two ratelimit stages (each limit marks the messages it counted)', async () => {
    const { clock, deps } = world();
    const watch = ratelimitStage.create(ratelimitStage.options.parse({ limits: [{ name: 'watch', per: 'client', count: 'messages', max: 1, window: '1h', action: 'warn' }] }) as never, deps);
    const enforce = ratelimitStage.create(ratelimitStage.options.parse({ limits: [{ name: 'enforce', per: 'client', count: 'messages', max: 1, window: '1h' }] }) as never, deps);
    const pipeline = pipelineOf([configured(watch), configured(enforce)], clock);
    assert.equal((await pipeline.decide(request('a@example.test', { instance: 'first' }))).action, 'DUNNO');
    assert.equal((await pipeline.decide(request('b@example.test', { instance: 'first' }))).action, 'DUNNO', 'a second recipient of the first message');
    assert.match((await pipeline.decide(request('a@example.test', { instance: 'second' }))).action, /^450 4\.7\.1 Rate limit enforce exceeded/);
  });

  it('refuses a window under a second (a window of 0 would never be over its limit)', () => {
    assert.throws(() => ratelimitStage.options.parse({ limits: [{ per: 'client', count: 'messages', max: 1, window: 0 }] }), /expected at least 1s\b/);
  });

  it('refuses two limits with one name, and a name that could meet another limit\'s keys', () => {
    assert.throws(() => ratelimitStage.options.parse({ limits: [{ name: 'x:m', per: 'client', count: 'messages', max: 1, window: '1h' }] }), /expected 1 to 64 letters, digits, dots, dashes or underscores/);
    const { deps } = world();
    assert.throws(() => ratelimitStage.create(ratelimitStage.options.parse({ limits: [limits[0], limits[0]] }) as never, deps), /two limits are named "msgs"/);
  });

  it('counts a sender without a domain per sender, never under an empty sender domain shared by everyone', async () => {
    const { clock, deps } = world();
    const perDomain = { name: 'per-domain', per: 'sender-domain', count: 'messages', max: 1, window: '1h' };
    const perSender = { name: 'per-sender', per: 'sender', count: 'messages', max: 1, window: '1h' };
    const pipeline = pipelineOf([configured(ratelimitStage.create(ratelimitStage.options.parse({ limits: [perDomain, perSender] }) as never, deps))], clock);
    for (const [n, sender] of ['a@', 'b@', 'c'].entries()) {
      const out = await pipeline.decide(request('r@example.test', { client_address: `198.51.100.${n + 1}`, instance: `d${n}`, sender }));
      assert.equal(out.action, 'DUNNO', `sender ${JSON.stringify(sender)}`);
      assert.deepEqual((out.verdicts[0]!.evidence as Array<{ limit: string; key: string }>).map((e) => `${e.limit} ${e.key}`), [`per-sender ${sender}`]);
    }
    assert.match((await pipeline.decide(request('r@example.test', { client_address: '198.51.100.9', instance: 'd9', sender: 'C' }))).action, /^450 4\.7\.1 Rate limit per-sender exceeded for c: /, 'the domainless sender has a counter of its own');
  });

  it('lets the later recipients of a message through when its first was, though other messages were counted meanwhile', async () => {
    const { clock, deps } = world();
    const options = ratelimitStage.options.parse({ limits: [{ name: 'domain', per: 'sender-domain', count: 'messages', max: 1, window: '1h' }] }) as never;
    const pipeline = pipelineOf([configured(ratelimitStage.create(options, deps))], clock);
    const from = (client: string, instance: string, recipient: string) => pipeline.decide(request(recipient, { client_address: client, client_port: '25000', instance, sender: `list@big.example` }));
    assert.equal((await from('192.0.2.1', 'first', 'a@example.test')).action, 'DUNNO');
    // Another client's message from the same domain, at the same time: over the limit.
    assert.match((await from('192.0.2.2', 'second', 'a@example.test')).action, /^450 4\.7\.1 /);
    assert.equal((await from('192.0.2.1', 'first', 'b@example.test')).action, 'DUNNO', 'the message let through is not cut in two');
    assert.match((await from('192.0.2.2', 'second', 'b@example.test')).action, /^450 4\.7\.1 /, 'the deferred one stays deferred');
  });

  it('counts each request without an instance as one message', async () => {
    const { clock, deps } = world();
    const options = ratelimitStage.options.parse({ limits: [{ name: 'two', per: 'client', count: 'messages', max: 2, window: '1h' }] }) as never;
    const pipeline = pipelineOf([configured(ratelimitStage.create(options, deps))], clock);
    for (let r = 0; r < 2; r += 1) assert.equal((await pipeline.decide(request(`r${r}@example.test`, { instance: '' }))).action, 'DUNNO');
    assert.match((await pipeline.decide(request('r2@example.test', { instance: '' }))).action, /^450 4\.7\.1 /);
  });

  it('counts a message deferred at its first recipient once when a later one is let through, and remembers it for the session', async () => {
    const { clock, deps } = world();
    const options = ratelimitStage.options.parse({ limits: [{ name: 'two', per: 'client', count: 'messages', max: 2, window: '1h' }] }) as never;
    const pipeline = pipelineOf([configured(ratelimitStage.create(options, deps))], clock);
    for (const instance of ['m1', 'm2']) assert.equal((await pipeline.decide(request('a@example.test', { instance }))).action, 'DUNNO');
    clock.advance(59 * MINUTE);
    assert.match((await pipeline.decide(request('a@example.test', { instance: 'm3' }))).action, /^450 /);
    clock.advance(32 * MINUTE); // 2 × 29/60 of the previous window left: room for one
    assert.equal((await pipeline.decide(request('b@example.test', { instance: 'm3' }))).action, 'DUNNO');
    clock.advance(MINUTE);
    assert.equal((await pipeline.decide(request('c@example.test', { instance: 'm3' }))).action, 'DUNNO', 'm3 was let through and is not counted again');
  });

  it('counts everything in a stage in warn mode, also what it would defer', async () => {
    const { clock, deps } = world();
    const options = ratelimitStage.options.parse({ limits: [{ name: 'one', per: 'client', count: 'recipients', max: 1, window: '1h' }] }) as never;
    const pipeline = pipelineOf([configured(ratelimitStage.create(options, { ...deps, mode: 'warn' }), 'warn')], clock);
    const outs = [];
    for (let r = 0; r < 3; r += 1) outs.push(await pipeline.decide(request(`r${r}@example.test`, { instance: 'w' })));
    assert.match(outs[2]!.verdicts[0]!.reason, /^one: 192\.0\.2\.66 at 3\.0 of 1 /);
  });

  it('does not judge the later recipients of a message a warn limit let through, though others were counted meanwhile', async () => {
    const { clock, deps, counts } = world();
    const options = ratelimitStage.options.parse({ limits: [{ name: 'watch', per: 'sender-domain', count: 'messages', max: 1, window: '1h', action: 'warn' }] }) as never;
    const pipeline = pipelineOf([configured(ratelimitStage.create(options, deps))], clock);
    const from = (client: string, recipient: string) => pipeline.decide(request(recipient, { client_address: client, instance: client, sender: 'list@big.example' }));
    assert.equal((await from('192.0.2.1', 'a@example.test')).verdicts[0]!.result, 'within');
    assert.equal((await from('192.0.2.2', 'a@example.test')).verdicts[0]!.result, 'warn');
    assert.equal((await from('192.0.2.1', 'b@example.test')).verdicts[0]!.result, 'within', 'the first message was within the limit');
    assert.equal(counts['ratelimit:watch,warned'], 1);
  });

  it('counts a request without a client address under no per-client key, not under one shared by all such requests', async () => {
    const { clock, deps } = world();
    const options = ratelimitStage.options.parse({ limits: [{ name: 'one', per: 'client', count: 'recipients', max: 1, window: '1h' }] }) as never;
    const pipeline = pipelineOf([configured(ratelimitStage.create(options, deps))], clock);
    for (let r = 0; r < 3; r += 1) assert.equal((await pipeline.decide(request(`r${r}@example.test`, { client_address: '' }))).action, 'DUNNO');
  });
});

describe('options with checks across keys', () => {
  it('answer options that are no object with an issue, not a TypeError from the checks across keys', () => {
    for (const stage of [tarpitStage, greylistStage]) {
      for (const value of [null, 7, 'x', [1]]) {
        const parsed = stage.options.safeParse(value);
        assert.equal(parsed.success, false, `${stage.name} ${JSON.stringify(value)}`);
      }
    }
  });
});

describe('tarpit tallies read back, fuzzed', () => {
  it('reads any stored tally as a tally or as none: every request is answered, without a fault', async () => {
    // The tally of a connection's message is JSON in the store, which other versions of callout
    // on the same Redis write too: whatever it holds, the stage counts and answers.
    const { clock, deps } = world();
    const { lines, log } = captureLog();
    const tarpit = createTarpit(tarpitStage.options.parse({ perConnection: { soft: 2, hard: 5 }, perClient: { soft: 100, hard: 200 } }) as never, deps, async () => undefined);
    const pipeline = pipelineOf([configured(tarpit), configured(recipientCheck)], clock, 6000, log);
    await pipeline.decide(request('alice@example.test'));
    const [tally] = await deps.store.scan('tarpit:t:', 10);
    assert.ok(tally, 'the first request wrote its message\'s tally');
    const good = { i: 'msg1', a: 1, r: 0 };
    const stored = fc.oneof(
      fc.string({ maxLength: 40 }),
      fc.jsonValue({ maxDepth: 2 }).map((value) => JSON.stringify(value)),
      fc.tuple(fc.constantFrom('i', 'a', 'r'), fc.jsonValue({ maxDepth: 1 })).map(([key, value]) => JSON.stringify({ ...good, [key]: value })),
      fc.constantFrom('null', '{"i":"msg1","a":1e400,"r":-1e400}', '{"i":"msg1","a":-5,"r":1.5}'),
    );
    let n = 0;
    await fc.assert(
      fc.asyncProperty(stored, fc.boolean(), async (value, rejected) => {
        await deps.store.set(tally.key, value, 60 * MINUTE);
        n += 1;
        const answer = await pipeline.decide(request(`${rejected ? 'nobody' : 'alice'}${n}@example.test`, { instance: n % 2 === 0 ? 'msg1' : `msg${n}` }));
        assert.match(answer.action, /^(?:DUNNO|550 5\.1\.1 User unknown|421 4\.7\.0 .*)$/, value);
        assert.deepEqual(answer.faults, [], value);
        assert.deepEqual(lines.filter((l) => typeof l.level === 'number' && l.level >= 50), [], value);
      }),
      { numRuns: 300 },
    );
  });

  it('counts a connection\'s errors onto any stored count below 0 from 0: the hard limit still refuses at its 6th', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: -1e12, max: -1 }), async (stored) => {
        const { clock, deps } = world();
        const tarpit = createTarpit(tarpitStage.options.parse({ perConnection: { soft: 2, hard: 5 }, perClient: { soft: 100, hard: 200 } }) as never, deps, async () => undefined);
        const pipeline = pipelineOf([configured(tarpit), configured(recipientCheck)], clock);
        await pipeline.decide(request('nobody@example.test'));
        const [count] = await deps.store.scan('tarpit:p:', 10);
        assert.ok(count, 'the rejection was counted');
        await deps.store.set(count.key, String(stored), 60 * MINUTE);
        const answers: string[] = [];
        for (let n = 0; n < 6; n += 1) answers.push((await pipeline.decide(request(`nobody${n}@example.test`))).action);
        assert.match(answers[5]!, /^421 4\.7\.0 /, String(stored));
      }),
      { numRuns: 30 },
    );
  });

  it('reads a stored tally of up to 65,536 characters, and none longer (another program\'s on a shared Redis)', async () => {
    const { clock, deps } = world();
    const tarpit = createTarpit(tarpitStage.options.parse({ perConnection: { soft: 2, hard: 5 }, perClient: { soft: 100, hard: 200 } }) as never, deps, async () => undefined);
    const pipeline = pipelineOf([configured(tarpit), configured(recipientCheck)], clock);
    await pipeline.decide(request('alice@example.test'));
    const [tally] = await deps.store.scan('tarpit:t:', 10);
    assert.ok(tally, 'the first request wrote its message\'s tally');
    await fc.assert(
      fc.asyncProperty(paddedRecords(JSON.stringify({ i: 'msg1', a: 7, r: 0 }), 65_536), async ({ text, readable }) => {
        await deps.store.set(tally.key, text, 60 * MINUTE);
        await pipeline.decide(request('alice@example.test'));
        // Read, the tally counts on from 7; not read, the message's tally starts again.
        assert.deepEqual(JSON.parse((await deps.store.get(tally.key))!.value), { i: 'msg1', a: readable ? 8 : 1, r: 0 }, `a tally of ${text.length} characters`);
      }),
      { numRuns: 100 },
    );
  });
});
