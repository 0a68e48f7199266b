import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, closeSync, mkdirSync, mkdtempSync, openSync, readSync, readdirSync, symlinkSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, writeSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { ManualClock } from '../support/manual-time.js';
import { ConfigError, StoreDamagedError, StoreError } from '../../src/core/errors.js';
import { SqliteStore } from '../../src/store/sqlite.js';
import { ASK_LATER } from '../../src/store/types.js';
import { startCheckpointer, type CheckpointDelay } from '../../src/store/sqlite-checkpointer.js';
import { runStoreContract } from './contract.js';
import { writeVersion1Store, type Version1Row } from '../support/sqlite-version-1.js';
import { writeDamagedStore } from '../support/sqlite-damage.js';
import { until } from '../support/wait.js';

const scratch = mkdtempSync(join(tmpdir(), 'callout-sqlite-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

let fileCount = 0;
function freshPath(): string {
  fileCount += 1;
  return join(scratch, `case-${fileCount}`, 'nested', 'store.sqlite');
}

/** A PRAGMA's value on the store's own connection (wal_autocheckpoint and synchronous are per connection). */
function pragmaOf(store: SqliteStore, name: string): unknown {
  return (store as unknown as { db: Database.Database }).db.pragma(name, { simple: true });
}

/** Waits (up to 10 s) for the checkpoint thread to have started and taken over from SQLite. */
async function threadTakesOver(store: SqliteStore): Promise<void> {
  await until(() => store.checkpoints === 'thread', 10_000, 5);
  assert.equal(store.checkpoints, 'thread');
}

/**
 * Another process holding the write lock for ms: a thread of its own, so that it lets go while
 * this one sleeps in SQLite's busy handler. Resolves once the lock is taken.
 */
async function holdWriteLock(path: string, ms: number): Promise<{ released: Promise<unknown> }> {
  const holder = new Worker(
    `const { parentPort, workerData } = require('node:worker_threads');
     const db = new (require(workerData.driver))(workerData.path);
     db.prepare('BEGIN IMMEDIATE').run();
     parentPort.postMessage('locked');
     Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, workerData.ms);
     db.prepare('COMMIT').run();
     db.close();`,
    { eval: true, workerData: { path, ms, driver: createRequire(import.meta.url).resolve('better-sqlite3') } },
  );
  const released = once(holder, 'exit');
  await once(holder, 'message');
  return { released };
}

runStoreContract('sqlite :memory:', (clock) => SqliteStore.open(':memory:', { clock }));
runStoreContract('sqlite file', (clock) => SqliteStore.open(freshPath(), { clock }));

/**
 * A script that opens the SQLite file named by its first argument and prints "opened" or the
 * error's class and message; with "as-nobody" second, as user nobody (once the driver is loaded).
 */
function writeOpenScript(script: string): void {
  writeFileSync(
    script,
    `const { SqliteStore } = await import(${JSON.stringify(new URL('../../src/store/sqlite.ts', import.meta.url).href)});
     await (await SqliteStore.open(':memory:')).close();
     if (process.argv[3] === 'as-nobody') { process.setgid(65534); process.setuid(65534); }
     try { await (await SqliteStore.open(process.argv[2])).close(); process.stdout.write('opened'); }
     catch (err) { process.stdout.write(JSON.stringify({ name: err.constructor.name, message: err.message })); }`,
  );
  chmodSync(script, 0o644);
}

/** What the script of writeOpenScript printed for the file, run as `asAnotherUser` says. */
async function runOpenScript(script: string, path: string, asAnotherUser: string[]): Promise<{ name: string; message: string }> {
  const { NODE_TEST_CONTEXT: _, ...env } = process.env;
  const child = spawn(process.execPath, ['--import', 'tsx', script, path, ...asAnotherUser], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  await once(child, 'exit');
  return JSON.parse(out) as { name: string; message: string };
}

describe('SqliteStore', () => {
  it('tells when its file was removed, or another put at its path, while open', async () => {
    const path = freshPath();
    const store = await SqliteStore.open(path);
    try {
      await store.set('k', 'v', 60_000);
      assert.equal(store.fileProblem(), undefined);
      renameSync(path, `${path}.moved`);
      writeFileSync(path, '');
      assert.match(store.fileProblem() ?? '', /was replaced while open: this process writes to the old file$/);
      rmSync(path);
      assert.match(store.fileProblem() ?? '', /was removed while open: what is written now is lost at the next restart$/);
      assert.equal((await SqliteStore.open(':memory:')).fileProblem(), undefined, 'a store in memory has no file');
    } finally {
      await store.close();
    }
  });

  it('tells when its -wal or -shm file was removed while open, and not when the WAL restarts or another connection comes and goes', async () => {
    for (const suffix of ['-wal', '-shm']) {
      const path = freshPath();
      const store = await SqliteStore.open(path, { checkpointIntervalMs: 5 });
      try {
        for (let i = 0; i < 100; i += 1) await store.set(`k${i}`, 'v', 60_000);
        await threadTakesOver(store);
        // Past 1000 frames: the thread restarts the WAL and the next commit starts it anew.
        for (let i = 0; i < 1500; i += 1) await store.set(`stream${i % 50}`, 'x'.repeat(300), 60_000);
        const visitor = await SqliteStore.open(path);
        await visitor.set('visit', 'v', 60_000);
        await visitor.close();
        assert.equal(store.fileProblem(), undefined, 'the WAL restarted and a visitor came and went: nothing was removed');
        rmSync(`${path}${suffix}`);
        assert.equal(
          store.fileProblem(),
          `${path}${suffix}, which SQLite keeps beside the file, was removed or replaced while open: other processes that open the store now (callout greylist, bounce, verify, another callout serve) overwrite or cannot read what this process writes`,
        );
      } finally {
        await store.close();
      }
    }
  });

  it('peeks at committed values at once, and leaves a key to get() while a write of it is queued', async () => {
    const clock = new ManualClock();
    const store = await SqliteStore.open(freshPath(), { clock });
    await store.set('k', 'v', 1000);
    assert.deepEqual(store.peek('k'), { value: 'v', expiresAt: clock.now() + 1000 });
    assert.equal(store.peek('absent'), undefined);
    const writing = store.set('other', 'w', 1000);
    assert.equal(store.peek('other'), ASK_LATER);
    assert.deepEqual(store.peek('k'), { value: 'v', expiresAt: clock.now() + 1000 }, 'another key answers at once');
    await writing;
    assert.deepEqual(store.peek('other'), { value: 'w', expiresAt: clock.now() + 1000 });
    await store.set('expiring', 'x', 10);
    clock.advance(10);
    const purging = store.purgeExpired();
    assert.deepEqual(store.peek('k'), { value: 'v', expiresAt: clock.now() + 990 }, 'a purge removes only what reads as absent: nothing waits for it');
    assert.equal(store.peek('expiring'), undefined);
    assert.equal(await purging, 1);
    assert.equal(store.peek('expiring'), undefined);
    await store.close();
  });

  it('answers a get() of a key no queued write touches before the group commits, and one of a written key after', async () => {
    const clock = new ManualClock();
    const store = await SqliteStore.open(freshPath(), { clock });
    await store.set('read', 'committed', 1000);
    const events: string[] = [];
    const write = store.set('written', 'new', 1000).then(() => events.push('write committed'));
    const untouched = store.get('read').then((row) => events.push(`read ${row?.value}`));
    const behind = store.get('written').then((row) => events.push(`written ${row?.value}`));
    const scan = store.scan('', 10).then((rows) => events.push(`scan ${rows.map((r) => r.key).join(',')}`));
    await Promise.all([write, untouched, behind, scan]);
    assert.deepEqual(events, ['read committed', 'write committed', 'written new', 'scan read,written']);
    await store.close();
  });

  it('scans behind a write queued in the same turn, so a scan sees it', async () => {
    const store = await SqliteStore.open(freshPath());
    const written = store.set('s:a', 'v', 60_000);
    assert.deepEqual((await store.scan('s:', 10)).map((row) => row.key), ['s:a']);
    await written;
    await store.close();
  });

  it('reads back its own writes as the file has them (rows remembered after commit, or read again)', async () => {
    const clock = new ManualClock();
    const path = freshPath();
    const store = await SqliteStore.open(path, { clock });
    const keys = ['set', 'cas', 'cas-failed', 'absent-cas', 'deleted', 'deleted-if', 'kept-if', 'counter'];
    const agree = async (step: string) => {
      const file = await SqliteStore.open(path, { clock });
      for (const key of keys) assert.deepEqual(await store.get(key), await file.get(key), `${step}: ${key}`);
      await file.close();
    };
    await Promise.all(
      Object.entries({ set: '1', cas: 'a', 'cas-failed': 'x', deleted: 'd', 'deleted-if': 'e', 'kept-if': 'f' }).map(([key, value]) => store.set(key, value, 1000)),
    );
    await agree('after set');
    clock.advance(10);
    const outcomes = await Promise.all([
      store.compareAndSet('cas', 'a', 'b', 5000),
      store.compareAndSet('cas-failed', 'not x', 'y', 5000),
      store.setIfAbsent('absent-cas', 'new', 5000),
      store.delete('deleted'),
      store.deleteIf('deleted-if', 'e'),
      store.deleteIf('kept-if', 'not f'),
      store.increment('counter', 3, 1000),
      store.set('set', '2', 2000),
    ]);
    assert.deepEqual(outcomes, [true, false, true, undefined, true, false, 3, undefined]);
    await agree('after a group of mixed writes');
    clock.advance(1500);
    await agree('after the first expiries');
    await store.close();
  });

  it('lets a compare-and-set fail when the key changed between its get() and its turn', async () => {
    const clock = new ManualClock();
    const store = await SqliteStore.open(freshPath(), { clock });
    await store.set('k', 'a', 1000);
    const seen = await store.get('k');
    const other = store.set('k', 'b', 1000);
    const mine = store.compareAndSet('k', seen?.value, 'c', 1000);
    await other;
    assert.equal(await mine, false);
    assert.equal((await store.get('k'))?.value, 'b');
    await store.close();
  });

  it('has kind sqlite and creates the parent directories', async () => {
    const path = freshPath();
    const store = await SqliteStore.open(path);
    assert.equal(store.kind, 'sqlite');
    assert.ok(existsSync(path), 'existsSync(path)');
    await store.close();
  });

  // open() added 027 to the umask of the whole process (a test runner's, every file a CLI made
  // afterwards) so that SQLite's -wal and -shm files, made later, were private; SQLite gives them
  // the database file's mode, so open() now gives the file and its directories theirs.
  it('makes its file (and so the -wal and -shm files) 0640 and its directories 0750 under the umask, and leaves the umask alone', async () => {
    const modes = async (umask: number) => {
      const path = freshPath();
      const previous = process.umask(umask);
      try {
        const store = await SqliteStore.open(path);
        assert.equal(process.umask(), umask, 'the process umask is unchanged');
        await store.set('k', 'v', 60_000);
        const nested = join(path, '..');
        const found = [join(nested, '..'), nested, path, `${path}-wal`, `${path}-shm`].map((file) => (statSync(file).mode & 0o777).toString(8));
        await store.close();
        return found;
      } finally {
        process.umask(previous);
      }
    };
    assert.deepEqual(await modes(0), ['750', '750', '640', '640', '640']);
    // Never looser than 0640, stricter when the umask is.
    assert.deepEqual(await modes(0o077), ['700', '700', '600', '600', '600']);
  });

  it('gives the file a symbolic link names, not there yet, 0640 too (SQLite made it 0644 under umask 022)', async () => {
    const target = freshPath();
    const link = freshPath();
    for (const path of [target, link]) mkdirSync(join(path, '..'), { recursive: true });
    symlinkSync(target, link);
    const previous = process.umask(0o022);
    try {
      const store = await SqliteStore.open(link);
      await store.set('k', 'v', 60_000);
      assert.deepEqual([target, `${target}-wal`].map((file) => (statSync(file).mode & 0o777).toString(8)), ['640', '640']);
      await store.close();
    } finally {
      process.umask(previous);
    }
  });

  it('keeps entries across close and reopen, with their expiry', async () => {
    const clock = new ManualClock();
    const path = freshPath();
    const first = await SqliteStore.open(path, { clock });
    assert.equal(first.schemaUpgrade, undefined, 'a new file is no upgrade');
    await first.set('k', 'persisted \u00e9', 60_000);
    await first.increment('c', 3, 60_000);
    await first.close();

    const second = await SqliteStore.open(path, { clock });
    assert.equal(second.schemaUpgrade, undefined, 'a current file is no upgrade');
    assert.deepEqual(await second.get('k'), { value: 'persisted \u00e9', expiresAt: clock.now() + 60_000 });
    assert.equal(await second.increment('c', 1, 60_000), 4);
    clock.advance(60_000);
    assert.equal(await second.get('k'), undefined);
    await second.close();
  });

  it('syncs at checkpoints by default (synchronous=NORMAL), and every commit with sync full', async () => {
    // The connection's own setting: a pragma is per connection, so it is read on the store's.
    const normal = await SqliteStore.open(freshPath());
    const full = await SqliteStore.open(freshPath(), { sync: 'full' });
    try {
      assert.equal(pragmaOf(normal, 'synchronous'), 1);
      assert.equal(pragmaOf(full, 'synchronous'), 2);
      await full.set('k', 'v', 60_000);
      assert.equal((await full.get('k'))?.value, 'v');
    } finally {
      await normal.close();
      await full.close();
    }
  });

  it('puts the file in WAL mode at schema version 2: one kv table in key order, no other index', async () => {
    const path = freshPath();
    const store = await SqliteStore.open(path);
    const db = new Database(path, { readonly: true });
    try {
      assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
      assert.equal(db.pragma('user_version', { simple: true }), 2);
      const columns = db.prepare("SELECT name, type, \"notnull\", pk FROM pragma_table_info('kv')").all();
      assert.deepEqual(columns, [
        { name: 'key', type: 'TEXT', notnull: 1, pk: 1 },
        { name: 'value', type: 'TEXT', notnull: 1, pk: 0 },
        { name: 'expires_at', type: 'INTEGER', notnull: 1, pk: 0 },
      ]);
      assert.match(String(db.prepare("SELECT sql FROM sqlite_schema WHERE name = 'kv'").pluck().get()), /WITHOUT ROWID$/);
      assert.deepEqual(db.prepare("SELECT name FROM pragma_index_list('kv') WHERE origin = 'c'").all(), []);
      assert.deepEqual(db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table'").pluck().all(), ['kv']);
      // A per-connection setting, so read on the store's: the WAL is cut back to 64 MiB when it starts again.
      assert.equal(pragmaOf(store, 'journal_size_limit'), 64 * 1024 * 1024);
    } finally {
      db.close();
      await store.close();
    }
  });

  it('scans a prefix as a range of the primary key, and purges a stretch the same way', async () => {
    const path = freshPath();
    const store = await SqliteStore.open(path);
    const db = new Database(path, { readonly: true });
    try {
      const plan = db
        .prepare('EXPLAIN QUERY PLAN SELECT key FROM kv WHERE key >= ? AND key < ? AND expires_at > ? ORDER BY key LIMIT ?')
        .all('a', 'b', 0, 10) as Array<{ detail: string }>;
      assert.match(plan.map((row) => row.detail).join('\n'), /^SEARCH kv USING PRIMARY KEY \(key>\? AND key<\?\)$/);
      const purge = db.prepare('EXPLAIN QUERY PLAN DELETE FROM kv WHERE key >= ? AND key < ? AND expires_at <= ?').all('a', 'b', 0) as Array<{ detail: string }>;
      assert.match(purge.map((row) => row.detail).join('\n'), /^SEARCH kv USING PRIMARY KEY \(key>\? AND key<\?\)$/);
    } finally {
      db.close();
      await store.close();
    }
  });

  it('shares one file between two connections atomically', async () => {
    const clock = new ManualClock();
    const path = freshPath();
    const one = await SqliteStore.open(path, { clock });
    const two = await SqliteStore.open(path, { clock });
    try {
      for (let i = 0; i < 10; i += 1) {
        await one.increment('c', 1, 1000);
        await two.increment('c', 1, 1000);
      }
      assert.equal((await one.get('c'))?.value, '20');
      assert.equal(await one.setIfAbsent('once', 'one', 1000), true);
      assert.equal(await two.setIfAbsent('once', 'two', 1000), false);
      assert.equal((await two.get('once'))?.value, 'one');
    } finally {
      await one.close();
      await two.close();
    }
  });

  it('keeps increment, compareAndSet, setIfAbsent and deleteIf atomic between two processes writing at once', async () => {
    const rounds = 400;
    const path = freshPath();
    const before = await SqliteStore.open(path);
    // Each a lock both processes release: exactly one of them may be told it deleted it.
    await Promise.all(Array.from({ length: rounds }, (_, i) => before.set(`held:${i}`, 'token', 60_000)));
    await before.close();
    const script = join(scratch, 'contender.mjs');
    // Each process waits until both have opened the file, then runs 8 writers at once.
    writeFileSync(
      script,
      `const { SqliteStore } = await import(${JSON.stringify(new URL('../../src/store/sqlite.ts', import.meta.url).href)});
       const [path, name, rounds] = process.argv.slice(2);
       const store = await SqliteStore.open(path, { busyTimeoutMs: 10_000 });
       await store.set('ready:' + name, '1', 60_000);
       while ((await store.scan('ready:', 10)).length < 2) await new Promise((resolve) => setTimeout(resolve, 1));
       let wins = 0;
       let released = 0;
       await Promise.all(Array.from({ length: 8 }, async (_, writer) => {
         for (let i = writer; i < Number(rounds); i += 8) {
           await store.increment('count', 1, 60_000);
           for (;;) {
             const row = await store.get('cas');
             if (await store.compareAndSet('cas', row?.value, String(Number(row?.value ?? 0) + 1), 60_000)) break;
           }
           if (await store.setIfAbsent('once:' + i, name, 60_000)) wins += 1;
           if (await store.deleteIf('held:' + i, 'token')) released += 1;
         }
       }));
       await store.close();
       process.stdout.write(wins + ' ' + released);`,
    );
    const { NODE_TEST_CONTEXT: _, ...env } = process.env;
    const outcomes = await Promise.all(
      ['one', 'two'].map(async (name) => {
        const child = spawn(process.execPath, ['--import', 'tsx', script, path, name, String(rounds)], { env, stdio: ['ignore', 'pipe', 'inherit'] });
        const killer = setTimeout(() => child.kill(), 30_000);
        let out = '';
        child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
        const [code] = (await once(child, 'exit')) as [number | null];
        clearTimeout(killer);
        assert.equal(code, 0, `${name} exited ${code}`);
        const [wins, released] = out.split(' ').map(Number);
        return { name, wins, released };
      }),
    );
    const store = await SqliteStore.open(path);
    try {
      assert.equal((await store.get('count'))?.value, String(2 * rounds), 'no increment lost');
      assert.equal((await store.get('cas'))?.value, String(2 * rounds), 'no compare-and-set lost');
      const claimed = await store.scan('once:', 2 * rounds);
      assert.equal(claimed.length, rounds);
      for (const { name, wins } of outcomes) assert.equal(claimed.filter((row) => row.value === name).length, wins, `the keys ${name} set`);
      assert.equal(outcomes.reduce((sum, { released }) => sum + (released ?? 0), 0), rounds, 'each lock released once');
      assert.deepEqual(await store.scan('held:', 10), []);
    } finally {
      await store.close();
    }
  });

  it('keeps every acknowledged write when its process is killed the moment the ack arrives', async () => {
    const path = freshPath();
    const script = join(scratch, 'killed.mjs');
    // The child kills itself (SIGKILL: no close, no exit handler) in the callback of the first
    // write of its last group: nothing of the event loop runs after the acknowledgement.
    writeFileSync(
      script,
      `const { SqliteStore } = await import(${JSON.stringify(new URL('../../src/store/sqlite.ts', import.meta.url).href)});
       const store = await SqliteStore.open(process.argv[2], { checkpointIntervalMs: 5 });
       for (let i = 0; i < 150; i += 1) await Promise.all([store.set('k' + i, 'v' + i, 60_000), store.increment('count', 1, 60_000)]);
       const deadline = Date.now() + 5000;
       while (store.checkpoints !== 'thread' && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
       if (store.checkpoints !== 'thread') process.exit(2);
       const last = [store.set('last', 'acknowledged', 60_000), store.compareAndSet('k0', 'v0', 'swapped', 60_000), store.increment('count', 1, 60_000)];
       last[0].then(() => process.kill(process.pid, 'SIGKILL'));`,
    );
    const { NODE_TEST_CONTEXT: _, ...env } = process.env;
    const child = spawn(process.execPath, ['--import', 'tsx', script, path], { env, stdio: 'inherit' });
    const killer = setTimeout(() => child.kill(), 30_000);
    const [code, signal] = (await once(child, 'exit')) as [number | null, string | null];
    clearTimeout(killer);
    assert.deepEqual({ code, signal }, { code: null, signal: 'SIGKILL' }, 'the child was killed, not closed');
    assert.ok(statSync(`${path}-wal`).size > 0, 'the killed process left its WAL behind (a clean close removes it)');
    const store = await SqliteStore.open(path);
    try {
      assert.equal((await store.get('last'))?.value, 'acknowledged');
      assert.equal((await store.get('k0'))?.value, 'swapped', 'the rest of the acknowledged group');
      assert.equal((await store.get('count'))?.value, '151');
      assert.equal((await store.scan('k', 200)).length, 150);
    } finally {
      await store.close();
    }
  });

  it('remembers what it read, and sees another connection\'s commit from the next turn on', async () => {
    const path = freshPath();
    const store = await SqliteStore.open(path);
    const otherProcess = new Database(path);
    try {
      await store.set('verdict', 'old', 60_000);
      assert.equal((await store.get('verdict'))?.value, 'old');
      assert.equal(await store.get('absent'), undefined);
      // Remembered: the same row, not one read again. (Not checked by reading a stale value after
      // the other commits: they fsync the WAL, which may take longer than TRUST_MS on a disk.)
      const remembered = store.peek('verdict');
      assert.equal(typeof remembered === 'object' && remembered.value, 'old', 'peek answers from the remembered row');
      assert.equal(store.peek('verdict'), remembered);
      otherProcess.prepare("UPDATE kv SET value = 'new' WHERE key = 'verdict'").run();
      otherProcess.prepare("INSERT INTO kv VALUES ('absent', 'here', ?)").run(Date.now() + 60_000);
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal((await store.get('verdict'))?.value, 'new');
      assert.equal((await store.get('absent'))?.value, 'here');
    } finally {
      otherProcess.close();
      await store.close();
    }
  });

  it('trusts remembered rows for at most a millisecond, even when checked in a check phase', async () => {
    const path = freshPath();
    const store = await SqliteStore.open(path);
    const otherProcess = new Database(path);
    try {
      await store.set('k', 'old', 60_000); // resumes in the check phase, after the commit
      assert.equal((await store.get('k'))?.value, 'old');
      otherProcess.prepare("UPDATE kv SET value = 'new' WHERE key = 'k'").run();
      // The next iteration's timers run before its check phase ends the turn's trust.
      await new Promise((resolve) => setTimeout(resolve, 2));
      assert.equal((await store.get('k'))?.value, 'new');
      otherProcess.prepare("UPDATE kv SET value = 'newer' WHERE key = 'k'").run();
      const spinUntil = performance.now() + 2;
      while (performance.now() < spinUntil); // the same turn, but past the bound
      assert.equal((await store.get('k'))?.value, 'newer');
    } finally {
      otherProcess.close();
      await store.close();
    }
  });

  it('forgets a remembered row when its own write of that key commits', async () => {
    const store = await SqliteStore.open(freshPath());
    await store.set('k', 'one', 60_000);
    assert.equal((await store.get('k'))?.value, 'one');
    await store.set('k', 'two', 60_000);
    assert.equal((await store.get('k'))?.value, 'two');
    assert.equal(await store.increment('n', 1, 60_000), 1);
    assert.equal((await store.get('n'))?.value, '1');
    assert.equal(await store.increment('n', 1, 60_000), 2);
    assert.equal((await store.get('n'))?.value, '2');
    await store.delete('k');
    assert.equal(await store.get('k'), undefined);
    assert.equal(await store.compareAndSet('k', undefined, 'three', 60_000), true);
    assert.equal((await store.get('k'))?.value, 'three');
    await store.close();
  });

  it('reads its own write of a key it had read without asking SQLite for the row again', async (t) => {
    const store = await SqliteStore.open(freshPath());
    try {
      await store.set('k', 'one', 60_000);
      assert.equal((await store.get('k'))?.value, 'one');
      await store.set('k', 'two', 60_000);
      const { statements } = store as unknown as { statements: { getAny: Database.Statement; get: Database.Statement } };
      // Either way to a row: the read of the remembered rows, and the one behind a queued write.
      const rowReads = t.mock.method(statements.getAny, 'get');
      const queuedReads = t.mock.method(statements.get, 'get');
      assert.equal((await store.get('k'))?.value, 'two');
      assert.equal(rowReads.mock.callCount(), 0);
      assert.equal(queuedReads.mock.callCount(), 0);
    } finally {
      await store.close();
    }
  });

  it('sees at once a commit by another store of this process, even within the turn', async (t) => {
    // The monotonic clock stands still: the commit is seen for being one, not for taking longer than TRUST_MS.
    const frozen = performance.now();
    t.mock.method(performance, 'now', () => frozen);
    const path = freshPath();
    const reader = await SqliteStore.open(path);
    const writer = await SqliteStore.open(path);
    try {
      const written = writer.set('k', 'v', 60_000);
      assert.equal(await reader.get('k'), undefined);
      await written; // resumes right after the writer's commit, in the same turn as the read above
      assert.equal((await reader.get('k'))?.value, 'v');
    } finally {
      await reader.close();
      await writer.close();
    }
  });

  it('judges a remembered row against the clock, and never answers from memory after close', async () => {
    const clock = new ManualClock();
    const store = await SqliteStore.open(freshPath(), { clock });
    await store.set('k', 'v', 1000);
    assert.equal((await store.get('k'))?.value, 'v');
    clock.advance(999);
    assert.equal((await store.get('k'))?.value, 'v');
    clock.advance(1);
    assert.equal(await store.get('k'), undefined);
    await store.set('kept', 'v', 60_000);
    assert.equal((await store.get('kept'))?.value, 'v');
    await store.close();
    await assert.rejects(store.get('kept'), (err: unknown) => err instanceof StoreError && /get failed/.test(err.message));
  });

  it('gives every reader a copy of a remembered row', async () => {
    const store = await SqliteStore.open(freshPath());
    await store.set('k', 'v', 60_000);
    const first = await store.get('k');
    first!.value = 'changed by a caller';
    assert.equal((await store.get('k'))?.value, 'v');
    await store.close();
  });

  it('waits for another process\'s write lock without blocking the event loop', async () => {
    const path = freshPath();
    const store = await SqliteStore.open(path);
    const otherProcess = new Database(path);
    try {
      otherProcess.prepare('BEGIN IMMEDIATE').run();
      const started = performance.now();
      const written = store.set('k', 'v', 60_000);
      const readBehind = store.get('k');
      let settled = false;
      void written.then(() => {
        settled = true;
      });
      // Timers keep running while the write waits: the thread is not asleep in SQLite.
      for (let i = 0; i < 5; i += 1) await new Promise((resolve) => setTimeout(resolve, 2));
      assert.equal(settled, false, 'the write waits for the lock');
      otherProcess.prepare('COMMIT').run();
      await written;
      assert.equal((await readBehind)?.value, 'v', 'a read asked for meanwhile sees the write');
      // Asleep in SQLite's busy handler, the thread would wait out busyTimeoutMs (5 s) first.
      assert.ok(performance.now() - started < 2500, `took ${Math.round(performance.now() - started)} ms`);
    } finally {
      if (otherProcess.inTransaction) otherProcess.prepare('ROLLBACK').run();
      otherProcess.close();
      await store.close();
    }
  });

  it('fails the waiting writes, naming the lock, once busyTimeoutMs has passed', async () => {
    const path = freshPath();
    const store = await SqliteStore.open(path, { busyTimeoutMs: 30 });
    const otherProcess = new Database(path);
    try {
      otherProcess.prepare('BEGIN IMMEDIATE').run();
      const started = performance.now();
      await assert.rejects(store.set('k', 'v', 60_000), (err: unknown) => {
        assert.ok(err instanceof StoreError, 'err instanceof StoreError');
        // SQLite's words alone said neither that it waited nor for what.
        assert.equal(err.message, `sqlite store ${path}: set failed: database is locked (SQLITE_BUSY): another process held a lock on the file for longer than the busy timeout (30 ms)`);
        return true;
      });
      const waited = performance.now() - started;
      assert.ok(waited >= 30, `waited ${Math.round(waited)} ms`);
      // Retried every millisecond after the first two: the lock is given up about then, not much later.
      assert.ok(waited < 250, `waited ${Math.round(waited)} ms`);
      otherProcess.prepare('COMMIT').run();
      await store.set('k', 'after', 60_000);
      assert.equal((await store.get('k'))?.value, 'after', 'the store works again once the lock is free');
    } finally {
      if (otherProcess.inTransaction) otherProcess.prepare('ROLLBACK').run();
      otherProcess.close();
      await store.close();
    }
  });

  it('commits a group still waiting for the lock when it closes', async () => {
    const path = freshPath();
    const store = await SqliteStore.open(path);
    const otherProcess = new Database(path);
    otherProcess.prepare('BEGIN IMMEDIATE').run();
    const pending = store.set('last', 'word', 60_000);
    await new Promise((resolve) => setTimeout(resolve, 5));
    otherProcess.prepare('COMMIT').run();
    await store.close();
    await pending;
    assert.equal(otherProcess.prepare<[], { value: string }>("SELECT value FROM kv WHERE key = 'last'").get()?.value, 'word');
    otherProcess.close();
  });

  it('fails a group that first meets the lock in close() once busyTimeoutMs has passed, naming the lock', async () => {
    const path = freshPath();
    const store = await SqliteStore.open(path, { busyTimeoutMs: 30 });
    const { released } = await holdWriteLock(path, 400);
    const pending = store.set('last', 'word', 60_000);
    const failed = assert.rejects(pending, (err: unknown) => {
      assert.ok(err instanceof StoreError, String(err));
      assert.ok(err.message.startsWith(`sqlite store ${path}: set failed: `), err.message);
      assert.match(err.message, /locked/);
      return true;
    });
    // Closed in the turn of the write: the group first meets the lock in close()'s own commit.
    await store.close();
    await failed;
    await released;
  });

  it('commits a group still waiting for the lock when it closes with the checkpoint thread running', async () => {
    const path = freshPath();
    const store = await SqliteStore.open(path, { checkpointIntervalMs: 10 });
    for (let i = 0; i < 100; i += 1) await store.set(`k${i}`, 'v', 60_000);
    await threadTakesOver(store);
    const { released } = await holdWriteLock(path, 200);
    const pending = store.set('last', 'word', 60_000);
    await new Promise((resolve) => setTimeout(resolve, 5));
    // Stopping the thread takes milliseconds, in which the group is retried: it must not fail.
    await store.close();
    await pending;
    await released;
    const check = new Database(path, { readonly: true });
    assert.equal(check.prepare<[], { value: string }>("SELECT value FROM kv WHERE key = 'last'").get()?.value, 'word');
    check.close();
  });

  it('may be closed again at any time: every close() settles once the store is closed', async () => {
    let thread: Worker | undefined;
    const store = await SqliteStore.open(freshPath(), {
      checkpointIntervalMs: 10,
      startCheckpointer: (path, intervalMs) => (thread = startCheckpointer(path, intervalMs)),
    });
    for (let i = 0; i < 100; i += 1) await store.set(`k${i}`, 'v', 60_000);
    assert.ok(thread, 'thread');
    const first = store.close();
    await store.close();
    assert.equal(thread.threadId, -1, 'the second close() settled before the checkpoint thread had ended');
    await first;
    const late = store.set('late', 'v', 60_000);
    await store.close();
    await assert.rejects(late, StoreError);
  });

  it('lets a process that never closes it exit while the checkpoint thread runs', async () => {
    const script = join(scratch, 'never-closes.mjs');
    writeFileSync(
      script,
      `const { SqliteStore } = await import(${JSON.stringify(new URL('../../src/store/sqlite.ts', import.meta.url).href)});
       const store = await SqliteStore.open(${JSON.stringify(freshPath())}, { checkpointIntervalMs: 10 });
       for (let i = 0; i < 100; i += 1) await store.set('k' + i, 'v', 60_000);
       const deadline = Date.now() + 5000;
       while (store.checkpoints !== 'thread' && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
       if (store.checkpoints !== 'thread') process.exitCode = 2;`,
    );
    const { NODE_TEST_CONTEXT: _, ...env } = process.env;
    const child = spawn(process.execPath, ['--import', 'tsx', script], { env, stdio: 'inherit' });
    const killer = setTimeout(() => child.kill(), 10_000);
    const [code, signal] = (await once(child, 'exit')) as [number | null, string | null];
    clearTimeout(killer);
    assert.deepEqual({ code, signal }, { code: 0, signal: null }, 'the process ended on its own, the thread still running');
  });

  it('checkpoints the WAL in a worker thread once it has committed 100 groups, and removes the WAL on close', async () => {
    const path = freshPath();
    const reasons: string[] = [];
    const store = await SqliteStore.open(path, { checkpointIntervalMs: 10, onCheckpointerFailed: (reason) => reasons.push(reason) });
    assert.equal(store.checkpoints, 'sqlite', 'a short visit leaves checkpoints to SQLite');
    for (let i = 0; i < 100; i += 1) await store.set(`k${i}`, 'v', 60_000);
    assert.equal(store.checkpoints, 'sqlite', 'SQLite checkpoints until the thread runs');
    assert.equal(pragmaOf(store, 'wal_autocheckpoint'), 1000);
    await threadTakesOver(store);
    assert.equal(pragmaOf(store, 'wal_autocheckpoint'), 0, 'the store\'s connection no longer checkpoints in its commits');
    const before = statSync(path).size;
    await Promise.all(Array.from({ length: 500 }, (_, i) => store.set(`more${i}`, 'x'.repeat(200), 60_000)));
    // SQLite's own checkpoint is off now: only the thread copies pages into the database file.
    await until(() => statSync(path).size > before);
    assert.ok(statSync(path).size > before, `the database file grew from ${before} bytes`);
    await store.close();
    assert.deepEqual(reasons, [], 'a thread stopped by close() has not failed');
    assert.equal(existsSync(`${path}-wal`), false, 'the last connection to close removes the WAL');
    const reopened = await SqliteStore.open(path);
    assert.equal((await reopened.get('more499'))?.value, 'x'.repeat(200));
    await reopened.close();
  });

  it('keeps the WAL bounded under a steady stream of commits (the thread restarts it)', async () => {
    const path = freshPath();
    const store = await SqliteStore.open(path, { checkpointIntervalMs: 5 });
    for (let i = 0; i < 100; i += 1) await store.set(`k${i}`, 'v', 60_000);
    await threadTakesOver(store);
    const before = statSync(`${path}-wal`).size;
    // One commit after another, as a busy daemon makes them: a passive checkpoint alone never
    // finds the WAL idle, and it grew by 66 MB here (8 to 10 MB with the restart).
    for (let i = 0; i < 20_000; i += 1) await store.set(`stream${i % 500}`, `${i}:${'x'.repeat(300)}`, 60_000);
    const grown = statSync(`${path}-wal`).size - before;
    assert.ok(grown < 48 * 1024 * 1024, `the WAL grew by ${grown} bytes`);
    await store.close();
  });

  // The bound above cannot tell a thread that never restarts: a passive checkpoint that happens
  // to finish between two commits lets the writer start the WAL again too (it did every few
  // seconds here). A restart holds the write lock while it copies the last frames, and the next
  // commit starts the WAL anew. A passive checkpoint takes that lock only to read a header it
  // found half written, for microseconds, and commits go on landing while it copies.
  it('restarts the WAL between two commits each time it holds more than 1000 frames', async () => {
    const path = freshPath();
    mkdirSync(dirname(path), { recursive: true });
    // The daemon's writer, without SQLite's automatic checkpoint, and told of a lock at once.
    const writer = new Database(path, { timeout: 0 });
    writer.pragma('journal_mode = WAL');
    writer.pragma('wal_autocheckpoint = 0');
    writer.exec('CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)');
    const thread = startCheckpointer(path, 5);
    const messages: unknown[] = [];
    let exited = false;
    thread.on('message', (message) => messages.push(message));
    thread.once('exit', () => (exited = true));
    assert.ok(await until(() => messages.length > 0), 'the thread started');
    assert.deepEqual(messages, [{ ready: true }]);
    // The WAL header's checkpoint sequence number (offset 12) rises each time a commit starts the WAL anew.
    const header = Buffer.alloc(32);
    const wal = openSync(`${path}-wal`, 'r');
    const sequence = (): number => {
      readSync(wal, header, 0, 32, 0);
      return header.readUInt32BE(12);
    };
    const begin = writer.prepare('BEGIN IMMEDIATE');
    const insert = writer.prepare('INSERT OR REPLACE INTO t VALUES (?, ?)');
    const commit = writer.prepare('COMMIT');
    let commits = 0;
    let locks = 0;
    let restartsAfterLock = 0;
    // The sequence number when a commit last met the lock; undefined once a commit got through.
    let atLock: number | undefined;
    // Commits back to back (a row of about a page each: two or three frames), 20 ms at a time.
    const restarted = await until(() => {
      for (const end = Date.now() + 20; Date.now() < end; ) {
        try {
          begin.run();
        } catch (err) {
          if (!(err instanceof Database.SqliteError && err.code === 'SQLITE_BUSY')) throw err;
          if (atLock === undefined) {
            locks += 1;
            atLock = sequence();
          }
          continue;
        }
        insert.run(commits % 1000, 'x'.repeat(3000));
        commit.run();
        commits += 1;
        if (atLock !== undefined && sequence() > atLock) restartsAfterLock += 1;
        atLock = undefined;
      }
      return restartsAfterLock >= 3;
    }, 10_000, 1);
    closeSync(wal);
    thread.postMessage('stop');
    assert.ok(await until(() => exited), 'the thread ended');
    writer.close();
    assert.ok(restarted, `in ${commits} commits, ${locks} met the checkpoint thread's write lock, and ${restartsAfterLock} of those next started the WAL anew (3 wanted)`);
    assert.deepEqual(messages, [{ ready: true }], 'the thread did not fail');
  });

  it('goes on while another connection\'s read transaction holds up its checkpoints, tells of it once and when they catch up, and loses no write', async () => {
    const path = freshPath();
    const delays: CheckpointDelay[] = [];
    const failures: string[] = [];
    const store = await SqliteStore.open(path, {
      checkpointIntervalMs: 5,
      startCheckpointer: (file, intervalMs) => startCheckpointer(file, intervalMs, { reportAfterMs: 30 }),
      onCheckpointDelay: (delay) => delays.push(delay),
      onCheckpointerFailed: (reason) => failures.push(reason),
    });
    for (let i = 0; i < 100; i += 1) await store.set(`k${i}`, 'v', 60_000);
    await threadTakesOver(store);
    // A backup, or a long query of another program: its snapshot keeps every later frame out of the file.
    const reader = new Database(path, { readonly: true });
    reader.exec('BEGIN');
    assert.equal(reader.prepare('SELECT count(*) FROM kv').pluck().get(), 100);
    try {
      // About a page a row, ten rows a commit: over 1000 frames, which the thread wants to restart.
      for (let i = 0; i < 150; i += 1) await Promise.all(Array.from({ length: 10 }, (_, j) => store.set(`big${i * 10 + j}`, 'x'.repeat(3000), 60_000)));
      assert.ok(await until(() => delays.length > 0, 10_000, 5), 'held up told');
      const [heldUp] = delays;
      assert.ok(heldUp?.state === 'held up' && heldUp.walFrames !== undefined && heldUp.walFrames > 1000, JSON.stringify(heldUp));
      assert.match(heldUp.reason, /^a read transaction of another connection keeps \d+ frames from the database file$/);
      await store.set('during', 'v', 60_000);
      // Rounds go on meeting the reader (several at 5 ms): told once, not once a round.
      await new Promise((resolve) => setTimeout(resolve, 40));
      assert.equal(delays.length, 1, JSON.stringify(delays));
    } finally {
      reader.exec('ROLLBACK');
      reader.close();
    }
    assert.ok(await until(() => delays.length > 1, 10_000, 5), 'caught up told');
    assert.equal(delays[1]?.state, 'caught up');
    assert.deepEqual(failures, [], 'the thread did not fail');
    assert.equal(store.checkpoints, 'thread', 'and still checkpoints');
    await store.set('after', 'v', 60_000);
    await store.close();
    const check = new Database(path, { readonly: true });
    assert.equal(check.prepare("SELECT count(*) FROM kv WHERE key LIKE 'big%'").pluck().get(), 1500, 'every acknowledged write is in the file');
    assert.deepEqual(check.prepare("SELECT key FROM kv WHERE key IN ('during', 'after') ORDER BY key").pluck().all(), ['after', 'during']);
    check.close();
    assert.equal(delays.length, 2);
  });

  it('leaves checkpoints to SQLite when the thread fails before it runs', async () => {
    const path = freshPath();
    let exited = false;
    // Its exit is watched from the start (before the store's own listeners): the store has had
    // its 'error' by then, however long the thread took to start and fail. Polled, because the
    // store unrefs the thread, which then keeps no promise of its exit alive.
    const failing = () => {
      const thread = new Worker("throw new Error('no checkpoints today')", { eval: true });
      thread.once('exit', () => (exited = true));
      return thread;
    };
    const reasons: string[] = [];
    const store = await SqliteStore.open(path, { startCheckpointer: failing, onCheckpointerFailed: (reason) => reasons.push(reason) });
    for (let i = 0; i < 100; i += 1) await store.set(`k${i}`, 'v', 60_000);
    assert.ok(await until(() => exited), 'the thread failed');
    assert.equal(store.checkpoints, 'sqlite');
    assert.deepEqual(reasons, ['the checkpoint thread failed: no checkpoints today'], 'told once, its error and not its exit');
    await store.set('after', 'v', 60_000);
    assert.equal((await store.get('after'))?.value, 'v');
    await store.close();
  });

  it('hands checkpoints back to SQLite when the thread fails, and goes on working', async () => {
    const path = freshPath();
    let thread: Worker | undefined;
    // Ready at once, failing when the test says so.
    const failing = () =>
      (thread = new Worker(
        "const { parentPort } = require('node:worker_threads'); parentPort.on('message', () => { throw new Error('no checkpoints today'); }); parentPort.postMessage({ ready: true });",
        { eval: true },
      ));
    const reasons: string[] = [];
    const store = await SqliteStore.open(path, { startCheckpointer: failing, onCheckpointerFailed: (reason) => reasons.push(reason) });
    for (let i = 0; i < 100; i += 1) await store.set(`k${i}`, 'v', 60_000);
    await threadTakesOver(store);
    assert.deepEqual(reasons, []);
    let exited = false;
    thread?.once('exit', () => (exited = true));
    thread?.postMessage('fail');
    await until(() => store.checkpoints !== 'thread');
    assert.equal(store.checkpoints, 'sqlite');
    assert.equal(pragmaOf(store, 'wal_autocheckpoint'), 1000, 'SQLite checkpoints in commits again');
    // Polled: the store unrefs the thread, so a promise of its exit would not keep the test alive.
    assert.ok(await until(() => exited), 'the thread ended');
    assert.deepEqual(reasons, ['the checkpoint thread failed: no checkpoints today'], 'told once');
    await store.set('after', 'v', 60_000);
    assert.equal((await store.get('after'))?.value, 'v');
    await store.close();
    assert.equal(reasons.length, 1);
  });

  it('tells why the checkpoint thread failed, with SQLite\'s code, when it cannot open the file', async () => {
    const path = freshPath();
    let exited = false;
    const reasons: string[] = [];
    const store = await SqliteStore.open(path, {
      checkpointIntervalMs: 10,
      startCheckpointer: (file, intervalMs) => {
        const thread = startCheckpointer(file, intervalMs);
        thread.once('exit', () => (exited = true));
        return thread;
      },
      onCheckpointerFailed: (reason) => reasons.push(reason),
    });
    for (let i = 0; i < 99; i += 1) await store.set(`k${i}`, 'v', 60_000);
    // Removed by a cleanup job: this connection writes on to the open file, the thread finds none.
    rmSync(path);
    await store.set('k99', 'v', 60_000);
    assert.ok(await until(() => exited, 10_000), 'the thread ended');
    assert.deepEqual(reasons, ['the checkpoint thread failed: unable to open database file (SQLITE_CANTOPEN)']);
    assert.equal(store.checkpoints, 'sqlite');
    await store.close();
  });

  it('tells why when the checkpoint thread cannot start at all', async () => {
    const reasons: string[] = [];
    const store = await SqliteStore.open(freshPath(), {
      startCheckpointer: () => {
        throw new Error('out of threads');
      },
      onCheckpointerFailed: (reason) => reasons.push(reason),
    });
    for (let i = 0; i < 150; i += 1) await store.set(`k${i}`, 'v', 60_000);
    assert.deepEqual(reasons, ['cannot start the checkpoint thread: out of threads']);
    assert.equal(store.checkpoints, 'sqlite');
    await store.close();
  });

  it('has nobody checkpoint an in-memory database', async () => {
    const started: string[] = [];
    const store = await SqliteStore.open(':memory:', {
      startCheckpointer: (file, intervalMs) => {
        started.push(file);
        return startCheckpointer(file, intervalMs);
      },
    });
    for (let i = 0; i < 150; i += 1) await store.set(`k${i}`, 'v', 60_000);
    assert.equal(store.checkpoints, 'none');
    assert.deepEqual(started, [], 'no thread for a database without a file');
    await store.close();
  });

  it('brings a version 1 file (rowid table, expiry index) to version 2 with every row as it was', async () => {
    const path = join(scratch, 'version-1.sqlite');
    const rows: Version1Row[] = Array.from({ length: 3000 }, (_, i) => [`grey:t:k${i}`, `v${i}`, i % 2 === 0 ? 1_000 : 5_000]);
    writeVersion1Store(path, [...rows, ['addr:\u00e9l\u00e8ve@exemple.fr', '{"verdict":"deliverable"}', 9_000]]);
    // A rowid table's TEXT PRIMARY KEY allows NULL (an outside edit); no get() can reach such a row.
    const edit = new Database(path);
    edit.prepare('INSERT INTO kv (key, value, expires_at) VALUES (NULL, ?, ?)').run('orphan', 9_000);
    edit.close();
    const clock = new ManualClock(2_000);
    const store = await SqliteStore.open(path, { clock });
    assert.deepEqual(store.schemaUpgrade, { from: 1, to: 2, compacted: true });
    const pages = new Database(path, { readonly: true });
    assert.equal(pages.pragma('freelist_count', { simple: true }), 0, 'the old table\'s pages were given back');
    pages.close();
    assert.deepEqual(await store.get('grey:t:k1'), { value: 'v1', expiresAt: 5_000 });
    assert.equal(await store.get('grey:t:k0'), undefined, 'expired before, expired after');
    assert.deepEqual(await store.get('addr:\u00e9l\u00e8ve@exemple.fr'), { value: '{"verdict":"deliverable"}', expiresAt: 9_000 });
    assert.equal((await store.scan('grey:t:', 5000)).length, 1500);
    assert.equal(await store.purgeExpired(), 1500);
    await store.close();
    const db = new Database(path, { readonly: true });
    try {
      assert.equal(db.pragma('user_version', { simple: true }), 2);
      assert.equal(db.prepare('SELECT count(*) FROM kv').pluck().get(), 1501);
      assert.deepEqual(db.prepare("SELECT name FROM sqlite_schema WHERE type IN ('table', 'index')").pluck().all(), ['kv'], 'the expiry index went with the old table');
      assert.match(String(db.prepare("SELECT sql FROM sqlite_schema WHERE name = 'kv'").pluck().get()), /WITHOUT ROWID$/);
    } finally {
      db.close();
    }
  });

  it('names a schema upgrade the file itself makes fail as a configuration problem, and leaves the file as it was', async () => {
    const path = join(scratch, 'version-1-with-view.sqlite');
    writeVersion1Store(path, [['grey:t:a', 'v', 9_000]]);
    // Another program's view over kv: the upgrade's DROP TABLE kv fails on it ("error in view live").
    const edit = new Database(path);
    edit.exec('CREATE VIEW live AS SELECT key FROM kv');
    edit.close();
    await assert.rejects(SqliteStore.open(path), (err: unknown) => {
      // Not StoreError: its exit 75 had systemd restart the daemon on the file for ever.
      assert.ok(err instanceof ConfigError, String(err));
      assert.match(err.message, /^sqlite store .*: upgrading the schema from version 1 to 2 failed: .*view live.*; the file is as it was/);
      return true;
    });
    const db = new Database(path, { readonly: true });
    try {
      assert.equal(db.pragma('user_version', { simple: true }), 1);
      assert.equal(db.prepare('SELECT value FROM kv WHERE key = ?').pluck().get('grey:t:a'), 'v');
    } finally {
      db.close();
    }
  });

  it('names a schema upgrade that finds the file damaged as damage, not an outage, and leaves the file as it was', async () => {
    const path = join(scratch, 'version-1-damaged.sqlite');
    writeVersion1Store(path, Array.from({ length: 3000 }, (_, i) => [`grey:t:k${i}`, 'v'.repeat(100), 9_000] as const));
    // A page of the table or of its indexes, which only the upgrade's copy and DROP TABLE read.
    const pages = statSync(path).size / 4096;
    const fd = openSync(path, 'r+');
    writeSync(fd, Buffer.alloc(64, 0xff), 0, 64, Math.floor(pages / 2) * 4096);
    closeSync(fd);
    await assert.rejects(SqliteStore.open(path), (err: unknown) => {
      // Not STORE_UNAVAILABLE: its exit 75 had systemd restart the daemon on the file for ever.
      assert.ok(err instanceof StoreDamagedError, String(err));
      assert.equal(err.code, 'STORE_DAMAGED', err.message);
      assert.ok(err.message.startsWith(`sqlite store ${path}: upgrading the schema from version 1 to 2 failed: database disk image is malformed (SQLITE_CORRUPT); the file is as it was (the upgrade is one transaction), and damaged: restore it from a backup`), err.message);
      assert.ok(err.message.includes(`${path}-wal`), err.message);
      return true;
    });
    const db = new Database(path, { readonly: true });
    try {
      assert.equal(db.pragma('user_version', { simple: true }), 1);
      assert.deepEqual(db.prepare("SELECT name FROM sqlite_schema WHERE type IN ('table', 'index') ORDER BY name").pluck().all(), ['kv', 'kv_expires_at', 'sqlite_autoindex_kv_1']);
    } finally {
      db.close();
    }
  });

  it('fails a schema upgrade that runs out of room with a StoreError naming the upgrade, SQLite\'s code and the room it needs, and leaves the file as it was', async () => {
    const path = join(scratch, 'version-1-no-room.sqlite');
    const rows: Version1Row[] = Array.from({ length: 30_000 }, (_, i) => [`grey:t:k${i}`, 'v'.repeat(100), 9_000]);
    writeVersion1Store(path, rows);
    // In WAL mode, as callout left a version 1 file.
    const wal = new Database(path);
    wal.pragma('journal_mode = WAL');
    wal.close();
    // A limit on the size of any file the child writes (RLIMIT_FSIZE, 512 KiB or 1 MiB as the
    // shell counts blocks): the copy of a 5 MB table cannot fit in the WAL, as on a full disk
    // (Node ignores SIGXFSZ, so the write fails: EFBIG, which SQLite calls SQLITE_IOERR_WRITE).
    const script = join(scratch, 'open-no-room.mjs');
    writeFileSync(
      script,
      `const { SqliteStore } = await import(${JSON.stringify(new URL('../../src/store/sqlite.ts', import.meta.url).href)});
       try { await (await SqliteStore.open(process.argv[2])).close(); process.stdout.write('opened'); }
       catch (err) { process.stdout.write(JSON.stringify({ name: err.constructor.name, message: err.message, code: err.cause?.code })); }`,
    );
    const { NODE_TEST_CONTEXT: _, ...env } = process.env;
    const child = spawn('/bin/sh', ['-c', 'ulimit -f 1024 && exec "$0" "$@"', process.execPath, '--import', 'tsx', script, path], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    await once(child, 'exit');
    const { name, message, code } = JSON.parse(out) as { name: string; message: string; code: string };
    assert.equal(name, 'StoreError', message);
    assert.ok(code === 'SQLITE_FULL' || code === 'SQLITE_IOERR_WRITE', code);
    assert.equal(
      message,
      `sqlite store ${path}: upgrading the schema from version 1 to 2 failed: ${code === 'SQLITE_FULL' ? 'database or disk is full' : 'disk I/O error'} (${code}); the file is as it was (the upgrade is one transaction); it needs free disk of about twice the file's size, and the next open tries again`,
    );
    const db = new Database(path, { readonly: true });
    try {
      assert.equal(db.pragma('user_version', { simple: true }), 1);
      assert.deepEqual(db.prepare("SELECT name FROM sqlite_schema WHERE type IN ('table', 'index') ORDER BY name").pluck().all(), ['kv', 'kv_expires_at', 'sqlite_autoindex_kv_1']);
      assert.equal(db.prepare('SELECT count(*) FROM kv').pluck().get(), rows.length);
    } finally {
      db.close();
    }
    // With room, the next open upgrades it.
    const store = await SqliteStore.open(path, { clock: new ManualClock(0) });
    assert.deepEqual(store.schemaUpgrade, { from: 1, to: 2, compacted: true });
    assert.deepEqual(await store.get('grey:t:k29999'), { value: 'v'.repeat(100), expiresAt: 9_000 });
    await store.close();
  });

  it('fails to upgrade a file whose write lock another process holds past the busy timeout, saying so, and leaves it as it was', async () => {
    const path = join(scratch, 'version-1-locked.sqlite');
    writeVersion1Store(path, [['grey:t:a', 'v', 9_000]]);
    const other = new Database(path);
    other.pragma('journal_mode = WAL');
    other.exec('BEGIN IMMEDIATE');
    try {
      await assert.rejects(SqliteStore.open(path, { busyTimeoutMs: 50 }), (err: unknown) => {
        // Waiting may mend it: exit 75, tried again.
        assert.ok(err instanceof StoreError, String(err));
        assert.equal(err.message, `sqlite store ${path}: open failed: database is locked (SQLITE_BUSY): another process held a lock on the file for longer than the busy timeout (50 ms)`);
        return true;
      });
      assert.equal(other.pragma('user_version', { simple: true }), 1);
    } finally {
      other.exec('ROLLBACK');
      other.close();
    }
    const store = await SqliteStore.open(path, { clock: new ManualClock(0) });
    assert.deepEqual(store.schemaUpgrade, { from: 1, to: 2, compacted: true });
    assert.equal((await store.get('grey:t:a'))?.value, 'v');
    await store.close();
  });

  it('refuses a version 1 file, or its directory, that it may not write as a configuration problem, and leaves it as it was', async () => {
    // Another user's child when this test runs as root (who may write anything), as for the WAL files below.
    const dir = mkdtempSync(join(tmpdir(), 'callout-sqlite-read-only-'));
    const script = join(dir, 'open.mjs');
    try {
      writeOpenScript(script);
      const asAnotherUser = process.getuid?.() === 0 ? ['as-nobody'] : [];
      const uid = asAnotherUser.length > 0 ? 65534 : process.getuid?.();
      for (const [what, dirMode, fileMode, problem] of [
        ['file', 0o777, 0o444, (path: string) => `cannot read and write ${path}: permission denied, running as uid ${uid} (EACCES)`],
        ['directory', 0o555, 0o666, (path: string) => `cannot write in ${dirname(path)}: permission denied, running as uid ${uid} (EACCES)`],
      ] as const) {
        const storeDir = join(dir, what);
        mkdirSync(storeDir);
        const path = join(storeDir, 'store.sqlite');
        writeVersion1Store(path, [['grey:t:a', 'v', 9_000]]);
        chmodSync(path, fileMode);
        chmodSync(storeDir, dirMode);
        chmodSync(dir, 0o755);
        const { name, message } = await runOpenScript(script, path, asAnotherUser);
        assert.equal(name, 'ConfigError', message);
        assert.ok(message.startsWith(`sqlite store ${path}: ${problem(path)}`), message);
        chmodSync(storeDir, 0o755);
        assert.deepEqual(readdirSync(storeDir), ['store.sqlite'], `${what}: no -wal or -shm file made`);
        const db = new Database(path, { readonly: true });
        assert.equal(db.pragma('user_version', { simple: true }), 1, what);
        assert.equal(db.pragma('journal_mode', { simple: true }), 'delete', `${what}: WAL mode not written into it`);
        db.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('purges only expired rows, in every stretch of the key order, and keeps the live ones', async () => {
    const clock = new ManualClock(0);
    const store = await SqliteStore.open(':memory:', { clock });
    // 3,001 keys: three stretches and one left over, with live and expired rows in each and at
    // the stretch boundaries, the empty key (below all others) and keys beyond the BMP.
    const keys = ['', ...Array.from({ length: 2999 }, (_, i) => `k${String(i).padStart(4, '0')}`), '\u{1F600}'];
    const expired = (i: number) => i % 3 !== 1;
    for (const [i, key] of keys.entries()) await store.set(key, String(i), expired(i) ? 10 : 1_000);
    clock.advance(10);
    const removed = await store.purgeExpired();
    assert.equal(removed, keys.filter((_, i) => expired(i)).length);
    const survivors = (await store.scan('', 10_000)).map((row) => row.key);
    assert.deepEqual(survivors, keys.filter((_, i) => !expired(i)).sort());
    assert.equal(await store.purgeExpired(), 0, 'nothing left to purge');
    await store.close();
  });

  it('purges in stretches, each its own turn, while reads answer at once and writes commit in between', async () => {
    const clock = new ManualClock();
    const store = await SqliteStore.open(':memory:', { clock });
    await Promise.all(Array.from({ length: 3500 }, (_, i) => store.set(`k${String(i).padStart(4, '0')}`, 'v', 10)));
    await store.set('live', 'kept', 60_000);
    clock.advance(10);
    let turns = 0;
    let purged = false;
    const countTurns = (): void => {
      turns += 1;
      if (!purged) setImmediate(countTurns);
    };
    setImmediate(countTurns);
    const purging = store.purgeExpired().then((removed) => {
      purged = true;
      return removed;
    });
    const read = await store.get('live').then((row) => ({ row, turnsBefore: turns }));
    assert.deepEqual(read, { row: { value: 'kept', expiresAt: clock.now() + 59_990 }, turnsBefore: 0 }, 'a read answers before the purge\'s first group commits');
    await new Promise((resolve) => setImmediate(resolve));
    const written = store.set('during', 'w', 60_000).then(() => purged);
    assert.equal(await written, false, 'a write asked for during the purge commits before it ends');
    assert.equal(await purging, 3500);
    assert.ok(turns >= 4, `four stretches of 1,000 keys take a turn each (${turns} turns)`);
    assert.deepEqual((await store.scan('', 10)).map((row) => row.key), ['during', 'live']);
    await store.close();
  });

  it('waits a timer tick between stretches, not only a turn, so the checkpoint thread can restart the WAL', async (t) => {
    const clock = new ManualClock();
    const path = freshPath();
    const store = await SqliteStore.open(path, { clock });
    await Promise.all(Array.from({ length: 3500 }, (_, i) => store.set(`k${String(i).padStart(4, '0')}`, 'v', 10)));
    clock.advance(10);
    const rows = new Database(path, { readonly: true });
    const count = () => rows.prepare('SELECT count(*) FROM kv').pluck().get();
    const turns = async (n: number) => {
      for (let i = 0; i < n; i += 1) await new Promise((resolve) => setImmediate(resolve));
    };
    t.mock.timers.enable({ apis: ['setTimeout'] });
    try {
      const purging = store.purgeExpired();
      const left: unknown[] = [];
      for (let stretch = 0; stretch < 3; stretch += 1) {
        await turns(20);
        left.push(count());
        t.mock.timers.tick(1);
      }
      await turns(20);
      assert.deepEqual(left, [2500, 1500, 500], 'one stretch of 1,000 keys per timer tick, however many turns pass');
      assert.equal(await purging, 3500);
    } finally {
      t.mock.timers.reset();
      rows.close();
      await store.close();
    }
  });

  it('ends a purge still running when it closes at the stretch close() commits, without an error', async () => {
    const clock = new ManualClock();
    const store = await SqliteStore.open(freshPath(), { clock });
    await Promise.all(Array.from({ length: 3500 }, (_, i) => store.set(`k${String(i).padStart(4, '0')}`, 'v', 10)));
    clock.advance(10);
    const purging = store.purgeExpired();
    // As `callout serve` stops: the purge timer's last purge has its first stretch queued.
    await store.close();
    assert.equal(await purging, 1000, 'the stretch queued at close() was committed, and the purge went no further');
    await assert.rejects(store.purgeExpired(), StoreError, 'a purge begun after close() fails as any use does');
  });

  // Waiting mends neither: they are the configuration's to fix (exit 78), not a store that is down (75).
  it('rejects a file that is not a database as a configuration problem, naming the path', async () => {
    const path = join(scratch, 'corrupt.sqlite');
    writeFileSync(path, 'this is not an SQLite database, just text that is long enough to fill a header '.repeat(20));
    await assert.rejects(SqliteStore.open(path), (err: unknown) => {
      assert.ok(err instanceof ConfigError, 'err instanceof ConfigError');
      assert.equal(err.code, 'CONFIG_INVALID');
      assert.ok(err.message.includes(path), err.message);
      assert.match(err.message, /cannot open: file is not a database \(check the path: store\.path and dataDir in the configuration, or the command-line flag that gave it\)$/);
      // Every command that opens the store says it: `serve` takes no --store, which it was told to check.
      assert.doesNotMatch(err.message, /--store|--cache/);
      assert.ok(err.cause instanceof Error, 'err.cause instanceof Error');
      return true;
    });
  });

  it('rejects a file of one byte, which SQLite would take for an empty one, and leaves it as it was', async () => {
    const path = join(scratch, 'one-byte.sqlite');
    writeFileSync(path, 'x');
    await assert.rejects(SqliteStore.open(path), (err: unknown) => {
      assert.ok(err instanceof ConfigError, String(err));
      assert.equal(err.message, `sqlite store ${path}: ${path} is not a SQLite database (it holds a single byte) (check the path: store.path and dataDir in the configuration, or the command-line flag that gave it)`);
      return true;
    });
    assert.equal(readFileSync(path, 'utf8'), 'x');
    assert.equal(existsSync(`${path}-wal`), false);
  });

  it('rejects a damaged (truncated) database as damage, not an outage, naming the path and what to do', async () => {
    const path = freshPath();
    const store = await SqliteStore.open(path);
    await Promise.all(Array.from({ length: 2000 }, (_, i) => store.set(`grey:${i}:${'x'.repeat(40)}`, 'v'.repeat(40), 60_000)));
    await store.close();
    const whole = readFileSync(path);
    writeFileSync(path, whole.subarray(0, whole.length >> 1));
    await assert.rejects(SqliteStore.open(path), (err: unknown) => {
      // Not STORE_UNAVAILABLE: its exit 75 had systemd restart the daemon on the file for ever.
      assert.ok(err instanceof StoreDamagedError, String(err));
      assert.equal(err.code, 'STORE_DAMAGED', err.message);
      assert.ok(err.message.startsWith(`sqlite store ${path}: cannot open: database disk image is malformed: the file is damaged;`), err.message);
      assert.ok(err.message.includes(`${path}-wal`), err.message);
      assert.equal((err.cause as { code?: unknown }).code, 'SQLITE_CORRUPT');
      return true;
    });
  });

  it('rejects a path whose directory cannot be created, or one under /proc, as a configuration problem, naming the path', async () => {
    const blocker = join(scratch, 'a-regular-file');
    writeFileSync(blocker, 'x');
    for (const path of [join(blocker, 'sub', 'store.sqlite'), '/proc/callout-test/store.sqlite']) {
      // Node's own mkdir -p never returned for the second.
      await assert.rejects(SqliteStore.open(path), (err: unknown) => {
        assert.ok(err instanceof ConfigError, String(err));
        assert.ok(err.message.includes(path), err.message);
        return true;
      });
    }
  });

  it('rejects a WAL or shared-memory file it cannot write (left by another user) as a configuration problem, naming it', async () => {
    // A directory and file any user may write; only the WAL and -shm files, made by this
    // process's connection, are read-only for the opener: a child that becomes another user when
    // this test runs as root (who may write anything), else mode 0444. The child changes user
    // only once its modules and SQLite's native addon are loaded: a checkout in a directory only
    // root may enter (a clean clone under mktemp -d) is then no obstacle.
    const dir = mkdtempSync(join(tmpdir(), 'callout-sqlite-companions-'));
    const path = join(dir, 'store.sqlite');
    const script = join(dir, 'open.mjs');
    const leftBehind = new Database(path);
    try {
      chmodSync(dir, 0o777);
      leftBehind.pragma('journal_mode = WAL');
      leftBehind.exec('CREATE TABLE kept (x)');
      chmodSync(path, 0o666);
      writeOpenScript(script);
      const asAnotherUser = process.getuid?.() === 0 ? ['as-nobody'] : [];
      // Each of the two alone: the other writable.
      for (const companion of ['-wal', '-shm']) {
        for (const each of ['-wal', '-shm']) chmodSync(path + each, each === companion ? 0o444 : 0o666);
        const { name, message } = await runOpenScript(script, path, asAnotherUser);
        assert.equal(name, 'ConfigError', message);
        assert.ok(message.includes(`cannot read and write ${path}${companion}, which SQLite keeps beside the file: permission denied, running as uid ${asAnotherUser.length > 0 ? 65534 : process.getuid?.()} (EACCES)`), message);
      }
    } finally {
      leftBehind.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('waits while another process switches a new file to WAL, which SQLite refuses at once', async () => {
    const path = join(scratch, 'switching.sqlite');
    // A rollback-journal file with a write in progress: the state another process's switch leaves it in.
    const other = new Database(path);
    other.exec('BEGIN IMMEDIATE;');
    const probe = new Database(path, { timeout: 1000 });
    assert.throws(() => probe.pragma('journal_mode = WAL'), /database is locked/, 'SQLite answers SQLITE_BUSY without waiting');
    probe.close();
    const released = new Promise<void>((resolve) =>
      setTimeout(() => {
        other.exec('COMMIT');
        other.close();
        resolve();
      }, 60),
    );
    const store = await SqliteStore.open(path, { busyTimeoutMs: 2000 });
    await released;
    await store.set('k', 'v', 60_000);
    assert.equal((await store.get('k'))?.value, 'v');
    await store.close();
    const check = new Database(path, { readonly: true });
    assert.equal(check.pragma('journal_mode', { simple: true }), 'wal');
    check.close();

    const stuckPath = join(scratch, 'stuck.sqlite');
    const holder = new Database(stuckPath);
    // Nothing committed: a file with another program's tables would be refused before any wait.
    holder.exec('BEGIN IMMEDIATE; CREATE TABLE other (x);');
    const started = performance.now();
    await assert.rejects(SqliteStore.open(stuckPath, { busyTimeoutMs: 100 }), (err: unknown) => {
      assert.ok(err instanceof StoreError, 'err instanceof StoreError');
      assert.ok(err.message.includes(`${stuckPath}: open failed: database is locked`), err.message);
      return true;
    });
    assert.ok(performance.now() - started >= 100, 'it waited the busy timeout before giving up');
    holder.exec('ROLLBACK');
    holder.close();
  });

  it('rejects a schema newer than it knows, and leaves the file alone (its journal mode too)', async () => {
    // 3: the very next version, which this one must not take for its own and write 2 over.
    for (const version of [3, 99]) {
      const path = join(scratch, `future-${version}.sqlite`);
      const db = new Database(path);
      db.pragma(`user_version = ${version}`);
      db.close();
      await assert.rejects(SqliteStore.open(path), (err: unknown) => {
        assert.ok(err instanceof ConfigError, 'a newer callout is needed: waiting will not mend it');
        assert.ok(err.message.includes(path), err.message);
        assert.match(err.message, new RegExp(`schema version ${version} is newer`));
        return true;
      });
      const check = new Database(path, { readonly: true });
      assert.equal(check.pragma('user_version', { simple: true }), version);
      assert.equal(check.pragma('journal_mode', { simple: true }), 'delete', 'not switched to WAL mode');
      check.close();
    }
  });

  it('refuses a database of another program (tables or views, no schema version of ours), and leaves it alone', async () => {
    // A view alone: our CREATE TABLE kv failed on it as a passing fault (StoreError, exit 75), retried for ever.
    for (const [name, schema] of [['foreign', 'CREATE TABLE accounts (id INTEGER)'], ['foreign-kv', 'CREATE TABLE kv (k, v)'], ['foreign-view', 'CREATE VIEW kv AS SELECT 1 AS x']] as const) {
      const path = join(scratch, `${name}.sqlite`);
      const db = new Database(path);
      db.exec(schema);
      db.close();
      await assert.rejects(SqliteStore.open(path), (err: unknown) => {
        // A wrong path, not a passing fault: exit 78 and the path named, not 75.
        assert.ok(err instanceof ConfigError, `${name}: ${String(err)}`);
        assert.ok(err.message.includes(path), err.message);
        assert.match(err.message, /another program's tables/);
        return true;
      });
      const check = new Database(path, { readonly: true });
      assert.deepEqual(check.prepare("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')").pluck().all(), [schema.split(' ')[2]]);
      // WAL mode is written into the file and outlives the connection: the other program's
      // file keeps its rollback journal (WAL needs shared memory, and no network file system).
      assert.equal(check.pragma('journal_mode', { simple: true }), 'delete', `${name}: journal mode`);
      check.close();
    }
  });

  it('names damage it meets after open, which it cannot read past, and what to do', async () => {
    const path = freshPath();
    await writeDamagedStore(path, 'after-schema');
    const damaged = await SqliteStore.open(path);
    try {
      const advice = `the file is damaged; stop callout serve, then restore it from a backup, or move it away with the ${path}-wal and ${path}-shm files beside it and callout starts an empty store`;
      for (const [operation, attempt] of [['get', () => damaged.get('grey:1')], ['set', () => damaged.set('grey:1', 'v', 60_000)], ['scan', () => damaged.scan('grey:', 10)]] as const) {
        await assert.rejects(attempt(), (err: unknown) => {
          // A fault as any other (policy.faultAction), which the log line names as what it is, and
          // a command exits 78 on (its code): waiting does not mend it.
          assert.ok(err instanceof StoreDamagedError, String(err));
          assert.equal(err.code, 'STORE_DAMAGED', err.message);
          assert.equal(err.message, `sqlite store ${path}: ${operation} failed: database disk image is malformed (SQLITE_CORRUPT): ${advice}`);
          // No outage either, which a later write would end: damage stays until someone mends it.
          assert.equal(err.outage, false, `${operation}: damage taken for an outage`);
          return true;
        });
      }
    } finally {
      await damaged.close();
    }
  });

  it('says that the disk is full when it cannot open a store for want of room (not only "disk I/O error")', async (t) => {
    const directory = join(scratch, 'full-disk');
    mkdirSync(directory);
    const existing = join(directory, 'store.sqlite');
    const store = await SqliteStore.open(existing);
    await store.set('grey:1', 'v', 60_000);
    await store.close();
    const script = join(scratch, 'open-full.mjs');
    writeOpenScript(script);
    // A file system of its own, filled, in a mount namespace of the child's (as root, or in a
    // user namespace where the kernel allows them).
    const mount = join(directory, 'mount');
    mkdirSync(mount);
    const { NODE_TEST_CONTEXT: _, ...env } = process.env;
    const shell = 'mount -t tmpfs -o size=256k tmpfs "$1" && cp "$2" "$1/" && { dd if=/dev/zero of="$1/filler" bs=4k 2>/dev/null; exec "$3" --import tsx "$4" "$1/$5"; }';
    const results: Array<{ name: string; message: string }> = [];
    for (const name of ['store.sqlite', 'new.sqlite']) {
      const child = spawn('unshare', ['--map-root-user', '--mount', 'sh', '-c', shell, 'sh', mount, existing, process.execPath, script, name], { env, stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
      // No unshare(1) at all ('error') is no mount namespace either.
      const status = await once(child, 'exit').then(([code]) => code as number | null, () => null);
      if (status !== 0 || out === '') {
        t.skip('no mount namespace to make a full file system in');
        return;
      }
      results.push(JSON.parse(out) as { name: string; message: string });
    }
    const [old, fresh] = results;
    // The existing file's -shm cannot be made: SQLITE_IOERR_SHMSIZE, "disk I/O error".
    assert.equal(old?.name, 'StoreError', old?.message);
    assert.match(old?.message ?? '', new RegExp(`^sqlite store ${mount}/store\\.sqlite: open failed: disk I/O error \\(SQLITE_IOERR_SHMSIZE\\): the file system of ${mount} is full \\(\\d+ bytes free\\): make room there, and the next open tries again$`));
    assert.equal(fresh?.name, 'StoreError', fresh?.message);
    assert.match(fresh?.message ?? '', new RegExp(`^sqlite store ${mount}/new\\.sqlite: open failed: .* \\((SQLITE_FULL|SQLITE_IOERR_[A-Z]+)\\): the file system of ${mount} is full \\(\\d+ bytes free\\): make room there, and the next open tries again$`));
  });

  it('takes a full disk (SQLITE_FULL) for an outage, which ends at the first write once there is room', async () => {
    const store = await SqliteStore.open(freshPath());
    try {
      await store.set('k', 'old', 60_000);
      // The store's own connection may make the file no page larger: SQLite's own SQLITE_FULL, as on a full disk.
      const limit = pragmaOf(store, 'max_page_count');
      pragmaOf(store, `max_page_count = ${String(pragmaOf(store, 'page_count'))}`);
      const value = 'v'.repeat(64 * 1024);
      await assert.rejects(store.set('big', value, 60_000), (err: unknown) => {
        assert.ok(err instanceof StoreError && !(err instanceof StoreDamagedError), String(err));
        assert.equal((err.cause as { code?: unknown } | undefined)?.code, 'SQLITE_FULL', err.message);
        assert.match(err.message, /set failed: database or disk is full$/);
        assert.equal(err.outage, true, `a full disk taken for no outage: ${err.message}`);
        return true;
      });
      pragmaOf(store, `max_page_count = ${String(limit)}`);
      await store.set('big', value, 60_000);
      assert.equal((await store.get('big'))?.value, value, 'not written once there was room');
      assert.equal((await store.get('k'))?.value, 'old');
    } finally {
      await store.close();
    }
  });

  it('names the path and operation when a statement fails', async () => {
    const path = freshPath();
    const store = await SqliteStore.open(path);
    await store.close();
    await assert.rejects(store.get('k'), (err: unknown) => {
      assert.ok(err instanceof StoreError, 'err instanceof StoreError');
      assert.ok(err.message.startsWith(`sqlite store ${path}: get failed:`), err.message);
      return true;
    });
  });

  it('commits the writes of one turn in one transaction, each settling after the commit', async () => {
    const path = freshPath();
    const store = await SqliteStore.open(path);
    const observer = new Database(path, { readonly: true });
    const writes = Array.from({ length: 50 }, (_, i) => store.set(`k${i}`, `v${i}`, 60_000));
    const counted = store.increment('c', 2, 60_000);
    // A read asked for in the same turn queues behind those writes and sees them.
    const readBack = store.get('k49');
    assert.equal(observer.prepare<[], { n: number }>('SELECT count(*) AS n FROM kv').get()!.n, 0, 'nothing is written before the turn ends');
    await Promise.all(writes);
    assert.equal(await counted, 2);
    assert.equal((await readBack)?.value, 'v49');
    assert.equal(observer.prepare<[], { n: number }>('SELECT count(*) AS n FROM kv').get()!.n, 51, 'all committed once the promises settle');
    observer.close();
    await store.close();
  });

  it('rejects a failing write alone; the rest of its group commits', async () => {
    const store = await SqliteStore.open(freshPath());
    await store.set('text', 'not a number', 60_000);
    const results = await Promise.allSettled([store.set('a', '1', 60_000), store.increment('text', 1, 60_000), store.set('b', '2', 60_000)]);
    assert.deepEqual(results.map((r) => r.status), ['fulfilled', 'rejected', 'fulfilled']);
    assert.ok((results[1] as PromiseRejectedResult).reason instanceof StoreError, '(results[1] as PromiseRejectedResult).reason instanceof StoreError');
    assert.equal((await store.get('a'))?.value, '1');
    assert.equal((await store.get('b'))?.value, '2');
    assert.equal((await store.get('text'))?.value, 'not a number');
    await store.close();
  });

  it('fails every write of a group whose transaction SQLite rolled back (as on a full disk), remembers none of it, and goes on', async () => {
    const path = freshPath();
    const store = await SqliteStore.open(path);
    await store.set('k', 'old', 60_000);
    assert.equal((await store.get('k'))?.value, 'old');
    // SQLITE_FULL or an I/O error in a statement ends the whole transaction, as RAISE(ROLLBACK) does.
    const edit = new Database(path);
    edit.exec("CREATE TRIGGER full BEFORE INSERT ON kv WHEN NEW.key = 'boom' BEGIN SELECT RAISE(ROLLBACK, 'database or disk is full'); END");
    const results = await Promise.allSettled([store.set('k', 'new', 60_000), store.increment('n', 1, 60_000), store.set('boom', 'x', 60_000), store.set('after', 'y', 60_000)]);
    assert.deepEqual(results.map((r) => r.status), ['rejected', 'rejected', 'rejected', 'rejected']);
    for (const result of results) assert.match(String((result as PromiseRejectedResult).reason), /StoreError: .*database or disk is full/);
    assert.deepEqual(store.peek('k'), { value: 'old', expiresAt: (await store.get('k'))?.expiresAt });
    assert.equal(await store.get('n'), undefined);
    assert.equal(await store.get('after'), undefined, 'a write after the failure was not committed on its own');
    edit.exec('DROP TRIGGER full');
    edit.close();
    assert.equal(await store.increment('n', 1, 60_000), 1, 'the store goes on once the cause is gone');
    await store.close();
  });

  it('writes what is queued before it closes', async () => {
    const path = freshPath();
    const store = await SqliteStore.open(path);
    const pending = store.set('last', 'word', 60_000);
    await store.close();
    await pending;
    const reopened = await SqliteStore.open(path);
    assert.equal((await reopened.get('last'))?.value, 'word');
    await reopened.close();
  });
});
