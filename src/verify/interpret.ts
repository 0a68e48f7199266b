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

import type { SmtpReply } from '../smtp/types.js';
import type { ReplyEvidence, SmtpStage } from './types.js';

export type RcptOutcome = 'accepted' | 'rejected' | 'greylisted' | 'tempfail' | 'too-many-recipients';

const GREYLIST_WORDS = /gr[ae]y|try (?:again )?later|retry|temporar/i;

function enhancedOf(reply: SmtpReply): string | undefined {
  const e = reply.enhanced;
  return e ? `${e.klass}.${e.subject}.${e.detail}` : undefined;
}

export function replyText(reply: SmtpReply): string {
  return reply.lines.join(' ').trim();
}

export function isGreylisting(reply: SmtpReply): boolean {
  if (reply.code < 400 || reply.code >= 500) return false;
  const enhanced = enhancedOf(reply);
  return enhanced === '4.7.1' || enhanced === '4.2.0' || enhanced === '4.7.0' || GREYLIST_WORDS.test(replyText(reply));
}

export function classifyRcpt(reply: SmtpReply): RcptOutcome {
  if (reply.code >= 200 && reply.code < 300) return 'accepted';
  if (reply.code >= 500) return 'rejected';
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
