// test/support/stage-context: the context a stage is given in its tests is the pipeline's own.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { stageContext } from './stage-context.js';

describe('stageContext', () => {
  it('gives the earlier verdicts and timeLeft of the test', () => {
    const earlier = new Map([['spf', { stage: 'spf', result: 'pass', reason: '', decision: { kind: 'continue' as const } }]]);
    const ctx = stageContext({}, { earlier, timeLeft: () => 42 });
    assert.equal(ctx.earlier, earlier);
    assert.equal(ctx.timeLeft(), 42);
  });
});
