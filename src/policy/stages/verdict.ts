/**
 * NAME
 *   stages/verdict - the StageVerdict maker the stages share
 *
 * DESCRIPTION
 *   stageVerdict(stage) returns the function a stage builds its verdicts with:
 *   (result, reason, decision, evidence?) => StageVerdict. A verdict without evidence has no
 *   `evidence` key at all, not one set to undefined, so that its log line and the comparisons of
 *   the tests see the same value whichever stage made it. A stage that counts its results or
 *   derives its decision (greylist, batv, allowlist) wraps this maker instead of writing the
 *   object out again.
 */

import type { Decision, StageVerdict } from '../types.js';

export type VerdictMaker = (result: string, reason: string, decision: Decision, evidence?: unknown) => StageVerdict;

export function stageVerdict(stage: string): VerdictMaker {
  return (result, reason, decision, evidence) => (evidence === undefined ? { stage, result, reason, decision } : { stage, result, reason, decision, evidence });
}
