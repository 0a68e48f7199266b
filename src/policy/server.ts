/**
 * NAME
 *   policy/server - the Postfix policy delegation server behind `callout serve`
 *
 * DESCRIPTION
 *   PolicyServer listens on one TCP endpoint ('host:port', '[v6]:port') or one UNIX socket (an
 *   absolute path), decodes requests with PolicyRequestDecoder and answers each with the action
 *   its handler returns. It listens only where it is told: choosing a default endpoint is the
 *   caller's business.
 *
 *   Postfix keeps a policy connection open across SMTP sessions and sends one request at a time,
 *   waiting for each answer. Requests of one connection are therefore handled one at a time and
 *   answered in order; a client that pipelines anyway is served in order too, and reading pauses
 *   while a request is being handled, so a connection never queues more than one chunk's worth of
 *   requests. A client that half-closes after writing still gets its answers; a request it left
 *   unfinished (no empty line after it) is logged and dropped.
 *
 *   When something goes wrong the protocol requires the server to log and disconnect without a
 *   reply; Postfix then retries, and finally applies its smtpd_policy_service_default_action.
 *   That is what happens on a malformed request, a handler that throws or returns an action that
 *   cannot be sent, and a handler that does not answer within requestTimeoutMs. Each case is
 *   logged with the connection id, its remote end and, when known, the request's client_address;
 *   other connections are not disturbed.
 *
 *   A UNIX socket path left behind by an earlier run is removed before binding, but only if it
 *   is a socket and a connection to it is refused (a live server there, even one too busy to
 *   take a connection, is an error, not something to steal from). The socket gets mode
 *   socketMode (default 0660) and is removed on close. A TCP listener other hosts can reach
 *   (0.0.0.0, ::, a public address) and a socket every local user may write (connect to) are
 *   logged as warnings: nothing here asks who connects.
 *
 *   The idle, request, arrival and drain timers run on the Timers given (core/clock: the
 *   monotonic clock, which a step of the wall clock does not move), so tests move them.
 *
 * STANDARDS
 *   Postfix SMTPD_POLICY_README; smtpd_policy_service_max_idle (300 s) and
 *   smtpd_policy_service_timeout (100 s) give the default idle and request timeouts.
 *
 * LIMITS
 *   maxConnections (default 1000): a connection over the limit is accepted and closed at once, and
 *   logged once per burst. It is capped (logged at listen) so that the open-files limit keeps
 *   half its descriptors, at most 256, for the store, DNS, callouts and metrics: out of
 *   descriptors, libuv closes the connections it cannot accept without telling Node (nothing
 *   would be logged) and c-ares fails every lookup (as ECONNREFUSED).
 *   idleTimeoutMs (default 300 000): a connection that sends nothing while no request is being
 *   handled is closed, and a connection being closed is destroyed when its
 *   client has not read the answers queued before the end within as long. requestTimeoutMs
 *   (default 100 000). arrivalTimeoutMs (default 10 000): a request must arrive whole within
 *   as long of its first octets (while reading waits for us, the wait starts again), or the
 *   connection is closed without a reply; every octet restarts the idle timer, so without it a
 *   client sending an octet a minute held a slot for as long as a request may be large. The
 *   decoder limits (line, attributes, request size) are passed through.
 *
 * ERRORS
 *   The constructor throws ConfigError for a listen address it cannot read; listen() rejects
 *   with ConfigError when the endpoint cannot be bound (in use, no permission, a path that is not
 *   a socket), with ListenUnavailableError when its address is not there yet (EADDRNOTAVAIL,
 *   EAI_AGAIN: core/listen), and with CalloutError INTERNAL when called twice.
 */

import { readFileSync } from 'node:fs';
import net from 'node:net';
import { DEFAULT_SOCKET_MODE, boundAddress, formatListenAddress, listenOn, listenRefusal, openToAllUsers, parseListenAddress, reachableFromNetwork, remoteEnd, removeIfSocket, removeStaleSocket } from '../core/listen.js';
import { octalMode } from '../core/files.js';
import type { ListenAddress } from '../core/listen.js';

export { parseListenAddress, type ListenAddress };
import { systemTimers, type TimerHandle, type Timers } from '../core/clock.js';
import { CalloutError, ConfigError, describeError } from '../core/errors.js';
import { DEFAULT_IDLE_POLL_MICROS, IdlePoller, type IdlePollStats } from '../core/idle-poll.js';
import { PolicyRequestDecoder, encodeResponse, type PolicyDecodeEvent, type PolicyLimits } from './protocol.js';
import type { StageLogger } from './types.js';

export interface ConnectionInfo {
  readonly id: number;
  /** The policy client: 'address:port', '[v6]:port', or 'unix:PATH'. */
  readonly remote: string;
  /** Requests received on this connection so far, the current one included. */
  readonly requests: number;
}

/**
 * Returns the access(5) action text, e.g. 'DUNNO' or '550 5.1.0 text': at once when it is known
 * at once (no promise, no extra turn of the event loop), else as a promise.
 */
export type PolicyHandler = (attributes: Record<string, string>, conn: ConnectionInfo) => string | Promise<string>;

export interface PolicyServerLimits extends PolicyLimits {
  maxConnections?: number;
  /**
   * Descriptors this process may open (RLIMIT_NOFILE's soft limit); read from /proc/self/limits
   * when left out, undefined where it cannot be read (no cap).
   */
  openFilesLimit?: number;
  idleTimeoutMs?: number;
  requestTimeoutMs?: number;
  /** How long a request may take to arrive whole, from its first octets. */
  arrivalTimeoutMs?: number;
}

export interface PolicyServerOptions {
  /** 'host:port', '[v6]:port', or an absolute UNIX socket path. */
  listen: string;
  handler: PolicyHandler;
  limits?: PolicyServerLimits;
  /** Mode of a UNIX socket (default 0o660). */
  socketMode?: number;
  /**
   * The listening socket belongs to a node:cluster primary that hands connections to several
   * servers like this one: a UNIX socket path is then the primary's to clear and remove.
   */
  sharedListener?: boolean;
  /** Longest poll after answering, in microseconds (core/idle-poll); 0 never polls. */
  idlePollMicros?: number;
  /** The idle, request, arrival and drain timers (default systemTimers); tests move them. */
  timers?: Timers;
  log: StageLogger;
}


export const DEFAULT_POLICY_MAX_CONNECTIONS = 1000;
export const DEFAULT_POLICY_IDLE_TIMEOUT_MS = 300_000;
export const DEFAULT_POLICY_REQUEST_TIMEOUT_MS = 100_000;
/** Postfix writes a request at once; ten seconds is a slow network, more is a client holding a slot. */
export const DEFAULT_POLICY_ARRIVAL_TIMEOUT_MS = 10_000;
export const DEFAULT_POLICY_DRAIN_MS = 5_000;


/** Reads a listen address; the configuration schema can use it to validate early. */
interface ServerContext {
  readonly outbox: Outbox;
  readonly poller: IdlePoller;
  readonly handler: PolicyHandler;
  readonly log: StageLogger;
  readonly decoderLimits: PolicyLimits;
  readonly idleTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly arrivalTimeoutMs: number;
  readonly timers: Timers;
}

export class PolicyServer {
  private readonly endpoint: ListenAddress;
  private readonly listenText: string;
  private readonly context: ServerContext;
  private readonly maxConnections: number;
  /** The configured maxConnections and the open-files limit, when that limit lowered it. */
  private readonly capped: { maxConnections: number; openFilesLimit: number } | undefined;
  private readonly socketMode: number;
  private readonly sharedListener: boolean;
  private readonly open = new Set<PolicyConnection>();
  private server: net.Server | undefined;
  private boundAddress: string | undefined;
  /** Set once this server has bound its UNIX socket: only then is the path ours to remove. */
  private ownsSocketPath = false;
  private nextConnectionId = 1;
  /** Connections refused in the current burst over maxConnections. */
  private refused = 0;
  private closing: Promise<void> | undefined;

  constructor(options: PolicyServerOptions) {
    const parsed = parseListenAddress(options.listen);
    if (!parsed.ok) throw new ConfigError(`policy listen address: ${listenRefusal(options.listen, parsed.reason)}`);
    this.endpoint = parsed.value;
    this.listenText = options.listen;
    const limits = options.limits ?? {};
    const configured = Math.max(1, limits.maxConnections ?? DEFAULT_POLICY_MAX_CONNECTIONS);
    const openFiles = 'openFilesLimit' in limits ? limits.openFilesLimit : readOpenFilesLimit();
    this.maxConnections = openFiles === undefined ? configured : Math.min(configured, Math.max(1, openFiles - Math.min(256, Math.floor(openFiles / 2))));
    this.capped = this.maxConnections < configured && openFiles !== undefined ? { maxConnections: configured, openFilesLimit: openFiles } : undefined;
    this.socketMode = options.socketMode ?? DEFAULT_SOCKET_MODE;
    this.sharedListener = options.sharedListener ?? false;
    const poller = new IdlePoller({ maxMicros: options.idlePollMicros ?? DEFAULT_IDLE_POLL_MICROS });
    this.context = {
      outbox: new Outbox(poller),
      poller,
      handler: options.handler,
      log: options.log,
      decoderLimits: { maxLineLength: limits.maxLineLength, maxAttributes: limits.maxAttributes, maxRequestSize: limits.maxRequestSize },
      idleTimeoutMs: limits.idleTimeoutMs ?? DEFAULT_POLICY_IDLE_TIMEOUT_MS,
      requestTimeoutMs: limits.requestTimeoutMs ?? DEFAULT_POLICY_REQUEST_TIMEOUT_MS,
      arrivalTimeoutMs: limits.arrivalTimeoutMs ?? DEFAULT_POLICY_ARRIVAL_TIMEOUT_MS,
      timers: options.timers ?? systemTimers,
    };
  }

  /** What polling after answers caught and cost (core/idle-poll). */
  get idlePoll(): IdlePollStats {
    return this.context.poller.stats;
  }

  /** A reloaded policy.idlePollMicros. */
  setIdlePollMicros(maxMicros: number): void {
    this.context.poller.setMaxMicros(maxMicros);
  }

  /** Open connections. */
  get connections(): number {
    return this.open.size;
  }

  /** The bound endpoint ('127.0.0.1:10040', '[::1]:10040', '/path'), once listening. */
  get address(): string | undefined {
    return this.boundAddress;
  }

  async listen(): Promise<{ address: string }> {
    if (this.server) throw new CalloutError('INTERNAL', 'PolicyServer.listen called twice');
    const server = net.createServer({ allowHalfOpen: true }, (socket) => this.accept(socket));
    this.server = server;
    if (this.endpoint.kind === 'unix' && !this.sharedListener) await removeStaleSocket(this.endpoint.path);
    // Named by its key, as the metrics listener is: "cannot listen on 127.0.0.1:10040" alone did
    // not say which of the two listeners had the port taken.
    await listenOn(server, this.endpoint, `${this.listenText} (policy.listen)`, this.socketMode);
    server.on('error', (err) => this.context.log.error({ listen: this.listenText, error: describeError(err) }, 'policy listener failed'));
    if (this.endpoint.kind === 'unix') {
      this.ownsSocketPath = !this.sharedListener;
      if (openToAllUsers(this.socketMode)) {
        this.context.log.warn(
          { listen: this.listenText, socketMode: octalMode(this.socketMode) },
          'policy socket is writable by all users: any local user can have callout probe addresses of its choosing; give policy.socketMode "0660" and the socket a group Postfix is in',
        );
      }
    }
    const bound = boundAddress(server);
    if (!bound) throw new CalloutError('INTERNAL', 'policy listener has no address after listening');
    this.boundAddress = formatListenAddress(bound);
    if (this.capped) {
      this.context.log.warn(
        { listen: this.boundAddress, ...this.capped, acceptedConnections: this.maxConnections },
        'policy.maxConnections is more than the open-files limit (ulimit -n) leaves room for; taking fewer connections',
      );
    }
    if (reachableFromNetwork(bound)) {
      this.context.log.warn(
        { listen: this.boundAddress },
        'policy listener is reachable from other hosts: any of them can have callout probe addresses of its choosing (and, with policy.acceptTestTime, move its clock); listen on 127.0.0.1, [::1] or a UNIX socket, or firewall the port to the mail servers',
      );
    }
    this.context.log.info({ listen: this.boundAddress }, 'policy server listening');
    return { address: this.boundAddress };
  }

  /** Stops accepting, lets requests being handled finish for up to drainMs, then closes the rest. */
  close(options: { drainMs?: number } = {}): Promise<void> {
    this.closing ??= this.shutDown(options.drainMs ?? DEFAULT_POLICY_DRAIN_MS);
    return this.closing;
  }

  private async shutDown(drainMs: number): Promise<void> {
    const server = this.server;
    if (!server) return;
    const listenerClosed = new Promise<void>((resolve) => server.close(() => resolve()));
    const connections = [...this.open];
    for (const connection of connections) connection.shutDown();
    const allClosed = Promise.all(connections.map((connection) => connection.closed));
    const { timers } = this.context;
    let drainTimer: TimerHandle | undefined;
    const drained = await Promise.race([
      allClosed.then(() => true),
      new Promise<boolean>((resolve) => {
        drainTimer = timers.setTimeout(() => resolve(false), drainMs);
      }),
    ]);
    timers.clearTimeout(drainTimer);
    if (!drained) {
      this.context.log.warn({ listen: this.boundAddress, connections: this.open.size, drainMs }, 'policy requests still running at shutdown; closing their connections');
      for (const connection of connections) connection.destroy();
      await allClosed;
    }
    await listenerClosed;
    if (this.endpoint.kind === 'unix' && this.ownsSocketPath) await removeIfSocket(this.endpoint.path);
    // A start that could not bind closes too: "policy server closed" there told of a server that never listened.
    if (this.boundAddress !== undefined) this.context.log.info({ listen: this.boundAddress }, 'policy server closed');
  }

  private accept(socket: net.Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    const remote = remoteEnd(socket, this.endpoint.kind === 'unix' ? this.endpoint.path : undefined);
    if (this.open.size >= this.maxConnections) {
      socket.destroy();
      this.refused += 1;
      if (this.refused === 1) {
        this.context.log.warn({ remote, maxConnections: this.maxConnections }, 'too many policy connections; closing new ones at once');
      }
      return;
    }
    if (this.refused > 0) {
      this.context.log.info({ refused: this.refused, maxConnections: this.maxConnections }, 'accepting policy connections again');
      this.refused = 0;
    }
    if (this.endpoint.kind === 'tcp') socket.setNoDelay(true);
    const connection = new PolicyConnection(this.nextConnectionId, remote, socket, this.context);
    this.nextConnectionId += 1;
    this.open.add(connection);
    void connection.closed.then(() => this.open.delete(connection));
  }
}

/** RLIMIT_NOFILE's soft limit (Node has no getrlimit); undefined when unlimited or not Linux. */
function readOpenFilesLimit(): number | undefined {
  try {
    const match = /^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Answers written together at the end of the event loop's turn (setImmediate), in order. Every
 * write to a loopback socket wakes the process at the other end; Postfix's policy clients
 * (and a load generator) then sleep and wake once per answer, and on a virtual machine each
 * wake-up costs more than the decision. Written back to back, the answers of one turn wake the
 * other side once, and it asks its next questions together. The delay is the rest of the
 * current turn: microseconds.
 */
class Outbox {
  private pending: Array<{ socket: net.Socket; reply?: Buffer; to?: Answered }> = [];

  constructor(private readonly poller: IdlePoller) {}

  /** Queues an answer to `to`, which learns when it went out (for the idle poll). */
  write(socket: net.Socket, reply: Buffer, to: Answered): void {
    this.queue({ socket, reply, to });
  }

  /** Ends the socket once what was queued for it before is written. */
  end(socket: net.Socket): void {
    this.queue({ socket });
  }

  private queue(entry: { socket: net.Socket; reply?: Buffer; to?: Answered }): void {
    this.pending.push(entry);
    if (this.pending.length === 1) setImmediate(() => this.flush());
  }

  private flush(): void {
    const batch = this.pending;
    this.pending = [];
    let answered: Answered[] | undefined;
    for (const { socket, reply, to } of batch) {
      if (socket.destroyed || socket.writableEnded) continue;
      if (reply) {
        socket.write(reply);
        (answered ??= []).push(to!);
      } else {
        socket.end(() => socket.destroy());
      }
    }
    if (!answered) return;
    const at = this.poller.answered();
    for (const connection of answered) connection.answeredAt = at;
  }
}

/** A connection that got an answer: when it went out (core/idle-poll measures the gap to the next request from it). */
interface Answered {
  answeredAt: number | undefined;
}

/** One policy connection: decodes, hands requests to the handler one at a time, answers in order. */
class PolicyConnection implements Answered {
  readonly closed: Promise<void>;
  answeredAt: number | undefined;
  private readonly decoder: PolicyRequestDecoder;
  private readonly queue: PolicyDecodeEvent[] = [];
  private requests = 0;
  private handling = false;
  /** Reading is paused because requests arrived while one was being handled. */
  private paused = false;
  /** Reading is paused until the answers written so far drain. */
  private draining = false;
  /** No more requests will be handled; the socket is being (or has been) ended. */
  private finishing = false;
  /** The request being handled ran out of time: its answer, if it ever comes, is dropped. */
  private abandoned = false;
  private peerEnded = false;
  /** client_address of the request being handled, for the log. */
  private handledClient: string | undefined;
  /**
   * Both timers live as long as the connection and are re-armed with refresh(), which neither
   * allocates nor touches a promise: at thousands of requests a second, a timer and a
   * Promise.race per request were a visible part of the cost of an answer. Each callback checks
   * the connection's state when it fires, so a timer left running never acts out of turn.
   */
  private readonly idleTimer: TimerHandle;
  private readonly requestTimer: TimerHandle;
  /**
   * When the first octets of a request still unfinished came (context.timers), and the timer
   * that bounds the wait for the rest: made at the first such request, which Postfix never
   * sends (it writes a request at once), so most connections have none.
   */
  private partialSince: number | undefined;
  private arrivalTimer: TimerHandle | undefined;

  constructor(
    private readonly id: number,
    private readonly remote: string,
    private readonly socket: net.Socket,
    private readonly context: ServerContext,
  ) {
    this.decoder = new PolicyRequestDecoder(context.decoderLimits);
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    this.idleTimer = context.timers.setTimeout(() => this.idleExpired(), context.idleTimeoutMs);
    this.requestTimer = context.timers.setTimeout(() => this.requestExpired(), context.requestTimeoutMs);
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('end', () => {
      this.peerEnded = true;
      // Unsaid, a request typed by hand without its closing empty line got no answer and no reason.
      if (!this.finishing && this.decoder.hasUnfinishedRequest) {
        this.context.log.info({ ...this.fields(), unfinishedBytes: this.decoder.requestBytes }, 'policy client ended the connection in the middle of a request (one ends with an empty line); dropped without a reply');
      }
      if (!this.handling) this.finish();
    });
    socket.on('error', (err) => this.context.log.info({ ...this.fields(), error: describeError(err) }, 'policy connection error'));
    socket.once('close', () => {
      this.finishing = true;
      this.stopTimers();
    });
  }

  /** Server shutdown: answer the request being handled, if any, then close. */
  shutDown(): void {
    this.queue.length = 0;
    this.socket.pause();
    if (!this.handling) this.finish();
    this.finishing = true;
  }

  destroy(): void {
    this.finishing = true;
    this.socket.destroy();
  }

  private receive(chunk: Buffer): void {
    if (this.finishing) return;
    this.context.poller.arrived(this.answeredAt);
    this.answeredAt = undefined;
    this.idleTimer.refresh();
    const events = this.decoder.push(chunk);
    this.watchArrival();
    // A client that pipelines without reading its answers: reading waits until they drain, so
    // the answers it leaves unread stay within the socket's buffers.
    if (this.socket.writableNeedDrain) this.waitForDrain();
    if (events.length === 0) return;
    for (const event of events) this.queue.push(event);
    if (!this.handling) {
      this.work();
      return;
    }
    // A client that pipelines is served in order; meanwhile reading waits, so that it can queue
    // no more than one chunk's worth of requests.
    if (!this.paused) {
      this.paused = true;
      this.socket.pause();
    }
  }

  private waitForDrain(): void {
    if (this.draining) return;
    this.draining = true;
    this.socket.pause();
    this.socket.once('drain', () => {
      this.draining = false;
      if (this.partialSince !== undefined) this.partialSince = this.context.timers.now();
      if (!this.paused && !this.finishing) this.socket.resume();
    });
  }

  /** Answers the queued requests in order; an answer that has to be waited for resumes the loop when it comes. */
  private work(): void {
    this.handling = true;
    while (!this.finishing) {
      const event = this.queue.shift();
      if (!event) break;
      if (event.kind === 'error') {
        this.context.log.warn(
          { ...this.fields(event.clientAddress), reason: event.reason, detail: event.detail },
          'malformed policy request; closing the connection without a reply',
        );
        this.finish();
        break;
      }
      const pending = this.answer(event.attributes);
      if (pending) {
        // answer() settles its own promise's faults; should even that fail (a logger that
        // throws), the connection ends rather than the process.
        pending.then(
          () => this.work(),
          (err: unknown) => {
            try {
              this.context.log.error({ ...this.fields(), error: describeError(err) }, 'policy answer failed; closing the connection');
            } catch {
              // The logger is what failed: the connection still ends below.
            }
            this.finish();
            this.work();
          },
        );
        return;
      }
    }
    this.handling = false;
    if (this.finishing || this.peerEnded) {
      this.finish();
      return;
    }
    this.idleTimer.refresh();
    // A request begun while we were busy was not the client's to finish meanwhile: its wait starts now.
    if (this.partialSince !== undefined) this.partialSince = this.context.timers.now();
    if (this.paused) {
      this.paused = false;
      if (!this.draining) this.socket.resume();
    }
  }

  /** Asks the handler; a promise (that never rejects) when the answer has to be waited for. */
  private answer(attributes: Record<string, string>): Promise<void> | undefined {
    this.requests += 1;
    const info: ConnectionInfo = { id: this.id, remote: this.remote, requests: this.requests };
    this.handledClient = attributes['client_address'];
    this.requestTimer.refresh();
    let action: string | Promise<string>;
    try {
      action = this.context.handler(attributes, info);
    } catch (err) {
      this.handlerFailed(attributes['client_address'], err);
      return undefined;
    }
    if (typeof action === 'string') {
      this.reply(attributes, action);
      return undefined;
    }
    return action.then(
      (decided) => this.reply(attributes, decided),
      (err: unknown) => {
        if (!this.abandoned) this.handlerFailed(attributes['client_address'], err);
      },
    );
  }

  private reply(attributes: Record<string, string>, action: string): void {
    // The peer may have gone, or the request may have run out of time; when the server is
    // closing an answer is still owed, since the request was accepted before shutdown began.
    if (this.socket.destroyed || this.abandoned) return;
    let reply: Buffer;
    try {
      reply = encodeResponse(action);
    } catch (err) {
      this.handlerFailed(attributes['client_address'], err);
      return;
    }
    this.context.outbox.write(this.socket, reply, this);
  }

  private handlerFailed(clientAddress: string | undefined, err: unknown): void {
    this.context.log.error(
      { ...this.fields(clientAddress), error: describeError(err) },
      'policy handler failed; closing the connection without a reply',
    );
    this.finish();
  }

  /** The request timer was last armed when the request now being handled (if any) began. */
  private requestExpired(): void {
    if (!this.handling || this.abandoned || this.socket.destroyed) return;
    this.abandoned = true;
    this.context.log.warn(
      { ...this.fields(this.handledClient), timeoutMs: this.context.requestTimeoutMs },
      'policy handler did not answer in time; closing the connection without a reply',
    );
    this.finish();
  }

  /** Starts the wait for the rest of a request whose first octets just came; ends it when none is unfinished. */
  private watchArrival(): void {
    if (!this.decoder.hasUnfinishedRequest) {
      this.partialSince = undefined;
      return;
    }
    if (this.partialSince !== undefined) return;
    this.partialSince = this.context.timers.now();
    if (this.arrivalTimer) this.arrivalTimer.refresh();
    else this.arrivalTimer = this.context.timers.setTimeout(() => this.arrivalExpired(), this.context.arrivalTimeoutMs);
  }

  /**
   * A request that trickles in keeps the idle timer going with every octet: without this
   * bound, one octet every few minutes held a connection slot for months.
   */
  private arrivalExpired(): void {
    if (this.finishing || this.partialSince === undefined) return;
    // Reading waits while a request is handled or answers drain: that time is ours, not the
    // client's, and the wait starts again when reading does (work(), waitForDrain()).
    const now = this.context.timers.now();
    if (this.handling || this.paused || this.draining) this.partialSince = now;
    const left = this.context.arrivalTimeoutMs - (now - this.partialSince);
    if (left > 0) {
      this.arrivalTimer = this.context.timers.setTimeout(() => this.arrivalExpired(), left);
      return;
    }
    this.context.log.warn(
      { ...this.fields(), unfinishedBytes: this.decoder.requestBytes, arrivalTimeoutMs: this.context.arrivalTimeoutMs },
      'policy request not complete in time; closing the connection without a reply',
    );
    this.finish();
  }

  private idleExpired(): void {
    // finish() ended the socket an idle timeout ago and the answers queued before the end are
    // still unread: a client that never reads them would hold the connection for good.
    if (this.socket.writableEnded && !this.socket.destroyed) {
      this.context.log.info({ ...this.fields(), idleTimeoutMs: this.context.idleTimeoutMs }, 'policy client does not read its answers; dropping the connection');
      this.socket.destroy();
      return;
    }
    if (this.finishing) return;
    // While a request runs, the request timer is the one that counts.
    if (this.handling) {
      this.idleTimer.refresh();
      return;
    }
    this.context.log.info({ ...this.fields(), idleTimeoutMs: this.context.idleTimeoutMs, ...(this.decoder.requestBytes > 0 ? { unfinishedBytes: this.decoder.requestBytes } : {}) }, 'closing idle policy connection');
    this.finish();
  }

  /** Ends the connection once what was written is flushed; sends nothing more. */
  private finish(): void {
    this.finishing = true;
    this.queue.length = 0;
    this.context.timers.clearTimeout(this.requestTimer);
    if (this.socket.destroyed || this.socket.writableEnded) return;
    // After the answers still in the outbox, never before them. The end waits for the peer to
    // read those answers; the idle timer bounds the wait.
    this.context.outbox.end(this.socket);
    this.idleTimer.refresh();
  }

  private stopTimers(): void {
    const { timers } = this.context;
    timers.clearTimeout(this.idleTimer);
    timers.clearTimeout(this.requestTimer);
    timers.clearTimeout(this.arrivalTimer);
  }

  private fields(clientAddress?: string): Record<string, unknown> {
    const fields: Record<string, unknown> = { connection: this.id, remote: this.remote, requests: this.requests };
    if (clientAddress !== undefined && clientAddress !== '') fields['client'] = clientAddress;
    return fields;
  }
}
