/**
 * NAME
 *   test/e2e/systemd-unit.e2e - contrib/systemd/callout.service against systemd and the daemon
 *
 * DESCRIPTION
 *   The unit file is what an administrator installs, so it is held to what systemd and callout
 *   make of it:
 *     - `systemd-analyze verify` reads it without a warning (a mistyped key or section is only
 *       a warning to systemd, and the option silently off), with ExecStart's program put at a
 *       path that exists;
 *     - ExecStart's arguments, as written, start the daemon (its configuration file put in a
 *       temporary directory); ExecReload's signal makes it reload; KillSignal stops it with
 *       exit 0 within TimeoutStopSec, as systemd would wait before SIGKILL;
 *     - Type=notify with NotifyAccess=all: started with NOTIFY_SOCKET naming a real AF_UNIX
 *       datagram socket (test/support/notify-socket.py in systemd's place), the daemon sends
 *       READY=1 through the real /usr/bin/systemd-notify, whose barrier the receiver closes,
 *       and only once its policy listener accepts connections (the receiver connects to it
 *       as it reads READY=1). (That the sender is the child, hence NotifyAccess=all, is not
 *       checked: run as root, systemd-notify may send with its parent's credentials.)
 *     - RestartPreventExitStatus holds exactly the statuses of the failures a restart cannot
 *       mend (cli/exit-status: usage, configuration), and a missing configuration file exits
 *       with one of them, so systemd does not restart a daemon in a loop.
 *   systemd itself does not run here (no systemd as process 1), so the hardening options are
 *   checked for syntax only.
 *
 * LIMITS
 *   Needs systemd-analyze and systemd-notify (Debian's systemd package; .ci/run installs it) and
 *   python3 (.ci/run installs it to build the native modules).
 */

import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { exitCodeFor } from '../../src/cli/exit-status.js';
import { ConfigError, UsageError } from '../../src/core/errors.js';
import { onExit } from '../support/exit-hooks.js';
import { requirePeer } from '../support/peers.js';
import { freePort } from '../support/ports.js';
import { startServeProcess } from '../support/serve-process.js';
import type { ServeProcess } from '../support/serve-process.js';
import { until } from '../support/wait.js';

const UNIT = new URL('../../contrib/systemd/callout.service', import.meta.url);
const NOTIFY_RECEIVER = fileURLToPath(new URL('../support/notify-socket.py', import.meta.url));
const SYSTEMD_NOTIFY = '/usr/bin/systemd-notify';

/** The [Service] section's keys, each with its values in order (a key may repeat). */
function serviceKeys(text: string): Map<string, string[]> {
  const keys = new Map<string, string[]>();
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      section = header[1]!;
      continue;
    }
    if (section !== 'Service') continue;
    const eq = line.indexOf('=');
    const key = line.slice(0, eq);
    keys.set(key, [...(keys.get(key) ?? []), line.slice(eq + 1)]);
  }
  return keys;
}

const unitText = readFileSync(UNIT, 'utf8');
const service = serviceKeys(unitText);
const one = (key: string): string => {
  const values = service.get(key);
  assert.equal(values?.length, 1, `${key} once in [Service]`);
  return values[0]!;
};
const [program, ...execArgs] = one('ExecStart').split(/\s+/);

function notifyPeersMissing(): string | undefined {
  if (spawnSync('python3', ['--version']).error) return 'python3 is not installed';
  return spawnSync(SYSTEMD_NOTIFY, ['--version']).error ? `${SYSTEMD_NOTIFY} is not installed (Debian package systemd)` : undefined;
}

/** One datagram as test/support/notify-socket.py read it. */
interface Datagram {
  fields: Record<string, string>;
  fds: number;
  probe?: string;
}

/** The unit's configuration file, put in the temporary directory, and ExecStart's arguments naming it. */
function configuredArgs(policyListen: string): string[] {
  const configPath = join(dir, 'callout.yaml');
  writeFileSync(
    configPath,
    stringify({
      dataDir: join(dir, 'state'),
      callout: { helo: 'mx.callout.test' },
      policy: { listen: policyListen },
      metrics: { listen: '127.0.0.1:0' },
    }),
  );
  return execArgs.slice(1).map((arg) => (arg === '/etc/callout/callout.yaml' ? configPath : arg));
}

function analyzerMissing(): string | undefined {
  const found = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
  return found.error ? 'systemd-analyze is not installed (Debian package systemd)' : undefined;
}

let dir: string;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'callout-unit-'));
});

after(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('contrib/systemd/callout.service', () => {
  it('is read by systemd-analyze verify without a warning', { skip: requirePeer(analyzerMissing()) }, () => {
    // verify refuses a unit whose program does not exist; the installed one is not here.
    const standIn = join(dir, 'callout');
    writeFileSync(standIn, '#!/bin/sh\nexit 0\n');
    chmodSync(standIn, 0o755);
    const copy = join(dir, 'callout.service');
    writeFileSync(copy, unitText.replace(`ExecStart=${program}`, `ExecStart=${standIn}`));
    const result = spawnSync('systemd-analyze', ['verify', copy], { encoding: 'utf8', cwd: dir });
    assert.equal(result.status, 0, result.stderr);
    assert.equal(result.stderr.trim(), '', 'systemd-analyze warnings');
  });

  it('starts the daemon with ExecStart\'s arguments, reloads on ExecReload\'s signal and stops on KillSignal within TimeoutStopSec', async () => {
    // Without a directory: systemd finds it in /usr/bin (npm's prefix under Debian's Node) or /usr/local/bin.
    assert.equal(program, 'callout');
    assert.deepEqual(execArgs.slice(0, 2), ['serve', '--config']);
    const args = configuredArgs('127.0.0.1:0');
    assert.ok(args.includes(join(dir, 'callout.yaml')), 'ExecStart names /etc/callout/callout.yaml, the ConfigurationDirectory');
    assert.equal(one('ConfigurationDirectory'), 'callout');
    assert.equal(one('StateDirectory'), 'callout', 'the daemon\'s default dataDir is /var/lib/callout');

    const reload = /^\/bin\/kill -(HUP) \$MAINPID$/.exec(one('ExecReload'));
    assert.ok(reload, `ExecReload sends a signal: ${one('ExecReload')}`);
    const stopSeconds = Number(/^(\d+)s$/.exec(one('TimeoutStopSec'))?.[1]);
    // 30 s: policy/workers STOP_WAIT_MS, the supervisor's bound on its workers' 10 s + 10 s drain.
    assert.ok(stopSeconds > 30, 'TimeoutStopSec is longer than the supervisor waits for its workers to drain');

    const serve = await startServeProcess(args);
    try {
      const mark = serve.logs.length;
      serve.child.kill(`SIG${reload[1]}` as NodeJS.Signals);
      await serve.waitForLog((line) => line.msg === 'configuration reloaded', 'the reload', mark);
    } catch (err) {
      // Left running, the daemon kept the test process alive after the failure.
      await serve.stop('SIGKILL').catch(() => undefined);
      throw err;
    }
    const stopped = await serve.stop(one('KillSignal') as NodeJS.Signals, stopSeconds * 1000);
    assert.deepEqual(stopped, { code: 0, signal: null });
  });

  it('is Type=notify, NotifyAccess=all: the daemon says READY=1 through systemd-notify once its policy listener accepts connections', { skip: requirePeer(notifyPeersMissing()) }, async () => {
    assert.equal(one('Type'), 'notify');
    // The READY=1 comes from systemd-notify, a child: under NotifyAccess=main systemd drops it.
    assert.equal(one('NotifyAccess'), 'all');
    // Longer than systemd's default 90 s: an upgrade of the SQLite schema comes before READY=1.
    const startMinutes = Number(/^(\d+)min$/.exec(one('TimeoutStartSec'))?.[1]);
    assert.ok(startMinutes * 60 > 90, `TimeoutStartSec (${one('TimeoutStartSec')}) is longer than systemd's default 90 s`);
    // Debian's postfix.service is a oneshot; the master that asks callout runs in postfix@-.service.
    const before = /^Before=(.*)$/m.exec(unitText)?.[1]?.split(/\s+/) ?? [];
    assert.ok(before.includes('postfix.service') && before.includes('postfix@-.service'), `Before= names postfix.service and postfix@-.service, got ${before.join(' ')}`);
    if (existsSync('/lib/systemd/system/postfix@.service')) assert.ok(existsSync('/lib/systemd/system-generators/postfix-instance-generator'), "Debian's Postfix makes postfix@-.service with its instance generator");

    const socketPath = join(dir, 'notify.sock');
    const port = await freePort();
    const receiver = spawn('python3', [NOTIFY_RECEIVER, socketPath, `127.0.0.1:${port}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    const stopReceiver = (): void => void receiver.kill('SIGKILL');
    onExit(stopReceiver);
    const datagrams: Datagram[] = [];
    let bound = false;
    let receiverErr = '';
    let pending = '';
    receiver.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      const lines = (pending + chunk).split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines.filter(Boolean)) {
        const parsed = JSON.parse(line) as Datagram | { listening: string };
        if ('listening' in parsed) bound = true;
        else datagrams.push(parsed);
      }
    });
    receiver.stderr.setEncoding('utf8').on('data', (chunk: string) => (receiverErr += chunk));
    let serve: ServeProcess | undefined;
    try {
      assert.ok(await until(() => bound), `the receiver bound ${socketPath}; its stderr: ${receiverErr}`);
      // PATH as systemd's own for a system service, where /usr/bin/systemd-notify is found.
      const env = { ...process.env, PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', NOTIFY_SOCKET: socketPath };
      serve = await startServeProcess(configuredArgs(`127.0.0.1:${port}`), undefined, { env });
      // Logged once systemd-notify exited 0: past its barrier, which only the receiver's close of the pipe ends.
      await serve.waitForLog((l) => l.msg === 'told systemd that callout serve is ready', 'that systemd was told');
      // The receiver's lines come through a pipe of their own, and may come after the daemon's.
      await until(() => datagrams.some((d) => d.fields.BARRIER !== undefined));
      const ready = datagrams.filter((d) => d.fields.READY !== undefined);
      assert.deepEqual(ready, [{ fields: { READY: '1', STATUS: `listening: policy 127.0.0.1:${port}, metrics ${serve.metricsAddress}` }, fds: 0, probe: 'accepted' }]);
      assert.deepEqual(datagrams.filter((d) => d.fields.BARRIER !== undefined), [{ fields: { BARRIER: '1' }, fds: 1 }], 'systemd-notify waited on the barrier');
      // What systemd then runs, the reload job it held: no second READY=1 (no RELOADING=1 either).
      const mark = serve.logs.length;
      serve.child.kill('SIGHUP');
      await serve.waitForLog((l) => l.msg === 'configuration reloaded', 'the reload', mark);
      assert.deepEqual(await serve.stop('SIGTERM'), { code: 0, signal: null }, serve.stderr());
      assert.equal(datagrams.filter((d) => d.fields.BARRIER === undefined).length, 1, `one notification in the daemon's life: ${JSON.stringify(datagrams)}`);
    } catch (err) {
      await serve?.stop('SIGKILL').catch(() => undefined);
      throw err;
    } finally {
      stopReceiver();
    }
  });

  it('RestartPreventExitStatus holds the statuses a restart cannot mend, and a missing configuration file exits with one', () => {
    const prevented = one('RestartPreventExitStatus').split(/\s+/).map(Number).sort();
    const permanent = [exitCodeFor(new UsageError('x')), exitCodeFor(new ConfigError('x'))].sort();
    assert.deepEqual(prevented, permanent);
    assert.equal(one('Restart'), 'on-failure');

    const missing = join(dir, 'absent.yaml');
    const args = execArgs.map((arg) => (arg === '/etc/callout/callout.yaml' ? missing : arg));
    let status = 0;
    try {
      execFileSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { cwd: new URL('../../', import.meta.url), stdio: 'pipe', timeout: 30_000 });
    } catch (err) {
      status = (err as { status: number }).status;
    }
    assert.ok(prevented.includes(status), `exit status ${status} for a missing configuration file`);
  });
});
