// Stored records read back: JSON that is not there, too long or not a mapping is undefined or false, never an exception.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isRecord, parseJson, parseJsonWithin } from '../../src/core/record.js';

describe('parseJson and parseJsonWithin', () => {
  it('read JSON, and give undefined for text that is none', () => {
    assert.deepEqual(parseJson('{"a":1}'), { a: 1 });
    assert.equal(parseJson('{"a":'), undefined);
    assert.equal(parseJson(''), undefined);
  });

  it('read a text of up to the limit, and give undefined for a longer one without parsing it', () => {
    assert.deepEqual(parseJsonWithin('[1,2]', 5), [1, 2], 'a text of the limit');
    assert.equal(parseJsonWithin('[1,22]', 5), undefined, 'one character over');
  });
});

describe('isRecord', () => {
  it('holds for a mapping only: not null, a list or a scalar', () => {
    assert.equal(isRecord({ a: 1 }), true);
    for (const value of [null, [], [1], 'a', 1, undefined]) assert.equal(isRecord(value), false, JSON.stringify(value) ?? 'undefined');
  });
});
