/**
 * NAME
 *   stages/sender-callout - verify the envelope sender by callout
 *
 * DESCRIPTION
 *   Asks the callout engine about the sender and maps its verdict to an action. Only definite
 *   evidence rejects: a 5xx at RCPT from the sender's own exchanger (undeliverable), a domain
 *   that does not exist or publishes a null MX (no-mail-domain). Risky and unknown verdicts
 *   default to DUNNO, greylisting of our callout to a temporary failure so the sending server
 *   retries and our next callout gets a real answer.
 *   Cheaper evidence first: the null sender has nothing to verify, and a sender whose SPF
 *   passed (an earlier `spf` stage) is authorised by its domain, so no callout is made
 *   (counted as callouts skipped).
 *   The answer comes within the pipeline's deadline: a callout still running then is answered
 *   with DEFER_IF_PERMIT "verification in progress" (as Postfix's verify(8) answers 450 after
 *   its poll count) and goes on to warm the cache for the retry. One that ends unknown after
 *   its deadline (an exchanger that times out) is remembered for a day, in the store, so that
 *   every worker and every daemon on it knows it: the retry, whose own callout again outlasts
 *   the deadline, gets that verdict and its action instead of another "in progress"
 *   (LateVerdicts).
 *
 * CONFIGURATION
 *   resultHeader (X-Callout-Result on messages that go through), receiver, skipOnSpfPass, actions.{undeliverable,noMailDomain,risky,unknown,greylisted,inProgress},
 *   rejectCode/rejectEnhanced, deferCode/deferEnhanced, texts ({sender}, {reason} expand)
 */

import { hostname } from 'node:os';
import { z } from 'zod';
import { formatCalloutResult } from '../../checks/auth-results.js';
import { settleWithin, type Timers } from '../../core/clock.js';
import { describeError } from '../../core/errors.js';
import { isRecord, parseJsonWithin } from '../../core/record.js';
import type { Mailbox } from '../../address/index.js';
import { ASK_LATER, type Store, type StoredValue } from '../../store/types.js';
import type { CalloutEngine } from '../../verify/engine.js';
import { MAX_VERDICT_RECORD_LENGTH, PROBE_STATES, replyEvidenceOf } from '../../verify/cache.js';
import type { ProbeState, VerdictReason, VerifyResult } from '../../verify/types.js';
import { compileTemplate } from '../template.js';
import type { Decision, StageContext, StageDefinition, StageLogger, StageVerdict } from '../types.js';
import { stageVerdict } from './verdict.js';
import { enhancedStatusOption } from './status-option.js';

const actionKind = z.enum(['reject', 'defer', 'defer-if-permit', 'continue']);

export const calloutActionOptions = {
  actions: z
    .object({
      undeliverable: actionKind.default('reject'),
      noMailDomain: actionKind.default('reject'),
      risky: actionKind.default('continue'),
      unknown: actionKind.default('continue'),
      greylisted: actionKind.default('defer'),
      inProgress: actionKind.default('defer-if-permit'),
    })
    .strict()
    .default({ undeliverable: 'reject', noMailDomain: 'reject', risky: 'continue', unknown: 'continue', greylisted: 'defer', inProgress: 'defer-if-permit' }),
  rejectCode: z.number().int().min(500).max(599).default(550),
  // X.7.1, not X.1.7: in smtpd_recipient_restrictions Postfix reports a policy answer as
  // recipient status and rewrites X.1.7 (bad sender mailbox) into X.1.3 (bad destination).
  rejectEnhanced: enhancedStatusOption('5').default('5.7.1'),
  deferCode: z.number().int().min(400).max(499).default(450),
  deferEnhanced: enhancedStatusOption('4').default('4.7.1'),
};

const options = z
  .object({
    skipOnSpfPass: z.boolean().default(true),
    ...calloutActionOptions,
    rejectText: z.string().default('Sender address rejected: {reason}'),
    deferText: z.string().default('Sender address verification failed temporarily: {reason}'),
    inProgressText: z.string().default('Sender address verification in progress'),
    /** Add an X-Callout-Result header (src/checks/auth-results) to messages that go through. */
    resultHeader: z.boolean().default(false),
    /** The receiver named in that header; default this host's name. */
    receiver: z.string().min(1, "expected this host's name, not an empty string").optional(),
  })
  .strict();

export type CalloutActionOptions = z.output<typeof options>;

type ActionKey = keyof CalloutActionOptions['actions'];

export function actionKeyFor(result: VerifyResult): ActionKey | undefined {
  switch (result.verdict) {
    case 'undeliverable':
      return 'undeliverable';
    case 'no-mail-domain':
      return 'noMailDomain';
    case 'risky':
      return 'risky';
    case 'unknown':
      return result.reason === 'greylisted' ? 'greylisted' : 'unknown';
    default:
      return undefined;
  }
}

/**
 * Maps a callout verdict to a Decision with the configured codes and texts; the texts are
 * compiled once, for the stage ({sender} and {recipient} both name the address verified).
 */
export function calloutDecider(
  opts: Pick<CalloutActionOptions, 'actions' | 'rejectCode' | 'rejectEnhanced' | 'deferCode' | 'deferEnhanced'> & { rejectText: string; deferText: string; inProgressText: string },
): (key: ActionKey | undefined, address: string, reason: string) => Decision {
  const placeholders = { '{sender}': 'address', '{recipient}': 'address', '{reason}': 'reason' } as const;
  const rejectText = compileTemplate(opts.rejectText, placeholders, 'rejectText');
  const deferText = compileTemplate(opts.deferText, placeholders, 'deferText');
  const inProgressText = compileTemplate(opts.inProgressText, placeholders, 'inProgressText');
  return (key, address, reason) => {
    if (!key) return { kind: 'continue' };
    const values = { address, reason };
    switch (opts.actions[key]) {
      case 'reject':
        return { kind: 'reject', code: opts.rejectCode, enhanced: opts.rejectEnhanced, text: rejectText.fill(values) };
      case 'defer':
        return { kind: 'defer', code: opts.deferCode, enhanced: opts.deferEnhanced, text: (key === 'inProgress' ? inProgressText : deferText).fill(values) };
      case 'defer-if-permit':
        return { kind: 'defer-if-permit', enhanced: opts.deferEnhanced, text: (key === 'inProgress' ? inProgressText : deferText).fill(values) };
      case 'continue':
        return { kind: 'continue' };
    }
  };
}

/** How long one stands in for a callout to the same address again still running at the deadline. */
const LATE_VERDICT_MS = 86_400_000;
/**
 * How long the recall may wait for the store. It runs after the deadline, within the
 * pipeline's grace of 500 ms (a stage later than that is a fault); a store slower than this
 * (Redis hung) is answered "in progress", as if nothing were remembered.
 */
const LATE_RECALL_MS = 200;

/**
 * The unknown verdict of a callout that was still running at its deadline, by address. The
 * engine keeps an unknown answer only `cache.tempfail` (60 s) and a client retries minutes
 * later, so a callout to an exchanger that times out (a firewall that drops us, a primary that
 * is down, a greeting slower than the deadline) was again still running at the deadline, and
 * the address was deferred "in progress" on every retry until the mail bounced, where a callout
 * that fails at once is answered by actions.unknown (DUNNO). Definite verdicts are not kept: the
 * engine caches them for hours, and a stale one must not reject.
 * Kept in the store (`late:ADDRESS`, after the engine's own namespace), shared by every process
 * on it: the retry may reach another worker of `policy.workers` or another daemon on the same
 * Redis. Only requests that reach the deadline read or write it. A stored verdict longer than
 * the cache's records may be (verify/cache MAX_VERDICT_RECORD_LENGTH, 16,384 characters) is
 * none, not parsed: it holds the same fields.
 */
export class LateVerdicts {
  constructor(
    private readonly store: Store,
    /** The engine's keyPrefix (callforwardNamespace's `cf:…:` for call-forward), so each engine's verdicts stay apart. */
    private readonly prefix = '',
  ) {}

  async remember(address: string, result: VerifyResult): Promise<void> {
    const key = this.key(address);
    if (result.verdict !== 'unknown') return this.store.delete(key);
    // Without its dialogue (attempts, exchangers, transcripts): only the verdict is answered with.
    const { attempts: _attempts, mxHosts: _mxHosts, ...verdict } = result;
    await this.store.set(key, JSON.stringify(verdict), LATE_VERDICT_MS);
  }

  /**
   * The remembered verdict, at once when the store can tell (Store.peek), else within
   * LATE_RECALL_MS on timers (the request's StageContext.timers); undefined when none is, or the
   * store fails or is slower.
   */
  recall(address: string, timers: Timers): VerifyResult | undefined | Promise<VerifyResult | undefined> {
    const key = this.key(address);
    const peeked = this.store.peek(key);
    if (peeked !== ASK_LATER) return lateVerdict(address, peeked);
    const read = this.store.get(key).then(
      (stored) => lateVerdict(address, stored),
      () => undefined,
    );
    return settleWithin(read, LATE_RECALL_MS, () => undefined, timers);
  }

  private key(address: string): string {
    return `${this.prefix}late:${address}`;
  }
}

/** A remembered verdict as answered; a value that does not parse, or is not unknown, is none. */
function lateVerdict(address: string, stored: Readonly<StoredValue> | undefined): VerifyResult | undefined {
  if (!stored) return undefined;
  const known = parseJsonWithin(stored.value, MAX_VERDICT_RECORD_LENGTH);
  if (!isRecord(known)) return undefined;
  if (known.verdict !== 'unknown' || typeof known.reason !== 'string' || typeof known.description !== 'string') return undefined;
  // Field by field: another version on the same store (workers and daemons are upgraded one at a
  // time) may lack one or write it otherwise, and the X-Callout-Result header threw on a missing
  // source or a null reply, a stage fault that faultAction DEFER answers with 451.
  const reply = replyEvidenceOf(known.reply);
  const probe = (state: unknown): ProbeState => (PROBE_STATES.has(state) ? (state as ProbeState) : 'not-run');
  const number = (n: unknown): number => (typeof n === 'number' && Number.isFinite(n) ? n : 0);
  return {
    address,
    verdict: 'unknown',
    reason: known.reason as VerdictReason,
    description: `${known.description} (the previous callout's answer: this one was still running at the deadline)`,
    ...(reply ? { reply } : {}),
    catchAll: probe(known.catchAll),
    postmaster: probe(known.postmaster),
    source: SOURCES.has(known.source) ? (known.source as VerifyResult['source']) : 'probe',
    stale: known.stale === true,
    mxHosts: [],
    attempts: [],
    checkedAt: number(known.checkedAt),
    durationMs: number(known.durationMs),
  };
}

const SOURCES: ReadonlySet<unknown> = new Set<VerifyResult['source']>(['probe', 'address-cache', 'domain-cache', 'none']);

/**
 * The engine's verdict on mailbox: at once when it is cached (CalloutEngine.verifyNow), else
 * when the callout ends. When the deadline comes first the callout goes on (its answer warms the
 * cache for the client's retry) and the answer is the unknown verdict the previous such callout
 * ended with (LateVerdicts), else undefined.
 */
export function verifyWithinDeadline(
  engine: CalloutEngine,
  mailbox: Mailbox,
  ctx: StageContext,
  log: StageLogger,
  late: LateVerdicts,
): VerifyResult | Promise<VerifyResult | undefined> {
  const cached = engine.verifyNow(mailbox);
  if (cached) return cached;
  const pending = engine.verify(mailbox);
  return withinDeadline(pending, ctx).then((result) => {
    if (result) return result;
    pending.then(
      // describeError, as every other log line: String() led with the class ("StoreError: ...").
      (ended) => late.remember(mailbox.address, ended).catch((err: unknown) => log.warn({ address: mailbox.address, err: describeError(err) }, 'late callout verdict not stored')),
      (err: unknown) => log.warn({ address: mailbox.address, err: describeError(err) }, 'background callout failed'),
    );
    return late.recall(mailbox.address, ctx.timers);
  });
}

/**
 * The verdict, or undefined when the deadline came first (the verification goes on); waited for
 * on ctx.timers, which ctx.timeLeft() counts down on.
 */
export async function withinDeadline<T>(work: Promise<T>, ctx: StageContext): Promise<T | undefined> {
  const remaining = ctx.timeLeft();
  if (remaining <= 0) return undefined;
  return settleWithin(work, remaining, () => undefined, ctx.timers);
}

export const senderCalloutStage: StageDefinition<CalloutActionOptions> = {
  name: 'sender-callout',
  defaultStates: ['RCPT'],
  options,
  earlierReads: (opts) => (opts.skipOnSpfPass ? [{ option: 'skipOnSpfPass', stage: 'spf', effect: 'no callout is skipped for an SPF pass', whenAbsent: false }] : []),
  create(opts, deps) {
    const verdict = stageVerdict('sender-callout');
    // os.hostname() is a system call: once per stage, not once per answer.
    const receiver = opts.receiver ?? hostname();
    const calloutDecision = calloutDecider(opts);
    const late = new LateVerdicts(deps.store);
    return {
      name: 'sender-callout',
      states: new Set(['RCPT', 'MAIL']),
      evaluate(ctx) {
        if (!deps.engine) return verdict('none', 'callouts are not configured (callout.helo is not set)', { kind: 'continue' });
        if (!ctx.sender) return verdict('none', 'sender does not parse', { kind: 'continue' });
        if (ctx.sender.kind === 'null') return verdict('none', 'null sender: nothing to verify', { kind: 'continue' });
        if (opts.skipOnSpfPass && ctx.earlier.get('spf')?.result === 'pass') {
          deps.metrics?.increment('callouts_skipped', { reason: 'spf-pass' });
          return verdict('skipped', 'SPF passed: the domain authorised this client, no callout needed', { kind: 'continue' });
        }
        const address = ctx.sender.mailbox.address;
        const answer = (result: VerifyResult | undefined): StageVerdict => {
          if (!result) {
            return verdict('in-progress', `verification of ${address} still running at the deadline`, calloutDecision('inProgress', address, 'in progress'));
          }
          const evidence = { verdict: result.verdict, reason: result.reason, source: result.source, reply: result.reply, catchAll: result.catchAll };
          const decided = verdict(result.verdict, `${result.reason}: ${result.description}`, calloutDecision(actionKeyFor(result), address, result.description), evidence);
          return opts.resultHeader ? { ...decided, headers: [formatCalloutResult(result, receiver)] } : decided;
        };
        const result = verifyWithinDeadline(deps.engine, ctx.sender.mailbox, ctx, deps.log, late);
        return result instanceof Promise ? result.then(answer) : answer(result);
      },
    };
  },
};
