// `callout serve` under systemd's Type=notify (cli/sd-notify), with a stand-in systemd-notify on
// PATH: a bash script that records its arguments, its NOTIFY_SOCKET, and the status line /health
// gave when it ran. The metrics listener opens only once every policy listener is bound (every
// worker ready, with policy.workers) and /health answers 200 only then, so a 200 there says
// READY=1 came no earlier. The real systemd-notify and a real socket: test/e2e/systemd-unit.
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import * as net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { PolicyClient, postfixRequest } from '../support/policy-client.js';
import { freePort } from '../support/ports.js';
import { startServeProcess } from '../support/serve-process.js';
import type { LogLine, ServeProcess } from '../support/serve-process.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

const FAKE_NOTIFY = `#!/bin/bash
health=$( (exec 3<>"/dev/tcp/127.0.0.1/$CALLOUT_TEST_METRICS_PORT" && printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3) 2>/dev/null | tr -d '\\r')
{
  printf 'socket=%s\\n' "$NOTIFY_SOCKET"
  printf 'health=%s\\n' "\${health:-refused}"
  for arg in "$@"; do printf 'arg=%s\\n' "$arg"; done
  printf 'end\\n'
} >> "$CALLOUT_TEST_NOTIFY_RECORD"
`;

interface Invocation {
  socket: string;
  health: string;
  args: string[];
}

let dir: string;
let bin: string;
let record: string;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'callout-serve-notify-'));
  bin = join(dir, 'bin');
  mkdirSync(bin);
  writeFileSync(join(bin, 'systemd-notify'), FAKE_NOTIFY);
  chmodSync(join(bin, 'systemd-notify'), 0o755);
  record = join(dir, 'record');
});

after(() => rmSync(dir, { recursive: true, force: true }));

function invocations(): Invocation[] {
  if (!existsSync(record)) return [];
  const found: Invocation[] = [];
  let current: Invocation = { socket: '', health: '', args: [] };
  for (const line of readFileSync(record, 'utf8').split('\n')) {
    if (line.startsWith('socket=')) current.socket = line.slice(7);
    else if (line.startsWith('health=')) current.health = line.slice(7);
    else if (line.startsWith('arg=')) current.args.push(line.slice(4));
    else if (line === 'end') {
      found.push(current);
      current = { socket: '', health: '', args: [] };
    }
  }
  return found;
}

/**
 * Starts serve with the stand-in first on PATH (or PATH as given), NOTIFY_SOCKET as given, and
 * runs `body`; a daemon left running by a failure would keep the test process alive.
 */
async function withServe(options: { notifySocket?: string; path?: string; workers?: number }, body: (serve: ServeProcess, metricsPort: number) => Promise<void>): Promise<void> {
  rmSync(record, { force: true });
  const metricsPort = await freePort();
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PATH: options.path ?? `${bin}:${process.env.PATH ?? ''}`,
    CALLOUT_TEST_METRICS_PORT: String(metricsPort),
    CALLOUT_TEST_NOTIFY_RECORD: record,
  };
  delete env.NOTIFY_SOCKET;
  if (options.notifySocket !== undefined) env.NOTIFY_SOCKET = options.notifySocket;
  const workers = options.workers ?? 1;
  const args = ['--listen', '127.0.0.1:0', '--metrics', `127.0.0.1:${metricsPort}`, '--data-dir', dir, '--helo', 'verifier.callout.test', '--dns-server', '127.0.0.1:9', '--workers', String(workers)];
  const started = (l: LogLine): boolean => l.msg === (workers > 1 ? 'policy workers started' : 'callout serve started');
  const serve = await startServeProcess(args, started, { env });
  try {
    await body(serve, metricsPort);
  } catch (err) {
    await serve.stop('SIGKILL').catch(() => undefined);
    throw err;
  }
}

const told = (l: LogLine): boolean => l.msg === 'told systemd that callout serve is ready';

async function stopped(serve: ServeProcess): Promise<void> {
  assert.deepEqual(await serve.stop('SIGTERM'), { code: 0, signal: null }, serve.stderr());
}

describe('callout serve and systemd-notify', () => {
  it('runs no systemd-notify without NOTIFY_SOCKET', async () => {
    await withServe({}, async (serve) => {
      // Reloaded, it has long been past the point where it would have said it was ready.
      serve.child.kill('SIGHUP');
      await serve.waitForLog((l) => l.msg === 'configuration reloaded', 'the reload');
      await stopped(serve);
      assert.deepEqual(invocations(), []);
      assert.equal(serve.logs.some(told), false, 'no line says systemd was told');
    });
  });

  it('runs systemd-notify --ready once, after every listener is bound, and not again on a reload', async () => {
    await withServe({ notifySocket: '/run/callout-test/notify' }, async (serve, metricsPort) => {
      await serve.waitForLog(told, 'that systemd was told');
      serve.child.kill('SIGHUP');
      await serve.waitForLog((l) => l.msg === 'configuration reloaded', 'the reload');
      await stopped(serve);
      assert.deepEqual(invocations(), [
        { socket: '/run/callout-test/notify', health: 'HTTP/1.1 200 OK', args: ['--ready', `--status=listening: policy ${serve.policyAddress}, metrics 127.0.0.1:${metricsPort}`] },
      ]);
      assert.equal(serve.logs.filter(told).length, 1, 'one line says systemd was told');
    });
  });

  it('goes on serving while systemd-notify fails (none on PATH; /usr/bin/systemd-notify, where installed, to a socket that is not there), and logs an error after its last try', async () => {
    const empty = join(dir, 'empty');
    mkdirSync(empty, { recursive: true });
    await withServe({ notifySocket: '/run/callout-test/notify', path: empty }, async (serve) => {
      const warning = await serve.waitForLog((l) => /systemd-notify --ready failed: /.test(String(l.msg)), 'the first failure');
      assert.equal(warning.level, 40, 'a failure that is tried again is a warning');
      assert.match(String(warning.msg), /^(?:\/usr\/bin\/)?systemd-notify --ready failed: .*; trying again in 2000 ms$/);
      const client = await PolicyClient.connect(serve.policyAddress);
      try {
        assert.equal(await client.request(postfixRequest({ sender: '' })), 'DUNNO', 'the null sender is answered');
      } finally {
        client.close();
      }
      const error = await serve.waitForLog((l) => / --ready failed 3 times/.test(String(l.msg)), 'the error after the last try');
      assert.equal(error.level, 50, 'logged as an error');
      assert.match(String(error.msg), /^(?:\/usr\/bin\/)?systemd-notify --ready failed 3 times, the last: .*; systemd may not have been told .* a unit of Type=notify is stopped after TimeoutStartSec: install systemd-notify/);
      await stopped(serve);
    });
  });

  it('with policy workers: the supervisor runs systemd-notify once, after every worker is ready; the workers have no NOTIFY_SOCKET', async () => {
    await withServe({ notifySocket: '/run/callout-test/notify', workers: 2 }, async (serve, metricsPort) => {
      await serve.waitForLog(told, 'that systemd was told');
      const started = serve.logs.find((l) => l.msg === 'policy workers started')!;
      for (const pid of started.workers as number[]) {
        const environ = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
        assert.equal(environ.some((entry) => entry.startsWith('NOTIFY_SOCKET=')), false, `worker ${pid} has no NOTIFY_SOCKET`);
        assert.ok(environ.includes(`CALLOUT_TEST_NOTIFY_RECORD=${record}`), `worker ${pid} has the rest of the environment`);
      }
      serve.child.kill('SIGHUP');
      await serve.waitForLog((l) => String(l.msg).startsWith('reload done'), 'the reload');
      await stopped(serve);
      assert.deepEqual(invocations(), [
        { socket: '/run/callout-test/notify', health: 'HTTP/1.1 200 OK', args: ['--ready', `--status=listening: policy ${serve.policyAddress}, metrics 127.0.0.1:${metricsPort}, 2 policy workers`] },
      ]);
    });
  });
  it('runs no systemd-notify when the start fails (a worker cannot listen: the address is taken)', async () => {
    rmSync(record, { force: true });
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = taken.address() as net.AddressInfo;
      const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}`, CALLOUT_TEST_METRICS_PORT: '9', CALLOUT_TEST_NOTIFY_RECORD: record, NOTIFY_SOCKET: '/run/callout-test/notify' };
      for (const workers of ['1', '2']) {
        const args = ['--import', 'tsx', 'src/cli/main.ts', 'serve', '--listen', `127.0.0.1:${port}`, '--metrics', '', '--data-dir', dir, '--helo', 'verifier.callout.test', '--dns-server', '127.0.0.1:9', '--workers', workers];
        const child = spawn(process.execPath, args, { cwd: ROOT, env, stdio: ['ignore', 'ignore', 'pipe'] });
        child.stderr.resume();
        const [code] = (await once(child, 'exit')) as [number | null];
        assert.notEqual(code, 0, `with ${workers} worker(s), the start failed`);
        assert.deepEqual(invocations(), [], `with ${workers} worker(s), systemd-notify was not run`);
      }
    } finally {
      taken.close();
    }
  });
});
