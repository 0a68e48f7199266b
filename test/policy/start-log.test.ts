// What `callout serve` logs as it starts, or fails to: the store's file, and a policy port another process has.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Daemon } from '../../src/policy/daemon.js';
import { captureLog } from '../support/log-capture.js';

const cleanups: Array<() => Promise<unknown> | void> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function takenPort(): Promise<number> {
  const holder = net.createServer();
  cleanups.push(() => new Promise((resolve) => holder.close(resolve)));
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
  return (holder.address() as net.AddressInfo).port;
}

describe('callout serve starting', () => {
  it('names the SQLite file it keeps its state in', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'callout-start-log-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const { lines, log } = captureLog();
    const daemon = await Daemon.start({ overrides: { dataDir: dir, policy: { listen: '127.0.0.1:0' }, metrics: { listen: '' } }, log });
    cleanups.push(() => daemon.stop());
    const started = lines.find((l) => l.msg === 'callout serve started');
    assert.ok(started, `a started line: ${JSON.stringify(lines)}`);
    assert.equal(started.store, 'sqlite', 'the kind of store');
    assert.equal(started.storeFile, join(dir, 'callout.sqlite'), 'the file under the data directory');
  });

  it('says no file for a store that has none', async () => {
    const { lines, log } = captureLog();
    const daemon = await Daemon.start({ overrides: { store: { kind: 'memory' }, policy: { listen: '127.0.0.1:0' }, metrics: { listen: '' } }, log });
    cleanups.push(() => daemon.stop());
    const started = lines.find((l) => l.msg === 'callout serve started');
    assert.ok(started && !('storeFile' in started), `no storeFile for a memory store: ${JSON.stringify(started)}`);
  });

  it('refuses a policy port another process has, naming policy.listen, and logs no "policy server closed"', async () => {
    const port = await takenPort();
    const { lines, log } = captureLog();
    await assert.rejects(
      Daemon.start({ overrides: { store: { kind: 'memory' }, policy: { listen: `127.0.0.1:${port}` }, metrics: { listen: '' } }, log }),
      (err: Error) => {
        assert.match(err.message, new RegExp(`^cannot listen on 127\\.0\\.0\\.1:${port} \\(policy\\.listen\\): .*EADDRINUSE`), 'the key of the listener is named');
        return true;
      },
    );
    const closed = lines.filter((l) => l.msg === 'policy server closed');
    assert.deepEqual(closed, [], 'a server that never listened is not said to be closed');
  });
});
