// cli/sd-notify on its own: which command it runs, with what environment, and what it logs when
// systemd-notify fails, is missing, or does not finish (ManualTimers: no 10 s wait).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { NOTIFY_COMMAND, notifyReady, runCommand, takeNotifySocket } from '../../src/cli/sd-notify.js';
import type { CommandOutcome, RunCommand } from '../../src/cli/sd-notify.js';
import { captureLog } from '../support/log-capture.js';
import { ManualTimers } from '../support/manual-time.js';

interface Call {
  command: string;
  args: string[];
  env: NodeJS.ProcessEnv;
}

/** A RunCommand that records its calls and answers with `outcome` (a function: per call). */
function fakeRun(outcome: (abort: AbortSignal) => Promise<CommandOutcome>): { run: RunCommand; calls: Call[] } {
  const calls: Call[] = [];
  return {
    calls,
    run: (command, args, env, abort) => {
      calls.push({ command, args, env });
      return outcome(abort);
    },
  };
}

const succeeded = (): Promise<CommandOutcome> => Promise.resolve({ code: 0, signal: null, stderr: '' });
const FAILED = /^\S*systemd-notify --ready failed(?: 3 times, the last)?: .*; systemd may not have been told that callout serve is ready, and a unit of Type=notify is stopped after TimeoutStartSec: install systemd-notify \(Debian package systemd\), or make the unit Type=simple \(a drop-in\); serving goes on$/;

/** Moves time on, 2 s at a time, until notifyReady has finished (its tries and waits between them). */
async function finish(done: Promise<void>, timers: ManualTimers): Promise<void> {
  let finished = false;
  void done.then(() => (finished = true));
  for (let step = 0; step < 40 && !finished; step++) await timers.advance(2_000);
  await done;
}

describe('takeNotifySocket', () => {
  it('gives NOTIFY_SOCKET and takes it out of the environment, so that no child inherits it', () => {
    const env: NodeJS.ProcessEnv = { NOTIFY_SOCKET: '/run/systemd/notify', PATH: '/usr/bin' };
    assert.equal(takeNotifySocket(env), '/run/systemd/notify');
    assert.deepEqual(env, { PATH: '/usr/bin' });
  });

  it('gives nothing when it is unset or empty (sd_notify(3) sends nothing then)', () => {
    assert.equal(takeNotifySocket({}), undefined);
    const env: NodeJS.ProcessEnv = { NOTIFY_SOCKET: '' };
    assert.equal(takeNotifySocket(env), undefined);
    assert.equal('NOTIFY_SOCKET' in env, false, 'an empty NOTIFY_SOCKET is taken out too');
  });
});

describe('notifyReady', () => {
  it('runs nothing without a socket', async () => {
    const { run, calls } = fakeRun(succeeded);
    const { log, lines } = captureLog();
    await notifyReady(undefined, 'listening', log, { run });
    assert.deepEqual(calls, []);
    assert.deepEqual(lines, []);
  });

  it('runs systemd-notify --ready --status=TEXT with NOTIFY_SOCKET put back in its environment, and logs that it did', async () => {
    const { run, calls } = fakeRun(succeeded);
    const { log, lines } = captureLog();
    await notifyReady('@callout-test', 'listening: policy 127.0.0.1:10040, metrics off', log, { run, env: { PATH: '/usr/bin' } });
    assert.deepEqual(calls, [{ command: NOTIFY_COMMAND, args: ['--ready', '--status=listening: policy 127.0.0.1:10040, metrics off'], env: { PATH: '/usr/bin', NOTIFY_SOCKET: '@callout-test' } }]);
    assert.deepEqual(
      lines.map((l) => [l.level, l.msg, l.notifySocket]),
      [[30, 'told systemd that callout serve is ready', '@callout-test']],
    );
  });

  it('tries again twice, 2 s apart, when systemd-notify fails, and then logs an error naming the command and its stderr', async () => {
    const timers = new ManualTimers();
    const { run, calls } = fakeRun(() => Promise.resolve({ code: 1, signal: null, stderr: 'Failed to invoke barrier: Connection timed out' }));
    const { log, lines } = captureLog();
    const done = notifyReady('/run/systemd/notify', 'listening', log, { run, timers });
    await timers.advance(1_999);
    assert.equal(calls.length, 1, 'no second try before 2 s');
    await finish(done, timers);
    assert.deepEqual(calls.map((c) => c.command), ['systemd-notify', 'systemd-notify', 'systemd-notify'], 'three tries in all');
    assert.deepEqual(
      lines.map((l) => [l.level, l.attempt]),
      [[40, 1], [40, 2], [50, undefined]],
      'a warning per failed try that is tried again, then one error',
    );
    assert.equal(lines[0]!.msg, 'systemd-notify --ready failed: exit status 1: Failed to invoke barrier: Connection timed out; trying again in 2000 ms');
    assert.match(String(lines[2]!.msg), FAILED);
    assert.match(String(lines[2]!.msg), /^systemd-notify --ready failed 3 times, the last: exit status 1: Failed to invoke barrier: Connection timed out;/);
    assert.deepEqual(lines[2]!.command, ['systemd-notify', '--ready', '--status=listening']);
  });

  it('stops trying once systemd-notify succeeds', async () => {
    const timers = new ManualTimers();
    let tries = 0;
    const { run } = fakeRun(() => (++tries === 1 ? Promise.resolve({ code: null, signal: 'SIGKILL', stderr: '' }) : succeeded()));
    const { log, lines } = captureLog();
    await finish(notifyReady('/run/systemd/notify', 'listening', log, { run, timers }), timers);
    assert.equal(tries, 2, 'tried twice');
    assert.deepEqual(
      lines.map((l) => [l.level, l.msg]),
      [
        [40, 'systemd-notify --ready failed: killed by SIGKILL; trying again in 2000 ms'],
        [30, 'told systemd that callout serve is ready'],
      ],
    );
  });

  it('runs /usr/bin/systemd-notify when PATH has none (a drop-in PATH without /usr/bin)', async () => {
    const missing = Object.assign(new Error('spawn systemd-notify ENOENT'), { code: 'ENOENT', errno: -2 });
    const { run, calls } = fakeRun(() => (calls.length === 1 ? Promise.reject(missing) : succeeded()));
    const { log, lines } = captureLog();
    await notifyReady('/run/systemd/notify', 'listening', log, { run, timers: new ManualTimers() });
    assert.deepEqual(calls.map((c) => c.command), ['systemd-notify', '/usr/bin/systemd-notify']);
    assert.deepEqual(lines.map((l) => l.msg), ['told systemd that callout serve is ready'], 'found at its Debian path: nothing went wrong');
  });

  it('logs an error when systemd-notify is not installed, without trying again (nothing more would be found), and resolves', async () => {
    const timers = new ManualTimers();
    const missing = Object.assign(new Error('spawn systemd-notify ENOENT'), { code: 'ENOENT', errno: -2 });
    const { run, calls } = fakeRun(() => Promise.reject(missing));
    const { log, lines } = captureLog();
    await finish(notifyReady('/run/systemd/notify', 'listening', log, { run, timers }), timers);
    assert.deepEqual(calls.map((c) => c.command), ['systemd-notify', '/usr/bin/systemd-notify'], 'PATH once, then the Debian path, and no more');
    assert.equal(lines.length, 1, 'one line, the error');
    const error = lines[0]!;
    assert.equal(error.level, 50);
    assert.match(String(error.msg), FAILED);
    assert.match(String(error.msg), /^\/usr\/bin\/systemd-notify --ready failed: could not be run: no such file \(ENOENT\);/);
  });

  it('gives up on a systemd-notify that has not finished within 10 s: aborts it, and tries again', async () => {
    const timers = new ManualTimers();
    let aborted = 0;
    const { run, calls } = fakeRun(
      (abort) =>
        new Promise((_resolve, reject) =>
          abort.addEventListener('abort', () => {
            aborted++;
            reject(new Error('aborted'));
          }),
        ),
    );
    const { log, lines } = captureLog();
    const done = notifyReady('/run/systemd/notify', 'listening', log, { run, timers });
    await timers.advance(9_999);
    assert.equal(aborted, 0, 'still waited for after 9,999 ms');
    await timers.advance(1);
    assert.equal(aborted, 1, 'aborted at 10 s');
    assert.equal(lines[0]!.msg, 'systemd-notify --ready failed: not finished within 10000 ms, killed; trying again in 2000 ms');
    await finish(done, timers);
    assert.equal(calls.length, 3, 'three tries');
    assert.match(String(lines.at(-1)!.msg), /^systemd-notify --ready failed 3 times, the last: not finished within 10000 ms, killed;/);
    assert.equal(timers.waiting, 0, 'no timer left behind');
  });

  it('clears its timer when systemd-notify finishes', async () => {
    const timers = new ManualTimers();
    const { run } = fakeRun(succeeded);
    await notifyReady('/run/systemd/notify', 'listening', captureLog().log, { run, timers });
    assert.equal(timers.waiting, 0, 'no timer left behind');
  });
});

describe('runCommand', () => {
  it('gives the exit status and stderr, trimmed', async () => {
    const outcome = await runCommand('/bin/sh', ['-c', 'echo out; echo "  no socket" >&2; exit 3'], { PATH: '/usr/bin:/bin' }, new AbortController().signal);
    assert.deepEqual(outcome, { code: 3, signal: null, stderr: 'no socket' });
  });

  it('rejects for a command that is not there', async () => {
    await assert.rejects(runCommand('callout-no-such-command', [], { PATH: '/nonexistent' }, new AbortController().signal), { code: 'ENOENT' });
  });

  it('kills the command and rejects when aborted', async () => {
    const abort = new AbortController();
    const started = Date.now();
    const running = runCommand('/bin/sleep', ['30'], {}, abort.signal);
    abort.abort();
    await assert.rejects(running, { name: 'AbortError' });
    assert.ok(Date.now() - started < 5_000, 'it did not wait for sleep 30');
  });
});
