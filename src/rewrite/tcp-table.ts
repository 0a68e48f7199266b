/**
 * NAME
 *   rewrite/tcp-table - Postfix tcp_table(5) lookup service, a drop-in for postsrsd 1.x
 *
 * DESCRIPTION
 *   Postfix sends `get SP key LF` and reads one line back: `200 SP data LF` (found), `500 SP text
 *   LF` (not found) or `400 SP text LF` (temporary error, Postfix retries later). In both
 *   directions `%`, white space and non-printing bytes travel as %XX; the key is decoded before
 *   the lookup (as UTF-8) and the reply encoded byte by byte. The protocol carries no map name,
 *   so each listener serves one map (postsrsd 1.x: forward on 10001, reverse on 10002).
 *
 *   As postsrsd 1.x: a line that is not a `get` request or has a broken %-escape is answered
 *   `500 Invalid request` and the connection is closed; so is a line over the limit. Unlike
 *   postsrsd, a line whose first octets cannot begin `get ` is refused at once, not at its line
 *   end: a socketmap netstring (main.cf naming this listener `socketmap:`) has none, and the
 *   log line says which table type to write. A map's `perm` outcome is sent as 500 (tcp_table
 *   has no separate permanent error).
 *
 * LIMITS
 *   Request lines of at most maxLineOctets (default 4096, Postfix's reply limit); the encoded
 *   reply is what the map gives, at most 4096 octets for Postfix to accept it. An idle
 *   connection is closed after idleTimeoutMs, 1800 s by default (postsrsd 1.x's -t), not the
 *   socketmap's 30 s, so a site moving from postsrsd 1.x sees the same. A line must arrive whole
 *   within arrivalTimeoutMs of its first octet (rewrite/lookup).
 *
 * ERRORS
 *   Nothing in the server throws on input. (The client that tests and benchmarks query it with
 *   is test/support/lookup-clients.)
 */

import net from 'node:net';
import { LookupServer, type LookupMap, type LookupResult, type LookupServerOptions } from './lookup.js';

export const TCP_TABLE_LIMITS = { lineOctets: 4096 } as const;

const NOTHING = Buffer.alloc(0);

const NOT_GET = 'not a "get KEY" request';

/** `get `, lower case, as Postfix sends it and postsrsd requires. */
const GET = [0x67, 0x65, 0x74, 0x20] as const;

/** Whether the start of a line, not yet ended, can still become a `get ` request. */
function mayBeGetRequest(start: Buffer): boolean {
  for (let i = 0; i < start.length && i < GET.length; i++) if (start[i] !== GET[i]) return false;
  return true;
}

/** Whether the line starts with `get `. */
function isGetRequest(line: Buffer): boolean {
  return line.length >= GET.length && mayBeGetRequest(line);
}

/**
 * What to change when a line is a socketmap netstring (`LEN:MAP KEY,`): main.cf names this
 * listener `socketmap:`. Postfix sends no line end after a netstring, so without this the
 * request waited for the arrival bound, Postfix asked again on a new connection, and every
 * lookup took twice that with nothing in the log but an unfinished request.
 */
function netstringHint(line: Buffer): string | undefined {
  return /^[0-9]+:/.test(line.subarray(0, 8).toString('latin1'))
    ? 'a socketmap request (a netstring, LEN:MAP KEY,): main.cf names this tcp_table listener with socketmap:; write tcp:HOST:PORT, or point socketmap: at the --socketmap listener'
    : undefined;
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const lower = c | 0x20;
  if (lower >= 0x61 && lower <= 0x66) return lower - 0x61 + 10;
  return -1;
}

/** Undoes %XX escapes (any case); undefined when an escape is broken. */
export function tcpTableDecode(text: Buffer | string): string | undefined {
  const bytes = typeof text === 'string' ? Buffer.from(text) : text;
  if (!bytes.includes(0x25)) return bytes.toString('utf8');
  const out = Buffer.alloc(bytes.length);
  let length = 0;
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i]!;
    if (c !== 0x25) {
      out[length++] = c;
      continue;
    }
    const high = hexValue(bytes[i + 1] ?? -1);
    const low = hexValue(bytes[i + 2] ?? -1);
    if (high < 0 || low < 0) return undefined;
    out[length++] = high * 16 + low;
    i += 2;
  }
  return out.subarray(0, length).toString('utf8');
}

/** Escapes '%', white space, control and non-ASCII bytes as %XX (upper-case hex). */
export function tcpTableEncode(text: string): string {
  if (/^[\x21-\x24\x26-\x7e]*$/.test(text)) return text;
  let out = '';
  for (const byte of Buffer.from(text)) {
    out += byte > 0x20 && byte < 0x7f && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

export function tcpTableReply(result: LookupResult): string {
  switch (result.kind) {
    case 'found':
      return `200 ${tcpTableEncode(result.value)}\n`;
    case 'notfound':
    case 'perm':
      return `500 ${tcpTableEncode(result.reason)}\n`;
    case 'temp':
      return `400 ${tcpTableEncode(result.reason)}\n`;
  }
}

export interface TcpTableServerOptions extends LookupServerOptions {
  maxLineOctets?: number;
}

export class TcpTableServer extends LookupServer {
  private readonly maxLineOctets: number;

  constructor(private readonly map: LookupMap, options: TcpTableServerOptions = {}) {
    super({ idleTimeoutMs: 1_800_000, ...options });
    this.maxLineOctets = options.maxLineOctets ?? TCP_TABLE_LIMITS.lineOctets;
  }

  protected attach(socket: net.Socket): void {
    let pending: Buffer = NOTHING;
    const refuse = (reason: string, input: Buffer) => this.refuse(socket, '500 Invalid request\n', reason, input, reason === NOT_GET ? netstringHint(input) : undefined);
    socket.on('data', (chunk: Buffer) => {
      this.arrived(socket);
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      let start = 0;
      for (let newline = pending.indexOf(0x0a); newline >= 0; newline = pending.indexOf(0x0a, start)) {
        let end = newline;
        if (end > start && pending[end - 1] === 0x0d) end--;
        const line = pending.subarray(start, end);
        start = newline + 1;
        if (line.length > this.maxLineOctets) return refuse(`line longer than ${this.maxLineOctets} octets`, line);
        if (!isGetRequest(line)) return refuse(NOT_GET, line);
        const key = tcpTableDecode(line.subarray(4));
        if (key === undefined) return refuse('broken %-escape', line);
        this.stats.requests++;
        this.send(socket, tcpTableReply(this.lookup(this.map, key)));
      }
      // The usual chunk is whole lines: nothing left over, nothing to copy.
      const linesEnded = start > 0;
      if (start === pending.length) pending = NOTHING;
      else if (start > 0) pending = Buffer.from(pending.subarray(start));
      // Refused now, not at its line end: a line that cannot be a request need not be waited for.
      if (!mayBeGetRequest(pending)) return refuse(NOT_GET, pending);
      // A CR at the end may be the line end's, its LF still to come: like that of a whole line, it does not count.
      if (pending.length - (pending[pending.length - 1] === 0x0d ? 1 : 0) > this.maxLineOctets) return refuse(`line longer than ${this.maxLineOctets} octets`, pending);
      this.unfinished(socket, pending.length, linesEnded);
    });
  }
}
