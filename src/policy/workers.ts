/**
 * NAME
 *   policy/workers - `callout serve` on several cores: a supervisor and its policy workers
 *
 * DESCRIPTION
 *   With policy.workers N > 1 the process `callout serve` starts becomes a supervisor (the
 *   node:cluster primary) and forks N workers, each a whole Daemon (policy/daemon) with its own
 *   resolver cache, callout engine and pipeline. The workers share two things:
 *     the listener  the supervisor holds the listening socket and hands each new connection to
 *                   a worker in turn (node:cluster's round-robin). A Postfix policy connection
 *                   carries every request of a message, so what a pipeline remembers per
 *                   message (the `instance` header memory) stays in one worker;
 *     the store     SQLite (one file, WAL) or Redis: cached verdicts, the probe lock that keeps
 *                   two workers from probing the same address at once, greylist triplets, rate
 *                   and tarpit counters. A memory store cannot be shared, so the configuration
 *                   refuses workers > 1 with it.
 *   One process answers at most one core's worth of decisions; the policy service is often
 *   the busiest part of a mail server at SMTP time, and Postfix runs many smtpd processes.
 *
 *   The supervisor serves /metrics (the sum over the workers: it asks each for its registry at
 *   every scrape and adds them up with prom-client's AggregatorRegistry.aggregate) and /health
 *   (every worker up and its store answering), passes a reload (its own SIGHUP) to every worker
 *   as a message numbered for that reload (callout:reload; each worker reloads the configuration
 *   file, as a single daemon does; one still starting gets it once it is ready, since it may have
 *   read the file before the edit), and on stop() sends SIGTERM to every worker and waits while
 *   they drain. Not a SIGHUP: two sent within milliseconds could reach a worker as one (the
 *   kernel does not queue a pending standard signal), which then owed an outcome it never sent.
 *   Each worker reads the file on its own, so each answers with its reload's outcome
 *   (callout:reloaded, the same number: accepted or refused, a digest of the configuration it
 *   then runs). Only the answer to the latest reload counts: a late one to an earlier reload is
 *   not that worker's answer. A SIGHUP sent to a worker by hand reloads that worker, and its
 *   outcome is only logged there: it answers none of the supervisor's reloads. Once all have
 *   answered, the supervisor logs that they run one configuration, or warns, naming each
 *   worker's outcome, that they do not (a file caught mid-write by one worker and not by
 *   another). An answer not in within reloadOutcomeWaitMs (30 s) of the request (the
 *   worker's reload threw) is given up, with a warning naming the worker, and the others are
 *   compared without it: waiting on would have kept every later comparison silent until that
 *   worker exited. A reload asked for while stopping is ignored.
 *   A worker that dies is logged and replaced after restartDelayMs (doubling, up to a minute,
 *   while replacements fail to start); one that fails during Supervisor.start() fails the start.
 *   A replacement reads the configuration file as it is then (as a new Postfix smtpd reads
 *   main.cf), and says in callout:ready the digest of the configuration it runs. When that is
 *   not the one the running workers last reported (ready, or in a reload's outcome), the file
 *   was edited and not reloaded: the supervisor warns, naming each worker's digest, that the
 *   workers run different configurations and that a SIGHUP makes them all run the file as it is
 *   now. /health still answers 200: every worker answers, by a configuration it accepted. It
 *   says a digest of its restart-only settings too (the store, the listeners: what a reload does
 *   not apply); when that is not the one the workers started with, the supervisor warns apart
 *   that the replacement needs a restart of callout serve, or the file put back.
 *
 *   The counters and histograms of a worker that exited stay in the sum with the values of its
 *   last scrape (keepCounts), so that a total never goes down while the supervisor runs:
 *   Prometheus reads a decrease as a counter reset, and rate() and increase() over the death of
 *   a worker came out too high. Its gauges (memory, handles) go with it. What a worker counted
 *   after its last scrape is lost when it dies: a crash leaves it no chance to send a last
 *   word, and the counts of a worker that died before any scrape are lost whole. No scraper
 *   had seen those counts, so no total goes down: they are only missing from it.
 *
 *   Worker side, startPolicyWorker() starts the Daemon in worker mode, reports itself ready to
 *   the supervisor, reloads when asked and answers with the outcome, and answers its health and
 *   metrics questions. The supervisor's messages are read field by field too
 *   (readSupervisorMessage).
 *
 * LIMITS
 *   workers: 1-64 (policy.workers). A health question unanswered within 1 s counts as unhealthy;
 *   a metrics question unanswered within 5 s fails the scrape (500, the worker named in the log).
 *   A worker's message is read field by field (readWorkerMessage): one of another shape is
 *   ignored, and a metrics answer of another shape fails the scrape as an answer without metrics.
 *   A configuration digest is 1-64 hex digits: a ready message with one of another shape is
 *   read as one without it, a reload outcome with one is ignored.
 *
 * ERRORS
 *   Supervisor.start() rejects with the error of the first worker that fails to start, its code
 *   and message kept (ConfigError for a bad configuration, which fails every worker the same
 *   way), or CalloutError INTERNAL when a worker exits before it is ready without saying why.
 *   The worker that said why says nothing itself (startPolicyWorker, StartFailureTold): the
 *   supervisor's message is the one.
 */

import cluster from 'node:cluster';
import type { Worker } from 'node:cluster';
import type { Server } from 'node:http';
import { AggregatorRegistry, Registry } from 'prom-client';
import { listenRefusal, parseListenAddress } from '../core/listen.js';
import { systemTimers, type TimerHandle, type Timers } from '../core/clock.js';
import { CalloutError, ConfigError, describeError, type ErrorCode } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import { closeMetricsServer, startMetricsServer } from '../http/metrics.js';
import { Daemon } from './daemon.js';
import type { DaemonOptions, ReloadOutcome } from './daemon.js';
import { removeIfSocket, removeStaleSocket } from '../core/listen.js';
import { isRecord } from '../core/record.js';

/** Set in a worker started in place of one that died (the supervisor's environment otherwise). */
const REPLACEMENT_ENV = 'CALLOUT_WORKER_REPLACES';
export const DEFAULT_WORKER_RESTART_DELAY_MS = 1_000;
/** A replacement that keeps failing to start is retried less and less often, down to this. */
const MAX_RESTART_DELAY_MS = 60_000;
const HEALTH_ANSWER_MS = 1_000;
/**
 * A worker that dies sooner than this after it was ready counts as a failed start (backoff). On
 * the monotonic clock: a wall clock stepped forward (NTP, a resumed VM) passed a worker dying
 * at once for a healthy one and reset the backoff; one stepped back held a healthy one as failed.
 */
const HEALTHY_LIFETIME_MS = 10_000;
/** Longer than a worker's own drain (policy/daemon), so that draining is never cut short. */
const STOP_WAIT_MS = 30_000;
/** As long as prom-client's own cluster aggregation waited. */
const METRICS_ANSWER_MS = 5_000;
/** A reload reads one file and builds a pipeline: far less than this, unless it failed to report. */
const DEFAULT_RELOAD_OUTCOME_WAIT_MS = 30_000;

/** One metric of a worker's registry as prom-client's getMetricsAsJSON() gives it (its typings call the type a number). */
export interface WorkerMetric {
  name: string;
  help: string;
  type: string;
  aggregator: string;
  values: Array<{ value: number; labels: Record<string, string | number>; metricName?: string }>;
}

type WorkerMessage =
  /**
   * config: the digest of the configuration it started with (policy/daemon configDigest); restart:
   * of its restart-only settings (restartDigest). Neither from a worker of an earlier version.
   */
  | { type: 'callout:ready'; policy: string; config?: string; restart?: string }
  /** code: the CalloutError code of a failed start, so that the supervisor exits as the worker would. */
  | { type: 'callout:failed'; message: string; code?: ErrorCode }
  | { type: 'callout:health'; id: number; healthy: boolean }
  /** error: why the worker could not read its registry. */
  | { type: 'callout:metrics'; id: number; metrics?: WorkerMetric[]; error?: string }
  /** A reload's outcome (policy/daemon ReloadOutcome). seq: the callout:reload it answers. */
  | ({ type: 'callout:reloaded'; seq: number } & ReloadOutcome);

type SupervisorMessage =
  | { type: 'callout:health?'; id: number }
  | { type: 'callout:metrics?'; id: number }
  /** Reload the configuration file and answer with callout:reloaded and this seq. */
  | { type: 'callout:reload'; seq: number };

const optional = (value: unknown, type: 'string' | 'number'): boolean => value === undefined || typeof value === type;

/**
 * A configuration digest as a worker gives it (policy/daemon configDigest: 12 hex digits; up to
 * a SHA-256's 64 should a later version give more). It goes into the supervisor's warnings: a
 * string of any other shape, a whole file say, is no digest.
 */
const isConfigDigest = (value: unknown): value is string => typeof value === 'string' && /^[0-9a-f]{1,64}$/.test(value);

/**
 * One metric of a worker's answer, or undefined when it has another shape. A value of null is
 * NaN as it crossed the IPC channel (JSON): prom-client's event-loop lag mean and deviation are
 * NaN until the first sample, so a worker just started answered so, and its scrape failed.
 */
function readWorkerMetric(value: unknown): WorkerMetric | undefined {
  if (!isRecord(value) || !Array.isArray(value.values)) return undefined;
  if (typeof value.name !== 'string' || typeof value.help !== 'string' || typeof value.type !== 'string' || typeof value.aggregator !== 'string') return undefined;
  const values: WorkerMetric['values'] = [];
  for (const series of value.values as unknown[]) {
    if (!isRecord(series) || (typeof series.value !== 'number' && series.value !== null) || !optional(series.metricName, 'string')) return undefined;
    if (!isRecord(series.labels) || !Object.values(series.labels).every((label) => typeof label === 'string' || typeof label === 'number')) return undefined;
    values.push({ ...series, value: series.value ?? NaN, labels: series.labels as Record<string, string | number> });
  }
  return { ...value, values } as WorkerMetric;
}

/** A worker's metrics answer, every metric read, or undefined when one has another shape. */
function metricsOf(value: unknown): { metrics: WorkerMetric[] } | undefined {
  if (!Array.isArray(value)) return undefined;
  const metrics = value.map(readWorkerMetric);
  return metrics.every((metric) => metric !== undefined) ? { metrics: metrics as WorkerMetric[] } : undefined;
}

/**
 * A message from a worker, its fields checked, or undefined (ignored) when it is not one. A
 * worker forked after an upgrade runs the program now on disk, which may speak another version
 * of these messages: a metrics answer of another shape, kept as a worker's last scrape, made
 * keepCounts throw in the worker's exit handler and took the supervisor down with it.
 */
export function readWorkerMessage(message: unknown): WorkerMessage | undefined {
  if (!isRecord(message)) return undefined;
  const m = message;
  switch (m.type) {
    case 'callout:ready':
      if (typeof m.policy !== 'string') return undefined;
      // A config of another shape is a ready worker that did not say what it runs: refused as
      // not ready, it would fail the start, or go on being replaced.
      return { type: m.type, policy: m.policy, ...(isConfigDigest(m.config) ? { config: m.config } : {}), ...(isConfigDigest(m.restart) ? { restart: m.restart } : {}) };
    case 'callout:failed':
      return typeof m.message === 'string' && optional(m.code, 'string') ? { type: m.type, message: m.message, ...(m.code === undefined ? {} : { code: m.code as ErrorCode }) } : undefined;
    case 'callout:health':
      return typeof m.id === 'number' && typeof m.healthy === 'boolean' ? { type: m.type, id: m.id, healthy: m.healthy } : undefined;
    case 'callout:metrics':
      if (typeof m.id !== 'number' || !optional(m.error, 'string')) return undefined;
      // Metrics of another shape are an answer without metrics: the scrape fails and says so.
      return {
        type: m.type,
        id: m.id,
        ...(metricsOf(m.metrics) ?? {}),
        ...(m.error === undefined ? {} : { error: m.error as string }),
      };
    case 'callout:reloaded':
      if (typeof m.accepted !== 'boolean' || !isConfigDigest(m.config) || !optional(m.reason, 'string') || typeof m.seq !== 'number') return undefined;
      return {
        type: m.type,
        seq: m.seq,
        accepted: m.accepted,
        config: m.config,
        ...(m.reason === undefined ? {} : { reason: m.reason as string }),
      };
    default:
      return undefined;
  }
}

/**
 * A message from the supervisor, in a worker, its fields checked, or undefined (ignored) when it
 * is not one: a supervisor started before an upgrade may speak another version of them.
 */
export function readSupervisorMessage(message: unknown): SupervisorMessage | undefined {
  if (!isRecord(message)) return undefined;
  const m = message;
  switch (m.type) {
    case 'callout:health?':
    case 'callout:metrics?':
      return typeof m.id === 'number' ? { type: m.type, id: m.id } : undefined;
    case 'callout:reload':
      return typeof m.seq === 'number' ? { type: m.type, seq: m.seq } : undefined;
    default:
      return undefined;
  }
}

export interface SupervisorOptions {
  workers: number;
  /** The policy listener (config policy.listen): a UNIX socket path is cleared before and removed after. */
  listen: string;
  /** Where /metrics and /health are served; '' for nowhere. */
  metricsListen: string;
  /** The metrics listener's UNIX socket mode (config metrics.socketMode); by default DEFAULT_SOCKET_MODE. */
  metricsSocketMode?: number;
  log: Logger;
  /** The worker program and its arguments; by default this process's own (cluster's default). */
  exec?: string;
  args?: string[];
  execArgv?: string[];
  restartDelayMs?: number;
  /** The monotonic clock of a worker's lifetime (HEALTHY_LIFETIME_MS) and the timers of its replacement; tests move them. */
  timers?: Timers;
  /** How long after it was asked a worker's reload outcome is waited for; DEFAULT_RELOAD_OUTCOME_WAIT_MS by default. */
  reloadOutcomeWaitMs?: number;
}

export class Supervisor {
  policyAddress = '';
  metricsAddress = '';
  private readonly workers = new Set<Worker>();
  /** The workers that said they are listening. */
  private readonly ready = new Set<Worker>();
  /**
   * The reload each worker still owes an outcome for: the seq of the latest reload(), and when
   * the worker is given up on (reloadOutcomeWaitMs after it was asked). One not yet ready has
   * not been asked, and has no deadline: it is asked for this seq once it says it is ready.
   */
  private readonly awaitedReloads = new Map<Worker, { seq: number; deadline?: NodeJS.Timeout }>();
  /** The number of the latest reload(), which its callout:reload messages carry. */
  private reloadSeq = 0;
  /** The outcome of the latest reload from each worker that answered it (compared once none is owed). */
  private readonly reloadOutcomes = new Map<Worker, ReloadOutcome & { started?: true }>();
  /**
   * The digest of the configuration each ready worker runs, as it last said (ready, or a
   * reload's outcome); a worker of an earlier version says none. A SIGHUP sent to a worker by
   * hand changes it unsaid.
   */
  private readonly running = new Map<Worker, string>();
  /**
   * The digest of the restart-only settings the workers started with (policy/daemon
   * restartDigest), as the first of them said it: the store they write to, the listeners. A
   * reload changes none of them, so this holds while the supervisor runs.
   */
  private startedRestart: string | undefined;
  /** The workers whose outcomes were given up since the last reload(), by id. */
  private readonly unreported = new Set<number>();
  private readonly healthWaits = new Map<number, (healthy: boolean) => void>();
  private readonly metricsWaits = new Map<number, (answer: { metrics?: WorkerMetric[]; error?: string }) => void>();
  /** Each running worker's registry at its latest scrape, with the question's id (a later question sees counts as high or higher). */
  private readonly scraped = new Map<Worker, { id: number; metrics: WorkerMetric[] }>();
  /** The counters and histograms of the workers that exited, at their last scrape. */
  private kept: WorkerMetric[] = [];
  private metricsServer: Server | undefined;
  private nextQuestionId = 1;
  private stopping = false;
  private restartTimers = new Set<TimerHandle>();
  /** Replacements that failed to start since the last one that did. */
  private failedRestarts = 0;

  private readonly timers: Timers;

  private constructor(private readonly options: SupervisorOptions) {
    this.timers = options.timers ?? systemTimers;
  }

  static async start(options: SupervisorOptions): Promise<Supervisor> {
    if (!cluster.isPrimary) throw new CalloutError('INTERNAL', 'a policy worker cannot supervise workers of its own');
    const supervisor = new Supervisor(options);
    await supervisor.boot();
    return supervisor;
  }

  /** Process ids of the running workers. */
  get pids(): number[] {
    return [...this.workers].flatMap((worker) => (worker.process.pid === undefined ? [] : [worker.process.pid]));
  }

  /** Asks every worker to reload its configuration (as SIGHUP does to a single daemon). */
  reload(): void {
    if (this.stopping) {
      this.options.log.info({}, 'reload ignored: the policy workers are stopping');
      return;
    }
    // A worker still starting reads no messages yet, and it may have read the configuration
    // file before the edit that this reload is for: it is asked once it says it is ready, once
    // however many reloads were asked for meanwhile.
    this.options.log.info({ workers: this.ready.size, starting: this.workers.size - this.ready.size }, 'reloading: asking every policy worker to reload');
    this.reloadOutcomes.clear();
    this.unreported.clear();
    const seq = ++this.reloadSeq;
    for (const worker of this.workers) {
      // An answer to an earlier reload is no answer to this one: the worker may have read the file before the edit.
      if (this.ready.has(worker)) this.askReload(worker, seq);
      else this.awaitedReloads.set(worker, { seq });
    }
  }

  /** Asks a worker to reload (reload `seq`); its answer is then waited for reloadOutcomeWaitMs at most. */
  private askReload(worker: Worker, seq: number): void {
    // A worker whose channel is closing is exiting: its exit forgets what it owed.
    worker.send({ type: 'callout:reload', seq } satisfies SupervisorMessage, () => undefined);
    this.forgetAwaited(worker);
    const waitMs = this.options.reloadOutcomeWaitMs ?? DEFAULT_RELOAD_OUTCOME_WAIT_MS;
    const deadline = setTimeout(() => {
      if (!this.forgetAwaited(worker)) return;
      this.unreported.add(worker.id);
      this.options.log.warn(
        { worker: worker.id, pid: worker.process.pid },
        `policy worker ${worker.id} reported no reload outcome within ${waitMs} ms of being asked to reload; comparing the others without it`,
      );
      this.reloadSettled();
    }, waitMs);
    // The supervisor's own exit must not wait for it.
    deadline.unref();
    this.awaitedReloads.set(worker, { seq, deadline });
  }

  /** Forgets the outcome a worker owes (received, given up, asked again, or the worker gone); true when it owed one. */
  private forgetAwaited(worker: Worker): boolean {
    clearTimeout(this.awaitedReloads.get(worker)?.deadline);
    return this.awaitedReloads.delete(worker);
  }

  /**
   * Once every worker asked has said how its reload went: each read the file on its own, and
   * one that read it mid-write (an editor's) can refuse it, or accept another version of it, while
   * the rest accept. Nothing else would say that the workers now answer by different rules.
   */
  private reloadSettled(): void {
    if (this.awaitedReloads.size > 0) return;
    const outcomes = [...this.reloadOutcomes].sort(([a], [b]) => a.id - b.id);
    this.reloadOutcomes.clear();
    const configs = new Set(outcomes.map(([, outcome]) => outcome.config));
    const unreported = [...this.unreported];
    this.unreported.clear();
    if (configs.size < 2) {
      const accepted = outcomes.filter(([, outcome]) => outcome.accepted).length;
      if (configs.size === 0) return;
      const fields = { config: [...configs][0], accepted, refused: outcomes.length - accepted };
      if (unreported.length === 0) this.options.log.info(fields, 'reload done: every policy worker runs the same configuration');
      else this.options.log.info({ ...fields, unreported }, 'reload done: every policy worker that reported runs the same configuration');
      return;
    }
    // A replacement that started during the reload got no reload to accept: it read the file.
    const each = outcomes.map(([worker, { accepted, config, reason, started }]) => `worker ${worker.id} ${started ? 'started' : accepted ? 'accepted' : `refused (${reason ?? 'no reason given'})`}, running configuration ${config}`);
    this.options.log.warn(
      { workers: outcomes.map(([worker, outcome]) => ({ worker: worker.id, pid: worker.process.pid, ...outcome })), ...(unreported.length > 0 ? { unreported } : {}) },
      `workers run different configurations after reload: ${each.join('; ')}; send SIGHUP again`,
    );
  }

  /**
   * A replacement reads the configuration file as it is when it starts, as a new Postfix smtpd
   * reads main.cf: a file edited since the last reload, and not reloaded, has it answer by other
   * rules than the workers running beside it, and nothing else would say so. It is not handed
   * the others' configuration instead: the supervisor holds none (each worker reads the file),
   * and the file on disk is what the administrator last wrote. During a reload its configuration
   * is compared with the others' outcomes, as if it had reloaded too: it read the file after
   * the reload was asked for.
   */
  private replacementStarted(worker: Worker, config: string): void {
    if (this.awaitedReloads.size > 0) {
      this.reloadOutcomes.set(worker, { accepted: true, config, started: true });
      return;
    }
    const others = [...this.running].filter(([other]) => other !== worker).sort(([a], [b]) => a.id - b.id);
    if (others.every(([, other]) => other === config)) return;
    const each = others.map(([other, running]) => `worker ${other.id} runs configuration ${running}`);
    this.options.log.warn(
      { worker: worker.id, pid: worker.process.pid, config, others: others.map(([other, running]) => ({ worker: other.id, pid: other.process.pid, config: running })) },
      `workers run different configurations: worker ${worker.id}, started in place of one that died, read the configuration file as it is now and runs configuration ${config}; ${each.join('; ')}; ` +
        'the file has changed since the others read it: send SIGHUP to make every worker run the file as it is now',
    );
  }

  /**
   * A replacement opens the store and listens as the file says now, and a SIGHUP applies no
   * change to these settings: an edited store.url or store.path, not reloaded, has it keep
   * greylist triplets and verdicts apart from the other workers' until the restart. Said apart
   * from the configuration's warning, since another remedy helps.
   */
  private replacementRestartSettings(worker: Worker, restart: string): void {
    if (this.startedRestart === undefined || restart === this.startedRestart) return;
    this.options.log.warn(
      { worker: worker.id, pid: worker.process.pid, restart, running: this.startedRestart },
      `policy worker ${worker.id}, started in place of one that died, read restart-only settings that differ from the running workers' ` +
        '(settings a reload does not apply): restart callout serve, or put the file back',
    );
  }

  /** SIGTERM to every worker; resolves once all have drained and exited. */
  async stop(): Promise<void> {
    this.stopping = true;
    for (const timer of this.restartTimers) this.timers.clearTimeout(timer);
    const exited = [...this.workers].map((worker) => exitOf(worker));
    for (const worker of this.workers) worker.process.kill('SIGTERM');
    let killer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(exited),
      new Promise<void>((resolve) => {
        killer = setTimeout(() => {
          this.options.log.warn({ workers: this.workers.size }, 'policy workers still running after the drain time; killing them');
          for (const worker of this.workers) worker.process.kill('SIGKILL');
          resolve();
        }, STOP_WAIT_MS);
      }),
    ]);
    clearTimeout(killer);
    await Promise.all(exited);
    if (this.metricsServer) await closeMetricsServer(this.metricsServer);
    const endpoint = parseListenAddress(this.options.listen);
    if (endpoint.ok && endpoint.value.kind === 'unix') await removeIfSocket(endpoint.value.path);
    this.options.log.info({}, 'stopped');
  }

  private async boot(): Promise<void> {
    const endpoint = parseListenAddress(this.options.listen);
    if (!endpoint.ok) throw new ConfigError(`policy listen address: ${listenRefusal(this.options.listen, endpoint.reason)}`);
    if (endpoint.value.kind === 'unix') await removeStaleSocket(endpoint.value.path);
    cluster.setupPrimary({
      ...(this.options.exec !== undefined ? { exec: this.options.exec } : {}),
      ...(this.options.args !== undefined ? { args: this.options.args } : {}),
      ...(this.options.execArgv !== undefined ? { execArgv: this.options.execArgv } : {}),
    });
    const started = Array.from({ length: this.options.workers }, () => this.fork());
    try {
      const addresses = await Promise.all(started);
      this.policyAddress = addresses[0] ?? '';
      if (this.options.metricsListen) {
        const metrics = await startMetricsServer(
          this.options.metricsListen,
          { metricsText: () => this.metricsText(), contentType: Registry.PROMETHEUS_CONTENT_TYPE, healthy: () => this.healthy() },
          { socketMode: this.options.metricsSocketMode, log: this.options.log },
        );
        this.metricsServer = metrics.server;
        this.metricsAddress = metrics.address;
      }
    } catch (err) {
      // A metrics listener that cannot bind fails the start too: the workers left running kept
      // the process alive, answering Postfix, after it had said CONFIG_INVALID and never exited.
      this.stopping = true;
      for (const worker of this.workers) worker.process.kill('SIGKILL');
      await Promise.all([...this.workers].map((worker) => exitOf(worker)));
      throw err;
    }
    this.options.log.info({ workers: this.pids, policy: this.policyAddress, metrics: this.metricsAddress || 'off' }, 'policy workers started');
  }

  /** Forks one worker (a `replacement` for one that died); resolves with its policy address once it listens. */
  private fork(replacement = false): Promise<string> {
    const worker = cluster.fork(replacement ? { [REPLACEMENT_ENV]: '1' } : undefined);
    this.workers.add(worker);
    // A message to a worker that is dying fails; that must not become an uncaught error here.
    worker.on('error', (err) => this.options.log.warn({ worker: worker.id, pid: worker.process.pid, err: describeError(err) }, 'policy worker channel error'));
    return new Promise<string>((resolve, reject) => {
      let ready = false;
      let readyAt = 0;
      worker.on('message', (received: unknown) => {
        const message = readWorkerMessage(received);
        if (message === undefined) return;
        if (message.type === 'callout:ready') {
          // A worker that says it is ready again has been asked already, if it owes an outcome.
          const seq = ready ? undefined : this.awaitedReloads.get(worker)?.seq;
          const started = !ready;
          ready = true;
          readyAt = this.timers.now();
          this.ready.add(worker);
          if (message.config !== undefined) this.running.set(worker, message.config);
          if (started && !replacement) this.startedRestart ??= message.restart;
          if (started && replacement && message.restart !== undefined) this.replacementRestartSettings(worker, message.restart);
          // Asked to reload, it is compared with the others once it has: what it started with is past.
          if (seq !== undefined) this.askReload(worker, seq);
          else if (started && replacement && message.config !== undefined) this.replacementStarted(worker, message.config);
          resolve(message.policy);
        } else if (message.type === 'callout:failed' && !ready) {
          reject(workerStartError(message.message, message.code));
        } else if (message.type === 'callout:health') {
          this.healthWaits.get(message.id)?.(message.healthy);
        } else if (message.type === 'callout:metrics') {
          this.metricsWaits.get(message.id)?.(message);
        } else if (message.type === 'callout:reloaded') {
          // Any answer says what the worker runs now: it answers its reloads in turn.
          this.running.set(worker, message.config);
          // Only the answer to the latest reload(): one to an earlier reload says nothing of the file this reload is for.
          if (this.awaitedReloads.get(worker)?.seq !== message.seq) return;
          this.forgetAwaited(worker);
          const { type: _type, seq: _seq, ...outcome } = message;
          this.reloadOutcomes.set(worker, outcome);
          this.reloadSettled();
        }
      });
      worker.once('exit', (code, signal) => {
        this.workers.delete(worker);
        this.ready.delete(worker);
        // A worker gone runs no configuration, and owes no outcome.
        this.running.delete(worker);
        this.reloadOutcomes.delete(worker);
        if (this.forgetAwaited(worker)) this.reloadSettled();
        const last = this.scraped.get(worker);
        this.scraped.delete(worker);
        if (last) this.kept = keepCounts(this.kept, last.metrics);
        if (!ready) {
          reject(new CalloutError('INTERNAL', `policy worker ${worker.process.pid ?? '?'} exited (${signal ?? code}) before it was ready`));
          return;
        }
        if (this.stopping) return;
        // `worker` is the number the worker's own lines carry; its pid is the one `policy workers started` lists.
        this.options.log.error({ worker: worker.id, pid: worker.process.pid, code, signal }, 'policy worker died; starting another');
        // One that dies soon after it started (on its first requests, say) counts as a failed start.
        if (this.timers.now() - readyAt < HEALTHY_LIFETIME_MS) this.failedRestarts += 1;
        else this.failedRestarts = 0;
        this.restart();
      });
    });
  }

  /**
   * Replaces a worker after restartDelayMs; while replacements fail to start (a configuration
   * file broken since the start, a full disk) the delay doubles up to a minute, as Postfix's
   * master throttles a service whose processes keep dying.
   */
  private restart(): void {
    if (this.stopping) return;
    const base = this.options.restartDelayMs ?? DEFAULT_WORKER_RESTART_DELAY_MS;
    const delayMs = Math.min(MAX_RESTART_DELAY_MS, base * 2 ** this.failedRestarts);
    const timer = this.timers.setTimeout(() => {
      this.restartTimers.delete(timer);
      if (this.stopping) return;
      this.fork(true).then(
        () => this.options.log.info({ workers: this.pids }, 'policy worker replaced'),
        (err: unknown) => {
          // stop() ended it before it was ready: no failed start, and nothing will be tried again.
          if (this.stopping) return;
          this.failedRestarts += 1;
          this.options.log.error(
            { err: describeError(err), retryInMs: Math.min(MAX_RESTART_DELAY_MS, base * 2 ** this.failedRestarts) },
            'a replacement policy worker failed to start; trying again later',
          );
          this.restart();
        },
      );
    }, delayMs);
    this.restartTimers.add(timer);
  }

  /** The sum of the running workers' registries and of what the exited ones counted. */
  private async metricsText(): Promise<string> {
    await Promise.all([...this.ready].map((worker) => this.scrape(worker)));
    return AggregatorRegistry.aggregate([this.kept, ...[...this.scraped.values()].map((s) => s.metrics)]).metrics();
  }

  /**
   * Asks a worker for its registry and keeps the answer in `scraped`. A worker that exits
   * meanwhile, or whose channel is closing, leaves its last answer in place (kept at its exit).
   */
  private scrape(worker: Worker): Promise<void> {
    if (!worker.isConnected()) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const id = this.nextQuestionId++;
      const settle = (err?: Error): void => {
        clearTimeout(timer);
        this.metricsWaits.delete(id);
        worker.off('exit', gone);
        if (err) reject(err);
        else resolve();
      };
      const gone = (): void => settle();
      const timer = setTimeout(() => settle(new CalloutError('INTERNAL', `policy worker ${worker.process.pid ?? '?'} did not send its metrics within ${METRICS_ANSWER_MS} ms`)), METRICS_ANSWER_MS);
      this.metricsWaits.set(id, (answer) => {
        if (answer.error !== undefined || !answer.metrics) {
          settle(new CalloutError('INTERNAL', `policy worker ${worker.process.pid ?? '?'} could not read its metrics: ${answer.error ?? 'no metrics sent'}`));
          return;
        }
        if (this.workers.has(worker) && id > (this.scraped.get(worker)?.id ?? 0)) this.scraped.set(worker, { id, metrics: answer.metrics });
        settle();
      });
      worker.once('exit', gone);
      worker.send({ type: 'callout:metrics?', id } satisfies SupervisorMessage, (err: Error | null) => err && settle());
    });
  }

  /** Every configured worker is up and its store answers. */
  private async healthy(): Promise<boolean> {
    // A worker still starting cannot answer yet (it would only time out): not healthy now.
    if (this.ready.size < this.options.workers) return false;
    const answers = [...this.ready].map(
      (worker) =>
        new Promise<boolean>((resolve) => {
          const id = this.nextQuestionId++;
          const timer = setTimeout(() => settle(false), HEALTH_ANSWER_MS);
          const settle = (healthy: boolean): void => {
            clearTimeout(timer);
            this.healthWaits.delete(id);
            resolve(healthy);
          };
          this.healthWaits.set(id, settle);
          if (!worker.isConnected()) settle(false);
          else worker.send({ type: 'callout:health?', id } satisfies SupervisorMessage, (err: Error | null) => err && settle(false));
        }),
    );
    return (await Promise.all(answers)).every(Boolean);
  }
}

/**
 * `kept` with the counters and histograms of `last` (a worker's registry at its last scrape)
 * added, series by series. The gauges of `last` are left out: the memory or open handles of a
 * process that has exited are no part of the service's.
 */
export function keepCounts(kept: readonly WorkerMetric[], last: readonly WorkerMetric[]): WorkerMetric[] {
  const merged = new Map(kept.map((metric) => [metric.name, { ...metric, values: metric.values.map((value) => ({ ...value })) }]));
  for (const metric of last) {
    if (metric.type !== 'counter' && metric.type !== 'histogram') continue;
    let into = merged.get(metric.name);
    if (!into) {
      into = { ...metric, values: [] };
      merged.set(metric.name, into);
    }
    const series = new Map(into.values.map((value) => [seriesKey(value), value]));
    for (const value of metric.values) {
      const same = series.get(seriesKey(value));
      if (same) same.value += value.value;
      else into.values.push({ ...value });
    }
  }
  return [...merged.values()];
}

/** A histogram's _bucket, _sum and _count share the metric's name: metricName and labels tell a series. */
function seriesKey(value: WorkerMetric['values'][number]): string {
  const labels = Object.keys(value.labels).sort().map((name) => [name, value.labels[name]]);
  return JSON.stringify([value.metricName ?? '', labels]);
}

/**
 * A worker's failed start as the supervisor's own: its code gives the exit status (78 for a
 * configuration, 75 for a store out of reach), its message is the worker's, without the code
 * that describeError would put in front of it a second time.
 */
function workerStartError(message: string, code: ErrorCode | undefined): CalloutError {
  if (code === 'CONFIG_INVALID') return new ConfigError(message);
  if (code === undefined || code === 'INTERNAL') return new CalloutError('INTERNAL', `policy worker failed to start: ${message}`);
  return new CalloutError(code, message);
}

function exitOf(worker: Worker): Promise<void> {
  if (worker.isDead()) return Promise.resolve();
  return new Promise((resolve) => worker.once('exit', () => resolve()));
}

/**
 * A worker's failed start (its cause) that the supervisor has been told of: the supervisor says
 * it, once however many workers failed, and exits with its status. Said by each worker as well,
 * it came out twice or more, or once, as the supervisor's SIGKILL came before a worker's line.
 */
export class StartFailureTold extends CalloutError {
  constructor(failure: unknown) {
    // The cause's code, so that the worker exits with the status the supervisor's message has.
    super(failure instanceof CalloutError ? failure.code : 'INTERNAL', 'policy worker failed to start (told to the supervisor)', { cause: failure });
  }
}

/**
 * In a worker process: starts the Daemon in worker mode and reports to the supervisor. A start
 * that fails is reported too, and then rejects with StartFailureTold: the caller exits with the
 * status of its cause and leaves the message to the supervisor; or, when the report could not
 * be sent, with the failure itself. Install the SIGHUP and SIGTERM handlers before calling it:
 * the supervisor's stop() sends SIGTERM, and a SIGHUP sent to the worker by hand reloads it
 * (Daemon.reload(); its outcome is logged, not sent: it answers none of the supervisor's
 * reloads).
 */
export async function startPolicyWorker(options: Omit<DaemonOptions, 'worker'>): Promise<Daemon> {
  // Resolves with whether the message went out: a start failure not sent is the worker's to say.
  const send = (message: WorkerMessage): Promise<boolean> =>
    new Promise((resolve) => {
      if (!process.send) resolve(false);
      else process.send(message, (err: Error | null) => resolve(err === null));
    });
  let daemon: Daemon;
  try {
    // A replacement reads the file as a reload does: one an editor has just emptied would give it
    // the defaults, every stage off, beside workers that run the configured ones.
    daemon = await Daemon.start({
      ...options,
      worker: true,
      refuseEmptyConfig: process.env[REPLACEMENT_ENV] === '1',
    });
  } catch (err) {
    // Sent before the channel closes, so the supervisor can say why.
    const told = await send(err instanceof CalloutError ? { type: 'callout:failed', message: err.message, code: err.code } : { type: 'callout:failed', message: describeError(err) });
    throw told ? new StartFailureTold(err) : err;
  }
  process.on('message', (received: unknown) => {
    const message = readSupervisorMessage(received);
    if (message?.type === 'callout:health?') {
      void daemon.healthy().then((healthy) => send({ type: 'callout:health', id: message.id, healthy }));
    } else if (message?.type === 'callout:metrics?') {
      void daemon.metricsRegistry.getMetricsAsJSON().then(
        (metrics) => send({ type: 'callout:metrics', id: message.id, metrics: metrics as unknown as WorkerMetric[] }),
        (err: unknown) => send({ type: 'callout:metrics', id: message.id, error: describeError(err) }),
      );
    } else if (message?.type === 'callout:reload') {
      // A reload ignored while stopping has no outcome: the worker is about to exit.
      void daemon.reloadOutcome().then(
        (outcome) => outcome && send({ type: 'callout:reloaded', seq: message.seq, ...outcome }),
        (err: unknown) => options.log.error({ err: describeError(err) }, 'reload failed'),
      );
    }
  });
  // Asked before now, a reload waits in the supervisor until this says the worker is ready.
  await send({ type: 'callout:ready', policy: daemon.policyAddress, config: daemon.configDigest, restart: daemon.restartDigest });
  return daemon;
}
