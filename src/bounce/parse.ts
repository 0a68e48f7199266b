/**
 * NAME
 *   bounce/parse - read a bounce message (RFC 3464 report or prose) into a BounceReport
 *
 * DESCRIPTION
 *   parseBounce(message) walks the MIME tree (bounce/mime): a message/delivery-status (or
 *   message/global-delivery-status) part outside the returned message makes it a DSN, read by
 *   bounce/dsn; otherwise the text of the message (its first text part outside the returned
 *   message; HTML reduced to text) is given to the prose readers of bounce/prose. Headers of the
 *   returned message (message/rfc822, message/global or text/rfc822-headers) are reported as
 *   `original`.
 *
 *   What is not a bounce says so as a value: feedback reports (RFC 5965 ARF), read receipts
 *   (RFC 8098 MDN), auto-replies (RFC 3834 Auto-Submitted: auto-replied without any failure
 *   report; DSNs carry that header too, so it decides only when nothing else was found), and
 *   messages in which no recipient could be found.
 *
 * LIMITS
 *   Only the first BOUNCE_LIMITS.bytes of the message are read (`truncated` tells); the report
 *   part is near the start of every real bounce. MIME, DSN and prose limits apply below that.
 *
 * ERRORS
 *   None: every input gives a BounceParseResult.
 */

import { parseDeliveryStatus } from './dsn.js';
import { decodeWords, header, parseMime, walkParts, type MimePart } from './mime.js';
import { PROSE_LIMITS, parseProseBounce } from './prose.js';
import type { BounceParseResult, OriginalMessage } from './types.js';

export const BOUNCE_LIMITS = { bytes: 2 * 1024 * 1024 } as const;

export interface BounceParseOptions {
  maxBytes?: number;
}

const NAMED_REFERENCES: Record<string, string> = { nbsp: ' ', apos: "'", quot: '"', lt: '<', gt: '>', amp: '&' };

function textOf(part: MimePart): string | undefined {
  if (part.contentType.mediaType === 'text/plain') return part.text;
  if (part.contentType.mediaType === 'text/html') {
    return part.text
      .slice(0, PROSE_LIMITS.textChars)
      // A tag ends at the next '<' too: from every '<' of a run without '>', [^>]* scanned the rest of the text.
      .replace(/<(script|style)[^<>]*>[\s\S]*?<\/\1>/gi, '')
      .replace(/<br\s*\/?>|<\/(p|div|tr|li|h\d)>/gi, '\n')
      .replace(/<[^<>]*>/g, '')
      // Numeric references too: "couldn&#39;t be delivered" hid the recipient of an HTML NDR. One
      // pass, so that what a reference gives is not read again ("&#38;lt;" is "&lt;", not "<").
      .replace(/&(?:#(\d{1,7})|#[xX]([0-9a-fA-F]{1,6})|(nbsp|apos|quot|lt|gt|amp));/g, (reference, decimal: string | undefined, hex: string | undefined, name: string | undefined) => {
        if (name !== undefined) return NAMED_REFERENCES[name]!;
        const codePoint = decimal !== undefined ? Number(decimal) : parseInt(hex!, 16);
        return codePoint > 0 && codePoint <= 0x10ffff && (codePoint < 0xd800 || codePoint > 0xdfff) ? String.fromCodePoint(codePoint) : reference;
      });
  }
  return undefined;
}

/** The human-readable text of the bounce: the first text part not inside the returned message. */
function readableText(top: MimePart): string {
  const visit = (part: MimePart): string | undefined => {
    if (part.parts.length === 0) return textOf(part);
    for (const child of part.parts) {
      const found = visit(child);
      if (found !== undefined) return found;
    }
    return undefined;
  };
  return visit(top) ?? top.text;
}

function originalMessage(top: MimePart): OriginalMessage | undefined {
  for (const part of walkParts(top)) {
    if (!part.message) continue;
    const h = (name: string) => {
      const value = header(part.message!, name);
      return value === undefined ? {} : { [name === 'message-id' ? 'messageId' : name]: decodeWords(value) };
    };
    const original = { ...h('message-id'), ...h('from'), ...h('to'), ...h('subject'), ...h('date') };
    if (Object.keys(original).length > 0) return original;
  }
  return undefined;
}

export function parseBounce(message: string | Buffer, options: BounceParseOptions = {}): BounceParseResult {
  const maxBytes = options.maxBytes ?? BOUNCE_LIMITS.bytes;
  const length = typeof message === 'string' ? Buffer.byteLength(message) : message.length;
  const truncated = length > maxBytes;
  const bytes = typeof message === 'string' ? (truncated ? Buffer.from(message).subarray(0, maxBytes) : undefined) : message.subarray(0, maxBytes);
  const text = bytes ? bytes.toString('utf8') : (message as string);
  if (text.trim() === '') return { ok: false, reason: 'empty', message: 'the message is empty', truncated };

  const top = parseMime(text);
  const reportType = top.contentType.mediaType === 'multipart/report' ? top.contentType.params['report-type']?.toLowerCase() : undefined;
  if (reportType === 'feedback-report') return { ok: false, reason: 'feedback-report', message: 'an abuse feedback report (RFC 5965), not a bounce', truncated };
  if (reportType === 'disposition-notification') return { ok: false, reason: 'disposition-notification', message: 'a read receipt (RFC 8098), not a bounce', truncated };

  const subject = decodeWords(header(top, 'subject') ?? '');
  const base = { truncated, ...(subject ? { subject } : {}) };
  const original = originalMessage(top);
  const withOriginal = original ? { original } : {};

  // The report's own parts only: a delivery-status part inside the returned message reports
  // another delivery (RFC 6522 §3), such as an old bounce that was forwarded and bounced again.
  let sawReport = false;
  for (const part of walkParts(top, false)) {
    const type = part.contentType.mediaType;
    if (type !== 'message/delivery-status' && type !== 'message/global-delivery-status') continue;
    sawReport = true;
    const status = parseDeliveryStatus(part.text);
    if (status.recipients.length === 0) continue;
    return {
      ok: true,
      report: {
        format: 'dsn',
        ...(status.reportingMta ? { reportingMta: status.reportingMta } : {}),
        ...(status.arrivalDate ? { arrivalDate: status.arrivalDate } : {}),
        ...(status.originalEnvelopeId ? { originalEnvelopeId: status.originalEnvelopeId } : {}),
        ...base,
        recipients: status.recipients,
        ...withOriginal,
      },
    };
  }

  const prose = parseProseBounce(readableText(top), {
    subject,
    from: header(top, 'from') ?? '',
    ...(header(top, 'x-failed-recipients') ? { failedRecipients: header(top, 'x-failed-recipients') } : {}),
  });
  if (prose && prose.recipients.length > 0) {
    return { ok: true, report: { format: prose.format, ...(prose.reportingMta ? { reportingMta: prose.reportingMta } : {}), ...base, recipients: prose.recipients, ...withOriginal } };
  }
  // A report part or an MTA's own bounce text without a readable recipient is a bounce all the
  // same: Exim and Sendmail bounces carry Auto-Submitted too, and were called automatic replies.
  const recognised = sawReport || (prose !== undefined && prose.format !== 'generic');
  if (!recognised && /auto-replied|auto-generated/i.test(header(top, 'auto-submitted') ?? '')) {
    return { ok: false, reason: 'auto-reply', message: 'an automatic reply (RFC 3834), not a bounce', truncated };
  }
  return { ok: false, reason: 'no-recipients', message: 'no failed recipient found in the message', truncated };
}
