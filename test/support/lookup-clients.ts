/**
 * NAME
 *   test/support/lookup-clients - socketmap and tcp_table clients for tests and benchmarks
 *
 * SYNOPSIS
 *   const client = await SocketmapClient.connect({ host: '127.0.0.1', port });
 *   await client.query('forward', 'alice@example.org');   // "OK SRS0=..."
 *
 * DESCRIPTION
 *   Each sends requests over one connection, pipelined, and resolves each with the raw reply
 *   (a socketmap netstring's text, a tcp_table line), as Postfix would read it: the services of
 *   rewrite/socketmap and rewrite/tcp-table are tried as Postfix uses them. Nothing that ships
 *   queries them, so they live here, not in src/.
 *
 * ERRORS
 *   A query rejects with Error when the connection closes before its reply, and a socketmap
 *   query when the reply is not a netstring or is too long.
 */

import net from 'node:net';
import { NetstringDecoder, encodeNetstring } from '../../src/rewrite/socketmap.js';
import { tcpTableEncode } from '../../src/rewrite/tcp-table.js';

/** The longest socketmap reply Postfix reads (socketmap_table(5)): a reply over it fails the query as it would fail Postfix's. */
const REPLY_OCTETS = 100_000;

type Waiting = Array<{ resolve: (reply: string) => void; reject: (err: Error) => void }>;

/** A pipelining socketmap client over one connection. */
export class SocketmapClient {
  private readonly decoder = new NetstringDecoder(REPLY_OCTETS);
  private readonly waiting: Waiting = [];

  private constructor(private readonly socket: net.Socket) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      for (const event of this.decoder.push(chunk)) {
        const next = this.waiting.shift();
        if (event.kind === 'frame') next?.resolve(event.data.toString('utf8'));
        else next?.reject(new Error(`socketmap reply: ${event.kind === 'error' ? event.reason : 'too long'}`));
      }
    });
    const failAll = () => {
      for (const w of this.waiting.splice(0)) w.reject(new Error('socketmap connection closed'));
    };
    socket.on('close', failAll);
    socket.on('error', failAll);
  }

  static connect(target: { host: string; port: number } | { path: string }): Promise<SocketmapClient> {
    return new Promise((resolve, reject) => {
      const socket = 'path' in target ? net.connect(target.path) : net.connect(target.port, target.host);
      socket.once('connect', () => resolve(new SocketmapClient(socket)));
      socket.once('error', reject);
    });
  }

  /** Sends `name key`; resolves with the raw reply text, e.g. "OK SRS0=...". */
  query(name: string, key: string): Promise<string> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.socket.write(encodeNetstring(`${name} ${key}`));
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

/** A pipelining tcp_table client over one connection. */
export class TcpTableClient {
  private pending = '';
  private readonly waiting: Waiting = [];

  private constructor(private readonly socket: net.Socket) {
    socket.setNoDelay(true);
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      this.pending += chunk;
      let newline: number;
      while ((newline = this.pending.indexOf('\n')) >= 0) {
        const line = this.pending.slice(0, newline);
        this.pending = this.pending.slice(newline + 1);
        this.waiting.shift()?.resolve(line);
      }
    });
    const failAll = () => {
      for (const w of this.waiting.splice(0)) w.reject(new Error('tcp_table connection closed'));
    };
    socket.on('close', failAll);
    socket.on('error', failAll);
  }

  static connect(target: { host: string; port: number }): Promise<TcpTableClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(target.port, target.host);
      socket.once('connect', () => resolve(new TcpTableClient(socket)));
      socket.once('error', reject);
    });
  }

  /** Sends `get KEY` (encoded); resolves with the raw reply line, e.g. "200 SRS0=...". */
  query(key: string): Promise<string> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.socket.write(`get ${tcpTableEncode(key)}\n`);
    });
  }

  close(): void {
    this.socket.destroy();
  }
}
