// The pipeline parses a request's sender and recipient once, before its stages run, into plain data.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../support/manual-time.js';
import { Pipeline } from '../../src/policy/pipeline.js';
import type { StageContext, StageVerdict } from '../../src/policy/types.js';

const silent = { info() {}, warn() {}, error() {} };

/** The context the pipeline gives its one stage for the request; `before` is shown the pipeline first. */
function contextFor(request: Record<string, string>, before: (pipeline: Pipeline) => void = () => undefined): StageContext {
  let seen: StageContext | undefined;
  const pipeline = new Pipeline(
    [
      {
        mode: 'enforce',
        states: new Set(['RCPT']),
        acceptAction: 'DUNNO',
        stage: {
          name: 'peek',
          states: new Set(['RCPT']),
          evaluate(ctx): StageVerdict {
            seen = ctx;
            return { stage: 'peek', result: 'seen', reason: '', decision: { kind: 'continue' } };
          },
        },
      },
    ],
    { decisionTimeoutMs: 5000, faultAction: 'DUNNO', warnAction: 'WARN', clock: new ManualClock(), log: silent },
  );
  before(pipeline);
  pipeline.decide({ request: 'smtpd_access_policy', protocol_state: 'RCPT', ...request });
  assert.ok(seen, 'expected the stage to be shown the request');
  return seen;
}

describe('pipeline context: sender and recipient', () => {
  it('are plain data properties: getters made for each request cost the default stages, which all read the sender, more than the parse', () => {
    const ctx = contextFor({ sender: 'bob@example.org', recipient: 'alice@example.test' });
    for (const name of ['sender', 'recipient'] as const) {
      const descriptor = Object.getOwnPropertyDescriptor(ctx, name);
      assert.ok(descriptor && 'value' in descriptor && descriptor.get === undefined, `expected ${name} to be a data property`);
    }
    assert.equal('senderError' in ctx, false, 'a sender that parses has no error');
  });

  it('are parsed once for the request, whatever its stages read', () => {
    // Counted at the pipeline's memo of parses.
    const lookups = { senders: 0, recipients: 0 };
    const ctx = contextFor({ sender: 'bob@example.org', recipient: 'alice@example.test' }, (pipeline) => {
      const memos = pipeline as unknown as Record<keyof typeof lookups, { get(text: string): unknown }>;
      for (const name of ['senders', 'recipients'] as const) {
        const memo = memos[name];
        const get = memo.get.bind(memo);
        memo.get = (text) => ((lookups[name] += 1), get(text));
      }
    });
    assert.deepEqual(lookups, { senders: 1, recipients: 1 }, 'one parse of each for the request');
    assert.equal(ctx.sender?.kind === 'mailbox' && ctx.sender.mailbox.address, 'bob@example.org');
    assert.equal(ctx.recipient?.address, 'alice@example.test');
    assert.equal(ctx.senderError, undefined);
  });

  it('a sender that does not parse has its error and no sender; the null sender and a missing recipient read as before', () => {
    const broken = contextFor({ sender: 'bob@example..org', recipient: '' });
    assert.equal(broken.sender, undefined);
    assert.match(broken.senderError ?? '', /./, 'expected the reason the sender does not parse');
    assert.equal(broken.recipient, undefined);
    const bounce = contextFor({ sender: '', recipient: '<>' });
    assert.equal(bounce.sender?.kind, 'null');
    assert.equal(bounce.senderError, undefined);
    assert.equal(bounce.recipient, undefined, 'a null forward path is no recipient');
  });
});
