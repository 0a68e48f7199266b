/**
 * NAME
 *   verify/interpret - what an SMTP reply at each step says about an address or a domain
 *
 * DESCRIPTION
 *   Pure functions from replies to outcomes. Only a reply at RCPT TO is evidence about the
 *   address (RFC 5321 §4.2.2: 550/553 mailbox unavailable or name not allowed); a refusal at the
 *   greeting, EHLO/HELO or MAIL FROM is the server's opinion of us (policy, blocklists) and is
 *   recorded on the domain, never as "this address does not exist". 4xx replies are never
 *   permanent. Greylisting (RFC 6647) is recognised by the usual enhanced codes and words so the
 *   domain can be left alone until a retry is worth it.
 */

import { formatEnhanced, replyText } from '../smtp/reply.js';
import type { SmtpReply } from '../smtp/types.js';
import type { ReplyEvidence, SmtpStage } from './types.js';

export type RcptOutcome = 'accepted' | 'rejected' | 'refused' | 'greylisted' | 'tempfail' | 'too-many-recipients';

// Only the word: "try again later" is also what a server says about a lookup failure or about
// us (no reverse DNS), and calling that greylisting would defer a domain's mail for days.
const GREYLIST_WORDS = /gr[ae]y/i;
// Postfix (smtpd_delay_reject=yes) and others report a refusal of the client, its HELO or its
// sender at RCPT: those 5xx are about us, not about the mailbox.
const ABOUT_US_WORDS = /client host|sender address|helo|ehlo|blocked|black ?list|block ?list|spamhaus|reputation|rbl|relay/i;

function enhancedOf(reply: SmtpReply): string | undefined {
  return reply.enhanced ? formatEnhanced(reply.enhanced) : undefined;
}

export function isGreylisting(reply: SmtpReply): boolean {
  return reply.code >= 400 && reply.code < 500 && GREYLIST_WORDS.test(replyText(reply));
}

/**
 * A 5xx at RCPT is evidence about the mailbox unless it says otherwise: an X.7.x code (security
 * or policy, RFC 3463 §3.8), X.1.7/X.1.8 (our sender's address or domain), or words naming the
 * client, HELO or sender are a refusal of us.
 */
function refusesUs(reply: SmtpReply): boolean {
  const e = reply.enhanced;
  if (e && (e.subject === 7 || (e.subject === 1 && (e.detail === 7 || e.detail === 8)))) return true;
  return ABOUT_US_WORDS.test(replyText(reply));
}

export function classifyRcpt(reply: SmtpReply): RcptOutcome {
  if (reply.code >= 200 && reply.code < 300) return 'accepted';
  if (reply.code >= 500) return refusesUs(reply) ? 'refused' : 'rejected';
  // RFC 5321 §4.5.3.1.10: 452 is how a server says "no more recipients in this transaction".
  if (reply.code === 452 && (enhancedOf(reply) === '4.5.3' || /too many|recipients/i.test(replyText(reply)))) {
    return 'too-many-recipients';
  }
  return isGreylisting(reply) ? 'greylisted' : 'tempfail';
}

export type VrfyOutcome = 'exists' | 'does-not-exist' | 'no-answer';

/** RFC 5321 §3.5.3: 250/251 confirm, 550/551/553 deny; 252 and 5xx "not implemented" say nothing. */
export function classifyVrfy(reply: SmtpReply): VrfyOutcome {
  if (reply.code === 250 || reply.code === 251) return 'exists';
  if (reply.code === 550 || reply.code === 551 || reply.code === 553) return 'does-not-exist';
  return 'no-answer';
}

export function evidence(stage: SmtpStage, reply: SmtpReply, noDetails: boolean): ReplyEvidence {
  const enhanced = enhancedOf(reply);
  return {
    stage,
    code: reply.code,
    ...(enhanced ? { enhanced } : {}),
    ...(noDetails ? {} : { text: replyText(reply) }),
  };
}

/** "550 5.1.1 User unknown" or "550 5.1.1" in no-details mode, for one-line descriptions. */
export function describeReply(e: ReplyEvidence): string {
  return [String(e.code), e.enhanced, e.text].filter(Boolean).join(' ');
}
