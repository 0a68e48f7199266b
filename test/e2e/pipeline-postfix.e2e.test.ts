/**
 * NAME
 *   test/e2e/pipeline-postfix.e2e - the README's whole pipeline behind real Postfix, as deployed
 *
 * DESCRIPTION
 *   `callout serve` runs as a child process with the README's stages in its recommended order
 *   (allowlist, postmaster, sender-syntax, spf, sender-callout with resultHeader, greylist), and a
 *   Postfix instance for local.test (127.0.0.80) asks it with the README's main.cf lines, as
 *   written: permit_mynetworks, reject_unauth_destination, then
 *   check_policy_service { inet:..., timeout=10s, default_action=DUNNO }, smtpd_delay_reject left
 *   at its default. The in-process DNS server publishes the senders' domains:
 *     spf.test     SPF passes for the client (127.0.0.1): the callout is skipped
 *     good.test    no SPF; its MX (scriptable, 127.0.0.81, spf.test's too) knows dave and bob
 *     grey.test    no SPF; its MX (127.0.0.82) greylists carol's first callout, knows no one else
 *     strict.test  SPF -all for another network: fail
 *   swaks sends from 127.0.0.1 and the tests assert Postfix's replies (code, enhanced code, text)
 *   and the header fields that reach the delivered message, which a header_checks WARN rule
 *   writes to the maillog. Postfix takes one action per policy reply, so a one-recipient message
 *   gets only the first header field queued for it, spf's Authentication-Results: Received-SPF,
 *   X-Callout-Result (resultHeader) and X-Greylist never arrive with these main.cf lines.
 *   Greylisting (delay 1 s) is passed by sending again until accepted, as a sending server
 *   retries, within a deadline.
 *
 *   A second `callout serve` (decisionTimeout 5 s) and Postfix instance (127.0.0.87) drive
 *   Postfix's DEFER_IF_PERMIT, which does not end the pipeline: a later reject wins, otherwise
 *   the first DEFER_IF_PERMIT is the answer. Its stages are spf (softfail: defer-if-permit),
 *   sender-callout and greylist (delay 2 s), and its senders:
 *     slow.test    no SPF; its MX (127.0.0.88) answers frank's RCPT after 15 s, so the callout is
 *                  still in progress at the deadline and greylist must still see the first attempt
 *     soft.test    SPF ~all for another network: softfail; its MX (127.0.0.89) knows no one, so
 *                  the callout's reject must win over spf's DEFER_IF_PERMIT
 *
 * LIMITS
 *   Needs root, postfix and swaks (.ci/run installs them). The tests run in order, as one
 *   sending server's attempts would. The greylist delay is real time (Postfix sends no test clock).
 */

import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { startDnsServer } from '../support/dns-server.js';
import type { DnsTestServer } from '../support/dns-server.js';
import { SWAKS_NO_RCPT, SWAKS_OK, sendMail, startPostfix, stopAllPostfix, waitForMaillog } from '../support/postfix.js';
import type { PostfixInstance } from '../support/postfix.js';
import { startServeProcess } from '../support/serve-process.js';
import type { LogLine, ServeProcess } from '../support/serve-process.js';
import { pathOf, startSmtpServers, usersOnly } from '../support/smtp-server.js';
import type { SmtpScript, SmtpTestServer } from '../support/smtp-server.js';

const SMTP_PORT = 25480;
const RECEIVER = '127.0.0.80';
const GOOD_MX = '127.0.0.81';
const GREY_MX = '127.0.0.82';
const AUTHSERV = 'mx.local.test';
const GREYLIST_DELAY_SECONDS = 1;
const RETRY_DEADLINE_MS = 10_000;
const RETRY_POLL_MS = 250;
const DIP_SMTP_PORT = 25481;
const DIP_RECEIVER = '127.0.0.87';
const SLOW_MX = '127.0.0.88';
const SOFT_MX = '127.0.0.89';
const DIP_DECISION_TIMEOUT_SECONDS = 5;
/** Three decision deadlines: the callout outlasts the first attempt's by far, however loaded the machine. */
const SLOW_RCPT_MS = 15_000;
const DIP_GREYLIST_DELAY_SECONDS = 2;
/** The slow callout's end plus a few attempts of a decision deadline each. */
const DIP_RETRY_DEADLINE_MS = 60_000;

let dns: DnsTestServer;
let dataDir: string;
let serve: ServeProcess;
let receiver: PostfixInstance;
let exchangers: SmtpTestServer[];

const decisionFor = (sender: string, recipient: string) => (l: LogLine) => l.msg === 'decision' && l.sender === sender && l.recipient === recipient;

/** Header fields of the message from `from` to `to` that Postfix's cleanup logged (header_checks WARN). */
function deliveredHeaders(from: string, to: string): string[] {
  const escape = (text: string): string => text.replace(/[.+]/g, (c) => `\\${c}`);
  const pattern = new RegExp(`cleanup\\[\\d+\\]: \\w+: warning: header (.*) from \\S+; from=<${escape(from)}> to=<${escape(to)}>`, 'g');
  return [...receiver.maillog().matchAll(pattern)].map((found) => found[1] ?? '');
}

/**
 * grey.test's MX: carol's first RCPT is greylisted, later ones accepted; any other local part
 * (callout's random catch-all probe) does not exist there.
 */
function greylistingExchanger(): Partial<SmtpScript> {
  let greylisted = false;
  return {
    rcpt: (arg) => {
      const path = pathOf(arg).toLowerCase();
      if (path !== 'carol@grey.test') return `550 5.1.1 <${path}>: Recipient address rejected: User unknown`;
      if (greylisted) return '250 2.1.5 Ok';
      greylisted = true;
      return `450 4.7.1 <${path}>: Recipient address rejected: Greylisted, try again later`;
    },
  };
}

/** Sends until the greylist lets the message through (as a sending server retries), with data. */
async function sendPastGreylist(from: string, to: string): Promise<Awaited<ReturnType<typeof sendMail>>> {
  const deadline = Date.now() + RETRY_DEADLINE_MS;
  for (;;) {
    const sent = await sendMail(receiver, from, to, { data: true });
    if (!/^450 4\.2\.0 .*Greylisted/.test(sent.rcpt)) return sent;
    if (Date.now() > deadline) throw new Error(`still greylisted after ${RETRY_DEADLINE_MS} ms:\n${sent.transcript}`);
    await new Promise((resolve) => setTimeout(resolve, RETRY_POLL_MS));
  }
}

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'callout-pipeline-e2e-'));
  // Postfix's cleanup (user postfix) reads the header_checks map from here.
  chmodSync(dataDir, 0o755);
  const headerChecks = join(dataDir, 'header_checks');
  writeFileSync(headerChecks, '/^(Authentication-Results|Received-SPF|X-Callout-Result|X-Greylist): / WARN\n', { mode: 0o644 });
  exchangers = await startSmtpServers([GOOD_MX, GREY_MX], (host) => (host === GOOD_MX ? usersOnly(['dave', 'bob']) : greylistingExchanger()));
  dns = await startDnsServer({
    'spf.test': { MX: [{ priority: 10, exchange: 'mx.good.test' }], TXT: ['v=spf1 ip4:127.0.0.0/24 -all'] },
    'good.test': { MX: [{ priority: 10, exchange: 'mx.good.test' }] },
    'grey.test': { MX: [{ priority: 10, exchange: 'mx.grey.test' }] },
    'strict.test': { MX: [{ priority: 10, exchange: 'mx.good.test' }], TXT: ['v=spf1 ip4:192.0.2.0/24 -all'] },
    'mx.good.test': { A: [GOOD_MX] },
    'mx.grey.test': { A: [GREY_MX] },
  });
  const configPath = join(dataDir, 'callout.yaml');
  const stages = [
    { name: 'allowlist' },
    { name: 'postmaster' },
    { name: 'sender-syntax' },
    { name: 'spf', authservId: AUTHSERV },
    { name: 'sender-callout', resultHeader: true, receiver: AUTHSERV },
    { name: 'greylist', delay: `${GREYLIST_DELAY_SECONDS}s`, retryWindow: '1h' },
  ];
  // A domain that greylisted us is left alone, and the greylisted answer remembered, for 1 s
  // instead of 5 min and 60 s: the sending server's retry (minutes later in real life) comes
  // after both.
  writeFileSync(configPath, stringify({ cache: { greylistRetry: '1s', tempfail: '1s' }, policy: { stages } }));
  serve = await startCallout(configPath, dataDir, dns.address, exchangers[0]?.port);
  receiver = await startReceiver('pipeline-receiver', RECEIVER, SMTP_PORT, serve.policyAddress, { header_checks: `regexp:${headerChecks}` });
});

/** `callout serve` as the README runs it, on loopback, its callouts to the scripted exchangers. */
function startCallout(configPath: string, dataDir: string, dnsAddress: string, port: number | undefined): ReturnType<typeof startServeProcess> {
  return startServeProcess([
    '--config', configPath,
    '--listen', '127.0.0.1:0',
    '--data-dir', dataDir,
    '--metrics', '127.0.0.1:0',
    '--dns-server', dnsAddress,
    '--helo', 'verifier.local.test',
    '--allow-target', '127.0.0.0/8',
    '--port', String(port),
  ]);
}

/** A Postfix for local.test with the README's main.cf lines, asking the policy service at `policy`. */
function startReceiver(name: string, host: string, port: number, policy: string, extraMain: Record<string, string> = {}): ReturnType<typeof startPostfix> {
  return startPostfix({
    name,
    host,
    port,
    myhostname: AUTHSERV,
    domains: { 'local.test': ['alice'] },
    extraMain: {
      // The client (127.0.0.1) is not one of ours, so permit_mynetworks does not let it by.
      mynetworks: '127.0.0.254/32',
      smtpd_delay_reject: 'yes',
      smtpd_recipient_restrictions: `permit_mynetworks, reject_unauth_destination, check_policy_service { inet:${policy}, timeout=10s, default_action=DUNNO }`,
      ...extraMain,
    },
  });
}

after(async () => {
  await serve?.stop();
  await stopAllPostfix();
  await Promise.all((exchangers ?? []).map((s) => s.close()));
  await dns?.close();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

describe('the README pipeline behind real Postfix', () => {
  it('a sender whose SPF passes is not called out, is greylisted once, then delivered with Authentication-Results', async () => {
    const first = await sendMail(receiver, 'bob@spf.test', 'alice@local.test');
    assert.equal(first.code, SWAKS_NO_RCPT, first.transcript);
    assert.equal(first.rcpt, `450 4.2.0 <alice@local.test>: Recipient address rejected: Greylisted, please try again in ${GREYLIST_DELAY_SECONDS} seconds`);
    const decision = await serve.waitForLog(decisionFor('bob@spf.test', 'alice@local.test'), 'the decision about bob');
    assert.equal(decision.decidedBy, 'greylist');
    assert.ok((decision.stages as string[]).some((s) => s.startsWith('spf=pass')), JSON.stringify(decision));

    const sent = await sendPastGreylist('bob@spf.test', 'alice@local.test');
    assert.equal(sent.code, SWAKS_OK, sent.transcript);
    assert.match(sent.rcpt, /^250 /);
    await waitForMaillog(receiver, /discard\[\d+\]: \w+: to=<alice@local\.test>, .*status=sent/);
    assert.deepEqual(deliveredHeaders('bob@spf.test', 'alice@local.test'), [
      `Authentication-Results: ${AUTHSERV}; spf=pass (domain of bob@spf.test designates 127.0.0.1 as permitted sender) smtp.mailfrom=bob@spf.test`,
    ]);
    assert.equal(exchangers[0]?.sessions.filter((s) => s.commands.some((c) => /bob@spf\.test/i.test(c))).length, 0, 'no callout for an SPF pass');
  });

  it('a sender whose MX accepts it is verified by callout, greylisted once, then delivered with the first header only', async () => {
    const first = await sendMail(receiver, 'dave@good.test', 'alice@local.test');
    assert.equal(first.code, SWAKS_NO_RCPT, first.transcript);
    assert.equal(first.rcpt, `450 4.2.0 <alice@local.test>: Recipient address rejected: Greylisted, please try again in ${GREYLIST_DELAY_SECONDS} seconds`);
    const decision = await serve.waitForLog(decisionFor('dave@good.test', 'alice@local.test'), 'the decision about dave');
    assert.ok((decision.stages as string[]).some((s) => s.startsWith('sender-callout=deliverable')), JSON.stringify(decision));

    const sent = await sendPastGreylist('dave@good.test', 'alice@local.test');
    assert.equal(sent.code, SWAKS_OK, sent.transcript);
    await waitForMaillog(receiver, /warning: header \S+: .* from \S+; from=<dave@good\.test> to=<alice@local\.test>/);
    // Postfix takes one action per policy reply, and a one-recipient message has one RCPT reply
    // (check_policy_service is not in smtpd_data_restrictions here): of the fields queued for it
    // (spf's Authentication-Results and Received-SPF, X-Callout-Result, X-Greylist) only the first arrives.
    assert.deepEqual(deliveredHeaders('dave@good.test', 'alice@local.test'), [
      `Authentication-Results: ${AUTHSERV}; spf=none (domain of dave@good.test does not designate permitted sender hosts) smtp.mailfrom=dave@good.test`,
    ]);
  });

  it('a forged sender whose MX says 550 5.1.1 is refused with the MX\'s answer, before any greylisting', async () => {
    const sent = await sendMail(receiver, 'nobody@good.test', 'alice@local.test');
    assert.equal(sent.code, SWAKS_NO_RCPT, sent.transcript);
    assert.match(sent.rcpt, /^550 5\.7\.1 <alice@local\.test>: Recipient address rejected: Sender address rejected: mx\.good\.test \[127\.0\.0\.81\] answered RCPT TO:<nobody@good\.test> with 550 5\.1\.1 <nobody@good\.test>: Recipient address rejected: User unknown in local recipient table$/);
    const decision = await serve.waitForLog(decisionFor('nobody@good.test', 'alice@local.test'), 'the decision about nobody');
    assert.equal(decision.decidedBy, 'sender-callout');
    assert.ok(!(decision.stages as string[]).some((s) => s.startsWith('greylist=')), 'no triplet for a forged sender');
    assert.doesNotMatch(receiver.maillog(), /mapping DSN status/, 'X.7.1 passes Postfix unchanged');
  });

  it('a sender whose SPF fails is refused with RFC 7372\'s 5.7.23 and the default explanation', async () => {
    const sent = await sendMail(receiver, 'eve@strict.test', 'alice@local.test');
    assert.equal(sent.code, SWAKS_NO_RCPT, sent.transcript);
    assert.equal(sent.rcpt, '550 5.7.23 <alice@local.test>: Recipient address rejected: SPF fail for strict.test: The domain strict.test does not designate 127.0.0.1 as a permitted sender');
  });

  it('a sender whose MX greylists the callout is deferred; the retry is called out again, meets the greylist, and then passes', async () => {
    const deferred = /^450 4\.7\.1 <alice@local\.test>: Recipient address rejected: Sender address verification failed temporarily: mx\.grey\.test \[127\.0\.0\.82\] answered RCPT TO:<carol@grey\.test> with 450 4\.7\.1 /;
    const first = await sendMail(receiver, 'carol@grey.test', 'alice@local.test');
    assert.equal(first.code, SWAKS_NO_RCPT, first.transcript);
    assert.match(first.rcpt, deferred);
    const deadline = Date.now() + RETRY_DEADLINE_MS;
    let retry = first;
    while (deferred.test(retry.rcpt)) {
      if (Date.now() > deadline) throw new Error(`the callout's deferral outlived its cache:\n${retry.transcript}`);
      await new Promise((resolve) => setTimeout(resolve, RETRY_POLL_MS));
      retry = await sendMail(receiver, 'carol@grey.test', 'alice@local.test');
    }
    assert.equal(retry.rcpt, `450 4.2.0 <alice@local.test>: Recipient address rejected: Greylisted, please try again in ${GREYLIST_DELAY_SECONDS} seconds`);
    const sent = await sendPastGreylist('carol@grey.test', 'alice@local.test');
    assert.equal(sent.code, SWAKS_OK, sent.transcript);
    const last = serve.logs.filter(decisionFor('carol@grey.test', 'alice@local.test')).at(-1);
    assert.ok((last?.stages as string[]).some((s) => s.startsWith('sender-callout=deliverable')), JSON.stringify(last));
  });

  it('postmaster is reachable from a failing sender, without greylisting', async () => {
    const sent = await sendMail(receiver, 'nobody@good.test', 'postmaster@local.test', { data: true });
    assert.equal(sent.code, SWAKS_OK, sent.transcript);
    assert.match(sent.rcpt, /^250 /);
    const decision = await serve.waitForLog(decisionFor('nobody@good.test', 'postmaster@local.test'), 'the decision about postmaster');
    assert.equal(decision.decidedBy, 'postmaster');
    assert.equal(decision.action, 'DUNNO');
    await waitForMaillog(receiver, /discard\[\d+\]: \w+: to=<postmaster@local\.test>, .*status=sent/);
  });

  it('a bounce (null sender) to postmaster is accepted at once', async () => {
    const sent = await sendMail(receiver, '<>', 'postmaster@local.test', { data: true });
    assert.equal(sent.code, SWAKS_OK, sent.transcript);
    assert.match(sent.rcpt, /^250 /);
    const decision = await serve.waitForLog(decisionFor('', 'postmaster@local.test'), 'the decision about the bounce');
    assert.equal(decision.decidedBy, 'postmaster');
  });

  it('a bounce to a user is not called out, is greylisted as postgrey does, then delivered with the HELO identity\'s SPF result', async () => {
    const first = await sendMail(receiver, '<>', 'alice@local.test');
    assert.equal(first.rcpt, `450 4.2.0 <alice@local.test>: Recipient address rejected: Greylisted, please try again in ${GREYLIST_DELAY_SECONDS} seconds`);
    const sent = await sendPastGreylist('<>', 'alice@local.test');
    assert.equal(sent.code, SWAKS_OK, sent.transcript);
    const last = serve.logs.filter(decisionFor('', 'alice@local.test')).at(-1);
    assert.ok((last?.stages as string[]).includes('sender-callout=none: null sender: nothing to verify'), JSON.stringify(last));
    await waitForMaillog(receiver, /warning: header \S+: .* from \S+; from=<> to=<alice@local\.test>/);
    assert.deepEqual(deliveredHeaders('', 'alice@local.test'), [
      `Authentication-Results: ${AUTHSERV}; spf=none (domain of postmaster@client.sender.test does not designate permitted sender hosts) smtp.mailfrom=postmaster@client.sender.test`,
    ]);
    assert.doesNotMatch(receiver.maillog(), /warning: .*(policy|check_policy_service)/, 'Postfix took every answer as it is');
  });
});


describe('DEFER_IF_PERMIT behind real Postfix: the stages after it still run', () => {
  let dipDns: DnsTestServer;
  let dipDataDir: string;
  let dipServe: ServeProcess;
  let dipReceiver: PostfixInstance;
  let dipExchangers: SmtpTestServer[];

  before(async () => {
    dipDataDir = mkdtempSync(join(tmpdir(), 'callout-pipeline-dip-e2e-'));
    // frank@slow.test exists, but its MX takes SLOW_RCPT_MS to say so; anyone else (callout's
    // random catch-all probe, nobody@soft.test) is unknown at once.
    const slowFrank: Partial<SmtpScript> = {
      rcpt: (arg) => {
        const path = pathOf(arg).toLowerCase();
        if (path === 'frank@slow.test') return { reply: '250 2.1.5 Ok', delayMs: SLOW_RCPT_MS };
        return `550 5.1.1 <${path}>: Recipient address rejected: User unknown in local recipient table`;
      },
    };
    dipExchangers = await startSmtpServers([SLOW_MX, SOFT_MX], (host) => (host === SLOW_MX ? slowFrank : usersOnly([])));
    dipDns = await startDnsServer({
      'slow.test': { MX: [{ priority: 10, exchange: 'mx.slow.test' }] },
      'soft.test': { MX: [{ priority: 10, exchange: 'mx.soft.test' }], TXT: ['v=spf1 ip4:192.0.2.0/24 ~all'] },
      'mx.slow.test': { A: [SLOW_MX] },
      'mx.soft.test': { A: [SOFT_MX] },
    });
    const configPath = join(dipDataDir, 'callout.yaml');
    const stages = [
      { name: 'spf', authservId: AUTHSERV, actions: { softfail: 'defer-if-permit' } },
      { name: 'sender-callout', receiver: AUTHSERV },
      { name: 'greylist', delay: `${DIP_GREYLIST_DELAY_SECONDS}s`, retryWindow: '1h' },
    ];
    writeFileSync(configPath, stringify({ policy: { decisionTimeout: `${DIP_DECISION_TIMEOUT_SECONDS}s`, stages } }));
    dipServe = await startCallout(configPath, dipDataDir, dipDns.address, dipExchangers[0]?.port);
    dipReceiver = await startReceiver('pipeline-dip-receiver', DIP_RECEIVER, DIP_SMTP_PORT, dipServe.policyAddress);
  });

  after(async () => {
    await dipServe?.stop();
    await dipReceiver?.stop();
    await Promise.all((dipExchangers ?? []).map((s) => s.close()));
    await dipDns?.close();
    if (dipDataDir) rmSync(dipDataDir, { recursive: true, force: true });
  });

  it('a callout still in progress at the deadline is answered 450, and greylist records the triplet all the same: the retry is delivered', async () => {
    const inProgress = '450 4.7.1 <alice@local.test>: Recipient address rejected: Sender address verification in progress';
    const first = await sendMail(dipReceiver, 'frank@slow.test', 'alice@local.test');
    assert.equal(first.code, SWAKS_NO_RCPT, first.transcript);
    assert.equal(first.rcpt, inProgress);
    const decision = await dipServe.waitForLog(decisionFor('frank@slow.test', 'alice@local.test'), 'the decision about frank');
    assert.equal(decision.decidedBy, 'sender-callout');
    assert.ok((decision.stages as string[]).some((s) => s.startsWith('sender-callout=in-progress')), JSON.stringify(decision));
    // The greylist stage ran behind the callout's DEFER_IF_PERMIT: the triplet dates from this attempt.
    const greylisted = await dipServe.waitForLog((l) => l.msg === 'greylisted' && l.sender === 'frank@slow.test', 'the greylisting of the first attempt');
    assert.equal(greylisted.reason, 'new');

    // A sending server retries: while the callout runs the answer stays "in progress"; once its
    // verdict is cached the greylist delay is long past, so the next attempt is the last.
    const deadline = Date.now() + DIP_RETRY_DEADLINE_MS;
    let sent = await sendMail(dipReceiver, 'frank@slow.test', 'alice@local.test', { data: true });
    while (sent.rcpt === inProgress) {
      if (Date.now() > deadline) throw new Error(`the callout was still in progress after ${DIP_RETRY_DEADLINE_MS} ms:\n${sent.transcript}`);
      await new Promise((resolve) => setTimeout(resolve, RETRY_POLL_MS));
      sent = await sendMail(dipReceiver, 'frank@slow.test', 'alice@local.test', { data: true });
    }
    assert.equal(sent.code, SWAKS_OK, sent.transcript);
    assert.match(sent.rcpt, /^250 /);
    await waitForMaillog(dipReceiver, /discard\[\d+\]: \w+: to=<alice@local\.test>, .*status=sent/);
    const last = dipServe.logs.filter(decisionFor('frank@slow.test', 'alice@local.test')).at(-1);
    assert.ok((last?.stages as string[]).some((s) => s.startsWith('sender-callout=deliverable')), JSON.stringify(last));
    assert.equal(dipServe.logs.filter((l) => l.msg === 'greylisted' && l.sender === 'frank@slow.test').length, 1, 'greylisted once, at the first attempt');
  });

  it('an SPF softfail answered defer-if-permit gives way to the callout\'s 550 for a sender that does not exist', async () => {
    const sent = await sendMail(dipReceiver, 'nobody@soft.test', 'alice@local.test');
    assert.equal(sent.code, SWAKS_NO_RCPT, sent.transcript);
    assert.equal(sent.rcpt, '550 5.7.1 <alice@local.test>: Recipient address rejected: Sender address rejected: mx.soft.test [127.0.0.89] answered RCPT TO:<nobody@soft.test> with 550 5.1.1 <nobody@soft.test>: Recipient address rejected: User unknown in local recipient table');
    const decision = await dipServe.waitForLog(decisionFor('nobody@soft.test', 'alice@local.test'), 'the decision about nobody');
    assert.equal(decision.decidedBy, 'sender-callout');
    assert.ok((decision.stages as string[]).some((s) => s.startsWith('spf=softfail')), JSON.stringify(decision));
    assert.ok(!(decision.stages as string[]).some((s) => s.startsWith('greylist=')), 'no triplet for a refused sender');
    assert.doesNotMatch(dipReceiver.maillog(), /warning: .*(policy|check_policy_service)/, 'Postfix took every answer as it is');
  });
});
