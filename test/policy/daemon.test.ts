// `callout serve` as Postfix sees it: policy requests over real sockets, callouts to loopback SMTP servers.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { stringify } from 'yaml';
import { Daemon, LOGGED_ATTRIBUTE_CHARS, LOGGED_REASON_CHARS, checkServeConfiguration, schedulePurges } from '../../src/policy/daemon.js';
import type { ReloadOutcome } from '../../src/policy/daemon.js';
import { validateConfig } from '../../src/config/schema.js';
import { ManualClock, ManualTimers } from '../support/manual-time.js';
import { Metrics } from '../../src/http/metrics.js';
import { MemoryStore, SqliteStore } from '../../src/store/index.js';
import { ASK_LATER } from '../../src/store/types.js';
import { StoreDamagedError, StoreError } from '../../src/core/errors.js';
import type { CalloutEngine } from '../../src/verify/engine.js';
import type { Store } from '../../src/store/types.js';
import { startDnsServer } from '../support/dns-server.js';
import type { DnsTestServer } from '../support/dns-server.js';
import { greylistOnce, startSmtpServers, usersOnly } from '../support/smtp-server.js';
import type { SmtpTestServer } from '../support/smtp-server.js';
import { PolicyClient, encodeRequest, postfixRequest } from '../support/policy-client.js';
import { startDaemonWithClient } from '../support/daemon.js';
import { mxZone } from '../verify/fixture.js';
import { captureLog } from '../support/log-capture.js';
import { until } from '../support/wait.js';
import { DAMAGED_STORE_KEYS, writeDamagedStore } from '../support/sqlite-damage.js';
import { startRedis } from '../support/redis.js';
import { Redis } from 'ioredis';

const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

interface Setup {
  daemon: Daemon;
  client: PolicyClient;
  logs: Array<Record<string, unknown>>;
  smtp: Map<string, SmtpTestServer>;
  dns: DnsTestServer;
}

async function setup(
  extra: { policy?: Record<string, unknown>; callout?: Record<string, unknown> } = {},
  configFile?: (base: Record<string, unknown>) => string,
  forwardToSmtpPort = false,
): Promise<Setup> {
  const dns = await startDnsServer({ ...mxZone({ 'sender.test': '127.0.0.2', 'grey.test': '127.0.0.3', 'slow.test': '127.0.0.4' }) });
  const servers = await startSmtpServers(['127.0.0.2', '127.0.0.3', '127.0.0.4'], (host) =>
    host === '127.0.0.2' ? usersOnly(['bob']) : host === '127.0.0.3' ? greylistOnce() : { ...usersOnly(['bob']), greeting: () => ({ reply: '220 slow', delayMs: 600 }) },
  );
  const { lines: logs, log: logger } = captureLog();
  const base = {
    store: { kind: 'memory' },
    // 2 s for the DNS server in this process to answer: a loaded machine may not run it at once.
    dns: { servers: [dns.address], timeout: '2s', tries: 1 },
    callout: { helo: 'verifier.callout.test', port: servers[0]!.port, allowTargets: ['127.0.0.0/8'], timeouts: { overall: '5s' }, ...extra.callout },
    policy: {
      listen: '127.0.0.1:0',
      ...extra.policy,
      ...(forwardToSmtpPort ? { stages: (extra.policy?.stages as Array<Record<string, unknown>>).map((s) => (s.port === 0 ? { ...s, port: servers[0]!.port } : s)) } : {}),
    },
    metrics: { listen: '127.0.0.1:0' },
  };
  const configPath = configFile?.(base);
  cleanups.push(async () => {
    await Promise.all(servers.map((s) => s.close()));
    await dns.close();
  });
  const { daemon, client } = await startDaemonWithClient({ ...(configPath ? { configPath } : { overrides: base }), log: logger }, cleanups);
  return { daemon, client, logs, smtp: new Map(servers.map((s) => [s.host, s])), dns };
}

const decisions = (logs: Array<Record<string, unknown>>) => logs.filter((l) => l.msg === 'decision');

describe('callout serve', () => {
  it('lets a real sender through, rejects a missing one with callout\'s text, keeps postmaster reachable', async () => {
    const { client, logs } = await setup();
    assert.equal(await client.request(postfixRequest({ sender: 'bob@sender.test' })), 'DUNNO');
    const rejected = await client.request(postfixRequest({ sender: 'nobody@sender.test', instance: 'm2' }));
    assert.match(rejected, /^550 5\.7\.1 Sender address rejected: .*550 5\.1\.1/);
    assert.equal(await client.request(postfixRequest({ sender: 'nobody@sender.test', recipient: 'postmaster@example.test', instance: 'm3' })), 'DUNNO');
    assert.equal(await client.request(postfixRequest({ sender: '', instance: 'm4' })), 'DUNNO', 'bounces have nothing to verify');
    const lines = decisions(logs);
    assert.equal(lines.length, 4);
    assert.equal(lines[0]!.decidedBy, null, 'a line no stage decided says so, in its place');
    assert.deepEqual(['warnings', 'faults'].filter((field) => field in lines[0]!), [], 'a line without warnings or faults has no such fields');
    assert.equal(lines[1]!.action, rejected);
    assert.equal(lines[1]!.decidedBy, 'sender-callout');
    assert.ok((lines[1]!.stages as string[]).some((s) => s.startsWith('sender-callout=undeliverable')), 'one log line explains the decision');
    assert.equal(lines[2]!.decidedBy, 'postmaster');
  });

  it('cuts the 2 kB values Postfix passes on in the decision line only, so that it stays under PIPE_BUF', async () => {
    const { client, logs } = await setup();
    // What makes each value what it is comes at its end, past the cut: the stages must see it.
    const sender = `${'s'.repeat(2000)}@sender.test`;
    const recipient = `${'r'.repeat(2000)}@example.test`;
    const helo = `${'h'.repeat(2000)}.example.net`;
    const instance = 'i'.repeat(2000);
    assert.equal(await client.request(postfixRequest({ sender, recipient, helo_name: helo, instance })), 'DUNNO');
    const unparsed = `${'u'.repeat(2000)}@`;
    assert.match(await client.request(postfixRequest({ sender: unparsed, instance: 'm2' })), /^501 5\.7\.1 Bad sender address syntax: /);
    const [line, rejected] = decisions(logs);
    assert.ok(line && rejected, 'line && rejected');
    const cut = (value: string) => `${value.slice(0, LOGGED_ATTRIBUTE_CHARS)}...`;
    assert.deepEqual([line.helo, line.sender, line.recipient, line.instance], [cut(helo), cut(sender), cut(recipient), cut(instance)]);
    assert.deepEqual((line.stages as string[]).slice(2), [
      'sender-syntax=valid: sender parses',
      'sender-callout=unknown: protocol-error: refused to send RCPT: command line of 2024 octets exceeds 512: no exchanger can be asked',
    ], 'the stages had the whole sender');
    const syntax = (rejected.stages as string[]).at(-1)!;
    assert.ok(syntax.startsWith(`sender-syntax=invalid: <${'u'.repeat(100)}`), syntax);
    assert.equal(syntax.length, 'sender-syntax=invalid: '.length + LOGGED_REASON_CHARS + 3, 'the reason quoting the sender is cut');
    assert.ok(syntax.endsWith('...'), 'syntax.endsWith(\'...\')');
    // Default stages, ASCII values: lines a write to a pipe always takes whole.
    for (const logged of [line, rejected]) assert.ok(Buffer.byteLength(JSON.stringify(logged)) < 4096, 'Buffer.byteLength(JSON.stringify(logged)) < 4096');
  });

  it('cuts a stage fault in the decision line at LOGGED_REASON_CHARS, as it cuts the stages\' reasons', async () => {
    const { daemon, client, logs } = await setup();
    // A store failing with a long message, as one naming a long file path does.
    const store = (daemon as unknown as { store: MemoryStore }).store;
    const failure = () => Promise.reject(new StoreError(`database or disk is full ${'x'.repeat(2 * LOGGED_REASON_CHARS)}`));
    store.peek = () => ASK_LATER;
    store.get = failure;
    store.getMany = failure;
    await client.request(postfixRequest({ sender: 'bob@sender.test' }));
    const faults = decisions(logs)[0]?.faults as string[] | undefined;
    assert.ok(faults?.length && faults.every((fault) => fault.length === LOGGED_REASON_CHARS + 3 && fault.endsWith('...')), JSON.stringify(faults));
  });

  it('takes the time from policy_test_time only with policy.acceptTestTime', async () => {
    const greylist = { stages: [{ name: 'greylist', delay: 300 }] };
    const triplet = (time: string, instance: string) => postfixRequest({ sender: 'bob@sender.test', instance, policy_test_time: time });
    const following = await setup({ policy: { ...greylist, acceptTestTime: true } });
    assert.match(await following.client.request(triplet('1800000000', 'a1')), /^DEFER_IF_PERMIT /);
    assert.match(await following.client.request(triplet('1800000299', 'a2')), /^DEFER_IF_PERMIT .*1 second/, 'one second of the delay is left');
    assert.match(await following.client.request(triplet('1700000000', 'a3')), /^DEFER_IF_PERMIT .*1 second/, 'an earlier time never moves the clock back');
    assert.match(await following.client.request(triplet('not-a-time', 'a4')), /^DEFER_IF_PERMIT .*1 second/, 'a malformed time is ignored');
    for (const bad of ['-1800000300', '1800000300.5', '180000030000000', '']) {
      assert.match(await following.client.request(triplet(bad, `a4${bad}`)), /^DEFER_IF_PERMIT .*1 second/, `${JSON.stringify(bad)} is ignored`);
    }
    const ignored = following.logs.filter((l) => l.level === 40 && /policy_test_time ignored/.test(String(l.msg)));
    assert.deepEqual(ignored.map((l) => l.policy_test_time), ['not-a-time', '-1800000300', '1800000300.5', '180000030000000', ''], 'each ignored time is logged with its value');
    assert.doesNotMatch(await following.client.request(triplet('1800000300', 'a5')), /^DEFER/, 'the retry after the delay passes');
    assert.ok(following.logs.some((l) => l.level === 40 && /acceptTestTime is on/.test(String(l.msg))), 'the daemon warns that the hook is on');

    const ignoring = await setup({ policy: greylist });
    assert.match(await ignoring.client.request(triplet('1800000000', 'b1')), /^DEFER_IF_PERMIT /);
    assert.match(await ignoring.client.request(triplet('1800000300', 'b2')), /^DEFER_IF_PERMIT /, 'without the setting the attribute is ignored');
  });

  it('fuzz: any policy_test_time moves the clock to whole seconds or is ignored, and every stage answers whatever time it sets', async () => {
    const stages = [{ name: 'tarpit', sleep: '1ms', maxSleep: '5ms' }, { name: 'greylist', delay: 300 }, { name: 'ratelimit', limits: [{ per: 'client', count: 'recipients', max: 1000, window: '1m' }] }];
    const { client, logs } = await setup({ policy: { acceptTestTime: true, stages } });
    const time = fc.oneof(
      fc.string({ maxLength: 14 }),
      fc.stringMatching(/^[0-9]{1,13}$/),
      fc.constantFrom('0', '00000000000', '99999999999', '1800000000', ' 1800000000', '1800000000\t', '+1800000000', '1e10', '0x10', '１８００'),
    );
    let instance = 0;
    await fc.assert(
      fc.asyncProperty(time, async (value) => {
        const before = logs.length;
        instance += 1;
        const action = await client.request(postfixRequest({ sender: 'bob@sender.test', instance: `t${instance}`, policy_test_time: value }));
        // A time past the delay after an earlier one passes the triplet, with its X-Greylist header.
        assert.match(action, /^(?:DUNNO|DEFER_IF_PERMIT [^\n]*|PREPEND X-Greylist: [^\n]*)$/, JSON.stringify(value));
        const after = logs.slice(before);
        const ignored = after.some((l) => l.level === 40 && /policy_test_time ignored/.test(String(l.msg)));
        assert.equal(ignored, !/^[0-9]{1,11}$/.test(value), JSON.stringify(value));
        assert.deepEqual(after.filter((l) => l.msg === 'stage fault' || (typeof l.level === 'number' && l.level >= 50)), [], JSON.stringify(value));
      }),
      // One sequence that passes the triplet: 0, then 73927 (20 hours later).
      { numRuns: 150, examples: [['0'], ['73927']] },
    );
  });

  it('purges by the real clock, not by a policy_test_time far ahead of it', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'callout-test-time-purge-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const clock = new ManualClock(Date.now());
    const { log, lines } = captureLog();
    const overrides = { dataDir, store: { kind: 'sqlite', purgeInterval: '1s' }, policy: { listen: '127.0.0.1:0', acceptTestTime: true, stages: [{ name: 'greylist', delay: 300 }] }, metrics: { listen: '' } };
    const { daemon, client } = await startDaemonWithClient({ overrides, log, clock }, cleanups);
    assert.match(await client.request(postfixRequest({ sender: 'bob@sender.test', instance: 'fresh' })), /^DEFER_IF_PERMIT /);
    // The one entry that has expired by the real clock when the purge runs: it shows the purge ran.
    assert.equal(await daemon.healthy(), true);
    const ahead = String(Math.floor((clock.now() + 100 * 86_400_000) / 1000));
    assert.match(await client.request(postfixRequest({ sender: 'eve@sender.test', instance: 'ahead', policy_test_time: ahead })), /^DEFER_IF_PERMIT /);
    clock.advance(120_000);
    const purged = () => lines.filter((l) => l.msg === 'expired store entries purged').map((l) => l.removed);
    assert.ok(await until(async () => purged().length > 0, 5_000, 20), 'a purge ran');
    assert.deepEqual(purged(), [1], 'only the health probe had expired');
    const db = new Database(join(dataDir, 'callout.sqlite'), { readonly: true });
    try {
      const keys = (db.prepare('SELECT key FROM kv').all() as Array<{ key: string }>).map((row) => row.key);
      assert.equal(keys.filter((key) => key.includes('bob@sender.test')).length, 1, 'the fresh triplet is kept');
    } finally {
      db.close();
    }
  });

  it('rejects a sender that does not parse, naming the rule', async () => {
    const { client } = await setup();
    assert.match(await client.request(postfixRequest({ sender: 'a@b..example' })), /^501 5\.7\.1 Bad sender address syntax/);
  });

  it('rejects a sender whose bytes are not UTF-8 as bad syntax, and calls no mailbox out in its place', async () => {
    const { client, smtp } = await setup();
    // Decoded, \xff is U+FFFD: read as a mailbox, RCPT TO:<\uFFFD@sender.test> would be asked,
    // answered and cached for every sender with other bad bytes there.
    const [head, tail] = encodeRequest(postfixRequest({ sender: 'SENDER' })).split('SENDER');
    const request = Buffer.concat([Buffer.from(head!), Buffer.from([0xff]), Buffer.from(`@sender.test${tail!}`)]);
    const action = await client.requestEncoded(request);
    assert.match(action, /^501 5\.7\.1 Bad sender address syntax: <.*@sender\.test>: local part holds U\+FFFD, the mark of bytes that were not UTF-8 at 0$/);
    assert.equal(smtp.get('127.0.0.2')!.connectionCount, 0, 'no callout');
  });

  it('answers DEFER_IF_PERMIT when the callout outlasts the decision deadline, and the callout warms the cache', async () => {
    const { client, daemon, smtp } = await setup({ policy: { decisionTimeout: '200ms' } });
    assert.equal(await client.request(postfixRequest({ sender: 'bob@slow.test' })), 'DEFER_IF_PERMIT 4.7.1 Sender address verification in progress');
    // The callout goes on behind the answer (a 600 ms greeting); its verdict is counted once it is cached.
    const finished = async () => /callout_verifications_total\{verdict="deliverable",source="probe"\} 1/.test(await (await fetch(`http://${daemon.metricsAddress}/metrics`)).text());
    assert.ok(await until(finished, 10_000, 50), 'the callout went on after the answer and finished');
    assert.equal(await client.request(postfixRequest({ sender: 'bob@slow.test' })), 'DUNNO');
    assert.equal(smtp.get('127.0.0.4')!.connectionCount, 1);
  });

  it('defers when the sender\'s own MX greylists our callout', async () => {
    const { client } = await setup();
    assert.match(await client.request(postfixRequest({ sender: 'bob@grey.test' })), /^450 4\.7\.1 Sender address verification failed temporarily/);
  });

  it('warn mode logs what it would do and lets the mail through', async () => {
    const { client } = await setup({ policy: { stages: [{ name: 'sender-callout', mode: 'warn' }] } });
    assert.match(await client.request(postfixRequest({ sender: 'nobody@sender.test' })), /^WARN sender-callout would answer 550 5\.7\.1/);
  });

  it('adds an X-Callout-Result header once per message when asked', async () => {
    const { client } = await setup({ policy: { stages: [{ name: 'sender-callout', resultHeader: true, receiver: 'mx.local.test' }] } });
    const first = await client.request(postfixRequest({ sender: 'bob@sender.test', instance: 'h1' }));
    assert.match(first, /^PREPEND X-Callout-Result: deliverable \(.*\) receiver=mx\.local\.test; sender="bob@sender\.test"; reason=accepted; source=probe; reply="250 2\.1\.5";$/);
    assert.equal(await client.request(postfixRequest({ sender: 'bob@sender.test', recipient: 'carol@example.test', instance: 'h1' })), 'DUNNO');
  });

  it('allow-listed clients skip the callout', async () => {
    const { client, smtp } = await setup({ policy: { stages: [{ name: 'allowlist', clients: ['192.0.2.0/24'] }, { name: 'sender-callout' }] } });
    assert.equal(await client.request(postfixRequest({ sender: 'nobody@sender.test' })), 'DUNNO');
    assert.equal(smtp.get('127.0.0.2')!.connectionCount, 0);
  });

  it('serves metrics and health', async () => {
    const { client, daemon } = await setup();
    await client.request(postfixRequest({ sender: 'nobody@sender.test' }));
    const metrics = await (await fetch(`http://${daemon.metricsAddress}/metrics`)).text();
    assert.match(metrics, /callout_policy_decisions_total\{action="REJECT",stage="sender-callout"\} 1/);
    assert.match(metrics, /callout_verifications_total\{verdict="undeliverable",source="probe"\} 1/);
    assert.match(metrics, /callout_policy_decision_seconds_bucket/);
    assert.match(metrics, /callout_connection_cache_total\{event="parked"\} 1/, 'the clean connection was kept for the next callout');
    const health = await fetch(`http://${daemon.metricsAddress}/health`);
    assert.equal(health.status, 200);
  });

  it('labels its metrics only with values of its own or of the configuration: clients, senders and HELO names add no series', async () => {
    const limits = [{ name: 'per-sender', per: 'sender', count: 'recipients', max: 1, window: '1h' }];
    const { client, daemon } = await setup({ policy: { stages: [{ name: 'tarpit' }, { name: 'ratelimit', limits }, { name: 'greylist' }] } });
    const series = async (): Promise<string[]> => (await daemon.metricsText()).split('\n').filter((line) => /^callout_/.test(line) && !/^callout_(process|nodejs)_/.test(line));
    // Each round: a new client, HELO, sender and recipient (quotes, backslashes, digits, controls),
    // greylisted as new, then deferred by the rate limit.
    const round = async (i: number): Promise<void> => {
      const request = { client_address: `198.51.${i % 256}.${(i >> 8) + 1}`, client_name: `h${i}.example`, helo_name: `helo "${i}" \\ \u009b${i}`, sender: `s${i}\\"x@d${i}.test`, recipient: `r${i}@example.test` };
      assert.match(await client.request(postfixRequest({ ...request, instance: `a${i}` })), /^DEFER_IF_PERMIT .*Greylisted/);
      assert.match(await client.request(postfixRequest({ ...request, instance: `b${i}` })), /^450 4\.7\.1 Rate limit per-sender exceeded/);
    };
    for (let i = 0; i < 5; i += 1) await round(i);
    const before = await series();
    for (let i = 5; i < 300; i += 1) await round(i);
    const after = await series();
    assert.deepEqual(after.map((line) => line.replace(/ [^ ]+$/, '')), before.map((line) => line.replace(/ [^ ]+$/, '')), 'the same series, only their values grew');
    assert.ok(after.includes('callout_greylist_total{result="new"} 300'), after.join('\n'));
    assert.ok(after.includes('callout_ratelimit_total{limit="per-sender",result="deferred"} 300'), after.join('\n'));
  });

  it('answers /health 503, and says why, when its SQLite file was removed while open', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'callout-health-file-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const { lines, log } = captureLog();
    const { daemon } = await startDaemonWithClient({ overrides: { dataDir, store: { kind: 'sqlite' }, policy: { listen: '127.0.0.1:0' }, metrics: { listen: '127.0.0.1:0' } }, log }, cleanups);
    assert.equal((await fetch(`http://${daemon.metricsAddress}/health`)).status, 200, 'the probe writes to the file');
    for (const suffix of ['', '-wal', '-shm']) rmSync(join(dataDir, `callout.sqlite${suffix}`), { force: true });
    // A monitor asks every few seconds: each answer says 503, the log says why once a minute.
    for (let i = 0; i < 3; i += 1) assert.equal((await fetch(`http://${daemon.metricsAddress}/health`)).status, 503);
    const removed = lines.filter((l) => typeof l.msg === 'string' && /callout\.sqlite was removed while open/.test(l.msg));
    assert.equal(removed.length, 1, JSON.stringify(lines.slice(-3)));
  });

  it('answers /health 503 while the store does not take a write, logging the cause once', async () => {
    const { lines, log } = captureLog();
    const { daemon } = await startDaemonWithClient({ overrides: { store: { kind: 'memory' }, policy: { listen: '127.0.0.1:0' }, metrics: { listen: '127.0.0.1:0' } }, log }, cleanups);
    assert.equal((await fetch(`http://${daemon.metricsAddress}/health`)).status, 200);
    // A full disk, as the store reports it: reads still work, writes do not.
    const store = (daemon as unknown as { store: MemoryStore }).store;
    const set = store.set.bind(store);
    store.set = () => Promise.reject(new Error('database or disk is full'));
    try {
      for (let i = 0; i < 3; i += 1) assert.equal((await fetch(`http://${daemon.metricsAddress}/health`)).status, 503);
    } finally {
      store.set = set;
    }
    assert.deepEqual(lines.filter((l) => l.msg === 'health: the store does not take a write').map((l) => [l.level, l.err]), [[40, 'database or disk is full']]);
    assert.equal((await fetch(`http://${daemon.metricsAddress}/health`)).status, 200, 'healthy again once it takes a write');
  });

  it('says once that its SQLite store takes writes again after a lock held past the busy timeout, with how long and how many operations failed', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'callout-store-available-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const { lines, log } = captureLog();
    const clock = new ManualClock();
    const overrides = { dataDir, store: { kind: 'sqlite' }, policy: { listen: '127.0.0.1:0', stages: [{ name: 'greylist', delay: 300 }] }, metrics: { listen: '' } };
    const { daemon, client } = await startDaemonWithClient({ overrides, log, clock, sqliteBusyTimeoutMs: 30 }, cleanups);
    const path = join(dataDir, 'callout.sqlite');
    const available = (): Array<Record<string, unknown>> => lines.filter((l) => l.msg === 'store available').map(({ level, store, failingForMs, failedOperations }) => ({ level, store, failingForMs, failedOperations }));
    const otherProcess = new Database(path);
    cleanups.push(() => void otherProcess.close());
    const locked = async (during: () => Promise<void>): Promise<void> => {
      otherProcess.exec('BEGIN IMMEDIATE');
      try {
        await during();
      } finally {
        otherProcess.exec('COMMIT');
      }
    };
    const store = (daemon as unknown as { store: Store }).store;
    assert.equal(await daemon.healthy(), true, 'the store takes a write');
    // A night's trouble: each failure a write of /health's probe, a minute apart.
    await locked(async () => {
      for (let i = 0; i < 3; i += 1) {
        assert.equal(await daemon.healthy(), false, 'the lock outlasts the busy timeout');
        clock.advance(60_000);
      }
      // The lock held, reads still work: no end of the trouble.
      await store.get('health:probe');
    });
    assert.deepEqual(available(), [], 'nothing took a write yet');
    // The first write after it: a greylisting request's.
    assert.match(await client.request(postfixRequest({ sender: 'a@sender.test' })), /^DEFER_IF_PERMIT /);
    assert.deepEqual(available(), [{ level: 30, store: path, failingForMs: 180_000, failedOperations: 3 }]);
    assert.equal(await daemon.healthy(), true);
    assert.equal(available().length, 1, 'one line for the trouble');
    // Back within the minute: its line waits for the first write after the minute, and is timed
    // to the first write after the failure.
    clock.advance(10_000);
    await locked(async () => assert.equal(await daemon.healthy(), false));
    clock.advance(5_000);
    assert.equal(await daemon.healthy(), true);
    assert.equal(available().length, 1, 'a line a minute at most');
    clock.advance(60_000);
    assert.equal(await daemon.healthy(), true);
    assert.deepEqual(available().slice(1), [{ level: 30, store: path, failingForMs: 5_000, failedOperations: 1 }]);
  });

  it('counts the reads that failed among the operations, as Redis out of reach fails them', async () => {
    const { lines, log } = captureLog();
    const clock = new ManualClock();
    const { daemon } = await startDaemonWithClient({ overrides: { store: { kind: 'memory' }, policy: { listen: '127.0.0.1:0' }, metrics: { listen: '' } }, log, clock }, cleanups);
    const store = (daemon as unknown as { store: Store & { inner: MemoryStore } }).store;
    const { get, getMany, scan } = store.inner;
    const unreachable = () => Promise.reject(new StoreError('redis://127.0.0.1:6379/0: get failed: Redis is unreachable (connect ECONNREFUSED 127.0.0.1:6379)', { outage: true }));
    Object.assign(store.inner, { get: unreachable, getMany: unreachable, scan: unreachable });
    try {
      for (const read of [() => store.get('k'), () => store.getMany(['k']), () => store.scan('k', 1)]) await assert.rejects(read(), StoreError);
    } finally {
      Object.assign(store.inner, { get, getMany, scan });
    }
    clock.advance(1_000);
    assert.equal(await daemon.healthy(), true);
    assert.deepEqual(
      lines.filter((l) => l.msg === 'store available').map(({ store: name, failingForMs, failedOperations }) => ({ name, failingForMs, failedOperations })),
      [{ name: 'memory', failingForMs: 1_000, failedOperations: 3 }],
    );
  });

  it('ends an outage only by a write that stored a value: Redis at maxmemory still takes deletes and compares that write nothing', async () => {
    const redis = await startRedis();
    cleanups.push(() => redis.stop());
    const { lines, log } = captureLog();
    const clock = new ManualClock();
    const { daemon } = await startDaemonWithClient({ overrides: { store: { kind: 'redis', url: redis.url }, policy: { listen: '127.0.0.1:0' }, metrics: { listen: '' } }, log, clock }, cleanups);
    const store = (daemon as unknown as { store: Store }).store;
    await store.set('oom:k', 'v', 60_000);
    const admin = new Redis(redis.url);
    cleanups.push(() => void admin.disconnect());
    await admin.config('SET', 'maxmemory-policy', 'noeviction');
    await admin.config('SET', 'maxmemory', '1');
    await assert.rejects(store.set('oom:k2', 'v', 60_000), /OOM/);
    clock.advance(1_000);
    await store.delete('oom:k');
    await store.deleteIf('oom:absent', 'v');
    assert.equal(await store.compareAndSet('oom:k', 'not-this', 'v', 60_000), false, 'a compare that stores nothing');
    await assert.rejects(store.set('oom:k3', 'v', 60_000), /OOM/, 'Redis still refuses every write that stores');
    const available = () => lines.filter((l) => l.msg === 'store available');
    assert.deepEqual(available(), [], 'no end of an outage that goes on');
    await admin.config('SET', 'maxmemory', '0');
    await store.set('oom:k4', 'v', 60_000);
    assert.deepEqual(available().map((l) => l.failedOperations), [2], 'the first write that stored ends it');
  });

  it('measures how long the store failed by the real clock, not by policy_test_time (policy.acceptTestTime)', async () => {
    const { lines, log } = captureLog();
    const clock = new ManualClock();
    const overrides = { store: { kind: 'memory' }, policy: { listen: '127.0.0.1:0', acceptTestTime: true, stages: [{ name: 'greylist', delay: 300 }] }, metrics: { listen: '' } };
    const { daemon, client } = await startDaemonWithClient({ overrides, log, clock }, cleanups);
    const store = (daemon as unknown as { store: Store & { inner: MemoryStore } }).store;
    const { set } = store.inner;
    store.inner.set = () => Promise.reject(new StoreError('set failed: database or disk is full', { outage: true }));
    try {
      assert.equal(await daemon.healthy(), false);
    } finally {
      store.inner.set = set;
    }
    clock.advance(2_000);
    // A replay's request, ten days ahead of the clock: its greylisting writes.
    const replayed = postfixRequest({ sender: 'bob@sender.test', policy_test_time: String(Math.floor(clock.now() / 1000) + 10 * 86_400) });
    assert.match(await client.request(replayed), /^DEFER_IF_PERMIT /);
    assert.deepEqual(lines.filter((l) => l.msg === 'store available').map((l) => l.failingForMs), [2_000]);
  });

  it('answers requests by policy.faultAction on a SQLite store found damaged after start, naming the damage, and serves on', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'callout-store-damaged-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const path = join(dataDir, 'callout.sqlite');
    await writeDamagedStore(path, 'after-schema');
    const { lines, log } = captureLog();
    const overrides = { dataDir, store: { kind: 'sqlite' }, policy: { listen: '127.0.0.1:0', faultAction: 'DEFER', stages: [{ name: 'greylist', delay: 300 }] }, metrics: { listen: '' } };
    const { client } = await startDaemonWithClient({ overrides, log }, cleanups);
    for (const sender of ['a@sender.test', 'b@sender.test']) {
      assert.equal(await client.request(postfixRequest({ sender })), '451 4.3.0 Temporary policy failure, please try again later', sender);
    }
    const faults = decisions(lines).map((l) => (l.faults as string[] | undefined)?.[0]);
    assert.equal(faults.length, 2, 'both answered');
    for (const fault of faults) assert.match(String(fault), /^greylist: STORE_DAMAGED: sqlite store \S+callout\.sqlite: \w+ failed: database disk image is malformed \(SQLITE_CORRUPT\): the file is damaged; stop callout serve, then restore it from a backup/);
  });

  it('does not take a damaged page for trouble that a write ends: no "store available" after it', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'callout-store-damaged-page-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    await writeDamagedStore(join(dataDir, 'callout.sqlite'), 'middle-page');
    const { lines, log } = captureLog();
    const overrides = { dataDir, store: { kind: 'sqlite' }, policy: { listen: '127.0.0.1:0' }, metrics: { listen: '' } };
    const { daemon } = await startDaemonWithClient({ overrides, log }, cleanups);
    const store = (daemon as unknown as { store: Store }).store;
    let damaged: unknown;
    for (const key of DAMAGED_STORE_KEYS) {
      damaged = await store.get(key).then(() => undefined, (err: unknown) => err);
      if (damaged !== undefined) break;
    }
    assert.ok(damaged instanceof StoreDamagedError, `a key on the damaged page: ${String(damaged)}`);
    assert.equal(await daemon.healthy(), true, 'a write on another page takes');
    // It stays damaged: "available" would read as if it had mended.
    assert.deepEqual(lines.filter((l) => l.msg === 'store available'), []);
  });

  it('logs once, naming the file and the cause, when the SQLite checkpoint thread fails, and counts it', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'callout-checkpointer-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const { lines, log } = captureLog();
    // No metrics listener: the default, 127.0.0.1:10041, is taken whenever another test file's
    // daemon runs alongside (npm test runs two files at a time); metricsText() reads the registry.
    const overrides = { dataDir, store: { kind: 'sqlite' }, policy: { listen: '127.0.0.1:0', stages: [{ name: 'greylist', delay: 300 }] }, metrics: { listen: '' } };
    const { daemon, client } = await startDaemonWithClient({ overrides, log }, cleanups);
    // Removed while open: the daemon writes on to the open file; the thread, started after 100
    // commits, finds none to open.
    rmSync(join(dataDir, 'callout.sqlite'));
    const failed = (): Array<Record<string, unknown>> => lines.filter((l) => l.msg === 'store checkpoint thread failed: until restart SQLite checkpoints inside commits, on the request path');
    for (let i = 0; i < 150 && failed().length === 0; i += 1) {
      assert.match(await client.request(postfixRequest({ sender: `s${i}@sender.test`, instance: `c${i}` })), /^DEFER_IF_PERMIT /);
    }
    assert.ok(await until(() => failed().length > 0), 'the failure was logged');
    for (let i = 0; i < 150; i += 1) await client.request(postfixRequest({ sender: `t${i}@sender.test`, instance: `d${i}` }));
    assert.deepEqual(
      failed().map((l) => ({ level: l.level, store: l.store, reason: l.reason })),
      [{ level: 50, store: join(dataDir, 'callout.sqlite'), reason: 'the checkpoint thread failed: unable to open database file (SQLITE_CANTOPEN)' }],
      'one error line',
    );
    assert.match(await daemon.metricsText(), /^callout_store_checkpoint_thread_failures_total 1$/m);
  });

  it('starts on a file with no settings as serve does, and refuses it when told to (a replacement worker, as a reload)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'callout-empty-config-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'callout.yaml');
    writeFileSync(path, '# being edited\n');
    const overrides = { store: { kind: 'memory' }, policy: { listen: '127.0.0.1:0' }, metrics: { listen: '' } };
    await assert.rejects(Daemon.start({ configPath: path, overrides, log: captureLog().log, refuseEmptyConfig: true }), /holds no settings/);
    const daemon = await Daemon.start({ configPath: path, overrides, log: captureLog().log });
    await daemon.stop();
  });

  it('gives a metrics UNIX socket metrics.socketMode, whatever the umask', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'callout-metrics-mode-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'metrics.sock');
    // serve's own: 027 left the socket 0750, and a scraper in its group could not connect.
    const previous = process.umask(0o027);
    try {
      const daemon = await Daemon.start({ overrides: { store: { kind: 'memory' }, policy: { listen: '127.0.0.1:0' }, metrics: { listen: path, socketMode: '0640' } }, log: captureLog().log });
      cleanups.push(() => daemon.stop());
      assert.equal((statSync(path).mode & 0o777).toString(8), '640');
    } finally {
      process.umask(previous);
    }
  });

  it('stops without waiting on metrics clients that hold a connection open (silent, half a request sent)', async () => {
    const daemon = await Daemon.start({ overrides: { store: { kind: 'memory' }, policy: { listen: '127.0.0.1:0' }, metrics: { listen: '127.0.0.1:0' } }, log: captureLog().log });
    const { hostname, port } = new URL(`http://${daemon.metricsAddress}`);
    const holders = await Promise.all(
      ['', 'GET /metrics HTTP/1.1\r\nHost: callout\r\n'].map(
        (sent) =>
          new Promise<net.Socket>((resolve, reject) => {
            const socket = net.connect(Number(port), hostname, () => socket.write(sent, () => resolve(socket)));
            socket.once('error', reject);
          }),
      ),
    );
    const closed = holders.map((socket) => new Promise((resolve) => socket.once('close', resolve)));
    const started = Date.now();
    await daemon.stop();
    const stopMs = Date.now() - started;
    await Promise.all(closed);
    // Before, each held the stop for the listener's socket timeout, 30 s.
    assert.ok(stopMs < 5_000, `stopped after ${stopMs} ms`);
  });

  it('answers the request in flight when stop() begins before it closes the connection', async () => {
    const { client, daemon, smtp, logs } = await setup();
    const answer = client.request(postfixRequest({ sender: 'bob@slow.test', instance: 'drain' }));
    let answered = false;
    void answer.then(
      () => (answered = true),
      () => (answered = true),
    );
    // The callout waits on a 600 ms greeting.
    assert.ok(await until(() => smtp.get('127.0.0.4')!.connectionCount === 1), 'the callout is under way');
    assert.equal(answered, false, 'the request is still running when stop() begins');
    await daemon.stop();
    assert.equal(await answer, 'DUNNO');
    assert.ok(!logs.some((l) => l.msg === 'policy requests still running at shutdown; closing their connections'), 'drained, not cut');
  });

  it('closes its SQLite file at stop: the WAL checkpointed and removed, the file whole by itself', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'callout-stop-close-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const overrides = { dataDir, store: { kind: 'sqlite' }, policy: { listen: '127.0.0.1:0', stages: [{ name: 'greylist', delay: 300 }] }, metrics: { listen: '' } };
    const daemon = await Daemon.start({ overrides, log: captureLog().log });
    const client = await PolicyClient.connect(daemon.policyAddress);
    assert.match(await client.request(postfixRequest({ sender: 'bob@sender.test', instance: 'wal' })), /^DEFER_IF_PERMIT /);
    client.close();
    await daemon.stop();
    assert.equal(existsSync(join(dataDir, 'callout.sqlite-wal')), false, 'no WAL left beside the file');
  });

  it('counts every request that followed an answer as caught by the idle poll or arriving after sleep, and none with the poll off', async () => {
    const count = (metrics: string, outcome: string): number => Number(new RegExp(`callout_idle_poll_requests_total\\{outcome="${outcome}"\\} (\\d+)`).exec(metrics)?.[1]);
    for (const [idlePollMicros, expected] of [[200, 9], [0, 0]] as const) {
      const { client, daemon } = await setup({ policy: { idlePollMicros } });
      for (let i = 0; i < 10; i++) await client.request(postfixRequest({ sender: '', instance: `poll${i}` }));
      const metrics = await (await fetch(`http://${daemon.metricsAddress}/metrics`)).text();
      assert.equal(count(metrics, 'caught') + count(metrics, 'slept'), expected, metrics.split('\n').filter((l) => l.includes('idle_poll')).join('\n'));
      assert.match(metrics, /callout_idle_poll_seconds_total \d/);
    }
  });

  it('applies a policy.idlePollMicros changed by a reload to the connections already open', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'callout-reload-idle-poll-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'callout.yaml');
    let base: Record<string, unknown> = {};
    const { client, daemon, logs } = await setup({ policy: { idlePollMicros: 200 } }, (b) => {
      base = b;
      writeFileSync(path, stringify(b));
      return path;
    });
    const polled = async (): Promise<number> => {
      const metrics = await daemon.metricsText();
      return ['caught', 'slept'].reduce((sum, outcome) => sum + Number(new RegExp(`callout_idle_poll_requests_total\\{outcome="${outcome}"\\} (\\d+)`).exec(metrics)?.[1]), 0);
    };
    const ask = async (prefix: string): Promise<void> => {
      for (let i = 0; i < 5; i++) assert.equal(await client.request(postfixRequest({ sender: '', instance: `${prefix}${i}` })), 'DUNNO');
    };
    await ask('on');
    assert.equal(await polled(), 4, 'each request after the first followed an answer that was polled after');
    const reload = async (idlePollMicros: number): Promise<void> => {
      writeFileSync(path, stringify({ ...base, policy: { ...(base.policy as object), idlePollMicros } }));
      assert.equal(await daemon.reload(), true, `the reload to idlePollMicros ${idlePollMicros} is accepted`);
    };
    await reload(0);
    await ask('off');
    assert.equal(await polled(), 4, 'with polling turned off by the reload, no request is counted');
    await reload(200);
    await ask('again');
    // The first of them followed an answer given while polling was off: nothing to count.
    assert.equal(await polled(), 8, 'turned on again by the next reload: counted again');
    assert.ok(!logs.some((l) => l.msg === 'reload: these settings change only on restart'), 'a reload applies it: no restart is asked for');
  });

  it('reloads its configuration without dropping the connection, and keeps it when the new file is bad', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'callout-reload-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'callout.yaml');
    let base: Record<string, unknown> = {};
    const { client, daemon } = await setup({}, (b) => {
      base = b;
      writeFileSync(path, stringify(b));
      return path;
    });
    assert.match(await client.request(postfixRequest({ sender: 'nobody@sender.test' })), /^550/);
    writeFileSync(path, stringify({ ...base, policy: { ...(base.policy as object), stages: [{ name: 'sender-callout', mode: 'warn' }] } }));
    assert.equal(await daemon.reload(), true);
    assert.match(await client.request(postfixRequest({ sender: 'nobody@sender.test', instance: 'r2' })), /^WARN /);
    writeFileSync(path, 'policy: {stages: [{name: nonsense}]}\n');
    assert.equal(await daemon.reload(), false);
    assert.match(await client.request(postfixRequest({ sender: 'nobody@sender.test', instance: 'r3' })), /^WARN /, 'the old configuration still runs');
    // An empty file (an editor caught mid-write) is no wish for the defaults, which drop every stage.
    for (const [text, instance] of [['', 'r4'], ['# being edited\n', 'r5']] as const) {
      writeFileSync(path, text);
      assert.equal(await daemon.reload(), false);
      assert.match(await client.request(postfixRequest({ sender: 'nobody@sender.test', instance })), /^WARN /, 'the old configuration still runs');
    }
    assert.equal(client.isClosed, false);
  });

  it('carries the headers given per message over a reload: a message given its header before is not given it again', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'callout-reload-headers-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'callout.yaml');
    const { client, daemon } = await setup({ policy: { stages: [{ name: 'sender-callout', resultHeader: true, receiver: 'mx.local.test' }] } }, (b) => {
      writeFileSync(path, stringify(b));
      return path;
    });
    assert.match(await client.request(postfixRequest({ sender: 'bob@sender.test', instance: 'hr1' })), /^PREPEND X-Callout-Result: deliverable /);
    assert.equal(await daemon.reload(), true);
    assert.equal(await client.request(postfixRequest({ sender: 'bob@sender.test', recipient: 'carol@example.test', instance: 'hr1' })), 'DUNNO', 'the message has its header');
    assert.match(await client.request(postfixRequest({ sender: 'bob@sender.test', instance: 'hr2' })), /^PREPEND X-Callout-Result: /, 'a new message gets its own');
  });

  it('ignores a reload that comes while stop() drains, saying so, and keeps the configuration', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'callout-reload-stopping-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'callout.yaml');
    let base: Record<string, unknown> = {};
    const { client, daemon, logs } = await setup({}, (b) => {
      base = b;
      writeFileSync(path, stringify(b));
      return path;
    });
    assert.equal(await client.request(postfixRequest({ sender: '', instance: 's1' })), 'DUNNO');
    writeFileSync(path, stringify({ ...base, policy: { ...(base.policy as object), stages: [{ name: 'sender-callout', mode: 'warn' }] } }));
    // The client's connection, still open, keeps the drain going until it is closed.
    const stopped = daemon.stop();
    await until(() => logs.some((l) => l.msg === 'stopping: draining policy connections'));
    assert.equal(await daemon.reload(), false);
    client.close();
    await stopped;
    assert.ok(logs.some((l) => l.level === 30 && l.msg === 'reload ignored: the daemon is stopping'), JSON.stringify(logs.slice(-4)));
    assert.ok(!logs.some((l) => l.msg === 'configuration reloaded'), 'nothing was built for a daemon that is stopping');
    assert.ok(!logs.some((l) => /abandoned/.test(String(l.msg))), 'no callout ran at the stop: none is said to be abandoned');
    assert.deepEqual(daemon.config.policy.stages.map((s) => s.name), validateConfig({}).policy.stages.map((s) => s.name), 'the running configuration is unchanged');
  });

  it('reports each reload\'s outcome with a digest of the configuration it runs after it (a worker tells its supervisor)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'callout-reload-outcome-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'callout.yaml');
    const configure = (stages: unknown) => writeFileSync(path, stringify({ store: { kind: 'memory' }, callout: { helo: 'verifier.callout.test' }, policy: { listen: '127.0.0.1:0', stages }, metrics: { listen: '' } }));
    configure([{ name: 'postmaster' }]);
    const outcomes: ReloadOutcome[] = [];
    const daemon = await Daemon.start({ configPath: path, log: captureLog().log });
    cleanups.push(() => daemon.stop());
    const reload = async (): Promise<boolean> => {
      const outcome = await daemon.reloadOutcome();
      assert.ok(outcome, 'outcome');
      outcomes.push(outcome);
      return outcome.accepted;
    };
    assert.equal(await reload(), true);
    configure([{ name: 'postmaster' }, { name: 'sender-syntax' }]);
    assert.equal(await reload(), true);
    writeFileSync(path, '');
    assert.equal(await reload(), false);
    assert.deepEqual(outcomes.map((o) => o.accepted), [true, true, false]);
    assert.match(outcomes[0]!.config, /^[0-9a-f]{12}$/);
    assert.notEqual(outcomes[1]!.config, outcomes[0]!.config, 'a changed file, a changed digest');
    assert.equal(outcomes[2]!.config, outcomes[1]!.config, 'refused: the configuration kept, its digest');
    assert.match(outcomes[2]!.reason ?? '', /no settings|empty/i, outcomes[2]!.reason);
    // Valid to the schema, but its stages cannot be built: refused too, not reported accepted.
    configure([{ name: 'postmaster', states: ['CONNECT'] }]);
    assert.equal(await reload(), false);
    assert.equal(outcomes[3]!.config, outcomes[1]!.config, 'refused at build: the configuration kept, its digest');
    assert.match(outcomes[3]!.reason ?? '', /this stage runs only in RCPT/, outcomes[3]!.reason);
    assert.deepEqual(daemon.config.policy.stages.map((s) => s.name), ['postmaster', 'sender-syntax']);
  });

  it('says which changed settings a reload cannot apply, and says nothing of those left alone', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'callout-reload-fixed-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'callout.yaml');
    let base: Record<string, unknown> = {};
    const { daemon, logs } = await setup({}, (b) => {
      base = b;
      writeFileSync(path, stringify(b));
      return path;
    });
    const restartOnly = () => logs.filter((l) => l.msg === 'reload: these settings change only on restart');
    assert.equal(await daemon.reload(), true);
    assert.deepEqual(restartOnly(), [], 'an unchanged file warns of nothing');
    writeFileSync(path, stringify({ ...base, policy: { ...(base.policy as object), idleTimeout: '60s', maxConnections: 5, acceptTestTime: true }, log: { level: 'debug' } }));
    assert.equal(await daemon.reload(), true);
    assert.deepEqual(restartOnly().map((l) => l.settings), [['policy.acceptTestTime', 'policy.maxConnections', 'policy.idleTimeout', 'log.level']]);
    // Still not applied at the next SIGHUP: said again; the file put back as it runs: nothing to say.
    assert.equal(await daemon.reload(), true);
    assert.deepEqual(restartOnly().map((l) => l.settings).slice(1), [['policy.acceptTestTime', 'policy.maxConnections', 'policy.idleTimeout', 'log.level']]);
    assert.deepEqual([daemon.config.policy.maxConnections, daemon.config.log.level], [1000, 'info'], 'the running configuration says what runs');
    writeFileSync(path, stringify(base));
    assert.equal(await daemon.reload(), true);
    assert.equal(restartOnly().length, 2, 'the file as the daemon runs it warns of nothing');
    // The listeners, the store and the data directory: warned of, and kept as they run.
    const running = { listen: daemon.config.policy.listen, metrics: daemon.config.metrics.listen, store: daemon.config.store, dataDir: daemon.config.dataDir };
    const otherDir = mkdtempSync(join(tmpdir(), 'callout-reload-fixed-other-'));
    cleanups.push(() => rmSync(otherDir, { recursive: true, force: true }));
    writeFileSync(path, stringify({ ...base, dataDir: otherDir, store: { kind: 'sqlite', path: 'other.sqlite' }, policy: { ...(base.policy as object), listen: '127.0.0.2:0', socketMode: '0600' }, metrics: { listen: '127.0.0.2:0' } }));
    assert.equal(await daemon.reload(), true);
    assert.deepEqual(restartOnly().at(-1)?.settings, ['policy.listen', 'metrics.listen', 'store', 'dataDir', 'policy.socketMode']);
    assert.deepEqual({ listen: daemon.config.policy.listen, metrics: daemon.config.metrics.listen, store: daemon.config.store, dataDir: daemon.config.dataDir }, running, 'the running configuration keeps what runs');
  });

  it('reports after a reload that changed only restart-only settings the digest of a worker started on that file (one that replaced a worker that died)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'callout-reload-digest-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'callout.yaml');
    const configure = (extra: Record<string, unknown>) => writeFileSync(path, stringify({ store: { kind: 'memory' }, callout: { helo: 'verifier.callout.test' }, policy: { listen: '127.0.0.1:0', stages: [{ name: 'postmaster' }] }, metrics: { listen: '' }, ...extra }));
    configure({});
    const running = await Daemon.start({ configPath: path, log: captureLog().log });
    cleanups.push(() => running.stop());
    const before = (await running.reloadOutcome())!.config;
    configure({ log: { level: 'warn' } });
    const after = (await running.reloadOutcome())!.config;
    assert.equal(after, before, 'nothing a reload applies changed');
    const replacement = await Daemon.start({ configPath: path, log: captureLog().log });
    cleanups.push(() => replacement.stop());
    assert.equal((await replacement.reloadOutcome())!.config, after, 'the workers agree: no "send SIGHUP again"');
  });

  it('as a policy worker says in its start line that the supervisor serves the metrics (it said "off")', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'callout-worker-metrics-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const path = join(dataDir, 'callout.yaml');
    const started = async (metrics: string) => {
      writeFileSync(path, stringify({ dataDir, policy: { listen: '127.0.0.1:0', workers: 2 }, metrics: { listen: metrics } }));
      const { lines, log } = captureLog();
      const daemon = await Daemon.start({ configPath: path, log, worker: true });
      const own = daemon.metricsAddress;
      await daemon.stop();
      // Its own listener on the supervisor's address would answer a share of the scrapes with one worker's counts.
      assert.equal(own, '', 'a worker opens no metrics listener');
      return lines.find((l) => l.msg === 'callout serve started')?.metrics;
    };
    assert.equal(await started('127.0.0.1:0'), 'served by the supervisor');
    assert.equal(await started(''), 'off', 'metrics.listen "" is off for the supervisor too');
  });

  it('as a policy worker keeps its share of the concurrency limits by the workers running when a reload changes policy.workers', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'callout-reload-workers-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const path = join(dataDir, 'callout.yaml');
    const configure = (workers: number) => writeFileSync(path, stringify({
      dataDir,
      callout: { helo: 'verifier.callout.test' },
      limits: { concurrency: 8, perHostConcurrency: 4 },
      policy: { listen: '127.0.0.1:0', workers },
      metrics: { listen: '' },
    }));
    configure(4);
    const { lines, log } = captureLog();
    const daemon = await Daemon.start({ configPath: path, log, worker: true });
    cleanups.push(() => daemon.stop());
    const share = () => (daemon as unknown as { current: { engine: CalloutEngine } }).current.engine.settings.limits;
    assert.deepEqual([share().concurrency, share().perHostConcurrency], [2, 4], 'per-host connections are leased in the store: whole in each');
    configure(1);
    assert.equal(await daemon.reload(), true);
    assert.deepEqual(lines.filter((l) => l.msg === 'reload: these settings change only on restart').map((l) => l.settings), [['policy.workers']]);
    // The whole limit in each of the 4 workers still running would call out 4 times as hard as configured.
    assert.deepEqual([share().concurrency, share().perHostConcurrency], [2, 4], 'a quarter each, as before the reload');
    assert.equal(daemon.config.policy.workers, 4, 'the running configuration says how many run');
  });

  it('warns at start, at reload and in `config check` of a tarpit maxSleep the decision deadline cuts short, naming its key', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'callout-tarpit-cut-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'callout.yaml');
    const stages = [{ name: 'postmaster' }, { name: 'tarpit', maxSleep: '30s' }];
    const { daemon, logs } = await setup({ policy: { stages } }, (b) => {
      writeFileSync(path, stringify(b));
      return path;
    });
    const expected = 'policy.stages.1.maxSleep (tarpit): 30s is above policy.decisionTimeout (6s) less 250 ms: tarpit delays stop at 5750ms';
    const cut = () => logs.filter((l) => l.level === 40 && l.msg === expected).length;
    assert.equal(cut(), 1, 'at start');
    assert.equal(await daemon.reload(), true, 'a long maxSleep is allowed: the deadline bounds it');
    assert.equal(cut(), 2, 'at reload');
    const check = captureLog();
    await checkServeConfiguration(validateConfig({ store: { kind: 'memory' }, callout: { helo: 'verifier.callout.test' }, policy: { stages } }), check.log);
    assert.deepEqual(check.lines.filter((l) => l.level === 40).map((l) => l.msg), [expected], 'config check');
  });

  it('at shutdown gives up the callouts of a configuration replaced by SIGHUP too: a daemon started at once probes the sender again', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'callout-reload-abandon-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const dns = await startDnsServer(mxZone({ 'hold.test': '127.0.0.5' }));
    let hold = true;
    const [smtp] = await startSmtpServers(['127.0.0.5'], () => ({ rcpt: () => (hold ? { silent: true } : '250 2.1.5 Ok') }));
    cleanups.push(async () => {
      await smtp!.close();
      await dns.close();
    });
    const path = join(dataDir, 'callout.yaml');
    const configure = (decisionTimeout: string) => writeFileSync(path, stringify({
      dataDir,
      // 2 s for the DNS server in this process to answer: a loaded machine may not run it at once.
      dns: { servers: [dns.address], timeout: '2s', tries: 1 },
      callout: { helo: 'verifier.callout.test', port: smtp!.port, allowTargets: ['127.0.0.0/8'] },
      policy: { listen: '127.0.0.1:0', decisionTimeout },
      metrics: { listen: '' },
    }));
    configure('300ms');
    const { lines, log } = captureLog();
    const first = await Daemon.start({ configPath: path, log });
    const client = await PolicyClient.connect(first.policyAddress);
    assert.match(await client.request(postfixRequest({ sender: 'bob@hold.test' })), /^DEFER_IF_PERMIT .*in progress/, 'the callout holds its locks at the silent RCPT');
    assert.equal(await first.reload(), true);
    client.close();
    await first.stop();
    assert.ok(lines.some((l) => l.msg === 'callouts still running at shutdown abandoned: their answers are not cached, their probe locks are released'), 'the abandoned callout is logged');
    hold = false;
    // Time enough for the new daemon's callout on a loaded machine; a lock left behind (65 s)
    // would still outlast it, and the answer would be DEFER_IF_PERMIT.
    configure('5s');
    const { client: again } = await startDaemonWithClient({ configPath: path, log: captureLog().log }, cleanups);
    assert.equal(await again.request(postfixRequest({ sender: 'bob@hold.test', instance: 'again' })), 'DUNNO', 'probed at once, not deferred while a stopped daemon\'s locks run out');
  });

  /**
   * A daemon on SQLite whose call-forward host never greets, one request left "in progress";
   * `meanwhile` runs before stop(). Resolves with the stop's duration once it has checked that
   * the callout was given up and no call-forward lock is left in the file.
   */
  async function stopWithCallForwardRunning(host: string, callout: Record<string, unknown>, meanwhile: (daemon: Daemon) => Promise<void>): Promise<number> {
    const dataDir = mkdtempSync(join(tmpdir(), 'callout-cf-abandon-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const [smtp] = await startSmtpServers([host], () => ({ greeting: () => ({ silent: true }) }));
    cleanups.push(() => smtp!.close());
    const { lines, log } = captureLog();
    const daemon = await Daemon.start({
      overrides: {
        dataDir,
        callout: { helo: 'verifier.callout.test', allowTargets: ['127.0.0.0/8'], ...callout },
        policy: { listen: '127.0.0.1:0', decisionTimeout: '300ms', stages: [{ name: 'recipient-callforward', hosts: [host], port: smtp!.port }] },
        metrics: { listen: '' },
      },
      log,
    });
    const client = await PolicyClient.connect(daemon.policyAddress);
    assert.match(await client.request(postfixRequest({ sender: 'x@elsewhere.test', recipient: 'bob@backup.test' })), /^DEFER_IF_PERMIT 4\.1\.1 unverified address: Address verification in progress/);
    client.close();
    await meanwhile(daemon);
    const started = Date.now();
    await daemon.stop();
    const stopMs = Date.now() - started;
    const abandoned = lines.find((l) => l.msg === 'callouts still running at shutdown abandoned: their answers are not cached, their probe locks are released');
    assert.equal(abandoned?.abandoned, 1, JSON.stringify(lines.slice(-4)));
    const db = new Database(join(dataDir, 'callout.sqlite'), { readonly: true });
    try {
      assert.deepEqual(db.prepare("SELECT key FROM kv WHERE key LIKE 'cf:%lock:%'").pluck().all(), [], 'no call-forward lock outlives the daemon');
    } finally {
      db.close();
    }
    return stopMs;
  }

  it('at shutdown gives up the call-forward\'s callouts of a configuration replaced longer than the drain ago, and lets go of their locks', async () => {
    await stopWithCallForwardRunning('127.0.0.132', { timeouts: { greeting: '25s', overall: '28s' } }, async (daemon) => {
      assert.equal(await daemon.reload(), true);
      // Past the replaced configuration's drain (10 s): its call-forward callout still runs.
      await new Promise((resolve) => setTimeout(resolve, 11_000));
    });
  });

  it('at shutdown gives up the call-forward\'s callouts too, within the one drain, and lets go of their locks', async () => {
    const stopMs = await stopWithCallForwardRunning('127.0.0.131', {}, async () => undefined);
    // One drain (10 s) for the daemon's callouts and the stage's together, not one after the other.
    assert.ok(stopMs < 15_000, `stopped after ${stopMs} ms`);
  });

  it('call-forward: verifies recipients at the configured internal host, with its own cache', async () => {
    // The SMTP test servers all share one port, which setup() also gives the engine.
    const forward = await setup({ policy: { stages: [{ name: 'postmaster' }, { name: 'recipient-callforward', hosts: ['127.0.0.2'], port: 0, domains: ['backup.test'] }] } }, undefined, true);
    assert.equal(await forward.client.request(postfixRequest({ sender: 'x@elsewhere.test', recipient: 'bob@backup.test' })), 'DUNNO');
    // A host given by address is named once: [127.0.0.2], not 127.0.0.2 [127.0.0.2].
    assert.match(await forward.client.request(postfixRequest({ sender: 'x@elsewhere.test', recipient: 'nobody@backup.test' })), /^550 5\.1\.1 undeliverable address: \[127\.0\.0\.2\] answered RCPT TO:<nobody@backup\.test> with 550 5\.1\.1/);
    assert.equal(await forward.client.request(postfixRequest({ sender: 'x@elsewhere.test', recipient: 'nobody@other.test' })), 'DUNNO', 'only the listed domains');
    const connections = forward.smtp.get('127.0.0.2')!.connectionCount;
    assert.match(await forward.client.request(postfixRequest({ sender: 'x@elsewhere.test', recipient: 'nobody@backup.test', instance: 'again' })), /^550/);
    assert.equal(forward.smtp.get('127.0.0.2')!.connectionCount, connections, 'answered from the call-forward cache');
  });

  it('call-forward: a recipient at an address literal is verified at the configured host, never at the address it names', async () => {
    const forward = await setup({ policy: { stages: [{ name: 'recipient-callforward', hosts: ['127.0.0.2'], port: 0 }] } }, undefined, true);
    const named = forward.smtp.get('127.0.0.3')!.connectionCount;
    assert.match(await forward.client.request(postfixRequest({ sender: 'x@elsewhere.test', recipient: 'nobody@[127.0.0.3]' })), /^550 5\.1\.1 undeliverable address: \[127\.0\.0\.2\] answered/);
    assert.equal(forward.smtp.get('127.0.0.3')!.connectionCount, named, 'no connection to the literal');
  });

  it('call-forward: a request from one of the hosts is not called forward (it decides its own recipients; a loop would wait on itself)', async () => {
    for (const hosts of [['127.0.0.2'], ['mx1.sender.test']]) {
      const forward = await setup({ policy: { stages: [{ name: 'recipient-callforward', hosts, port: 0 }] } }, undefined, true);
      for (const client_address of ['127.0.0.2', '::ffff:127.0.0.2']) {
        assert.equal(await forward.client.request(postfixRequest({ client_address, sender: '', recipient: 'nobody@backup.test', instance: `loop-${client_address}` })), 'DUNNO', `${hosts[0]} from ${client_address}`);
      }
      assert.equal(forward.smtp.get('127.0.0.2')!.connectionCount, 0, `${hosts[0]}: no call-forward`);
      const line = decisions(forward.logs).at(-1)!;
      assert.ok((line.stages as string[]).some((s) => /^recipient-callforward=none: client 127\.0\.0\.2 is a call-forward host/.test(s)), JSON.stringify(line.stages));
      assert.match(await forward.client.request(postfixRequest({ client_address: '192.0.2.7', sender: 'x@elsewhere.test', recipient: 'nobody@backup.test' })), /^550 5\.1\.1/, 'other clients are still called forward');
    }
  });

  it('call-forward: still running at the deadline, answers DEFER_IF_PERMIT with its own enhanced code (4.1.1, as Postfix\'s unverified recipient)', async () => {
    const forward = await setup({ policy: { decisionTimeout: '200ms', stages: [{ name: 'recipient-callforward', hosts: ['127.0.0.4'], port: 0 }] } }, undefined, true);
    assert.equal(await forward.client.request(postfixRequest({ sender: 'x@elsewhere.test', recipient: 'bob@backup.test' })), 'DEFER_IF_PERMIT 4.1.1 unverified address: Address verification in progress');
  });

  it('refuses a stage configured for protocol states it cannot run in', async () => {
    await assert.rejects(setup({ policy: { stages: [{ name: 'postmaster', states: ['CONNECT'] }] } }), /policy\.stages\.0\.states \(postmaster\): got CONNECT: this stage runs only in RCPT/);
  });

  it('listens on a UNIX socket', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'callout-sock-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const { daemon } = await setup({ policy: { listen: join(dir, 'policy.sock') } });
    const unixClient = await PolicyClient.connect(daemon.policyAddress);
    try {
      assert.equal(await unixClient.request(postfixRequest({ sender: 'bob@sender.test' })), 'DUNNO');
    } finally {
      unixClient.close();
    }
  });

  it('skips a purge tick while the last purge still runs, so that slow purges do not pile up', async () => {
    let purges = 0;
    let finish = (): void => undefined;
    class SlowStore extends MemoryStore {
      override purgeExpired(): Promise<number> {
        purges += 1;
        return new Promise((resolve) => (finish = () => resolve(0)));
      }
    }
    const { log, lines } = captureLog();
    log.level = 'debug';
    const timers = new ManualTimers();
    const timer = schedulePurges(new SlowStore(), 10, log, new Metrics(), undefined, timers);
    try {
      await timers.advance(10);
      assert.equal(purges, 1, 'the first tick purges');
      await timers.advance(100);
      assert.equal(purges, 1, 'no purge starts while one runs');
      assert.equal(lines.filter((l) => l.level === 20 && /store purge skipped/.test(String(l.msg))).length, 10, 'each skipped tick is logged at debug');
      finish();
      await timers.advance(10);
      assert.equal(purges, 2, 'the next tick after it ended purges again');
    } finally {
      timers.clearTimeout(timer);
      finish();
    }
  });

  it('purges again at the next tick after a purge that failed, and logs the failure', async () => {
    let purges = 0;
    class FailingOnceStore extends MemoryStore {
      override purgeExpired(): Promise<number> {
        purges += 1;
        return purges === 1 ? Promise.reject(new Error('database is locked')) : Promise.resolve(0);
      }
    }
    const { log, lines } = captureLog();
    const timers = new ManualTimers();
    const timer = schedulePurges(new FailingOnceStore(), 10, log, new Metrics(), undefined, timers);
    try {
      await timers.advance(30);
      assert.equal(purges, 3, 'a purge at each of three ticks, the failed one\'s included');
      assert.deepEqual(lines.filter((l) => l.msg === 'store purge failed').map((l) => [l.level, l.err]), [[40, 'database is locked']]);
      assert.deepEqual(lines.filter((l) => l.msg === 'expired store entries purged'), [], 'a purge that removed nothing says nothing');
    } finally {
      timers.clearTimeout(timer);
    }
  });

  it('runs no purge once stop() has begun: the SQLite store it would purge is closed', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'callout-stop-purge-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const { log, lines } = captureLog();
    const timers = new ManualTimers();
    const overrides = { dataDir, store: { kind: 'sqlite', purgeInterval: '1m' }, policy: { listen: '127.0.0.1:0' }, metrics: { listen: '' } };
    const daemon = await Daemon.start({ overrides, log, timers });
    const store = (daemon as unknown as { store: SqliteStore }).store;
    const purges: number[] = [];
    const purgeExpired = store.purgeExpired.bind(store);
    store.purgeExpired = (at) => {
      purges.push(timers.now());
      return purgeExpired(at);
    };
    await timers.advance(60_000);
    assert.deepEqual(purges, [60_000], 'a purge every store.purgeInterval while it runs');
    await daemon.stop();
    await timers.advance(5 * 60_000);
    assert.deepEqual(purges, [60_000], 'no purge after the stop');
    assert.deepEqual(lines.filter((l) => l.msg === 'store purge failed'), [], 'no purge met the closed store');
  });

  it('closes a malformed request without a reply and keeps serving others', async () => {
    const { client, daemon } = await setup();
    const bad = await PolicyClient.connect(daemon.policyAddress);
    await assert.rejects(bad.request({ request: 'not_a_policy_request' }), /closed/);
    assert.equal(await client.request(postfixRequest({ sender: 'bob@sender.test' })), 'DUNNO');
  });
});
