/**
 * NAME
 *   config/secrets - the secrets of a configuration masked wherever it is shown
 *
 * SYNOPSIS
 *   JSON.stringify(value, hideSecrets)
 *
 * DESCRIPTION
 *   A JSON.stringify replacer for every place that quotes configuration values: `config print`
 *   (pasted into tickets), and the schema's errors (on the terminal, and in the log when a
 *   reload is refused). A key named like a secret (`secret`, and a mistyped `Secret` too,
 *   whose refusal quotes the mapping it is in; not `secretFile`, a path) is shown as ***,
 *   whatever its value; a Redis URL's password is masked under any key, in a list too (a URL
 *   written where the store's mapping or its `url` goes, or as a list item).
 */

import { HIDDEN_SECRET } from '../core/text.js';
import { maskPassword } from '../store/redis-url.js';

const SECRET_KEY = /^secret$/i;
const REDIS_URL = /^rediss?:\/\//i;

/** Whether a key holds a secret (whatever its value: YAML reads 84729301 as a number). */
export function isSecretKey(key: PropertyKey | undefined): boolean {
  return typeof key === 'string' && SECRET_KEY.test(key);
}

export function hideSecrets(key: string, value: unknown): unknown {
  if (isSecretKey(key) && value !== undefined) return HIDDEN_SECRET;
  return typeof value === 'string' && (key === 'url' || REDIS_URL.test(value)) ? maskPassword(value) : value;
}
