/**
 * NAME
 *   policy/actions - decisions as Postfix access(5) actions
 *
 * DESCRIPTION
 *   The one place where a Decision becomes the text after `action=`. Texts are made safe for an
 *   SMTP reply: no CR, LF or NUL (they would end the policy reply early, or split the SMTP
 *   reply), printable ASCII only, and short enough that Postfix's reply with its own prefix
 *   stays under the 512-octet line limit of RFC 5321 §4.5.3.1.5.
 */

import { MAX_HEADER_LINE } from '../core/text.js';
import type { Decision } from './types.js';

const MAX_TEXT = 400;

export function safeText(text: string): string {
  // Mailbox addresses may be UTF-8 (RFC 6531); SMTP replies without SMTPUTF8 are ASCII.
  const cleaned = text.replace(/[\r\n\0]+/g, ' ').replace(/[^\x20-\x7e]/g, '?').trim();
  return cleaned.length > MAX_TEXT ? `${cleaned.slice(0, MAX_TEXT - 3)}...` : cleaned;
}

/** A header field for PREPEND: `Name: value`, folded to one line, field name per RFC 5322 §3.6.8. */
export function safeHeader(header: string): string | undefined {
  // Unfold, and keep to printable ASCII: a bare CR or NUL would make the policy reply unsendable.
  const line = header.replace(/[\r\n]+[ \t]*/g, ' ').replace(/[^\x20-\x7e\t]/g, '?');
  return /^[\x21-\x39\x3b-\x7e]+:\s?\S/.test(line) ? line.slice(0, MAX_HEADER_LINE) : undefined;
}

export function actionFor(decision: Exclude<Decision, { kind: 'continue' } | { kind: 'prepend' }>, acceptAction = 'DUNNO'): string {
  switch (decision.kind) {
    case 'accept':
      return acceptAction;
    case 'reject':
    case 'defer':
      return `${decision.code} ${decision.enhanced} ${safeText(decision.text)}`;
    case 'defer-if-permit':
      return `DEFER_IF_PERMIT ${safeText(decision.text)}`;
  }
}
