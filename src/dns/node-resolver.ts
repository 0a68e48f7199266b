/**
 * NAME
 *   dns/node-resolver - the Resolver over node:dns (c-ares)
 *
 * DESCRIPTION
 *   createNodeResolver() asks the configured servers (or the system's, from /etc/resolv.conf,
 *   when none are given) and turns every outcome into a DnsAnswer. Three error codes are
 *   permanent: ENOTFOUND (NXDOMAIN), EBADNAME (a name c-ares cannot query, so no record can exist)
 *   and ENODATA (the name exists without records of the type).
 *   Everything else (ESERVFAIL, ETIMEOUT, EREFUSED, ECONNREFUSED, EBADRESP, ...) is a
 *   temporary failure, because RFC 5321 §5.1 and RFC 7208 §5 forbid reading "could not ask"
 *   as "does not exist".
 *
 *   Names are checked before they are sent (dns/names queryName): one longer than 253 characters
 *   in A-labels (RFC 1035 §2.3.4) is NXDOMAIN, as c-ares would only refuse it past 255 and a
 *   server answers FORMERR or nothing; one holding a NUL is NXDOMAIN too, as c-ares would ask
 *   for the part before the NUL instead (like EBADNAME, no query can reach such a name); one
 *   whose U-labels or A-labels do not convert (UTS #46) is a temporary failure, because node:dns would ask for the root in its place, and a name like
 *   "xn--zz.example" may well exist in the DNS: it could not be asked, not found absent.
 *
 * LIMITS
 *   node:dns reports TTLs only for A and AAAA; MX, TXT and PTR answers carry
 *   defaultTtlSeconds, and negative answers defaultNegativeTtlSeconds (node:dns does not expose
 *   the SOA minimum). timeoutMs is the first try's timeout against one server; c-ares makes
 *   `tries` rounds over the servers and doubles the timeout each round, so one lookup with one
 *   silent server takes up to timeoutMs * (2^tries - 1) (15 s at 5 s and 2 tries).
 *
 * ERRORS
 *   ConfigError for a server entry that is not "ip", "ip:port" or "[ipv6]:port" (its start
 *   quoted with core/text's shownJson: a C1 control of a --dns-server reached the terminal raw),
 *   or for a timeout, try count or TTL that is not a positive integer (zero allowed for TTLs). Lookups
 *   never reject for a DNS outcome; ptr() of a string that is not an IP address rejects with
 *   reverseName's DNS_PERMANENT error.
 */

import { Resolver as AresResolver } from 'node:dns/promises';
import { isIP, isIPv4, isIPv6 } from 'node:net';
import { ConfigError, abbreviate } from '../core/errors.js';
import { shownJson } from '../core/text.js';
import { queryName } from './names.js';
import { reverseName } from './reverse.js';
import type { DnsAnswer, DnsRecordType, MxRecord, Resolver } from './types.js';

export interface NodeResolverOptions {
  /** "ip", "ip:port", "[ipv6]:port" or a bare IPv6 address; empty or absent = system servers. */
  servers?: string[];
  /** Per try, in milliseconds (default 3000). */
  timeoutMs?: number;
  /** Rounds over the server list (default 2). */
  tries?: number;
  /** TTL given to MX, TXT and PTR answers, which node:dns returns without one (default 300). */
  defaultTtlSeconds?: number;
  /** TTL given to NXDOMAIN and NODATA answers (default 300). */
  defaultNegativeTtlSeconds?: number;
}

const DEFAULTS = { timeoutMs: 3000, tries: 2, defaultTtlSeconds: 300, defaultNegativeTtlSeconds: 300 };

/**
 * Reads one server entry: the form node:dns setServers accepts, or why it is none. The
 * configuration schema reads dns.servers with it, so that the message names the key.
 */
export function readDnsServer(entry: string): { ok: true; value: string } | { ok: false; reason: string } {
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(entry);
  const hostAndPort = /^([^:]+):(\d+)$/.exec(entry);
  let host: string;
  let port: string | undefined;
  if (bracketed) {
    host = bracketed[1] ?? '';
    port = bracketed[2];
    if (!isIPv6(host)) return { ok: false, reason: 'brackets must hold an IPv6 address' };
  } else if (hostAndPort) {
    host = hostAndPort[1] ?? '';
    port = hostAndPort[2];
    if (!isIPv4(host)) return { ok: false, reason: 'expected an IPv4 address before the port' };
  } else {
    host = entry;
    if (isIP(host) === 0) return { ok: false, reason: 'expected an IP address, optionally with :port' };
  }
  if (port === undefined) return { ok: true, value: host };
  const portNumber = Number(port);
  if (!Number.isInteger(portNumber) || portNumber < 1 || portNumber > 65535) return { ok: false, reason: 'port must be 1..65535' };
  return { ok: true, value: isIPv6(host) ? `[${host}]:${portNumber}` : `${host}:${portNumber}` };
}

/** Validates one server entry and returns it in the form node:dns setServers accepts. */
export function parseDnsServer(entry: string): string {
  const read = readDnsServer(entry);
  if (!read.ok) throw new ConfigError(`dns server ${shownJson(abbreviate(entry, 80))}: ${read.reason}`);
  return read.value;
}

function checkedInteger(name: string, value: number, minimum: number): number {
  if (!Number.isInteger(value) || value < minimum) {
    throw new ConfigError(`dns ${name}: expected an integer >= ${minimum}, got ${String(value)}`);
  }
  return value;
}

export interface NodeResolver extends Resolver {
  /**
   * Gives up every lookup still running (each answers tempfail, ECANCELLED): a pending c-ares
   * query keeps the process alive through all its tries.
   */
  cancel(): void;
}

export function createNodeResolver(options: NodeResolverOptions = {}): NodeResolver {
  const timeoutMs = checkedInteger('timeoutMs', options.timeoutMs ?? DEFAULTS.timeoutMs, 1);
  const tries = checkedInteger('tries', options.tries ?? DEFAULTS.tries, 1);
  const ttl = checkedInteger('defaultTtlSeconds', options.defaultTtlSeconds ?? DEFAULTS.defaultTtlSeconds, 0);
  const negativeTtl = checkedInteger(
    'defaultNegativeTtlSeconds',
    options.defaultNegativeTtlSeconds ?? DEFAULTS.defaultNegativeTtlSeconds,
    0,
  );
  const servers = (options.servers ?? []).map(parseDnsServer);

  const ares = new AresResolver({ timeout: timeoutMs, tries });
  if (servers.length > 0) ares.setServers(servers);

  async function ask<T>(type: DnsRecordType, name: string, lookup: () => Promise<{ records: T[]; ttl: number }>): Promise<DnsAnswer<T>> {
    const checked = queryName(name);
    if (!checked.ok && checked.problem !== 'not-idna') return { kind: 'nxdomain', ttl: negativeTtl };
    if (!checked.ok) return { kind: 'tempfail', reason: `not a name node:dns can ask for (IDNA) looking up ${type} ${name}` };
    try {
      const answer = await lookup();
      if (answer.records.length === 0) return { kind: 'nodata', ttl: negativeTtl };
      return { kind: 'records', ...answer };
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      // EBADNAME: c-ares will not put the name on the wire (a space, '/', ':' ...); no host can have it.
      if (code === 'ENOTFOUND' || code === 'EBADNAME') return { kind: 'nxdomain', ttl: negativeTtl };
      if (code === 'ENODATA') return { kind: 'nodata', ttl: negativeTtl };
      const what = typeof code === 'string' ? code : err instanceof Error ? err.message : String(err);
      return { kind: 'tempfail', reason: `${what} looking up ${type} ${name}` };
    }
  }

  async function addresses(type: 'A' | 'AAAA', name: string): Promise<DnsAnswer<string>> {
    return ask(type, name, async () => {
      const found = type === 'A' ? await ares.resolve4(name, { ttl: true }) : await ares.resolve6(name, { ttl: true });
      return { records: found.map((record) => record.address), ttl: Math.min(...found.map((record) => record.ttl)) };
    });
  }

  return {
    a: (name) => addresses('A', name),
    aaaa: (name) => addresses('AAAA', name),
    mx: (name) =>
      ask<MxRecord>('MX', name, async () => ({
        records: (await ares.resolveMx(name)).map(({ exchange, priority }) => ({ exchange, priority })),
        ttl,
      })),
    txt: (name) => ask('TXT', name, async () => ({ records: (await ares.resolveTxt(name)).map((strings) => strings.join('')), ttl })),
    ptr: async (address) => {
      const name = reverseName(address);
      return ask('PTR', name, async () => ({ records: await ares.resolvePtr(name), ttl }));
    },
    cancel: () => ares.cancel(),
  };
}
