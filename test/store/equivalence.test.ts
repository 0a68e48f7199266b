// Random operation sequences run against the memory and SQLite backends side by side: any
// difference in answers (expiry edges, counters, scan order of arbitrary unicode keys) fails.
// A real redis-server then runs the same kinds of sequences beside both, with ttls no sequence
// outlives: Redis expires keys by its own clock, which the injected clock cannot move (and
// libfaketime cannot drive redis-server), so its expiry edges are left to the contract's
// real-time cases (test/store/contract.ts) and here only the rest must agree.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ManualClock } from '../support/manual-time.js';
import { MemoryStore } from '../../src/store/memory.js';
import { RedisStore } from '../../src/store/redis.js';
import { SqliteStore } from '../../src/store/sqlite.js';
import { ASK_LATER, type Store } from '../../src/store/types.js';
import { startRedis, type RedisInstance } from '../support/redis.js';

const key = fc.oneof(
  fc.constantFrom('a', 'ab', 'a%', 'a_', 'b', '\u00e9', '\uffff', '\u{1F600}', 'a\u{10FFFF}'),
  fc.string({ unit: 'grapheme', maxLength: 3 }),
);
// Few distinct values, so compareAndSet's and deleteIf's expectation often matches what is stored.
const value = fc.oneof(fc.constantFrom('', 'v', '1'), fc.string({ maxLength: 3 }), fc.integer().map(String));
/** Every kind of step, with ttls from `ttl`; clock advances only when `advance` is given. */
function operations(ttl: fc.Arbitrary<number>, advance?: fc.Arbitrary<number>) {
  const steps = [
  fc.record({ op: fc.constant('get' as const), key }),
  fc.record({ op: fc.constant('getMany' as const), keys: fc.array(key, { maxLength: 4 }) }),
  fc.record({ op: fc.constant('peek' as const), key }),
  fc.record({ op: fc.constant('set' as const), key, value, ttl }),
  fc.record({ op: fc.constant('setIfAbsent' as const), key, value, ttl }),
  fc.record({
    op: fc.constant('compareAndSet' as const),
    key,
    expected: fc.option(value, { nil: undefined }),
    value,
    ttl,
  }),
  fc.record({ op: fc.constant('increment' as const), key, by: fc.integer({ min: -5, max: 5 }), ttl }),
  fc.record({ op: fc.constant('delete' as const), key }),
  fc.record({ op: fc.constant('deleteIf' as const), key, expected: value }),
  fc.record({ op: fc.constant('scan' as const), prefix: fc.oneof(key, fc.constant('')), limit: fc.nat(6) }),
  fc.record({ op: fc.constant('purgeExpired' as const) }),
  ];
  return advance === undefined ? fc.oneof(...steps) : fc.oneof(...steps, fc.record({ op: fc.constant('advance' as const), ms: advance }));
}
// ttls and advances of a few ms, so sequences often meet an entry's last live millisecond.
const operation = operations(fc.integer({ min: 1, max: 50 }), fc.integer({ min: 0, max: 30 }));
type Operation = typeof operation extends fc.Arbitrary<infer T> ? T : never;

async function apply(store: Store, clock: ManualClock, step: Operation): Promise<unknown> {
  try {
    switch (step.op) {
      case 'get':
        return await store.get(step.key);
      case 'getMany':
        return await store.getMany(step.keys);
      case 'peek': {
        // ASK_LATER defers to get(); any other answer must be what get() would give.
        const now = store.peek(step.key);
        return now === ASK_LATER ? await store.get(step.key) : now && { ...now };
      }
      case 'set':
        return await store.set(step.key, step.value, step.ttl);
      case 'setIfAbsent':
        return await store.setIfAbsent(step.key, step.value, step.ttl);
      case 'compareAndSet':
        return await store.compareAndSet(step.key, step.expected, step.value, step.ttl);
      case 'increment':
        return await store.increment(step.key, step.by, step.ttl);
      case 'delete':
        return await store.delete(step.key);
      case 'deleteIf':
        return await store.deleteIf(step.key, step.expected);
      case 'scan':
        return await store.scan(step.prefix, step.limit);
      case 'purgeExpired':
        // The memory store drops expired entries as it reads them, so counts differ by design;
        // what must agree is what remains.
        await store.purgeExpired();
        return await store.scan('', 1000);
      case 'advance':
        clock.advance(step.ms);
        return undefined;
    }
  } catch (err) {
    return { rejected: (err as Error).name };
  }
}

describe('memory and SQLite stores answer alike', () => {
  it('for random operation sequences', async () => {
    await fc.assert(
      // size 'max': fast-check's default size keeps most sequences to a handful of steps.
      fc.asyncProperty(fc.array(operation, { maxLength: 40, size: 'max' }), async (steps) => {
        const memoryClock = new ManualClock();
        const sqliteClock = new ManualClock();
        const memory = new MemoryStore({ clock: memoryClock });
        const sqlite = await SqliteStore.open(':memory:', { clock: sqliteClock });
        try {
          for (const [index, step] of steps.entries()) {
            const want = await apply(memory, memoryClock, step);
            const got = await apply(sqlite, sqliteClock, step);
            assert.deepEqual(got, want, `step ${index}: ${JSON.stringify(step)}`);
          }
        } finally {
          await memory.close();
          await sqlite.close();
        }
      }),
      { numRuns: 150 },
    );
  });
});

/** How far Redis's reported expiry may trail the others': the real ms its round trips took. */
const REDIS_SLACK_MS = 2000;

/**
 * got with each expiresAt replaced by want's where it trails it by less than REDIS_SLACK_MS
 * (a Redis expiry is the PTTL left, measured on the server's running clock); anything else is
 * left for deepEqual to report.
 */
function withinSlack(got: unknown, want: unknown): unknown {
  if (Array.isArray(got) && Array.isArray(want)) return got.map((item, index) => withinSlack(item, want[index]));
  if (typeof got !== 'object' || got === null || typeof want !== 'object' || want === null) return got;
  const gotAt = (got as { expiresAt?: unknown }).expiresAt;
  const wantAt = (want as { expiresAt?: unknown }).expiresAt;
  if (typeof gotAt !== 'number' || typeof wantAt !== 'number') return got;
  return gotAt <= wantAt && gotAt > wantAt - REDIS_SLACK_MS ? { ...got, expiresAt: wantAt } : got;
}

describe('memory, SQLite and Redis stores answer alike while nothing expires', () => {
  let redis: RedisInstance;
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await redis.stop();
  });

  it('for random operation sequences', async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(operations(fc.integer({ min: 3_600_000, max: 3_600_050 })), { maxLength: 40, size: 'max' }), async (steps) => {
        run += 1;
        // No step moves the clocks: an hour's ttl outlives every sequence on every backend.
        const clock = new ManualClock();
        const memory = new MemoryStore({ clock });
        const sqlite = await SqliteStore.open(':memory:', { clock });
        const shared = await RedisStore.open(redis.url, { clock, keyPrefix: `equivalence${run}:` });
        try {
          for (const [index, step] of steps.entries()) {
            const want = await apply(memory, clock, step);
            const where = `step ${index}: ${JSON.stringify(step)}`;
            assert.deepEqual(await apply(sqlite, clock, step), want, `SQLite, ${where}`);
            assert.deepEqual(withinSlack(await apply(shared, clock, step), want), want, `Redis, ${where}`);
          }
        } finally {
          await memory.close();
          await sqlite.close();
          // Each scan walks the whole database: runs must not pile up keys an hour long.
          for (const { key } of await shared.scan('', 1000)) await shared.delete(key);
          await shared.close();
        }
      }),
      { numRuns: 100 },
    );
  });
});
