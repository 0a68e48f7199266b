// `callout serve` with every stage, asked anything Postfix could pass on: any sender, recipient,
// client, HELO name, state and SASL name. Every request is answered with an action Postfix
// reads, no stage faults (odd input is a verdict, not an exception), and the daemon goes on
// answering a plain request the same way.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import fc from 'fast-check';
import type { Daemon } from '../../src/policy/daemon.js';
import { startDnsServer } from '../support/dns-server.js';
import type { DnsTestServer } from '../support/dns-server.js';
import { startSmtpServers, usersOnly } from '../support/smtp-server.js';
import type { SmtpTestServer } from '../support/smtp-server.js';
import { PolicyClient, postfixRequest } from '../support/policy-client.js';
import { startDaemonWithClient } from '../support/daemon.js';
import { captureLog } from '../support/log-capture.js';
import { mxZone } from '../verify/fixture.js';

const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

let dns: DnsTestServer;
let smtp: SmtpTestServer[];
let daemon: Daemon;
let client: PolicyClient;
const { lines: logs, log } = captureLog();

before(async () => {
  dns = await startDnsServer({
    ...mxZone({ 'sender.test': '127.0.0.2', 'example.test': '127.0.0.3' }),
    'spf.test': { TXT: ['v=spf1 ip4:127.0.0.0/8 include:spf.test redirect=nowhere.test -all'], MX: [{ priority: 10, exchange: 'mx1.sender.test' }] },
    '2.0.0.127.in-addr.arpa': { PTR: ['mx1.sender.test'] },
  });
  smtp = await startSmtpServers(['127.0.0.2', '127.0.0.3'], () => usersOnly(['bob', 'alice', 'postmaster']));
  cleanups.push(async () => {
    await Promise.all(smtp.map((s) => s.close()));
    await dns.close();
  });
  const started = await startDaemonWithClient(
    {
      overrides: {
        store: { kind: 'memory' },
        dns: { servers: [dns.address], timeout: '300ms', tries: 1 },
        callout: { helo: 'verifier.callout.test', port: smtp[0]!.port, allowTargets: ['127.0.0.0/8', '::1/128'], timeouts: { overall: '2s' } },
        policy: {
          listen: '127.0.0.1:0',
          decisionTimeout: '3s',
          stages: [
            { name: 'tarpit', sleep: '1ms', maxSleep: '5ms' },
            { name: 'allowlist', clients: ['192.0.2.0/24'], senders: ['@allowed.test'] },
            { name: 'postmaster' },
            { name: 'sender-syntax' },
            { name: 'batv', domains: ['example.test'], keys: [{ keynum: 0, secret: 'fuzzing secret' }] },
            { name: 'spf' },
            { name: 'iprev' },
            { name: 'sender-callout' },
            { name: 'recipient-callforward', hosts: ['127.0.0.3'], port: smtp[1]!.port },
            { name: 'greylist', delay: '1s', whitelistClients: ['/^mail\\d+\\./', '.trusted.test'], whitelistRecipients: ['postmaster@'] },
            { name: 'ratelimit', limits: [{ per: 'sender-domain', count: 'recipients', max: 50, window: '1m' }, { per: 'client', count: 'messages', max: 20, window: '1m', action: 'warn' }] },
          ],
        },
        metrics: { listen: '' },
      },
      log,
    },
    cleanups,
  );
  daemon = started.daemon;
  client = started.client;
});

/**
 * Text an smtpd could pass on in one attribute: anything but a newline (the protocol's framing)
 * and NUL (a C string ends there; the protocol's decoder closes a connection that sends one).
 */
const text = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'grapheme', maxLength: 20 }),
  fc.constantFrom('', ' ', '<>', '"', '\\', '@', '@@', '.', '[', ']', '[IPv6:::1]', '%', 'x'.repeat(1000), '\u0001', '\r', '\u00ff', '\ud800', 'ü@ü', 'unknown'),
).map((value) => value.replace(/[\n\0]/g, ' '));

const localPart = fc.oneof(
  fc.constantFrom('bob', 'alice', 'nobody', 'postmaster', 'Postmaster', 'bob+ext', '"a b"', '"a\\"b"', 'a..b', '.a', 'a.', 'ü', 'x'.repeat(70)),
  fc.constantFrom('prvs=0001abcdef=bob', 'prvs=9zzzzzz=bob', 'SRS0=HHH=TT=sender.test=bob', 'SRS1=x=y==HHH=TT=a=b', 'bounce-123-bob=sender.test'),
  fc.string({ maxLength: 12 }),
);
const domain = fc.oneof(
  fc.constantFrom('sender.test', 'example.test', 'spf.test', 'allowed.test', 'nowhere.test', 'SENDER.TEST', 'sender.test.', 'ü.test', 'xn--tda.test', '[127.0.0.2]', '[127.0.0.99]', '[IPv6:::1]', '[IPv6:zz]', '[300.1.1.1]', 'localhost', '', 'a'.repeat(300), '-a.test', 'a_b.test'),
  fc.domain(),
  fc.string({ maxLength: 12 }),
);
const address = fc.oneof(
  { arbitrary: fc.tuple(fc.constantFrom('bob', 'alice', 'postmaster', 'nobody', 'bob+x'), fc.constantFrom('sender.test', 'example.test', 'spf.test')).map(([local, at]) => `${local}@${at}`), weight: 3 },
  fc.tuple(localPart, domain).map(([local, at]) => `${local}@${at}`),
  fc.tuple(localPart, domain).map(([local, at]) => `<${local}@${at}>`),
  text,
);
const clientAddress = fc.oneof(
  fc.ipV4(),
  fc.ipV6(),
  fc.constantFrom('127.0.0.2', '192.0.2.7', '::ffff:127.0.0.2', '::1', 'fe80::1%eth0', 'unknown', '', '127.1', '0', '1.2.3.4.5'),
  text,
);

const request = fc.record(
  {
    protocol_state: fc.oneof({ arbitrary: fc.constant('RCPT'), weight: 4 }, fc.constantFrom('MAIL', 'DATA', 'END-OF-MESSAGE', 'CONNECT', 'EHLO', 'VRFY', 'ETRN', 'rcpt'), text),
    protocol_name: fc.constantFrom('ESMTP', 'SMTP', 'LMTP', ''),
    client_address: clientAddress,
    client_name: fc.oneof(fc.constantFrom('unknown', 'mx1.sender.test', 'mail7.x.test', 'a.trusted.test'), text),
    reverse_client_name: fc.oneof(fc.constantFrom('unknown', 'mx1.sender.test'), text),
    client_port: fc.oneof(fc.integer({ min: 0, max: 70000 }).map(String), text),
    helo_name: fc.oneof(fc.constantFrom('mx1.sender.test', '[127.0.0.2]', 'localhost'), text),
    sender: address,
    recipient: address,
    recipient_count: fc.oneof(fc.nat(1000).map(String), text),
    instance: fc.oneof(fc.constantFrom('a', 'b', 'c'), text),
    size: fc.oneof(fc.nat().map(String), text),
    sasl_username: fc.oneof(fc.constant(''), text),
  },
  { requiredKeys: [] },
);

/** The answer, or a failure once `seconds` have passed: the decision deadline is 3 s, so a request still unanswered then hangs. */
async function withinSeconds<T>(seconds: number, answer: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${seconds} s`)), seconds * 1000);
  });
  try {
    return await Promise.race([answer, late]);
  } finally {
    clearTimeout(timer);
  }
}

describe('callout serve fuzzed', () => {
  it('answers any request with an action Postfix reads, and no stage faults on it', async () => {
    const plain = postfixRequest({ client_address: '192.0.2.10', sender: 'someone@allowed.test' });
    await fc.assert(
      fc.asyncProperty(request, async (overrides) => {
        const before = logs.length;
        const asked = performance.now();
        const action = await withinSeconds(10, client.request(postfixRequest(overrides as Record<string, string>)));
        // policy.decisionTimeout (3 s) plus the grace a late stage gets (0.5 s), and some slack.
        assert.ok(performance.now() - asked < 4000, `answered after ${Math.round(performance.now() - asked)} ms: ${JSON.stringify(overrides)}`);
        // An action is a word (DUNNO, PREPEND, DEFER_IF_PERMIT...) or a reply code, then text on the same line.
        assert.match(action, /^(?:[A-Z_]+|[245]\d\d)(?: [^\n]*)?$/, JSON.stringify(overrides));
        const faults = logs.slice(before).filter((line) => line.msg === 'stage fault' || (typeof line.level === 'number' && line.level >= 50));
        assert.deepEqual(faults, [], JSON.stringify(overrides));
        assert.equal(await withinSeconds(10, client.request(plain)), 'DUNNO', `after ${JSON.stringify(overrides)}`);
      }),
      { numRuns: 500 },
    );
    assert.ok(!client.isClosed && daemon.policyAddress !== '', '!client.isClosed && daemon.policyAddress !== \'\'');
  });
});
