/**
 * NAME
 *   verify/engine - the callout engine: plan, consult the cache, probe, interpret, remember
 *
 * DESCRIPTION
 *   CalloutEngine.verify() answers one address; verifyMany() answers several, probing the
 *   addresses of one domain on shared connections. For each address, cheapest evidence first:
 *     1. syntax (RFC 5321 §4.1.2, RFC 6531) -> invalid
 *     2. our own probe senders are never verified (a probe of a probe loops)
 *     3. the address record: fresh -> answer; past its refresh age -> answer stale and refresh
 *        in the background (Postfix verify(8)); expired -> probe
 *     4. the domain record: catch-all, cannot take bounces, greylists us, refused us lately
 *        -> answer without connecting (Exim's domain cache)
 *     5. an address whose RCPT TO line would pass 512 octets (§4.5.3.1.4), which smtp/command
 *        never sends -> unknown, without connecting; limits: global concurrency, callouts per
 *        domain per minute -> unknown: rate-limited
 *     6. MX resolution (RFC 5321 §5.1, RFC 7505) -> no-mail-domain, or unknown on a temporary
 *        DNS failure (never "does not exist")
 *     7. the dialogue (verify/probe), then the records it taught us are written back.
 *   Steps 6 and 7 share one deadline, callout.timeouts.overall: a lookup still unanswered then
 *   is unknown (dns-tempfail), and the dialogue has what the lookups left of it. A dialogue
 *   step that deadline ended before the step's own timeout, and only because of what the
 *   lookups took, is unknown (timeout); it is not remembered of the domain when the step had
 *   less than half its own timeout: its exchanger had no fair chance.
 *   Concurrent verifications of one address share one probe (single flight), and those of one
 *   domain whose catch-all state is unknown take turns until one has asked it (joinCatchAllProbe,
 *   across processes through a lock in the store), so the exchanger is asked the random local
 *   part once, not once per address. A 4xx to it is remembered on the domain record: until
 *   cache.greylistRetry has passed, callouts of the domain skip the random probe and answer as
 *   an inconclusive one does (an accepted address is unknown, catch-all-unknown); then one asks
 *   the same local part again (verify/cache says why the same). A wait for another process's
 *   lock (of an address or of the catch-all question) ends after a lock's lifetime,
 *   callout.timeouts.overall + 5 s. A lock
 *   that then holds what it held at the start of the wait (its holder died, or it was written
 *   without an expiry, which made every callout of the domain wait again) is taken over when
 *   it is the catch-all question's, and the batch asks it; a probe lock is deleted, since the
 *   wait spent the probe's deadline (the waiter answers unknown timeout without asking the
 *   exchangers) and the address's next callout then probes without waiting. A lock that
 *   changed is a new holder's and is left alone. The engine lets go only of the locks it
 *   holds, by their tokens (verify/cache): deleting by key alone, a waiter that gave up deleted
 *   the live lock of a process that had just taken it. Clean connections
 *   are kept between callouts to the same exchanger address (verify/connections); idle() closes
 *   them.
 *   The front ends (the CLI, the policy service) call only this class.
 *
 *   Time: deadlines, lock waits and durations are measured on the monotonic clock of deps.timers
 *   (performance.now() and setTimeout unless a test moves it), so a step of the wall clock
 *   neither times a callout out (and marks its domain useless) nor stretches a wait; the
 *   injected Clock dates the records and their expiry. The SMTP client's own step timeouts stay
 *   on real timers: they bound real I/O.
 *   Work no caller waits for (a stale answer's refresh, the release of a lock) that
 *   fails is logged at warn through deps.log, once a minute per message and error.
 *
 * CONFIGURATION
 *   callout.*, cache.*, limits.* (config/schema).
 */

import type { Clock, Timers } from '../core/clock.js';
import { settleWithin, sleep, systemClock, systemTimers } from '../core/clock.js';
import { ConfigError, StoreError, describeError } from '../core/errors.js';
import { RepeatCollapser, type Logger } from '../core/log.js';
import { mailboxKey, parseForwardPath } from '../address/index.js';
import type { Mailbox } from '../address/index.js';
import type { MxHost, MxResolution, Resolver } from '../dns/types.js';
import { resolveMailHosts } from '../dns/mx.js';
import { rcptToCommand } from '../smtp/command.js';
import type { Dialer } from '../smtp/types.js';
import { ASK_LATER, type Store } from '../store/types.js';
import type { Config } from '../config/schema.js';
import { VerificationCache } from './cache.js';
import { ConnectionCache } from './connections.js';
import type { ConnectionCacheStats } from './connections.js';
import type { AddressRecord, CatchAllFact, DomainFacts } from './cache.js';
import { Politeness } from './politeness.js';
import { refusesEveryRecipient } from './interpret.js';
import { probeDomain } from './probe.js';
import type { AddressOutcome, DomainProbeOutput, ProbeTarget } from './probe.js';
import { TEMPORARY_DOMAIN_FAILURES, type VerifyResult } from './types.js';

export interface EngineDeps {
  resolver: Resolver;
  store: Store;
  clock?: Clock;
  /** The monotonic clock of deadlines, lock waits and durations (systemTimers: performance.now()). */
  timers?: Timers;
  dialer?: Dialer;
  /** For the shuffle of equal MX preferences. */
  random?: () => number;
  /** Fixed exchangers instead of MX resolution (recipient call-forward to an internal host). */
  mailHosts?: (domain: string) => Promise<MxResolution>;
  /** Namespace of this engine's records in the store, so a call-forward cache stays apart. */
  keyPrefix?: string;
  /** Called with every verdict, for metrics. */
  onResult?: (result: VerifyResult) => void;
  /** Called as the connection cache parks, reuses and retires connections, for metrics. */
  onConnectionEvent?: (event: keyof ConnectionCacheStats) => void;
  /** Where the failures of work no caller waits for (a stale answer's refresh, a lock's release) are logged, at warn. */
  log?: Logger;
}

/**
 * Temporary refusals of us (a 4xx before RCPT; a 421 at RCPT, RSET or VRFY, which closes the
 * channel: verify/probe's tempfail-at-rcpt failure), kept unless an exchanger greylisted us.
 */
const TEMPORARY_REFUSALS: ReadonlySet<string> = new Set(['refused-at-greeting', 'refused-at-helo', 'refused-at-mail', 'tempfail-at-rcpt']);

/** A probe lock lasts at most this much longer than the verification it guards. */
const LOCK_SLACK_MS = 5_000;
const LOCK_POLL_MS = 100;
/** A background failure is logged once in this window per message; its repeats are counted on the next line. */
const WARN_WINDOW_MS = 60_000;

export interface EngineStats {
  verifications: number;
  probes: number;
  addressCacheHits: number;
  domainCacheHits: number;
  staleServed: number;
  rateLimited: number;
}

export type EngineConfig = Pick<Config, 'callout' | 'cache' | 'limits'>;

interface Planned {
  input: string;
  mailbox?: Mailbox;
  result?: VerifyResult;
}

/**
 * The name the engine announces, or a ConfigError without one; exported so that a command can
 * refuse the configuration before it creates a store it will not use.
 */
export function heloOf(config: Pick<EngineConfig, 'callout'>): string {
  if (!config.callout.helo) throw new ConfigError("callout.helo: got nothing, expected this host's fully qualified name: give --helo NAME or callout.helo in the configuration file");
  return config.callout.helo;
}

export class CalloutEngine {
  private readonly clock: Clock;
  private readonly timers: Timers;
  private readonly cache: VerificationCache;
  private readonly politeness: Politeness;
  /** Idle SMTP connections for the next callout to the same exchanger address. */
  readonly connections: ConnectionCache;
  private readonly inFlight = new Map<string, Promise<VerifyResult>>();
  /** Per domain, the batch of this engine that is asking the catch-all question (joinCatchAllProbe). */
  private readonly catchAllProbes = new Map<string, Promise<void>>();
  private readonly background = new Set<Promise<unknown>>();
  /**
   * The locks this engine holds in the store (probe locks until their probe ends, catch-all
   * locks until their batch ends): store key to the token written there.
   */
  private readonly locksHere = new Map<string, string>();
  private readonly ownSenders: Set<string>;
  private readonly warnLines = new RepeatCollapser(WARN_WINDOW_MS);
  private readonly helo: string;
  /** The settings this engine runs with (for engines derived from it, such as call-forward). */
  readonly settings: EngineConfig;
  readonly stats: EngineStats = { verifications: 0, probes: 0, addressCacheHits: 0, domainCacheHits: 0, staleServed: 0, rateLimited: 0 };

  constructor(
    private readonly config: EngineConfig,
    private readonly deps: EngineDeps,
  ) {
    this.settings = config;
    this.helo = heloOf(config);
    this.clock = deps.clock ?? systemClock;
    this.timers = deps.timers ?? systemTimers;
    this.cache = new VerificationCache(deps.store, config.cache, this.clock, deps.keyPrefix ?? '');
    this.politeness = new Politeness({
      clock: this.clock,
      timers: this.timers,
      concurrency: config.limits.concurrency,
      perHostConcurrency: config.limits.perHostConcurrency,
      leaseMs: config.callout.timeouts.overall + LOCK_SLACK_MS,
      onReleaseFailure: (err) => this.warn('per-host connection lease not released (it lapses after callout.timeouts.overall and 5 s)', err),
      perDomainPerMinute: config.limits.perDomainPerMinute,
      perHostConnectionsPerMinute: config.limits.perHostConnectionsPerMinute,
      allowTargets: config.callout.allowTargets,
      store: deps.store,
      keyPrefix: deps.keyPrefix ?? '',
    });
    const reuse = config.callout.connectionCache;
    this.connections = new ConnectionCache({
      clock: this.clock,
      timers: this.timers,
      enabled: reuse.enabled,
      idleMs: reuse.idleTime,
      maxIdlePerHost: reuse.maxIdlePerHost,
      maxIdle: reuse.maxIdle,
      maxRejectedRecipients: reuse.maxRejectedRecipients,
      addressesPerConnection: config.limits.addressesPerConnection,
      ...(deps.onConnectionEvent ? { onEvent: deps.onConnectionEvent } : {}),
    });
    this.ownSenders = new Set(
      [config.callout.sender, config.callout.fallbackSender].filter((s): s is string => !!s).map(mailboxKey),
    );
  }

  /** A Mailbox the caller has parsed already (the policy pipeline has) is not parsed again. */
  async verify(address: string | Mailbox): Promise<VerifyResult> {
    // Most answers at SMTP time come from the cache: answer those without the batch machinery.
    const started = this.timers.now();
    const planned = await this.plan(address, started);
    if (!planned.result) {
      const [result] = await this.answerPlanned([planned], started);
      return result!;
    }
    this.stats.verifications++;
    this.deps.onResult?.(planned.result);
    return planned.result;
  }

  /** Verdicts in the order of the input; addresses of one domain share connections. */
  async verifyMany(addresses: string[]): Promise<VerifyResult[]> {
    const started = this.timers.now();
    return this.answerPlanned(await Promise.all(addresses.map((input) => this.plan(input, started))), started);
  }

  private async answerPlanned(planned: Planned[], started: number): Promise<VerifyResult[]> {
    const byDomain = new Map<string, Planned[]>();
    // Awaited once every batch has started: awaiting each here would hold back the probes of
    // the addresses after it until that other callout ends.
    const sharing: Promise<void>[] = [];
    for (const item of planned) {
      if (item.result || !item.mailbox) continue;
      const shared = this.inFlight.get(item.mailbox.address);
      if (shared) {
        sharing.push(shared.then((result) => void (item.result = result)));
        continue;
      }
      const list = byDomain.get(item.mailbox.asciiDomain) ?? [];
      if (!list.some((other) => other.mailbox!.address === item.mailbox!.address)) list.push(item);
      byDomain.set(item.mailbox.asciiDomain, list);
    }
    const batches: Promise<Map<string, VerifyResult>>[] = [];
    for (const [domain, items] of byDomain) {
      for (let i = 0; i < items.length; i += this.config.limits.addressesPerConnection) {
        const chunk = items.slice(i, i + this.config.limits.addressesPerConnection);
        batches.push(this.probeBatch(domain, chunk.map((item) => item.mailbox!), started));
      }
    }
    const probed = new Map<string, VerifyResult>();
    // Without a shared callout, as soon as the batches end: a caller racing a deadline (the
    // policy stages) records a late answer as the probe that found it ends.
    const own = Promise.all(batches);
    const done = sharing.length === 0 ? await own : (await Promise.all([own, ...sharing]))[0];
    for (const batch of done) for (const [address, result] of batch) probed.set(address, result);
    this.stats.verifications += planned.length;
    const results = planned.map((item) => item.result ?? probed.get(item.mailbox!.address)!);
    if (this.deps.onResult) for (const result of results) this.deps.onResult(result);
    return results;
  }

  /**
   * Resolves once background refreshes and probes still running (answered "in progress" at a
   * policy deadline) have finished, so their answers reach the cache before shutdown, and the
   * idle connections kept for reuse are closed with QUIT.
   */
  async idle(): Promise<void> {
    while (this.background.size > 0 || this.inFlight.size > 0) await Promise.allSettled([...this.background, ...this.inFlight.values()]);
    await this.politeness.settled();
    await this.connections.close();
  }

  /**
   * At shutdown, once idle() has had its time: gives up the probes still running. Their locks
   * are let go, so that a daemon started at once (or another on the same store) probes those
   * addresses instead of waiting out a dead process's lock; their answers are lost. Returns
   * how many verifications were still running.
   */
  async abandon(): Promise<number> {
    const running = this.inFlight.size + this.background.size;
    const locked = [...this.locksHere];
    this.locksHere.clear();
    this.politeness.releaseLeases();
    // idle() closes them only once every probe has ended, which at this point none has.
    await Promise.allSettled([
      // Logged: a lock left behind here makes the next daemon wait it out until it lapses.
      ...locked.map(([key, token]) => this.unlockOrWarn(key, token, 'lock not released at shutdown', { key })),
      this.connections.close(),
      this.politeness.settled(),
    ]);
    return running;
  }

  /** Steps 1 to 4: everything that can answer without touching the network. */
  private async plan(given: string | Mailbox, started: number): Promise<Planned> {
    const input = typeof given === 'string' ? given : given.address;
    let mailbox: Mailbox;
    if (typeof given === 'string') {
      // Its exchanger judges the length (RFC 5321 §4.5.3.1 asks for no limits); a command line
      // over 512 octets is refused by smtp/command before it is sent (answered below).
      const parsed = parseForwardPath(given.trim(), { tolerant: true, sizeLimits: false });
      if (!parsed.ok) {
        return { input, result: this.result(input, started, { verdict: 'invalid', reason: 'syntax', description: parsed.error.message }, 'none') };
      }
      if (parsed.value.kind === 'postmaster') {
        const description = '<Postmaster> without a domain names the receiving server itself; there is nothing to verify';
        return { input, result: this.result(input, started, { verdict: 'invalid', reason: 'syntax', description }, 'none') };
      }
      mailbox = parsed.value.mailbox;
    } else {
      mailbox = given;
    }
    const own = this.ownSenderResult(mailbox, started);
    if (own) return { input, mailbox, result: own };
    const record = await this.cache.getAddress(mailbox.address);
    if (record) return { input, mailbox, result: this.fromAddressRecord(mailbox, record, started) };
    const fromDomain = this.fromDomainRecord(mailbox, await this.cache.getDomain(mailbox.asciiDomain), started);
    if (fromDomain) return { input, mailbox, result: fromDomain };
    // Asked of no exchanger: a connection would open only to fail at the RCPT it cannot send.
    // (After the cache, which never holds such an address, so that a cached answer costs nothing more.)
    const rcpt = rcptToCommand(mailbox.address);
    if (rcpt.kind === 'unsafe') {
      return { input, mailbox, result: this.result(mailbox.address, started, { verdict: 'unknown', reason: 'protocol-error', description: `${rcpt.detail}: no exchanger can be asked` }, 'none') };
    }
    return { input, mailbox };
  }

  /**
   * Steps 2 to 4 without waiting: the verdict when the address is our own probe sender, or when
   * its record or its domain's answers it and the store can tell at once (Store.peek: memory,
   * SQLite with no write queued). undefined when only verify() can tell. At SMTP time most
   * answers are such cached ones, and a policy request then costs no promise and no timer.
   * Counted and reported as verify() counts its answers.
   */
  verifyNow(mailbox: Mailbox): VerifyResult | undefined {
    const started = this.timers.now();
    let result = this.ownSenderResult(mailbox, started);
    if (!result) {
      const record = this.cache.peekAddress(mailbox.address);
      if (record === ASK_LATER) return undefined;
      if (record) {
        result = this.fromAddressRecord(mailbox, record, started);
      } else {
        const facts = this.cache.peekDomain(mailbox.asciiDomain);
        if (facts === ASK_LATER) return undefined;
        result = this.fromDomainRecord(mailbox, facts, started);
        if (!result) return undefined;
      }
    }
    this.stats.verifications++;
    this.deps.onResult?.(result);
    return result;
  }

  /** Step 2: our own probe senders are never verified. */
  private ownSenderResult(mailbox: Mailbox, started: number): VerifyResult | undefined {
    if (this.ownSenders.size === 0 || !this.ownSenders.has(mailboxKey(mailbox.address))) return undefined;
    return this.result(mailbox.address, started, {
      verdict: 'deliverable',
      reason: 'own-probe-sender',
      description: `${mailbox.address} is callout's own probe sender and is never verified (a callout of a callout loops)`,
    }, 'none');
  }

  /** Step 3: the address record answers, stale past its refresh age while one probe refreshes it. */
  private fromAddressRecord(mailbox: Mailbox, record: AddressRecord, started: number): VerifyResult {
    const stale = this.clock.now() >= record.refreshAt;
    if (stale && !this.inFlight.has(mailbox.address)) {
      this.stats.staleServed++;
      this.track(this.probeBatch(mailbox.asciiDomain, [mailbox], this.timers.now()), { address: mailbox.address });
    }
    this.stats.addressCacheHits++;
    return this.fromRecord(mailbox.address, record, started, stale);
  }

  /** Step 4: the domain's record, when it answers for every address of the domain. */
  private fromDomainRecord(mailbox: Mailbox, facts: DomainFacts, started: number): VerifyResult | undefined {
    const fromDomain = this.fromDomainFacts(mailbox, facts, started);
    if (fromDomain) this.stats.domainCacheHits++;
    return fromDomain;
  }

  private fromDomainFacts(mailbox: Mailbox, facts: DomainFacts, started: number): VerifyResult | undefined {
    const known = (fact: { reason: VerifyResult['reason']; description: string; reply?: VerifyResult['reply'] }, verdict: VerifyResult['verdict']) =>
      this.result(mailbox.address, started, {
        verdict,
        reason: fact.reason,
        description: `${otherAddressesHidden(fact.description, mailbox)} (remembered for the domain)`,
        ...(fact.reply ? { reply: fact.reply } : {}),
      }, 'domain-cache', {
        catchAll: this.rememberedCatchAll(facts) ?? 'not-run',
        postmaster: facts.postmaster?.state ?? 'not-run',
      });
    if (facts.catchall?.state === 'accepted') return known(facts.catchall, 'risky');
    if (facts.nullsender && this.config.callout.sender === '' && this.config.callout.fallbackSender === undefined) {
      return known(facts.nullsender, 'risky');
    }
    if (facts.useless) return known(facts.useless, 'unknown');
    if (facts.greylist) return known(facts.greylist, 'unknown');
    return undefined;
  }

  /** Steps 5 to 7 for addresses of one domain, registered as in flight so others share them. */
  private probeBatch(domain: string, mailboxes: Mailbox[], started: number): Promise<Map<string, VerifyResult>> {
    const run = this.runBatch(domain, mailboxes, started);
    for (const mailbox of mailboxes) {
      const one = run.then((results) => results.get(mailbox.address)!);
      this.inFlight.set(mailbox.address, one);
      void one.finally(() => {
        if (this.inFlight.get(mailbox.address) === one) this.inFlight.delete(mailbox.address);
      }).catch(() => undefined);
    }
    return run;
  }

  private async runBatch(domain: string, batch: Mailbox[], started: number): Promise<Map<string, VerifyResult>> {
    const results = new Map<string, VerifyResult>();
    // A store that cannot be read fails the probe below too, which answers for it.
    const endTurn = await this.joinCatchAllProbe(domain, batch, started, results).catch(() => async () => undefined);
    try {
      const mailboxes = batch.filter((m) => !results.has(m.address));
      if (mailboxes.length > 0) await this.probeUnanswered(domain, mailboxes, started, results);
      return results;
    } finally {
      await endTurn();
    }
  }

  /**
   * The catch-all probe asks the same question for every address of a domain. While one batch
   * asks it, the others of that domain wait for its end, then answer from the domain's record
   * what it answers (a catch-all, a domain that refuses us) and probe the rest without asking
   * again. Batches of this engine wait on the turn itself, for one turn at most (one that
   * leaves the question open lets its waiters ask it at once); other processes on the store see
   * its lock (lock-catchall) and read the domain record until it is written or the lock goes,
   * for at most the lock's lifetime, then take over a lock left unchanged that long. Resolves
   * with the function that ends this batch's turn (nothing to end when it took none).
   */
  private async joinCatchAllProbe(domain: string, mailboxes: Mailbox[], started: number, results: Map<string, VerifyResult>): Promise<() => Promise<void>> {
    const nothingToEnd = async (): Promise<void> => undefined;
    /** Answers from the domain record what it answers; true when no catch-all question is left to ask. */
    const settled = async (): Promise<boolean> => {
      const facts = await this.cache.getDomain(domain);
      for (const m of mailboxes) {
        const known = results.has(m.address) ? undefined : this.fromDomainRecord(m, facts, started);
        if (known) results.set(m.address, known);
      }
      return !this.config.callout.randomProbe || !this.catchAllOpen(facts) || mailboxes.every((m) => results.has(m.address));
    };
    let waited = false;
    for (;;) {
      if (await settled()) return nothingToEnd;
      const running = this.catchAllProbes.get(domain);
      if (!running) break;
      // One turn at most: after a turn that left the question open, waiting for the next one
      // too would queue the domain's callouts one behind another, each for up to a deadline.
      if (waited) return nothingToEnd;
      await running;
      waited = true;
    }
    let endInProcess!: () => void;
    const turn = new Promise<void>((resolve) => (endInProcess = resolve));
    this.catchAllProbes.set(domain, turn);
    const endTurn = (): void => {
      if (this.catchAllProbes.get(domain) === turn) this.catchAllProbes.delete(domain);
      endInProcess();
    };
    const key = this.cache.catchAllLock(domain);
    let token: string | undefined;
    try {
      const lockTtl = this.config.callout.timeouts.overall + LOCK_SLACK_MS;
      const giveUp = this.timers.now() + lockTtl;
      /** What the lock held when first found taken. */
      let seen: string | undefined;
      while ((token = await this.cache.lock(key, lockTtl)) === undefined) {
        seen ??= await this.cache.holder(key);
        if (this.timers.now() >= giveUp) {
          // Unchanged for a lock's lifetime: its holder died, or it never expires (written by
          // hand or by another program); left there, it made the domain's first callout wait
          // this long again at every batch. A lock another holder took meanwhile is theirs.
          token = seen === undefined ? undefined : await this.cache.takeOver(key, seen, lockTtl);
          if (token === undefined) return async () => endTurn();
          break;
        }
        await sleep(LOCK_POLL_MS, this.timers);
        if (await settled()) {
          endTurn();
          return nothingToEnd;
        }
      }
    } catch (err) {
      endTurn();
      throw err;
    }
    const held = token;
    this.locksHere.set(key, held);
    return async () => {
      endTurn();
      await this.release(key, held, 'catch-all lock not released', { domain });
    };
  }

  /**
   * Lets go of a lock this engine holds with token. Nothing when abandon() let it go first (it
   * may be another process's by now); deleteIf leaves one another took after ours expired. A
   * store that fails here is logged at warn (the warning and fields name the lock), not thrown:
   * the verdicts reached under the lock stand, and it lapses after its lifetime, until then
   * making other processes wait for it. Thrown, it replaced the verdicts of a probe that had
   * ended and saved them, and the caller answered by policy.faultAction.
   */
  private async release(key: string, token: string, warning: string, fields: Record<string, unknown>): Promise<void> {
    if (this.locksHere.get(key) !== token) return;
    this.locksHere.delete(key);
    await this.unlockOrWarn(key, token, warning, fields);
  }

  /** Deletes the lock if it holds token; a store that fails is logged at warn, as release() says why. */
  private async unlockOrWarn(key: string, token: string, warning: string, fields: Record<string, unknown>): Promise<void> {
    await this.cache.unlock(key, token).catch((err: unknown) => this.warn(warning, err, fields));
  }

  /** Lets go of the probe locks of addresses held here (address to token). */
  private async releaseProbeLocks(held: Map<string, string>): Promise<void> {
    await Promise.all([...held].map(([address, token]) => this.release(this.cache.addressLock(address), token, 'probe lock not released', { address })));
  }

  private async probeUnanswered(domain: string, mailboxes: Mailbox[], started: number, results: Map<string, VerifyResult>): Promise<void> {
    const answerAll = (outcome: AddressOutcome, extra?: Partial<VerifyResult>) => {
      for (const m of mailboxes) results.set(m.address, this.result(m.address, started, outcome, 'none', extra));
    };
    const release = this.politeness.acquireGlobal();
    if (!release) {
      this.stats.rateLimited += mailboxes.length;
      return answerAll({ verdict: 'unknown', reason: 'rate-limited', description: `callout concurrency limit (${this.config.limits.concurrency}) reached` });
    }
    // One deadline for the lookups and the dialogue (Exim's maxwait, as README's dns.timeout
    // promises): a silent name server made `--timeout 2` a 16 s verification (c-ares's own tries).
    // On the monotonic clock: a wall clock stepped forward (NTP, a resumed virtual machine) timed
    // out every callout running at its next wait, and one with no recipient answered yet then
    // marked its domain useless for cache.tempfail.
    const deadline = this.timers.now() + this.config.callout.timeouts.overall;
    try {
      const resolution = await settleWithin(this.mailHosts(mailboxes[0]!), this.config.callout.timeouts.overall, (): MxResolution => ({
        kind: 'tempfail',
        reason: `no answer within the overall deadline of ${this.config.callout.timeouts.overall} ms (callout.timeouts.overall) to the lookups of its mail exchangers and their addresses`,
      }), this.timers);
      if (resolution.kind !== 'hosts') return answerAll(describeResolution(domain, resolution));
      if (!(await this.politeness.admitDomain(domain))) {
        this.stats.rateLimited += mailboxes.length;
        return answerAll(
          { verdict: 'unknown', reason: 'rate-limited', description: `more than ${this.config.limits.perDomainPerMinute} callouts to ${domain} in the last minute` },
          { mxHosts: resolution.hosts },
        );
      }
      const { answered, held } = await this.waitForOtherProbes(mailboxes, started);
      for (const [address, result] of answered) results.set(address, result);
      const mine = mailboxes.filter((m) => !answered.has(m.address));
      if (mine.length === 0) return;
      try {
        if (this.timers.now() >= deadline) {
          // Spent on the lookups and on another process's lock: the exchangers were not asked,
          // so the probe's "deadline reached" must not be remembered of them (the useless record).
          const description = `the overall deadline of ${this.config.callout.timeouts.overall} ms (callout.timeouts.overall) was spent before any exchanger was asked (DNS lookups, waiting for another process's probe of the address)`;
          for (const m of mine) results.set(m.address, this.result(m.address, started, { verdict: 'unknown', reason: 'timeout', description }, 'none', { mxHosts: resolution.hosts }));
          return;
        }
        await this.probe(domain, mine, resolution.hosts, started, deadline, results);
      } finally {
        // Only the locks held here: one given up on after the wait is another's, or gone.
        await this.releaseProbeLocks(held);
      }
    } catch (err) {
      // A store fault is the caller's to answer, as when the cache read before this failed
      // (policy.faultAction: DUNNO or 451), not a verdict on the address.
      if (err instanceof StoreError) throw err;
      answerAll({ verdict: 'unknown', reason: 'protocol-error', description: `internal error: ${describeError(err)}` });
    } finally {
      release();
    }
  }

  /**
   * Another process sharing the store (a second daemon on Redis) may be probing the same
   * address; wait for its answer rather than probing twice. Addresses whose lock we take are
   * left for us to probe. The wait gives up a lock's lifetime (overall + 5 s) after the first
   * refusal, always past the probe's deadline (overall from before the wait): the addresses
   * still locked then are left unanswered and the caller answers them unknown timeout without
   * asking the exchangers. A lock that holds what it held at the first refusal (its holder
   * died, or it never expires) is deleted, so that the next callout of the address probes
   * without waiting (a store that fails to is logged at warn); one another took meanwhile
   * stays. Resolves with the answers others left and the probe locks held here (address to
   * token).
   */
  private async waitForOtherProbes(mailboxes: Mailbox[], started: number): Promise<{ answered: Map<string, VerifyResult>; held: Map<string, string> }> {
    const lockTtl = this.config.callout.timeouts.overall + LOCK_SLACK_MS;
    const answered = new Map<string, VerifyResult>();
    /** The locks taken here, by address: the caller lets them go after its probe, this function if it fails first. */
    const held = new Map<string, string>();
    /** What each lock held when first found taken, by store key. */
    const seen = new Map<string, string>();
    /**
     * Takes m's lock (false), or says that another process holds it (true). The holder may have
     * written its answer and let go between our read of the cache and our lock (seen with two
     * daemons on one Redis under load), so the cache is read again under the lock.
     */
    const heldByAnother = async (m: Mailbox): Promise<boolean> => {
      const key = this.cache.addressLock(m.address);
      const token = await this.cache.lock(key, lockTtl);
      if (token === undefined) {
        if (!seen.has(key)) {
          const holder = await this.cache.holder(key);
          if (holder !== undefined) seen.set(key, holder);
        }
        return true;
      }
      // Held from here: a read below that fails lets it go with the others (the catch), where a
      // lock not yet noted stayed for its lifetime, and this engine waited on it at the next try.
      this.locksHere.set(key, token);
      held.set(m.address, token);
      const late = await this.answeredMeanwhile(m, started);
      if (late) {
        answered.set(m.address, late);
        held.delete(m.address);
        await this.release(key, token, 'probe lock not released', { address: m.address });
      }
      return false;
    };
    try {
      let waiting: Mailbox[] = [];
      for (const m of mailboxes) if (await heldByAnother(m)) waiting.push(m);
      const giveUp = this.timers.now() + lockTtl;
      while (waiting.length > 0 && this.timers.now() < giveUp) {
        await sleep(LOCK_POLL_MS, this.timers);
        const still: Mailbox[] = [];
        for (const m of waiting) {
          const result = await this.answeredMeanwhile(m, started);
          if (result) answered.set(m.address, result);
          else if (await heldByAnother(m)) still.push(m);
        }
        waiting = still;
      }
      // Logged, not thrown: the batch's answer is unknown timeout either way, and thrown, a store
      // failing here turned it into policy.faultAction.
      await Promise.all(waiting.map((m) => {
        const key = this.cache.addressLock(m.address);
        const first = seen.get(key);
        return first === undefined ? undefined : this.unlockOrWarn(key, first, 'probe lock not deleted', { address: m.address });
      }));
      return { answered, held };
    } catch (err) {
      // A store that failed part way (one address's lock taken, the next refused): the locks
      // taken stayed in locksHere for the daemon's life, and in the store for their lifetime,
      // during which this process waited on its own lock at each retry of the address.
      await this.releaseProbeLocks(held);
      throw err;
    }
  }

  /** What another process's probe left in the cache for m: a fresh address record, or the domain's. */
  private async answeredMeanwhile(m: Mailbox, started: number): Promise<VerifyResult | undefined> {
    const record = await this.cache.getAddress(m.address);
    // A record past its refresh age is what this probe is to replace, not an answer.
    if (record && this.clock.now() < record.refreshAt) return this.fromRecord(m.address, record, started, false);
    return this.fromDomainFacts(m, await this.cache.getDomain(m.asciiDomain), started);
  }

  /** No catch-all answer on the domain record, or a 4xx to the random local part whose retry time has come. */
  private catchAllOpen(facts: DomainFacts): boolean {
    return facts.catchall === undefined || (facts.catchall.state === 'inconclusive' && this.clock.now() >= facts.catchall.retryAt);
  }

  /**
   * The catch-all state the domain record gives a callout that does not ask the random local
   * part: a remembered 4xx only until its retry time, and only while the random probe is on (a
   * callout that never asks would not have met it).
   */
  private rememberedCatchAll(facts: DomainFacts): CatchAllFact['state'] | undefined {
    const fact = facts.catchall;
    if (fact?.state !== 'inconclusive') return fact?.state;
    return this.config.callout.randomProbe && !this.catchAllOpen(facts) ? 'inconclusive' : undefined;
  }

  private async probe(domain: string, mailboxes: Mailbox[], hosts: MxHost[], started: number, deadline: number, results: Map<string, VerifyResult>): Promise<Map<string, VerifyResult>> {
    const facts = await this.cache.getDomain(domain);
    const remembered = this.rememberedCatchAll(facts);
    const deferred = facts.catchall?.state === 'inconclusive' ? facts.catchall : undefined;
    this.stats.probes++;
    // What the lookups and waits for other probes took of the overall deadline.
    const spentBeforeMs = this.config.callout.timeouts.overall - (deadline - this.timers.now());
    const output = await probeDomain(
      {
        config: this.config.callout,
        helo: this.helo,
        politeness: this.politeness,
        timers: this.timers,
        addressesPerConnection: this.config.limits.addressesPerConnection,
        connections: this.connections,
        ...(this.deps.dialer ? { dialer: this.deps.dialer } : {}),
      },
      {
        domain,
        targets: mailboxes.map((m): ProbeTarget => ({ address: m.address, requiresSmtputf8: m.requiresSmtputf8 })),
        mxHosts: hosts,
        deadline,
        catchAllKnown: remembered === 'refused' || remembered === 'inconclusive',
        ...(deferred ? { randomLocalPart: deferred.localPart } : {}),
        // A refusal of MAIL FROM:<> says nothing of a callout made with a sender of our own.
        nullSenderRefused: facts.nullsender !== undefined && this.config.callout.sender === '',
        postmasterKnown: facts.postmaster !== undefined,
      },
    );
    const catchAll = output.catchAll === 'not-run' ? (remembered ?? 'not-run') : output.catchAll;
    const postmaster = output.postmaster === 'not-run' ? (facts.postmaster?.state ?? 'not-run') : output.postmaster;
    for (const m of mailboxes) {
      let outcome: AddressOutcome = output.outcomes.get(m.address) ?? unanswered(output);
      if (outcome.verdict === 'deliverable' && output.nullSender === 'refused') {
        outcome = { ...outcome, verdict: 'risky', reason: 'null-sender-refused', description: `${outcome.description} (with the fallback sender), but MAIL FROM:<> is refused: the domain cannot receive bounces` };
      } else if (outcome.verdict === 'deliverable' && postmaster === 'refused') {
        outcome = { ...outcome, verdict: 'risky', reason: 'postmaster-refused', description: `${outcome.description}, but postmaster@${domain} is refused (RFC 5321 §4.5.1)` };
      } else if (outcome.verdict === 'deliverable' && catchAll === 'inconclusive') {
        // The random local part got no answer or a 4xx: the domain may accept everything, so a 250
        // proves nothing yet (Exim defers here), and is not kept as a positive answer.
        const asked = output.catchAll === 'inconclusive' ? '' : ` (remembered for the domain: a ${deferred?.reply?.code ?? '4xx'} to the random local part)`;
        outcome = { ...outcome, verdict: 'unknown', reason: 'catch-all-unknown', description: `${outcome.description}, but the catch-all probe got no definite answer${asked}` };
      }
      results.set(m.address, this.result(m.address, started, outcome, 'probe', { catchAll, postmaster, mxHosts: hosts, attempts: output.attempts }));
    }
    await this.remember(domain, mailboxes, results, output, spentBeforeMs, deferred);
    return results;
  }

  private async mailHosts(mailbox: Mailbox): Promise<MxResolution> {
    // Hosts of their own (a call-forward's primary) serve every address, literals included: a
    // literal must never send a call-forward, which may reach any target, to the IP it names.
    if (this.deps.mailHosts) return this.deps.mailHosts(mailbox.asciiDomain);
    if (mailbox.literal) {
      // RFC 5321 §5.1: an address literal names the host itself; no MX lookup.
      const host: MxHost = { name: mailbox.asciiDomain, preference: 0, addresses: [mailbox.literal.ip] };
      return { kind: 'hosts', hosts: [host], implicit: true };
    }
    return resolveMailHosts(this.deps.resolver, mailbox.asciiDomain, {
      maxHosts: this.config.callout.maxMxHosts,
      ipv6: this.config.callout.ipv6,
      ...(this.deps.random ? { random: this.deps.random } : {}),
    });
  }

  /** Writes back what the probe taught; deferred is the domain's remembered 4xx to the random local part, if any. */
  private async remember(domain: string, mailboxes: Mailbox[], results: Map<string, VerifyResult>, output: DomainProbeOutput, spentBeforeMs: number, deferred: Extract<CatchAllFact, { state: 'inconclusive' }> | undefined): Promise<void> {
    const at = this.clock.now();
    const writes: Promise<void>[] = [];
    const random = output.catchAll === 'inconclusive' ? output.catchAllDeferred : undefined;
    if (random) {
      writes.push(this.cache.putDomain(domain, 'catchall', {
        state: 'inconclusive',
        reason: 'catch-all-unknown',
        description: random.description,
        reply: random.reply,
        at,
        retryAt: at + this.config.cache.greylistRetry,
        localPart: random.localPart,
        // Asked again: its age counts from its first asking, so that it is not asked for ever.
        firstAskedAt: deferred?.firstAskedAt ?? at,
      }));
    }
    if (output.catchAll === 'accepted' || output.catchAll === 'refused') {
      const first = [...output.outcomes.values()].find((o) => o.reason === 'catch-all');
      writes.push(this.cache.putDomain(domain, 'catchall', {
        state: output.catchAll,
        reason: 'catch-all',
        description: first?.description ?? `${domain} refuses unknown local parts`,
        ...(first?.reply ? { reply: first.reply } : {}),
        at,
      }));
    }
    if (output.nullSender === 'refused') {
      const first = [...output.outcomes.values()].find((o) => o.reason === 'null-sender-refused');
      writes.push(this.cache.putDomain(domain, 'nullsender', {
        reason: 'null-sender-refused',
        description: first?.description ?? `${domain} refuses MAIL FROM:<>`,
        ...(first?.reply ? { reply: first.reply } : {}),
        at,
      }));
    }
    if (output.postmaster === 'accepted' || output.postmaster === 'refused') {
      writes.push(this.cache.putDomain(domain, 'postmaster', { state: output.postmaster, reason: 'postmaster-refused', description: `postmaster@${domain} ${output.postmaster}`, at }));
    }
    if (output.greylisted) {
      writes.push(this.cache.putDomain(domain, 'greylist', { ...output.greylisted, at }));
    }
    // A refusal of one recipient (a restricted noreply@) must not silence the domain's other
    // addresses for domainNegative: it is one of us only if no RCPT of this probe got an answer
    // about a mailbox, the random one included, and its words do not tell otherwise.
    const outcomes = [...output.outcomes.values()];
    const mailboxAnswered = output.catchAll === 'refused' || outcomes.some((o) => o.reason === 'accepted' || o.reason === 'rejected-at-rcpt');
    const refusal = mailboxAnswered ? undefined : outcomes.find((o) => o.reason === 'refused-at-rcpt' && (!o.reply || refusesEveryRecipient(o.reply)));
    if (refusal) {
      writes.push(this.cache.putDomain(domain, 'useless', { reason: refusal.reason, description: refusal.description, ...(refusal.reply ? { reply: refusal.reply } : {}), at }));
    }
    // A temporary refusal of us (a 421 at the greeting or at RCPT, "451 try again later" at
    // MAIL), and an exchanger that hung up on us or answered what is no SMTP reply, is kept
    // on the domain too, for cache.tempfail (VerificationCache: a reply below 500): without it
    // every other sender of the domain opened a connection at once, while a server that is
    // down was left alone. Not when another exchanger greylisted us: the greylist record says
    // when a retry is worth it, and it answers as greylisting; read first, a useless record
    // made the domain's next senders plain unknown (let through by default) where greylisting defers.
    // Nor when the overall deadline cut the failed step short and, but for what the lookups (or a
    // wait for another process's probe) took of it, the step's own timer would have run out in
    // full, and the step had less than half its own timeout: slow DNS that left the dialogue a
    // few milliseconds gave the exchanger no chance. One that had half its timeout or more had its
    // chance: sparing it too let a dead exchanger of a domain whose lookups are slow every time be
    // asked again at every probe, up to limits.perDomainPerMinute a minute. A dialogue that ran
    // into the deadline itself (a tarpit answering each command late) had it too. Nor when no
    // exchanger was asked at all because the store granted no per-host slot in time, whatever the
    // lookups took.
    const cut = output.failure?.cutShort;
    const noChance = cut !== undefined && (cut.kind === 'no-slot' || (spentBeforeMs >= cut.leftMs && cut.afterMs < cut.leftMs));
    const failure = output.outcomes.size === 0 && !noChance ? output.failure : undefined;
    if (failure && (failure.definite || TEMPORARY_DOMAIN_FAILURES.has(failure.reason) || (TEMPORARY_REFUSALS.has(failure.reason) && !output.greylisted))) {
      writes.push(this.cache.putDomain(domain, 'useless', { reason: failure.reason, description: failure.description, ...(failure.reply ? { reply: failure.reply } : {}), at }));
    }
    for (const m of mailboxes) {
      const r = results.get(m.address)!;
      // The domain record answers these unless a fallback sender makes each address worth asking.
      const answeredByDomain = r.reason === 'catch-all' || (r.reason === 'null-sender-refused' && this.config.callout.fallbackSender === undefined);
      if (answeredByDomain) continue;
      writes.push(this.cache.putAddress(m.address, {
        verdict: r.verdict,
        reason: r.reason,
        description: r.description,
        ...(r.reply ? { reply: r.reply } : {}),
        catchAll: r.catchAll,
        postmaster: r.postmaster,
        checkedAt: at,
      }));
    }
    await Promise.all(writes);
  }

  private fromRecord(address: string, record: AddressRecord, started: number, stale: boolean): VerifyResult {
    return {
      ...this.result(address, started, record, 'address-cache', { catchAll: record.catchAll, postmaster: record.postmaster }),
      stale,
      checkedAt: record.checkedAt,
    };
  }

  private result(address: string, started: number, outcome: AddressOutcome, source: VerifyResult['source'], extra: Partial<VerifyResult> = {}): VerifyResult {
    return {
      address,
      verdict: outcome.verdict,
      reason: outcome.reason,
      description: outcome.description,
      ...(outcome.reply ? { reply: outcome.reply } : {}),
      catchAll: 'not-run',
      postmaster: 'not-run',
      source,
      stale: false,
      mxHosts: [],
      attempts: [],
      checkedAt: this.clock.now(),
      durationMs: Math.round(this.timers.now() - started),
      ...extra,
    };
  }

  /** Work no caller waits for: its failure (a store outage) is logged, the stale answer given stands. */
  private track(work: Promise<unknown>, fields: Record<string, unknown>): void {
    const tracked = work.catch((err: unknown) => this.warn('background refresh of a stale answer failed', err, fields)).finally(() => this.background.delete(tracked));
    this.background.add(tracked);
  }

  /** Once a minute per message and error: a store outage fails every such piece of work alike. */
  private warn(msg: string, err: unknown, fields: Record<string, unknown> = {}): void {
    if (!this.deps.log) return;
    const error = describeError(err);
    const repeats = this.warnLines.admit(`${msg}\0${error}`, this.clock.now());
    if (repeats) this.deps.log.warn({ ...fields, error, ...repeats }, msg);
  }
}

function unanswered(output: DomainProbeOutput): AddressOutcome {
  const failure = output.failure;
  if (!failure) return { verdict: 'unknown', reason: 'unreachable', description: 'no exchanger could be tried' };
  return { verdict: 'unknown', reason: failure.reason, description: failure.description, ...(failure.reply ? { reply: failure.reply } : {}) };
}

function describeResolution(domain: string, resolution: Exclude<MxResolution, { kind: 'hosts' }>): AddressOutcome {
  switch (resolution.kind) {
    case 'nxdomain':
      return { verdict: 'no-mail-domain', reason: 'nxdomain', description: `${domain} does not exist (NXDOMAIN)` };
    case 'null-mx':
      return { verdict: 'no-mail-domain', reason: 'null-mx', description: `${domain} publishes a null MX: it accepts no mail (RFC 7505)` };
    case 'no-mail-host':
      // dns/mx's sentence names the domain and says why: a prefix of ours said it all again.
      return { verdict: 'no-mail-domain', reason: 'no-mail-host', description: resolution.reason };
    case 'tempfail':
      return { verdict: 'unknown', reason: 'dns-tempfail', description: `DNS lookup for ${domain} failed temporarily: ${resolution.reason}` };
  }
}

/**
 * A domain record's description, as it answers another address of the domain: the address the
 * probe asked (`RCPT TO:<grey@example.org>`, and the server's words quoting it) becomes
 * `<…@example.org>`, since the answer goes into the reply to whoever now sends as another
 * address of that domain, and the first one was someone else's. The mailbox's own stays.
 */
function otherAddressesHidden(description: string, mailbox: Mailbox): string {
  const own = mailbox.address.toLowerCase();
  return description.replace(/<([^<>\s]*)@([^<>\s@]+)>/g, (whole, local: string, domain: string) =>
    domain.toLowerCase() === mailbox.asciiDomain.toLowerCase() && `${local}@${domain}`.toLowerCase() !== own ? `<…@${domain}>` : whole,
  );
}
