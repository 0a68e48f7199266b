/**
 * NAME
 *   bounce/status - RFC 3463 enhanced mail system status codes, and what a bounce proves
 *
 * DESCRIPTION
 *   `class.subject.detail`: class 2 success, 4 persistent transient failure, 5 permanent
 *   failure; the subject names the area (addressing, mailbox, system, network, protocol, content,
 *   security). Many MTAs write Status: 5.0.0 and keep the real code in the diagnostic text, so
 *   findEnhancedStatus() picks a code out of free text and refineStatus() prefers it when the
 *   declared one is only x.0.0 of the same class.
 *
 *   isHardAddressFailure() is the one rule for suppression: only a permanent failure that says
 *   the address itself is gone (5.1.1 user unknown, 5.1.2 no such system, 5.1.3 bad syntax,
 *   5.1.6 moved, 5.1.10 null MX, 5.2.1 disabled), or a 550-554 with an undefined enhanced code
 *   whose text says the user is unknown. Full mailboxes (5.2.2, or a text saying so whatever the
 *   code), policy blocks (5.7.x), a text about us (our sender refused, a blocklist, our account)
 *   and every 4.x.x or 4xx reply never suppress: the address may work tomorrow or for other senders.
 *
 * LIMITS
 *   A Status field is read in its first 200 characters; free text (findEnhancedStatus,
 *   findSmtpCode) in its first 4,000. Text that holds no code gives undefined, never an error.
 *
 * RFC
 *   RFC 3463 (codes), RFC 5248 (registry), RFC 7505 (5.1.10 null MX), RFC 5321 §4.2 (reply codes).
 */

import { MAILBOX_FULL_TEXT } from '../smtp/reply.js';

export type StatusClass = 2 | 4 | 5;

export interface EnhancedStatus {
  statusClass: StatusClass;
  subject: number;
  detail: number;
  /** Normalised text, e.g. "5.1.1". */
  code: string;
}

export type StatusCategory = 'other' | 'addressing' | 'mailbox' | 'mail-system' | 'network' | 'protocol' | 'content' | 'security';

const CATEGORIES: StatusCategory[] = ['other', 'addressing', 'mailbox', 'mail-system', 'network', 'protocol', 'content', 'security'];

const DESCRIPTIONS: Record<string, string> = {
  '0.0': 'other undefined status',
  '1.0': 'other address status',
  '1.1': 'bad destination mailbox address (user unknown)',
  '1.2': 'bad destination system address',
  '1.3': 'bad destination mailbox address syntax',
  '1.4': 'destination mailbox address ambiguous',
  '1.5': 'destination address valid',
  '1.6': 'destination mailbox has moved, no forwarding address',
  '1.7': "bad sender's mailbox address syntax",
  '1.8': "bad sender's system address",
  '1.10': 'recipient address has null MX',
  '2.0': 'other or undefined mailbox status',
  '2.1': 'mailbox disabled, not accepting messages',
  '2.2': 'mailbox full',
  '2.3': 'message length exceeds administrative limit',
  '2.4': 'mailing list expansion problem',
  '3.0': 'other or undefined mail system status',
  '3.1': 'mail system full',
  '3.2': 'system not accepting network messages',
  '3.3': 'system not capable of selected features',
  '3.4': 'message too big for system',
  '3.5': 'system incorrectly configured',
  '4.0': 'other or undefined network or routing status',
  '4.1': 'no answer from host',
  '4.2': 'bad connection',
  '4.3': 'directory server failure',
  '4.4': 'unable to route',
  '4.5': 'mail system congestion',
  '4.6': 'routing loop detected',
  '4.7': 'delivery time expired',
  '5.0': 'other or undefined protocol status',
  '5.1': 'invalid command',
  '5.2': 'syntax error',
  '5.3': 'too many recipients',
  '5.4': 'invalid command arguments',
  '5.5': 'wrong protocol version',
  '6.0': 'other or undefined media error',
  '6.1': 'media not supported',
  '6.2': 'conversion required and prohibited',
  '6.3': 'conversion required but not supported',
  '7.0': 'other or undefined security status',
  '7.1': 'delivery not authorized, message refused',
  '7.2': 'mailing list expansion prohibited',
  '7.3': 'security conversion required but not possible',
  '7.4': 'security features not supported',
  '7.5': 'cryptographic failure',
  '7.6': 'cryptographic algorithm not supported',
  '7.7': 'message integrity failure',
  '7.26': 'multiple authentication checks failed',
};

const HARD_CODES = new Set(['5.1.1', '5.1.2', '5.1.3', '5.1.6', '5.1.10', '5.2.1']);
const USER_UNKNOWN = /\b(user unknown|unknown user|no such (user|mailbox|recipient|address)|(mailbox|address|recipient|user) (does not exist|doesn't exist|not found|unknown|unavailable)|invalid (recipient|mailbox|address)|recipnotfound|not our customer|account (has been )?(disabled|deactivated|closed)|(doesn't|does not) have an? \S+ account)\b/i;

const STATUS_TEXT = /^\s*([245])\.(\d{1,3})\.(\d{1,3})\b/;
const STATUS_IN_TEXT = /(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)/;

function build(c: string, s: string, d: string): EnhancedStatus {
  const statusClass = Number(c) as StatusClass;
  const subject = Number(s);
  const detail = Number(d);
  return { statusClass, subject, detail, code: `${statusClass}.${subject}.${detail}` };
}

/** A Status field value ("5.1.1", "5.1.1 (comment)"); undefined when it is not one. */
export function parseEnhancedStatus(text: string): EnhancedStatus | undefined {
  const match = STATUS_TEXT.exec(text.slice(0, 200));
  return match ? build(match[1]!, match[2]!, match[3]!) : undefined;
}

/** The first enhanced code anywhere in free text (diagnostics, bounce prose). */
export function findEnhancedStatus(text: string): EnhancedStatus | undefined {
  const match = STATUS_IN_TEXT.exec(text.slice(0, 4000));
  return match ? build(match[1]!, match[2]!, match[3]!) : undefined;
}

/**
 * The first SMTP reply code (RFC 5321: 2yz-5yz) in free text. A colon and a space may follow it:
 * Yahoo writes "554: delivery error: dd This user doesn't have a yahoo.com account".
 */
export function findSmtpCode(text: string): number | undefined {
  const match = /(?<![\d.])([245][0-5]\d)(?=[\s-]|:\s|$)/.exec(text.slice(0, 4000));
  return match ? Number(match[1]) : undefined;
}

/** Prefers the diagnostic's more specific code over a declared x.0.0 of the same class. */
export function refineStatus(declared: EnhancedStatus | undefined, diagnostic: string | undefined): EnhancedStatus | undefined {
  const found = diagnostic ? findEnhancedStatus(diagnostic) : undefined;
  if (!declared) return found;
  if (found && declared.subject === 0 && declared.detail === 0 && found.statusClass === declared.statusClass) return found;
  return declared;
}

export function statusCategory(status: EnhancedStatus): StatusCategory {
  return CATEGORIES[status.subject] ?? 'other';
}

export function describeStatus(status: EnhancedStatus): string {
  const kind = status.statusClass === 2 ? 'success' : status.statusClass === 4 ? 'temporary failure' : 'permanent failure';
  const what = DESCRIPTIONS[`${status.subject}.${status.detail}`] ?? DESCRIPTIONS[`${status.subject}.0`] ?? 'unregistered status';
  return `${kind}: ${what}`;
}

// A refusal of our sender, our account or our message, whatever code it carries: Exim's sender
// verification quotes the 5.1.1 its own callout got for OUR address, Postfix's
// reject_unlisted_sender says "User unknown" about our sender, and a policy refusal may use
// RFC 5321's stock "mailbox unavailable".
const ABOUT_US = /sender address rejected|sender verif|verification failed for|domain of sender|your account|policy reasons|\bspam\b|blocked|black ?list|\brbl\b|client host/i;

/** Whether a bounce with this status proves that the address does not exist (see DESCRIPTION). */
export function isHardAddressFailure(status: EnhancedStatus | undefined, smtpCode: number | undefined, diagnostic: string | undefined): boolean {
  // X.7.X is security or policy (RFC 3463 §3.8) whatever the text says: "550 5.7.0 Requested
  // action not taken: mailbox unavailable" is a refusal of the message, not of the address.
  if (status && (status.statusClass !== 5 || status.subject === 7)) return false;
  // The remote's own reply was temporary (an MTA that gave up after its queue lifetime and
  // labelled the failure 5.1.1 anyway): the remote never said the address is gone.
  if (smtpCode !== undefined && smtpCode < 500) return false;
  // A full mailbox exists: "552 Mailbox unavailable - over quota" proves nothing about the address.
  if (ABOUT_US.test(diagnostic ?? '') || MAILBOX_FULL_TEXT.test(diagnostic ?? '')) return false;
  if (status && HARD_CODES.has(status.code)) return true;
  const undefinedCode = !status || status.detail === 0;
  // 552 and 554 too, for the providers that use them for an unknown user (AOL: "552 ... mailbox
  // not found", Yahoo: "554 delivery error: dd This user doesn't have a yahoo.com account").
  return undefinedCode && [550, 551, 552, 553, 554].includes(smtpCode ?? 0) && USER_UNKNOWN.test(diagnostic ?? '');
}
