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
 *   clients before stop().
 *
 * LIMITS
 *   Needs /usr/sbin/postsrsd (Debian package postsrsd, installed by .ci/run) and, for `at`,
 *   faketime. Unavailability is returned as a reason so a test can skip with it.
 *
 * ERRORS
 *   Rejects with Error (a test fault) when postsrsd exits or its ports do not open in time.
 */

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
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
      if (!exited) {
        const gone = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await gone;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
