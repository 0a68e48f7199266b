// The Redis store against a real redis-server on loopback: the shared contract (on Redis's real
// clock), several stores as several daemons, contention, key prefixes, and an outage.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { Worker } from 'node:worker_threads';
import { mkdirSync, rmdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Redis } from 'ioredis';
import { ManualClock } from '../support/manual-time.js';
import { ConfigError, StoreError } from '../../src/core/errors.js';
import { openStore } from '../../src/store/index.js';
import { RedisStore, type RedisStoreOptions } from '../../src/store/redis.js';
import { startRedis, type RedisInstance } from '../support/redis.js';
import { heapAfterGc } from '../support/heap.js';
import { until } from '../support/wait.js';
import { runStoreContract } from './contract.js';

let redis: RedisInstance;
before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis.stop();
});

let prefixCount = 0;
/** A prefix no other test uses, so tests share the server without seeing each other's keys. */
function freshPrefix(): string {
  prefixCount += 1;
  return `test${prefixCount}:`;
}

const opened: RedisStore[] = [];
after(async () => {
  await Promise.all(opened.map((store) => store.close()));
});

async function open(options: RedisStoreOptions = {}, url = redis.url): Promise<RedisStore> {
  const store = await RedisStore.open(url, { keyPrefix: freshPrefix(), ...options });
  opened.push(store);
  return store;
}

/** What open() came to: the error, or 'opened' (the store then closed again). */
async function openOutcome(url: string, options: RedisStoreOptions = {}): Promise<unknown> {
  return RedisStore.open(url, { keyPrefix: freshPrefix(), ...options }).then(
    async (store) => {
      await store.close();
      return 'opened';
    },
    (err: unknown) => err,
  );
}

/**
 * A TCP relay on loopback to the port target() names when a connection arrives: the one
 * address (a DNS name, a virtual IP, a proxy) a failover moves from one server to another.
 * holdReplies() stops passing on what the server sends on the connections open now, and cut()
 * closes those from the client's side: a connection lost between a command and its reply.
 */
async function relay(target: () => number): Promise<{ port: number; holdReplies(): void; cut(): void; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const links = new Set<{ client: net.Socket; upstream: net.Socket }>();
  const server = net.createServer((client) => {
    const upstream = net.connect({ host: '127.0.0.1', port: target() });
    const link = { client, upstream };
    links.add(link);
    client.once('close', () => links.delete(link));
    for (const [socket, other] of [[client, upstream], [upstream, client]] as const) {
      sockets.add(socket);
      socket.on('error', () => socket.destroy());
      socket.on('close', () => {
        sockets.delete(socket);
        other.destroy();
      });
      socket.pipe(other);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    port,
    holdReplies: () => {
      for (const { client, upstream } of links) {
        upstream.unpipe(client);
        upstream.pause();
      }
    },
    cut: () => {
      for (const { client } of links) client.destroy();
    },
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * A loopback port whose listener never accepts, its accept queue full: the kernel drops every
 * further SYN, so a connection hangs as to a host whose packets are lost. Node accepts every
 * connection itself, so the listener lives in a worker thread that blocks (Atomics.wait) once
 * it listens; connections fill its queue (a backlog of 1: Node takes 0 as its default, 511)
 * until one of them is left waiting.
 */
async function unacceptingListener(): Promise<{ port: number; close(): Promise<void> }> {
  const release = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(
    `const { parentPort, workerData } = require('node:worker_threads');
    const server = require('node:net').createServer();
    server.listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => {
      parentPort.postMessage(server.address().port);
      Atomics.wait(workerData, 0, 0);
    });`,
    { eval: true, workerData: release },
  );
  const [port] = (await once(worker, 'message')) as [number];
  const fillers: net.Socket[] = [];
  for (let connected = true; connected && fillers.length < 10; ) {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.on('error', () => socket.destroy());
    fillers.push(socket);
    connected = await Promise.race([once(socket, 'connect').then(() => true), new Promise<boolean>((resolve) => setTimeout(resolve, 1000, false))]);
  }
  return {
    port,
    close: async () => {
      for (const socket of fillers) socket.destroy();
      Atomics.notify(release, 0);
      await worker.terminate();
    },
  };
}

runStoreContract('redis', (clock) => RedisStore.open(redis.url, { clock, keyPrefix: freshPrefix() }), {
  time: 'real',
});

describe('RedisStore', () => {
  it('has kind redis, is healthy once open, and opens through openStore', async () => {
    const store = await open();
    assert.equal(store.kind, 'redis');
    assert.equal(store.healthy, true);
    const clock = new ManualClock();
    const viaSpec = await openStore({ kind: 'redis', url: redis.url, keyPrefix: freshPrefix() }, clock);
    try {
      assert.equal(viaSpec.kind, 'redis');
      await viaSpec.set('k', 'v', 60_000);
      const got = await viaSpec.get('k');
      assert.ok(got && got.expiresAt <= clock.now() + 60_000 && got.expiresAt > clock.now() + 55_000, 'got && got.expiresAt <= clock.now() + 60_000 && got.expiresAt > clock.now() + 55_000');
    } finally {
      await viaSpec.close();
    }
  });

  it('sends the commands asked for in one turn in one write', async () => {
    const store = await open();
    const admin = new Redis(redis.url);
    try {
      const readsProcessed = async (): Promise<number> => Number(/^total_reads_processed:(\d+)/m.exec(await admin.info('stats'))?.[1]);
      const before = await readsProcessed();
      await Promise.all(Array.from({ length: 50 }, (_, i) => store.set(`turn${i}`, 'v', 60_000)));
      const reads = (await readsProcessed()) - before;
      // The second INFO is one read of its own; fifty writes would be up to fifty.
      assert.ok(reads <= 3, `the server read ${reads} times for 50 commands`);
      assert.equal((await store.getMany(['turn0', 'turn49'])).filter((entry) => entry?.value === 'v').length, 2);
    } finally {
      admin.disconnect();
    }
  });

  it('reaches the server over its unix socket', async () => {
    const store = await open({}, redis.socketPath);
    await store.set('k', 'over the socket', 1000);
    assert.equal((await store.get('k'))?.value, 'over the socket');
  });

  it('sets expiry in Redis itself (PX), so it holds for every client', async () => {
    const prefix = freshPrefix();
    const writer = await open({ keyPrefix: prefix });
    const reader = await open({ keyPrefix: prefix, clock: new ManualClock(0) });
    await writer.set('k', 'v', 30_000);
    const got = await reader.get('k');
    assert.ok(got && got.expiresAt > 25_000 && got.expiresAt <= 30_000, `expiresAt ${got?.expiresAt}`);
    assert.equal(await reader.purgeExpired(), 0);
  });

  describe('as the shared store of several daemons', () => {
    it('lets each store see the writes of the others', async () => {
      const prefix = freshPrefix();
      const [first, second] = [await open({ keyPrefix: prefix }), await open({ keyPrefix: prefix })];
      await first.set('addr:a@example.org', 'deliverable', 60_000);
      assert.equal((await second.get('addr:a@example.org'))?.value, 'deliverable');
      assert.equal(await second.setIfAbsent('addr:a@example.org', 'other', 60_000), false);
      await second.delete('addr:a@example.org');
      assert.equal(await first.get('addr:a@example.org'), undefined);
      await second.set('dom:b', 'x', 60_000);
      assert.deepEqual((await first.scan('', 10)).map((row) => row.key), ['dom:b']);
    });

    it('loses no increment of 2 clients x 500 concurrent increments', async () => {
      const prefix = freshPrefix();
      const clients = [await open({ keyPrefix: prefix }), await open({ keyPrefix: prefix })];
      await Promise.all(
        clients.flatMap((client) => Array.from({ length: 500 }, () => client.increment('rate:x', 1, 60_000))),
      );
      assert.equal((await clients[0]?.get('rate:x'))?.value, '1000');
    });

    it('lets exactly one compareAndSet win each round among 5 clients', async () => {
      const prefix = freshPrefix();
      const clients = await Promise.all(Array.from({ length: 5 }, () => open({ keyPrefix: prefix })));
      let current: string | undefined;
      for (let round = 0; round < 20; round += 1) {
        const results = await Promise.all(
          clients.map((client, i) => client.compareAndSet('grey:t', current, `round ${round} by ${i}`, 60_000)),
        );
        assert.equal(results.filter(Boolean).length, 1, `round ${round}: ${JSON.stringify(results)}`);
        current = (await clients[0]?.get('grey:t'))?.value;
        assert.equal(current, `round ${round} by ${results.indexOf(true)}`);
      }
    });

    it('lets exactly one of 2 clients deleteIf the value they both hold, each round', async () => {
      const prefix = freshPrefix();
      const clients = [await open({ keyPrefix: prefix }), await open({ keyPrefix: prefix })];
      for (let round = 0; round < 20; round += 1) {
        await clients[0]?.set('probe:lock', `token ${round}`, 60_000);
        const results = await Promise.all(clients.map((client) => client.deleteIf('probe:lock', `token ${round}`)));
        assert.equal(results.filter(Boolean).length, 1, `round ${round}: ${JSON.stringify(results)}`);
        assert.equal(await clients[1]?.get('probe:lock'), undefined);
      }
    });

    it('loses no update of 4 clients retrying compareAndSet', async () => {
      const prefix = freshPrefix();
      const clients = await Promise.all(Array.from({ length: 4 }, () => open({ keyPrefix: prefix })));
      const addOne = async (client: RedisStore): Promise<void> => {
        for (;;) {
          const current = (await client.get('n'))?.value;
          if (await client.compareAndSet('n', current, String(Number(current ?? '0') + 1), 60_000)) return;
        }
      };
      await Promise.all(clients.flatMap((client) => Array.from({ length: 25 }, () => addOne(client))));
      assert.equal((await clients[0]?.get('n'))?.value, '100');
    });
  });

  // Redis still serves a key in the millisecond its expiry names (PTTL 0), which the contract
  // has as gone. Each case polls until a key is gone and checks that the command sent right
  // behind the read, in the same write, agrees; without agreement it would fail for most keys.
  describe('in the millisecond a key expires in', () => {
    const KEYS = 20;

    it('lets setIfAbsent set a key that get() has just found gone', async () => {
      const store = await open();
      for (let i = 0; i < KEYS; i += 1) {
        const key = `dying${i}`;
        await store.set(key, 'old', 3);
        for (;;) {
          const [read, set] = await Promise.all([store.get(key), store.setIfAbsent(key, 'new', 60_000)]);
          // Gone between the two: SET NX won, and the key now lives a minute (asking on would never end).
          if (read !== undefined && set) break;
          if (read !== undefined) continue;
          assert.equal(set, true, `key ${i}: get() said absent, SET NX found it`);
          break;
        }
      }
    });

    it('restarts a counter whose ttl has passed, not adding to it in its last millisecond', async () => {
      const store = await open();
      for (let i = 0; i < KEYS; i += 1) {
        const counter = `counter${i}`;
        const probe = `probe${i}`;
        // The probe is written after the counter, so once it is gone the counter's ttl has passed.
        await Promise.all([store.increment(counter, 1, 3), store.set(probe, 'x', 3)]);
        let restarted = false;
        for (;;) {
          const [read, sum] = await Promise.all([store.get(probe), store.increment(counter, 1, 60_000)]);
          restarted ||= sum === 1;
          if (read !== undefined) continue;
          assert.ok(restarted, `counter ${i}: the count went on to ${sum} in the millisecond the counter expired`);
          assert.equal((await store.get(counter))?.value, String(sum), 'the restarted counter lives its new ttl');
          break;
        }
      }
    });
  });

  it('keeps keys apart whatever characters they hold, however long', async () => {
    const store = await open();
    // Senders' addresses are the caller's part of a key: RESP sends each as a counted string.
    const keys = ['a b', 'a:b', 'a\r\nSET x y', 'a\r\n', '{a}b', 'a{b}', 'a*', 'a?', '\u00e9', 'a\u0000b', 'a'.repeat(10_000)];
    await Promise.all(keys.map((key, i) => store.set(key, String(i), 60_000)));
    assert.deepEqual((await store.getMany(keys)).map((entry) => entry?.value), keys.map((_, i) => String(i)));
    assert.equal(await store.increment('a\r\n', 1, 60_000), 4, 'a CR LF key holds a counter of its own');
    assert.equal(await store.compareAndSet('{a}b', '4', 'swapped', 60_000), true);
    assert.equal((await store.get('a{b}'))?.value, '5');
    assert.deepEqual((await store.scan('a*', 10)).map((row) => row.key), ['a*'], 'the scan prefix is taken literally');
    assert.equal((await store.scan('', 100)).length, keys.length);
    assert.equal(await store.deleteIf('a*', '6'), true);
    assert.deepEqual((await store.getMany(['a*', 'a?'])).map((entry) => entry?.value), [undefined, '7'], 'deleteIf takes its key literally');
  });

  it('runs its scripts again after SCRIPT FLUSH emptied the server\'s script cache', async () => {
    const store = await open();
    await store.set('k', 'v', 60_000);
    assert.equal(await store.increment('c', 1, 60_000), 1);
    const admin = new Redis(redis.url);
    try {
      await admin.script('FLUSH');
    } finally {
      await admin.quit();
    }
    // Each script is sent by its SHA1 once loaded: NOSCRIPT must bring its text back.
    assert.equal((await store.get('k'))?.value, 'v');
    assert.equal(await store.increment('c', 1, 60_000), 2);
    assert.equal(await store.compareAndSet('k', 'v', 'w', 60_000), true);
    assert.equal(await store.deleteIf('k', 'w'), true);
  });

  describe('key prefix', () => {
    it('keeps stores with different prefixes apart', async () => {
      const first = await open({ keyPrefix: 'site-a:' });
      const second = await open({ keyPrefix: 'site-b:' });
      await first.set('k', 'a', 60_000);
      await second.set('k', 'b', 60_000);
      assert.equal((await first.get('k'))?.value, 'a');
      assert.equal((await second.get('k'))?.value, 'b');
      assert.deepEqual((await first.scan('', 10)).map((row) => `${row.key}=${row.value}`), ['k=a']);
      assert.equal(await first.deleteIf('k', 'b'), false, 'the other prefix\'s value');
      assert.equal(await first.deleteIf('k', 'a'), true);
      assert.equal((await second.get('k'))?.value, 'b');
      await second.delete('k');
    });

    it('takes glob characters in the store prefix literally', async () => {
      const globby = await open({ keyPrefix: 'p*[ab]?\\:' });
      const lookalike = await open({ keyPrefix: 'pXa!\\:' });
      await lookalike.set('k', 'lookalike', 60_000);
      await globby.set('k', 'globby', 60_000);
      assert.deepEqual((await globby.scan('', 10)).map((row) => row.value), ['globby']);
      assert.deepEqual((await lookalike.scan('', 10)).map((row) => row.value), ['lookalike']);
    });

    it('lists the first entries of a prefix with a great many keys without holding every key', async () => {
      const prefix = freshPrefix();
      const store = await open({ keyPrefix: prefix, commandTimeoutMs: 10_000 });
      const admin = new Redis(redis.url);
      try {
        // 60 000 keys of 1 kB, as a large site's greylist triplets with long senders: ~60 MB of keys.
        const padding = 'x'.repeat(1000);
        for (let start = 0; start < 60_000; start += 5000) {
          const pipeline = admin.pipeline();
          for (let i = start; i < start + 5000; i += 1) pipeline.set(`${prefix}grey:t:${String(i).padStart(5, '0')}${padding}`, '1,2', 'PX', 600_000);
          await pipeline.exec();
        }
        // What is held, not what is allocated: the walk reads every key once (~60 MB of strings
        // that are garbage at once), and heapUsed without a collection counted them whenever V8
        // had not collected yet (64 MB under load). Sampled after a full collection, holding every
        // key shows as it grows through the walk.
        const before = heapAfterGc();
        let peak = before;
        const sampler = setInterval(() => (peak = Math.max(peak, heapAfterGc())), 20);
        const rows = await store.scan('grey:t:', 3);
        clearInterval(sampler);
        assert.deepEqual(rows.map((row) => row.key.slice(7, 12)), ['00000', '00001', '00002']);
        // Holding every key under the prefix took ~70 MB here; the first few cost next to nothing.
        assert.ok(peak - before < 30e6, `the heap grew by ${((peak - before) / 1e6).toFixed(1)} MB while listing 3 entries`);
      } finally {
        const keys = await admin.keys(`${prefix}*`);
        for (let start = 0; start < keys.length; start += 5000) await admin.del(...keys.slice(start, start + 5000));
        admin.disconnect();
      }
    });

    it('makes up for keys that expired between the walk and the read with the next ones', async () => {
      const prefix = freshPrefix();
      const store = await open({ keyPrefix: prefix });
      const admin = new Redis(redis.url);
      try {
        for (const key of ['a', 'b', 'c', 'd', 'e']) await store.set(key, key, 60_000);
        // The first walk's keys a and b go before they are read, as keys expiring then would.
        const client = (store as unknown as { client: Redis }).client;
        const scan = client.scan.bind(client) as (...args: unknown[]) => Promise<[string, string[]]>;
        let walks = 0;
        (client as unknown as { scan: unknown }).scan = async (...args: unknown[]) => {
          const reply = await scan(...args);
          if (reply[0] === '0' && (walks += 1) === 1) await admin.del(`${prefix}a`, `${prefix}b`);
          return reply;
        };
        assert.deepEqual((await store.scan('', 3)).map((row) => row.key), ['c', 'd', 'e']);
      } finally {
        admin.disconnect();
      }
    });

    it('reads more keys than one script call takes, and pages of full size but the last', async () => {
      const store = await open();
      // Past SCAN_BATCH (500) keys per script call and SCAN_COUNT (1000) keys per SCAN call.
      const keys = Array.from({ length: 1501 }, (_, i) => `many:${String(i).padStart(4, '0')}`);
      await Promise.all(keys.map((key) => store.set(key, key, 60_000)));
      assert.deepEqual((await store.getMany(keys)).map((entry) => entry?.value), keys);
      const pages: string[][] = [];
      for await (const page of store.scanPages('many:', 400)) pages.push(page.map((row) => row.key));
      assert.deepEqual(pages.map((page) => page.length), [400, 400, 400, 301]);
      assert.deepEqual(pages.flat().sort(), keys);
    });

    it('writes under the default prefix callout:', async () => {
      const store = await RedisStore.open(redis.url);
      const raw = await open({ keyPrefix: '' });
      try {
        await store.set('default-prefix-probe', 'v', 60_000);
        assert.equal((await raw.get('callout:default-prefix-probe'))?.value, 'v');
      } finally {
        await store.delete('default-prefix-probe');
        await store.close();
      }
    });
  });

  describe('failures', () => {
    it('refuses a URL that is not redis://, rediss:// or a socket path, and bad options', async () => {
      await assert.rejects(RedisStore.open('http://127.0.0.1:6379'), ConfigError);
      await assert.rejects(RedisStore.open('127.0.0.1:6379'), ConfigError);
      await assert.rejects(RedisStore.open(`redis://:s3cret%zz@127.0.0.1:${redis.port}/0`), (err: unknown) => {
        assert.ok(err instanceof ConfigError, String(err));
        assert.match(err.message, /unusable URL redis:\/\/:\*\*\*@127\.0\.0\.1:\d+\/0: a % in the user name or password/);
        return true;
      });
      await assert.rejects(RedisStore.open(redis.url, { commandTimeoutMs: 0 }), ConfigError);
      await assert.rejects(RedisStore.open(redis.url, { connectTimeoutMs: 1.5 }), ConfigError);
    });

    it('refuses URL parameters that would override what the store sets itself', async () => {
      // ioredis lets the URL's query win over the options given with it, as strings.
      for (const query of ['enableOfflineQueue=true', 'commandTimeout=60000', 'maxRetriesPerRequest=20']) {
        const outcome = await openOutcome(`${redis.url}?${query}`);
        assert.ok(outcome instanceof ConfigError, `${query}: ${String(outcome)}`);
        assert.match(outcome.message, /set by the store/);
        // ioredis reads a socket path's parameters as options just the same.
        const bySocket = await openOutcome(`${redis.socketPath}?${query}`);
        assert.ok(bySocket instanceof ConfigError, `socket ${query}: ${String(bySocket)}`);
        assert.match(bySocket.message, /set by the store/);
      }
      assert.equal(await openOutcome(`${redis.url}?family=4`), 'opened');
      assert.equal(await openOutcome(`${redis.socketPath}?db=2`), 'opened');
    });

    it('refuses URL parameters other than username, password, db, family and tls', async () => {
      // Each an ioredis option: expiresAt became a string; scan found nothing; every command failed.
      for (const query of ['stringNumbers=true', 'keyPrefix=x:', 'monitor=true']) {
        for (const url of [`${redis.url}?${query}`, `${redis.socketPath}?${query}`]) {
          const outcome = await openOutcome(url);
          assert.ok(outcome instanceof ConfigError, `${url}: ${String(outcome)}`);
          assert.match(outcome.message, /is not one of username, password, db, family, tls/);
        }
      }
      assert.equal(await openOutcome(`redis://127.0.0.1:${redis.port}?db=3&family=4`), 'opened');
    });

    it('takes rediss:// in any letter case as TLS, never sending a password in clear', async () => {
      // The test server speaks no TLS: a TLS client cannot open there, a plaintext one would.
      for (const scheme of ['REDISS', 'Rediss']) {
        const outcome = await openOutcome(`${scheme}://:s3cret@127.0.0.1:${redis.port}/0`, { connectTimeoutMs: 1000 });
        assert.ok(outcome instanceof StoreError, `${scheme}: ${String(outcome)}`);
      }
      assert.equal(await openOutcome(`REDIS://127.0.0.1:${redis.port}/0`), 'opened');
    });

    it('refuses a database that is not a number, or that Redis refuses, instead of using database 0', async () => {
      const base = `redis://127.0.0.1:${redis.port}`;
      // ioredis reads these as databases 0, 1 and 0.
      for (const url of [`${base}/abc`, `${base}/1x`, `${base}/0?db=x`, `${redis.socketPath}?db=-1`]) {
        const outcome = await openOutcome(url);
        assert.ok(outcome instanceof ConfigError, `${url}: ${String(outcome)}`);
        assert.match(outcome.message, /must be a (database )?number/);
      }
      // The test server has databases 0-15; ioredis would go on in database 0 after the refused SELECT.
      const outcome = await openOutcome(`${base}/16`);
      assert.ok(outcome instanceof ConfigError, String(outcome));
      assert.match(outcome.message, /Redis refused database 16 of the URL: ERR DB index is out of range/);
      const prefix = freshPrefix();
      const store = await RedisStore.open(`${base}/16`, { keyPrefix: prefix, waitForConnection: false });
      try {
        // Until the first connection is made the store only knows that it has none.
        assert.ok(await until(() => store.set('k', 'v', 60_000).then(() => true, (err: unknown) => /refused database/.test(String(err)))), 'await until(() => store.set(\'k\', \'v\', 60_000).then(() => true, (err: unknown) => /refused databas...');
        await assert.rejects(store.set('k', 'v', 60_000), /Redis is unreachable \(Redis refused database 16 of the URL/);
        assert.equal(store.healthy, false);
      } finally {
        await store.close();
      }
      const raw = await open({ keyPrefix: '' });
      assert.equal(await raw.get(`${prefix}k`), undefined, 'written to database 0');
    });

    it('logs in with an ACL user and password, and says why Redis refused a wrong one, never showing it', async () => {
      const admin = new Redis(redis.url);
      try {
        await admin.call('ACL', 'SETUSER', 'callout-test', 'on', '>right:@pw', '~*', '+@all');
      } finally {
        await admin.quit();
      }
      const store = await open({}, `redis://callout-test:right%3A%40pw@127.0.0.1:${redis.port}/2`);
      assert.equal(store.url, `redis://callout-test:***@127.0.0.1:${redis.port}/2`);
      await store.set('k', 'v', 60_000);
      assert.equal((await store.get('k'))?.value, 'v');
      const outcome = await openOutcome(`redis://callout-test:s3cret@127.0.0.1:${redis.port}/2`);
      assert.ok(outcome instanceof StoreError, String(outcome));
      // ioredis itself says only "Connection is closed.".
      assert.match(outcome.message, /open failed: .*WRONGPASS/);
      assert.doesNotMatch(outcome.message, /s3cret/);
    });

    it('says that the URL\'s password was refused, or is missing, at open and in the reason a daemon logs', async () => {
      const server = await startRedis();
      try {
        const admin = new Redis(server.url);
        try {
          await admin.config('SET', 'requirepass', 'right-pw');
        } finally {
          admin.disconnect();
        }
        const wrong = `redis://:wrong-pw@127.0.0.1:${server.port}/0`;
        const cases = [
          { url: wrong, says: /Redis refused the user name and password of the URL: WRONGPASS/ },
          { url: server.url, says: /Redis asks for a password and the URL gives none: NOAUTH/ },
        ];
        for (const { url, says } of cases) {
          const outcome = await openOutcome(url);
          assert.ok(outcome instanceof StoreError, String(outcome));
          assert.match(outcome.message, new RegExp(`open failed: ${says.source}`), 'the driver\'s "Connection is closed." named nothing');
          assert.doesNotMatch(outcome.message, /wrong-pw|Connection is closed/);
          // A daemon starts without waiting, and logs the reason of its 'down' event.
          const store = await RedisStore.open(url, { waitForConnection: false });
          try {
            const [reason] = (await once(store, 'down')) as [string];
            assert.match(reason, says, `${url}: the reason a daemon logs`);
            await assert.rejects(store.get('k'), (err: unknown) => err instanceof StoreError && says.test(err.message) && !err.message.includes('wrong-pw'));
          } finally {
            await store.close();
          }
        }
      } finally {
        await server.stop();
      }
    });

    it('rejects open promptly when nothing listens, naming the URL without its password', async () => {
      const down = await startRedis();
      const url = `redis://:s3cret@127.0.0.1:${down.port}/0`;
      await down.stop();
      const started = Date.now();
      await assert.rejects(RedisStore.open(url, { connectTimeoutMs: 500 }), (err: unknown) => {
        assert.ok(err instanceof StoreError, 'err instanceof StoreError');
        assert.match(err.message, new RegExp(`redis://:\\*\\*\\*@127\\.0\\.0\\.1:${down.port}/0: open failed`));
        assert.doesNotMatch(err.message, /s3cret/);
        return true;
      });
      assert.ok(Date.now() - started < 5000, 'Date.now() - started < 5000');
    });

    it('fails promptly while Redis is down and recovers when it is back, without reopening', async () => {
      const server = await startRedis();
      try {
        const store = await RedisStore.open(server.url, { keyPrefix: freshPrefix() });
        try {
          await store.set('k', 'before', 60_000);
          const down = once(store, 'down');
          server.kill();

          const started = Date.now();
          const outcome = await store.get('k').then(
            () => 'answered',
            (err: unknown) => err,
          );
          assert.ok(outcome instanceof StoreError, `expected a StoreError, got ${String(outcome)}`);
          assert.match(outcome.message, new RegExp(`^redis store redis://127\\.0\\.0\\.1:${server.port}/0: get failed`));
          await down;
          assert.equal(store.healthy, false);
          for (const attempt of [
            () => store.set('k', 'v', 1000),
            () => store.increment('c', 1, 1000),
            () => store.compareAndSet('k', 'before', 'v', 1000),
            () => store.deleteIf('k', 'before'),
            () => store.scan('', 10),
          ]) {
            await assert.rejects(attempt(), StoreError);
          }
          // Generous for a loaded machine; what matters is failing in about a second, not hanging.
          assert.ok(Date.now() - started < 3000, `took ${Date.now() - started} ms`);

          const up = once(store, 'up');
          await server.restart();
          await up;
          assert.equal(store.healthy, true);
          assert.equal(await store.get('k'), undefined, 'the restarted server kept nothing');
          assert.equal(await store.increment('c', 2, 60_000), 2);
          assert.equal(await store.compareAndSet('k', undefined, 'after', 60_000), true);
          assert.equal(await store.compareAndSet('k', 'after', 'again', 60_000), true);
          assert.equal((await store.get('k'))?.value, 'again');
        } finally {
          await store.close();
        }
      } finally {
        await server.stop();
      }
    });

    it('times out commands to a server that stays silent, drops that connection, and connects again once it answers', async () => {
      const server = await startRedis();
      try {
        const store = await RedisStore.open(server.url, { keyPrefix: freshPrefix(), commandTimeoutMs: 200 });
        try {
          await store.set('k', 'v', 60_000);
          // A hung host, or packets dropped on the way: the connection stays open, nothing answers.
          server.pause();
          await assert.rejects(store.get('k'), (err: unknown) => {
            assert.ok(err instanceof StoreError, 'err instanceof StoreError');
            assert.match(err.message, /get failed: .*timed out/i);
            return true;
          });
          // Kept, every later command would wait out its deadline there and stay queued, with its
          // bytes, for a reply that never comes; and a failover address would never be followed.
          assert.ok(await until(() => !store.healthy, 5000), 'the silent connection was kept');
          const started = Date.now();
          await assert.rejects(store.set('k', 'w', 60_000), /Redis is unreachable/);
          assert.ok(Date.now() - started < 200, 'a command waited on the dropped connection');
          server.resume();
          assert.ok(await until(() => store.healthy, 10_000), 'no new connection once the server answered');
          assert.equal((await store.get('k'))?.value, 'v');
        } finally {
          await store.close();
        }
      } finally {
        server.resume();
        await server.stop();
      }
    });

    it('says Redis is unreachable or silent, in its own words, to commands sent as the connection drops', async () => {
      for (const outage of ['killed', 'hung'] as const) {
        const server = await startRedis();
        try {
          const store = await RedisStore.open(server.url, { keyPrefix: freshPrefix(), commandTimeoutMs: 200 });
          try {
            await store.set('k', 'v', 60_000);
            const failures = new Set<string>();
            let sent = 0;
            const down = once(store, 'down');
            if (outage === 'killed') server.kill();
            else server.pause();
            // A command every turn of the event loop: the driver notices the socket gone a turn
            // before it reports the connection closed, and a command sent in that turn must say
            // so as the others do.
            await new Promise<void>((resolve) => {
              let turnsAfterDown = 0;
              let isDown = false;
              void down.then(() => (isDown = true));
              const send = (): void => {
                sent += 1;
                store.get('k').catch((err: unknown) => failures.add(err instanceof Error ? err.message : String(err)));
                if (isDown) turnsAfterDown += 1;
                if (turnsAfterDown > 20) resolve();
                else setImmediate(send);
              };
              send();
            });
            assert.ok(await until(() => failures.size > 0 && store.healthy === false, 5000), `${outage}: no command failed after ${sent} sent`);
            await new Promise((resolve) => setImmediate(resolve));
            const expected = outage === 'killed' ? /get failed: Redis is unreachable \(/ : /get failed: Redis (is unreachable \(|did not answer within 200 ms)/;
            for (const message of failures) {
              assert.match(message, expected, `${outage}: a failure named the driver's options, not the outage`);
            }
            if (outage === 'hung') {
              assert.ok([...failures].some((message) => message.includes('did not answer within 200 ms')), `${outage}: no failure named the wait: ${[...failures].join('; ')}`);
            }
          } finally {
            server.resume();
            await store.close();
          }
        } finally {
          server.resume();
          await server.stop();
        }
      }
    });

    it('connects again when a failover has left it on a read-only replica, and reaches the new primary', async () => {
      const [oldPrimary, newPrimary] = [await startRedis(), await startRedis()];
      let target = oldPrimary.port;
      const address = await relay(() => target);
      const admin = new Redis(oldPrimary.url);
      const prefix = freshPrefix();
      const store = await RedisStore.open(`redis://127.0.0.1:${address.port}/0`, { keyPrefix: prefix });
      try {
        await store.set('k', 'before', 60_000);
        // The failover: the old primary now follows the new one, and the address leads there.
        await admin.replicaof('127.0.0.1', String(newPrimary.port));
        target = newPrimary.port;
        // An outage (the daemon's 'store available' line ends it), not a fault of the one write.
        await assert.rejects(store.set('k', 'during', 60_000), (err: unknown) => {
          assert.ok(err instanceof StoreError && /READONLY/.test(err.message), String(err));
          assert.equal(err.outage, true, `READONLY taken for no outage: ${err.message}`);
          return true;
        });
        // Kept, the connection to the old primary would refuse every write for as long as it lasts.
        const written = await until(() => store.set('k', 'after', 60_000).then(() => true, () => false), 5000, 50);
        assert.ok(written, 'writes still refused by the old primary');
        const direct = new Redis(newPrimary.url);
        try {
          assert.equal(await direct.get(`${prefix}k`), 'after');
        } finally {
          direct.disconnect();
        }
      } finally {
        await store.close();
        admin.disconnect();
        await address.close();
        await oldPrimary.stop();
        await newPrimary.stop();
      }
    });

    it('takes a Redis that refuses every write until mended for an outage, which ends at the first write after', async () => {
      const server = await startRedis();
      const admin = new Redis(server.url);
      const killer = new Redis(server.url);
      const store = await RedisStore.open(server.url, { keyPrefix: freshPrefix() });
      // Redis saves its snapshot as a temporary file renamed to dump.rdb: a directory there fails every save.
      const snapshot = join(dirname(server.socketPath), 'dump.rdb');
      const saved = async (status: 'ok' | 'err'): Promise<boolean> => {
        const info = await admin.info('persistence');
        return info.includes('rdb_bgsave_in_progress:0') && info.includes(`rdb_last_bgsave_status:${status}`);
      };
      let script: Promise<unknown> = Promise.resolve();
      const cases = [
        {
          reply: 'OOM',
          refuse: async () => {
            await admin.config('SET', 'maxmemory-policy', 'noeviction');
            await admin.config('SET', 'maxmemory', '1');
          },
          mend: () => admin.config('SET', 'maxmemory', '0'),
        },
        {
          reply: 'NOREPLICAS',
          refuse: () => admin.config('SET', 'min-replicas-to-write', '1'),
          mend: () => admin.config('SET', 'min-replicas-to-write', '0'),
        },
        {
          reply: 'MISCONF',
          refuse: async () => {
            await admin.config('SET', 'save', '3600 1');
            mkdirSync(snapshot);
            await admin.bgsave();
            assert.ok(await until(() => saved('err')), 'the snapshot was saved all the same');
          },
          mend: async () => {
            rmdirSync(snapshot);
            await admin.bgsave();
            assert.ok(await until(() => saved('ok')), 'the snapshot still failed to save');
          },
        },
        {
          reply: 'BUSY',
          refuse: async () => {
            await admin.config('SET', 'busy-reply-threshold', '20');
            // Read-only, so that SCRIPT KILL may end it.
            script = admin.eval('while true do end', 0).catch(() => undefined);
            assert.ok(await until(async () => /BUSY/.test(String(await killer.ping().catch((err: unknown) => err)))), 'the script never made Redis busy');
          },
          mend: async () => {
            await killer.script('KILL');
            await script;
          },
        },
      ];
      try {
        for (const { reply, refuse, mend } of cases) {
          await refuse();
          // A SET, and a script's write (increment), each refused.
          for (const [operation, write] of [['set', () => store.set('k', reply, 60_000)], ['increment', () => store.increment('n', 1, 60_000)]] as const) {
            await assert.rejects(write(), (err: unknown) => {
              assert.ok(err instanceof StoreError, `${reply} ${operation}: ${String(err)}`);
              assert.ok(err.message.includes(`${operation} failed: ${reply} `), `${reply} ${operation}: ${err.message}`);
              assert.equal(err.outage, true, `${reply} ${operation} taken for no outage: ${err.message}`);
              return true;
            });
          }
          await mend();
          await store.set('k', reply, 60_000);
          assert.equal((await store.get('k'))?.value, reply, `${reply}: not written once mended`);
        }
        // A fault of one key, as against those: no outage, and nothing to end.
        await assert.rejects(store.increment('k', 1, 60_000), (err: unknown) => {
          assert.ok(err instanceof StoreError, String(err));
          assert.equal(err.outage, false, `a value that is no counter taken for an outage: ${err.message}`);
          return true;
        });
      } finally {
        await store.close();
        admin.disconnect();
        killer.disconnect();
        await server.stop();
      }
    });

    it('fails an increment whose reply was lost with the connection, and never applies it twice', async () => {
      const address = await relay(() => redis.port);
      const prefix = freshPrefix();
      // A deadline far beyond the test: the lost connection, not the timeout, ends the command.
      const store = await RedisStore.open(`redis://127.0.0.1:${address.port}/0`, { keyPrefix: prefix, commandTimeoutMs: 30_000 });
      const admin = new Redis(redis.url);
      try {
        address.holdReplies();
        const outcome = store.increment('rate:x', 1, 60_000).then((sum) => `answered ${sum}`, (err: unknown) => err);
        assert.ok(await until(async () => (await admin.get(`${prefix}rate:x`)) === '1', 5000), 'the increment never reached Redis');
        address.cut();
        const err = await outcome;
        assert.ok(err instanceof StoreError, `expected a StoreError, got ${String(err)}`);
        assert.match(err.message, /increment failed/);
        // Sent again on the new connection, the increment would be applied a second time.
        assert.ok(await until(() => store.healthy, 5000), 'no new connection');
        assert.equal(await store.increment('probe', 1, 60_000), 1);
        assert.equal(await admin.get(`${prefix}rate:x`), '1', 'the increment was applied twice');
      } finally {
        await store.close();
        admin.disconnect();
        await address.close();
      }
    });

    it('gives up opening on a listener that takes the connection and never answers', async () => {
      // Something else on the port, or a hung host: the connection is taken, no reply ever comes.
      const accepted = new Set<net.Socket>();
      const silent = net.createServer((socket) => {
        accepted.add(socket);
        socket.on('error', () => socket.destroy());
      });
      await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
      const { port } = silent.address() as net.AddressInfo;
      try {
        const started = performance.now();
        const outcome = await openOutcome(`redis://127.0.0.1:${port}/0`);
        const took = performance.now() - started;
        assert.ok(outcome instanceof StoreError, String(outcome));
        assert.match(outcome.message, /open failed/);
        assert.ok(accepted.size > 0, 'the store never connected');
        // Generous for a loaded machine; a handshake left waiting holds the daemon's start.
        assert.ok(took < 6000, `took ${took.toFixed(0)} ms`);
      } finally {
        for (const socket of accepted) socket.destroy();
        await new Promise((resolve) => silent.close(resolve));
      }
    });

    it('gives up a connection the server never takes within the default connect timeout of 2 s', async () => {
      const listener = await unacceptingListener();
      const url = `redis://127.0.0.1:${listener.port}/0`;
      try {
        // Generous for a loaded machine, and well below ioredis's own default of 10 s.
        const started = performance.now();
        const outcome = await openOutcome(url);
        const took = performance.now() - started;
        assert.ok(outcome instanceof StoreError, String(outcome));
        assert.match(outcome.message, /open failed/);
        assert.ok(took >= 1990 && took < 6000, `open took ${took.toFixed(0)} ms`);
        // Connections made in the background (and reconnections) have only the driver's timeout.
        const later = performance.now();
        const store = await RedisStore.open(url, { keyPrefix: freshPrefix(), waitForConnection: false });
        try {
          const [reason] = await once(store, 'down');
          const tookLater = performance.now() - later;
          assert.match(String(reason), /ETIMEDOUT/);
          assert.ok(tookLater < 6000, `the background connection gave up after ${tookLater.toFixed(0)} ms`);
        } finally {
          await store.close();
        }
      } finally {
        await listener.close();
      }
    });

    it('closes promptly while Redis is down', async () => {
      const server = await startRedis();
      const store = await RedisStore.open(server.url, { keyPrefix: freshPrefix() });
      const down = once(store, 'down');
      server.kill();
      await down;
      await server.stop();
      await store.close();
      await assert.rejects(store.get('k'), /store is closed/);
    });

    it('reports an outage once, also one that was already there when the store was opened', async () => {
      const server = await startRedis();
      server.kill();
      // SIGKILL takes effect when the kernel gets to it: a store that connected before would see
      // the loss of a working connection (ECONNRESET), not Redis down at start.
      const refused = (): Promise<boolean> =>
        new Promise((resolve) => {
          const socket = net.connect(server.port, '127.0.0.1');
          socket.once('connect', () => (socket.destroy(), resolve(false)));
          socket.once('error', () => resolve(true));
        });
      assert.ok(await until(refused, 5000), 'redis-server still accepts connections after SIGKILL');
      const events: string[] = [];
      const store = await RedisStore.open(server.url, { keyPrefix: freshPrefix(), waitForConnection: false });
      store.on('down', (reason) => events.push(`down ${reason}`));
      store.on('up', () => events.push('up'));
      try {
        // Several reconnection attempts (100, 200, 300 ms apart) fail meanwhile.
        assert.ok(await until(() => events.length > 0, 5000), 'no down event for Redis down at start');
        await new Promise((resolve) => setTimeout(resolve, 800));
        assert.equal(events.length, 1, events.join('\n'));
        assert.match(events[0]!, /^down .*ECONNREFUSED/);
        await server.restart();
        assert.ok(await until(() => store.healthy, 5000), 'await until(() => store.healthy, 5000)');
        server.kill();
        assert.ok(await until(() => events.length === 3, 5000), events.join('\n'));
        await new Promise((resolve) => setTimeout(resolve, 800));
        assert.deepEqual(events.slice(1).map((e) => e.split(' ')[0]), ['up', 'down'], events.join('\n'));
        // The loss of a working connection, not the refusal that ended before it.
        assert.doesNotMatch(events[2]!, /ECONNREFUSED/);
        assert.equal(events.length, 3, events.join('\n'));
      } finally {
        await store.close();
        await server.stop();
      }
    });

    it('fails a command to a silent server within the default command timeout of 1 s', async () => {
      const server = await startRedis();
      try {
        const store = await RedisStore.open(server.url, { keyPrefix: freshPrefix() });
        try {
          server.pause();
          const started = Date.now();
          await assert.rejects(store.get('k'), /get failed: .*timed out/i);
          // Not before 1 s (a timer never fires early); generous above for a loaded machine: a
          // deadline of several seconds holds mail that long.
          const took = Date.now() - started;
          assert.ok(took >= 990 && took < 2500, `took ${took} ms`);
        } finally {
          server.resume();
          await store.close();
        }
      } finally {
        await server.stop();
      }
    });

    it('finishes the commands already sent when closed, and reports no outage for it', async () => {
      const store = await RedisStore.open(redis.url, { keyPrefix: freshPrefix() });
      const events: string[] = [];
      store.on('down', (reason) => events.push(`down ${reason}`));
      const pending = store.set('k', 'written', 60_000);
      await store.close();
      await pending;
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.deepEqual(events, [], 'close() is no outage');
    });

    it('reports a key another program wrote without expiry as never expiring, not as expired', async () => {
      const prefix = freshPrefix();
      const store = await open({ keyPrefix: prefix });
      const other = new Redis(redis.url);
      try {
        await other.set(`${prefix}forever`, 'v');
      } finally {
        await other.quit();
      }
      assert.deepEqual(await store.get('forever'), { value: 'v', expiresAt: Number.MAX_SAFE_INTEGER });
      assert.deepEqual(await store.scan('', 10), [{ key: 'forever', value: 'v', expiresAt: Number.MAX_SAFE_INTEGER }]);
    });

    it('rejects with a StoreError naming the key when a key holds something other than a string', async () => {
      const prefix = freshPrefix();
      const store = await open({ keyPrefix: prefix });
      // No Store method writes a non-string, so write one the way another program would.
      const other = new Redis(redis.url);
      try {
        await other.lpush(`${prefix}list`, 'x');
        await other.set(`${prefix}a`, 'a string');
      } finally {
        await other.quit();
      }
      const namesTheKey = (operation: string) => (err: unknown): boolean => {
        assert.ok(err instanceof StoreError, String(err));
        assert.equal(err.message, `redis store ${redis.url}: ${operation} failed: Redis key "${prefix}list" holds a list, not a string: another program wrote it under the key prefix`);
        return true;
      };
      await assert.rejects(store.get('list'), namesTheKey('get'));
      await assert.rejects(store.getMany(['a', 'list']), namesTheKey('getMany'));
      await assert.rejects(store.scan('', 10), namesTheKey('scan'));
      await assert.rejects(store.increment('list', 1, 1000), namesTheKey('increment'));
      await assert.rejects(store.compareAndSet('list', 'x', 'y', 1000), namesTheKey('compareAndSet'));
      await assert.rejects(store.deleteIf('list', 'x'), namesTheKey('deleteIf'));
    });
  });
});
