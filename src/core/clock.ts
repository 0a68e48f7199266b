/**
 * NAME
 *   core/clock - injectable time source
 *
 * DESCRIPTION
 *   Everything that reads the time (cache expiry, rate windows, refresh deadlines) takes a Clock,
 *   so tests move time (test/support/manual-time ManualClock) instead of sleeping.
 *
 *   Deadlines and waits (a callout's overall deadline, a policy request's timeouts, the wait for
 *   another process's lock) go by Timers: a monotonic clock with its timers, performance.now()
 *   and setTimeout in production, so a step of the wall clock (NTP, a resumed virtual machine)
 *   neither ends nor stretches one. Tests move that time too (ManualTimers). Socket timeouts
 *   inside a dialogue stay on real timers: they bound real I/O.
 *
 *   RequestTimeClock is the time of the requests a benchmark or test replays (postgrey's
 *   policy_test_time hook): the latest time a request carried, the base clock's before any did;
 *   the store's purge goes by maintenanceNow(), which a far-future request time cannot move.
 */

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

/** What Timers.setTimeout gives back: NodeJS.Timeout in production. */
export interface TimerHandle {
  /** Lets the process exit while the timer is pending (a no-op under ManualTimers). */
  unref(): TimerHandle;
  /**
   * Sets the timer going again for its whole delay from now, without a new timer; one that
   * already fired is set going again, one that was cleared stays cleared (as Node's).
   */
  refresh(): TimerHandle;
}

/** A monotonic clock and its timers. */
export interface Timers {
  /** Milliseconds on a clock that only moves forward at a steady rate (performance.now()). */
  now(): number;
  setTimeout(fire: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle | undefined): void;
}

export const systemTimers: Timers = {
  now: () => performance.now(),
  setTimeout: (fire, ms) => setTimeout(fire, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout | undefined),
};

/**
 * Resolves after ms on the timers given, or at once when signal is aborted (before or during the
 * wait), its timer cleared: a wait cut short by a shutdown leaves no timer behind.
 */
export function sleep(ms: number, timers: Timers = systemTimers, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = timers.setTimeout(() => {
      signal?.removeEventListener('abort', abort);
      resolve();
    }, ms);
    const abort = () => {
      timers.clearTimeout(timer);
      resolve();
    };
    signal?.addEventListener('abort', abort, { once: true });
  });
}

/**
 * What work settles with, or what late() gives (or throws) if ms pass first on the timers given:
 * the bound of a wait on real I/O. The work itself goes on; only the wait for it ends.
 */
export async function settleWithin<T, U>(work: Promise<T>, ms: number, late: () => U, timers: Timers = systemTimers): Promise<T | U> {
  let timer: TimerHandle | undefined;
  const lateness = new Promise<U>((resolve, reject) => {
    timer = timers.setTimeout(() => {
      try {
        resolve(late());
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    }, ms);
  });
  try {
    return await Promise.race([work, lateness]);
  } finally {
    timers.clearTimeout(timer);
  }
}

/**
 * A time as ISO 8601 in UTC, to the second. A stored time that no Date can hold (written by
 * another program, or by a clock set absurdly far ahead) is shown as the number it is:
 * Date.prototype.toISOString throws for it, and one such entry made a listing fail whole.
 */
export function isoSeconds(ms: number): string {
  const date = new Date(ms);
  return Number.isNaN(date.getTime()) ? `${ms} (not a representable time)` : date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** The latest request time it was given (never going back), or the base clock before any. */
export class RequestTimeClock implements Clock {
  private latest: number | undefined;
  constructor(private readonly base: Clock) {}
  now(): number {
    return this.latest ?? this.base.now();
  }
  /** Moves to ms when that is later than every time given before. */
  follow(ms: number): void {
    if (this.latest === undefined || ms > this.latest) this.latest = ms;
  }
  /**
   * The time maintenance (the store's purge) judges expiry by: the base clock's, never later
   * than now(). By now() alone, one request carrying a far-future time had the next purge delete
   * every entry; by the base clock alone, a purge during the replay of a past trace would delete
   * entries its requests still read as live. What is expired at both is expired for every
   * request to come, since now() never goes back: such a purge changes no decision.
   */
  maintenanceNow(): number {
    return Math.min(this.base.now(), this.now());
  }
}
