/**
 * NAME
 *   cli/sd-notify - tell systemd that `callout serve` is ready (Type=notify)
 *
 * SYNOPSIS
 *   const socket = takeNotifySocket();   // before any child process is started
 *   ...every listener bound, the signal handlers in place...
 *   await notifyReady(socket, 'listening: policy 127.0.0.1:10040, metrics 127.0.0.1:10041', log);
 *
 * DESCRIPTION
 *   systemd's readiness protocol (sd_notify(3); systemd.service(5), Type=notify): the manager
 *   names an AF_UNIX datagram socket in NOTIFY_SOCKET and counts the service started only once
 *   a READY=1 datagram comes. Until then a reload job (`systemctl reload` right after `start`)
 *   waits, and so do the units ordered after it (Postfix, Before=postfix.service). A SIGHUP
 *   that ExecReload sent earlier could reach a process that has not installed its handler yet
 *   (Node compiles the whole module graph first), and end it: a death systemd counts as clean,
 *   so Restart=on-failure would not bring it back.
 *
 *   Node has no AF_UNIX datagram socket, so the datagram is sent by systemd-notify(1) (Debian's
 *   package systemd), run as `systemd-notify --ready --status=TEXT`. From systemd 246 on it
 *   also waits until the manager has read the message (BARRIER=1: a pipe the manager closes),
 *   so that the message is not read after its sender has exited, when it could no longer be
 *   attributed to the unit. The sender is that child, not the main process: the unit needs
 *   NotifyAccess=all.
 *
 *   takeNotifySocket() reads NOTIFY_SOCKET and removes it from the environment, as sd_notify(3)
 *   does with unset_environment: the policy workers inherit the environment, and one that
 *   notified would speak for the whole service before the others were ready. notifyReady()
 *   does nothing without a socket. `callout serve` calls it once in the life of the process, and
 *   not on a reload (no RELOADING=1): with Type=notify, as with Type=simple, a reload job ends
 *   when ExecReload's kill has sent the signal.
 *
 * ERRORS
 *   systemd-notify is looked up on PATH, then at /usr/bin/systemd-notify (a drop-in's
 *   Environment=PATH= may leave /usr/bin out). One that fails or has not finished within
 *   NOTIFY_WAIT_MS (then killed) is run again, NOTIFY_ATTEMPTS times in all, NOTIFY_RETRY_MS
 *   apart, each failure tried again logged as a warning (one not found is not tried again): systemd-notify 252 gives up its barrier wait after
 *   5 s (a manager busy at boot), and a READY=1 the manager reads after its sender has exited
 *   cannot be attributed to the unit and is dropped. A second READY=1 once the first counted
 *   is harmless. When every attempt failed, an error naming the command says that systemd may
 *   not have been told: it then fails the start after TimeoutStartSec and stops the service,
 *   so a unit without systemd-notify must not be Type=notify. Serving goes on meanwhile.
 */

import { spawn } from 'node:child_process';
import { systemTimers } from '../core/clock.js';
import type { Timers } from '../core/clock.js';
import { describeFileError } from '../core/errors.js';
import type { Logger } from '../core/log.js';

export const NOTIFY_COMMAND = 'systemd-notify';
/** Where Debian's package systemd puts it, for a PATH that lacks /usr/bin. */
const NOTIFY_COMMAND_PATH = '/usr/bin/systemd-notify';
/** Longer than systemd-notify's own wait for the manager to read the message (5 s). */
const NOTIFY_WAIT_MS = 10_000;
const NOTIFY_ATTEMPTS = 3;
const NOTIFY_RETRY_MS = 2_000;
/** What of systemd-notify's stderr goes into the log line: it says why in one line. */
const STDERR_KEPT = 1_000;

export interface CommandOutcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
}

/** Runs a command to its end; rejects when it cannot be started, or is aborted (then killed). */
export type RunCommand = (command: string, args: string[], env: NodeJS.ProcessEnv, abort: AbortSignal) => Promise<CommandOutcome>;

export interface NotifyOptions {
  run?: RunCommand;
  timers?: Timers;
  /** The environment systemd-notify is given, NOTIFY_SOCKET put back in it; process.env by default. */
  env?: NodeJS.ProcessEnv;
}

/** The socket systemd named, if any, taken out of `env` so that no child inherits it. */
export function takeNotifySocket(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const socket = env.NOTIFY_SOCKET;
  delete env.NOTIFY_SOCKET;
  return socket === '' ? undefined : socket;
}

/** spawn(), its stdout ignored (the daemon's own stdout is its log) and its stderr kept. */
export const runCommand: RunCommand = (command, args, env, abort) =>
  new Promise((resolve, reject) => {
    const child = spawn(command, args, { env, signal: abort, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr = (stderr + chunk).slice(0, STDERR_KEPT)));
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal, stderr: stderr.trim() }));
  });

/** Sends READY=1 with STATUS=status through systemd-notify, when systemd gave a socket; never rejects. */
export async function notifyReady(socket: string | undefined, status: string, log: Logger, options: NotifyOptions = {}): Promise<void> {
  if (socket === undefined) return;
  const { run = runCommand, timers = systemTimers, env = process.env } = options;
  const args = ['--ready', `--status=${status}`];
  const childEnv = { ...env, NOTIFY_SOCKET: socket };
  let command = NOTIFY_COMMAND;
  let failure = '';
  let tries = NOTIFY_ATTEMPTS;
  for (let attempt = 1; attempt <= NOTIFY_ATTEMPTS; attempt++) {
    if (attempt > 1) {
      log.warn({ command: [command, ...args], notifySocket: socket, attempt: attempt - 1 }, `${command} --ready failed: ${failure}; trying again in ${NOTIFY_RETRY_MS} ms`);
      await new Promise<void>((resolve) => timers.setTimeout(resolve, NOTIFY_RETRY_MS));
    }
    let outcome = await runBounded(run, command, args, childEnv, timers);
    if (outcome.missing && command === NOTIFY_COMMAND) {
      command = NOTIFY_COMMAND_PATH;
      outcome = await runBounded(run, command, args, childEnv, timers);
    }
    if (outcome.failure === undefined) {
      log.info({ notifySocket: socket, status }, 'told systemd that callout serve is ready');
      return;
    }
    failure = outcome.failure;
    // Not installed: trying again finds nothing more, and only delays the error.
    if (outcome.missing) {
      tries = attempt;
      break;
    }
  }
  log.error(
    { command: [command, ...args], notifySocket: socket, attempts: tries },
    `${command} --ready failed${tries === 1 ? '' : ` ${tries} times, the last`}: ${failure}; systemd may not have been told that callout serve is ready, and a unit of ` +
      `Type=notify is stopped after TimeoutStartSec: install ${NOTIFY_COMMAND} (Debian package systemd), or make the unit Type=simple (a drop-in); serving goes on`,
  );
}

/** One run of systemd-notify within NOTIFY_WAIT_MS: what went wrong, if anything, and whether the command was not found. */
async function runBounded(run: RunCommand, command: string, args: string[], env: NodeJS.ProcessEnv, timers: Timers): Promise<{ failure?: string; missing: boolean }> {
  const abort = new AbortController();
  const timer = timers.setTimeout(() => abort.abort(), NOTIFY_WAIT_MS);
  try {
    const outcome = await run(command, args, env, abort.signal);
    if (outcome.code === 0) return { missing: false };
    return { failure: `${outcome.signal ? `killed by ${outcome.signal}` : `exit status ${outcome.code}`}${outcome.stderr ? `: ${outcome.stderr}` : ''}`, missing: false };
  } catch (err) {
    if (abort.signal.aborted) return { failure: `not finished within ${NOTIFY_WAIT_MS} ms, killed`, missing: false };
    return { failure: `could not be run: ${describeFileError(err)}`, missing: (err as NodeJS.ErrnoException).code === 'ENOENT' };
  } finally {
    timers.clearTimeout(timer);
  }
}
