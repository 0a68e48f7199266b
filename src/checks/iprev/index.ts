/**
 * NAME
 *   checks/iprev - reverse-DNS confirmation of the SMTP client ("iprev", FCrDNS)
 *
 * DESCRIPTION
 *   checkIprev(ip, options) asks for the client address's PTR names, looks each name up
 *   forward (A for an IPv4 client, AAAA for IPv6; an IPv4-mapped address is IPv4), and
 *   passes when a forward answer contains the client address. The verdict says which of the
 *   RFC's cases happened in `kind`, so a missing PTR ('no-ptr') is never confused with a PTR
 *   that does not lead back ('unconfirmed').
 *
 * RFC
 *   RFC 8601 §3 (iprev): pass - some PTR name maps back to the address; fail - the lookups
 *   completed but none maps back (a forward NXDOMAIN or NODATA included); temperror - a
 *   transient DNS error kept the check from completing (a forward lookup that failed
 *   temporarily makes "no name confirms" uncertain, so it is temperror, not fail); permerror
 *   - no PTR data at all (NXDOMAIN or NODATA on the reverse lookup). Reported in
 *   Authentication-Results as `iprev=<result> policy.iprev=<ip>` (RFC 8601 §2.7.3).
 *
 * LIMITS
 *   At most maxNames PTR names (default 10, as RFC 7208 §4.6.4 does for the same lookup) are
 *   looked up forward, in parallel; the rest are ignored. Names are compared without case and
 *   without the trailing dot, and de-duplicated. With timeoutMs, a check still waiting for DNS
 *   then is temperror (the lookups go on, and fill the resolver's cache).
 *
 * MEMORY
 *   BoundedIprev is a policy stage's check (iprev, and greylist's fcrdns-domain and
 *   fcrdnsProviders), bounded by its timeoutMs and the time left of the decision. A client whose
 *   check ran out of timeoutMs is remembered for UNANSWERED_REMEMBERED_MS on the stage's
 *   monotonic timers, and answered temperror at once meanwhile, its reason saying so: a
 *   timeout is not cached by the DNS cache, and every RCPT of such a client otherwise waited
 *   the whole bound again (a message of 20 recipients, 40 s). A check that finished (pass,
 *   fail, permerror, or a temperror the DNS gave, such as SERVFAIL) is not remembered, nor one
 *   cut short by the decision's deadline, which says nothing of the zone. Each stage keeps
 *   its own memory (their bounds may differ), of at most 2 x UNANSWERED_MEMO_LIMIT clients.
 *
 * ERRORS
 *   None: DNS outcomes and an address that does not parse (permerror, kind 'invalid-address')
 *   are verdicts.
 */

import { settleWithin, type Timers } from '../../core/clock.js';
import { RecentMap } from '../../core/memo.js';
import type { DnsRecordType, Resolver } from '../../dns/types.js';
import { reverseName } from '../../dns/reverse.js';
import { clientAddress, type ClientAddress } from '../client-ip.js';
import { canonicalName } from '../../dns/names.js';

export type IprevResult = 'pass' | 'fail' | 'temperror' | 'permerror';

export type IprevKind = 'confirmed' | 'no-ptr' | 'unconfirmed' | 'dns-error' | 'invalid-address';

export interface IprevLookup {
  type: DnsRecordType;
  name: string;
  answer: 'records' | 'nxdomain' | 'nodata' | 'tempfail';
  data: string[];
}

export interface IprevVerdict {
  result: IprevResult;
  kind: IprevKind;
  /** One line in plain words. */
  reason: string;
  /** The client address in canonical form (as policy.iprev reports it). */
  ip: string;
  /** PTR names found (after de-duplication, at most maxNames). */
  ptrNames: string[];
  /** Those that resolve back to the address; the first is the client's verified name. */
  confirmedNames: string[];
  lookups: IprevLookup[];
}

export interface IprevOptions {
  resolver: Resolver;
  /** PTR names looked up forward (default 10). */
  maxNames?: number;
  /** Bound of the whole check in milliseconds (none by default); beyond it, temperror. */
  timeoutMs?: number;
  /** What timeoutMs is measured on (default systemTimers): a policy stage's StageContext.timers. */
  timers?: Timers;
}

export const DEFAULT_IPREV_MAX_NAMES = 10;
/**
 * A policy stage's bound on the check, a third of the 6 s default decision deadline: a reverse
 * zone that never answers (its timeout is not cached, so every retry waits again) would
 * otherwise take the whole deadline and leave the stages after it none.
 */
export const DEFAULT_IPREV_STAGE_TIMEOUT_MS = 2000;


export async function checkIprev(ip: string, options: IprevOptions): Promise<IprevVerdict> {
  return (await checkWithin(ip, options)).verdict;
}

/** checkIprev's verdict, and whether it is the temperror of a check that ran out of timeoutMs. */
async function checkWithin(ip: string, options: IprevOptions): Promise<{ verdict: IprevVerdict; ranOut: boolean }> {
  const client = clientAddress(ip);
  const lookups: IprevLookup[] = [];
  const verdict = (result: IprevResult, kind: IprevKind, reason: string, ptrNames: string[] = [], confirmedNames: string[] = []): IprevVerdict => ({
    result,
    kind,
    reason,
    ip: client?.text ?? ip,
    ptrNames,
    confirmedNames,
    lookups,
  });
  const finished = (done: IprevVerdict) => ({ verdict: done, ranOut: false });
  if (client === undefined) return finished(verdict('permerror', 'invalid-address', `${JSON.stringify(ip)} is not an IP address`));
  if (options.timeoutMs === undefined) return finished(await confirm(client, options, lookups, verdict));

  // A silent reverse zone costs the resolver's tries x timeout before it answers, and the forward
  // lookups come after that: together they can outlast a caller's deadline (the policy
  // decision's is shorter). A check cut short there did not complete, which RFC 8601 §3 calls
  // temperror; it must not turn into the caller's own timeout.
  const timeoutMs = options.timeoutMs;
  const late = () => ({
    verdict: { ...verdict('temperror', 'dns-error', unfinished(client.text, timeoutMs)), lookups: [...lookups] },
    ranOut: true,
  });
  return settleWithin(confirm(client, options, lookups, verdict).then(finished), timeoutMs, late, options.timers);
}

function unfinished(ip: string, timeoutMs: number): string {
  return `the lookups for ${ip} did not complete within ${timeoutMs} ms`;
}

/**
 * How long a client whose check ran out of its bound is answered at once. Longer than the
 * resolver's own tries at the defaults (3 s, then 6 s; 15 s at 5 s and 2 tries), so that the
 * check after it sends a new query instead of joining the one that timed out and waiting its
 * bound again; short enough that a zone that answers again is asked within a minute, well
 * before a greylisted sender retries (delay 300 s).
 */
export const UNANSWERED_REMEMBERED_MS = 60_000;
/** Clients remembered by one stage (between this and twice as many, core/memo RecentMap). */
const UNANSWERED_MEMO_LIMIT = 4_096;

export interface BoundedIprevOptions {
  resolver: Resolver;
  maxNames?: number;
  /** The stage's bound in milliseconds (iprev timeoutMs, greylist fcrdnsTimeoutMs). */
  timeoutMs: number;
}

/** A policy stage's iprev check, which remembers the clients whose check ran out of timeoutMs (see MEMORY). */
export class BoundedIprev {
  /** When (on the stage's timers) each client's check last ran out of timeoutMs, by its canonical address. */
  private readonly ranOut = new RecentMap<number>(UNANSWERED_MEMO_LIMIT);

  constructor(private readonly options: BoundedIprevOptions) {}

  /** The verdict for ip, on the timers of the request (StageContext.timers) with timeLeftMs of its deadline. */
  async check(ip: string, timers: Timers, timeLeftMs: number): Promise<IprevVerdict> {
    const client = clientAddress(ip)?.text;
    const { timeoutMs } = this.options;
    const at = client === undefined ? undefined : this.ranOut.get(client, undefined);
    if (client !== undefined && at !== undefined) {
      const ago = timers.now() - at;
      if (ago < UNANSWERED_REMEMBERED_MS) {
        const reason = `${unfinished(client, timeoutMs)} ${Math.floor(ago / 1000)} s ago; not asked again for ${Math.ceil((UNANSWERED_REMEMBERED_MS - ago) / 1000)} s`;
        return { result: 'temperror', kind: 'dns-error', reason, ip: client, ptrNames: [], confirmedNames: [], lookups: [] };
      }
      this.ranOut.delete(client);
    }
    const bound = Math.max(1, Math.min(timeoutMs, timeLeftMs));
    const { verdict, ranOut } = await checkWithin(ip, { resolver: this.options.resolver, maxNames: this.options.maxNames, timeoutMs: bound, timers });
    if (ranOut && client !== undefined && bound === timeoutMs) this.ranOut.set(client, timers.now());
    return verdict;
  }
}

type VerdictOf = (result: IprevResult, kind: IprevKind, reason: string, ptrNames?: string[], confirmedNames?: string[]) => IprevVerdict;

/** The PTR lookup, the forward lookups of its names, and what they give (see DESCRIPTION). */
async function confirm(client: ClientAddress, options: IprevOptions, lookups: IprevLookup[], verdict: VerdictOf): Promise<IprevVerdict> {
  const reverse = await options.resolver.ptr(client.text);
  lookups.push({
    type: 'PTR',
    name: reverseName(client.text),
    answer: reverse.kind,
    data: reverse.kind === 'records' ? reverse.records : reverse.kind === 'tempfail' ? [reverse.reason] : [],
  });
  if (reverse.kind === 'tempfail') return verdict('temperror', 'dns-error', `PTR lookup for ${client.text} failed: ${reverse.reason}`);
  if (reverse.kind !== 'records') return verdict('permerror', 'no-ptr', `no PTR record for ${client.text} (${reverse.kind})`);

  const names = [...new Set(reverse.records.map(canonicalName))].filter((name) => name !== '').slice(0, options.maxNames ?? DEFAULT_IPREV_MAX_NAMES);
  if (names.length === 0) return verdict('permerror', 'no-ptr', `the PTR records of ${client.text} name no host`);
  const type = client.family === 4 ? 'A' : 'AAAA';
  const forward = await Promise.all(names.map((name) => (type === 'A' ? options.resolver.a(name) : options.resolver.aaaa(name))));
  const confirmed: string[] = [];
  const transient: string[] = [];
  forward.forEach((answer, index) => {
    const name = names[index] ?? '';
    lookups.push({ type, name, answer: answer.kind, data: answer.kind === 'records' ? answer.records : answer.kind === 'tempfail' ? [answer.reason] : [] });
    if (answer.kind === 'tempfail') transient.push(`${name}: ${answer.reason}`);
    if (answer.kind === 'records' && answer.records.some((address) => clientAddress(address)?.text === client.text)) confirmed.push(name);
  });

  if (confirmed.length > 0) {
    return verdict('pass', 'confirmed', `${client.text} has PTR ${confirmed[0]}, which resolves back to it`, names, confirmed);
  }
  if (transient.length > 0) {
    return verdict('temperror', 'dns-error', `no PTR name of ${client.text} confirmed yet; forward lookups failed: ${transient.join('; ')}`, names);
  }
  return verdict('fail', 'unconfirmed', `PTR ${names.join(', ')} of ${client.text} does not resolve back to it (no matching ${type} record)`, names);
}
