/**
 * NAME
 *   verify/politeness - limits that keep callouts from becoming abuse
 *
 * DESCRIPTION
 *   Four limits, each refusing at once rather than queueing: a queue that grows without bound
 *   is a silent outage at SMTP time, whereas "unknown: rate-limited" is an answer the policy
 *   can act on (defer or let through).
 *     - global concurrency: callouts in flight in this process;
 *     - per-host concurrency: connections to one MX address at once;
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

import type { Clock } from '../core/clock.js';
import { ConfigError } from '../core/errors.js';
import { AddressSet, classifyAddress } from '../core/ip.js';
import { SlidingWindow } from '../checks/ratelimit/window.js';
import type { Store } from '../store/types.js';

export type Release = () => void;

const WINDOW_MS = 60_000;

export interface PolitenessOptions {
  clock: Clock;
  concurrency: number;
  perHostConcurrency: number;
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
  /** The admission to each domain or host still being decided, so that the next waits for it. */
  private readonly admissions = new Map<string, Promise<boolean>>();

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

  acquireHost(ip: string): Release | undefined {
    const current = this.hostsInFlight.get(ip) ?? 0;
    if (current >= this.options.perHostConcurrency) return undefined;
    this.hostsInFlight.set(ip, current + 1);
    return once(() => {
      const left = (this.hostsInFlight.get(ip) ?? 1) - 1;
      if (left <= 0) this.hostsInFlight.delete(ip);
      else this.hostsInFlight.set(ip, left);
    });
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
    const id = `${kind}\0${key}`;
    const admit = (): Promise<boolean> => this.admitNow(window, key, max);
    const next = (this.admissions.get(id) ?? Promise.resolve(true)).then(admit, admit);
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
    return `${ip} is a ${kind} address (allow it with allowTargets / --allow-target)`;
  }
}

function once(fn: () => void): Release {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    fn();
  };
}
