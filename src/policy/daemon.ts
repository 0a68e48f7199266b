/**
 * NAME
 *   policy/daemon - `callout serve`: the Postfix policy service
 *
 * DESCRIPTION
 *   Wires the configuration into a running service: the store (SQLite by default, Redis when
 *   several mail servers share state), the DNS resolver and its cache, the callout engine, the
 *   pipeline of stages, the policy listener (TCP or UNIX socket) and the metrics/health
 *   listener. Each request is decided by the pipeline, logged in one line, counted, and
 *   answered.
 *
 *   SIGHUP (reload()): the configuration file is read and validated again; a bad file is
 *   logged and the running configuration kept. A good one replaces the resolver, engine and
 *   pipeline for new requests without dropping connections; requests in flight finish on the
 *   old ones. The headers given per message carry over, so none is given twice. Listen
 *   addresses, the store, the listener's limits, policy.workers, acceptTestTime and log.level
 *   are fixed for the life of the process (RESTART_ONLY_SETTINGS: a change is logged, in one
 *   line naming them, as needing a restart). A SIGHUP once stop() has begun is logged as
 *   ignored: no request would reach the configuration it built. A policy worker answers each
 *   reload its supervisor asks for with the outcome, a digest of the configuration it runs
 *   after it (reloadOutcome()), and says that digest when it is ready (configDigest), with one
 *   of its restart-only settings (restartDigest); a SIGHUP sent to the worker by hand reloads
 *   it and is answered to no one.
 *   SIGTERM (stop()): stop accepting, let requests in flight finish (up to DRAIN_MS), close
 *   the metrics listener and the connections still open on it (a client's, however idle), let
 *   background callouts finish, those of configurations a reload replaced too (up to DRAIN_MS
 *   more), then give up those still running (logged; their probe locks released, so a daemon
 *   started at once probes those addresses again rather than wait out our locks), close the
 *   store.
 *   Every store.purgeInterval (10 minutes) expired entries of every kind (cached verdicts,
 *   greylist triplets, counters) are purged from the store, in the background (SQLite deletes
 *   them in stretches; Redis expires keys itself), counted in callout_store_purged_entries_total.
 *   With policy.acceptTestTime the purge goes by the real clock, or the requests' time when that
 *   is earlier: a request's policy_test_time far ahead must not have it delete every entry.
 *   A purge still running when the next is due is not joined by another (schedulePurges).
 *   With policy.workers each worker purges: the stretches of one find little left for the other.
 *   A store that failed (a full disk, a lock held past the busy timeout, Redis gone) is said to be
 *   back, `store available`, at the first write that succeeds after it, with how long it failed
 *   and how many operations did (WatchedStore, core/log RecoveryLine; at most once a minute).
 *
 *   As one of policy.workers processes (DaemonOptions.worker) it enforces its share of
 *   limits.concurrency (workerShare), since each process counts only its own callouts; the
 *   per-host limits are counted in the store, whole.
 *
 * SECURITY
 *   Listens where configured (loopback by default). Callouts go only to public addresses
 *   unless callout.allowTargets says otherwise.
 */

import { createHash } from 'node:crypto';
import { hostname } from 'node:os';
import type { Server } from 'node:http';
import type { Registry } from 'prom-client';
import { RequestTimeClock, systemClock, systemTimers } from '../core/clock.js';
import type { Clock, TimerHandle, Timers } from '../core/clock.js';
import { StoreError, abbreviate, describeError } from '../core/errors.js';
import { RecoveryLine, RepeatCollapser, logInfoJson, type Logger } from '../core/log.js';
import { hostHelo } from '../config/fqdn.js';
import { loadConfig } from '../config/load.js';
import type { RawConfig } from '../config/load.js';
import { validateConfig } from '../config/schema.js';
import type { Config, LimitsConfig } from '../config/schema.js';
import type { Resolver } from '../dns/types.js';
import { MemoryStore, RedisStore, SqliteStore, openStore } from '../store/index.js';
import type { ASK_LATER, Store, StoredValue } from '../store/types.js';
import { CalloutEngine } from '../verify/engine.js';
import { Metrics, closeMetricsServer, startMetricsServer } from '../http/metrics.js';
import { createResolver, storePath } from '../cli/runtime.js';
import { buildPipeline } from './pipeline.js';
import { earlierReadGaps } from './stage-order.js';
import { deadlineCuts } from './stages/tarpit.js';
import { obsoleteGreylistOptions } from './stages/greylist.js';
import type { MessageMemories, Pipeline, PipelineOutcome } from './pipeline.js';
import { PolicyServer } from './server.js';

export interface DaemonOptions {
  configPath?: string;
  overrides?: RawConfig;
  log: Logger;
  clock?: Clock;
  /** The timers of the store's purge schedule (core/clock Timers); tests move them. */
  timers?: Timers;
  /**
   * One of policy.workers processes (policy/workers): the listening socket is the supervisor's,
   * which also serves the metrics of all workers, so this daemon opens no metrics listener.
   */
  worker?: boolean;
  /** A configuration file with no settings is an error, as at a reload (a replacement worker). */
  refuseEmptyConfig?: boolean;
  /** How long a SQLite store waits for another process's lock (SqliteStore's 5 s); tests shorten it. */
  sqliteBusyTimeoutMs?: number;
}

/**
 * What a reload came to: `config` is a digest of the configuration running after it (the new
 * one, or the one kept), so that workers that read the file at different moments can be told
 * apart even when each accepted what it read.
 */
export interface ReloadOutcome {
  accepted: boolean;
  config: string;
  /** Why the file was refused. */
  reason?: string;
}

interface Generation {
  config: Config;
  resolver: Resolver;
  engine?: CalloutEngine;
  pipeline: Pipeline;
}

const DRAIN_MS = 10_000;
const HEALTH_PROBE_KEY = 'health:probe';
const HEALTH_PROBE_TTL_MS = 60_000;
/** A failed health probe's line, repeated within this, is counted, not logged again. */
const HEALTH_LOG_WINDOW_MS = 60_000;
const REDIS_STARTUP_WAIT_MS = 2_000;
/** The 'store available' line of a store that fails and succeeds by turns comes at most this often, as its faults' lines. */
const STORE_RECOVERY_LOG_WINDOW_MS = 60_000;
/**
 * The most of a request attribute (helo_name, sender, recipient, instance; client_address and
 * protocol_state too, for a client other than Postfix) a decision line keeps, in characters.
 * Postfix passes on about 2 kB of each of the SMTP client's values, and in a policy worker a
 * line longer than PIPE_BUF (core/log) may be cut by another worker's write. RFC 5321 paths
 * are at most 256 octets and a HELO name 255: no real value is cut.
 */
export const LOGGED_ATTRIBUTE_CHARS = 512;
/**
 * The most of a stage's reason (and of a fault) a decision line keeps, in characters: more
 * than a callout's reply evidence (verify/interpret MAX_EVIDENCE_TEXT, 1,024) with what
 * describes it, since reasons quote the sender and the exchanger's reply.
 *
 * With both caps, the longest decision line of the default stages (a callout's answer of 400
 * characters and reason at its cap, the four attributes at theirs, `"worker":64`) is 4,029
 * octets when the values are ASCII without quotes or backslashes, so a worker writes it
 * whole. Each character that JSON escapes (a quote or backslash: 2 octets, a control: 6;
 * core/log escapes U+0080-U+009F the same) or that UTF-8 widens (3 octets for most scripts)
 * makes it longer, up to about 20 kB, and such a line is written alone (core/log LIMITS).
 * Each further stage whose reason quotes a client's value adds up to LOGGED_REASON_CHARS.
 */
export const LOGGED_REASON_CHARS = 1100;
/**
 * The fields of a decision's log line, as JSON: what JSON.stringify gives for { client, helo,
 * sender, recipient, instance, state, action, decidedBy, stages, warnings, faults, ms }, octet
 * for octet, with the request attributes cut at LOGGED_ATTRIBUTE_CHARS and the stage reasons
 * and faults at LOGGED_REASON_CHARS (abbreviate's "..." marks the cut; the stages saw them
 * whole). An attribute the request lacks, and warnings or faults when there are none, are left
 * out; decidedBy is null when no stage decided.
 *
 * Written out by hand because JSON.stringify of the object was most of the line's cost (the
 * line was 4% of a greylisting answer's CPU): the values are nearly always plain text, which
 * goes between quotes as it is (jsonString).
 */
export function decisionJson(attributes: Record<string, string>, outcome: PipelineOutcome): string {
  const attribute = (name: string, value: string | undefined) => (value === undefined ? '' : `,"${name}":${jsonString(abbreviate(value, LOGGED_ATTRIBUTE_CHARS))}`);
  let stages = '';
  for (const v of outcome.verdicts) stages += `,${jsonString(`${v.stage}=${v.result}: ${abbreviate(v.reason, LOGGED_REASON_CHARS)}`)}`;
  const members =
    attribute('client', attributes.client_address) +
    attribute('helo', attributes.helo_name) +
    attribute('sender', attributes.sender) +
    attribute('recipient', attributes.recipient) +
    attribute('instance', attributes.instance) +
    attribute('state', attributes.protocol_state) +
    `,"action":${jsonString(outcome.action)},"decidedBy":${outcome.decidedBy === undefined ? 'null' : jsonString(outcome.decidedBy)},"stages":[${stages.slice(1)}]` +
    (outcome.warnings.length ? `,"warnings":${jsonStrings(outcome.warnings)}` : '') +
    (outcome.faults.length ? `,"faults":${jsonStrings(outcome.faults.map((fault) => abbreviate(fault, LOGGED_REASON_CHARS)))}` : '') +
    `,"ms":${JSON.stringify(outcome.durationMs)}`;
  return `{${members.slice(1)}}`;
}

/** Text that JSON.stringify writes as it is: no quote, backslash, control character or UTF-16 surrogate. */
// eslint-disable-next-line no-control-regex -- the controls are what JSON escapes
const PLAIN_JSON_TEXT = /^[^"\\\u0000-\u001f\ud800-\udfff]*$/;

/** JSON.stringify(text), without its cost for plain text. */
function jsonString(text: string): string {
  return PLAIN_JSON_TEXT.test(text) ? `"${text}"` : JSON.stringify(text);
}

function jsonStrings(texts: readonly string[]): string {
  return `[${texts.map(jsonString).join(',')}]`;
}

/**
 * Settings a reload cannot change: the listeners, the store, the workers and the logger are made
 * once, at start. One list serves both the warning of a change and what a reload keeps
 * (withFixedSettings), so a setting cannot be warned of and applied, or kept without a word.
 */
const RESTART_ONLY_SETTINGS = [
  'policy.listen',
  'metrics.listen',
  'metrics.socketMode',
  'policy.acceptTestTime',
  'store',
  'dataDir',
  'policy.maxConnections',
  'policy.idleTimeout',
  'policy.socketMode',
  'policy.workers',
  'log.level',
] as const;

type RestartOnlySetting = (typeof RESTART_ONLY_SETTINGS)[number];

/** The value of a setting, comparable with ===: the store's object as its JSON. */
function settingOf(config: Config, setting: RestartOnlySetting): unknown {
  const [section, key] = setting.split('.') as [keyof Config, string | undefined];
  const value: unknown = key === undefined ? config[section] : (config[section] as Record<string, unknown>)[key];
  return typeof value === 'object' && value !== null ? JSON.stringify(value) : value;
}

/**
 * `config` with the RESTART_ONLY_SETTINGS of `running`: what a reload applies of a file. Taken
 * from the file, a changed listen address read as running, so that the next SIGHUP no longer
 * said it needs a restart, and the file put back was warned of as a change.
 */
function withFixedSettings(config: Config, running: Config): Config {
  const result: Record<string, unknown> = { ...config };
  for (const setting of RESTART_ONLY_SETTINGS) {
    const [section, key] = setting.split('.') as [keyof Config, string | undefined];
    result[section] = key === undefined ? running[section] : { ...(result[section] as object), [key]: (running[section] as Record<string, unknown>)[key] };
  }
  return result as unknown as Config;
}

/**
 * One worker's part of limits.concurrency, which the configuration sets for the whole service:
 * each worker counts only its own callouts in flight, so N workers share it by N (at least 1
 * each, so more workers than the limit raise it to one per worker). The per-host concurrency
 * and the per-domain and per-host rates need no share: they are counted in the store the
 * workers share (verify/politeness), so each worker keeps them whole.
 */
export function workerShare(limits: LimitsConfig, workers: number): LimitsConfig {
  return { ...limits, concurrency: Math.max(1, Math.floor(limits.concurrency / workers)) };
}

/**
 * What workerShare raises: with more workers than limits.concurrency, each keeps 1, and the
 * service as a whole may run policy.workers callouts at once. Logged by the supervisor at
 * start and by `config check`, not by each worker.
 */
export function workerShareExcess(config: Config): string[] {
  const { workers } = config.policy;
  const { concurrency } = config.limits;
  return workers > concurrency ? [`policy.workers (${workers}) is above limits.concurrency (${concurrency}): each worker keeps 1, so up to ${workers} callouts may run at once`] : [];
}

const TEST_TIME = /^[0-9]{1,11}$/;

/**
 * Moves the clock to a request's policy_test_time (whole epoch seconds, up to year 5138);
 * anything else (negative, fractional, longer, not a number) is ignored and logged, so a
 * replay whose times are not taken says so instead of running on a clock nobody set.
 */
function followTestTime(clock: RequestTimeClock, value: string | undefined, log: Logger): void {
  if (value === undefined) return;
  if (TEST_TIME.test(value)) clock.follow(Number(value) * 1000);
  else log.warn({ policy_test_time: abbreviate(value, 40) }, 'policy_test_time ignored: expected whole epoch seconds, at most 11 digits');
}

/**
 * The configuration's SQLite file, its directory created if need be; an upgrade of its schema is
 * logged, and so is a failure of its checkpoint thread (once: the thread is not started again),
 * counted in callout_store_checkpoint_thread_failures_total when metrics are given, and its
 * checkpoints held up by another connection and caught up again.
 */
async function openSqliteStore(config: Config, clock: Clock, log: Logger, metrics?: Metrics, busyTimeoutMs?: number): Promise<SqliteStore> {
  const path = storePath(config);
  // SqliteStore.open makes the directories (0750) and names dataDir and --data-dir when it cannot.
  const store = await SqliteStore.open(path, {
    clock,
    busyTimeoutMs,
    sync: config.store.sync,
    onCheckpointerFailed: (reason) => {
      log.error({ store: path, reason }, 'store checkpoint thread failed: until restart SQLite checkpoints inside commits, on the request path');
      metrics?.recordCheckpointerFailure();
    },
    // Held up by another connection (a backup, a long read, a lock): the WAL grows meanwhile, so
    // warn; one line when held up and one when it catches up, not one per round.
    onCheckpointDelay: (delay) =>
      delay.state === 'held up'
        ? log.warn({ store: path, heldForMs: delay.forMs, walFrames: delay.walFrames, reason: delay.reason }, 'store checkpoints held up by another connection: the WAL grows until it lets go; retried every round')
        : log.info({ store: path, heldForMs: delay.forMs }, 'store checkpoints caught up'),
  });
  if (store.schemaUpgrade) log.info({ store: path, ...store.schemaUpgrade }, 'store schema upgraded');
  return store;
}

interface GenerationDeps {
  store: Store;
  clock: Clock;
  log: Logger;
  metrics: Metrics;
  worker: boolean;
}

/**
 * The resolver, callout engine and pipeline a configuration makes (at start, at each reload, and
 * for `config check`), logging what it will not do as written: callouts off without a host name,
 * tarpit delays the decision deadline cuts short (stages/tarpit deadlineCuts), obsolete greylist
 * options (stages/greylist obsoleteGreylistOptions), options that read
 * a stage which does not run before them (policy/stage-order).
 */
function buildGeneration(config: Config, deps: GenerationDeps, messages?: MessageMemories): Generation {
  const resolver = createResolver(config, deps.clock);
  const helo = config.callout.helo ?? hostHelo();
  if (!helo) deps.log.warn({ hostname: hostname() }, 'callouts are off: set callout.helo (or --helo) to this host\'s fully qualified name');
  config.policy.stages.forEach((entry, index) => {
    if (entry.name === 'greylist') for (const line of obsoleteGreylistOptions(entry, index)) deps.log.warn({}, line);
    if (entry.name !== 'tarpit' || entry.mode === 'off') return;
    for (const line of deadlineCuts(entry, index, config.policy.decisionTimeout)) deps.log.warn({}, line);
  });
  for (const line of earlierReadGaps(config.policy.stages)) deps.log.warn({}, line);
  const limits = deps.worker ? workerShare(config.limits, config.policy.workers) : config.limits;
  const engine = helo
    ? new CalloutEngine({ ...config, limits, callout: { ...config.callout, helo } }, {
        resolver,
        store: deps.store,
        clock: deps.clock,
        onResult: (result) => deps.metrics.recordVerification(result),
        onConnectionEvent: (event) => deps.metrics.recordConnection(event),
        log: deps.log,
      })
    : undefined;
  const pipeline = buildPipeline(
    config,
    {
      resolver,
      store: deps.store,
      clock: deps.clock,
      ...(engine ? { engine } : {}),
      log: deps.log,
      metrics: deps.metrics,
    },
    messages,
  );
  return { config, resolver, ...(engine ? { engine } : {}), pipeline };
}

/**
 * What `callout config check` adds to the schema: the stages are built as `callout serve`
 * builds them, over a store in memory, so that their own checks (allow-list entries, whitelist
 * and secret files, protocol states, what a call-forward needs) run as well, and what the
 * supervisor of policy.workers warns of (workerShareExcess); nothing is contacted. Throws the
 * ConfigError serve would stop with.
 */
export async function checkServeConfiguration(config: Config, log: Logger): Promise<void> {
  for (const line of workerShareExcess(config)) log.warn({}, line);
  const store = new MemoryStore({ clock: systemClock });
  try {
    const built = buildGeneration(config, { store, clock: systemClock, log, metrics: new Metrics(), worker: false });
    await built.pipeline.close();
  } finally {
    await store.close();
  }
}

/**
 * For policy workers about to share the configuration's SQLite file: switches it to WAL and
 * brings its schema up to date once, before they start. Left to the workers, one would migrate
 * while the others wait in SQLite's busy handler, and the copy of a large file (2.2 s per
 * million rows, its VACUUM included) can outlast their busy timeout, so that a worker fails to
 * start.
 */
export async function prepareSharedStore(config: Config, log: Logger): Promise<void> {
  if (config.store.kind !== 'sqlite') return;
  await (await openSqliteStore(config, systemClock, log)).close();
}

/**
 * Expired entries of every kind leave the store every intervalMs, on a timer that never holds
 * up a request. A tick that finds the last purge still running is skipped (logged at debug): a
 * purge can outlast a short store.purgeInterval (a million expired SQLite rows take seconds
 * under load), and purges started on top of it would pile up, each walking the same table.
 * purgeTime, when given, is the time a purge judges expiry by (policy.acceptTestTime:
 * RequestTimeClock.maintenanceNow), else the store's clock. Clearing the handle given back
 * (timers.clearTimeout) ends the schedule.
 */
export function schedulePurges(store: Store, intervalMs: number, log: Logger, metrics: Metrics, purgeTime?: () => number, timers: Timers = systemTimers): TimerHandle {
  let running = false;
  // Set going again at each tick, as setInterval would; Timers has no interval of its own.
  const timer = timers.setTimeout(() => {
    timer.refresh();
    if (running) {
      log.debug({ intervalMs }, 'store purge skipped: the last one is still running');
      return;
    }
    running = true;
    store.purgeExpired(purgeTime?.()).then(
      (removed) => {
        running = false;
        metrics.recordPurge(removed);
        if (removed > 0) log.info({ removed }, 'expired store entries purged');
      },
      (err: unknown) => {
        running = false;
        log.warn({ err: describeError(err) }, 'store purge failed');
      },
    );
  }, intervalMs);
  timer.unref();
  return timer;
}

/** What WatchedStore tells of the operations it passes on. */
interface StoreOutcomes {
  /** An operation rejected (with what the store rejects with). */
  failed(err: unknown): void;
  /** A write succeeded. */
  wrote(): void;
}

/**
 * The store as the daemon's stages, callout engine, purge and /health use it, telling each failure
 * and each write that stored a value to `outcomes`: the one place where the end of a store's trouble
 * is seen, whichever the store. Not a delete, nor a conditional write that stored nothing: Redis
 * at maxmemory (OOM) still takes DEL and a compare that writes nothing, and a full disk a delete
 * of nothing, while every write that stores is refused. Reads and purges tell only their failures: with the disk full, or
 * another process holding SQLite's write lock, reads still succeed, and Redis's purge answers
 * without asking Redis. peek never fails (a fault is get()'s to report), and no part of the daemon
 * lists (scanPages): both are passed on as they are.
 */
class WatchedStore implements Store {
  readonly kind: Store['kind'];
  private readonly failed: (err: unknown) => never;
  private readonly wrote: <T>(value: T) => T;
  /** wrote, for a conditional write: only one that stored its value. */
  private readonly wroteIf: (stored: boolean) => boolean;

  constructor(
    readonly inner: Store,
    outcomes: StoreOutcomes,
  ) {
    this.kind = inner.kind;
    this.failed = (err) => {
      outcomes.failed(err);
      throw err;
    };
    this.wrote = (value) => {
      outcomes.wrote();
      return value;
    };
    this.wroteIf = (stored) => {
      if (stored) outcomes.wrote();
      return stored;
    };
  }

  get(key: string): Promise<StoredValue | undefined> {
    return this.inner.get(key).then(undefined, this.failed);
  }

  getMany(keys: readonly string[]): Promise<Array<StoredValue | undefined>> {
    return this.inner.getMany(keys).then(undefined, this.failed);
  }

  peek(key: string): Readonly<StoredValue> | undefined | typeof ASK_LATER {
    return this.inner.peek(key);
  }

  set(key: string, value: string, ttlMs: number): Promise<void> {
    return this.inner.set(key, value, ttlMs).then(this.wrote, this.failed);
  }

  setIfAbsent(key: string, value: string, ttlMs: number): Promise<boolean> {
    return this.inner.setIfAbsent(key, value, ttlMs).then(this.wroteIf, this.failed);
  }

  compareAndSet(key: string, expected: string | undefined, value: string, ttlMs: number): Promise<boolean> {
    return this.inner.compareAndSet(key, expected, value, ttlMs).then(this.wroteIf, this.failed);
  }

  delete(key: string): Promise<void> {
    return this.inner.delete(key).then(undefined, this.failed);
  }

  deleteIf(key: string, expected: string): Promise<boolean> {
    return this.inner.deleteIf(key, expected).then(undefined, this.failed);
  }

  increment(key: string, by: number, ttlMs: number): Promise<number> {
    return this.inner.increment(key, by, ttlMs).then(this.wrote, this.failed);
  }

  scan(prefix: string, limit: number): Promise<Array<{ key: string } & StoredValue>> {
    return this.inner.scan(prefix, limit).then(undefined, this.failed);
  }

  scanPages(prefix: string, pageSize: number): AsyncGenerator<Array<{ key: string } & StoredValue>, void, undefined> {
    return this.inner.scanPages(prefix, pageSize);
  }

  purgeExpired(at?: number): Promise<number> {
    return this.inner.purgeExpired(at).then(undefined, this.failed);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

export class Daemon {
  private current!: Generation;
  /**
   * Generations a reload replaced, with their retirement (retire()), until their callouts have
   * finished: stop() waits for those too and gives up what they still run, so that their probe
   * locks do not outlive the process either.
   */
  private readonly replaced = new Map<Generation, Promise<void>>();
  private server!: PolicyServer;
  private metricsServer: Server | undefined;
  private purgeTimer: TimerHandle | undefined;
  private readonly metrics = new Metrics();
  /**
   * A monitor or load balancer asks /health every few seconds: during an outage each answer
   * logged its own line, beside the one 'store unavailable' line of the outage.
   */
  private readonly healthLines = new RepeatCollapser(HEALTH_LOG_WINDOW_MS);
  /**
   * The failures of the store, until a write succeeds again: its 'store available' line (the
   * failures themselves are logged as stage faults, and Redis's lost connection as 'store
   * unavailable').
   */
  private readonly storeRecovery = new RecoveryLine(STORE_RECOVERY_LOG_WINDOW_MS);
  private store!: WatchedStore;
  /**
   * policy.acceptTestTime: the clock every part of the daemon reads follows the requests, except
   * the store's purge (RequestTimeClock.maintenanceNow).
   */
  private requestTime: RequestTimeClock | undefined;
  /** Set by stop(): a reload then would build a configuration no request reaches. */
  private stopping = false;
  policyAddress = '';
  metricsAddress = '';

  /** The timers of the store's purge schedule: the ones that set it clear it. */
  private readonly timers: Timers;

  private constructor(private readonly options: DaemonOptions) {
    this.timers = options.timers ?? systemTimers;
  }

  static async start(options: DaemonOptions): Promise<Daemon> {
    const daemon = new Daemon(options);
    await daemon.boot();
    return daemon;
  }

  private get clock(): Clock {
    return this.requestTime ?? this.options.clock ?? systemClock;
  }

  private async boot(): Promise<void> {
    const config = loadConfig(this.options.configPath, this.options.overrides, {}, { refuseEmpty: this.options.refuseEmptyConfig === true });
    if (config.policy.acceptTestTime) {
      this.requestTime = new RequestTimeClock(this.options.clock ?? systemClock);
      this.options.log.warn({}, 'policy.acceptTestTime is on: requests set the clock with policy_test_time (for benchmarks and tests only)');
    }
    this.store = await this.openConfiguredStore(config);
    try {
      this.current = this.generation(config);
      this.server = new PolicyServer({
        listen: config.policy.listen,
        handler: (attributes) => this.answer(attributes),
        limits: { maxConnections: config.policy.maxConnections, idleTimeoutMs: config.policy.idleTimeout },
        socketMode: parseInt(config.policy.socketMode, 8),
        sharedListener: this.options.worker ?? false,
        idlePollMicros: config.policy.idlePollMicros,
        log: this.options.log,
      });
      this.policyAddress = (await this.server.listen()).address;
      const server = this.server;
      this.metrics.watchIdlePoll(() => server.idlePoll);
      if (config.metrics.listen && !this.options.worker) {
        const started = await startMetricsServer(config.metrics.listen, {
          metricsText: () => this.metrics.registry.metrics(),
          contentType: this.metrics.registry.contentType,
          healthy: () => this.healthy(),
        }, { socketMode: parseInt(config.metrics.socketMode, 8), log: this.options.log });
        this.metricsServer = started.server;
        this.metricsAddress = started.address;
      }
    } catch (err) {
      await this.server?.close({ drainMs: 0 }).catch(() => undefined);
      await this.store.close().catch(() => undefined);
      throw err;
    }
    const requestTime = this.requestTime;
    this.purgeTimer = schedulePurges(this.store, config.store.purgeInterval, this.options.log, this.metrics, requestTime && (() => requestTime.maintenanceNow()), this.timers);
    // A worker serves no metrics itself: "off" in each worker's line, while the supervisor
    // served them, read as if metrics were off.
    const metrics = this.options.worker && config.metrics.listen ? 'served by the supervisor' : this.metricsAddress || 'off';
    this.options.log.info(
      // The file too: a relative --cache is taken from the current directory (/ under systemd).
      { policy: this.policyAddress, metrics, store: config.store.kind, ...(config.store.kind === 'sqlite' ? { storeFile: storePath(config) } : {}), callouts: this.current.engine ? 'on' : 'off', stages: config.policy.stages.map((s) => `${s.name}:${s.mode}`) },
      'callout serve started',
    );
  }

  /** reloadOutcome(), resolving with whether the file was accepted (false when ignored while stopping). */
  async reload(): Promise<boolean> {
    return (await this.reloadOutcome())?.accepted ?? false;
  }

  /**
   * Re-reads the configuration; keeps the running one when the new one is invalid. While
   * stop() drains, does nothing but say so: "configuration reloaded" then would be untrue.
   * Resolves with the outcome (undefined when ignored while stopping), which a policy worker
   * sends its supervisor.
   */
  async reloadOutcome(): Promise<ReloadOutcome | undefined> {
    if (this.stopping) {
      this.options.log.info({}, 'reload ignored: the daemon is stopping');
      return undefined;
    }
    // An administrator who edited /etc/callout/callout.yaml and sent SIGHUP to a daemon started
    // without --config read "configuration reloaded" as the file applied: it was never read.
    if (this.options.configPath === undefined) {
      this.options.log.warn({}, 'reload: callout serve was started without --config, so there is no file to read again: the command line and the defaults apply as before; restart it with --config FILE to use a file');
    }
    let config: Config;
    try {
      // An empty file at a reload (an editor caught mid-write) would have turned every stage off.
      config = loadConfig(this.options.configPath, this.options.overrides, {}, { refuseEmpty: true });
    } catch (err) {
      this.options.log.error({ err: describeError(err) }, 'reload refused: configuration invalid, keeping the running one');
      return this.reloaded(false, err);
    }
    const old = this.current;
    // "configuration reloaded" alone would read as if a change to them had been applied.
    const fixed = RESTART_ONLY_SETTINGS.filter((setting) => settingOf(config, setting) !== settingOf(old.config, setting));
    if (fixed.length > 0) this.options.log.warn({ settings: fixed }, 'reload: these settings change only on restart');
    try {
      // policy.workers too: a worker's share of limits.concurrency (workerShare) is by the
      // workers running, and 4 workers each taking the whole limit of a file that now says 1
      // would call out four times as hard as configured until the restart.
      this.current = this.generation(withFixedSettings(config, old.config), old.pipeline.messages);
    } catch (err) {
      this.options.log.error({ err: describeError(err) }, 'reload refused, keeping the running configuration');
      return this.reloaded(false, err);
    }
    this.server.setIdlePollMicros(config.policy.idlePollMicros);
    // Forgotten once its stages have closed too: a call-forward's callouts may outlast the drain.
    this.replaced.set(old, this.retire(old, () => this.replaced.delete(old)));
    this.options.log.info({ stages: config.policy.stages.map((s) => `${s.name}:${s.mode}`) }, 'configuration reloaded');
    return this.reloaded(true);
  }

  /**
   * A digest of the running configuration, as a reload's outcome gives it; a policy worker
   * says it when it is ready, so that its supervisor can tell a replacement that read an edited
   * file from the workers that did not.
   */
  get configDigest(): string {
    // Of what a reload applies: a worker started later on a file that changed a restart-only
    // setting runs the same configuration, and another SIGHUP would not make them agree anyway.
    const reloadable = withFixedSettings(this.current.config, validateConfig({}));
    return createHash('sha256').update(JSON.stringify(reloadable)).digest('hex').slice(0, 12);
  }

  /**
   * A digest of the RESTART_ONLY_SETTINGS the daemon runs with (those it started with: a reload
   * keeps them). configDigest leaves them out, so a worker started in place of one that died,
   * on a file whose store.url was edited since, says it here: it writes to another store.
   */
  get restartDigest(): string {
    const settings = RESTART_ONLY_SETTINGS.map((setting) => settingOf(this.current.config, setting));
    return createHash('sha256').update(JSON.stringify(settings)).digest('hex').slice(0, 12);
  }

  /** A reload's outcome, with the digest of the configuration running after it. */
  private reloaded(accepted: boolean, err?: unknown): ReloadOutcome {
    return { accepted, config: this.configDigest, ...(err === undefined ? {} : { reason: abbreviate(describeError(err), 200) }) };
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.options.log.info({}, 'stopping: draining policy connections');
    // No purge once stopping: the store is closed below, and a purge of a closed store fails.
    this.timers.clearTimeout(this.purgeTimer);
    await this.server.close({ drainMs: DRAIN_MS });
    // Scrapes go on through the policy drain; a connection still open after it must not hold the stop.
    if (this.metricsServer) await closeMetricsServer(this.metricsServer);
    const generations = [this.current, ...this.replaced.keys()];
    await Promise.all([this.retire(this.current), ...this.replaced.values()]);
    let abandoned = 0;
    for (const generation of generations) abandoned += ((await generation.engine?.abandon()) ?? 0) + (await generation.pipeline.abandon());
    if (abandoned > 0) {
      this.options.log.warn({ abandoned, waitedMs: DRAIN_MS }, 'callouts still running at shutdown abandoned: their answers are not cached, their probe locks are released');
    }
    await this.store.close();
    this.options.log.info({}, 'stopped');
  }

  get config(): Config {
    return this.current.config;
  }

  metricsText(): Promise<string> {
    return this.metrics.registry.metrics();
  }

  /** The registry behind metricsText(), for a supervisor that sums its workers'. */
  get metricsRegistry(): Registry {
    return this.metrics.registry;
  }

  /** At once when the pipeline decides at once (core of the cached path), else when it has decided. */
  private answer(attributes: Record<string, string>): string | Promise<string> {
    if (this.requestTime) followTestTime(this.requestTime, attributes.policy_test_time, this.options.log);
    const outcome = this.current.pipeline.decide(attributes);
    return outcome instanceof Promise ? outcome.then((decided) => this.answered(attributes, decided)) : this.answered(attributes, outcome);
  }

  private answered(attributes: Record<string, string>, outcome: PipelineOutcome): string {
    this.metrics.recordDecision(outcome);
    this.logDecision(attributes, outcome);
    return outcome.action;
  }

  /** The decision's one log line (core/log logInfoJson, fields of decisionJson). */
  private logDecision(attributes: Record<string, string>, outcome: PipelineOutcome): void {
    if (!this.options.log.isLevelEnabled('info')) return;
    logInfoJson(this.options.log, decisionJson(attributes, outcome), 'decision');
  }

  /** A generation of `config`; `messages`: the header memory of the one it replaces (a reload). */
  private generation(config: Config, messages?: MessageMemories): Generation {
    return buildGeneration(config, { store: this.store, clock: this.clock, log: this.options.log, metrics: this.metrics, worker: this.options.worker ?? false }, messages);
  }

  /**
   * Lets the generation's callouts finish and closes its stages, within one DRAIN_MS for both:
   * a call-forward stage's close waits for its own callouts, which must not add a second drain.
   * onClosed is called once they have finished and the stages have closed, however long after.
   */
  private async retire(old: Generation, onClosed?: () => void): Promise<void> {
    const bound = new Promise<void>((resolve) => setTimeout(resolve, DRAIN_MS).unref());
    const closed = (old.engine?.idle() ?? Promise.resolve())
      .then(() => old.pipeline.close().catch((err: unknown) => this.options.log.warn({ err: describeError(err) }, 'closing old stages failed')))
      .then(onClosed);
    await Promise.race([closed, bound]);
  }

  private async openConfiguredStore(config: Config): Promise<WatchedStore> {
    if (config.store.kind === 'redis') {
      // Start even while Redis is down: requests are answered by policy.faultAction until it is back.
      const redis = await RedisStore.open(config.store.url, { clock: this.clock, keyPrefix: config.store.keyPrefix, waitForConnection: false });
      const watched = this.watched(redis, redis.url);
      redis.on('down', (reason) => {
        this.options.log.error({ store: redis.url, reason }, 'store unavailable: answering by policy.faultAction');
        // Its end is the first write after it, though no command failed meanwhile.
        this.storeRecovery.failed(this.outageTime(), 0);
      });
      if (!redis.healthy) {
        const up = new Promise<void>((resolve) => redis.once('up', () => resolve()));
        await Promise.race([up, new Promise((resolve) => setTimeout(resolve, REDIS_STARTUP_WAIT_MS).unref())]);
      }
      return watched;
    }
    if (config.store.kind === 'memory') return this.watched(await openStore({ kind: 'memory' }, this.clock), 'memory');
    const sqlite = await openSqliteStore(config, this.clock, this.options.log, this.metrics, this.options.sqliteBusyTimeoutMs);
    return this.watched(sqlite, sqlite.path);
  }

  /**
   * The store, its outages counted (StoreError outage: damage does not end by itself, and its
   * line says what to do; a key of another type, written by another program under the prefix,
   * is no outage, and a 'store available' after it told of one that never was) until a write
   * succeeds again, which is logged once, with how long
   * and how many: with SQLite only /health told that a full disk or a lock had let go.
   */
  private watched(store: Store, name: string): WatchedStore {
    return new WatchedStore(store, {
      failed: (err) => {
        if (err instanceof StoreError && err.outage) this.storeRecovery.failed(this.outageTime());
      },
      wrote: () => {
        const line = this.storeRecovery.succeeded(this.outageTime());
        if (line) this.options.log.info({ store: name, failingForMs: line.failingForMs, failedOperations: line.failures }, 'store available');
      },
    });
  }

  /** The time an outage is measured by: the real one, not policy_test_time's (policy.acceptTestTime). */
  private outageTime(): number {
    return (this.options.clock ?? systemClock).now();
  }

  /**
   * Whether the store takes a write (the daemon answers Postfix either way, by
   * policy.faultAction). A write, not a read: with the disk full a SQLite file still reads, and
   * greylisting and rate limits then keep nothing while a read-only probe said ok. A write that
   * fails is logged once a minute for each reason (healthLines).
   */
  async healthy(): Promise<boolean> {
    const fileProblem = this.store.inner instanceof SqliteStore ? this.store.inner.fileProblem() : undefined;
    if (fileProblem) {
      // Every scrape finds it again until the restart: once a minute, as the write failures below.
      const repeats = this.healthLines.admit(fileProblem, this.clock.now());
      if (repeats) this.options.log.error({ ...repeats }, `health: ${fileProblem}; restart callout serve to open the file at its path`);
      return false;
    }
    try {
      await this.store.set(HEALTH_PROBE_KEY, String(this.clock.now()), HEALTH_PROBE_TTL_MS);
      return true;
    } catch (err) {
      const message = describeError(err);
      const repeats = this.healthLines.admit(message, this.clock.now());
      if (repeats) this.options.log.warn({ err: message, ...repeats }, 'health: the store does not take a write');
      return false;
    }
  }
}
