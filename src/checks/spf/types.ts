/**
 * NAME
 *   checks/spf/types - requests, options and verdicts of the SPF evaluator
 *
 * DESCRIPTION
 *   The verdict carries the RFC 7208 §2.6 result word in lower case, so it can go unchanged
 *   into Received-SPF (§9.1), Authentication-Results (RFC 8601 §2.7.2) and the policy
 *   pipeline. `trace` lists, in order, every check_host() entered, every term evaluated and
 *   every DNS lookup made, for `callout spf` and for the logs.
 */

import type { Clock } from '../../core/clock.js';
import type { DnsRecordType, Resolver } from '../../dns/types.js';

export type SpfResult = 'pass' | 'fail' | 'softfail' | 'neutral' | 'none' | 'temperror' | 'permerror';

export const SPF_RESULTS: readonly SpfResult[] = ['pass', 'fail', 'softfail', 'neutral', 'none', 'temperror', 'permerror'];

/** RFC 7208 §2.3 (HELO) and §2.4 (MAIL FROM); Sender ID adds its PRA scope (RFC 4406 §2). */
export type SpfIdentity = 'mailfrom' | 'helo' | 'pra';

export interface SpfRequest {
  /** The SMTP client's address, IPv4 or IPv6 (an IPv4-mapped IPv6 address counts as IPv4). */
  ip: string;
  /** The MAIL FROM address without angle brackets; '' for the null reverse-path. */
  mailFrom: string;
  /** The EHLO/HELO argument as the client sent it. */
  helo: string;
  /**
   * Which identity to check (default 'mailfrom'). A null MAIL FROM is checked as
   * postmaster@HELO (§2.4), still reported as the mailfrom identity.
   */
  identity?: 'mailfrom' | 'helo';
}

export interface SpfLimits {
  /** DNS-querying terms per evaluation, recursion included (§4.6.4: 10). */
  dnsTerms: number;
  /** Terms whose lookup returned no records (§4.6.4: 2 RECOMMENDED). */
  voidLookups: number;
  /** MX names an "mx" mechanism may resolve before it is a permerror (§4.6.4: 10). */
  mxNames: number;
  /** PTR names validated by "ptr" or %{p}; the rest are ignored (§4.6.4: 10). */
  ptrNames: number;
  /** Time one evaluation may take (§4.6.4: at least 20 s), on SpfOptions.monotonic; beyond it, temperror. */
  elapsedMs: number;
}

export const DEFAULT_SPF_LIMITS: SpfLimits = { dnsTerms: 10, voidLookups: 2, mxNames: 10, ptrNames: 10, elapsedMs: 20_000 };

export interface SpfOptions {
  resolver: Resolver;
  /** The wall clock, for %{t} (§7.3). */
  clock?: Clock;
  /**
   * Milliseconds on a clock that never goes back (default performance.now()), which elapsedMs
   * is measured on: the wall clock can be stepped (NTP, a resumed virtual machine, a request's
   * policy_test_time), which ended an evaluation at once or let it overrun by the step.
   */
  monotonic?: () => number;
  limits?: Partial<SpfLimits>;
  /** This host's domain name, the %{r} macro of explanations (default "unknown", §7.3). */
  receiver?: string;
  /**
   * Macro-string used as the explanation of a fail when the record has no usable exp=
   * (§6.2). Explanations are ASCII; a default that does not parse falls back to the built-in one.
   */
  defaultExplanation?: string;
}

export type SpfTraceEntry =
  /** check_host() began for this domain; depth 0 is the identity's own domain. */
  | { kind: 'check'; domain: string; depth: number }
  | { kind: 'record'; domain: string; record: string }
  /** A term was evaluated; outcome is 'match', 'no match' or the error it raised. */
  | { kind: 'term'; domain: string; term: string; outcome: string }
  | { kind: 'dns'; type: DnsRecordType; name: string; answer: 'records' | 'nxdomain' | 'nodata' | 'tempfail'; data: string[] }
  | { kind: 'note'; message: string };

export interface SpfVerdict {
  result: SpfResult;
  /** The explanation of a fail (§6.2), from exp= or the default. */
  explanation?: string;
  /** The term that decided the result, as written in the record ('-all', 'include:x'). */
  mechanism?: string;
  /** Why the result is none, temperror or permerror, in plain words (Received-SPF problem=). */
  problem?: string;
  /** The domain whose policy was checked (the identity's domain). */
  domain: string;
  identity: SpfIdentity;
  /** The <sender> check_host() used: local part defaulted to postmaster (§4.3). */
  sender: string;
  ip: string;
  helo: string;
  trace: SpfTraceEntry[];
  lookups: { dnsTerms: number; voidLookups: number };
}
