/**
 * NAME
 *   test/e2e/tarpit-postfix.e2e - the harvest tarpit answered to real Postfix
 *
 * DESCRIPTION
 *   A backup MX for local.test (Postfix at 127.0.0.53, which would accept any local part) asks
 *   `callout serve` at RCPT; callout checks each recipient at the primary (Postfix at
 *   127.0.0.52, whose one user is alice) with the recipient-callforward stage, behind the
 *   tarpit (perConnection soft 1, hard 3, sleep 1s). A harvester (swaks) tries five unknown
 *   recipients in one session: the first three are refused with 550 5.1.1, the answers past the
 *   soft limit come late (1 s, then 2 s), and the fourth RCPT gets 421 4.7.0, after which
 *   Postfix closes the connection, as at its own hard error limit. A good recipient on a new
 *   connection still passes. The answers come before Postfix's policy timeout (100 s), so
 *   Postfix takes every one as callout gave it.
 *   A primary MX of own.test (Postfix at 127.0.0.54, user carol, smtpd_hard_error_limit 4)
 *   asks the same service, whose call-forward covers local.test only: Postfix asks before it
 *   refuses an unknown user itself (smtpd_reject_unlisted_recipient applies after
 *   smtpd_recipient_restrictions), so callout answers DUNNO and counts nothing, and Postfix's
 *   own hard error limit is what ends that harvest (421 4.7.0 at the fifth RCPT).
 *   A third server (Postfix at 127.0.0.55, primary for own.test and backup for local.test,
 *   Postfix's own error limits out of the way) asks callout at END-OF-MESSAGE too
 *   (smtpd_end_of_data_restrictions): a delivered message is answered DUNNO there, after which
 *   the tarpit forgives on delivery only. A harvester that starts a new message after each
 *   probe callout rejects, padded with an unknown user of own.test that Postfix rejects itself
 *   after callout let it through, is then not forgiven: 421 4.7.0 at its fourth message.
 *
 * LIMITS
 *   Needs root, postfix and swaks (.ci/run installs them). The delays are real time (3 s, and
 *   4 s for the third server).
 */

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { startDnsServer } from '../support/dns-server.js';
import type { DnsTestServer } from '../support/dns-server.js';
import { SWAKS_OK, rcptReplies, sendMail, startPostfix, stopAllPostfix, swaks, waitForMaillog } from '../support/postfix.js';
import type { PostfixInstance } from '../support/postfix.js';
import { startServeProcess } from '../support/serve-process.js';
import type { ServeProcess } from '../support/serve-process.js';

const SMTP_PORT = 25452;
const PRIMARY = '127.0.0.52';
const BACKUP = '127.0.0.53';
/** A primary MX of its own domain, asking the same callout serve. */
const OWN = '127.0.0.54';
/** Primary for own.test, backup for local.test, asking callout at END-OF-MESSAGE too. */
const EOM = '127.0.0.55';

let dns: DnsTestServer;
let dataDir: string;
let serve: ServeProcess;
let backup: PostfixInstance;
let own: PostfixInstance;
let eom: PostfixInstance;

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'callout-tarpit-e2e-'));
  const configPath = join(dataDir, 'callout.yaml');
  const stages = [
    { name: 'tarpit', perConnection: { soft: 1, hard: 3 }, sleep: '1s', maxSleep: '5s' },
    { name: 'recipient-callforward', hosts: [PRIMARY], port: SMTP_PORT, domains: ['local.test'] },
  ];
  writeFileSync(configPath, stringify({ policy: { stages } }));
  dns = await startDnsServer({});
  await startPostfix({ name: 'tarpit-primary', host: PRIMARY, port: SMTP_PORT, myhostname: 'primary.local.test', domains: { 'local.test': ['alice'] } });
  serve = await startServeProcess(['--config', configPath, '--listen', '127.0.0.1:0', '--data-dir', dataDir, '--metrics', '', '--dns-server', dns.address, '--helo', 'verifier.callout.test']);
  backup = await startPostfix({
    name: 'tarpit-backup',
    host: BACKUP,
    port: SMTP_PORT,
    myhostname: 'backup.local.test',
    domains: { 'local.test': 'catch-all' },
    policyService: `inet:${serve.policyAddress}`,
  });
  own = await startPostfix({
    name: 'tarpit-own',
    host: OWN,
    port: SMTP_PORT,
    myhostname: 'mx.own.test',
    domains: { 'own.test': ['carol'] },
    policyService: `inet:${serve.policyAddress}`,
    extraMain: { smtpd_soft_error_limit: '10', smtpd_hard_error_limit: '4' },
  });
  eom = await startPostfix({
    name: 'tarpit-eom',
    host: EOM,
    port: SMTP_PORT,
    myhostname: 'mx2.own.test',
    domains: { 'own.test': ['carol'], 'local.test': 'catch-all' },
    policyService: `inet:${serve.policyAddress}`,
    extraMain: {
      smtpd_end_of_data_restrictions: `check_policy_service inet:${serve.policyAddress}`,
      smtpd_soft_error_limit: '100',
      smtpd_hard_error_limit: '100',
    },
  });
});

/**
 * A raw SMTP session (swaks sends one message a connection): each command's reply, until the
 * server closes the connection.
 */
async function smtpSession(host: string, commands: string[]): Promise<string[]> {
  const socket = net.connect({ host, port: SMTP_PORT });
  socket.setEncoding('utf8');
  let buffered = '';
  let closed = false;
  const waiters: (() => void)[] = [];
  const wake = () => waiters.splice(0).forEach((w) => w());
  socket.on('data', (chunk: string) => { buffered += chunk; wake(); });
  socket.on('close', () => { closed = true; wake(); });
  socket.on('error', () => undefined);
  const reply = async (): Promise<string | undefined> => {
    for (;;) {
      const end = /^\d{3} .*\r\n/m.exec(buffered);
      if (end) {
        const text = buffered.slice(0, end.index + end[0].length).trimEnd();
        buffered = buffered.slice(end.index + end[0].length);
        return text.split('\r\n').pop();
      }
      if (closed) return undefined;
      await new Promise<void>((resolve) => waiters.push(resolve));
    }
  };
  const replies: string[] = [];
  try {
    await reply();
    for (const command of commands) {
      socket.write(`${command}\r\n`);
      const answer = await reply();
      if (answer === undefined) break;
      replies.push(answer);
    }
  } finally {
    socket.destroy();
  }
  return replies;
}

after(async () => {
  // stop() of a daemon that has exited already just reports how it ended.
  await serve?.stop();
  await stopAllPostfix();
  await dns?.close();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

describe('tarpit behind real Postfix', () => {
  it('slows a harvester past the soft limit, then Postfix answers 421 and closes the connection', async () => {
    const probes = Array.from({ length: 5 }, (_, n) => `nobody${n}@local.test`);
    const started = Date.now();
    const result = await swaks(['--server', `${BACKUP}:${SMTP_PORT}`, '--helo', 'harvester.example', '--from', 'probe@harvester.example', '--to', probes.join(','), '--quit-after', 'RCPT', '--timeout', '60']);
    const seconds = (Date.now() - started) / 1000;
    const transcript = result.stdout + result.stderr;
    const replies = rcptReplies(transcript);
    assert.equal(replies.length, 4, `four RCPTs answered, the connection closed after the fourth:\n${transcript}`);
    for (const [n, reply] of replies.slice(0, 3).entries()) {
      assert.match(reply, new RegExp(`^550 5\\.1\\.1 <nobody${n}@local\\.test>: Recipient address rejected: undeliverable address: `), transcript);
    }
    assert.match(replies[3]!, /^421 4\.7\.0 <nobody3@local\.test>: Recipient address rejected: Too many rejected recipients from 127\.0\.0\.1, try again later$/);
    assert.ok(seconds >= 3, `the second and third refusals came 1 s and 2 s late: ${seconds.toFixed(1)} s in all`);
    await serve.waitForLog((l) => l.msg === 'tarpit: answer delayed' && l.delayMs === 2000, 'the second delay');
    assert.doesNotMatch(backup.maillog(), /warning: .*(policy|check_policy_service)/, 'no policy timeout or bad answer in Postfix\'s eyes');
  });

  it('does not see the unknown users Postfix refuses itself after asking it (smtpd_reject_unlisted_recipient): Postfix\'s own error limit ends that harvest', async () => {
    const from = serve.logs.length;
    const probes = Array.from({ length: 6 }, (_, n) => `nobody${n}@own.test`);
    const result = await swaks(['--server', `${OWN}:${SMTP_PORT}`, '--helo', 'harvester.example', '--from', 'probe@harvester.example', '--to', probes.join(','), '--quit-after', 'RCPT', '--timeout', '60']);
    const transcript = result.stdout + result.stderr;
    const replies = rcptReplies(transcript);
    assert.equal(replies.length, 5, transcript);
    for (const [n, reply] of replies.slice(0, 4).entries()) {
      assert.match(reply, new RegExp(`^550 5\\.1\\.1 <nobody${n}@own\\.test>: Recipient address rejected: User unknown in virtual mailbox table$`), transcript);
    }
    assert.match(replies[4]!, /^421 4\.7\.0 mx\.own\.test Error: too many errors$/, 'Postfix\'s smtpd_hard_error_limit (4 here), not the tarpit');
    // Postfix asked before refusing: callout answered DUNNO each time and counted nothing.
    await serve.waitForLog((l) => l.msg === 'decision' && l.recipient === 'nobody3@own.test', 'the fourth probe\'s decision', from);
    const decisions = serve.logs.slice(from).filter((l) => l.msg === 'decision' && String(l.recipient).endsWith('@own.test'));
    assert.deepEqual(decisions.map((l) => l.action), ['DUNNO', 'DUNNO', 'DUNNO', 'DUNNO']);
    for (const decision of decisions) assert.match(String((decision.stages as string[])[0]), /^tarpit=counted: 0 rejected on this connection, /);
    assert.equal(serve.logs.slice(from).filter((l) => l.msg === 'tarpit: answer delayed').length, 0);
    await waitForMaillog(own, /too many errors after RCPT from/);
    assert.doesNotMatch(own.maillog(), /warning: .*(policy|check_policy_service)/);
  });

  it('forgives on delivery only where Postfix asks at END-OF-MESSAGE: a harvester padding its messages with users Postfix rejects itself is refused', async () => {
    const from = serve.logs.length;
    const sent = await sendMail(eom, 'bob@sender.test', 'carol@own.test', { data: true });
    assert.equal(sent.code, SWAKS_OK, sent.transcript);
    const ended = await serve.waitForLog((l) => l.msg === 'decision' && l.state === 'END-OF-MESSAGE', 'the END-OF-MESSAGE decision', from);
    assert.equal(ended.action, 'DUNNO');
    assert.match(String((ended.stages as string[])[0]), /^tarpit=end-of-message: /);
    const commands = ['EHLO harvester.example'];
    for (let m = 0; m < 4; m += 1) commands.push('MAIL FROM:<probe@harvester.example>', `RCPT TO:<ghost${m}@own.test>`, `RCPT TO:<eomprobe${m}@local.test>`, 'RSET');
    const replies = await smtpSession(EOM, commands);
    const rcpts = replies.filter((_, n) => commands[n]!.startsWith('RCPT'));
    for (let m = 0; m < 3; m += 1) {
      assert.match(rcpts[2 * m]!, /^550 5\.1\.1 <ghost\d@own\.test>: Recipient address rejected: User unknown in virtual mailbox table$/, `message ${m}: ${replies.join(' | ')}`);
      assert.match(rcpts[2 * m + 1]!, /^550 5\.1\.1 <eomprobe\d@local\.test>: Recipient address rejected: /, `message ${m}: ${replies.join(' | ')}`);
    }
    assert.match(rcpts[6]!, /^421 4\.7\.0 <ghost3@own\.test>: Recipient address rejected: Too many rejected recipients from 127\.0\.0\.1, try again later$/, 'three errors over three messages, never forgiven');
    assert.equal(rcpts.length, 7, `Postfix closed the connection: ${replies.join(' | ')}`);
    assert.doesNotMatch(eom.maillog(), /warning: .*(policy|check_policy_service)/);
  });

  it('lets a good recipient through on a new connection', async () => {
    const sent = await sendMail(backup, 'bob@sender.test', 'alice@local.test');
    assert.equal(sent.code, SWAKS_OK, sent.transcript);
    assert.match(sent.rcpt, /^250 /);
  });
});
