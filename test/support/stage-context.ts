/**
 * NAME
 *   test/support/stage-context - the StageContext the pipeline gives a stage, for tests that call one directly
 *
 * DESCRIPTION
 *   stageContext(request, given) is the context policy/pipeline builds for the policy request
 *   `request` (Postfix's attributes: sender, recipient, client_address, helo_name, instance,
 *   protocol_state...): it is taken from a Pipeline whose only stage records what it was shown,
 *   so the sender and recipient are parsed as the pipeline parses them (Postfix's internal form,
 *   no RFC 5321 size limits) and an attribute left out reads as the pipeline reads it (no
 *   protocol_state is RCPT, no client_name is 'unknown'). A copy of that code in a test drifted
 *   from it: a sender parsed strictly fails on the bare address Postfix sends, and the stage
 *   under test then saw a request no pipeline makes.
 *   `given` holds what does not come from the request: the clock (a ManualClock by default),
 *   the decision deadline in ms (deadlineMs, 10 s by default) or a timeLeft of the test's own,
 *   the pipeline's timers (a ManualTimers, systemTimers by default: the context's `timers`, which
 *   timeLeft counts down on and the stage waits on, so a test gives them here only), and the
 *   verdicts of the stages that ran before (earlier, none by default). The context's
 *   properties are the pipeline's own, as the pipeline made them.
 */

import { ManualClock } from './manual-time.js';
import { createLogger } from '../../src/core/log.js';
import { Pipeline } from '../../src/policy/pipeline.js';
import type { PolicyAttributes, ProtocolState, Stage, StageContext, StageVerdict } from '../../src/policy/types.js';

export interface GivenContext extends Partial<Pick<StageContext, 'clock' | 'timeLeft' | 'timers' | 'earlier'>> {
  /** policy.decisionTimeout: timeLeft counts down from it (unless timeLeft is given). */
  deadlineMs?: number;
}

const EVERY_STATE: ReadonlySet<ProtocolState> = new Set<ProtocolState>(['CONNECT', 'EHLO', 'HELO', 'MAIL', 'RCPT', 'DATA', 'END-OF-MESSAGE', 'VRFY', 'ETRN']);
const silent = createLogger('silent');

export function stageContext(request: PolicyAttributes, given: GivenContext = {}): StageContext {
  const { clock = new ManualClock(), deadlineMs = 10_000, timeLeft, timers, earlier = new Map<string, StageVerdict>() } = given;
  let shown: StageContext | undefined;
  const recorder: Stage = {
    name: 'stage-context',
    states: EVERY_STATE,
    evaluate(ctx: StageContext): StageVerdict {
      shown = ctx;
      return { stage: 'stage-context', result: 'shown', reason: '', decision: { kind: 'continue' } };
    },
  };
  const pipeline = new Pipeline([{ stage: recorder, mode: 'enforce', states: EVERY_STATE, acceptAction: 'DUNNO' }], {
    decisionTimeoutMs: deadlineMs,
    faultAction: 'DUNNO',
    warnAction: 'WARN',
    clock,
    timers,
    log: silent,
  });
  // Synchronous: the recorder answers at once, so decide() runs it before it returns.
  pipeline.decide(request);
  if (!shown) throw new Error(`stage-context: the pipeline ran no stage for ${JSON.stringify(request)}`);
  // The pipeline's own map of earlier verdicts holds the recorder's now.
  return { ...shown, earlier, ...(timeLeft ? { timeLeft } : {}) };
}
