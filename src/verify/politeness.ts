/**
 * NAME
 *   verify/politeness - limits that keep callouts from becoming abuse
 *
 * DESCRIPTION
 *   Four limits, each refusing at once rather than queueing: a queue that grows without bound
 *   is a silent outage at SMTP time, whereas "unknown: rate-limited" is an answer the policy
 *   can act on (defer or let through).
 *     - global concurrency: callouts in flight in this process;
 *     - per-host concurrency: connections to one MX address at once, counted first in this
 *       process (the cheap gate) and then, unless the store is memory (one process's alone),
 *       as leases in the store, so that the policy workers and the daemons of a Redis cluster
 *       share the limit instead of each having it whole. A lease lasts the callout's overall deadline plus a margin (leaseMs): a process that
 *       crashed holding one cannot keep the slot for longer. The store's leases of one address
 *       are one JSON map (lease id to expiry) changed by compareAndSet, atomic on every
 *       backend; asking for a lease never outlasts the callout's deadline, and giving one back
 *       is queued (in order, behind nothing the callout waits for);
 *     - per-domain rate: callouts started towards one domain in a sliding minute, counted in
 *       the store (checks/ratelimit's SlidingWindow), so that the policy workers of one server
 *       and the daemons of a Redis cluster share one budget per domain rather than one each;
 *     - per-host rate: new connections to one exchanger address in a sliding minute, counted
 *       the same way, over every domain: a hoster's MX serves thousands of domains, and a
 *       forged domain's MX may name anyone's server, so the per-domain budget alone bounds
 *       nothing there. Reused connections (verify/connections) do not count.
 *   Target policy: exchangers in private, loopback, link-local, multicast and reserved ranges
 *   are refused unless an allow-list names them, so a forged sender domain cannot turn us into
 *   a scanner of internal networks (milter-ahead's mx-reject, smtpf's IS_IP_LAN).
 */

import { settleWithin, systemTimers, type Clock, type Timers } from '../core/clock.js';
import { ConfigError } from '../core/errors.js';
import { uniqueIdSource } from '../core/ids.js';
import { isRecord, parseJsonWithin } from '../core/record.js';
import { AddressSet, classifyAddress } from '../core/ip.js';
import { SlidingWindow } from '../checks/ratelimit/window.js';
import type { Store } from '../store/types.js';

export type Release = () => void;

/** A connection slot at one exchanger address, or why there is none. */
export type HostSlot = { release: Release } | 'limit' | 'deadline';

const WINDOW_MS = 60_000;
/**
 * Tries of one lease's compareAndSet before the slot counts as taken: each failed try means
 * another process changed the address's leases meanwhile, and this process's own take their
 * turns (admissions), so only a crowd of processes at one address can use them all up.
 */
const LEASE_TRIES = 8;

export interface PolitenessOptions {
  clock: Clock;
  /** The monotonic clock of acquireHost's deadline (systemTimers: performance.now()). */
  timers?: Timers;
  concurrency: number;
  /** Infinity: not counted (a call-forward to our own hosts), neither here nor in the store. */
  perHostConcurrency: number;
  /** How long a per-host lease in the store lasts when it is never given back. */
  leaseMs: number;
  /** A lease that could not be given back (it lapses after leaseMs). */
  onReleaseFailure?: (err: unknown) => void;
  /** Infinity: not counted. */
  perDomainPerMinute: number;
  /** Infinity: not counted. */
  perHostConnectionsPerMinute: number;
  allowTargets: string[];
  /** Where the per-domain counts live, shared with every process on the same store. */
  store: Store;
  /** Namespace of the counts (the engine's keyPrefix). */
  keyPrefix: string;
}

export class Politeness {
  private inFlight = 0;
  private readonly hostsInFlight = new Map<string, number>();
  private readonly allowed: AddressSet;
  private readonly domainStarts: SlidingWindow;
  private readonly hostConnections: SlidingWindow;
  /** The store work on each domain's or host's counts still running, so that the next waits for it. */
  private readonly admissions = new Map<string, Promise<unknown>>();
  /** The leases this process holds in the store, by id: their addresses. */
  private readonly leases = new Map<string, string>();
  /** Tells this process's leases from every other's. */
  private readonly newLeaseId = uniqueIdSource();
  /** Set by releaseLeases(): the callouts still running are abandoned and get no lease. */
  private abandoned = false;

  constructor(private readonly options: PolitenessOptions) {
    this.domainStarts = new SlidingWindow(options.store, options.clock, WINDOW_MS, `${options.keyPrefix}rate:domain:`);
    this.hostConnections = new SlidingWindow(options.store, options.clock, WINDOW_MS, `${options.keyPrefix}rate:host:`);
    const parsed = AddressSet.parse(options.allowTargets);
    if (!parsed.ok) throw new ConfigError(`callout.allowTargets: got ${JSON.stringify(options.allowTargets)}, ${parsed.reason}`);
    this.allowed = parsed.value;
  }

  /** A slot for one callout, or undefined when the process runs as many as it may. */
  acquireGlobal(): Release | undefined {
    if (this.inFlight >= this.options.concurrency) return undefined;
    this.inFlight++;
    return once(() => this.inFlight--);
  }

  /**
   * A connection slot at an exchanger address (hostKey form): 'limit' when this process or,
   * through the store's leases, the service as a whole has perHostConcurrency connections
   * there; 'deadline' when the store did not answer before `deadline` (a time of
   * options.timers). A store failure rejects (StoreError), as the per-host rate does.
   */
  async acquireHost(ip: string, deadline: number): Promise<HostSlot> {
    const current = this.hostsInFlight.get(ip) ?? 0;
    if (current >= this.options.perHostConcurrency) return 'limit';
    this.hostsInFlight.set(ip, current + 1);
    const local = once(() => {
      const left = (this.hostsInFlight.get(ip) ?? 1) - 1;
      if (left <= 0) this.hostsInFlight.delete(ip);
      else this.hostsInFlight.set(ip, left);
    });
    // A memory store is this process's alone: the count above is the whole of it.
    if (this.options.perHostConcurrency === Infinity || this.options.store.kind === 'memory') return { release: local };
    const leasing = this.inTurn(`slot\0${ip}`, () => this.lease(ip));
    let id: string | undefined | 'deadline';
    try {
      const timers = this.options.timers ?? systemTimers;
      id = await settleWithin(leasing, Math.max(0, deadline - timers.now()), () => 'deadline' as const, timers);
    } catch (err) {
      local();
      throw err;
    }
    if (id === 'deadline') {
      local();
      // A lease granted after the callout gave up on it is given back at once.
      leasing.then((granted) => granted && this.unlease(granted), () => undefined);
      return 'deadline';
    }
    if (id === undefined) {
      local();
      return 'limit';
    }
    const leaseId = id;
    return {
      release: once(() => {
        local();
        this.unlease(leaseId);
      }),
    };
  }

  /**
   * Gives back every lease this process holds (shutdown: its callouts are abandoned), and any
   * still being asked for once the store grants it: one granted later would hold its slot for
   * leaseMs after the process has gone.
   */
  releaseLeases(): void {
    this.abandoned = true;
    for (const id of [...this.leases.keys()]) this.unlease(id);
  }

  /** Resolves once the store work queued here (leases given back, counts) has ended. */
  async settled(): Promise<void> {
    while (this.admissions.size > 0) await Promise.allSettled([...this.admissions.values()]);
  }

  /**
   * A new lease's id, or undefined when there is none: the address's live leases are at the
   * limit, others changed them at every try, or releaseLeases() has run (a lease granted then
   * is given back at once).
   */
  private async lease(ip: string): Promise<string | undefined> {
    const { leaseMs, perHostConcurrency } = this.options;
    const id = this.newLeaseId();
    const take = (live: Map<string, number>, now: number): boolean => {
      if (live.size >= perHostConcurrency) return false;
      live.set(id, now + leaseMs);
      return true;
    };
    if ((await this.changeLeases(ip, take, () => this.abandoned)) !== 'written') return undefined;
    this.leases.set(id, ip);
    if (!this.abandoned) return id;
    this.unlease(id);
    return undefined;
  }

  /**
   * Reads the live leases of an address, lets change() edit them (false: nothing to write) and
   * writes them back by compareAndSet, tried again while another process changed them first, at
   * most LEASE_TRIES times ('busy'), and not once stop() says so.
   */
  private async changeLeases(ip: string, change: (live: Map<string, number>, now: number) => boolean, stop: () => boolean = () => false): Promise<'written' | 'unchanged' | 'busy'> {
    const { store, clock } = this.options;
    const key = this.slotKey(ip);
    for (let attempt = 0; attempt < LEASE_TRIES && !stop(); attempt++) {
      const stored = await store.get(key);
      const now = clock.now();
      const live = liveLeases(stored?.value, now, this.options.leaseMs);
      if (!change(live, now)) return 'unchanged';
      if (await store.compareAndSet(key, stored?.value, JSON.stringify(Object.fromEntries(live)), leaseTtl(live, now))) return 'written';
    }
    return 'busy';
  }

  /** Queues the removal of a lease; a failure is reported and the lease left to lapse. */
  private unlease(id: string): void {
    const ip = this.leases.get(id);
    if (ip === undefined) return;
    this.leases.delete(id);
    const remove = async (): Promise<void> => {
      if ((await this.changeLeases(ip, (live) => live.delete(id))) === 'busy') throw new Error(`the leases of ${ip} kept changing (${LEASE_TRIES} tries)`);
    };
    this.inTurn(`slot\0${ip}`, remove).catch((err: unknown) => this.options.onReleaseFailure?.(err));
  }

  private slotKey(ip: string): string {
    return `${this.options.keyPrefix}slots:host:${ip}`;
  }

  /**
   * Counts one callout towards the domain; false when its per-minute budget is spent. A refused
   * callout is not counted, so a domain asked about more often than its budget still gets its
   * budget's worth of callouts every minute. Admissions to one domain are taken one at a time
   * in this process, so it never overshoots the budget; two processes admitted at the same
   * instant may both take the last slot: the limit is a politeness bound, not an exact quota.
   */
  admitDomain(domain: string): Promise<boolean> {
    return this.admit('domain', this.domainStarts, domain, this.options.perDomainPerMinute);
  }

  get perHostConnectionsPerMinute(): number {
    return this.options.perHostConnectionsPerMinute;
  }

  /** Counts one new connection to an exchanger address (hostKey form); false when its minute's budget is spent. */
  admitConnection(ip: string): Promise<boolean> {
    return this.admit('host', this.hostConnections, ip, this.options.perHostConnectionsPerMinute);
  }

  private admit(kind: 'domain' | 'host', window: SlidingWindow, key: string, max: number): Promise<boolean> {
    // No limit (a call-forward to our own hosts): nothing to count, no store write per callout.
    if (max === Infinity) return Promise.resolve(true);
    return this.inTurn(`${kind}\0${key}`, () => this.admitNow(window, key, max));
  }

  /** Runs fn once the store work queued before it under the same id has ended. */
  private inTurn<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const next = (this.admissions.get(id) ?? Promise.resolve()).then(fn, fn);
    this.admissions.set(id, next);
    const forget = (): void => {
      if (this.admissions.get(id) === next) this.admissions.delete(id);
    };
    next.then(forget, forget);
    return next;
  }

  private async admitNow(window: SlidingWindow, key: string, max: number): Promise<boolean> {
    if ((await window.peek(key)).estimate >= max) return false;
    await window.add(key);
    return true;
  }

  /** Why a target address may not be contacted, or undefined when it may. */
  targetRefusal(ip: string): string | undefined {
    const kind = classifyAddress(ip);
    if (kind === 'public' || this.allowed.has(ip)) return undefined;
    return `${ip} is a ${kind} address (allow it with callout.allowTargets or --allow-target)`;
  }
}

/**
 * The longest stored lease map read: callout writes at most perHostConcurrency (at most 1,000)
 * leases of about 70 characters each. A longer value (another program's on a shared Redis)
 * holds none and is replaced by the next lease, not parsed at each connection to its address.
 */
const MAX_LEASE_RECORD_LENGTH = 131_072;

/**
 * The unexpired leases of a stored map; anything unreadable holds none. None lasts past
 * leaseMs from now, as none is given for longer: a stored expiry of 1e300 made every lease of
 * the address a StoreError (no TTL that long), and one years ahead was written back with it,
 * the record kept (and its slot held) for years.
 */
function liveLeases(value: string | undefined, now: number, leaseMs: number): Map<string, number> {
  const live = new Map<string, number>();
  const parsed = value === undefined ? undefined : parseJsonWithin(value, MAX_LEASE_RECORD_LENGTH);
  if (!isRecord(parsed)) return live;
  for (const [id, expiresAt] of Object.entries(parsed)) {
    if (typeof expiresAt === 'number' && expiresAt > now) live.set(id, Math.min(expiresAt, now + leaseMs));
  }
  return live;
}

/** The record lives as long as its longest lease (a moment when none is left). */
function leaseTtl(live: Map<string, number>, now: number): number {
  return Math.max(1, ...[...live.values()].map((expiresAt) => Math.ceil(expiresAt - now)));
}

function once(fn: () => void): Release {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    fn();
  };
}
