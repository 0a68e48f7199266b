// /health of the metrics listener against a real redis-server that goes away and comes back:
// README promises 200 while the store answers and 503 while it is unreachable.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { Writable } from 'node:stream';
import { createLogger } from '../../src/core/log.js';
import { Daemon } from '../../src/policy/daemon.js';
import { startRedis, type RedisInstance } from '../support/redis.js';

interface Health {
  status: number;
  body: unknown;
}

function health(address: string): Promise<Health> {
  const { hostname, port } = new URL(`http://${address}`);
  return new Promise((resolve, reject) => {
    const req = request({ host: hostname, port, path: '/health', method: 'GET', timeout: 5000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as unknown }));
    });
    req.once('timeout', () => req.destroy(new Error('/health did not answer within 5 s')));
    req.once('error', reject);
    req.end();
  });
}

/** Asks /health until it answers `status`: the store notices an outage (or its end) a little later. */
async function healthBecomes(address: string, status: number, withinMs: number): Promise<Health> {
  const deadline = Date.now() + withinMs;
  let last = await health(address);
  while (last.status !== status && Date.now() < deadline) {
    await sleep(100);
    last = await health(address);
  }
  return last;
}

// Like the other Redis tests it needs Debian's redis-server and fails without it (startRedis says so).
describe('/health with a Redis store', () => {
  let redis: RedisInstance;
  let daemon: Daemon;

  before(async () => {
    redis = await startRedis();
    daemon = await Daemon.start({
      overrides: {
        store: { kind: 'redis', url: redis.url },
        policy: { listen: '127.0.0.1:0' },
        metrics: { listen: '127.0.0.1:0' },
      },
      // The outage is logged as an error on purpose; the test reads the HTTP answers instead.
      log: createLogger('info', new Writable({ write: (_chunk, _enc, done) => done() })),
    });
  });
  after(async () => {
    await daemon?.stop();
    await redis?.stop();
  });

  it('answers 200 while Redis is up, 503 while it is killed, and 200 again once it is back', async () => {
    assert.deepEqual(await health(daemon.metricsAddress), { status: 200, body: { status: 'ok' } });

    redis.kill();
    assert.deepEqual(await healthBecomes(daemon.metricsAddress, 503, 5000), { status: 503, body: { status: 'degraded' } });
    // Still down a moment later: the 503 is the outage, not one unlucky request.
    await sleep(300);
    assert.equal((await health(daemon.metricsAddress)).status, 503);

    await redis.restart();
    assert.deepEqual(await healthBecomes(daemon.metricsAddress, 200, 5000), { status: 200, body: { status: 'ok' } }, 'recovers without a restart of the daemon');
  });

  it('answers 503 while Redis hangs (connection open, nothing answered), and 200 once it answers again', async () => {
    assert.equal((await healthBecomes(daemon.metricsAddress, 200, 5000)).status, 200);
    redis.pause();
    try {
      // The store's command deadline (1 s) turns the hang into a failure.
      assert.deepEqual(await health(daemon.metricsAddress), { status: 503, body: { status: 'degraded' } });
    } finally {
      redis.resume();
    }
    assert.equal((await healthBecomes(daemon.metricsAddress, 200, 5000)).status, 200);
  });
});
