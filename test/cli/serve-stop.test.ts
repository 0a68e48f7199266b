// `callout serve` on SIGTERM with a callout still running: after "stopped" the process ends at
// once, although the callout it gave up still holds a connection to a silent exchanger.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
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
    assert.ok(serve.logs.some((line) => line.msg === 'callouts still running at shutdown abandoned: their answers are not cached, their probe locks are released'), 'serve.logs.some((line) => line.msg === \'callouts still running at shutdown abandoned: their answe...');
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
      // The umask itself, which worker processes and whatever it creates later inherit (Linux: /proc).
      const umask = /^Umask:\s+([0-7]+)$/m.exec(readFileSync(`/proc/${serve.child.pid}/status`, 'utf8'))?.[1];
      assert.equal(Number.parseInt(umask ?? '', 8), 0o027, `umask ${umask}`);
    } finally {
      await serve.stop('SIGTERM');
    }
  });
});

describe('callout serve killed', () => {
  it('has committed every greylist triplet and rate counter it answered for when SIGKILL comes', async () => {
    // Sixteen connections ask for new triplets; halfway the test holds the file's write lock, so
    // the daemon's group commits wait (up to the busy timeout, 5 s), and the daemon is killed
    // while they do. An answer sent before its commit (a write-behind store, a stage that does
    // not wait for its write) arrives during the wait for a triplet the file does not have: the
    // sender's retry would be greylisted again as new. The first eight clients are greylisted
    // and not counted, the others counted and not greylisted, so that neither stage's wait for
    // its own write hides the other's answering early.
    const dataDir = join(dir, 'killed');
    const config = join(dir, 'killed.yaml');
    writeFileSync(config, stringify({
      policy: {
        stages: [
          { name: 'ratelimit', exemptClients: ['127.0.0.0/21'], limits: [{ name: 'r', per: 'client', count: 'recipients', max: 1_000_000, window: '1h', action: 'defer' }] },
          { name: 'greylist', header: false, whitelistClients: ['127.0.8.0/21'] },
        ],
      },
    }));
    const serve = await startServeProcess(['--config', config, '--listen', '127.0.0.1:0', '--data-dir', dataDir, '--metrics', '', '--dns-server', dns.address, '--helo', 'verifier.callout.test']);
    const answered: Array<{ connection: number; n: number; action: string }> = [];
    let killed = false;
    const clients = await Promise.all(Array.from({ length: 16 }, () => PolicyClient.connect(serve.policyAddress)));
    const loops = clients.map(async (client, connection) => {
      for (let n = 0; !killed; n++) {
        const request = postfixRequest({ client_address: `127.0.${connection}.1`, sender: `s${n}@sender.test`, recipient: `r${connection}@local.test`, instance: `${connection}.${n}` });
        const action = await client.request(request).catch(() => undefined);
        if (action === undefined) return;
        answered.push({ connection, n, action });
      }
    });
    const file = join(dataDir, 'callout.sqlite');
    const locker = new Database(file);
    try {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const beforeLock = answered.length;
      locker.exec('BEGIN IMMEDIATE');
      await new Promise((resolve) => setTimeout(resolve, 500));
      process.kill(-serve.child.pid!, 'SIGKILL');
      killed = true;
      await serve.exited;
      await Promise.all(loops);
      locker.exec('ROLLBACK');
      assert.ok(beforeLock >= 16, `${beforeLock} answers before the lock`);
      const rows = new Map(locker.prepare<[], { key: string; value: string }>('SELECT key, value FROM kv').all().map((row) => [row.key, row.value]));
      const greylisted = answered.filter((a) => a.connection < 8);
      for (const action of new Set(greylisted.map((a) => a.action))) assert.match(action, /^DEFER_IF_PERMIT 4\.2\.0 Greylisted/);
      for (const action of new Set(answered.filter((a) => a.connection >= 8).map((a) => a.action))) assert.equal(action, 'DUNNO');
      const missing = greylisted.filter((a) => !rows.has(`grey:t:127.0.${a.connection}.0%2F24/s${a.n}@sender.test/r${a.connection}@local.test`));
      assert.deepEqual(missing.slice(0, 5), [], `${missing.length} of ${greylisted.length} greylisted triplets are not in the file`);
      for (let connection = 8; connection < clients.length; connection++) {
        const counted = [...rows].filter(([key]) => key.startsWith(`rl:r:127.0.${connection}.1:`)).reduce((sum, [, value]) => sum + Number(value), 0);
        const answers = answered.filter((a) => a.connection === connection).length;
        assert.ok(counted >= answers, `client 127.0.${connection}.1: ${answers} answers, ${counted} counted`);
      }
    } finally {
      if (!killed) process.kill(-serve.child.pid!, 'SIGKILL');
      locker.close();
      for (const client of clients) client.close();
    }
  });
});
