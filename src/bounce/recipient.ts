/**
 * NAME
 *   bounce/recipient - one failed (or delayed, delivered) recipient from whatever a bounce says
 *
 * DESCRIPTION
 *   Every format parser hands over what it found (address, action or its absence, declared
 *   status, SMTP code, diagnostic text) and gets back a complete BounceRecipient, so the rules
 *   for inferring a missing status, preferring the diagnostic's specific code over x.0.0, and
 *   deciding `hard` live in one place.
 */

import { describeStatus, findSmtpCode, isHardAddressFailure, parseEnhancedStatus, refineStatus, statusCategory, type EnhancedStatus } from './status.js';
import type { BounceRecipient, DsnAction } from './types.js';

export interface RecipientEvidence {
  address: string;
  addressType?: string;
  originalRecipient?: string;
  action?: DsnAction;
  /** The Status field as written. */
  status?: string;
  diagnosticType?: string;
  diagnostic?: string;
  remoteMta?: string;
  /** What the format implies when nothing else tells: prose bounces are failures unless marked as warnings. */
  defaultAction: DsnAction;
  /** The MTA gave up (its words say so): a 4.x.x is the reply it got last, not a delay. */
  final?: boolean;
}

const ACTION_CLASS: Record<DsnAction, 2 | 4 | 5> = { failed: 5, delayed: 4, delivered: 2, relayed: 2, expanded: 2 };

/**
 * Trims the angle brackets and white space an address is often wrapped in; of a name-addr
 * (`"Bob" <bob@example.org>`, which some MTAs write in Final-Recipient) only the address: kept
 * with its name, it matched no one we mailed. Trimmed before the '>' is looked for: /\s*>$/
 * tried every space of a run not followed by '>' (3 s for a 60 KB Final-Recipient).
 */
export function cleanAddress(text: string): string {
  let address = text.trim();
  const nameAddr = /^[^<>]*<([^<>]*)>$/.exec(address);
  if (nameAddr?.[1]!.includes('@')) address = nameAddr[1]!.trim();
  if (address.startsWith('<')) address = address.slice(1);
  if (address.endsWith('>')) address = address.slice(0, -1);
  return address.trim();
}

export function makeRecipient(evidence: RecipientEvidence): BounceRecipient {
  const diagnostic = evidence.diagnostic?.replace(/\s+/g, ' ').trim() || undefined;
  const declared = evidence.status ? parseEnhancedStatus(evidence.status) : undefined;
  let status: EnhancedStatus | undefined = refineStatus(declared, diagnostic);
  const smtpCode = diagnostic ? findSmtpCode(diagnostic) : undefined;
  const action: DsnAction = evidence.action ?? (status?.statusClass === 4 && !evidence.final ? 'delayed' : status?.statusClass === 2 ? 'delivered' : evidence.defaultAction);
  if (!status && smtpCode !== undefined && smtpCode >= 400) status = parseEnhancedStatus(`${Math.floor(smtpCode / 100)}.0.0`);
  status ??= parseEnhancedStatus(`${ACTION_CLASS[action]}.0.0`)!;
  const permanence = status.statusClass === 5 ? 'permanent' : status.statusClass === 4 ? 'temporary' : 'success';
  return {
    address: cleanAddress(evidence.address),
    addressType: evidence.addressType ?? 'rfc822',
    ...(evidence.originalRecipient ? { originalRecipient: cleanAddress(evidence.originalRecipient) } : {}),
    action,
    status: status.code,
    permanence,
    category: statusCategory(status),
    statusText: describeStatus(status),
    hard: action === 'failed' && isHardAddressFailure(status, smtpCode, diagnostic),
    ...(smtpCode !== undefined ? { smtpCode } : {}),
    ...(evidence.diagnosticType ? { diagnosticType: evidence.diagnosticType } : {}),
    ...(diagnostic ? { diagnostic } : {}),
    ...(evidence.remoteMta ? { remoteMta: evidence.remoteMta } : {}),
  };
}
