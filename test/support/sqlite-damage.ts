/**
 * NAME
 *   test/support/sqlite-damage - a store file damaged as a failing disk or a stray write leaves it
 *
 * DESCRIPTION
 *   writeDamagedStore(path, damage) writes a store of DAMAGED_STORE_KEYS (one live row each) with
 *   store/sqlite, closes it (the WAL copied into the file) and overwrites pages of it with 0xa5:
 *   'after-schema' every page after the first, which holds the header and the schema (all that
 *   SqliteStore.open reads), so that every read or write after open meets the damage;
 *   'middle-page' the one page in the middle, so that the reads of some keys meet it and a write
 *   of a key that sorts after all of them (health:probe) does not.
 */

import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import { SqliteStore } from '../../src/store/sqlite.js';

/** 2000 keys of 50 characters and more: about 60 pages of 4096 octets. */
export const DAMAGED_STORE_KEYS: readonly string[] = Array.from({ length: 2000 }, (_, i) => `grey:${i}:${'x'.repeat(40)}`);

export async function writeDamagedStore(path: string, damage: 'after-schema' | 'middle-page'): Promise<void> {
  const store = await SqliteStore.open(path);
  await Promise.all(DAMAGED_STORE_KEYS.map((key) => store.set(key, 'v'.repeat(40), 86_400_000)));
  await store.close();
  const whole = readFileSync(path);
  const pageSize = whole.readUInt16BE(16);
  const [start, length] = damage === 'after-schema' ? [pageSize, whole.length - pageSize] : [Math.floor(whole.length / pageSize / 2) * pageSize, pageSize];
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, Buffer.alloc(length, 0xa5), 0, length, start);
  } finally {
    closeSync(fd);
  }
}
