/**
 * NAME
 *   verify/probe - the callout dialogue for one domain: MX hosts in order, one connection for
 *   several addresses, the catch-all and postmaster probes, cached connections and pipelining
 *
 * DESCRIPTION
 *   For each exchanger in preference order and each of its addresses (a server that several
 *   exchangers lead to only once), under one overall deadline (Exim's maxwait), until every
 *   address has a definite answer:
 *     connect, greeting, EHLO/HELO (and STARTTLS by policy)    -> failures move to the next host;
 *                    a failed opportunistic TLS handshake is tried again in clear at the same
 *                    address first (Postfix's RETRY_AS_PLAINTEXT, Exim's tls_tempfail_tryclear)
 *     MAIL FROM:<>   refused with 5xx: the domain cannot take bounces; with a fallback sender
 *                    configured, MAIL FROM:<fallback> continues the probe (as smf-sav does)
 *     RCPT TO:<random local part>   once per domain (Exim's `random`): accepted means catch-all
 *                    and no RCPT of a real address can tell anything (at a backup MX it means
 *                    only that the backup queues anything: inconclusive); then RSET and MAIL again,
 *                    reconnecting when the server drops us after the invalid recipient. One local
 *                    part per callout, reconnects included; the one a 4xx met before (the domain
 *                    record, verify/engine) when given: a greylister passes only a retry
 *     VRFY (only when configured), RCPT TO:<address> for each address (452 too many recipients
 *                    opens a new transaction), RCPT TO:<postmaster@domain> when configured
 *     QUIT
 *   A failure (refused, timed out, dropped) is remembered with its stage; when no host gave an
 *   answer, the most informative failure becomes the reason of an `unknown` verdict. After a 421
 *   (RFC 5321 §3.8) what is left goes to the next exchanger, never to a new connection to this one.
 *   A step after the first MAIL that times out or gets what is no SMTP reply ends the callout:
 *   what is left stays unknown; only a server that closed the connection is asked on a new one.
 *
 *   Connection reuse (verify/connections): the first connection to an address may be an idle one
 *   a previous callout left, greeted and EHLO'd already; the dialogue then starts at MAIL. If
 *   anything on a reused connection goes otherwise than answered with the expected replies (it
 *   was dropped, a 421, a refusal of MAIL or of us, a 4xx), everything learnt on it is thrown
 *   away and the callout runs again on a new connection, so a connection the server grew tired
 *   of can never produce a verdict. At the end a clean connection goes back to the cache
 *   (after RSET) instead of QUIT.
 *
 *   Pipelining (RFC 2920, when advertised and callout.pipelining is on): the commands the
 *   dialogue will send if every reply is the usual one (MAIL, RCPT random, RSET, MAIL, RCPT for
 *   each address, RCPT postmaster, then RSET to park or QUIT) go out as one group, and the
 *   dialogue above runs unchanged on the replies (smtp/client takes each reply for its own
 *   command and drops the rest of a group once the dialogue goes another way). QUIT ends a
 *   group only when no reply can lead to another command on the connection. So a catch-all
 *   server also sees the RCPT of the real address (its reply is dropped). A 452 "too many
 *   recipients" for the first RCPT of a transaction is a temporary failure, never a reason to
 *   open another transaction, in both modes.
 *
 * LIMITS
 *   Reconnects to one address are bounded (random-probe drop, mid-dialogue drop, one fresh
 *   connection after a reused one failed); addresses per connection are bounded by the caller
 *   and, across callouts, by the connection cache.
 */

import { randomFillSync } from 'node:crypto';
import { isIP } from 'node:net';
import type { Timers } from '../core/clock.js';
import { hostKey } from '../core/ip.js';
import type { MxHost } from '../dns/types.js';
import { SmtpClientSession } from '../smtp/client.js';
import type { ClientStage, OpenResult, PipelinedCommand, StepFailure } from '../smtp/client.js';
import type { Dialer, SmtpReply } from '../smtp/types.js';
import type { CalloutConfig } from '../config/schema.js';
import type { CachedConnection, ConnectionCache } from './connections.js';
import { classifyRcpt, classifyVrfy, describeReply, evidence, refusesNullSender } from './interpret.js';
import type { Politeness } from './politeness.js';
import type { ProbeAttempt, ProbeState, ReplyEvidence, SmtpStage, Verdict, VerdictReason } from './types.js';

export interface ProbeTarget {
  /** The forward-path as sent in RCPT TO, without brackets. */
  address: string;
  requiresSmtputf8: boolean;
}

export interface AddressOutcome {
  verdict: Verdict;
  reason: VerdictReason;
  description: string;
  reply?: ReplyEvidence;
}

export interface Failure {
  reason: VerdictReason;
  description: string;
  reply?: ReplyEvidence;
  /** A 5xx at connect, greeting, HELO or MAIL: a lasting refusal of us, not a passing fault. */
  definite: boolean;
  /**
   * A timeout of the overall deadline, not of the exchanger's own timer. Whether the exchanger had
   * its chance depends on this and on what took the deadline (verify/engine: the lookups before
   * the dialogue, or the exchangers):
   *   timer     the deadline ended a step before its own timer: how long the step waited
   *             (afterMs) and what its timer had left (leftMs); afterMs 0 and leftMs
   *             callout.timeouts.connect when the deadline had passed before the next exchanger
   *             was tried, as the client reports a connection it had no time to open
   *   no-slot   it ran out while waiting for the store to grant a per-host connection slot: no
   *             exchanger was asked, and not for what the lookups took
   */
  cutShort?: { kind: 'timer'; afterMs: number; leftMs: number } | { kind: 'no-slot' };
}

export interface DomainProbeInput {
  domain: string;
  targets: ProbeTarget[];
  mxHosts: MxHost[];
  /** When the whole verification must end (ProbeDeps.timers time: monotonic), the MX lookups that came before included. */
  deadline: number;
  /**
   * No random probe: the domain record answers the catch-all question for now (refused, or a
   * 4xx to the random local part remembered until its retry time).
   */
  catchAllKnown: boolean;
  /** The random local part to ask (the one a 4xx met before); a new one when absent. */
  randomLocalPart?: string;
  /** MAIL FROM:<> known refused: start with the fallback sender. */
  nullSenderRefused: boolean;
  postmasterKnown: boolean;
}

export interface DomainProbeOutput {
  outcomes: Map<string, AddressOutcome>;
  catchAll: ProbeState;
  postmaster: ProbeState;
  nullSender: 'accepted' | 'refused' | 'not-run';
  /**
   * The random local part got a 4xx (not a 421) at the domain's best exchanger: the catch-all
   * question is inconclusive until a retry, which should ask the same local part.
   */
  catchAllDeferred?: { localPart: string; reply: ReplyEvidence; description: string };
  greylisted?: Failure;
  /** Why the addresses left without an outcome have none. */
  failure?: Failure;
  attempts: ProbeAttempt[];
}

export interface ProbeDeps {
  config: CalloutConfig;
  helo: string;
  politeness: Politeness;
  /** The clock of input.deadline, attempt durations and connection ages. */
  timers: Timers;
  dialer?: Dialer;
  addressesPerConnection: number;
  connections: ConnectionCache;
}

/** How much a failure tells, best first: the reason an unanswered address is given. */
const FAILURE_RANK: VerdictReason[] = [
  'refused-at-rcpt',
  'refused-at-mail',
  'refused-at-helo',
  'refused-at-greeting',
  'greylisted',
  'tempfail-at-rcpt',
  'smtputf8-unsupported',
  'tls-unavailable',
  'protocol-error',
  'timeout',
  'unreachable',
  'rate-limited',
  'target-refused',
];

const MAX_CONNECTIONS_PER_ADDRESS = 3;
/**
 * New connections one callout may open, across every exchanger and address (as Postfix's
 * smtp_mx_address_limit, 5): five exchangers of four addresses each, all dropping the
 * connection, drew 60 connections from one callout, which a domain's owner could point at
 * anyone's servers. A connection taken from the cache does not count.
 */
const MAX_NEW_CONNECTIONS_PER_CALLOUT = 5;



type Conversation = 'done' | 'next-host' | 'reconnect';

class DomainProbe {
  private readonly out: DomainProbeOutput;
  private readonly pending: ProbeTarget[];
  private readonly deadline: number;
  private useFallback: boolean;
  private session: SmtpClientSession | undefined;
  private connection: CachedConnection | undefined;
  /** Where this callout's part of a (possibly reused) session's transcript and replies begins. */
  private transcriptFrom = 0;
  private repliesFrom = 0;
  /** RCPTs the connection had answered before this callout took it. */
  private recipientsBefore = 0;
  /** The random local part of this callout (randomLocalPart()). */
  private random: string | undefined;
  private attemptStart = 0;
  private currentHost: MxHost | undefined;
  private currentIp = '';
  /** The exchanger address where the random local part was refused, if any. */
  private catchAllRefusedAt: string | undefined;
  /** Connections this callout opened (MAX_NEW_CONNECTIONS_PER_CALLOUT). */
  private newConnections = 0;
  /** Exchanger addresses where an opportunistic TLS handshake failed: asked again in clear. */
  private readonly inClear = new Set<string>();
  /** Exchanger addresses that hung up on VRFY: asked with RCPT on the next connection. */
  private readonly noVrfy = new Set<string>();
  /**
   * Exchanger addresses this callout has come to already. Several MX names (or an AAAA
   * ::ffff:a.b.c.d beside the A a.b.c.d) may lead to one server: it is tried once, as Exim's
   * host_remove_duplicates does, since asking it again under another name only repeats to it
   * what it has just answered (or spends another connection on a server that has just failed).
   */
  private readonly tried = new Set<string>();

  constructor(
    private readonly deps: ProbeDeps,
    private readonly input: DomainProbeInput,
  ) {
    this.pending = [...input.targets];
    this.deadline = input.deadline;
    this.useFallback = input.nullSenderRefused && deps.config.fallbackSender !== undefined && deps.config.sender === '';
    this.out = {
      outcomes: new Map(),
      catchAll: 'not-run',
      postmaster: 'not-run',
      nullSender: input.nullSenderRefused ? 'refused' : 'not-run',
      attempts: [],
    };
  }

  async run(): Promise<DomainProbeOutput> {
    hosts: for (const host of this.input.mxHosts) {
      if (host.addresses.length === 0) {
        this.skipAttempt(host, '', `not contacted: ${host.addressProblem ?? 'no address'}`);
        this.fail({ reason: 'unreachable', description: `${host.name} has no usable address: ${host.addressProblem ?? 'none found'}`, definite: false });
        continue;
      }
      for (const listed of host.addresses) {
        // One server, however its address is written: per-host limits and reuse key on this.
        const ip = hostKey(listed);
        if (this.pending.length === 0) break hosts;
        if (this.tried.has(ip)) {
          this.skipAttempt(host, ip, 'not contacted: tried already for this callout (another exchanger name, or another form of the address)');
          continue;
        }
        this.tried.add(ip);
        if (this.deps.timers.now() >= this.deadline) {
          this.fail({ reason: 'timeout', description: `overall deadline of ${this.deps.config.timeouts.overall} ms reached`, definite: false, cutShort: { kind: 'timer', afterMs: 0, leftMs: this.deps.config.timeouts.connect } });
          break hosts;
        }
        const refusal = this.deps.politeness.targetRefusal(ip);
        if (refusal) {
          this.skipAttempt(host, ip, `not contacted: ${refusal}`);
          this.fail({ reason: 'target-refused', description: `${host.name}: ${refusal}`, definite: false });
          continue;
        }
        const slot = await this.deps.politeness.acquireHost(ip, this.deadline);
        if (slot === 'deadline') {
          this.skipAttempt(host, ip, 'not contacted: the store did not grant a per-host connection slot before the overall deadline');
          // Not the exchanger's doing: it leaves no useless record of the domain, whatever the
          // lookups took (verify/engine remember).
          this.fail({ reason: 'timeout', description: `overall deadline of ${this.deps.config.timeouts.overall} ms reached while waiting for a per-host connection slot in the store`, definite: false, cutShort: { kind: 'no-slot' } });
          break hosts;
        }
        if (slot === 'limit') {
          this.skipAttempt(host, ip, 'not contacted: per-host concurrency limit reached');
          this.fail({ reason: 'rate-limited', description: `${hostAndAddress(host.name, ip)} already has the most connections allowed`, definite: false });
          continue;
        }
        const { release } = slot;
        try {
          for (let connection = 0; connection < MAX_CONNECTIONS_PER_ADDRESS; connection++) {
            if (this.newConnections >= MAX_NEW_CONNECTIONS_PER_CALLOUT) {
              this.skipAttempt(host, ip, `not contacted: ${MAX_NEW_CONNECTIONS_PER_CALLOUT} new connections opened for this callout already`);
              this.fail({ reason: 'rate-limited', description: `gave up after ${MAX_NEW_CONNECTIONS_PER_CALLOUT} new connections for one callout`, definite: false });
              break hosts;
            }
            const next = await this.converse(host, ip, connection === 0);
            if (next !== 'reconnect') break;
          }
        } finally {
          release();
        }
        if (this.pending.length === 0 || this.out.nullSender === 'refused' && !this.useFallback) break hosts;
      }
    }
    return this.out;
  }

  /** One connection: returns whether to stop, try the next host, or reconnect to this one. */
  private async converse(host: MxHost, ip: string, mayReuse: boolean): Promise<Conversation> {
    this.currentHost = host;
    this.currentIp = ip;
    this.attemptStart = this.deps.timers.now();
    const cached = mayReuse ? this.deps.connections.take(ip, this.plannedRecipients()) : undefined;
    if (!cached && !(await this.deps.politeness.admitConnection(ip))) {
      this.skipAttempt(host, ip, 'not contacted: per-host connection rate limit reached');
      this.fail({ reason: 'rate-limited', description: `more than ${this.deps.politeness.perHostConnectionsPerMinute} new connections to ${hostAndAddress(host.name, ip)} in the last minute`, definite: false });
      return 'next-host';
    }
    if (!cached) this.newConnections += 1;
    const connection = cached ?? { session: this.newSession(host, ip), addresses: 0, callouts: 1, openedAt: this.deps.timers.now() };
    const session = connection.session;
    this.session = session;
    this.connection = connection;
    this.transcriptFrom = session.transcript.length;
    this.repliesFrom = session.replies.length;
    this.recipientsBefore = connection.addresses;
    const restore = cached ? this.snapshot() : undefined;
    if (cached) {
      session.resume(this.clientDeadline());
      session.note(`reusing the connection opened ${Math.round(this.deps.timers.now() - connection.openedAt)} ms ago (callout ${connection.callouts} on it)`);
    }
    let next: Conversation;
    try {
      next = await this.dialogue();
    } finally {
      if (!session.isParked) session.leave();
    }
    if (!restore || (next === 'done' && this.cleanSoFar())) return next;
    const last = this.out.attempts.at(-1);
    if (last) last.outcome = `${last.outcome}; the reused connection is given up and the callout runs again on a new one`;
    restore();
    return this.converse(host, ip, false);
  }

  /**
   * The deadline as the SMTP client takes it, a performance.now() time: its step timers are
   * real ones (they bound real I/O), so it gets what the callout's own clock leaves of the
   * deadline, counted from the real now.
   */
  private clientDeadline(): number {
    return performance.now() + (this.deadline - this.deps.timers.now());
  }

  private newSession(host: MxHost, ip: string): SmtpClientSession {
    const { config } = this.deps;
    return new SmtpClientSession({
      host: ip,
      port: config.port,
      heloName: this.deps.helo,
      // Bound to the exchanger's family only, as Postfix's smtp_bind_address (IPv4) and
      // smtp_bind_address6 are: an IPv4 source bound to an IPv6 connection failed with EINVAL,
      // so every IPv6 exchanger (tried first) was unreachable, an IPv6-only domain unknown.
      ...(config.sourceAddress && isIP(config.sourceAddress) === isIP(ip) ? { localAddress: config.sourceAddress } : {}),
      ...(this.deps.dialer ? { dialer: this.deps.dialer } : {}),
      timeouts: {
        connectMs: config.timeouts.connect,
        greetingMs: config.timeouts.greeting,
        commandMs: config.timeouts.command,
        rcptMs: config.timeouts.rcpt,
        tlsMs: config.timeouts.tls,
      },
      deadline: this.clientDeadline(),
      tls: this.inClear.has(ip) ? 'off' : config.tls,
      tlsOptions: { rejectUnauthorized: false, servername: host.name },
    });
  }

  private async dialogue(): Promise<Conversation> {
    const session = this.session!;
    if (session.state === 'idle') {
      const opened = await session.open();
      if (opened.kind === 'tls-failed' && this.deps.config.tls === 'opportunistic' && !this.inClear.has(this.currentIp)) {
        this.inClear.add(this.currentIp);
        return this.endAttempt(`${this.openFailure(opened)}; trying again without TLS`, 'reconnect');
      }
      if (opened.kind !== 'ready') return this.endAttempt(this.openFailure(opened), 'next-host');
    }
    this.pipelineGroup();
    const mail = await this.startTransaction();
    if (mail !== 'ok') return mail;
    if (!this.checkSmtputf8()) return this.endAttempt('SMTPUTF8 not offered', 'next-host');
    if (this.willProbeRandom()) {
      const random = await this.randomProbe();
      if (random !== 'ok') return random;
    }
    const real = await this.probeAddresses();
    if (real !== 'ok') return real;
    if (this.willProbePostmaster()) await this.postmasterProbe();
    await this.finish();
    return this.endAttempt('answered', 'done');
  }

  /** RCPTs this callout will send if all goes as usual: its addresses and the probes, which count too. */
  private plannedRecipients(): number {
    const postmaster = this.willProbePostmaster() ? (this.deps.config.postmasterProbe === 'fullpostmaster' ? 2 : 1) : 0;
    return Math.min(this.pending.length, this.deps.addressesPerConnection) + (this.willProbeRandom() ? 1 : 0) + postmaster;
  }

  private willProbeRandom(): boolean {
    return this.deps.config.randomProbe && !this.input.catchAllKnown && this.out.catchAll === 'not-run';
  }

  private willProbePostmaster(): boolean {
    return this.deps.config.postmasterProbe !== 'off' && !this.input.postmasterKnown && this.out.postmaster === 'not-run';
  }

  /**
   * Sends, as one RFC 2920 group, the commands the dialogue will send when every reply is the
   * usual one. The dialogue then runs as if sequential (see smtp/client).
   */
  private pipelineGroup(): void {
    const { config, connections } = this.deps;
    const session = this.session!;
    const extensions = session.extensions;
    const needsUtf8 = this.pending.some((t) => t.requiresSmtputf8);
    // VRFY must end a group, and without SMTPUTF8 the dialogue may stop after MAIL.
    if (!config.pipelining || !extensions.has('PIPELINING') || this.willVrfy() || (needsUtf8 && !extensions.has('SMTPUTF8'))) return;
    const mail: PipelinedCommand = { verb: 'MAIL', reversePath: this.sender(), smtputf8: needsUtf8 };
    const group: PipelinedCommand[] = [mail];
    if (this.willProbeRandom()) {
      group.push({ verb: 'RCPT', forwardPath: this.randomRecipient() }, { verb: 'RSET' }, mail);
    }
    const batch = this.pending.slice(0, this.deps.addressesPerConnection);
    for (const target of batch) group.push({ verb: 'RCPT', forwardPath: target.address });
    if (this.willProbePostmaster()) group.push({ verb: 'RCPT', forwardPath: `postmaster@${this.input.domain}` });
    const connection = this.connection!;
    const recipients = group.filter((command) => command.verb === 'RCPT').length;
    const mayPark = connections.enabled && connection.addresses + recipients < this.deps.addressesPerConnection;
    const fallbackPossible = !this.useFallback && config.sender === '' && config.fallbackSender !== undefined;
    const lastGroup = !fallbackPossible && batch.length <= 1 && config.postmasterProbe !== 'fullpostmaster';
    // With fullpostmaster a refused postmaster@domain is followed by RCPT TO:<Postmaster> in the
    // same transaction: an RSET queued behind it would end the transaction first.
    if (mayPark && config.postmasterProbe !== 'fullpostmaster') group.push({ verb: 'RSET' });
    else if (lastGroup) group.push({ verb: 'QUIT' });
    session.pipeline(group);
  }

  /** Parks the connection for the next callout, or says QUIT. */
  private async finish(): Promise<void> {
    const connection = this.connection!;
    // The rest of a pipelined group (after a catch-all answer, say) is answered first.
    await this.session!.drain();
    // Every RCPT answered counts, the random and postmaster probes and replies drained from a
    // group too: a catch-all server never refuses one, so only this count retires its connection.
    const recipients = this.session!.replies.slice(this.repliesFrom).filter((entry) => entry.stage === 'rcpt').length;
    connection.addresses = this.recipientsBefore + recipients;
    await this.deps.connections.release(this.currentIp, connection, this.cleanSoFar());
  }

  /** Every reply of this callout on the connection is one a healthy dialogue gives. */
  private cleanSoFar(): boolean {
    return this.session!.replies.slice(this.repliesFrom).every(({ stage, reply }) => {
      if (reply.code === 421) return false;
      if (stage === 'rcpt') {
        const outcome = classifyRcpt(reply);
        return outcome === 'accepted' || outcome === 'rejected';
      }
      return stage === 'vrfy' || (reply.code >= 200 && reply.code < 300);
    });
  }

  /** What the probe has learnt so far, and a function that puts it back. */
  private snapshot(): () => void {
    const pending = [...this.pending];
    const outcomes = new Map(this.out.outcomes);
    const { catchAll, postmaster, nullSender, catchAllDeferred, greylisted, failure } = this.out;
    const useFallback = this.useFallback;
    return () => {
      this.pending.splice(0, this.pending.length, ...pending);
      this.out.outcomes.clear();
      for (const [address, outcome] of outcomes) this.out.outcomes.set(address, outcome);
      Object.assign(this.out, { catchAll, postmaster, nullSender, catchAllDeferred, greylisted, failure });
      if (catchAllDeferred === undefined) delete this.out.catchAllDeferred;
      if (greylisted === undefined) delete this.out.greylisted;
      if (failure === undefined) delete this.out.failure;
      this.useFallback = useFallback;
    };
  }

  private sender(): string {
    return this.useFallback ? (this.deps.config.fallbackSender ?? '') : this.deps.config.sender;
  }

  private randomRecipient(): string {
    return `${this.randomLocalPart()}@${this.input.domain}`;
  }

  /**
   * The same for every connection of this callout: a server that dropped us or a reused
   * connection given up is asked the name it has seen (a greylister counts it as a retry).
   */
  private randomLocalPart(): string {
    this.random ??= this.input.randomLocalPart ?? this.deps.config.randomLocalPart.replace('{random}', randomToken());
    return this.random;
  }

  /** MAIL FROM with the configured sender, falling back once when the null sender is refused. */
  private async startTransaction(again = false): Promise<'ok' | Conversation> {
    const { config } = this.deps;
    const smtputf8 = this.pending.some((t) => t.requiresSmtputf8) && this.session!.extensions.has('SMTPUTF8');
    const sender = this.sender();
    const step = await this.session!.mailFrom(sender, { smtputf8 });
    // A server that dropped us after RSET took the first transaction well: a new connection will too.
    if (step.kind !== 'reply') return again ? this.afterFailedStep(step, this.stepFailure(step)) : this.endAttempt(this.stepFailure(step), 'next-host');
    const reply = step.reply;
    if (reply.code >= 200 && reply.code < 300) {
      if (sender === '') this.out.nullSender = 'accepted';
      return 'ok';
    }
    const ev = evidence('mail', reply, config.noDetails);
    // A blocklisted client, or one asked for STARTTLS or AUTH first, is refused whatever sender
    // it names: that says nothing of bounces.
    if (sender === '' && refusesNullSender(reply)) {
      this.out.nullSender = 'refused';
      if (config.fallbackSender !== undefined) {
        this.useFallback = true;
        await this.session!.drain();
        if (!again) this.pipelineGroup();
        return this.startTransaction(again);
      }
      for (const target of this.pending.splice(0)) {
        this.out.outcomes.set(target.address, {
          verdict: 'risky',
          reason: 'null-sender-refused',
          description: `${this.where()} refused MAIL FROM:<> (${describeReply(ev)}): the domain cannot receive bounces`,
          reply: ev,
        });
      }
      return this.endAttempt(`MAIL FROM:<> refused: ${describeReply(ev)}`, 'done');
    }
    const failure: Failure = reply.code >= 500
      ? { reason: 'refused-at-mail', description: `${this.where()} refused MAIL FROM:<${sender}>: ${describeReply(ev)}`, reply: ev, definite: true }
      : { reason: classifyRcpt(reply) === 'greylisted' ? 'greylisted' : 'refused-at-mail', description: `${this.where()} deferred MAIL FROM:<${sender}>: ${describeReply(ev)}`, reply: ev, definite: false };
    if (failure.reason === 'greylisted') this.out.greylisted = failure;
    return this.endAttempt(this.fail(failure), 'next-host');
  }

  /** Addresses that need SMTPUTF8 at a server without it cannot be delivered there (RFC 6531 §3.4). */
  private checkSmtputf8(): boolean {
    if (this.session!.extensions.has('SMTPUTF8')) return true;
    const needing = this.pending.filter((t) => t.requiresSmtputf8);
    if (needing.length === 0) return true;
    this.fail({ reason: 'smtputf8-unsupported', description: `${this.where()} does not offer SMTPUTF8, which the address needs`, definite: false });
    return needing.length < this.pending.length;
  }

  private async randomProbe(): Promise<'ok' | Conversation> {
    const { config } = this.deps;
    const random = this.randomRecipient();
    const step = await this.session!.rcptTo(random);
    if (step.kind !== 'reply') {
      this.out.catchAll = 'inconclusive';
      return this.afterFailedStep(step, `random probe: ${this.stepFailure(step)}`);
    }
    const outcome = classifyRcpt(step.reply);
    if (outcome === 'accepted') {
      // A backup MX that takes the random local part shows that it queues for the domain, not
      // that the domain takes anything: no catch-all record is learnt from it.
      const backup = this.atBackup();
      this.out.catchAll = backup ? 'inconclusive' : 'accepted';
      const ev = evidence('rcpt', step.reply, config.noDetails);
      const said = `${this.where()} accepts any local part (the random address ${random} got ${describeReply(ev)})`;
      for (const target of this.pending.splice(0)) {
        this.out.outcomes.set(target.address, backup
          ? { verdict: 'unknown', reason: 'catch-all-unknown', description: `${said}, but it is a backup MX, which accepts for the domain whatever its primary would answer`, reply: ev }
          : { verdict: 'risky', reason: 'catch-all', description: said, reply: ev });
      }
      await this.finish();
      return this.endAttempt(`catch-all${backup ? ' at a backup MX' : ''}: random address accepted`, 'done');
    }
    // A refusal of us (policy) says nothing about whether unknown local parts are accepted.
    this.out.catchAll = outcome === 'rejected' ? 'refused' : 'inconclusive';
    if (outcome === 'rejected') this.catchAllRefusedAt = this.currentIp;
    if (step.reply.code === 421) return this.closing('rcpt', `the random probe RCPT TO:<${random}>`, step.reply);
    // Not at a backup, whose 4xx may be only that its primary is away: the primary, back, answers.
    if (step.reply.code >= 400 && step.reply.code < 500 && !this.atBackup()) {
      const ev = evidence('rcpt', step.reply, config.noDetails);
      this.out.catchAllDeferred = { localPart: this.randomLocalPart(), reply: ev, description: `${this.where()} answered the random probe with ${describeReply(ev)}` };
    }
    // Some servers take only one recipient after MAIL FROM:<>, some drop us after an invalid one.
    const rset = await this.session!.rset();
    if (rset.kind !== 'reply') return this.afterFailedStep(rset, `RSET after the random probe: ${this.stepFailure(rset)}`);
    if (rset.reply.code === 421) return this.closing('rset', 'RSET', rset.reply);
    if (rset.reply.code !== 250) return this.endAttempt(`RSET after the random probe failed: ${this.rsetRefused(rset.reply)}`, 'reconnect');
    return this.startTransaction(true);
  }

  private async probeAddresses(): Promise<'ok' | Conversation> {
    const batch = this.pending.slice(0, this.deps.addressesPerConnection);
    let recipientsInTransaction = 0;
    for (const target of batch) {
      if (target.requiresSmtputf8 && !this.session!.extensions.has('SMTPUTF8')) continue;
      if (this.willVrfy()) {
        const answered = await this.vrfy(target);
        if (answered === 'answered') continue;
        if (answered !== 'no-answer') return answered;
      }
      let step = await this.session!.rcptTo(target.address);
      // A new transaction helps only a server that counts recipients per transaction (RFC 5321 §4.5.3.1.10).
      if (step.kind === 'reply' && classifyRcpt(step.reply) === 'too-many-recipients' && recipientsInTransaction > 0) {
        const rset = await this.session!.rset();
        if (rset.kind !== 'reply') return this.afterFailedStep(rset, `RSET: ${this.stepFailure(rset)}`);
        if (rset.reply.code === 421) return this.closing('rset', 'RSET', rset.reply);
        if (rset.reply.code !== 250) return this.endAttempt(`RSET failed: ${this.rsetRefused(rset.reply)}`, 'reconnect');
        const mail = await this.startTransaction(true);
        if (mail !== 'ok') return mail;
        recipientsInTransaction = 0;
        step = await this.session!.rcptTo(target.address);
      }
      recipientsInTransaction++;
      if (step.kind !== 'reply') return this.afterFailedStep(step, `RCPT: ${this.stepFailure(step)}`);
      this.answerRcpt(target, step.reply);
      if (step.reply.code === 421 && this.pending.length > 0) return this.closing('rcpt', `RCPT TO:<${target.address}>`, step.reply);
    }
    return 'ok';
  }

  private willVrfy(): boolean {
    return this.deps.config.vrfy && !this.noVrfy.has(this.currentIp);
  }

  /**
   * A VRFY without a reply is an RCPT without one (afterFailedStep): a tarpit is not asked
   * again, which three connections of VRFY each timing out did until the deadline. A server
   * that hangs up on VRFY would hang up on it again: the next connection asks with RCPT.
   */
  private async vrfy(target: ProbeTarget): Promise<'answered' | 'no-answer' | Conversation> {
    const step = await this.session!.vrfy(target.address);
    if (step.kind !== 'reply') {
      if (step.kind !== 'timeout') this.noVrfy.add(this.currentIp);
      return this.afterFailedStep(step, `VRFY: ${this.stepFailure(step)}`);
    }
    // classifyVrfy takes a 421 for no answer, and the RCPT after it met a closed connection,
    // which was opened again: three connections to a server that said it was closing.
    if (step.reply.code === 421) return this.closing('rcpt', `VRFY ${target.address}`, step.reply);
    const verdict = classifyVrfy(step.reply);
    if (verdict === 'no-answer') return 'no-answer';
    const ev = evidence('rcpt', step.reply, this.deps.config.noDetails);
    this.settle(target, {
      verdict: verdict === 'exists' ? 'deliverable' : 'undeliverable',
      reason: verdict === 'exists' ? 'accepted' : 'rejected-at-rcpt',
      description: `${this.where()} answered VRFY with ${describeReply(ev)}`,
      reply: ev,
    });
    return 'answered';
  }

  private answerRcpt(target: ProbeTarget, reply: SmtpReply): void {
    const ev = evidence('rcpt', reply, this.deps.config.noDetails);
    const said = `${this.where()} answered RCPT TO:<${target.address}> with ${describeReply(ev)}`;
    // X.6.7, "non-ASCII addresses not permitted for that sender/recipient" (RFC 6531 §3.7.4):
    // from a server that offered SMTPUTF8 it is the refusal checkSmtputf8 foresees, not a no-such-user.
    if (target.requiresSmtputf8 && reply.code >= 500 && reply.enhanced?.subject === 6 && reply.enhanced.detail === 7) {
      this.settle(target, { verdict: 'unknown', reason: 'smtputf8-unsupported', description: `${said}: it takes no non-ASCII address there, which says nothing of the mailbox`, reply: ev });
      return;
    }
    switch (classifyRcpt(reply)) {
      case 'accepted':
        if (this.backupWithoutProbe()) {
          this.settle(target, { verdict: 'unknown', reason: 'catch-all-unknown', description: `${said}, but it is a backup MX that refused no random local part here, and a backup accepts for the domain whatever its primary would answer`, reply: ev });
          return;
        }
        this.settle(target, { verdict: 'deliverable', reason: 'accepted', description: said, reply: ev });
        return;
      case 'rejected':
        this.settle(target, { verdict: 'undeliverable', reason: 'rejected-at-rcpt', description: said, reply: ev });
        return;
      case 'refused': {
        const failure: Failure = { reason: 'refused-at-rcpt', description: `${said}: a refusal of us (policy), not of the address`, reply: ev, definite: true };
        this.fail(failure);
        this.settle(target, { verdict: 'unknown', ...failure });
        return;
      }
      case 'greylisted': {
        const failure: Failure = { reason: 'greylisted', description: `${said} (greylisting: retry later)`, reply: ev, definite: false };
        this.out.greylisted = failure;
        this.settle(target, { verdict: 'unknown', ...failure });
        return;
      }
      case 'mailbox-full':
        this.settle(target, { verdict: 'unknown', reason: 'tempfail-at-rcpt', description: `${said} (the mailbox is full: it exists, and takes no mail now)`, reply: ev });
        return;
      case 'protocol-error':
        this.settle(target, { verdict: 'unknown', reason: 'protocol-error', description: `${said} (about the dialogue, not the mailbox)`, reply: ev });
        return;
      default:
        this.settle(target, { verdict: 'unknown', reason: 'tempfail-at-rcpt', description: `${said} (temporary)`, reply: ev });
    }
  }

  /**
   * The current exchanger is a backup (a worse preference than the best) where the random local
   * part was not refused on this very address: its 250 proves nothing, since a backup MX queues
   * for the domain whatever the primary would answer (the catch-all state cached from the
   * primary says nothing of it). Only when the catch-all probe is on at all.
   */
  private backupWithoutProbe(): boolean {
    return this.deps.config.randomProbe && this.atBackup() && this.catchAllRefusedAt !== this.currentIp;
  }

  /** The current exchanger has a worse preference than the domain's best. */
  private atBackup(): boolean {
    if (!this.currentHost) return false;
    return this.currentHost.preference > Math.min(...this.input.mxHosts.map((h) => h.preference));
  }

  private async postmasterProbe(): Promise<void> {
    const step = await this.session!.rcptTo(`postmaster@${this.input.domain}`);
    if (step.kind !== 'reply') {
      this.out.postmaster = 'inconclusive';
      return;
    }
    let outcome = classifyRcpt(step.reply);
    if (outcome === 'rejected' && this.deps.config.postmasterProbe === 'fullpostmaster') {
      // RFC 5321 §4.5.1: "Postmaster" without a domain must be accepted too.
      const bare = await this.session!.rcptTo('Postmaster');
      outcome = bare.kind === 'reply' ? classifyRcpt(bare.reply) : 'tempfail';
    }
    this.out.postmaster = outcome === 'accepted' ? 'accepted' : outcome === 'rejected' ? 'refused' : 'inconclusive';
  }

  private settle(target: ProbeTarget, outcome: AddressOutcome): void {
    this.out.outcomes.set(target.address, outcome);
    const index = this.pending.indexOf(target);
    if (index >= 0) this.pending.splice(index, 1);
  }

  private openFailure(opened: Exclude<OpenResult, { kind: 'ready' }>): string {
    const noDetails = this.deps.config.noDetails;
    switch (opened.kind) {
      case 'rejected': {
        const ev = evidence(opened.stage, opened.reply, noDetails);
        const reason: VerdictReason = opened.stage === 'greeting' ? 'refused-at-greeting' : opened.stage === 'starttls' ? 'tls-unavailable' : 'refused-at-helo';
        return this.fail({
          reason,
          description: `${this.where()} refused us at ${opened.stage.toUpperCase()}: ${describeReply(ev)}`,
          reply: ev,
          definite: opened.reply.code >= 500,
        });
      }
      case 'tls-unavailable':
      case 'tls-failed':
        return this.fail({ reason: 'tls-unavailable', description: `${this.where()}: ${opened.detail}`, definite: false });
      default:
        return this.stepFailure(opened);
    }
  }

  private stepFailure(step: StepFailure<ClientStage>): string {
    const reason: VerdictReason =
      step.kind === 'timeout' ? 'timeout' : step.kind === 'error' ? 'protocol-error' : step.stage === 'connect' ? 'unreachable' : 'protocol-error';
    const cutShort: Failure['cutShort'] = step.kind === 'timeout' && step.cutShortMs !== undefined ? { kind: 'timer', afterMs: step.afterMs, leftMs: step.cutShortMs } : undefined;
    const detail =
      step.kind === 'timeout'
        ? `timed out at ${step.timedOutAt ?? step.stage} after ${step.afterMs} ms${cutShort === undefined ? '' : `, when the overall deadline of ${this.deps.config.timeouts.overall} ms (callout.timeouts.overall) ran out`}`
        : `${step.kind === 'error' ? 'protocol error' : 'connection failed'} at ${step.stage}: ${step.detail}`;
    return this.fail({ reason, description: `${this.where()} ${detail}`, definite: false, ...(cutShort === undefined ? {} : { cutShort }) });
  }

  /** Keeps the most informative failure; returns its description for the attempt's outcome. */
  private fail(failure: Failure): string {
    const current = this.out.failure;
    const rank = (f: Failure) => FAILURE_RANK.indexOf(f.reason) - (f.definite ? FAILURE_RANK.length : 0);
    if (!current || rank(failure) < rank(current)) this.out.failure = failure;
    return failure.description;
  }

  /**
   * A 421 (RFC 5321 §3.8): the server is closing the channel because it cannot serve us now. What
   * is left to ask goes to the next exchanger, never to a new connection here at once, which
   * would only hear the 421 again.
   */
  private closing(stage: SmtpStage, what: string, reply: SmtpReply): Conversation {
    const ev = evidence(stage, reply, this.deps.config.noDetails);
    const description = `${this.where()} answered ${what} with ${describeReply(ev)}: it is closing the connection`;
    this.fail({ reason: 'tempfail-at-rcpt', description, reply: ev, definite: false });
    return this.endAttempt(description, 'next-host');
  }

  /**
   * An RSET answered otherwise than 250 (RFC 5321 §4.1.1.5 asks for 250): an SMTP reply, so the
   * callout goes on on a new connection, whose first transaction needs no RSET. Remembered as a
   * failure: addresses left when the reconnects run out said "no exchanger could be tried".
   */
  private rsetRefused(reply: SmtpReply): string {
    const ev = evidence('rset', reply, this.deps.config.noDetails);
    return this.fail({ reason: 'protocol-error', description: `${this.where()} answered RSET with ${describeReply(ev)}, where RFC 5321 §4.1.1.5 asks for 250`, reply: ev, definite: false });
  }

  /**
   * After an RCPT, VRFY, RSET or MAIL after RSET that got no reply. A server that dropped the
   * connection (some do after an unknown recipient, ovh.net after RSET) is asked again on a new
   * one. One that let the step time out is a tarpit: asking it again would spend the overall
   * deadline three times over, and asking the next exchanger would ask a backup MX, which accepts
   * for the domain whatever the primary would answer (and may not have run the catch-all probe).
   * Its addresses stay unknown (timeout), as Exim defers. One that answered with what is no SMTP
   * reply is left alike: it says the same on a new connection. Reconnecting made three
   * connections of a callout to a server that stalls RSET, one per 452 "too many recipients".
   * Exim reopens once after an RSET or MAIL behind the random probe that failed, a timeout
   * included; here a server that stops answering once asked an unknown recipient (a tarpit
   * against address harvesting) is not asked more on a new connection: the domain is left alone
   * for cache.tempfail (verify/engine), and its next callout, the random local part's refusal
   * being on the domain record, sends no RSET.
   */
  private afterFailedStep(step: StepFailure<ClientStage>, outcome: string): Conversation {
    if (step.kind === 'closed') return this.endAttempt(outcome, 'reconnect');
    this.pending.length = 0;
    return this.endAttempt(outcome, 'done');
  }

  private endAttempt(outcome: string, next: Conversation): Conversation {
    const session = this.session!;
    this.out.attempts.push({
      host: this.currentHost?.name ?? '',
      address: this.currentIp,
      port: this.deps.config.port,
      tls: session.tls,
      outcome,
      durationMs: Math.round(this.deps.timers.now() - this.attemptStart),
      transcript: session.transcript.slice(this.transcriptFrom),
    });
    return next;
  }

  private skipAttempt(host: MxHost, ip: string, outcome: string): void {
    this.out.attempts.push({ host: host.name, address: ip, port: this.deps.config.port, tls: false, outcome, durationMs: 0, transcript: [] });
  }

  private where(): string {
    return hostAndAddress(this.currentHost?.name ?? '?', this.currentIp);
  }
}

/**
 * "mx.example.org [192.0.2.7]"; a host given by its address (call-forward hosts, an address
 * literal, [IPv6:...] too) is named once, as "[192.0.2.7]".
 */
function hostAndAddress(name: string, ip: string): string {
  const given = name.replace(/^\[(?:IPv6:)?(.*)\]$/i, '$1');
  return given.toLowerCase() === ip.toLowerCase() ? `[${ip}]` : `${name} [${ip}]`;
}

export function probeDomain(deps: ProbeDeps, input: DomainProbeInput): Promise<DomainProbeOutput> {
  return new DomainProbe(deps, input).run();
}

const TOKEN_ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';
const TOKEN_LENGTH = 12;
// One getrandom() call per 256 tokens instead of one per callout.
const entropy = Buffer.alloc(TOKEN_LENGTH * 256);
let entropyUsed = entropy.length;

function randomToken(): string {
  if (entropyUsed + TOKEN_LENGTH > entropy.length) {
    randomFillSync(entropy);
    entropyUsed = 0;
  }
  let token = '';
  for (let i = 0; i < TOKEN_LENGTH; i++) token += TOKEN_ALPHABET[entropy[entropyUsed + i]! % TOKEN_ALPHABET.length];
  entropyUsed += TOKEN_LENGTH;
  return token;
}

