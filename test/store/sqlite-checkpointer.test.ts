// The checkpoint thread against a wall clock stepped back (its wait for a WAL restart is bounded all the
// same), and against another connection's locks (SQLITE_BUSY), which it outlasts and tells of once.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { startCheckpointer, type CheckpointDelay } from '../../src/store/sqlite-checkpointer.js';
import { until } from '../support/wait.js';

const scratch = mkdtempSync(join(tmpdir(), 'callout-checkpointer-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

/** A WAL file at path as the store leaves it (no automatic checkpoint), holding `frames` frames or more. */
function walFile(path: string, frames: number): Database.Database {
  const writer = new Database(path, { timeout: 0 });
  writer.pragma('journal_mode = WAL');
  writer.pragma('wal_autocheckpoint = 0');
  writer.exec('CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)');
  const insert = writer.prepare('INSERT INTO t VALUES (?, ?)');
  // A row of about a page each: a frame per row, and a few for the b-tree above them.
  writer.transaction(() => {
    for (let k = 0; k < frames; k += 1) insert.run(k, 'x'.repeat(3000));
  })();
  return writer;
}

/** Commits `rows` rows of about a page each (keys from `from` on): over a thousand frames for 1000 rows. */
function addFrames(writer: Database.Database, from: number, rows: number): void {
  const insert = writer.prepare('INSERT INTO t VALUES (?, ?)');
  writer.transaction(() => {
    for (let k = from; k < from + rows; k += 1) insert.run(k, 'x'.repeat(3000));
  })();
}

/** A read transaction of a new connection, whose snapshot keeps every later frame from the database file. */
function reading(path: string): Database.Database {
  const reader = new Database(path, { readonly: true });
  reader.exec('BEGIN');
  reader.prepare('SELECT count(*) FROM t').pluck().get();
  return reader;
}

/** The thread's messages as they come, and whether it has ended. */
function watchThread(thread: Worker): { messages: Array<{ ready?: true; error?: string; delay?: CheckpointDelay }>; exited: () => boolean } {
  const messages: Array<{ ready?: true; error?: string; delay?: CheckpointDelay }> = [];
  let exited = false;
  thread.on('message', (message: { ready?: true; error?: string; delay?: CheckpointDelay }) => messages.push(message));
  thread.once('exit', () => (exited = true));
  return { messages, exited: () => exited };
}

async function stop(thread: Worker, exited: () => boolean): Promise<void> {
  thread.postMessage('stop');
  assert.ok(await until(() => exited()), 'the thread ended when told');
}

describe('startCheckpointer', () => {
  it('ends its wait for a WAL restart a reader holds up, and stops when told, though the wall clock steps back an hour', async () => {
    // The thread's clock can be set only from inside it: a module preloaded (--require) in a
    // child process runs in its worker threads too, and there steps Date.now() back an hour
    // after its first reading. A reader's open transaction keeps every restart busy.
    const stepBack = join(scratch, 'step-back.cjs');
    writeFileSync(
      stepBack,
      `if (!require('node:worker_threads').isMainThread) {
         const real = Date.now; let first = true;
         Date.now = () => { const now = real(); if (first) { first = false; return now; } return now - 3_600_000; };
       }`,
    );
    const script = join(scratch, 'run.mjs');
    writeFileSync(
      script,
      `import { once } from 'node:events';
       const { startCheckpointer } = await import(${JSON.stringify(new URL('../../src/store/sqlite-checkpointer.ts', import.meta.url).href)});
       const { default: Database } = await import(${JSON.stringify(pathToFileURL(createRequire(import.meta.url).resolve('better-sqlite3')).href)});
       const path = ${JSON.stringify(join(scratch, 'store.sqlite'))};
       const writer = new Database(path);
       writer.pragma('journal_mode = WAL');
       writer.pragma('wal_autocheckpoint = 0');
       writer.exec('CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)');
       const insert = writer.prepare('INSERT INTO t VALUES (?, ?)');
       writer.transaction(() => { for (let k = 0; k < 1500; k++) insert.run(k, 'x'.repeat(3000)); })();
       const reader = new Database(path);
       reader.exec('BEGIN');
       reader.prepare('SELECT count(*) FROM t').get();
       const thread = startCheckpointer(path, 5);
       const [message] = await once(thread, 'message');
       if (!message.ready) throw new Error(JSON.stringify(message));
       // A few rounds, each meeting the reader.
       await new Promise((resolve) => setTimeout(resolve, 100));
       thread.postMessage('stop');
       const stopped = await Promise.race([once(thread, 'exit').then(() => 'stopped'), new Promise((resolve) => setTimeout(resolve, 3000, 'still trying'))]);
       process.stdout.write(stopped);
       process.exit(0);`,
    );
    const { NODE_TEST_CONTEXT: _, ...env } = process.env;
    const child = spawn(process.execPath, ['--require', stepBack, '--import', 'tsx', script], { cwd: process.cwd(), env, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    await once(child, 'exit');
    assert.equal(out, 'stopped');
  });

  it('outlasts a write lock another connection holds through its restarts, tells of it once, and again once it caught up', async () => {
    const path = join(scratch, 'write-locked.sqlite');
    const writer = walFile(path, 1500);
    const other = new Database(path, { timeout: 0 });
    // Held before the thread's first round: every restart meets it (a passive round copies all the same).
    other.exec('BEGIN IMMEDIATE');
    const thread = startCheckpointer(path, 5, { reportAfterMs: 30 });
    const { messages, exited } = watchThread(thread);
    const delays = () => messages.filter((m) => m.delay !== undefined).map((m) => m.delay);
    try {
      assert.ok(await until(() => delays().length > 0, 10_000, 5), `held up told: ${JSON.stringify(messages)}`);
      const [heldUp] = delays();
      assert.equal(heldUp?.state, 'held up');
      assert.ok(heldUp.state === 'held up' && heldUp.forMs >= 30 && heldUp.walFrames !== undefined && heldUp.walFrames > 1000, JSON.stringify(heldUp));
      assert.equal(heldUp.reason, 'another connection holds the write lock or a read transaction');
      // Rounds go on meeting the lock (five or more at 5 ms): not one message each.
      const told = messages.length;
      await new Promise((resolve) => setTimeout(resolve, 40));
      assert.equal(messages.length, told, `no more messages while held: ${JSON.stringify(messages)}`);
      other.exec('COMMIT');
      assert.ok(await until(() => delays().length > 1, 10_000, 5), 'caught up told');
      assert.equal(delays()[1]?.state, 'caught up');
      assert.ok((delays()[1]?.forMs ?? 0) >= 30, JSON.stringify(delays()[1]));
      assert.deepEqual(messages.filter((m) => m.delay === undefined), [{ ready: true }], 'no failure: the thread goes on');
      assert.equal(exited(), false);
    } finally {
      if (other.inTransaction) other.exec('ROLLBACK');
      other.close();
      await stop(thread, exited);
      writer.close();
    }
    const check = new Database(path, { readonly: true });
    assert.equal(check.prepare('SELECT count(*) FROM t').pluck().get(), 1500, 'every committed row is there');
    check.close();
  });

  it('waits out another connection\'s exclusive lock met as it starts, instead of ending for good', async () => {
    const path = join(scratch, 'exclusive.sqlite');
    walFile(path, 10).close();
    // A connection in exclusive locking mode that has written holds the file: any other reader
    // gets SQLITE_BUSY, the thread's first statement too (it ended with "database is locked").
    const other = new Database(path, { timeout: 0 });
    other.pragma('locking_mode = EXCLUSIVE');
    other.exec('INSERT INTO t VALUES (-1, 1)');
    const thread = startCheckpointer(path, 5, { reportAfterMs: 20 });
    const { messages, exited } = watchThread(thread);
    try {
      assert.ok(await until(() => messages.length > 1 || exited(), 10_000, 5), 'the thread said something');
      const forMs = messages[1]?.delay?.forMs ?? 0;
      assert.ok(forMs >= 20, `held up for ${forMs} ms when told`);
      assert.deepEqual(messages, [{ ready: true }, { delay: { state: 'held up', forMs, walFrames: undefined, reason: 'database is locked (SQLITE_BUSY)' } }]);
      other.close();
      assert.ok(await until(() => messages.length > 2 || exited(), 10_000, 5), 'the thread said something more');
      assert.equal(messages[2]?.delay?.state, 'caught up', JSON.stringify(messages));
      assert.equal(exited(), false, 'still running');
    } finally {
      if (other.open) other.close();
      await stop(thread, exited);
    }
  });
  it('tells nothing while another connection runs a checkpoint of its own, which does the work, in or out of a delay', async () => {
    const path = join(scratch, 'other-checkpoint.sqlite');
    const writer = walFile(path, 10);
    const thread = startCheckpointer(path, 5, { reportAfterMs: 30 });
    const { messages, exited } = watchThread(thread);
    const delays = () => messages.filter((m) => m.delay !== undefined).map((m) => m.delay);
    // Another connection's RESTART checkpoint waiting (200 ms) for what a third holds: it holds
    // the checkpoint lock meanwhile, and the thread's rounds find it busy (this thread is blocked).
    const checkpointer = new Database(path, { timeout: 200 });
    const otherCheckpoint = () => checkpointer.pragma('wal_checkpoint(RESTART)');
    const other = new Database(path, { timeout: 0 });
    let reader: Database.Database | undefined;
    try {
      assert.ok(await until(() => messages.length > 0, 10_000, 5), 'ready told');
      other.exec('BEGIN IMMEDIATE');
      otherCheckpoint();
      other.exec('ROLLBACK');
      await new Promise((resolve) => setTimeout(resolve, 40));
      assert.deepEqual(messages, [{ ready: true }], 'no delay told: another connection was checkpointing');
      // Now a delay of the thread's own: a reader keeps 1000 new frames from the file.
      reader = reading(path);
      addFrames(writer, 10, 1000);
      assert.ok(await until(() => delays().length > 0, 10_000, 5), `held up told: ${JSON.stringify(messages)}`);
      assert.equal(delays()[0]?.state, 'held up');
      otherCheckpoint();
      await new Promise((resolve) => setTimeout(resolve, 40));
      assert.equal(delays().length, 1, `not caught up while another connection was checkpointing: ${JSON.stringify(messages)}`);
      reader.exec('ROLLBACK');
      assert.ok(await until(() => delays().length > 1, 10_000, 5), 'caught up told');
      assert.equal(delays()[1]?.state, 'caught up');
      assert.equal(exited(), false);
    } finally {
      if (other.inTransaction) other.exec('ROLLBACK');
      if (reader?.inTransaction) reader.exec('ROLLBACK');
      for (const db of [reader, other, checkpointer]) db?.close();
      await stop(thread, exited);
      writer.close();
    }
  });

  it('tells of each delay in its turn, timed from its own start', async () => {
    const path = join(scratch, 'two-delays.sqlite');
    const writer = walFile(path, 10);
    const thread = startCheckpointer(path, 5, { reportAfterMs: 30 });
    const { messages, exited } = watchThread(thread);
    const delays = () => messages.filter((m) => m.delay !== undefined).map((m) => m.delay);
    try {
      assert.ok(await until(() => messages.length > 0, 10_000, 5), 'ready told');
      let rows = 10;
      for (const episode of [1, 2]) {
        const reader = reading(path);
        addFrames(writer, rows, 1000);
        rows += 1000;
        assert.ok(await until(() => delays().length === 2 * episode - 1, 10_000, 5), `held up told, episode ${episode}: ${JSON.stringify(messages)}`);
        reader.exec('ROLLBACK');
        reader.close();
        assert.ok(await until(() => delays().length === 2 * episode, 10_000, 5), `caught up told, episode ${episode}: ${JSON.stringify(messages)}`);
        // Between the two, a while of rounds that do their work, which no delay includes.
        if (episode === 1) await new Promise((resolve) => setTimeout(resolve, 500));
      }
      assert.deepEqual(delays().map((d) => d?.state), ['held up', 'caught up', 'held up', 'caught up']);
      const secondHeldUp = delays()[2]?.forMs ?? Infinity;
      assert.ok(secondHeldUp >= 30 && secondHeldUp < 500, `the second delay told after ${secondHeldUp} ms of it`);
      assert.equal(exited(), false);
    } finally {
      await stop(thread, exited);
      writer.close();
    }
  });
});
