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
 *   the benchmark's servers: an MX query for the new domain and the SMTP dialogue up to RCPT.
 *   This client does that and nothing more: no address parsing, no MX sorting or fallback, no
 *   limits, no result cache, no transcript, no timers per step. Measured in cells like the
 *   peers', it shows what the servers, the kernel's loopback and Node's I/O allow on this
 *   machine, and how much CPU the benchmark's own servers spend per callout, which no client
 *   can save them.
 *
 *   DNS: one UDP socket; each query is encoded and each answer decoded by dns-packet, matched
 *   by id and question; the first MX record is used. The exchanger's address (A) is asked once
 *   per exchanger name and kept, as a verifier's DNS cache keeps it (the peers read it from
 *   /etc/hosts).
 *   SMTP, as RFC 5321 and RFC 2920 (pipelining, which the servers advertise) allow:
 *     per-callout  a new connection for each callout, as the two npm peers make: greeting,
 *                  EHLO, then MAIL FROM:<>, RCPT TO and QUIT as one group; the connection is
 *                  closed once the RCPT reply is in (fewer round trips than the peers make);
 *     reused       one idle connection per exchanger address is kept; each callout writes
 *                  MAIL FROM:<>, RCPT TO and RSET as one group on it (a new connection with
 *                  greeting and EHLO only when none is idle), as callout's connection cache does.
 *   The answer is the RCPT reply's code. Replies are read for their codes alone, not through
 *   src/smtp's reply codec: the floor measures the I/O, and callout's parsing is callout's cost.
 *
 * ERRORS
 *   check() rejects when a DNS answer has no usable record, a query is unanswered for 2 s, or
 *   the connection fails or closes before the RCPT reply: the benchmark counts it as a failed
 *   answer. A connection that closes while idle leaves the pool. Bench code only: it trusts
 *   the benchmark's servers beyond that.
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
  name: string;
  type: 'MX' | 'A';
  sentAt: number;
  resolve: (answer: dnsPacket.Packet) => void;
  reject: (err: Error) => void;
}

/** Reads complete SMTP replies off a connection: each is its final line's code. */
class ReplyReader {
  private partial = '';
  private readonly codes: number[] = [];
  private waiter: { count: number; resolve: (codes: number[]) => void; reject: (err: Error) => void } | undefined;
  /** Why the connection can serve no more replies, once it cannot. */
  private ended: Error | undefined;

  constructor(readonly socket: net.Socket) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.take(chunk.toString('latin1')));
    socket.on('error', (err) => this.fail(err));
    socket.on('close', () => this.fail(new Error('connection closed')));
  }

  get usable(): boolean {
    return this.ended === undefined;
  }

  /** The codes of the next `count` replies. */
  next(count: number): Promise<number[]> {
    return new Promise((resolve, reject) => {
      this.waiter = { count, resolve, reject };
      this.settle();
      if (this.waiter && this.ended) this.fail(this.ended);
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
    this.ended ??= err;
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
    let answer: dnsPacket.Packet;
    try {
      answer = dnsPacket.decode(message);
    } catch {
      return; // not an answer to anything asked: the query waits on, or times out
    }
    // A late answer to an earlier query with the same id (after 65,536 others) is not this one's.
    const question = answer.questions?.[0];
    if (question?.type !== query.type || question.name.toLowerCase() !== query.name.toLowerCase()) return;
    pending.delete(id);
    query.resolve(answer);
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
      pending.set(id, { name, type, sentAt: performance.now(), resolve, reject });
      socket.send(packet, dnsPort, dnsHost);
    });
  };

  const addresses = new Map<string, string>();
  const addressOf = async (name: string): Promise<string> => {
    const known = addresses.get(name);
    if (known !== undefined) return known;
    const a = (await ask(name, 'A')).answers?.find((record) => record.type === 'A');
    if (a?.type !== 'A') throw new Error(`no A record for ${name}`);
    addresses.set(name, a.data);
    return a.data;
  };

  const exchangerAddress = async (domain: string): Promise<string> => {
    const mx = (await ask(domain, 'MX')).answers?.find((record) => record.type === 'MX');
    if (!mx) throw new Error(`no MX record for ${domain}`);
    return addressOf(mx.data.exchange);
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
    try {
      const [, rcpt] = await reader.next(2);
      return rcpt!;
    } finally {
      reader.socket.destroy();
    }
  };

  const reused = async (host: string, address: string): Promise<number> => {
    const pool = idle.get(host);
    let reader = pool?.pop();
    while (reader && !reader.usable) reader = pool?.pop();
    reader ??= await open(host);
    reader.socket.write(`MAIL FROM:<>\r\nRCPT TO:<${address}>\r\nRSET\r\n`);
    let rcpt: number | undefined;
    try {
      [, rcpt] = await reader.next(3);
    } catch (err) {
      reader.socket.destroy();
      throw err;
    }
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
