/**
 * NAME
 *   cli/serve - `callout serve`: run the Postfix policy service
 *
 * SYNOPSIS
 *   callout serve [--config FILE] [--listen HOST:PORT|PATH] [--data-dir DIR] [engine options]
 *
 * DESCRIPTION
 *   Starts with sane defaults and no configuration file: policy listener on 127.0.0.1:10040,
 *   SQLite store under the data directory (/var/lib/callout), metrics on 127.0.0.1:10041, JSON
 *   logs on stdout. What it creates (the data directory, the store's files, a metrics socket) is
 *   kept from other users: 027 is added to the umask (core/files withholdFromOthers) before
 *   anything is made, worker processes inherit it. Flags override the file. SIGHUP reloads
 *   the file; SIGTERM and SIGINT drain and exit; SIGUSR1 is logged and ignored (not Node's
 *   inspector).
 *   Under systemd (NOTIFY_SOCKET set: Type=notify) it says READY=1 once every listener is bound
 *   and the signal handlers are in place, with policy.workers once every worker is ready
 *   (cli/sd-notify); the workers are not given NOTIFY_SOCKET.
 *   With policy.workers (--workers) above 1 this process supervises that many worker
 *   processes (policy/workers), each of which runs this same command as a policy worker;
 *   their log lines carry a `worker` field.
 */

import cluster from 'node:cluster';
import type { Command } from 'commander';
import { withholdFromOthers } from '../core/files.js';
import { createLogger } from '../core/log.js';
import type { Logger } from '../core/log.js';
import { describeError } from '../core/errors.js';
import { loadConfig } from '../config/load.js';
import type { RawConfig } from '../config/load.js';
import { Daemon, prepareSharedStore, workerShareExcess } from '../policy/daemon.js';
import { StartFailureTold, Supervisor, startPolicyWorker } from '../policy/workers.js';
import { IDLE_POLL_MICROSECONDS, SERVICE_CACHE_DEFAULT, addEngineOptions, engineOverrides, flagOf, numberFlag, unitFlag } from './options.js';
import type { EngineFlags } from './options.js';
import { ignoreInspectorSignal, reloadingCommand, takeStartupReloads } from './signals.js';
import { notifyReady, takeNotifySocket } from './sd-notify.js';
import { unusedDataDir } from './runtime.js';
import { exitCodeFor } from './exit-status.js';

interface ServeFlags extends EngineFlags {
  listen?: string;
  dataDir?: string;
  metrics?: string;
  workers?: string;
  idlePoll?: string;
}

export function serveOverrides(flags: ServeFlags): RawConfig {
  const overrides = engineOverrides(flags);
  const policy: Record<string, unknown> = {};
  if (flags.listen !== undefined) policy.listen = flags.listen;
  if (flags.workers !== undefined) policy.workers = numberFlag('--workers', flags.workers);
  if (flags.idlePoll !== undefined) policy.idlePollMicros = unitFlag('--idle-poll', flags.idlePoll, IDLE_POLL_MICROSECONDS);
  if (Object.keys(policy).length > 0) overrides.policy = policy;
  if (flags.dataDir !== undefined) overrides.dataDir = flags.dataDir;
  if (flags.metrics !== undefined) overrides.metrics = { listen: flags.metrics };
  return overrides;
}

/** Registers `serve`, which takes the SIGHUPs cli/main held (cli/signals reloadingCommand). */
export function registerServeCommand(program: Command): void {
  reloadingCommand(addEngineOptions(
    program
      .command('serve')
      .description('run the Postfix policy service (check_policy_service)')
      .option('--listen <address>', 'policy listener: HOST:PORT, [IPv6]:PORT or a UNIX socket path (default 127.0.0.1:10040)')
      .option('--data-dir <dir>', 'directory of the SQLite store (default /var/lib/callout)')
      .option('--metrics <address>', 'metrics and health listener, "" to disable (default 127.0.0.1:10041)')
      .option('--workers <n>', 'policy worker processes sharing the listener and the store (default 1)')
      .option('--idle-poll <micros>', 'after answering, poll this many microseconds for the next request before sleeping (adaptive; 0: off; default 200, 0 on a one-CPU machine)'),
    SERVICE_CACHE_DEFAULT,
  ).action(async (flags: ServeFlags) => {
    withholdFromOthers();
    // Taken out of the environment before any worker is forked: it would inherit it.
    const notifySocket = takeNotifySocket();
    const overrides = serveOverrides(flags);
    const config = loadConfig(flags.config, overrides, {}, { flagOf });
    // Logged, not refused: a service that started with it before must start after an upgrade.
    // The supervisor logs it, not each of its workers.
    const unused = unusedDataDir(config, flags);
    const warnOfUnusedFlags = (log: Logger) => {
      if (unused !== undefined) log.warn({ flag: '--data-dir' }, unused);
    };
    const daemonOptions = { ...(flags.config ? { configPath: flags.config } : {}), overrides };
    if (cluster.isWorker) {
      const log = createLogger(config.log.level).child({ worker: cluster.worker?.id });
      try {
        await serveUntilStopped(log, startPolicyWorker({ ...daemonOptions, log }), (daemon) => void daemon.reload(), (daemon) => daemon.stop());
      } catch (err) {
        if (!(err instanceof StartFailureTold)) throw err;
        process.exitCode = exitCodeFor(err);
      } finally {
        // The channel to the supervisor would keep the process alive after the daemon is gone.
        // The worker's own disconnect, not process.disconnect(): that one makes cluster exit 0
        // at once, hiding the exit code of a worker that failed to start.
        cluster.worker?.disconnect();
      }
      exitStopped();
    } else if (config.policy.workers > 1) {
      const log = createLogger(config.log.level);
      warnOfUnusedFlags(log);
      for (const line of workerShareExcess(config)) log.warn({}, line);
      const started = prepareSharedStore(config, log).then(() =>
        Supervisor.start({ workers: config.policy.workers, listen: config.policy.listen, metricsListen: config.metrics.listen, metricsSocketMode: parseInt(config.metrics.socketMode, 8), log }),
      );
      await serveUntilStopped(log, started, (supervisor) => supervisor.reload(), (supervisor) => supervisor.stop(), (supervisor) =>
        notifyReady(notifySocket, `${listeningStatus(supervisor)}, ${config.policy.workers} policy workers`, log),
      );
      exitStopped();
    } else {
      const log = createLogger(config.log.level);
      warnOfUnusedFlags(log);
      await serveUntilStopped(log, Daemon.start({ ...daemonOptions, log }), (daemon) => void daemon.reload(), (daemon) => daemon.stop(), (daemon) =>
        notifyReady(notifySocket, listeningStatus(daemon), log),
      );
      exitStopped();
    }
  }));
}

/** The STATUS= systemd shows (`systemctl status callout`). */
function listeningStatus(service: { policyAddress: string; metricsAddress: string }): string {
  return `listening: policy ${service.policyAddress}, metrics ${service.metricsAddress || 'off'}`;
}

/**
 * Ends the process once the daemon has stopped. The callouts it gave up (locks released,
 * answers not cached) still hold SMTP sockets, which would keep the process alive until their
 * own timeouts, up to 30 s more: past an init system's stop timeout, and "stopped" in the log
 * would not be the end. Pending log lines are written at 'exit' (core/log).
 */
function exitStopped(): never {
  process.exit(process.exitCode ?? 0);
}

/**
 * Waits for `started`, tells `ready` (once: not again on a reload), then serves until SIGTERM or
 * SIGINT has stopped it; SIGHUP reloads. The
 * handlers are in place while it starts (opening the store can take seconds: a schema upgrade,
 * Redis out of reach): a signal's default action would end the process there, and systemd
 * counts a death by SIGHUP (`systemctl reload`) or SIGTERM as a clean exit, which
 * Restart=on-failure does not restart. A policy worker is signalled by its supervisor as soon
 * as it says it is ready. A signal that comes during the start acts once it is done.
 */
async function serveUntilStopped<T>(
  log: Logger,
  started: Promise<T>,
  reload: (service: T) => void,
  stop: (service: T) => Promise<void>,
  ready: (service: T) => Promise<void> = () => Promise.resolve(),
): Promise<void> {
  // A start that fails is the caller's to report (the await below); a signal then has nothing to act on.
  const stopped = untilStopped(
    log,
    () => void started.then(reload, () => undefined),
    () => started.then(stop, () => undefined),
  );
  // The handlers are in place and every listener is bound: systemd may now send ExecReload's
  // SIGHUP and start Postfix. Not awaited: serving does not wait on systemd-notify.
  void ready(await started);
  await stopped;
}

/**
 * SIGHUP reloads; SIGTERM or SIGINT stops, and then the promise resolves; SIGUSR1 is logged
 * and ignored. Whether a SIGHUP
 * reloads is the daemon's or the supervisor's to say (one that comes while they stop does not):
 * this line only says that it came. One that came while Node loaded the program (cli/signals
 * holdStartupReloads) came before the configuration was read: the start is its reload.
 */
function untilStopped(log: Logger, reload: () => void, stop: () => Promise<void>): Promise<void> {
  return new Promise<void>((resolve) => {
    process.on('SIGHUP', () => {
      log.info({}, 'SIGHUP received');
      reload();
    });
    const early = takeStartupReloads();
    if (early > 0) log.info({ signals: early }, 'SIGHUP received while the program loaded, before the configuration was read: the start reads it as it is now');
    ignoreInspectorSignal(log, 'SIGUSR1 ignored: callout serve takes SIGHUP (reload) and SIGTERM (stop); its log goes to stdout, there is no file to reopen');
    let stopping = false;
    const shutDown = (signal: string) => {
      // A second signal while draining (an impatient init, Ctrl-C twice) must not kill the
      // process halfway through: the drain is bounded anyway.
      if (stopping) {
        log.info({ signal }, 'already shutting down');
        return;
      }
      stopping = true;
      log.info({ signal }, 'shutting down');
      stop().then(resolve, (err: unknown) => {
        log.error({ err: describeError(err) }, 'shutdown failed');
        resolve();
      });
    };
    process.on('SIGTERM', () => shutDown('SIGTERM'));
    process.on('SIGINT', () => shutDown('SIGINT'));
  });
}
