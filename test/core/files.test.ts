// Whole-file reads with a limit: endless and oversized inputs are refused, not read into memory.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeDirectories, readFileLimited } from '../../src/core/files.js';
import { isoSeconds } from '../../src/core/clock.js';

const dir = mkdtempSync(join(tmpdir(), 'callout-files-'));
after(() => rmSync(dir, { recursive: true, force: true }));

describe('readFileLimited', () => {
  it('reads a file up to and including the limit', () => {
    const path = join(dir, 'exact');
    writeFileSync(path, Buffer.alloc(200_000, 'a'));
    const read = readFileLimited(path, 200_000);
    assert.ok(read.ok && read.bytes.length === 200_000);
    assert.deepEqual(readFileLimited(path, 199_999), { ok: false, reason: 'larger than 199999 bytes' });
  });

  it('refuses an endless device after the limit, and says why a file could not be read', () => {
    assert.deepEqual(readFileLimited('/dev/zero', 1024 * 1024), { ok: false, reason: 'larger than 1 MiB' });
    assert.deepEqual(readFileLimited(join(dir, 'missing'), 10), { ok: false, reason: 'cannot read: ENOENT', code: 'ENOENT' });
    assert.deepEqual(readFileLimited(dir, 10), { ok: false, reason: 'cannot read: EISDIR', code: 'EISDIR' });
  });

  it('holds what a FIFO written an octet at a time gave, not a read buffer per octet', async () => {
    const fifo = join(dir, 'fifo');
    assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
    const octets = 4000;
    // An octet, then a pause of 0.2 ms: each read finds one octet.
    const writer = spawn(process.execPath, ['-e', `const fs = require('fs'); const fd = fs.openSync(${JSON.stringify(fifo)}, 'w'); const pause = new Int32Array(new SharedArrayBuffer(4)); for (let i = 0; i < ${octets}; i++) { fs.writeSync(fd, 'a'); Atomics.wait(pause, 0, 0, 0.2); } fs.closeSync(fd);`], { stdio: 'inherit' });
    const peakBefore = process.resourceUsage().maxRSS;
    const read = readFileLimited(fifo, 64 * 1024);
    const grewKiB = process.resourceUsage().maxRSS - peakBefore;
    await once(writer, 'exit');
    assert.ok(read.ok && read.bytes.equals(Buffer.alloc(octets, 'a')));
    // A 64 KiB buffer kept per read touched a page of each: 16 MB here. Half of that is the bound:
    // the heap itself may take a few MB meanwhile (a CI run once saw exactly 4 MB more).
    assert.ok(grewKiB < 8192, `the peak resident size grew by ${grewKiB} KiB`);
  });
});

describe('isoSeconds', () => {
  it('writes a time to the second, and a time no Date holds as its number', () => {
    assert.equal(isoSeconds(Date.UTC(2026, 11, 5, 10, 0, 0, 999)), '2026-12-05T10:00:00Z');
    assert.equal(isoSeconds(1e23), '1e+23 (not a representable time)');
    assert.equal(isoSeconds(Number.NaN), 'NaN (not a representable time)');
  });
});

describe('makeDirectories', () => {
  it('makes the missing directories, accepts one that exists, refuses a file, and returns under /proc', () => {
    const deep = join(dir, 'a', 'b', 'c');
    makeDirectories(deep);
    makeDirectories(deep);
    assert.ok(statSync(deep).isDirectory());
    const file = join(dir, 'plain');
    writeFileSync(file, 'x');
    assert.throws(() => makeDirectories(file), (err: unknown) => (err as NodeJS.ErrnoException).code === 'ENOTDIR');
    assert.throws(() => makeDirectories(join(file, 'below')), (err: unknown) => (err as NodeJS.ErrnoException).code === 'ENOTDIR');
    // Node 20's mkdirSync({ recursive: true }) retries this for ever.
    assert.throws(() => makeDirectories('/proc/callout-test/x'), (err: unknown) => (err as NodeJS.ErrnoException).code === 'ENOENT');
  });
});
