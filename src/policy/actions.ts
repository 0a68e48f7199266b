/**
 * NAME
 *   policy/actions - decisions as Postfix access(5) actions
 *
 * DESCRIPTION
 *   The one place where a Decision becomes the text after `action=`. Texts are made safe for an
 *   SMTP reply: no CR, LF or NUL (they would end the policy reply early, or split the SMTP
 *   reply), printable ASCII only, and short enough that Postfix's reply with its own prefix
 *   stays under the 512-octet line limit of RFC 5321 §4.5.3.1.5: Postfix writes
 *   "550 5.7.1 <NAME>: Recipient address rejected: TEXT" (smtpd_check.c), NAME being the
 *   address or host the restriction is about, so the room for TEXT depends on it
 *   (replyTextLimit); a text keeps at least MIN_TEXT characters whatever NAME's length.
 *
 *   A reply carries one enhanced status code (RFC 3463, RFC 2034 §3), in the class of the reply
 *   it goes with (RFC 3463 §2): the code's for `4NN`/`5NN`, 4 for DEFER_IF_PERMIT (Postfix
 *   answers it with $access_map_defer_code, 450). As Postfix does with every access(5) action
 *   (check_table_result: dsn_split, then smtpd_check_reject), a text that begins with an enhanced
 *   code keeps it, in the reply's class, and the stage's code goes before a text without one:
 *   the stage's code in front of a text's own would leave Postfix sending the text's as words
 *   ("451 4.2.0 4.7.1 Later"). A configured code of another class is given the reply's class
 *   here too, so that the action the log records is the one the client sees.
 */

import { MAX_HEADER_LINE, clip } from '../core/text.js';
import { formatEnhanced, parseEnhancedStatus } from '../smtp/reply.js';
import type { Decision } from './types.js';

const MAX_TEXT = 400;
const MIN_TEXT = 80;
/** The longest reply line, CRLF included (RFC 5321 §4.5.3.1.5). */
const MAX_REPLY_LINE = 512;
/** What Postfix writes around NAME and TEXT at most: "550 5.123.123 <", ">: Recipient address rejected: ", CRLF. */
const POSTFIX_REPLY_OVERHEAD = '550 5.123.123 <'.length + '>: Recipient address rejected: '.length + 2;

/** The room for a reply's text when Postfix quotes `name` before it. */
export function replyTextLimit(name: string): number {
  return Math.max(MIN_TEXT, Math.min(MAX_TEXT, MAX_REPLY_LINE - POSTFIX_REPLY_OVERHEAD - Buffer.byteLength(name)));
}

export function safeText(text: string, maxLength = MAX_TEXT): string {
  // Mailbox addresses may be UTF-8 (RFC 6531); SMTP replies without SMTPUTF8 are ASCII.
  const cleaned = text.replace(/[\r\n\0]+/g, ' ').replace(/[^\x20-\x7e]/g, '?').trim();
  return clip(cleaned, maxLength);
}

/** A header field for PREPEND: `Name: value`, folded to one line, field name per RFC 5322 §3.6.8. */
export function safeHeader(header: string): string | undefined {
  // Unfold, and keep to printable ASCII: a bare CR or NUL would make the policy reply unsendable.
  const line = header.replace(/[\r\n]+[ \t]*/g, ' ').replace(/[^\x20-\x7e\t]/g, '?');
  return /^[\x21-\x39\x3b-\x7e]+:\s?\S/.test(line) ? line.slice(0, MAX_HEADER_LINE) : undefined;
}

export function actionFor(decision: Exclude<Decision, { kind: 'continue' } | { kind: 'prepend' }>, acceptAction = 'DUNNO', textLimit = MAX_TEXT): string {
  switch (decision.kind) {
    case 'accept':
      return acceptAction;
    case 'reject':
    case 'defer':
      return `${decision.code} ${withOneCode(safeText(decision.text, textLimit), decision.enhanced, Math.floor(decision.code / 100))}`;
    case 'defer-if-permit':
      // Without a code of the stage's (RFC 7372's 4.7.24 for SPF) or the text's, Postfix adds 4.7.1.
      return `DEFER_IF_PERMIT ${withOneCode(safeText(decision.text, textLimit), decision.enhanced, 4)}`;
  }
}

/**
 * `text` led by one enhanced code of class `klass`: its own if it begins with one, else
 * `enhanced`. A text that merely starts with a digit ("300 seconds to wait") has none of its own.
 */
function withOneCode(text: string, enhanced: string | undefined, klass: number): string {
  const own = parseEnhancedStatus(text);
  const [code, rest] = own ? [formatEnhanced(own.status), own.rest] : [enhanced, text];
  return [code === undefined ? undefined : inClass(code, klass), rest].filter((part) => part).join(' ');
}

/** `enhanced` with the class `klass`; left as it is when it is no enhanced code (Postfix then adds its own). */
function inClass(enhanced: string, klass: number): string {
  const parsed = parseEnhancedStatus(enhanced);
  return parsed && parsed.status.klass !== klass ? `${klass}.${parsed.status.subject}.${parsed.status.detail}` : enhanced;
}
