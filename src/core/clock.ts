/**
 * NAME
 *   core/clock - injectable time source
 *
 * DESCRIPTION
 *   Everything that reads the time (cache expiry, rate windows, refresh deadlines) takes a Clock,
 *   so tests move time with ManualClock instead of sleeping. Socket timeouts stay on real timers:
 *   they bound real I/O.
 */

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

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
