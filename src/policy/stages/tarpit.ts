/**
 * NAME
 *   stages/tarpit - slow down, then refuse, clients that send many rejected recipients
 *
 * DESCRIPTION
 *   RFC 2505 §2 asks an MTA to be able to slow down and refuse hosts that probe for valid
 *   addresses (directory harvesting). Postfix does it inside smtpd per connection
 *   (smtpd_error_sleep_time 1s, smtpd_soft_error_limit 10, smtpd_hard_error_limit 20); this
 *   stage does it for the rejections callout decides, per connection and per client over a
 *   window, so a harvester that reconnects for every probe is caught too.
 *
 *   Which recipients were rejected is only known once the pipeline has answered, so the stage
 *   counts in Stage.observe(), which sees every answer whichever stage decided it: an answer
 *   starting with 5 (or REJECT), other than the stage's own refusal, counts one error for the
 *   client in two counters,
 *     per connection  client address + `client_port` (+ `server_address`/`server_port`), for
 *                     an hour. Postfix sends no connection id, but an smtpd process serves one
 *                     connection at a time and the client's source port tells connections
 *                     apart; the server end is in the key because clustered servers share the
 *                     store and one source port may reach two of them at once. Postfix's own
 *                     error counters are per connection too, so a harvester that starts a new
 *                     MAIL transaction every few recipients does not start again from zero.
 *                     Postfix forgives a connection's errors once a message is received. With
 *                     check_policy_service in smtpd_end_of_data_restrictions the stage sees
 *                     that too: an END-OF-MESSAGE request with recipient_count > 0 that the
 *                     pipeline lets through is the message Postfix is about to queue, and the
 *                     connection's errors are forgiven then (the stage answers nothing else
 *                     there). Without such requests it forgives them when the connection
 *                     starts a new message after one in which at least as many recipients
 *                     were let through as were rejected (that message could be delivered: a
 *                     bulk sender's message with a stale address among good ones). A
 *                     harvester's messages are rejected throughout, and one that slips a
 *                     valid recipient (postmaster@, which is always let through) among its
 *                     probes is not forgiven either. That rule is blind to the recipients
 *                     Postfix rejects after callout let them through (see below), which a
 *                     harvester can add to every message to be forgiven; so once a server
 *                     end (server_address/server_port) has sent an END-OF-MESSAGE request, it
 *                     is used no more on that server end for a day (DELIVERY_MARK_TTL_MS;
 *                     the mark, written at most once an hour per process, lasts up to an
 *                     hour more): marked per server end, not per connection, because a
 *                     harvester's connections never reach DATA.
 *                     Without a usable `client_port` (Postfix before 3.0, or "unknown") it
 *                     falls back to one message: client address + Postfix `instance`, the
 *                     only narrower scope a request names.
 *     per client      client address over perClient.window (sliding, in the shared store),
 *                     or its network with perClient.ipv4Prefix / ipv6Prefix (32 and 128: by
 *                     address). 64 catches a harvester probing from a new address of its /64
 *                     each time, but joins the hosts that share one: a large provider's
 *                     outbound servers do (Gmail's share a /64), and the stale recipients of
 *                     all its users would then refuse all its mail
 *   Errors past a soft limit delay every answer to the client (also the rejection itself)
 *   by sleep × errors past the limit, at most maxSleep and never past the decision deadline
 *   less a margin, so Postfix's policy timeout is never hit. At a hard limit evaluate()
 *   answers hardCode (421 4.7.0 by default, which makes Postfix answer and disconnect, as
 *   its hard_error_limit does; a 5xx code rejects instead). Under stress (`stress=yes`: all of
 *   Postfix's smtpd processes busy) nothing is delayed and errors past a soft limit refuse at
 *   once, as Postfix's own error limits drop to one then. Put the stage first: a stage
 *   that ends the pipeline before it keeps its evaluate() from running (observe still does).
 *   In warn mode nothing is delayed and the hard limit only warns. A delay still running when
 *   the stage is closed (at shutdown, after the drain; at a reload, once the configuration it
 *   replaced has been retired) ends at once: the answer goes out without the rest of it.
 *   Clients in exemptClients and SASL-authenticated ones (`sasl_username`, as the allowlist
 *   stage lets them past) are neither counted, delayed nor refused; nor is a request without
 *   a usable client address (Postfix's "unknown"), whose verdict is `none` and says so.
 *
 *   What the stage cannot see: recipients Postfix rejects itself, before asking the policy
 *   service (reject_unauth_destination, a reject_unlisted_recipient listed first) or after it
 *   let them through (a restriction listed after check_policy_service, and the implicit
 *   smtpd_reject_unlisted_recipient, which Postfix applies after all of
 *   smtpd_recipient_restrictions: the unknown users of a primary MX). Postfix never tells the
 *   policy service what it did, so no order of restrictions gets them counted here; those let
 *   through count as let through in the message's tally, which decides nothing where
 *   END-OF-MESSAGE requests come. Postfix's own smtpd_*_error_limit
 *   counts them and stays in force; the stage counts what its pipeline rejects, such as
 *   recipient-callforward verdicts.
 *   Counters: callout_tarpit_total{result=delayed|refused|warned} (warned: the hard limit
 *   reached in warn mode, where nothing is refused).
 *
 * CONFIGURATION
 *   perConnection.{soft,hard}, perClient.{window,soft,hard,ipv4Prefix,ipv6Prefix}, sleep,
 *   maxSleep (sleep at most maxSleep), hardCode,
 *   hardEnhanced (of hardCode's class), text ({client}, {errors} expand), exemptClients
 */

import { z } from 'zod';
import { sleep as timersSleep, type Timers } from '../../core/clock.js';
import { ConfigError } from '../../core/errors.js';
import { AddressSet } from '../../core/ip.js';
import { RecentMap } from '../../core/memo.js';
import { isRecord, parseJsonWithin } from '../../core/record.js';
import { clientAddress, countingKey, unusableClientAddress } from '../../checks/client-ip.js';
import { SlidingWindow, WINDOW_MIN_MS } from '../../checks/ratelimit/index.js';
import { isStressed, policyRequestFields } from '../protocol.js';
import { readCounter } from '../../store/semantics.js';
import { compileTemplate } from '../template.js';
import type { PolicyAttributes, Stage, StageContext, StageDefinition, StageDeps } from '../types.js';
import { formatDuration } from '../../config/duration.js';
import { stageKey } from '../../config/stage-key.js';
import { networkList } from '../../config/networks.js';
import { ACROSS_OPTIONS, checkedDuration, durationMs, durationOption } from './duration-option.js';
import { enhancedInCodeClass, enhancedStatusOption } from './status-option.js';

/** Longer than an SMTP connection stays busy; a source port reused later may inherit what is left. */
const CONNECTION_TTL_MS = 3_600_000;
/**
 * How long a server end that sent an END-OF-MESSAGE request is taken to send them still. A
 * harvest in a quiet hour must not get the weaker rule back; an administrator who removes
 * check_policy_service from smtpd_end_of_data_restrictions gets it back a day later (up to an
 * hour more: MARK_REWRITE_MS).
 */
const DELIVERY_MARK_TTL_MS = 86_400_000;
/**
 * How long a stage goes without writing again a mark it wrote, while END-OF-MESSAGE requests
 * come. Written at each, the day-long mark cost every message a store write (a SQLite commit,
 * a Redis SET) that changed nothing. It is written for DELIVERY_MARK_TTL_MS and this much more,
 * so every process sharing the store still finds it for at least the day after the last request,
 * whichever request last wrote it.
 */
const MARK_REWRITE_MS = 3_600_000;
/**
 * Server ends whose mark a stage remembers writing (between this and twice this many): a
 * server's own addresses and ports, never chosen by a client. One forgotten costs one write more.
 */
const MARKS_REMEMBERED = 256;
/** Time kept free before the deadline for the rest of the answer. */
const DEADLINE_MARGIN_MS = 250;

/**
 * A soft limit above the hard one never acts: the hard limit refuses first. Equal ones are
 * taken, as Postfix takes smtpd_soft_error_limit = smtpd_hard_error_limit: the client is
 * refused at the limit without being slowed before it.
 */
const softNotAboveHard = (key: 'perConnection' | 'perClient') => (o: { soft: number; hard: number }, ctx: z.RefinementCtx) => {
  if (o.soft <= o.hard) return;
  ctx.addIssue({ code: 'custom', path: ['soft'], params: { used: String(o.soft) }, message: `expected at most ${key}.hard (${o.hard}): the hard limit refuses before a soft limit above it could slow the client` });
};

const limits = (soft: number, hard: number) =>
  z
    .object({ soft: z.number().int().min(0).default(soft), hard: z.number().int().min(1).default(hard) })
    .strict()
    .superRefine(softNotAboveHard('perConnection'))
    .default({ soft, hard });

/**
 * A sleep above maxSleep made every delay maxSleep, the first one too, which the configuration
 * did not say. Equal ones are taken: every delay is then that one.
 */
function sleepNotAboveMax(o: { sleep: unknown; maxSleep: unknown }, ctx: z.RefinementCtx): void {
  const sleepMs = checkedDuration(o.sleep);
  const maxSleepMs = checkedDuration(o.maxSleep);
  if (!sleepMs.ok || !maxSleepMs.ok || sleepMs.ms <= maxSleepMs.ms) return;
  ctx.addIssue({ code: 'custom', path: ['sleep'], params: { used: formatDuration(sleepMs.ms) }, message: `expected at most maxSleep (${formatDuration(maxSleepMs.ms)}): every delay would be maxSleep, the first one too` });
}

/** The options without the checks across keys: deadlineCuts picks from it (zod picks from no refined object). */
const shape = z
  .object({
    perConnection: limits(10, 20),
    perClient: z
      .object({
        window: durationOption('1h', WINDOW_MIN_MS),
        soft: z.number().int().min(0).default(20),
        hard: z.number().int().min(1).default(50),
        ipv4Prefix: z.number().int().min(8).max(32).default(32),
        ipv6Prefix: z.number().int().min(16).max(128).default(128),
      })
      .strict()
      .superRefine(softNotAboveHard('perClient'))
      .default({ window: '1h', soft: 20, hard: 50, ipv4Prefix: 32, ipv6Prefix: 128 }),
    sleep: durationOption('1s'),
    maxSleep: durationOption('5s'),
    hardCode: z.number().int().min(400).max(599).default(421),
    hardEnhanced: enhancedStatusOption('45').optional(),
    text: z.string().default('Too many rejected recipients from {client}, try again later'),
    exemptClients: networkList(),
  })
  .strict();

const options = shape.superRefine(sleepNotAboveMax, ACROSS_OPTIONS).superRefine(enhancedInCodeClass('hardCode', 'hardEnhanced'), ACROSS_OPTIONS);

export type TarpitOptions = z.output<typeof options>;

/**
 * Waits `ms` milliseconds on `timers` (the request's StageContext.timers), or until `signal` is
 * aborted; core/clock sleep, or in tests one that records the delays it is asked for.
 */
export type Sleeper = (ms: number, timers: Timers, signal: AbortSignal) => Promise<unknown>;

interface Errors {
  connection: number;
  client: number;
}

/** Where the connection count lives, and the words the verdict uses for it. */
interface Scope {
  key: string;
  words: string;
  /** Per connection: where the message in progress is remembered, and this request's message. */
  message?: { key: string; instance: string };
  /** Per connection: the key that says its server end sends END-OF-MESSAGE requests (deliveryMark). */
  mark?: string;
}

/** The recipients of a connection's message in progress: let through and rejected so far. */
interface Tally {
  instance: string;
  accepted: number;
  rejected: number;
}

/**
 * The longest stored tally read: Postfix's instance is a short hexadecimal string, and even one
 * of a whole policy request (32 KiB by default) fits. A longer value (another program's on a
 * shared Redis) is no tally, not parsed at each request of its connection.
 */
const MAX_TALLY_LENGTH = 65_536;

function readTally(stored: string | undefined): Tally | undefined {
  const parsed = stored === undefined ? undefined : parseJsonWithin(stored, MAX_TALLY_LENGTH);
  if (!isRecord(parsed)) return undefined;
  const { i, a, r } = parsed;
  return typeof i === 'string' && typeof a === 'number' && typeof r === 'number' ? { instance: i, accepted: a, rejected: r } : undefined;
}

const writeTally = (tally: Tally) => JSON.stringify({ i: tally.instance, a: tally.accepted, r: tally.rejected });

/**
 * The key that marks a server end (server_address/server_port; one key for all before Postfix
 * 3.2, which sends neither) as sending END-OF-MESSAGE requests: servers sharing a store may be
 * configured apart, and so may two smtpd services of one Postfix.
 */
const deliveryMark = (fields: { serverAddress: string; serverPort: number }) => `tarpit:e:${fields.serverAddress}/${fields.serverPort}`;

/** The connection (or, without a client port, the message) a request belongs to; undefined when neither is known. */
function scopeOf(client: string, attributes: PolicyAttributes): Scope | undefined {
  const fields = policyRequestFields(attributes);
  if (fields.clientPort > 0) {
    const connection = `${client}/${fields.clientPort}/${fields.serverAddress}/${fields.serverPort}`;
    return {
      key: `tarpit:p:${connection}`,
      words: 'on this connection',
      mark: deliveryMark(fields),
      ...(fields.instance ? { message: { key: `tarpit:t:${connection}`, instance: fields.instance } } : {}),
    };
  }
  if (fields.instance) return { key: `tarpit:m:${client}:${fields.instance}`, words: 'in this message' };
  return undefined;
}

/**
 * Before a request is judged: the tally of its message. When the request starts a new message
 * of its connection, the connection's errors are forgiven if the previous message could have
 * been delivered (at least as many recipients let through as rejected) and its server end does
 * not send END-OF-MESSAGE requests (which forgive on delivery instead), and the new message's
 * tally starts. A connection's requests come one at a time, so no update races another
 * (unless a store slower than the decision deadline let an answer go before its counting ended,
 * policy/pipeline: a count may then be lost, which a failing store costs anyway).
 */
async function startMessage(store: StageDeps['store'], scope: Scope, marked: (mark: string) => Promise<boolean>): Promise<Tally> {
  const message = scope.message!;
  const previous = readTally((await store.get(message.key))?.value);
  if (previous?.instance === message.instance) return previous;
  if (previous && previous.accepted > 0 && previous.accepted >= previous.rejected && !(await marked(scope.mark!))) await store.delete(scope.key);
  const tally = { instance: message.instance, accepted: 0, rejected: 0 };
  await store.set(message.key, writeTally(tally), CONNECTION_TTL_MS);
  return tally;
}

function isRejection(action: string): boolean {
  return /^5\d\d\b/.test(action) || /^REJECT\b/i.test(action);
}

/** An answer that lets the recipient through (DUNNO, OK, PREPEND, WARN ...): no 4xx, 5xx, REJECT or DEFER. */
function letsThrough(action: string): boolean {
  return !/^[45]\d\d\b/.test(action) && !/^(REJECT|DEFER|DEFER_IF_PERMIT|DEFER_IF_REJECT)\b/i.test(action);
}

/** The tarpit stage with an injectable sleep (by default core/clock's, on the request's timers). */
export function createTarpit(opts: TarpitOptions, deps: StageDeps, sleep: Sleeper = timersSleep): Stage {
  const exempt = AddressSet.parse(opts.exemptClients);
  if (!exempt.ok) throw new ConfigError(`tarpit.exemptClients: ${exempt.reason}`);
  const sleepMs = durationMs(opts.sleep);
  const maxSleepMs = durationMs(opts.maxSleep);
  const window = new SlidingWindow(deps.store, deps.clock, durationMs(opts.perClient.window), 'tarpit:c:');
  const enhanced = opts.hardEnhanced ?? `${String(opts.hardCode).charAt(0)}.7.0`;
  const refusalText = compileTemplate(opts.text, { '{client}': 'client', '{errors}': 'errors' }, 'text');
  // evaluate() reads the counts; observe() of the same request reuses them (same attributes
  // object), with the tally of the request's message.
  const seen = new WeakMap<PolicyAttributes, { errors: Errors; tally: Tally | undefined; scope: Scope | undefined; hard: boolean }>();
  /**
   * Aborted by close() (a shutdown, or the generation a reload replaced): the delays still
   * running end at once and their answers go out. A delay may outlast the daemon's drain (a
   * raised policy.decisionTimeout), and its timer then ran on after the connection was closed.
   */
  const closed = new AbortController();
  /**
   * When this stage last wrote each server end's mark (deliveryMark): it is written again at
   * an END-OF-MESSAGE request MARK_REWRITE_MS later, or at once when the clock went back.
   */
  const marksWritten = new RecentMap<number>(MARKS_REMEMBERED);
  const markFresh = (mark: string, now: number) => {
    const written = marksWritten.get(mark, undefined);
    return written !== undefined && now >= written && now - written < MARK_REWRITE_MS;
  };
  async function writeMark(mark: string): Promise<void> {
    const now = deps.clock.now();
    await deps.store.set(mark, '1', DELIVERY_MARK_TTL_MS + MARK_REWRITE_MS);
    marksWritten.set(mark, now);
  }
  /**
   * Whether a server end sends END-OF-MESSAGE requests. A mark this stage wrote within
   * MARK_REWRITE_MS that the store no longer holds was lost with the store's data (a Redis
   * restarted without persistence): it is written again at once, since the END-OF-MESSAGE
   * requests that would have written it meanwhile skipped the write, and the weaker rule is not
   * used.
   */
  async function marked(mark: string): Promise<boolean> {
    if (await deps.store.get(mark)) return true;
    if (!markFresh(mark, deps.clock.now())) return false;
    await writeMark(mark);
    return true;
  }

  /**
   * The client's address (connections are told apart by it) and what the per-client window
   * counts it under; for a client not counted, the verdict's result and reason: one without a
   * usable address (Postfix's "unknown", which read as "exempt" in the log, like a client the
   * configuration exempts), an exempt one, and one that authenticated (Postfix sends
   * `sasl_username` only when it did the authentication). A site's own users are no
   * harvesters, and counting them per address would refuse them, and whoever shares their
   * address (a NAT, a carrier's CGNAT), for a stale list.
   */
  const clientOf = (ctx: StageContext): { address: string; counted: string } | { result: string; reason: string } => {
    const client = clientAddress(ctx.clientAddress);
    if (!client) return { result: 'none', reason: `${unusableClientAddress(ctx.clientAddress) ?? 'no usable client address'}: not counted` };
    if (ctx.attributes.sasl_username) return { result: 'exempt', reason: `client authenticated as ${ctx.attributes.sasl_username}: not counted` };
    if (exempt.value.has(ctx.clientAddress)) return { result: 'exempt', reason: `client ${ctx.clientAddress} is in exemptClients: not counted` };
    return { address: client.text, counted: countingKey(client, opts.perClient.ipv4Prefix, opts.perClient.ipv6Prefix) };
  };
  async function errorsOf(counted: string, scope: Scope | undefined): Promise<Errors> {
    const [connection, sample] = await Promise.all([scope ? deps.store.get(scope.key) : undefined, window.peek(counted)]);
    return { connection: readCounter(connection?.value), client: sample.estimate };
  }
  /**
   * Under stress (Postfix sends `stress=yes` when its smtpd processes are all busy) a delayed
   * answer holds a process that other clients wait for, and across a harvester's parallel
   * connections the delays would hold many. Postfix's own limits then drop to one error
   * (smtpd_hard_error_limit = ${stress?{1}:{20}}): likewise the stage delays nothing and
   * refuses what it would have delayed.
   */
  // Read from the one attribute: the whole request's fields are not needed on this path.
  const stressed = (ctx: StageContext) => isStressed(ctx.attributes);
  const pastSoft = (e: Errors) => e.connection > opts.perConnection.soft || e.client > opts.perClient.soft;
  const hardReached = (e: Errors, stress: boolean) => e.connection >= opts.perConnection.hard || e.client >= opts.perClient.hard || (stress && pastSoft(e));
  /**
   * An END-OF-MESSAGE request: its server end is marked as sending them (whoever the client),
   * and a message with recipients that the pipeline lets through is the delivery after which
   * Postfix forgives the connection's errors (smtpd resets its error count once the message is
   * queued): the stage forgives them too. Nothing is counted or delayed here.
   */
  async function messageEnded(ctx: StageContext, action: string): Promise<void> {
    const fields = policyRequestFields(ctx.attributes);
    const mark = deliveryMark(fields);
    if (!markFresh(mark, deps.clock.now())) await writeMark(mark);
    const client = clientOf(ctx);
    const scope = 'counted' in client ? scopeOf(client.address, ctx.attributes) : undefined;
    if (scope?.mark && fields.recipientCount > 0 && letsThrough(action)) await deps.store.delete(scope.key);
  }
  const describe = (e: Errors, scope: Scope | undefined) => `${scope ? `${e.connection} rejected ${scope.words}, ` : ''}${e.client.toFixed(1)} per ${opts.perClient.window}`;

  return {
    name: 'tarpit',
    states: new Set(['RCPT', 'END-OF-MESSAGE']),
    async evaluate(ctx) {
      // Only observed there (a delivery forgives): a refusal at the end of the message would
      // come after the harvest it is meant to stop, and costs a message already sent.
      if (ctx.state === 'END-OF-MESSAGE') return { stage: 'tarpit', result: 'end-of-message', reason: 'a delivery forgives the connection', decision: { kind: 'continue' } };
      const client = clientOf(ctx);
      if (!('counted' in client)) return { stage: 'tarpit', ...client, decision: { kind: 'continue' } };
      const scope = scopeOf(client.address, ctx.attributes);
      const tally = scope?.message ? await startMessage(deps.store, scope, marked) : undefined;
      const errors = await errorsOf(client.counted, scope);
      const stress = stressed(ctx);
      const hard = hardReached(errors, stress);
      // The refusal is counted in observe(), which knows whether it was sent (not in warn mode).
      seen.set(ctx.attributes, { errors, tally, scope, hard });
      if (hard) {
        const text = refusalText.fill({ client: ctx.clientAddress, errors: String(Math.round(Math.max(errors.connection, errors.client))) });
        const decision = opts.hardCode >= 500 ? { kind: 'reject' as const, code: opts.hardCode, enhanced, text } : { kind: 'defer' as const, code: opts.hardCode, enhanced, text };
        return { stage: 'tarpit', result: 'hard-limit', reason: `${stress && !hardReached(errors, false) ? 'soft limit passed under stress' : 'hard limit reached'}: ${describe(errors, scope)}`, decision, evidence: errors };
      }
      return { stage: 'tarpit', result: 'counted', reason: describe(errors, scope), decision: { kind: 'continue' }, evidence: errors };
    },
    async observe(ctx, outcome) {
      if (ctx.state === 'END-OF-MESSAGE') return messageEnded(ctx, outcome.action);
      const client = clientOf(ctx);
      if (!('counted' in client)) return;
      const judged = seen.get(ctx.attributes);
      const scope = judged ? judged.scope : scopeOf(client.address, ctx.attributes);
      let errors: Errors | undefined = judged?.errors;
      if (judged?.hard && (outcome.decidedBy === 'tarpit' || outcome.mode === 'warn')) deps.metrics?.increment('tarpit', { result: outcome.decidedBy === 'tarpit' ? 'refused' : 'warned' });
      // The tarpit's own refusal (a 5xx hardCode) is no rejected recipient: counting it would
      // keep a refused client refused for as long as it keeps trying, which a 421 does not.
      const rejected = isRejection(outcome.action) && outcome.decidedBy !== 'tarpit';
      // A stage before the tarpit that ended the pipeline kept evaluate() from running: the
      // message's tally is read here, so its rejections count towards forgiveness all the same.
      const tally = judged ? judged.tally : scope?.message ? await startMessage(deps.store, scope, marked) : undefined;
      if (scope?.message && tally && (rejected || letsThrough(outcome.action))) {
        if (rejected) tally.rejected += 1;
        else tally.accepted += 1;
        await deps.store.set(scope.message.key, writeTally(tally), CONNECTION_TTL_MS);
      }
      if (rejected) {
        const [connection, sample] = await Promise.all([
          scope ? deps.store.increment(scope.key, 1, CONNECTION_TTL_MS) : Promise.resolve(0),
          window.add(client.counted),
        ]);
        errors = { connection, client: sample.estimate };
      }
      errors ??= await errorsOf(client.counted, scope);
      const excess = Math.max(errors.connection - opts.perConnection.soft, errors.client - opts.perClient.soft);
      if (excess <= 0 || outcome.mode !== 'enforce' || stressed(ctx) || closed.signal.aborted) return;
      const delay = Math.min(sleepMs * excess, maxSleepMs, ctx.timeLeft() - DEADLINE_MARGIN_MS);
      if (delay <= 0) return;
      deps.metrics?.increment('tarpit', { result: 'delayed' });
      deps.log.info({ stage: 'tarpit', client: ctx.clientAddress, delayMs: Math.round(delay), errors }, 'tarpit: answer delayed');
      await sleep(Math.round(delay), ctx.timers, closed.signal);
    },
    async close() {
      closed.abort();
    },
  };
}

/**
 * What the decision deadline does to the sleep options of tarpit entry `index` of
 * policy.stages, one line per option it cuts short, keyed as every problem of a stage's option
 * is (config/stage-key): a delay never runs past the deadline less
 * DEADLINE_MARGIN_MS, so a longer maxSleep (maxSleep: 30s under the default 6 s
 * decisionTimeout) is never reached and every long delay is that bound instead, which the
 * configuration did not say. Warned about (by the daemon, at start and reload, and by `config
 * check`), not refused: a decisionTimeout lowered below the default maxSleep is allowed. sleep
 * is named too when even the first delay is cut.
 */
export function deadlineCuts(entry: Readonly<Record<string, unknown>>, index: number, decisionTimeoutMs: number): string[] {
  const checked = shape.pick({ sleep: true, maxSleep: true }).safeParse({ sleep: entry.sleep, maxSleep: entry.maxSleep });
  // A bad value is the stage's own ConfigError when it is made.
  if (!checked.success) return [];
  const parsed = checked.data;
  const boundMs = decisionTimeoutMs - DEADLINE_MARGIN_MS;
  const maxSleepMs = durationMs(parsed.maxSleep);
  if (maxSleepMs <= boundMs) return [];
  const cut = (key: 'sleep' | 'maxSleep', ms: number) =>
    `${stageKey(index, 'tarpit', key)}: ${formatDuration(ms)} is above policy.decisionTimeout (${formatDuration(decisionTimeoutMs)}) less ${DEADLINE_MARGIN_MS} ms: tarpit delays stop at ${formatDuration(Math.max(0, boundMs))}`;
  const sleepMs = durationMs(parsed.sleep);
  return [cut('maxSleep', maxSleepMs), ...(sleepMs > boundMs ? [cut('sleep', sleepMs)] : [])];
}

export const tarpitStage: StageDefinition<TarpitOptions> = {
  name: 'tarpit',
  defaultStates: ['RCPT', 'END-OF-MESSAGE'],
  options,
  create: (opts, deps) => createTarpit(opts, deps),
};
