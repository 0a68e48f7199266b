/**
 * NAME
 *   test/support/config-keys - configurations that set one key, for tests that walk the schema
 *
 * DESCRIPTION
 *   leaves(keys) keeps the keys of schemaKeys() (config/schema) that hold a value, not a
 *   mapping of keys. setting(key, value, base) is `base` (a raw configuration or stage entry)
 *   with the dotted key set. STAGE_REQUIRED holds the options a stage cannot go without, so
 *   that an entry of it parses with one option changed.
 */

export const leaves = (keys: string[]): string[] => keys.filter((key) => !keys.some((other) => other.startsWith(`${key}.`)));

export function setting(key: string, value: unknown, base: Record<string, unknown> = {}): Record<string, unknown> {
  const raw = structuredClone(base);
  const path = key.split('.');
  let node: Record<string, unknown> = raw;
  for (const part of path.slice(0, -1)) node = (node[part] ??= {}) as Record<string, unknown>;
  node[path.at(-1)!] = value;
  return raw;
}

export const STAGE_REQUIRED: Readonly<Record<string, Record<string, unknown>>> = {
  'recipient-callforward': { hosts: ['192.0.2.25'] },
  batv: { domains: ['example.com'], keys: [{ keynum: 1, secret: 'a test secret' }] },
  ratelimit: { limits: [{ per: 'client', count: 'messages', max: 5 }] },
};
