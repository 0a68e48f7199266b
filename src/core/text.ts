/**
 * NAME
 *   core/text - characters no address, command or reply may carry
 *
 * DESCRIPTION
 *   CONTROL_CHARACTER matches the C0 controls and DEL: in an SMTP command they would end or
 *   split it (CR, LF), and an address that holds one cannot be written into another address or
 *   shown on a terminal as it is. shown(text) is how a command prints such a value: JSON-quoted
 *   when it is empty or holds one or a C1 control (U+0080-U+009F: a terminal may read U+009B
 *   as CSI, the start of an escape sequence; JSON leaves C1 as it is, so it is escaped as
 *   \u00XX), as it is otherwise.
 *
 *   MAX_HEADER_LINE is the longest header field callout hands Postfix: PREPEND takes one
 *   unfolded line, and RFC 5322 §2.1.1 allows 998 characters before the CRLF (a margin is kept).
 */

// eslint-disable-next-line no-control-regex -- control characters are what it looks for
export const CONTROL_CHARACTER = /[\x00-\x1f\x7f]/;

export const MAX_HEADER_LINE = 990;

// eslint-disable-next-line no-control-regex -- control characters are what it looks for
const TERMINAL_CONTROL = /[\x00-\x1f\x7f-\x9f]/;
const C1_CONTROLS = /[\x80-\x9f]/g;

/** JSON text with its C1 controls, which JSON.stringify leaves as they are, escaped as \u00XX (core/log's lines too). */
export function escapeC1(json: string): string {
  return json.replace(C1_CONTROLS, (c) => `\\u00${c.charCodeAt(0).toString(16)}`);
}

export function shown(text: string): string {
  if (text !== '' && !TERMINAL_CONTROL.test(text)) return text;
  return escapeC1(JSON.stringify(text));
}
