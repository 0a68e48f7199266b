// A policy worker that fails to start: its supervisor says why, once, and exits as the worker would.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import cluster from 'node:cluster';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ROOT } from '../support/cli.js';

let dir: string;
/** Valid to the schema, which the supervisor checks; only building the stage, in each worker, fails. */
let config: string;
const PROBLEM = /policy\.stages\.0\.whitelistClientFiles \(greylist\): .*no-such-list: cannot read: no such file \(ENOENT\)/;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'callout-worker-start-'));
  config = join(dir, 'callout.yaml');
  writeFileSync(config, `dataDir: ${dir}\nstore:\n  kind: sqlite\npolicy:\n  stages:\n    - name: greylist\n      whitelistClientFiles: [${join(dir, 'no-such-list')}]\n`);
});

after(() => rmSync(dir, { recursive: true, force: true }));

describe('callout serve --workers 2 whose workers refuse the configuration', () => {
  it('says CONFIG_INVALID once (a worker said it as well, unless the supervisor killed it first) and exits 78', async () => {
    const args = ['--import', 'tsx', 'src/cli/main.ts', 'serve', '--workers', '2', '--config', config, '--listen', '127.0.0.1:0', '--metrics', ''];
    const result = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      execFile(process.execPath, args, { cwd: ROOT, timeout: 30_000 }, (error, _stdout, stderr) => resolve({ code: error ? (error as { code?: number }).code ?? null : 0, stderr }));
    });
    assert.equal(result.code, 78, result.stderr);
    const lines = result.stderr.split('\n').filter(Boolean);
    assert.equal(lines.length, 1, result.stderr);
    assert.ok(lines[0]!.startsWith('callout: CONFIG_INVALID: '), result.stderr);
    assert.match(lines[0]!, PROBLEM);
  });

  it('leaves the message to the supervisor in the worker, which tells it, and exits 78 itself', async () => {
    // This process as the supervisor, which does not kill the worker: its own stderr is all it said.
    cluster.setupPrimary({ exec: join(ROOT, 'src/cli/main.ts'), args: ['serve', '--config', config, '--listen', '127.0.0.1:0', '--metrics', ''], execArgv: ['--import', 'tsx'], silent: true });
    const worker = cluster.fork();
    let stderr = '';
    worker.process.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const told: unknown[] = [];
    worker.on('message', (message: unknown) => told.push(message));
    const code = await new Promise<number | null>((resolve) => worker.process.once('close', (exitCode: number | null) => resolve(exitCode)));
    assert.equal(code, 78, stderr);
    assert.equal(told.length, 1, JSON.stringify(told));
    const failed = told[0] as { type?: unknown; code?: unknown; message?: unknown };
    assert.deepEqual([failed.type, failed.code], ['callout:failed', 'CONFIG_INVALID'], JSON.stringify(failed));
    assert.match(String(failed.message), PROBLEM);
    assert.equal(stderr, '', 'the worker says nothing of what it told the supervisor');
  });
});
