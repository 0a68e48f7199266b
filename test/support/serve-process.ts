/**
 * NAME
 *   test/support/serve-process - `callout serve` as a child process, its JSON log collected
 *
 * DESCRIPTION
 *   startServeProcess(args) runs `node --import tsx src/cli/main.ts serve ARGS` from the
 *   repository root and resolves once the log shows the line that says it is listening (by
 *   default "callout serve started"; with policy workers the supervisor's "policy workers
 *   started"), whose policy and metrics fields give the addresses. waitForLog() waits for a
 *   line from a given index on, so a test can mark the log before it acts. options.env replaces
 *   the child's environment (NOTIFY_SOCKET, a PATH with a stand-in program). The child runs in a
 *   process group of its own, which an exit hook (test/support/exit-hooks) kills if the test
 *   process ends, even by a signal, before the child did.
 */

import { spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { onExit } from './exit-hooks.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const START_WAIT_MS = 30_000;
const LOG_WAIT_MS = 10_000;
const STOP_WAIT_MS = 30_000;

function killGroup(child: ChildProcessWithoutNullStreams): void {
  try {
    if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/** Children not yet closed: a group of its own outlives the test process unless killed. */
const live = new Set<ChildProcessWithoutNullStreams>();
onExit(() => {
  for (const child of live) killGroup(child);
});

export type LogLine = Record<string, unknown>;

export interface ServeProcess {
  child: ChildProcessWithoutNullStreams;
  logs: LogLine[];
  stderr(): string;
  policyAddress: string;
  metricsAddress: string;
  waitForLog(predicate: (line: LogLine) => boolean, what: string, from?: number, waitMs?: number): Promise<LogLine>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /**
   * Sends `signal` and waits up to waitMs for the exit; past that the whole process group is
   * killed and the promise rejects, so a stuck daemon fails a test instead of hanging it.
   */
  stop(signal?: NodeJS.Signals, waitMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export async function startServeProcess(
  args: string[],
  started: (line: LogLine) => boolean = (l) => l.msg === 'callout serve started',
  options: { env?: NodeJS.ProcessEnv } = {},
): Promise<ServeProcess> {
  // A process group of its own, so that a test can end the whole tree (policy workers too).
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve', ...args], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'], detached: true, ...(options.env ? { env: options.env } : {}) });
  live.add(child);
  const logs: LogLine[] = [];
  const waiters = new Set<() => void>();
  let pending = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    pending += chunk;
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines.filter(Boolean)) logs.push(JSON.parse(line) as LogLine);
    for (const wake of waiters) wake();
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    // 'close', not 'exit': by then everything the child wrote to stdout has been read.
    child.once('close', (code, signal) => {
      live.delete(child);
      resolve({ code, signal });
      for (const wake of waiters) wake();
    });
  });
  let exitedYet = false;
  void exited.then(() => (exitedYet = true));

  const waitForLog = (predicate: (line: LogLine) => boolean, what: string, from = 0, waitMs = LOG_WAIT_MS): Promise<LogLine> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        const found = logs.slice(from).find(predicate);
        if (found || exitedYet) {
          waiters.delete(check);
          clearTimeout(timer);
          if (found) resolve(found);
          else reject(new Error(`callout serve exited before logging ${what}; stderr: ${stderr}`));
        }
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`callout serve did not log ${what} within ${waitMs} ms; stderr: ${stderr}; logs: ${JSON.stringify(logs.slice(-5))}`));
      }, waitMs);
      waiters.add(check);
      check();
    });

  const stop = async (signal: NodeJS.Signals = 'SIGTERM', waitMs = STOP_WAIT_MS): Promise<{ code: number | null; signal: NodeJS.Signals | null }> => {
    if (!exitedYet) child.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([exited, new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), waitMs)))]);
    clearTimeout(timer);
    if (outcome !== 'timeout') return outcome;
    killGroup(child);
    await exited;
    throw new Error(`callout serve did not exit within ${waitMs} ms of ${signal}; killed; stderr: ${stderr}; logs: ${JSON.stringify(logs.slice(-5))}`);
  };

  let ready: LogLine;
  try {
    ready = await waitForLog(started, 'that it listens', 0, START_WAIT_MS);
  } catch (err) {
    killGroup(child);
    throw err;
  }
  return {
    stop,
    child,
    logs,
    stderr: () => stderr,
    policyAddress: String(ready.policy),
    metricsAddress: String(ready.metrics),
    waitForLog,
    exited,
  };
}
