/**
 * NAME
 *   core/text - characters no address, command or reply may carry
 *
 * DESCRIPTION
 *   CONTROL_CHARACTER matches the C0 controls and DEL: in an SMTP command they would end or
 *   split it (CR, LF), and an address that holds one cannot be written into another address or
 *   shown on a terminal as it is. shown(text) is how a command prints such a value: JSON-quoted
 *   when it is empty or holds one or a DISPLAY_CONTROL, as it is otherwise; shownField(text),
 *   a field of a line a script splits at spaces (`greylist list`), also when it holds white
 *   space or a double quote, which would split it or look like a quoted field.
 *   DISPLAY_CONTROL is what JSON leaves as it is but a reader must not get raw: the C1
 *   controls (U+0080-U+009F: a terminal may read U+009B as CSI, the start of an escape
 *   sequence), the separators U+2028 and U+2029 (a line end to JavaScript and to some log viewers) and the bidi controls (U+202E
 *   and kin reorder the text after them: a sender "moc.lapyap@x" shows as "x@paypal.com");
 *   escapeDisplayControls writes them as \uXXXX, and shownJson(value), what every --json output prints, is
 *   JSON with them so escaped.
 *
 *   HIDDEN_SECRET is what logs, errors and `config print` show in place of a secret (a BATV
 *   key, a Redis password); where a secret is read it is refused, so a printed configuration
 *   read back fails naming the key instead of signing or logging in with "***".
 *
 *   clip(text, max) cuts a text that other people wrote (a reply, a problem, a description) to at
 *   most max characters, the last three "..." when it was cut: headers, answers and evidence have
 *   a size they must keep (core/errors abbreviate, for messages, may run three characters over).
 *
 *   MAX_HEADER_LINE is the longest header field callout hands Postfix: PREPEND takes one
 *   unfolded line, and RFC 5322 §2.1.1 allows 998 characters before the CRLF (a margin is kept).
 */

// eslint-disable-next-line no-control-regex -- control characters are what it looks for
export const CONTROL_CHARACTER = /[\x00-\x1f\x7f]/;

export const MAX_HEADER_LINE = 990;

/** text as it is up to max characters, else its first max - 3 and "...". */
export function clip(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 3)}...` : text;
}

export const HIDDEN_SECRET = '***';

export const DISPLAY_CONTROL = /[\x80-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/;
const DISPLAY_CONTROLS = new RegExp(DISPLAY_CONTROL.source, 'g');
// eslint-disable-next-line no-control-regex -- control characters are what it looks for
const TERMINAL_CONTROL = /[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/;

/** JSON text with its DISPLAY_CONTROLs, which JSON.stringify leaves as they are, escaped as \uXXXX (core/log's lines too). */
export function escapeDisplayControls(json: string): string {
  return json.replace(DISPLAY_CONTROLS, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** A value as JSON a terminal may show: what a command prints with --json. */
export function shownJson(value: unknown): string {
  return escapeDisplayControls(JSON.stringify(value));
}

export function shown(text: string): string {
  if (text !== '' && !TERMINAL_CONTROL.test(text)) return text;
  return shownJson(text);
}

/** What splits a space-separated field (any white space, as awk and a reader see it) or starts a quoted one. */
const FIELD_BREAK = /[\s"]/;

export function shownField(text: string): string {
  return FIELD_BREAK.test(text) ? shownJson(text) : shown(text);
}
