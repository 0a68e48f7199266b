/**
 * NAME
 *   cli/serve - `callout serve`: run the Postfix policy service
 *
 * SYNOPSIS
 *   callout serve [--config FILE] [--listen HOST:PORT|PATH] [--data-dir DIR] [engine options]
 *
 * DESCRIPTION
 *   Starts with sane defaults and no configuration file: policy listener on 127.0.0.1:10040,
 *   SQLite store under the data directory (/var/lib/callout), metrics on 127.0.0.1:10041, JSON
 *   logs on stdout. Flags override the file. SIGHUP reloads the file; SIGTERM and SIGINT drain
 *   and exit.
 */

import type { Command } from 'commander';
import { createLogger } from '../core/log.js';
import { describeError } from '../core/errors.js';
import { readConfigFile, mergeConfig } from '../config/load.js';
import type { RawConfig } from '../config/load.js';
import { validateConfig } from '../config/schema.js';
import { Daemon } from '../policy/daemon.js';
import { addEngineOptions, engineOverrides } from './options.js';
import type { EngineFlags } from './options.js';

interface ServeFlags extends EngineFlags {
  listen?: string;
  dataDir?: string;
  metrics?: string;
}

export function serveOverrides(flags: ServeFlags): RawConfig {
  const overrides = engineOverrides(flags);
  if (flags.listen !== undefined) overrides.policy = { listen: flags.listen };
  if (flags.dataDir !== undefined) overrides.dataDir = flags.dataDir;
  if (flags.metrics !== undefined) overrides.metrics = { listen: flags.metrics };
  return overrides;
}

export function registerServeCommand(program: Command): void {
  addEngineOptions(
    program
      .command('serve')
      .description('run the Postfix policy service (check_policy_service)')
      .option('--listen <address>', 'policy listener: HOST:PORT, [IPv6]:PORT or a UNIX socket path (default 127.0.0.1:10040)')
      .option('--data-dir <dir>', 'directory of the SQLite store (default /var/lib/callout)')
      .option('--metrics <address>', 'metrics and health listener, "" to disable (default 127.0.0.1:10041)'),
  ).action(async (flags: ServeFlags) => {
    const overrides = serveOverrides(flags);
    const level = validateConfig(mergeConfig(flags.config ? readConfigFile(flags.config) : {}, overrides), flags.config).log.level;
    const log = createLogger(level);
    const daemon = await Daemon.start({ ...(flags.config ? { configPath: flags.config } : {}), overrides, log });
    await new Promise<void>((resolve) => {
      process.on('SIGHUP', () => {
        log.info({}, 'SIGHUP: reloading configuration');
        void daemon.reload();
      });
      const stop = (signal: string) => {
        log.info({ signal }, 'shutting down');
        daemon.stop().then(resolve, (err: unknown) => {
          log.error({ err: describeError(err) }, 'shutdown failed');
          resolve();
        });
      };
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
    });
  });
}
