/**
 * NAME
 *   dns/cache - a caching, single-flight Resolver wrapper
 *
 * DESCRIPTION
 *   CachingResolver answers repeated lookups from memory for the answer's TTL, clamped into
 *   [minTtlSeconds, maxTtlSeconds]. NXDOMAIN and NODATA are cached too (RFC 2308 §5) for
 *   min(ttl, negativeTtlSeconds), clamped the same way. Temporary failures are not cached
 *   unless tempfailTtlSeconds is set, and then only briefly, so a DNS outage ends for callers
 *   as soon as it ends on the wire. Concurrent lookups of the same name and type share one
 *   upstream query. A cached answer reports the TTL it has left, rounded up, so callers that
 *   cache further never outlive the record.
 *
 * LIMITS
 *   At most maxEntries answers are kept, holding at most about maxBytes between them; the oldest
 *   stored is evicted first. The byte bound is there because the count alone is not one: the
 *   owner of a wildcard zone makes every lookup under it a new name, each answered with up to
 *   64 KiB over TCP, and 100000 of those would take gigabytes. An answer bigger than maxBytes on
 *   its own is passed on without being kept. Expired entries are dropped when next looked up or
 *   evicted. Names are matched case-insensitively
 *   (RFC 4343) and without a trailing dot. A key is kept as a copy of its own (core/memo
 *   ownCopy), so that a name sliced from a larger string (a policy request) does not keep it.
 *
 * ERRORS
 *   ConfigError for options out of range. A lookup that the wrapped resolver rejects rejects
 *   every caller sharing it and is not cached.
 */

import type { Clock } from '../core/clock.js';
import { ConfigError } from '../core/errors.js';
import { ownCopy } from '../core/memo.js';
import { canonicalName } from './names.js';
import type { DnsAnswer, DnsRecordType, MxRecord, Resolver } from './types.js';

export interface CachingResolverOptions {
  clock: Clock;
  /** Default 5. */
  minTtlSeconds?: number;
  /** Default 86400. */
  maxTtlSeconds?: number;
  /** Cap for NXDOMAIN and NODATA, default 3600. */
  negativeTtlSeconds?: number;
  /** How long a temporary failure is remembered: default 0 (not at all), at most 60. */
  tempfailTtlSeconds?: number;
  /** Default 100000. */
  maxEntries?: number;
  /** Approximate memory the kept answers may take, default 64 MiB. */
  maxBytes?: number;
}

export interface CacheStats {
  /** Lookups answered without a new upstream query (from memory or by joining one in flight). */
  hits: number;
  /** Lookups that sent a query upstream. */
  misses: number;
  entries: number;
}

const MAX_TEMPFAIL_TTL_SECONDS = 60;
/** What V8 spends on an entry's objects and on one record besides their strings, roughly. */
const ENTRY_OVERHEAD_BYTES = 160;
const RECORD_OVERHEAD_BYTES = 40;

interface Entry {
  answer: DnsAnswer<unknown>;
  expiresAt: number;
  bytes: number;
}

function checkedSeconds(name: string, value: number, maximum = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isFinite(value) || value < 0 || value > maximum) {
    throw new ConfigError(`dns cache ${name}: expected a number of seconds in 0..${maximum}, got ${String(value)}`);
  }
  return value;
}

export class CachingResolver implements Resolver {
  private readonly clock: Clock;
  private readonly minTtl: number;
  private readonly maxTtl: number;
  private readonly negativeTtl: number;
  private readonly tempfailTtl: number;
  private readonly maxEntries: number;
  private readonly maxBytes: number;
  private bytes = 0;
  private readonly entries = new Map<string, Entry>();
  private readonly inFlight = new Map<string, Promise<DnsAnswer<unknown>>>();
  /** Bumped by clear(), so answers to lookups begun before it are not stored after it. */
  private generation = 0;
  private hits = 0;
  private misses = 0;

  constructor(
    private readonly upstream: Resolver,
    options: CachingResolverOptions,
  ) {
    this.clock = options.clock;
    this.minTtl = checkedSeconds('minTtlSeconds', options.minTtlSeconds ?? 5);
    this.maxTtl = checkedSeconds('maxTtlSeconds', options.maxTtlSeconds ?? 86400);
    if (this.minTtl > this.maxTtl) {
      throw new ConfigError(`dns cache minTtlSeconds (${this.minTtl}) exceeds maxTtlSeconds (${this.maxTtl})`);
    }
    this.negativeTtl = checkedSeconds('negativeTtlSeconds', options.negativeTtlSeconds ?? 3600);
    this.tempfailTtl = checkedSeconds('tempfailTtlSeconds', options.tempfailTtlSeconds ?? 0, MAX_TEMPFAIL_TTL_SECONDS);
    this.maxEntries = options.maxEntries ?? 100000;
    if (!Number.isInteger(this.maxEntries) || this.maxEntries < 1) {
      throw new ConfigError(`dns cache maxEntries: expected an integer >= 1, got ${String(this.maxEntries)}`);
    }
    this.maxBytes = options.maxBytes ?? 64 * 1024 * 1024;
    if (!Number.isSafeInteger(this.maxBytes) || this.maxBytes < 1) {
      throw new ConfigError(`dns cache maxBytes: expected an integer >= 1, got ${String(this.maxBytes)}`);
    }
  }

  a(name: string): Promise<DnsAnswer<string>> {
    return this.lookup('A', name, () => this.upstream.a(name));
  }

  aaaa(name: string): Promise<DnsAnswer<string>> {
    return this.lookup('AAAA', name, () => this.upstream.aaaa(name));
  }

  mx(name: string): Promise<DnsAnswer<MxRecord>> {
    return this.lookup('MX', name, () => this.upstream.mx(name));
  }

  txt(name: string): Promise<DnsAnswer<string>> {
    return this.lookup('TXT', name, () => this.upstream.txt(name));
  }

  ptr(address: string): Promise<DnsAnswer<string>> {
    return this.lookup('PTR', address, () => this.upstream.ptr(address));
  }

  stats(): CacheStats {
    return { hits: this.hits, misses: this.misses, entries: this.entries.size };
  }

  clear(): void {
    this.entries.clear();
    this.bytes = 0;
    this.inFlight.clear();
    this.generation++;
  }

  /** The key's type tag keeps the answer's record type, which is why the casts below are sound. */
  private lookup<T>(type: DnsRecordType, name: string, query: () => Promise<DnsAnswer<T>>): Promise<DnsAnswer<T>> {
    const key = `${type} ${canonicalName(name)}`;
    const now = this.clock.now();
    const cached = this.entries.get(key);
    if (cached !== undefined) {
      if (cached.expiresAt > now) {
        this.hits++;
        return Promise.resolve(withRemainingTtl(cached.answer as DnsAnswer<T>, cached.expiresAt - now));
      }
      this.forget(key);
    }
    const pending = this.inFlight.get(key);
    if (pending !== undefined) {
      this.hits++;
      return pending as Promise<DnsAnswer<T>>;
    }
    this.misses++;
    const generation = this.generation;
    const started = query().then(
      (answer) => {
        if (generation === this.generation) {
          this.inFlight.delete(key);
          this.store(key, answer);
        }
        return answer;
      },
      (err: unknown) => {
        if (generation === this.generation) this.inFlight.delete(key);
        throw err;
      },
    );
    this.inFlight.set(key, started);
    return started;
  }

  private store(key: string, answer: DnsAnswer<unknown>): void {
    const seconds = this.lifetimeSeconds(answer);
    if (seconds <= 0) return;
    this.forget(key);
    const bytes = approximateBytes(key, answer);
    if (bytes > this.maxBytes) return;
    // A name sliced from a policy request would keep the whole request alive, uncounted.
    this.entries.set(ownCopy(key), { answer, expiresAt: this.clock.now() + seconds * 1000, bytes });
    this.bytes += bytes;
    while (this.entries.size > this.maxEntries || this.bytes > this.maxBytes) {
      const oldest = this.entries.keys().next();
      if (oldest.done === true) break;
      this.forget(oldest.value);
    }
  }

  private forget(key: string): void {
    const entry = this.entries.get(key);
    if (entry === undefined) return;
    this.entries.delete(key);
    this.bytes -= entry.bytes;
  }

  private lifetimeSeconds(answer: DnsAnswer<unknown>): number {
    switch (answer.kind) {
      case 'tempfail':
        return this.tempfailTtl;
      case 'records':
        return this.clamp(answer.ttl);
      case 'nxdomain':
      case 'nodata':
        return this.clamp(Math.min(answer.ttl, this.negativeTtl));
    }
  }

  private clamp(ttl: number): number {
    return Math.min(this.maxTtl, Math.max(this.minTtl, ttl));
  }
}

/** Strings count two bytes a character, as V8 may hold them. */
function approximateBytes(key: string, answer: DnsAnswer<unknown>): number {
  let bytes = ENTRY_OVERHEAD_BYTES + key.length * 2;
  if (answer.kind === 'tempfail') return bytes + answer.reason.length * 2;
  if (answer.kind !== 'records') return bytes;
  for (const record of answer.records) {
    const text = typeof record === 'string' ? record : (record as MxRecord).exchange;
    bytes += RECORD_OVERHEAD_BYTES + text.length * 2;
  }
  return bytes;
}

function withRemainingTtl<T>(answer: DnsAnswer<T>, remainingMs: number): DnsAnswer<T> {
  if (answer.kind === 'tempfail') return answer;
  return { ...answer, ttl: Math.ceil(remainingMs / 1000) };
}
