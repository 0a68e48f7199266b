/**
 * NAME
 *   store/index - choose and open a Store backend by name
 *
 * DESCRIPTION
 *   The configuration names a backend ({ kind: 'memory' } or { kind: 'sqlite', path }) and
 *   openStore returns it behind the one Store interface, so nothing above this folder knows
 *   which backend a site runs. Redis joins the union later as { kind: 'redis'; url: string }.
 *
 * ERRORS
 *   Opening a persistent backend rejects with StoreError; an unknown kind (a configuration that
 *   bypassed the schema) rejects with ConfigError.
 */

import { systemClock, type Clock } from '../core/clock.js';
import { ConfigError } from '../core/errors.js';
import { MemoryStore } from './memory.js';
import { SqliteStore } from './sqlite.js';
import type { Store } from './types.js';

export type { Store, StoredValue } from './types.js';
export { MemoryStore, type MemoryStoreOptions } from './memory.js';
export { SqliteStore, type SqliteStoreOptions } from './sqlite.js';

export type StoreSpec =
  | { kind: 'memory'; maxEntries?: number }
  | { kind: 'sqlite'; path: string; busyTimeoutMs?: number };

export async function openStore(spec: StoreSpec, clock: Clock = systemClock): Promise<Store> {
  switch (spec.kind) {
    case 'memory':
      return new MemoryStore({ clock, maxEntries: spec.maxEntries });
    case 'sqlite':
      return SqliteStore.open(spec.path, { clock, busyTimeoutMs: spec.busyTimeoutMs });
    default: {
      const unknown: never = spec;
      throw new ConfigError(`unknown store kind: ${JSON.stringify(unknown)}`);
    }
  }
}
