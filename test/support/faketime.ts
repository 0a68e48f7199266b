/**
 * NAME
 *   test/support/faketime - run a peer's binary with its clock started at a chosen instant
 *
 * DESCRIPTION
 *   libfakeTime() finds Debian's libfaketime; fakeTimeEnv() adds it to LD_PRELOAD with
 *   FAKETIME "@<instant>" (the clock starts there and runs on) in UTC, so day-dependent values
 *   (BATV's day, SRS's timestamp) are those of that instant. The library is preloaded directly,
 *   never through the faketime(1) wrapper: the wrapper makes a semaphore named after its process
 *   id and fails ("sem_open: File exists") when one that a killed wrapper left has the same id,
 *   which tests starting peers a hundred times met now and then.
 *
 * LIMITS
 *   Needs Debian's libfaketime package (installed with faketime by .ci/run).
 */

import { spawnSync } from 'node:child_process';

/** The path of libfaketime.so.1, or undefined when the package is not installed. */
export function libfakeTime(): string | undefined {
  const listing = spawnSync('dpkg', ['-L', 'libfaketime'], { encoding: 'utf8', timeout: 30_000 });
  return listing.stdout?.split('\n').find((path) => path.endsWith('/libfaketime.so.1'));
}

/** `env` with libfaketime preloaded (before what it preloads already) and the clock at `at`. */
export function fakeTimeEnv(at: Date, library: string, env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const preload = env.LD_PRELOAD ? `${library}:${env.LD_PRELOAD}` : library;
  return { ...env, LD_PRELOAD: preload, FAKETIME: `@${at.toISOString().slice(0, 19).replace('T', ' ')}`, TZ: 'UTC' };
}
