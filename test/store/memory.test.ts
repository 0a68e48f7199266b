import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../support/manual-time.js';
import { ConfigError } from '../../src/core/errors.js';
import { MemoryStore } from '../../src/store/memory.js';
import { runStoreContract } from './contract.js';
import { heapAfterGc } from '../support/heap.js';

runStoreContract('memory', async (clock) => new MemoryStore({ clock }));

describe('MemoryStore', () => {
  it('has kind memory', () => {
    assert.equal(new MemoryStore().kind, 'memory');
  });

  it('refuses a maxEntries that is not a positive integer', () => {
    for (const maxEntries of [0, -1, 1.5, Number.NaN]) {
      assert.throws(() => new MemoryStore({ maxEntries }), ConfigError);
    }
  });

  it('keeps keys and values without the larger strings they were sliced from', async () => {
    const store = new MemoryStore();
    // As a policy attribute is a slice of the request it came in: each key and value is a slice
    // of a 64 KiB string of its own, made in a function that has returned before the heap is measured.
    const write = async (count: number): Promise<void> => {
      for (let i = 0; i < count; i++) {
        const request = `${'x'.repeat(65_536)}\nsender=sender-${i}@example.org\nhelo_name=mx.client-${i}.example\n`;
        const sender = request.slice(request.indexOf('sender-'), request.indexOf('\nhelo'));
        const helo = request.slice(request.indexOf('mx.client'), -1);
        await store.set(`rate:${sender}`, helo, 60_000);
      }
    };
    const before = heapAfterGc();
    await write(300);
    const grown = heapAfterGc() - before;
    // Held whole, the 300 requests would take 19 MiB.
    assert.ok(grown < 4 * 1024 * 1024, `${grown} octets held for 300 entries`);
    assert.equal((await store.get('rate:sender-299@example.org'))?.value, 'mx.client-299.example');
  });

  describe('maxEntries', () => {
    it('evicts expired entries before live ones', async () => {
      const clock = new ManualClock();
      const store = new MemoryStore({ clock, maxEntries: 4 });
      await store.set('old-live', 'v', 10_000);
      await store.set('short-1', 'v', 10);
      await store.set('short-2', 'v', 10);
      await store.set('live', 'v', 10_000);
      clock.advance(10);
      await store.set('new', 'v', 10_000);
      assert.deepEqual((await store.scan('', 10)).map((row) => row.key), ['live', 'new', 'old-live']);
    });

    it('evicts the oldest-written entry when all are live', async () => {
      const clock = new ManualClock();
      const store = new MemoryStore({ clock, maxEntries: 3 });
      await store.set('a', 'v', 1000);
      await store.set('b', 'v', 1000);
      await store.set('c', 'v', 1000);
      await store.set('a', 'rewritten', 1000); // a is now the newest write
      await store.set('d', 'v', 1000);
      assert.deepEqual((await store.scan('', 10)).map((row) => row.key), ['a', 'c', 'd']);
    });

    it('does not evict when an existing key is overwritten or incremented', async () => {
      const store = new MemoryStore({ clock: new ManualClock(), maxEntries: 2 });
      await store.set('a', '1', 1000);
      await store.set('b', '1', 1000);
      await store.set('b', '2', 1000);
      await store.increment('a', 1, 1000);
      assert.deepEqual((await store.scan('', 10)).map((row) => `${row.key}=${row.value}`), ['a=2', 'b=2']);
    });

    it('frees 1% of a large bound at once, then fills up again without evicting', async () => {
      const store = new MemoryStore({ clock: new ManualClock(), maxEntries: 1000 });
      for (let i = 0; i < 1000; i += 1) await store.set(`k${String(i).padStart(4, '0')}`, 'v', 1000);
      await store.set('new', 'v', 1000);
      const keys = (await store.scan('', 2000)).map((row) => row.key);
      assert.equal(keys.length, 991);
      assert.equal(keys[0], 'k0010');
      for (let i = 0; i < 9; i += 1) await store.set(`more${i}`, 'v', 1000);
      assert.equal((await store.scan('', 2000)).length, 1000);
      assert.equal((await store.get('k0010'))?.value, 'v');
    });
  });

  it('drops an expired entry when it is read', async () => {
    const clock = new ManualClock();
    const store = new MemoryStore({ clock });
    await store.set('k', 'v', 10);
    clock.advance(10);
    assert.equal(await store.get('k'), undefined);
    assert.equal(await store.purgeExpired(), 0);
  });

  it('peeks at every live value at once', async () => {
    const clock = new ManualClock();
    const store = new MemoryStore({ clock });
    await store.set('k', 'v', 10);
    assert.deepEqual(store.peek('k'), { value: 'v', expiresAt: clock.now() + 10 });
    assert.equal(store.peek('absent'), undefined);
    clock.advance(10);
    assert.equal(store.peek('k'), undefined);
  });

  it('hands out copies, so a caller cannot change what is stored', async () => {
    const store = new MemoryStore({ clock: new ManualClock() });
    await store.set('k', 'v', 1000);
    const got = await store.get('k');
    assert.ok(got, 'got');
    got.value = 'changed';
    const [row] = await store.scan('k', 1);
    assert.ok(row, 'row');
    row.value = 'changed';
    const [many] = await store.getMany(['k']);
    assert.ok(many, 'many');
    many.value = 'changed';
    assert.equal((await store.get('k'))?.value, 'v');
  });
});
