/**
 * NAME
 *   stages/recipient-callforward - verify recipients at an internal host (call-forward)
 *
 * DESCRIPTION
 *   A backup or firewall MX that accepts mail for domains it cannot look up itself asks the
 *   primary whether the recipient exists before accepting, instead of accepting everything and
 *   bouncing later (backscatter). The callout runs against the configured hosts, not the
 *   domain's MX (which may be us), with its own cache namespace (`cf:` and a digest of the hosts
 *   and port: callforwardNamespace, so another primary is asked afresh) and the same engine
 *   rules: only a 5xx at RCPT rejects (550 5.1.1 by default); an unreachable primary defaults to
 *   DUNNO, because queueing while the primary is down is what a backup MX is for.
 *   Exim's recipient callouts are documented as "usually used only between hosts that are
 *   controlled by the same administration": this stage is for your own hosts. So the politeness
 *   limits meant for other people's servers (per host at once, per domain and host a minute)
 *   do not apply to its callouts; limits.concurrency does.
 *   A request whose client is one of the hosts is not called forward: it is a host asking about
 *   its own recipients, or our own call-forward come back (the hosts name this machine, or two
 *   MXes call forward to each other), which would wait on itself until the deadline and defer
 *   every recipient. The host decides those itself.
 *   Its verdicts are counted in callout_callforward_verifications_total (a primary that is down
 *   shows there as unknown, answered DUNNO), not with the sender callouts, whose cache hit
 *   ratio they would change.
 *
 * CONFIGURATION
 *   hosts (IP addresses or names), port, domains (empty = every recipient domain), randomProbe,
 *   actions, codes and texts as sender-callout ({recipient}, {reason} expand)
 */

import { createHash } from 'node:crypto';
import { isIP } from 'node:net';
import { z } from 'zod';
import { fqdn } from '../../config/fqdn.js';
import { normaliseDomain } from '../../address/index.js';
import { ConfigError } from '../../core/errors.js';
import { resolveConfiguredHosts } from '../../dns/mx.js';
import { clientAddress } from '../../checks/client-ip.js';
import { CalloutEngine } from '../../verify/engine.js';
import type { VerifyResult } from '../../verify/types.js';
import type { StageDefinition, StageVerdict } from '../types.js';
import { domainEntry } from './allowlist.js';
import { LateVerdicts, actionKeyFor, calloutActionOptions, calloutDecider, verifyWithinDeadline, withinDeadline } from './sender-callout.js';
import { stageVerdict } from './verdict.js';
import { enhancedStatusOption } from './status-option.js';

const options = z
  .object({
    // Anything else ("[10.0.0.5]", "host:2525") would be looked up as a name, fail, and leave
    // every recipient unverified (unknown: DUNNO) without a word.
    hosts: z
      .array(z.string().refine((host) => isIP(host) !== 0 || normaliseDomain(host).ok, { message: 'expected an IP address or a host name (the port is `port`)' }))
      .min(1),
    port: z.number().int().min(1).max(65535).default(25),
    domains: z.array(z.string()).default([]),
    helo: fqdn.optional(),
    randomProbe: z.boolean().default(false),
    ...calloutActionOptions,
    rejectEnhanced: enhancedStatusOption('5').default('5.1.1'),
    deferEnhanced: enhancedStatusOption('4').default('4.1.1'),
    // Postfix puts "<recipient>: Recipient address rejected: " before a policy service's text;
    // these are the words of its own recipient verification (reject_unverified_recipient), which
    // administrators know from their logs. "Recipient address rejected: {reason}" said it twice.
    rejectText: z.string().default('undeliverable address: {reason}'),
    deferText: z.string().default('unverified address: {reason}'),
    inProgressText: z.string().default('unverified address: Address verification in progress'),
  })
  .strict();

type Options = z.output<typeof options>;

/**
 * The store namespace of a call-forward's records (verdicts, late verdicts, locks): `cf:` and
 * who answers, the hosts (any order, as written in any case or form) and the port. Under `cf:`
 * alone a primary moved, or a wrong one corrected and reloaded, left the old host's answers
 * served: its rejections for cache.addressNegative (2 h), its acceptances for a day. Daemons
 * sharing a store with the same hosts share their records.
 */
export function callforwardNamespace(hosts: readonly string[], port: number): string {
  const canonical = (host: string): string => {
    const address = clientAddress(host)?.text;
    if (address !== undefined) return address;
    const name = normaliseDomain(host);
    return (name.ok ? name.value.ascii : host).toLowerCase();
  };
  const who = `${[...new Set(hosts.map(canonical))].sort().join(',')} port ${port}`;
  return `cf:${createHash('sha256').update(who).digest('hex').slice(0, 8)}:`;
}

export const recipientCallforwardStage: StageDefinition<Options> = {
  name: 'recipient-callforward',
  defaultStates: ['RCPT'],
  options,
  create(opts, deps) {
    if (!deps.engine) throw new ConfigError('call-forward callouts need callout.helo (or a fully qualified host name); the stage\'s own helo only changes the name they send');
    const base = deps.engine.settings;
    const namespace = callforwardNamespace(opts.hosts, opts.port);
    const engine = new CalloutEngine(
      {
        ...base,
        // The hosts are the administrator's own, named in the configuration: private ranges are expected.
        callout: { ...base.callout, port: opts.port, randomProbe: opts.randomProbe, allowTargets: ['0.0.0.0/0', '::/0'], ...(opts.helo ? { helo: opts.helo } : {}) },
        // The politeness limits protect other people's servers. Against our own primary they
        // would answer a burst of recipients (more at once than perHostConcurrency, more a
        // minute than perDomainPerMinute) "unknown: rate-limited", which is DUNNO: accepted
        // unverified, the backscatter this stage is for. Only the engine's own concurrency
        // bounds the work, as Postfix's verify(8) is bounded by its process limit alone.
        limits: {
          ...base.limits,
          perHostConcurrency: Infinity,
          perDomainPerMinute: Infinity,
          perHostConnectionsPerMinute: Infinity,
        },
      },
      {
        resolver: deps.resolver,
        store: deps.store,
        clock: deps.clock,
        keyPrefix: namespace,
        log: deps.log,
        mailHosts: () => resolveConfiguredHosts(deps.resolver, opts.hosts, { ipv6: base.callout.ipv6 }),
        onResult: (result) => deps.metrics?.increment('callforward_verifications', { verdict: result.verdict, source: result.source }),
      },
    );
    // Hosts given by address are known at once; names are looked up (cached) per request.
    const hostAddresses = new Set(opts.hosts.map((host) => clientAddress(host)?.text).filter((ip): ip is string => ip !== undefined));
    const namedHosts = opts.hosts.length > hostAddresses.size;
    const isHost = (client: string): boolean | Promise<boolean> => {
      if (hostAddresses.has(client)) return true;
      if (!namedHosts) return false;
      return resolveConfiguredHosts(deps.resolver, opts.hosts, { ipv6: base.callout.ipv6 }).then(
        (resolved) => resolved.kind === 'hosts' && resolved.hosts.some((host) => host.addresses.some((ip) => clientAddress(ip)?.text === client)),
      );
    };
    // As a recipient's asciiDomain is written: `Example.ORG.` and `bücher.example` match too.
    const domains = new Set(opts.domains.map((d) => domainEntry(d, 'recipient-callforward.domains')));
    const calloutDecision = calloutDecider(opts);
    // Apart from the sender callouts' verdicts, as the engine's records are (its keyPrefix).
    const late = new LateVerdicts(deps.store, namespace);
    const verdict = stageVerdict('recipient-callforward');
    return {
      name: 'recipient-callforward',
      states: new Set(['RCPT']),
      evaluate(ctx) {
        const recipient = ctx.recipient;
        if (!recipient) return verdict('none', 'no recipient to verify', { kind: 'continue' });
        if (domains.size > 0 && !domains.has(recipient.asciiDomain)) {
          return verdict('none', `${recipient.domain} is not a call-forward domain`, { kind: 'continue' });
        }
        const answer = (result: VerifyResult | undefined): StageVerdict => {
          if (!result) return verdict('in-progress', `verification of ${recipient.address} still running at the deadline`, calloutDecision('inProgress', recipient.address, 'in progress'));
          const evidence = { verdict: result.verdict, reason: result.reason, source: result.source, reply: result.reply };
          return verdict(result.verdict, `${result.reason}: ${result.description}`, calloutDecision(actionKeyFor(result), recipient.address, result.description), evidence);
        };
        const verify = (): StageVerdict | Promise<StageVerdict> => {
          const result = verifyWithinDeadline(engine, recipient, ctx, deps.log, late);
          return result instanceof Promise ? result.then(answer) : answer(result);
        };
        const client = clientAddress(ctx.clientAddress)?.text;
        const fromHost = client === undefined ? false : isHost(client);
        const skipOrVerify = (isCallForwardHost: boolean): StageVerdict | Promise<StageVerdict> =>
          isCallForwardHost ? verdict('none', `client ${client} is a call-forward host: it decides its own recipients (and a call-forward of ours come back would wait on itself)`, { kind: 'continue' }) : verify();
        if (!(fromHost instanceof Promise)) return skipOrVerify(fromHost);
        // The hosts' names are looked up within the deadline, as the callout is: a slow DNS
        // server would otherwise hold the answer past it, and the pipeline would fault the stage.
        return withinDeadline(fromHost, ctx).then((known) =>
          known === undefined
            ? verdict('in-progress', 'the call-forward hosts\' addresses were still being looked up at the deadline', calloutDecision('inProgress', recipient.address, 'in progress'))
            : skipOrVerify(known),
        );
      },
      close: () => engine.idle(),
      abandon: () => engine.abandon(),
    };
  },
};
