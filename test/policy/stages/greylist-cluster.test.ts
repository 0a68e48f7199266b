// Two `callout serve` daemons on one real redis-server: one greylist state, one set of rate counters.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { ManualClock } from '../../support/manual-time.js';
import { createLogger } from '../../../src/core/log.js';
import { Daemon } from '../../../src/policy/daemon.js';
import { startRedis } from '../../support/redis.js';
import { PolicyClient, postfixRequest } from '../../support/policy-client.js';

const S = 1000;
let redis: Awaited<ReturnType<typeof startRedis>>;
const running: Array<{ daemon: Daemon; client: PolicyClient }> = [];
// Both daemons read one clock, as two hosts with synchronised clocks would.
const clock = new ManualClock(Date.UTC(2026, 0, 1, 8));

before(async () => {
  redis = await startRedis();
});
after(async () => {
  for (const { daemon, client } of running) {
    client.close();
    await daemon.stop();
  }
  await redis.stop();
});

async function pair(stages: Array<Record<string, unknown>>, keyPrefixes: [string?, string?] = []): Promise<[PolicyClient, PolicyClient]> {
  const start = async (keyPrefix: string | undefined) => {
    const daemon = await Daemon.start({
      overrides: { store: { kind: 'redis', url: redis.url, ...(keyPrefix ? { keyPrefix } : {}) }, policy: { listen: '127.0.0.1:0', stages }, metrics: { listen: '' } },
      log: createLogger('silent'),
      clock,
    });
    const client = await PolicyClient.connect(daemon.policyAddress);
    running.push({ daemon, client });
    return client;
  };
  return [await start(keyPrefixes[0]), await start(keyPrefixes[1])];
}

describe('greylisting shared through Redis', () => {
  it('a retry landing on the other daemon passes, and both agree on one first-seen time', async () => {
    const [a, b] = await pair([{ name: 'greylist', header: false }]);
    const request = postfixRequest({ client_address: '192.0.2.77', sender: 'first@cluster.example', recipient: 'alice@example.test' });
    assert.equal(await a.request(request), 'DEFER_IF_PERMIT 4.2.0 Greylisted, please try again in 300 seconds');
    clock.advance(100 * S);
    assert.equal(await b.request(request), 'DEFER_IF_PERMIT 4.2.0 Greylisted, please try again in 200 seconds', 'b sees a\'s first sighting');
    clock.advance(200 * S);
    assert.equal(await b.request(request), 'DUNNO');
    assert.equal(await a.request(request), 'DUNNO');
  });

  it('keeps two sites on one Redis database apart with store.keyPrefix', async () => {
    const [a, b] = await pair([{ name: 'greylist', header: false }], ['site-a:', 'site-b:']);
    const request = postfixRequest({ client_address: '192.0.2.79', sender: 'apart@cluster.example', recipient: 'alice@example.test' });
    assert.equal(await a.request(request), 'DEFER_IF_PERMIT 4.2.0 Greylisted, please try again in 300 seconds');
    clock.advance(100 * S);
    assert.equal(await b.request(request), 'DEFER_IF_PERMIT 4.2.0 Greylisted, please try again in 300 seconds', 'b has its own triplets');
    const admin = new Redis(redis.url);
    try {
      assert.equal((await admin.keys('site-a:grey:t:*')).length, 1);
      assert.equal((await admin.keys('site-b:grey:t:*')).length, 1);
    } finally {
      admin.disconnect();
    }
  });

  it('simultaneous first sightings on both daemons record one triplet', async () => {
    const [a, b] = await pair([{ name: 'greylist', header: false }]);
    const request = postfixRequest({ client_address: '192.0.2.78', sender: 'race@cluster.example', recipient: 'bob@example.test' });
    const answers = await Promise.all([...Array.from({ length: 10 }, () => a.request(request)), ...Array.from({ length: 10 }, () => b.request(request))]);
    assert.ok(answers.every((x) => x === 'DEFER_IF_PERMIT 4.2.0 Greylisted, please try again in 300 seconds'), answers.join(' | '));
    clock.advance(300 * S);
    assert.equal(await b.request(request), 'DUNNO');
  });

  it('reads the client\'s auto-allow entry and the triplet in one round trip', async () => {
    const [a] = await pair([{ name: 'greylist', header: false }]);
    const admin = new Redis(redis.url);
    try {
      const reads = async (): Promise<number> => {
        const stats = await admin.info('commandstats');
        return ['evalsha', 'eval'].reduce((sum, command) => sum + Number(new RegExp(`^cmdstat_${command}:calls=(\\d+)`, 'm').exec(stats)?.[1] ?? 0), 0);
      };
      // The first request loads the read script; the second is measured.
      await a.request(postfixRequest({ client_address: '192.0.2.90', sender: 'warm@cluster.example', recipient: 'rt@example.test' }));
      const before = await reads();
      assert.match(await a.request(postfixRequest({ client_address: '192.0.2.91', sender: 'new@cluster.example', recipient: 'rt@example.test' })), /^DEFER_IF_PERMIT/);
      assert.equal((await reads()) - before, 1, 'one script call read both rows (the triplet is then written with SET NX)');
    } finally {
      admin.disconnect();
    }
  });

  it('rate limits count the recipients of both daemons together', async () => {
    const [a, b] = await pair([{ name: 'ratelimit', limits: [{ name: 'rcpt', per: 'client', count: 'recipients', max: 10, window: '1h' }] }]);
    const request = (n: number) => postfixRequest({ client_address: '198.51.100.99', recipient: `r${n}@example.test`, instance: 'rl' });
    const answers = await Promise.all(Array.from({ length: 16 }, (_, n) => (n % 2 ? a : b).request(request(n))));
    assert.equal(answers.filter((x) => x === 'DUNNO').length, 10);
    assert.equal(answers.filter((x) => /^450 4\.7\.1 Rate limit rcpt exceeded for 198\.51\.100\.99/.test(x)).length, 6);
  });

  it('takes back what either daemon deferred in a burst, so the next window starts from what was let through', async () => {
    const [a, b] = await pair([{ name: 'ratelimit', limits: [{ name: 'burst', per: 'client', count: 'recipients', max: 10, window: '1h' }] }]);
    const request = (n: number) => postfixRequest({ client_address: '198.51.100.98', recipient: `r${n}@example.test`, instance: 'burst' });
    clock.set(Date.UTC(2026, 0, 2, 8));
    const answers = await Promise.all(Array.from({ length: 16 }, (_, n) => (n % 2 ? a : b).request(request(n))));
    assert.equal(answers.filter((x) => x === 'DUNNO').length, 10);
    // 10 let through in 08:00-09:00: at 09:06 they weigh 9, and one more fits (16 counted weighed 14.4).
    clock.set(Date.UTC(2026, 0, 2, 9, 6));
    assert.equal(await a.request(request(99)), 'DUNNO');
    assert.match(await b.request(request(100)), /^450 4\.7\.1 Rate limit burst exceeded for 198\.51\.100\.98: more than 10 recipients in 1h, try again in \d+ seconds$/);
  });

  it('a message whose recipients reach both daemons is counted once', async () => {
    const [a, b] = await pair([{ name: 'ratelimit', limits: [{ name: 'msgs', per: 'client', count: 'messages', max: 2, window: '1h' }] }]);
    const request = (message: string, n: number) => postfixRequest({ client_address: '198.51.100.77', recipient: `r${n}@example.test`, instance: message });
    // Two messages, each with recipients asked of both daemons at once.
    for (const message of ['m1', 'm2']) {
      const answers = await Promise.all(Array.from({ length: 6 }, (_, n) => (n % 2 ? a : b).request(request(message, n))));
      assert.deepEqual(new Set(answers), new Set(['DUNNO']), `message ${message} counted once`);
    }
    assert.match(await a.request(request('m3', 0)), /^450 4\.7\.1 Rate limit msgs exceeded for 198\.51\.100\.77: more than 2 messages/);
  });
});
