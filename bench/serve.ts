/**
 * NAME
 *   bench/serve - services under measurement as child processes: `callout serve` from the build
 *
 * DESCRIPTION
 *   startServe(args) runs `node dist/src/cli/main.js serve ARGS`, as production runs it
 *   (builtCli refuses a build older than any file under src/: it would measure old code), or
 *   with from: 'source' `node --import tsx src/cli/main.ts serve ARGS` (for tests of the tree as
 *   it is), with its log on stdout going to /dev/null, and resolves once it accepts connections
 *   on the given port. Its cpuSeconds() is the CPU of the whole process tree, so a supervisor and its policy
 *   workers count together.
 *   CALLOUT_BENCH_SERVE_NODE_ARGS adds Node.js flags to that command, e.g. to profile the server
 *   under a benchmark's load: "--cpu-prof --cpu-prof-dir=/tmp/prof" (a profile per process, written
 *   when it exits).
 *   The helpers under it serve every benchmark that runs a server of its own (postgrey too):
 *   waitForPort, stopChild (SIGTERM, SIGKILL after 5 s), CPU seconds from /proc/PID/stat, and
 *   tmpfsDir for a peer's database where its per-write fdatasync costs nothing.
 */

import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync, statfsSync, statSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const CONNECT_WAIT_MS = 15_000;
const CLOCK_TICKS_PER_SECOND = 100;

/** dist/src/cli/main.js, which production runs; refused when a file under src/ is newer. */
export function builtCli(): string {
  const root = fileURLToPath(new URL('..', import.meta.url));
  const cli = join(root, 'dist', 'src', 'cli', 'main.js');
  const builtAt = statSync(cli, { throwIfNoEntry: false })?.mtimeMs;
  const advice = 'run `npm run build` first (`npm run bench` does)';
  if (builtAt === undefined) throw new Error(`${cli} is missing: ${advice}`);
  const source = join(root, 'src');
  for (const name of readdirSync(source, { recursive: true, encoding: 'utf8' })) {
    if (statSync(join(source, name)).mtimeMs > builtAt) throw new Error(`src/${name} is newer than ${cli}: ${advice}`);
  }
  return cli;
}

function connects(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

export async function waitForPort(port: number, child: ChildProcess, what: string): Promise<void> {
  const deadline = Date.now() + CONNECT_WAIT_MS;
  while (!(await connects(port))) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}) before listening`);
    if (Date.now() > deadline) throw new Error(`${what} did not listen on 127.0.0.1:${port} within ${CONNECT_WAIT_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

export function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const killer = setTimeout(() => child.kill('SIGKILL'), 5_000);
    child.once('exit', () => {
      clearTimeout(killer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** Fields 3 onwards of /proc/PID/stat (proc(5)), after the command name; undefined once it is gone. */
export function statFields(pid: number | string): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** user + system CPU seconds of a live process; 0 once it is gone. */
export function processCpuSeconds(pid: number | undefined): number {
  // utime and stime are fields 14 and 15.
  const fields = pid === undefined ? undefined : statFields(pid);
  return fields ? (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND : 0;
}

/** Process ids of pid's children (from /proc: every process's stat names its parent, field 4). */
function childPids(pid: number): number[] {
  return readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name) && Number(statFields(name)?.[1]) === pid)
    .map(Number);
}

export interface ServeChild {
  child: ChildProcess;
  /** CPU seconds of the process and its children (policy workers). */
  cpuSeconds(): number;
  stop(): Promise<void>;
}

/** `callout serve ARGS` from the build (or the source), ready once 127.0.0.1:port accepts connections. */
export async function startServe(args: readonly string[], port: number, what: string, from: 'build' | 'source' = 'build'): Promise<ServeChild> {
  const program = from === 'build' ? [builtCli()] : ['--import', 'tsx', fileURLToPath(new URL('../src/cli/main.ts', import.meta.url))];
  const devNull = openSync('/dev/null', 'w');
  const nodeFlags = process.env.CALLOUT_BENCH_SERVE_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
  const child = spawn(process.execPath, [...nodeFlags, ...program, 'serve', ...args], { stdio: ['ignore', devNull, 'inherit'] });
  closeSync(devNull);
  try {
    await waitForPort(port, child, what);
  } catch (err) {
    await stopChild(child);
    throw err;
  }
  const tree = (): number[] => (child.pid === undefined ? [] : [child.pid, ...childPids(child.pid)]);
  return {
    child,
    cpuSeconds: () => tree().reduce((sum, pid) => sum + processCpuSeconds(pid), 0),
    stop: () => stopChild(child),
  };
}

/** statfs(2) f_type of a tmpfs. */
const TMPFS_MAGIC = 0x01021994;

/**
 * /dev/shm when it is a tmpfs, where fdatasync costs nothing: for the calibration rows of a peer
 * (postgrey) whose database syncs every write while callout's store does not.
 */
export function tmpfsDir(): string | undefined {
  try {
    return statfsSync('/dev/shm').type === TMPFS_MAGIC ? '/dev/shm' : undefined;
  } catch {
    return undefined;
  }
}
