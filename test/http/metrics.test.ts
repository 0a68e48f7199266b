// The metrics listener's own limits, over real sockets: a few connections at a time, each with
// a short time to send its request, so that it can never take the descriptors the policy
// listener needs.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Counter } from 'prom-client';
import { Metrics, closeMetricsServer, startMetricsServer } from '../../src/http/metrics.js';
import { ConfigError } from '../../src/core/errors.js';
import { captureLog } from '../support/log-capture.js';
import type { VerifyResult } from '../../src/verify/types.js';

const source = { metricsText: async () => 'callout_up 1\n', contentType: 'text/plain; version=0.0.4', healthy: async () => true };

/** Connects and sends an unfinished request head; resolves with the socket and a promise of its end (with what it was sent). */
async function unfinished(address: string): Promise<{ socket: net.Socket; ended: Promise<string> }> {
  const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
  const socket = net.connect(port, host);
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  let received = '';
  socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
  const ended = new Promise<string>((resolve) => socket.once('close', () => resolve(received)));
  socket.on('error', () => undefined);
  socket.write('GET /health HTTP/1.1\r\nHost: x\r\n');
  return { socket, ended };
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([promise, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what} not within ${ms} ms`)), ms).unref())]);
}

describe('metrics listener limits', () => {
  it('closes connections over its limit at once, and requests that do not arrive in time', async () => {
    const { server, address } = await startMetricsServer('127.0.0.1:0', source, { maxConnections: 3, requestTimeoutMs: 300 });
    try {
      const held = await Promise.all([unfinished(address), unfinished(address), unfinished(address)]);
      const extra = await unfinished(address);
      // Closed unanswered at once: the request timeout would have answered it 408 first.
      assert.equal(await within(extra.ended, 1000, 'the connection over the limit closed'), '');
      const answers = await within(Promise.all(held.map((h) => h.ended)), 3000, 'the unfinished requests closed');
      for (const answer of answers) assert.match(answer, /^HTTP\/1\.1 408 /);
      const response = await fetch(`http://${address}/metrics?name[]=callout_up`);
      assert.equal(response.status, 200, 'a query string is ignored');
      assert.equal(await response.text(), 'callout_up 1\n');
      const missing = await fetch(`http://${address}/nothing`);
      assert.equal(missing.status, 404);
      assert.match(await missing.text(), /\/metrics and \/health/);
      const posted = await fetch(`http://${address}/metrics`, { method: 'POST', body: 'x' });
      assert.equal(posted.status, 405);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('stops at once on close, ending a connection that never sent a whole request (it held the stop for the socket timeout)', async () => {
    const { server, address } = await startMetricsServer('127.0.0.1:0', source);
    const waiting = await unfinished(address);
    await within(closeMetricsServer(server), 2000, 'the metrics server closed');
    await within(waiting.ended, 1000, 'the waiting connection ended');
  });

  it('refuses a listen address it cannot read as a configuration error naming metrics.listen', async () => {
    await assert.rejects(startMetricsServer('localhost', source), (err: unknown) => {
      assert.ok(err instanceof ConfigError, String(err));
      assert.match(err.message, /^metrics\.listen: got "localhost", expected HOST:PORT/);
      return true;
    });
  });

  it('takes 64 connections at once when not told otherwise, as the README says', async () => {
    const { server } = await startMetricsServer('127.0.0.1:0', source);
    try {
      assert.equal(server.maxConnections, 64);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe('metrics listener requests', () => {
  it('answers HEAD as GET without the body (RFC 9110: monitors probe with it), and says so in Allow', async () => {
    const { server, address } = await startMetricsServer('127.0.0.1:0', source);
    try {
      const health = await fetch(`http://${address}/health`, { method: 'HEAD' });
      assert.equal(health.status, 200);
      assert.equal(await health.text(), '');
      const metrics = await fetch(`http://${address}/metrics`, { method: 'HEAD' });
      assert.equal(metrics.status, 200);
      assert.equal(metrics.headers.get('content-type'), source.contentType);
      const deleted = await fetch(`http://${address}/health`, { method: 'DELETE' });
      assert.equal(deleted.status, 405);
      assert.equal(deleted.headers.get('allow'), 'GET, HEAD');
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('tells a browser not to sniff any answer, a failed one included', async () => {
    const { server, address } = await startMetricsServer('127.0.0.1:0', source);
    const failing = await startMetricsServer('127.0.0.1:0', { ...source, metricsText: () => Promise.reject(new Error('no worker answered')) });
    try {
      const answers = await Promise.all([
        fetch(`http://${address}/metrics`),
        fetch(`http://${address}/health`),
        fetch(`http://${address}/<script>`),
        fetch(`http://${address}/health`, { method: 'POST', body: 'x' }),
        fetch(`http://${failing.address}/metrics`),
      ]);
      assert.deepEqual(answers.map((answer) => answer.status), [200, 200, 404, 405, 500]);
      for (const answer of answers) assert.equal(answer.headers.get('x-content-type-options'), 'nosniff', `${answer.status} ${answer.url}`);
    } finally {
      await new Promise((resolve) => server.close(resolve));
      await new Promise((resolve) => failing.server.close(resolve));
    }
  });

  it('closes a connection whose client sends requests and never reads the answers', async () => {
    // Each answer fits the socket buffers until they are full; then nothing moved for good.
    const { server, address } = await startMetricsServer('127.0.0.1:0', { ...source, metricsText: async () => 'x'.repeat(64 * 1024) }, { requestTimeoutMs: 300 });
    try {
      // The server's end: a client that does not read does not see its own socket close either.
      const closed = new Promise<void>((resolve) => server.once('connection', (accepted: net.Socket) => accepted.once('close', () => resolve())));
      const port = Number(address.slice(address.lastIndexOf(':') + 1));
      const socket = net.connect(port, '127.0.0.1');
      socket.pause();
      socket.on('error', () => undefined);
      await new Promise<void>((resolve) => socket.once('connect', resolve));
      socket.write('GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(500));
      await within(closed, 5000, 'the connection that does not read closed');
      socket.destroy();
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('takes over a UNIX socket a crashed daemon left behind, and refuses a path that is no socket', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'callout-metrics-'));
    try {
      const path = join(dir, 'metrics.sock');
      // A listener killed with SIGKILL leaves its socket file behind, with nothing listening.
      spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`]);
      assert.ok(statSync(path).isSocket(), 'a stale socket is there');
      const { server } = await startMetricsServer(path, source);
      try {
        const answered = await new Promise<string>((resolve, reject) => {
          const socket = net.connect(path);
          let text = '';
          socket.on('data', (chunk: Buffer) => (text += chunk.toString()));
          socket.once('end', () => resolve(text));
          socket.once('error', reject);
          socket.write('GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
        });
        assert.match(answered, /^HTTP\/1\.1 200 /);
      } finally {
        await new Promise((resolve) => server.close(resolve));
      }
      await assert.rejects(startMetricsServer(dir, source), /cannot listen on .*not a socket/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('gives its UNIX socket mode 0660 whatever the umask (serve\'s 027 made it 0750: owner only), or socketMode', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'callout-metrics-'));
    const previous = process.umask(0o027);
    try {
      for (const [socketMode, expected] of [[undefined, 0o660], [0o640, 0o640], [0o666, 0o666]] as const) {
        const path = join(dir, `metrics-${expected.toString(8)}.sock`);
        const { server } = await startMetricsServer(path, source, socketMode === undefined ? {} : { socketMode });
        try {
          assert.equal((statSync(path).mode & 0o777).toString(8), expected.toString(8));
        } finally {
          await new Promise((resolve) => server.close(resolve));
        }
      }
    } finally {
      process.umask(previous);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('logs an error of the listener after it listens, instead of ending the process', async () => {
    const { log, lines } = captureLog();
    const { server } = await startMetricsServer('127.0.0.1:0', source, { log });
    try {
      // What a failed accept() (ENOBUFS, EPERM) emits; with no listener, emit() throws it.
      server.emit('error', Object.assign(new Error('accept ENOBUFS'), { code: 'ENOBUFS' }));
      assert.ok(lines.some((l) => l.msg === 'metrics listener failed' && String(l.error).includes('ENOBUFS')), 'lines.some((l) => l.msg === \'metrics listener failed\' && String(l.error).includes(\'ENOBUFS\'))');
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('answers /health 503 when the store does not answer in time, instead of waiting as long as the store does', async () => {
    const { log, lines } = captureLog();
    const hanging = { ...source, healthy: () => new Promise<boolean>(() => undefined) };
    const { server, address } = await startMetricsServer('127.0.0.1:0', hanging, { log, healthTimeoutMs: 50 });
    try {
      const response = await within(fetch(`http://${address}/health`), 2000, '/health answered');
      assert.equal(response.status, 503);
      assert.deepEqual(await response.json(), { status: 'degraded' });
      assert.ok(lines.some((l) => l.msg === 'health: the store did not answer in time; answered 503' && l.waitedMs === 50), JSON.stringify(lines));
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('logs why it answered 500, which the scraper alone would never learn', async () => {
    const { log, lines } = captureLog();
    const failing = { ...source, metricsText: () => Promise.reject(new Error('Operation timed out.')) };
    const { server, address } = await startMetricsServer('127.0.0.1:0', failing, { log });
    try {
      assert.equal((await fetch(`http://${address}/metrics`)).status, 500);
      assert.ok(lines.some((l) => l.msg === 'metrics request failed' && l.error === 'Operation timed out.'), JSON.stringify(lines));
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe('Metrics', () => {
  it('tells a cached decision (0.1 ms) from one four times slower in the latency histogram', async () => {
    const metrics = new Metrics();
    const outcome = { action: 'DUNNO', verdicts: [], warnings: [], faults: [] };
    metrics.recordDecision({ ...outcome, durationMs: 0.09 });
    metrics.recordDecision({ ...outcome, durationMs: 0.4 });
    const text = await metrics.registry.getSingleMetricAsString('callout_policy_decision_seconds');
    const bucket = (le: string) => Number(new RegExp(`_bucket\\{le="${le}"\\} (\\d+)`).exec(text)?.[1]);
    assert.equal(bucket('0.0001'), 1, text);
    assert.equal(bucket('0.0005'), 2, text);
  });

  it('counts a numeric answer by its class (5XX REJECT, 4XX DEFER), other actions by their first word, and every stage fault', async () => {
    const metrics = new Metrics();
    const outcome = { verdicts: [], warnings: [], durationMs: 1 };
    metrics.recordDecision({ ...outcome, action: '550 5.7.1 sender rejected', decidedBy: 'callout', faults: [] });
    metrics.recordDecision({ ...outcome, action: '450 4.7.1 try again later', decidedBy: 'greylist', faults: [] });
    metrics.recordDecision({ ...outcome, action: 'DEFER_IF_PERMIT Service unavailable', faults: ['store down'] });
    metrics.recordDecision({ ...outcome, action: '550 5.7.1 over the limit', decidedBy: 'ratelimit', faults: ['store down', 'timeout'] });
    const decisions = await metrics.registry.getSingleMetricAsString('callout_policy_decisions_total');
    assert.match(decisions, /^callout_policy_decisions_total\{action="REJECT",stage="callout"\} 1$/m);
    assert.match(decisions, /^callout_policy_decisions_total\{action="DEFER",stage="greylist"\} 1$/m);
    assert.match(decisions, /^callout_policy_decisions_total\{action="DEFER_IF_PERMIT",stage="none"\} 1$/m);
    assert.match(decisions, /^callout_policy_decisions_total\{action="REJECT",stage="ratelimit"\} 1$/m, 'one action of two stages counted apart');
    assert.match(await metrics.registry.getSingleMetricAsString('callout_stage_faults_total'), /^callout_stage_faults_total 3$/m, 'each fault of an answer counted');
  });

  it('shows the counters alerts need from 0, the process metrics under callout_, and the idle poll as its statistics say', async () => {
    const metrics = new Metrics();
    metrics.watchIdlePoll(() => ({ caught: 3, slept: 7, pollSeconds: 0.5 }));
    const text = await metrics.registry.metrics();
    assert.match(text, /^callout_greylist_triplets_passed_total 0$/m);
    assert.match(text, /^callout_process_cpu_seconds_total /m);
    assert.doesNotMatch(text, /^process_cpu_seconds_total /m);
    assert.match(text, /^callout_idle_poll_requests_total\{outcome="caught"\} 3$/m);
    assert.match(text, /^callout_idle_poll_requests_total\{outcome="slept"\} 7$/m);
    assert.match(text, /^callout_idle_poll_seconds_total 0\.5$/m);
  });

  it('counts verdicts by their source, purged entries by number, and a stage counter across increments', async () => {
    const metrics = new Metrics();
    const result: Omit<VerifyResult, 'source'> = { address: 'a@example.org', verdict: 'deliverable', reason: 'accepted', description: '', catchAll: 'not-run', postmaster: 'not-run', stale: false, mxHosts: [], attempts: [], checkedAt: 0, durationMs: 1 };
    metrics.recordVerification({ ...result, source: 'probe' });
    metrics.recordVerification({ ...result, source: 'address-cache' });
    metrics.recordPurge(40);
    metrics.recordPurge(2);
    metrics.increment('batv', { result: 'valid' });
    metrics.increment('batv', { result: 'valid' });
    const text = await metrics.registry.metrics();
    assert.match(text, /^callout_verifications_total\{verdict="deliverable",source="probe"\} 1$/m);
    assert.match(text, /^callout_verifications_total\{verdict="deliverable",source="address-cache"\} 1$/m);
    assert.match(text, /^callout_store_purged_entries_total 42$/m);
    assert.match(text, /^callout_batv_total\{result="valid"\} 2$/m);
  });

  it('counts decisions and stage results on every request without prom-client\'s inc(), and gives every scrape the whole count', async () => {
    const { incWithoutExemplar } = Counter.prototype as unknown as { incWithoutExemplar: (...args: unknown[]) => unknown };
    let incs = 0;
    (Counter.prototype as unknown as { incWithoutExemplar: unknown }).incWithoutExemplar = function (this: Counter, ...args: unknown[]) {
      incs++;
      return incWithoutExemplar.apply(this, args);
    };
    try {
      const metrics = new Metrics();
      const outcome = { verdicts: [], warnings: [], faults: [], durationMs: 1 };
      const requests = () => {
        for (let i = 0; i < 50; i++) {
          metrics.recordDecision({ ...outcome, action: i % 2 ? '450 4.7.1 Greylisted' : 'DEFER_IF_PERMIT Greylisted', decidedBy: 'greylist' });
          metrics.recordDecision({ ...outcome, action: '451 4.7.1 Greylisted', decidedBy: 'greylist' });
          metrics.increment('greylist', { result: i % 2 ? 'new' : 'passed' });
        }
      };
      requests();
      assert.ok(incs <= 5, `prom-client's inc() called ${incs} times for 150 counts: once per first word or result expected (5)`);
      const first = await metrics.registry.metrics();
      assert.match(first, /^callout_policy_decisions_total\{action="DEFER",stage="greylist"\} 75$/m, 'the two 4XX words counted in one series');
      assert.match(first, /^callout_policy_decisions_total\{action="DEFER_IF_PERMIT",stage="greylist"\} 25$/m);
      assert.match(first, /^callout_greylist_total\{result="new"\} 25$/m);
      requests();
      const second = await metrics.registry.metrics();
      assert.match(second, /^callout_policy_decisions_total\{action="DEFER",stage="greylist"\} 150$/m, 'a second scrape: the counts of both rounds, once each');
      assert.match(second, /^callout_greylist_total\{result="passed"\} 50$/m);
      const counted = async () => [await metrics.registry.getSingleMetricAsString('callout_policy_decisions_total'), await metrics.registry.getSingleMetricAsString('callout_greylist_total')];
      const third = await counted();
      assert.deepEqual(await counted(), third, 'a scrape with nothing counted since changes nothing');
    } finally {
      (Counter.prototype as unknown as { incWithoutExemplar: unknown }).incWithoutExemplar = incWithoutExemplar;
    }
  });

  it('refuses a stage counter\'s label it was not made with, at the increment, and counts the others of several labels', async () => {
    const metrics = new Metrics();
    metrics.increment('batv', { result: 'valid' });
    assert.throws(() => metrics.increment('batv', { reason: 'valid' }), /Added label "reason" is not included/, 'another label than the first increment\'s');
    assert.throws(() => metrics.increment('batv', { result: 'valid', reason: 'x' }), /Added label "reason" is not included/, 'a label more than the first increment\'s');
    metrics.increment('ratelimit', { limit: 'per-client', result: 'deferred' });
    metrics.increment('ratelimit', { result: 'deferred', limit: 'per-client' });
    metrics.increment('greylist_triplets_passed');
    const text = await metrics.registry.metrics();
    assert.match(text, /^callout_batv_total\{result="valid"\} 1$/m);
    assert.match(text, /^callout_ratelimit_total\{limit="per-client",result="deferred"\} 2$/m, 'labels in any order, one series');
    assert.match(text, /^callout_greylist_triplets_passed_total 1$/m);
  });

  it('says in HELP what the results of the stages\' counters mean', async () => {
    const metrics = new Metrics();
    metrics.increment('greylist', { result: 'early-retry' });
    metrics.increment('tarpit', { result: 'refused' });
    metrics.increment('ratelimit', { limit: 'per-client', result: 'deferred' });
    const text = await metrics.registry.metrics();
    assert.match(text, /^# HELP callout_greylist_total Greylist verdicts: deferrals by reason \(new, early-retry, window-expired\)/m);
    assert.match(text, /^# HELP callout_tarpit_total Tarpit actions: .*refused/m);
    assert.match(text, /^# HELP callout_ratelimit_total Rate limits exceeded/m);
    assert.match(text, /^# HELP callout_callouts_skipped_total Sender callouts not made/m);
  });
});
