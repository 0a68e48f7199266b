/**
 * NAME
 *   bounce/types - the typed result of reading a bounce message
 *
 * DESCRIPTION
 *   One shape for every format: an RFC 3464 report and a qmail, Exim, Postfix, Sendmail or
 *   Exchange prose bounce all become a BounceReport listing each recipient with its action, its
 *   RFC 3463 status, whether the failure is permanent, and whether it proves the address gone
 *   (`hard`, the only thing the suppression list acts on).
 */

import type { StatusCategory } from './status.js';

export type BounceFormat = 'dsn' | 'qmail' | 'exim' | 'postfix' | 'sendmail' | 'exchange' | 'generic';

export type DsnAction = 'failed' | 'delayed' | 'delivered' | 'relayed' | 'expanded';

export interface BounceRecipient {
  /** Final-Recipient (the address as the reporting MTA saw it), or the address in the prose. */
  address: string;
  /** The address type of Final-Recipient ('rfc822', 'utf-8', ...); 'rfc822' for prose formats. */
  addressType: string;
  originalRecipient?: string;
  action: DsnAction;
  /** RFC 3463 code, e.g. "5.1.1"; inferred ("5.0.0", "4.0.0") when the bounce gives none. */
  status: string;
  permanence: 'permanent' | 'temporary' | 'success';
  category: StatusCategory;
  /** Plain-words meaning of the status. */
  statusText: string;
  /** The failure proves the address does not exist (see bounce/status isHardAddressFailure). */
  hard: boolean;
  smtpCode?: number;
  diagnosticType?: string;
  diagnostic?: string;
  remoteMta?: string;
}

export interface OriginalMessage {
  messageId?: string;
  from?: string;
  to?: string;
  subject?: string;
  date?: string;
}

export interface BounceReport {
  format: BounceFormat;
  reportingMta?: string;
  arrivalDate?: string;
  originalEnvelopeId?: string;
  /** Subject of the bounce itself. */
  subject?: string;
  recipients: BounceRecipient[];
  /** Headers of the returned message, when the bounce includes them. */
  original?: OriginalMessage;
  /** The input was longer than the limit and only its beginning was read. */
  truncated: boolean;
}

export type NotBounceKind = 'auto-reply' | 'feedback-report' | 'disposition-notification' | 'no-recipients' | 'empty';

export type BounceParseResult = { ok: true; report: BounceReport } | { ok: false; reason: NotBounceKind; message: string; truncated: boolean };
