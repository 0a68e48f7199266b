/**
 * NAME
 *   config/load - read the configuration file and merge command-line overrides
 *
 * DESCRIPTION
 *   The file is YAML (JSON is YAML too). Flags override the file key by key: they are turned
 *   into the same nested shape and merged before validation, so a flag is checked by the same
 *   schema and error messages as the key it sets.
 *
 * ERRORS
 *   ConfigError naming the file and, for YAML syntax errors, the line and column; an alias to
 *   no anchor, aliases whose expansion would exhaust memory, and an anchor that contains its own
 *   alias are refused the same way.
 */

import { closeSync, openSync, readSync } from 'node:fs';
import { parseDocument } from 'yaml';
import { ConfigError, describeError } from '../core/errors.js';
import { validateConfig } from './schema.js';
import type { Config } from './schema.js';

export type RawConfig = Record<string, unknown>;

/** Aliases a configuration may use: far more than one needs, far fewer than an attack. */
const MAX_ALIAS_COUNT = 100;
/** The largest configuration file read: room for long inline whitelists. */
const MAX_CONFIG_BYTES = 8 * 1024 * 1024;

export function readConfigFile(path: string): RawConfig {
  const text = readBounded(path);
  // logLevel error: yaml's warnings (a collection used as a key) went to the process's stderr;
  // such a key is reported by the schema as unknown, with its path.
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true, logLevel: 'error' });
  if (doc.errors.length > 0) {
    const first = doc.errors[0]!;
    const where = first.linePos?.[0] ? ` at line ${first.linePos[0].line}, column ${first.linePos[0].col}` : '';
    throw new ConfigError(`${path}: YAML syntax error${where}: ${first.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '')}`);
  }
  let value: unknown;
  try {
    // Aliases are resolved here: one to no anchor, or so many that expanding them would take
    // the process's memory (a "billion laughs" file; yaml stops at MAX_ALIAS_COUNT), is an error.
    value = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (err) {
    throw new ConfigError(`${path}: YAML aliases: ${describeError(err)}`, { cause: err });
  }
  const circle = selfReference(value, []);
  if (circle !== undefined) throw new ConfigError(`${path}: ${circle.join('.') || '(top level)'}: refers to itself (a YAML alias inside its own anchor)`);
  if (value === null || value === undefined) return {};
  if (typeof value !== 'object' || Array.isArray(value)) throw new ConfigError(`${path}: expected a mapping of settings at the top level`);
  return value as RawConfig;
}

/**
 * The file's text, read up to MAX_CONFIG_BYTES: a larger file (or an endless one, such as
 * /dev/zero or a pipe that never closes its end) is refused, not read into memory.
 */
function readBounded(path: string): string {
  const chunks: Buffer[] = [];
  let total = 0;
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    for (;;) {
      const chunk = Buffer.allocUnsafe(64 * 1024);
      const read = readSync(fd, chunk, 0, chunk.length, null);
      if (read === 0) break;
      total += read;
      if (total > MAX_CONFIG_BYTES) throw new ConfigError(`${path}: larger than ${MAX_CONFIG_BYTES / (1024 * 1024)} MiB: not a configuration file`);
      chunks.push(chunk.subarray(0, read));
    }
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(`${path}: cannot read: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  return Buffer.concat(chunks, total).toString('utf8');
}

/** The path of a collection inside itself (a YAML anchor that contains its own alias), if any. */
function selfReference(value: unknown, path: string[], within: object[] = []): string[] | undefined {
  // Only mappings and sequences hold aliases; a !!binary value's octets need no walk.
  if (value === null || typeof value !== 'object' || ArrayBuffer.isView(value)) return undefined;
  if (within.includes(value)) return path;
  for (const [key, member] of Object.entries(value)) {
    const found = selfReference(member, [...path, key], [...within, value]);
    if (found) return found;
  }
  return undefined;
}

/** Deep merge of plain objects; arrays and scalars in `override` replace those in `base`. */
export function mergeConfig(base: RawConfig, override: RawConfig): RawConfig {
  const merged: RawConfig = { ...base };
  for (const [key, value] of Object.entries(override)) {
    if (value === undefined) continue;
    const current = merged[key];
    merged[key] =
      isPlainObject(value) && isPlainObject(current) ? mergeConfig(current, value) : value;
  }
  return merged;
}

/**
 * The file over `baseline` (a command's own defaults, such as the in-memory cache of
 * `callout verify`), and the flags over both.
 */
export function loadConfig(path: string | undefined, overrides: RawConfig = {}, baseline: RawConfig = {}): Config {
  const fromFile = path ? readConfigFile(path) : {};
  return validateConfig(mergeConfig(mergeConfig(baseline, fromFile), overrides), path ?? 'configuration');
}

function isPlainObject(value: unknown): value is RawConfig {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}
