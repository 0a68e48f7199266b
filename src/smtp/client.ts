/**
 * NAME
 *   smtp/client - one SMTP client connection for callouts, as an explicit state machine
 *
 * DESCRIPTION
 *   SmtpClientSession drives a single dialogue: connect, greeting, EHLO (HELO when EHLO is refused
 *   with a 5xx), STARTTLS when offered and wanted, then MAIL / RCPT / RSET / VRFY one command at a
 *   time, and QUIT.
 *
 *   Pipelining (RFC 2920): when the server advertises PIPELINING, pipeline() sends a group of MAIL,
 *   RCPT and RSET commands (QUIT only last) in one write. The caller then goes on calling mailFrom(),
 *   rcptTo(), rset() and quit() exactly as in a sequential dialogue: a call whose command line is the
 *   next one already sent just takes its reply; any other call first reads (and drops) the replies
 *   of the rest of the group, then sends its own command. So a reply is never taken for another
 *   command's, and the caller's reading of each reply is the sequential one by construction.
 *   Replies that arrive before they are asked for are kept in order, even when the server closes
 *   the connection behind them (a pipelined QUIT).
 *
 *   Reuse: park() marks the session idle between callouts (its socket no longer keeps the process
 *   alive; any word from the server while parked closes it, since only a 421 may come unasked,
 *   and so does park() itself when part of an unasked line is already held);
 *   resume() starts the next callout with its own deadline. inTransaction says whether a MAIL was
 *   accepted since the last RSET, and replies logs every command reply, so a connection cache can
 *   tell a clean session from one the server has grown tired of.
 *
 *   Every outcome is a value. Each method resolves with the reply or with a failure (timeout,
 *   closed, protocol error) naming the stage it happened at; after a failure the session is
 *   'closed', its socket destroyed, its timers cleared and its listeners removed, and every later
 *   call answers at once as what closed it: a timeout (naming the stage that timed out) or a
 *   protocol error stays one, so that a step whose pipelined predecessor stalled does not read as
 *   a hang-up, which a caller reconnects after; { kind: 'closed' } follows only a hang-up or a
 *   deliberate end. A 421 reply is returned like any other, then the session closes, because
 *   the server is about to close the channel (RFC 5321 §3.8).
 *
 *   open() ends either 'ready' or 'closed'. When the greeting, EHLO/HELO or STARTTLS policy stops
 *   the dialogue, open() sends QUIT itself (RFC 5321 §3.1 asks for QUIT after a 554 greeting)
 *   unless the server said 421, and closes without waiting for the 221 (as Postfix's
 *   smtp_skip_quit_response): the caller moves on to the next exchanger at once.
 *
 *   TLS: 'off' never sends STARTTLS; 'opportunistic' upgrades when STARTTLS is advertised and
 *   carries on in clear when it is not (or when the server refuses it); 'required' answers
 *   'tls-unavailable' when it is not offered or refused. A failed TLS handshake answers
 *   'tls-failed' with either policy and does not reconnect in clear: the caller decides whether
 *   to try again with tls 'off'. Certificates are not verified by default: a callout is
 *   opportunistic like Postfix's smtp_tls_security_level=may, and a verification failure would
 *   only lose the answer, never protect a secret. After the upgrade, bytes the server sent
 *   behind its 220 in clear are discarded and EHLO is sent again (RFC 3207 §4.2).
 *
 *   Robustness: a reply that arrives while no command is outstanding, or behind the replies to the
 *   commands sent in the same read, is logged and dropped, so it cannot be taken as the answer
 *   to the next command, and part of a line that arrives so fails the next command instead of
 *   beginning its reply; a 220 while waiting for anything but the greeting or STARTTLS is a
 *   repeated banner and dropped likewise. More than MAX_UNSOLICITED_REPLIES such replies is a
 *   protocol error. An unasked 421 closes the session (RFC 5321 §3.8: the server is shutting the
 *   channel), and so does an answer 421 at once: replies behind it answer nothing. A line the
 *   decoder rejects while a command is outstanding is a protocol error.
 *
 * RFC
 *   RFC 5321 (§3.1 greeting, §4.1.1 commands, §4.5.3.2 timeouts), RFC 3207 (STARTTLS),
 *   RFC 6531 (SMTPUTF8).
 *
 * LIMITS
 *   Every wait is bounded by its stage timer and by the optional absolute deadline, whichever
 *   ends first. The deadline is a time of the monotonic clock (performance.now()), which a step
 *   of the wall clock (NTP, a resumed virtual machine) does not move. Reply lines and lines per
 *   reply are bounded by ReplyDecoder's limits.
 *
 * ERRORS
 *   Calling a command before open() succeeded or while another command is outstanding, or
 *   pipelining QUIT anywhere but last, is a programming fault and throws SmtpSessionMisuseError.
 */

import net from 'node:net';
import tls from 'node:tls';
import { CalloutError } from '../core/errors.js';
import type { SmtpStage } from '../verify/types.js';
import { formatCommand, mailFromCommand, rcptToCommand, type CommandLine } from './command.js';
import { ReplyDecoder, formatReply, isPositive, parseEhloKeywords } from './reply.js';
import type { Dialer, SmtpReply, TranscriptEntry } from './types.js';

/** How long a session left with QUIT (leave()) keeps its half-closed connection for the server's 221. */
const LEAVE_LINGER_MS = 1_000;

export type SessionState =
  | 'idle'
  | 'connecting'
  | 'greeting'
  | 'ehlo'
  | 'helo'
  | 'starttls'
  | 'ready'
  | 'mail'
  | 'rcpt'
  | 'rset'
  | 'vrfy'
  | 'quit'
  | 'closed';

/** The stages a failure can name: the verification stages, and VRFY. */
export type ClientStage = SmtpStage | 'vrfy';

export type StepFailure<S extends ClientStage = SmtpStage> =
  /**
   * cutShortMs, only when the overall deadline ended the wait before the stage's own timer: the
   * milliseconds that timer had left. Such a timeout says how little time was left, not how
   * slow the server is.
   * timedOutAt, only when this step never got its turn: the stage whose wait timed out before it
   * and closed the session (a pipelined command whose reply was read ahead of this step's own).
   */
  | { kind: 'timeout'; stage: S; afterMs: number; cutShortMs?: number; timedOutAt?: ClientStage }
  | { kind: 'closed'; stage: S; detail: string }
  | { kind: 'error'; stage: S; detail: string };

export type StepResult<S extends ClientStage = SmtpStage> = { kind: 'reply'; reply: SmtpReply } | StepFailure<S>;

export type OpenResult =
  | { kind: 'ready' }
  | { kind: 'rejected'; stage: SmtpStage; reply: SmtpReply }
  | StepFailure
  | { kind: 'tls-unavailable'; detail: string }
  | { kind: 'tls-failed'; detail: string };

export type TlsPolicy = 'off' | 'opportunistic' | 'required';

export interface SmtpTimeouts {
  connectMs: number;
  greetingMs: number;
  /** EHLO, HELO, STARTTLS, MAIL, RSET, VRFY and QUIT. */
  commandMs: number;
  rcptMs: number;
  /** The TLS handshake after STARTTLS was accepted. */
  tlsMs: number;
}

export interface SmtpClientOptions {
  host: string;
  port: number;
  localAddress?: string;
  heloName: string;
  dialer?: Dialer;
  timeouts: SmtpTimeouts;
  /** Absolute performance.now() time after which every wait ends in a timeout; caps every stage timer. */
  deadline?: number;
  tls: TlsPolicy;
  tlsOptions?: { rejectUnauthorized?: boolean; servername?: string };
  maxLineLength?: number;
  maxReplyLines?: number;
}

/** A command that may be pipelined (RFC 2920 §3.1: QUIT only as the last of a group). */
export type PipelinedCommand =
  | { verb: 'MAIL'; reversePath: string; smtputf8?: boolean }
  | { verb: 'RCPT'; forwardPath: string }
  | { verb: 'RSET' }
  | { verb: 'QUIT' };

/** One command reply as the caller took it, in order. */
export interface CommandReply {
  stage: ClientStage;
  reply: SmtpReply;
}

export class SmtpSessionMisuseError extends CalloutError {
  constructor(message: string) {
    super('INTERNAL', message);
  }
}

export const MAX_UNSOLICITED_REPLIES = 10;

export const netDialer: Dialer = ({ host, port, localAddress }) =>
  net.connect(localAddress === undefined ? { host, port } : { host, port, localAddress });

type Outcome =
  | { kind: 'reply'; reply: SmtpReply }
  | { kind: 'connected' }
  | { kind: 'secured' }
  | { kind: 'tls-error'; detail: string }
  | StepFailure<ClientStage>;

interface Waiter {
  stage: ClientStage;
  expects: 'reply' | 'connect' | 'secure';
  timer: NodeJS.Timeout;
  settle: (outcome: Outcome) => void;
}

type HelloResult = { kind: 'ready' } | OpenResult;

type CommandStage = 'mail' | 'rcpt' | 'rset' | 'vrfy' | 'quit';

/** A pipelined command whose reply the caller has not taken yet. */
interface Queued {
  stage: CommandStage;
  text: string;
  timeoutMs: number;
}

const noop = (): void => {};

export class SmtpClientSession {
  readonly transcript: TranscriptEntry[] = [];
  /** Every command reply the caller took (or a drain dropped), in order. */
  readonly replies: CommandReply[] = [];
  private currentState: SessionState = 'idle';
  private advertised = new Map<string, string>();
  private secured = false;
  private peer: string | undefined;
  private readonly startedAt = performance.now();
  private readonly dialer: Dialer;
  private socket: net.Socket | undefined;
  private readonly sockets: net.Socket[] = [];
  private detachers: Array<() => void> = [];
  private decoder: ReplyDecoder;
  private waiter: Waiter | undefined;
  private lastStage: ClientStage = 'connect';
  private closedBecause = 'session not opened';
  /** The failure that closed the session, which later calls answer with (alreadyClosed). */
  private closedWith: StepFailure<ClientStage> | undefined;
  private unsolicitedReplies = 0;
  private deadline: number | undefined;
  /** The stages of the commands sent (and the greeting) whose replies have not arrived, in order. */
  private outstanding: ClientStage[] = [];
  /** Replies that arrived before anyone waited for them. */
  private readonly inbox: SmtpReply[] = [];
  /** Pipelined commands sent whose replies the caller has not taken. */
  private queued: Queued[] = [];
  private transaction = false;
  private parked = false;

  constructor(private readonly options: SmtpClientOptions) {
    this.dialer = options.dialer ?? netDialer;
    this.decoder = this.newDecoder();
    this.deadline = options.deadline;
  }

  get state(): SessionState {
    return this.currentState;
  }

  /** The EHLO keywords of the latest EHLO (after STARTTLS: the one over TLS); empty after HELO. */
  get extensions(): Map<string, string> {
    return this.advertised;
  }

  get tls(): boolean {
    return this.secured;
  }

  get remoteAddress(): string | undefined {
    return this.peer;
  }

  /** A MAIL was accepted and no RSET has ended that transaction yet (EHLO is sent only by open(), before any MAIL). */
  get inTransaction(): boolean {
    return this.transaction;
  }

  /** Marks the session idle between callouts: its socket stops holding the process open. */
  park(): void {
    if (this.currentState !== 'ready' || this.queued.length > 0) throw new SmtpSessionMisuseError(`park() in state ${this.currentState}`);
    this.parked = true;
    // The last callout's deadline must not cut short the QUIT that may close the session idle.
    this.deadline = undefined;
    for (const socket of this.sockets) socket.unref();
    // Arrived before park(), part of a line would begin the next callout's first reply just the same.
    if (this.holdsUnaskedBytes()) this.end(`server spoke while the session was idle: part of a line nobody asked for (${this.decoder.bufferedBytes} octets)`);
  }

  get isParked(): boolean {
    return this.parked && this.currentState !== 'closed';
  }

  /** Adds an event line to the transcript (what the caller did with the session). */
  note(line: string): void {
    this.event(line);
  }

  /** Takes a parked session up again for one callout, under that callout's deadline. */
  resume(deadline: number | undefined): void {
    this.parked = false;
    this.deadline = deadline;
    for (const socket of this.sockets) socket.ref();
  }

  /**
   * Sends the commands in one write when the server advertises PIPELINING (RFC 2920); false, and
   * nothing sent, when it does not, when a line is unsafe or when the session is busy. The
   * replies are then taken by the usual calls (mailFrom, rcptTo, rset, quit) in order.
   */
  pipeline(commands: PipelinedCommand[]): boolean {
    if (commands.slice(0, -1).some((c) => c.verb === 'QUIT')) throw new SmtpSessionMisuseError('QUIT may only end a pipelined group');
    // Held unasked bytes are left for the first command sent alone to fail on.
    if (this.currentState !== 'ready' || this.queued.length > 0 || !this.advertised.has('PIPELINING') || commands.length === 0 || this.holdsUnaskedBytes()) return false;
    const group: Queued[] = [];
    for (const command of commands) {
      const built = this.build(command);
      if (built.line.kind === 'unsafe') return false;
      group.push({ stage: built.stage, text: built.line.text, timeoutMs: built.timeoutMs });
    }
    for (const entry of group) {
      this.record('sent', entry.text);
      this.outstanding.push(entry.stage);
    }
    this.queued = group;
    this.socket?.write(group.map((entry) => `${entry.text}\r\n`).join(''));
    return true;
  }

  /**
   * Reads and drops the replies to pipelined commands the caller has not taken, short of a QUIT
   * ending the group: its 221 tells nothing, and leave() does not wait for it (quit() does).
   */
  async drain(): Promise<void> {
    await this.takeQueued('but-quit');
  }

  private async takeQueued(upTo: 'all' | 'but-quit'): Promise<void> {
    while (this.queued.length > 0 && (upTo === 'all' || this.queued[0]!.stage !== 'quit')) {
      const next = this.queued.shift()!;
      const step = await this.takeReply(next.stage, next.timeoutMs);
      if (step.kind !== 'reply') this.queued = [];
    }
  }

  async open(): Promise<OpenResult> {
    if (this.currentState !== 'idle') throw new SmtpSessionMisuseError(`open() in state ${this.currentState}`);
    const result = await this.openSteps();
    // A session can die between its last good reply and here (a flood behind that reply).
    if (result.kind === 'ready' && (this.currentState as SessionState) !== 'ready') return this.alreadyClosed(this.lastStage as SmtpStage);
    return result;
  }

  private async openSteps(): Promise<OpenResult> {
    const connected = await this.connect();
    if (connected.kind !== 'connected') return connected as OpenResult;

    this.enter('greeting');
    const greeting = await this.wait('greeting', 'reply', this.options.timeouts.greetingMs);
    if (greeting.kind !== 'reply') return greeting as OpenResult;
    if (!isPositive(greeting.reply)) return this.refuseOpen('greeting', greeting.reply);

    const hello = await this.hello();
    if (hello.kind !== 'ready' || this.options.tls === 'off') return hello;
    if (!this.advertised.has('STARTTLS')) {
      if (this.options.tls === 'opportunistic') return hello;
      return this.giveUp({ kind: 'tls-unavailable', detail: 'STARTTLS not advertised' });
    }
    return this.startTls();
  }

  mailFrom(reversePath: string, params: { smtputf8?: boolean } = {}): Promise<StepResult> {
    const built = this.build({ verb: 'MAIL', reversePath, smtputf8: params.smtputf8 === true });
    return this.command('mail', built.line, built.timeoutMs);
  }

  rcptTo(forwardPath: string): Promise<StepResult> {
    return this.command('rcpt', rcptToCommand(forwardPath), this.options.timeouts.rcptMs);
  }

  rset(): Promise<StepResult> {
    return this.command('rset', formatCommand('RSET'), this.options.timeouts.commandMs);
  }

  vrfy(address: string): Promise<StepResult<'vrfy'>> {
    return this.command('vrfy', formatCommand('VRFY', address), this.options.timeouts.commandMs);
  }

  /** Sends QUIT when the session is ready (or takes the pipelined one), waits for the reply up to commandMs, then closes. */
  async quit(): Promise<void> {
    await this.takeQueued('all');
    if (this.currentState === 'closed') return;
    if (this.currentState !== 'ready') {
      this.end(`session ended in state ${this.currentState}`);
      return;
    }
    await this.sayQuit();
  }

  destroy(): void {
    if (this.currentState !== 'closed') this.end('session destroyed by caller');
  }

  /**
   * Ends the session at once, saying QUIT first when it is ready for a command: a dialogue that
   * stops early (a refused MAIL, a 451 at MAIL) then ends as RFC 5321 §4.1.1.10 asks, not in a
   * dropped connection, which receivers log as "lost connection after MAIL" and some count
   * against the client. The server's 221 is not waited for: the QUIT is written, the connection
   * half-closed, and destroyed LEAVE_LINGER_MS later if the server keeps its side open.
   */
  leave(): void {
    if (this.currentState !== 'ready') {
      this.destroy();
      return;
    }
    this.quitAndClose('session left with QUIT');
  }

  /** Writes QUIT and closes without waiting for the 221 (Postfix: smtp_skip_quit_response = yes). */
  private quitAndClose(reason: string): void {
    // A QUIT already sent at the end of a pipelined group is not said twice.
    if (!this.queued.some((entry) => entry.stage === 'quit')) this.send('QUIT', 'quit');
    this.close(reason, { kind: 'closed', stage: this.lastStage, detail: reason }, 'linger');
  }

  private async command<S extends 'mail' | 'rcpt' | 'rset' | 'vrfy'>(
    stage: S,
    line: CommandLine,
    timeoutMs: number,
  ): Promise<StepResult<S>> {
    const ahead = this.queued[0];
    // A reply to a pipelined command stays the caller's to take after the server closed behind it.
    if (ahead && line.kind === 'line' && ahead.text === line.text && (this.currentState === 'ready' || this.currentState === 'closed')) {
      this.queued.shift();
      return this.takeReply(stage, timeoutMs);
    }
    if (this.queued.length > 0 && (this.currentState === 'ready' || this.currentState === 'closed')) await this.takeQueued('all');
    if (this.currentState === 'closed') return this.alreadyClosed(stage);
    if (this.currentState !== 'ready') {
      throw new SmtpSessionMisuseError(`${stage} in state ${this.currentState}: one command at a time, after open()`);
    }
    if (line.kind === 'unsafe') return this.fail({ kind: 'error', stage, detail: line.detail });
    return this.send(line.text, stage) ?? this.takeReply(stage, timeoutMs);
  }

  /** The reply to the oldest command sent: from the inbox, or waited for. */
  private async takeReply<S extends CommandStage>(stage: S, timeoutMs: number): Promise<StepResult<S>> {
    this.enter(stage);
    const outcome = await this.wait(stage, 'reply', timeoutMs);
    if (outcome.kind !== 'reply') return outcome as StepFailure<S>;
    const reply = outcome.reply;
    this.replies.push({ stage, reply });
    if (stage === 'quit') {
      this.end('session ended after QUIT');
    } else if (reply.code === 421) {
      this.end(`server closing: ${formatReply(reply)}`);
    } else {
      // RFC 5321 §4.1.4: a refused command leaves the state as it was, a nested MAIL's 503 included.
      if (stage === 'mail' && isPositive(reply)) this.transaction = true;
      if (stage === 'rset' && isPositive(reply)) this.transaction = false;
      this.enter('ready');
    }
    return { kind: 'reply', reply };
  }

  private build(command: PipelinedCommand): { stage: CommandStage; line: CommandLine; timeoutMs: number } {
    const { commandMs, rcptMs } = this.options.timeouts;
    switch (command.verb) {
      case 'MAIL': {
        const smtputf8 = command.smtputf8 === true && this.advertised.has('SMTPUTF8');
        if (command.smtputf8 && !smtputf8) this.event('SMTPUTF8 not advertised: MAIL sent without it');
        return { stage: 'mail', line: mailFromCommand(command.reversePath, { smtputf8 }), timeoutMs: commandMs };
      }
      case 'RCPT':
        return { stage: 'rcpt', line: rcptToCommand(command.forwardPath), timeoutMs: rcptMs };
      case 'RSET':
        return { stage: 'rset', line: formatCommand('RSET'), timeoutMs: commandMs };
      case 'QUIT':
        return { stage: 'quit', line: formatCommand('QUIT'), timeoutMs: commandMs };
    }
  }

  private connect(): Promise<Outcome> {
    this.enter('connecting');
    const { host, port, localAddress, timeouts } = this.options;
    // Waiting first means a deadline already past never dials at all.
    const connected = this.wait('connect', 'connect', timeouts.connectMs);
    if (this.currentState === 'closed') return connected;
    let socket: net.Socket;
    try {
      socket = this.dialer({ host, port, timeoutMs: timeouts.connectMs, localAddress });
    } catch (err) {
      this.fail({ kind: 'closed', stage: 'connect', detail: socketErrorDetail(err) });
      return connected;
    }
    this.socket = socket;
    this.sockets.push(socket);
    this.attach(socket);
    this.outstanding.push('greeting');
    const onConnect = (): void => {
      this.peer = socket.remoteAddress;
      this.event(`connected to ${hostPort(socket.remoteAddress, socket.remotePort)} from ${hostPort(socket.localAddress, socket.localPort)}`);
      this.settle('connect', { kind: 'connected' });
    };
    if (!socket.connecting && socket.remoteAddress !== undefined) onConnect();
    else this.listen(socket, 'connect', onConnect);
    return connected;
  }

  /** EHLO, or HELO when EHLO is refused with a 5xx (a server without ESMTP). */
  private async hello(): Promise<HelloResult> {
    const { heloName, timeouts } = this.options;
    this.enter('ehlo');
    const ehloLine = formatCommand('EHLO', heloName);
    if (ehloLine.kind === 'unsafe') return this.fail({ kind: 'error', stage: 'ehlo', detail: ehloLine.detail }) as OpenResult;
    const unsent = this.send(ehloLine.text, 'ehlo');
    if (unsent) return unsent;
    const ehlo = await this.wait('ehlo', 'reply', timeouts.commandMs);
    if (ehlo.kind !== 'reply') return ehlo as OpenResult;
    if (isPositive(ehlo.reply)) {
      this.advertised = parseEhloKeywords(ehlo.reply);
      this.enter('ready');
      return { kind: 'ready' };
    }
    if (ehlo.reply.code < 500) return this.refuseOpen('ehlo', ehlo.reply);

    this.enter('helo');
    const heloUnsent = this.send(`HELO ${heloName}`, 'helo');
    if (heloUnsent) return heloUnsent;
    const helo = await this.wait('helo', 'reply', timeouts.commandMs);
    if (helo.kind !== 'reply') return helo as OpenResult;
    if (!isPositive(helo.reply)) return this.refuseOpen('helo', helo.reply);
    this.advertised = new Map();
    this.enter('ready');
    return { kind: 'ready' };
  }

  private async startTls(): Promise<OpenResult> {
    const { timeouts, tlsOptions, host } = this.options;
    this.enter('starttls');
    const unsent = this.send('STARTTLS', 'starttls');
    if (unsent) return unsent;
    const answer = await this.wait('starttls', 'reply', timeouts.commandMs);
    if (answer.kind !== 'reply') return answer as OpenResult;
    if (answer.reply.code === 421) return this.refuseOpen('starttls', answer.reply);
    if (!isPositive(answer.reply)) {
      const detail = `STARTTLS refused: ${formatReply(answer.reply)}`;
      if (this.options.tls === 'required') return this.giveUp({ kind: 'tls-unavailable', detail });
      this.event(`${detail}; continuing without TLS`);
      this.enter('ready');
      return { kind: 'ready' };
    }

    const plain = this.socket;
    if (!plain) throw new SmtpSessionMisuseError('STARTTLS without a connection');
    this.detachAll();
    plain.on('error', noop);
    // Whatever the server sent in clear behind its 220 is an injection attempt, not a reply.
    this.decoder = this.newDecoder();
    // RFC 6066 §3: SNI carries a DNS host name, never an address nor an address literal.
    const named = tlsOptions?.servername ?? host;
    const servername = net.isIP(named) === 0 && !named.startsWith('[') ? named : undefined;
    const secure = tls.connect({
      socket: plain,
      rejectUnauthorized: tlsOptions?.rejectUnauthorized ?? false,
      ...(servername === undefined ? {} : { servername }),
    });
    this.socket = secure;
    this.sockets.push(secure);
    const handshake = this.wait('starttls', 'secure', timeouts.tlsMs);
    this.listen(secure, 'secureConnect', () => this.settle('secure', { kind: 'secured' }));
    this.listen(secure, 'error', (err: unknown) => this.settle('secure', { kind: 'tls-error', detail: socketErrorDetail(err) }));
    this.listen(secure, 'close', () => this.settle('secure', { kind: 'tls-error', detail: 'connection closed during the TLS handshake' }));
    const outcome = await handshake;
    if (outcome.kind === 'tls-error') {
      this.end(`TLS handshake failed: ${outcome.detail}`);
      return { kind: 'tls-failed', detail: outcome.detail };
    }
    if (outcome.kind !== 'secured') return outcome as OpenResult;

    this.detachAll();
    this.attach(secure);
    this.secured = true;
    // Read while the handshake's state is there: a reset in the turn waited for below leaves
    // getCipher() null, and the callout then failed with a TypeError instead of a closed attempt.
    const cipher = secure.getCipher();
    const verified = secure.authorized ? 'certificate verified' : `certificate not verified: ${String(secure.authorizationError)}`;
    this.event(`TLS established (${secure.getProtocol() ?? 'unknown protocol'}, ${cipher?.name ?? 'unknown cipher'}, ${verified})`);
    // Still inside the secureConnect callback: Node 20 dies of SIGSEGV when the sockets are
    // destroyed there, as a deadline that ends with the handshake would at the EHLO below.
    await new Promise<void>((resolve) => setImmediate(resolve));
    return this.hello();
  }

  /**
   * Stops open() on a refusal: QUIT first, unless the server already said it is closing. The 221
   * is not waited for: a server that refused us and then lets QUIT hang would hold up the next
   * exchanger for commandMs.
   */
  private refuseOpen(stage: SmtpStage, reply: SmtpReply): OpenResult {
    if (reply.code === 421) this.end(`server closing: ${formatReply(reply)}`);
    else this.quitAndClose(`refused at ${stage}: ${formatReply(reply)}`);
    return { kind: 'rejected', stage, reply };
  }

  private giveUp(result: OpenResult & { detail: string }): OpenResult {
    this.quitAndClose(result.detail);
    return result;
  }

  private async sayQuit(): Promise<void> {
    this.send('QUIT', 'quit');
    await this.takeReply('quit', this.options.timeouts.commandMs);
  }

  private attach(socket: net.Socket): void {
    this.listen(socket, 'data', (chunk: Buffer) => this.onData(chunk));
    this.listen(socket, 'error', (err: unknown) => this.failNow('closed', socketErrorDetail(err)));
    this.listen(socket, 'end', () => this.failNow('closed', 'connection closed by server'));
    this.listen(socket, 'close', () => this.failNow('closed', 'connection closed'));
  }

  private listen<A extends unknown[]>(emitter: net.Socket, event: string, handler: (...args: A) => void): void {
    emitter.on(event, handler);
    this.detachers.push(() => emitter.off(event, handler));
  }

  private detachAll(): void {
    for (const detach of this.detachers) detach();
    this.detachers = [];
  }

  private onData(chunk: Buffer): void {
    for (const event of this.decoder.push(chunk)) {
      if (this.currentState === 'closed') return;
      const expected = this.outstanding[0];
      if (event.kind === 'reply') {
        for (const line of event.raw) this.record('received', line);
        const repeatedBanner = event.reply.code === 220 && expected !== 'greeting' && expected !== 'starttls';
        if (expected !== undefined && !repeatedBanner) {
          this.outstanding.shift();
          if (this.waiter?.expects === 'reply') this.settle('reply', { kind: 'reply', reply: event.reply });
          else this.inbox.push(event.reply);
          // RFC 5321 §3.8: the server closes behind a 421, so what follows it answers no command.
          if (event.reply.code === 421) this.end(`server closing: ${formatReply(event.reply)}`);
        } else if (event.reply.code === 421 || this.parked) {
          this.end(`server ${this.parked ? 'spoke while the session was idle' : 'closing'}: ${formatReply(event.reply)}`);
        } else {
          this.ignore(`ignored unsolicited reply ${event.reply.code}`);
        }
      } else {
        const detail = `${event.reason} (${event.detail})${event.line === undefined ? '' : `: ${JSON.stringify(event.line)}`}`;
        if (expected !== undefined) this.failNow('error', detail);
        else if (this.parked) this.end(`server spoke while the session was idle: ${detail}`);
        else this.ignore(`ignored undecodable data: ${detail}`);
      }
    }
    // Even part of a line: held by the decoder, it would begin the next callout's first reply.
    if (this.parked) this.end(`server spoke while the session was idle: ${JSON.stringify(chunk.toString('latin1', 0, 80))}`);
  }

  private ignore(what: string): void {
    this.event(what);
    this.unsolicitedReplies += 1;
    if (this.unsolicitedReplies > MAX_UNSOLICITED_REPLIES) {
      this.failNow('error', `more than ${MAX_UNSOLICITED_REPLIES} unsolicited replies`);
    }
  }

  private wait(stage: ClientStage, expects: Waiter['expects'], stageMs: number): Promise<Outcome> {
    const early = expects === 'reply' ? this.inbox.shift() : undefined;
    if (early) return Promise.resolve({ kind: 'reply', reply: early });
    if (this.currentState === 'closed') return Promise.resolve(this.alreadyClosed(stage));
    this.lastStage = stage;
    // Whole milliseconds, as afterMs reports them; a fraction left is one more, not none.
    const remaining = this.deadline === undefined ? Infinity : Math.ceil(this.deadline - performance.now());
    const budget = Math.max(0, Math.min(stageMs, remaining));
    const timeout: StepFailure<ClientStage> = remaining < stageMs ? { kind: 'timeout', stage, afterMs: budget, cutShortMs: stageMs - budget } : { kind: 'timeout', stage, afterMs: budget };
    if (budget === 0) return Promise.resolve(this.fail(timeout));
    return new Promise<Outcome>((settle) => {
      const timer = setTimeout(() => {
        this.fail(timeout);
      }, budget);
      this.waiter = { stage, expects, timer, settle };
    });
  }

  private settle(expects: Waiter['expects'], outcome: Outcome): void {
    const waiter = this.waiter;
    if (!waiter || waiter.expects !== expects) return;
    this.waiter = undefined;
    clearTimeout(waiter.timer);
    waiter.settle(outcome);
  }

  private failNow(kind: 'closed' | 'error', detail: string): void {
    this.fail({ kind, stage: this.waiter?.stage ?? this.lastStage, detail });
  }

  /** Records the failure, closes the session and answers the outstanding wait with it. */
  private fail<S extends ClientStage>(failure: StepFailure<S>): StepFailure<S> {
    if (this.currentState === 'closed') return failure;
    const description =
      failure.kind === 'timeout'
        ? `timeout at ${failure.stage} after ${failure.afterMs} ms${failure.cutShortMs === undefined ? '' : ' (overall deadline)'}`
        : failure.kind === 'closed'
          ? `connection closed at ${failure.stage}: ${failure.detail}`
          : `protocol error at ${failure.stage}: ${failure.detail}`;
    this.close(description, failure);
    return failure;
  }

  /** A deliberate close: QUIT answered, 421, TLS failure, or the caller's destroy(). */
  private end(reason: string): void {
    this.close(reason, { kind: 'closed', stage: this.waiter?.stage ?? this.lastStage, detail: reason });
  }

  /** `linger`: what was written (a QUIT) goes out before the connection closes. */
  private close(reason: string, answer: StepFailure<ClientStage>, linger?: 'linger'): void {
    if (this.currentState === 'closed') return;
    this.event(reason);
    this.closedBecause = reason;
    this.closedWith = answer;
    this.currentState = 'closed';
    this.detachAll();
    for (const socket of this.sockets) {
      socket.on('error', noop);
      if (linger) {
        socket.end();
        setTimeout(() => socket.destroy(), LEAVE_LINGER_MS).unref();
      } else {
        socket.destroy();
      }
    }
    const waiter = this.waiter;
    this.waiter = undefined;
    if (waiter) {
      clearTimeout(waiter.timer);
      waiter.settle(answer);
    }
  }

  /** Moves the state machine on, except out of 'closed', which is final. */
  private enter(state: SessionState): void {
    if (this.currentState !== 'closed') this.currentState = state;
  }

  /** Not a hang-up of the server's unless it was one: a caller reconnects after that only. */
  private alreadyClosed<S extends ClientStage>(stage: S): StepFailure<S> {
    const cause = this.closedWith;
    if (cause?.kind === 'timeout') return { ...cause, stage, timedOutAt: cause.stage };
    return { kind: cause?.kind === 'error' ? 'error' : 'closed', stage, detail: `session already closed (${this.closedBecause})` };
  }

  /** Writes a command line; answers the failure instead when unasked bytes would begin its reply. */
  private send<S extends ClientStage>(line: string, stage: S): StepFailure<S> | undefined {
    if (this.currentState === 'closed') return undefined;
    if (this.holdsUnaskedBytes()) {
      return this.fail({ kind: 'error', stage, detail: `the server sent part of a line nobody asked for before ${line.split(' ', 1)[0]!}` });
    }
    this.record('sent', line);
    this.outstanding.push(stage);
    this.socket?.write(`${line}\r\n`);
    return undefined;
  }

  /**
   * Octets of a line the server began while no reply was due: complete, such a reply would be
   * dropped, but the next command's reply would now finish that line and be read as it.
   */
  private holdsUnaskedBytes(): boolean {
    return this.outstanding.length === 0 && this.decoder.bufferedBytes > 0;
  }

  private record(dir: 'sent' | 'received', line: string): void {
    this.transcript.push({ at: Math.round(performance.now() - this.startedAt), dir, line });
  }

  private event(line: string): void {
    this.transcript.push({ at: Math.round(performance.now() - this.startedAt), dir: 'event', line });
  }

  private newDecoder(): ReplyDecoder {
    return new ReplyDecoder({ maxLineLength: this.options.maxLineLength, maxLines: this.options.maxReplyLines });
  }
}

function hostPort(address: string | undefined, port: number | undefined): string {
  const host = address ?? 'unknown';
  return `${net.isIPv6(host) ? `[${host}]` : host}:${port ?? 0}`;
}

function socketErrorDetail(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return code ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}
