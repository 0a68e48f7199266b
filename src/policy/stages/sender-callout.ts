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
 *   its deadline (an exchanger that times out) is remembered for a day: the retry, whose own
 *   callout again outlasts the deadline, gets that verdict and its action instead of another
 *   "in progress" (LateVerdicts).
 *
 * CONFIGURATION
 *   resultHeader (X-Callout-Result on messages that go through), receiver, skipOnSpfPass, actions.{undeliverable,noMailDomain,risky,unknown,greylisted,inProgress},
 *   rejectCode/rejectEnhanced, deferCode/deferEnhanced, texts ({sender}, {reason} expand)
 */

import { hostname } from 'node:os';
import { z } from 'zod';
import { formatCalloutResult } from '../../checks/auth-results.js';
import { settleWithin } from '../../core/clock.js';
import type { Clock } from '../../core/clock.js';
import { RecentMap } from '../../core/memo.js';
import type { Mailbox } from '../../address/index.js';
import type { CalloutEngine } from '../../verify/engine.js';
import type { VerifyResult } from '../../verify/types.js';
import { compileTemplate } from '../template.js';
import type { Decision, StageContext, StageDefinition, StageLogger, StageVerdict } from '../types.js';
import { stageVerdict } from './verdict.js';

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
  rejectEnhanced: z.string().regex(/^5\.\d{1,3}\.\d{1,3}$/).default('5.7.1'),
  deferCode: z.number().int().min(400).max(499).default(450),
  deferEnhanced: z.string().regex(/^4\.\d{1,3}\.\d{1,3}$/).default('4.7.1'),
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
    receiver: z.string().optional(),
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
  const rejectText = compileTemplate(opts.rejectText, placeholders);
  const deferText = compileTemplate(opts.deferText, placeholders);
  const inProgressText = compileTemplate(opts.inProgressText, placeholders);
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

/** Late unknown verdicts a stage remembers (core/memo RecentMap: up to twice as many). */
const LATE_VERDICT_LIMIT = 10_000;
/** How long one stands in for a callout to the same address again still running at the deadline. */
const LATE_VERDICT_MS = 86_400_000;

/**
 * The unknown verdict of a callout that was still running at its deadline, by address. The
 * engine keeps an unknown answer only `cache.tempfail` (60 s) and a client retries minutes
 * later, so a callout to an exchanger that times out (a firewall that drops us, a primary that
 * is down, a greeting slower than the deadline) was again still running at the deadline, and
 * the address was deferred "in progress" on every retry until the mail bounced, where a callout
 * that fails at once is answered by actions.unknown (DUNNO). Definite verdicts are not kept: the
 * engine caches them for hours, and a stale one must not reject.
 */
export class LateVerdicts {
  private readonly recent = new RecentMap<{ result: VerifyResult; at: number }>(LATE_VERDICT_LIMIT);

  constructor(private readonly clock: Clock) {}

  remember(address: string, result: VerifyResult): void {
    // Without its dialogue (attempts and their transcripts): only the verdict is answered with.
    if (result.verdict === 'unknown') this.recent.set(address, { result: { ...result, attempts: [], mxHosts: [] }, at: this.clock.now() });
    else this.recent.delete(address);
  }

  recall(address: string): VerifyResult | undefined {
    const known = this.recent.get(address, undefined);
    if (!known || this.clock.now() - known.at > LATE_VERDICT_MS) return undefined;
    return { ...known.result, description: `${known.result.description} (the previous callout's answer: this one was still running at the deadline)` };
  }
}

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
      (ended) => late.remember(mailbox.address, ended),
      (err: unknown) => log.warn({ address: mailbox.address, err: String(err) }, 'background callout failed'),
    );
    return late.recall(mailbox.address);
  });
}

/** The verdict, or undefined when the deadline came first (the verification goes on). */
export async function withinDeadline<T>(work: Promise<T>, ctx: StageContext): Promise<T | undefined> {
  const remaining = ctx.deadline - ctx.clock.now();
  if (remaining <= 0) return undefined;
  return settleWithin(work, remaining, () => undefined);
}

export const senderCalloutStage: StageDefinition<CalloutActionOptions> = {
  name: 'sender-callout',
  defaultStates: ['RCPT'],
  options,
  create(opts, deps) {
    const verdict = stageVerdict('sender-callout');
    // os.hostname() is a system call: once per stage, not once per answer.
    const receiver = opts.receiver ?? hostname();
    const calloutDecision = calloutDecider(opts);
    const late = new LateVerdicts(deps.clock);
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
