/**
 * NAME
 *   bounce - reading bounce messages and keeping the suppression list
 *
 * DESCRIPTION
 *   parseBounce() turns an RFC 3464 report or a prose bounce into a typed BounceReport;
 *   SuppressionList records the recipients a provably genuine bounce (BATV, VERP) shows as gone.
 */

export { BOUNCE_LIMITS, parseBounce, type BounceParseOptions } from './parse.js';
export { describeStatus, findEnhancedStatus, isHardAddressFailure, parseEnhancedStatus, statusCategory, type EnhancedStatus, type StatusCategory } from './status.js';
export { SUPPRESSION_PREFIX, SuppressionList, type BounceOutcome, type BounceProofConfig, type NewSuppression, type SuppressionEntry, type SuppressionOptions, type SuppressionProof } from './suppression.js';
export type { BounceFormat, BounceParseResult, BounceRecipient, BounceReport, DsnAction, NotBounceKind, OriginalMessage } from './types.js';
