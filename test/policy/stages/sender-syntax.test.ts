// The sender-syntax stage called directly with the contexts the pipeline builds (test/support/stage-context).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { validateConfig } from '../../../src/config/schema.js';
import { createLogger } from '../../../src/core/log.js';
import { buildPipeline } from '../../../src/policy/pipeline.js';
import { MemoryStore } from '../../../src/store/index.js';
import { ManualClock } from '../../support/manual-time.js';
import { senderSyntaxStage } from '../../../src/policy/stages/sender-syntax.js';
import type { Stage, StageContext } from '../../../src/policy/types.js';
import { stageContext } from '../../support/stage-context.js';

/** A request at MAIL: the sender as Postfix sends it. */
function context(sender: string): StageContext {
  return stageContext({ protocol_state: 'MAIL', client_address: '192.0.2.1', helo_name: 'mx.remote.example', sender, recipient: '', instance: 'msg-1' });
}

function stage(extra: Record<string, unknown> = {}): Stage {
  return senderSyntaxStage.create(senderSyntaxStage.options.parse(extra) as never, {} as never) as Stage;
}

describe('sender-syntax stage', () => {
  it('takes the null sender (bounces, RFC 5321 §4.5.5) and a sender that parses, and says which', async () => {
    const s = stage();
    assert.deepEqual(await s.evaluate(context('')), { stage: 'sender-syntax', result: 'valid', reason: 'null sender', decision: { kind: 'continue' } });
    for (const sender of ['user@example.org', 'john doe@example.org', 'user@[192.0.2.1]']) {
      assert.deepEqual(await s.evaluate(context(sender)), { stage: 'sender-syntax', result: 'valid', reason: 'sender parses', decision: { kind: 'continue' } }, sender);
    }
  });

  it('refuses a sender that does not parse with 501 5.7.1, naming the rule it broke and where', async () => {
    const verdict = await stage().evaluate(context('user@192.0.2.1'));
    const reason = '<user@192.0.2.1>: all-numeric top-level label (an IP address needs brackets: [192.0.2.1]) at 13';
    assert.deepEqual(verdict, {
      stage: 'sender-syntax',
      result: 'invalid',
      reason,
      decision: { kind: 'reject', code: 501, enhanced: '5.7.1', text: `Bad sender address syntax: ${reason}` },
    });
  });

  it('names the missing \'@\' or domain of a sender with a space, not the space (john doe@example.org is a sender Postfix sends)', async () => {
    const reasons = await Promise.all(['a b', 'a b@', 'a b@x y'].map(async (sender) => (await stage().evaluate(context(sender))).reason));
    assert.deepEqual(reasons, ["<a b>: missing '@' at 3", '<a b@>: empty domain at 4', '<a b@x y>: character not allowed in a domain at 5']);
  });

  it('answers with the configured code, enhanced code and text, the reason after it', async () => {
    const verdict = await stage({ code: 553, enhanced: '5.1.7', text: 'Malformed sender' }).evaluate(context('user@example..org'));
    assert.deepEqual(verdict.decision, { kind: 'reject', code: 553, enhanced: '5.1.7', text: `Malformed sender: ${verdict.reason}` });
  });

  it('refuses a temporary code or one that is no enhanced status code of class 5: the sender will not parse on a retry', () => {
    for (const [option, value] of [['code', 450], ['code', 600], ['enhanced', '4.7.1'], ['enhanced', '5.7.1x'], ['enhanced', '5.7'], ['enhanced', '5.1234.1']] as const) {
      const parsed = senderSyntaxStage.options.safeParse({ [option]: value });
      assert.equal(parsed.success, false, `${option}: ${value}`);
    }
    assert.equal(
      senderSyntaxStage.options.safeParse({ enhanced: '4.7.1' }).error?.issues[0]?.message,
      'expected an enhanced status code of class 5, such as 5.7.1 (RFC 3463: class.subject.detail, each of 1 to 3 digits)',
    );
  });

  it('refuses a {word} in its text, which takes no placeholders (the sender and reason follow it)', () => {
    assert.throws(() => stage({ text: 'Bad sender {sender}' }), { code: 'CONFIG_INVALID', message: 'text: unknown placeholder {sender}; this text takes no placeholders' });
  });

  it('is a stage the configuration can name, run at MAIL and RCPT by default', async () => {
    const config = validateConfig({ policy: { stages: [{ name: 'sender-syntax', code: 553 }] } });
    assert.equal(config.policy.stages[0]?.name, 'sender-syntax');
    const clock = new ManualClock();
    const pipeline = buildPipeline(config, { resolver: undefined as never, store: new MemoryStore({ clock }), clock, log: createLogger('silent') });
    for (const [state, recipient] of [['MAIL', ''], ['RCPT', 'rcpt@example.org']] as const) {
      const outcome = await pipeline.decide({ request: 'smtpd_access_policy', protocol_state: state, client_address: '192.0.2.1', sender: 'user@192.0.2.1', recipient, instance: `i-${state}` });
      assert.match(outcome.action, /^553 5\.7\.1 Bad sender address syntax: /, state);
    }
  });
});
