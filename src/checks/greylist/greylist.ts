/**
 * NAME
 *   greylist/greylist - postgrey-compatible greylisting over the shared Store
 *
 * DESCRIPTION
 *   A triplet (client identity, normalised sender, recipient) seen for the first time is
 *   deferred; a retry at least `delay` later passes, and so does every later message of the
 *   triplet. The rules are postgrey 1.37's (smtpd_access_policy), so a site moving over keeps
 *   its behaviour:
 *     - each request records first-seen and last-seen; a triplet passes once
 *       now - first >= delay, and stays passed (last - first >= delay); the last-seen time of
 *       a passed triplet is refreshed at most once an hour (max-age is days: an entry may go
 *       at most an hour before postgrey's would, and repeat mail of known triplets, most of a
 *       site's traffic, costs a read instead of a write);
 *     - a triplet that has not passed and is retried more than `retryWindow` after it was
 *       first seen starts again (first = now): the window expired;
 *     - a first-seen time in the future (a clock step) of a triplet that has not passed is
 *       corrected to now; a passed triplet stays passed whatever the clock of the daemon
 *       asking (daemons sharing a store may disagree by a little), and no passed triplet's,
 *       client's or domain's row is moved back in time: it is refreshed once the asking
 *       clock is an hour past its last-seen time;
 *     - client auto-allow: the first pass of a triplet counts one for the client address, at
 *       most once an hour; a client with `autoAllowClients` counts skips greylisting (and its
 *       last-seen is refreshed at most once an hour);
 *     - entries live `maxAge` after they were last seen; a triplet that has not passed lives
 *       two retry windows, long enough to tell an expired window from a new triplet in the
 *       log (postgrey's nightly maintenance drops it after one; the decisions are the same,
 *       since an expired window starts the triplet again either way).
 *   Beyond postgrey, a domain-level auto-allow like sqlgrey's domain_awl: once
 *   `domainAutoAllow` different senders of one domain have passed from one client identity,
 *   every sender of that domain passes from it.
 *
 *   State is shared by every daemon on the store. Each update is an atomic read-modify-write
 *   (Store.compareAndSet, retried when another daemon wrote in between), so two daemons on one
 *   Redis agree on one first-seen time per triplet, and a retry that lands on the other daemon
 *   passes there. Time comes from the injected Clock (tests move it); expiry is the store's.
 *   check() resolves with the outcome; decide() gives the same outcome at once, without a
 *   promise, when it writes nothing and the store has the rows it reads at hand (Store.peek:
 *   memory, SQLite), as for a client or a sender domain auto-allowed or a triplet passed
 *   within the hour, and a promise otherwise.
 *
 *   Keys, under keyPrefix (default `grey:`), with `%` and `/` escaped in each component:
 *     t:CLIENT/SENDER/RECIPIENT   "first,last"    (epoch ms)
 *     c:CLIENT                    "count,last"    client auto-allow
 *     d:CLIENT/DOMAIN             {"senders":[...],"last":ms}   domain auto-allow
 *   A SENDER, RECIPIENT or DOMAIN (and a sender in a domain record) longer than 256 octets, the
 *   most RFC 5321 §4.5.3.1.3 allows a path, is kept as its first 64 octets and the SHA-256 of
 *   the whole (address/key keyPart): a client may send any address the policy line holds
 *   (4 kB), and every recipient of every such message would otherwise store a key of that size
 *   for two retry windows. Every valid address keeps its key as it is.
 *
 * ERRORS
 *   Store failures reject with StoreError (the pipeline answers by policy.faultAction). Losing
 *   the compare-and-set race MAX_ATTEMPTS times in a row (for a domain's record, that
 *   plus domainAutoAllow: see recordDomainSender) rejects with StoreError too: it means
 *   something rewrites the key continuously.
 */

import type { Clock } from '../../core/clock.js';
import { StoreError } from '../../core/errors.js';
import { isRecord, parseJsonWithin } from '../../core/record.js';
import { cidrWithin, parseCidr, type Cidr } from '../../core/ip.js';
import { keyPart } from '../../address/index.js';
import { clientAddress, networkHolds } from '../client-ip.js';
import { ASK_LATER, type Store, type StoredValue } from '../../store/types.js';
import { senderDomain } from './normalise.js';

const HOUR_MS = 3_600_000;
const MAX_ATTEMPTS = 8;
/** A deferred triplet's last-seen time is not rewritten after a lost race for a gap shorter than this. */
const LAST_SEEN_RESOLUTION_MS = 1000;
/**
 * Entries a client's drop reads per scan. On Redis every scan walks the whole keyspace, so a
 * /24 with 50,000 triplets in a greylist of a million took 51 walks and 91 s at 1,000.
 */
const DROP_SCAN_BATCH = 10_000;
/** Rows listPages() and dropClientsIn() read at once: a page of entries is a few megabytes. */
const LIST_PAGE = 10_000;
/** Deletes asked for at once: one group commit on SQLite, one write on Redis, not one each. */
const DROP_DELETE_BATCH = 1_000;

/**
 * The text every canonical address of the network starts with (client entries are keyed by
 * it): its whole leading IPv4 octets, or its leading IPv6 groups up to the first zero one (RFC
 * 5952 may compress a zero group into `::`). Narrows a network's scan; '' when nothing is fixed.
 */
function addressTextPrefix(network: Cidr): string {
  const width = network.family === 4 ? 8 : 16;
  const bits = network.family === 4 ? 32 : 128;
  const parts: string[] = [];
  // Never the last part: the text then goes on without a separator.
  for (let i = 0; i < Math.min(Math.floor(network.prefixLength / width), bits / width - 1); i += 1) {
    const part = Number((network.network >> BigInt(bits - width * (i + 1))) & BigInt(2 ** width - 1));
    if (network.family === 6 && part === 0) break;
    parts.push(network.family === 4 ? String(part) : part.toString(16));
  }
  return parts.length === 0 ? '' : `${parts.join(network.family === 4 ? '.' : ':')}${network.family === 4 ? '.' : ':'}`;
}

export interface GreylistSettings {
  delayMs: number;
  retryWindowMs: number;
  maxAgeMs: number;
  /** Successful first passes after which a client skips greylisting; 0 disables. */
  autoAllowClients: number;
  /** Distinct senders of one domain passed from one client before the domain passes; 0 disables. */
  domainAutoAllow: number;
  keyPrefix?: string;
}

export interface GreylistRequest {
  /** The client identity of the triplet: a network (192.0.2.0/24), an address, or domain:NAME. */
  client: string;
  /** The client's auto-allow key: its address (postgrey), or the identity domain. */
  autoAllowKey: string;
  /** Normalised sender (normaliseSender), '' for the null sender. */
  sender: string;
  /** The recipient, lower-cased. */
  recipient: string;
}

export type DeferReason = 'new' | 'early-retry' | 'window-expired';

export type GreylistOutcome =
  | { kind: 'pass'; reason: 'triplet'; firstPass: boolean; waitedMs: number }
  | { kind: 'pass'; reason: 'client-auto-allow'; count: number }
  | { kind: 'pass'; reason: 'domain-auto-allow'; domain: string }
  | { kind: 'defer'; reason: DeferReason; remainingMs: number; retryAt: number; firstSeen: number };

export type GreylistEntry =
  | { kind: 'triplet'; client: string; sender: string; recipient: string; firstSeen: number; lastSeen: number; passed: boolean; expiresAt: number }
  | { kind: 'client'; client: string; count: number; lastSeen: number; allowed: boolean; expiresAt: number }
  | { kind: 'domain'; client: string; domain: string; senders: number; allowed: boolean; expiresAt: number };

export type GreylistEntryKind = GreylistEntry['kind'];

/** What dropClient() removed: the address's auto-allow entry, and the identity's triplets and domain entries. */
export interface DroppedClient {
  autoAllow: boolean;
  triplets: number;
  domains: number;
}

/**
 * What listPages() gives: entries of one `kind`; `client` narrows to one identity (exact) or
 * auto-allow key; `network`, given in its place, narrows client entries to those of its
 * addresses, as dropClientsIn finds them (a network has no auto-allow entry of its own), and
 * triplets and domain entries to those of the identities inside it, as dropIdentitiesIn
 * finds them; at most `limit` entries.
 */
export interface ListOptions {
  kind: GreylistEntryKind;
  client?: string;
  network?: Cidr;
  limit: number;
}

// Most parts hold neither character: looked for first, two replacements (and two strings) per part saved.
const escapePart = (part: string) => (part.includes('%') || part.includes('/') ? part.replace(/%/g, '%25').replace(/\//g, '%2F') : part);
const unescapePart = (part: string) => part.replace(/%2F/gi, '/').replace(/%25/g, '%');

/** The longest "first,last" or "count,last" row read: two safe integers (16 digits each) and a comma. */
const MAX_PAIR_LENGTH = 64;

/**
 * A stored "first,last" (`times`) or "count,last" (`count`) row as check(), the client count
 * and a listing read it, or undefined for a row callout never writes (another program's on a
 * shared Redis, or a damaged one), which is then taken as absent and overwritten by the next
 * write: a count that is not a non-negative safe integer, or a time more than maxAge ahead of
 * now. Read as they were, a stored count of -100000 took that many hourly first passes to
 * auto-allow the client, each rewriting the row for another maxAge; a client's last-counted
 * time far ahead kept its passes from ever counting (another daemon seemed to have counted this
 * hour), and a triplet's last-seen time far ahead passed it for good with no first pass to
 * count. A time less far ahead is left as it is: daemons sharing a store may disagree on the
 * time (see check()).
 */
function pair(value: string | undefined, kind: 'times' | 'count', now: number, maxAgeMs: number): [number, number] | undefined {
  if (value === undefined || value.length > MAX_PAIR_LENGTH) return undefined;
  const comma = value.indexOf(',');
  const a = Number(value.slice(0, comma));
  const b = Number(value.slice(comma + 1));
  if (comma <= 0 || !Number.isFinite(a) || !Number.isFinite(b) || b > now + maxAgeMs) return undefined;
  const aFits = kind === 'count' ? Number.isSafeInteger(a) && a >= 0 : a <= now + maxAgeMs;
  return aFits ? [a, b] : undefined;
}

/** The most senders a domain record needs, and the most domainAutoAllow may ask for. */
export const MAX_DOMAIN_AUTO_ALLOW = 1000;
/**
 * The longest domain record read: MAX_DOMAIN_AUTO_ALLOW senders of at most 256 octets (keyPart),
 * each escaped at most six-fold in JSON. A longer record, or one of more senders (another
 * program's on a shared Redis, or damaged), is absent and replaced by the next first pass:
 * read as it was, it was parsed at each request of its client and domain, and rewritten whole
 * every hour for good.
 */
const MAX_DOMAIN_RECORD_LENGTH = MAX_DOMAIN_AUTO_ALLOW * (6 * 256 + 3) + 64;

interface DomainRecord {
  senders: string[];
  last: number;
}

function domainRecord(value: string | undefined): DomainRecord | undefined {
  // Not ours (no JSON, another shape): treated as absent and overwritten.
  const parsed = value === undefined ? undefined : parseJsonWithin(value, MAX_DOMAIN_RECORD_LENGTH);
  if (!isRecord(parsed) || !Array.isArray(parsed.senders) || parsed.senders.length > MAX_DOMAIN_AUTO_ALLOW || typeof parsed.last !== 'number') return undefined;
  return { senders: parsed.senders.filter((s): s is string => typeof s === 'string'), last: parsed.last };
}

/** A row read ahead of its first use (undefined: no such key). */
interface Prefetched {
  row: Readonly<StoredValue> | undefined;
}

/** What Store.peek answered, as a prefetched row; undefined when only get() can tell. */
function rowAtHand(peeked: Readonly<StoredValue> | undefined | typeof ASK_LATER): Prefetched | undefined {
  return peeked === ASK_LATER ? undefined : { row: peeked };
}

export class Greylist {
  readonly settings: Required<GreylistSettings>;

  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    settings: GreylistSettings,
  ) {
    this.settings = { keyPrefix: 'grey:', ...settings };
  }

  tripletKey(client: string, sender: string, recipient: string): string {
    return `${this.settings.keyPrefix}t:${escapePart(client)}/${escapePart(keyPart(sender))}/${escapePart(keyPart(recipient))}`;
  }

  clientKey(client: string): string {
    return `${this.settings.keyPrefix}c:${escapePart(client)}`;
  }

  domainKey(client: string, domain: string): string {
    return `${this.settings.keyPrefix}d:${escapePart(client)}/${escapePart(keyPart(domain))}`;
  }

  async check(request: GreylistRequest): Promise<GreylistOutcome> {
    return this.decide(request);
  }

  /**
   * check(), answered at once (no promise) when the store has the rows it reads at hand
   * (Store.peek: memory, SQLite) and nothing is to be written: a client auto-allowed within the
   * hour, a sender domain auto-allowed within the hour (domainAutoAllow), a triplet passed
   * within the hour (repeat mail, most of a site's traffic): awaited, each
   * took promises and the pipeline's deadline timer (policy/pipeline) for a decision already
   * made. Anything that reads later or writes is a promise.
   */
  decide(request: GreylistRequest): GreylistOutcome | Promise<GreylistOutcome> {
    const now = this.clock.now();
    const clientKey = this.clientKey(request.autoAllowKey);
    const key = this.tripletKey(request.client, request.sender, request.recipient);
    if (this.settings.autoAllowClients === 0) return this.decideWith(request, now, clientKey, key, undefined, undefined);
    const atHand = this.store.peek(clientKey);
    if (atHand !== ASK_LATER) return this.decideWith(request, now, clientKey, key, atHand?.value, undefined);
    return this.readThenDecide(request, now, clientKey, key);
  }

  /**
   * The client's auto-allow value and the triplet's row, which most requests read next, fetched
   * together where a read is a round trip (Redis): one round trip instead of two.
   */
  private async readThenDecide(request: GreylistRequest, now: number, clientKey: string, key: string): Promise<GreylistOutcome> {
    const [client, triplet] = await this.store.getMany([clientKey, key]);
    return this.decideWith(request, now, clientKey, key, client?.value, { row: triplet });
  }

  /** The decision once the client's auto-allow value is known; `prefetched`: the triplet's row, when read with it. */
  private decideWith(
    request: GreylistRequest,
    now: number,
    clientKey: string,
    key: string,
    clientValue: string | undefined,
    prefetched: Prefetched | undefined,
  ): GreylistOutcome | Promise<GreylistOutcome> {
    const { maxAgeMs, autoAllowClients, domainAutoAllow } = this.settings;
    const awl = pair(clientValue, 'count', now, maxAgeMs);
    if (awl && awl[0] >= autoAllowClients) {
      const [count, last] = awl;
      const outcome: GreylistOutcome = { kind: 'pass', reason: 'client-auto-allow', count };
      if (now < last + HOUR_MS) return outcome;
      // Statistics only: a lost race just means another daemon refreshed it.
      return this.store.compareAndSet(clientKey, clientValue, `${count + 1},${now}`, maxAgeMs).then(() => outcome);
    }
    const domain = senderDomain(request.sender);
    if (domainAutoAllow > 0 && domain) {
      // At hand as the triplet's row is, and as fresh: peek gives what get() would.
      const peeked = this.store.peek(this.domainKey(request.client, domain));
      if (peeked === ASK_LATER) return this.domainThenTriplet(request, now, clientKey, key, awl, domain, prefetched);
      const allowed = this.domainAllowed(request, now, domain, domainRecord(peeked?.value));
      if (allowed) return allowed;
    }
    // The row at hand, of a triplet passed within the hour: answered now, nothing to write.
    const row = prefetched ?? rowAtHand(this.store.peek(key));
    const passed = row && this.passedWithinHour(pair(row.row?.value, 'times', now, maxAgeMs), now);
    return passed || this.updateTriplet(request, now, clientKey, key, awl, domain, row);
  }

  /** A pass of a triplet that passed before and was seen within the hour: its row needs no refresh. */
  private passedWithinHour(stored: [number, number] | undefined, now: number): GreylistOutcome | undefined {
    if (!stored) return undefined;
    const [first, last] = stored;
    // Passed stays passed whatever this clock says: another daemon's clock may run ahead
    // (its last-seen is then in our future), and rewriting the row from ours would move
    // it back, or the first-seen time forward, and undo the pass.
    if (last - first < this.settings.delayMs || now >= last + HOUR_MS) return undefined;
    return { kind: 'pass', reason: 'triplet', firstPass: false, waitedMs: Math.max(0, now - first) };
  }

  private async domainThenTriplet(
    request: GreylistRequest,
    now: number,
    clientKey: string,
    key: string,
    awl: [number, number] | undefined,
    domain: string,
    prefetched: Prefetched | undefined,
  ): Promise<GreylistOutcome> {
    const record = domainRecord((await this.store.get(this.domainKey(request.client, domain)))?.value);
    return (await this.domainAllowed(request, now, domain, record)) ?? this.updateTriplet(request, now, clientKey, key, awl, domain, prefetched);
  }

  /**
   * The domain auto-allow's pass once the domain's record holds domainAutoAllow senders: at once
   * while the record was seen within the hour, else once it is refreshed; undefined before.
   */
  private domainAllowed(request: GreylistRequest, now: number, domain: string, record: DomainRecord | undefined): GreylistOutcome | Promise<GreylistOutcome> | undefined {
    if (!record || record.senders.length < this.settings.domainAutoAllow) return undefined;
    const outcome: GreylistOutcome = { kind: 'pass', reason: 'domain-auto-allow', domain };
    if (now < record.last + HOUR_MS) return outcome;
    return this.recordDomainSender(request.client, domain, request.sender).then(() => outcome);
  }

  /** The triplet's read-modify-write, and the auto-allow counts of its first pass; `prefetched` serves the first attempt. */
  private async updateTriplet(
    request: GreylistRequest,
    now: number,
    clientKey: string,
    key: string,
    awl: [number, number] | undefined,
    domain: string,
    prefetched: Prefetched | undefined,
  ): Promise<GreylistOutcome> {
    const { delayMs, retryWindowMs, maxAgeMs, autoAllowClients, domainAutoAllow } = this.settings;
    let first = now;
    let lastWasSuccessful = false;
    let windowExpired = false;
    for (let attempt = 1; ; attempt += 1) {
      // A compare-and-set that lost its race reads again; the first attempt may use the prefetched row.
      const current = attempt === 1 && prefetched ? prefetched.row : await this.store.get(key);
      const stored = pair(current?.value, 'times', now, maxAgeMs);
      const passed = this.passedWithinHour(stored, now);
      if (passed) return passed;
      first = now;
      lastWasSuccessful = false;
      windowExpired = false;
      if (stored) {
        const [storedFirst, storedLast] = stored;
        first = storedFirst;
        if (storedLast - storedFirst >= delayMs) lastWasSuccessful = true;
        else if (now - first > retryWindowMs) {
          first = now;
          windowExpired = true;
        }
        if (first > now) first = now;
      }
      const passedNow = now - first >= delayMs;
      // Lost the race to a request for this triplet seen within a second, and this one is
      // deferred: its write would only move the row's last-seen time, which no decision reads
      // before the row passes. Writing anyway, a burst of one triplet on many connections (each
      // writing its own time) lost every retry, and the fault was answered by faultAction
      // (DUNNO: not greylisted).
      if (attempt > 1 && stored && !windowExpired && !passedNow && now - stored[1] < LAST_SEEN_RESOLUTION_MS) break;
      const ttl = passedNow ? maxAgeMs : 2 * retryWindowMs;
      if (await this.store.compareAndSet(key, current?.value, `${first},${now}`, ttl)) break;
      if (attempt >= MAX_ATTEMPTS) throw new StoreError(`greylist: ${key} changed under ${MAX_ATTEMPTS} updates in a row`);
    }

    const remainingMs = delayMs - (now - first);
    if (remainingMs <= 0 && !lastWasSuccessful) {
      if (autoAllowClients > 0 && (!awl || now >= awl[1] + HOUR_MS)) await this.countClientPass(clientKey);
      if (domainAutoAllow > 0 && domain) await this.recordDomainSender(request.client, domain, request.sender);
    }
    if (remainingMs > 0) {
      const reason: DeferReason = windowExpired ? 'window-expired' : now !== first ? 'early-retry' : 'new';
      return { kind: 'defer', reason, remainingMs, retryAt: first + delayMs, firstSeen: first };
    }
    return { kind: 'pass', reason: 'triplet', firstPass: !lastWasSuccessful, waitedMs: now - first };
  }

  /** Lets the client skip greylisting from now on (an administrator's `allow`). */
  async allowClient(autoAllowKey: string): Promise<void> {
    await this.store.set(this.clientKey(autoAllowKey), `${Math.max(1, this.settings.autoAllowClients)},${this.clock.now()}`, this.settings.maxAgeMs);
  }

  /** Marks the triplet as passed, as if it had retried after the delay. */
  async allowTriplet(request: Omit<GreylistRequest, 'autoAllowKey'>): Promise<void> {
    const now = this.clock.now();
    await this.store.set(this.tripletKey(request.client, request.sender, request.recipient), `${now - this.settings.delayMs},${now}`, this.settings.maxAgeMs);
  }

  async dropTriplet(request: Omit<GreylistRequest, 'autoAllowKey'>): Promise<boolean> {
    const key = this.tripletKey(request.client, request.sender, request.recipient);
    const existed = (await this.store.get(key)) !== undefined;
    await this.store.delete(key);
    return existed;
  }

  /**
   * Forgets a client: its auto-allow entry (by autoAllowKey) and every triplet and domain entry
   * of its identity. Returns what was removed, each kind apart: the auto-allow entry is an
   * address's, the others its network's, and a count of both under the network's name told an
   * administrator that `drop 192.0.2.7` had removed an entry of the whole /24.
   */
  async dropClient(client: string, autoAllowKey: string): Promise<DroppedClient> {
    const dropped = { autoAllow: false, triplets: 0, domains: 0 };
    const clientKey = this.clientKey(autoAllowKey);
    if (await this.store.get(clientKey)) {
      await this.store.delete(clientKey);
      dropped.autoAllow = true;
    }
    for (const kind of ['t', 'd'] as const) {
      const prefix = `${this.settings.keyPrefix}${kind}:${escapePart(client)}/`;
      // Deleted keys leave the scan, so each batch is new; an empty one ends the walk.
      for (let batch = await this.store.scan(prefix, DROP_SCAN_BATCH); batch.length > 0; batch = await this.store.scan(prefix, DROP_SCAN_BATCH)) {
        await this.deleteAll(batch.map((row) => row.key));
        if (kind === 't') dropped.triplets += batch.length;
        else dropped.domains += batch.length;
      }
    }
    return dropped;
  }

  /**
   * Forgets the auto-allow entries of every address in the network: a network's own entries
   * are its triplets (dropClient), but each of its addresses that passed has an auto-allow
   * entry of its own, which would go on letting it skip greylisting. Returns how many went.
   * Reads `pageSize` rows at once (LIST_PAGE; tests make it small) and deletes each page's
   * before reading the next: no store lists again or skips a key for the deletes of pages it
   * has given (SQLite and memory go on after the page's last key; a Redis SCAN walk returns
   * every key present all along, and one returned again after its delete reads as absent).
   */
  async dropClientsIn(network: Cidr, pageSize = LIST_PAGE): Promise<number> {
    return this.dropRowsIn('c', network, pageSize);
  }

  /**
   * Forgets the triplets and domain entries of every identity inside the network: the networks
   * (or, keyed by address, the addresses) the stage keys its clients by. Given as an identity's
   * own network it is dropClient's exact match; wider (a /16, a /24 of hosts keyed by address),
   * it takes every identity within, where the exact match found none and said "dropped nothing"
   * with the range's triplets still stored.
   */
  async dropIdentitiesIn(network: Cidr, pageSize = LIST_PAGE): Promise<Omit<DroppedClient, 'autoAllow'>> {
    return { triplets: await this.dropRowsIn('t', network, pageSize), domains: await this.dropRowsIn('d', network, pageSize) };
  }

  /** Deletes the rows of one kind that belong to the network (see holdsRow), a page at a time; returns how many went. */
  private async dropRowsIn(tag: 't' | 'c' | 'd', network: Cidr, pageSize: number): Promise<number> {
    let removed = 0;
    for await (const rows of this.store.scanPages(this.prefixIn(tag, network), pageSize)) {
      const inside = rows.filter((row) => this.holdsRow(tag, network, row.key));
      await this.deleteAll(inside.map((row) => row.key));
      removed += inside.length;
    }
    return removed;
  }

  /** The prefix of every key of the kind whose client lies in the network (and of others). */
  private prefixIn(tag: 't' | 'c' | 'd', network: Cidr): string {
    return `${this.settings.keyPrefix}${tag}:${addressTextPrefix(network)}`;
  }

  /**
   * Whether a row belongs to the network: an auto-allow key (`c`) that is an address in it, a
   * triplet or domain entry whose identity is a network inside it (never a domain:NAME).
   */
  private holdsRow(tag: 't' | 'c' | 'd', network: Cidr, key: string): boolean {
    const body = key.slice(this.settings.keyPrefix.length + 2);
    if (tag === 'c') {
      const address = clientAddress(unescapePart(body));
      return address !== undefined && networkHolds(network, address);
    }
    // A key without its '/' (another program's, or damaged) is no identity of ours.
    const slash = body.indexOf('/');
    if (slash < 0) return false;
    const identity = parseCidr(unescapePart(body.slice(0, slash)));
    return identity.ok && cidrWithin(identity.value, network);
  }

  /** Deletes the keys DROP_DELETE_BATCH at a time, each batch asked for at once. */
  private async deleteAll(keys: readonly string[]): Promise<void> {
    for (let start = 0; start < keys.length; start += DROP_DELETE_BATCH) {
      await Promise.all(keys.slice(start, start + DROP_DELETE_BATCH).map((key) => this.store.delete(key)));
    }
  }

  /**
   * The entries of one kind an administrator lists, a page at a time (Store.scanPages,
   * `pageSize` rows read at once, LIST_PAGE by default), each read when the caller asks for the
   * next: a caller that prints each page holds one, not a greylist of millions. In key order on
   * SQLite and memory; on Redis each page is in key order, the pages in the order SCAN finds
   * the keys (one walk of the keyspace).
   */
  async *listPages(options: ListOptions & { pageSize?: number }): AsyncGenerator<GreylistEntry[], void, undefined> {
    const { kind } = options;
    const tag = { triplet: 't', client: 'c', domain: 'd' } as const;
    const { network } = options;
    const client = options.client === undefined ? '' : escapePart(options.client) + (kind === 'client' ? '' : '/');
    const prefix = network ? this.prefixIn(tag[kind], network) : `${this.settings.keyPrefix}${tag[kind]}:${client}`;
    let left = options.limit;
    for await (const rows of this.store.scanPages(prefix, options.pageSize ?? LIST_PAGE)) {
      const page: GreylistEntry[] = [];
      for (const row of rows) {
        if (page.length >= left) break;
        if (network && !this.holdsRow(tag[kind], network, row.key)) continue;
        const entry = this.entryOf(kind, row.key.slice(this.settings.keyPrefix.length + 2), row.value, row.expiresAt);
        if (entry && (kind !== 'client' || network || options.client === undefined || entry.client === options.client)) page.push(entry);
      }
      left -= page.length;
      if (page.length > 0) yield page;
      if (left <= 0) return;
    }
  }

  private entryOf(kind: GreylistEntryKind, body: string, value: string, expiresAt: number): GreylistEntry | undefined {
    const parts = body.split('/').map(unescapePart);
    if (kind === 'triplet') {
      const times = pair(value, 'times', this.clock.now(), this.settings.maxAgeMs);
      const [client = '', sender = '', recipient = ''] = parts;
      if (!times || parts.length !== 3) return undefined;
      return { kind, client, sender, recipient, firstSeen: times[0], lastSeen: times[1], passed: times[1] - times[0] >= this.settings.delayMs, expiresAt };
    }
    if (kind === 'client') {
      const counts = pair(value, 'count', this.clock.now(), this.settings.maxAgeMs);
      if (!counts) return undefined;
      return { kind, client: parts.join('/'), count: counts[0], lastSeen: counts[1], allowed: counts[0] >= Math.max(1, this.settings.autoAllowClients), expiresAt };
    }
    const record = domainRecord(value);
    const [client = '', domain = ''] = parts;
    if (!record || parts.length !== 2) return undefined;
    return { kind, client, domain, senders: record.senders.length, allowed: record.senders.length >= Math.max(1, this.settings.domainAutoAllow), expiresAt };
  }

  private async countClientPass(clientKey: string): Promise<void> {
    for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt += 1) {
      const current = await this.store.get(clientKey);
      const now = this.clock.now();
      const stored = pair(current?.value, 'count', now, this.settings.maxAgeMs);
      if (stored && now < stored[1] + HOUR_MS) return; // another daemon counted this hour
      const value = `${(stored?.[0] ?? 0) + 1},${now}`;
      if (await this.store.compareAndSet(clientKey, current?.value, value, this.settings.maxAgeMs)) return;
    }
  }

  /**
   * Adds the sender to the domain's record (up to `domainAutoAllow` of them). A record that
   * already holds the sender, or is full, is rewritten only to refresh it, at most once an
   * hour: every other write adds a sender, so a daemon that lost its race to the first passes
   * of other senders retries at most once for each of them (and gives up, with StoreError,
   * only when something else rewrites the key). With a fixed number of attempts, a burst of
   * first passes of many senders of one domain at once (a provider retrying its queue) kept
   * only the first few of them, and the domain never reached its level.
   */
  private async recordDomainSender(client: string, domain: string, fullSender: string): Promise<void> {
    const key = this.domainKey(client, domain);
    const sender = keyPart(fullSender);
    const level = this.settings.domainAutoAllow;
    const attempts = MAX_ATTEMPTS + level;
    for (let attempt = 1; attempt <= attempts; attempt += 1) {
      const current = await this.store.get(key);
      const now = this.clock.now();
      const record = domainRecord(current?.value) ?? { senders: [], last: 0 };
      const holds = record.senders.includes(sender) || record.senders.length >= level;
      if (holds && now < record.last + HOUR_MS) return;
      const senders = holds ? record.senders : [...record.senders, sender];
      const value = JSON.stringify({ senders, last: now });
      if (await this.store.compareAndSet(key, current?.value, value, this.settings.maxAgeMs)) return;
    }
    throw new StoreError(`greylist: ${key} changed under ${attempts} updates in a row`);
  }
}
