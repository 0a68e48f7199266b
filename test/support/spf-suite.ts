/**
 * NAME
 *   test/support/spf-suite - the OpenSPF YAML test suites as cases, an in-memory resolver and a DNS zone
 *
 * DESCRIPTION
 *   loadSpfSuite(file) reads one suite from test/fixtures/spf (see SOURCE.md there) into
 *   scenarios of cases. SuiteResolver answers from a scenario's zone data without any I/O
 *   (the one place a fake resolver is right: the suite defines DNS by these tables), and
 *   suiteDnsZone() turns the same data into a zone for test/support/dns-server, so the same
 *   cases can run over real sockets.
 *
 *   The zone conventions are the reference driver's (pyspf test/testspf.py, read, not copied):
 *     - a record is {TYPE: value}; TXT and SPF values that are lists are one record of several
 *       character-strings, joined without separator;
 *     - SPF (type 99) records are copied to TXT unless the owner lists TXT itself;
 *       `TXT: NONE` lists TXT without adding a record;
 *     - a bare `TIMEOUT` item makes every type that has no record so far time out;
 *       `TYPE: TIMEOUT` times out that type; an unlisted name under `error.` times out;
 *     - `MX: [preference, exchange]`; CNAME chains are followed (a loop times out);
 *     - an owner not listed is NXDOMAIN, a listed owner without the type is NODATA; names are
 *       matched case-insensitively without the trailing dot;
 *     - `result` is one result or a list of acceptable ones (the first preferred); the driver
 *       sets the default explanation to "DEFAULT".
 *   Over the DNS server a timeout is a SERVFAIL (both are temperror, and a SERVFAIL does
 *   not make every run wait for a client timeout).
 */

import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { reverseName } from '../../src/dns/reverse.js';
import type { DnsAnswer, MxRecord, Resolver } from '../../src/dns/types.js';
import type { SpfResult } from '../../src/checks/spf/types.js';
import type { Zone, ZoneNode } from './dns-server.js';

export const SUITE_DEFAULT_EXPLANATION = 'DEFAULT';

export interface SuiteCase {
  scenario: string;
  id: string;
  spec: string;
  helo: string;
  host: string;
  mailfrom: string;
  /** Acceptable results, the preferred first. */
  results: SpfResult[];
  explanation?: string;
}

type RecordType = 'A' | 'AAAA' | 'MX' | 'TXT' | 'PTR' | 'CNAME';

export interface SuiteNode {
  A: string[];
  AAAA: string[];
  MX: MxRecord[];
  TXT: string[];
  PTR: string[];
  CNAME?: string;
  timeouts: Set<RecordType | 'SPF'>;
}

export type SuiteZone = Map<string, SuiteNode>;

export interface SuiteScenario {
  description: string;
  cases: SuiteCase[];
  zone: SuiteZone;
}

const TYPES: ReadonlyArray<RecordType | 'SPF'> = ['A', 'AAAA', 'MX', 'TXT', 'PTR', 'CNAME', 'SPF'];
const MAX_CNAME_LINKS = 8;
const TTL = 300;

export function suiteFile(name: string): string {
  return fileURLToPath(new URL(`../fixtures/spf/${name}`, import.meta.url));
}

export function loadSpfSuite(name: string): SuiteScenario[] {
  const documents = parseAllDocuments(readFileSync(suiteFile(name), 'utf8'));
  const list = Array.isArray(documents) ? documents : [documents];
  return list.map((document) => {
    const data = document.toJS() as { description: string; tests: Record<string, Record<string, unknown>>; zonedata?: Record<string, unknown[]> };
    const cases = Object.entries(data.tests).map(([id, test]): SuiteCase => {
      const results = (Array.isArray(test.result) ? test.result : [test.result]).map((result) => legacyResult(String(result)));
      return {
        scenario: data.description,
        id,
        spec: String(test.spec ?? ''),
        helo: String(test.helo ?? ''),
        host: String(test.host ?? ''),
        mailfrom: String(test.mailfrom ?? ''),
        results,
        ...(test.explanation === undefined ? {} : { explanation: String(test.explanation) }),
      };
    });
    return { description: data.description, cases, zone: buildZone(data.zonedata ?? {}) };
  });
}

/** RFC 4408 drafts called permerror "unknown" and temperror "error". */
function legacyResult(result: string): SpfResult {
  if (result === 'unknown') return 'permerror';
  if (result === 'error') return 'temperror';
  return result as SpfResult;
}

function normalise(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

function textOf(value: unknown): string {
  return Array.isArray(value) ? value.map(String).join('') : String(value);
}

/** Zone data written as in the suite files (also handy for unit tests). */
export function buildZone(zonedata: Record<string, unknown[]>): SuiteZone {
  const zone: SuiteZone = new Map();
  for (const [owner, items] of Object.entries(zonedata)) {
    const node: SuiteNode = { A: [], AAAA: [], MX: [], TXT: [], PTR: [], timeouts: new Set() };
    const spf: string[] = [];
    let listsTxt = false;
    const hasData = (type: RecordType | 'SPF'): boolean =>
      type === 'SPF' ? spf.length > 0 : type === 'CNAME' ? node.CNAME !== undefined : node[type].length > 0;
    for (const item of items ?? []) {
      if (item === 'TIMEOUT') {
        for (const type of TYPES) if (!hasData(type)) node.timeouts.add(type);
        continue;
      }
      const [type, value] = Object.entries(item as Record<string, unknown>)[0] ?? [];
      if (value === 'TIMEOUT') {
        node.timeouts.add(type as RecordType);
        continue;
      }
      switch (type) {
        case 'SPF':
          spf.push(textOf(value));
          break;
        case 'TXT':
          listsTxt = true;
          if (value !== 'NONE') node.TXT.push(textOf(value));
          break;
        case 'MX': {
          const [priority, exchange] = value as [number, string];
          node.MX.push({ priority: Number(priority), exchange: String(exchange) });
          break;
        }
        case 'CNAME':
          node.CNAME = String(value);
          break;
        case 'A':
        case 'AAAA':
        case 'PTR':
          node[type].push(String(value));
          break;
        default:
          throw new Error(`spf suite: unknown record type ${String(type)} at ${owner}`);
      }
    }
    if (!listsTxt) node.TXT.push(...spf);
    zone.set(normalise(owner), node);
  }
  return zone;
}

/** A Resolver over a scenario's zone data; no I/O, no timers. */
export class SuiteResolver implements Resolver {
  constructor(private readonly zone: SuiteZone) {}

  a(name: string): Promise<DnsAnswer<string>> {
    return Promise.resolve(this.answer(name, 'A'));
  }
  aaaa(name: string): Promise<DnsAnswer<string>> {
    return Promise.resolve(this.answer(name, 'AAAA'));
  }
  mx(name: string): Promise<DnsAnswer<MxRecord>> {
    return Promise.resolve(this.answer(name, 'MX'));
  }
  txt(name: string): Promise<DnsAnswer<string>> {
    return Promise.resolve(this.answer(name, 'TXT'));
  }
  ptr(address: string): Promise<DnsAnswer<string>> {
    return Promise.resolve(this.answer(reverseName(address), 'PTR'));
  }

  /** The answer for a name and type, synchronously (PTR by reverse name); peers' resolvers use it too. */
  answer<K extends 'A' | 'AAAA' | 'MX' | 'TXT' | 'PTR'>(name: string, type: K): DnsAnswer<SuiteNode[K][number]> {
    let owner = normalise(name);
    const seen = new Set<string>();
    for (let links = 0; links <= MAX_CNAME_LINKS; links++) {
      const node = this.zone.get(owner);
      if (node === undefined) {
        return owner.startsWith('error.') ? { kind: 'tempfail', reason: `timeout (${owner})` } : { kind: 'nxdomain', ttl: TTL };
      }
      if (node.timeouts.has(type)) return { kind: 'tempfail', reason: `timeout (${type} ${owner})` };
      if (node.CNAME === undefined) {
        const records = node[type] as Array<SuiteNode[K][number]>;
        return records.length > 0 ? { kind: 'records', records: [...records], ttl: TTL } : { kind: 'nodata', ttl: TTL };
      }
      seen.add(owner);
      owner = normalise(node.CNAME);
      if (seen.has(owner)) return { kind: 'tempfail', reason: `CNAME loop at ${owner}` };
    }
    return { kind: 'tempfail', reason: `CNAME chain longer than ${MAX_CNAME_LINKS} at ${name}` };
  }
}

/** The zone for test/support/dns-server; timeouts become SERVFAIL (see DESCRIPTION). */
export function suiteDnsZone(zone: SuiteZone): Zone {
  const out: Zone = {};
  for (const [owner, node] of zone) {
    const entry: ZoneNode = {};
    if (node.A.length > 0) entry.A = node.A;
    if (node.AAAA.length > 0) entry.AAAA = node.AAAA;
    if (node.MX.length > 0) entry.MX = node.MX;
    if (node.TXT.length > 0) entry.TXT = node.TXT;
    if (node.PTR.length > 0) entry.PTR = node.PTR;
    if (node.CNAME !== undefined) entry.CNAME = node.CNAME;
    const timeouts = [...node.timeouts].filter((type) => type !== 'SPF');
    if (timeouts.length > 0) entry.servfail = timeouts;
    out[owner] = entry;
  }
  return out;
}
