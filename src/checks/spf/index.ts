/**
 * NAME
 *   checks/spf - Sender Policy Framework (RFC 7208) evaluation
 *
 * DESCRIPTION
 *   The one import point of the SPF check: evaluateSpf() for a request, and the pieces Sender
 *   ID (src/checks/senderid) reuses: evaluatePolicy() with its own record selection.
 */

export {
  BUILTIN_DEFAULT_EXPLANATION,
  evaluatePolicy,
  evaluateSpf,
  selectSpf1Record,
  type PolicyRequest,
  type RecordSelection,
  type RecordSelector,
} from './evaluate.js';
export { parseDomainSpec, parseMacroString, type MacroString } from './macro.js';
export { parseRecordTerms, type Directive, type Mechanism, type ParsedRecord } from './record.js';
export {
  DEFAULT_SPF_LIMITS,
  SPF_RESULTS,
  type SpfIdentity,
  type SpfLimits,
  type SpfOptions,
  type SpfRequest,
  type SpfResult,
  type SpfTraceEntry,
  type SpfVerdict,
} from './types.js';
