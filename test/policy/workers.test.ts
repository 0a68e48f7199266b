import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import cluster, { type Worker } from 'node:cluster';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { validateConfig } from '../../src/config/schema.js';
import { checkServeConfiguration, workerShare, workerShareExcess } from '../../src/policy/daemon.js';
import { captureLog } from '../support/log-capture.js';
import { createLogger, type Logger } from '../../src/core/log.js';
import { Supervisor, keepCounts, readSupervisorMessage, readWorkerMessage } from '../../src/policy/workers.js';
import { Registry, collectDefaultMetrics } from 'prom-client';
import type { SupervisorOptions, WorkerMetric } from '../../src/policy/workers.js';
import { PolicyClient, postfixRequest } from '../support/policy-client.js';
import { startServeProcess } from '../support/serve-process.js';
import { silentGreeting, startSmtpServer } from '../support/smtp-server.js';
import { writeVersion1Store } from '../support/sqlite-version-1.js';
import type { LogLine, ServeProcess } from '../support/serve-process.js';
import { ManualTimers } from '../support/manual-time.js';
import { until } from '../support/wait.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const workersStarted = (l: LogLine): boolean => l.msg === 'policy workers started';

let dataDir: string;

before(() => {
  dataDir = mkdtempSync(join(tmpdir(), 'callout-workers-'));
});

after(() => rmSync(dataDir, { recursive: true, force: true }));

function serveWithWorkers(listen: string, extra: string[] = []): Promise<ServeProcess> {
  // The requests are to postmaster with the null sender: no stage needs DNS (127.0.0.1:9 answers
  // nothing) or a callout to answer them.
  return startServeProcess(['--workers', '2', '--listen', listen, '--data-dir', dataDir, '--metrics', '127.0.0.1:0', '--helo', 'verifier.callout.test', '--dns-server', '127.0.0.1:9', ...extra], workersStarted);
}

async function metric(address: string, name: string): Promise<number> {
  const text = await (await fetch(`http://${address}/metrics`)).text();
  return text
    .split('\n')
    .filter((line) => line.startsWith(name))
    .reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(' ') + 1)), 0);
}

describe('callout serve --workers 2', () => {
  it('answers on one listener from two processes, sums their metrics and drains on SIGTERM', async () => {
    const serve = await serveWithWorkers('127.0.0.1:0');
    try {
      const workers = serve.logs.find(workersStarted)!.workers as number[];
      assert.equal(workers.length, 2);
      // cluster hands connections to the workers in turn: eight connections reach both.
      const clients = await Promise.all(Array.from({ length: 8 }, () => PolicyClient.connect(serve.policyAddress)));
      const answers = await Promise.all(clients.map((client, i) => client.request(postfixRequest({ recipient: 'postmaster@local.test', sender: '', instance: `w${i}` }))));
      assert.deepEqual(answers, Array(8).fill('DUNNO'));
      // The log lines come through the child's stdout, which may be read after the answers.
      for (let i = 0; i < 8; i++) await serve.waitForLog((l) => l.msg === 'decision' && l.instance === `w${i}`, `the decision of w${i}`);
      const deciders = new Set(serve.logs.filter((l) => l.msg === 'decision').map((l) => l.worker));
      assert.deepEqual([...deciders].sort(), [1, 2], 'both workers decided');
      assert.equal(await metric(serve.metricsAddress, 'callout_policy_decisions_total{'), 8, 'the supervisor sums the workers\' counters');
      const health = await fetch(`http://${serve.metricsAddress}/health`);
      assert.equal(health.status, 200);
      for (const client of clients) client.close();
    } finally {
      const exit = await serve.stop();
      assert.deepEqual(exit, { code: 0, signal: null }, serve.stderr());
    }
    assert.equal(serve.logs.filter((l) => l.msg === 'stopped' && l.worker !== undefined).length, 2, 'each worker drained and stopped');
  });

  it('answers /health 503 once a worker\'s store is unhealthy (its SQLite file removed while open): the supervisor asks each worker', async () => {
    const own = mkdtempSync(join(tmpdir(), 'callout-workers-health-'));
    const serve = await serveWithWorkers('127.0.0.1:0', ['--data-dir', own]);
    try {
      assert.equal((await fetch(`http://${serve.metricsAddress}/health`)).status, 200, 'healthy as started');
      for (const suffix of ['', '-wal', '-shm']) rmSync(join(own, `callout.sqlite${suffix}`), { force: true });
      assert.equal((await fetch(`http://${serve.metricsAddress}/health`)).status, 503, 'the workers say their file is gone');
    } finally {
      assert.deepEqual(await serve.stop(), { code: 0, signal: null }, serve.stderr());
      rmSync(own, { recursive: true, force: true });
    }
  });

  it('gives the supervisor\'s metrics UNIX socket metrics.socketMode (serve\'s umask 027 made it 0750)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'callout-workers-metrics-'));
    try {
      const config = join(dir, 'callout.yaml');
      writeFileSync(config, 'metrics:\n  socketMode: "0640"\n');
      const path = join(dir, 'metrics.sock');
      const serve = await startServeProcess(['--config', config, '--workers', '2', '--listen', '127.0.0.1:0', '--data-dir', dataDir, '--metrics', path, '--helo', 'verifier.callout.test', '--dns-server', '127.0.0.1:9'], workersStarted);
      try {
        assert.equal((statSync(path).mode & 0o777).toString(8), '640');
      } finally {
        assert.deepEqual(await serve.stop(), { code: 0, signal: null }, serve.stderr());
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reloads every worker at SIGHUP, and one sent SIGHUP by hand, and replaces a worker that dies, its counts kept in the sum', async () => {
    const serve = await serveWithWorkers('127.0.0.1:0');
    try {
      let mark = serve.logs.length;
      serve.child.kill('SIGHUP');
      await serve.waitForLog((l) => l.msg === 'configuration reloaded' && l.worker === 1, 'worker 1 reloading', mark);
      await serve.waitForLog((l) => l.msg === 'configuration reloaded' && l.worker === 2, 'worker 2 reloading', mark);
      // Each worker told the supervisor what it runs now: the same configuration, so no warning.
      const agreed = await serve.waitForLog((l) => l.msg === 'reload done: every policy worker runs the same configuration', 'the workers\' outcomes compared', mark);
      assert.deepEqual([agreed.accepted, agreed.refused], [2, 0]);
      assert.match(String(agreed.config), /^[0-9a-f]{12}$/);
      // A SIGHUP sent to a worker by hand reloads it, and answers none of the supervisor's reloads.
      mark = serve.logs.length;
      process.kill((serve.logs.find(workersStarted)!.workers as number[])[0]!, 'SIGHUP');
      const byHand = await serve.waitForLog((l) => l.msg === 'SIGHUP received' && l.worker !== undefined, 'the worker\'s SIGHUP', mark);
      await serve.waitForLog((l) => l.msg === 'configuration reloaded' && l.worker === byHand.worker, 'the worker reloading', mark);
      const clients = await Promise.all(Array.from({ length: 8 }, () => PolicyClient.connect(serve.policyAddress)));
      await Promise.all(clients.map((client, i) => client.request(postfixRequest({ recipient: 'postmaster@local.test', sender: '', instance: `k${i}` }))));
      for (let i = 0; i < 8; i++) await serve.waitForLog((l) => l.msg === 'decision' && l.instance === `k${i}`, `the decision of k${i}`);
      assert.ok(!serve.logs.slice(mark).some((l) => String(l.msg).startsWith('reload done') || String(l.msg).startsWith('workers run different')), 'nothing compared');
      assert.equal(new Set(serve.logs.filter((l) => l.msg === 'decision').map((l) => l.worker)).size, 2, 'both workers decided');
      for (const client of clients) client.close();
      assert.equal(await metric(serve.metricsAddress, 'callout_policy_decisions_total{'), 8);
      const [victim] = serve.logs.find(workersStarted)!.workers as number[];
      mark = serve.logs.length;
      process.kill(victim!, 'SIGKILL');
      await serve.waitForLog((l) => l.msg === 'policy worker died; starting another' && l.pid === victim && typeof l.worker === 'number', 'the death logged', mark);
      // A total that went down would read to Prometheus as a counter reset.
      assert.equal(await metric(serve.metricsAddress, 'callout_policy_decisions_total{'), 8, 'the dead worker\'s decisions stay counted');
      // A new worker compiles and opens everything again: slow on a loaded machine.
      const replaced = await serve.waitForLog((l) => l.msg === 'policy worker replaced', 'the replacement', mark, 60_000);
      assert.equal((replaced.workers as number[]).length, 2);
      assert.ok(!(replaced.workers as number[]).includes(victim!), '!(replaced.workers as number[]).includes(victim!)');
      const client = await PolicyClient.connect(serve.policyAddress);
      assert.equal(await client.request(postfixRequest({ recipient: 'postmaster@local.test', instance: 'after' })), 'DUNNO');
      await serve.waitForLog((l) => l.msg === 'decision' && l.instance === 'after', 'the decision after the replacement');
      client.close();
      assert.equal(await metric(serve.metricsAddress, 'callout_policy_decisions_total{'), 9);
    } finally {
      assert.deepEqual(await serve.stop(), { code: 0, signal: null }, serve.stderr());
    }
  });

  it('does not replace a worker that died by one running the defaults when the configuration file has just been emptied', async () => {
    const config = join(dataDir, 'emptied.yaml');
    writeFileSync(config, 'log:\n  level: info\n');
    const serve = await serveWithWorkers('127.0.0.1:0', ['--config', config]);
    try {
      // An editor caught mid-write: the replacement reads the file as a reload does, and refuses it.
      writeFileSync(config, '');
      const mark = serve.logs.length;
      process.kill((serve.logs.find(workersStarted)!.workers as number[])[0]!, 'SIGKILL');
      const failed = await serve.waitForLog((l) => l.msg === 'a replacement policy worker failed to start; trying again later', 'the replacement refusing the empty file', mark, 60_000);
      assert.ok(!serve.logs.slice(mark).some((l) => l.msg === 'policy worker replaced'), '!serve.logs.slice(mark).some((l) => l.msg === \'policy worker replaced\')');
      // Why, in the supervisor's line: the worker, which told it, says it no more on stderr.
      assert.ok(String(failed.err).startsWith(`CONFIG_INVALID: ${config}: holds no settings`), String(failed.err));
    } finally {
      assert.deepEqual(await serve.stop(), { code: 0, signal: null }, serve.stderr());
    }
    assert.doesNotMatch(serve.stderr(), /CONFIG_INVALID/, 'said once, by the supervisor');
  });

  it('drains once when SIGTERM comes twice', async () => {
    // A request held in a worker (its callout meets a server that never greets) keeps the drain
    // going until the test lets it end, so that the second SIGTERM comes while the supervisor is
    // still shutting down. Idle workers stop in milliseconds: on a loaded machine the supervisor
    // had exited before the test, reading its log, sent the second.
    const tarpit = await startSmtpServer({ host: '127.0.0.7', script: silentGreeting() });
    try {
      const serve = await serveWithWorkers('127.0.0.1:0', ['--allow-target', '127.0.0.0/8', '--port', String(tarpit.port)]);
      const client = await PolicyClient.connect(serve.policyAddress);
      const answer = client.request(postfixRequest({ sender: 'bob@[127.0.0.7]', instance: 'held' }));
      assert.ok(await until(() => tarpit.connectionCount === 1), 'the held request\'s callout is under way');
      serve.child.kill('SIGTERM');
      // Two signals sent at once may arrive as one: the second goes once the first was taken.
      await serve.waitForLog((l) => l.msg === 'shutting down' && l.worker === undefined, 'the supervisor shutting down');
      const stopped = serve.stop('SIGTERM');
      await serve.waitForLog((l) => l.msg === 'already shutting down', 'the second SIGTERM taken while shutting down');
      // The callout fails at once: the held request is answered and the drain ends.
      await tarpit.close();
      assert.deepEqual(await stopped, { code: 0, signal: null }, serve.stderr());
      assert.match(await answer, /^(DUNNO|DEFER_IF_PERMIT )/, 'the request being handled was answered');
      client.close();
      assert.equal(serve.logs.filter((l) => l.msg === 'stopped' && l.worker !== undefined).length, 2, `each worker drained and stopped: ${JSON.stringify(serve.logs.slice(-12))}`);
    } finally {
      await tarpit.close();
    }
  });

  it('shares a UNIX socket, one a process that died left behind replaced, and removes it when it stops', async () => {
    const path = join(dataDir, 'policy.sock');
    const dead = spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => process.exit(0))`]);
    assert.ok(dead.status === 0 && statSync(path).isSocket(), 'a dead process left its socket behind');
    const serve = await serveWithWorkers(path);
    const client = await PolicyClient.connect(path);
    assert.equal(await client.request(postfixRequest({ recipient: 'postmaster@local.test' })), 'DUNNO');
    client.close();
    assert.deepEqual(await serve.stop(), { code: 0, signal: null }, serve.stderr());
    assert.equal(existsSync(path), false);
  });

  it('brings an older store file up to date once, in the supervisor, before the workers start', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'callout-workers-upgrade-'));
    try {
      const path = join(dir, 'callout.sqlite');
      writeVersion1Store(path, Array.from({ length: 500 }, (_, i) => [`grey:t:192.0.2.0/24/s${i}@example.org/r@local.test`, '1,1', Date.now() + 86_400_000] as const));
      const serve = await startServeProcess(['--workers', '2', '--listen', '127.0.0.1:0', '--data-dir', dir, '--metrics', '', '--helo', 'verifier.callout.test', '--dns-server', '127.0.0.1:9'], workersStarted);
      try {
        const client = await PolicyClient.connect(serve.policyAddress);
        assert.equal(await client.request(postfixRequest({ recipient: 'postmaster@local.test', sender: '' })), 'DUNNO');
        client.close();
      } finally {
        assert.deepEqual(await serve.stop(), { code: 0, signal: null }, serve.stderr());
      }
      const upgrades = serve.logs.filter((l) => l.msg === 'store schema upgraded');
      assert.deepEqual(upgrades.map((l) => [l.from, l.to, l.worker]), [[1, 2, undefined]], 'once, by the supervisor');
      assert.ok(serve.logs.indexOf(upgrades[0]!) < serve.logs.findIndex(workersStarted), 'before the workers started');
      const db = new Database(path, { readonly: true });
      try {
        assert.equal(db.pragma('user_version', { simple: true }), 2);
        assert.equal(db.prepare("SELECT count(*) FROM kv WHERE key LIKE 'grey:t:%'").pluck().get(), 500);
      } finally {
        db.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('fails to start, with the workers\' reason and exit code 78, when they cannot listen', async () => {
    const result = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const args = ['--import', 'tsx', 'src/cli/main.ts', 'serve', '--workers', '2', '--listen', join(dataDir, 'no-such-dir', 'policy.sock'), '--data-dir', dataDir, '--metrics', '', '--helo', 'verifier.callout.test'];
      execFile(process.execPath, args, { cwd: ROOT, timeout: 30_000 }, (error, _stdout, stderr) => resolve({ code: error ? (error as { code?: number }).code ?? null : 0, stderr }));
    });
    assert.equal(result.code, 78, result.stderr);
    assert.match(result.stderr, /^callout: CONFIG_INVALID: cannot listen on .*no-such-dir/m);
    assert.doesNotMatch(result.stderr, /CONFIG_INVALID: CONFIG_INVALID/, 'the worker\'s code is given once');
  });

  it('fails to start with exit code 78, its workers gone, when the metrics listener cannot bind', async () => {
    // The supervisor said CONFIG_INVALID and then never exited: its workers went on answering.
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const { port } = taken.address() as net.AddressInfo;
    try {
      const result = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
        const args = ['--import', 'tsx', 'src/cli/main.ts', 'serve', '--workers', '2', '--listen', '127.0.0.1:0', '--data-dir', dataDir, '--metrics', `127.0.0.1:${port}`, '--helo', 'verifier.callout.test'];
        execFile(process.execPath, args, { cwd: ROOT, timeout: 20_000 }, (error, _stdout, stderr) => resolve({ code: error ? (error as { code?: number }).code ?? null : 0, stderr }));
      });
      assert.equal(result.code, 78, result.stderr);
      assert.match(result.stderr, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port} \\(metrics\\.listen\\)`));
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });

  // Each worker kept max(1, limit / workers): 2 workers with perHostConcurrency 1 could open 2
  // connections to one exchanger. The limit is now counted in the store (verify/politeness):
  // whole in each worker, and nothing to warn of.
  it('does not warn when policy.workers is above limits.perHostConcurrency, which the workers share through the store', async () => {
    const config = join(dataDir, 'per-host-1.yaml');
    writeFileSync(config, 'limits:\n  perHostConcurrency: 1\n');
    const serve = await serveWithWorkers('127.0.0.1:0', ['--config', config]);
    try {
      const warned = serve.logs.filter((l) => l.level === 40 && /^policy\.workers \(/.test(String(l.msg)));
      assert.deepEqual(warned.map((l) => [l.msg, l.worker]), []);
    } finally {
      const exit = await serve.stop();
      assert.deepEqual(exit, { code: 0, signal: null }, serve.stderr());
    }
  });

  it('refuses workers with a memory store, naming the key', async () => {
    const config = join(dataDir, 'memory.yaml');
    writeFileSync(config, 'store:\n  kind: memory\n');
    const result = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      execFile(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve', '--workers', '2', '--config', config], { cwd: ROOT, timeout: 30_000 }, (error, _stdout, stderr) =>
        resolve({ code: error ? (error as { code?: number }).code ?? null : 0, stderr }),
      );
    });
    assert.equal(result.code, 78);
    assert.match(result.stderr, /--workers \(policy\.workers\): got 2, expected 1 with store\.kind memory/);
  });
});

describe('callout serve --workers 2, a worker replaced after the configuration file was edited and not reloaded', () => {
  it('warns that the workers run different configurations, naming each one\'s digest, and a SIGHUP makes them agree', async () => {
    const config = join(dataDir, 'edited.yaml');
    writeFileSync(config, 'policy:\n  stages:\n    - name: sender-callout\n');
    const serve = await serveWithWorkers('127.0.0.1:0', ['--config', config]);
    try {
      // The administrator puts the stage in warn mode and sends no SIGHUP; then a worker dies.
      writeFileSync(config, 'policy:\n  stages:\n    - name: sender-callout\n      mode: warn\n');
      let mark = serve.logs.length;
      process.kill((serve.logs.find(workersStarted)!.workers as number[])[0]!, 'SIGKILL');
      const death = await serve.waitForLog((l) => l.msg === 'policy worker died; starting another', 'the death logged', mark);
      const survivor = death.worker === 1 ? 2 : 1;
      const split = await serve.waitForLog((l) => String(l.msg).startsWith('workers run different configurations'), 'the warning', mark, 60_000);
      const replacement = split.worker as number;
      // Said in the same turn, before this warning, had the replacement's restart-only settings differed.
      assert.deepEqual(serve.logs.slice(mark).filter((l) => / read restart-only settings/.test(String(l.msg))), [], 'no restart-only warning: the edit changed what a reload applies, nothing else');
      // The worker's own line may be read after the supervisor's: another process wrote it.
      const started = async (worker: number): Promise<unknown> => (await serve.waitForLog((l) => l.msg === 'callout serve started' && l.worker === worker, `worker ${worker} started`)).stages;
      assert.deepEqual([await started(replacement), await started(survivor)], [['sender-callout:warn'], ['sender-callout:enforce']], 'the replacement read the edited file');
      const others = split.others as Array<Record<string, unknown>>;
      assert.deepEqual(others.map((other) => other.worker), [survivor]);
      const [edited, before] = [String(split.config), String(others[0]!.config)];
      assert.match(edited, /^[0-9a-f]{12}$/);
      assert.match(before, /^[0-9a-f]{12}$/);
      assert.notEqual(edited, before, 'the two configurations have different digests');
      assert.equal(split.level, 40);
      assert.equal(
        split.msg,
        `workers run different configurations: worker ${replacement}, started in place of one that died, read the configuration file as it is now and runs configuration ${edited}; ` +
          `worker ${survivor} runs configuration ${before}; the file has changed since the others read it: send SIGHUP to make every worker run the file as it is now`,
      );
      mark = serve.logs.length;
      serve.child.kill('SIGHUP');
      const agreed = await serve.waitForLog((l) => String(l.msg).startsWith('reload done') || String(l.msg).startsWith('workers run different'), 'the reload compared', mark);
      assert.deepEqual([agreed.msg, agreed.config], ['reload done: every policy worker runs the same configuration', edited]);
    } finally {
      assert.deepEqual(await serve.stop(), { code: 0, signal: null }, serve.stderr());
    }
  });
});

describe('callout serve --workers 2, a worker replaced after a restart-only setting was edited and not applied', () => {
  it('warns that the replacement read restart-only settings the running workers do not run, apart from the configuration\'s warning', async () => {
    const config = join(dataDir, 'edited-store.yaml');
    writeFileSync(config, 'policy:\n  stages:\n    - name: sender-callout\n');
    const serve = await serveWithWorkers('127.0.0.1:0', ['--config', config]);
    try {
      // Another SQLite file, not yet meant to apply: the replacement would keep its greylist triplets and verdicts there.
      writeFileSync(config, 'store:\n  path: moved.sqlite\npolicy:\n  stages:\n    - name: sender-callout\n');
      const mark = serve.logs.length;
      process.kill((serve.logs.find(workersStarted)!.workers as number[])[0]!, 'SIGKILL');
      await serve.waitForLog((l) => l.msg === 'policy worker died; starting another', 'the death logged', mark);
      const replaced = await serve.waitForLog((l) => l.msg === 'policy worker replaced', 'the replacement', mark, 60_000);
      const warning = serve.logs.slice(mark).find((l) => l.level === 40 && / started in place of one that died, read restart-only settings/.test(String(l.msg)));
      assert.ok(warning, JSON.stringify(serve.logs.slice(mark).map((l) => l.msg)));
      const replacement = warning.worker as number;
      assert.ok((replaced.workers as number[]).includes(warning.pid as number), 'the warning names the replacement\'s pid');
      assert.equal(
        warning.msg,
        `policy worker ${replacement}, started in place of one that died, read restart-only settings that differ from the running workers' (settings a reload does not apply): restart callout serve, or put the file back`,
      );
      assert.match(String(warning.restart), /^[0-9a-f]{12}$/);
      assert.match(String(warning.running), /^[0-9a-f]{12}$/);
      assert.notEqual(warning.restart, warning.running, 'the two digests differ');
      assert.ok(existsSync(join(dataDir, 'moved.sqlite')), 'the replacement opened the store the file names now');
      assert.deepEqual(serve.logs.filter((l) => String(l.msg).startsWith('workers run different configurations')), [], 'what a reload applies is the same: no SIGHUP would help');
    } finally {
      assert.deepEqual(await serve.stop(), { code: 0, signal: null }, serve.stderr());
    }
  });
});

describe('workerShare', () => {
  it('gives each of N workers its part of limits.concurrency, at least 1, and the limits counted in the store whole', () => {
    const limits = validateConfig({ limits: { concurrency: 64, perHostConcurrency: 4, perDomainPerMinute: 30 } }).limits;
    assert.deepEqual(workerShare(limits, 1), limits);
    const half = workerShare(limits, 2);
    assert.deepEqual([half.concurrency, half.perHostConcurrency], [32, 4], 'per-host connections are leased in the shared store');
    assert.equal(half.perDomainPerMinute, 30, 'the per-domain rate is counted in the shared store');
    assert.equal(half.addressesPerConnection, limits.addressesPerConnection, 'per-connection limits are not shared');
    const many = workerShare(limits, 8);
    assert.deepEqual([many.concurrency, many.perHostConcurrency], [8, 4]);
    assert.equal(workerShare({ ...limits, concurrency: 6 }, 8).concurrency, 1, 'fewer than one each: 1');
  });
});

describe('workerShareExcess', () => {
  it('names limits.concurrency below policy.workers, and what the service may then run at once (not perHostConcurrency, shared through the store); config check says it too', async () => {
    const config = validateConfig({ store: { kind: 'sqlite' }, policy: { workers: 8 }, limits: { concurrency: 6, perHostConcurrency: 4 }, callout: { helo: 'verifier.callout.test' } });
    const expected = ['policy.workers (8) is above limits.concurrency (6): each worker keeps 1, so up to 8 callouts may run at once'];
    assert.deepEqual(workerShareExcess(config), expected);
    assert.deepEqual(workerShareExcess(validateConfig({ policy: { workers: 4 } })), [], 'the default limits (64, 4) hold for 4 workers');
    assert.deepEqual(workerShareExcess(validateConfig({ store: { kind: 'sqlite' }, policy: { workers: 6 }, limits: { concurrency: 6 } })), [], 'one each is no excess');
    const check = captureLog();
    await checkServeConfiguration(config, check.log);
    assert.deepEqual(check.lines.filter((l) => l.level === 40).map((l) => l.msg), expected);
  });
});

describe('keepCounts', () => {
  const counter = (value: number, labels: Record<string, string> = { action: 'DUNNO' }): WorkerMetric => ({ name: 'callout_policy_decisions_total', help: 'h', type: 'counter', aggregator: 'sum', values: [{ value, labels }] });
  const histogram = (sum: number, count: number): WorkerMetric => ({
    name: 'callout_policy_decision_seconds',
    help: 'h',
    type: 'histogram',
    aggregator: 'sum',
    values: [
      { value: count, labels: { le: 0.001 }, metricName: 'callout_policy_decision_seconds_bucket' },
      { value: count, labels: { le: '+Inf' }, metricName: 'callout_policy_decision_seconds_bucket' },
      { value: sum, labels: {}, metricName: 'callout_policy_decision_seconds_sum' },
      { value: count, labels: {}, metricName: 'callout_policy_decision_seconds_count' },
    ],
  });
  const gauge: WorkerMetric = { name: 'callout_nodejs_heap_size_used_bytes', help: 'h', type: 'gauge', aggregator: 'sum', values: [{ value: 5e6, labels: {} }] };

  it('adds the counters and histograms of a worker that exited, series by series, and drops its gauges', () => {
    const first = keepCounts([], [counter(3), histogram(0.5, 3), gauge]);
    assert.deepEqual(first.map((m) => m.name), ['callout_policy_decisions_total', 'callout_policy_decision_seconds']);
    const second = keepCounts(first, [counter(2), counter(1, { action: 'REJECT' }), histogram(0.25, 2), gauge]);
    assert.deepEqual(second[0]!.values, [{ value: 5, labels: { action: 'DUNNO' } }, { value: 1, labels: { action: 'REJECT' } }]);
    assert.deepEqual(second[1]!.values.map((v) => [v.metricName, v.labels.le, v.value]), [
      ['callout_policy_decision_seconds_bucket', 0.001, 5],
      ['callout_policy_decision_seconds_bucket', '+Inf', 5],
      ['callout_policy_decision_seconds_sum', undefined, 0.75],
      ['callout_policy_decision_seconds_count', undefined, 5],
    ]);
    assert.equal(first[0]!.values[0]!.value, 3, 'what was kept before is not changed in place');
  });
});

describe('readWorkerMessage', () => {
  it('reads a NaN that crossed the IPC channel as null back as NaN (a worker just started has no event-loop lag mean yet)', async () => {
    const registry = new Registry();
    collectDefaultMetrics({ register: registry });
    // Over the IPC channel as cluster sends it: JSON, where NaN becomes null.
    const sent = JSON.parse(JSON.stringify({ type: 'callout:metrics', id: 1, metrics: await registry.getMetricsAsJSON() })) as unknown;
    const read = readWorkerMessage(sent);
    assert.ok(read?.type === 'callout:metrics' && read.metrics, 'the answer keeps its metrics');
    const mean = read.metrics.find((metric) => metric.name === 'nodejs_eventloop_lag_mean_seconds');
    assert.ok(mean && Number.isNaN(mean.values[0]!.value), 'mean && Number.isNaN(mean.values[0]!.value)');
  });

  it('fuzz: reads any value as a message of the declared shape or as none', () => {
    const types = fc.constantFrom('callout:ready', 'callout:failed', 'callout:health', 'callout:metrics', 'callout:reloaded', 'callout:', 'test:started');
    // Fields mostly of the kinds some message takes: of any JSON, 8 values in 1,000 were read as a message.
    const field = fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.constant(undefined), fc.integer(), fc.string({ maxLength: 8 }), fc.boolean());
    const metric = fc.record({ name: fc.string(), help: fc.string(), type: fc.constantFrom('counter', 'gauge', 'histogram'), aggregator: fc.constantFrom('sum', 'max'), values: fc.array(fc.record({ value: fc.double(), labels: fc.dictionary(fc.string(), fc.oneof(fc.string(), fc.integer())) }), { maxLength: 3 }) });
    const message = fc.oneof(
      fc.jsonValue({ maxDepth: 3 }),
      { weight: 3, arbitrary: fc.record({ type: types, policy: field, message: field, code: field, id: field, healthy: field, error: field, accepted: field, config: field, reason: field, seq: field, metrics: fc.oneof(field, fc.array(metric, { maxLength: 3 }), fc.array(fc.oneof(metric.map((m) => ({ ...m, values: 1 })), fc.jsonValue({ maxDepth: 2 })), { minLength: 1, maxLength: 3 })) }, { requiredKeys: ['type'] }) },
    );
    let messages = 0;
    fc.assert(
      fc.property(message, (value) => {
        const read = readWorkerMessage(value);
        if (read === undefined) return;
        messages += 1;
        switch (read.type) {
          case 'callout:ready':
            assert.equal(typeof read.policy, 'string');
            break;
          case 'callout:failed':
            assert.ok(typeof read.message === 'string' && (read.code === undefined || typeof read.code === 'string'), 'typeof read.message === \'string\' && (read.code === undefined || typeof read.code === \'string\')');
            break;
          case 'callout:health':
            assert.ok(typeof read.id === 'number' && typeof read.healthy === 'boolean', 'typeof read.id === \'number\' && typeof read.healthy === \'boolean\'');
            break;
          case 'callout:metrics':
            assert.equal(typeof read.id, 'number');
            // Whatever was read is what keepCounts takes, a worker's exit after it included.
            if (read.metrics) keepCounts(keepCounts([], read.metrics), read.metrics);
            break;
          case 'callout:reloaded':
            assert.ok(typeof read.accepted === 'boolean' && typeof read.config === 'string' && (read.reason === undefined || typeof read.reason === 'string'), 'typeof read.accepted === \'boolean\' && typeof read.config === \'string\' && (read.reason === undefin...');
            assert.ok(read.seq === undefined || typeof read.seq === 'number', 'read.seq === undefined || typeof read.seq === \'number\'');
            assert.deepEqual(Object.keys(read).sort(), ['accepted', 'config', 'type', ...(read.reason === undefined ? [] : ['reason']), ...(read.seq === undefined ? [] : ['seq'])].sort());
            break;
        }
      }),
      { numRuns: 1_000 },
    );
    // About 40 are.
    assert.ok(messages >= 10, `only ${messages} of 1,000 values read as a message`);
  });
});

describe('readSupervisorMessage', () => {
  it('reads a reload request with its seq, a question with its id, and nothing else', () => {
    assert.deepEqual(readSupervisorMessage({ type: 'callout:reload', seq: 3, extra: 1 }), { type: 'callout:reload', seq: 3 });
    assert.deepEqual(readSupervisorMessage({ type: 'callout:health?', id: 7 }), { type: 'callout:health?', id: 7 });
    assert.equal(readSupervisorMessage({ type: 'callout:reload' }), undefined, 'a reload request without its seq');
    assert.equal(readSupervisorMessage({ type: 'callout:reload', seq: '3' }), undefined);
    assert.equal(readSupervisorMessage({ type: 'callout:metrics?', id: null }), undefined);
    assert.equal(readSupervisorMessage(null), undefined);
    assert.equal(readSupervisorMessage(['callout:reload']), undefined);
  });

  it('fuzz: reads any value as a message of the declared shape or as none', () => {
    // As above: of any JSON, 8 values in 1,000 were read as a message.
    const field = fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.constant(undefined), fc.integer(), fc.string({ maxLength: 8 }));
    const message = fc.oneof(fc.jsonValue({ maxDepth: 3 }), { weight: 3, arbitrary: fc.record({ type: fc.constantFrom('callout:reload', 'callout:health?', 'callout:metrics?', 'callout:reloaded'), id: field, seq: field }, { requiredKeys: ['type'] }) });
    let messages = 0;
    fc.assert(
      fc.property(message, (value) => {
        const read = readSupervisorMessage(value);
        if (read === undefined) return;
        messages += 1;
        if (read.type === 'callout:reload') assert.deepEqual(Object.keys(read).sort(), ['seq', 'type']);
        else assert.deepEqual(Object.keys(read).sort(), ['id', 'type']);
        assert.equal(typeof (read.type === 'callout:reload' ? read.seq : read.id), 'number');
      }),
      { numRuns: 1_000 },
    );
    assert.ok(messages >= 30, `only ${messages} of 1,000 values read as a message`);
  });
});

describe('Supervisor', () => {
  /**
   * A Supervisor of scripted workers (fixtures/scripted-worker.mjs): each is told to become ready
   * as soon as it has started, until hold() is called; those started after that wait, in `held`.
   */
  async function scriptedSupervisor(workers: number, log: Logger, metricsListen = '', options: Partial<SupervisorOptions> = {}): Promise<{ supervisor: Supervisor; held: Worker[]; hold: () => void; done: () => void; replaces: boolean[] }> {
    const held: Worker[] = [];
    const replaces: boolean[] = [];
    let holding = false;
    const announced = (worker: Worker, message: { type?: string; replaces?: boolean }): void => {
      if (message?.type !== 'test:started') return;
      replaces.push(message.replaces === true);
      if (holding) held.push(worker);
      else worker.send({ type: 'test:go' });
    };
    cluster.on('message', announced);
    const supervisor = await Supervisor.start({
      workers,
      listen: '127.0.0.1:0',
      metricsListen,
      log,
      exec: fileURLToPath(new URL('./fixtures/scripted-worker.mjs', import.meta.url)),
      args: [],
      execArgv: [],
      restartDelayMs: 0,
      ...options,
    }).catch((err: unknown) => {
      cluster.off('message', announced);
      throw err;
    });
    return { supervisor, held, hold: () => (holding = true), done: () => cluster.off('message', announced), replaces };
  }

  /** How many reload requests a scripted worker has had; -1 once it is gone. */
  function reloadsOf(worker: Worker): Promise<number> {
    if (worker.isDead()) return Promise.resolve(-1);
    return new Promise((resolve) => {
      const settle = (reloads: number): void => {
        worker.off('message', answer);
        worker.off('exit', gone);
        resolve(reloads);
      };
      const answer = (message: { type?: string; reloads?: number }): void => {
        if (message?.type === 'test:reloads') settle(message.reloads ?? -1);
      };
      const gone = (): void => settle(-1);
      worker.on('message', answer);
      worker.once('exit', gone);
      worker.send({ type: 'test:reloads?' });
    });
  }

  /** Resolves true once each of `workers` has had `count` reload requests (false if that never comes). */
  function settled(workers: Worker[], count: number): Promise<boolean> {
    return until(async () => (await Promise.all(workers.map((worker) => reloadsOf(worker)))).every((reloads) => reloads === count));
  }

  it('stops a replacement still starting without logging it as a failed start to be tried again', async () => {
    const { lines, log } = captureLog();
    const { supervisor, held, hold, done } = await scriptedSupervisor(1, log);
    try {
      hold();
      process.kill(supervisor.pids[0]!, 'SIGKILL');
      assert.ok(await until(() => held.length === 1), 'a replacement worker started');
      await supervisor.stop();
      assert.equal(held[0]!.isDead(), true);
      const messages = lines.map((l) => l.msg);
      assert.ok(messages.includes('stopped'), messages.join(' | '));
      assert.ok(!messages.includes('a replacement policy worker failed to start; trying again later'), messages.join(' | '));
    } finally {
      done();
      // Again, should an assertion have failed before: a live worker would keep the test running.
      await supervisor.stop();
    }
  });

  it('doubles restartDelayMs at each death of a worker soon after it was ready, as Postfix\'s master throttles a service whose processes keep dying', async () => {
    const { lines, log } = captureLog();
    const { supervisor, done } = await scriptedSupervisor(1, log, '', { restartDelayMs: 100 });
    // From the death to the fork of its replacement: the delay alone, without the replacement's own start.
    const exits: number[] = [];
    const forks: number[] = [];
    const exited = (): void => {
      exits.push(performance.now());
    };
    const forked = (): void => {
      forks.push(performance.now());
    };
    cluster.on('exit', exited);
    cluster.on('fork', forked);
    try {
      for (let death = 1; death <= 3; death++) {
        process.kill(supervisor.pids[0]!, 'SIGKILL');
        assert.ok(await until(() => lines.filter((l) => l.msg === 'policy worker replaced').length === death), `replacement ${death} ready`);
      }
      const delays = forks.map((at, i) => Math.round(at - exits[i]!));
      // Each died well within HEALTHY_LIFETIME_MS (10 s) of ready: 100 ms doubled once, twice, three times. Timers fire late, never early.
      assert.ok(delays.length === 3 && delays[0]! >= 195 && delays[1]! >= 395 && delays[2]! >= 795, `replaced after ${delays.join(', ')} ms, expected at least 200, 400, 800`);
    } finally {
      cluster.off('exit', exited);
      cluster.off('fork', forked);
      done();
      await supervisor.stop();
    }
  });

  it('replaces a worker that died 10 s or more after it was ready after restartDelayMs alone, and backs off again for one that dies sooner', async () => {
    const { lines, log } = captureLog();
    const timers = new ManualTimers();
    const { supervisor, done } = await scriptedSupervisor(1, log, '', { restartDelayMs: 1_000, timers });
    const deaths = (): number => lines.filter((l) => l.msg === 'policy worker died; starting another').length;
    const replacements = (): number => lines.filter((l) => l.msg === 'policy worker replaced').length;
    /** Kills the worker `lifetimeMs` after it was ready; resolves with the delay before its replacement was forked, in steps of 500 ms. */
    const dieAfter = async (lifetimeMs: number): Promise<number> => {
      await timers.advance(lifetimeMs);
      const died = deaths();
      const replaced = replacements();
      process.kill(supervisor.pids[0]!, 'SIGKILL');
      assert.ok(await until(() => deaths() === died + 1), `the death after ${lifetimeMs} ms is logged`);
      let waited = 0;
      while (supervisor.pids.length === 0 && waited < 60_000) {
        await timers.advance(500);
        waited += 500;
      }
      assert.ok(await until(() => replacements() === replaced + 1), `the worker that died after ${lifetimeMs} ms is replaced`);
      return waited;
    };
    try {
      assert.equal(await dieAfter(0), 2_000, 'dead at once: a failed start, the delay doubled');
      assert.equal(await dieAfter(10_000), 1_000, 'dead after 10 s ready: a healthy lifetime, restartDelayMs again');
      assert.equal(await dieAfter(9_999), 2_000, 'dead just short of 10 s: a failed start again');
      assert.equal(await dieAfter(100), 4_000, 'and the next one soon after: doubled again');
    } finally {
      done();
      await supervisor.stop();
    }
  });

  it('tells a replacement worker that it replaces one, so that it refuses a configuration file with no settings as a reload does', async () => {
    const { supervisor, held, hold, done, replaces } = await scriptedSupervisor(2, createLogger('silent'));
    try {
      assert.deepEqual(replaces, [false, false], 'the first workers start as serve does');
      hold();
      process.kill(supervisor.pids[0]!, 'SIGKILL');
      assert.ok(await until(() => held.length === 1), 'a replacement worker started');
      assert.deepEqual(replaces, [false, false, true]);
    } finally {
      done();
      await supervisor.stop();
    }
  });

  /**
   * Sends a scripted worker `type` (test:outcome, the outcome it gives each reload request;
   * test:metrics, what it answers to scrapes; test:release, send the oldest held answer) with
   * `payload`; resolves once it says `${type}-set`.
   */
  function scriptWorker(worker: Worker, type: string, payload: Record<string, unknown>): Promise<void> {
    return new Promise((resolve) => {
      const set = (message: { type?: string }): void => {
        if (message?.type !== `${type}-set`) return;
        worker.off('message', set);
        resolve();
      };
      worker.on('message', set);
      worker.send({ type, ...payload });
    });
  }

  /** The live worker of process `pid`. */
  function workerOf(pid: number): Worker {
    return Object.values(cluster.workers ?? {}).find((worker) => worker?.process.pid === pid)!;
  }

  /** The supervisor's workers, in the order they were started. */
  function workersOf(supervisor: Supervisor): Worker[] {
    return supervisor.pids.map(workerOf).sort((a, b) => a.id - b.id);
  }

  /** The warnings that the workers run different configurations. */
  const differing = (lines: Array<Record<string, unknown>>): Array<Record<string, unknown>> =>
    lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('workers run different configurations after reload'));

  it('warns once when, after a reload, the workers run different configurations, naming each worker\'s outcome', async () => {
    const { lines, log } = captureLog();
    const { supervisor, done } = await scriptedSupervisor(2, log);
    const differ = (): Array<Record<string, unknown>> => differing(lines);
    const workers = workersOf(supervisor);
    try {
      // An editor mid-write: the first worker read the whole file, the second a part it refused.
      await scriptWorker(workers[0]!, 'test:outcome', { outcome: { accepted: true, config: 'aaaaaaaaaaaa' } });
      await scriptWorker(workers[1]!, 'test:outcome', { outcome: { accepted: false, config: 'bbbbbbbbbbbb', reason: 'CONFIG_INVALID: policy.stages: expected an array' } });
      supervisor.reload();
      assert.ok(await until(() => differ().length === 1), JSON.stringify(lines.slice(-3)));
      const [first, second] = workers.map((worker) => worker.id);
      assert.equal(
        differ()[0]!.msg,
        `workers run different configurations after reload: worker ${first} accepted, running configuration aaaaaaaaaaaa; worker ${second} refused (CONFIG_INVALID: policy.stages: expected an array), running configuration bbbbbbbbbbbb; send SIGHUP again`,
      );
      assert.equal(differ()[0]!.level, 40);
      // Again, both reading the finished file: one configuration, nothing to say.
      await scriptWorker(workers[1]!, 'test:outcome', { outcome: { accepted: true, config: 'aaaaaaaaaaaa' } });
      supervisor.reload();
      assert.ok(await settled(workers, 2), 'await settled(workers, 2)');
      // The outcomes travel on the same channel as the answers about reload requests: both are in by now.
      assert.equal(differ().length, 1, 'no warning when every worker runs the same configuration');
      // Both accepted, but read different versions of the file.
      await scriptWorker(workers[1]!, 'test:outcome', { outcome: { accepted: true, config: 'cccccccccccc' } });
      supervisor.reload();
      assert.ok(await until(() => differ().length === 2), 'await until(() => differ().length === 2)');
      assert.match(String(differ()[1]!.msg), new RegExp(`worker ${second} accepted, running configuration cccccccccccc; send SIGHUP again$`));
    } finally {
      done();
      await supervisor.stop();
    }
  });

  it('gives up, after reloadOutcomeWaitMs, the outcome of a worker that never reports it, so that the next reload is compared', async () => {
    const { lines, log } = captureLog();
    const { supervisor, done } = await scriptedSupervisor(2, log, '', { reloadOutcomeWaitMs: 200 });
    const workers = workersOf(supervisor);
    const [first, second] = workers.map((worker) => worker.id);
    const gaveUp = (): Array<Record<string, unknown>> => lines.filter((l) => typeof l.msg === 'string' && l.msg.includes('reported no reload outcome'));
    const differ = (): Array<Record<string, unknown>> => differing(lines);
    try {
      // The second worker's reload throws before it reports: it has no outcome to send.
      await scriptWorker(workers[0]!, 'test:outcome', { outcome: { accepted: true, config: 'aaaaaaaaaaaa' } });
      supervisor.reload();
      assert.ok(await until(() => lines.some((l) => String(l.msg).startsWith('reload done'))), JSON.stringify(lines.slice(-3)));
      assert.equal(gaveUp().length, 1, 'warned once');
      assert.equal(gaveUp()[0]!.msg, `policy worker ${second} reported no reload outcome within 200 ms of being asked to reload; comparing the others without it`);
      assert.equal(gaveUp()[0]!.level, 40);
      assert.equal(gaveUp()[0]!.worker, second, 'the worker by the number its own lines carry');
      const done1 = lines.find((l) => String(l.msg).startsWith('reload done'))!;
      assert.equal(done1.msg, 'reload done: every policy worker that reported runs the same configuration');
      assert.deepEqual(done1.unreported, [second]);
      // It reports again, by another file: that is compared, not taken for the outcome it owed.
      await scriptWorker(workers[1]!, 'test:outcome', { outcome: { accepted: true, config: 'cccccccccccc' } });
      supervisor.reload();
      assert.ok(await until(() => differ().length === 1), JSON.stringify(lines.slice(-3)));
      assert.match(String(differ()[0]!.msg), new RegExp(`worker ${first} accepted, running configuration aaaaaaaaaaaa; worker ${second} accepted, running configuration cccccccccccc; send SIGHUP again$`));
      assert.equal(gaveUp().length, 1, 'no warning for a worker that reported');
    } finally {
      done();
      await supervisor.stop();
    }
  });

  it('does not ask a worker that says it is ready a second time again for a reload it owes', async () => {
    const { supervisor, done } = await scriptedSupervisor(1, createLogger('silent'));
    const [worker] = workersOf(supervisor);
    try {
      supervisor.reload();
      assert.ok(await settled([worker!], 1), 'asked to reload once');
      // The supervisor's listener came first: once this one hears the second ready, it has answered it.
      const readyAgain = new Promise<void>((resolve) => {
        const heard = (message: { type?: string }): void => {
          if (message?.type !== 'callout:ready') return;
          worker!.off('message', heard);
          resolve();
        };
        worker!.on('message', heard);
      });
      worker!.send({ type: 'test:go' });
      await readyAgain;
      assert.equal(await reloadsOf(worker!), 1, 'still the one reload request: it owes its outcome already');
    } finally {
      done();
      await supervisor.stop();
    }
  });

  it('says no reload is done when no worker reported an outcome: the warning naming the silent worker is all', async () => {
    const { lines, log } = captureLog();
    const { supervisor, done } = await scriptedSupervisor(1, log, '', { reloadOutcomeWaitMs: 100 });
    try {
      supervisor.reload();
      assert.ok(await until(() => lines.some((l) => String(l.msg).includes('reported no reload outcome'))), JSON.stringify(lines.slice(-3)));
      // The comparison runs in the same turn as the warning: a line of it would be there by now.
      assert.deepEqual(lines.filter((l) => String(l.msg).startsWith('reload done')), [], 'no "same configuration" of no configuration at all');
    } finally {
      done();
      await supervisor.stop();
    }
  });

  it('answers /health 503 while a worker that died is not yet replaced, 200 once its replacement is ready', async () => {
    const { lines, log } = captureLog();
    const { supervisor, held, hold, done } = await scriptedSupervisor(2, log, '127.0.0.1:0');
    const health = async (): Promise<number> => (await fetch(`http://${supervisor.metricsAddress}/health`)).status;
    try {
      assert.equal(await health(), 200);
      hold();
      const victim = workersOf(supervisor).find((worker) => worker.process.pid === supervisor.pids[0])!;
      process.kill(victim.process.pid!, 'SIGKILL');
      assert.ok(await until(() => held.length === 1), 'a replacement worker started');
      // Its number, as the worker's own lines carry it, and its pid, as `policy workers started` lists it.
      const death = lines.find((l) => l.msg === 'policy worker died; starting another');
      assert.deepEqual([death?.worker, death?.pid, death?.signal], [victim.id, victim.process.pid, 'SIGKILL']);
      assert.equal(await health(), 503, 'one worker of two is answering');
      held[0]!.send({ type: 'test:go' });
      assert.ok(await until(() => lines.some((l) => l.msg === 'policy worker replaced')), JSON.stringify(lines.slice(-3)));
      assert.equal(await health(), 200);
    } finally {
      done();
      await supervisor.stop();
    }
  });

  it('compares the outcomes at once when a worker that owed one dies: a worker gone owes none, and is not named as silent', async () => {
    const { lines, log } = captureLog();
    const { supervisor, hold, done } = await scriptedSupervisor(2, log, '', { reloadOutcomeWaitMs: 60_000 });
    const workers = workersOf(supervisor);
    try {
      await scriptWorker(workers[0]!, 'test:outcome', { outcome: { accepted: true, config: 'aaaaaaaaaaaa' } });
      hold();
      supervisor.reload();
      assert.ok(await settled(workers, 1), 'both were asked');
      // The second dies before it reports (its reload crashed it, say).
      workers[1]!.process.kill('SIGKILL');
      assert.ok(await until(() => lines.some((l) => String(l.msg).startsWith('reload done')), 5_000), JSON.stringify(lines.slice(-3)));
      const reloadDone = lines.find((l) => String(l.msg).startsWith('reload done'))!;
      assert.deepEqual([reloadDone.msg, reloadDone.config, reloadDone.accepted], ['reload done: every policy worker runs the same configuration', 'aaaaaaaaaaaa', 1]);
      assert.ok(!lines.some((l) => String(l.msg).includes('reported no reload outcome')), 'no worker is given up on');
    } finally {
      done();
      await supervisor.stop();
    }
  });

  it('takes a late answer to an earlier reload for no answer to the latest one', async () => {
    const { lines, log } = captureLog();
    const { supervisor, done } = await scriptedSupervisor(2, log);
    const workers = workersOf(supervisor);
    try {
      await scriptWorker(workers[0]!, 'test:outcome', { outcome: { accepted: true, config: 'aaaaaaaaaaaa' } });
      // The second reads the file before the edit, slowly; asked again, it reads the finished file.
      await scriptWorker(workers[1]!, 'test:outcome', { outcome: { accepted: true, config: 'bbbbbbbbbbbb', held: true } });
      supervisor.reload();
      assert.ok(await settled(workers, 1), 'await settled(workers, 1)');
      await scriptWorker(workers[1]!, 'test:outcome', { outcome: { accepted: true, config: 'aaaaaaaaaaaa', held: true } });
      supervisor.reload();
      assert.ok(await settled(workers, 2), 'await settled(workers, 2)');
      // Its answer to the first reload comes only after the second was asked, then the one to the second.
      await scriptWorker(workers[1]!, 'test:release', {});
      await scriptWorker(workers[1]!, 'test:release', {});
      assert.ok(await until(() => lines.some((l) => String(l.msg).startsWith('reload done') || differing(lines).length > 0), 10_000), JSON.stringify(lines.slice(-3)));
      assert.deepEqual(differing(lines), [], 'the late answer to the first reload was not compared');
      assert.equal(lines.find((l) => String(l.msg).startsWith('reload done'))!.config, 'aaaaaaaaaaaa');
    } finally {
      done();
      await supervisor.stop();
    }
  });

  it('asks a ready worker to reload twice when two reloads come in immediate succession: it answers both, the latest is compared, and none is given up (regression)', async () => {
    // Two SIGHUPs sent within milliseconds reached a worker as one (the kernel does not queue a
    // pending standard signal): it owed two outcomes, sent one, and was named as silent.
    const { lines, log } = captureLog();
    const { supervisor, done } = await scriptedSupervisor(2, log, '', { reloadOutcomeWaitMs: 300 });
    const workers = workersOf(supervisor);
    const answered: number[] = [];
    const count = (_worker: Worker, message: { type?: string }): void => {
      if (message?.type === 'callout:reloaded') answered.push(1);
    };
    cluster.on('message', count);
    try {
      for (const worker of workers) await scriptWorker(worker, 'test:outcome', { outcome: { accepted: true, config: 'aaaaaaaaaaaa' } });
      const reloadDone = (): Array<Record<string, unknown>> => lines.filter((l) => String(l.msg).startsWith('reload done'));
      // Signals merged only when the worker was not scheduled between the two: several rounds.
      for (let round = 1; round <= 10; round++) {
        supervisor.reload();
        supervisor.reload();
        assert.ok(await settled(workers, 2 * round), `each worker was asked twice in round ${round}`);
        assert.ok(await until(() => answered.length === 4 * round), `each worker answered twice in round ${round}`);
        assert.ok(await until(() => reloadDone().length === round), JSON.stringify(lines.slice(-3)));
      }
      // Past reloadOutcomeWaitMs: a worker taken to owe another outcome would be named by now.
      await new Promise((resolve) => setTimeout(resolve, 400));
      assert.deepEqual(reloadDone().map((l) => [l.msg, l.accepted]), Array(10).fill(['reload done: every policy worker runs the same configuration', 2]));
      assert.ok(!lines.some((l) => String(l.msg).includes('reported no reload outcome')), JSON.stringify(lines));
    } finally {
      cluster.off('message', count);
      done();
      await supervisor.stop();
    }
  });

  it('fails a scrape answered with metrics of another shape, and outlives the worker that sent them (regression)', async () => {
    // A worker forked after an upgrade runs the program then on disk. Metrics of another shape
    // were kept as its last scrape, and at its exit keepCounts threw in the exit handler: an
    // uncaught exception that took the supervisor, and the whole policy service, down.
    const { lines, log } = captureLog();
    const { supervisor, done } = await scriptedSupervisor(1, log, '127.0.0.1:0');
    try {
      await scriptWorker(workersOf(supervisor)[0]!, 'test:metrics', { metrics: [{ name: 'callout_requests_total', help: 'requests', type: 'counter', aggregator: 'sum' }] });
      const scrape = await fetch(`http://${supervisor.metricsAddress}/metrics`);
      assert.equal(scrape.status, 500);
      process.kill(supervisor.pids[0]!, 'SIGKILL');
      assert.ok(await until(() => lines.some((l) => l.msg === 'policy worker replaced')), JSON.stringify(lines.slice(-3)));
    } finally {
      done();
      await supervisor.stop();
    }
  });

  /** A worker's registry of one counter, callout_test_total, at `value`. */
  const counterAt = (value: number): WorkerMetric[] => [{ name: 'callout_test_total', help: 'a test counter', type: 'counter', aggregator: 'sum', values: [{ value, labels: {} }] }];

  /** Scrapes the supervisor: the status, and callout_test_total in the sum (NaN when absent). */
  async function scrapeTestTotal(supervisor: Supervisor): Promise<{ status: number; total: number }> {
    const response = await fetch(`http://${supervisor.metricsAddress}/metrics`);
    const text = await response.text();
    return { status: response.status, total: Number(/^callout_test_total (\S+)$/m.exec(text)?.[1]) };
  }

  /** Resolves once a scripted worker told to hold its metrics answers holds `count` of them. */
  function holding(worker: Worker, count: number): Promise<void> {
    return new Promise((resolve) => {
      const held = (message: { type?: string; count?: number }): void => {
        if (message?.type !== 'test:held' || message.count !== count) return;
        worker.off('message', held);
        resolve();
      };
      worker.on('message', held);
    });
  }

  it('keeps a worker\'s answer to the latest scrape when an earlier scrape\'s answer comes after it: its total never goes down, after its exit either', async () => {
    const { lines, log } = captureLog();
    const { supervisor, hold, done } = await scriptedSupervisor(1, log, '127.0.0.1:0');
    const [worker] = workersOf(supervisor);
    try {
      // Two scrapes in flight (two Prometheus servers, say): the worker counted 3, then 7.
      await scriptWorker(worker!, 'test:metrics', { metrics: counterAt(3), held: true });
      let asked = holding(worker!, 1);
      const first = scrapeTestTotal(supervisor);
      await asked;
      await scriptWorker(worker!, 'test:metrics', { metrics: counterAt(7), held: true });
      asked = holding(worker!, 2);
      const second = scrapeTestTotal(supervisor);
      await asked;
      await scriptWorker(worker!, 'test:release', { newest: true });
      assert.deepEqual(await second, { status: 200, total: 7 }, 'the second scrape sums the answer to its question');
      await scriptWorker(worker!, 'test:release', {});
      assert.deepEqual(await first, { status: 200, total: 7 }, 'the late answer to the first question is older than the count the supervisor has: not taken');
      hold();
      process.kill(worker!.process.pid!, 'SIGKILL');
      assert.ok(await until(() => lines.some((l) => l.msg === 'policy worker died; starting another')), JSON.stringify(lines.slice(-3)));
      assert.deepEqual(await scrapeTestTotal(supervisor), { status: 200, total: 7 }, 'its count at its latest answer stays in the sum');
    } finally {
      done();
      await supervisor.stop();
    }
  });

  it('answers a scrape during which a worker exits at once, the exited worker\'s last counts in the sum once, the other\'s answer its own', async () => {
    const { lines, log } = captureLog();
    const { supervisor, hold, done } = await scriptedSupervisor(2, log, '127.0.0.1:0');
    const [gone, staying] = workersOf(supervisor);
    try {
      await scriptWorker(gone!, 'test:metrics', { metrics: counterAt(3) });
      await scriptWorker(staying!, 'test:metrics', { metrics: counterAt(5) });
      assert.deepEqual(await scrapeTestTotal(supervisor), { status: 200, total: 8 });
      // Both have counted more since; neither has answered when the scrape's first answer comes.
      await scriptWorker(gone!, 'test:metrics', { metrics: counterAt(30), held: true });
      await scriptWorker(staying!, 'test:metrics', { metrics: counterAt(50), held: true });
      const asked = Promise.all([holding(gone!, 1), holding(staying!, 1)]);
      const scrape = scrapeTestTotal(supervisor);
      await asked;
      await scriptWorker(staying!, 'test:release', {});
      hold();
      gone!.process.kill('SIGKILL');
      // What the exited worker counted after its last answer (27) is lost: no scraper saw it.
      // Not 500 after the 5 s a worker has to answer: the exit is its answer.
      assert.deepEqual(await scrape, { status: 200, total: 53 }, 'its last answer (3) once, and the answer of the worker still running (50)');
      assert.ok(lines.some((l) => l.msg === 'policy worker died; starting another'), JSON.stringify(lines.slice(-3)));
    } finally {
      done();
      await supervisor.stop();
    }
  });

  it('answers /health 503 while a ready worker\'s IPC channel is closed: it is handed no connection, and its health cannot be asked; a scrape keeps its last counts', async () => {
    const { log } = captureLog();
    const { supervisor, done } = await scriptedSupervisor(2, log, '127.0.0.1:0');
    const [closed, open] = workersOf(supervisor);
    const health = async (): Promise<number> => (await fetch(`http://${supervisor.metricsAddress}/health`)).status;
    try {
      await scriptWorker(closed!, 'test:metrics', { metrics: counterAt(3) });
      await scriptWorker(open!, 'test:metrics', { metrics: counterAt(5) });
      assert.deepEqual(await scrapeTestTotal(supervisor), { status: 200, total: 8 });
      assert.equal(await health(), 200, 'healthy as started');
      const disconnected = new Promise<void>((resolve) => closed!.once('disconnect', () => resolve()));
      closed!.send({ type: 'test:disconnect' });
      await disconnected;
      assert.equal(closed!.isDead(), false, 'the worker still runs');
      assert.equal(await health(), 503, 'a worker the supervisor cannot reach is no worker up');
      assert.deepEqual(await scrapeTestTotal(supervisor), { status: 200, total: 8 }, 'not asked, its last answer counted');
    } finally {
      done();
      await supervisor.stop();
    }
  });

  it('ignores a reload asked for while it stops, saying so', async () => {
    const { lines, log } = captureLog();
    const { supervisor, done } = await scriptedSupervisor(1, log);
    try {
      const stopped = supervisor.stop();
      supervisor.reload();
      await stopped;
      const messages = lines.map((l) => l.msg);
      assert.ok(messages.includes('reload ignored: the policy workers are stopping'), messages.join(' | '));
      assert.ok(!messages.includes('reloading: asking every policy worker to reload'), messages.join(' | '));
      assert.ok(!messages.includes('policy worker died; starting another'), 'a worker stopped is not reported dead');
    } finally {
      done();
    }
  });

  it('waits for one outcome from a replacement asked to reload twice while it started: it gets one reload request (regression)', async () => {
    const { lines, log } = captureLog();
    const { supervisor, held, hold, done } = await scriptedSupervisor(2, log, '', { reloadOutcomeWaitMs: 1_000 });
    try {
      const [victim, survivor] = supervisor.pids;
      hold();
      process.kill(victim!, 'SIGKILL');
      assert.ok(await until(() => held.length === 1), 'a replacement worker started');
      const replacement = held[0]!;
      const running = workerOf(survivor!);
      await scriptWorker(running, 'test:outcome', { outcome: { accepted: true, config: 'aaaaaaaaaaaa' } });
      await scriptWorker(replacement, 'test:outcome', { outcome: { accepted: true, config: 'aaaaaaaaaaaa' } });
      supervisor.reload();
      assert.ok(await until(async () => (await reloadsOf(running)) === 1), 'await until(async () => (await reloadsOf(running)) === 1)');
      supervisor.reload();
      replacement.send({ type: 'test:go' });
      assert.ok(await until(() => lines.some((l) => String(l.msg).startsWith('reload done'))), JSON.stringify(lines.slice(-3)));
      assert.equal(await reloadsOf(replacement), 1);
      const reloadDone = lines.find((l) => String(l.msg).startsWith('reload done'))!;
      assert.equal(reloadDone.msg, 'reload done: every policy worker runs the same configuration', JSON.stringify(reloadDone));
      assert.ok(!lines.some((l) => String(l.msg).includes('reported no reload outcome')), 'no worker is given up on');
    } finally {
      done();
      await supervisor.stop();
    }
  });

  it('passes a reload asked for while a replacement worker is starting to it once it is ready', async () => {
    // The replacement may have read the configuration file before the edit the reload is for.
    const { supervisor, held, hold, done } = await scriptedSupervisor(2, createLogger('silent'));
    try {
      const [victim, survivor] = supervisor.pids;
      hold();
      process.kill(victim!, 'SIGKILL');
      assert.ok(await until(() => held.length === 1), 'a replacement worker started');
      supervisor.reload();
      const replacement = held[0]!;
      replacement.send({ type: 'test:go' });
      assert.ok(await until(async () => (await reloadsOf(replacement)) === 1), 'the replacement was asked to reload once it was ready');
      const running = workerOf(survivor!);
      assert.equal(await reloadsOf(running), 1, 'the running worker was asked at once, and only once');
    } finally {
      done();
      await supervisor.stop();
    }
  });

  describe('a replacement worker\'s configuration', () => {
    const split = (lines: Array<Record<string, unknown>>): Array<Record<string, unknown>> => lines.filter((l) => l.msg !== undefined && /^workers run different configurations: worker \d+, started in place/.test(String(l.msg)));

    it('reads the configuration digest of a ready message, and one of another shape as none; a reload outcome with one of another shape is no outcome', () => {
      assert.deepEqual(readWorkerMessage({ type: 'callout:ready', policy: '127.0.0.1:1', config: '0123456789ab' }), { type: 'callout:ready', policy: '127.0.0.1:1', config: '0123456789ab' });
      for (const config of ['', 'x'.repeat(100_000), 'a'.repeat(65), 'ABCDEF012345', 12, null]) {
        assert.deepEqual(readWorkerMessage({ type: 'callout:ready', policy: '127.0.0.1:1', config }), { type: 'callout:ready', policy: '127.0.0.1:1' }, `config ${JSON.stringify(config).slice(0, 20)}: ready, without it`);
      }
      assert.deepEqual(readWorkerMessage({ type: 'callout:ready', policy: '127.0.0.1:1', config: '0123456789ab', restart: 'ba9876543210' }), { type: 'callout:ready', policy: '127.0.0.1:1', config: '0123456789ab', restart: 'ba9876543210' });
      for (const restart of ['', 'x'.repeat(100_000), 'ABCDEF012345', 12]) {
        assert.deepEqual(readWorkerMessage({ type: 'callout:ready', policy: '127.0.0.1:1', restart }), { type: 'callout:ready', policy: '127.0.0.1:1' }, `restart ${JSON.stringify(restart).slice(0, 20)}: ready, without it`);
      }
      assert.equal(readWorkerMessage({ type: 'callout:reloaded', seq: 1, accepted: true, config: 'x'.repeat(100_000) }), undefined);
      assert.equal(readWorkerMessage({ type: 'callout:reloaded', seq: 1, accepted: true, config: 'a'.repeat(64) })?.type, 'callout:reloaded');
    });

    it('warns, naming each worker\'s digest, when a replacement starts with another configuration than the running workers, and not when with the same', async () => {
      const { lines, log } = captureLog();
      const { supervisor, held, hold, done } = await scriptedSupervisor(2, log);
      try {
        for (const worker of workersOf(supervisor)) await scriptWorker(worker, 'test:outcome', { outcome: { accepted: true, config: 'aaaaaaaaaaaa' } });
        supervisor.reload();
        assert.ok(await until(() => lines.some((l) => String(l.msg).startsWith('reload done'))), JSON.stringify(lines.slice(-3)));
        hold();
        const [victim, survivor] = workersOf(supervisor);
        process.kill(victim!.process.pid!, 'SIGKILL');
        assert.ok(await until(() => held.length === 1), 'a replacement worker started');
        // It read the file after an edit that no SIGHUP followed.
        held[0]!.send({ type: 'test:go', config: 'bbbbbbbbbbbb' });
        assert.ok(await until(() => lines.some((l) => l.msg === 'policy worker replaced')), JSON.stringify(lines.slice(-3)));
        const replacement = held[0]!;
        assert.equal(split(lines).length, 1, JSON.stringify(lines.slice(-3)));
        const warning = split(lines)[0]!;
        assert.equal(
          warning.msg,
          `workers run different configurations: worker ${replacement.id}, started in place of one that died, read the configuration file as it is now and runs configuration bbbbbbbbbbbb; ` +
            `worker ${survivor!.id} runs configuration aaaaaaaaaaaa; the file has changed since the others read it: send SIGHUP to make every worker run the file as it is now`,
        );
        assert.deepEqual(
          [warning.level, warning.worker, warning.pid, warning.config, warning.others],
          [40, replacement.id, replacement.process.pid, 'bbbbbbbbbbbb', [{ worker: survivor!.id, pid: survivor!.process.pid, config: 'aaaaaaaaaaaa' }]],
        );
        // The file as the survivor read it again: one configuration, nothing to say.
        process.kill(replacement.process.pid!, 'SIGKILL');
        assert.ok(await until(() => held.length === 2), 'another replacement worker started');
        held[1]!.send({ type: 'test:go', config: 'aaaaaaaaaaaa' });
        assert.ok(await until(() => lines.filter((l) => l.msg === 'policy worker replaced').length === 2), JSON.stringify(lines.slice(-3)));
        assert.equal(split(lines).length, 1, 'no warning for a replacement running what the others run');
      } finally {
        done();
        await supervisor.stop();
      }
    });

    it('compares a replacement that started while the others reload with their outcomes: it read the file after the reload was asked for', async () => {
      const { lines, log } = captureLog();
      const { supervisor, held, hold, done } = await scriptedSupervisor(2, log, '', { reloadOutcomeWaitMs: 60_000 });
      try {
        const [victim, survivor] = workersOf(supervisor);
        await scriptWorker(victim!, 'test:outcome', { outcome: { accepted: true, config: 'aaaaaaaaaaaa' } });
        // The survivor reloads slowly: its outcome is still owed when the replacement is ready.
        await scriptWorker(survivor!, 'test:outcome', { outcome: { accepted: true, config: 'aaaaaaaaaaaa', held: true } });
        supervisor.reload();
        assert.ok(await settled([victim!, survivor!], 1), 'both were asked');
        hold();
        process.kill(victim!.process.pid!, 'SIGKILL');
        assert.ok(await until(() => held.length === 1), 'a replacement worker started');
        // Edited again between the SIGHUP and the replacement's start.
        held[0]!.send({ type: 'test:go', config: 'bbbbbbbbbbbb' });
        assert.ok(await until(() => lines.some((l) => l.msg === 'policy worker replaced')), JSON.stringify(lines.slice(-3)));
        assert.equal(await reloadsOf(held[0]!), 0, 'started after the reload was asked for, it is not asked to reload');
        await scriptWorker(survivor!, 'test:release', {});
        assert.ok(await until(() => lines.some((l) => String(l.msg).startsWith('reload done') || differing(lines).length > 0)), JSON.stringify(lines.slice(-3)));
        assert.match(String(differing(lines)[0]?.msg), new RegExp(`^workers run different configurations after reload: worker ${survivor!.id} accepted, running configuration aaaaaaaaaaaa; worker ${held[0]!.id} started, running configuration bbbbbbbbbbbb; send SIGHUP again$`), 'the replacement got no reload to accept');
        assert.deepEqual(split(lines), [], 'named once, in the reload\'s warning');
      } finally {
        done();
        await supervisor.stop();
      }
    });
  });
});
