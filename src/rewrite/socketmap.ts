/**
 * NAME
 *   rewrite/socketmap - Postfix socketmap_table(5) lookup service, compatible with postsrsd 2.x
 *
 * DESCRIPTION
 *   Postfix (>= 2.10) sends `NAME SP KEY` as a netstring and reads one netstring reply:
 *   `OK SP data`, `NOTFOUND SP`, `TEMP SP reason`, `TIMEOUT SP reason` or `PERM SP reason`; the
 *   connection stays open for further requests. The map names are those of postsrsd 2.x,
 *   `forward` and `reverse`, so `socketmap:inet:127.0.0.1:10003:forward` works unchanged, plus
 *   whatever else the caller registers (rewrite/maps: `batv-sign`, `batv-strip`).
 *
 *   As postsrsd: a framing error (bad length, missing ',', an empty request, a line of the old
 *   tcp_table protocol) is answered `PERM Invalid query.` and the connection is closed; an
 *   unknown map name gets `PERM Invalid map.`; requests are answered in order. Both are logged
 *   (an unknown map once a minute per name), a tcp_table line and an unknown map with what to
 *   change in main.cf. Unlike postsrsd, a well-formed request over maxRequestOctets is read
 *   past, not kept, and answered `NOTFOUND Too big.`: Postfix sends addresses of any length (a
 *   header address, a long MAIL FROM), none that long is rewritten, and a PERM would make
 *   Postfix defer the mail.
 *
 * RFC
 *   D. J. Bernstein, "Netstrings" (cr.yp.to/proto/netstrings.txt); Postfix socketmap_table(5).
 *
 * LIMITS
 *   Requests of at most maxRequestOctets (default 1024, postsrsd's buffer) are read; longer ones
 *   up to 100000 octets (the size Postfix allows a reply, and postsrsd a length prefix) are
 *   skipped; a longer length prefix is refused as soon as it has more digits than
 *   that limit needs. A request, skipped or not, must arrive whole within arrivalTimeoutMs of its
 *   first octet (rewrite/lookup). Replies of at most 100000 octets (Postfix's limit) are all this
 *   module ever builds.
 *
 * ERRORS
 *   Nothing in the server throws on input. (The client that tests and benchmarks query it with
 *   is test/support/lookup-clients.)
 */

import net from 'node:net';
import { LookupServer, type LookupMap, type LookupResult, type LookupServerOptions } from './lookup.js';

export const SOCKETMAP_LIMITS = { requestOctets: 1024, skippedRequestOctets: 100_000 } as const;

const NOTHING = Buffer.alloc(0);

export type NetstringEvent = { kind: 'frame'; data: Buffer } | { kind: 'skipped'; length: number } | { kind: 'error'; reason: string };

/**
 * Incremental netstring reader; after an error it yields nothing more. A frame longer than
 * maxLength but not than skipLength (default maxLength) is read past without being kept and
 * reported as skipped.
 */
export class NetstringDecoder {
  private pending: Buffer = NOTHING;
  private failed = false;
  private readonly skipLength: number;
  private readonly maxDigits: number;
  /** The skipped frame's length, its length prefix's octets (the ':' included), and how many of its octets are still to come. */
  private skipping: { length: number; prefix: number; left: number } | undefined;

  constructor(
    private readonly maxLength: number,
    skipLength = maxLength,
  ) {
    this.skipLength = Math.max(maxLength, skipLength);
    this.maxDigits = String(this.skipLength).length;
  }

  /** Octets of the frame begun and not yet whole: held, or read past (a skipped frame's). */
  get unfinishedOctets(): number {
    return this.pending.length + (this.skipping ? this.skipping.prefix + this.skipping.length - this.skipping.left : 0);
  }

  push(chunk: Buffer): NetstringEvent[] {
    if (this.failed) return [];
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const events: NetstringEvent[] = [];
    let offset = 0;
    while (offset < this.pending.length) {
      if (this.skipping) {
        const { length, left } = this.skipping;
        if (this.pending.length - offset <= left) {
          this.skipping.left -= this.pending.length - offset;
          offset = this.pending.length;
          break;
        }
        if (this.pending[offset + left] !== 0x2c) return this.fail(events, 'missing comma');
        this.skipping = undefined;
        events.push({ kind: 'skipped', length });
        offset += left + 1;
        continue;
      }
      let length = 0;
      let cursor = offset;
      for (; cursor < this.pending.length; cursor++) {
        const c = this.pending[cursor]!;
        if (c === 0x3a) break;
        if (c < 0x30 || c > 0x39 || cursor - offset >= this.maxDigits) return this.fail(events, 'bad length');
        // "Extra zeros at the front of [len] are prohibited: [len] begins with 0 exactly when [string] is empty."
        if (cursor > offset && this.pending[offset] === 0x30) return this.fail(events, 'bad length');
        length = length * 10 + (c - 0x30);
      }
      if (cursor === this.pending.length) break;
      if (cursor === offset) return this.fail(events, 'bad length');
      if (length > this.skipLength) return this.fail(events, 'too long');
      if (length > this.maxLength) {
        this.skipping = { length, prefix: cursor + 1 - offset, left: length };
        offset = cursor + 1;
        continue;
      }
      const end = cursor + 1 + length;
      if (end >= this.pending.length) break;
      if (this.pending[end] !== 0x2c) return this.fail(events, 'missing comma');
      events.push({ kind: 'frame', data: this.pending.subarray(cursor + 1, end) });
      offset = end + 1;
    }
    // The usual chunk is whole requests: nothing left over, nothing to copy.
    if (offset === this.pending.length) this.pending = NOTHING;
    else if (offset > 0) this.pending = Buffer.from(this.pending.subarray(offset));
    return events;
  }

  private fail(events: NetstringEvent[], reason: string): NetstringEvent[] {
    this.failed = true;
    this.pending = NOTHING;
    this.skipping = undefined;
    events.push({ kind: 'error', reason });
    return events;
  }
}

/** The netstring of a text, as a string for socket.write (cheaper than building Buffers). */
export function encodeNetstring(text: string): string {
  return `${Buffer.byteLength(text)}:${text},`;
}

/** The socketmap reply text of a lookup result. */
export function socketmapReply(result: LookupResult): string {
  switch (result.kind) {
    case 'found':
      return `OK ${result.value}`;
    case 'notfound':
      return `NOTFOUND ${result.reason}`;
    case 'temp':
      return `TEMP ${result.reason}`;
    case 'perm':
      return `PERM ${result.reason}`;
  }
}

export interface SocketmapServerOptions extends LookupServerOptions {
  maxRequestOctets?: number;
  /** Longer requests up to this many octets are read past and answered NOTFOUND (default 100000). */
  maxSkippedRequestOctets?: number;
}

export class SocketmapServer extends LookupServer {
  private readonly maps: ReadonlyMap<string, LookupMap>;
  private readonly maxRequestOctets: number;
  private readonly maxSkippedRequestOctets: number;

  constructor(maps: Record<string, LookupMap>, options: SocketmapServerOptions = {}) {
    super(options);
    this.maps = new Map(Object.entries(maps));
    this.maxRequestOctets = options.maxRequestOctets ?? SOCKETMAP_LIMITS.requestOctets;
    this.maxSkippedRequestOctets = options.maxSkippedRequestOctets ?? SOCKETMAP_LIMITS.skippedRequestOctets;
  }

  protected attach(socket: net.Socket): void {
    const decoder = new NetstringDecoder(this.maxRequestOctets, this.maxSkippedRequestOctets);
    socket.on('data', (chunk: Buffer) => {
      this.arrived(socket);
      const events = decoder.push(chunk);
      for (const event of events) {
        if (event.kind === 'skipped') {
          this.stats.requests++;
          this.send(socket, encodeNetstring(socketmapReply({ kind: 'notfound', reason: 'Too big.' })));
          continue;
        }
        if (event.kind === 'error' || event.data.length === 0) {
          this.refuse(socket, encodeNetstring('PERM Invalid query.'), event.kind === 'error' ? `netstring: ${event.reason}` : 'empty netstring', chunk, tcpTableHint(chunk));
          return;
        }
        this.stats.requests++;
        this.send(socket, encodeNetstring(socketmapReply(this.answer(event.data.toString('utf8')))));
      }
      this.unfinished(socket, decoder.unfinishedOctets, events.length > 0);
    });
  }

  private answer(request: string): LookupResult {
    const space = request.indexOf(' ');
    const name = space > 0 ? request.slice(0, space) : request;
    const map = space > 0 ? this.maps.get(name) : undefined;
    if (!map) {
      // Postfix defers the mail on PERM and logs the reply; unsaid here, the administrator
      // reading this service's log found nothing (a batv-sign line with no --batv-key-file).
      const asked = JSON.stringify(name.slice(0, 64));
      this.warnOnceAMinute(`unknown map ${asked}`, { map: asked, maps: [...this.maps.keys()] }, 'request for a map this service does not serve; answered PERM Invalid map. (Postfix defers the mail): correct the map name after the socketmap address in main.cf, or give rewrite serve the flags of that map');
      return { kind: 'perm', reason: 'Invalid map.' };
    }
    return this.lookup(map, request.slice(space + 1));
  }
}

/**
 * What to change when a refused request is a tcp_table line (`get KEY`): main.cf names this
 * listener `tcp:`. Otherwise the log said only "netstring: bad length".
 */
function tcpTableHint(chunk: Buffer): string | undefined {
  return chunk.subarray(0, 4).toString('latin1') === 'get '
    ? 'a tcp_table request (get KEY): main.cf names this socketmap listener with tcp:; write socketmap:inet:HOST:PORT:MAP (or socketmap:unix:PATH:MAP), or point tcp: at a --tcp-table listener'
    : undefined;
}
