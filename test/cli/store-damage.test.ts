// A command that meets a damaged SQLite store after opening it, as an administrator runs it: exit 78, as at open, not 75.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { callout } from '../support/cli.js';
import { writeDamagedStore } from '../support/sqlite-damage.js';

const dir = mkdtempSync(join(tmpdir(), 'callout-store-damage-cli-'));
after(() => rmSync(dir, { recursive: true, force: true }));

describe('a command on a store damaged past what open reads', () => {
  it('exits 78, naming the damage and what to do: waiting does not mend it, and 75 had scripts and pipe(8) try again for ever', async () => {
    const path = join(dir, 'callout.sqlite');
    // open() reads the header and the schema only: the listing is the first to meet the damage.
    await writeDamagedStore(path, 'after-schema');
    const config = join(dir, 'callout.yaml');
    writeFileSync(config, `dataDir: ${dir}\n`);
    const { code, stderr } = await callout(['greylist', 'list', '--config', config]);
    assert.equal(code, 78, stderr);
    assert.match(stderr, new RegExp(`^callout: STORE_DAMAGED: sqlite store ${path.replace(/[.]/g, '\\.')}: \\w+ failed: database disk image is malformed \\(SQLITE_CORRUPT\\): the file is damaged; stop callout serve, then restore it from a backup`, 'm'));
  });
});
