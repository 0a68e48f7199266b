import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { BoundedMemo, RecentMap } from '../../src/core/memo.js';
import { heapAfterGc } from '../support/heap.js';

function counting(limit: number): { memo: BoundedMemo<{ text: string }>; calls: string[] } {
  const calls: string[] = [];
  const memo = new BoundedMemo((text) => {
    calls.push(text);
    return { text };
  }, limit);
  return { memo, calls };
}

describe('BoundedMemo', () => {
  it('works a text out once while it is remembered, and gives every caller the same result', () => {
    const { memo, calls } = counting(4);
    const first = memo.get('a');
    assert.equal(memo.get('a'), first);
    assert.deepEqual(calls, ['a']);
  });

  it('keeps recently used texts and forgets texts unused for two generations', () => {
    const { memo, calls } = counting(2);
    memo.get('a');
    memo.get('b');
    memo.get('c'); // a and b become the previous generation
    memo.get('a'); // found there, moved to the current one (c, a)
    memo.get('d'); // (c, a) become the previous generation; b is gone
    memo.get('a');
    memo.get('b');
    assert.deepEqual(calls, ['a', 'b', 'c', 'd', 'b']);
  });

  it('remembers undefined results too', () => {
    let calls = 0;
    const memo = new BoundedMemo(() => {
      calls += 1;
      return undefined;
    }, 10);
    memo.get('x');
    memo.get('x');
    assert.equal(calls, 1);
  });

  it('always answers fn(text) and never holds more than twice its limit', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 8 }), fc.array(fc.string({ maxLength: 3 }), { maxLength: 200 }), (limit, texts) => {
        const memo = new BoundedMemo((text) => `${text}!`, limit);
        for (const text of texts) {
          assert.equal(memo.get(text), `${text}!`);
          assert.ok(memo.size <= 2 * limit, 'memo.size <= 2 * limit');
        }
      }),
    );
  });
});

const MISSING = Symbol('missing');

/** Map get and has calls while run() runs. */
function countMapLookups(run: () => void): number {
  const { get, has } = Map.prototype;
  let lookups = 0;
  Map.prototype.get = function (this: Map<unknown, unknown>, key: unknown) {
    lookups++;
    return get.call(this, key);
  };
  Map.prototype.has = function (this: Map<unknown, unknown>, key: unknown) {
    lookups++;
    return has.call(this, key);
  };
  try {
    run();
  } finally {
    Map.prototype.get = get;
    Map.prototype.has = has;
  }
  return lookups;
}

describe('RecentMap', () => {
  it('answers the missing marker for unknown keys and stores undefined values as values', () => {
    const map = new RecentMap<string | undefined>(4);
    const missing = Symbol('missing');
    assert.equal(map.get('a', missing), missing);
    map.set('a', undefined);
    assert.equal(map.get('a', missing), undefined);
  });

  it('overwrites, deletes from either generation, and clears', () => {
    const map = new RecentMap<number>(2);
    map.set('a', 1);
    map.set('a', 2);
    map.set('b', 3);
    assert.equal(map.size, 2, 'overwriting a key never starts a generation');
    map.set('c', 4); // a and b become the previous generation
    map.delete('a');
    assert.equal(map.get('a', -1), -1);
    assert.equal(map.get('b', -1), 3);
    map.clear();
    assert.equal(map.size, 0);
    assert.equal(map.get('c', -1), -1);
  });

  it('sets a new value of a key of the current generation, and of the previous one', () => {
    const map = new RecentMap<number>(2);
    map.set('a', 1);
    map.set('a', 2);
    assert.equal(map.get('a', -1), 2, 'the later value of a current key');
    map.set('b', 3);
    map.set('c', 4); // a and b become the previous generation
    map.set('b', 5);
    assert.equal(map.get('b', -1), 5, 'the later value of a previous key');
  });

  it('brings forward an undefined value of the previous generation as a value, not as missing', () => {
    const map = new RecentMap<number | undefined>(1);
    map.set('a', undefined);
    map.set('b', 1); // a becomes the previous generation
    assert.equal(map.get('a', -1), undefined);
  });

  it('clears both generations', () => {
    const map = new RecentMap<number>(1);
    map.set('a', 1);
    map.set('b', 2); // a becomes the previous generation
    map.clear();
    assert.equal(map.get('a', -1), -1, 'the previous generation forgotten');
    assert.equal(map.get('b', -1), -1, 'the current one too');
  });

  it('takes a limit below 1 as 1, keeping the previous generation across a delete', () => {
    const map = new RecentMap<number>(0);
    map.set('a', 1);
    map.set('b', 2); // a becomes the previous generation
    map.delete('b');
    map.set('c', 3); // the current generation is empty: no new one begins
    assert.equal(map.get('a', -1), 1, 'a still remembered');
  });

  it('updates a key it remembers, in either generation, and leaves out one it does not', () => {
    const map = new RecentMap<number>(2);
    map.set('a', 1);
    map.set('b', 2);
    map.set('c', 3); // a and b become the previous generation
    map.update('a', 10);
    map.update('c', 30);
    map.update('new', 40);
    assert.equal(map.get('a', -1), 10);
    assert.equal(map.get('c', -1), 30);
    assert.equal(map.get('new', -1), -1);
    assert.equal(map.size, 3);
  });

  it('looks a key up once in each generation: a miss costs two lookups, a hit on undefined one', () => {
    const map = new RecentMap<number | undefined>(2);
    map.set('a', undefined);
    map.set('b', 1);
    map.set('c', undefined); // a and b become the previous generation
    const lookups = countMapLookups(() => {
      assert.equal(map.get('c', MISSING), undefined, 'the undefined stored in the current generation');
    });
    assert.equal(lookups, 1, 'one lookup for a hit in the current generation');
    assert.equal(
      countMapLookups(() => assert.equal(map.get('none', MISSING), MISSING, 'a key never stored is missing')),
      2,
      'two lookups for a miss',
    );
    assert.equal(
      countMapLookups(() => assert.equal(map.get('a', MISSING), undefined, 'the undefined stored in the previous generation')),
      2,
      'two lookups for a hit in the previous generation (and none more to bring it forward)',
    );
  });

  it('agrees with a plain Map on every key it still holds, undefined values too, within twice its limit', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 6 }),
        fc.array(fc.tuple(fc.constantFrom('get', 'set', 'update', 'delete'), fc.string({ maxLength: 2 }), fc.option(fc.integer(), { nil: undefined })), { maxLength: 200 }),
        (limit, operations) => {
          const map = new RecentMap<number | undefined>(limit);
          const model = new Map<string, number | undefined>();
          for (const [operation, key, value] of operations) {
            if (operation === 'set') {
              map.set(key, value);
              model.set(key, value);
            } else if (operation === 'update') {
              map.update(key, value);
              // A key it no longer holds may stay out: the model forgets it too.
              if (map.get(key, MISSING) !== MISSING) model.set(key, value);
              else model.delete(key);
            } else if (operation === 'delete') {
              map.delete(key);
              model.delete(key);
            } else {
              const found = map.get(key, MISSING);
              if (found !== MISSING) assert.equal(found, model.get(key), 'the value the model holds, undefined too');
            }
            assert.ok(map.size <= 2 * limit, 'map.size <= 2 * limit');
          }
        },
      ),
    );
  });
});

describe('memory of slices', () => {
  /**
   * Gives use() count keys, each a slice of a 64 KiB string of its own, as a policy attribute is
   * of the chunk it came in; made one at a time, in a frame that has returned before the heap is
   * measured, so that nothing but what use() kept holds them.
   */
  const feedSlices = (count: number, use: (text: string, index: number) => void): void => {
    for (let i = 0; i < count; i++) use(`${'x'.repeat(65_536)}${i}-tail-of-the-text`.slice(65_530), i);
  };

  it('keeps a key and what fn made of it without the string it was sliced from', () => {
    const memo = new BoundedMemo((text) => ({ part: text.slice(1) }), 1_000);
    const before = heapAfterGc();
    feedSlices(1_000, (text) => memo.get(text));
    const grown = heapAfterGc() - before;
    assert.equal(memo.size, 1_000);
    // Held whole, the 1,000 parents would take 64 MiB.
    assert.ok(grown < 8 * 1024 * 1024, `${grown} octets held for 1,000 short keys`);
  });

  it('keeps RecentMap keys, set or brought forward, without the strings they were sliced from', () => {
    const map = new RecentMap<number>(600);
    const before = heapAfterGc();
    feedSlices(1_000, (text, i) => map.set(text, i));
    // The first 600 are in the previous generation: a get with a new slice brings 200 forward.
    feedSlices(200, (text) => assert.equal(map.get(text, undefined) !== undefined, true));
    const grown = heapAfterGc() - before;
    assert.equal(map.size, 1_000);
    assert.ok(grown < 8 * 1024 * 1024, `${grown} octets held for 1,000 short keys`);
  });
});
