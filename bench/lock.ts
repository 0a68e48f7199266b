/**
 * NAME
 *   bench/lock - one benchmark run at a time on a machine
 *
 * DESCRIPTION
 *   Two runs at once would fight over port 25 of 127.77.0.x and over the /etc/hosts block, and
 *   each would measure the other's load. acquireRunLock() creates a lock file holding this
 *   process's pid; a lock whose pid no longer runs is stale and taken over. The lock is released
 *   on exit however the run ends.
 *
 * ERRORS
 *   Throws when another live run holds the lock.
 */

import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const LOCK = join(tmpdir(), 'callout-bench.lock');

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function acquireRunLock(): () => void {
  try {
    writeFileSync(LOCK, String(process.pid), { flag: 'wx' });
  } catch {
    const holder = Number(readFileSync(LOCK, 'utf8'));
    if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && isRunning(holder)) {
      throw new Error(`another benchmark run (pid ${holder}) holds ${LOCK}; wait for it to finish`);
    }
    writeFileSync(LOCK, String(process.pid));
  }
  const release = (): void => {
    process.off('exit', release);
    if (readFileSync(LOCK, 'utf8') === String(process.pid)) rmSync(LOCK, { force: true });
  };
  process.on('exit', release);
  return release;
}
