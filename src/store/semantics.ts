/**
 * NAME
 *   store/semantics - the rules every Store backend applies the same way
 *
 * DESCRIPTION
 *   Expiry, argument checks and counter arithmetic, kept in one place so the memory and SQLite
 *   backends (and later Redis) cannot drift apart:
 *     - An entry is live while now < expiresAt: a ttl of 1000 ms set at t is visible up to t+999
 *       and gone at t+1000.
 *     - ttlMs is a positive integer; there is no "never expires", because every record kind the
 *       stores hold has a lifetime.
 *     - A counter is a decimal integer string; increment on any other value fails (as Redis INCR
 *       does) instead of silently restarting at zero, and results stay within safe integers.
 *
 * ERRORS
 *   Every check rejects with StoreError; `context` (backend, path, operation) leads its message.
 */

import { StoreError } from '../core/errors.js';

export function isLive(expiresAt: number, now: number): boolean {
  return now < expiresAt;
}

/** The expiry of an entry written now with ttlMs. */
export function expiryAfter(context: string, ttlMs: number, now: number): number {
  if (!Number.isSafeInteger(ttlMs) || ttlMs <= 0) {
    throw new StoreError(`${context}: ttlMs must be a positive integer, got ${ttlMs}`);
  }
  return now + ttlMs;
}

export function checkScanLimit(context: string, limit: number): void {
  if (!Number.isSafeInteger(limit) || limit < 0) {
    throw new StoreError(`${context}: limit must be a non-negative integer, got ${limit}`);
  }
}

export function checkIncrement(context: string, by: number): void {
  if (!Number.isSafeInteger(by)) throw new StoreError(`${context}: increment must be a safe integer, got ${by}`);
}

/** The sum of a stored counter and an increment, refusing values that are not counters. */
export function addToCounter(context: string, stored: string, by: number): number {
  const current = /^-?(0|[1-9][0-9]*)$/.test(stored) ? Number(stored) : Number.NaN;
  if (!Number.isSafeInteger(current)) {
    throw new StoreError(`${context}: stored value is not an integer counter`);
  }
  const sum = current + by;
  if (!Number.isSafeInteger(sum)) throw new StoreError(`${context}: counter would leave the safe integer range`);
  return sum;
}
