/**
 * NAME
 *   test/support/exim - Debian's real Exim 4, unpacked (never installed), for `exim4 -be` expansions
 *
 * DESCRIPTION
 *   Debian's exim4 and postfix packages conflict, and the end-to-end suite needs Postfix, so
 *   fetchExim() (run by .ci/run as `node --import tsx test/support/exim.ts`: the tests themselves
 *   never leave the machine) fetches the .debs with `apt-get download` into a cache directory
 *   under the system temporary directory and unpacks them with `dpkg-deb -x`: exim4-daemon-light (the
 *   binary), libidn12 and libnss-wrapper. Its other libraries must be installed: a Postfix
 *   machine lacks libgnutls-dane0, which .ci/run installs. The root of the tests runs that
 *   binary, so a cache directory that is not the caller's own, or that others may write, is
 *   refused rather than trusted. Exim refuses to start unless its compiled-in user Debian-exim
 *   exists and is not root; instead of adding a user to the machine, nss_wrapper (LD_PRELOAD)
 *   shows Exim a private passwd file naming Debian-exim as uid 65534. The configuration is one
 *   line, primary_hostname: without it Exim looks its host name up in DNS at every start (the
 *   machine's resolver, off loopback). That is all `-be` (expansion test mode) needs: no daemon,
 *   no spool, no network.
 *
 *   expand(expression, at) runs one expansion; with `at`, under libfaketime at that instant
 *   (UTC, test/support/faketime), so day-dependent items such as ${prvs} see that day.
 *
 * LIMITS
 *   fetchExim() needs apt-get and dpkg-deb (Debian) and the package mirror; prepareExim() the
 *   filled cache and the faketime package. Unavailability is returned as a reason so a test can
 *   skip with it.
 *
 * ERRORS
 *   expand() throws Error (a test fault) when Exim exits non-zero, with its stderr.
 */

import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { fakeTimeEnv, libfakeTime } from './faketime.js';

export interface Exim {
  /** Exim's version line, e.g. "Exim version 4.96 #2 built ...". */
  version: string;
  expand(expression: string, at?: Date): string;
}

const PACKAGES = ['exim4-daemon-light', 'libidn12', 'libnss-wrapper'];
const CACHE = join(tmpdir(), 'callout-exim4');
/** Exim's primary_hostname, which `$primary_hostname` expands to. */
export const EXIM_HOSTNAME = 'exim.callout.test';

function run(command: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) {
  return spawnSync(command, args, { encoding: 'utf8', timeout: 120_000, ...options });
}

function has(command: string): boolean {
  return run('sh', ['-c', `command -v ${command}`]).status === 0;
}

/** Why `dir` must not be trusted with binaries the caller runs, if it must not. */
function foreignCache(dir: string): string | undefined {
  const stat = lstatSync(dir);
  if (!stat.isDirectory()) return `${dir} is not a directory`;
  if (stat.uid !== process.getuid?.()) return `${dir} belongs to uid ${stat.uid}, not to this user`;
  if ((stat.mode & 0o022) !== 0) return `${dir} is writable by others (mode ${(stat.mode & 0o777).toString(8)})`;
  return undefined;
}

/** Where the unpacked packages put the binary and the libraries. */
function unpacked(cache: string): { root: string; binary: string; libs: string } {
  const root = join(cache, 'root');
  return { root, binary: join(root, 'usr/sbin/exim4'), libs: join(root, 'usr/lib/x86_64-linux-gnu') };
}

/** The cache's problem, or undefined when the tests may run what it holds. */
function cacheProblem(cache: string): string | undefined {
  mkdirSync(cache, { recursive: true, mode: 0o755 });
  const foreign = foreignCache(cache);
  return foreign === undefined ? undefined : `refusing the Exim cache: ${foreign}; remove it`;
}

/**
 * Downloads and unpacks the packages into the cache, unless they are there: the only step that
 * leaves the machine (the Debian mirror), so .ci/run takes it, as it installs packages, and the
 * tests never do. Returns why it could not, or undefined.
 */
export function fetchExim(cache = CACHE): string | undefined {
  const problem = cacheProblem(cache);
  if (problem !== undefined) return problem;
  for (const tool of ['apt-get', 'dpkg-deb']) {
    if (!has(tool)) return `${tool} not found (Debian's)`;
  }
  const { root, binary, libs } = unpacked(cache);
  if (existsSync(binary) && existsSync(join(libs, 'libnss_wrapper.so'))) return undefined;
  const download = run('apt-get', ['download', ...PACKAGES], { cwd: cache });
  if (download.status !== 0) return `apt-get download ${PACKAGES.join(' ')} failed: ${download.stderr.trim().split('\n').pop()}`;
  for (const deb of readdirSync(cache).filter((f) => f.endsWith('.deb'))) {
    const unpack = run('dpkg-deb', ['-x', join(cache, deb), root]);
    if (unpack.status !== 0) return `dpkg-deb -x ${deb} failed: ${unpack.stderr.trim()}`;
  }
  return undefined;
}

/** Exim from the cache fetchExim() filled (a test passes its own cache); never downloads. */
export function prepareExim(cache = CACHE): Exim | { unavailable: string } {
  const problem = cacheProblem(cache);
  if (problem !== undefined) return { unavailable: problem };
  const libfaketime = libfakeTime();
  if (libfaketime === undefined) return { unavailable: 'libfaketime not installed (run .ci/run to install faketime on Debian)' };
  const { binary, libs } = unpacked(cache);
  if (!existsSync(binary) || !existsSync(join(libs, 'libnss_wrapper.so'))) {
    return { unavailable: `Exim's packages are not in ${cache}: fetch them with \`node --import tsx test/support/exim.ts\` (.ci/run does)` };
  }
  const passwd = join(cache, 'passwd');
  const group = join(cache, 'group');
  const config = join(cache, 'exim.conf');
  writeFileSync(passwd, 'root:x:0:0:root:/root:/bin/sh\nDebian-exim:x:65534:65534::/nonexistent:/bin/false\n');
  writeFileSync(group, 'root:x:0:\nDebian-exim:x:65534:\n');
  writeFileSync(config, `primary_hostname = ${EXIM_HOSTNAME}\n`);
  const env = {
    ...process.env,
    LD_LIBRARY_PATH: libs,
    LD_PRELOAD: join(libs, 'libnss_wrapper.so'),
    NSS_WRAPPER_PASSWD: passwd,
    NSS_WRAPPER_GROUP: group,
  };
  const versionRun = run(binary, ['-C', config, '-bV'], { env });
  if (versionRun.status !== 0) return { unavailable: `${binary} does not run: ${versionRun.stderr.trim()}` };
  const version = versionRun.stdout.split('\n')[0] ?? '';
  return {
    version,
    expand(expression, at) {
      const eximArgs = ['-C', config, '-be', expression];
      // nss_wrapper stays preloaded.
      const faked = at ? fakeTimeEnv(at, libfaketime, env) : env;
      const result = run(binary, eximArgs, { env: faked });
      if (result.status !== 0) throw new Error(`exim4 -be ${JSON.stringify(expression)} exited ${result.status}: ${result.stderr.trim()}`);
      return result.stdout.replace(/\n$/, '');
    },
  };
}

// `node --import tsx test/support/exim.ts` fills the cache (.ci/run's fetch_exim).
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const problem = fetchExim();
  if (problem !== undefined) {
    process.stderr.write(`exim: ${problem}\n`);
    process.exitCode = 1;
  } else {
    process.stdout.write(`Exim's packages are unpacked in ${CACHE}\n`);
  }
}
