/**
 * NAME
 *   store/index - choose and open a Store backend by name
 *
 * DESCRIPTION
 *   The configuration names a backend ({ kind: 'memory' }, { kind: 'sqlite', path } or
 *   { kind: 'redis', url }) and openStore returns it behind the one Store interface, so nothing
 *   above this folder knows which backend a site runs.
 *
 * ERRORS
 *   Opening a persistent backend rejects with StoreError, or with ConfigError for what waiting
 *   will not mend (a SQLite path that cannot hold a store, an unusable Redis URL); an unknown kind (a
 *   configuration that bypassed the schema) rejects with ConfigError.
 */

import { systemClock, type Clock } from '../core/clock.js';
import { ConfigError } from '../core/errors.js';
import { MemoryStore } from './memory.js';
import { RedisStore } from './redis.js';
import { SqliteStore } from './sqlite.js';
import type { Store } from './types.js';

export type { Store, StoredValue } from './types.js';
export { MemoryStore, type MemoryStoreOptions } from './memory.js';
export { SqliteStore, type SqliteStoreOptions } from './sqlite.js';
export { RedisStore, type RedisStoreEvents, type RedisStoreOptions } from './redis.js';

export type StoreSpec =
  | { kind: 'memory'; maxEntries?: number }
  | { kind: 'sqlite'; path: string; busyTimeoutMs?: number; sync?: 'normal' | 'full' }
  | { kind: 'redis'; url: string; keyPrefix?: string; connectTimeoutMs?: number; commandTimeoutMs?: number };

export async function openStore(spec: StoreSpec, clock: Clock = systemClock): Promise<Store> {
  switch (spec.kind) {
    case 'memory':
      return new MemoryStore({ clock, maxEntries: spec.maxEntries });
    case 'sqlite':
      return SqliteStore.open(spec.path, { clock, busyTimeoutMs: spec.busyTimeoutMs, sync: spec.sync });
    case 'redis':
      return RedisStore.open(spec.url, {
        clock,
        keyPrefix: spec.keyPrefix,
        connectTimeoutMs: spec.connectTimeoutMs,
        commandTimeoutMs: spec.commandTimeoutMs,
      });
    default: {
      const unknown: never = spec;
      throw new ConfigError(`unknown store kind: ${JSON.stringify(unknown)}`);
    }
  }
}
