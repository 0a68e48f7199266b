/**
 * NAME
 *   support/manual-time - clocks and timers that move only when a test tells them to
 *
 * DESCRIPTION
 *   ManualClock stands in for core/clock's Clock (the wall clock that dates records and
 *   expiries), ManualTimers for its Timers (the monotonic clock of deadlines and waits), so
 *   tests move time instead of sleeping. They live here, not in src/, because nothing that
 *   ships uses them.
 */

import type { Clock, TimerHandle, Timers } from '../../src/core/clock.js';

/** A clock that only moves when told to. */
export class ManualClock implements Clock {
  private current: number;
  constructor(start = Date.UTC(2026, 0, 1)) {
    this.current = start;
  }
  now(): number {
    return this.current;
  }
  advance(ms: number): void {
    this.current += ms;
  }
  set(ms: number): void {
    this.current = ms;
  }
}

interface PendingTimer extends TimerHandle {
  due: number;
  /** Ties at one due time fire in the order they were set (or refreshed), as Node's do. */
  order: number;
  readonly delay: number;
  readonly fire: () => void;
  cleared: boolean;
}

/**
 * Timers that only move when told to. advance() fires every timer that falls due, in time order,
 * each with now() at its due time, letting the promise callbacks each firing starts run before
 * the next (so a wait that sets a new timer when woken is seen). A wall clock given moves along,
 * as both move in production.
 */
export class ManualTimers implements Timers {
  private current: number;
  private order = 0;
  private readonly pending = new Set<PendingTimer>();
  private readonly wall: ManualClock | undefined;

  constructor(options: { start?: number; wall?: ManualClock } = {}) {
    this.current = options.start ?? 0;
    this.wall = options.wall;
  }

  now(): number {
    return this.current;
  }
  setTimeout(fire: () => void, ms: number): TimerHandle {
    // As Node's: a delay that is not a positive number fires on the next turn (1 ms).
    const delay = Number.isFinite(ms) && ms >= 1 ? ms : 1;
    const timer: PendingTimer = { due: this.current + delay, order: this.order++, delay, fire, cleared: false, unref: () => timer, refresh: () => this.rearm(timer) };
    this.pending.add(timer);
    return timer;
  }
  clearTimeout(handle: TimerHandle | undefined): void {
    if (!handle) return;
    (handle as PendingTimer).cleared = true;
    this.pending.delete(handle as PendingTimer);
  }
  /** The timers set and not yet fired or cleared. */
  get waiting(): number {
    return this.pending.size;
  }
  async advance(ms: number): Promise<void> {
    const target = this.current + ms;
    await settle();
    for (;;) {
      let next: PendingTimer | undefined;
      for (const timer of this.pending) if (timer.due <= target && (!next || timer.due < next.due || (timer.due === next.due && timer.order < next.order))) next = timer;
      if (!next) break;
      this.pending.delete(next);
      this.move(next.due);
      next.fire();
      await settle();
    }
    this.move(target);
    await settle();
  }
  private rearm(timer: PendingTimer): PendingTimer {
    if (timer.cleared) return timer;
    timer.due = this.current + timer.delay;
    timer.order = this.order++;
    this.pending.add(timer);
    return timer;
  }
  private move(to: number): void {
    if (to <= this.current) return;
    this.wall?.advance(to - this.current);
    this.current = to;
  }
}

/** Lets the promise callbacks already queued, and those they queue, run (one macrotask turn). */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
