/**
 * NAME
 *   core/text - characters no address, command or reply may carry
 *
 * DESCRIPTION
 *   CONTROL_CHARACTER matches the C0 controls and DEL: in an SMTP command they would end or
 *   split it (CR, LF), and an address that holds one cannot be written into another address or
 *   shown on a terminal as it is. shown(text) is how a command prints such a value: JSON-quoted
 *   when it is empty or holds one, as it is otherwise.
 */

// eslint-disable-next-line no-control-regex -- control characters are what it looks for
export const CONTROL_CHARACTER = /[\x00-\x1f\x7f]/;

export function shown(text: string): string {
  return text === '' || CONTROL_CHARACTER.test(text) ? JSON.stringify(text) : text;
}
