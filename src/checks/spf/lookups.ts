/**
 * NAME
 *   checks/spf/lookups - the resolver wrapper that enforces SPF's processing limits
 *
 * DESCRIPTION
 *   One SpfLookups serves one evaluation. It counts DNS-querying terms and void lookups,
 *   bounds the evaluation's elapsed time (on a monotonic clock, never the wall clock), and
 *   records every query in the trace. Its answers are the Resolver's DnsAnswer values plus one
 *   more: `limit`, the processing limit that ends the evaluation, with the result it ends in.
 *
 *   A query is asked in one of three roles:
 *     term        - the lookup that decides an a, mx, ptr or exists term; when it comes back
 *                   empty (NODATA or NXDOMAIN) it is a void lookup;
 *     dependent   - a lookup a term makes with what its first lookup found (the addresses
 *                   of MX and PTR names), and include/redirect record fetches;
 *     explanation - the exp= TXT fetch, which never counts toward any limit (§4.6.4 and
 *                   the suite's exp-void case).
 *
 * RFC
 *   RFC 7208 §4.6.4: at most 10 terms that query DNS (include, a, mx, ptr, exists, redirect),
 *   recursion included; more is a permerror. Void lookups SHOULD be limited to 2; more is a
 *   permerror. The elapsed time SHOULD be bounded (at least 20 s); beyond it, temperror.
 *
 * LIMITS
 *   The time bound is checked before each query: a query already running is bounded by the
 *   resolver's own timeout, not cut short here.
 */

import { reverseName } from '../../dns/reverse.js';
import type { DnsAnswer, DnsRecordType, MxRecord, Resolver } from '../../dns/types.js';
import type { SpfLimits, SpfTraceEntry } from './types.js';

export type LimitedAnswer<T> = DnsAnswer<T> | { kind: 'limit'; result: 'permerror' | 'temperror'; problem: string };

export type QueryRole = 'term' | 'dependent' | 'explanation';

interface RecordTypes {
  A: string;
  AAAA: string;
  MX: MxRecord;
  TXT: string;
  PTR: string;
}

export class SpfLookups {
  dnsTerms = 0;
  voidLookups = 0;
  private readonly startedAt: number;

  constructor(
    private readonly resolver: Resolver,
    private readonly limits: SpfLimits,
    private readonly monotonic: () => number,
    private readonly trace: SpfTraceEntry[],
  ) {
    this.startedAt = monotonic();
  }

  /** Counts one DNS-querying term; the problem when it is one too many. */
  countTerm(): string | undefined {
    this.dnsTerms += 1;
    return this.dnsTerms > this.limits.dnsTerms ? `more than ${this.limits.dnsTerms} DNS-querying terms` : undefined;
  }

  /** For PTR, `name` is the client address; the trace shows the reverse name. */
  async query<K extends keyof RecordTypes>(type: K, name: string, role: QueryRole): Promise<LimitedAnswer<RecordTypes[K]>> {
    if (this.monotonic() - this.startedAt >= this.limits.elapsedMs) {
      return { kind: 'limit', result: 'temperror', problem: `evaluation took longer than ${this.limits.elapsedMs} ms` };
    }
    const answer = (await this.ask(type, name)) as DnsAnswer<RecordTypes[K]>;
    this.trace.push({
      kind: 'dns',
      type: type as DnsRecordType,
      name: type === 'PTR' ? reverseName(name) : name,
      answer: answer.kind,
      data: answer.kind === 'records' ? answer.records.map(describeRecord) : answer.kind === 'tempfail' ? [answer.reason] : [],
    });
    if (role === 'term' && (answer.kind === 'nxdomain' || answer.kind === 'nodata')) {
      this.voidLookups += 1;
      if (this.voidLookups > this.limits.voidLookups) {
        return { kind: 'limit', result: 'permerror', problem: `more than ${this.limits.voidLookups} void DNS lookups` };
      }
    }
    return answer;
  }

  private ask(type: keyof RecordTypes, name: string): Promise<DnsAnswer<unknown>> {
    switch (type) {
      case 'A':
        return this.resolver.a(name);
      case 'AAAA':
        return this.resolver.aaaa(name);
      case 'MX':
        return this.resolver.mx(name);
      case 'TXT':
        return this.resolver.txt(name);
      case 'PTR':
        return this.resolver.ptr(name);
    }
  }
}

function describeRecord(record: unknown): string {
  if (typeof record === 'string') return record;
  const mx = record as MxRecord;
  return `${mx.priority} ${mx.exchange}`;
}
