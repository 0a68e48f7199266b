/**
 * NAME
 *   checks/senderid - Sender ID (RFC 4406): the mfrom and pra scopes over the SPF machinery
 *
 * DESCRIPTION
 *   checkSenderId(request, options) evaluates one scope. For 'mfrom' the identity is the
 *   MAIL FROM (postmaster@HELO for the null sender), as in SPF; for 'pra' it is the Purported
 *   Responsible Address of the message's header fields (RFC 4407, ./pra.ts). The record is
 *   chosen by scope (selectSenderIdRecord) and then evaluated by the SPF evaluator
 *   (src/checks/spf evaluatePolicy), so mechanisms, macros, limits and the trace are the same.
 *   Sender ID is historic (Experimental, never widely deployed): it is off unless asked for,
 *   and only useful where the headers are seen: `callout senderid` reads them from a message file.
 *
 * RFC
 *   RFC 4406 §3.4 / §4.4 record selection: records "spf2.0/<scope>[,<scope>...]" followed by
 *   a space or the end; when any spf2.0 record exists the v=spf1 records are set aside,
 *   otherwise a v=spf1 record counts as "spf2.0/mfrom,pra"; among the records that cover
 *   the scope, none gives None (its problem saying so, and that a v=spf1 record was set aside)
 *   and more than one PermError. §4 / RFC 4407 §2 step 6: a
 *   message without a PRA gives PermError for the pra scope.
 *   The record body is evaluated with RFC 7208's check_host() rather than RFC 4408's: the
 *   grammar is the same, and 7208 only adds limits (void lookups) and settles ambiguities.
 *
 * ERRORS
 *   None: every outcome is a verdict.
 */

import type { SenderIdReport } from '../auth-results.js';
import { evaluatePolicy, selectSpf1Record, type RecordSelector, type SpfOptions, type SpfVerdict } from '../spf/index.js';
import { purportedResponsibleAddress, type HeaderField, type PraField } from './pra.js';

export { headerBlock, purportedResponsibleAddress, splitHeaderFields, PRA_LIMITS, type HeaderField, type PraField, type PraOutcome } from './pra.js';

export type SenderIdScope = 'mfrom' | 'pra';

export interface SenderIdRequest {
  scope: SenderIdScope;
  ip: string;
  helo: string;
  /** The MAIL FROM address ('' for the null sender); used by scope mfrom. */
  mailFrom?: string;
  /** The message's header fields, top-down; used by scope pra. */
  headers?: readonly HeaderField[];
}

export interface SenderIdVerdict extends SpfVerdict {
  scope: SenderIdScope;
  /** For scope pra: the header field the PRA came from. */
  praField?: PraField;
}

const SPF2 = /^spf2\.0\/([^ ]*)(?: |$)/i;

/** RFC 4406 §3.4: the record for a scope (see DESCRIPTION). */
export function selectSenderIdRecord(scope: SenderIdScope): RecordSelector {
  return (txt) => {
    const versioned = txt.flatMap((record) => {
      const match = SPF2.exec(record);
      return match === null ? [] : [{ record, scopes: (match[1] ?? '').toLowerCase().split(','), versionLength: match[0].trimEnd().length }];
    });
    if (versioned.length > 0) {
      const covering = versioned.filter((candidate) => candidate.scopes.includes(scope));
      const [only] = covering;
      if (only === undefined) {
        // Said, or "has no SPF record" sent the administrator to a v=spf1 record that is there.
        const setAside = selectSpf1Record(txt).kind === 'none' ? '' : '; its v=spf1 record does not count while it has spf2.0 records (RFC 4406 §3.4)';
        return { kind: 'none', problem: `no spf2.0 record covers scope ${scope}${setAside}` };
      }
      if (covering.length > 1) return { kind: 'permerror', problem: `${covering.length} spf2.0 records cover scope ${scope}` };
      return { kind: 'record', record: only.record, terms: only.record.slice(only.versionLength) };
    }
    return selectSpf1Record(txt);
  };
}

export async function checkSenderId(request: SenderIdRequest, options: SpfOptions): Promise<SenderIdVerdict> {
  if (request.scope === 'mfrom') {
    const mailFrom = request.mailFrom ?? '';
    const viaHelo = mailFrom === '' ? { sender: `postmaster@${request.helo}`, domain: request.helo } : { sender: mailFrom };
    const verdict = await evaluatePolicy({ ip: request.ip, ...viaHelo, helo: request.helo, identity: 'mailfrom' }, options, selectSenderIdRecord('mfrom'));
    return { ...verdict, scope: 'mfrom' };
  }
  const pra = purportedResponsibleAddress(request.headers ?? []);
  if (pra.kind === 'none') {
    return {
      result: 'permerror',
      problem: `no Purported Responsible Address: ${pra.reason}`,
      domain: '',
      identity: 'pra',
      sender: '',
      ip: request.ip,
      helo: request.helo,
      trace: [{ kind: 'note', message: `no PRA: ${pra.reason}` }],
      lookups: { dnsTerms: 0, voidLookups: 0 },
      scope: 'pra',
    };
  }
  const sender = `${pra.mailbox.localPart}@${pra.mailbox.asciiDomain}`;
  const verdict = await evaluatePolicy({ ip: request.ip, sender, helo: request.helo, identity: 'pra' }, options, selectSenderIdRecord('pra'));
  return { ...verdict, scope: 'pra', praField: pra.field };
}

/** The Authentication-Results report of a pra-scope verdict (method sender-id, RFC 8601 §2.7.2). */
export function senderIdReport(verdict: SenderIdVerdict): SenderIdReport {
  return {
    result: verdict.result,
    ...(verdict.praField === undefined ? {} : { header: verdict.praField, address: verdict.sender }),
    ...(verdict.problem === undefined ? {} : { problem: verdict.problem }),
  };
}
