// Two `callout serve` daemons sharing one real redis-server: one state, one callout, and outages.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Daemon } from '../../src/policy/daemon.js';
import { StoreError } from '../../src/core/errors.js';
import type { RedisStore } from '../../src/store/redis.js';
import type { Store } from '../../src/store/types.js';
import { startDnsServer } from '../support/dns-server.js';
import type { DnsTestServer } from '../support/dns-server.js';
import { startRedis } from '../support/redis.js';
import { startSmtpServers, usersOnly } from '../support/smtp-server.js';
import type { SmtpTestServer } from '../support/smtp-server.js';
import { PolicyClient, postfixRequest } from '../support/policy-client.js';
import { mxZone } from '../verify/fixture.js';
import { captureLog } from '../support/log-capture.js';
import { until } from '../support/wait.js';

let dns: DnsTestServer;
let smtp: SmtpTestServer[];
let redis: Awaited<ReturnType<typeof startRedis>>;
const logs: Array<Record<string, unknown>> = [];
const running: Daemon[] = [];

before(async () => {
  dns = await startDnsServer(mxZone({ 'shared.test': '127.0.0.2', 'slow.test': '127.0.0.3' }));
  smtp = await startSmtpServers(['127.0.0.2', '127.0.0.3'], (host) =>
    host === '127.0.0.2' ? usersOnly(['bob']) : { ...usersOnly(['bob']), greeting: () => ({ reply: '220 slow', delayMs: 400 }) },
  );
  redis = await startRedis();
});
after(async () => {
  await Promise.all(running.map((d) => d.stop()));
  await Promise.all(smtp.map((s) => s.close()));
  await dns.close();
  await redis.stop();
});

async function daemon(extra: Record<string, unknown> = {}): Promise<{ daemon: Daemon; client: PolicyClient }> {
  const { log: logger } = captureLog(logs);
  const d = await Daemon.start({
    overrides: {
      store: { kind: 'redis', url: redis.url },
      // 2 s for the DNS server in this process to answer: a loaded machine may not run it at once.
      dns: { servers: [dns.address], timeout: '2s', tries: 1 },
      callout: { helo: 'verifier.callout.test', port: smtp[0]!.port, allowTargets: ['127.0.0.0/8'] },
      policy: { listen: '127.0.0.1:0', ...extra },
      metrics: { listen: '' },
    },
    log: logger,
  });
  running.push(d);
  return { daemon: d, client: await PolicyClient.connect(d.policyAddress) };
}

describe('two daemons on one Redis', () => {
  it('a sender verified by one daemon is a cache hit on the other', async () => {
    const [a, b] = await Promise.all([daemon(), daemon()]);
    assert.match(await a.client.request(postfixRequest({ sender: 'nobody@shared.test' })), /^550 5\.7\.1/);
    const connections = smtp[0]!.connectionCount;
    assert.match(await b.client.request(postfixRequest({ sender: 'nobody@shared.test' })), /^550 5\.7\.1/);
    assert.equal(smtp[0]!.connectionCount, connections, 'no second callout');
    const line = logs.filter((l) => l.msg === 'decision').at(-1)!;
    assert.ok((line.stages as string[]).some((s) => /sender-callout=undeliverable/.test(s)), '(line.stages as string[]).some((s) => /sender-callout=undeliverable/.test(s))');
    a.client.close();
    b.client.close();
  });

  it('a callout in progress on one daemon is not repeated by the other', async () => {
    const [a, b] = await Promise.all([daemon(), daemon()]);
    const [first, second] = await Promise.all([
      a.client.request(postfixRequest({ sender: 'bob@slow.test' })),
      // b asks once a's callout is under way (its connection reached the slow server).
      until(() => smtp[1]!.connectionCount === 1).then(() => b.client.request(postfixRequest({ sender: 'bob@slow.test' }))),
    ]);
    assert.equal(first, 'DUNNO');
    assert.equal(second, 'DUNNO');
    // What each callout said and what each daemon decided, should a second callout be made.
    const evidence = JSON.stringify({ sessions: smtp[1]!.sessions.map((s) => s.commands), decisions: logs.filter((l) => l.msg === 'decision').slice(-2) });
    assert.equal(smtp[1]!.connectionCount, 1, `one callout for both daemons: ${evidence}`);
    a.client.close();
    b.client.close();
  });

  it('keeps answering (DUNNO, logged) while Redis is down, and recovers when it returns', async () => {
    const { client } = await daemon();
    redis.kill();
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(await client.request(postfixRequest({ sender: 'someone@shared.test' })), 'DUNNO');
    const fault = logs.filter((l) => l.msg === 'decision').at(-1)!;
    assert.ok(Array.isArray(fault.faults) && (fault.faults as string[])[0]!.includes('STORE_UNAVAILABLE'), JSON.stringify(fault));
    await redis.restart();
    // Asked again until the store has reconnected (its backoff grows to a second), for up to 20 s.
    let action = '';
    let attempt = 0;
    const recovered = async () => (action = await client.request(postfixRequest({ sender: 'someone@shared.test', instance: `x${(attempt += 1)}` }))).startsWith('550');
    await until(recovered, 20_000, 200);
    assert.match(action, /^550 5\.7\.1/, 'back to normal after the outage');
    client.close();
  });

  it('is unhealthy while Redis is down, logging the outage once however often health is asked', async () => {
    // The daemons of the tests before would log the outage too, into the same lines.
    await Promise.all(running.splice(0).map((d) => d.stop()));
    const { daemon: d, client } = await daemon();
    assert.equal(await d.healthy(), true);
    const before = logs.length;
    redis.kill();
    assert.ok(await until(async () => !(await d.healthy()), 5000), 'await until(async () => !(await d.healthy()), 5000)');
    for (let i = 0; i < 10; i += 1) assert.equal(await d.healthy(), false);
    // Redis expires keys itself: a purge succeeds without asking it, and ends nothing.
    assert.equal(await (d as unknown as { store: Store }).store.purgeExpired(), 0);
    assert.deepEqual(logs.slice(before).filter((l) => l.msg === 'store available'), [], 'still down');
    const lines = logs.slice(before).filter((l) => l.msg !== 'decision').map((l) => String(l.msg));
    assert.deepEqual(lines.filter((m) => m.startsWith('health')), ['health: the store does not take a write'], lines.join('\n'));
    assert.deepEqual(lines.filter((m) => m.startsWith('store unavailable')).length, 1, lines.join('\n'));
    await redis.restart();
    assert.ok(await until(() => d.healthy(), 10_000), 'healthy again once Redis is back');
    // Its end is the first write that took (that /health probe), counting the probes that failed.
    const back = logs.slice(before).filter((l) => l.msg === 'store available');
    assert.equal(back.length, 1, JSON.stringify(back));
    assert.equal(back[0]!.store, redis.url);
    assert.ok(typeof back[0]!.failedOperations === 'number' && back[0]!.failedOperations >= 11, JSON.stringify(back[0]));
    assert.ok(typeof back[0]!.failingForMs === 'number' && back[0]!.failingForMs > 0, JSON.stringify(back[0]));
    client.close();
  });

  it('says at start that Redis is down, once, and that it is back', async () => {
    // The daemons of the tests before would log the outage too, into the same lines.
    await Promise.all(running.splice(0).map((d) => d.stop()));
    redis.kill();
    const before = logs.length;
    const { daemon: d, client } = await daemon();
    await new Promise((resolve) => setTimeout(resolve, 500));
    const down = (): string[] => logs.slice(before).map((l) => String(l.msg)).filter((m) => m.startsWith('store unavailable'));
    assert.equal(down().length, 1, 'one line for the outage the daemon started in');
    await redis.restart();
    // Back at the first write that takes, though nothing failed before it: the outage began with the connection.
    const store = (d as unknown as { store: { inner: RedisStore } }).store.inner;
    assert.ok(await until(() => store.healthy, 10_000), 'connected again');
    assert.equal(await d.healthy(), true, 'the store takes a write once Redis is back');
    const back = logs.slice(before).filter((l) => l.msg === 'store available');
    assert.deepEqual(back.map((l) => l.failedOperations), [0], 'one line for its end');
    assert.equal(down().length, 1);
    client.close();
  });

  it('takes a fault of one key for no outage: no store available after it', async () => {
    const { daemon: d, client } = await daemon();
    const store = (d as unknown as { store: Store }).store;
    const before = logs.length;
    // Another program's value under the prefix, where a counter is expected: Redis answers, and refuses this one call.
    await store.set('cluster-test:not-a-counter', 'text', 60_000);
    await assert.rejects(store.increment('cluster-test:not-a-counter', 1, 60_000), (err: unknown) => err instanceof StoreError && !err.outage);
    await store.set('cluster-test:other', 'value', 60_000);
    assert.deepEqual(logs.slice(before).filter((l) => l.msg === 'store available'), [], 'no end of an outage that never was');
    client.close();
  });

  it('starts while Redis is down and defers when faultAction is DEFER', async () => {
    redis.kill();
    const { client } = await daemon({ faultAction: 'DEFER' });
    assert.match(await client.request(postfixRequest({ sender: 'x@shared.test' })), /^451 4\.3\.0/);
    client.close();
    await redis.restart();
  });
});
