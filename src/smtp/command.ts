/**
 * NAME
 *   smtp/command - SMTP command lines, with the injection guard (pure)
 *
 * DESCRIPTION
 *   Every command the client sends is built here. A command is one line ending in CRLF; an
 *   argument holding CR or LF would let an address smuggle a second command (say "DATA") into
 *   the dialogue, so any control character in a verb or argument makes the command unsafe and it
 *   is never sent. None is legal in SMTP command syntax anyway (RFC 5321 §4.1.2).
 *
 * RFC
 *   RFC 5321 §4.1.1 (commands), §4.1.2 (syntax), §4.5.3.1.4 (512-octet command lines),
 *   RFC 6531 §3.4 (the SMTPUTF8 MAIL parameter).
 *
 * LIMITS
 *   A command line is at most 512 octets including CRLF; a longer one is unsafe too.
 */

import { CONTROL_CHARACTER } from '../core/text.js';

export type CommandLine = { kind: 'line'; text: string } | { kind: 'unsafe'; detail: string };

export const MAX_COMMAND_LINE_OCTETS = 512;

/** "VERB argument" without the CRLF (the sender adds it), or why it must not be sent. */
export function formatCommand(verb: string, argument?: string): CommandLine {
  for (const part of [verb, argument ?? '']) {
    if (CONTROL_CHARACTER.test(part)) {
      return { kind: 'unsafe', detail: `refused to send ${JSON.stringify(verb)}: argument contains CR, LF or another control character` };
    }
  }
  const text = argument === undefined ? verb : `${verb} ${argument}`;
  const octets = Buffer.byteLength(text, 'utf8') + 2;
  if (octets > MAX_COMMAND_LINE_OCTETS) {
    return { kind: 'unsafe', detail: `refused to send ${verb}: command line of ${octets} octets exceeds ${MAX_COMMAND_LINE_OCTETS}` };
  }
  return { kind: 'line', text };
}

/** MAIL FROM:<reverse-path>; '' is the null sender, sent as MAIL FROM:<>. */
export function mailFromCommand(reversePath: string, params: { smtputf8?: boolean } = {}): CommandLine {
  return formatCommand('MAIL', `FROM:<${reversePath}>${params.smtputf8 ? ' SMTPUTF8' : ''}`);
}

export function rcptToCommand(forwardPath: string): CommandLine {
  return formatCommand('RCPT', `TO:<${forwardPath}>`);
}
