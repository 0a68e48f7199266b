// A SIGHUP sent while Node still loads the program (`kill -HUP` right after `callout serve` was
// started, a few hundred milliseconds): cli/main holds it from its first statement. The start of
// serve and of rewrite serve is its reload; any other command still ends by it, as it did when
// nothing held it.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { createSocket } from 'node:dgram';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { until } from '../support/wait.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'callout-startup-sighup-'));
after(() => rmSync(dir, { recursive: true, force: true }));

interface Run {
  child: ChildProcessWithoutNullStreams;
  stdout(): string;
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function start(args: string[]): Run {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('close', (code, signal) => resolve({ code, signal })));
  return { child, stdout: () => stdout, stderr: () => stderr, exited };
}

/** Whether the process has a SIGHUP handler (a listener in Node): its SigCgt mask, signal 1. */
function catchesSighup(pid: number): boolean {
  try {
    const mask = /^SigCgt:\s+([0-9a-f]+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return mask !== undefined && (BigInt(`0x${mask}`) & 1n) === 1n;
  } catch {
    return false;
  }
}

/** Waits, a millisecond at a time, until the child catches SIGHUP (true) or has ended (false). */
async function sighupCaught(run: Run): Promise<boolean> {
  let ended = false;
  void run.exited.then(() => (ended = true));
  await until(() => ended || catchesSighup(run.child.pid!), 30_000, 1);
  return !ended && catchesSighup(run.child.pid!);
}

const logLines = (text: string): Array<Record<string, unknown>> => text.split('\n').filter(Boolean).map((line) => JSON.parse(line) as Record<string, unknown>);

describe('a SIGHUP while the program loads', () => {
  it('serve: held from the first statement, taken once serving; the start is its reload, said in the log', async () => {
    const serve = start(['serve', '--listen', '127.0.0.1:0', '--metrics', '', '--data-dir', dir, '--helo', 'verifier.callout.test', '--dns-server', '127.0.0.1:9']);
    try {
      assert.ok(await sighupCaught(serve), 'it caught SIGHUP before it ended');
      assert.equal(serve.stdout(), '', 'sent before serve logged anything: while the program loads');
      serve.child.kill('SIGHUP');
      assert.ok(await until(() => serve.stdout().includes('"callout serve started"'), 30_000), `it started: ${serve.stdout()}`);
      const messages = logLines(serve.stdout()).map((line) => [line.msg, line.signals]);
      assert.deepEqual(
        messages.filter(([msg]) => /SIGHUP|reload/.test(String(msg))),
        [['SIGHUP received while the program loaded, before the configuration was read: the start reads it as it is now', 1]],
        'one line for the held SIGHUP, no reload on top of the start',
      );
    } finally {
      serve.child.kill('SIGTERM');
    }
    assert.deepEqual(await serve.exited, { code: 0, signal: null }, 'it served and stopped as ever');
  });

  it('serve on a bad configuration: exits 78 as without the SIGHUP, which does not replace its status', async () => {
    const config = join(dir, 'bad.yaml');
    writeFileSync(config, 'policy:\n  listen: nowhere\n');
    const serve = start(['serve', '-c', config, '--metrics', '', '--data-dir', dir]);
    assert.ok(await sighupCaught(serve), 'held while the program loads');
    serve.child.kill('SIGHUP');
    assert.deepEqual(await serve.exited, { code: 78, signal: null }, 'the configuration error, not a death by SIGHUP (which systemd counts as clean)');
  });

  it('rewrite serve: held, and taken once its listener is in place: its files are read after it', async () => {
    const keys = join(dir, 'batv.keys');
    writeFileSync(keys, '1 a-secret-of-some-length\n', { mode: 0o600 });
    const rewrite = start(['rewrite', 'serve', '--socketmap', '127.0.0.1:0', '--batv-key-file', keys, '--batv-domain', 'example.com']);
    try {
      assert.ok(await sighupCaught(rewrite), 'it caught SIGHUP before it ended');
      rewrite.child.kill('SIGHUP');
      assert.ok(await until(() => rewrite.stdout().includes('socketmap'), 30_000), `it listens: ${rewrite.stdout()}`);
      assert.ok(catchesSighup(rewrite.child.pid!), 'alive, SIGHUP still its to take');
      // Its log is on stderr: one line for the held SIGHUP, the files read after it, no reload on top.
      assert.ok(await until(() => rewrite.stderr().includes('SIGHUP'), 30_000), `its log: ${rewrite.stderr()}`);
      const held = logLines(rewrite.stderr()).filter((line) => /SIGHUP/.test(String(line.msg)));
      assert.deepEqual(held.map((line) => line.msg), ['SIGHUP received while the program loaded, before the secret files were read: they are read as they are now'], rewrite.stderr());
    } finally {
      rewrite.child.kill('SIGTERM');
    }
    assert.deepEqual(await rewrite.exited, { code: 0, signal: null }, 'it served and stopped as ever');
  });

  it('a one-shot command (config check): still ended by it, as its default action did, before doing anything', async () => {
    const config = join(dir, 'callout.yaml');
    writeFileSync(config, 'callout:\n  helo: verifier.callout.test\n');
    const check = start(['config', 'check', config]);
    assert.ok(await sighupCaught(check), 'held while the program loads');
    check.child.kill('SIGHUP');
    assert.deepEqual(await check.exited, { code: null, signal: 'SIGHUP' });
    assert.equal(check.stdout(), '', 'nothing checked');
  });

  it('a one-shot command (verify): its action takes no SIGHUP, so one sent while it waits ends it', async () => {
    // A DNS server that never answers: verify waits on it for up to --timeout.
    const silent = createSocket('udp4');
    await new Promise<void>((resolve) => silent.bind(0, '127.0.0.1', resolve));
    try {
      const verify = start(['verify', '--helo', 'verifier.callout.test', '--dns-server', `127.0.0.1:${(silent.address() as AddressInfo).port}`, '--timeout', '20', 'alice@silent.test']);
      assert.ok(await sighupCaught(verify), 'held while the program loads');
      assert.ok(await until(() => !catchesSighup(verify.child.pid!), 30_000, 1), 'released as its action began');
      verify.child.kill('SIGHUP');
      assert.deepEqual(await verify.exited, { code: null, signal: 'SIGHUP' });
    } finally {
      silent.close();
    }
  });
});
