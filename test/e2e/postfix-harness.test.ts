/**
 * NAME
 *   test/e2e/postfix-harness - proves the real-Postfix harness behaves like the remote MXes we probe
 *
 * DESCRIPTION
 *   Starts three Postfix instances at once on distinct loopback addresses (same port, so the
 *   master.cf bindings really are separate): real users, a catch-all domain, and one that
 *   refuses the null sender. Drives them with swaks and with a raw socket, then checks that
 *   stopping leaves no Postfix process behind. Then a test process that started a Postfix
 *   instance, a redis-server, postsrsd and `callout serve` is ended with SIGTERM, as the test
 *   runner ends a file past its timeout, and none of them may outlive it. Nothing is skipped:
 *   without Postfix installed the suite fails and says to run .ci/run.
 */

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { freePorts } from '../support/ports.js';
import { until } from '../support/wait.js';
import { postfixProcesses, startPostfix, stopAllPostfix, swaks, swaksEnvironment, waitForMaillog } from '../support/postfix.js';
import type { PostfixInstance, PostfixInstanceOptions } from '../support/postfix.js';

const PORT = 25250;
const REAL: PostfixInstanceOptions = {
  name: 'real',
  host: '127.0.0.20',
  port: PORT,
  myhostname: 'mx.real.test',
  domains: { 'real.test': ['alice', 'bob'] },
};
const CATCH_ALL: PostfixInstanceOptions = {
  name: 'catch-all',
  host: '127.0.0.21',
  port: PORT,
  myhostname: 'mx.catch-all.test',
  domains: { 'catch-all.test': 'catch-all' },
};
const NO_NULL_SENDER: PostfixInstanceOptions = {
  name: 'no-null-sender',
  host: '127.0.0.22',
  port: PORT,
  myhostname: 'mx.no-null.test',
  domains: { 'no-null.test': ['carol'] },
  refuseNullSender: true,
};

// swaks exit codes: 0 all accepted, 23 MAIL rejected, 24 no RCPT accepted.
const SWAKS_OK = 0;
const SWAKS_MAIL_REJECTED = 23;
const SWAKS_NO_RCPT = 24;

function probe(instance: PostfixInstance, from: string, to: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return swaks(['--server', `${instance.host}:${instance.port}`, '--helo', 'client.test', '--from', from, '--to', to, '--quit-after', 'RCPT', '--timeout', '10']);
}

/** Sends each command and collects each complete (possibly multiline) reply, greeting first. */
function rawDialog(host: string, port: number, commands: string[]): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    const replies: string[] = [];
    let current: string[] = [];
    let buffered = '';
    socket.setEncoding('latin1');
    socket.setTimeout(10_000, () => socket.destroy(new Error(`no reply after ${JSON.stringify(replies)}`)));
    socket.on('data', (chunk: string) => {
      buffered += chunk;
      let end: number;
      while ((end = buffered.indexOf('\r\n')) >= 0) {
        const line = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        current.push(line);
        if (line[3] !== ' ' && line.length > 3) continue;
        replies.push(current.join('\n'));
        current = [];
        const next = commands[replies.length - 1];
        if (next === undefined) socket.end();
        else socket.write(next + '\r\n');
      }
    });
    socket.on('error', reject);
    socket.on('close', () => resolve(replies));
  });
}

describe('Postfix harness (real Postfix on loopback)', () => {
  let real: PostfixInstance;
  let catchAll: PostfixInstance;
  let noNullSender: PostfixInstance;

  before(async () => {
    [real, catchAll, noNullSender] = await Promise.all([startPostfix(REAL), startPostfix(CATCH_ALL), startPostfix(NO_NULL_SENDER)]);
  });

  after(async () => {
    await stopAllPostfix();
  });

  it('runs swaks where perl\'s gethostbyname finds nothing, so swaks sends no DNS query for the machine\'s name', () => {
    const lookup = spawnSync('perl', ['-e', 'print defined(scalar gethostbyname("localhost")) ? "looked up" : "nothing"'], { env: swaksEnvironment(), encoding: 'utf8' });
    assert.equal(lookup.stdout, 'nothing', lookup.stderr);
  });

  it('runs the instances side by side, each with its own processes', async () => {
    const dirs = new Set([real.dir, catchAll.dir, noNullSender.dir]);
    assert.equal(dirs.size, 3);
    for (const instance of [real, catchAll, noNullSender]) {
      assert.ok(postfixProcesses(instance.dir).length > 0, `no process found for ${instance.dir}`);
      // postlogd writes the maillog on its own schedule: the line may follow the 220 greeting.
      assert.match(await waitForMaillog(instance, /daemon started -- version/), /daemon started/);
    }
  });

  it('accepts a real user and postmaster, rejects an unknown user with 550 5.1.1', async () => {
    const alice = await probe(real, 'sender@example.org', 'alice@real.test');
    assert.equal(alice.code, SWAKS_OK, alice.stdout);
    assert.match(alice.stdout, /<- {2}250 2\.1\.5 Ok/);

    const postmaster = await probe(real, 'sender@example.org', 'postmaster@real.test');
    assert.equal(postmaster.code, SWAKS_OK, postmaster.stdout);

    const nobody = await probe(real, 'sender@example.org', 'nobody@real.test');
    assert.equal(nobody.code, SWAKS_NO_RCPT, nobody.stdout);
    assert.match(nobody.stdout, /550 5\.1\.1 <nobody@real\.test>: Recipient address rejected: User unknown in virtual mailbox table/);
  });

  it('answers a callout-style dialog on a raw socket: null sender, then RCPT', async () => {
    const replies = await rawDialog(real.host, real.port, ['EHLO client.test', 'MAIL FROM:<>', 'RCPT TO:<bob@real.test>', 'RCPT TO:<nobody@real.test>', 'QUIT']);
    assert.equal(replies.length, 6, JSON.stringify(replies));
    assert.match(replies[0] ?? '', /^220 mx\.real\.test ESMTP/);
    assert.match(replies[1] ?? '', /^250-mx\.real\.test\n(250-.*\n)*250 /);
    assert.match(replies[2] ?? '', /^250 2\.1\.0 /);
    assert.match(replies[3] ?? '', /^250 2\.1\.5 /);
    assert.match(replies[4] ?? '', /^550 5\.1\.1 <nobody@real\.test>: .*User unknown in virtual mailbox table/);
    assert.match(replies[5] ?? '', /^221 /);
  });

  it('refuses to relay for a domain it does not serve', async () => {
    const replies = await rawDialog(real.host, real.port, ['HELO client.test', 'MAIL FROM:<sender@example.org>', 'RCPT TO:<alice@catch-all.test>', 'QUIT']);
    assert.match(replies[3] ?? '', /^554 5\.7\.1 .*Relay access denied/);
  });

  it('accepts any user of a catch-all domain', async () => {
    for (const user of ['anything', 'no-such-user', 'postmaster']) {
      const result = await probe(catchAll, '<>', `${user}@catch-all.test`);
      assert.equal(result.code, SWAKS_OK, result.stdout);
      assert.match(result.stdout, /250 2\.1\.5 Ok/);
    }
  });

  it('refuses the null sender at MAIL but accepts a non-null sender', async () => {
    const nullSender = await probe(noNullSender, '<>', 'carol@no-null.test');
    assert.equal(nullSender.code, SWAKS_MAIL_REJECTED, nullSender.stdout);
    assert.match(nullSender.stdout, /<\*\* 550 5\.7\.1 <>: Sender address rejected/);

    const someone = await probe(noNullSender, 'sender@example.org', 'carol@no-null.test');
    assert.equal(someone.code, SWAKS_OK, someone.stdout);
  });

  it('stops every instance and leaves no Postfix process behind', async () => {
    const instances = [real, catchAll, noNullSender];
    await stopAllPostfix();
    for (const instance of instances) {
      assert.deepEqual(postfixProcesses(instance.dir), [], `processes left for ${instance.dir}`);
      assert.equal(existsSync(instance.dir), false, `${instance.dir} removed`);
      // The log outlives the directory. Not "stopping the Postfix mail system": postfix-script
      // sends that line to postlogd just before master's SIGTERM, which can end postlogd first.
      assert.match(instance.maillog(), /postfix\/master\[\d+\]: daemon started/);
      const replies = await rawDialog(instance.host, instance.port, []).catch((err: NodeJS.ErrnoException) => err.code);
      assert.equal(replies, 'ECONNREFUSED');
    }
  });
});

/** Whether anything accepts a connection on host:port. */
function answers(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

describe('a test process ended by a signal', () => {
  it('leaves no Postfix, redis-server, postsrsd or callout serve behind', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'callout-harness-signal-'));
    const [forwardPort, reversePort] = await freePorts(2);
    // What the runner's SIGTERM interrupts: a test file with every kind of peer running.
    const script = `
      import { startPostfix } from './test/support/postfix.ts';
      import { startRedis } from './test/support/redis.ts';
      import { startPostsrsd } from './test/support/postsrsd.ts';
      import { startServeProcess } from './test/support/serve-process.ts';
      const postfix = await startPostfix({ name: 'signalled', host: '127.0.0.23', port: ${PORT}, myhostname: 'mx.signalled.test', domains: { 'signalled.test': ['dave'] } });
      const redis = await startRedis();
      const postsrsd = await startPostsrsd({ secrets: ['s'], domain: 'signalled.test', forwardPort: ${forwardPort}, reversePort: ${reversePort} });
      const serve = await startServeProcess(['--listen', '127.0.0.1:0', '--metrics', '', '--data-dir', ${JSON.stringify(dataDir)}, '--dns-server', '127.0.0.1:9', '--helo', 'verifier.signalled.test']);
      console.log(JSON.stringify({ postfixDir: postfix.dir, redisPort: redis.port, redisSocket: redis.socketPath, postsrsd: postsrsd.forward.port, policy: serve.policyAddress }));
      setInterval(() => {}, 60_000);
    `;
    const root = fileURLToPath(new URL('../../', import.meta.url));
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const exited = new Promise<number | null>((resolve) => child.once('close', resolve));
    try {
      const started = await Promise.race([
        new Promise<string>((resolve) => child.stdout.on('data', () => stdout.includes('\n') && resolve(stdout))),
        exited.then((code) => assert.fail(`the child exited ${code} before starting everything: ${stderr}`)),
      ]);
      const peers = JSON.parse(started) as { postfixDir: string; redisPort: number; redisSocket: string; postsrsd: number; policy: string };
      child.kill('SIGTERM');
      assert.equal(await exited, 128 + 15, stderr);
      assert.equal(existsSync(peers.postfixDir), false, 'Postfix directory left');
      assert.equal(existsSync(dirname(peers.redisSocket)), false, 'redis-server directory left');
      // SIGKILL takes effect a moment after the child has gone.
      assert.ok(await until(() => postfixProcesses(peers.postfixDir).length === 0), 'Postfix processes left');
      const policyPort = Number(peers.policy.slice(peers.policy.lastIndexOf(':') + 1));
      for (const [what, host, port] of [['Postfix', '127.0.0.23', PORT], ['redis-server', '127.0.0.1', peers.redisPort], ['postsrsd', '127.0.0.1', peers.postsrsd], ['callout serve', '127.0.0.1', policyPort]] as const) {
        assert.ok(await until(async () => !(await answers(host, port))), `${what} still listens on ${host}:${port}`);
      }
    } finally {
      child.kill('SIGKILL');
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
