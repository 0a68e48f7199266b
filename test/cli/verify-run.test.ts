// `callout verify` over a list: how batches are scheduled, Ctrl-C, verdicts in input order.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { EXIT_INTERRUPTED, runVerify } from '../../src/cli/verify.js';
import { mxZone, worldMaker } from '../verify/fixture.js';
import { usersOnly } from '../support/smtp-server.js';

const world = worldMaker();

function output(): { out: PassThrough; lines: () => string[] } {
  const out = new PassThrough();
  let text = '';
  out.on('data', (chunk: Buffer) => (text += chunk.toString()));
  return { out, lines: () => text.split('\n').filter((l) => l !== '') };
}

const users = Array.from({ length: 45 }, (_, i) => `user${i}`);

describe('callout verify, many addresses of one domain', () => {
  it('runs one batch of a domain at a time: side by side they went over perHostConcurrency and came back rate-limited', async () => {
    const w = await world(mxZone({ 'big.test': '127.0.0.2' }), { '127.0.0.2': usersOnly(users) });
    // 2 s for the name server in this process to answer: a loaded machine may not run it at once.
    const config = w.config({ dns: { servers: [w.dns.address], timeout: '2s', tries: 1 }, store: { kind: 'memory' }, limits: { perHostConcurrency: 1 } });
    const { out, lines } = output();
    // 45 addresses: three batches of limits.addressesPerConnection (20).
    const status = await runVerify(users.map((u) => `${u}@big.test`), { json: true, concurrency: 8 }, config, out);
    const verdicts = lines().map((l) => JSON.parse(l) as { address: string; verdict: string; reason: string });
    assert.deepEqual(verdicts.map((v) => v.address), users.map((u) => `${u}@big.test`));
    assert.deepEqual(verdicts.filter((v) => v.verdict !== 'deliverable').map((v) => `${v.address}: ${v.reason}`), []);
    assert.equal(status, 0);
  });

  it('takes a domain written in capitals for the same domain (RFC 5321 §2.4): one batch of it at a time too', async () => {
    const w = await world(mxZone({ 'big.test': '127.0.0.2' }), { '127.0.0.2': usersOnly(users) });
    const config = w.config({ dns: { servers: [w.dns.address], timeout: '2s', tries: 1 }, store: { kind: 'memory' }, limits: { perHostConcurrency: 1 } });
    const { out, lines } = output();
    const addresses = users.map((u, i) => `${u}@${i % 2 === 0 ? 'big.test' : 'BIG.TEST'}`);
    const status = await runVerify(addresses, { json: true, concurrency: 8 }, config, out);
    const verdicts = lines().map((l) => JSON.parse(l) as { address: string; verdict: string; reason: string });
    assert.deepEqual(verdicts.filter((v) => v.verdict !== 'deliverable').map((v) => `${v.address}: ${v.reason}`), []);
    assert.equal(status, 0);
  });

  it('marks a cached verdict past its refresh age as stale in plain output, as --json does', async () => {
    const w = await world(mxZone({ 'a.test': '127.0.0.3' }), { '127.0.0.3': usersOnly(['alice']) });
    const dir = mkdtempSync(join(tmpdir(), 'callout-verify-stale-'));
    try {
      const config = w.config({ dns: { servers: [w.dns.address], timeout: '2s', tries: 1 }, store: { kind: 'sqlite', path: join(dir, 'cache.sqlite') }, cache: { addressPositiveRefresh: '0s' } });
      const first = output();
      await runVerify(['alice@a.test'], { json: false, concurrency: 8 }, config, first.out);
      assert.match(first.lines()[0]!, /^alice@a\.test: deliverable \(accepted\) - .*[^\]]$/);
      const second = output();
      await runVerify(['alice@a.test'], { json: false, concurrency: 8 }, config, second.out);
      assert.match(second.lines()[0]!, / \[address-cache, stale\]$/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('lets the refresh of a stale verdict finish before it exits, so the cache holds the new one', async () => {
    const w = await world(mxZone({ 'a.test': '127.0.0.3' }), { '127.0.0.3': usersOnly(['alice']) });
    const dir = mkdtempSync(join(tmpdir(), 'callout-verify-refresh-'));
    try {
      const config = w.config({ dns: { servers: [w.dns.address], timeout: '2s', tries: 1 }, store: { kind: 'sqlite', path: join(dir, 'cache.sqlite') }, cache: { addressPositiveRefresh: '0s' } });
      const run = async () => {
        const { out, lines } = output();
        await runVerify(['alice@a.test'], { json: true, concurrency: 8 }, config, out);
        return JSON.parse(lines()[0]!) as { source: string; stale: boolean; checkedAt: number };
      };
      const probed = await run();
      const stale = await run();
      assert.deepEqual([stale.source, stale.stale, stale.checkedAt], ['address-cache', true, probed.checkedAt]);
      // The second command's refresh ran in the background of its stale answer, and was saved.
      const refreshed = await run();
      assert.equal(refreshed.source, 'address-cache');
      assert.ok(refreshed.checkedAt > probed.checkedAt, `the cached verdict of ${refreshed.checkedAt} is the refresh's, not the first probe's of ${probed.checkedAt}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('runs no more domains at once than limits.concurrency, over which the engine answers rate-limited', async () => {
    const w = await world(mxZone({ 'a.test': '127.0.0.3', 'b.test': '127.0.0.4' }), { '127.0.0.3': usersOnly(['alice']), '127.0.0.4': usersOnly(['bob']) });
    const config = w.config({ dns: { servers: [w.dns.address], timeout: '2s', tries: 1 }, store: { kind: 'memory' }, limits: { concurrency: 1 } });
    const { out, lines } = output();
    const status = await runVerify(['alice@a.test', 'bob@b.test'], { json: false, concurrency: 8 }, config, out);
    assert.deepEqual(lines().map((l) => l.split(' - ')[0]), ['alice@a.test: deliverable (accepted)', 'bob@b.test: deliverable (accepted)']);
    assert.equal(status, 0);
  });
});

describe('callout verify behind a domain that does not answer', () => {
  it('exits 130 at Ctrl-C (SIGINT) with what was verified printed, without waiting for the callout still running', async () => {
    const w = await world({ 'silent.test': { drop: true } }, {});
    const dir = mkdtempSync(join(tmpdir(), 'callout-verify-run-'));
    try {
      const list = join(dir, 'list.txt');
      writeFileSync(list, 'not an address\nalice@silent.test\n');
      const args = ['--import', 'tsx', 'src/cli/main.ts', 'verify', '--helo', 'verifier.callout.test', '--dns-server', w.dns.address, '--timeout', '20', '--file', list];
      const child = spawn(process.execPath, args, { cwd: join(import.meta.dirname, '../..'), stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      child.stdout.on('data', (chunk: Buffer) => {
        stdout += chunk.toString();
        child.kill('SIGINT');
      });
      const started = Date.now();
      const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
      assert.equal(code, EXIT_INTERRUPTED, stderr);
      assert.match(stdout, /^"?not an address"?: invalid \(syntax\)[^\n]*\n$/);
      assert.equal(stderr, 'callout: verify: interrupted: 1 of 2 verdicts printed\n');
      assert.ok(Date.now() - started < 10_000, `exited after ${Date.now() - started} ms`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('starts no batch more than 1000 addresses past the first verdict not yet printed, so verdicts held in memory are bounded', async () => {
    const w = await world({ 'silent.test': { drop: true } }, {});
    // Silent for longer than the test needs, but not so long that the lookup given up keeps the file running.
    const config = w.config({ dns: { servers: [w.dns.address], timeout: '3s', tries: 1 }, store: { kind: 'memory' } });
    const controller = new AbortController();
    // Each u@dN.test is asked of the name server (NXDOMAIN) once its batch starts.
    const queried = (n: number) => w.dns.queries.some((q) => q.name.toLowerCase() === `d${n}.test`);
    const watch = setInterval(() => {
      if (queried(998)) controller.abort();
    }, 1);
    const list = ['alice@silent.test', ...Array.from({ length: 1100 }, (_, i) => `u@d${i}.test`)];
    const { out, lines } = output();
    try {
      const status = await runVerify(list, { json: false, concurrency: 8, signal: controller.signal }, config, out);
      assert.equal(status, EXIT_INTERRUPTED);
    } finally {
      clearInterval(watch);
    }
    // u@d998.test is the 1000th address; the ones after it waited for silent.test.
    assert.equal(queried(999), false);
    assert.deepEqual(lines(), []);
  });

  it('on Ctrl-C keeps what was printed, gives up the callout still running and answers 130 at once', async () => {
    const w = await world({ 'silent.test': { drop: true } }, {});
    // Silent for longer than the test needs, but not so long that the lookup given up keeps the file running.
    const config = w.config({ dns: { servers: [w.dns.address], timeout: '3s', tries: 1 }, store: { kind: 'memory' } });
    const controller = new AbortController();
    const { out, lines } = output();
    out.on('data', () => controller.abort());
    const started = Date.now();
    const status = await runVerify(['not an address', 'alice@silent.test', 'bob@silent.test'], { json: false, concurrency: 1, signal: controller.signal }, config, out);
    assert.equal(status, EXIT_INTERRUPTED);
    assert.equal(lines().length, 1);
    assert.match(lines()[0]!, /^"?not an address"?: invalid \(syntax\)/);
    // The overall limit is 10 s: the run did not wait for the silent name server.
    assert.ok(Date.now() - started < 5000, `answered after ${Date.now() - started} ms`);
  });
});
