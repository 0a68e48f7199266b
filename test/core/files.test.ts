// Whole-file reads with a limit: endless and oversized inputs are refused, not read into memory.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, mkdtempSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeDirectories, octalMode, readFileLimited, secretExposure, tooLarge, warnIfSecretExposed, withholdFromOthers } from '../../src/core/files.js';
import { isoSeconds } from '../../src/core/clock.js';

const dir = mkdtempSync(join(tmpdir(), 'callout-files-'));
after(() => rmSync(dir, { recursive: true, force: true }));

describe('readFileLimited', () => {
  it('reads a file up to and including the limit', () => {
    const path = join(dir, 'exact');
    writeFileSync(path, Buffer.alloc(200_000, 'a'));
    const read = readFileLimited(path, 200_000);
    assert.ok(read.ok && read.bytes.length === 200_000, 'read.ok && read.bytes.length === 200_000');
    assert.deepEqual(readFileLimited(path, 199_999), { ok: false, reason: 'larger than 199999 bytes' });
  });

  it('refuses an endless device after the limit', () => {
    assert.deepEqual(readFileLimited('/dev/zero', 1024 * 1024), { ok: false, reason: 'larger than 1 MiB' });
  });

  it('closes the file however the read ends: a daemon that reloads keeps no descriptor per reload', () => {
    const open = () => readdirSync('/proc/self/fd').length;
    const before = open();
    for (let i = 0; i < 20; i++) {
      readFileLimited('/dev/zero', 1024);
      readFileLimited(join(dir, 'missing'), 10);
    }
    const path = join(dir, 'small');
    writeFileSync(path, 'x');
    for (let i = 0; i < 20; i++) readFileLimited(path, 10, { governing: true });
    assert.equal(open(), before, 'as many descriptors open as before');
  });

  it('names a limit in the largest unit that divides it', () => {
    assert.equal(tooLarge(2 * 1024 * 1024), 'larger than 2 MiB');
    assert.equal(tooLarge(64 * 1024), 'larger than 64 KiB');
    assert.equal(tooLarge(1000), 'larger than 1000 bytes');
  });

  it('says why a file could not be read in words, the code kept: each kind of failure an administrator meets', () => {
    assert.deepEqual(readFileLimited(join(dir, 'missing'), 10), { ok: false, reason: 'cannot read: no such file (ENOENT)', code: 'ENOENT' });
    assert.deepEqual(readFileLimited(dir, 10), { ok: false, reason: 'cannot read: is a directory (EISDIR)', code: 'EISDIR' });
    const file = join(dir, 'plain');
    writeFileSync(file, 'x');
    assert.deepEqual(readFileLimited(join(file, 'under'), 10), { ok: false, reason: 'cannot read: a part of the path is not a directory (ENOTDIR)', code: 'ENOTDIR' });
    const loop = join(dir, 'loop');
    symlinkSync(loop, loop);
    assert.deepEqual(readFileLimited(loop, 10), { ok: false, reason: 'cannot read: too many levels of symbolic links (ELOOP)', code: 'ELOOP' });
  });

  it('names the user a file was refused to, which is not the one who tried it from a shell', async () => {
    // Root may read anything: as root, a child that becomes nobody once its modules are loaded.
    const secret = join(dir, 'unreadable');
    writeFileSync(secret, 'x');
    chmodSync(secret, 0o000);
    chmodSync(dir, 0o755);
    const asNobody = process.getuid?.() === 0;
    const script = `const { readFileLimited } = await import(${JSON.stringify(new URL('../../src/core/files.ts', import.meta.url).href)});
      ${asNobody ? 'process.setgid(65534); process.setuid(65534);' : ''}
      process.stdout.write(JSON.stringify(readFileLimited(${JSON.stringify(secret)}, 10)));`;
    const { NODE_TEST_CONTEXT: _, ...env } = process.env;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    await once(child, 'exit');
    const uid = asNobody ? 65534 : process.geteuid?.();
    assert.deepEqual(JSON.parse(out), { ok: false, reason: `cannot read: permission denied, running as uid ${uid} (EACCES)`, code: 'EACCES' });
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
    assert.ok(read.ok && read.bytes.equals(Buffer.alloc(octets, 'a')), 'read.ok && read.bytes.equals(Buffer.alloc(octets, \'a\'))');
    // A 64 KiB buffer kept per read touched a page of each: 16 MB here. Half of that is the bound:
    // the heap itself may take a few MB meanwhile (a CI run once saw exactly 4 MB more).
    assert.ok(grewKiB < 8192, `the peak resident size grew by ${grewKiB} KiB`);
  });
});

describe('readFileLimited of a file that governs the process', () => {
  const governing = { governing: true };

  it('refuses a FIFO with no writer at once (it held a start or reload for ever), a device and a directory, saying what they are', () => {
    const fifo = join(dir, 'governing-fifo');
    assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
    assert.deepEqual(readFileLimited(fifo, 10, governing), { ok: false, reason: 'not a regular file (a FIFO)' });
    assert.deepEqual(readFileLimited('/dev/zero', 10, governing), { ok: false, reason: 'not a regular file (a character device)' });
    assert.deepEqual(readFileLimited(dir, 10, governing), { ok: false, reason: 'not a regular file (a directory)' });
    // A symlink is judged by its target.
    const link = join(dir, 'link-to-fifo');
    symlinkSync(fifo, link);
    assert.deepEqual(readFileLimited(link, 10, governing), { ok: false, reason: 'not a regular file (a FIFO)' });
    assert.deepEqual(readFileLimited(join(dir, 'missing'), 10, governing), { ok: false, reason: 'cannot read: no such file (ENOENT)', code: 'ENOENT' });
  });

  it('reads a regular file, /proc files too, and refuses one that any user may write', () => {
    const path = join(dir, 'governing');
    writeFileSync(path, 'key: value\n');
    chmodSync(path, 0o640);
    const read = readFileLimited(path, 100, governing);
    assert.ok(read.ok && read.bytes.toString() === 'key: value\n' && (read.mode & 0o777) === 0o640 && read.uid === statSync(path).uid, 'read.ok && read.bytes.toString() === \'key: value\\n\' && (read.mode & 0o777) === 0o640 && read.uid ...');
    const proc = readFileLimited('/proc/self/status', 1024 * 1024, governing);
    assert.ok(proc.ok && proc.bytes.toString().startsWith('Name:'), 'proc.ok && proc.bytes.toString().startsWith(\'Name:\')');
    chmodSync(path, 0o666);
    assert.deepEqual(readFileLimited(path, 100, governing), { ok: false, reason: 'writable by any user (mode 0666), so anyone on this host could change it: chmod o-w' });
    // Without the option, a command-line tool still reads what it is given.
    assert.ok(readFileLimited(path, 100).ok, 'readFileLimited(path, 100).ok');
  });
});

describe('secretExposure', () => {
  it('names a mode that lets group or others read or write, and an owner who is neither root nor the reader', () => {
    assert.equal(secretExposure({ mode: 0o100600, uid: 0, gid: 0 }, 0, 0, []), undefined);
    assert.equal(secretExposure({ mode: 0o100400, uid: 1000, gid: 1000 }, 1000, 1000, []), undefined);
    assert.equal(secretExposure({ mode: 0o100640, uid: 0, gid: 4 }, 0, 0, [0]), 'group or other users may read or write it (mode 0640): chmod 600');
    assert.equal(secretExposure({ mode: 0o100604, uid: 0, gid: 0 }, 1000, 1000, []), 'group or other users may read or write it (mode 0604): chmod 600');
    // root:callout 0640 read by a daemon run as callout: its own group.
    assert.equal(secretExposure({ mode: 0o100640, uid: 0, gid: 120 }, 120, 120, []), undefined);
    assert.equal(secretExposure({ mode: 0o100660, uid: 0, gid: 120 }, 120, 120, []), 'group or other users may read or write it (mode 0660): chmod 600');
    // root:ssl-cert 0640 (a Kubernetes fsGroup alike) read by a daemon given that group as a supplementary one.
    assert.equal(secretExposure({ mode: 0o100640, uid: 0, gid: 111 }, 120, 120, [120, 111]), undefined);
    assert.equal(secretExposure({ mode: 0o100640, uid: 0, gid: 112 }, 120, 120, [120, 111]), 'group or other users may read or write it (mode 0640): chmod 600');
    // A symlink into a user's directory, read by root: its target is that user's.
    assert.equal(secretExposure({ mode: 0o100600, uid: 1000, gid: 1000 }, 0, 0, []), 'it is owned by uid 1000, who can change it, while this process runs as uid 0');
  });

  it('warns in one line naming the file, the setting and the problem, and not at all for a private file', () => {
    const lines: Array<{ fields: Record<string, unknown>; message: string }> = [];
    const log = { warn: (fields: Record<string, unknown>, message: string) => lines.push({ fields, message }) };
    const euid = process.geteuid!();
    warnIfSecretExposed({ mode: 0o100600, uid: euid, gid: 0 }, '/etc/callout/key', '--secret-file', log);
    assert.deepEqual(lines, []);
    warnIfSecretExposed({ mode: 0o100644, uid: euid, gid: 0 }, '/etc/callout/key', '--secret-file', log);
    assert.deepEqual(lines, [{ fields: { file: '/etc/callout/key', setting: '--secret-file', problem: 'group or other users may read or write it (mode 0644): chmod 600' }, message: 'secret file is not private' }]);
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
    assert.ok(statSync(deep).isDirectory(), 'statSync(deep).isDirectory()');
    const file = join(dir, 'plain');
    writeFileSync(file, 'x');
    assert.throws(() => makeDirectories(file), (err: unknown) => (err as NodeJS.ErrnoException).code === 'ENOTDIR');
    assert.throws(() => makeDirectories(join(file, 'below')), (err: unknown) => (err as NodeJS.ErrnoException).code === 'ENOTDIR');
    // Node 20's mkdirSync({ recursive: true }) retries this for ever.
    assert.throws(() => makeDirectories('/proc/callout-test/x'), (err: unknown) => (err as NodeJS.ErrnoException).code === 'ENOENT');
  });

  it('gives each directory it makes the mode asked for (within the umask)', () => {
    const deep = join(dir, 'private', 'state');
    makeDirectories(deep, 0o700);
    assert.equal(octalMode(statSync(deep).mode), '0700');
    assert.equal(octalMode(statSync(join(dir, 'private')).mode), '0700', 'the parent it made too');
  });

  it('writes a mode in four octal digits, the set-ID and sticky bits too', () => {
    assert.equal(octalMode(0o100644), '0644', 'the file type left out');
    assert.equal(octalMode(0o41777), '1777', 'the sticky bit of /tmp');
    assert.equal(octalMode(0o4755), '4755');
  });
});

describe('governing files and the umask', () => {
  it('refuses a governing file writable by others alone, and reads one only its group may write', () => {
    const path = join(dir, 'governing-modes');
    writeFileSync(path, 'key: value\n');
    chmodSync(path, 0o602);
    assert.deepEqual(readFileLimited(path, 100, { governing: true }), { ok: false, reason: 'writable by any user (mode 0602), so anyone on this host could change it: chmod o-w' });
    chmodSync(path, 0o660);
    assert.ok(readFileLimited(path, 100, { governing: true }).ok, 'readFileLimited(path, 100, { governing: true }).ok');
  });

  it('withholdFromOthers adds 027 to the umask and keeps a stricter one', () => {
    const saved = process.umask(0o022);
    try {
      withholdFromOthers();
      assert.equal(process.umask(), 0o027);
      process.umask(0o077);
      withholdFromOthers();
      assert.equal(process.umask(), 0o077);
    } finally {
      process.umask(saved);
    }
  });
});
