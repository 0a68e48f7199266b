/**
 * NAME
 *   test/support/postsrsd - Debian's postsrsd 1.x in the foreground on loopback, for interop tests
 *
 * DESCRIPTION
 *   startPostsrsd() writes the secret to a fresh temporary directory and runs
 *   `postsrsd -s SECRET -d DOMAIN -l 127.0.0.1 -4 -f FWD -r REV` (without -D it stays
 *   in the foreground; no -u/-c, so no privilege drop or chroot), optionally with its clock
 *   started at a fixed instant (test/support/faketime), and resolves once both tcp_table ports
 *   accept connections. postsrsd forks one child per connection; the children exit when their
 *   connection closes, so callers close their clients before stop(). A port already answering
 *   (a leftover postsrsd) is refused; an exit hook (test/support/exit-hooks) kills whatever
 *   instance is still running when the test process ends, even by a signal.
 *
 * LIMITS
 *   Needs /usr/sbin/postsrsd (Debian package postsrsd, installed by .ci/run) and, for `at`,
 *   libfaketime. Unavailability is returned as a reason so a test can skip with it.
 *
 * ERRORS
 *   Rejects with Error (a test fault) when postsrsd exits or its ports do not open in time.
 */

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { onExit } from './exit-hooks.js';
import { fakeTimeEnv, libfakeTime } from './faketime.js';

export const POSTSRSD = '/usr/sbin/postsrsd';

export interface PostsrsdOptions {
  secrets: string[];
  domain: string;
  forwardPort: number;
  reversePort: number;
  /** Start postsrsd's clock at this instant. */
  at?: Date;
  separator?: '=' | '+' | '-';
}

export interface Postsrsd {
  forward: { host: string; port: number };
  reverse: { host: string; port: number };
  version: string;
  stop(): Promise<void>;
}

export function postsrsdUnavailable(needFaketime: boolean): string | undefined {
  if (!existsSync(POSTSRSD)) return `${POSTSRSD} not found (run .ci/run to install Debian's postsrsd)`;
  if (needFaketime && libfakeTime() === undefined) return 'libfaketime not installed (run .ci/run to install faketime on Debian)';
  return undefined;
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** Instances not yet stopped (even if exited), with their directories: killed and removed when the test process ends. */
const running = new Map<ChildProcess, string>();
onExit(() => {
  for (const [child, dir] of running) {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

export async function startPostsrsd(options: PostsrsdOptions): Promise<Postsrsd> {
  // The ports are fixed: a leftover postsrsd on them would answer for the new one, which could
  // not bind and would exit unnoticed.
  for (const port of [options.forwardPort, options.reversePort]) {
    if (await portOpen(port)) throw new Error(`postsrsd: 127.0.0.1:${port} is already in use; a leftover postsrsd?`);
  }
  const dir = mkdtempSync(join(tmpdir(), 'callout-postsrsd-'));
  const secretFile = join(dir, 'secret');
  writeFileSync(secretFile, options.secrets.map((s) => `${s}\n`).join(''), { mode: 0o600 });
  const args = ['-s', secretFile, '-d', options.domain, '-l', '127.0.0.1', '-4', '-f', String(options.forwardPort), '-r', String(options.reversePort), '-t', '60'];
  if (options.separator) args.push('-a', options.separator);
  const library = options.at ? libfakeTime() : undefined;
  if (options.at && library === undefined) throw new Error('libfaketime not installed (run .ci/run to install faketime on Debian)');
  const env = options.at && library ? fakeTimeEnv(options.at, library) : process.env;
  const child: ChildProcess = spawn(POSTSRSD, args, { stdio: ['ignore', 'ignore', 'pipe'], env });
  running.set(child, dir);
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  let exited = false;
  child.once('exit', () => (exited = true));
  const deadline = Date.now() + 10_000;
  while (!(await portOpen(options.forwardPort)) || !(await portOpen(options.reversePort))) {
    if (exited || Date.now() > deadline) {
      child.kill('SIGKILL');
      running.delete(child);
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`postsrsd did not start: ${stderr.trim() || 'ports not open'}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const versionRun = spawnSync('dpkg-query', ['-W', '-f=${Version}', 'postsrsd'], { encoding: 'utf8' });
  return {
    forward: { host: '127.0.0.1', port: options.forwardPort },
    reverse: { host: '127.0.0.1', port: options.reversePort },
    version: versionRun.status === 0 ? `postsrsd ${versionRun.stdout}` : 'postsrsd',
    async stop() {
      if (!exited) {
        const gone = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        const stubborn = setTimeout(() => child.kill('SIGKILL'), 5000);
        await gone;
        clearTimeout(stubborn);
      }
      running.delete(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
