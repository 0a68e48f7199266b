/**
 * NAME
 *   test/support/dns-server - an in-process authoritative DNS server for tests
 *
 * DESCRIPTION
 *   startDnsServer(zone) answers A, AAAA, MX, TXT, PTR and CNAME queries from a plain object on
 *   loopback, over UDP and TCP on the same port (RFC 1035 §4.2; TCP messages carry a 2-byte
 *   length prefix), so the real node:dns resolver can be driven against it with setServers.
 *   Every answer is authoritative (AA). A name outside the zone is NXDOMAIN and a name without
 *   the asked type is NODATA, both with an SOA in the authority section whose minimum is the
 *   negative TTL (RFC 2308 §3). A name that only exists as the parent of a zone name (an empty
 *   non-terminal) is NODATA (RFC 8020 §2). CNAME chains are followed inside the zone.
 *   A node can be made to fail: servfail (for every type or the types listed), refused, drop (never answer, so the client times out)
 *   or delayMs (answer late). Every well-formed query is recorded in `queries`, so tests can
 *   count what reached the wire (e.g. to prove single flight in a cache).
 *
 * LIMITS
 *   A UDP answer larger than 512 bytes, or than the EDNS payload size the query advertises
 *   (RFC 6891 §6.2.5), is sent with only the question and TC set, so the client retries over
 *   TCP (RFC 7766 §5). TXT strings longer than 255 bytes are split into 255-byte
 *   character-strings (RFC 1035 §3.3.14). CNAME chains stop after 8 links. Malformed messages
 *   are dropped, as is any query whose answer cannot be encoded.
 *
 * SECURITY
 *   Binds to loopback only (127.0.0.0/8 or ::1) and refuses any other host, so no test can
 *   serve or reach beyond this machine.
 */

import dgram from 'node:dgram';
import net from 'node:net';
import dnsPacket from 'dns-packet';
import type { Answer, DecodedPacket, Packet, Question } from 'dns-packet';
/** Re-exported so zones can write PTR owners as [reverseName('192.0.2.1')]. */
export { reverseName } from '../../src/dns/reverse.js';


export interface ZoneNode {
  A?: string[];
  AAAA?: string[];
  MX?: Array<{ priority: number; exchange: string }>;
  /** A string[] is several character-strings in one record. */
  TXT?: Array<string | string[]>;
  PTR?: string[];
  CNAME?: string;
  ttl?: number;
  /** true, or only the query types listed (to fail A while MX answers). */
  servfail?: boolean | string[];
  refused?: boolean;
  /** Never answer: the client times out. */
  drop?: boolean;
  delayMs?: number;
}

/** Keys are fully qualified names without the trailing dot, matched case-insensitively. */
export type Zone = Record<string, ZoneNode>;

export type Transport = 'udp' | 'tcp';

export interface DnsTestServer {
  host: string;
  port: number;
  /** "127.0.0.1:53535" or "[::1]:53535", as node:dns setServers takes it. */
  address: string;
  setZone(zone: Zone): void;
  /** Every well-formed query received, in order, with the transport it came over. */
  queries: Array<{ name: string; type: string; transport: Transport }>;
  close(): Promise<void>;
}

const DEFAULT_TTL = 300;
const NEGATIVE_TTL = 300;
const MAX_CNAME_LINKS = 8;
const CLASSIC_UDP_LIMIT = 512;
const MAX_TXT_CHUNK = 255;
const PORT_ATTEMPTS = 20;

const RCODE = { NOERROR: 0, SERVFAIL: 2, NXDOMAIN: 3, REFUSED: 5 } as const;

function normalizeName(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

function normalizeZone(zone: Zone): Map<string, ZoneNode> {
  return new Map(Object.entries(zone).map(([name, node]) => [normalizeName(name), node]));
}

function splitCharacterStrings(text: string): Buffer[] {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length === 0) return [bytes];
  const chunks: Buffer[] = [];
  for (let offset = 0; offset < bytes.length; offset += MAX_TXT_CHUNK) {
    chunks.push(bytes.subarray(offset, offset + MAX_TXT_CHUNK));
  }
  return chunks;
}

function recordsOf(owner: string, type: string, node: ZoneNode): Answer[] {
  const ttl = node.ttl ?? DEFAULT_TTL;
  switch (type) {
    case 'A':
      return (node.A ?? []).map((data) => ({ type: 'A', name: owner, ttl, data }));
    case 'AAAA':
      return (node.AAAA ?? []).map((data) => ({ type: 'AAAA', name: owner, ttl, data }));
    case 'PTR':
      return (node.PTR ?? []).map((data) => ({ type: 'PTR', name: owner, ttl, data }));
    case 'MX':
      return (node.MX ?? []).map((mx) => ({
        type: 'MX',
        name: owner,
        ttl,
        data: { preference: mx.priority, exchange: mx.exchange },
      }));
    case 'TXT':
      return (node.TXT ?? []).map((txt) => ({
        type: 'TXT',
        name: owner,
        ttl,
        data: (typeof txt === 'string' ? [txt] : txt).flatMap(splitCharacterStrings),
      }));
    default:
      return [];
  }
}

/** The apex the SOA of a negative answer is owned by: the last two labels of the name. */
function apexOf(name: string): string {
  return name.split('.').slice(-2).join('.');
}

function soaFor(name: string): Answer {
  const apex = apexOf(name);
  return {
    type: 'SOA',
    name: apex,
    ttl: NEGATIVE_TTL,
    data: {
      mname: `ns.${apex}`,
      rname: `hostmaster.${apex}`,
      serial: 1,
      refresh: 3600,
      retry: 600,
      expire: 86400,
      minimum: NEGATIVE_TTL,
    },
  };
}

interface Resolution {
  rcode: number;
  answers: Answer[];
  authorities: Answer[];
  /** The node of the queried name, whose failure switches apply. */
  node: ZoneNode | undefined;
}

function resolveInZone(zone: Map<string, ZoneNode>, question: Question): Resolution {
  const queried = zone.get(normalizeName(question.name));
  const answers: Answer[] = [];
  let owner = question.name;
  let node = queried;
  for (let links = 0; node?.CNAME !== undefined && question.type !== 'CNAME' && links < MAX_CNAME_LINKS; links++) {
    answers.push({ type: 'CNAME', name: owner, ttl: node.ttl ?? DEFAULT_TTL, data: node.CNAME });
    owner = node.CNAME;
    node = zone.get(normalizeName(owner));
  }
  if (node === undefined) {
    const normalized = normalizeName(owner);
    const isEmptyNonTerminal = [...zone.keys()].some((name) => name.endsWith(`.${normalized}`));
    return {
      rcode: isEmptyNonTerminal ? RCODE.NOERROR : RCODE.NXDOMAIN,
      answers,
      authorities: [soaFor(normalized)],
      node: queried,
    };
  }
  const records =
    question.type === 'CNAME' && node.CNAME !== undefined
      ? [{ type: 'CNAME', name: owner, ttl: node.ttl ?? DEFAULT_TTL, data: node.CNAME } satisfies Answer]
      : recordsOf(owner, question.type, node);
  answers.push(...records);
  return {
    rcode: RCODE.NOERROR,
    answers,
    authorities: answers.length === 0 ? [soaFor(normalizeName(owner))] : [],
    node: queried,
  };
}

function ednsPayloadSize(query: DecodedPacket): number | undefined {
  for (const record of query.additionals ?? []) {
    if (record.type === 'OPT') return Math.max(CLASSIC_UDP_LIMIT, record.udpPayloadSize);
  }
  return undefined;
}

function header(query: DecodedPacket, rcode: number, extraFlags = 0): Packet {
  const recursionDesired = query.flag_rd ? dnsPacket.RECURSION_DESIRED : 0;
  return {
    type: 'response',
    id: query.id ?? 0,
    flags: dnsPacket.AUTHORITATIVE_ANSWER | recursionDesired | extraFlags | rcode,
    questions: query.questions ?? [],
  };
}

function optRecord(payloadSize: number): Answer {
  return { type: 'OPT', name: '.', udpPayloadSize: payloadSize, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] };
}

interface Reply {
  delayMs: number;
  message: Buffer;
}

/**
 * Whether a name read from a query can be written back into the answer: labels of 1 to 63
 * octets, 255 in all (RFC 1035 §2.3.4). dns-packet reads a label's octets as UTF-8 (each
 * invalid one becomes U+FFFD, three octets) and writes them back unchecked, so a name read from
 * random bytes could come back in a reply with a label no one can read.
 */
function writable(name: string): boolean {
  const trimmed = name.replace(/^\.|\.$/g, '');
  if (trimmed === '') return true;
  const labels = trimmed.split('.').map((label) => Buffer.byteLength(label));
  return labels.every((octets) => octets >= 1 && octets <= 63) && labels.reduce((sum, octets) => sum + octets + 1, 1) <= 255;
}

function decodeQuery(message: Buffer): DecodedPacket | undefined {
  try {
    const query = dnsPacket.decode(message);
    const [question, ...others] = query.questions ?? [];
    if (query.type !== 'query' || question === undefined || others.length > 0) return undefined;
    if (typeof question.name !== 'string' || typeof question.type !== 'string' || !writable(question.name)) return undefined;
    return query;
  } catch {
    return undefined;
  }
}

export async function startDnsServer(zone: Zone, options: { host?: string; port?: number } = {}): Promise<DnsTestServer> {
  const host = options.host ?? '127.0.0.1';
  if (!(net.isIPv4(host) && host.startsWith('127.')) && host !== '::1') {
    throw new Error(`test DNS server binds to loopback only, not ${host}`);
  }
  let records = normalizeZone(zone);
  const queries: DnsTestServer['queries'] = [];
  const timers = new Set<NodeJS.Timeout>();
  const connections = new Set<net.Socket>();

  /** Undefined when nothing is to be sent: a malformed message, a dropped name, or an answer that cannot be encoded. */
  function answer(message: Buffer, transport: Transport): Reply | undefined {
    const query = decodeQuery(message);
    const question = query?.questions?.[0];
    if (query === undefined || question === undefined) return undefined;
    queries.push({ name: question.name, type: question.type, transport });
    try {
      return answerQuestion(query, question, transport);
    } catch {
      return undefined;
    }
  }

  function answerQuestion(query: DecodedPacket, question: Question, transport: Transport): Reply | undefined {
    const resolution = resolveInZone(records, question);
    const node = resolution.node;
    if (node?.drop) return undefined;
    const delayMs = node?.delayMs ?? 0;
    const servfail = node?.servfail;
    if (servfail === true || (Array.isArray(servfail) && servfail.includes(question.type))) return { delayMs, message: dnsPacket.encode(header(query, RCODE.SERVFAIL)) };
    if (node?.refused) return { delayMs, message: dnsPacket.encode(header(query, RCODE.REFUSED)) };

    const payloadSize = ednsPayloadSize(query);
    const opt = payloadSize === undefined ? [] : [optRecord(payloadSize)];
    const full: Packet = {
      ...header(query, resolution.rcode),
      answers: resolution.answers,
      authorities: resolution.authorities,
      additionals: opt,
    };
    const encoded = dnsPacket.encode(full);
    const limit = payloadSize ?? CLASSIC_UDP_LIMIT;
    if (transport === 'udp' && encoded.length > limit) {
      return { delayMs, message: dnsPacket.encode({ ...header(query, resolution.rcode, dnsPacket.TRUNCATED_RESPONSE), additionals: opt }) };
    }
    return { delayMs, message: encoded };
  }

  function later(delayMs: number, send: () => void): void {
    if (delayMs <= 0) {
      send();
      return;
    }
    const timer = setTimeout(() => {
      timers.delete(timer);
      send();
    }, delayMs);
    timers.add(timer);
  }

  function createUdp(): dgram.Socket {
    const socket = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
    socket.on('message', (message, remote) => {
      const reply = answer(message, 'udp');
      if (reply === undefined) return;
      later(reply.delayMs, () => socket.send(reply.message, remote.port, remote.address));
    });
    return socket;
  }

  const tcp = net.createServer((socket) => {
    connections.add(socket);
    socket.on('close', () => connections.delete(socket));
    socket.on('error', () => socket.destroy());
    let pending = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 2) {
        const length = pending.readUInt16BE(0);
        if (pending.length < 2 + length) break;
        const message = pending.subarray(2, 2 + length);
        pending = pending.subarray(2 + length);
        const reply = answer(message, 'tcp');
        if (reply === undefined) continue;
        const prefix = Buffer.alloc(2);
        prefix.writeUInt16BE(reply.message.length);
        later(reply.delayMs, () => {
          if (!socket.destroyed) socket.write(Buffer.concat([prefix, reply.message]));
        });
      }
    });
  });

  const { udp, port } = await bindBoth(createUdp, tcp, host, options.port ?? 0);
  udp.on('error', () => {
    // A send to a client that went away must not take the test process down.
  });

  return {
    host,
    port,
    address: net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`,
    queries,
    setZone(next: Zone) {
      records = normalizeZone(next);
    },
    async close() {
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      for (const socket of connections) socket.destroy();
      await Promise.all([
        new Promise<void>((resolve) => udp.close(() => resolve())),
        new Promise<void>((resolve) => tcp.close(() => resolve())),
      ]);
    },
  };
}

/**
 * Listens on TCP first (port 0 lets the kernel pick a port free of every TCP conflict, including
 * the TIME_WAIT sockets that a burst of client connections leaves over the whole ephemeral range),
 * then binds UDP on the same number; UDP ports are rarely contended, and a taken one is retried
 * with a fresh port (a closed dgram socket cannot be bound again). Binding UDP first and TCP
 * second failed after a benchmark peer had opened tens of thousands of TCP connections: most
 * UDP-chosen numbers were then in TIME_WAIT on TCP.
 */
async function bindBoth(
  createUdp: () => dgram.Socket,
  tcp: net.Server,
  host: string,
  requestedPort: number,
): Promise<{ udp: dgram.Socket; port: number }> {
  for (let attempt = 1; ; attempt++) {
    await new Promise<void>((resolve, reject) => {
      // Both handlers go when either fires: a failed attempt must not leave a 'listening'
      // handler behind on the server the next attempt listens with.
      const failed = (err: Error): void => {
        tcp.off('listening', listening);
        reject(err);
      };
      const listening = (): void => {
        tcp.off('error', failed);
        resolve();
      };
      tcp.once('error', failed);
      tcp.once('listening', listening);
      tcp.listen({ host, port: requestedPort, exclusive: true });
    });
    const port = (tcp.address() as net.AddressInfo).port;
    const udp = createUdp();
    try {
      await new Promise<void>((resolve, reject) => {
        udp.once('error', reject);
        udp.bind({ address: host, port, exclusive: true }, () => {
          udp.off('error', reject);
          resolve();
        });
      });
      return { udp, port };
    } catch (err) {
      udp.close();
      await new Promise<void>((resolve) => tcp.close(() => resolve()));
      if (requestedPort !== 0 || attempt >= PORT_ATTEMPTS) throw err;
    }
  }
}
