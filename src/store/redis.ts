/**
 * NAME
 *   store/redis - the shared Store for a cluster of callout daemons (ioredis)
 *
 * DESCRIPTION
 *   Every entry is one Redis string under keyPrefix (default `callout:`), written with a PX
 *   expiry, so several daemons on several hosts share one cache, one greylist and one set of
 *   rate counters. Redis expires keys by its own clock: that is the one clock all daemons agree
 *   on, so liveness is never judged locally. expiresAt is the injected Clock's now() when the
 *   command was sent plus the PTTL Redis reports, which never claims more lifetime than is left.
 *   A key without any expiry (written by something else) reports Number.MAX_SAFE_INTEGER.
 *
 *   set is SET PX, setIfAbsent is SET NX PX. What one command cannot do atomically runs as a Lua
 *   script (EVALSHA, re-sent as EVAL after a server restart empties the script cache):
 *     - compareAndSet: GET, compare, SET PX (expecting absence is just SET NX PX);
 *     - deleteIf: GET, compare, DEL;
 *     - increment: INCRBY, PEXPIRE only when the key was created, and an undo (DECRBY) plus an
 *       error when the sum leaves the safe integer range; Redis's own INCRBY refuses values that
 *       are not integers and leaves them alone; a decrement is cut to stop at 0 and never
 *       creates the key, and an addition to a counter below 0 starts from 0 (SET KEEPTTL,
 *       Redis 6.0 or later) (store/semantics);
 *     - reads: GET and PTTL of up to SCAN_BATCH keys at once, so value and expiry agree.
 *   Redis still serves a key in the millisecond its expiry names (PTTL 0), where the contract
 *   (store/semantics) has it gone. A read that meets such a key answers absent and deletes it,
 *   so a SET NX or compare-and-set sent after that read agrees that it is gone (otherwise a
 *   triplet read as new could not be written for that millisecond); increment restarts such a
 *   counter instead of adding to it (the sum would vanish a millisecond later). A write that
 *   meets such a key without a read before it (a compare-and-set, a deleteIf) takes it as live,
 *   as Redis does: nothing has seen it gone, and nothing can tell that millisecond from the
 *   clock difference between the daemon and Redis.
 *   scan walks SCAN MATCH over the prefix with the glob characters escaped, so `*?[]\` in a
 *   prefix match only themselves, keeping only the first `limit` keys by code point (the byte
 *   order of UTF-8, as the other backends list them) as it goes, and reads their values; keys
 *   that expired meanwhile are made up for by another walk for the keys after the last one.
 *   scanPages makes one SCAN walk and reads each page's values once the walk has found pageSize
 *   keys (or ended), so it holds a page and a SCAN batch: the pages come in the order SCAN finds
 *   the keys, each sorted, and a key SCAN returns again after its page (it may, when Redis
 *   resizes its table during the walk) is listed again. Paging in key order would take a walk
 *   of the whole keyspace a page.
 *   purgeExpired always answers 0: Redis removes expired keys itself (lazily on access and by
 *   its active expiry cycle), so there is never a backlog for the daemon to sweep.
 *
 *   The commands asked for during one turn of the event loop leave in one write: the socket is
 *   corked at the first of them and uncorked at the end of the turn (setImmediate). ioredis
 *   writes every command on its own, and with many policy connections answered at once those
 *   writes were a fifth of the daemon's CPU on the greylist replay; batched, one process
 *   answered 21% more requests (its own pipelining, enableAutoPipelining, sends one batch at a
 *   time and waits for its replies, and gained nothing there).
 *
 *   Connection: open() waits for the first connection. Afterwards commands never queue while
 *   the server is away (enableOfflineQueue off, no retries per request) and each has a
 *   commandTimeoutMs deadline, so a Redis outage turns into prompt StoreErrors that callers can
 *   fail open on, instead of mail waiting behind a growing queue. The client keeps reconnecting
 *   in the background (backoff up to RECONNECT_MAX_MS) and the store works again as soon as the
 *   server answers, without being reopened. A connection on which nothing arrives for two command
 *   deadlines while commands wait is dropped and made again (a hung or vanished server would
 *   otherwise keep it, and every command after, queued without bound), and so is one that
 *   answers READONLY (a failover has left it on the demoted primary; a new connection follows
 *   the address to the new one). `healthy` tells whether the connection is ready;
 *   the 'down' (with the reason) and 'up' events fire on each change, for the daemon's logs:
 *   'down' once per outage, also when the first connection fails (a store opened with
 *   waitForConnection false while Redis is down), not once per reconnection attempt.
 *
 * LIMITS
 *   One Redis server (or a primary behind a stable address); not Redis Cluster, whose slots
 *   would split the multi-key read script. Keys and values must be well-formed Unicode (sent as
 *   UTF-8). scan walks the whole keyspace of the database (MATCH filters on the server), and
 *   holds about twice `limit` keys however many are under the prefix: for administration, not
 *   for the per-message path. A command that times out or is cut off by a disconnect may still
 *   have been applied by the server (it is not retried, so an increment is never applied twice).
 *
 * ERRORS
 *   Every failure rejects with StoreError naming the URL (password masked) and the operation,
 *   with the driver error as its cause and, while the connection is down, the last connection
 *   error: refused or lost connection, a password Redis refused or asks for (named as the
 *   URL's), command timeout (with the wait), a value that is not a counter, a key
 *   holding a list, hash ... (named, with its type), bad arguments, use after close(). An
 *   unusable URL, URL parameter or option, and a database Redis refuses at open(), is a
 *   ConfigError; a database refused on a later connection leaves the store down, with that reason.
 */

import { EventEmitter } from 'node:events';
import { Redis, ReplyError, type RedisOptions } from 'ioredis';
import { settleWithin, systemClock, type Clock } from '../core/clock.js';
import { ConfigError, StoreError, abbreviate, describeError } from '../core/errors.js';
import { checkRedisUrl, maskPassword } from './redis-url.js';
import { ASK_LATER, type Store, type StoredValue } from './types.js';
import { checkIncrement, checkPageSize, checkScanLimit, checkTtl, compareKeys } from './semantics.js';

export interface RedisStoreOptions {
  clock?: Clock;
  /** Put before every key, so several sites or test runs can share one Redis (default 'callout:'). */
  keyPrefix?: string;
  /** How long open() and each reconnection wait for the server (default 2000). */
  connectTimeoutMs?: number;
  /** How long one command may take before it fails (default 1000). */
  commandTimeoutMs?: number;
  /**
   * false: return at once and connect in the background, so a daemon starts while Redis is
   * down and its operations fail promptly (StoreError) until Redis answers. Default true.
   */
  waitForConnection?: boolean;
}

export interface RedisStoreEvents {
  down: [reason: string];
  up: [];
}

const DEFAULT_KEY_PREFIX = 'callout:';
const DEFAULT_CONNECT_TIMEOUT_MS = 2000;
const DEFAULT_COMMAND_TIMEOUT_MS = 1000;
const RECONNECT_MAX_MS = 1000;
/** Command deadlines of silence, with commands waiting, after which a connection is dropped. */
const SILENCE_DEADLINES = 2;
const SCAN_BATCH = 500;
/** Keys SCAN looks at per call. */
const SCAN_COUNT = 1000;
const NO_EXPIRY = Number.MAX_SAFE_INTEGER;
const NOT_CONNECTED = 'not connected yet';
/** ioredis's message when the connection it was making closed, whatever closed it. */
const DRIVER_CONNECTION_CLOSED = 'Connection is closed.';
/** ioredis's message for a command past commandTimeout, which names neither the wait nor the server. */
const DRIVER_COMMAND_TIMEOUT = 'Command timed out';
/** How much of a key an error shows: keys hold senders' addresses, of any length. */
const KEY_SHOWN = 200;
/**
 * Redis's replies that refuse every write (some every command) until the server is mended or
 * done, not one key or call (StoreError outage): READONLY in a failover, LOADING its data at a
 * start, MASTERDOWN (a replica cut off from its primary), OOM (maxmemory reached, with the
 * noeviction policy), MISCONF (its snapshot failed to save, a full disk as a rule), NOREPLICAS
 * (fewer replicas than min-replicas-to-write), BUSY (a script past its time limit).
 */
const OUTAGE_REPLIES = /^(READONLY|LOADING|MASTERDOWN|OOM|MISCONF|NOREPLICAS|BUSY)\b/;

/**
 * GET for the scripts. A key under the prefix that holds a list, hash ... (another program wrote
 * it) fails as `WRONGTYPE <index in KEYS> <type>`, so that the error can name the key (keyNamed).
 */
const GET_STRING = `local function getString(index)
  local value = redis.pcall('GET', KEYS[index])
  if type(value) ~= 'table' then return value end
  if string.sub(value.err, 1, 9) == 'WRONGTYPE' then
    error({ err = 'WRONGTYPE ' .. index .. ' ' .. redis.call('TYPE', KEYS[index]).ok })
  end
  error(value)
end
`;

const SCRIPTS = {
  calloutRead: {
    lua: `${GET_STRING}local rows = {}
for i, key in ipairs(KEYS) do
  local value = getString(i)
  local ttl = value and redis.call('PTTL', key)
  -- In its last millisecond (see the header) the key is gone for SET NX too.
  -- pcall: on a replica (read-only) the read still answers, without the DEL.
  if ttl == 0 then redis.pcall('DEL', key) end
  if value and ttl ~= 0 then rows[i] = { value, ttl } else rows[i] = false end
end
return rows`,
  },
  calloutCompareAndSet: {
    numberOfKeys: 1,
    lua: `${GET_STRING}if getString(1) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1`,
  },
  calloutDeleteIf: {
    numberOfKeys: 1,
    lua: `${GET_STRING}if getString(1) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1`,
  },
  calloutIncrement: {
    numberOfKeys: 1,
    lua: `${GET_STRING}local current = getString(1)
-- In its last millisecond (see the header) the counter starts again, with the new ttl.
if current and redis.call('PTTL', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1])
  current = false
end
local created = current == false
-- As store/semantics: a stored value beyond the safe integers is no counter (INCRBY would take it).
if current and (tonumber(current) == nil or math.abs(tonumber(current)) > 9007199254740991) then
  return redis.error_reply('stored value is not an integer counter')
end
local by = ARGV[1]
-- As store/semantics: a decrement stops at 0 and leaves an absent counter absent. INCRBY by a
-- string (not a Lua number) still refuses a stored value that is no counter, such as "-0".
if tonumber(by) < 0 then
  if created then return 0 end
  local value = tonumber(current)
  if value <= 0 then by = '0' elseif value + tonumber(by) < 0 then by = '-' .. current end
elseif current and tonumber(by) > 0 and string.match(current, '^%-[1-9]%d*$') then
  -- As store/semantics: an addition to a counter below 0 starts from 0, keeping the expiry.
  -- Matched as INCRBY reads integers: tonumber() also took "-1.5" and " -2", which are no
  -- counters and must be refused, not overwritten.
  redis.call('SET', KEYS[1], '0', 'KEEPTTL')
end
local sum = redis.call('INCRBY', KEYS[1], by)
if sum > 9007199254740991 or sum < -9007199254740991 then
  redis.call('DECRBY', KEYS[1], by)
  return redis.error_reply('counter would leave the safe integer range')
end
if created then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return sum`,
  },
};

/** The commands SCRIPTS defines on the client. */
interface ScriptCommands {
  calloutRead(keyCount: number, ...keys: string[]): Promise<Array<[value: string, pttl: number] | null>>;
  calloutCompareAndSet(key: string, expected: string, value: string, ttlMs: number): Promise<number>;
  calloutDeleteIf(key: string, expected: string): Promise<number>;
  calloutIncrement(key: string, by: number, ttlMs: number): Promise<number>;
}
type ScriptedRedis = Redis & ScriptCommands;

/**
 * err, or for a script's WRONGTYPE (GET_STRING) an error that names the key and what it holds,
 * which Redis's own message does not. redisKeys are the KEYS the script was given.
 */
function keyNamed(err: unknown, redisKeys: readonly string[]): unknown {
  const match = err instanceof Error ? /^WRONGTYPE (\d+) (\S+)/.exec(err.message) : null;
  const key = match ? redisKeys[Number(match[1]) - 1] : undefined;
  if (!match || key === undefined) return err;
  const shown = abbreviate(JSON.stringify(key), KEY_SHOWN);
  return new Error(`Redis key ${shown} holds a ${match[2]}, not a string: another program wrote it under the key prefix`, { cause: err });
}

/**
 * Why Redis would not let the URL's user in, naming what to mend, or undefined for any other
 * error: its own words ("WRONGPASS invalid username-password pair or user is disabled.") do not
 * say where the password came from, and waiting does not mend them.
 */
function refusedCredentials(err: unknown): string | undefined {
  const message = err instanceof Error ? err.message : '';
  if (message.startsWith('WRONGPASS')) return `Redis refused the user name and password of the URL: ${message}`;
  if (message.startsWith('NOAUTH')) return `Redis asks for a password and the URL gives none: ${message}`;
  return undefined;
}

/** Why Redis refused to SELECT the URL's database, or undefined for any other error. */
function refusedDatabase(err: unknown): string | undefined {
  const command = typeof err === 'object' && err !== null && 'command' in err ? (err.command as { name?: unknown; args?: unknown[] } | undefined) : undefined;
  if (command?.name !== 'select') return undefined;
  return `Redis refused database ${String(command.args?.[0])} of the URL: ${describeError(err)}`;
}

function positiveInteger(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new ConfigError(`redis store: ${name} must be a positive integer, got ${value}`);
  }
  return value;
}

/** Escapes the characters Redis glob patterns give a meaning, so a prefix matches literally. */
function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&');
}

export class RedisStore extends EventEmitter<RedisStoreEvents> implements Store {
  readonly kind = 'redis' as const;
  private ready = false;
  /** 'down' has been emitted and no 'up' since: each outage is reported once. */
  private downReported = false;
  private closed = false;
  /** The socket holds this turn's commands for one write (batchThisTurn). */
  private corked = false;
  private lastConnectionError = NOT_CONNECTED;
  /** Set when Redis refused the URL's database on the connection being made. */
  private databaseRefused: string | undefined;

  private constructor(
    private readonly client: ScriptedRedis,
    /** The URL with any password masked. */
    readonly url: string,
    private readonly keyPrefix: string,
    private readonly clock: Clock,
  ) {
    super();
    client.on('ready', () => {
      // ioredis goes on after a refused SELECT, on database 0: the data of another site or program.
      // The connection is dropped instead, and made again (with the SELECT) until Redis takes it.
      if (this.databaseRefused !== undefined) {
        this.lastConnectionError = this.databaseRefused;
        this.databaseRefused = undefined;
        client.disconnect(true);
        return;
      }
      this.lastConnectionError = '';
      if (this.ready) return;
      this.ready = true;
      this.downReported = false;
      this.emit('up');
    });
    client.on('error', (err: unknown) => {
      this.lastConnectionError = refusedCredentials(err) ?? describeError(err);
      this.databaseRefused ??= refusedDatabase(err);
    });
    client.on('close', () => {
      if (this.lastConnectionError === '') this.lastConnectionError = 'connection lost';
      // Also when the first connection fails: a daemon started while Redis is down (or refuses
      // the database) said so only once requests came, and then only as stage faults.
      const wasReady = this.ready;
      this.ready = false;
      if (this.closed || (!wasReady && this.downReported)) return;
      this.downReported = true;
      this.emit('down', this.lastConnectionError);
    });
  }

  /**
   * Connects to url (redis://[user:password@]host:port/db, rediss://... for TLS, or a unix
   * socket path) and resolves once the server answers.
   */
  static async open(url: string, options: RedisStoreOptions = {}): Promise<RedisStore> {
    const connectTimeoutMs = positiveInteger('connectTimeoutMs', options.connectTimeoutMs, DEFAULT_CONNECT_TIMEOUT_MS);
    const commandTimeoutMs = positiveInteger('commandTimeoutMs', options.commandTimeoutMs, DEFAULT_COMMAND_TIMEOUT_MS);
    const driverOptions: RedisOptions = {
      lazyConnect: true,
      connectTimeout: connectTimeoutMs,
      commandTimeout: commandTimeoutMs,
      // A server that stops answering (a hung host, dropped packets, a primary gone while its
      // address moves to another) leaves the connection open: each command would wait out its
      // deadline there and stay queued, with its bytes, for a reply that never comes, for as
      // long as the kernel keeps the socket (many minutes). Silent for two command deadlines
      // while commands wait, the connection is dropped and made again.
      socketTimeout: SILENCE_DEADLINES * commandTimeoutMs,
      // After a failover the old primary, now a replica, refuses every write with READONLY on a
      // connection that stays open: a new connection reaches whatever the address names now.
      reconnectOnError: (err) => err.message.startsWith('READONLY'),
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      retryStrategy: (attempt) => Math.min(attempt * 100, RECONNECT_MAX_MS),
      // RESP2 works with every server version; nothing here needs RESP3 types.
      protocol: 2,
      maintNotifications: 'disabled',
      connectionName: 'callout',
      scripts: SCRIPTS,
    };
    const driverUrl = checkRedisUrl(url, driverOptions);
    const client = new Redis(driverUrl, driverOptions) as ScriptedRedis;
    const store = new RedisStore(client, maskPassword(url), options.keyPrefix ?? DEFAULT_KEY_PREFIX, options.clock ?? systemClock);
    if (options.waitForConnection === false) {
      client.connect().catch(() => undefined);
      return store;
    }
    try {
      await settleWithin(client.connect(), connectTimeoutMs, () => {
        throw new Error(`no answer within ${connectTimeoutMs} ms`);
      });
    } catch (err) {
      store.closed = true;
      client.disconnect();
      // ioredis says only "Connection is closed." when Redis refused the password or the
      // connection: the error event said why, and that is the whole reason.
      const reason = describeError(err);
      const last = store.lastConnectionError;
      let why = reason;
      if (last !== NOT_CONNECTED && !reason.includes(last)) why = reason === DRIVER_CONNECTION_CLOSED ? last : `${reason} (${last})`;
      throw new StoreError(`${store.context('open')} failed: ${why}`, { cause: err });
    }
    if (!store.ready) {
      // Connected, but to no usable database (see the 'ready' listener): waiting will not mend it.
      store.closed = true;
      client.disconnect();
      throw new ConfigError(`${store.context('open')} failed: ${store.lastConnectionError}`);
    }
    return store;
  }

  /** Whether the connection to Redis is up; operations fail promptly while it is not. */
  get healthy(): boolean {
    return this.ready && !this.closed;
  }

  async get(key: string): Promise<StoredValue | undefined> {
    return this.run('get', async () => (await this.read([key]))[0]);
  }

  /** One script call for all the keys: a round trip, not one per key. */
  async getMany(keys: readonly string[]): Promise<Array<StoredValue | undefined>> {
    return this.run('getMany', async () => {
      const rows: Array<StoredValue | undefined> = [];
      // SCAN_BATCH keys per script call: a long list must not hold the server up in one script.
      for (let start = 0; start < keys.length; start += SCAN_BATCH) rows.push(...(await this.read(keys.slice(start, start + SCAN_BATCH))));
      return rows;
    });
  }

  /** Every value is across the network: only get() can tell. */
  peek(): typeof ASK_LATER {
    return ASK_LATER;
  }

  async set(key: string, value: string, ttlMs: number): Promise<void> {
    await this.run('set', async (context) => {
      const ttl = checkTtl(context, ttlMs);
      await this.client.set(this.keyPrefix + key, value, 'PX', ttl);
    });
  }

  async setIfAbsent(key: string, value: string, ttlMs: number): Promise<boolean> {
    return this.run('setIfAbsent', async (context) => {
      const ttl = checkTtl(context, ttlMs);
      return (await this.client.set(this.keyPrefix + key, value, 'PX', ttl, 'NX')) === 'OK';
    });
  }

  async compareAndSet(key: string, expected: string | undefined, value: string, ttlMs: number): Promise<boolean> {
    if (expected === undefined) return this.setIfAbsent(key, value, ttlMs);
    return this.run('compareAndSet', async (context) => {
      const ttl = checkTtl(context, ttlMs);
      const redisKey = this.keyPrefix + key;
      const result = await this.client.calloutCompareAndSet(redisKey, expected, value, ttl).catch((err: unknown) => {
        throw keyNamed(err, [redisKey]);
      });
      return result === 1;
    });
  }

  async delete(key: string): Promise<void> {
    await this.run('delete', async () => {
      await this.client.del(this.keyPrefix + key);
    });
  }

  async deleteIf(key: string, expected: string): Promise<boolean> {
    return this.run('deleteIf', async () => {
      const redisKey = this.keyPrefix + key;
      const result = await this.client.calloutDeleteIf(redisKey, expected).catch((err: unknown) => {
        throw keyNamed(err, [redisKey]);
      });
      return result === 1;
    });
  }

  async increment(key: string, by: number, ttlMs: number): Promise<number> {
    return this.run('increment', async (context) => {
      checkIncrement(context, by);
      const ttl = checkTtl(context, ttlMs);
      const redisKey = this.keyPrefix + key;
      return this.client.calloutIncrement(redisKey, by, ttl).catch((err: unknown) => {
        throw keyNamed(err, [redisKey]);
      });
    });
  }

  async scan(prefix: string, limit: number): Promise<Array<{ key: string } & StoredValue>> {
    return this.run('scan', async (context) => {
      checkScanLimit(context, limit);
      const rows: Array<{ key: string } & StoredValue> = [];
      // Keys may expire between SCAN and the read: those missing are made up for by another walk
      // for the keys after the last one read.
      let after: string | undefined;
      while (rows.length < limit) {
        const { keys, more } = await this.firstKeysUnder(prefix, after, limit - rows.length);
        for (const row of await this.rowsOf(keys)) rows.push(row);
        if (!more) break;
        after = keys.at(-1);
      }
      return rows;
    });
  }

  async *scanPages(prefix: string, pageSize: number): AsyncGenerator<Array<{ key: string } & StoredValue>, void, undefined> {
    checkPageSize(this.context('scan'), pageSize);
    const pattern = `${escapeGlob(this.keyPrefix + prefix)}*`;
    // Keys found and not yet read: a Set, since SCAN may return a key more than once (within
    // a page; one that comes again after its page has gone is listed again).
    let pending = new Set<string>();
    let cursor = '0';
    do {
      const [next, batch] = await this.run('scan', () => this.client.scan(cursor, 'MATCH', pattern, 'COUNT', SCAN_COUNT));
      for (const redisKey of batch) pending.add(redisKey.slice(this.keyPrefix.length));
      cursor = next;
      while (pending.size >= pageSize || (cursor === '0' && pending.size > 0)) {
        const keys = [...pending];
        pending = new Set(keys.slice(pageSize));
        const page = await this.run('scan', () => this.rowsOf(keys.slice(0, pageSize)));
        if (page.length > 0) yield page.sort((a, b) => compareKeys(a.key, b.key));
      }
    } while (cursor !== '0');
  }

  /** Always 0: Redis expires keys itself (see the header). */
  async purgeExpired(): Promise<number> {
    return this.run('purgeExpired', async () => 0);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.ready = false;
    await this.client.quit().catch(() => this.client.disconnect());
  }

  private context(operation: string): string {
    return `redis store ${this.url}: ${operation}`;
  }

  /** The live entries of keys (without the store prefix), SCAN_BATCH keys per script call, the absent left out. */
  private async rowsOf(keys: readonly string[]): Promise<Array<{ key: string } & StoredValue>> {
    const rows: Array<{ key: string } & StoredValue> = [];
    for (let start = 0; start < keys.length; start += SCAN_BATCH) {
      const batch = keys.slice(start, start + SCAN_BATCH);
      const entries = await this.read(batch);
      for (const [index, entry] of entries.entries()) {
        const batchKey = batch[index];
        if (entry && batchKey !== undefined) rows.push({ key: batchKey, ...entry });
      }
    }
    return rows;
  }

  /** The live entries of keys (without the store prefix), undefined where absent. */
  private async read(keys: string[]): Promise<Array<StoredValue | undefined>> {
    const sentAt = this.clock.now();
    const redisKeys = keys.map((key) => this.keyPrefix + key);
    const rows = await this.client.calloutRead(redisKeys.length, ...redisKeys).catch((err: unknown) => {
      throw keyNamed(err, redisKeys);
    });
    return rows.map((row) => {
      if (row === null) return undefined;
      const [value, pttl] = row;
      return { value, expiresAt: pttl < 0 ? NO_EXPIRY : sentAt + pttl };
    });
  }

  /**
   * The first `wanted` keys under prefix after `after` (all when undefined), without the store
   * prefix, in key order, and whether there are more. While SCAN walks, only the first keys seen
   * so far are kept (pruned whenever they reach twice `wanted` plus a SCAN batch), so memory is
   * bounded by `wanted`, not by the keys under the prefix: a site's greylist has millions.
   */
  private async firstKeysUnder(prefix: string, after: string | undefined, wanted: number): Promise<{ keys: string[]; more: boolean }> {
    const pattern = `${escapeGlob(this.keyPrefix + prefix)}*`;
    // A Set: SCAN may return a key more than once.
    let kept = new Set<string>();
    let more = false;
    const prune = (): void => {
      const sorted = [...kept].sort(compareKeys);
      if (sorted.length > wanted) more = true;
      kept = new Set(sorted.slice(0, wanted));
    };
    let cursor = '0';
    do {
      const [next, batch] = await this.client.scan(cursor, 'MATCH', pattern, 'COUNT', SCAN_COUNT);
      for (const redisKey of batch) {
        const key = redisKey.slice(this.keyPrefix.length);
        if (after === undefined || compareKeys(key, after) > 0) kept.add(key);
      }
      if (kept.size >= 2 * wanted + SCAN_COUNT) prune();
      cursor = next;
    } while (cursor !== '0');
    prune();
    return { keys: [...kept], more };
  }

  /** Corks the connection's socket until the end of this turn (see DESCRIPTION), once per turn. */
  private batchThisTurn(): void {
    const stream = this.client.stream as Redis['stream'] | undefined;
    if (this.corked || !stream || stream.destroyed) return;
    stream.cork();
    this.corked = true;
    // The socket corked, not whichever one a reconnection has put in its place since.
    setImmediate(() => {
      this.corked = false;
      stream.uncork();
    });
  }

  /**
   * Why a command failed, in the words of the outage rather than the driver's where they differ,
   * and whether it was one (StoreError outage): Redis out of reach or silent, or answering that it
   * takes no writes now (OUTAGE_REPLIES).
   */
  private failure(err: unknown): { reason: string; outage: boolean } {
    // While disconnected the driver only says it would not queue; the connection error says why.
    // So also once the socket has gone and before the driver reports it ('close'), a turn of the
    // event loop later: it then refuses commands with "Stream isn't writeable and
    // enableOfflineQueue options is false", which names an option, not the outage.
    // An error reply (READONLY, which drops the connection at once) is Redis's own answer all the same.
    const stream = this.client.stream as Redis['stream'] | undefined;
    const reply: unknown = err instanceof Error && !(err instanceof ReplyError) ? err.cause : err;
    const answered = reply instanceof ReplyError;
    if (!this.ready || (stream?.writable !== true && !answered)) return { reason: `Redis is unreachable (${this.lastConnectionError || 'connection lost'})`, outage: true };
    if (err instanceof Error && err.message === DRIVER_COMMAND_TIMEOUT) {
      return { reason: `Redis did not answer within ${this.client.options.commandTimeout} ms (command timed out)`, outage: true };
    }
    return { reason: describeError(err), outage: answered && OUTAGE_REPLIES.test((reply as Error).message) };
  }

  /** Runs one operation, turning any failure into a StoreError that names URL and operation. */
  private async run<T>(operation: string, work: (context: string) => Promise<T>): Promise<T> {
    const context = this.context(operation);
    if (this.closed) throw new StoreError(`${context}: store is closed`);
    try {
      this.batchThisTurn();
      return await work(context);
    } catch (err) {
      if (err instanceof StoreError) throw err;
      const { reason, outage } = this.closed ? { reason: 'the store was closed while it ran', outage: false } : this.failure(err);
      throw new StoreError(`${context} failed: ${reason}`, { cause: err, outage });
    }
  }
}
