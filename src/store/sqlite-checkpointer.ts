/**
 * NAME
 *   store/sqlite-checkpointer - WAL checkpoints of a SQLite store, in a worker thread
 *
 * SYNOPSIS
 *   const worker = startCheckpointer(path, intervalMs);   worker.postMessage('stop');
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
 *   starts the WAL anew. The restart waits at most
 *   RESTART_WAIT_MS for a commit or a read in progress to end (SQLite's busy handler sleeps
 *   this thread, never the daemon's event loop; a commit that meets the restart's lock waits
 *   for it in store/sqlite's lock loop), else it is left for the next round. The store's
 *   journal_size_limit cuts the file back when the WAL starts again.
 *
 *   The thread posts { ready: true } once its connection is open (until then the store leaves
 *   checkpoints to SQLite), and the message 'stop' closes the connection and ends it. Any
 *   failure is posted as { error } before the thread ends; store/sqlite then hands checkpoints
 *   back to SQLite.
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
  parentPort.postMessage({ error: err instanceof Error ? err.message : String(err) });
  process.exit(1);
}
try {
  // The store's own file: never create a new, empty one in its place.
  const db = new Database(workerData.path, { timeout: 0, fileMustExist: true });
  const passive = db.prepare('PRAGMA wal_checkpoint(PASSIVE)');
  const restart = db.prepare('PRAGMA wal_checkpoint(RESTART)');
  const round = () => {
    if (passive.get().log <= workerData.restartFrames) return;
    db.pragma('busy_timeout = ' + workerData.restartWaitMs);
    try {
      restart.get();
    } finally {
      db.pragma('busy_timeout = 0');
    }
  };
  const timer = setInterval(() => {
    try {
      round();
    } catch (err) {
      // Another process checkpointing or resetting the WAL: next round.
      if (!(err instanceof Database.SqliteError && err.code.startsWith('SQLITE_BUSY'))) fail(err);
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

/** Starts the checkpoint thread of the database file at path (unref'd: it never holds a process up). */
export function startCheckpointer(path: string, intervalMs: number): Worker {
  const workerData = { path, intervalMs, driver: DRIVER, restartFrames: RESTART_FRAMES, restartWaitMs: RESTART_WAIT_MS };
  const worker = new Worker(THREAD_SOURCE, { eval: true, workerData });
  worker.unref();
  return worker;
}
