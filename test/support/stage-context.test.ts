// test/support/stage-context: the context a stage is given in its tests is the pipeline's own.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { stageContext } from './stage-context.js';

describe('stageContext', () => {
  it('keeps the pipeline\'s lazy getters, so a stage that assigns the parsed sender or recipient fails its tests as it would fail in production', () => {
    const ctx = stageContext({ sender: 'alice@example.org', recipient: 'bob@example.test' });
    for (const key of ['sender', 'senderError', 'recipient']) {
      const descriptor = Object.getOwnPropertyDescriptor(ctx, key);
      assert.ok(descriptor?.get !== undefined && descriptor.set === undefined, `${key} is a getter without a setter, as the pipeline made it`);
      assert.throws(() => Object.assign(ctx, { [key]: undefined }), TypeError, `assigning ${key} throws`);
    }
    assert.equal(ctx.sender?.kind === 'mailbox' && ctx.sender.mailbox.asciiDomain, 'example.org', 'the getter still parses');
    assert.equal(ctx.recipient?.localPart, 'bob', 'the recipient getter still parses');
  });

  it('gives the earlier verdicts and timeLeft of the test', () => {
    const earlier = new Map([['spf', { stage: 'spf', result: 'pass', reason: '', decision: { kind: 'continue' as const } }]]);
    const ctx = stageContext({}, { earlier, timeLeft: () => 42 });
    assert.equal(ctx.earlier, earlier);
    assert.equal(ctx.timeLeft(), 42);
  });
});
