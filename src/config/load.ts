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
 *   ConfigError naming the file and, for YAML syntax errors, the line and column.
 */

import { readFileSync } from 'node:fs';
import { parseDocument } from 'yaml';
import { ConfigError } from '../core/errors.js';
import { validateConfig } from './schema.js';
import type { Config } from './schema.js';

export type RawConfig = Record<string, unknown>;

export function readConfigFile(path: string): RawConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`${path}: cannot read: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const first = doc.errors[0]!;
    const where = first.linePos?.[0] ? ` at line ${first.linePos[0].line}, column ${first.linePos[0].col}` : '';
    throw new ConfigError(`${path}: YAML syntax error${where}: ${first.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '')}`);
  }
  const value: unknown = doc.toJS();
  if (value === null || value === undefined) return {};
  if (typeof value !== 'object' || Array.isArray(value)) throw new ConfigError(`${path}: expected a mapping of settings at the top level`);
  return value as RawConfig;
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
