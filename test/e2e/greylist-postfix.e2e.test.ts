/**
 * NAME
 *   test/e2e/greylist-postfix.e2e - greylisting and rate limits answered to real Postfix
 *
 * DESCRIPTION
 *   `callout serve` runs as a child process with two stages, ratelimit (two messages per client
 *   an hour) then greylist (a delay of 2 s), and a Postfix instance for local.test asks it at
 *   RCPT (check_policy_service after reject_unauth_destination). swaks sends from 127.0.0.1:
 *     1. the first attempt is greylisted: Postfix answers 450 4.2.0 with callout's text, which
 *        says when to retry (DEFER_IF_PERMIT: Postfix defers unless a later restriction
 *        rejects);
 *     2. the retry after the delay passes, and the message is delivered with the X-Greylist
 *        header callout asked Postfix to prepend (a header_checks WARN rule logs it);
 *     3. a third message is over the rate limit: 450 4.7.1 with the limit's text.
 *   The delay is real time (2 s): Postfix sends no test clock.
 *
 * LIMITS
 *   Needs root, postfix and swaks (.ci/run installs them). The tests run in order, as one
 *   sending server's attempts would.
 */

import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { startDnsServer } from '../support/dns-server.js';
import type { DnsTestServer } from '../support/dns-server.js';
import { SWAKS_NO_RCPT, SWAKS_OK, sendMail, startPostfix, stopAllPostfix, waitForMaillog } from '../support/postfix.js';
import type { PostfixInstance } from '../support/postfix.js';
import { startServeProcess } from '../support/serve-process.js';
import type { ServeProcess } from '../support/serve-process.js';

const SMTP_PORT = 25450;
const RECEIVER = '127.0.0.50';
const DELAY_SECONDS = 2;

let dns: DnsTestServer;
let dataDir: string;
let serve: ServeProcess;
let receiver: PostfixInstance;

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'callout-greylist-e2e-'));
  // Postfix's cleanup (user postfix) reads the header_checks map from here.
  chmodSync(dataDir, 0o755);
  const headerChecks = join(dataDir, 'header_checks');
  writeFileSync(headerChecks, '/^X-Greylist: / WARN greylist header\n', { mode: 0o644 });
  const configPath = join(dataDir, 'callout.yaml');
  const stages = [
    { name: 'ratelimit', limits: [{ name: 'client-msgs', per: 'client', count: 'messages', max: 2, window: '1h' }] },
    { name: 'greylist', delay: `${DELAY_SECONDS}s`, retryWindow: '1h' },
  ];
  writeFileSync(configPath, stringify({ policy: { stages } }));
  // Nothing here looks anything up; a local DNS server keeps any lookup on loopback all the same.
  dns = await startDnsServer({});
  serve = await startServeProcess(['--config', configPath, '--listen', '127.0.0.1:0', '--data-dir', dataDir, '--metrics', '127.0.0.1:0', '--dns-server', dns.address]);
  receiver = await startPostfix({
    name: 'greylist-receiver',
    host: RECEIVER,
    port: SMTP_PORT,
    myhostname: 'mx.local.test',
    domains: { 'local.test': ['alice'] },
    policyService: `inet:${serve.policyAddress}`,
    extraMain: { header_checks: `regexp:${headerChecks}` },
  });
});

after(async () => {
  // stop() of a daemon that has exited already just reports how it ended.
  await serve?.stop();
  await stopAllPostfix();
  await dns?.close();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

describe('greylisting and rate limits behind real Postfix', () => {
  it('greylists the first attempt with a 450 that says when to retry', async () => {
    const sent = await sendMail(receiver, 'bob@sender.test', 'alice@local.test');
    assert.equal(sent.code, SWAKS_NO_RCPT, sent.transcript);
    assert.equal(sent.rcpt, `450 4.2.0 <alice@local.test>: Recipient address rejected: Greylisted, please try again in ${DELAY_SECONDS} seconds`);
    const line = await serve.waitForLog((l) => l.msg === 'greylisted', 'the deferral');
    assert.equal(line.reason, 'new');
  });

  it('passes the retry after the delay, and Postfix delivers it with the X-Greylist header', async () => {
    await sleep(DELAY_SECONDS * 1000 + 300);
    const sent = await sendMail(receiver, 'bob@sender.test', 'alice@local.test', { data: true });
    assert.equal(sent.code, SWAKS_OK, sent.transcript);
    assert.match(sent.rcpt, /^250 /);
    const header = await waitForMaillog(receiver, /warning: header X-Greylist: delayed \d+ seconds by callout at \S+; .* greylist header/);
    assert.match(header, /delayed [2-9] seconds/);
    await waitForMaillog(receiver, /postfix\/discard\[\d+\]: \w+: to=<alice@local\.test>, .*status=sent/);
  });

  it('defers a third message from the client over its rate limit, with the limit\'s text', async () => {
    const sent = await sendMail(receiver, 'carol@sender.test', 'alice@local.test');
    assert.equal(sent.code, SWAKS_NO_RCPT, sent.transcript);
    assert.match(sent.rcpt, /^450 4\.7\.1 <alice@local\.test>: Recipient address rejected: Rate limit client-msgs exceeded for 127\.0\.0\.1: more than 2 messages in 1h, try again in \d+ seconds$/);
    const decision = await serve.waitForLog((l) => l.msg === 'decision' && l.sender === 'carol@sender.test', 'the rate-limit decision');
    assert.equal(decision.decidedBy, 'ratelimit');
    assert.doesNotMatch(receiver.maillog(), /warning: .*(policy|check_policy_service)/, 'Postfix took every answer as it is');
  });
});
