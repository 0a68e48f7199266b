/**
 * NAME
 *   stages/greylist - postgrey-compatible greylisting as a pipeline stage
 *
 * DESCRIPTION
 *   At RCPT, in this order:
 *     1. skip when evidence already vouches for the client (each configurable, none on the
 *        sender address alone, which anyone can forge): an earlier `spf` stage passed for a
 *        sender domain in skip.spfPassDomains; the client's forward-confirmed name is under a
 *        domain in skip.fcrdnsProviders; the client or the recipient is on a postgrey
 *        whitelist (files in postgrey's formats, or the same entries inline);
 *     2. the client auto-allow (a client that passed `autoAllowClients` times) and the
 *        domain auto-allow (sqlgrey-like), then the triplet (checks/greylist/greylist).
 *   A deferral is `action` (DEFER_IF_PERMIT by default, as postgrey: a later restriction that
 *   rejects still rejects) with `text`, which tells the sender when to retry, and is logged
 *   with its reason: new, early-retry (with the seconds missing) or window-expired. The first
 *   pass of a triplet adds an X-Greylist header once per message (`header`), as postgrey does.
 *
 *   Client identity (`clientIdentity`): `network` (the /24 or /64, postgrey's default),
 *   `address` (postgrey --lookup-by-host), or `fcrdns-domain`: the organisational domain of
 *   the forward-confirmed client name, so a sender pool retrying from other addresses matches
 *   its triplet; a client without a usable confirmed name falls back to its network. The
 *   confirmed names come from an earlier `iprev` stage when one ran (result `pass`, its
 *   evidence's confirmedNames), else from the stage's own check, bounded by fcrdnsTimeoutMs and
 *   the deadline; a client whose check ran out of fcrdnsTimeoutMs has none, at once, for the
 *   next 60 s (checks/iprev BoundedIprev), instead of a wait at every RCPT. Of several,
 *   the smallest organisational domain is taken (checks/greylist/identity
 *   confirmedOrganisation), and skip.fcrdnsProviders skips a client any of them is under (the
 *   first in code-point order names it), so the order of the PTR answer changes neither.
 *
 *   Expired entries read as absent at once and leave the store with everything else that
 *   expired, every store.purgeInterval (policy/daemon). The stage's own `purgeInterval` of
 *   earlier releases purged the same store a second time; it is accepted, ignored and logged
 *   as obsolete (obsoleteGreylistOptions), so that a configuration written for them still starts.
 *   Counters: callout_greylist_total{result} (result="passed": every pass of a known triplet),
 *   and callout_greylist_triplets_passed_total: the first pass of each triplet, after the delay,
 *   which is how many triplets got through greylisting.
 *
 * CONFIGURATION
 *   delay (300s), retryWindow (2d), maxAge (35d), clientIdentity, fcrdnsTimeoutMs (2000), ipv4Prefix (24),
 *   ipv6Prefix (64), autoAllowClients (5), domainAutoAllow (0 = off), normaliseVerp,
 *   whitelistClientFiles, whitelistRecipientFiles, whitelistClients, whitelistRecipients,
 *   skip.{spfPassDomains,fcrdnsProviders}, action, deferCode, enhanced, text, header,
 *   headerText. Texts expand {seconds}, {retryAt}, {recipientDomain},
 *   {reason} (and postgrey's %s and %r); headerText {seconds}, {host}, {date} (and postgrey's
 *   %t, %h, %d, and %v: callout's version), so a site's postgrey --x-greylist-header carries over.
 *
 * LIMITS
 *   Remembered while they recur: 4,096 clients' identities and auto-allow keys, and 4,096
 *   normalised senders of at most 256 characters (SENDER_MEMO_LENGTH), each in two generations
 *   (core/memo); a longer sender is normalised at each request.
 */

import { hostname } from 'node:os';
import { z } from 'zod';
import { ConfigError } from '../../core/errors.js';
import { formatDuration } from '../../config/duration.js';
import { stageKey } from '../../config/stage-key.js';
import { absolutePath } from '../../config/paths.js';
import { clientAddress } from '../../checks/client-ip.js';
import { mailboxKey } from '../../address/index.js';
import { networkOf } from '../../core/ip.js';
import { logInfoJson } from '../../core/log.js';
import { BoundedMemo } from '../../core/memo.js';
import { CALLOUT_VERSION } from '../../core/version.js';
import { isoSeconds, type Clock } from '../../core/clock.js';
import type { Store } from '../../store/types.js';
import { compareKeys } from '../../store/semantics.js';
import {
  Greylist,
  MAX_DOMAIN_AUTO_ALLOW,
  confirmedOrganisation,
  domainUnder,
  normaliseSender,
  parseClientWhitelist,
  parseRecipientWhitelist,
  readWhitelistFiles,
  type GreylistOutcome,
  type WhitelistProblem,
} from '../../checks/greylist/index.js';
import { BoundedIprev } from '../../checks/iprev/index.js';
import { compileTemplate } from '../template.js';
import type { Decision, StageContext, StageDefinition, StageVerdict } from '../types.js';
import { domainEntry } from './allowlist.js';
import { iprevTimeoutOption } from './iprev.js';
import { ACROSS_OPTIONS, checkedDuration, durationMs, durationOption } from './duration-option.js';
import { stageVerdict, type VerdictMaker } from './verdict.js';
import { enhancedStatusOption } from './status-option.js';

/** The shortest retry window and max-age: their entries' lifetimes are store TTLs, which must be positive. */
const SHORTEST_MS = 1000;

/**
 * The greylist's durations against each other: a retry window no retry could pass, or a
 * max-age shorter than it, is refused. The values may be anything when another option is
 * wrong; each unreadable or too short one is reported on its own.
 */
function checkDurations(o: { delay?: unknown; retryWindow?: unknown; maxAge?: unknown }, ctx: z.RefinementCtx): void {
  const delay = checkedDuration(o.delay);
  const retryWindow = checkedDuration(o.retryWindow);
  const maxAge = checkedDuration(o.maxAge);
  if (!delay.ok || !retryWindow.ok || !maxAge.ok || retryWindow.ms < SHORTEST_MS || maxAge.ms < SHORTEST_MS) return;
  // A bare number is seconds (postgrey's --retry-window and --max-age are days: write 2d, 35d).
  if (retryWindow.ms <= delay.ms) {
    ctx.addIssue({ code: 'custom', path: ['retryWindow'], params: { used: formatDuration(retryWindow.ms) }, message: `expected longer than delay (${formatDuration(delay.ms)}): no retry could ever pass; a bare number is seconds, write days as 2d` });
  }
  if (maxAge.ms < retryWindow.ms) {
    ctx.addIssue({ code: 'custom', path: ['maxAge'], params: { used: formatDuration(maxAge.ms) }, message: `expected at least retryWindow (${formatDuration(retryWindow.ms)}); a bare number is seconds, write days as 35d` });
  }
}

export const greylistOptions = z
  .object({
    delay: durationOption('300s'),
    retryWindow: durationOption('2d', SHORTEST_MS),
    maxAge: durationOption('35d', SHORTEST_MS),
    clientIdentity: z.enum(['network', 'address', 'fcrdns-domain']).default('network'),
    fcrdnsTimeoutMs: iprevTimeoutOption(),
    ipv4Prefix: z.number().int().min(8).max(32).default(24),
    ipv6Prefix: z.number().int().min(16).max(128).default(64),
    autoAllowClients: z.number().int().min(0).max(1000).default(5),
    domainAutoAllow: z.number().int().min(0).max(MAX_DOMAIN_AUTO_ALLOW).default(0),
    normaliseVerp: z.boolean().default(true),
    whitelistClientFiles: z.array(absolutePath()).default([]),
    whitelistRecipientFiles: z.array(absolutePath()).default([]),
    whitelistClients: z.array(z.string()).default([]),
    whitelistRecipients: z.array(z.string()).default([]),
    skip: z
      .object({
        spfPassDomains: z.array(z.string()).default([]),
        fcrdnsProviders: z.array(z.string()).default([]),
      })
      .strict()
      .default({ spfPassDomains: [], fcrdnsProviders: [] }),
    action: z.enum(['defer-if-permit', 'defer']).default('defer-if-permit'),
    deferCode: z.number().int().min(400).max(499).default(450),
    enhanced: enhancedStatusOption('4').default('4.2.0'),
    text: z.string().default('Greylisted, please try again in {seconds} seconds'),
    header: z.boolean().default(true),
    headerText: z.string().default('X-Greylist: delayed {seconds} seconds by callout at {host}; {date}'),
    /** Obsolete (see DESCRIPTION): any value is accepted and ignored. */
    purgeInterval: z.unknown().optional(),
  })
  .strict()
  .superRefine(checkDurations, ACROSS_OPTIONS);

export type GreylistOptions = z.output<typeof greylistOptions>;

const CLIENT_MEMO_LIMIT = 4_096;
const SENDER_MEMO_LIMIT = 4_096;
/**
 * The longest sender remembered, in characters: RFC 5321's 256 octets of a path for the ASCII
 * senders nearly all are. Postfix passes on up to about 4 kB, and two generations of 4,096 such
 * senders and their normalised copies held tens of MB; a longer one is normalised each time.
 */
export const SENDER_MEMO_LENGTH = 256;

/** A client address's greylist identity by network (or address) and its auto-allow key. */
interface ClientKeys {
  network: string;
  autoAllowKey: string;
}

/**
 * Senders as the triplet keys them (normaliseSender), remembered while they recur: a sender is
 * normalised once for all the recipients and retries of its messages. One longer than
 * SENDER_MEMO_LENGTH is normalised each time, not remembered.
 */
export function normalisedSenders(verp: boolean): { get(sender: string): string; readonly size: number } {
  const normalise = (sender: string) => normaliseSender(sender, { verp });
  const memo = new BoundedMemo(normalise, SENDER_MEMO_LIMIT);
  return {
    get: (sender) => (sender.length > SENDER_MEMO_LENGTH ? normalise(sender) : memo.get(sender)),
    get size() {
      return memo.size;
    },
  };
}

/** The greylist engine a configuration's options describe (the stage and `callout greylist` share it). */
export function greylistFromOptions(opts: GreylistOptions, store: Store, clock: Clock): Greylist {
  return new Greylist(store, clock, {
    delayMs: durationMs(opts.delay),
    retryWindowMs: durationMs(opts.retryWindow),
    maxAgeMs: durationMs(opts.maxAge),
    autoAllowClients: opts.autoAllowClients,
    domainAutoAllow: opts.domainAutoAllow,
  });
}

type IdentityOptions = Pick<GreylistOptions, 'clientIdentity' | 'ipv4Prefix' | 'ipv6Prefix'>;

/** The prefix length a client of the family is keyed by: the host's own in `address` mode. */
export function identityPrefix(opts: IdentityOptions, family: 4 | 6): number {
  if (opts.clientIdentity === 'address') return family === 4 ? 32 : 128;
  return family === 4 ? opts.ipv4Prefix : opts.ipv6Prefix;
}

/** The network (or, in `address` mode, the host) identity of a client address; undefined if it is not one. */
export function networkIdentity(opts: IdentityOptions, address: string): string | undefined {
  return networkOf(address, identityPrefix(opts, 4), identityPrefix(opts, 6));
}

/**
 * The client's forward-confirmed names in code-point order (the PTR answer's order is the
 * resolver's choice), none when iprev did not pass.
 */
type ConfirmedNames = string[];

/** What an earlier iprev stage found: its confirmed names; 'not-run' when no such stage ran. */
function iprevNames(verdict: StageVerdict | undefined): ConfirmedNames | 'not-run' {
  if (!verdict) return 'not-run';
  if (verdict.result !== 'pass') return [];
  const names = (verdict.evidence as { confirmedNames?: unknown } | undefined)?.confirmedNames;
  if (!Array.isArray(names)) return [];
  return names.filter((name): name is string => typeof name === 'string' && name !== '').map((name) => name.toLowerCase().replace(/\.$/, ''));
}

/**
 * The obsolete options of greylist entry `index` of policy.stages (purgeInterval, see
 * DESCRIPTION), one line each, keyed as every problem of a stage's option is
 * (config/stage-key): the daemon logs them at start and reload, `config check` too, as the
 * tarpit's deadlineCuts. The stage, which is not told its index, logged them without it.
 */
export function obsoleteGreylistOptions(entry: Readonly<Record<string, unknown>>, index: number): string[] {
  if (entry.purgeInterval === undefined) return [];
  return [`${stageKey(index, 'greylist', 'purgeInterval')}: obsolete and ignored: expired entries are purged with the rest of the store every store.purgeInterval`];
}

function problemText(p: WhitelistProblem): string {
  return `${p.source}${p.line ? `:${p.line}` : ''}: ${p.message}`;
}

export const greylistStage: StageDefinition<GreylistOptions> = {
  name: 'greylist',
  defaultStates: ['RCPT'],
  options: greylistOptions,
  earlierReads: (opts) => (opts.skip.spfPassDomains.length > 0 ? [{ option: 'skip.spfPassDomains', stage: 'spf', effect: 'greylisting is never skipped for these domains', whenAbsent: true }] : []),
  create(opts, deps) {
    const clientFiles = readWhitelistFiles(opts.whitelistClientFiles);
    const recipientFiles = readWhitelistFiles(opts.whitelistRecipientFiles);
    // Keyed by the option that names the file: the path alone sent the reader to look for it in
    // two lists. Each problem is keyed on its own (the pipeline puts policy.stages.N before it).
    const unreadable = [
      ...clientFiles.problems.map((p) => `greylist.whitelistClientFiles: ${problemText(p)}`),
      ...recipientFiles.problems.map((p) => `greylist.whitelistRecipientFiles: ${problemText(p)}`),
    ];
    if (unreadable.length > 0) throw new ConfigError(unreadable.join('; '));
    // Each inline entry a source of its own, named by its key (whitelistClients.2): joined as the
    // lines of one text, the third entry was "whitelistClients:3", read as a line of the file.
    const inline = (key: string, entries: string[]) => entries.map((text, i) => ({ source: `${key}.${i}`, text }));
    const clientEntries = inline('whitelistClients', opts.whitelistClients);
    const recipientEntries = inline('whitelistRecipients', opts.whitelistRecipients);
    const inlineSources = new Set([...clientEntries, ...recipientEntries].map((entry) => entry.source));
    const clients = parseClientWhitelist([...clientFiles.sources, ...clientEntries]);
    const recipients = parseRecipientWhitelist([...recipientFiles.sources, ...recipientEntries]);
    for (const problem of [...clients.problems, ...recipients.problems]) {
      const text = inlineSources.has(problem.source) && problem.line === 1 ? `${problem.source}: ${problem.message}` : problemText(problem);
      deps.log.warn({ stage: 'greylist', problem: text }, 'greylist whitelist entry ignored');
    }

    const greylist = greylistFromOptions(opts, deps.store, deps.clock);
    // As names are compared (A-labels, no trailing dot); an entry that is no domain would match nothing, silently.
    const skipDomains = (entries: string[], key: string) => new Set(entries.map((d) => domainEntry(d.trim().replace(/^\./, ''), `greylist.skip.${key}`)));
    const spfDomains = skipDomains(opts.skip.spfPassDomains, 'spfPassDomains');
    const providers = skipDomains(opts.skip.fcrdnsProviders, 'fcrdnsProviders');
    const host = hostname();
    // A client sends many messages: its network and auto-allow key are worked out once while it
    // recurs (its parsed address is remembered by checks/client-ip for every stage), and a sender
    // once for all the recipients and retries of its messages (normalisedSenders).
    const clientKeys = new BoundedMemo((address: string): ClientKeys | undefined => {
      const network = networkIdentity(opts, address);
      return network === undefined ? undefined : { network, autoAllowKey: clientAddress(address)?.text ?? address };
    }, CLIENT_MEMO_LIMIT);
    const senders = normalisedSenders(opts.normaliseVerp);
    const iprev = new BoundedIprev({ resolver: deps.resolver, timeoutMs: opts.fcrdnsTimeoutMs });

    const count = (result: string) => deps.metrics?.increment('greylist', { result });
    const made = stageVerdict('greylist');
    const verdict: VerdictMaker = (result, reason, decision, evidence) => {
      count(result);
      return made(result, reason, decision, evidence);
    };
    const pass = (result: string, reason: string) => verdict(result, reason, { kind: 'continue' });

    async function confirmedNames(ctx: StageContext): Promise<ConfirmedNames> {
      let names = iprevNames(ctx.earlier.get('iprev'));
      if (names === 'not-run') {
        // Bounded as the iprev stage's check is: unfinished, it is no pass. By the deadline alone,
        // a silent reverse zone held every recipient for the whole of it (6 s each).
        const looked = await iprev.check(ctx.clientAddress, ctx.timers, ctx.timeLeft());
        names = looked.result === 'pass' ? looked.confirmedNames : [];
      }
      return [...names].sort(compareKeys);
    }

    const deferText = compileTemplate(opts.text, { '{seconds}': 'seconds', '%s': 'seconds', '{retryAt}': 'retryAt', '{recipientDomain}': 'recipientDomain', '%r': 'recipientDomain', '{reason}': 'reason' }, 'text');
    const headerText = compileTemplate(opts.headerText, { '{seconds}': 'seconds', '%t': 'seconds', '{host}': 'host', '%h': 'host', '{date}': 'date', '%d': 'date', '%v': 'version' }, 'headerText');

    function deferral(outcome: Extract<GreylistOutcome, { kind: 'defer' }>, ctx: StageContext): Decision {
      const text = deferText.fill({
        seconds: String(Math.ceil(outcome.remainingMs / 1000)),
        // Rounded up as {seconds} is: the time named, truncated to its second, came up to 999 ms
        // before the delay ended, and a sender retrying then was deferred again.
        retryAt: deferText.uses('retryAt') ? isoSeconds(Math.ceil(outcome.retryAt / 1000) * 1000) : '',
        recipientDomain: ctx.recipientText.slice(ctx.recipientText.lastIndexOf('@') + 1),
        reason: outcome.reason,
      });
      if (opts.action === 'defer') return { kind: 'defer', code: opts.deferCode, enhanced: opts.enhanced, text };
      return { kind: 'defer-if-permit', enhanced: opts.enhanced, text };
    }

    /** The verdict on the triplet's outcome. */
    function verdictOn(outcome: GreylistOutcome, ctx: StageContext, identity: string, autoAllowKey: string, normalised: string): StageVerdict {
      const evidence = { identity, sender: normalised, ...outcome };
      if (outcome.kind === 'defer') {
        const seconds = Math.ceil(outcome.remainingMs / 1000);
        const reason = outcome.reason === 'early-retry' ? `early-retry (${seconds}s missing)` : outcome.reason;
        // One JSON.stringify (core/log logInfoJson): pino's generic serialiser cost a twentieth of a deferral.
        const fields = { stage: 'greylist', client: ctx.clientAddress, identity, sender: normalised, recipient: ctx.recipientText, reason, retryAt: new Date(outcome.retryAt).toISOString() };
        logInfoJson(deps.log, JSON.stringify(fields), 'greylisted');
        return verdict(outcome.reason, `greylisted: ${reason}, retry after ${seconds}s (${identity}/${normalised}/${ctx.recipientText})`, deferral(outcome, ctx), evidence);
      }
      if (outcome.reason === 'client-auto-allow') return pass('auto-allowed', `client ${autoAllowKey} auto-allowed after ${outcome.count} passes`);
      if (outcome.reason === 'domain-auto-allow') return pass('auto-allowed', `sender domain ${outcome.domain} auto-allowed from ${identity}`);
      const waited = Math.round(outcome.waitedMs / 1000);
      // `passed` counts every pass of a known triplet, as it always has: dashboards rate it.
      if (outcome.firstPass) deps.metrics?.increment('greylist_triplets_passed');
      if (outcome.firstPass && opts.header) {
        const header = headerText.fill({ seconds: String(waited), host, date: headerText.uses('date') ? new Date(deps.clock.now()).toUTCString() : '', version: CALLOUT_VERSION });
        return verdict('passed', `triplet passed after ${waited}s`, { kind: 'prepend', header }, evidence);
      }
      return verdict('passed', outcome.firstPass ? `triplet passed after ${waited}s` : 'triplet seen before', { kind: 'continue' }, evidence);
    }

    /** The triplet's verdict: at once when the greylist decides at once (Greylist.decide), else a promise. */
    function greylisted(ctx: StageContext, identity: string, autoAllowKey: string): StageVerdict | Promise<StageVerdict> {
      const normalised = senders.get(ctx.senderText);
      // As the sender: bob@bücher.example and bob@xn--bcher-kva.example are one recipient.
      const outcome = greylist.decide({ client: identity, autoAllowKey, sender: normalised, recipient: mailboxKey(ctx.recipientText) });
      if (outcome instanceof Promise) return outcome.then((decided) => verdictOn(decided, ctx, identity, autoAllowKey, normalised));
      return verdictOn(outcome, ctx, identity, autoAllowKey, normalised);
    }

    /** The identity by the client's confirmed names (fcrdns-domain), or a skip for a listed provider. */
    async function byConfirmedNames(ctx: StageContext, network: string, autoAllowKey: string): Promise<StageVerdict> {
      const names = await confirmedNames(ctx);
      for (const name of names) {
        const provider = domainUnder(providers, name);
        if (provider) return pass('skipped', `client ${name} is forward-confirmed under ${provider}`);
      }
      const organisation = opts.clientIdentity === 'fcrdns-domain' ? confirmedOrganisation(names, ctx.clientAddress) : undefined;
      // The auto-allow stays the address's, as postgrey's: keyed by the organisation, five
      // passes from any of its hosts would let every host under it skip greylisting.
      return greylisted(ctx, organisation ? `domain:${organisation}` : network, autoAllowKey);
    }

    return {
      name: 'greylist',
      states: new Set(['RCPT']),
      // Synchronous until something has to be waited for (a lookup, a store read or write): a
      // whitelisted client or a known triplet is answered in the turn it came in (policy/pipeline).
      evaluate(ctx) {
        if (!ctx.recipientText) return pass('none', 'no recipient: nothing to greylist');
        if (spfDomains.size > 0 && ctx.earlier.get('spf')?.result === 'pass' && ctx.sender?.kind === 'mailbox') {
          const sender = ctx.sender.mailbox;
          const listed = domainUnder(spfDomains, sender.asciiDomain);
          if (listed) return pass('skipped', `SPF passed for ${sender.asciiDomain} (listed as ${listed})`);
        }
        const clientEntry = clients.whitelist.match(ctx.clientName, ctx.clientAddress);
        if (clientEntry) return pass('whitelisted', `client ${ctx.clientName}[${ctx.clientAddress}] is whitelisted (${clientEntry})`);
        const recipientEntry = recipients.whitelist.match(ctx.recipientText);
        if (recipientEntry) return pass('whitelisted', `recipient ${ctx.recipientText} is whitelisted (${recipientEntry})`);

        const keys = clientKeys.get(ctx.clientAddress);
        if (!keys) return pass('none', `client address ${JSON.stringify(ctx.clientAddress)} is not an IP address`);
        const { network, autoAllowKey } = keys;
        if (providers.size > 0 || opts.clientIdentity === 'fcrdns-domain') return byConfirmedNames(ctx, network, autoAllowKey);
        return greylisted(ctx, network, autoAllowKey);
      },
    };
  },
};

