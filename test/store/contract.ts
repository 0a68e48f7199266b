// The behaviour every Store backend must show, run by each backend's test file against its own
// factory. Time moves through later(ms), which advances the ManualClock handed to the factory.
//
// A backend that judges expiry by its own real clock (Redis: keys expire by the server's PX
// timers) runs with { time: 'real' }: later(ms) then also sleeps ms, so the ManualClock the store
// converts remaining lifetimes with keeps pace with the server. Under real time the cases that
// need an exact millisecond edge run only on the manual clock, a reported expiresAt may be short
// by the real milliseconds the round trips took, and purgeExpired's count is not checked
// (such a backend never holds expired entries to count).
import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { ManualClock } from '../support/manual-time.js';
import { StoreError } from '../../src/core/errors.js';
import { ASK_LATER, type Store, type StoredValue } from '../../src/store/types.js';

export interface StoreContractOptions {
  /** 'manual' (default): expiry follows the ManualClock exactly. 'real': see the header. */
  time?: 'manual' | 'real';
}

/** How far a real-time backend's reported expiry may trail the expected one. */
const REAL_TIME_SLACK_MS = 2000;

export function runStoreContract(
  name: string,
  makeStore: (clock: ManualClock) => Promise<Store>,
  options: StoreContractOptions = {},
): void {
  const realTime = options.time === 'real';
  const manualClockOnly = realTime ? { skip: 'needs an exact millisecond edge, only a manual clock gives one' } : {};

  describe(`Store contract: ${name}`, () => {
    let clock: ManualClock;
    let store: Store;

    async function later(ms: number): Promise<void> {
      clock.advance(ms);
      if (realTime) await sleep(ms);
    }

    /** Asserts what get() answered: the value, and an expiry ttlMs after now. */
    function assertEntry(got: StoredValue | undefined, value: string, ttlMs: number): void {
      assert.ok(got, `expected ${JSON.stringify(value)}, found nothing`);
      assertExpiry(got.expiresAt, clock.now() + ttlMs);
      assert.deepEqual(got, { value, expiresAt: got.expiresAt });
    }

    function assertExpiry(actual: number, expected: number): void {
      if (!realTime) {
        assert.equal(actual, expected);
        return;
      }
      assert.ok(
        actual <= expected && actual > expected - REAL_TIME_SLACK_MS,
        `expiresAt ${actual} should be within ${REAL_TIME_SLACK_MS} ms before ${expected}`,
      );
    }

    /** The pages scanPages gives, each row with its value and expiry. */
    async function rowPagesOf(prefix: string, pageSize: number): Promise<Array<Array<{ key: string } & StoredValue>>> {
      const pages: Array<Array<{ key: string } & StoredValue>> = [];
      for await (const page of store.scanPages(prefix, pageSize)) pages.push(page);
      return pages;
    }

    /** The pages scanPages gives, as their keys. */
    async function pagesOf(prefix: string, pageSize: number): Promise<string[][]> {
      return (await rowPagesOf(prefix, pageSize)).map((page) => page.map((row) => row.key));
    }

    beforeEach(async () => {
      clock = new ManualClock();
      store = await makeStore(clock);
    });
    afterEach(async () => {
      await store.close();
    });

    describe('get / set', () => {
      it('answers undefined for an absent key', async () => {
        assert.equal(await store.get('absent'), undefined);
      });

      it('returns what was set, with its expiry', async () => {
        await store.set('k', 'v', 60_000);
        assertEntry(await store.get('k'), 'v', 60_000);
      });

      it('overwrites value and expiry', async () => {
        await store.set('k', 'first', 60_000);
        await later(10);
        await store.set('k', 'second', 5_000);
        assertEntry(await store.get('k'), 'second', 5_000);
      });

      it('getMany answers for each key, in order, what get() answers', async () => {
        await store.set('a', '1', 60_000);
        await store.set('short', '2', 10);
        await store.set('empty', '', 60_000);
        await later(50);
        const many = await store.getMany(['absent', 'a', 'short', 'empty', 'a']);
        assert.deepEqual(many.map((entry) => entry?.value), [undefined, '1', undefined, '', '1']);
        assertEntry(many[1], '1', 60_000 - 50);
        // As get() gives them (the expiries are checked above: a real-time backend's move with the clock).
        const one = await Promise.all(['absent', 'a', 'short', 'empty', 'a'].map((key) => store.get(key)));
        assert.deepEqual(many.map((entry) => entry?.value), one.map((entry) => entry?.value));
        assert.deepEqual(await store.getMany([]), []);
      });

      it('keeps the empty string as a value', async () => {
        await store.set('k', '', 1000);
        assert.equal((await store.get('k'))?.value, '');
      });

      it('refuses a ttl that is not a positive integer', async () => {
        for (const ttl of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
          await assert.rejects(store.set('k', 'v', ttl), StoreError, `ttl ${ttl}`);
        }
        assert.equal(await store.get('k'), undefined);
      });
    });

    describe('peek', () => {
      /** peek's answer as get() gives it, or 'ask later'. */
      function peeked(key: string): StoredValue | undefined | 'ask later' {
        const now = store.peek(key);
        return now === ASK_LATER ? 'ask later' : now && { value: now.value, expiresAt: now.expiresAt };
      }

      it('never contradicts get(): absent, set, overwritten, deleted, expired', async () => {
        const agrees = async (key: string): Promise<void> => {
          const now = peeked(key);
          if (now !== 'ask later') assert.deepEqual(now, await store.get(key));
        };
        await agrees('k');
        await store.set('k', 'v', 400);
        await agrees('k');
        await store.set('k', 'w', 400);
        await agrees('k');
        await later(800);
        await agrees('k');
        await store.set('k', 'x', 400);
        await store.delete('k');
        await agrees('k');
        await store.set('k', 'y', 400);
        await agrees('k');
        await store.deleteIf('k', 'other');
        await agrees('k');
        await store.deleteIf('k', 'y');
        await agrees('k');
      });

      it('gives no stale value while a write is still on its way', async () => {
        await store.set('k', 'old', 60_000);
        const writing = store.set('k', 'new', 60_000);
        const now = peeked('k');
        assert.ok(now === 'ask later' || now?.value === 'new', `peek gave ${JSON.stringify(now)} during the write`);
        await writing;
      });

      it('leaves a closed store to get() to report', async () => {
        await store.close();
        assert.equal(peeked('k'), 'ask later');
      });
    });

    describe('expiry', () => {
      it('keeps an entry until exactly ttl has passed', manualClockOnly, async () => {
        await store.set('k', 'v', 1000);
        await later(999);
        assert.equal((await store.get('k'))?.value, 'v');
        await later(1);
        assert.equal(await store.get('k'), undefined);
      });

      it('keeps an entry while its ttl runs and drops it after', async () => {
        await store.set('k', 'v', 400);
        assert.equal((await store.get('k'))?.value, 'v');
        await later(800);
        assert.equal(await store.get('k'), undefined);
      });

      it('reads a key as absent from the millisecond its ttl ends, also behind a write of it that leaves it', manualClockOnly, async () => {
        await store.set('k', 'v', 1000);
        await later(1000);
        // A compare-and-set that fails leaves the row as it was; SQLite reads the key behind it.
        const [swapped, got] = await Promise.all([store.compareAndSet('k', 'other', 'w', 1000), store.get('k')]);
        assert.equal(swapped, false);
        assert.equal(got, undefined);
      });

      it('a set after expiry starts afresh', async () => {
        await store.set('k', 'old', 100);
        await later(200);
        await store.set('k', 'new', 1000);
        assertEntry(await store.get('k'), 'new', 1000);
      });
    });

    describe('setIfAbsent', () => {
      it('sets an absent key', async () => {
        assert.equal(await store.setIfAbsent('k', 'v', 1000), true);
        assertEntry(await store.get('k'), 'v', 1000);
      });

      it('leaves a present key alone', async () => {
        await store.set('k', 'first', 5000);
        await later(50);
        assert.equal(await store.setIfAbsent('k', 'second', 9000), false);
        assertEntry(await store.get('k'), 'first', 4950);
      });

      it('replaces an expired key', async () => {
        await store.set('k', 'first', 100);
        await later(200);
        assert.equal(await store.setIfAbsent('k', 'second', 2000), true);
        assertEntry(await store.get('k'), 'second', 2000);
      });

      it('takes a key for absent from the millisecond its ttl ends', manualClockOnly, async () => {
        await store.set('k', 'first', 1000);
        await later(1000);
        assert.equal(await store.setIfAbsent('k', 'second', 2000), true);
        assertEntry(await store.get('k'), 'second', 2000);
      });

      it('lets exactly one of many concurrent callers win', async () => {
        const results = await Promise.all(
          Array.from({ length: 20 }, (_, i) => store.setIfAbsent('k', `caller ${i}`, 1000)),
        );
        assert.equal(results.filter(Boolean).length, 1);
        assert.equal((await store.get('k'))?.value, `caller ${results.indexOf(true)}`);
      });

      it('refuses a bad ttl', async () => {
        await assert.rejects(store.setIfAbsent('k', 'v', 0), StoreError);
      });
    });

    describe('compareAndSet', () => {
      it('sets an absent key when absence is expected', async () => {
        assert.equal(await store.compareAndSet('k', undefined, 'v', 1000), true);
        assertEntry(await store.get('k'), 'v', 1000);
      });

      it('refuses when absence is expected but the key is present', async () => {
        await store.set('k', 'first', 1000);
        assert.equal(await store.compareAndSet('k', undefined, 'second', 5000), false);
        assertEntry(await store.get('k'), 'first', 1000);
      });

      it('replaces a value equal to the expected one, with the new ttl', async () => {
        await store.set('k', 'first', 1000);
        await later(10);
        assert.equal(await store.compareAndSet('k', 'first', 'second', 5000), true);
        assertEntry(await store.get('k'), 'second', 5000);
      });

      it('refuses a value that differs from the expected one, and leaves it', async () => {
        await store.set('k', 'first', 1000);
        for (const expected of ['other', '', 'firs', 'first ']) {
          assert.equal(await store.compareAndSet('k', expected, 'second', 5000), false, JSON.stringify(expected));
        }
        assertEntry(await store.get('k'), 'first', 1000);
      });

      it('tells the empty string from absence', async () => {
        assert.equal(await store.compareAndSet('k', '', 'v', 1000), false);
        assert.equal(await store.get('k'), undefined);
        await store.set('k', '', 1000);
        assert.equal(await store.compareAndSet('k', undefined, 'v', 1000), false);
        assert.equal(await store.compareAndSet('k', '', 'v', 1000), true);
        assert.equal((await store.get('k'))?.value, 'v');
      });

      it('treats an expired key as absent', async () => {
        await store.set('k', 'first', 100);
        await later(200);
        assert.equal(await store.compareAndSet('k', 'first', 'second', 1000), false);
        assert.equal(await store.get('k'), undefined);
        assert.equal(await store.compareAndSet('k', undefined, 'second', 1000), true);
        assertEntry(await store.get('k'), 'second', 1000);
      });

      it('refuses the expected value from the millisecond its ttl ends', manualClockOnly, async () => {
        await store.set('k', 'first', 1000);
        await later(1000);
        assert.equal(await store.compareAndSet('k', 'first', 'second', 2000), false);
        assert.equal(await store.get('k'), undefined);
      });

      it('lets exactly one of many concurrent callers with the same expectation win', async () => {
        await store.set('k', 'round 0', 1000);
        const results = await Promise.all(
          Array.from({ length: 20 }, (_, i) => store.compareAndSet('k', 'round 0', `caller ${i}`, 1000)),
        );
        assert.equal(results.filter(Boolean).length, 1);
        assert.equal((await store.get('k'))?.value, `caller ${results.indexOf(true)}`);
      });

      it('loses no update when concurrent callers retry on false', async () => {
        const addOne = async (): Promise<void> => {
          for (;;) {
            const current = (await store.get('list'))?.value;
            const next = current === undefined ? 'x' : `${current}x`;
            if (await store.compareAndSet('list', current, next, 1000)) return;
          }
        };
        await Promise.all(Array.from({ length: 10 }, addOne));
        assert.equal((await store.get('list'))?.value, 'x'.repeat(10));
      });

      it('refuses a bad ttl, and leaves the key', async () => {
        await store.set('k', 'v', 1000);
        await assert.rejects(store.compareAndSet('k', 'v', 'w', 0), StoreError);
        await assert.rejects(store.compareAndSet('absent', undefined, 'w', -1), StoreError);
        assert.equal((await store.get('k'))?.value, 'v');
        assert.equal(await store.get('absent'), undefined);
      });
    });

    describe('increment', () => {
      it('creates a counter with the ttl', async () => {
        assert.equal(await store.increment('c', 1, 1000), 1);
        assertEntry(await store.get('c'), '1', 1000);
      });

      it('adds to an existing counter, including negative amounts', async () => {
        await store.increment('c', 5, 1000);
        assert.equal(await store.increment('c', 3, 1000), 8);
        assert.equal(await store.increment('c', -6, 1000), 2);
        assert.equal((await store.get('c'))?.value, '2');
      });

      it('stops a decrement at 0, leaves a counter below 0 alone, and creates no counter for one', async () => {
        await store.increment('c', 5, 1000);
        assert.equal(await store.increment('c', -10, 1000), 0);
        assertEntry(await store.get('c'), '0', 1000);
        await store.set('n', '-3', 1000);
        assert.equal(await store.increment('n', -1, 1000), -3);
        assert.equal(await store.increment('absent', -1, 1000), 0);
        assert.equal(await store.get('absent'), undefined);
        await store.set('bad', '-0', 1000);
        await assert.rejects(store.increment('bad', -1, 1000), StoreError);
        assert.equal((await store.get('bad'))?.value, '-0');
      });

      it('stops at 0 a decrement that would end one below it', async () => {
        await store.increment('c', 1, 1000);
        assert.equal(await store.increment('c', -2, 1000), 0);
        assert.equal((await store.get('c'))?.value, '0');
        assert.equal(await store.increment('c', -1, 1000), 0);
        assert.equal((await store.get('c'))?.value, '0');
      });

      it('adds to a counter below 0 (callout writes none) from 0, keeping its expiry', async () => {
        await store.set('n', '-100000', 1000);
        await later(100);
        assert.equal(await store.increment('n', 2, 60_000), 2);
        assertEntry(await store.get('n'), '2', 900);
        assert.equal(await store.increment('n', 1, 60_000), 3);
        // -1 above all: a counter lost between an add and its take-back starts again there.
        await store.set('one', '-1', 1000);
        assert.equal(await store.increment('one', 1, 1000), 1);
        await store.set('still', '-3', 1000);
        assert.equal(await store.increment('still', 0, 1000), -3);
      });

      it('keeps the original expiry of an existing counter', async () => {
        await store.increment('c', 1, 1000);
        await later(100);
        assert.equal(await store.increment('c', 1, 60_000), 2);
        assertEntry(await store.get('c'), '2', 900);
        await later(realTime ? 1200 : 900);
        assert.equal(await store.get('c'), undefined);
      });

      it('restarts an expired counter with the new ttl', async () => {
        await store.increment('c', 7, 100);
        await later(200);
        assert.equal(await store.increment('c', 2, 5000), 2);
        assertEntry(await store.get('c'), '2', 5000);
      });

      it('counts a counter written with set', async () => {
        await store.set('c', '41', 1000);
        assert.equal(await store.increment('c', 1, 1000), 42);
      });

      it('counts on from a set of the same turn, and reads the sum back', async () => {
        // Read first, so that a backend remembering rows has one to keep up to date.
        assert.equal(await store.get('c'), undefined);
        const [, sum] = await Promise.all([store.set('c', '41', 1000), store.increment('c', 1, 1000)]);
        assert.equal(sum, 42);
        assert.equal((await store.get('c'))?.value, '42');
      });

      it('loses no concurrent increment', async () => {
        await Promise.all(Array.from({ length: 50 }, () => store.increment('c', 1, 1000)));
        assert.equal((await store.get('c'))?.value, '50');
      });

      it('refuses to count a value that is not an integer, and leaves it', async () => {
        for (const value of ['abc', '1.5', '', ' 1', '1e3', '0x10', '-0', '-1.5', '-1e3', ' -1', '-0x10', '9007199254740992', '-9007199254740992']) {
          await store.set('c', value, 1000);
          await assert.rejects(store.increment('c', 1, 1000), StoreError, JSON.stringify(value));
          assert.equal((await store.get('c'))?.value, value);
        }
      });

      it('refuses an amount that is not a safe integer, or a result beyond safe integers', async () => {
        await assert.rejects(store.increment('c', 1.5, 1000), StoreError);
        await assert.rejects(store.increment('c', Number.NaN, 1000), StoreError);
        await store.increment('c', Number.MAX_SAFE_INTEGER, 1000);
        await assert.rejects(store.increment('c', 1, 1000), StoreError);
        assert.equal((await store.get('c'))?.value, String(Number.MAX_SAFE_INTEGER));
      });

      it('counts back from the top of the safe integer range, and up from 0 at its bottom', async () => {
        await store.set('c', String(Number.MAX_SAFE_INTEGER), 1000);
        assert.equal(await store.increment('c', -1, 1000), Number.MAX_SAFE_INTEGER - 1);
        await store.set('c', String(-Number.MAX_SAFE_INTEGER), 1000);
        assert.equal(await store.increment('c', 1, 1000), 1);
      });
    });

    describe('delete', () => {
      it('removes a key, and deleting an absent key is fine', async () => {
        await store.set('k', 'v', 1000);
        await store.delete('k');
        assert.equal(await store.get('k'), undefined);
        await store.delete('k');
        await store.delete('never-there');
      });
    });

    describe('deleteIf', () => {
      it('deletes a key whose value is the expected one', async () => {
        await store.set('k', 'mine', 1000);
        assert.equal(await store.deleteIf('k', 'mine'), true);
        assert.equal(await store.get('k'), undefined);
        assert.equal(await store.setIfAbsent('k', 'next', 1000), true, 'the key is free again');
      });

      it('leaves a key whose value differs from the expected one', async () => {
        await store.set('k', 'mine', 1000);
        for (const expected of ['other', '', 'min', 'mine ', 'MINE']) {
          assert.equal(await store.deleteIf('k', expected), false, JSON.stringify(expected));
        }
        assertEntry(await store.get('k'), 'mine', 1000);
      });

      it('answers false for an absent key, and tells the empty string from absence', async () => {
        assert.equal(await store.deleteIf('never-there', ''), false);
        assert.equal(await store.deleteIf('never-there', 'v'), false);
        assert.equal(await store.get('never-there'), undefined);
        await store.set('empty', '', 1000);
        assert.equal(await store.deleteIf('empty', ''), true);
        assert.equal(await store.get('empty'), undefined);
      });

      it('answers false for an expired key, and leaves the key another caller took after it', async () => {
        await store.set('lock', 'holder a', 100);
        await later(200);
        assert.equal(await store.deleteIf('lock', 'holder a'), false);
        assert.equal(await store.setIfAbsent('lock', 'holder b', 1000), true);
        assert.equal(await store.deleteIf('lock', 'holder a'), false);
        assertEntry(await store.get('lock'), 'holder b', 1000);
      });

      it('answers false from the millisecond the ttl ends', manualClockOnly, async () => {
        await Promise.all([store.set('a', 'mine', 1000), store.set('b', 'mine', 1000)]);
        await later(999);
        assert.equal(await store.deleteIf('a', 'mine'), true, 'live in its last millisecond');
        await later(1);
        assert.equal(await store.deleteIf('b', 'mine'), false);
        assert.equal(await store.get('b'), undefined);
      });

      it('deletes only its own key', async () => {
        const others = ['k2', 'k:', 'K', 'k ', 'prefix:k'];
        await Promise.all(['k', ...others].map((key) => store.set(key, 'mine', 1000)));
        assert.equal(await store.deleteIf('k', 'mine'), true);
        assert.deepEqual((await store.getMany(others)).map((entry) => entry?.value), others.map(() => 'mine'));
      });

      it('lets exactly one of two concurrent callers with the same value delete', async () => {
        for (let round = 0; round < 10; round += 1) {
          await store.set('k', `round ${round}`, 1000);
          const results = await Promise.all([store.deleteIf('k', `round ${round}`), store.deleteIf('k', `round ${round}`)]);
          assert.deepEqual(results.filter(Boolean), [true], `round ${round}: ${JSON.stringify(results)}`);
          assert.equal(await store.get('k'), undefined);
        }
      });

      it('answers false for the value a compareAndSet replaced, and leaves the new one', async () => {
        await store.set('k', 'old', 1000);
        assert.equal(await store.compareAndSet('k', 'old', 'new', 5000), true);
        assert.equal(await store.deleteIf('k', 'old'), false);
        assertEntry(await store.get('k'), 'new', 5000);
        assert.equal(await store.deleteIf('k', 'new'), true);
        assert.equal(await store.get('k'), undefined);
      });

      it('gives no stale value while the delete is still on its way', async () => {
        await store.set('k', 'mine', 60_000);
        assert.equal((await store.get('k'))?.value, 'mine');
        const deleting = store.deleteIf('k', 'mine');
        const now = store.peek('k');
        assert.ok(now === ASK_LATER || now === undefined, `peek gave ${JSON.stringify(now)} during the delete`);
        assert.equal(await deleting, true);
      });
    });

    describe('scan', () => {
      beforeEach(async () => {
        for (const key of ['k:b', 'k:a', 'k:\u00e9', 'k:\uffff', 'k:\u{1F600}', 'k:Z', 'k:', 'other', 'k', 'l:a']) {
          await store.set(key, `value of ${key}`, 60_000);
        }
      });

      it('lists the keys with the prefix in code point order, with values and expiry', async () => {
        const rows = await store.scan('k:', 100);
        assert.deepEqual(
          rows.map((row) => row.key),
          ['k:', 'k:Z', 'k:a', 'k:b', 'k:\u00e9', 'k:\uffff', 'k:\u{1F600}'],
        );
        const second = rows[1];
        assert.ok(second, 'second');
        assert.equal(second.key, 'k:Z');
        assertEntry({ value: second.value, expiresAt: second.expiresAt }, 'value of k:Z', 60_000);
        assert.deepEqual(Object.keys(second).sort(), ['expiresAt', 'key', 'value']);
      });

      it('stops at the limit, taking the first keys in order', async () => {
        assert.deepEqual((await store.scan('k:', 3)).map((row) => row.key), ['k:', 'k:Z', 'k:a']);
        assert.deepEqual(await store.scan('k:', 0), []);
      });

      it('lists every key for the empty prefix', async () => {
        assert.deepEqual(
          (await store.scan('', 100)).map((row) => row.key),
          ['k', 'k:', 'k:Z', 'k:a', 'k:b', 'k:\u00e9', 'k:\uffff', 'k:\u{1F600}', 'l:a', 'other'],
        );
      });

      it('handles a prefix ending in the highest code point', async () => {
        await store.set('m\u{10FFFF}a', 'v', 1000);
        await store.set('m\u{10FFFF}', 'v', 1000);
        await store.set('n', 'v', 1000);
        assert.deepEqual((await store.scan('m\u{10FFFF}', 10)).map((row) => row.key), ['m\u{10FFFF}', 'm\u{10FFFF}a']);
        assert.deepEqual((await store.scan('k:\uffff', 10)).map((row) => row.key), ['k:\uffff']);
      });

      it('leaves out expired entries', async () => {
        await store.set('k:short', 'v', 300);
        assert.ok((await store.scan('k:', 100)).some((row) => row.key === 'k:short'), '(await store.scan(\'k:\', 100)).some((row) => row.key === \'k:short\')');
        await later(600);
        const rows = await store.scan('k:', 100);
        assert.ok(!rows.some((row) => row.key === 'k:short'), '!rows.some((row) => row.key === \'k:short\')');
        assert.equal(rows.length, 7);
      });

      it('orders and bounds keys at the edges of the surrogate range by code point', async () => {
        for (const key of ['s\u{10000}', 's\uffff', 's\ue000', 's\ud7ffa', 's\ud7ff', 's\ud7fe']) await store.set(key, 'v', 60_000);
        assert.deepEqual((await store.scan('s', 10)).map((row) => row.key), ['s\ud7fe', 's\ud7ff', 's\ud7ffa', 's\ue000', 's\uffff', 's\u{10000}']);
        // The successor of U+D7FF is U+E000: the surrogates are no code points.
        assert.deepEqual((await store.scan('s\ud7ff', 10)).map((row) => row.key), ['s\ud7ff', 's\ud7ffa']);
      });

      it('lists nothing once every ttl has passed', manualClockOnly, async () => {
        await later(60_000);
        assert.deepEqual(await store.scan('', 100), []);
      });

      it('answers an empty list for an unused prefix', async () => {
        assert.deepEqual(await store.scan('zzz', 10), []);
      });

      it('refuses a limit that is not a non-negative integer', async () => {
        await assert.rejects(store.scan('k:', -1), StoreError);
        await assert.rejects(store.scan('k:', 1.5), StoreError);
      });

      it('pages through the keys with the prefix, each once, each page in order (all in order but on Redis)', async () => {
        const expected = ['k:', 'k:Z', 'k:a', 'k:b', 'k:\u00e9', 'k:\uffff', 'k:\u{1F600}'];
        const pages = await pagesOf('k:', 2);
        for (const page of pages) {
          assert.ok(page.length >= 1 && page.length <= 2, `page of ${page.length}`);
          assert.deepEqual(page, expected.filter((key) => page.includes(key)), 'each page in key order');
        }
        if (store.kind === 'redis') assert.deepEqual(pages.flat().sort(), [...expected].sort());
        else assert.deepEqual(pages, [['k:', 'k:Z'], ['k:a', 'k:b'], ['k:\u00e9', 'k:\uffff'], ['k:\u{1F600}']]);
        assert.deepEqual(await pagesOf('k:', 100), [expected], 'one page in key order when it holds them all');
      });

      it('pages with values and expiry, leaving out expired keys and other prefixes', async () => {
        await store.set('k:short', 'v', 300);
        await store.set('m\u{10FFFF}a', 'v', 60_000);
        await store.set('m\u{10FFFF}', 'v', 60_000);
        await store.set('n', 'v', 60_000);
        await later(600);
        assert.deepEqual(await pagesOf('m\u{10FFFF}', 10), [['m\u{10FFFF}', 'm\u{10FFFF}a']]);
        assert.equal((await pagesOf('k:', 3)).flat().length, 7);
        assert.deepEqual(await pagesOf('zzz', 10), []);
        const zPages = await rowPagesOf('k:Z', 1);
        assert.deepEqual(zPages.map((page) => page.map((row) => row.key)), [['k:Z']], 'one page, of k:Z alone');
        const { key: _key, ...entry } = zPages[0]![0]!;
        assertEntry(entry, 'value of k:Z', 60_000 - 600);
      });

      it('gives no empty page when the keys after the first page are deleted meanwhile', async () => {
        const pages: string[][] = [];
        for await (const page of store.scanPages('k:', 2)) {
          pages.push(page.map((row) => row.key));
          if (pages.length > 1) continue;
          for (const { key } of await store.scan('k:', 100)) if (!pages[0]!.includes(key)) await store.delete(key);
        }
        assert.equal(pages.length, 1, JSON.stringify(pages));
      });

      it('refuses a page size that is not a positive integer', async () => {
        await assert.rejects(pagesOf('k:', 0), StoreError);
        await assert.rejects(pagesOf('k:', 1.5), StoreError);
      });
    });

    describe('keys with special characters', () => {
      const keys = ['a%b', 'a_b', "a'b", 'a"b', 'a\\b', 'a*b', 'a?b', 'a[b]', 'ab', 'aXb', 'a b', 'a\nb', 'a;b--'];

      it('stores and reads each one', async () => {
        for (const key of keys) await store.set(key, `v ${key}`, 1000);
        for (const key of keys) assert.equal((await store.get(key))?.value, `v ${key}`, JSON.stringify(key));
      });

      it('takes wildcard characters in a prefix literally', async () => {
        for (const key of keys) await store.set(key, 'v', 1000);
        assert.deepEqual((await store.scan('a%', 100)).map((row) => row.key), ['a%b']);
        assert.deepEqual((await store.scan('a_', 100)).map((row) => row.key), ['a_b']);
        assert.deepEqual((await store.scan('a*', 100)).map((row) => row.key), ['a*b']);
        assert.deepEqual((await store.scan('a[', 100)).map((row) => row.key), ['a[b]']);
        assert.deepEqual((await store.scan("a'", 100)).map((row) => row.key), ["a'b"]);
        assert.deepEqual((await store.scan('a?', 100)).map((row) => row.key), ['a?b']);
        assert.deepEqual((await store.scan('a\\', 100)).map((row) => row.key), ['a\\b']);
        assert.deepEqual((await pagesOf('a?', 100)).flat(), ['a?b']);
        assert.equal((await store.scan('a', 100)).length, keys.length);
      });
    });

    describe('values', () => {
      it('keeps unicode exactly', async () => {
        const value = 'Grüße, 日本語, emoji \u{1F4E7}, RTL \u05e9\u05dc\u05d5\u05dd, combining e\u0301, NUL \u0000 end';
        await store.set('u', value, 1000);
        assert.equal((await store.get('u'))?.value, value);
      });

      it('keeps a 1 MB value exactly', async () => {
        const value = 'x'.repeat(512 * 1024) + '\u00e9'.repeat(256 * 1024);
        await store.set('big', value, 1000);
        assert.equal((await store.get('big'))?.value, value);
      });

      it('keeps JSON text as written', async () => {
        const value = JSON.stringify({ verdict: 'deliverable', nested: { quote: '"', backslash: '\\' } });
        await store.set('json', value, 1000);
        assert.equal((await store.get('json'))?.value, value);
      });
    });

    describe('purgeExpired', () => {
      it('removes only expired entries and counts them', async () => {
        await store.set('a', 'v', 100);
        await store.set('b', 'v', 100);
        await store.increment('c', 1, 100);
        await store.set('d', 'v', 5000);
        await store.set('e', 'v', realTime ? 5000 : 101);
        await later(realTime ? 200 : 100);
        const removed = await store.purgeExpired();
        if (!realTime) assert.equal(removed, 3);
        assert.equal(await store.purgeExpired(), 0);
        assert.deepEqual((await store.scan('', 10)).map((row) => row.key), ['d', 'e']);
      });

      it('counts every entry of a large backlog', async () => {
        for (let i = 0; i < 2500; i += 1) await store.set(`expired:${i}`, 'v', 10);
        await store.set('live', 'v', 5000);
        await later(realTime ? 50 : 10);
        const removed = await store.purgeExpired();
        if (!realTime) assert.equal(removed, 2500);
        assert.deepEqual((await store.scan('', 3000)).map((row) => row.key), ['live']);
      });

      it('judges expiry at the time it is given, not by the clock', manualClockOnly, async () => {
        await store.set('a', 'v', 100);
        await store.set('b', 'v', 300);
        await later(200);
        // A daemon whose requests set the time purges at its last request's time, here behind the clock.
        assert.equal(await store.purgeExpired(clock.now() - 150), 0);
        assert.equal(await store.purgeExpired(clock.now()), 1);
        assert.equal((await store.get('b'))?.value, 'v');
      });

      it('answers 0 on an empty store', async () => {
        assert.equal(await store.purgeExpired(), 0);
      });
    });

    describe('close', () => {
      it('makes every later operation reject with StoreError, and may be repeated', async () => {
        await store.set('k', 'v', 1000);
        await store.close();
        await store.close();
        await assert.rejects(store.get('k'), StoreError);
        await assert.rejects(store.getMany(['k', 'other']), StoreError);
        await assert.rejects(store.set('k', 'v', 1000), StoreError);
        await assert.rejects(store.setIfAbsent('k', 'v', 1000), StoreError);
        await assert.rejects(store.compareAndSet('k', 'v', 'w', 1000), StoreError);
        await assert.rejects(store.increment('k', 1, 1000), StoreError);
        await assert.rejects(store.delete('k'), StoreError);
        await assert.rejects(store.deleteIf('k', 'v'), StoreError);
        await assert.rejects(store.scan('', 10), StoreError);
        await assert.rejects(store.purgeExpired(), StoreError);
      });
    });
  });
}
