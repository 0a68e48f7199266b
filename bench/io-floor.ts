/**
 * NAME
 *   bench/io-floor - the I/O of one callout and nothing else: what this machine allows at most
 *
 * SYNOPSIS
 *   import { createIoFloor } from './io-floor.js';
 *   const floor = createIoFloor({ dnsServer: '127.0.0.1:5353', port: 25, connections: 'per-callout' });
 *   const answer = await floor.check('user1@d1.bench.test'); // 250 or 550
 *   await floor.close();
 *
 * DESCRIPTION
 *   Every verifier, whatever its design, has to do this much I/O for a cold callout against
 *   the benchmark's servers: an MX query, an address query for the exchanger, and the SMTP
 *   dialogue up to RCPT. This client does exactly that and nothing more: no address parsing,
 *   no MX sorting or fallback, no limits, no cache, no transcript, no timers per step. Run in
 *   the same cells as callout and the peers, it measures the ceiling that the servers, the
 *   kernel's loopback and Node's I/O leave on this machine, so a target above it is known to
 *   be out of reach for any verifier here, not only for ours.
 *
 *   DNS: one UDP socket; each query is encoded and each answer decoded by dns-packet and matched
 *   by id; the first MX record and the first A record are used.
 *   SMTP, in the way the two npm peers work and as RFC 5321 allows:
 *     per-callout  a new connection for each callout: greeting, EHLO, then MAIL FROM:<>,
 *                  RCPT TO and QUIT as one group (RFC 2920 pipelining, which the servers
 *                  advertise), read to the close: fewer round trips than the peers make;
 *     reused       one idle connection per exchanger address is kept; each callout writes
 *                  MAIL FROM:<>, RCPT TO and RSET as one group on it (a new connection with
 *                  greeting and EHLO only when none is idle), as callout's connection cache does.
 *   The answer is the RCPT reply's code.
 *
 * ERRORS
 *   check() rejects when a DNS answer has no usable record, a query is unanswered for 2 s, or
 *   the connection fails or closes before the RCPT reply: the benchmark counts it as a failed
 *   answer. Bench code only: it trusts the benchmark's servers beyond that.
 */

import dgram from 'node:dgram';
import net from 'node:net';
import dnsPacket from 'dns-packet';

export type FloorConnections = 'per-callout' | 'reused';

export interface IoFloorOptions {
  /** IPV4:PORT of the DNS server (the benchmark's is on 127.0.0.1). */
  dnsServer: string;
  /** SMTP port of the exchangers. */
  port: number;
  connections: FloorConnections;
}

export interface IoFloor {
  /** The code of the RCPT reply for this address. */
  check(address: string): Promise<number>;
  close(): Promise<void>;
}

const QUERY_TIMEOUT_MS = 2_000;

interface PendingQuery {
  sentAt: number;
  resolve: (answer: dnsPacket.Packet) => void;
  reject: (err: Error) => void;
}

/** Reads complete SMTP replies off a connection: each is its final line's code. */
class ReplyReader {
  private partial = '';
  private readonly codes: number[] = [];
  private waiter: { count: number; resolve: (codes: number[]) => void; reject: (err: Error) => void } | undefined;

  constructor(readonly socket: net.Socket) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.take(chunk.toString('latin1')));
    socket.on('error', (err) => this.fail(err));
    socket.on('close', () => this.fail(new Error('connection closed')));
  }

  /** The codes of the next `count` replies. */
  next(count: number): Promise<number[]> {
    return new Promise((resolve, reject) => {
      this.waiter = { count, resolve, reject };
      this.settle();
    });
  }

  private take(text: string): void {
    this.partial += text;
    let lf: number;
    while ((lf = this.partial.indexOf('\n')) !== -1) {
      const line = this.partial.slice(0, lf);
      this.partial = this.partial.slice(lf + 1);
      // The last line of a reply has a space (or nothing) after its code; others a hyphen.
      if (line.charAt(3) !== '-') this.codes.push(Number(line.slice(0, 3)));
    }
    this.settle();
  }

  private settle(): void {
    const waiter = this.waiter;
    if (!waiter || this.codes.length < waiter.count) return;
    this.waiter = undefined;
    waiter.resolve(this.codes.splice(0, waiter.count));
  }

  private fail(err: Error): void {
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.reject(err);
  }
}

export function createIoFloor(options: IoFloorOptions): IoFloor {
  const colon = options.dnsServer.lastIndexOf(':');
  const dnsHost = options.dnsServer.slice(0, colon);
  const dnsPort = Number(options.dnsServer.slice(colon + 1));
  const socket = dgram.createSocket('udp4');
  // Datagrams sent before the bind completes wait in the socket's queue.
  socket.bind(0, '127.0.0.1');
  const pending = new Map<number, PendingQuery>();
  let nextId = 0;
  socket.on('message', (message) => {
    const id = message.readUInt16BE(0);
    const query = pending.get(id);
    if (!query) return;
    pending.delete(id);
    try {
      query.resolve(dnsPacket.decode(message));
    } catch (err) {
      query.reject(err instanceof Error ? err : new Error(String(err)));
    }
  });
  // One sweep instead of a timer per query: timers would be most of the floor's own cost.
  const sweep = setInterval(() => {
    const now = performance.now();
    for (const [id, query] of pending) {
      if (now - query.sentAt < QUERY_TIMEOUT_MS) continue;
      pending.delete(id);
      query.reject(new Error(`DNS query ${id} unanswered for ${QUERY_TIMEOUT_MS} ms`));
    }
  }, QUERY_TIMEOUT_MS / 2);

  const ask = (name: string, type: 'MX' | 'A'): Promise<dnsPacket.Packet> => {
    do nextId = (nextId + 1) & 0xffff;
    while (pending.has(nextId));
    const id = nextId;
    const packet = dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name }] });
    return new Promise((resolve, reject) => {
      pending.set(id, { sentAt: performance.now(), resolve, reject });
      socket.send(packet, dnsPort, dnsHost);
    });
  };

  const exchangerAddress = async (domain: string): Promise<string> => {
    const mx = (await ask(domain, 'MX')).answers?.find((record) => record.type === 'MX');
    if (!mx) throw new Error(`no MX record for ${domain}`);
    const a = (await ask(mx.data.exchange, 'A')).answers?.find((record) => record.type === 'A');
    if (a?.type !== 'A') throw new Error(`no A record for ${mx.data.exchange}`);
    return a.data;
  };

  const open = async (host: string): Promise<ReplyReader> => {
    const reader = new ReplyReader(net.connect({ host, port: options.port }));
    await reader.next(1);
    reader.socket.write('EHLO floor.bench.test\r\n');
    await reader.next(1);
    return reader;
  };

  const idle = new Map<string, ReplyReader[]>();

  const perCallout = async (host: string, address: string): Promise<number> => {
    const reader = await open(host);
    reader.socket.write(`MAIL FROM:<>\r\nRCPT TO:<${address}>\r\nQUIT\r\n`);
    const [, rcpt] = await reader.next(3);
    reader.socket.destroy();
    return rcpt!;
  };

  const reused = async (host: string, address: string): Promise<number> => {
    const reader = idle.get(host)?.pop() ?? (await open(host));
    reader.socket.write(`MAIL FROM:<>\r\nRCPT TO:<${address}>\r\nRSET\r\n`);
    const [, rcpt] = await reader.next(3);
    const list = idle.get(host) ?? [];
    list.push(reader);
    idle.set(host, list);
    return rcpt!;
  };

  const dialogue = options.connections === 'reused' ? reused : perCallout;
  return {
    check: async (address) => dialogue(await exchangerAddress(address.slice(address.lastIndexOf('@') + 1)), address),
    close: async () => {
      clearInterval(sweep);
      for (const list of idle.values()) for (const reader of list) reader.socket.destroy();
      idle.clear();
      await new Promise<void>((resolve) => socket.close(() => resolve()));
    },
  };
}
