/**
 * NAME
 *   bench/world - the names, addresses and labelled cases of the callout benchmark
 *
 * DESCRIPTION
 *   One layout shared by the benchmark process and its server process, so both agree on it:
 *     - 1000 throughput domains d0.bench.test ... d999.bench.test, each with one MX
 *       mx<k>.bench.test at 127.77.0.<k> (250 exchanger addresses), so per-domain and per-host
 *       state is spread as in production rather than piled on one name;
 *     - the labelled correctness domains under check.test on 127.77.1.x;
 *     - the address generator: user<i> exists, nouser<i> (every tenth) does not.
 *   Every name is under .test (RFC 2606), so a lookup that escapes to a real resolver names
 *   nothing. Every address is in 127.77.0.0/16, away from the 127.0.0.x that the test suites use.
 *   The peers connect to MX host names through getaddrinfo, hence hostsEntries() for /etc/hosts.
 */

import type { Zone } from '../test/support/dns-server.js';

export const DOMAIN_COUNT = 1000;
export const HOST_COUNT = 250;
export const SMTP_PORT = 25;

export const throughputHosts: string[] = Array.from({ length: HOST_COUNT }, (_, k) => `127.77.0.${k + 1}`);

const mxName = (k: number): string => `mx${k + 1}.bench.test`;

export function domainOf(index: number): string {
  return `d${index % DOMAIN_COUNT}.bench.test`;
}

/** The index-th benchmark address: existing users, except every tenth which the server refuses. */
export function benchAddress(index: number): { address: string; exists: boolean } {
  const exists = index % 10 !== 9;
  return { address: `${exists ? 'user' : 'nouser'}${index}@${domainOf(index)}`, exists };
}

/** What the instant server accepts at RCPT: local parts user<digits>. */
export function isBenchUser(localPart: string): boolean {
  return /^user\d*$/i.test(localPart);
}

/** Answers a peer or the engine can give, in one vocabulary for the tables. */
export type Answer = 'accept' | 'reject' | 'risky' | 'unknown' | 'no-mail-domain';

/** The server behaviour of a correctness exchanger (test/support/smtp-server presets). */
export type CheckServer = 'users' | 'catch-all' | 'greylist';

export interface CheckCase {
  label: string;
  address: string;
  expected: Answer;
  /** Why the expected answer is the right one. */
  because: string;
}

export const checkServers: Array<{ host: string; name: string; kind: CheckServer }> = [
  { host: '127.77.1.1', name: 'mx.users.check.test', kind: 'users' },
  { host: '127.77.1.2', name: 'mx.catchall.check.test', kind: 'catch-all' },
  { host: '127.77.1.3', name: 'mx.greylist.check.test', kind: 'greylist' },
  { host: '127.77.1.4', name: 'implicit.check.test', kind: 'users' },
  { host: '127.77.1.6', name: 'mx2.backup.check.test', kind: 'users' },
];

/** mx1.backup.check.test: nothing listens here, so connections are refused. */
const DEAD_HOST = '127.77.1.5';

/** The local part that exists on every 'users' correctness server. */
export const CHECK_USER = 'alice';

export const checkCases: CheckCase[] = [
  { label: 'existing user', address: 'alice@users.check.test', expected: 'accept', because: '250 at RCPT' },
  { label: 'missing user (550)', address: 'bob@users.check.test', expected: 'reject', because: '550 5.1.1 at RCPT' },
  { label: 'catch-all domain', address: 'anyone@catchall.check.test', expected: 'risky', because: 'a random local part is accepted too, so 250 proves nothing' },
  { label: 'greylisted (450)', address: 'alice@greylist.check.test', expected: 'unknown', because: '450 is temporary (RFC 5321 §4.2.1)' },
  { label: 'null MX (RFC 7505)', address: 'alice@nullmx.check.test', expected: 'no-mail-domain', because: '"MX 0 ." says the domain takes no mail; nothing should be contacted' },
  { label: 'no MX, A record (implicit MX)', address: 'alice@implicit.check.test', expected: 'accept', because: 'RFC 5321 §5.1: the A record is the implicit MX' },
  { label: 'first MX refuses, second works', address: 'alice@backup.check.test', expected: 'accept', because: 'RFC 5321 §5.1: try the next MX' },
];

export function benchZone(): Zone {
  const zone: Zone = {};
  for (let k = 0; k < HOST_COUNT; k++) zone[mxName(k)] = { A: [throughputHosts[k]!] };
  for (let i = 0; i < DOMAIN_COUNT; i++) zone[domainOf(i)] = { MX: [{ priority: 10, exchange: mxName(i % HOST_COUNT) }] };
  zone['users.check.test'] = { MX: [{ priority: 10, exchange: 'mx.users.check.test' }] };
  zone['catchall.check.test'] = { MX: [{ priority: 10, exchange: 'mx.catchall.check.test' }] };
  zone['greylist.check.test'] = { MX: [{ priority: 10, exchange: 'mx.greylist.check.test' }] };
  zone['nullmx.check.test'] = { MX: [{ priority: 0, exchange: '.' }] };
  zone['backup.check.test'] = {
    MX: [
      { priority: 10, exchange: 'mx1.backup.check.test' },
      { priority: 20, exchange: 'mx2.backup.check.test' },
    ],
  };
  zone['mx1.backup.check.test'] = { A: [DEAD_HOST] };
  for (const server of checkServers) {
    zone[server.name] = { ...zone[server.name], A: [server.host] };
  }
  return zone;
}

/** "ip name" lines that let getaddrinfo resolve every MX host name of the zone. */
export function hostsEntries(): string[] {
  return [
    ...throughputHosts.map((ip, k) => `${ip} ${mxName(k)}`),
    ...checkServers.map((s) => `${s.host} ${s.name}`),
    `${DEAD_HOST} mx1.backup.check.test`,
  ];
}
