/**
 * NAME
 *   core/idle-poll - poll the event loop for a moment after answering, instead of sleeping at once
 *
 * DESCRIPTION
 *   A client of a lookup or policy service (Postfix's smtpd, cleanup, trivial-rewrite) sends one
 *   request, waits for the answer, and often sends the next one microseconds later. When the
 *   service goes to sleep in epoll_wait right after answering, the next request has to wake it:
 *   on a virtual machine whose idle CPUs halt at once, that wake-up costs tens of microseconds,
 *   more than the answer itself. Linux's cpuidle-haltpoll governor solves this for guests by
 *   polling before it halts a CPU (guest_halt_poll_ns, 200 µs by default); where it is off (as
 *   on the Firecracker VMs this project is measured on), IdlePoller does the same for one
 *   process: after an answer it keeps the event loop turning (setImmediate, so epoll is asked
 *   with a zero timeout) for a window of microseconds, and a request that arrives meanwhile is
 *   read without a wake-up.
 *
 *   The window adapts as haltpoll's does (PollWindow): it starts closed; a request that arrived
 *   after the process had gone to sleep, but within maxMicros of the answer its connection got
 *   last, opens it (to growMicros, then doubling up to maxMicros), since polling would have
 *   caught it; a request that came later than maxMicros halves it (and below growMicros closes
 *   it), since polling would only have burnt CPU. A request caught while polling leaves it as it
 *   is. The gap is measured per connection (IdlePoller), so polling costs CPU only while clients
 *   ask again right after their answers, and an idle service, or one whose many clients each
 *   ask now and then, never polls.
 *
 * CONFIGURATION
 *   maxMicros (0 turns polling off), growMicros (default 50, haltpoll's guest_halt_poll_grow_start).
 *
 * LIMITS
 *   One poll lasts at most maxMicros after the latest answer; the poll itself is one event-loop
 *   turn at a time, so requests, timers and I/O are served as usual while it runs.
 */

import { availableParallelism } from 'node:os';
import { performance } from 'node:perf_hooks';

/** haltpoll's guest_halt_poll_ns; nothing on one CPU, where the client cannot run while we poll. */
export const DEFAULT_IDLE_POLL_MICROS = availableParallelism() > 1 ? 200 : 0;
export const DEFAULT_IDLE_POLL_GROW_MICROS = 50;
/** The longest poll the configuration and the flags accept: beyond it polling costs more than any wake-up. */
export const MAX_IDLE_POLL_MICROS = 10_000;

export interface IdlePollOptions {
  /** The longest poll after an answer, in microseconds; 0 never polls. */
  maxMicros: number;
  /** The first window a useful poll opens, in microseconds. */
  growMicros?: number;
  /** A monotonic clock in milliseconds (default performance.now); tests move their own. */
  now?: () => number;
}

/** The adaptive window alone (pure): how long to poll after the next answer. */
export class PollWindow {
  readonly maxMicros: number;
  readonly growMicros: number;
  private current = 0;

  constructor(options: IdlePollOptions) {
    this.maxMicros = Math.max(0, options.maxMicros);
    this.growMicros = Math.min(this.maxMicros, Math.max(1, options.growMicros ?? DEFAULT_IDLE_POLL_GROW_MICROS));
  }

  /** Microseconds to poll after the next answer. */
  get micros(): number {
    return this.current;
  }

  /**
   * A request arrived gapMicros after the latest answer; caught tells whether the process was
   * still polling then.
   */
  observe(gapMicros: number, caught: boolean): void {
    if (caught || this.maxMicros === 0) return;
    if (gapMicros <= this.maxMicros) {
      this.current = this.current === 0 ? this.growMicros : Math.min(this.maxMicros, this.current * 2);
    } else {
      this.current = this.current / 2 < this.growMicros ? 0 : this.current / 2;
    }
  }
}

export interface IdlePollStats {
  /** Requests that arrived while the process was polling (each saved a wake-up). */
  caught: number;
  /** Requests that arrived after the process had gone to sleep. */
  slept: number;
  /** Time spent polling, in seconds: the poll's turns in which no request was read. */
  pollSeconds: number;
}

/**
 * Drives a PollWindow on the real event loop; one per process or server. The gap it learns from
 * is per connection: from the answer on a connection to that connection's next request. One
 * client asking again right after its answer is what polling serves; requests of many
 * independent clients that merely arrive often (each an smtpd between two SMTP commands of its
 * own client) never open the window, so a moderately loaded service does not poll.
 */
export class IdlePoller {
  readonly stats: IdlePollStats = { caught: 0, slept: 0, pollSeconds: 0 };
  private window: PollWindow;
  private readonly growMicros: number;
  /** Polling lasts until this time (ms); undefined while the loop is not polling. */
  private pollUntil: number | undefined;
  /** When the poll's latest turn (or the latest answer) ended; the time since is the current turn's. */
  private turnStarted = 0;
  /** A request was read during the current turn: its time went to the request, not to polling. */
  private requestInTurn = false;
  private readonly now: () => number;
  private readonly turn = (): void => this.pollTurn();

  constructor(options: IdlePollOptions) {
    this.growMicros = options.growMicros ?? DEFAULT_IDLE_POLL_GROW_MICROS;
    this.window = new PollWindow(options);
    this.now = options.now ?? (() => performance.now());
  }

  /** A new longest poll (a configuration reload); the window starts closed again. */
  setMaxMicros(maxMicros: number): void {
    if (maxMicros !== this.window.maxMicros) this.window = new PollWindow({ maxMicros, growMicros: this.growMicros });
  }

  /**
   * Call after an answer (or a batch of answers) was written; polls if the window is open.
   * Returns the time of the answer, for the connection to give back to arrived() with its next
   * request (undefined while polling is off).
   */
  answered(): number | undefined {
    if (this.window.maxMicros === 0) return undefined;
    const now = this.now();
    const micros = this.window.micros;
    if (micros > 0) {
      if (this.pollUntil === undefined) setImmediate(this.turn);
      // What the loop did before this answer (deciding it) is not polling.
      this.turnStarted = now;
      this.requestInTurn = false;
      this.pollUntil = Math.max(this.pollUntil ?? 0, now + micros / 1000);
    }
    return now;
  }

  /**
   * Call when a request (or the first chunk of one) is read, with the time answered() gave for
   * the connection's previous answer (undefined: none since its last request, nothing to learn).
   */
  arrived(answeredAt: number | undefined): void {
    this.requestInTurn = true;
    if (answeredAt === undefined || this.window.maxMicros === 0) return;
    const now = this.now();
    // A loop that was blocked (a long commit, a GC pause) may not have ended a poll that is over.
    const caught = this.pollUntil !== undefined && now <= this.pollUntil;
    if (caught) this.stats.caught++;
    else this.stats.slept++;
    this.window.observe((now - answeredAt) * 1000, caught);
  }

  /**
   * Counts the turn that ends now as polling unless a request was read in it: once polls chain
   * (each answer extends the poll), counting from the poll's start counted the time spent
   * answering too, and a busy service seemed to spend all its time polling.
   */
  private pollTurn(): void {
    const now = this.now();
    if (!this.requestInTurn) this.stats.pollSeconds += (now - this.turnStarted) / 1000;
    this.requestInTurn = false;
    this.turnStarted = now;
    if (this.pollUntil !== undefined && now < this.pollUntil) {
      setImmediate(this.turn);
      return;
    }
    this.pollUntil = undefined;
  }
}
