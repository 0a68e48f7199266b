/**
 * NAME
 *   bounce/suppression - addresses proven dead by a bounce, kept in the store under `supp:`
 *
 * DESCRIPTION
 *   recordBounce() acts only on bounces that prove themselves, because anyone can send a
 *   forged "user unknown" report to make us stop mailing someone:
 *   - the bounce's envelope recipient (the reverse path we sent with) carries a valid,
 *     unexpired BATV signature of ours, and/or
 *   - it is a VERP address of one of our list senders, which names the recipient it was made for
 *     (when several senders read it, list@ and list+news@ both reading list+news+bob=example.org,
 *     the reading the report shows failed).
 *   A prvs tag that is present but invalid or expired makes the bounce unproven even when VERP
 *   would decode. With VERP, the named recipient is suppressed when the report shows it as a hard
 *   failure; with BATV alone, every hard-failed recipient of the report is. A failure reached by
 *   forwarding (another Original-Recipient, or a VERP recipient the report does not name but
 *   whose one recipient failed) suppresses nothing: the address we mailed may be an alias of
 *   several people, and one leaver would stop the mail of all. Only hard failures count
 *   (bounce/status: user unknown, no such domain, disabled...), never full mailboxes, policy
 *   blocks or delays.
 *
 *   Entries are JSON under `supp:<address>`, the address as address/key mailboxKey() keys it
 *   (A-Z folded, the domain as A-labels), with a TTL (default 365 days) that restarts with every
 *   new bounce, so an address that comes back to life is mailed again eventually. list()/get()/isSuppressed()/remove() serve the CLI and the senders. A stored
 *   value that is not an entry reads as none everywhere: the CLI and the senders agree on it.
 *
 * ERRORS
 *   Store failures reject with StoreError; everything else is a value.
 */

import { mailboxKey } from '../address/index.js';
import { systemClock, type Clock } from '../core/clock.js';
import { StoreError } from '../core/errors.js';
import { isRecord, parseJsonWithin } from '../core/record.js';
import { CONTROL_CHARACTER } from '../core/text.js';
import type { Store } from '../store/types.js';
import { parsePrvs, type Batv } from '../rewrite/batv.js';
import { verpDecode, type VerpDelimiters } from '../rewrite/verp.js';
import { parseBounce } from './parse.js';
import type { BounceFormat, BounceRecipient, BounceReport } from './types.js';

export const SUPPRESSION_PREFIX = 'supp:';
/**
 * Why a failure reached by forwarding suppresses nothing: the address we mailed may be an alias
 * of several people (a team@ with one leaver), and suppressing it for a year would stop the mail
 * of all the others.
 */
const FORWARDED = 'the address we mailed may reach others too, so it is not suppressed';
/** What is wrong with a prvs tag that proves nothing, in words ("a prvs address that is bad-signature" read badly). */
const PRVS_REFUSAL = { 'bad-signature': 'whose tag is not signed by our key', 'unknown-key': 'whose tag names a key number we have no key for', expired: 'whose tag has expired' } as const;
const DEFAULT_TTL_MS = 365 * 86_400_000;
/**
 * Compare-and-set attempts of one add() before it gives up: a key that changes under every
 * attempt (a writer that never stops, a value the store cannot give back as it holds it) would
 * otherwise keep the caller spinning for good.
 */
const MAX_ADD_ATTEMPTS = 16;

/** One list: a proof named only in the type would make its entries read as damaged. */
const PROOF_NAMES = ['batv', 'verp', 'batv+verp', 'manual'] as const;
export type SuppressionProof = (typeof PROOF_NAMES)[number];
const PROOFS: ReadonlySet<string> = new Set(PROOF_NAMES);

export interface SuppressionEntry {
  address: string;
  status: string;
  diagnostic?: string;
  reportingMta?: string;
  format: BounceFormat | 'manual';
  proof: SuppressionProof;
  firstSeen: number;
  lastSeen: number;
  count: number;
}

export interface SuppressionOptions {
  ttlMs?: number;
  clock?: Clock;
}

/** How to tell a genuine bounce: our BATV keys and our VERP list senders. */
export interface BounceProofConfig {
  batv?: Batv;
  verp?: Array<{ sender: string; delimiters?: VerpDelimiters }>;
}

export type BounceOutcome =
  | { kind: 'recorded'; proof: SuppressionProof; entries: SuppressionEntry[]; report: BounceReport }
  | { kind: 'not-proven'; reason: string }
  | { kind: 'not-a-bounce'; reason: string }
  | { kind: 'not-hard'; report: BounceReport };

export interface NewSuppression {
  address: string;
  status: string;
  diagnostic?: string;
  reportingMta?: string;
  format: SuppressionEntry['format'];
  proof: SuppressionProof;
}

const keyOf = (address: string) => SUPPRESSION_PREFIX + mailboxKey(address.trim());

/**
 * The longest stored entry read: callout writes an address and a diagnostic from one field
 * block of a report and the reporting MTA from another, each block at most
 * MIME_LIMITS.headerBytes (64 KiB), escaped at most six-fold in JSON. A longer value (another
 * program's on a shared Redis) is no entry, and is not parsed.
 */
const MAX_ENTRY_LENGTH = 1_048_576;

/**
 * A stored entry, or undefined for a value that is not one (written by another program, or
 * damaged): such a row reads as no entry, is left out of listings and is replaced by the next
 * bounce, where JSON.parse made every listing and every later bounce of that address fail.
 */
function decodeEntry(value: string): SuppressionEntry | undefined {
  const parsed = parseJsonWithin(value, MAX_ENTRY_LENGTH);
  if (!isRecord(parsed)) return undefined;
  const entry = parsed as Partial<SuppressionEntry>;
  const times = [entry.firstSeen, entry.lastSeen, entry.count];
  const texts = [entry.address, entry.status, entry.format];
  if (!texts.every((text) => typeof text === 'string') || !times.every((n) => typeof n === 'number' && Number.isFinite(n))) return undefined;
  // Optional, but written: `bounce list` threw a TypeError on a diagnostic {"toString":1}.
  if (![entry.diagnostic, entry.reportingMta].every((text) => text === undefined || typeof text === 'string')) return undefined;
  if (!PROOFS.has(entry.proof as SuppressionProof)) return undefined;
  return entry as SuppressionEntry;
}

/** The failure was reached through another address (Original-Recipient), the one we mailed. */
function forwarded(recipient: BounceRecipient): boolean {
  const original = recipient.originalRecipient?.trim();
  return original !== undefined && original !== '' && mailboxKey(original) !== mailboxKey(recipient.address.trim());
}

export class SuppressionList {
  private readonly ttlMs: number;
  private readonly clock: Clock;

  constructor(private readonly store: Store, options: SuppressionOptions = {}) {
    this.ttlMs = options.ttlMs ?? DEFAULT_TTL_MS;
    this.clock = options.clock ?? systemClock;
  }

  async get(address: string): Promise<SuppressionEntry | undefined> {
    const stored = await this.store.get(keyOf(address));
    return stored ? decodeEntry(stored.value) : undefined;
  }

  async isSuppressed(address: string): Promise<boolean> {
    return (await this.get(address)) !== undefined;
  }

  /**
   * The entries of the first `limit` stored, in address order, and whether more are stored: one
   * more is read to tell, so that `bounce list` can say its --limit cut the list.
   */
  async list(limit = 1000): Promise<{ entries: SuppressionEntry[]; more: boolean }> {
    const rows = await this.store.scan(SUPPRESSION_PREFIX, Math.min(limit + 1, Number.MAX_SAFE_INTEGER));
    return { entries: rows.slice(0, limit).flatMap((row) => decodeEntry(row.value) ?? []), more: rows.length > limit };
  }

  async remove(address: string): Promise<boolean> {
    const existed = await this.isSuppressed(address);
    await this.store.delete(keyOf(address));
    return existed;
  }

  /**
   * Adds or refreshes an entry; concurrent bounces for one address all count. Rejects with
   * StoreError when the entry changed under MAX_ADD_ATTEMPTS attempts in a row.
   */
  async add(entry: NewSuppression): Promise<SuppressionEntry> {
    const address = mailboxKey(entry.address.trim());
    const key = SUPPRESSION_PREFIX + address;
    for (let attempt = 1; attempt <= MAX_ADD_ATTEMPTS; attempt += 1) {
      const now = this.clock.now();
      const current = await this.store.get(key);
      const previous = current ? decodeEntry(current.value) : undefined;
      const next: SuppressionEntry = {
        ...entry,
        address,
        firstSeen: previous?.firstSeen ?? now,
        lastSeen: now,
        count: (previous?.count ?? 0) + 1,
      };
      if (await this.store.compareAndSet(key, current?.value, JSON.stringify(next), this.ttlMs)) return next;
    }
    throw new StoreError(`suppression: ${key} changed under ${MAX_ADD_ATTEMPTS} updates in a row`);
  }

  async recordBounce(input: { envelopeRecipient: string; message: string | Buffer }, proofConfig: BounceProofConfig): Promise<BounceOutcome> {
    const now = this.clock.now();
    let core = input.envelopeRecipient.trim().replace(/^<(.*)>$/, '$1');
    let signed = false;
    if (proofConfig.batv) {
      const check = proofConfig.batv.check(core, now);
      if (check.status === 'valid') {
        signed = true;
        core = check.original;
      } else if (check.status !== 'not-prvs') {
        return { kind: 'not-proven', reason: `the bounce came to a prvs address ${PRVS_REFUSAL[check.status]} (${check.status})` };
      }
    }
    // Every list sender's reading: of list-bounces and list-bounces+news, each decodes
    // list-bounces+news+bob=example.org (news+bob@example.org, bob@example.org), and only the
    // report tells which one we mailed.
    const decodings = (proofConfig.verp ?? []).flatMap((list) => {
      const decoded = verpDecode(core, list.sender, list.delimiters);
      return decoded.ok ? [decoded.recipient] : [];
    });
    if (!signed && decodings.length === 0) {
      // Not "neither a valid BATV signature": no key checked the tag, and the fix is to give them.
      if (!proofConfig.batv && parsePrvs(core) !== undefined) return { kind: 'not-proven', reason: 'the bounce came to a prvs (BATV) address, and no BATV keys were given to check its tag' };
      return { kind: 'not-proven', reason: 'the bounce came to an address with neither a valid BATV signature nor a VERP tag of ours' };
    }
    const parsed = parseBounce(input.message);
    if (!parsed.ok) return { kind: 'not-a-bounce', reason: parsed.message };
    const report = parsed.report;
    const hard = report.recipients.filter((r) => r.hard);
    const failed = (decoded: string) => hard.some((r) => mailboxKey(r.address) === mailboxKey(decoded));
    const forwardedFrom = (decoded: string) => hard.some((r) => r.originalRecipient !== undefined && mailboxKey(r.originalRecipient) === mailboxKey(decoded));
    // The reading the report names as failed, or else as forwarded; else the first, to name.
    const verpRecipient = decodings.find(failed) ?? decodings.find(forwardedFrom) ?? decodings[0];
    let suppress: Array<{ address: string; evidence: BounceRecipient }>;
    if (verpRecipient !== undefined) {
      const named = mailboxKey(verpRecipient);
      const evidence = hard.find((r) => mailboxKey(r.address) === named);
      if (!evidence) {
        if (forwardedFrom(verpRecipient) || (report.recipients.length === 1 && hard.length === 1)) {
          return { kind: 'not-proven', reason: `${verpRecipient} was forwarded, and only where it led failed: ${FORWARDED}` };
        }
        return hard.length > 0 ? { kind: 'not-proven', reason: `the report's hard failures do not include the VERP recipient ${verpRecipient}` } : { kind: 'not-hard', report };
      }
      suppress = [{ address: verpRecipient, evidence }];
    } else {
      if (hard.length === 0) return { kind: 'not-hard', report };
      // A field with nothing after its type (`rfc822;`), without a domain or with control
      // characters (escape sequences for the terminal of whoever lists the entries) names no
      // one we mailed; a failure reached by forwarding (an Original-Recipient other than the
      // Final-Recipient) proves nothing of the address we mailed (FORWARDED).
      const named = hard.filter(({ address }) => address.trim().includes('@') && !CONTROL_CHARACTER.test(address));
      suppress = named.filter((r) => !forwarded(r)).map((r) => ({ address: r.address.trim(), evidence: r }));
      if (suppress.length === 0) {
        const reason = named.length > 0 ? `every hard failure was reached by forwarding: ${FORWARDED}` : 'the report\'s hard failures name no address';
        return { kind: 'not-proven', reason };
      }
    }
    const proof: SuppressionProof = signed && verpRecipient !== undefined ? 'batv+verp' : signed ? 'batv' : 'verp';
    const entries: SuppressionEntry[] = [];
    for (const { address, evidence } of suppress) {
      entries.push(
        await this.add({
          address,
          status: evidence.status,
          ...(evidence.diagnostic ? { diagnostic: evidence.diagnostic } : {}),
          ...(report.reportingMta ? { reportingMta: report.reportingMta } : {}),
          format: report.format,
          proof,
        }),
      );
    }
    return { kind: 'recorded', proof, entries, report };
  }
}
