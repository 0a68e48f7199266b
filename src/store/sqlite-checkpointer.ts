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
 *   The message 'stop' closes the thread's connection and ends it. Any failure is posted as
 *   { error } before the thread ends; store/sqlite then hands checkpoints back to SQLite.
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
  const checkpoint = db.prepare('PRAGMA wal_checkpoint(PASSIVE)');
  const timer = setInterval(() => {
    try {
      checkpoint.get();
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
} catch (err) {
  fail(err);
}
`;

const DRIVER = createRequire(import.meta.url).resolve('better-sqlite3');

/** Starts the checkpoint thread of the database file at path (unref'd: it never holds a process up). */
export function startCheckpointer(path: string, intervalMs: number): Worker {
  const worker = new Worker(THREAD_SOURCE, { eval: true, workerData: { path, intervalMs, driver: DRIVER } });
  worker.unref();
  return worker;
}
