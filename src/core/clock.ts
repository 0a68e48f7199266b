/**
 * NAME
 *   core/clock - injectable time source
 *
 * DESCRIPTION
 *   Everything that reads the time (cache expiry, rate windows, refresh deadlines) takes a Clock,
 *   so tests move time with ManualClock instead of sleeping. Socket timeouts stay on real timers:
 *   they bound real I/O (settleWithin bounds a wait for it).
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

/**
 * What work settles with, or what late() gives (or throws) if ms pass first, on a real timer:
 * the bound of a wait on real I/O. The work itself goes on; only the wait for it ends.
 */
export async function settleWithin<T, U>(work: Promise<T>, ms: number, late: () => U): Promise<T | U> {
  let timer: NodeJS.Timeout | undefined;
  const lateness = new Promise<U>((resolve, reject) => {
    timer = setTimeout(() => {
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
    clearTimeout(timer);
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
