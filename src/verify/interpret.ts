/**
 * NAME
 *   verify/interpret - what an SMTP reply at each step says about an address or a domain
 *
 * DESCRIPTION
 *   Pure functions from replies to outcomes. Only a reply at RCPT TO is evidence about the
 *   address (RFC 5321 §4.2.2: 550/553 mailbox unavailable or name not allowed); a refusal at the
 *   greeting, EHLO/HELO or MAIL FROM is the server's opinion of us (policy, blocklists) and is
 *   recorded on the domain, never as "this address does not exist". 4xx replies are never
 *   permanent, and neither is a 5xx that says nothing of the mailbox: "too many recipients"
 *   (552 is RFC 821's mistake for 452, RFC 5321 §4.5.3.1.10), a full mailbox (X.2.2, or 552
 *   "exceeded storage allocation", RFC 5321 §4.2.2: it exists), or a protocol error (500, 502, 503, 504). Greylisting (RFC 6647) is recognised by the usual enhanced codes and words so the
 *   domain can be left alone until a retry is worth it.
 */

import { clip } from '../core/text.js';
import { MAILBOX_FULL_TEXT, formatEnhanced, replyText } from '../smtp/reply.js';
import type { SmtpReply } from '../smtp/types.js';
import type { ReplyEvidence, SmtpStage } from './types.js';

export type RcptOutcome = 'accepted' | 'rejected' | 'refused' | 'greylisted' | 'tempfail' | 'too-many-recipients' | 'mailbox-full' | 'protocol-error';

// Only the word: "try again later" is also what a server says about a lookup failure or about
// us (no reverse DNS), and calling that greylisting would defer a domain's mail for days.
const GREYLIST_WORDS = /gr[ae]y/i;
// Postfix (smtpd_delay_reject=yes) and others report a refusal of the client, its HELO or its
// sender at RCPT: those 5xx are about us, not about the mailbox. "relay" counts only in a relay
// refusal (Postfix's "User unknown in relay recipient table" is about the mailbox); qmail writes
// its code after the text, "(#5.7.1)"; Exim's ACLs say "administrative prohibition"; Cisco's
// harvest limit says "too many invalid recipients"; qmail and Coremail refuse the null sender.
// The short words count only as words: the reply quotes the address, and "thelonious@" or
// "marble@" refused as unknown users were taken for refusals of our HELO or by an RBL. Only a
// letter or digit joins a word: "helo_name", "bad_helo" and "SPAMCOP_RBL" name them too.
// A refusal of our client itself (blocklists, reverse DNS, HELO), at MAIL as at RCPT.
const CLIENT_WORDS = /client host|(?<![a-z0-9])(?:helo|ehlo|rdns|dnsbls?|rbls?)(?![a-z0-9])|reverse dns|ptr record|blocked|black ?list|block ?list|spamhaus|reputation/i;
const ABOUT_US_WORDS = new RegExp(
  `${CLIENT_WORDS.source}|sender address|sender verif|null sender|relay(ing)? (access )?(denied|not permitted|prohibited)|unable to relay|not permitted to relay|rcpthosts|administrative prohibition|too many (invalid|bad|unknown) recipients|directory harvest|#5\\.7\\.\\d`,
  'i',
);
// Some providers give an unknown user an X.7 code (Yandex: "550 5.7.1 No such user!"); these words
// outweigh it. "not found" or "does not exist" count only about a user or mailbox: a policy
// refusal says them of us too ("550 5.7.1 Reverse DNS not found", "sending domain does not exist").
const NO_SUCH_USER_WORDS =
  /no such (user|mailbox|recipient|account)|(user|recipient|mailbox) unknown|unknown (user|recipient|mailbox)|(user|mailbox|recipient|account|address) (does not exist|doesn't exist|not found)/i;
// qmail refuses a second recipient after MAIL FROM:<>: the limit of a transaction, not a verdict.
const ONE_RECIPIENT_WORDS = /single envelope recipient|only one recipient/i;
// RFC 5321 §4.2.2-4.2.4: 500-504 are about the command, its arguments or its order.
const PROTOCOL_CODES: ReadonlySet<number> = new Set([500, 501, 502, 503, 504]);
// RFC 3207 §4 and RFC 4954 §6: 530, STARTTLS or authentication must come first.
const SESSION_REQUIREMENT_CODE = 530;

function enhancedOf(reply: SmtpReply): string | undefined {
  return reply.enhanced ? formatEnhanced(reply.enhanced) : undefined;
}

export function isGreylisting(reply: SmtpReply): boolean {
  return reply.code >= 400 && reply.code < 500 && GREYLIST_WORDS.test(replyText(reply));
}

/**
 * A 5xx at MAIL FROM:<> that refuses the null sender itself, so the domain cannot take bounces.
 * Not one that refuses our client whatever sender it names (a blocklist), asks for STARTTLS or
 * authentication first (530), or is about the command (500-504 without an X.1.x code naming
 * the sender, as "501 5.1.7 Bad sender address syntax" does).
 */
export function refusesNullSender(reply: SmtpReply): boolean {
  if (reply.code < 500 || reply.code === SESSION_REQUIREMENT_CODE || CLIENT_WORDS.test(replyText(reply))) return false;
  return !PROTOCOL_CODES.has(reply.code) || reply.enhanced?.subject === 1;
}

/**
 * A 5xx at RCPT is evidence about the mailbox unless it says otherwise: X.1.7/X.1.8 (our
 * sender's address or domain), words naming the client, HELO, sender or a policy, or an X.7.x
 * (security or policy, RFC 3463 §3.8) or X.3.x (mail system) code without words saying the
 * user does not exist are a refusal of us. An X.1.1-X.1.6 code names the address and wins.
 */
export function refusesUs(reply: SmtpReply): boolean {
  const e = reply.enhanced;
  if (e && e.subject === 1 && (e.detail === 7 || e.detail === 8)) return true;
  // X.1.1-X.1.6 name the destination address (RFC 3463 §3.2): the code outweighs the words.
  if (namesDestination(reply)) return false;
  const text = replyText(reply);
  if (ABOUT_US_WORDS.test(text)) return true;
  if (NO_SUCH_USER_WORDS.test(text)) return false;
  // X.7 security or policy, X.3 the mail system (postscreen's "550 5.3.2 Service currently unavailable").
  return e !== undefined && (e.subject === 7 || e.subject === 3);
}

/**
 * Whether a refusal at RCPT (refusesUs) would meet every recipient of the domain: one of our
 * sender (X.1.7/X.1.8) or one whose words name our client, HELO, sender or relaying. A bare
 * X.7/X.3 code is also what a restriction of one recipient gives ("554 5.7.1 <noreply@...>:
 * Recipient address rejected: Access denied"). Without the text (no-details mode) only the
 * code is left, and the refusal is taken as one of us.
 */
export function refusesEveryRecipient(e: ReplyEvidence): boolean {
  if (e.enhanced !== undefined && /^\d\.1\.[78]$/.test(e.enhanced)) return true;
  return e.text === undefined || ABOUT_US_WORDS.test(e.text);
}

function namesDestination(reply: SmtpReply): boolean {
  const e = reply.enhanced;
  return e !== undefined && e.subject === 1 && e.detail >= 1 && e.detail <= 6;
}

/**
 * A 5xx at RCPT that says nothing about the mailbox: the mailbox is full (X.2.2, or the words,
 * or a 552, RFC 5321's "exceeded storage allocation", without a code or words naming the
 * address as unknown: it exists), or a 500/502/503/504, which is about the
 * command or its order, without an X.1.x code naming the address. A 550 with X.5.0 is not one:
 * Outlook.com answers an unknown user with "550 5.5.0 Requested action not taken: mailbox
 * unavailable".
 */
function saysNothingOfMailbox(reply: SmtpReply): 'mailbox-full' | 'protocol-error' | undefined {
  const e = reply.enhanced;
  if (e && e.subject === 2 && e.detail === 2) return 'mailbox-full';
  if (!namesDestination(reply)) {
    const text = replyText(reply);
    if (MAILBOX_FULL_TEXT.test(text) || (reply.code === 552 && !NO_SUCH_USER_WORDS.test(text))) return 'mailbox-full';
  }
  if (PROTOCOL_CODES.has(reply.code) && !(e && e.subject === 1)) return 'protocol-error';
  // X.5.1-X.5.5: invalid command, syntax, arguments, protocol (X.5.3 is handled as too many
  // recipients); X.5.0 is not, since Outlook.com gives it to an unknown user.
  if (e && e.subject === 5 && e.detail >= 1 && e.detail <= 5) return 'protocol-error';
  return undefined;
}

/** RFC 5321 §4.2.3's text of 452: the server's storage, not the mailbox's. */
const SERVER_STORAGE_TEXT = /insufficient (system )?storage/i;

export function classifyRcpt(reply: SmtpReply): RcptOutcome {
  if (reply.code >= 200 && reply.code < 300) return 'accepted';
  // RFC 5321 §4.5.3.1.10: 452 is how a server says "no more recipients in this transaction",
  // and a 552 saying so is RFC 821's mistake, to be taken as the same temporary limit.
  if (
    (reply.code === 452 || reply.code === 552) && (enhancedOf(reply)?.endsWith('.5.3') || /too many recipients/i.test(replyText(reply))) ||
    (reply.code >= 500 && ONE_RECIPIENT_WORDS.test(replyText(reply)))
  ) {
    return 'too-many-recipients';
  }
  if (reply.code >= 500) return refusesUs(reply) ? 'refused' : (saysNothingOfMailbox(reply) ?? 'rejected');
  // "452 4.2.2 Mailbox full" is how most servers say it (RFC 3463 §3.3): the mailbox exists. Not
  // the server's own storage: an X.3.x, or RFC 5321's own 452 text, "Insufficient system storage".
  const e = reply.enhanced;
  const text = replyText(reply);
  if ((e && e.subject === 2 && e.detail === 2) || (MAILBOX_FULL_TEXT.test(text) && !SERVER_STORAGE_TEXT.test(text) && !(e && e.subject === 3))) return 'mailbox-full';
  return isGreylisting(reply) ? 'greylisted' : 'tempfail';
}

export type VrfyOutcome = 'exists' | 'does-not-exist' | 'no-answer';

/** RFC 5321 §3.5.3: 250/251 confirm, 550/551/553 deny; 252 and 5xx "not implemented" say nothing. */
export function classifyVrfy(reply: SmtpReply): VrfyOutcome {
  if (reply.code === 250 || reply.code === 251) return 'exists';
  // Postfix applies its restrictions to VRFY: a refusal of us there says nothing of the address;
  // nor does a refusal of the command itself ("550 5.5.1 VRFY not allowed", "550 VRFY disabled").
  const refusesCommand = !namesDestination(reply) && (reply.enhanced?.subject === 5 || /\bvrfy\b/i.test(replyText(reply)));
  if ((reply.code === 550 || reply.code === 551 || reply.code === 553) && !refusesUs(reply) && !refusesCommand) return 'does-not-exist';
  return 'no-answer';
}

/**
 * The most of a reply's text that evidence keeps. The SMTP client takes replies of up to 100
 * lines of 2,048 octets (smtp/reply), and an exchanger the sender's domain names (its owner's
 * own) answered with all of it: 200 KB in each decision's log line and twice in each cached
 * verdict, one per local part the client tried. Twice RFC 5321's longest reply line
 * (§4.5.3.1.5) is more than any real refusal says.
 */
export const MAX_EVIDENCE_TEXT = 1024;

export function evidence(stage: SmtpStage, reply: SmtpReply, noDetails: boolean): ReplyEvidence {
  const enhanced = enhancedOf(reply);
  const text = noDetails ? undefined : replyText(reply);
  return {
    stage,
    code: reply.code,
    ...(enhanced ? { enhanced } : {}),
    ...(text === undefined ? {} : { text: clip(text, MAX_EVIDENCE_TEXT) }),
  };
}

/** "550 5.1.1 User unknown" or "550 5.1.1" in no-details mode, for one-line descriptions. */
export function describeReply(e: ReplyEvidence): string {
  return [String(e.code), e.enhanced, e.text].filter(Boolean).join(' ');
}
