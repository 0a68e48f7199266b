/**
 * NAME
 *   test/e2e/serve.e2e - `callout serve` as Postfix's check_policy_service, against real Postfix
 *
 * DESCRIPTION
 *   Everything on loopback: the in-process DNS server publishes sender.test with its MX on a
 *   Postfix instance with real users (127.0.0.40); `callout serve` runs as a child process,
 *   exactly as an administrator starts it; two receiving Postfix instances for local.test ask
 *   it at RCPT, both after reject_unauth_destination:
 *     127.0.0.41  check_policy_service inet:127.0.0.1:PORT              (Postfix's defaults)
 *     127.0.0.42  check_policy_service { inet:127.0.0.1:PORT, timeout=10s, default_action=DUNNO }
 *                 (the README's main.cf lines, as written)
 *   swaks then sends mail to them. A missing sender is refused by Postfix with callout's text,
 *   which Postfix puts after its own prefix, with callout's enhanced status 5.7.1 unchanged (in
 *   smtpd_recipient_restrictions Postfix reports a policy answer as "Recipient address" status
 *   and would rewrite an X.1.7 sender code into X.1.3; X.7.Y codes pass unchanged, which is why
 *   callout's defaults use them):
 *     550 5.7.1 <alice@local.test>: Recipient address rejected: Sender address rejected: ...
 *   SIGHUP reloads the file while Postfix's smtpd keeps its policy connection open (the same
 *   TCP connections are established before and after). After SIGTERM the child drains and exits
 *   0, and Postfix's own behaviour shows: with the defaults every RCPT gets
 *   `451 4.3.5 <rcpt>: Recipient address rejected: Server configuration problem`
 *   (smtpd_policy_service_default_action), while the
 *   braces form with default_action=DUNNO accepts the mail.
 *
 * LIMITS
 *   Needs root, postfix and swaks (.ci/run installs them). The tests depend on each other's
 *   order (cache warm, reload, then stop), as one administrator's session would.
 */

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { startDnsServer } from '../support/dns-server.js';
import type { DnsTestServer } from '../support/dns-server.js';
import { SWAKS_NO_RCPT, SWAKS_OK, sendMail as send, startPostfix, stopAllPostfix, waitForMaillog } from '../support/postfix.js';
import type { PostfixInstance } from '../support/postfix.js';
import { startServeProcess } from '../support/serve-process.js';
import type { LogLine, ServeProcess } from '../support/serve-process.js';

const SMTP_PORT = 25400;
const SENDER_MX = '127.0.0.40';
const RECEIVER_DEFAULTS = '127.0.0.41';
const RECEIVER_DUNNO = '127.0.0.42';
const EXIT_WAIT_MS = 20_000;

let dns: DnsTestServer;
let dataDir: string;
let configPath: string;
let serve: ServeProcess;
let receiverDefaults: PostfixInstance;
let receiverDunno: PostfixInstance;

function startServe(): Promise<ServeProcess> {
  return startServeProcess([
    '--config', configPath,
    '--listen', '127.0.0.1:0',
    '--data-dir', dataDir,
    '--metrics', '127.0.0.1:0',
    '--dns-server', dns.address,
    '--helo', 'verifier.callout.test',
    '--allow-target', '127.0.0.0/8',
    '--port', String(SMTP_PORT),
  ]);
}

function writeConfig(senderCalloutMode: 'enforce' | 'warn'): void {
  const stages = [{ name: 'allowlist' }, { name: 'postmaster' }, { name: 'sender-syntax' }, { name: 'sender-callout', mode: senderCalloutMode }];
  writeFileSync(configPath, stringify({ policy: { stages } }));
}

/** Remote ports of established TCP connections to 127.0.0.1:port, from /proc/net/tcp. */
function establishedPeers(port: number): Set<string> {
  const local = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  const established = '01';
  const peers = new Set<string>();
  for (const line of readFileSync('/proc/net/tcp', 'latin1').split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields[1] === local && fields[3] === established && fields[2]) peers.add(fields[2]);
  }
  return peers;
}

const decisionsFor = (sender: string, recipient: string) => (l: LogLine) => l.msg === 'decision' && l.sender === sender && l.recipient === recipient;

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'callout-serve-e2e-'));
  configPath = join(dataDir, 'callout.yaml');
  writeConfig('enforce');
  dns = await startDnsServer({
    'sender.test': { MX: [{ priority: 10, exchange: 'mx.sender.test' }] },
    'mx.sender.test': { A: [SENDER_MX] },
  });
  await startPostfix({ name: 'serve-sender-mx', host: SENDER_MX, port: SMTP_PORT, myhostname: 'mx.sender.test', domains: { 'sender.test': ['bob'] } });
  serve = await startServe();
  const policy = `inet:${serve.policyAddress}`;
  [receiverDefaults, receiverDunno] = await Promise.all([
    startPostfix({ name: 'serve-receiver', host: RECEIVER_DEFAULTS, port: SMTP_PORT, myhostname: 'mx.local.test', domains: { 'local.test': ['alice'] }, policyService: policy }),
    startPostfix({
      name: 'serve-receiver-dunno',
      host: RECEIVER_DUNNO,
      port: SMTP_PORT,
      myhostname: 'mx2.local.test',
      domains: { 'local.test': ['alice'] },
      policyService: `{ ${policy}, timeout=10s, default_action=DUNNO }`,
    }),
  ]);
});

after(async () => {
  if (serve && serve.child.exitCode === null && serve.child.signalCode === null) {
    serve.child.kill('SIGKILL');
    await serve.exited;
  }
  await stopAllPostfix();
  await dns?.close();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

describe('callout serve behind real Postfix', () => {
  it('accepts mail from a real sender, and Postfix delivers it', async () => {
    const sent = await send(receiverDefaults, 'bob@sender.test', 'alice@local.test', { data: true });
    assert.equal(sent.code, SWAKS_OK, sent.transcript);
    assert.match(sent.rcpt, /^250 /);
    const decision = await serve.waitForLog(decisionsFor('bob@sender.test', 'alice@local.test'), 'the decision about bob');
    assert.equal(decision.action, 'DUNNO');
    assert.ok((decision.stages as string[]).some((s) => s.startsWith('sender-callout=deliverable')), JSON.stringify(decision));
    await waitForMaillog(receiverDefaults, /postfix\/discard\[\d+\]: \w+: to=<alice@local\.test>, .*status=sent/);
  });

  it('refuses a missing sender with callout\'s text behind Postfix\'s prefix', async () => {
    const sent = await send(receiverDefaults, 'nobody@sender.test', 'alice@local.test');
    assert.equal(sent.code, SWAKS_NO_RCPT, sent.transcript);
    assert.match(sent.rcpt, /^550 5\.7\.1 <alice@local\.test>: Recipient address rejected: Sender address rejected: mx\.sender\.test \[127\.0\.0\.40\] answered RCPT TO:<nobody@sender\.test> with 550 5\.1\.1 /);
    const decision = await serve.waitForLog(decisionsFor('nobody@sender.test', 'alice@local.test'), 'the decision about nobody');
    assert.equal(decision.decidedBy, 'sender-callout');
    assert.match(String(decision.action), /^550 5\.7\.1 Sender address rejected: /);
    const maillog = receiverDefaults.maillog();
    assert.doesNotMatch(maillog, /mapping DSN status/, 'X.7.1 passes Postfix unchanged');
    assert.match(maillog, /NOQUEUE: reject: RCPT from .*: 550 5\.7\.1 <alice@local\.test>: Recipient address rejected: Sender address rejected/);
  });

  it('keeps postmaster reachable for the missing sender', async () => {
    const sent = await send(receiverDefaults, 'nobody@sender.test', 'postmaster@local.test');
    assert.equal(sent.code, SWAKS_OK, sent.transcript);
    assert.match(sent.rcpt, /^250 /);
    const decision = await serve.waitForLog(decisionsFor('nobody@sender.test', 'postmaster@local.test'), 'the decision about postmaster');
    assert.equal(decision.decidedBy, 'postmaster');
  });

  it('the README\'s braces form (timeout, default_action=DUNNO) is accepted by Postfix and asks callout the same', async () => {
    assert.doesNotMatch(receiverDunno.maillog(), /(warning|fatal|error):.*(check_policy_service|smtpd_recipient_restrictions)/);
    const refused = await send(receiverDunno, 'nobody@sender.test', 'alice@local.test');
    assert.equal(refused.code, SWAKS_NO_RCPT, refused.transcript);
    assert.match(refused.rcpt, /^550 5\.7\.1 <alice@local\.test>: Recipient address rejected: Sender address rejected: /);
    const accepted = await send(receiverDunno, 'bob@sender.test', 'alice@local.test');
    assert.equal(accepted.code, SWAKS_OK, accepted.transcript);
  });

  it('counts the decisions in its metrics', async () => {
    const metrics = await (await fetch(`http://${serve.metricsAddress}/metrics`)).text();
    assert.match(metrics, /callout_policy_decisions_total\{action="REJECT",stage="sender-callout"\} 2/);
    assert.equal((await fetch(`http://${serve.metricsAddress}/health`)).status, 200);
  });

  it('SIGHUP reloads the file without dropping Postfix\'s policy connections: warn mode lets the missing sender through', async () => {
    const policyPort = Number(serve.policyAddress.slice(serve.policyAddress.lastIndexOf(':') + 1));
    const before = establishedPeers(policyPort);
    assert.ok(before.size > 0, 'Postfix keeps its policy connections open between requests');
    writeConfig('warn');
    const mark = serve.logs.length;
    serve.child.kill('SIGHUP');
    const reloaded = await serve.waitForLog((l) => l.msg === 'configuration reloaded', '"configuration reloaded"', mark);
    assert.deepEqual(reloaded.stages, ['allowlist:enforce', 'postmaster:enforce', 'sender-syntax:enforce', 'sender-callout:warn']);

    const sent = await send(receiverDefaults, 'nobody@sender.test', 'alice@local.test');
    assert.equal(sent.code, SWAKS_OK, sent.transcript);
    assert.match(sent.rcpt, /^250 /);
    const decision = await serve.waitForLog(decisionsFor('nobody@sender.test', 'alice@local.test'), 'the warn-mode decision', mark);
    assert.match(String(decision.action), /^WARN sender-callout would answer 550 5\.7\.1/);
    await waitForMaillog(receiverDefaults, /NOQUEUE: warn: RCPT from .*: sender-callout would answer 550 5\.7\.1 .*; from=<nobody@sender\.test> to=<alice@local\.test>/);
    const still = establishedPeers(policyPort);
    assert.ok([...before].some((peer) => still.has(peer)), `a connection open before the reload is still open (before ${[...before].join(' ')}, after ${[...still].join(' ')})`);
  });

  it('SIGTERM drains and exits 0; then Postfix answers 451 4.3.5 by default, and DUNNO with default_action=DUNNO', async () => {
    serve.child.kill('SIGTERM');
    const exit = await Promise.race([serve.exited, new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), EXIT_WAIT_MS))]);
    assert.deepEqual(exit, { code: 0, signal: null }, serve.stderr());
    assert.ok(serve.logs.some((l) => l.msg === 'stopped'), 'logs that it stopped');

    const defaults = await send(receiverDefaults, 'nobody@sender.test', 'alice@local.test');
    assert.notEqual(defaults.code, SWAKS_OK, defaults.transcript);
    assert.equal(defaults.rcpt, '451 4.3.5 <alice@local.test>: Recipient address rejected: Server configuration problem');
    assert.match(receiverDefaults.maillog(), /warning: connect to 127\.0\.0\.1:\d+: Connection refused/);

    const dunno = await send(receiverDunno, 'nobody@sender.test', 'alice@local.test');
    assert.equal(dunno.code, SWAKS_OK, dunno.transcript);
    assert.match(dunno.rcpt, /^250 /);
  });
});
