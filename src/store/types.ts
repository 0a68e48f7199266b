/**
 * NAME
 *   store/types - the one storage interface behind memory, SQLite and Redis
 *
 * DESCRIPTION
 *   A small key-value contract with expiry that maps directly onto Redis (GET/SET PX/DEL/INCR/
 *   SET NX) and onto one SQLite table, so the callout cache, domain records, greylist triplets and
 *   rate counters all live in whichever backend the site runs. Values are strings (JSON by
 *   convention); keys are namespaced by the caller (`addr:`, `dom:`, `grey:` ...).
 *   Expiry is judged against the store's injected Clock, so tests move time instead of sleeping.
 *
 * ERRORS
 *   A backend failure rejects with StoreError (code STORE_UNAVAILABLE; StoreDamagedError, code
 *   STORE_DAMAGED, for a damaged SQLite file). An acknowledged write
 *   survives a crash of this process: SQLite has committed it to its WAL; Redis holds it in
 *   the server's memory, and keeps it across the server's own restarts only as far as the
 *   server's persistence (appendonly, save) is configured.
 */

export interface StoredValue {
  value: string;
  /** Epoch milliseconds after which the entry no longer exists. */
  expiresAt: number;
}

/** What Store.peek answers when only get() can tell. */
export const ASK_LATER: unique symbol = Symbol('store: only get() can tell');

export interface Store {
  readonly kind: 'memory' | 'sqlite' | 'redis';
  get(key: string): Promise<StoredValue | undefined>;
  /**
   * What get() gives for each key, in order, in one round trip where the backend has them
   * (Redis: one script call); memory and SQLite read the keys one by one.
   */
  getMany(keys: readonly string[]): Promise<Array<StoredValue | undefined>>;
  /**
   * What get() would resolve with, given at once when the store can tell without waiting (memory;
   * SQLite while no queued write of this process may change the key), else ASK_LATER
   * (Redis always). A cached verdict then costs no promise and no turn of the event loop. The
   * value is the store's own: read it before the next call to the store, never change it.
   */
  peek(key: string): Readonly<StoredValue> | undefined | typeof ASK_LATER;
  set(key: string, value: string, ttlMs: number): Promise<void>;
  /** Sets only when the key is absent (or expired); true when this call set it. */
  setIfAbsent(key: string, value: string, ttlMs: number): Promise<boolean>;
  /**
   * Atomic read-modify-write: sets `value` only when the current value is `expected`
   * (undefined = absent or expired); true when this call set it. Callers retry on false.
   */
  compareAndSet(key: string, expected: string | undefined, value: string, ttlMs: number): Promise<boolean>;
  delete(key: string): Promise<void>;
  /**
   * Deletes the key only while its live value is `expected`; true when this call deleted it.
   * An absent or expired key is never deleted (false). Atomic, as compareAndSet: a holder
   * releasing a lock cannot delete the one another caller took after its own expired.
   */
  deleteIf(key: string, expected: string): Promise<boolean>;
  /**
   * Adds `by` to an integer counter, creating it with `ttlMs` when absent; returns the new value.
   * A decrement stops at 0 and leaves an absent counter absent (store/semantics).
   */
  increment(key: string, by: number, ttlMs: number): Promise<number>;
  /** Keys with the prefix that have not expired, at most `limit` of them, in key order. */
  scan(prefix: string, limit: number): Promise<Array<{ key: string } & StoredValue>>;
  /**
   * The live keys with the prefix, a page of at most pageSize (a positive integer) read each
   * time the caller asks for the next, so that it holds one page, not every key: SQLite and
   * memory in key order (each page the keys after the last of the page before), Redis in the
   * order of one SCAN walk, each page in key order (store/redis).
   */
  scanPages(prefix: string, pageSize: number): AsyncGenerator<Array<{ key: string } & StoredValue>, void, undefined>;
  /**
   * Removes the entries expired at `at` (epoch ms; the store's clock by default, a daemon whose
   * requests set the time passes its maintenance time); returns how many were removed.
   */
  purgeExpired(at?: number): Promise<number>;
  close(): Promise<void>;
}
