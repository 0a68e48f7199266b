import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { BoundedMemo } from '../../src/core/memo.js';

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
          assert.ok(memo.size <= 2 * limit);
        }
      }),
    );
  });
});
