// `callout serve` signalled while it is still starting (`systemctl reload` or stop right after
// start): the signal waits for the start instead of killing the process, which systemd would
// have taken for a clean exit and not restarted.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { freePort } from '../support/ports.js';
import { startServeProcess } from '../support/serve-process.js';
import type { LogLine } from '../support/serve-process.js';

const TEST_TIME_WARNING = 'policy.acceptTestTime is on: requests set the clock with policy_test_time (for benchmarks and tests only)';

let dir: string;
let config: string;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'callout-serve-signals-'));
  config = join(dir, 'callout.yaml');
  // The daemon logs the acceptTestTime warning as its start begins, then waits 2 s for a Redis
  // that nothing answers for: the signal is sent in that wait.
  writeFileSync(config, stringify({ store: { kind: 'redis', url: `redis://127.0.0.1:${await freePort()}/0` }, policy: { acceptTestTime: true } }));
});

after(() => rmSync(dir, { recursive: true, force: true }));

const startingArgs = (extra: string[]): string[] => ['--config', config, '--listen', '127.0.0.1:0', '--metrics', '', '--helo', 'verifier.callout.test', '--dns-server', '127.0.0.1:9', ...extra];
const warned = (l: LogLine): boolean => l.msg === TEST_TIME_WARNING;

describe('callout serve signalled while starting', () => {
  it('reloads once started on a SIGHUP that came during the start, then stops with exit 0', async () => {
    const serve = await startServeProcess(startingArgs([]), warned);
    serve.child.kill('SIGHUP');
    await serve.waitForLog((l) => l.msg === 'callout serve started', 'that it started');
    await serve.waitForLog((l) => l.msg === 'configuration reloaded', 'the reload');
    assert.deepEqual(await serve.stop('SIGTERM'), { code: 0, signal: null }, serve.stderr());
  });

  it('stops with exit 0 on a SIGTERM that came during the start', async () => {
    const serve = await startServeProcess(startingArgs([]), warned);
    assert.deepEqual(await serve.stop('SIGTERM'), { code: 0, signal: null }, serve.stderr());
    assert.ok(serve.logs.some((l) => l.msg === 'stopped'), 'it stopped as after a start');
  });

  it('drains once on a second SIGTERM that came while it stops (an impatient init): one stop, exit 0', async () => {
    const serve = await startServeProcess(startingArgs([]), warned);
    serve.child.kill('SIGTERM');
    await serve.waitForLog((l) => l.msg === 'shutting down', 'the first SIGTERM');
    serve.child.kill('SIGTERM');
    await serve.waitForLog((l) => l.msg === 'already shutting down', 'the second SIGTERM');
    assert.deepEqual(await serve.exited, { code: 0, signal: null }, serve.stderr());
    assert.deepEqual(serve.logs.filter((l) => l.msg === 'stopping: draining policy connections' || l.msg === 'stopped').map((l) => l.msg), ['stopping: draining policy connections', 'stopped'], serve.stderr());
  });

  it('claims no reload for a SIGHUP that came after a SIGTERM: the daemon says it ignored it', async () => {
    const serve = await startServeProcess(startingArgs([]), warned);
    serve.child.kill('SIGTERM');
    // Both pending at once, the lower-numbered SIGHUP would be delivered first.
    await serve.waitForLog((l) => l.msg === 'shutting down', 'the SIGTERM');
    serve.child.kill('SIGHUP');
    await serve.waitForLog((l) => l.msg === 'reload ignored: the daemon is stopping', 'that the reload was ignored');
    assert.deepEqual(await serve.exited, { code: 0, signal: null }, serve.stderr());
    const claims = serve.logs.filter((l) => /reload(ing|ed)\b/.test(String(l.msg)));
    assert.deepEqual(claims, [], 'no line says it reloads');
  });

  it('ignores SIGUSR1, saying so, where Node would open its inspector to any local user; as a supervisor and in its workers too', async () => {
    for (const extra of [[], ['--workers', '2']]) {
      const serve = await startServeProcess(startingArgs(extra), warned);
      serve.child.kill('SIGUSR1');
      const ignored = (l: LogLine): boolean => l.msg === 'SIGUSR1 ignored: callout serve takes SIGHUP (reload) and SIGTERM (stop); its log goes to stdout, there is no file to reopen';
      await serve.waitForLog((l) => ignored(l) && l.worker === undefined, 'that SIGUSR1 was ignored');
      if (extra.length > 0) {
        const started = await serve.waitForLog((l) => l.msg === 'policy workers started', 'that the workers started');
        const [worker] = started.workers as number[];
        process.kill(worker!, 'SIGUSR1');
        await serve.waitForLog((l) => ignored(l) && l.worker !== undefined, 'that the worker ignored SIGUSR1');
      }
      assert.deepEqual(await serve.stop('SIGTERM'), { code: 0, signal: null }, serve.stderr());
      assert.doesNotMatch(serve.stderr(), /Debugger listening/);
    }
  });

  it('as a supervisor, passes a SIGHUP that came while its workers started to them once they are ready', async () => {
    const serve = await startServeProcess(startingArgs(['--workers', '2']), warned);
    serve.child.kill('SIGHUP');
    await serve.waitForLog((l) => l.msg === 'policy workers started', 'that the workers started');
    const reloads = (): number => serve.logs.filter((l) => l.msg === 'configuration reloaded').length;
    await serve.waitForLog(() => reloads() === 2, 'both workers\' reloads');
    assert.deepEqual(await serve.stop('SIGTERM'), { code: 0, signal: null }, serve.stderr());
  });
});
