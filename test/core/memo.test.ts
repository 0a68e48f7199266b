import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BoundedMemo } from '../../src/core/memo.js';

describe('BoundedMemo', () => {
  it('works a text out once while it is remembered, and forgets the oldest past the limit', () => {
    const calls: string[] = [];
    const memo = new BoundedMemo((text) => {
      calls.push(text);
      return { length: text.length };
    }, 2);
    const first = memo.get('a');
    assert.equal(memo.get('a'), first, 'the same object for the same text');
    memo.get('bb');
    memo.get('ccc');
    assert.equal(memo.size, 2);
    memo.get('bb');
    memo.get('a');
    assert.deepEqual(calls, ['a', 'bb', 'ccc', 'a'], "'a' was the oldest and was worked out again");
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
});
