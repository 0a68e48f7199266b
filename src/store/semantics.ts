/**
 * NAME
 *   store/semantics - the rules every Store backend applies the same way
 *
 * DESCRIPTION
 *   Expiry, argument checks and counter arithmetic, kept in one place so the memory, SQLite and
 *   Redis backends cannot drift apart:
 *     - An entry is live while now < expiresAt: a ttl of 1000 ms set at t is visible up to t+999
 *       and gone at t+1000.
 *     - ttlMs is a positive integer; there is no "never expires", because every record kind the
 *       stores hold has a lifetime.
 *     - A counter is a decimal integer string; increment on any other value fails (as Redis INCR
 *       does) instead of silently restarting at zero, and results stay within safe integers.
 *     - A decrement (a negative increment) takes back what was added: it never takes a counter
 *       below 0 (one already below stays where it is) and leaves an absent counter absent,
 *       answering 0. A counter evicted or expired between the add and the take-back would
 *       otherwise start again at -1 and let one event too many through its window.
 *     - An addition to a counter below 0 (none that callout writes: another program's on a
 *       shared Redis, or damaged) starts from 0, as readCounter reads it: added to, a stored
 *       -100000 let a client that many events past its limit. The counter keeps its expiry.
 *     - scan lists keys in Unicode code point order, which is UTF-8 byte order: the order SQLite
 *       and Redis keep UTF-8 keys in.
 *
 * ERRORS
 *   Every check rejects with StoreError; `context` (backend, path, operation) leads its message.
 */

import { StoreError } from '../core/errors.js';

export function isLive(expiresAt: number, now: number): boolean {
  return now < expiresAt;
}

/** ttlMs itself, once it is known to be a positive integer. */
export function checkTtl(context: string, ttlMs: number): number {
  if (!Number.isSafeInteger(ttlMs) || ttlMs <= 0) {
    throw new StoreError(`${context}: ttlMs must be a positive integer, got ${ttlMs}`);
  }
  return ttlMs;
}

/** The expiry of an entry written now with ttlMs. */
export function expiryAfter(context: string, ttlMs: number, now: number): number {
  return now + checkTtl(context, ttlMs);
}

export function checkScanLimit(context: string, limit: number): void {
  if (!Number.isSafeInteger(limit) || limit < 0) {
    throw new StoreError(`${context}: limit must be a non-negative integer, got ${limit}`);
  }
}

export function checkPageSize(context: string, pageSize: number): void {
  if (!Number.isSafeInteger(pageSize) || pageSize < 1) {
    throw new StoreError(`${context}: pageSize must be a positive integer, got ${pageSize}`);
  }
}

export function checkIncrement(context: string, by: number): void {
  if (!Number.isSafeInteger(by)) throw new StoreError(`${context}: increment must be a safe integer, got ${by}`);
}

/** A stored counter's value: a safe integer written as Redis's INCRBY writes one ("-0" is none), or undefined. */
function counterValue(stored: string): number | undefined {
  const value = /^(0|-?[1-9][0-9]*)$/.test(stored) ? Number(stored) : Number.NaN;
  return Number.isSafeInteger(value) ? value : undefined;
}

/**
 * The sum of a stored counter and an increment (a decrement stopping at 0, an addition to a
 * counter below 0 starting from 0), refusing values that are not counters.
 */
export function addToCounter(context: string, stored: string, by: number): number {
  const current = counterValue(stored);
  if (current === undefined) {
    throw new StoreError(`${context}: stored value is not an integer counter`);
  }
  if (by > 0 && current < 0) return by;
  const sum = current + by;
  if (by < 0 && sum < 0) return Math.min(current, 0);
  if (!Number.isSafeInteger(sum)) throw new StoreError(`${context}: counter would leave the safe integer range`);
  return sum;
}

/**
 * A counter read back for a sum, not for an increment: a value addToCounter would refuse
 * (written by another program to a shared Redis, or damaged) or a negative one counts as 0.
 * Number() read "1e3", "0x10" and "Infinity" as counts, and a stored -100000 in a rate
 * window let a client that many events past its limit.
 */
export function readCounter(stored: string | undefined): number {
  return Math.max(0, (stored === undefined ? undefined : counterValue(stored)) ?? 0);
}

/** UTF-16 code units remapped so that comparing them compares code points (UTF-8 byte order). */
function codePointRank(unit: number): number {
  if (unit < 0xd800) return unit;
  return unit >= 0xe000 ? unit - 0x800 : unit + 0x2000;
}

/** Orders keys by code point, for Array.prototype.sort. */
export function compareKeys(a: string, b: string): number {
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i += 1) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return codePointRank(x) - codePointRank(y);
  }
  return a.length - b.length;
}
