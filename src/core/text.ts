/**
 * NAME
 *   core/text - characters no address, command or reply may carry
 *
 * DESCRIPTION
 *   CONTROL_CHARACTER matches the C0 controls and DEL: in an SMTP command they would end or
 *   split it (CR, LF), and an address that holds one cannot be written into another address or
 *   shown on a terminal as it is. shown(text) is how a command prints such a value: JSON-quoted
 *   when it is empty or holds one, as it is otherwise.
 *
 *   MAX_HEADER_LINE is the longest header field callout hands Postfix: PREPEND takes one
 *   unfolded line, and RFC 5322 §2.1.1 allows 998 characters before the CRLF (a margin is kept).
 */

// eslint-disable-next-line no-control-regex -- control characters are what it looks for
export const CONTROL_CHARACTER = /[\x00-\x1f\x7f]/;

export const MAX_HEADER_LINE = 990;

export function shown(text: string): string {
  return text === '' || CONTROL_CHARACTER.test(text) ? JSON.stringify(text) : text;
}
