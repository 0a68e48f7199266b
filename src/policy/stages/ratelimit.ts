/**
 * NAME
 *   stages/ratelimit - messages and recipients per client, sender or sender domain
 *
 * DESCRIPTION
 *   Each configured limit counts one kind of event for one key over a sliding window
 *   (checks/ratelimit/window), in the shared store, so a cluster on one Redis enforces one
 *   limit. At RCPT:
 *     count: recipients   every request counts one
 *     count: messages     the first request of a message (Postfix's `instance`, with the
 *                         client address) counts one; later recipients of it are let
 *                         through when the first was, and counted and compared when it was
 *                         deferred (the mark below says which), so a message let through is
 *                         not cut in two by other messages counted while it is received.
 *                         Which messages a limit has counted is marked in the store
 *                         (setIfAbsent per limit and message, the message being the
 *                         instance on the connection's two ends: smtpd makes an instance of
 *                         its process id, the arrival time and a count, unique on one host
 *                         only; kept MESSAGE_MARK_MS), so a message whose
 *                         recipients reach two workers or two daemons (Postfix's policy client
 *                         reconnects, a reload) is counted once across the cluster, and a
 *                         second ratelimit stage still counts it for its own limits; a request
 *                         without an instance counts as one
 *     per: client         the client address, or its network with ipv4Prefix / ipv6Prefix
 *                         (32 and 128: by address). 64 catches a host that sends from a new
 *                         address of its /64 each time, but joins hosts that share one: the
 *                         outbound servers of a large provider do (Gmail's share a /64)
 *     per: sender         the envelope sender as the greylist keys it (address mailboxKey: A-Z
 *                         lower-cased, the domain as its A-label; over 256 octets, a digest)
 *     per: sender-domain  its domain
 *   The null sender (bounces) is counted per client only: every bounce of every client would
 *   otherwise share one counter, and a wave of backscatter (or an attacker sending <>) would
 *   defer the site's legitimate bounces. A sender without a domain (`user`, `user@`) is counted
 *   per client and per sender, never under an empty sender domain, for the same reason. A
 *   sender is not authenticated at RCPT: anyone can send as any sender or domain, so a
 *   per-sender limit can be filled by others; give it a `warn` action, or a limit that only
 *   your own users' volume would reach.
 *   What the stage defers is counted by none of its limits (the increments are taken back):
 *   Postfix's anvil counts refused attempts too, but its windows are fixed and start again
 *   at zero, while a sliding window kept a sender MTA that retries its queue every hour over
 *   a per-day limit with its own refused retries until its mail bounced. A client that keeps
 *   hammering gains nothing: what it gets through is still at most the limit. What another
 *   stage or Postfix refuses after this one let it through (a greylisted or unknown
 *   recipient) stays counted. Over a limit (the estimate exceeds `max`),
 *   `action: defer` answers 450 4.7.1 with a text that says which limit and when to retry;
 *   `action: warn` only logs and counts, so a limit can be watched before it is enforced.
 *   Clients in exemptClients (e.g. your own networks) are never counted.
 *   Counters: callout_ratelimit_total{limit,result=deferred|warned}; in a stage in warn mode
 *   every limit counts as warned, since nothing is deferred.
 *
 * CONFIGURATION
 *   limits: [{ name, per, count, max, window, action }], exemptClients, ipv4Prefix, ipv6Prefix,
 *   deferCode, enhanced,
 *   text ({limit}, {key}, {max}, {count}, {window}, {seconds} expand). A limit's name keys its
 *   counters, so no two limits may share one, within a stage or across ratelimit stages
 *   (sharedLimitNames, checked with the configuration).
 */

import { z } from 'zod';
import { formatDuration } from '../../config/duration.js';
import { networkList } from '../../config/networks.js';
import { stageKey } from '../../config/stage-key.js';
import { ConfigError } from '../../core/errors.js';
import { AddressSet } from '../../core/ip.js';
import { clientAddress, countingKey } from '../../checks/client-ip.js';
import { keyPart, mailboxKey } from '../../address/index.js';
import { SlidingWindow, WINDOW_MIN_MS, type WindowSample } from '../../checks/ratelimit/index.js';
import { compileTemplate } from '../template.js';
import type { StageContext, StageDefinition } from '../types.js';
import { durationMs, durationOption } from './duration-option.js';
import { stageVerdict } from './verdict.js';
import { enhancedStatusOption } from './status-option.js';

/** How long the mark of a message's first recipient is kept: longer than any SMTP session. */
const MESSAGE_MARK_MS = 3_600_000;
/** The mark's value: the message's first recipient was let through, or deferred, by the limit. */
const LET_THROUGH = '1';
const DEFERRED = 'deferred';

const limitSchema = z
  .object({
    /** Part of the limit's keys in the store: a ':' would let one limit's keys meet another's. */
    name: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'expected 1 to 64 letters, digits, dots, dashes or underscores').optional(),
    per: z.enum(['client', 'sender', 'sender-domain']),
    count: z.enum(['messages', 'recipients']),
    max: z.number().int().min(1),
    window: durationOption('1h', WINDOW_MIN_MS),
    action: z.enum(['defer', 'warn']).default('defer'),
  })
  .strict();

const options = z
  .object({
    limits: z.array(limitSchema).min(1),
    exemptClients: networkList(),
    ipv4Prefix: z.number().int().min(8).max(32).default(32),
    ipv6Prefix: z.number().int().min(16).max(128).default(128),
    deferCode: z.number().int().min(400).max(499).default(450),
    enhanced: enhancedStatusOption('4').default('4.7.1'),
    text: z.string().default('Rate limit {limit} exceeded for {key}: more than {max} {count} in {window}, try again in {seconds} seconds'),
  })
  .strict();

type Options = z.output<typeof options>;

/** The name a limit's store keys, metrics and texts go by: its own, or one made of count, per and window. */
function limitName(limit: Pick<z.output<typeof limitSchema>, 'name' | 'count' | 'per' | 'window'>): string {
  return limit.name ?? `${limit.count}-per-${limit.per}-${formatDuration(durationMs(limit.window))}`;
}

/**
 * A limit name that limits of two ratelimit stages share, one problem per name, naming both
 * entries (`stages`: policy.stages, options parsed). A limit's counters are keyed by its name
 * alone, so such limits counted every request into one counter twice, and what one stage
 * deferred the other had counted: under a `max: 10` stage before the allow-list and a `max: 3`
 * one after it, both with the default name, a client was deferred at its second recipient.
 * Within one stage create() refuses a name given twice.
 */
export function sharedLimitNames(stages: ReadonlyArray<{ name: string; limits?: unknown }>): string[] {
  const firstStage = new Map<string, number>();
  const problems: string[] = [];
  stages.forEach((entry, index) => {
    if (entry.name !== 'ratelimit') return;
    // A stage whose limits are wrong is refused for that on its own.
    const parsed = options.pick({ limits: true }).safeParse({ limits: entry.limits });
    if (!parsed.success) return;
    for (const name of new Set(parsed.data.limits.map(limitName))) {
      const first = firstStage.get(name);
      if (first === undefined) firstStage.set(name, index);
      else problems.push(`${stageKey(index, 'ratelimit', 'limits')}: a limit named ${JSON.stringify(name)} is in policy.stages.${first} too, and the two would count into one counter; give each its own name`);
    }
  });
  return problems;
}

/**
 * The message a request belongs to, across a cluster: Postfix's `instance` (smtpd's process id,
 * the arrival time and a count) is unique on one host only, so the connection's two ends are
 * part of it, as in the tarpit. Read as sent: only equality matters here, on the hot path.
 */
function messageOf(ctx: StageContext): string {
  const { client_port: clientPort = '', server_address: serverAddress = '', server_port: serverPort = '' } = ctx.attributes;
  return `${ctx.clientAddress}/${clientPort}/${serverAddress}/${serverPort}/${ctx.instance}`;
}

/**
 * The key a limit counts the request under, or undefined when the request has none: the null
 * sender has no sender key, and a sender without a domain (`user`, `user@`, which Postfix takes
 * unless strict_rfc821_envelopes is set) no domain key. Counting those under '' would put every
 * such sender of every client in one bucket, which one client could fill for all.
 */
function keyOf(per: z.output<typeof limitSchema>['per'], ctx: StageContext, opts: Options): string | undefined {
  if (per === 'client') {
    if (!ctx.clientAddress) return undefined;
    const client = clientAddress(ctx.clientAddress);
    return client ? countingKey(client, opts.ipv4Prefix, opts.ipv6Prefix) : ctx.clientAddress.toLowerCase();
  }
  if (!ctx.senderText) return undefined;
  // Keyed as the greylist keys addresses: a sender written with a U-label and with its A-label
  // filled two buckets (twice the limit), and Unicode case mapping merged different mailboxes.
  // Over-long parts (past RFC 5321's 256 octets, up to a 4 kB policy line) by a bounded digest,
  // as the greylist keys them: every request may create a counter living two windows.
  const sender = mailboxKey(ctx.senderText);
  if (per === 'sender') return keyPart(sender);
  const at = sender.lastIndexOf('@');
  const domain = at < 0 ? '' : sender.slice(at + 1);
  return domain ? keyPart(domain) : undefined;
}

export const ratelimitStage: StageDefinition<Options> = {
  name: 'ratelimit',
  defaultStates: ['RCPT'],
  options,
  create(opts, deps) {
    const exempt = AddressSet.parse(opts.exemptClients);
    if (!exempt.ok) throw new ConfigError(`ratelimit.exemptClients: ${exempt.reason}`);
    const deferText = compileTemplate(opts.text, { '{limit}': 'limit', '{key}': 'key', '{max}': 'max', '{count}': 'count', '{window}': 'window', '{seconds}': 'seconds' }, 'text');
    const limits = opts.limits.map((limit) => {
      const windowMs = durationMs(limit.window);
      const name = limitName(limit);
      return { ...limit, name, windowMs, counter: new SlidingWindow(deps.store, deps.clock, windowMs, `rl:${name}:`) };
    });
    const names = limits.map((l) => l.name);
    const duplicate = names.find((name, index) => names.indexOf(name) !== index);
    if (duplicate) throw new ConfigError(`ratelimit.limits: two limits are named ${JSON.stringify(duplicate)}; give each its own name`);
    type Limit = (typeof limits)[number];
    /**
     * The request's count for one limit. `judged`: whether it is compared with the limit. A
     * later recipient of a message is judged as its first was when that was let through: the
     * message was let through as a whole, and comparing again would defer the rest of it
     * whenever other messages (other connections, other clients of a sender domain) were
     * counted in between. A message whose first recipient was deferred was not counted, so a
     * later recipient of it counts it and is judged. `counted`: the request added one to the
     * counter (taken back if the stage defers it). `mark`: the store key of the message, and
     * `reopened` when it said the message was deferred.
     */
    const measure = async (limit: Limit, key: string, ctx: StageContext): Promise<{ limit: Limit; key: string; sample: WindowSample; judged: boolean; counted: boolean; mark?: string; reopened?: boolean }> => {
      if (limit.count === 'recipients' || !ctx.instance) return { limit, key, sample: await limit.counter.add(key), judged: true, counted: true };
      // The first request to mark the message, for this limit, in the shared store counts it.
      const mark = `rlm:${limit.name}:${messageOf(ctx)}`;
      if (await deps.store.setIfAbsent(mark, LET_THROUGH, MESSAGE_MARK_MS)) return { limit, key, sample: await limit.counter.add(key), judged: true, counted: true, mark };
      // Read together: the mark usually says "let through", and then the peek is the answer.
      const [first, sample] = await Promise.all([deps.store.get(mark), limit.counter.peek(key)]);
      if (first?.value === DEFERRED) return { limit, key, sample: await limit.counter.add(key), judged: true, counted: true, mark, reopened: true };
      return { limit, key, sample, judged: false, counted: false };
    };
    const verdict = stageVerdict('ratelimit');

    return {
      name: 'ratelimit',
      states: new Set(['RCPT']),
      async evaluate(ctx) {
        if (ctx.clientAddress && exempt.value.has(ctx.clientAddress)) return verdict('exempt', `client ${ctx.clientAddress} is exempt`, { kind: 'continue' });
        const measured = await Promise.all(
          limits.flatMap((limit) => {
            const key = keyOf(limit.per, ctx, opts);
            return key === undefined ? [] : [measure(limit, key, ctx)];
          }),
        );
        const over = measured.filter((s) => s.judged && s.sample.estimate > s.limit.max);
        const enforced = over.find((s) => s.limit.action === 'defer');
        // A request deferred here is counted by none of the limits: counted, a sender's MTA
        // retrying its queue (every hour or so) kept a per-day limit full of its own refused
        // retries, and its mail was deferred until it bounced. In a stage in warn mode nothing
        // is deferred, so everything counts. Before the answer: the message's next recipient
        // comes only after it.
        if (enforced && deps.mode !== 'warn') {
          await Promise.all(
            measured.flatMap((s) => [
              ...(s.counted ? [s.limit.counter.remove(s.key, s.sample)] : []),
              ...(s.mark ? [deps.store.set(s.mark, DEFERRED, MESSAGE_MARK_MS)] : []),
            ]),
          );
        } else {
          // A message deferred at an earlier recipient and let through at this one.
          await Promise.all(measured.flatMap((s) => (s.reopened ? [deps.store.set(s.mark!, LET_THROUGH, MESSAGE_MARK_MS)] : [])));
        }
        const evidence = measured.map((s) => ({ limit: s.limit.name, key: s.key, estimate: Math.round(s.sample.estimate * 100) / 100, max: s.limit.max }));
        for (const s of over) {
          // In a warn-mode stage nothing is deferred, whatever the limit's action.
          const action = s.limit.action === 'defer' && deps.mode !== 'warn' ? 'defer' : 'warn';
          deps.metrics?.increment('ratelimit', { limit: s.limit.name, result: action === 'defer' ? 'deferred' : 'warned' });
          deps.log.warn({ stage: 'ratelimit', limit: s.limit.name, key: s.key, estimate: s.sample.estimate, max: s.limit.max, action }, 'rate limit exceeded');
        }
        if (enforced) {
          const { limit, key, sample } = enforced;
          // Room for this request, which is not counted (outside warn mode).
          const without = deps.mode === 'warn' ? sample : { ...sample, current: sample.current - 1, estimate: sample.estimate - 1 };
          const seconds = String(Math.max(1, Math.ceil(limit.counter.msUntilRoom(without, limit.max) / 1000)));
          const text = deferText.fill({ limit: limit.name, key, max: String(limit.max), count: limit.count, window: formatDuration(limit.windowMs), seconds });
          return verdict('over-limit', `${limit.name}: ${key} at ${sample.estimate.toFixed(1)} of ${limit.max} ${limit.count} per ${formatDuration(limit.windowMs)}`, { kind: 'defer', code: opts.deferCode, enhanced: opts.enhanced, text }, evidence);
        }
        if (over.length > 0) return verdict('warn', `over limit (warn only): ${over.map((s) => `${s.limit.name} ${s.key}`).join(', ')}`, { kind: 'continue' }, evidence);
        return verdict('within', 'within every limit', { kind: 'continue' }, evidence);
      },
    };
  },
};
