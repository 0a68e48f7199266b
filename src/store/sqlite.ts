/**
 * NAME
 *   store/sqlite - the persistent Store in one SQLite file (better-sqlite3)
 *
 * DESCRIPTION
 *   One table, kv(key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at INTEGER NOT NULL)
 *   WITHOUT ROWID: one b-tree in key order, so a write changes one page and a key is stored once
 *   (schema version 1, a rowid table with an index on the key and one on expires_at, changed up
 *   to three pages, and a commit writes every page it changed to the WAL; version 2 copies it
 *   over). The schema version lives in PRAGMA user_version and is brought up to date on open,
 *   inside a transaction, so a policy daemon and a CLI opening the same file at once cannot
 *   both migrate it. Expiry is judged against the injected Clock in the SQL itself
 *   (expires_at > now); expired rows stay until purgeExpired() removes them.
 *
 *   Every statement is prepared once. setIfAbsent is a single upsert whose update only applies to
 *   an expired row; compareAndSet is that upsert when it expects absence, otherwise one UPDATE
 *   guarded by the expected value and liveness, and deleteIf one DELETE guarded the same way, so
 *   each is atomic on its own; increment runs in a BEGIN IMMEDIATE transaction (read, check,
 *   write) so two processes never lose an increment and an existing counter keeps its original
 *   expiry.
 *
 *   better-sqlite3 is synchronous. Writes are committed in groups: every write asked for during
 *   one turn of the event loop runs, in order, in one BEGIN IMMEDIATE transaction at the end of
 *   that turn (setImmediate), and each promise settles once that transaction has committed, so
 *   an acknowledged write is never lost (to the durability synchronous=NORMAL gives). A write
 *   transaction of its own costs about 20 µs, most of it the commit; grouped, a write costs a
 *   few, which is what a policy service answering many connections at once needs. A write that
 *   fails on its own (a statement error) rejects alone and the rest of its group commits; when
 *   the commit fails, every write of the group rejects. A read of a key runs at once unless a
 *   waiting write of that key may change it, and then queues behind the waiting writes, so a
 *   process always reads what it wrote; a read of one key never waits for another key's commit
 *   (greylisting reads two keys before it writes one, and each wait would be a turn and a
 *   smaller group). A scan waits behind every waiting write.
 *
 *   Another process's write lock is waited for without blocking the event loop: SQLite's own
 *   busy handler sleeps the thread (1, 2, 5, 10 ... ms, and under steady contention from another
 *   worker a commit was seen to wait 600 ms), which would stall every connection of the daemon.
 *   So once the file is open the connection's busy timeout is 0, and a group that finds the lock
 *   taken goes back to the head of the queue and is tried again at every turn for the first
 *   LOCK_SPIN_MS, then every millisecond, until busyTimeoutMs has passed; the writes and reads
 *   asked for meanwhile join it, in order. A read that meets a lock (rare in WAL mode) takes
 *   the same way. Opening, the
 *   schema migration and the last commit of close() wait in SQLite's busy handler, except the
 *   switch of a new file to WAL, which SQLite refuses at once while another process makes it
 *   (enterWal waits and tries again).
 *
 *   Checkpoints (copying the WAL into the database file, with an fsync) run in a worker thread
 *   on a connection of its own (store/sqlite-checkpointer), every CHECKPOINT_INTERVAL_MS, and
 *   SQLite's automatic checkpoint is off on the store's connection: it ran inside the commit
 *   that crossed 1000 WAL pages, a few milliseconds every few hundred commits on the event
 *   loop. The thread starts once the store has committed CHECKPOINTER_AFTER_GROUPS groups (a
 *   CLI command's short visit never starts one) and takes over once it runs; until then, and
 *   when the thread cannot start or fails, SQLite's automatic checkpoint is on, so the WAL
 *   stays bounded either way (`checkpoints` tells which), and onCheckpointerFailed is told why
 *   (the daemon logs it: checkpoints in commits cost latency, and the cause may be a failing
 *   disk). The thread is not started again. Under a steady stream of commits the
 *   thread also restarts the WAL (store/sqlite-checkpointer), and journal_size_limit cuts the
 *   file back to WAL_SIZE_LIMIT_BYTES when it starts again. Another connection's lock is no
 *   failure of the thread: it tries again every round, and onCheckpointDelay is told when its
 *   rounds have been held up for a while and when they catch up.
 *
 *   purgeExpired walks the table in key order, PURGE_STRETCH keys (expired or not) per group,
 *   deleting the expired ones, a timer tick between groups (so that the checkpoint thread can
 *   restart the WAL), so a large table never stalls the process; the rows it removes
 *   read as absent already, so no read waits for it. A purge still running when close() is
 *   called ends with the stretch close() commits (shutdown is no purge failure). Without an expiry index it reads every key
 *   twice per purge (to find a stretch's end, then to delete in it); measured on a million
 *   greylist rows, the walk costs 0.14 s of CPU with nothing to delete and 0.31 s with a tenth
 *   expired, where version 1's index made the same purge 1.3 s (a delete changed three
 *   b-trees), and a file written anew is half the size (98 against 190 MB).
 *
 *   Reads of single keys are remembered (up to READ_MEMORY_LIMIT rows, absent keys too): a
 *   policy service asks for the same cached verdicts again and again, and a SELECT under load
 *   cost 8-14 µs, a seventh of a decision. The remembered rows are trusted until the end of the
 *   event-loop turn in which they were checked (the next check phase: a check made in a check
 *   phase lasts into the next iteration) and for at most TRUST_MS; the first read after that
 *   asks SQLite's PRAGMA data_version, which changes when any other connection (another worker,
 *   another mail server's CLI) has committed, and forgets every row when it did. When this
 *   connection's own writes commit, the rows of the keys they wrote are remembered as they left
 *   them where that is known exactly (a set, a delete, a compare-and-set or deleteIf that
 *   applied), so a greylist retry or a cache refresh reads its own write without a SELECT, and
 *   forgotten otherwise; a commit by another store of this process ends the trust at once. So a
 *   read may miss only a commit another process made less than TRUST_MS before it; a
 *   compare-and-set or deleteIf never acts on such a row, since it compares in SQL (and forgets
 *   the key when it fails).
 *
 *   scan takes the keys in [prefix, successor(prefix)) where the successor is the prefix with its
 *   last code point incremented: a range on the primary key, so it uses the index, and no LIKE
 *   wildcard (% _) in a prefix can widen the match. (prefix || U+FFFF as the bound would miss
 *   keys continuing with a character beyond the BMP, which sort after U+FFFF in UTF-8.)
 *   scanPages reads the same range a page at a time, each page a read of its own (key > the
 *   last key of the page before), so a list of millions is never held at once.
 *
 * LIMITS
 *   Keys and values must be well-formed Unicode: SQLite stores TEXT as UTF-8, where lone
 *   surrogates cannot exist.
 *
 * ERRORS
 *   open() rejects with ConfigError, naming the file, for what waiting will not mend: a directory
 *   that cannot be made or written, a path that is not a file or cannot be written (nor the -wal
 *   and -shm files beside it, when another user's process left them), a file that is not a
 *   database (one of a single byte too, which SQLite would write a new database over), another
 *   program's tables or views (refused before WAL mode is set in it), a schema newer than this
 *   program, a schema upgrade that what another program added to the file (a view, a trigger)
 *   makes fail. A damaged database rejects with StoreDamagedError (what waiting will not mend
 *   either, exit 78), at open, at a schema upgrade, and at any operation after open that meets it
 *   (open() reads the schema's pages only), named so with what to do. Every other failure rejects
 *   with StoreError naming the file and the operation, the driver error as its cause: out of
 *   descriptors, the lock still taken after busyTimeoutMs, a full disk, use after close(). A
 *   failed upgrade names the versions and SQLite's code, and says the file is as it was (its
 *   transaction rolled back) and, for a full disk or an I/O error, the room it needs.
 */

import { accessSync, closeSync, constants, existsSync, openSync, statSync, statfsSync } from 'node:fs';
import { makeDirectories } from '../core/files.js';
import { dirname, resolve } from 'node:path';
import type { Worker } from 'node:worker_threads';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { systemClock, type Clock } from '../core/clock.js';
import { CalloutError, ConfigError, StoreDamagedError, StoreError, describeError, describeFileError } from '../core/errors.js';
import { RecentMap } from '../core/memo.js';
import { startCheckpointer, type CheckpointDelay } from './sqlite-checkpointer.js';
import { ASK_LATER, type Store, type StoredValue } from './types.js';
import { addToCounter, checkIncrement, checkPageSize, checkScanLimit, expiryAfter, isLive } from './semantics.js';

export interface SqliteStoreOptions {
  clock?: Clock;
  /** How long a statement waits for another process's write lock before failing (default 5000). */
  busyTimeoutMs?: number;
  /** Between checkpoints of the worker thread (default CHECKPOINT_INTERVAL_MS). */
  checkpointIntervalMs?: number;
  /** Starts the checkpoint thread (default store/sqlite-checkpointer's); tests inject failures. */
  startCheckpointer?: (path: string, intervalMs: number) => Worker;
  /**
   * Told, once, why the checkpoint thread could not start or failed (cannot open the file, an
   * I/O error, the thread crashed): checkpoints then run inside commits, on the event loop, for
   * the life of the store. Not told when close() stops the thread.
   */
  onCheckpointerFailed?: (reason: string) => void;
  /**
   * Told when the checkpoint thread's rounds have been held up by another connection's lock for
   * a while (the WAL grows meanwhile; they go on trying), and again when they catch up: one pair
   * per episode (store/sqlite-checkpointer).
   */
  onCheckpointDelay?: (delay: CheckpointDelay) => void;
  /**
   * 'normal' (default): a commit is in the WAL when it returns, safe from a crash of the
   * process, fsynced at checkpoints. 'full': every commit is fsynced too, safe from a power
   * loss; one fsync per group commit (per turn of the event loop), not per write.
   */
  sync?: 'normal' | 'full';
}

const DEFAULT_BUSY_TIMEOUT_MS = 5000;
/** Keys the purge looks at per queued write, expired or not. */
const PURGE_STRETCH = 1000;
const READ_MEMORY_LIMIT = 8_192;
const TRUST_MS = 1;
const LOCK_SPIN_MS = 2;
/** Between attempts to switch a new file to WAL while another process does (enterWal). */
const WAL_SWITCH_RETRY_MS = 5;
/** Past this many waiting writes a read queues without looking for its key among them. */
const QUEUE_SEARCH_LIMIT = 64;
const CHECKPOINT_INTERVAL_MS = 250;
const CHECKPOINTER_AFTER_GROUPS = 100;
const WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024;
const SQLITE_AUTOCHECKPOINT_PAGES = 1000;
const NOT_READ = Symbol('not read');

/** Commits by every SqliteStore of this process: another connection's rows are stale after one. */
let commitsInThisProcess = 0;

/** MIGRATIONS[n] takes the schema from user_version n to n + 1. */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at INTEGER NOT NULL);
   CREATE INDEX kv_expires_at ON kv (expires_at);`,
  // One b-tree ordered by key: a write changes one page where the rowid table, its key index and
  // the expiry index changed three, and a key is stored once. The purge walks the keys instead.
  `CREATE TABLE kv_by_key (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at INTEGER NOT NULL) WITHOUT ROWID;
   INSERT INTO kv_by_key (key, value, expires_at) SELECT key, value, expires_at FROM kv WHERE key IS NOT NULL;
   DROP TABLE kv;
   ALTER TABLE kv_by_key RENAME TO kv;`,
];
const SCHEMA_VERSION = MIGRATIONS.length;

interface Row {
  key: string;
  value: string;
  expiresAt: number;
}

/** The smallest string greater than every string starting with prefix; undefined if none. */
function prefixSuccessor(prefix: string): string | undefined {
  const codePoints = Array.from(prefix);
  while (codePoints.length > 0) {
    const last = codePoints.pop()?.codePointAt(0) ?? 0;
    if (last < 0x10ffff) {
      const next = last + 1 === 0xd800 ? 0xe000 : last + 1;
      return codePoints.join('') + String.fromCodePoint(next);
    }
  }
  return undefined;
}

function prepareStatements(db: Database.Database) {
  return {
    get: db.prepare<[string, number], Omit<Row, 'key'>>(
      'SELECT value, expires_at AS expiresAt FROM kv WHERE key = ? AND expires_at > ?',
    ),
    getAny: db.prepare<[string], Omit<Row, 'key'>>('SELECT value, expires_at AS expiresAt FROM kv WHERE key = ?'),
    dataVersion: db.prepare<[], number>('PRAGMA data_version').pluck(),
    set: db.prepare<[string, string, number]>(
      `INSERT INTO kv (key, value, expires_at) VALUES (?, ?, ?)
       ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at`,
    ),
    setIfAbsent: db.prepare<[string, string, number, number]>(
      `INSERT INTO kv (key, value, expires_at) VALUES (?, ?, ?)
       ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
       WHERE kv.expires_at <= ?`,
    ),
    replaceIfEqual: db.prepare<[string, number, string, string, number]>(
      'UPDATE kv SET value = ?, expires_at = ? WHERE key = ? AND value = ? AND expires_at > ?',
    ),
    updateValue: db.prepare<[string, string]>('UPDATE kv SET value = ? WHERE key = ?'),
    delete: db.prepare<[string]>('DELETE FROM kv WHERE key = ?'),
    deleteIfEqual: db.prepare<[string, string, number]>('DELETE FROM kv WHERE key = ? AND value = ? AND expires_at > ?'),
    scanBounded: db.prepare<[string, string, number, number], Row>(
      `SELECT key, value, expires_at AS expiresAt FROM kv
       WHERE key >= ? AND key < ? AND expires_at > ? ORDER BY key LIMIT ?`,
    ),
    scanUnbounded: db.prepare<[string, number, number], Row>(
      `SELECT key, value, expires_at AS expiresAt FROM kv
       WHERE key >= ? AND expires_at > ? ORDER BY key LIMIT ?`,
    ),
    scanAfterBounded: db.prepare<[string, string, number, number], Row>(
      `SELECT key, value, expires_at AS expiresAt FROM kv
       WHERE key > ? AND key < ? AND expires_at > ? ORDER BY key LIMIT ?`,
    ),
    scanAfterUnbounded: db.prepare<[string, number, number], Row>(
      `SELECT key, value, expires_at AS expiresAt FROM kv
       WHERE key > ? AND expires_at > ? ORDER BY key LIMIT ?`,
    ),
    purgeStretchEnd: db.prepare<[string, number], string>('SELECT key FROM kv WHERE key >= ? ORDER BY key LIMIT 1 OFFSET ?').pluck(),
    purgeStretch: db.prepare<[string, string, number]>('DELETE FROM kv WHERE key >= ? AND key < ? AND expires_at <= ?'),
    purgeRest: db.prepare<[string, number]>('DELETE FROM kv WHERE key >= ? AND expires_at <= ?'),
  };
}

/**
 * Puts the file in WAL mode. Two processes opening a new file at once (the workers of a daemon,
 * a daemon and a CLI command) race to switch it from the rollback journal, and SQLite answers
 * the loser SQLITE_BUSY at once, without its busy handler; so the loser waits and tries again
 * (the winner has switched within milliseconds), up to the busy timeout.
 */
async function enterWal(db: Database.Database, busyTimeoutMs: number): Promise<void> {
  const started = performance.now();
  for (;;) {
    try {
      db.pragma('journal_mode = WAL');
      return;
    } catch (err) {
      if (!isBusy(err) || performance.now() - started >= busyTimeoutMs) throw err;
    }
    await sleep(WAL_SWITCH_RETRY_MS);
  }
}

/** What open() changed of an existing file's schema. */
export interface SchemaUpgrade {
  from: number;
  to: number;
  /** Whether the pages the upgrade freed were given back to the file system (VACUUM), or why not. */
  compacted?: true | string;
}

/**
 * After the upgrade, which copies the table (version 1 to 2), two thirds of the file are free
 * pages: 290 MB for a million rows, against 90 MB compacted, until SQLite reuses them. VACUUM
 * rewrites it (about a second per million rows here, once). A failure (another process's write
 * lock held past the busy timeout, a full disk) leaves a larger file that works all the same;
 * so does a process stopped before the VACUUM ends, which no later open repeats (`sqlite3 FILE
 * VACUUM`, with the daemon stopped, gives the pages back).
 */
function compactAfterUpgrade(db: Database.Database): NonNullable<SchemaUpgrade['compacted']> {
  try {
    db.exec('VACUUM');
    return true;
  } catch (err) {
    return describeError(err);
  }
}

/**
 * Refuses a file with another program's tables or views: ours at schema version 0 is empty (a
 * mistyped path). A view alone made our CREATE TABLE fail as a passing fault (exit 75, retried
 * for ever). Refuses a newer callout's file too. Before enterWal, which writes WAL mode into the
 * file for good. One statement, so one
 * snapshot: another callout process may be writing our schema (tables and version in one
 * transaction) meanwhile.
 */
function refuseForeign(db: Database.Database, path: string): void {
  const { version, tables } = db
    .prepare<[], { version: number; tables: number }>("SELECT (SELECT user_version FROM pragma_user_version) AS version, (SELECT count(*) FROM sqlite_master WHERE type IN ('table', 'view')) AS tables")
    .get()!;
  if (version === 0 && tables > 0) {
    throw new ConfigError(`sqlite store ${path}: the file holds another program's tables or views and no callout schema version: give callout a file of its own`);
  }
  // Before enterWal too: a newer callout's file was switched to WAL mode for good, then refused.
  if (version > SCHEMA_VERSION) throw newerSchema(path, version);
}

/** A file of a newer callout: waiting will not mend it (exit 78, not 75). */
function newerSchema(path: string, version: number): ConfigError {
  return new ConfigError(`sqlite store ${path}: schema version ${version} is newer than this program's ${SCHEMA_VERSION}: upgrade callout, or give another file`);
}

/** Brings the schema up to date; the upgrade of a file that had one, undefined for a new or current one. */
function migrate(db: Database.Database, path: string): SchemaUpgrade | undefined {
  // The upgrade under way when it fails: the step's, or from the file's version to this one's at
  // COMMIT; and the version the file had (0: a new file, with nothing to keep).
  let upgrading: { from: number; to: number } | undefined;
  let fileVersion: number | undefined;
  try {
    return db.transaction((): SchemaUpgrade | undefined => {
      const version = db.pragma('user_version', { simple: true }) as number;
      fileVersion = version;
      // Again in the transaction: a newer callout may have upgraded the file since refuseForeign.
      if (version > SCHEMA_VERSION) throw newerSchema(path, version);
      for (const [index, step] of MIGRATIONS.slice(version).entries()) {
        upgrading = { from: version + index, to: version + index + 1 };
        db.exec(step);
      }
      if (version === SCHEMA_VERSION) return undefined;
      upgrading = { from: version, to: SCHEMA_VERSION };
      db.pragma(`user_version = ${SCHEMA_VERSION}`);
      return version === 0 ? undefined : { from: version, to: SCHEMA_VERSION };
    }).immediate();
  } catch (err) {
    // BEGIN failed (the lock), or a new file's schema: open()'s own failure, with nothing to keep.
    if (err instanceof CalloutError || upgrading === undefined || fileVersion === 0) throw err;
    throw upgradeFailure(path, upgrading, err);
  }
}

/** What to do with a damaged file. */
function damagedAdvice(path: string): string {
  return `restore it from a backup, or move it away with the ${path}-wal and ${path}-shm files beside it and callout starts an empty store`;
}

/**
 * Why upgrading a file's schema failed, which the transaction rolled back: ConfigError for what
 * another program added to the file, StoreDamagedError for damage, StoreError for the machine's
 * state (a full disk, an I/O error), which the next open tries again. "open failed: disk I/O
 * error" named neither the upgrade nor that the file was kept, nor why a file that opened
 * yesterday no longer did.
 */
function upgradeFailure(path: string, upgrading: { from: number; to: number }, err: unknown): CalloutError {
  const code = err instanceof Database.SqliteError ? err.code : undefined;
  const failed = `sqlite store ${path}: upgrading the schema from version ${upgrading.from} to ${upgrading.to} failed: ${describeError(err)}${code === undefined ? '' : ` (${code})`}; the file is as it was (the upgrade is one transaction)`;
  // The file's own content (what another program added, damage): as exit 75, systemd retried it for ever.
  if (code === 'SQLITE_ERROR') return new ConfigError(`${failed}: remove what another program added to it (a view, a trigger), or give callout a file of its own`, { cause: err });
  if (code?.startsWith('SQLITE_CORRUPT')) {
    return new StoreDamagedError(`${failed}, and damaged: ${damagedAdvice(path)}`, { cause: err });
  }
  // The copy of the table (version 1 to 2) needs room for another one, in the WAL. Other I/O
  // errors (a read, an fsync) point at the disk, not at its room.
  const room = code === 'SQLITE_FULL' || code === 'SQLITE_IOERR_WRITE' ? 'it needs free disk of about twice the file\'s size, and ' : '';
  return new StoreError(`${failed}; ${room}the next open tries again`, { cause: err });
}

/**
 * Below this much room on the store's file system, an I/O error is taken for a full disk: the
 * -shm file alone takes 32 KiB, and every commit a few pages of WAL.
 */
const LOW_ROOM_BYTES = 1024 * 1024;

/**
 * What to say of a full disk, when SQLite's code (SQLITE_FULL, or an I/O error such as
 * SQLITE_IOERR_SHMSIZE, which is how a -shm file that cannot be made is told) and the room left
 * say the disk is full; '' otherwise.
 */
function noRoom(path: string, code: unknown): string {
  if (typeof code !== 'string' || (code !== 'SQLITE_FULL' && !code.startsWith('SQLITE_IOERR'))) return '';
  const directory = dirname(resolve(path));
  let free: number;
  try {
    const room = statfsSync(directory);
    free = room.bavail * room.bsize;
  } catch {
    return '';
  }
  if (code !== 'SQLITE_FULL' && free >= LOW_ROOM_BYTES) return '';
  return `: the file system of ${directory} is full (${free} bytes free): make room there, and the next open tries again`;
}

/**
 * SQLite's codes of a file that cannot be written now but can be later without anyone mending it
 * (StoreError outage): a lock held, a full disk, an I/O error, a file or directory made read-only
 * or unreachable for a while.
 */
const OUTAGE_CODES = /^SQLITE_(BUSY|LOCKED|FULL|IOERR|CANTOPEN|READONLY|PROTOCOL)(_|$)/;

/** A write (or a read queued behind writes) waiting for its group's transaction. */
interface Queued {
  context: string;
  /** The key a write changes, whose remembered row its commit updates or forgets (forgetWritten). */
  key?: string;
  work: (context: string) => unknown;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

/** Of a directory open() makes, and of a new store file; SQLite's -wal and -shm files follow the file's. */
const STORE_DIRECTORY_MODE = 0o750;
const STORE_FILE_MODE = 0o640;
/**
 * Where a path that cannot hold a store came from. Each command names its file differently
 * (serve: store.path, dataDir, --cache, --data-dir; verify: --cache; greylist and bounce:
 * --store, --data-dir), and the store is not told which: a list of every flag sent a `serve`
 * administrator looking for a --store it does not take.
 */
const CHECK_THE_PATH = 'check the path: store.path and dataDir in the configuration, or the command-line flag that gave it';

/**
 * Creates an empty file with mode (under the umask) unless one is there; SQLite takes it for an
 * empty database. A file that is there is never opened here: closing a descriptor of it would
 * drop the POSIX locks every SQLite connection of this process holds on it. A symbolic link to
 * a file not made yet (O_EXCL refuses any link) gets its file made through it, without O_EXCL:
 * left to SQLite, that file was 0644 under umask 022.
 */
function createFile(path: string, mode: number): void {
  try {
    closeSync(openSync(path, 'wx', mode));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    if (!existsSync(path)) closeSync(openSync(path, constants.O_WRONLY | constants.O_CREAT, mode));
  }
}

/** Errors of creating the store's directory that waiting will not mend. */
const DIRECTORY_PROBLEMS: ReadonlySet<string> = new Set(['ENOENT', 'EEXIST', 'ENOTDIR', 'EACCES', 'EPERM', 'EROFS', 'ENAMETOOLONG']);

/**
 * What is wrong with path as a place for the store, that waiting will not mend: not a file, a
 * directory or file this process may not write (SQLite needs the directory for its -wal and
 * -shm files). undefined when it looks usable: SQLite's own SQLITE_CANTOPEN covers these and
 * passing failures alike (out of descriptors), so they are told apart here, not by its code.
 */
function pathProblem(path: string): string | undefined {
  const directory = dirname(resolve(path));
  try {
    accessSync(directory, constants.W_OK | constants.X_OK);
  } catch (err) {
    return `cannot write in ${directory}: ${describeFileError(err)}`;
  }
  if (!existsSync(path)) return undefined;
  const stats = statSync(path);
  if (!stats.isFile()) return `${path} is not a file`;
  // SQLite takes a file of one byte for an empty one (a work-around for OS X's msdos file
  // system) and writes a new database over it: whatever the file held, it was no store.
  if (stats.size === 1) return `${path} is not a SQLite database (it holds a single byte)`;
  try {
    accessSync(path, constants.R_OK | constants.W_OK);
  } catch (err) {
    return `cannot read and write ${path}: ${describeFileError(err)}`;
  }
  // Left behind by a process of another user that was killed (a root CLI command): SQLite then
  // opens the file read-only and fails with "attempt to write a readonly database", naming neither.
  for (const companion of [`${path}-wal`, `${path}-shm`]) {
    try {
      accessSync(companion, constants.R_OK | constants.W_OK);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return `cannot read and write ${companion}, which SQLite keeps beside the file: ${describeFileError(err)}; give it to the user callout runs as`;
    }
  }
  return undefined;
}

export class SqliteStore implements Store {
  readonly kind = 'sqlite' as const;
  private readonly statements: ReturnType<typeof prepareStatements>;
  private queue: Queued[] = [];
  /** Rows as read (undefined: no such key), valid while dataVersion and the turn last. */
  private readonly recentRows = new RecentMap<Omit<Row, 'key'> | undefined>(READ_MEMORY_LIMIT);
  /** Rows as the writes of the group being committed left them (undefined: deleted), when known exactly. */
  private readonly groupRows = new Map<string, Omit<Row, 'key'> | undefined>();
  private dataVersion: number;
  private checkedThisTurn = false;
  /** performance.now() of the last data_version check. */
  private checkedAt = 0;
  private commitsSeen = commitsInThisProcess;
  private readonly endTurn = (): void => {
    this.checkedThisTurn = false;
  };
  /** performance.now() when the waiting group first found another process's write lock. */
  private lockedSince: number | undefined;
  private retry: NodeJS.Timeout | NodeJS.Immediate | undefined;
  private closing = false;
  private closed: Promise<void> | undefined;
  private checkpointer: Worker | undefined;
  /** Who checkpoints the WAL: the worker thread, SQLite inside commits, or nobody (':memory:'). */
  checkpoints: 'thread' | 'sqlite' | 'none';
  private groupsBeforeCheckpointer: number;
  private readonly checkpointIntervalMs: number;
  private readonly startCheckpointThread: NonNullable<SqliteStoreOptions['startCheckpointer']>;
  private readonly onCheckpointerFailed: SqliteStoreOptions['onCheckpointerFailed'];
  private readonly onCheckpointDelay: SqliteStoreOptions['onCheckpointDelay'];
  private readonly commitGroup: Database.Transaction<(group: Queued[]) => Outcome[]>;
  private readonly incrementCounter: Database.Transaction<
    (key: string, by: number, now: number, expiresAt: number) => number
  >;

  /** The file's device and inode when it was opened: a file removed or put in its place is not ours. */
  private readonly fileIdentity: string | undefined;
  /** The same of its -wal and -shm files, which SQLite removes only when the last connection closes (never while this one is open). */
  private readonly companionIdentities: ReadonlyArray<{ path: string; identity: string | undefined }>;

  private constructor(
    private readonly db: Database.Database,
    readonly path: string,
    private readonly clock: Clock,
    private readonly busyTimeoutMs: number,
    options: SqliteStoreOptions,
    /** The schema upgrade this open made (a file written by an older version), for the daemon's log. */
    readonly schemaUpgrade: SchemaUpgrade | undefined,
  ) {
    this.fileIdentity = path === ':memory:' ? undefined : identityOf(path);
    this.companionIdentities = path === ':memory:' ? [] : [`${path}-wal`, `${path}-shm`].map((companion) => ({ path: companion, identity: identityOf(companion) }));
    this.checkpoints = path === ':memory:' ? 'none' : 'sqlite';
    this.groupsBeforeCheckpointer = path === ':memory:' ? Infinity : CHECKPOINTER_AFTER_GROUPS;
    this.checkpointIntervalMs = options.checkpointIntervalMs ?? CHECKPOINT_INTERVAL_MS;
    this.startCheckpointThread = options.startCheckpointer ?? startCheckpointer;
    this.onCheckpointerFailed = options.onCheckpointerFailed;
    this.onCheckpointDelay = options.onCheckpointDelay;
    this.statements = prepareStatements(db);
    this.dataVersion = this.statements.dataVersion.get()!;
    const statements = this.statements;
    const context = this.context('increment');
    this.incrementCounter = db.transaction((key: string, by: number, now: number, expiresAt: number): number => {
      const existing = statements.getAny.get(key);
      if (existing && isLive(existing.expiresAt, now)) {
        const sum = addToCounter(context, existing.value, by);
        statements.updateValue.run(String(sum), key);
        return sum;
      }
      if (by < 0) return 0;
      statements.set.run(key, String(by), expiresAt);
      return by;
    });
    // A failing statement is rolled back on its own by SQLite and the group goes on without it;
    // an error that ends the whole transaction (SQLITE_FULL, an I/O error) fails the rest too.
    this.commitGroup = db.transaction((group: Queued[]): Outcome[] => {
      const outcomes: Outcome[] = [];
      for (const queued of group) {
        try {
          outcomes.push({ ok: true, value: queued.work(queued.context) });
        } catch (error) {
          if (!db.inTransaction) throw error;
          outcomes.push({ ok: false, error });
        }
      }
      return outcomes;
    });
  }

  /**
   * Opens (creating it and its parent directories if needed) the database at path, or ':memory:'.
   * What it creates holds addresses, so it is kept from other users without touching the
   * process's umask: new directories get STORE_DIRECTORY_MODE and the file STORE_FILE_MODE (under
   * the umask: never looser, stricter when the umask is), and SQLite gives the -wal, -shm and
   * -journal files it makes later the database file's own mode (os_unix.c findCreateFileMode).
   */
  static async open(path: string, options: SqliteStoreOptions = {}): Promise<SqliteStore> {
    const busyTimeoutMs = options.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
    let db: Database.Database | undefined;
    try {
      if (path !== ':memory:') {
        makeDirectories(dirname(resolve(path)), STORE_DIRECTORY_MODE);
        const problem = pathProblem(path);
        if (problem) throw new ConfigError(`sqlite store ${path}: ${problem} (${CHECK_THE_PATH})`);
        createFile(path, STORE_FILE_MODE);
      }
      db = new Database(path, { timeout: busyTimeoutMs });
      refuseForeign(db, path);
      await enterWal(db, busyTimeoutMs);
      // WAL with synchronous=NORMAL (the default): a committed transaction is in the WAL before
      // the call returns, so it survives a crash of this process, which is what an acknowledged
      // cache write needs. It is fsynced only at checkpoints, so a power loss or kernel crash may
      // lose the last transactions (never corrupt the file); for a cache that costs a few
      // re-probes. sync 'full' (store.sync) fsyncs every commit: one per group, per turn.
      db.pragma(`synchronous = ${options.sync === 'full' ? 'FULL' : 'NORMAL'}`);
      // When a commit starts the WAL again from its beginning, the file is cut back to this.
      db.pragma(`journal_size_limit = ${WAL_SIZE_LIMIT_BYTES}`);
      const upgrade = migrate(db, path);
      if (upgrade) upgrade.compacted = compactAfterUpgrade(db);
      db.pragma('busy_timeout = 0');
      return new SqliteStore(db, path, options.clock ?? systemClock, busyTimeoutMs, options, upgrade);
    } catch (err) {
      db?.close();
      if (err instanceof StoreError || err instanceof ConfigError) throw err;
      const code = (err as { code?: unknown }).code;
      // better-sqlite3 gives extended codes (SQLITE_NOTADB has none); mkdir gives errnos.
      const wrongFile = code === 'SQLITE_NOTADB' || (typeof code === 'string' && DIRECTORY_PROBLEMS.has(code));
      if (wrongFile) {
        throw new ConfigError(`sqlite store ${path}: cannot open: ${describeFileError(err)} (${CHECK_THE_PATH})`, { cause: err });
      }
      // A damaged file stays damaged: exit 75 had systemd restart the daemon on it forever.
      if (typeof code === 'string' && code.startsWith('SQLITE_CORRUPT')) {
        throw new StoreDamagedError(`sqlite store ${path}: cannot open: ${describeError(err)}: the file is damaged; ${damagedAdvice(path)}`, { cause: err });
      }
      // SQLite's "database is locked" alone says neither that it waited nor for what, and its
      // "disk I/O error" not that the disk was full (the -shm file could not be made).
      const sqliteCode = err instanceof Database.SqliteError ? ` (${err.code})` : '';
      const why = isBusy(err) ? `: ${lockHeld(busyTimeoutMs)}` : noRoom(path, code);
      throw new StoreError(`sqlite store ${path}: open failed: ${describeError(err)}${sqliteCode}${why}`, { cause: err });
    }
  }

  get(key: string): Promise<StoredValue | undefined> {
    return this.read(
      'get',
      key,
      () => {
        const row = this.recentRow(key);
        // A copy: callers own what get() gives, and the remembered row must not change.
        return row && { value: row.value, expiresAt: row.expiresAt };
      },
      () => this.statements.get.get(key, this.clock.now()),
    );
  }

  getMany(keys: readonly string[]): Promise<Array<StoredValue | undefined>> {
    return Promise.all(keys.map((key) => this.get(key)));
  }

  peek(key: string): Readonly<StoredValue> | undefined | typeof ASK_LATER {
    // A queued write of the key must be seen first (get() reads behind it); a lock or a fault is get()'s to report.
    if (this.closing || this.writeWaitsFor(key)) return ASK_LATER;
    try {
      return this.recentRow(key);
    } catch {
      return ASK_LATER;
    }
  }

  set(key: string, value: string, ttlMs: number): Promise<void> {
    return this.write('set', key, (context) => {
      const expiresAt = expiryAfter(context, ttlMs, this.clock.now());
      this.statements.set.run(key, value, expiresAt);
      this.groupRows.set(key, { value, expiresAt });
    });
  }

  setIfAbsent(key: string, value: string, ttlMs: number): Promise<boolean> {
    return this.swap('setIfAbsent', key, undefined, value, ttlMs);
  }

  compareAndSet(key: string, expected: string | undefined, value: string, ttlMs: number): Promise<boolean> {
    return this.swap('compareAndSet', key, expected, value, ttlMs);
  }

  /** Writes value when the live row is `expected` (undefined: when there is none); true when it did. */
  private swap(operation: string, key: string, expected: string | undefined, value: string, ttlMs: number): Promise<boolean> {
    return this.write(operation, key, (context) => {
      const now = this.clock.now();
      const expiresAt = expiryAfter(context, ttlMs, now);
      const result =
        expected === undefined
          ? this.statements.setIfAbsent.run(key, value, expiresAt, now)
          : this.statements.replaceIfEqual.run(value, expiresAt, key, expected, now);
      const changed = result.changes === 1;
      // Unchanged, the row is what another write left: read again rather than trusted.
      if (changed) this.groupRows.set(key, { value, expiresAt });
      else this.groupRows.delete(key);
      return changed;
    });
  }

  delete(key: string): Promise<void> {
    return this.write('delete', key, () => {
      this.statements.delete.run(key);
      this.groupRows.set(key, undefined);
    });
  }

  deleteIf(key: string, expected: string): Promise<boolean> {
    return this.write('deleteIf', key, () => {
      const deleted = this.statements.deleteIfEqual.run(key, expected, this.clock.now()).changes === 1;
      // Not deleted, the row is what another write left: read again rather than trusted.
      if (deleted) this.groupRows.set(key, undefined);
      else this.groupRows.delete(key);
      return deleted;
    });
  }

  increment(key: string, by: number, ttlMs: number): Promise<number> {
    return this.write('increment', key, (context) => {
      checkIncrement(context, by);
      const now = this.clock.now();
      this.groupRows.delete(key);
      return this.incrementCounter.immediate(key, by, now, expiryAfter(context, ttlMs, now));
    });
  }

  scan(prefix: string, limit: number): Promise<Array<{ key: string } & StoredValue>> {
    return this.read('scan', undefined, (context) => {
      checkScanLimit(context, limit);
      const now = this.clock.now();
      const upper = prefixSuccessor(prefix);
      return upper === undefined
        ? this.statements.scanUnbounded.all(prefix, now, limit)
        : this.statements.scanBounded.all(prefix, upper, now, limit);
    });
  }

  async *scanPages(prefix: string, pageSize: number): AsyncGenerator<Array<{ key: string } & StoredValue>, void, undefined> {
    checkPageSize(this.context('scan'), pageSize);
    const upper = prefixSuccessor(prefix);
    // Each page a read of its own, after the last key of the one before: the index range again.
    let after: string | undefined;
    for (;;) {
      const last = after;
      const page = await this.read('scan', undefined, () => {
        const now = this.clock.now();
        if (last === undefined) return upper === undefined ? this.statements.scanUnbounded.all(prefix, now, pageSize) : this.statements.scanBounded.all(prefix, upper, now, pageSize);
        return upper === undefined ? this.statements.scanAfterUnbounded.all(last, now, pageSize) : this.statements.scanAfterBounded.all(last, upper, now, pageSize);
      });
      if (page.length > 0) yield page;
      if (page.length < pageSize) return;
      after = page[page.length - 1]?.key;
    }
  }

  async purgeExpired(at?: number): Promise<number> {
    const now = at ?? this.clock.now();
    let removed = 0;
    // Stretches [from, end) of PURGE_STRETCH keys in key order, from '' (below every key), each
    // in a group of its own. It removes only rows that have expired, which every read and every
    // remembered copy already takes for absent: no read waits for it, and nothing is forgotten.
    let from: string | undefined = '';
    while (from !== undefined) {
      const start: string = from;
      const stretch = await this.write('purgeExpired', undefined, () => {
        const end = this.statements.purgeStretchEnd.get(start, PURGE_STRETCH);
        const deleted = end === undefined ? this.statements.purgeRest.run(start, now) : this.statements.purgeStretch.run(start, end, now);
        return { end, changes: deleted.changes };
      });
      removed += stretch.changes;
      from = stretch.end;
      // A timer tick between stretches: back to back, one group per turn, they left the
      // checkpoint thread no gap to restart the WAL in (it grew by ~100 MB per million rows)
      // and lengthened every request's wait. The purge is a background job; it takes longer.
      if (from !== undefined && !this.closing) await new Promise((resolve) => setTimeout(resolve, 0));
      // close() commits the stretch it finds queued; the next would meet a closed connection (a
      // false 'store purge failed' at every shutdown). The next process's purge does the rest.
      if (this.closing) break;
    }
    return removed;
  }

  /** Every call settles once the store is closed: a second one waits for the first. */
  close(): Promise<void> {
    this.closed ??= this.closeOnce();
    return this.closed;
  }

  private async closeOnce(): Promise<void> {
    this.closing = true;
    if (this.retry !== undefined) {
      clearTimeout(this.retry as NodeJS.Timeout);
      clearImmediate(this.retry as NodeJS.Immediate);
      this.retry = undefined;
    }
    if (this.queue.length > 0) {
      // The last group may wait for the lock here: nothing is left to serve once closing. Before
      // the thread is stopped, which takes milliseconds in which a retry would fail the group.
      this.run('close', () => this.db.pragma(`busy_timeout = ${this.busyTimeoutMs}`));
      this.commitQueued();
    }
    await this.stopCheckpointer();
    this.run('close', () => this.db.close());
    // A read after close must fail as the driver does, not answer from memory.
    this.recentRows.clear();
    this.checkedThisTurn = false;
  }

  private startCheckpointer(): void {
    let worker: Worker;
    try {
      worker = this.startCheckpointThread(this.path, this.checkpointIntervalMs);
    } catch (err) {
      // SQLite's automatic checkpoint stays on
      this.onCheckpointerFailed?.(`cannot start the checkpoint thread: ${describeError(err)}`);
      return;
    }
    this.checkpointer = worker;
    // The first of the thread's error message, 'error' and 'exit' says why; the others find it gone.
    const handBack = (reason: string): void => {
      if (this.checkpointer !== worker) return;
      this.checkpointer = undefined;
      if (this.closing) return;
      if (this.checkpoints === 'thread') {
        this.checkpoints = 'sqlite';
        this.run('checkpoints', () => this.db.pragma(`wal_autocheckpoint = ${SQLITE_AUTOCHECKPOINT_PAGES}`));
      }
      this.onCheckpointerFailed?.(reason);
    };
    // SQLite checkpoints until the thread runs: a booting thread (tens of milliseconds) must not
    // leave a busy WAL to grow unchecked.
    const takeOver = (): void => {
      if (this.checkpointer !== worker || this.closing) return;
      this.run('checkpoints', () => this.db.pragma('wal_autocheckpoint = 0'));
      this.checkpoints = 'thread';
    };
    worker.on('error', (err) => handBack(`the checkpoint thread failed: ${describeError(err)}`));
    // Its messages: ready, a delay of its rounds (store/sqlite-checkpointer), or its failure.
    worker.on('message', (message: { ready?: unknown; delay?: CheckpointDelay; error?: unknown } | null) => {
      if (message?.ready === true) takeOver();
      else if (message?.delay !== undefined) {
        if (this.checkpointer === worker && !this.closing) this.onCheckpointDelay?.(message.delay);
      } else handBack(`the checkpoint thread failed: ${String(message?.error)}`);
    });
    worker.on('exit', (code) => handBack(`the checkpoint thread ended (exit code ${code})`));
    // A 'message' listener refs the worker again; unref'd, it never holds the process up.
    worker.unref();
  }

  private async stopCheckpointer(): Promise<void> {
    const worker = this.checkpointer;
    if (!worker) return;
    this.checkpointer = undefined;
    const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    // Held until it has closed its connection, so that ours is the last and SQLite removes the WAL.
    worker.ref();
    worker.postMessage('stop');
    await exited;
  }

  /**
   * Why the path no longer names the file this store has open (removed, or another put in its
   * place, by an administrator or a cleanup job), or undefined while it does. SQLite goes on
   * writing to the open file, which no later process will find: every state kept since is lost
   * at the next restart, and a CLI command meanwhile opens a file of its own. Its -wal and
   * -shm files are looked at the same way.
   */
  fileProblem(): string | undefined {
    if (this.fileIdentity === undefined) return undefined;
    const now = identityOf(this.path);
    if (now === undefined) return `${this.path} was removed while open: what is written now is lost at the next restart`;
    if (now !== this.fileIdentity) return `${this.path} was replaced while open: this process writes to the old file`;
    // Without them the file's other users cannot work with this process: a -wal removed (a
    // cleanup job, an administrator taking it for a leftover) fails their open with 'disk I/O
    // error' and holds the commits since the last checkpoint only in this process, and with a
    // -shm removed the next one makes a new one and writes over this process's commits in the
    // WAL (an acknowledged `callout greylist allow` was lost so). A stop by SIGTERM still
    // copies the WAL into the file through the descriptor this process holds.
    for (const companion of this.companionIdentities) {
      if (companion.identity === undefined || identityOf(companion.path) === companion.identity) continue;
      return `${companion.path}, which SQLite keeps beside the file, was removed or replaced while open: other processes that open the store now (callout greylist, bounce, verify, another callout serve) overwrite or cannot read what this process writes`;
    }
    return undefined;
  }

  private context(operation: string): string {
    return `sqlite store ${this.path}: ${operation}`;
  }

  /** The remembered row of key (read from SQLite if need be) while it is live against the clock now. */
  private recentRow(key: string): Readonly<StoredValue> | undefined {
    this.checkDataVersion();
    let row = this.recentRows.get(key, NOT_READ);
    if (row === NOT_READ) {
      row = this.statements.getAny.get(key);
      this.recentRows.set(key, row);
    }
    if (row === undefined || !isLive(row.expiresAt, this.clock.now())) return undefined;
    return row;
  }

  /** Forgets the remembered rows when another connection has committed since they were read. */
  private checkDataVersion(): void {
    const now = performance.now();
    if (this.checkedThisTurn && this.commitsSeen === commitsInThisProcess && now - this.checkedAt < TRUST_MS) return;
    const version = this.statements.dataVersion.get()!;
    this.checkedAt = now;
    if (version !== this.dataVersion) {
      this.recentRows.clear();
      this.dataVersion = version;
    }
    this.commitsSeen = commitsInThisProcess;
    if (!this.checkedThisTurn) {
      this.checkedThisTurn = true;
      setImmediate(this.endTurn);
    }
  }

  /**
   * Queues work for the group committed at the end of this turn: a write of `key`, or work that
   * no read of a key waits for (undefined): a read behind the waiting writes, a purge stretch.
   */
  private write<T>(operation: string, key: string | undefined, work: (context: string) => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const queued: Queued = { context: this.context(operation), work, resolve: resolve as (value: unknown) => void, reject };
      if (key !== undefined) queued.key = key;
      this.queue.push(queued);
      if (this.queue.length === 1) setImmediate(() => this.commitQueued());
    });
  }

  /** Whether a waiting write may change key (or too many wait to tell cheaply); undefined: any key. */
  private writeWaitsFor(key: string | undefined): boolean {
    if (this.queue.length === 0) return false;
    if (key === undefined || this.queue.length > QUEUE_SEARCH_LIMIT) return true;
    return this.queue.some((queued) => queued.key === key);
  }

  /**
   * Runs a read of `key` (undefined: of any keys) now, or behind the writes still waiting when
   * one may change what it reads, so that it sees them; `queued` is the form of it that runs
   * inside their transaction (default: the same work).
   */
  private read<T>(operation: string, key: string | undefined, work: (context: string) => T, queued: (context: string) => T = work): Promise<T> {
    if (this.writeWaitsFor(key)) return this.write(operation, undefined, queued);
    const context = this.context(operation);
    try {
      return Promise.resolve(work(context));
    } catch (err) {
      if (isBusy(err)) return this.write(operation, undefined, queued);
      return Promise.reject(this.failure(context, err));
    }
  }

  private commitQueued(): void {
    const group = this.queue;
    if (group.length === 0) return;
    this.queue = [];
    let outcomes: Outcome[];
    this.groupRows.clear();
    try {
      outcomes = this.commitGroup.immediate(group);
    } catch (err) {
      if (isBusy(err) && this.waitForLock(group)) return;
      this.lockedSince = undefined;
      this.groupRows.clear();
      this.forgetWritten(group);
      // BEGIN or COMMIT failed (SQLITE_BUSY past the timeout, a full disk, a closed database):
      // nothing of the group was written.
      for (const queued of group) queued.reject(this.failure(queued.context, err));
      return;
    }
    this.lockedSince = undefined;
    this.forgetWritten(group);
    this.groupsBeforeCheckpointer -= 1;
    if (this.groupsBeforeCheckpointer === 0 && !this.closing) this.startCheckpointer();
    group.forEach((queued, i) => {
      const outcome = outcomes[i]!;
      if (outcome.ok) queued.resolve(outcome.value);
      else queued.reject(this.failure(queued.context, outcome.error));
    });
  }

  /**
   * Puts a group that found the write lock taken back at the head of the queue and tries it
   * again later without blocking: at every turn for the first LOCK_SPIN_MS (another worker's
   * commit takes tens of microseconds, and a timer's millisecond would be most of the wait),
   * then every millisecond. False once busyTimeoutMs has passed (or when closing): the group
   * then fails.
   */
  private waitForLock(group: Queued[]): boolean {
    const now = performance.now();
    if (this.closing) return false;
    this.lockedSince ??= now;
    const waited = now - this.lockedSince;
    if (waited >= this.busyTimeoutMs) return false;
    this.queue = group.concat(this.queue);
    this.retry = waited < LOCK_SPIN_MS ? setImmediate(() => this.retryCommit()) : setTimeout(() => this.retryCommit(), 1);
    return true;
  }

  private retryCommit(): void {
    this.retry = undefined;
    this.commitQueued();
  }

  /**
   * After a group's transaction: a written key that was remembered keeps the row the group left
   * where that is known exactly (so the next read costs no SELECT; a read before a write, as
   * greylisting and the verdict cache do, put it there), and is forgotten otherwise (a failed
   * compare-and-set, an increment, a transaction that did not commit). Keys only written are
   * not added: write-once keys would push out the rows that are read again and again.
   */
  private forgetWritten(group: readonly Queued[]): void {
    commitsInThisProcess += 1;
    for (const { key } of group) {
      if (key === undefined) continue;
      if (this.groupRows.has(key)) this.recentRows.update(key, this.groupRows.get(key));
      else this.recentRows.delete(key);
    }
    this.groupRows.clear();
  }

  /**
   * A driver error as a StoreError that names file and operation, and what SQLite's words alone
   * do not say: that a lock was waited for (SQLITE_BUSY comes only once busyTimeoutMs has
   * passed), or that the file is damaged (open() reads only the schema's pages: a
   * StoreDamagedError), the file then staying so and the message saying what to do ('database
   * disk image is malformed' alone, once a minute for as long as the daemon ran, said neither).
   */
  private failure(context: string, err: unknown): StoreError {
    if (err instanceof StoreError) return err;
    const code = err instanceof Database.SqliteError ? err.code : undefined;
    if (code !== undefined && (code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_NOTADB')) {
      return new StoreDamagedError(`${context} failed: ${describeError(err)} (${code}): the file is damaged; stop callout serve, then ${damagedAdvice(this.path)}`, { cause: err });
    }
    const lock = isBusy(err) ? ` (${code}): ${lockHeld(this.busyTimeoutMs)}` : '';
    return new StoreError(`${context} failed: ${describeError(err)}${lock}`, { cause: err, outage: code !== undefined && OUTAGE_CODES.test(code) });
  }

  /** Runs one operation, turning any driver error into a StoreError that names file and operation. */
  private run<T>(operation: string, work: (context: string) => T): T {
    const context = this.context(operation);
    try {
      return work(context);
    } catch (err) {
      throw this.failure(context, err);
    }
  }
}

/** "device:inode" of the file at path, or undefined when there is none. */
function identityOf(path: string): string | undefined {
  try {
    const stats = statSync(path);
    return `${stats.dev}:${stats.ino}`;
  } catch {
    return undefined;
  }
}

/** What SQLite's "database is locked" does not say: that it waited, and for what. */
function lockHeld(busyTimeoutMs: number): string {
  return `another process held a lock on the file for longer than the busy timeout (${busyTimeoutMs} ms)`;
}

function isBusy(err: unknown): boolean {
  return err instanceof Database.SqliteError && (err.code === 'SQLITE_BUSY' || err.code.startsWith('SQLITE_BUSY_'));
}
