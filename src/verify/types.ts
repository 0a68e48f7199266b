/**
 * NAME
 *   verify/types - the verdict model of a callout
 *
 * DESCRIPTION
 *   Six verdicts, each with a specific reason and the evidence behind it:
 *     deliverable     the address's own exchanger accepted RCPT TO (and the domain is no catch-all)
 *     undeliverable   a 5xx at RCPT TO: evidence about the address itself
 *     risky           the domain accepts any local part (catch-all), or refuses MAIL FROM:<> and so
 *                     cannot take bounces
 *     unknown         no definite answer: greylisted, timed out, unreachable, refused at connect,
 *                     greeting, HELO or MAIL, or at RCPT with a reply about us (policy, blocklist):
 *                     that is about us, not the address; rate-limited
 *     invalid         the address is not syntactically valid
 *     no-mail-domain  NXDOMAIN, null MX (RFC 7505) or no usable exchanger
 *   The catch-all probe has four states, never a boolean (AfterShip email-verifier #221 shows
 *   what one flag for three meanings does).
 */

import type { MxHost } from '../dns/types.js';
import type { TranscriptEntry } from '../smtp/types.js';

export type Verdict = 'deliverable' | 'undeliverable' | 'risky' | 'unknown' | 'invalid' | 'no-mail-domain';

export type VerdictReason =
  | 'accepted'
  | 'rejected-at-rcpt'
  | 'catch-all'
  | 'catch-all-unknown'
  | 'null-sender-refused'
  | 'postmaster-refused'
  | 'greylisted'
  | 'tempfail-at-rcpt'
  | 'timeout'
  | 'unreachable'
  | 'refused-at-greeting'
  | 'refused-at-helo'
  | 'refused-at-mail'
  | 'refused-at-rcpt'
  | 'tls-unavailable'
  | 'protocol-error'
  | 'smtputf8-unsupported'
  | 'own-probe-sender'
  | 'rate-limited'
  | 'target-refused'
  | 'dns-tempfail'
  | 'syntax'
  | 'nxdomain'
  | 'null-mx'
  | 'no-mail-host';

/**
 * Failures that are no refusal of us but say the domain will not answer us for a while (its
 * exchangers could not be reached, did not answer in time, hung up on us or answered with what
 * is no SMTP reply): verify/engine remembers them on the domain, and verify/cache keeps that
 * record for cache.tempfail only, as it does a 4xx. Not remembered, a server that hangs up on
 * MAIL FROM:<> was asked again by every other sender of its domain.
 */
export const TEMPORARY_DOMAIN_FAILURES: ReadonlySet<VerdictReason> = new Set<VerdictReason>(['unreachable', 'timeout', 'protocol-error']);

export type ProbeState = 'not-run' | 'accepted' | 'refused' | 'inconclusive';

/** The dialogue step a reply or failure belongs to. */
export type SmtpStage = 'connect' | 'greeting' | 'ehlo' | 'helo' | 'starttls' | 'mail' | 'rcpt' | 'rset' | 'quit';

export interface ReplyEvidence {
  stage: SmtpStage;
  code: number;
  /** RFC 3463 enhanced status code, e.g. "5.1.1". */
  enhanced?: string;
  /** The server's text; omitted in no-details mode. */
  text?: string;
}

export interface ProbeAttempt {
  host: string;
  address: string;
  port: number;
  tls: boolean;
  /** How the attempt ended, in words (e.g. "550 at RCPT", "greeting timeout after 5000 ms"). */
  outcome: string;
  durationMs: number;
  transcript: TranscriptEntry[];
}

export interface VerifyResult {
  address: string;
  verdict: Verdict;
  reason: VerdictReason;
  /** One line in plain words: what was found and why it means this verdict. */
  description: string;
  /** The decisive reply, when a server gave one. */
  reply?: ReplyEvidence;
  catchAll: ProbeState;
  postmaster: ProbeState;
  /** Where the answer came from: a dialogue now, the address cache, or a domain record. */
  source: 'probe' | 'address-cache' | 'domain-cache' | 'none';
  /** True when a cached answer past its refresh time was served while a refresh runs. */
  stale: boolean;
  mxHosts: MxHost[];
  attempts: ProbeAttempt[];
  checkedAt: number;
  durationMs: number;
}
