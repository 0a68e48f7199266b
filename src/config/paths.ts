/**
 * NAME
 *   config/paths - a file or directory the configuration names: an absolute path
 *
 * DESCRIPTION
 *   One configuration file is read by the daemon, started in / by init, and by the commands an
 *   administrator types in a directory of their own (`config check`, `greylist`, `bounce`). A
 *   relative path was taken from each one's own working directory: `config check` found the
 *   file and the daemon did not (or skipped a `.local` whitelist without a word), or a command
 *   and the daemon used different stores. So every such setting takes an absolute path:
 *   dataDir (config/load), the greylist stage's whitelistClientFiles and
 *   whitelistRecipientFiles, the batv stage's keys' secretFile.
 *
 * ERRORS
 *   A relative path is refused with ABSOLUTE_PATH_EXPECTED, after the key and the value found
 *   (`policy.stages.0.keys.0.secretFile (batv): got "batv.key", expected an absolute path
 *   (...)`).
 */

import { isAbsolute } from 'node:path';
import { z } from 'zod';

export const ABSOLUTE_PATH_EXPECTED =
  'expected an absolute path (a relative one is taken from the directory each command is started in: / for the daemon under systemd, another for a command typed in a shell)';

/** The schema of a setting that names a file: a string that is an absolute path. */
export function absolutePath() {
  return z.string().refine(isAbsolute, ABSOLUTE_PATH_EXPECTED);
}
