import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManualClock } from '../support/manual-time.js';
import { ConfigError } from '../../src/core/errors.js';
import { openStore, type StoreSpec } from '../../src/store/index.js';

describe('openStore', () => {
  it('opens a memory store on the given clock', async () => {
    const clock = new ManualClock();
    const store = await openStore({ kind: 'memory' }, clock);
    assert.equal(store.kind, 'memory');
    await store.set('k', 'v', 10);
    clock.advance(10);
    assert.equal(await store.get('k'), undefined);
    await store.close();
  });

  it('opens a sqlite store at the path on the given clock', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'callout-open-store-'));
    try {
      const clock = new ManualClock();
      const store = await openStore({ kind: 'sqlite', path: join(dir, 'db.sqlite') }, clock);
      assert.equal(store.kind, 'sqlite');
      await store.set('k', 'v', 10);
      assert.deepEqual(await store.get('k'), { value: 'v', expiresAt: clock.now() + 10 });
      await store.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('rejects a kind it does not know with ConfigError', async () => {
    const spec = { kind: 'memcached', url: 'memcached://127.0.0.1:11211' } as unknown as StoreSpec;
    await assert.rejects(openStore(spec), ConfigError);
  });
});
