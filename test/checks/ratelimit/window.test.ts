// Sliding-window counts with ManualClock, and exact counting on a real Redis under concurrency.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import fc from 'fast-check';
import { ManualClock } from '../../support/manual-time.js';
import { SlidingWindow } from '../../../src/checks/ratelimit/index.js';
import { MemoryStore, RedisStore, SqliteStore, type Store } from '../../../src/store/index.js';
import { startRedis } from '../../support/redis.js';

const MINUTE = 60_000;

describe('SlidingWindow', () => {
  it('weights the previous window by the part of it still inside the sliding window', async () => {
    const clock = new ManualClock(Date.UTC(2026, 0, 1, 10));
    const window = new SlidingWindow(new MemoryStore({ clock }), clock, 60 * MINUTE, 'w:');
    for (let n = 0; n < 40; n += 1) await window.add('k');
    assert.equal((await window.peek('k')).estimate, 40);
    clock.advance(75 * MINUTE); // a quarter into the next window: 3/4 of the 40 still count
    const sample = await window.add('k');
    assert.deepEqual([sample.previous, sample.current, sample.estimate], [40, 1, 31]);
    clock.advance(60 * MINUTE);
    assert.equal((await window.peek('k')).estimate, 0.75, 'only 3/4 of the single later event');
    assert.equal((await window.peek('other')).estimate, 0);
  });

  it('still counts a window begun at its first millisecond in the last millisecond of the next one, and forgets it after', async () => {
    const start = Date.UTC(2026, 0, 1, 10);
    const clock = new ManualClock(start);
    const window = new SlidingWindow(new MemoryStore({ clock }), clock, 60 * MINUTE, 'w:');
    await window.add('k', 60);
    clock.advance(2 * 60 * MINUTE - 1);
    const last = await window.peek('k');
    assert.deepEqual([last.previous, last.current], [60, 0]);
    assert.ok(Math.abs(last.estimate - 60 / (60 * MINUTE)) < 1e-9, `estimate ${last.estimate}`);
    clock.advance(1);
    assert.deepEqual(await window.peek('k'), { estimate: 0, current: 0, previous: 0, windowStart: start + 2 * 60 * MINUTE });
  });

  it('reads a stored count that is no counter (another program wrote it, or it is damaged) as 0', async () => {
    const clock = new ManualClock(Date.UTC(2026, 0, 1, 10));
    const store = new MemoryStore({ clock });
    const window = new SlidingWindow(store, clock, 60 * MINUTE, 'w:');
    const index = Math.floor(clock.now() / (60 * MINUTE));
    for (const [n, stored] of ['-100000', '1e3', '0x10', 'Infinity', ' 5', '99999999999999999999'].entries()) {
      await store.set(`w:k${n}:${index - 1}`, stored, 2 * 60 * MINUTE);
      await store.set(`w:k${n}:${index}`, stored, 2 * 60 * MINUTE);
      assert.equal((await window.peek(`k${n}`)).estimate, 0, stored);
    }
    await store.set(`w:good:${index}`, '7', 2 * 60 * MINUTE);
    assert.equal((await window.peek('good')).estimate, 7);
  });

  it('counts every event added onto any stored count (a negative one starts again at 0), so none gets past its limit', async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.integer({ min: -1e15, max: 1e6 }).map(String), fc.constantFrom('-100000', '-1', '0', '7', '1e3', '-0')), fc.integer({ min: 1, max: 5 }), async (stored, events) => {
        const clock = new ManualClock(Date.UTC(2026, 0, 1, 10));
        const store = new MemoryStore({ clock });
        const window = new SlidingWindow(store, clock, 60 * MINUTE, 'w:');
        const index = Math.floor(clock.now() / (60 * MINUTE));
        await store.set(`w:k:${index}`, stored, 2 * 60 * MINUTE);
        const before = (await window.peek('k')).estimate;
        let sample = await window.add('k').catch(() => undefined);
        if (sample === undefined) return; // no counter (1e3, -0): refused, as Redis's INCRBY does
        for (let n = 1; n < events; n += 1) sample = await window.add('k');
        assert.equal(sample.estimate, before + events, stored);
      }),
    );
  });

  it('tells when there is room again', async () => {
    const clock = new ManualClock(Date.UTC(2026, 0, 1, 10));
    const window = new SlidingWindow(new MemoryStore({ clock }), clock, 60 * MINUTE, 'w:');
    let sample = await window.add('k', 10);
    assert.equal(window.msUntilRoom(sample, 20), 0);
    // 10 events in this window with a limit of 5: room once the next window has decayed them to 4.
    assert.equal(window.msUntilRoom(sample, 5), 60 * MINUTE + 0.6 * 60 * MINUTE);
    clock.advance(60 * MINUTE);
    sample = await window.add('k', 2);
    // previous 10, current 2, limit 5: room when 10 × (1 − f) + 2 ≤ 4, at f = 0.8.
    assert.equal(window.msUntilRoom(sample, 5), 0.8 * 60 * MINUTE);
    clock.advance(2 * 60 * MINUTE);
    sample = await window.add('k', 4);
    // Nothing left of the previous window and one below the limit: room now, not NaN (4 - 4) / 0.
    assert.equal(window.msUntilRoom(sample, 5), 0);
  });

  it('computes a whole-number estimate exactly, so an event that brings the count exactly to the limit stays within it', async () => {
    const start = Date.UTC(2026, 0, 1, 10);
    const clock = new ManualClock(start);
    const window = new SlidingWindow(new MemoryStore({ clock }), clock, 10_000, 'w:');
    await window.add('k', 30);
    clock.advance(10_000 + 7_000); // 7 s into the next window: 3/10 of the 30 still count
    const sample = await window.add('k');
    // 30 × (1 − 0.7) + 1 in floating point was 10.000000000000002: over a limit of 10.
    assert.equal(sample.estimate, 10);
  });
});

describe('SlidingWindow against an exact log of the events let through', () => {
  it('takes back an event from the window it was added in, after the clock has moved into the next', async () => {
    const clock = new ManualClock(Date.UTC(2026, 0, 1, 10, 59, 59, 999));
    const window = new SlidingWindow(new MemoryStore({ clock }), clock, 60 * MINUTE, 'w:');
    await window.add('k');
    const sample = await window.add('k');
    clock.advance(1);
    await window.remove('k', sample);
    assert.deepEqual([(await window.peek('k')).previous, (await window.peek('k')).current], [1, 0]);
  });

  for (const backend of ['memory', 'SQLite'] as const) {
    it(`takes back nothing from a counter gone meanwhile, so the window does not undercount (${backend})`, async () => {
      const clock = new ManualClock(Date.UTC(2026, 0, 1, 10));
      const store: Store = backend === 'memory' ? new MemoryStore({ clock }) : await SqliteStore.open(':memory:', { clock });
      try {
        await assertNoUndercountAfterLoss(store, clock, (key) => store.delete(key));
      } finally {
        await store.close();
      }
    });
  }

  it('decides as previous × (window − elapsed) / window + current over the log, holds a fixed window to max, and keeps its retry time', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 5 }),
        fc.constantFrom(1000, 7000, 60 * MINUTE),
        fc.array(fc.integer({ min: 0, max: 4000 }), { minLength: 1, maxLength: 60 }),
        async (max, windowMs, gaps) => {
          const clock = new ManualClock(Date.UTC(2026, 0, 1, 10));
          const window = new SlidingWindow(new MemoryStore({ clock }), clock, windowMs, 'p:');
          const passed: number[] = [];
          const within = (from: number, to: number) => passed.filter((t) => t >= from && t < to).length;
          for (const gap of gaps) {
            clock.advance(Math.floor((gap / 4000) * windowMs));
            const now = clock.now();
            const start = Math.floor(now / windowMs) * windowMs;
            const reference = (within(start - windowMs, start) * (windowMs - (now - start))) / windowMs + (within(start, now + 1) + 1);
            const sample = await window.add('k');
            assert.equal(sample.estimate, reference);
            if (sample.estimate <= max) {
              passed.push(now);
              continue;
            }
            // Deferred, as the stage does: taken back, and the retry time it names must fit.
            await window.remove('k', sample);
            const without = { ...sample, current: sample.current - 1, estimate: sample.estimate - 1 };
            const wait = window.msUntilRoom(without, max);
            assert.ok(wait > 0, 'over the limit now, so room only later');
            const retryAt = now + wait;
            const retryStart = Math.floor(retryAt / windowMs) * windowMs;
            const atRetry = (within(retryStart - windowMs, retryStart) * (windowMs - (retryAt - retryStart))) / windowMs + within(retryStart, retryAt + 1) + 1;
            assert.ok(atRetry <= max + 1e-9, `retry in ${wait} ms would be at ${atRetry} of ${max}`);
          }
          for (const t of passed) assert.ok(within(Math.floor(t / windowMs) * windowMs, Math.floor(t / windowMs) * windowMs + windowMs) <= max, 'a fixed window holds at most max');
          // The estimate assumes the previous window's events spread evenly: in the worst case a
          // window-long span across a boundary holds almost twice max, never more.
          for (const t of passed) assert.ok(within(t, t + windowMs) < 2 * max, 'a window-long span holds under twice max');
        },
      ),
      { numRuns: 200 },
    );
  });
});

/**
 * A deferred event's counter is lost (lose: eviction) before its take-back: the take-back must
 * not create it at -1, after which the next event would count as 0 and one too many get through.
 */
async function assertNoUndercountAfterLoss(store: Store, clock: ManualClock, lose: (storeKey: string) => Promise<unknown>): Promise<void> {
  const window = new SlidingWindow(store, clock, 60 * MINUTE, 'w:');
  const refused = await window.add('k');
  await lose(`w:k:${refused.windowStart / (60 * MINUTE)}`);
  await window.remove('k', refused);
  assert.equal((await window.peek('k')).current, 0);
  assert.equal((await window.add('k')).current, 1);
  // A counter still there is taken back as before.
  await window.remove('k', await window.add('k'));
  assert.equal((await window.peek('k')).current, 1);
}

describe('SlidingWindow on Redis', () => {
  let redis: Awaited<ReturnType<typeof startRedis>>;
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await redis.stop();
  });

  it('keeps a counter in Redis for two windows from its first event, without extending it on later ones', async () => {
    const clock = new ManualClock(Date.UTC(2026, 0, 1, 10));
    const store = await RedisStore.open(redis.url, { clock, keyPrefix: 'ttl:' });
    const admin = new Redis(redis.url);
    try {
      const window = new SlidingWindow(store, clock, 60 * MINUTE, 'w:');
      await window.add('key');
      const key = `ttl:w:key:${Math.floor(clock.now() / (60 * MINUTE))}`;
      const first = await admin.pttl(key);
      // The previous window's count is read for the whole of the next window.
      assert.ok(first > 2 * 60 * MINUTE && first <= 2 * 60 * MINUTE + 1000, `PTTL ${first}`);
      await admin.pexpire(key, 5 * MINUTE);
      await window.add('key');
      assert.ok((await admin.pttl(key)) <= 5 * MINUTE, 'a later event leaves the expiry alone');
      assert.equal((await window.peek('key')).current, 2);
    } finally {
      admin.disconnect();
      await store.close();
    }
  });

  it('takes back nothing from a counter Redis evicted meanwhile, so the window does not undercount', async () => {
    const clock = new ManualClock(Date.UTC(2026, 0, 1, 10));
    const store = await RedisStore.open(redis.url, { clock, keyPrefix: 'evicted:' });
    const admin = new Redis(redis.url);
    try {
      await assertNoUndercountAfterLoss(store, clock, (key) => admin.del(`evicted:${key}`));
    } finally {
      admin.disconnect();
      await store.close();
    }
  });

  it('two clients adding concurrently lose no count and see distinct totals', async () => {
    const clock = new ManualClock(Date.UTC(2026, 0, 1, 10));
    const stores = await Promise.all([RedisStore.open(redis.url, { clock }), RedisStore.open(redis.url, { clock })]);
    try {
      const windows = stores.map((store) => new SlidingWindow(store, clock, 60 * MINUTE, 'atomic:'));
      const samples = await Promise.all(Array.from({ length: 400 }, (_, n) => windows[n % 2]!.add('key')));
      assert.deepEqual(
        samples.map((s) => s.current).sort((x, y) => x - y),
        Array.from({ length: 400 }, (_, n) => n + 1),
      );
      assert.equal((await windows[0]!.peek('key')).estimate, 400);
    } finally {
      await Promise.all(stores.map((s) => s.close()));
    }
  });
});
