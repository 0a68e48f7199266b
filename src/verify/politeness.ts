/**
 * NAME
 *   verify/politeness - limits that keep callouts from becoming abuse
 *
 * DESCRIPTION
 *   Three limits, each refusing at once rather than queueing: a queue that grows without bound
 *   is a silent outage at SMTP time, whereas "unknown: rate-limited" is an answer the policy
 *   can act on (defer or let through).
 *     - global concurrency: callouts in flight in this process;
 *     - per-host concurrency: connections to one MX address at once;
 *     - per-domain rate: callouts started towards one domain in a sliding minute.
 *   Target policy: exchangers in private, loopback, link-local, multicast and reserved ranges
 *   are refused unless an allow-list names them, so a forged sender domain cannot turn us into
 *   a scanner of internal networks (milter-ahead's mx-reject, smtpf's IS_IP_LAN).
 */

import type { Clock } from '../core/clock.js';
import { ConfigError } from '../core/errors.js';
import { AddressSet, classifyAddress } from '../core/ip.js';

export type Release = () => void;

const WINDOW_MS = 60_000;

export interface PolitenessOptions {
  clock: Clock;
  concurrency: number;
  perHostConcurrency: number;
  perDomainPerMinute: number;
  allowTargets: string[];
}

export class Politeness {
  private inFlight = 0;
  private readonly hostsInFlight = new Map<string, number>();
  private readonly domainStarts = new Map<string, number[]>();
  private readonly allowed: AddressSet;

  constructor(private readonly options: PolitenessOptions) {
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

  /** Counts one callout towards the domain; false when its per-minute budget is spent. */
  admitDomain(domain: string): boolean {
    const now = this.options.clock.now();
    const starts = (this.domainStarts.get(domain) ?? []).filter((t) => now - t < WINDOW_MS);
    if (starts.length >= this.options.perDomainPerMinute) {
      this.domainStarts.set(domain, starts);
      return false;
    }
    starts.push(now);
    this.domainStarts.set(domain, starts);
    if (this.domainStarts.size > 10_000) this.forgetIdleDomains(now);
    return true;
  }

  /** Why a target address may not be contacted, or undefined when it may. */
  targetRefusal(ip: string): string | undefined {
    const kind = classifyAddress(ip);
    if (kind === 'public' || this.allowed.has(ip)) return undefined;
    return `${ip} is a ${kind} address (allow it with allowTargets / --allow-target)`;
  }

  private forgetIdleDomains(now: number): void {
    for (const [domain, starts] of this.domainStarts) {
      if (starts.every((t) => now - t >= WINDOW_MS)) this.domainStarts.delete(domain);
    }
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
