/**
 * NAME
 *   rewrite/lookup - lookup maps and the TCP/UNIX server shared by the socketmap and tcp_table services
 *
 * DESCRIPTION
 *   A LookupMap answers one key synchronously with found / notfound / temp / perm, the four
 *   outcomes Postfix's table protocols can carry. LookupServer owns what both protocol servers
 *   need alike: listening on HOST:PORT or a UNIX socket, a connection limit, an idle timeout,
 *   back-pressure (a client that does not read its replies is not read from), counters, a UNIX
 *   socket's mode (socketMode, default 0660: Postfix connects as user postfix), and the
 *   rule that no input and no fault in a map ever takes the process down: a map that throws
 *   answers temp ("Internal error."), a socket error closes that one connection. Every key is an
 *   address, and no address has a control character or an octet that is not UTF-8 (RFC 5321
 *   §4.1.2, RFC 6531): such a key is answered NOTFOUND ("Bad characters in key.", leave it
 *   alone) without asking the map, which would otherwise sign it and give it back on reversal.
 *
 *   Refused requests (their framing or syntax: the connection is closed), requests left
 *   unfinished (past arrivalTimeoutMs, or by a client that ended the connection), connections over
 *   the limit (logged once per burst), listener errors and map faults (each once a minute, with
 *   the count left out) are logged, with what, where and why; the client gets the terse reply
 *   postsrsd gives.
 *
 * LIMITS
 *   maxConnections (default 200, postsrsd's connection-limit), idleTimeoutMs (default 30 s,
 *   postsrsd's keep-alive; Postfix reconnects as needed). arrivalTimeoutMs (default 10 s, as the
 *   policy service's): a request must arrive whole within as long of its first octets, or the
 *   connection is closed without a reply and logged. Every octet restarts the idle timer, so
 *   without it a client sending an octet every 29 s held a connection slot for as long as a
 *   request may be large (100000 octets a socketmap reads past: a month); 200 such clients took
 *   the service from Postfix.
 */

import net from 'node:net';
import { describeError } from '../core/errors.js';
import { DEFAULT_IDLE_POLL_MICROS, IdlePoller, type IdlePollStats } from '../core/idle-poll.js';
import { RepeatCollapser } from '../core/log.js';
import { DEFAULT_SOCKET_MODE, boundAddress, formatListenAddress, listenOn, remoteEnd, removeStaleSocket, type ListenAddress } from '../core/listen.js';

export type LookupResult =
  | { kind: 'found'; value: string }
  | { kind: 'notfound'; reason: string }
  | { kind: 'temp'; reason: string }
  | { kind: 'perm'; reason: string };

export type LookupMap = (key: string) => LookupResult;


export interface LookupServerOptions {
  maxConnections?: number;
  idleTimeoutMs?: number;
  /** Longest poll after an answer, in microseconds (core/idle-poll); 0 never polls. */
  idlePollMicros?: number;
  /** One poller for every listener of a process (then idlePollMicros is not used). */
  poller?: IdlePoller;
  /** Where refused requests, refused connections, listener errors and map faults are told (default: nowhere). */
  log?: LookupLog;
  /** Names the listener in those lines, e.g. "socketmap" or "tcp_table forward". */
  label?: string;
  /** Mode of a UNIX socket (default DEFAULT_SOCKET_MODE, 0o660). */
  socketMode?: number;
  /** How long a request may take to arrive whole, from its first octets (default LOOKUP_ARRIVAL_TIMEOUT_MS). */
  arrivalTimeoutMs?: number;
}

export interface LookupLog {
  info(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
}

/** Postfix writes a request at once; ten seconds is a slow network, more is a client holding a slot. */
const LOOKUP_ARRIVAL_TIMEOUT_MS = 10_000;

/** How long a refused client has to read the reply and close before its socket is destroyed. */
const REFUSED_LINGER_MS = 2_000;

const QUIET: LookupLog = { info: () => undefined, warn: () => undefined };

/** C0 controls, DEL, and U+FFFD, which stands for octets that were not UTF-8. */
// eslint-disable-next-line no-control-regex -- control characters are what it looks for
const NOT_IN_ADDRESSES = /[\x00-\x1f\x7f\ufffd]/;

export interface LookupServerStats {
  connections: number;
  requests: number;
  /** Requests refused for their framing or syntax (the connection is closed after each). */
  protocolErrors: number;
  /** Maps that threw; answered as temporary errors. */
  mapFaults: number;
}

/**
 * Runs a map, turning a thrown fault into a temporary error so the server never dies of it.
 * onFault is told the fault: the client sees only "Internal error.".
 */
function safeLookup(map: LookupMap, key: string, stats: LookupServerStats, onFault?: (err: unknown) => void): LookupResult {
  if (NOT_IN_ADDRESSES.test(key)) return { kind: 'notfound', reason: 'Bad characters in key.' };
  try {
    return map(key);
  } catch (err) {
    stats.mapFaults++;
    onFault?.(err);
    return { kind: 'temp', reason: 'Internal error.' };
  }
}

export abstract class LookupServer {
  readonly stats: LookupServerStats = { connections: 0, requests: 0, protocolErrors: 0, mapFaults: 0 };
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private readonly idleTimeoutMs: number;
  /** Keeps the loop turning for a moment after an answer, so the client's next request wakes nothing. */
  private readonly poller: IdlePoller;
  /** When each connection's latest answer went out, until its next request (core/idle-poll). */
  private readonly answeredAt = new WeakMap<net.Socket, number>();
  private readonly log: LookupLog;
  private readonly label: string;
  private readonly socketMode: number;
  private readonly arrivalTimeoutMs: number;
  /** The UNIX socket listened on, if that is what it listens on. */
  private socketPath: string | undefined;
  /** Connections with a request begun and not yet whole: the timer bounding the wait, and its octets so far. */
  private readonly arrivals = new Map<net.Socket, { timer: NodeJS.Timeout; octets: number }>();
  /** Connections refused in the current burst over maxConnections. */
  private dropped = 0;
  private readonly errorLines = new RepeatCollapser(60_000);

  constructor(options: LookupServerOptions = {}) {
    this.idleTimeoutMs = options.idleTimeoutMs ?? 30_000;
    this.poller = options.poller ?? new IdlePoller({ maxMicros: options.idlePollMicros ?? DEFAULT_IDLE_POLL_MICROS });
    this.log = options.log ?? QUIET;
    this.label = options.label ?? 'lookup service';
    this.socketMode = options.socketMode ?? DEFAULT_SOCKET_MODE;
    this.arrivalTimeoutMs = options.arrivalTimeoutMs ?? LOOKUP_ARRIVAL_TIMEOUT_MS;
    this.server = net.createServer((socket) => this.accept(socket));
    const maxConnections = options.maxConnections ?? 200;
    this.server.maxConnections = maxConnections;
    this.server.on('drop', (peer) => {
      if (this.dropped++ === 0) this.log.warn({ listener: this.label, maxConnections, remote: peer ? remoteEnd(peer, this.socketPath) : undefined }, 'too many connections; refusing new ones until some close');
    });
  }

  /** What polling after answers caught and cost (core/idle-poll). */
  get idlePoll(): IdlePollStats {
    return this.poller.stats;
  }

  /** Installs the protocol on a new connection (its data and end handlers). */
  protected abstract attach(socket: net.Socket): void;

  /**
   * safeLookup with its fault logged, once a minute per error (a broken map fails every
   * lookup alike): Postfix only defers, and the error would otherwise be seen nowhere.
   */
  protected lookup(map: LookupMap, key: string): LookupResult {
    return safeLookup(map, key, this.stats, (err) => {
      const error = describeError(err);
      this.warnOnceAMinute(`map: ${error}`, { error }, 'lookup map failed; answered as a temporary error');
    });
  }

  /** A warning naming this listener, written once a minute per key (RepeatCollapser), with the count of the repeats left out. */
  protected warnOnceAMinute(key: string, fields: Record<string, unknown>, message: string): void {
    const repeats = this.errorLines.admit(key, Date.now());
    if (repeats) this.log.warn({ listener: this.label, ...fields, ...repeats }, message);
  }

  private accept(socket: net.Socket): void {
    if (this.dropped > 0) {
      this.log.info({ listener: this.label, refused: this.dropped }, 'accepting connections again');
      this.dropped = 0;
    }
    this.stats.connections++;
    this.sockets.add(socket);
    socket.setNoDelay(true);
    socket.setTimeout(this.idleTimeoutMs, () => socket.destroy());
    socket.on('error', () => socket.destroy());
    socket.on('end', () => {
      // Unsaid, a request typed by hand without its line end or comma got no answer and no reason.
      const waiting = this.arrivals.get(socket);
      if (waiting) this.log.info({ listener: this.label, remote: remoteEnd(socket, this.socketPath), unfinishedOctets: waiting.octets }, 'client ended the connection in the middle of a request; dropped without a reply');
    });
    socket.on('close', () => {
      this.sockets.delete(socket);
      this.stopArrivalWait(socket);
    });
    socket.on('drain', () => {
      // Reading waited for the client to read its replies: that time is not the rest of a request's to count.
      this.arrivals.get(socket)?.timer.refresh();
      socket.resume();
    });
    this.attach(socket);
  }

  /**
   * Call after each chunk with the octets of the request not yet whole (0: none unfinished) and
   * whether that request began in this chunk (one before it ended there). Its first octets start
   * the wait for the rest; when that outlasts arrivalTimeoutMs the connection is logged and
   * closed without a reply.
   */
  protected unfinished(socket: net.Socket, octets: number, begunInChunk: boolean): void {
    if (octets === 0 || socket.writableEnded) {
      this.stopArrivalWait(socket);
      return;
    }
    const waiting = this.arrivals.get(socket);
    if (waiting) {
      waiting.octets = octets;
      if (begunInChunk) waiting.timer.refresh();
      return;
    }
    const timer = setTimeout(() => {
      const unfinishedOctets = this.arrivals.get(socket)?.octets;
      this.arrivals.delete(socket);
      this.log.warn({ listener: this.label, remote: remoteEnd(socket, this.socketPath), unfinishedOctets, arrivalTimeoutMs: this.arrivalTimeoutMs }, 'request not complete in time; closing the connection');
      socket.destroy();
    }, this.arrivalTimeoutMs);
    this.arrivals.set(socket, { timer, octets });
  }

  private stopArrivalWait(socket: net.Socket): void {
    const waiting = this.arrivals.get(socket);
    if (!waiting) return;
    clearTimeout(waiting.timer);
    this.arrivals.delete(socket);
  }

  /**
   * A request refused for its framing or syntax: counted and logged (what, from where, why, and
   * the start of the chunk it came in), the reply sent, and our end of the connection closed.
   * What the client sends afterwards is read and dropped, never answered: a client that kept
   * its half open could otherwise have every further request answered, and logged. (Dropped,
   * not left unread: closing a socket with unread input resets it, and the client could lose
   * the reply.) It then has REFUSED_LINGER_MS to go before the socket is destroyed. `hint`,
   * when given, is what the administrator should change (a main.cf line that names the listener
   * with the other protocol's table type).
   */
  protected refuse(socket: net.Socket, reply: string, reason: string, input: Buffer, hint?: string): void {
    this.stats.protocolErrors++;
    const start = input.subarray(0, 64).toString('latin1');
    this.log.warn({ listener: this.label, remote: remoteEnd(socket, this.socketPath), reason, input: JSON.stringify(start), ...(hint === undefined ? {} : { hint }) }, 'request refused; closing the connection');
    this.stopArrivalWait(socket);
    socket.removeAllListeners('data');
    socket.removeAllListeners('drain');
    socket.on('data', () => undefined);
    socket.resume();
    socket.end(reply);
    setTimeout(() => socket.destroy(), REFUSED_LINGER_MS).unref();
  }

  /** Writes replies and stops reading while the client is not reading them. */
  protected send(socket: net.Socket, data: string | Buffer): void {
    if (!socket.writable) return;
    if (!socket.write(data)) socket.pause();
    const at = this.poller.answered();
    if (at !== undefined) this.answeredAt.set(socket, at);
  }

  /** Call when a connection's request arrives: the idle poll learns the gap since its last answer. */
  protected arrived(socket: net.Socket): void {
    this.poller.arrived(this.answeredAt.get(socket));
    this.answeredAt.delete(socket);
  }

  /** Resolves with the bound address (HOST:PORT with the real port, or the socket path). */
  async listen(target: ListenAddress): Promise<ListenAddress> {
    if (target.kind === 'unix') this.socketPath = target.path;
    // Not unlinked blindly: a second `rewrite serve` on the same path cut the running one off from Postfix.
    if (target.kind === 'unix') await removeStaleSocket(target.path);
    await listenOn(this.server, target, formatListenAddress(target), this.socketMode);
    // From now on an error of the listener (EMFILE while accepting, for one) is logged; it must
    // not end the process. (listen() reports its own failure to its caller.)
    this.server.on('error', (err) => {
      // Out of descriptors, accept fails for every waiting connection: one line a minute per error.
      const error = describeError(err);
      this.warnOnceAMinute(error, { error }, 'listener error');
    });
    return boundAddress(this.server) ?? target;
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const socket of this.sockets) socket.destroy();
    await closed;
  }
}
