/**
 * NAME
 *   test/support/sqlite-version-1 - a store file as callout wrote it before schema version 2
 *
 * DESCRIPTION
 *   writeVersion1Store(path, rows) creates the schema version 1 of store/sqlite (a rowid table
 *   keyed by a TEXT primary key, with an index on expires_at) holding the rows, so that tests can
 *   open it with this version and check the upgrade.
 */

import Database from 'better-sqlite3';

export type Version1Row = readonly [key: string, value: string, expiresAt: number];

export function writeVersion1Store(path: string, rows: Iterable<Version1Row>): void {
  const db = new Database(path);
  try {
    db.exec(`CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at INTEGER NOT NULL);
             CREATE INDEX kv_expires_at ON kv (expires_at);`);
    db.pragma('user_version = 1');
    const insert = db.prepare('INSERT INTO kv (key, value, expires_at) VALUES (?, ?, ?)');
    db.transaction(() => {
      for (const row of rows) insert.run(...row);
    })();
  } finally {
    db.close();
  }
}
