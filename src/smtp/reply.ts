/**
 * NAME
 *   smtp/reply - incremental SMTP reply decoder and reply helpers (pure, no I/O)
 *
 * DESCRIPTION
 *   ReplyDecoder turns the bytes a server sends into complete replies. A reply is one or more
 *   lines "NNN-text" ending with a final "NNN text" (or a code alone); chunks may split it
 *   anywhere, down to single bytes. Bare LF is accepted as a line end because real servers send
 *   it. Problems come out as error events, never exceptions: after one the decoder
 *   resynchronises at the next line, or, after a broken line that says more lines follow
 *   ("NNN-"), at the final line of its reply, so that a caller that chooses to carry on does not
 *   see the tail of that reply as a reply of its own. A line without a code cannot say whether
 *   its reply goes on: the lines after it are decoded afresh.
 *
 *   parseEnhancedStatus reads the RFC 3463 "class.subject.detail" prefix that RFC 2034 puts on
 *   each line; parseEhloKeywords reads the EHLO extension list (RFC 5321 §4.1.1.1).
 *
 * RFC
 *   RFC 5321 §4.2 (reply syntax), §4.5.3.1.5 (512-octet reply lines), RFC 2034, RFC 3463.
 *
 * LIMITS
 *   maxLineLength (default 2048 octets including CRLF; the RFC says 512 but real servers send
 *   longer lines) and maxLines per reply (default 100). An over-long line is reported as soon as
 *   it is known to be over-long, and its remainder is skipped without being buffered, so the
 *   decoder never holds more than maxLineLength - 1 octets.
 *
 * ERRORS
 *   'line-too-long', 'too-many-lines', 'malformed' (a line that does not start with a reply code
 *   2xx-5xx followed by space, hyphen or end of line), 'inconsistent-code' (a line of a
 *   multi-line reply whose code differs from the first line's).
 */

import type { EnhancedStatus, SmtpReply } from './types.js';

export interface ReplyDecoderLimits {
  maxLineLength?: number;
  maxLines?: number;
}

export type DecodeErrorReason = 'line-too-long' | 'too-many-lines' | 'malformed' | 'inconsistent-code';

export type DecodeEvent =
  | { kind: 'reply'; reply: SmtpReply; raw: string[] }
  | { kind: 'error'; reason: DecodeErrorReason; detail: string; line?: string };

export const DEFAULT_MAX_REPLY_LINE_LENGTH = 2048;
export const DEFAULT_MAX_REPLY_LINES = 100;

/** How much of an offending line an error event quotes: enough to recognise, never a flood. */
const QUOTED_PREFIX = 80;
const LF = 0x0a;
const REPLY_LINE = /^([2-5][0-9][0-9])(?:([ -])(.*))?$/s;

interface ReplyInProgress {
  code: number;
  texts: string[];
  raw: string[];
}

export class ReplyDecoder {
  private readonly maxLineLength: number;
  private readonly maxLines: number;
  private pieces: Buffer[] = [];
  private pendingBytes = 0;
  /** Skipping the rest of a line already reported as too long. */
  private discardingLine = false;
  /** Skipping the rest of a multi-line reply already reported as broken. */
  private skippingReply = false;
  private current: ReplyInProgress | undefined;

  constructor(limits: ReplyDecoderLimits = {}) {
    this.maxLineLength = Math.max(8, limits.maxLineLength ?? DEFAULT_MAX_REPLY_LINE_LENGTH);
    this.maxLines = Math.max(1, limits.maxLines ?? DEFAULT_MAX_REPLY_LINES);
  }

  /** Octets held for the line not yet terminated; never more than maxLineLength - 1. */
  get bufferedBytes(): number {
    return this.pendingBytes;
  }

  push(chunk: Buffer): DecodeEvent[] {
    const events: DecodeEvent[] = [];
    let start = 0;
    while (start < chunk.length) {
      const lf = chunk.indexOf(LF, start);
      const end = lf === -1 ? chunk.length : lf;
      if (this.discardingLine) {
        if (lf === -1) break;
        this.discardingLine = false;
        start = lf + 1;
        continue;
      }
      // +1 for the LF still to come: a line is too long once it cannot end within the limit.
      if (this.pendingBytes + (end - start) + 1 > this.maxLineLength) {
        events.push(this.lineTooLong(chunk.subarray(start, end)));
        if (lf === -1) {
          this.discardingLine = true;
          break;
        }
        start = lf + 1;
        continue;
      }
      if (lf === -1) {
        this.pieces.push(Buffer.from(chunk.subarray(start)));
        this.pendingBytes += chunk.length - start;
        break;
      }
      const line = Buffer.concat([...this.pieces, chunk.subarray(start, lf)]);
      this.pieces = [];
      this.pendingBytes = 0;
      this.acceptLine(line, events);
      start = lf + 1;
    }
    return events;
  }

  private lineTooLong(segment: Buffer): DecodeEvent {
    // Never more than maxLineLength octets, all of which the line has by now, so that the quote
    // does not depend on how the input was split into chunks.
    const quoted = Math.min(QUOTED_PREFIX, this.maxLineLength);
    const prefix = Buffer.concat([...this.pieces, segment.subarray(0, quoted)]).subarray(0, quoted);
    this.pieces = [];
    this.pendingBytes = 0;
    // An over-long "NNN-" line leaves the rest of its reply to skip, as any other broken line of a reply does.
    this.abandonReply(CONTINUATION_PREFIX.test(prefix.toString('latin1')));
    return {
      kind: 'error',
      reason: 'line-too-long',
      detail: `reply line longer than ${this.maxLineLength} octets`,
      line: prefix.toString('utf8').replace(/\r$/, ''),
    };
  }

  private acceptLine(bytes: Buffer, events: DecodeEvent[]): void {
    const withoutCr = bytes.length > 0 && bytes[bytes.length - 1] === 0x0d ? bytes.subarray(0, -1) : bytes;
    const text = withoutCr.toString('utf8');
    const match = REPLY_LINE.exec(text);
    if (!match) {
      this.current = undefined;
      const detail = /^[0-9]{3}(?:[ -]|$)/.test(text) ? `reply code ${text.slice(0, 3)} is not one of 2xx to 5xx (RFC 5321 §4.2.1)` : 'line does not start with a reply code';
      events.push({ kind: 'error', reason: 'malformed', detail, line: quote(text) });
      return;
    }
    const code = Number(match[1]);
    const continues = match[2] === '-';
    if (this.skippingReply) {
      if (!continues) this.skippingReply = false;
      return;
    }
    const current = this.current ?? { code, texts: [], raw: [] };
    if (current.code !== code) {
      this.abandonReply(continues);
      events.push({
        kind: 'error',
        reason: 'inconsistent-code',
        detail: `line with code ${code} inside a reply with code ${current.code}`,
        line: quote(text),
      });
      return;
    }
    if (current.texts.length === this.maxLines) {
      this.abandonReply(continues);
      events.push({ kind: 'error', reason: 'too-many-lines', detail: `reply longer than ${this.maxLines} lines` });
      return;
    }
    current.texts.push(match[3] ?? '');
    current.raw.push(text);
    if (continues) {
      this.current = current;
      return;
    }
    this.current = undefined;
    events.push({ kind: 'reply', reply: buildReply(code, current.texts), raw: current.raw });
  }

  private abandonReply(offendingLineContinues: boolean): void {
    this.current = undefined;
    this.skippingReply = offendingLineContinues;
  }
}

const CONTINUATION_PREFIX = /^[2-5][0-9]{2}-/;

function quote(text: string): string {
  return text.length > QUOTED_PREFIX ? text.slice(0, QUOTED_PREFIX) : text;
}

function buildReply(code: number, texts: string[]): SmtpReply {
  let enhanced: EnhancedStatus | undefined;
  const lines = texts.map((text) => {
    const parsed = parseEnhancedStatus(text, code);
    if (!parsed) return text;
    enhanced ??= parsed.status;
    return parsed.rest;
  });
  return enhanced ? { code, enhanced, lines } : { code, lines };
}

const ENHANCED_STATUS = /^([245])\.([0-9]{1,3})\.([0-9]{1,3})(?:[ \t]+(.*))?$/s;

/**
 * The RFC 3463 enhanced status code at the start of a reply line's text, and the text after it.
 * With replyCode, a code whose class differs from the reply's first digit is not one (RFC 3463 §2
 * requires them to agree), so "250 5.1.1 ..." is read as plain text.
 */
export function parseEnhancedStatus(
  text: string,
  replyCode?: number,
): { status: EnhancedStatus; rest: string } | undefined {
  const match = ENHANCED_STATUS.exec(text);
  if (!match) return undefined;
  const klass = Number(match[1]) as EnhancedStatus['klass'];
  if (replyCode !== undefined && Math.floor(replyCode / 100) !== klass) return undefined;
  return { status: { klass, subject: Number(match[2]), detail: Number(match[3]) }, rest: match[4] ?? '' };
}

/** "5.1.1" */
export function formatEnhanced(status: EnhancedStatus): string {
  return `${status.klass}.${status.subject}.${status.detail}`;
}

/**
 * The words of a reply (or a bounce's diagnostic) saying the mailbox is full, RFC 3463's X.2.2
 * in prose: the mailbox exists, and takes no mail for now.
 */
export const MAILBOX_FULL_TEXT = /mailbox (is )?full|over ?quota|quota (exceeded|full)|insufficient (system )?storage/i;

/** The reply's text lines joined into one line, for evidence and logs. */
export function replyText(reply: SmtpReply): string {
  return reply.lines
    .map((line) => line.trim())
    .filter((line) => line !== '')
    .join(' ');
}

/** "550 5.1.1 User unknown": the whole reply on one line. */
export function formatReply(reply: SmtpReply): string {
  return [String(reply.code), reply.enhanced ? formatEnhanced(reply.enhanced) : '', replyText(reply)]
    .filter((part) => part !== '')
    .join(' ');
}

/**
 * The extensions an EHLO reply advertises: upper-cased keyword → its parameters ('' when none).
 * The first line is the server's name and greeting, not an extension.
 */
export function parseEhloKeywords(reply: SmtpReply): Map<string, string> {
  const keywords = new Map<string, string>();
  for (const line of reply.lines.slice(1)) {
    const match = /^\s*(\S+)\s*(.*?)\s*$/s.exec(line);
    if (match?.[1]) keywords.set(match[1].toUpperCase(), match[2] ?? '');
  }
  return keywords;
}

/** 2xx: the command (or connection) was accepted. */
export function isPositive(reply: SmtpReply): boolean {
  return reply.code >= 200 && reply.code < 300;
}
