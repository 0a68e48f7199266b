// `callout verify` over a list: how batches are scheduled, Ctrl-C, verdicts in input order.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { getEventListeners } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { EXIT_INTERRUPTED, runVerify } from '../../src/cli/verify.js';
import { validateConfig } from '../../src/config/schema.js';
import { StoreError } from '../../src/core/errors.js';
import { mxZone, worldMaker } from '../verify/fixture.js';
import { usersOnly } from '../support/smtp-server.js';
import { startRedis } from '../support/redis.js';
import { until } from '../support/wait.js';

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

  it('prints a verdict for every address, however far down the list the next batch of a domain is', async () => {
    // No zone: every domain is NXDOMAIN at once.
    const w = await world({}, {});
    const config = w.config({ dns: { servers: [w.dns.address], timeout: '2s', tries: 1 }, store: { kind: 'memory' } });
    // a.test's second batch (its 21st address) is 1020 addresses down, past the 1000 a batch may
    // start ahead of the first verdict not printed; b.test's only batch is the 21st address.
    // Invalid addresses in between are verdicts without the network.
    const list = [...users.slice(0, 20).map((u) => `${u}@a.test`), 'bob@b.test', ...Array.from({ length: 999 }, (_, i) => `not an address ${i}`), 'last@a.test'];
    const { out, lines } = output();
    const status = await runVerify(list, { json: true, concurrency: 8 }, config, out);
    assert.equal(lines().length, list.length, 'a verdict for every address');
    assert.deepEqual(lines().map((l) => (JSON.parse(l) as { address: string }).address), list);
    assert.equal(status, 1);
  });

  it('--json quotes the C1 controls and bidi overrides of an exchanger\'s reply, which JSON leaves as they are', async () => {
    const w = await world(mxZone({ 'escape.test': '127.0.0.4' }), { '127.0.0.4': { rcpt: () => '550 5.1.1 \u009b2J \u202e unknown' } });
    const config = w.config({ dns: { servers: [w.dns.address], timeout: '2s', tries: 1 }, store: { kind: 'memory' } });
    const { out, lines } = output();
    assert.equal(await runVerify(['mallory@escape.test'], { json: true, concurrency: 1 }, config, out), 1);
    assert.equal(lines().length, 1);
    assert.equal(/[\u0080-\u009f\u202e]/.test(lines()[0]!), false, lines()[0]!);
    assert.match((JSON.parse(lines()[0]!) as { description: string }).description, /\u009b2J \u202e unknown/);
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

describe('callout verify, its listeners', () => {
  it('leaves no SIGINT handler behind (a second Ctrl-C would no longer end the process), nor a listener on the signal it was given', async () => {
    // Invalid addresses: verdicts without the network.
    const config = validateConfig({ store: { kind: 'memory' }, callout: { helo: 'verifier.callout.test' } });
    const before = process.listenerCount('SIGINT');
    assert.equal(await runVerify(['not an address'], { json: false, concurrency: 1 }, config, output().out), 1);
    assert.equal(process.listenerCount('SIGINT'), before, 'the SIGINT handler of the run was removed');
    const controller = new AbortController();
    assert.equal(await runVerify(['not an address'], { json: false, concurrency: 1, signal: controller.signal }, config, output().out), 1);
    assert.equal(getEventListeners(controller.signal, 'abort').length, 0, 'no abort listener left on the signal given');
  });
});

describe('callout verify when its store goes away', () => {
  it('fails with the store\'s error (exit 75), not with an exit status for verdicts it never printed', async () => {
    const redis = await startRedis();
    try {
      const zone = mxZone({ 'a.test': '127.0.0.3' });
      // Answered late: the store goes away while the domain is looked up, before its probe lock is taken.
      zone['a.test'] = { ...zone['a.test'], delayMs: 1000 };
      const w = await world(zone, { '127.0.0.3': usersOnly(['alice']) });
      const config = w.config({ dns: { servers: [w.dns.address], timeout: '5s', tries: 1 }, store: { kind: 'redis', url: redis.url } });
      const { out, lines } = output();
      const run = runVerify(['alice@a.test'], { json: false, concurrency: 1 }, config, out);
      assert.ok(await until(() => w.dns.queries.some((q) => q.name.toLowerCase() === 'a.test')), 'the lookup of a.test started');
      redis.kill();
      await assert.rejects(run, (err: unknown) => err instanceof StoreError);
      assert.deepEqual(lines(), []);
    } finally {
      await redis.stop();
    }
  });
});

/** What a terminal shows of output: "\r" takes the cursor to the start of its line, ESC [ K erases from there to the end. */
function screen(output: string): string[] {
  return output.split('\n').map((raw) => {
    let line = '';
    let column = 0;
    for (let i = 0; i < raw.length; i++) {
      if (raw[i] === '\r') column = 0;
      else if (raw.startsWith('\u001b[K', i)) {
        line = line.slice(0, column);
        i += 2;
      } else {
        line = line.slice(0, column) + raw[i]! + line.slice(column + 1);
        column++;
      }
    }
    return line;
  });
}

describe('callout verify on a terminal', () => {
  it('draws the progress bar of a --file run below the verdicts, not in front of each, and none for addresses on the command line', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'callout-verify-tty-'));
    // Under script(1) stdout and stderr are one terminal, as for an administrator at one.
    const onTerminal = (args: string[]) =>
      new Promise<string>((resolve) => {
        const command = [process.execPath, '--import', 'tsx', 'src/cli/main.ts', 'verify', '--helo', 'verifier.callout.test', '--dns-server', '127.0.0.1:9', ...args].map((arg) => `'${arg.replace(/'/g, "'\\''")}'`).join(' ');
        const child = spawn('script', ['-qec', command, '/dev/null'], { cwd: join(import.meta.dirname, '../..'), stdio: ['ignore', 'pipe', 'inherit'] });
        let shown = '';
        child.stdout.on('data', (chunk: Buffer) => (shown += chunk.toString()));
        child.on('close', () => resolve(shown));
      });
    try {
      const list = join(dir, 'list.txt');
      // Invalid addresses: verdicts without the network.
      writeFileSync(list, 'not an address\na@b@c\n');
      const fromList = screen(await onTerminal(['--file', list]));
      assert.equal(fromList.length, 4, JSON.stringify(fromList));
      assert.ok(fromList[0]!.startsWith('"not an address": invalid (syntax) - '), JSON.stringify(fromList));
      assert.ok(fromList[1]!.startsWith('a@b@c: invalid (syntax) - '), JSON.stringify(fromList));
      assert.deepEqual(fromList.slice(2), [`[${'#'.repeat(30)}] 2/2`, ''], 'the bar, full, on a line of its own');
      const fromArguments = screen(await onTerminal(['not an address', 'a@b@c']));
      assert.deepEqual(fromArguments.filter((line) => line.includes('] ')), [], `no bar: ${JSON.stringify(fromArguments)}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
