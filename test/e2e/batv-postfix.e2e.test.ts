/**
 * NAME
 *   test/e2e/batv-postfix.e2e - BATV signing and bounce checking through a real Postfix
 *
 * DESCRIPTION
 *   Everything on loopback, configured as the README's "main.cf: BATV" section says:
 *     `callout rewrite serve --socketmap` (a child process, as an administrator runs it) serves
 *       batv-sign and batv-strip;
 *     `callout serve` (a child process) is the policy service with the postmaster and batv stages;
 *     one Postfix instance is both the site's submission service and its MX for example.com.
 *       Its master.cf gets the README's `cleanup-batv` lines and a submission smtpd using them
 *       (permit_mynetworks in place of SASL); main.cf gets the README's batv-strip lines and
 *       check_policy_service after reject_unauth_destination. Outbound mail goes to a scriptable
 *       SMTP server standing for the Internet, which records MAIL FROM and defers at DATA (4xx),
 *       so Postfix keeps the message instead of bouncing it.
 *   Mail submitted by example.com users must leave with a prvs= sender that Batv.check accepts,
 *   signed in lower case (smtpd folds a bounce recipient's case before its unknown-user check
 *   asks batv-strip, so a tag over `Bob@Example.COM` would make that bounce "User unknown");
 *   other senders leave unchanged, and so does a sender that is already signed. A bounce
 *   (MAIL FROM:<>) to the signed address is accepted at the MX and delivered to the original
 *   mailbox (batv-strip; Postfix logs orig_to=<prvs=...>); bounces to unsigned or forged
 *   addresses are refused by the batv stage, bounces to postmaster are accepted unsigned.
 *
 * LIMITS
 *   Needs root, postfix and swaks (.ci/run installs them). The tests depend on each other's
 *   order: the bounces go to the address signed in the first test.
 */

import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { Batv } from '../../src/rewrite/batv.js';
import { startPostfix, stopAllPostfix, swaks, type PostfixInstance } from '../support/postfix.js';
import { acceptAll, pathOf, startSmtpServer, type SmtpTestServer } from '../support/smtp-server.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const MX_HOST = '127.0.0.70';
const MX_PORT = 25470;
const SUBMISSION_PORT = 25471;
const INTERNET_HOST = '127.0.0.71';
const KEY = { keynum: 3, secret: 'e2e batv secret' };
const WAIT_MS = 30_000;

// swaks exit codes: 0 all accepted, 24 no RCPT accepted.
const SWAKS_OK = 0;
const SWAKS_NO_RCPT = 24;

/** `callout ARGS` as a child process; resolves with the first stdout match of `ready`. */
async function startCallout(args: string[], ready: RegExp): Promise<{ child: ChildProcessWithoutNullStreams; match: RegExpExecArray }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const match = await new Promise<RegExpExecArray>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`callout ${args[0]} did not print ${ready} within ${WAIT_MS} ms: ${stdout}${stderr}`)), WAIT_MS);
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
      const found = ready.exec(stdout);
      if (found) {
        clearTimeout(timer);
        resolve(found);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`callout ${args[0]} exited ${code}: ${stdout}${stderr}`));
    });
  }).catch((err: unknown) => {
    // Left running, its pipes would hold the test file open until the runner's timeout.
    child.kill('SIGKILL');
    throw err;
  });
  return { child, match };
}

async function stopCallout(child: ChildProcessWithoutNullStreams | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await exited;
}

/** Polls until `host:port` greets with 220 (a listener added by `postfix reload`). */
async function waitForGreeting(host: string, port: number): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const line = await new Promise<string>((resolve) => {
      const socket = net.connect({ host, port });
      socket.setEncoding('latin1');
      socket.once('data', (chunk: string) => {
        socket.end('QUIT\r\n');
        resolve(chunk);
      });
      socket.once('error', (err) => resolve(err.message));
    });
    if (line.startsWith('220')) return;
    if (Date.now() > deadline) assert.fail(`${host}:${port} did not greet within ${WAIT_MS} ms (last: ${line.trim()})`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function waitFor<T>(what: string, probe: () => T | undefined, context: () => string): Promise<T> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) assert.fail(`no ${what} within ${WAIT_MS} ms:\n${context()}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe('BATV through a real Postfix: signing at submission, bounces checked at the MX', () => {
  let dir: string;
  let rewrite: ChildProcessWithoutNullStreams | undefined;
  let policy: ChildProcessWithoutNullStreams | undefined;
  let internet: SmtpTestServer;
  let postfix: PostfixInstance;
  let socketmap: string;
  const batv = new Batv({ keys: [KEY] });
  let signed = '';

  /** Submits a message and resolves with the MAIL FROM the Internet saw for it. */
  async function submit(from: string, to: string): Promise<string> {
    const seen = internet.sessions.length;
    const sent = await swaks(['--server', `${MX_HOST}:${SUBMISSION_PORT}`, '--helo', 'workstation.example.com', '--from', from, '--to', to, '--timeout', '30']);
    assert.equal(sent.code, SWAKS_OK, sent.stdout + sent.stderr);
    const mail = await waitFor(
      `relay of the mail from ${from}`,
      () => internet.sessions.slice(seen).flatMap((s) => s.commands).find((c) => /^MAIL FROM:/i.test(c)),
      () => postfix.maillog(),
    );
    return pathOf(mail);
  }

  /** Sends a bounce to the MX; swaks's transcript shows a refusal as `<** 550 ...`. */
  async function bounce(to: string): Promise<{ code: number; transcript: string }> {
    const result = await swaks(['--server', `${MX_HOST}:${MX_PORT}`, '--helo', 'mx.elsewhere.test', '--from', '<>', '--to', to, '--timeout', '30', '--header', 'Subject: Undelivered Mail Returned to Sender']);
    const transcript = result.stdout + result.stderr;
    return { code: result.code, transcript };
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'callout-batv-postfix-'));
    const keyFile = join(dir, 'batv.keys');
    writeFileSync(keyFile, `# newest first\n${KEY.keynum} ${KEY.secret}\n`, { mode: 0o600 });
    const secretFile = join(dir, 'batv.key3');
    writeFileSync(secretFile, `${KEY.secret}\n`, { mode: 0o600 });
    const config = join(dir, 'callout.yaml');
    writeFileSync(config, stringify({ policy: { stages: [{ name: 'postmaster' }, { name: 'batv', domains: ['example.com'], keys: [{ keynum: KEY.keynum, secretFile }] }] } }));

    let started = await startCallout(['rewrite', 'serve', '--socketmap', '127.0.0.1:0', '--batv-key-file', keyFile, '--batv-domain', 'example.com'], /listening on (127\.0\.0\.1:\d+)/);
    rewrite = started.child;
    socketmap = started.match[1]!;
    started = await startCallout(['serve', '--config', config, '--listen', '127.0.0.1:0', '--data-dir', dir, '--metrics', ''], /^.*"callout serve started".*$/m);
    policy = started.child;
    const policyAddress = String((JSON.parse(started.match[0]) as { policy: unknown }).policy);

    internet = await startSmtpServer({ host: INTERNET_HOST, port: 0, script: { ...acceptAll(), data: () => '451 4.3.0 the test Internet keeps no mail' } });
    postfix = await startPostfix({
      name: 'batv',
      host: MX_HOST,
      port: MX_PORT,
      myhostname: 'mx.example.com',
      domains: { 'example.com': ['alice', 'bob'] },
      policyService: `inet:${policyAddress}`,
      extraMain: {
        default_transport: `smtp:[${INTERNET_HOST}]:${internet.port}`,
        relay_transport: `smtp:[${INTERNET_HOST}]:${internet.port}`,
        // The README's main.cf lines for returning bounces.
        recipient_canonical_maps: `socketmap:inet:${socketmap}:batv-strip`,
        recipient_canonical_classes: 'envelope_recipient',
      },
    });
    // The README's master.cf lines: a submission smtpd whose cleanup signs.
    appendFileSync(
      join(postfix.dir, 'etc', 'master.cf'),
      [
        `${MX_HOST}:${SUBMISSION_PORT} inet n - n - - smtpd`,
        '  -o cleanup_service_name=cleanup-batv',
        '  -o smtpd_relay_restrictions=permit_mynetworks,reject',
        '  -o smtpd_recipient_restrictions=permit_mynetworks,reject',
        'cleanup-batv unix n - n - 0 cleanup',
        `  -o sender_canonical_maps=socketmap:inet:${socketmap}:batv-sign`,
        '  -o sender_canonical_classes=envelope_sender',
        '',
      ].join('\n'),
    );
    const reload = spawnSync('postfix', ['-c', join(postfix.dir, 'etc'), 'reload'], { encoding: 'utf8' });
    assert.equal(reload.status, 0, `postfix reload: ${reload.stdout}${reload.stderr}`);
    await waitForGreeting(MX_HOST, SUBMISSION_PORT);
  });

  after(async () => {
    await stopAllPostfix();
    await internet?.close();
    await Promise.all([stopCallout(rewrite), stopCallout(policy)]);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('signs the envelope sender of mail submitted by an example.com user', async () => {
    const from = await submit('alice@example.com', 'carol@elsewhere.test');
    assert.match(from, /^prvs=3\d{3}[0-9a-f]{6}=alice@example\.com$/);
    assert.deepEqual(batv.check(from, Date.now()), { status: 'valid', original: 'alice@example.com', keynum: KEY.keynum });
    signed = from;
  });

  it('signs a mixed-case sender in lower case, the form smtpd checks a bounce recipient in', async () => {
    const from = await submit('Bob@Example.COM', 'carol@elsewhere.test');
    assert.match(from, /^prvs=3\d{3}[0-9a-f]{6}=bob@example\.com$/);
    assert.equal(batv.check(from, Date.now()).status, 'valid');
    // Signed as submitted (Bob@Example.COM), smtpd's unknown-user check would fold the
    // recipient, batv-strip would find a bad signature, and the bounce would get 550 5.1.1.
    const sent = await bounce(from);
    assert.equal(sent.code, SWAKS_OK, sent.transcript);
  });

  it('leaves senders of other domains and already signed senders alone', async () => {
    assert.equal(await submit('dave@elsewhere.test', 'carol@elsewhere.test'), 'dave@elsewhere.test');
    assert.ok(signed, 'the first test signed nothing');
    assert.equal(await submit(signed, 'carol@elsewhere.test'), signed);
  });

  it('accepts a bounce to the signed address and delivers it to the original mailbox', async () => {
    assert.ok(signed, 'the first test signed nothing');
    const sent = await bounce(signed);
    assert.equal(sent.code, SWAKS_OK, sent.transcript);
    const escaped = signed.replace(/[.+]/g, '\\$&');
    await waitFor(
      'delivery of the bounce to alice',
      () => (new RegExp(`discard\\[\\d+\\]: \\w+: to=<alice@example\\.com>, orig_to=<${escaped}>, .*status=sent`).test(postfix.maillog()) ? true : undefined),
      () => postfix.maillog(),
    );
  });

  it('refuses bounces to unsigned and forged addresses with the batv stage\'s texts', async () => {
    const unsigned = await bounce('alice@example.com');
    assert.equal(unsigned.code, SWAKS_NO_RCPT, unsigned.transcript);
    assert.match(unsigned.transcript, /<\*\* +550 5\.7\.1 <alice@example\.com>: .*This address does not send an unsigned reverse path/);

    const forged = signed.replace(/^(prvs=\d{4})([0-9a-f]{6})/, (_m, head: string, hash: string) => head + (hash === '000000' ? '000001' : '000000'));
    const refused = await bounce(forged);
    assert.equal(refused.code, SWAKS_NO_RCPT, refused.transcript);
    assert.match(refused.transcript, /<\*\* +550 5\.7\.1 <prvs=.*Invalid reverse path signature/);
  });

  it('accepts an unsigned bounce to postmaster', async () => {
    const sent = await bounce('postmaster@example.com');
    assert.equal(sent.code, SWAKS_OK, sent.transcript);
  });
});
