/**
 * NAME
 *   cli/exit-status - the exit status of a command that failed
 *
 * DESCRIPTION
 *   One error class per failure (core/errors) maps to one status, after sysexits(3), so that
 *   scripts and Postfix's pipe(8) can tell a mistake on the command line from a configuration
 *   to fix and from a store to try again later.
 */

import { CommanderError } from 'commander';
import { CalloutError } from '../core/errors.js';

/**
 * sysexits(3): 64 usage, 78 configuration or a damaged store (restored or moved away by hand,
 * as a configuration is mended), 75 (EX_TEMPFAIL) a store that cannot be reached now
 * (Redis down, a SQLite lock held too long: try again later; Postfix's pipe(8) defers a message
 * on 75 instead of bouncing it) or a listen address that is not up yet, 70 anything else.
 */
export function exitCodeFor(err: unknown): number {
  if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 64;
  if (!(err instanceof CalloutError)) return 70;
  switch (err.code) {
    case 'USAGE':
      return 64;
    case 'CONFIG_INVALID':
    case 'STORE_DAMAGED':
      return 78;
    case 'STORE_UNAVAILABLE':
    case 'LISTEN_UNAVAILABLE':
      return 75;
    default:
      return 70;
  }
}
