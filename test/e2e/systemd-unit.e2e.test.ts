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
 *     - RestartPreventExitStatus holds exactly the statuses of the failures a restart cannot
 *       mend (cli/exit-status: usage, configuration), and a missing configuration file exits
 *       with one of them, so systemd does not restart a daemon in a loop.
 *   systemd itself does not run here (no systemd as process 1), so the hardening options are
 *   checked for syntax only.
 *
 * LIMITS
 *   Needs systemd-analyze (Debian's systemd package; .ci/run installs it).
 */

import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { exitCodeFor } from '../../src/cli/exit-status.js';
import { ConfigError, UsageError } from '../../src/core/errors.js';
import { requirePeer } from '../support/peers.js';
import { startServeProcess } from '../support/serve-process.js';

const UNIT = new URL('../../contrib/systemd/callout.service', import.meta.url);

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
    const configPath = join(dir, 'callout.yaml');
    writeFileSync(
      configPath,
      stringify({
        dataDir: join(dir, 'state'),
        callout: { helo: 'mx.callout.test' },
        policy: { listen: '127.0.0.1:0' },
        metrics: { listen: '127.0.0.1:0' },
      }),
    );
    const args = execArgs.slice(1).map((arg) => (arg === '/etc/callout/callout.yaml' ? configPath : arg));
    assert.ok(args.includes(configPath), 'ExecStart names /etc/callout/callout.yaml, the ConfigurationDirectory');
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
