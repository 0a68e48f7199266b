/**
 * NAME
 *   verify/cache - address and domain records of past callouts
 *
 * DESCRIPTION
 *   Two kinds of record, as Exim keeps them (spec "Callout caching"), in whichever Store the
 *   site runs:
 *     addr:ADDRESS            the verdict for one address: positive (deliverable) and negative
 *                             (undeliverable) lifetimes, each with a refresh age past which the
 *                             answer is served stale while one background probe refreshes it
 *                             (Postfix verify(8)); risky (accepted, but the domain refuses the
 *                             null sender or postmaster) as long as that domain fact; temporary
 *                             outcomes only for a short memory.
 *     dom:DOMAIN:FACT         facts about the domain's exchangers, each stamped and expiring on
 *                             its own: catchall (accepted/refused; inconclusive: a 4xx to the
 *                             random local part, see below), nullsender (MAIL FROM:<>
 *                             refused), postmaster (accepted/refused), greylist (it greylisted
 *                             us; leave it alone for a while), useless (refused us at connect,
 *                             greeting, HELO or MAIL, or at RCPT for every recipient, or could
 *                             not be reached: no useful information until the record expires).
 *   A temporary or inconclusive result never overwrites a definite one before it expires
 *   (Postfix: "as long as some probes succeed the address will remain cached as OK"), even one
 *   another daemon or worker on the store writes between our read and our write: such a result
 *   is written by compare-and-set against the record as read (writeAsRead).
 *   An inconclusive catch-all fact holds the random local part that got the 4xx, when it was
 *   first asked and when to ask it again (retryAt): until then a callout of the domain skips the
 *   random probe and answers as an inconclusive one does; at the retry the same local part is
 *   asked, since a greylister lets through only a triplet it has seen before, and a new name is
 *   a new triplet that it defers again, for ever. The record lasts until retryAt or until the
 *   local part is cache.domainNegative old, whichever is later; a local part that old is not
 *   asked again (Postfix keeps a probe sender for several hours, address_verify_sender_ttl, for
 *   the same reason). A previous release reads such a record as absent (a state it does not
 *   know) and asks the random probe as it always did.
 *   Locks, shared by every process on the store, expire on their own when their holder dies:
 *     lock:ADDRESS            a probe of the address is running
 *     lock-catchall:DOMAIN    a probe is asking the domain's catch-all question
 *   A lock holds a token of its taker alone (core/ids: a random UUID of this cache and a count,
 *   as the per-host leases of verify/politeness), and is let go only while it holds that token
 *   (Store.deleteIf): a holder whose lock expired, or a waiter that gave up, never deletes the
 *   lock another process holds now. A lock that still holds the value a waiter first saw when
 *   the waiter gave up (its holder died, or it was written without an expiry) is taken over by
 *   compare-and-set (takeOver) when the waiter goes on to use it (the catch-all question), and
 *   deleted by that value (unlock) when it does not (a probe whose deadline the wait spent).
 *
 * SECURITY
 *   Records are JSON written by us; a record that does not parse is treated as absent.
 *
 * LIMITS
 *   A record longer than MAX_VERDICT_RECORD_LENGTH (16,384) characters is absent, neither parsed
 *   nor remembered: what callout writes holds two reply texts of at most MAX_EVIDENCE_TEXT
 *   (1,024) characters, an address and a domain, a few KiB even escaped, and the 8,192 decoded
 *   records remembered (twice that while a generation turns over) would otherwise hold whatever
 *   another program wrote under their keys of a shared Redis (up to 512 MiB each).
 */

import type { Clock } from '../core/clock.js';
import { ASK_LATER, type Store, type StoredValue } from '../store/types.js';
import type { CacheConfig } from '../config/schema.js';
import { TEMPORARY_DOMAIN_FAILURES, type ProbeState, type ReplyEvidence, type Verdict, type VerdictReason } from './types.js';
import { BoundedMemo } from '../core/memo.js';
import { uniqueIdSource } from '../core/ids.js';
import { parseJson } from '../core/record.js';
import { parseMailbox } from '../address/index.js';

export interface AddressRecord {
  verdict: Verdict;
  reason: VerdictReason;
  description: string;
  reply?: ReplyEvidence;
  catchAll: ProbeState;
  postmaster: ProbeState;
  checkedAt: number;
  refreshAt: number;
}

export interface DomainFact {
  reason: VerdictReason;
  description: string;
  reply?: ReplyEvidence;
  at: number;
}

export type DomainFactName = 'catchall' | 'nullsender' | 'postmaster' | 'greylist' | 'useless';

const DOMAIN_FACTS: readonly DomainFactName[] = ['catchall', 'nullsender', 'postmaster', 'greylist', 'useless'];

/**
 * The catch-all probe's answer. Inconclusive only after a 4xx to the random local part at the
 * domain's best exchanger; no record is the question still open.
 */
export type CatchAllFact = DomainFact & (
  | { state: 'accepted' | 'refused' }
  | {
    state: 'inconclusive';
    /** Until then the random probe is not asked (clock time). */
    retryAt: number;
    /** The local part that got the 4xx, asked again at the retry. */
    localPart: string;
    /** When that local part was first asked (clock time): it is not asked past cache.domainNegative. */
    firstAskedAt: number;
  }
);

export interface DomainFacts {
  catchall?: CatchAllFact;
  nullsender?: DomainFact;
  postmaster?: DomainFact & { state: 'accepted' | 'refused' };
  greylist?: DomainFact;
  useless?: DomainFact;
}

const DEFINITE: ReadonlySet<Verdict> = new Set<Verdict>(['deliverable', 'undeliverable', 'risky']);

const DECODED_MEMORY_LIMIT = 8_192;
/** Read and compare-and-set rounds of a temporary verdict or inconclusive catch-all fact whose record other processes keep changing. */
const AS_READ_WRITE_TRIES = 3;
/** The longest stored verdict read (see LIMITS); the late verdicts of the sender-callout stage share it. */
export const MAX_VERDICT_RECORD_LENGTH = 16_384;

export class VerificationCache {
  /**
   * Records as stored, decoded: a cache hit answers from the same text again and again, and
   * JSON.parse of it was the largest part of the engine's cost of a hit. Records are values
   * nobody changes (results are built as copies).
   */
  private readonly decoded = new BoundedMemo((text) => parseJson(text), DECODED_MEMORY_LIMIT);
  /** Tells the lock tokens of this cache from those of every other cache and process on the store. */
  private readonly newToken = uniqueIdSource();

  constructor(
    private readonly store: Store,
    private readonly config: CacheConfig,
    private readonly clock: Clock,
    private readonly prefix = '',
  ) {}

  /** The store key of the probe lock of an address. */
  addressLock(address: string): string {
    return `${this.prefix}lock:${address}`;
  }

  /** The store key of the lock of a domain's catch-all question. */
  catchAllLock(domain: string): string {
    return `${this.prefix}lock-catchall:${domain}`;
  }

  /** Takes the lock at key (addressLock, catchAllLock): the token it holds, or undefined when another holds it. */
  async lock(key: string, ttlMs: number): Promise<string | undefined> {
    const token = this.newToken();
    return (await this.store.setIfAbsent(key, token, ttlMs)) ? token : undefined;
  }

  /** What the lock at key holds: another's token, or undefined when nobody holds it. */
  async holder(key: string): Promise<string | undefined> {
    return (await this.store.get(key))?.value;
  }

  /** Takes the lock at key while it holds `seen` still: the token it holds then, or undefined when it changed. */
  async takeOver(key: string, seen: string, ttlMs: number): Promise<string | undefined> {
    const token = this.newToken();
    return (await this.store.compareAndSet(key, seen, token, ttlMs)) ? token : undefined;
  }

  /** Deletes the lock at key if it holds token still (ours, or what a waiter saw); one another process took since stays. */
  async unlock(key: string, token: string): Promise<void> {
    await this.store.deleteIf(key, token);
  }

  async getAddress(address: string): Promise<AddressRecord | undefined> {
    return this.addressRecord(await this.store.get(this.prefix + calloutRecordKey(address)));
  }

  /** getAddress() at once, when the store can tell without waiting (Store.peek). */
  peekAddress(address: string): AddressRecord | undefined | typeof ASK_LATER {
    const stored = this.store.peek(this.prefix + calloutRecordKey(address));
    return stored === ASK_LATER ? ASK_LATER : this.addressRecord(stored);
  }

  private addressRecord(stored: Readonly<StoredValue> | undefined): AddressRecord | undefined {
    const value = this.decode(stored);
    return isAddressRecord(value) ? value : undefined;
  }

  /** Records a verdict, keeping a definite record when the new one is only temporary. */
  async putAddress(address: string, record: Omit<AddressRecord, 'refreshAt'>): Promise<void> {
    const now = this.clock.now();
    let ttl: number;
    let refresh: number;
    if (record.verdict === 'deliverable') {
      ttl = this.config.addressPositive;
      refresh = this.config.addressPositiveRefresh;
    } else if (record.verdict === 'undeliverable') {
      ttl = this.config.addressNegative;
      refresh = this.config.addressNegativeRefresh;
    } else if (record.verdict === 'risky') {
      // Accepted at RCPT, made risky by a domain fact (null sender or postmaster refused) that
      // lives domainNegative: kept as long as that fact, not re-probed every tempfail period.
      ttl = Math.min(this.config.addressPositive, this.config.domainNegative);
      refresh = this.config.addressPositiveRefresh;
    } else {
      const tempfail = this.config.tempfail;
      if (tempfail <= 0) return;
      const temporary: AddressRecord = { ...record, refreshAt: now + tempfail };
      await this.writeAsRead(this.prefix + calloutRecordKey(address), (stored) => {
        const existing = this.addressRecord(stored);
        if (!stored || !existing || !DEFINITE.has(existing.verdict)) return { value: JSON.stringify(temporary), ttl: tempfail };
        // Kept. A stale record's next refresh waits as long as a temporary answer is remembered:
        // otherwise, while its refreshes keep failing, every verification would probe again.
        const left = stored.expiresAt - now;
        if (existing.refreshAt > now || left <= 0) return undefined;
        const kept: AddressRecord = { ...existing, refreshAt: Math.min(now + tempfail, stored.expiresAt) };
        return { value: JSON.stringify(kept), ttl: left };
      });
      return;
    }
    if (ttl <= 0) return;
    const full: AddressRecord = { ...record, refreshAt: now + Math.min(refresh, ttl) };
    await this.store.set(this.prefix + calloutRecordKey(address), JSON.stringify(full), ttl);
  }

  async getDomain(domain: string): Promise<DomainFacts> {
    const values = await Promise.all(DOMAIN_FACTS.map((name) => this.store.get(this.prefix + domainKey(domain, name))));
    const facts: Record<string, unknown> = {};
    DOMAIN_FACTS.forEach((name, i) => {
      const parsed = this.domainFact(values[i], domain, name);
      if (parsed) facts[name] = parsed;
    });
    return facts as DomainFacts;
  }

  /** getDomain() at once, when the store can tell every fact without waiting (Store.peek). */
  peekDomain(domain: string): DomainFacts | typeof ASK_LATER {
    const facts: Record<string, unknown> = {};
    for (const name of DOMAIN_FACTS) {
      const stored = this.store.peek(this.prefix + domainKey(domain, name));
      if (stored === ASK_LATER) return ASK_LATER;
      // Decoded at once: a peeked value is good only until the next call to the store.
      const parsed = this.domainFact(stored, domain, name);
      if (parsed) facts[name] = parsed;
    }
    return facts as DomainFacts;
  }

  /** A stored domain fact, decoded; a value that does not parse is absent. */
  private domainFact(stored: Readonly<StoredValue> | undefined, domain: string, name: DomainFactName): DomainFact | undefined {
    const value = this.decode(stored);
    return isDomainFact(value, domain, name) ? value : undefined;
  }

  /** A stored record's JSON, undefined over the length limit: checked before the memo copies it as a key. */
  private decode(stored: Readonly<StoredValue> | undefined): unknown {
    return stored && stored.value.length <= MAX_VERDICT_RECORD_LENGTH ? this.decoded.get(stored.value) : undefined;
  }

  async putDomain<K extends DomainFactName>(domain: string, name: K, fact: NonNullable<DomainFacts[K]>): Promise<void> {
    const ttl = this.domainTtl(name, fact);
    if (ttl <= 0) return;
    const key = this.prefix + domainKey(domain, name);
    if (!isInconclusive(fact)) {
      await this.store.set(key, JSON.stringify(fact), ttl);
      return;
    }
    await this.writeAsRead(key, (stored) => {
      const existing = this.domainFact(stored, domain, name) as CatchAllFact | undefined;
      return existing && existing.state !== 'inconclusive' ? undefined : { value: JSON.stringify(fact), ttl };
    });
  }

  /**
   * Writes what `next` makes of the record at key (nothing when it returns undefined), only while
   * the record is as read: another process's definite answer, written since the caller's probe
   * read the record or between the read here and the write, is judged by `next` again rather
   * than overwritten. Changed under each of AS_READ_WRITE_TRIES writes, the record is left as
   * the others wrote it: a definite answer, or a temporary one as recent as this.
   */
  private async writeAsRead(key: string, next: (stored: Readonly<StoredValue> | undefined) => { value: string; ttl: number } | undefined): Promise<void> {
    for (let attempt = 0; attempt < AS_READ_WRITE_TRIES; attempt++) {
      const stored = await this.store.get(key);
      const write = next(stored);
      if (write === undefined) return;
      if (await this.store.compareAndSet(key, stored?.value, write.value, write.ttl)) return;
    }
  }

  private domainTtl(name: DomainFactName, fact: DomainFact & { state?: string }): number {
    switch (name) {
      case 'catchall':
        if (isInconclusive(fact)) {
          const now = this.clock.now();
          return Math.max(fact.retryAt - now, fact.firstAskedAt + this.config.domainNegative - now);
        }
        return this.config.domainPositive;
      case 'postmaster':
        return fact.state === 'accepted' ? this.config.domainPositive : this.config.domainNegative;
      case 'greylist':
        return this.config.greylistRetry;
      case 'useless':
        // Unreachable, timing out or a 4xx ("421 too many connections") is likely to change
        // soon; a policy refusal (5xx) is not.
        return TEMPORARY_DOMAIN_FAILURES.has(fact.reason) || (fact.reply !== undefined && fact.reply.code < 500) ? this.config.tempfail : this.config.domainNegative;
      case 'nullsender':
        return this.config.domainNegative;
    }
  }
}

/** The store key of an address's callout record: the address as parsed (see address/key). */
export function calloutRecordKey(address: string): string {
  return `addr:${address}`;
}

export function domainKey(domain: string, fact: DomainFactName): string {
  return `dom:${domain}:${fact}`;
}

const VERDICTS: ReadonlySet<unknown> = new Set<Verdict>(['deliverable', 'undeliverable', 'risky', 'unknown', 'invalid', 'no-mail-domain']);
export const PROBE_STATES: ReadonlySet<unknown> = new Set<ProbeState>(['not-run', 'accepted', 'refused', 'inconclusive']);

/**
 * A stored reply as evidence, when it has the form: a record written by another version on the
 * same store (workers and daemons are upgraded one at a time) may hold `reply: null` or lack a
 * field, and the X-Callout-Result header and the domain's lifetime read `reply.code`.
 */
export function replyEvidenceOf(value: unknown): ReplyEvidence | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const reply = value as Partial<Record<keyof ReplyEvidence, unknown>>;
  if (typeof reply.stage !== 'string' || !Number.isInteger(reply.code)) return undefined;
  return {
    stage: reply.stage as ReplyEvidence['stage'],
    code: reply.code as number,
    ...(typeof reply.enhanced === 'string' ? { enhanced: reply.enhanced } : {}),
    ...(typeof reply.text === 'string' ? { text: reply.text } : {}),
  };
}

/** No reply, or one of the form replyEvidenceOf reads. */
const replyReadable = (value: unknown): boolean => value === undefined || replyEvidenceOf(value) !== undefined;

/*
 * The fields the engine reads, checked: a row of another program or version, or a domain fact
 * at an address key, was served as a verdict of undefined, or as one never stale.
 */
function isAddressRecord(value: unknown): value is AddressRecord {
  if (typeof value !== 'object' || value === null) return false;
  const r = value as Record<string, unknown>;
  return VERDICTS.has(r.verdict) && typeof r.reason === 'string' && typeof r.description === 'string' &&
    PROBE_STATES.has(r.catchAll) && PROBE_STATES.has(r.postmaster) && Number.isFinite(r.checkedAt) && Number.isFinite(r.refreshAt) && replyReadable(r.reply);
}

function isDomainFact(value: unknown, domain: string, name: DomainFactName): value is DomainFact & { state?: CatchAllFact['state'] } {
  if (typeof value !== 'object' || value === null) return false;
  const f = value as Record<string, unknown>;
  if (!(typeof f.reason === 'string' && typeof f.description === 'string' && Number.isFinite(f.at) && replyReadable(f.reply))) return false;
  if (f.state === undefined || f.state === 'accepted' || f.state === 'refused') return true;
  // The local part is sent again as written: only one that makes a plain ASCII address of the domain.
  return name === 'catchall' && f.state === 'inconclusive' && Number.isFinite(f.retryAt) && Number.isFinite(f.firstAskedAt) &&
    typeof f.localPart === 'string' && parseMailbox(`${f.localPart}@${domain}`, { utf8: false }).ok;
}

function isInconclusive(fact: DomainFact & { state?: string }): fact is Extract<CatchAllFact, { state: 'inconclusive' }> {
  return fact.state === 'inconclusive';
}
