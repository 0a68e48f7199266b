/**
 * NAME
 *   core/log - structured JSON logs (pino) for the daemons
 *
 * DESCRIPTION
 *   One JSON object per line on stdout, with a `component` field, so a decision can be found
 *   and explained from the log alone. Tests pass `silent` or a stream of their own.
 *
 *   By default lines go out through a coalescing destination: the lines logged during one turn
 *   of the event loop are written together, synchronously, at its end (setImmediate). The policy
 *   service logs a line per decision; one write per line, or pino's asynchronous writes through
 *   libuv's thread pool, cost a third of the CPU of a decision at ten thousand decisions a
 *   second, while a write per turn costs a few microseconds however many lines it carries. A
 *   line is on its way before the loop waits for anything again, so `tail -f` sees it at once,
 *   and what is pending is written when the process exits (normally or on an uncaught error);
 *   only a SIGKILL can lose the lines of the current turn.
 *
 *   In a policy worker (a node:cluster worker) the turn's lines go out in writes of at most
 *   PIPE_BUF (4096) octets, each ending at a line end: the workers share the supervisor's
 *   stdout, and a pipe takes a write whole only up to PIPE_BUF (POSIX). A larger write that
 *   found the pipe full was cut where it waited, and another worker's lines went into the
 *   middle of a line (about 20 lines in 10,000 when the reader lagged). A process that has
 *   stdout to itself keeps the one write per turn.
 *
 *   Senders, HELO names and replies are other people's text. JSON escapes CR, LF, NUL and ESC
 *   (a value never ends its line), but leaves the C1 controls U+0080-U+009F as they are, and a
 *   terminal that shows the log (`tail -f`) may take U+009B for CSI and move the cursor over the
 *   lines before; U+2028/U+2029 end a line for some log viewers, and a bidi override (U+202E)
 *   makes a viewer show a sender's text reversed, "moc.lapyap" as "paypal.com". The coalescing
 *   destination writes all of them as \uXXXX (core/text's DISPLAY_CONTROL; shown() does the
 *   same for command output).
 *
 * LIMITS
 *   In a worker, a line longer than 4096 octets is written alone and may still be cut by
 *   another process's write to the same pipe. The policy service's decision line cuts what it
 *   quotes (policy/daemon LOGGED_ATTRIBUTE_CHARS, LOGGED_REASON_CHARS) to stay under that with
 *   the default stages and ASCII values; characters that JSON or this module escape, or that
 *   take several octets in UTF-8, can still make it longer.
 */

import cluster from 'node:cluster';
import { pino } from 'pino';
import type { Logger } from 'pino';
import { ownCopy } from './memo.js';
import { DISPLAY_CONTROL, escapeDisplayControls } from './text.js';

export type { Logger };

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

/** What pino needs of a destination: a write per line. */
export interface LogDestination {
  write(line: string): unknown;
}

/** POSIX's PIPE_BUF on Linux: a write to a pipe of at most this many octets is never cut. */
export const ATOMIC_WRITE_OCTETS = 4096;

/** Lines of one event-loop turn, written together at its end. */
export class CoalescingDestination implements LogDestination {
  private pending: string[] = [];
  private scheduled = false;
  private readonly flushOnExit = (): void => this.flushSync();

  /**
   * `out` is written with whole lines; pino.destination({ sync: true }) fits. A write carries
   * at most maxWriteOctets (ATOMIC_WRITE_OCTETS where other processes write to the same pipe),
   * unless it is one line longer than that.
   */
  constructor(
    private readonly out: LogDestination,
    private readonly maxWriteOctets = Infinity,
  ) {
    process.on('exit', this.flushOnExit);
  }

  write(line: string): boolean {
    // Only ever inside a JSON string of a line: characters JSON leaves alone.
    this.pending.push(DISPLAY_CONTROL.test(line) ? escapeDisplayControls(line) : line);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flushSync());
    }
    return true;
  }

  /** Writes what is pending now (pino's logger.flush() calls flush). */
  flush(done?: (err?: Error) => void): void {
    this.flushSync();
    done?.();
  }

  flushSync(): void {
    this.scheduled = false;
    const lines = this.pending;
    if (lines.length === 0) return;
    this.pending = [];
    if (this.maxWriteOctets === Infinity) {
      this.out.write(lines.length === 1 ? lines[0]! : lines.join(''));
      return;
    }
    let batch = '';
    let octets = 0;
    for (const line of lines) {
      const size = Buffer.byteLength(line);
      if (octets > 0 && octets + size > this.maxWriteOctets) {
        this.out.write(batch);
        batch = '';
        octets = 0;
      }
      batch += line;
      octets += size;
    }
    this.out.write(batch);
  }

  /** Flushes and stops flushing at exit (for tests that make many). */
  close(): void {
    this.flushSync();
    process.off('exit', this.flushOnExit);
  }
}

/**
 * pino's synchronous destination, replaced by a new one when a write fails (ENOSPC on a full
 * disk, EIO): pino's emits 'error', which without a listener ended the daemon, and with one it
 * would keep the failed lines and retry them with every later write, growing while the disk is
 * full. The batch that failed is dropped and counted; the next write opens the destination
 * afresh and tries again (a path that cannot be opened then drops that batch too, and is tried
 * again at the one after). (A pipe that is full is waited for, by pino's own retry.)
 */
export class ResilientDestination implements LogDestination {
  /** Batches of lines lost to failed writes. */
  dropped = 0;
  /** undefined after a failed write, until the next write opens the destination again. */
  private sink: ReturnType<typeof pino.destination> | undefined;

  /** A path that cannot be opened at all throws here, as pino.destination does. */
  constructor(private readonly dest: number | string) {
    this.sink = this.open();
  }

  private open(): ReturnType<typeof pino.destination> {
    const sink = pino.destination({ dest: this.dest, sync: true });
    sink.on('error', () => {
      // pino's own listener emits the error again, so this one hears it twice.
      if (this.sink !== sink) return;
      this.dropped += 1;
      this.sink = undefined;
      // A file it opened itself is closed; standard output and error are left open.
      if (typeof this.dest === 'string') sink.destroy();
    });
    return sink;
  }

  write(batch: string): boolean {
    if (!this.sink) {
      try {
        this.sink = this.open();
      } catch {
        // A file that cannot be opened now (its directory gone, no descriptor left): the batch
        // is lost, as a failed write's is; an exception here would end the daemon.
        this.dropped += 1;
        return true;
      }
    }
    return this.sink.write(batch);
  }
}

/** The default destination: coalesced, synchronous writes to a file descriptor or path (in a worker, writes a pipe takes whole). */
export function coalescingDestination(dest: number | string = 1): CoalescingDestination {
  return new CoalescingDestination(new ResilientDestination(dest), cluster.isWorker ? ATOMIC_WRITE_OCTETS : Infinity);
}

let lastMillisecond = -1;
let lastTimeField = '';

/** pino's isoTime, made once per millisecond: at thousands of lines a second most lines share one. */
function isoTimeField(): string {
  const now = Date.now();
  if (now !== lastMillisecond) {
    lastMillisecond = now;
    lastTimeField = `,"time":"${new Date(now).toISOString()}"`;
  }
  return lastTimeField;
}

/**
 * Writes the line logger.info(fields, msg) would write, given JSON.stringify(fields) (an object,
 * whose undefined members it leaves out as pino does): pino's level, time and bindings, the
 * fields, msg. For the policy service's one line per decision: pino's generic serialiser (a
 * safe-stringify of every value, the arrays above all) was a fifth of the CPU of a cached
 * decision, one JSON.stringify of the whole object costs a fraction of that. pino.symbols is
 * pino's documented way in for such integrations. What createLogger's loggers do not use is not
 * done here either: pino's hooks, formatters, mixins and redaction.
 */
export function logInfoJson(logger: Logger, fieldsJson: string, msg: string): void {
  if (!logger.isLevelEnabled('info')) return;
  const internals = logger as unknown as Record<symbol, unknown>;
  const time = (internals[pino.symbols.timeSym] as () => string)();
  const bindings = internals[pino.symbols.chindingsSym] as string;
  const destination = internals[pino.symbols.streamSym] as LogDestination;
  // '{}' or '{"a":1,...}': the members go between the bindings and msg.
  const members = fieldsJson.length > 2 ? `,${fieldsJson.slice(1, -1)}` : '';
  destination.write(`{"level":${logger.levels.values.info}${time}${bindings}${members},"msg":${JSON.stringify(msg)}}\n`);
}

export function createLogger(level: LogLevel, destination: LogDestination = coalescingDestination()): Logger {
  const options = { level, base: { component: 'callout' }, timestamp: isoTimeField };
  return pino(options, destination as unknown as pino.DestinationStream);
}

/**
 * Collapses repeats of a log line: the first line of a key is written, the repeats within
 * windowMs are only counted, and the first one after the window is written with that count. A
 * store that fails (a full disk, Redis gone) fails every request the same way, and a line per
 * request and stage wrote tens of thousands of identical lines a minute, onto the disk that
 * was full. Keys are bounded (maxKeys, then forgotten at once).
 */
export class RepeatCollapser {
  private readonly seen = new Map<string, { since: number; repeats: number }>();

  constructor(
    private readonly windowMs: number,
    private readonly maxKeys = 1000,
  ) {}

  /**
   * undefined: leave this line out; otherwise write it with these fields added: none the first
   * time, `repeatsNotLogged` when repeats were left out before it.
   */
  admit(key: string, now: number): { repeatsNotLogged?: number } | undefined {
    const entry = this.seen.get(key);
    if (entry && now >= entry.since && now - entry.since < this.windowMs) {
      entry.repeats += 1;
      return undefined;
    }
    if (!entry && this.seen.size >= this.maxKeys) this.seen.clear();
    // A key often holds a fault's message, which may be a slice of a policy request.
    this.seen.set(ownCopy(key), { since: now, repeats: 0 });
    return entry && entry.repeats > 0 ? { repeatsNotLogged: entry.repeats } : {};
  }
}

/**
 * The one line that says a trouble has ended (a store that failed takes writes again): failures
 * are counted from the first, and the first success after them gives what the line carries, how
 * long they went on (from the first failure to that success) and how many there were. Without it
 * the failures' lines (once a minute, RepeatCollapser) stopped, and a log read the next morning
 * did not tell when service came back. At most one line per windowMs: a store that fails and
 * succeeds by turns (a disk nearly full, where some commits still find room) wrote a line at each
 * success; held back, the failures go on being counted, and the first success after the window
 * writes them, timed to the first success after the last of them.
 */
export class RecoveryLine {
  /** The first failure not yet written of, undefined while there is none. */
  private failingSince: number | undefined;
  private failures = 0;
  /** The first success after the last failure, while its line is held back. */
  private recoveredAt: number | undefined;
  private lastLine: number | undefined;

  constructor(private readonly windowMs: number) {}

  /**
   * A trouble at now: `count` failures (0 for a trouble told before anything failed, Redis's
   * connection lost while no command ran).
   */
  failed(now: number, count = 1): void {
    this.failingSince ??= now;
    this.failures += count;
    this.recoveredAt = undefined;
  }

  /** A success at now: the fields of the line to write, or undefined when there is none to write (yet). */
  succeeded(now: number): { failingForMs: number; failures: number } | undefined {
    if (this.failingSince === undefined) return undefined;
    this.recoveredAt ??= now;
    // A clock set back (by hand, or a request's policy_test_time) ends the window.
    if (this.lastLine !== undefined && now >= this.lastLine && now - this.lastLine < this.windowMs) return undefined;
    const line = { failingForMs: Math.max(0, this.recoveredAt - this.failingSince), failures: this.failures };
    this.failingSince = undefined;
    this.failures = 0;
    this.recoveredAt = undefined;
    this.lastLine = now;
    return line;
  }
}
