/**
 * NAME
 *   cli/runtime - build the engine and its parts from a validated configuration
 *
 * DESCRIPTION
 *   One place that turns Config into a resolver (node:dns behind the TTL-bounded cache), a store
 *   and a CalloutEngine, so every command wires them the same way. daemonStateConfig() is the
 *   configuration of a command that works on a running daemon's state (greylist, bounce): a
 *   memory store, which no other process can reach, is refused there. unusedDataDir() says why a
 *   --data-dir places nothing: a warning, as Postfix warns of an unused parameter, since a
 *   refusal stopped installations that had run with it (a daemon's start, pipe(8)'s bounce
 *   record). openCommandStore() opens the store of every one-shot command, and says on stderr
 *   when that upgraded an old SQLite file.
 */

import { existsSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { loadConfig } from '../config/load.js';
import { flagOf } from './options.js';
import type { Config } from '../config/schema.js';
import { ConfigError } from '../core/errors.js';
import { settleWithin, systemClock } from '../core/clock.js';
import { coalescingDestination, createLogger, type Logger } from '../core/log.js';
import type { Clock } from '../core/clock.js';
import { CachingResolver } from '../dns/cache.js';
import { createNodeResolver, type NodeResolver } from '../dns/node-resolver.js';
import type { Resolver } from '../dns/types.js';
import { SqliteStore, openStore } from '../store/index.js';
import type { SchemaUpgrade } from '../store/sqlite.js';
import type { StoreSpec } from '../store/index.js';
import type { Store } from '../store/types.js';
import { CalloutEngine, heloOf } from '../verify/engine.js';

export interface Runtime {
  engine: CalloutEngine;
  resolver: Resolver;
  store: Store;
  close(): Promise<void>;
}

function nodeResolverOf(config: Config): NodeResolver {
  return createNodeResolver({ servers: config.dns.servers, timeoutMs: config.dns.timeout, tries: config.dns.tries });
}

export function createResolver(config: Config, clock: Clock = systemClock, base: Resolver = nodeResolverOf(config)): Resolver {
  return new CachingResolver(base, {
    clock,
    minTtlSeconds: config.dns.minTtl / 1000,
    maxTtlSeconds: config.dns.maxTtl / 1000,
    negativeTtlSeconds: config.dns.negativeTtl / 1000,
  });
}

export function storePath(config: Config): string {
  return isAbsolute(config.store.path) ? config.store.path : join(config.dataDir, config.store.path);
}

/**
 * The store of a command that only reads or removes (a listing, a query, a drop): a SQLite file
 * that is not there is an error, where opening it would create an empty store in a mistyped
 * --data-dir and list nothing, as if the daemon had kept nothing.
 */
export async function openExistingStore(spec: StoreSpec, clock: Clock = systemClock, options = '--data-dir, -c', err: NodeJS.WritableStream = process.stderr): Promise<Store> {
  if (spec.kind === 'sqlite' && !existsSync(spec.path)) {
    // Only the options the command has: `greylist` has no --store to check.
    throw new ConfigError(`${spec.path}: no store there: nothing has been written to it yet (check ${options} or store.path)`);
  }
  return openCommandStore(spec, clock, err);
}

/**
 * The store of a one-shot command (`greylist`, `bounce`, `verify` with a SQLite store), opened as openStore
 * does. Opening a SQLite file of an older schema upgrades it for good (store/sqlite); the daemon
 * logs that (`store schema upgraded`), and a command that did it said nothing, so the one change
 * to the daemon's file that nobody asked for went unrecorded. One line on `err` says it.
 */
export async function openCommandStore(spec: StoreSpec, clock: Clock = systemClock, err: NodeJS.WritableStream = process.stderr): Promise<Store> {
  const store = await openStore(spec, clock);
  if (spec.kind === 'sqlite' && store instanceof SqliteStore && store.schemaUpgrade) err.write(`${schemaUpgradeLine(spec.path, store.schemaUpgrade)}\n`);
  return store;
}

/** What a one-shot command says of the upgrade; a VACUUM that failed left the file about three times its size, so how to get the room back too. */
export function schemaUpgradeLine(path: string, { from, to, compacted }: SchemaUpgrade): string {
  const notCompacted = typeof compacted === 'string' ? `; not compacted: ${compacted} (sqlite3 ${path} VACUUM, with the daemon stopped, gives the pages back)` : '';
  return `callout: store ${path}: schema upgraded from version ${from} to ${to}${notCompacted}`;
}

/**
 * The configuration (-c FILE, --data-dir) of a command that works on a running daemon's state
 * (its greylist, its suppression list): a memory store is refused, naming the file, since that
 * state is in the daemon's memory. Only a file sets memory; no such command has a flag for it.
 * A --data-dir that places nothing is said on `err`.
 */
export function daemonStateConfig(flags: { config?: string; dataDir?: string }, state: string, err: NodeJS.WritableStream = process.stderr): Config {
  const config = loadConfig(flags.config, flags.dataDir !== undefined ? { dataDir: flags.dataDir } : {}, {}, { flagOf });
  if (config.store.kind === 'memory') {
    throw new ConfigError(`${flags.config ?? 'configuration'}: store.kind: got "memory", expected sqlite or redis (${state} in a running daemon's memory cannot be reached from here)`);
  }
  const unused = unusedDataDir(config, flags);
  if (unused !== undefined) err.write(`callout: warning: ${unused}\n`);
  return config;
}

/**
 * Why a --data-dir has no effect, if it has none: the data directory places only a SQLite store
 * at a relative store.path, and one given beside a Redis or memory store or an absolute path
 * (`serve --cache FILE` makes one) was ignored without a word.
 */
export function unusedDataDir(config: Config, flags: { dataDir?: string; cache?: string }): string | undefined {
  if (flags.dataDir === undefined) return undefined;
  if (config.store.kind !== 'sqlite') return `--data-dir has no effect: the store is ${config.store.kind} (store.kind), which keeps no file in the data directory; leave --data-dir out`;
  // Named as the administrator gave it: only serve has --cache.
  if (isAbsolute(config.store.path)) return `--data-dir has no effect: the store's file ${config.store.path} is an absolute path (${flags.cache !== undefined ? '--cache' : 'store.path'}), which the data directory does not place; leave --data-dir out`;
  return undefined;
}

/** The store the configuration names: SQLite under its data directory, Redis, or memory. */
export function configuredStore(config: Config): StoreSpec {
  if (config.store.kind === 'sqlite') return { kind: 'sqlite', path: storePath(config), sync: config.store.sync };
  return config.store.kind === 'redis' ? { kind: 'redis', url: config.store.url, keyPrefix: config.store.keyPrefix } : { kind: 'memory' };
}

/** One per process: each destination stays registered until the process exits (to flush it then). */
let warnings: Logger | undefined;

export async function createRuntime(config: Config, clock: Clock = systemClock): Promise<Runtime> {
  // Before the store: `verify --cache FILE` without a name to announce created FILE, then failed.
  heloOf(config);
  const lookups = nodeResolverOf(config);
  const resolver = createResolver(config, clock, lookups);
  const store = await openCommandStore(configuredStore(config), clock);
  try {
    // Warnings of work no verdict waits for (a stale answer's refresh) go to stderr: stdout has the verdicts.
    const engine = new CalloutEngine(config, { resolver, store, clock, log: (warnings ??= createLogger('warn', coalescingDestination(2))) });
    return {
      engine,
      resolver,
      store,
      async close() {
        // A one-shot command ends soon after its last verdict. What still runs then (a stale
        // answer's refresh) gets one more overall deadline, and DNS lookups that outlived the
        // deadline are given up: waiting out their retries (15 s at dns.timeout 5 s and 2
        // tries) kept the process 13-14 s after a 1 s --timeout, for answers that would go into
        // a cache ending with the process.
        const late = Symbol('late');
        if ((await settleWithin(engine.idle(), config.callout.timeouts.overall, () => late)) === late) await engine.abandon();
        lookups.cancel();
        await store.close();
      },
    };
  } catch (err) {
    await store.close();
    throw err;
  }
}
