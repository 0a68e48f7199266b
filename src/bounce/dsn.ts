/**
 * NAME
 *   bounce/dsn - the message/delivery-status body of an RFC 3464 delivery status notification
 *
 * DESCRIPTION
 *   The body is header-style fields in groups separated by blank lines: one per-message group
 *   (Reporting-MTA, Arrival-Date, Original-Envelope-Id, ...) and then one group per recipient
 *   (Final-Recipient, Action, Status, Diagnostic-Code, Remote-MTA, ...). Fields may be folded,
 *   names are case-insensitive, and typed values are `type; value`. Some MTAs indent the whole
 *   body (an indentation shared by every line is removed) or leave out the per-message group;
 *   both are tolerated. A group with neither
 *   Final-Recipient nor Original-Recipient is not a recipient. message/global-delivery-status
 *   (RFC 6533) has the same syntax with UTF-8 addresses.
 *
 * RFC
 *   RFC 3464 §2 (fields), RFC 6522 (multipart/report), RFC 6533 (internationalized DSNs).
 *
 * LIMITS
 *   At most DSN_LIMITS.recipients recipient groups are read.
 */

import { parseHeaderBlock, type HeaderField } from './mime.js';
import { makeRecipient } from './recipient.js';
import type { BounceRecipient, DsnAction } from './types.js';

export const DSN_LIMITS = { recipients: 1000 } as const;

export interface DeliveryStatus {
  reportingMta?: string;
  arrivalDate?: string;
  originalEnvelopeId?: string;
  recipients: BounceRecipient[];
}

const ACTIONS: ReadonlySet<string> = new Set(['failed', 'delayed', 'delivered', 'relayed', 'expanded']);

/** `type; value` → [type, value]; a value without a type gets ''. */
function typed(value: string | undefined): [string, string] | undefined {
  if (value === undefined) return undefined;
  const semicolon = value.indexOf(';');
  if (semicolon < 0) return ['', value.trim()];
  return [value.slice(0, semicolon).trim().toLowerCase(), value.slice(semicolon + 1).trim()];
}

/**
 * The address of a Final- or Original-Recipient field: RFC 6533 §3 writes a utf-8 address with
 * non-ASCII characters as \x{HEX} (or raw UTF-8 in message/global-delivery-status); both give
 * the same address, so a suppression entry matches the address as mailed.
 */
function recipientAddress([type, value]: [string, string]): string {
  if (type !== 'utf-8') return value;
  return value.replace(/\\x\{([0-9A-Fa-f]{1,6})\}/g, (escape, hex: string) => {
    const codePoint = parseInt(hex, 16);
    return codePoint <= 0x10ffff && (codePoint < 0xd800 || codePoint > 0xdfff) ? String.fromCodePoint(codePoint) : escape;
  });
}

function field(group: HeaderField[], name: string): string | undefined {
  return group.find((f) => f.name === name)?.value;
}

/** Removes an indentation shared by every line (some MTAs indent the whole report body). */
function outdent(block: string): string {
  const lines = block.split(/\r?\n/).filter((line) => line.trim() !== '');
  // A loop, not Math.min(...indents): spreading a group of many lines overflows the stack.
  const common = lines.reduce((least, line) => Math.min(least, /^[ \t]*/.exec(line)![0].length), Infinity);
  if (lines.length === 0 || common === 0) return block;
  return block
    .split(/\r?\n/)
    .map((line) => line.slice(Math.min(common, /^[ \t]*/.exec(line)![0].length)))
    .join('\n');
}

export function parseDeliveryStatus(body: string): DeliveryStatus {
  const groups = body
    .split(/\r?\n[ \t]*\r?\n/)
    .map((block) => parseHeaderBlock(outdent(block)))
    .filter((g) => g.length > 0);
  const result: DeliveryStatus = { recipients: [] };
  for (const group of groups) {
    const final = typed(field(group, 'final-recipient'));
    const original = typed(field(group, 'original-recipient'));
    if (!final && !original) {
      result.reportingMta ??= typed(field(group, 'reporting-mta'))?.[1];
      result.arrivalDate ??= field(group, 'arrival-date');
      result.originalEnvelopeId ??= field(group, 'original-envelope-id');
      continue;
    }
    if (result.recipients.length >= DSN_LIMITS.recipients) break;
    const action = field(group, 'action')?.toLowerCase().replace(/\s*\(.*$/, '').trim();
    const diagnostic = typed(field(group, 'diagnostic-code'));
    const remote = typed(field(group, 'remote-mta'));
    result.reportingMta ??= typed(field(group, 'reporting-mta'))?.[1];
    result.recipients.push(
      makeRecipient({
        address: recipientAddress((final ?? original)!),
        addressType: (final ?? original)![0] || 'rfc822',
        ...(final && original ? { originalRecipient: recipientAddress(original) } : {}),
        ...(action && ACTIONS.has(action) ? { action: action as DsnAction } : {}),
        ...(field(group, 'status') ? { status: field(group, 'status') } : {}),
        ...(diagnostic ? { diagnosticType: diagnostic[0] || undefined, diagnostic: diagnostic[1] } : {}),
        ...(remote ? { remoteMta: remote[1] } : {}),
        defaultAction: 'failed',
      }),
    );
  }
  return result;
}
