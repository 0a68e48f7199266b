// The checkpoint thread against a wall clock stepped back: its wait for a WAL restart is bounded all the same.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const scratch = mkdtempSync(join(tmpdir(), 'callout-checkpointer-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

describe('startCheckpointer', () => {
  it('ends its wait for a WAL restart a reader holds up, and stops when told, though the wall clock steps back an hour', async () => {
    // The thread's clock can be set only from inside it: a module preloaded (--require) in a
    // child process runs in its worker threads too, and there steps Date.now() back an hour
    // after its first reading. A reader's open transaction keeps every restart busy.
    const stepBack = join(scratch, 'step-back.cjs');
    writeFileSync(
      stepBack,
      `if (!require('node:worker_threads').isMainThread) {
         const real = Date.now; let first = true;
         Date.now = () => { const now = real(); if (first) { first = false; return now; } return now - 3_600_000; };
       }`,
    );
    const script = join(scratch, 'run.mjs');
    writeFileSync(
      script,
      `import { once } from 'node:events';
       const { startCheckpointer } = await import(${JSON.stringify(new URL('../../src/store/sqlite-checkpointer.ts', import.meta.url).href)});
       const { default: Database } = await import(${JSON.stringify(pathToFileURL(createRequire(import.meta.url).resolve('better-sqlite3')).href)});
       const path = ${JSON.stringify(join(scratch, 'store.sqlite'))};
       const writer = new Database(path);
       writer.pragma('journal_mode = WAL');
       writer.pragma('wal_autocheckpoint = 0');
       writer.exec('CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)');
       const insert = writer.prepare('INSERT INTO t VALUES (?, ?)');
       writer.transaction(() => { for (let k = 0; k < 1500; k++) insert.run(k, 'x'.repeat(3000)); })();
       const reader = new Database(path);
       reader.exec('BEGIN');
       reader.prepare('SELECT count(*) FROM t').get();
       const thread = startCheckpointer(path, 5);
       const [message] = await once(thread, 'message');
       if (!message.ready) throw new Error(JSON.stringify(message));
       // A few rounds, each meeting the reader.
       await new Promise((resolve) => setTimeout(resolve, 100));
       thread.postMessage('stop');
       const stopped = await Promise.race([once(thread, 'exit').then(() => 'stopped'), new Promise((resolve) => setTimeout(resolve, 3000, 'still trying'))]);
       process.stdout.write(stopped);
       process.exit(0);`,
    );
    const { NODE_TEST_CONTEXT: _, ...env } = process.env;
    const child = spawn(process.execPath, ['--require', stepBack, '--import', 'tsx', script], { cwd: process.cwd(), env, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    await once(child, 'exit');
    assert.equal(out, 'stopped');
  });
});
