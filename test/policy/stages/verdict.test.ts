// The verdict maker the stages share (pure logic).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { stageVerdict } from '../../../src/policy/stages/verdict.js';

describe('stageVerdict', () => {
  const verdict = stageVerdict('example');

  it('names the stage and leaves the evidence key out when there is none', () => {
    const made = verdict('none', 'nothing to do', { kind: 'continue' });
    assert.deepEqual(made, { stage: 'example', result: 'none', reason: 'nothing to do', decision: { kind: 'continue' } });
    // A log line of it has no `"evidence":undefined` to explain, and deepEqual against a literal without the key holds.
    assert.equal(Object.hasOwn(made, 'evidence'), false);
  });

  it('keeps evidence that is given, falsy values included', () => {
    for (const evidence of [{ verdict: 'unknown' }, 0, '', null, false]) {
      assert.deepEqual(verdict('r', 'why', { kind: 'continue' }, evidence).evidence, evidence);
    }
  });
});
