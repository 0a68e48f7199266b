/**
 * NAME
 *   stages/batv - refuse backscatter: bounces to our BATV-protected domains must carry our signature
 *
 * DESCRIPTION
 *   A site that signs every outgoing reverse path with BATV (rewrite/batv, Exim's prvs) only
 *   ever receives genuine bounces at prvs addresses. So at RCPT, for a null-sender message
 *   (MAIL FROM:<>) to a recipient in one of `domains`:
 *     valid prvs, unexpired          continue (result 'valid'; evidence names the original)
 *     prvs with a bad hash, or a     reject with invalidText (Exim's ACL wording)
 *       key number we do not have
 *     prvs past its validity         reject with expiredText
 *     no prvs tag                    reject with unsignedText, unless `unsignedAllowedUntil`
 *                                    (a grace period after signing was turned on: bounces of
 *                                    mail sent before still arrive unsigned) is in the future
 *   A recipient's domain is matched as A-labels and as U-labels, so an internationalised domain
 *   is protected however it is configured and addressed.
 *   Mail with a sender, recipients outside `domains` and `exemptRecipients` (addresses or
 *   local parts that never sign, e.g. list owners) are left alone. The signature is checked
 *   over the recipient exactly as Postfix sent it, because the HMAC covers it byte for byte.
 *   Put it after `postmaster`, so bounces to postmaster are never refused.
 *   Counters: `counters` on the stage, and callout_batv_total{result} through deps.metrics.
 *
 * CONFIGURATION
 *   domains (required; 'example.com' exactly, '.example.com' subdomains), keys (1 to 10, newest
 *   first: { keynum 0-9, secret | secretFile, an absolute path }), window ('bounded', the default,
 *   or 'exim'), code (550), enhanced (5.7.1), invalidText, expiredText, unsignedText,
 *   exemptRecipients, unsignedAllowedUntil (ISO 8601 date-time)
 */

import { z } from 'zod';
import { asciiLower } from '../../address/index.js';
import { absolutePath } from '../../config/paths.js';
import { ConfigError } from '../../core/errors.js';
import { SECRET_FILE_BYTES, readFileLimited, warnIfSecretExposed } from '../../core/files.js';
import { HIDDEN_SECRET } from '../../core/text.js';
import { Batv, keyFileLineWarning, oneSecretFileText, type BatvKey } from '../../rewrite/batv.js';
import { domainMatcher, unmatchableDomainEntry } from '../../rewrite/domains.js';
import { compileTemplate } from '../template.js';
import type { Stage, StageDefinition, StageDeps, StageVerdict } from '../types.js';
import { stageVerdict } from './verdict.js';
import { enhancedStatusOption } from './status-option.js';

const keySchema = z
  .object({
    keynum: z.number().int().min(0).max(9),
    // As `config print` shows it: read back, it would sign and check with "***".
    secret: z.string().min(1).refine((s) => s !== HIDDEN_SECRET, { message: `expected the secret, not ${HIDDEN_SECRET} as config print hides it: put the real secret back` }).optional(),
    /**
     * A file holding the secret (one line), so the configuration file can be world-readable.
     * Absolute: a relative one was read from the directory each command started in, so `config
     * check` in /etc/callout found it and serve, started in / by systemd, stopped.
     */
    secretFile: absolutePath().optional(),
  })
  .strict()
  .refine((k) => (k.secret === undefined) !== (k.secretFile === undefined), { message: 'expected exactly one of secret and secretFile' });

/**
 * A protected domain as rewrite/domains matches it: the domain, or '.domain' for its subdomains.
 * An entry it can never match ("example.org." with its root dot, "@example.org", "*.example.org")
 * was accepted, and bounces to that domain went through unchecked.
 */
const protectedDomain = z.string().superRefine((entry, ctx) => {
  const problem = unmatchableDomainEntry(entry);
  if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
});

/**
 * An exempt recipient: a local part (list-owner) or an address (noreply@example.com), matched
 * whole. An entry no recipient can match ("@example.com" meant for a whole domain, "list-owner@",
 * an empty one, one with white space around it) was taken, and the bounces it was meant to let
 * through were refused as backscatter.
 */
const exemptRecipient = z.string().superRefine((entry, ctx) => {
  const at = entry.lastIndexOf('@');
  const why =
    entry.trim() === '' ? 'not an empty entry'
    : entry !== entry.trim() ? 'without white space around it'
    : at === 0 ? 'not a domain alone (leave a domain out of domains instead)'
    : at === entry.length - 1 ? 'not a local part with an "@" and no domain'
    : undefined;
  if (why !== undefined) ctx.addIssue({ code: 'custom', message: `expected a local part (list-owner) or an address (noreply@example.com), ${why}` });
});

const options = z
  .object({
    domains: z.array(protectedDomain).min(1),
    keys: z.array(keySchema).min(1).max(10),
    // Bounded by default: under Exim's own check a tag that expired years ago is valid again on
    // some days of each 1000-day cycle, so an old tag of ours would let backscatter through.
    window: z.enum(['exim', 'bounded']).default('bounded'),
    code: z.number().int().min(500).max(599).default(550),
    enhanced: enhancedStatusOption('5').default('5.7.1'),
    invalidText: z.string().default('Invalid reverse path signature'),
    expiredText: z.string().default('Bounce address tag expired'),
    unsignedText: z.string().default('This address does not send an unsigned reverse path'),
    exemptRecipients: z.array(exemptRecipient).default([]),
    unsignedAllowedUntil: z.iso.datetime({ offset: true, error: 'expected a date and time with its offset, such as 2026-07-01T00:00:00Z (RFC 3339)' }).optional(),
  })
  .strict();

export type BatvStageOptions = z.output<typeof options>;

export type BatvStageResult = 'not-bounce' | 'unprotected' | 'exempt' | 'valid' | 'unsigned-grace' | 'unsigned' | 'bad-signature' | 'unknown-key' | 'expired';

export interface BatvStage extends Stage {
  /** Requests seen per result, since the stage was created. */
  readonly counters: Readonly<Record<BatvStageResult, number>>;
}

function loadKeys(keys: BatvStageOptions['keys'], log: Partial<Pick<StageDeps, 'log'>>['log']): BatvKey[] {
  return keys.map((k, index) => {
    if (k.secret !== undefined) return { keynum: k.keynum, secret: k.secret };
    // Named by its entry (the pipeline puts policy.stages.N before it): "batv.keys: secretFile"
    // left the administrator of several keys to guess which one.
    const where = `batv.keys.${index}.secretFile: ${k.secretFile} (keynum ${k.keynum})`;
    const read = readFileLimited(k.secretFile!, SECRET_FILE_BYTES, { governing: true });
    if (!read.ok) throw new ConfigError(`${where}: ${read.reason}`);
    warnIfSecretExposed(read, k.secretFile!, 'batv.keys secretFile', log);
    const parsed = oneSecretFileText(read.bytes.toString('utf8'));
    if (!parsed.ok) throw new ConfigError(`${where}: ${parsed.problem}`);
    const { secret } = parsed;
    // `rewrite serve --batv-key-file` reads `KEYNUM SECRET` lines: one such line given here makes
    // the number part of the key, and no tag the rewrite service signed would check.
    if (parsed.keyFileLine?.keynum === k.keynum) {
      log?.warn({ file: k.secretFile, keynum: k.keynum }, keyFileLineWarning('batv.keys secretFile', k.keynum));
    }
    return { keynum: k.keynum, secret };
  });
}

/** `deps.log` hears of a secretFile others can read or change. */
export function createBatvStage(opts: BatvStageOptions, deps: Pick<StageDeps, 'metrics'> & Partial<Pick<StageDeps, 'log'>>): BatvStage {
  const batv = new Batv({ keys: loadKeys(opts.keys, deps.log), window: opts.window });
  const protectedDomain = domainMatcher(opts.domains);
  const exempt = new Set(opts.exemptRecipients.map((r) => asciiLower(r)));
  const graceUntil = opts.unsignedAllowedUntil ? Date.parse(opts.unsignedAllowedUntil) : undefined;
  // They take no placeholders: compiled only so that a `{sender}` written in one is refused, not sent as it is.
  const fixed = (key: 'invalidText' | 'expiredText' | 'unsignedText') => compileTemplate(opts[key], {}, key).fill({});
  const invalidText = fixed('invalidText');
  const expiredText = fixed('expiredText');
  const unsignedText = fixed('unsignedText');
  const counters: Record<BatvStageResult, number> = {
    'not-bounce': 0,
    unprotected: 0,
    exempt: 0,
    valid: 0,
    'unsigned-grace': 0,
    unsigned: 0,
    'bad-signature': 0,
    'unknown-key': 0,
    expired: 0,
  };
  const made = stageVerdict('batv');
  const verdict = (result: BatvStageResult, reason: string, text?: string, evidence?: unknown): StageVerdict => {
    counters[result]++;
    deps.metrics?.increment('batv', { result });
    return made(result, reason, text === undefined ? { kind: 'continue' } : { kind: 'reject', code: opts.code, enhanced: opts.enhanced, text }, evidence);
  };

  return {
    name: 'batv',
    states: new Set(['RCPT']),
    counters,
    evaluate(ctx) {
      if (ctx.senderText !== '') return verdict('not-bounce', 'the message has a sender; only bounces are checked');
      const recipient = ctx.recipientText;
      const at = recipient.lastIndexOf('@');
      // An internationalised domain arrives as A-labels or U-labels (RFC 5890), and is configured either way.
      const domains = ctx.recipient ? [ctx.recipient.asciiDomain, ctx.recipient.domain] : at < 0 ? [] : [recipient.slice(at + 1)];
      if (!domains.some(protectedDomain)) return verdict('unprotected', `${recipient} is not in a BATV-protected domain`);
      const check = batv.check(recipient, ctx.clock.now());
      const core = check.status === 'not-prvs' ? recipient : check.original;
      if (exempt.has(asciiLower(core)) || exempt.has(asciiLower(core.slice(0, core.lastIndexOf('@'))))) {
        return verdict('exempt', `${core} does not sign its reverse paths`);
      }
      switch (check.status) {
        case 'valid':
          return verdict('valid', `bounce to a valid prvs address of ${check.original} (key ${check.keynum})`, undefined, { original: check.original, keynum: check.keynum });
        case 'not-prvs':
          if (graceUntil !== undefined && ctx.clock.now() < graceUntil) return verdict('unsigned-grace', `unsigned bounce to ${recipient} accepted until ${opts.unsignedAllowedUntil}`);
          return verdict('unsigned', `backscatter: a bounce to ${recipient}, which only sends signed reverse paths`, unsignedText);
        case 'expired':
          return verdict('expired', `backscatter: the prvs tag of ${check.original} has expired`, expiredText, { original: check.original, keynum: check.keynum });
        case 'bad-signature':
        case 'unknown-key':
          return verdict(check.status, `backscatter: the prvs tag of ${check.original} is not ours (${check.status}, key ${check.keynum})`, invalidText, {
            original: check.original,
            keynum: check.keynum,
          });
      }
    },
  };
}

export const batvStage: StageDefinition<BatvStageOptions> = {
  name: 'batv',
  defaultStates: ['RCPT'],
  options,
  create: (opts, deps) => createBatvStage(opts, deps),
};
