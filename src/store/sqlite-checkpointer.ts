/**
 * NAME
 *   store/sqlite-checkpointer - WAL checkpoints of a SQLite store, in a worker thread
 *
 * SYNOPSIS
 *   const worker = startCheckpointer(path, intervalMs, { reportAfterMs });   worker.postMessage('stop');
 *
 * DESCRIPTION
 *   The thread opens its own connection to the file and every intervalMs runs
 *   PRAGMA wal_checkpoint(PASSIVE): the committed pages are copied from the WAL into the
 *   database file and the file is fsynced there, while the daemon's event loop goes on
 *   answering. (SQLite's automatic checkpoint runs inside the commit that crosses 1000 WAL
 *   pages: every few hundred commits one of them took milliseconds and stalled every
 *   connection of the daemon.) PASSIVE never waits: pages a reader still needs, or a round
 *   that meets another process's checkpoint, are left for the next round.
 *
 *   A passive checkpoint alone lets the WAL grow without bound under a steady stream of
 *   commits: the writer starts the WAL again from its beginning only when it finds every frame
 *   copied, and a commit always lands while the checkpoint runs (a greylist replay at 14,000
 *   decisions a second grew it to 400 MB in five seconds, and every read and commit got slower
 *   as it grew). So when a round leaves more than RESTART_FRAMES frames in the WAL (SQLite's
 *   own autocheckpoint size), the thread runs wal_checkpoint(RESTART): it holds the write
 *   lock only to copy the frames committed since the passive round, and the next commit
 *   starts the WAL anew (the restart fsyncs the WAL and the database file while it holds the
 *   lock). A restart that finds the lock taken or a reader in the WAL gives up at once (busy
 *   timeout 0) and is tried again every RESTART_PAUSE_MS for up to RESTART_WAIT_MS, in this
 *   thread: SQLite's own busy handler sleeps a millisecond and more between tries and, against
 *   a daemon committing back to back, missed every free moment while the WAL kept growing. The
 *   wait is timed on the monotonic clock: a wall clock stepped back (NTP, a resumed VM) kept the
 *   thread trying until it caught up, deaf to 'stop' and holding a CPU. A
 *   commit that meets the restart's lock waits for it in store/sqlite's lock loop. Once a
 *   restart has succeeded it is not repeated until the WAL has started again. The store's
 *   journal_size_limit cuts the file back when the WAL starts again.
 *
 *   Another connection's lock (SQLITE_BUSY) is no failure: a read transaction that keeps frames
 *   from the database file (a backup, a long query in another program), the write lock held
 *   through a restart's wait, another process's checkpoint or its exclusive lock leave the work
 *   to the next round, which tries again; acknowledged writes stay in the WAL meanwhile, and the
 *   WAL grows. Rounds kept from their work for reportAfterMs (REPORT_AFTER_MS) are told once, as
 *   { delay: { state: 'held up', forMs, walFrames, reason } } (walFrames undefined when the round
 *   could not read it), and the first round that does its work again after that posts
 *   { delay: { state: 'caught up', forMs } }: one pair per episode, not a line per round. A round
 *   that finds another process's checkpoint running tells neither: that checkpoint does the work.
 *   The statements are prepared in the first round, not at start: preparing reads the schema, and
 *   a lock held at that moment ended the thread for the life of the process.
 *
 *   The thread posts { ready: true } once its connection is open (until then the store leaves
 *   checkpoints to SQLite), and the message 'stop' closes the connection and ends it. Any
 *   other failure is posted as { error } before the thread ends; store/sqlite then hands
 *   checkpoints back to SQLite and passes the error on (onCheckpointerFailed).
 *
 *   The thread runs plain JavaScript given as source (eval), requiring the better-sqlite3 this
 *   module resolves: a worker started from a module file would need the TypeScript loader when
 *   run from the source tree, and Node 20 does not apply `--import tsx` inside workers.
 */

import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

const THREAD_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
function fail(err) {
  // SQLite's extended code tells what the message does not (SQLITE_IOERR_FSYNC: 'disk I/O error').
  const code = err instanceof Database.SqliteError ? ' (' + err.code + ')' : '';
  parentPort.postMessage({ error: (err instanceof Error ? err.message : String(err)) + code });
  process.exit(1);
}
try {
  // The store's own file: never create a new, empty one in its place.
  const db = new Database(workerData.path, { timeout: 0, fileMustExist: true });
  // Prepared in a round (see the header): a lock held now would end the thread.
  let passive, restart;
  const pause = new Int32Array(new SharedArrayBuffer(4));
  // The WAL's length when a restart last succeeded: until a commit starts it anew, it stays so.
  let restartedAt = -1;
  // Whether a round did what the WAL needed (true), was kept from it (a reason), or cannot tell
  // (undefined: another process's checkpoint ran, which does the work as well).
  const round = () => {
    passive ??= db.prepare('PRAGMA wal_checkpoint(PASSIVE)');
    restart ??= db.prepare('PRAGMA wal_checkpoint(RESTART)');
    const { busy, log, checkpointed } = passive.get();
    if (busy !== 0) return undefined;
    if (log <= workerData.restartFrames || log === restartedAt) return true;
    const deadline = performance.now() + workerData.restartWaitMs;
    do {
      const result = restart.get();
      if (result.busy === 0) {
        restartedAt = result.log;
        return true;
      }
      Atomics.wait(pause, 0, 0, workerData.restartPauseMs);
    } while (performance.now() < deadline);
    return checkpointed < log
      ? { walFrames: log, reason: 'a read transaction of another connection keeps ' + (log - checkpointed) + ' frames from the database file' }
      : { walFrames: log, reason: 'another connection holds the write lock or a read transaction' };
  };
  // When the rounds were first kept from their work, and whether that has been told.
  let heldSince;
  let told = false;
  const timer = setInterval(() => {
    let outcome;
    try {
      outcome = round();
    } catch (err) {
      // Another process checkpointing, resetting or locking the WAL: next round.
      if (!(err instanceof Database.SqliteError && err.code.startsWith('SQLITE_BUSY'))) return fail(err);
      outcome = { walFrames: undefined, reason: err.message + ' (' + err.code + ')' };
    }
    if (outcome === undefined) return;
    const now = performance.now();
    if (outcome === true) {
      if (told) parentPort.postMessage({ delay: { state: 'caught up', forMs: Math.round(now - heldSince) } });
      heldSince = undefined;
      told = false;
      return;
    }
    heldSince ??= now;
    if (!told && now - heldSince >= workerData.reportAfterMs) {
      told = true;
      parentPort.postMessage({ delay: { state: 'held up', forMs: Math.round(now - heldSince), ...outcome } });
    }
  }, workerData.intervalMs);
  parentPort.on('message', (message) => {
    if (message !== 'stop') return;
    clearInterval(timer);
    db.close();
    parentPort.close();
  });
  parentPort.postMessage({ ready: true });
} catch (err) {
  fail(err);
}
`;

const DRIVER = createRequire(import.meta.url).resolve('better-sqlite3');
/** WAL frames (pages) past which a round restarts the WAL: SQLite's default autocheckpoint. */
const RESTART_FRAMES = 1000;
const RESTART_WAIT_MS = 10;
const RESTART_PAUSE_MS = 0.05;
/** How long the rounds are kept from their work before the thread tells (a backup, a CLI scan take seconds). */
const REPORT_AFTER_MS = 10_000;

/** What the thread tells of rounds kept from their work: posted as { delay }. */
export type CheckpointDelay =
  | { state: 'held up'; forMs: number; walFrames: number | undefined; reason: string }
  | { state: 'caught up'; forMs: number };

export interface CheckpointerOptions {
  /** How long rounds are kept from their work before 'held up' is posted (default REPORT_AFTER_MS). */
  reportAfterMs?: number;
}

/** Starts the checkpoint thread of the database file at path (unref'd: it never holds a process up). */
export function startCheckpointer(path: string, intervalMs: number, options: CheckpointerOptions = {}): Worker {
  const workerData = {
    path,
    intervalMs,
    driver: DRIVER,
    restartFrames: RESTART_FRAMES,
    restartWaitMs: RESTART_WAIT_MS,
    restartPauseMs: RESTART_PAUSE_MS,
    reportAfterMs: options.reportAfterMs ?? REPORT_AFTER_MS,
  };
  const worker = new Worker(THREAD_SOURCE, { eval: true, workerData });
  worker.unref();
  return worker;
}
