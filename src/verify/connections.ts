/**
 * NAME
 *   verify/connections - idle SMTP sessions kept for the next callout to the same exchanger address
 *
 * DESCRIPTION
 *   Like Postfix's SMTP connection cache (smtp_connection_cache_time_limit), a session that ended
 *   a callout cleanly is kept open, idle after RSET, for a short time, and the next callout to the
 *   same MX address takes it instead of connecting, greeting and saying EHLO again, whichever
 *   domain that address serves. Each callout still runs its own transaction (and the catch-all
 *   probe stays per domain); only the channel is shared.
 *
 *   A session is parked only when it is fit for more: still open, no transaction left open (the
 *   caller's RSET was answered 250), every reply of the callout as expected (the caller judges
 *   that), fewer than maxRejectedRecipients RCPTs refused on it in all (receivers count errors
 *   per connection: Postfix sleeps at smtpd_soft_error_limit 10 and disconnects at 20), fewer
 *   than addressesPerConnection RCPTs answered on it in all, probes included (so, at two RSETs
 *   per callout, never near Postfix's smtpd_junk_command_limit of 100). Anything else is closed with QUIT,
 *   whose 221 the callout does not wait for (Postfix's smtp_skip_quit_response).
 *
 *   Politeness: take() hands out an idle session with room for the addresses asked; when it
 *   finds none it closes every idle session to that address, so opening a new one never makes
 *   more connections to one address than callouts running there (which limits.perHostConcurrency
 *   bounds). The callout that reuses a session still takes its per-host slot and counts towards
 *   the per-domain rate like any other.
 *
 * LIMITS
 *   idleMs per parked session (a timer of options.timers closes it; the injected clock is
 *   checked again at take(), so tests move time either way), maxIdlePerHost per address,
 *   maxIdle in all (the longest idle goes first). close() QUITs every idle session, each waited
 *   for at most CLOSE_WAIT_MS on a real timer: that bounds real I/O (the 221 on a socket), and
 *   a timer tests move would leave close() waiting until a test advanced it.
 */

import { systemTimers, type Clock, type TimerHandle, type Timers } from '../core/clock.js';
import { isPositive } from '../smtp/reply.js';
import type { SmtpClientSession } from '../smtp/client.js';

export interface ConnectionCacheOptions {
  clock: Clock;
  /** The timers of the idle time (systemTimers: setTimeout). */
  timers?: Timers;
  enabled: boolean;
  idleMs: number;
  maxIdlePerHost: number;
  maxIdle: number;
  addressesPerConnection: number;
  maxRejectedRecipients: number;
  /** Called as each counter of `stats` grows, for metrics that outlive this cache. */
  onEvent?: (event: keyof ConnectionCacheStats) => void;
}

/** A session with what it has been used for so far. */
export interface CachedConnection {
  session: SmtpClientSession;
  /** RCPTs answered on it across callouts: the addresses, and the random and postmaster probes. */
  addresses: number;
  /** Callouts it has served, this one included. */
  callouts: number;
  /** When it was opened, on the callout's monotonic clock (verify/probe ProbeDeps.timers). */
  openedAt: number;
}

export interface ConnectionCacheStats {
  parked: number;
  reused: number;
  /** Idle sessions closed because they aged out, were evicted or were found dead. */
  retired: number;
}

interface IdleEntry {
  ip: string;
  connection: CachedConnection;
  since: number;
  timer: TimerHandle;
}

const CLOSE_WAIT_MS = 1_000;

export class ConnectionCache {
  private readonly idle = new Map<string, IdleEntry[]>();
  private idleCount = 0;
  private readonly closing = new Set<Promise<void>>();
  private readonly timers: Timers;
  readonly stats: ConnectionCacheStats = { parked: 0, reused: 0, retired: 0 };

  constructor(private readonly options: ConnectionCacheOptions) {
    this.timers = options.timers ?? systemTimers;
  }

  get enabled(): boolean {
    return this.options.enabled;
  }

  /** How many sessions are idle now. */
  private count(event: keyof ConnectionCacheStats): void {
    this.stats[event]++;
    this.options.onEvent?.(event);
  }

  get size(): number {
    return this.idleCount;
  }

  /** An idle session to `ip` with room for `addresses` more, or undefined (and none left idle there). */
  take(ip: string, addresses: number): CachedConnection | undefined {
    const entries = this.idle.get(ip);
    if (!entries) return undefined;
    const now = this.options.clock.now();
    let found: IdleEntry | undefined;
    for (let i = entries.length - 1; i >= 0 && !found; i--) {
      const entry = entries[i]!;
      const usable = entry.connection.session.state === 'ready' && now - entry.since < this.options.idleMs;
      if (usable && entry.connection.addresses + addresses <= this.options.addressesPerConnection) found = entry;
    }
    if (!found) {
      for (const entry of [...entries]) this.retire(entry);
      return undefined;
    }
    this.remove(found);
    this.timers.clearTimeout(found.timer);
    this.count('reused');
    found.connection.callouts++;
    return found.connection;
  }

  /**
   * Ends a callout's use of a session: parks it when `clean` and within every limit, after an
   * RSET when a transaction is open; otherwise says QUIT.
   */
  async release(ip: string, connection: CachedConnection, clean: boolean): Promise<void> {
    const { session } = connection;
    if (!this.options.enabled || !clean || !this.withinLimits(connection)) {
      // The callout's answer is known: its verdict does not wait for the 221 (leave()).
      await session.drain();
      session.leave();
      return;
    }
    await session.drain();
    if (session.inTransaction) {
      const reset = await session.rset();
      if (reset.kind !== 'reply' || !isPositive(reset.reply)) {
        session.leave();
        return;
      }
    }
    if (session.state !== 'ready' || session.inTransaction) {
      session.destroy();
      return;
    }
    const here = this.idle.get(ip) ?? [];
    if (here.length >= this.options.maxIdlePerHost) this.retire(here[0]!);
    if (this.idleCount >= this.options.maxIdle) this.evictOldest();
    session.park();
    const entry: IdleEntry = {
      ip,
      connection,
      since: this.options.clock.now(),
      timer: this.timers.setTimeout(() => this.retire(entry), this.options.idleMs).unref(),
    };
    const list = this.idle.get(ip) ?? [];
    list.push(entry);
    this.idle.set(ip, list);
    this.idleCount++;
    this.count('parked');
  }

  /** QUITs every idle session; resolves when they are closed. */
  async close(): Promise<void> {
    for (const entries of [...this.idle.values()]) for (const entry of [...entries]) this.retire(entry);
    while (this.closing.size > 0) await Promise.allSettled([...this.closing]);
  }

  private withinLimits(connection: CachedConnection): boolean {
    const rejected = connection.session.replies.filter((r) => r.stage === 'rcpt' && !isPositive(r.reply)).length;
    return connection.addresses < this.options.addressesPerConnection && rejected < this.options.maxRejectedRecipients;
  }

  private evictOldest(): void {
    let oldest: IdleEntry | undefined;
    for (const entries of this.idle.values()) {
      const first = entries[0];
      if (first && (!oldest || first.since < oldest.since)) oldest = first;
    }
    if (oldest) this.retire(oldest);
  }

  private remove(entry: IdleEntry): void {
    const entries = this.idle.get(entry.ip);
    const index = entries?.indexOf(entry) ?? -1;
    if (!entries || index < 0) return;
    entries.splice(index, 1);
    if (entries.length === 0) this.idle.delete(entry.ip);
    this.idleCount--;
  }

  private retire(entry: IdleEntry): void {
    this.remove(entry);
    this.timers.clearTimeout(entry.timer);
    this.count('retired');
    const { session } = entry.connection;
    let bound: NodeJS.Timeout | undefined;
    const done = Promise.race([session.quit(), new Promise<void>((resolve) => (bound = setTimeout(resolve, CLOSE_WAIT_MS).unref()))]).finally(() => {
      clearTimeout(bound);
      session.destroy();
      this.closing.delete(done);
    });
    this.closing.add(done);
  }
}
