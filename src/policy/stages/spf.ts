/**
 * NAME
 *   stages/spf - SPF (RFC 7208) as a policy stage, with per-result actions and headers
 *
 * DESCRIPTION
 *   Checks the MAIL FROM identity (postmaster@HELO for the null sender) of the request's
 *   client, and, with checkHelo, the HELO identity first: a HELO fail is conclusive (RFC 7208
 *   §2.3) and decides; otherwise the MAIL FROM result does. The verdict's result is the RFC's
 *   lower-case word, so later stages can read `earlier.get('spf')?.result` (the sender callout
 *   skips senders whose SPF passed).
 *   A message with several recipients gives one RCPT request per recipient; the evaluation is
 *   remembered per instance, client, HELO and sender for cacheSeconds, so it runs once. A
 *   temperror is not remembered, so a retry asks again. A request without a usable client
 *   address (Postfix's "unknown") is not checked: result none, no headers, and it continues
 *   whatever actions.none says.
 *   Authentication-Results (RFC 8601) and Received-SPF (RFC 7208 §9.1) go into the verdict's
 *   headers, which the pipeline PREPENDs once per message.
 *
 * CONFIGURATION
 *   actions.{pass,fail,softfail,neutral,none,temperror,permerror}: reject | defer |
 *   defer-if-permit | continue (defaults: fail reject, temperror defer, the rest continue);
 *   rejectCode (550), deferCode (451); enhanced codes follow RFC 7372 §3.2: X.7.23 for
 *   fail, softfail, neutral and none, X.7.24 for temperror and permerror. rejectText and
 *   deferText expand {result}, {domain}, {sender}, {ip} and {reason} (the exp= explanation of
 *   a fail, else the problem). checkHelo, authservId, receiver (%{r} and receiver=),
 *   authenticationResults, receivedSpf, cacheSeconds, timeoutMs (with the HELO check, for both
 *   checks together; measured on the monotonic clock, as the decision deadline is), limits.
 */

import { z } from 'zod';
import { formatAuthenticationResults, formatReceivedSpf } from '../../checks/auth-results.js';
import { unusableClientAddress } from '../../checks/client-ip.js';
import { evaluateSpf } from '../../checks/spf/index.js';
import { ownCopy } from '../../core/memo.js';
import type { SpfResult, SpfVerdict } from '../../checks/spf/types.js';
import { compileTemplate } from '../template.js';
import { authservIdOption } from './authserv-id-option.js';
import type { Decision, StageContext, StageDefinition, StageVerdict } from '../types.js';

const action = z.enum(['reject', 'defer', 'defer-if-permit', 'continue']);
type Action = z.output<typeof action>;

const DEFAULT_ACTIONS: Record<SpfResult, Action> = {
  pass: 'continue',
  fail: 'reject',
  softfail: 'continue',
  neutral: 'continue',
  none: 'continue',
  temperror: 'defer',
  permerror: 'continue',
};

const options = z
  .object({
    actions: z
      .object({
        pass: action.default(DEFAULT_ACTIONS.pass),
        fail: action.default(DEFAULT_ACTIONS.fail),
        softfail: action.default(DEFAULT_ACTIONS.softfail),
        neutral: action.default(DEFAULT_ACTIONS.neutral),
        none: action.default(DEFAULT_ACTIONS.none),
        temperror: action.default(DEFAULT_ACTIONS.temperror),
        permerror: action.default(DEFAULT_ACTIONS.permerror),
      })
      .strict()
      .default(DEFAULT_ACTIONS),
    rejectCode: z.number().int().min(500).max(599).default(550),
    deferCode: z.number().int().min(400).max(499).default(451),
    rejectText: z.string().default('SPF {result} for {domain}: {reason}'),
    deferText: z.string().default('SPF {result} for {domain}, try again later: {reason}'),
    checkHelo: z.boolean().default(false),
    /** RFC 8601 authserv-id; default this host's name. */
    authservId: authservIdOption(),
    /** This host's name for %{r} and receiver=; default authservId. */
    receiver: z.string().min(1, "expected this host's name, not an empty string").optional(),
    authenticationResults: z.boolean().default(true),
    receivedSpf: z.boolean().default(true),
    cacheSeconds: z.number().int().min(0).max(3600).default(300),
    /** Bound of one evaluation (RFC 7208 §4.6.4 asks for at least 20 s); the pipeline deadline also bounds it. */
    timeoutMs: z.number().int().min(100).max(120_000).default(20_000),
    limits: z
      .object({
        dnsTerms: z.number().int().min(1).max(100).default(10),
        voidLookups: z.number().int().min(0).max(100).default(2),
      })
      .strict()
      .default({ dnsTerms: 10, voidLookups: 2 }),
  })
  .strict();

export type SpfStageOptions = z.output<typeof options>;

const MAX_REMEMBERED = 10_000;

/** The verdict that decides, and every identity checked (for Authentication-Results). */
interface Evaluated {
  deciding: SpfVerdict;
  all: SpfVerdict[];
}

interface Remembered {
  verdicts: Promise<Evaluated>;
  expiresAt: number;
}

function enhancedCode(result: SpfResult, klass: 4 | 5): string {
  return `${klass}.7.${result === 'temperror' || result === 'permerror' ? 24 : 23}`;
}

function reasonOf(verdict: SpfVerdict): string {
  if (verdict.explanation !== undefined) return verdict.explanation;
  if (verdict.problem !== undefined) return verdict.problem;
  if (verdict.mechanism !== undefined) return `${verdict.ip} matched ${verdict.mechanism}`;
  return `${verdict.ip} matched no mechanism`;
}

export const spfStage: StageDefinition<SpfStageOptions> = {
  name: 'spf',
  defaultStates: ['RCPT'],
  options,
  create(opts, deps) {
    const receiver = opts.receiver ?? opts.authservId;
    const remembered = new Map<string, Remembered>();

    const placeholders = { '{result}': 'result', '{domain}': 'domain', '{sender}': 'sender', '{ip}': 'ip', '{reason}': 'reason' } as const;
    const rejectText = compileTemplate(opts.rejectText, placeholders, 'rejectText');
    const deferText = compileTemplate(opts.deferText, placeholders, 'deferText');

    function decide(verdict: SpfVerdict): Decision {
      const fill = (template: typeof rejectText): string => template.fill({ result: verdict.result, domain: verdict.domain, sender: verdict.sender, ip: verdict.ip, reason: reasonOf(verdict) });
      switch (opts.actions[verdict.result]) {
        case 'reject':
          return { kind: 'reject', code: opts.rejectCode, enhanced: enhancedCode(verdict.result, 5), text: fill(rejectText) };
        case 'defer':
          return { kind: 'defer', code: opts.deferCode, enhanced: enhancedCode(verdict.result, 4), text: fill(deferText) };
        case 'defer-if-permit':
          return { kind: 'defer-if-permit', enhanced: enhancedCode(verdict.result, 4), text: fill(deferText) };
        case 'continue':
          return { kind: 'continue' };
      }
    }

    /** The verdicts without their traces, which nothing here reads and a sender's records can make hundreds of KiB long. */
    async function evaluateAll(ctx: StageContext, mailFrom: string): Promise<Evaluated> {
      // One bound for both identities: a slow HELO check must not leave the MAIL FROM check a
      // whole budget of its own, past the decision deadline (a stage fault, not a temperror).
      // All of it is measured on ctx.timers, the monotonic clock the deadline counts down on:
      // on ctx.clock, a wall clock stepped forward ended a check as temperror at once, one
      // stepped back let it overrun.
      const reserve = Math.max(0, ctx.timeLeft() - opts.timeoutMs);
      const monotonic = () => ctx.timers.now();
      const spfOptions = () => ({ resolver: deps.resolver, clock: ctx.clock, monotonic, receiver, limits: { ...opts.limits, elapsedMs: ctx.timeLeft() - reserve } });
      // The verdicts are remembered for cacheSeconds and hold these strings (the HELO name too):
      // as slices of the request's chunk they kept 10,000 whole requests alive (core/memo ownCopy).
      const request = { ip: ownCopy(ctx.clientAddress), mailFrom: ownCopy(mailFrom), helo: ownCopy(ctx.heloName) };
      const withoutTrace = (verdict: SpfVerdict): SpfVerdict => ({ ...verdict, trace: [] });
      const helo = opts.checkHelo && ctx.heloName !== '' ? withoutTrace(await evaluateSpf({ ...request, identity: 'helo' }, spfOptions())) : undefined;
      if (helo?.result === 'fail') return { deciding: helo, all: [helo] };
      const mailFromVerdict = withoutTrace(await evaluateSpf(request, spfOptions()));
      return { deciding: mailFromVerdict, all: helo === undefined ? [mailFromVerdict] : [mailFromVerdict, helo] };
    }

    /** The verdicts of this message's sender, evaluated once for all its recipients. */
    function verdictsFor(ctx: StageContext, mailFrom: string): Promise<Evaluated> {
      const now = ctx.clock.now();
      const key = [ctx.instance, ctx.clientAddress, ctx.heloName, mailFrom].join('\0');
      const known = remembered.get(key);
      if (known !== undefined && known.expiresAt > now) return known.verdicts;
      remembered.delete(key);
      const verdicts = evaluateAll(ctx, mailFrom);
      if (opts.cacheSeconds > 0) {
        remembered.set(key, { verdicts, expiresAt: now + opts.cacheSeconds * 1000 });
        while (remembered.size > MAX_REMEMBERED) {
          const oldest = remembered.keys().next();
          if (oldest.done === true) break;
          remembered.delete(oldest.value);
        }
        verdicts.then(
          (evaluated) => {
            if (evaluated.deciding.result === 'temperror') remembered.delete(key);
          },
          () => remembered.delete(key),
        );
      }
      return verdicts;
    }

    return {
      name: 'spf',
      states: new Set(['MAIL', 'RCPT']),
      async evaluate(ctx): Promise<StageVerdict> {
        // check_host() cannot run without an address, and an spf=none header would tell the
        // message's readers that the sender's domain publishes no SPF policy.
        const unusable = unusableClientAddress(ctx.clientAddress);
        if (unusable !== undefined) return { stage: 'spf', result: 'none', reason: unusable, decision: { kind: 'continue' } };
        // The parsed mailbox gives the semantic local part (quotes removed) and the A-label domain;
        // a null sender written "<>" (as sender-syntax and sender-callout read it) is the empty one.
        const mailFrom =
          ctx.sender?.kind === 'mailbox' ? `${ctx.sender.mailbox.localPart}@${ctx.sender.mailbox.asciiDomain}` : ctx.sender?.kind === 'null' ? '' : ctx.senderText;
        const { deciding, all } = await verdictsFor(ctx, mailFrom);
        const headers: string[] = [];
        if (opts.authenticationResults) headers.push(formatAuthenticationResults({ authservId: opts.authservId, spf: all }));
        if (opts.receivedSpf) headers.push(formatReceivedSpf(deciding, receiver));
        const { trace: _trace, ...evidence } = deciding;
        return {
          stage: 'spf',
          result: deciding.result,
          reason: `${deciding.identity} ${deciding.domain}: ${deciding.result} (${reasonOf(deciding)})`,
          decision: decide(deciding),
          evidence: { ...evidence, identities: all.map((v) => ({ identity: v.identity, result: v.result, domain: v.domain })) },
          headers,
        };
      },
    };
  },
};
