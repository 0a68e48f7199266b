// `callout serve` on SIGTERM with a callout still running: after "stopped" the process ends at
// once, although the callout it gave up still holds a connection to a silent exchanger.
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { startDnsServer, type DnsTestServer } from '../support/dns-server.js';
import { postfixRequest, PolicyClient } from '../support/policy-client.js';
import { startServeProcess } from '../support/serve-process.js';
import { silentGreeting, startSmtpServer, type SmtpTestServer } from '../support/smtp-server.js';
import { mxZone } from '../verify/fixture.js';

// This file's share of loopback.
const MX_HOST = '127.0.0.130';

let dns: DnsTestServer;
let smtp: SmtpTestServer;
let dir: string;

before(async () => {
  dns = await startDnsServer(mxZone({ 'silent.test': MX_HOST }));
  smtp = await startSmtpServer({ host: MX_HOST, script: silentGreeting() });
  dir = mkdtempSync(join(tmpdir(), 'callout-serve-stop-'));
});

after(async () => {
  await smtp.close();
  await dns.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('callout serve stopping', () => {
  it('exits as soon as it has stopped, not when the callouts it gave up time out', async () => {
    const config = join(dir, 'callout.yaml');
    // The greeting timeout (25 s) outlasts the drain (10 s + 10 s for callouts).
    writeFileSync(config, stringify({ callout: { timeouts: { greeting: '25s', overall: '28s' } }, policy: { decisionTimeout: '200ms' } }));
    const serve = await startServeProcess([
      '--config', config,
      '--listen', '127.0.0.1:0',
      '--data-dir', dir,
      '--metrics', '',
      '--dns-server', dns.address,
      '--helo', 'verifier.callout.test',
      '--allow-target', '127.0.0.0/8',
      '--port', String(smtp.port),
    ]);
    const client = await PolicyClient.connect(serve.policyAddress);
    assert.equal(await client.request(postfixRequest({ sender: 'bob@silent.test' })), 'DEFER_IF_PERMIT 4.7.1 Sender address verification in progress');
    client.close();
    const sent = Date.now();
    const exit = await serve.stop('SIGTERM', 40_000);
    const stopped = serve.logs.find((line) => line.msg === 'stopped');
    assert.deepEqual(exit, { code: 0, signal: null }, serve.stderr());
    assert.ok(stopped, 'the daemon logged that it stopped');
    assert.ok(serve.logs.some((line) => line.msg === 'callouts still running at shutdown abandoned: their answers are not cached, their probe locks are released'));
    // Stopping takes the 10 s drain for the callout; before, the exit came 25 s after the probe began.
    const waited = Date.now() - sent;
    assert.ok(waited < 15_000, `exited ${waited} ms after SIGTERM`);
  });
});

describe('callout serve files', () => {
  it('keeps the data directory and the store files from other users when started with umask 022', async () => {
    const dataDir = join(dir, 'data', 'store');
    // As a shell starts it: the child inherits this umask.
    const umask = process.umask(0o022);
    let serve;
    try {
      serve = await startServeProcess(['--listen', '127.0.0.1:0', '--data-dir', dataDir, '--metrics', '', '--dns-server', dns.address, '--helo', 'verifier.callout.test']);
    } finally {
      process.umask(umask);
    }
    try {
      const modes = Object.fromEntries([dataDir, ...readdirSync(dataDir).map((name) => join(dataDir, name))].map((path) => [path, (statSync(path).mode & 0o777).toString(8)]));
      assert.ok(Object.keys(modes).some((path) => path.endsWith('callout.sqlite-wal')), JSON.stringify(modes));
      for (const [path, mode] of Object.entries(modes)) assert.equal(Number.parseInt(mode, 8) & 0o007, 0, `${path} has mode ${mode}`);
    } finally {
      await serve.stop('SIGTERM');
    }
  });
});
