/**
 * NAME
 *   test/support/postsrsd - Debian's postsrsd 1.x in the foreground on loopback, for interop tests
 *
 * DESCRIPTION
 *   startPostsrsd() writes the secret to a fresh temporary directory and runs
 *   `postsrsd -s SECRET -d DOMAIN -l 127.0.0.1 -4 -f FWD -r REV -p PIDFILE` (without -D it stays
 *   in the foreground; no -u/-c, so no privilege drop or chroot), optionally under faketime at a
 *   fixed instant, and resolves once both tcp_table ports accept connections. postsrsd forks one
 *   child per connection; the children exit when their connection closes, so callers close their
 *   clients before stop(). stop() signals the daemon by the pid it wrote (-p), because under
 *   faketime the spawned process is only faketime's wrapper.
 *
 * LIMITS
 *   Needs /usr/sbin/postsrsd (Debian package postsrsd, installed by .ci/run) and, for `at`,
 *   faketime. Unavailability is returned as a reason so a test can skip with it.
 *
 * ERRORS
 *   Rejects with Error (a test fault) when postsrsd exits or its ports do not open in time.
 */

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { faketimeStamp } from './exim.js';

export const POSTSRSD = '/usr/sbin/postsrsd';

export interface PostsrsdOptions {
  secrets: string[];
  domain: string;
  forwardPort: number;
  reversePort: number;
  /** Run under faketime, frozen at this instant. */
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
  if (needFaketime && spawnSync('sh', ['-c', 'command -v faketime']).status !== 0) return 'faketime not found (run .ci/run)';
  return undefined;
}

/** Alive and not a zombie (orphans are reaped by init only now and then). */
function running(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
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

export async function startPostsrsd(options: PostsrsdOptions): Promise<Postsrsd> {
  const dir = mkdtempSync(join(tmpdir(), 'callout-postsrsd-'));
  const secretFile = join(dir, 'secret');
  writeFileSync(secretFile, options.secrets.map((s) => `${s}\n`).join(''), { mode: 0o600 });
  const args = ['-s', secretFile, '-d', options.domain, '-l', '127.0.0.1', '-4', '-f', String(options.forwardPort), '-r', String(options.reversePort), '-p', join(dir, 'pid'), '-t', '60'];
  if (options.separator) args.push('-a', options.separator);
  const child: ChildProcess = options.at
    ? spawn('faketime', [faketimeStamp(options.at), POSTSRSD, ...args], { stdio: ['ignore', 'ignore', 'pipe'] })
    : spawn(POSTSRSD, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  let exited = false;
  child.once('exit', () => (exited = true));
  const deadline = Date.now() + 10_000;
  while (!(await portOpen(options.forwardPort)) || !(await portOpen(options.reversePort))) {
    if (exited || Date.now() > deadline) {
      child.kill('SIGKILL');
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
      // Under faketime the child is faketime's wrapper, which exits on SIGTERM without passing
      // it on; the daemon's own pid (from -p) is what must be stopped.
      const daemonPid = Number(readFileSync(join(dir, 'pid'), 'utf8').trim());
      if (Number.isInteger(daemonPid) && daemonPid > 0 && running(daemonPid)) {
        process.kill(daemonPid, 'SIGTERM');
        const deadline = Date.now() + 5000;
        while (running(daemonPid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
        if (running(daemonPid)) process.kill(daemonPid, 'SIGKILL');
      }
      if (!exited) {
        const gone = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await gone;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
