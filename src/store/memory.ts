/**
 * NAME
 *   store/memory - the in-process Store, for tests, one-shot CLI runs and single-process sites
 *
 * DESCRIPTION
 *   A Map of key to { value, expiresAt }. Expiry is judged lazily: a read of an expired entry
 *   deletes it and answers absent; purgeExpired() sweeps the rest. Nothing survives the process.
 *   scan orders keys by Unicode code point, which is the byte order SQLite (and Redis) use for
 *   UTF-8 keys, so every backend lists keys the same way.
 *
 * LIMITS
 *   At most maxEntries entries (default 1,000,000). When a new key would exceed the bound the
 *   store first drops expired entries, then evicts the oldest-written entries (insertion order of
 *   the last set(); increment keeps a counter's place) until 1% of the bound is free. Oldest-
 *   written rather than closest-to-expiry: with the few fixed ttls each record kind uses the two
 *   nearly coincide, and insertion order costs nothing to keep. Freeing 1% at a time means the
 *   O(n) sweep runs at most once per 1% of inserts, not on every insert into a full store.
 *   Each key and value is kept as a copy of its own (core/memo ownCopy), never as the slice of
 *   a larger string (a policy request) it may have been made from.
 *   scan filters and sorts the matching keys on each call: O(n) in the store size, meant for
 *   administration, not for the per-message path. scanPages sorts them once, at its first page
 *   (the keys only: their entries are read page by page), and lists no key set after that.
 *
 * ERRORS
 *   Bad arguments and any use after close() reject with StoreError.
 */

import { systemClock, type Clock } from '../core/clock.js';
import { ConfigError, StoreError } from '../core/errors.js';
import { ownCopy } from '../core/memo.js';
import { ASK_LATER, type Store, type StoredValue } from './types.js';
import { addToCounter, checkIncrement, checkPageSize, checkScanLimit, compareKeys, expiryAfter, isLive } from './semantics.js';

export interface MemoryStoreOptions {
  clock?: Clock;
  maxEntries?: number;
}

const DEFAULT_MAX_ENTRIES = 1_000_000;

export class MemoryStore implements Store {
  readonly kind = 'memory' as const;
  private readonly clock: Clock;
  private readonly maxEntries: number;
  private readonly entries = new Map<string, StoredValue>();
  private closed = false;

  constructor(options: MemoryStoreOptions = {}) {
    this.clock = options.clock ?? systemClock;
    this.maxEntries = options.maxEntries ?? DEFAULT_MAX_ENTRIES;
    if (!Number.isSafeInteger(this.maxEntries) || this.maxEntries < 1) {
      throw new ConfigError(`memory store: maxEntries must be a positive integer, got ${this.maxEntries}`);
    }
  }

  async get(key: string): Promise<StoredValue | undefined> {
    this.checkOpen('get');
    const entry = this.liveEntry(key, this.clock.now());
    return entry && { ...entry };
  }

  async getMany(keys: readonly string[]): Promise<Array<StoredValue | undefined>> {
    this.checkOpen('getMany');
    const now = this.clock.now();
    return keys.map((key) => {
      const entry = this.liveEntry(key, now);
      return entry && { ...entry };
    });
  }

  peek(key: string): Readonly<StoredValue> | undefined | typeof ASK_LATER {
    // get() reports a closed store.
    if (this.closed) return ASK_LATER;
    return this.liveEntry(key, this.clock.now());
  }

  async set(key: string, value: string, ttlMs: number): Promise<void> {
    const now = this.clock.now();
    this.write(key, { value, expiresAt: expiryAfter(this.context('set'), ttlMs, now) }, now);
  }

  async setIfAbsent(key: string, value: string, ttlMs: number): Promise<boolean> {
    const now = this.clock.now();
    const expiresAt = expiryAfter(this.context('setIfAbsent'), ttlMs, now);
    if (this.liveEntry(key, now)) return false;
    this.write(key, { value, expiresAt }, now);
    return true;
  }

  async compareAndSet(key: string, expected: string | undefined, value: string, ttlMs: number): Promise<boolean> {
    const now = this.clock.now();
    const expiresAt = expiryAfter(this.context('compareAndSet'), ttlMs, now);
    if (this.liveEntry(key, now)?.value !== expected) return false;
    this.write(key, { value, expiresAt }, now);
    return true;
  }

  async delete(key: string): Promise<void> {
    this.checkOpen('delete');
    this.entries.delete(key);
  }

  async deleteIf(key: string, expected: string): Promise<boolean> {
    this.checkOpen('deleteIf');
    if (this.liveEntry(key, this.clock.now())?.value !== expected) return false;
    return this.entries.delete(key);
  }

  async increment(key: string, by: number, ttlMs: number): Promise<number> {
    const context = this.context('increment');
    checkIncrement(context, by);
    const now = this.clock.now();
    const expiresAt = expiryAfter(context, ttlMs, now);
    const existing = this.liveEntry(key, now);
    if (existing) {
      const sum = addToCounter(context, existing.value, by);
      existing.value = String(sum);
      return sum;
    }
    if (by < 0) return 0;
    this.write(key, { value: String(by), expiresAt }, now);
    return by;
  }

  async scan(prefix: string, limit: number): Promise<Array<{ key: string } & StoredValue>> {
    checkScanLimit(this.context('scan'), limit);
    const now = this.clock.now();
    const matches: Array<{ key: string } & StoredValue> = [];
    for (const [key, entry] of this.entries) {
      if (key.startsWith(prefix) && isLive(entry.expiresAt, now)) matches.push({ key, ...entry });
    }
    return matches.sort((a, b) => compareKeys(a.key, b.key)).slice(0, limit);
  }

  /** The keys are taken (sorted) at the first page; each page reads their entries as they are then. */
  async *scanPages(prefix: string, pageSize: number): AsyncGenerator<Array<{ key: string } & StoredValue>, void, undefined> {
    checkPageSize(this.context('scan'), pageSize);
    const keys = [...this.entries.keys()].filter((key) => key.startsWith(prefix)).sort(compareKeys);
    for (let start = 0; start < keys.length; start += pageSize) {
      this.checkOpen('scan');
      const now = this.clock.now();
      const page: Array<{ key: string } & StoredValue> = [];
      for (const key of keys.slice(start, start + pageSize)) {
        const entry = this.entries.get(key);
        if (entry && isLive(entry.expiresAt, now)) page.push({ key, ...entry });
      }
      if (page.length > 0) yield page;
    }
  }

  async purgeExpired(at?: number): Promise<number> {
    this.checkOpen('purgeExpired');
    return this.removeExpired(at ?? this.clock.now());
  }

  async close(): Promise<void> {
    this.closed = true;
    this.entries.clear();
  }

  private context(operation: string): string {
    this.checkOpen(operation);
    return `memory store: ${operation}`;
  }

  private checkOpen(operation: string): void {
    if (this.closed) throw new StoreError(`memory store: ${operation}: store is closed`);
  }

  private liveEntry(key: string, now: number): StoredValue | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    if (isLive(entry.expiresAt, now)) return entry;
    this.entries.delete(key);
    return undefined;
  }

  private write(key: string, entry: StoredValue, now: number): void {
    // Deleting first moves the key to the end of the Map: eviction order is last-set order.
    if (!this.entries.delete(key)) this.makeRoom(now);
    // Keys and values are often built from policy attributes, slices of the whole request's
    // string, which a slice keeps alive (core/memo ownCopy): a sender's rate-limit counter or a
    // connection's tarpit count held a request each, up to maxEntries of them.
    this.entries.set(ownCopy(key), { ...entry, value: ownCopy(entry.value) });
  }

  private makeRoom(now: number): void {
    if (this.entries.size < this.maxEntries) return;
    this.removeExpired(now);
    const target = this.maxEntries - Math.max(1, Math.floor(this.maxEntries / 100));
    for (const key of this.entries.keys()) {
      if (this.entries.size <= target) break;
      this.entries.delete(key);
    }
  }

  private removeExpired(now: number): number {
    let removed = 0;
    for (const [key, entry] of this.entries) {
      if (!isLive(entry.expiresAt, now)) {
        this.entries.delete(key);
        removed += 1;
      }
    }
    return removed;
  }
}
