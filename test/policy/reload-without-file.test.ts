// A SIGHUP to `callout serve` started without --config: the log must not read as if a file had been applied.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { startDaemonWithClient } from '../support/daemon.js';
import { captureLog } from '../support/log-capture.js';
import { postfixRequest } from '../support/policy-client.js';

const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

const base = { store: { kind: 'memory' }, policy: { listen: '127.0.0.1:0' }, metrics: { listen: '' } };
const NO_FILE = /^reload: callout serve was started without --config, so there is no file to read again/;

describe('reload of a daemon started without --config', () => {
  it('warns that no file was read, and keeps answering as before', async () => {
    const { lines, log } = captureLog();
    const { daemon, client } = await startDaemonWithClient({ overrides: base, log }, cleanups);
    assert.equal(await daemon.reload(), true);
    const warning = lines.find((l) => NO_FILE.test(String(l.msg)));
    assert.ok(warning, `a warning says no file was read: ${JSON.stringify(lines.slice(-3))}`);
    assert.equal(warning.level, 40, 'logged as a warning');
    assert.equal(await client.request(postfixRequest({ sender: '' })), 'DUNNO', 'still answering');
  });

  it('says nothing of the kind when a file was given', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'callout-reload-file-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'callout.yaml');
    writeFileSync(path, stringify(base));
    const { lines, log } = captureLog();
    const { daemon } = await startDaemonWithClient({ configPath: path, log }, cleanups);
    assert.equal(await daemon.reload(), true);
    assert.ok(lines.some((l) => l.msg === 'configuration reloaded'), 'the file was reloaded');
    assert.ok(!lines.some((l) => NO_FILE.test(String(l.msg))), `no warning with a file: ${JSON.stringify(lines.slice(-3))}`);
  });
});
