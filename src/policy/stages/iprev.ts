/**
 * NAME
 *   stages/iprev - reverse-DNS confirmation of the client (RFC 8601 §3) as a policy stage
 *
 * DESCRIPTION
 *   Runs checks/iprev BoundedIprev on the request's client address and maps its result to an action. iprev
 *   is weak evidence (RFC 8601 §3 warns against using it alone), so by default every result
 *   continues and the stage only reports: its Authentication-Results field goes into the
 *   verdict's headers. Repeated requests of one message cost nothing new: the resolver's
 *   cache answers the PTR and address lookups. The check is bounded by timeoutMs and by the
 *   decision deadline (beyond either, temperror): a reverse zone that never answers (its
 *   timeout is not cached, so every retry waits again) would otherwise take the whole
 *   deadline, and the stages after it would answer with no time left (spf: a temperror, 451,
 *   at every retry). A client whose check ran out of timeoutMs is answered temperror at once
 *   for the next 60 s (checks/iprev BoundedIprev), not made to wait timeoutMs at every RCPT.
 *   A request without a usable client address (Postfix's "unknown") gives result none and no
 *   header.
 *
 * CONFIGURATION
 *   actions.{pass,fail,temperror,permerror}: reject | defer | defer-if-permit | continue
 *   (all continue by default); rejectCode (550) and deferCode (450) with RFC 7372 §3.3's
 *   X.7.25 "reverse DNS validation failed"; rejectText/deferText expand {result}, {ip} and
 *   {reason}; maxNames (10); timeoutMs (2000, at most the decision deadline); authservId;
 *   authenticationResults.
 */

import { z } from 'zod';
import { formatAuthenticationResults } from '../../checks/auth-results.js';
import { unusableClientAddress } from '../../checks/client-ip.js';
import { BoundedIprev, DEFAULT_IPREV_MAX_NAMES, DEFAULT_IPREV_STAGE_TIMEOUT_MS, type IprevVerdict } from '../../checks/iprev/index.js';
import { compileTemplate } from '../template.js';
import { authservIdOption } from './authserv-id-option.js';
import type { Decision, StageDefinition } from '../types.js';

const action = z.enum(['reject', 'defer', 'defer-if-permit', 'continue']);

/** The bound of a stage's iprev check in milliseconds (also bounded by the decision deadline). */
export const iprevTimeoutOption = () => z.number().int().min(100).max(120_000).default(DEFAULT_IPREV_STAGE_TIMEOUT_MS);

const options = z
  .object({
    actions: z
      .object({
        pass: action.default('continue'),
        fail: action.default('continue'),
        temperror: action.default('continue'),
        permerror: action.default('continue'),
      })
      .strict()
      .default({ pass: 'continue', fail: 'continue', temperror: 'continue', permerror: 'continue' }),
    rejectCode: z.number().int().min(500).max(599).default(550),
    deferCode: z.number().int().min(400).max(499).default(450),
    rejectText: z.string().default('Client host rejected: reverse DNS of {ip} does not confirm ({reason})'),
    deferText: z.string().default('Client host reverse DNS of {ip} could not be checked, try again later ({reason})'),
    maxNames: z.number().int().min(1).max(100).default(DEFAULT_IPREV_MAX_NAMES),
    timeoutMs: iprevTimeoutOption(),
    authservId: authservIdOption(),
    authenticationResults: z.boolean().default(true),
  })
  .strict();

export type IprevStageOptions = z.output<typeof options>;

export const iprevStage: StageDefinition<IprevStageOptions> = {
  name: 'iprev',
  defaultStates: ['RCPT'],
  options,
  create(opts, deps) {
    const placeholders = { '{result}': 'result', '{ip}': 'ip', '{reason}': 'reason' } as const;
    const rejectText = compileTemplate(opts.rejectText, placeholders, 'rejectText');
    const deferText = compileTemplate(opts.deferText, placeholders, 'deferText');
    const iprev = new BoundedIprev({ resolver: deps.resolver, maxNames: opts.maxNames, timeoutMs: opts.timeoutMs });
    function decide(verdict: IprevVerdict): Decision {
      switch (opts.actions[verdict.result]) {
        case 'reject':
          return { kind: 'reject', code: opts.rejectCode, enhanced: '5.7.25', text: rejectText.fill(verdict) };
        case 'defer':
          return { kind: 'defer', code: opts.deferCode, enhanced: '4.7.25', text: deferText.fill(verdict) };
        case 'defer-if-permit':
          return { kind: 'defer-if-permit', enhanced: '4.7.25', text: deferText.fill(verdict) };
        case 'continue':
          return { kind: 'continue' };
      }
    }

    return {
      name: 'iprev',
      states: new Set(['CONNECT', 'EHLO', 'HELO', 'MAIL', 'RCPT', 'DATA', 'END-OF-MESSAGE']),
      async evaluate(ctx) {
        // Without an address iprev cannot be tried: no result to act on or report (permerror
        // would claim the address has no PTR).
        const unusable = unusableClientAddress(ctx.clientAddress);
        if (unusable !== undefined) return { stage: 'iprev', result: 'none', reason: unusable, decision: { kind: 'continue' } };
        // Bounded by the decision deadline: a silent reverse zone would otherwise outlast it, and
        // the pipeline would count the stage a fault and skip every stage after it. Bounded by
        // timeoutMs too, or it would take all of the deadline and leave the later stages none.
        const verdict = await iprev.check(ctx.clientAddress, ctx.timers, ctx.timeLeft());
        return {
          stage: 'iprev',
          result: verdict.result,
          reason: verdict.reason,
          decision: decide(verdict),
          evidence: verdict,
          headers: opts.authenticationResults ? [formatAuthenticationResults({ authservId: opts.authservId, iprev: verdict })] : [],
        };
      },
    };
  },
};
