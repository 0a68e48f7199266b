/**
 * NAME
 *   test/support/store-writes - a Store whose writes pass through a test's hook
 *
 * DESCRIPTION
 *   onStoreWrite(store, hook) returns the store with each write (set, setIfAbsent,
 *   compareAndSet) handed to hook(key, write), which answers for it: it may note the key, run
 *   something before the write (another process's request landing between a read and this
 *   write), or act on the write's result, and returns what write() returns. Other methods are
 *   the store's own. Tests count writes and interleave processes this way at the one place
 *   every write passes, rather than each wrapping the store in a proxy of its own.
 */

import type { Store } from '../../src/store/types.js';

const WRITES = new Set<string | symbol>(['set', 'setIfAbsent', 'compareAndSet']);

export function onStoreWrite(store: Store, hook: (key: string, write: () => Promise<unknown>) => Promise<unknown>): Store {
  return new Proxy(store, {
    get(target, name) {
      const value: unknown = Reflect.get(target, name, target);
      if (typeof value !== 'function') return value;
      const method = (value as (...a: unknown[]) => Promise<unknown>).bind(target);
      if (!WRITES.has(name)) return method;
      return (key: string, ...rest: unknown[]) => hook(key, () => method(key, ...rest));
    },
  });
}
