/**
 * NAME
 *   ratelimit/window - sliding-window event counts over the shared Store
 *
 * DESCRIPTION
 *   Counts events per key over a sliding window of `windowMs` from two fixed-window counters:
 *   the current window's and the previous one's, weighted by how much of the previous window
 *   still lies inside the sliding one:
 *       estimate = previous × (1 − elapsed / window) + current
 *   This is exact when events in the previous window were spread evenly, never lets a burst
 *   at a window boundary through twice (a fixed window would allow 2× the limit there), and
 *   costs one atomic increment and one read per event: Store.increment is INCRBY in Redis, so
 *   every daemon of a cluster adds to the same counters without losing a count. A counter
 *   lives two windows (the store expires it). Window boundaries come from the injected Clock.
 *   An event that was then refused is taken back with remove(), one atomic decrement of the
 *   counter it was added to: adding first and taking back lets no concurrent event through on
 *   a count that a read-then-add would have raced on. The store never takes a counter below 0
 *   (store/semantics): one that Redis evicted (maxmemory) or that expired meanwhile is not
 *   created again at -1, which would have let one event too many through its window; and it
 *   adds to one found below 0 (another program's on a shared Redis, or damaged) from 0.
 *
 *   Keys: PREFIX KEY ":" N, where N is the window's number since the epoch.
 *
 * ERRORS
 *   Store failures reject with StoreError.
 */

import type { Clock } from '../../core/clock.js';
import { readCounter } from '../../store/semantics.js';
import type { Store } from '../../store/types.js';

/** The shortest window: a window of 0 would make every estimate NaN (never over a limit). */
export const WINDOW_MIN_MS = 1000;

export interface WindowSample {
  /** The sliding-window estimate, including an event just added. */
  estimate: number;
  current: number;
  previous: number;
  /** Start of the current fixed window (epoch ms). */
  windowStart: number;
}

export class SlidingWindow {
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    readonly windowMs: number,
    private readonly prefix: string,
  ) {}

  /** Adds `by` events for the key and returns the estimate including them. */
  add(key: string, by = 1): Promise<WindowSample> {
    return this.sample(key, by);
  }

  /**
   * Takes back `by` events added by add(), from the fixed window the sample was taken in (the
   * clock may have moved into the next one since), so an event that was refused does not count.
   */
  async remove(key: string, sample: WindowSample, by = 1): Promise<void> {
    await this.store.increment(`${this.prefix}${key}:${Math.round(sample.windowStart / this.windowMs)}`, -by, this.ttlMs());
  }

  /** The estimate without adding an event. */
  peek(key: string): Promise<WindowSample> {
    return this.sample(key, 0);
  }

  /**
   * Milliseconds from now until one more event would keep the estimate at or below `limit`,
   * if no other event came in between; 0 when it already would.
   */
  msUntilRoom(sample: WindowSample, limit: number): number {
    const now = this.clock.now();
    const target = limit - 1;
    const { current, previous, windowStart } = sample;
    let at: number;
    if (current <= target) {
      if (previous <= 0) return 0;
      at = windowStart + Math.max(0, 1 - (target - current) / previous) * this.windowMs;
    } else {
      // Only the next window's decay of this window's count makes room.
      at = windowStart + this.windowMs + (1 - Math.max(0, target) / current) * this.windowMs;
    }
    return Math.max(0, Math.ceil(at - now));
  }

  /** A counter is read for the whole of the next window, and expires after it. */
  private ttlMs(): number {
    return 2 * this.windowMs + 1000;
  }

  private async sample(key: string, by: number): Promise<WindowSample> {
    const now = this.clock.now();
    const index = Math.floor(now / this.windowMs);
    const windowStart = index * this.windowMs;
    const ttl = this.ttlMs();
    const currentKey = `${this.prefix}${key}:${index}`;
    const [current, previousEntry] = await Promise.all([
      by > 0 ? this.store.increment(currentKey, by, ttl) : this.store.get(currentKey).then((e) => readCounter(e?.value)),
      this.store.get(`${this.prefix}${key}:${index - 1}`),
    ]);
    const previous = readCounter(previousEntry?.value);
    // previous × (window − elapsed) / window with one rounding: an estimate that is a whole
    // number is exactly that number. previous × (1 − elapsed / window) rounded twice and made
    // 30 × 0.3 + 1 come out as 10.000000000000002, over a limit of 10 it was not over.
    return { estimate: (previous * (this.windowMs - (now - windowStart))) / this.windowMs + current, current, previous, windowStart };
  }
}
