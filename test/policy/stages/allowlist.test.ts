// The allowlist and postmaster stages as Postfix sees them: `callout serve` over real sockets.
// Every sender here would be rejected by the callout that follows, so a DUNNO or OK decided by
// these stages, with no connection to the sender's MX, proves the entry matched; a 550 proves it
// did not.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { AddressList, allowlistStage, domainEntry, nameMatches, namePatterns } from '../../../src/policy/stages/allowlist.js';
import { elapsedMs } from '../../support/fuzz.js';
import { postmasterStage } from '../../../src/policy/stages/postmaster.js';
import { parseMailbox } from '../../../src/address/index.js';
import { ConfigError } from '../../../src/core/errors.js';
import { startDnsServer } from '../../support/dns-server.js';
import { startSmtpServers, usersOnly } from '../../support/smtp-server.js';
import type { SmtpTestServer } from '../../support/smtp-server.js';
import { postfixRequest } from '../../support/policy-client.js';
import { startDaemonWithClient } from '../../support/daemon.js';
import { mxZone } from '../../verify/fixture.js';
import { captureLog } from '../../support/log-capture.js';
import { stageContext } from '../../support/stage-context.js';
import { ManualClock } from '../../support/manual-time.js';
import { createLogger } from '../../../src/core/log.js';
import { validateConfig } from '../../../src/config/schema.js';
import { buildPipeline } from '../../../src/policy/pipeline.js';
import { MemoryStore } from '../../../src/store/index.js';

const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

// 127.0.0.30 is this file's share of loopback (other test files run in parallel). Every
// sender domain has one MX that knows only bob.
const MX_HOST = '127.0.0.30';
const SENDER_DOMAINS = ['users.test', 'example.test', 'lists.test', 'partner.test', 'sub.partner.test', 'vendor.test', 'xn--bcher-kva.test'];

interface World {
  ask(overrides: Record<string, string>): Promise<{ action: string; decidedBy: unknown; stages: string[] }>;
  /** Connections the sender's MX has had so far: each is a callout. */
  callouts(): number;
}

let instances = 0;

async function setup(stages: Array<Record<string, unknown>>): Promise<World> {
  const dns = await startDnsServer(mxZone(Object.fromEntries(SENDER_DOMAINS.map((d) => [d, MX_HOST]))));
  const servers = await startSmtpServers([MX_HOST], () => usersOnly(['bob']));
  const mx: SmtpTestServer = servers[0]!;
  cleanups.push(async () => {
    await mx.close();
    await dns.close();
  });
  const { lines: logs, log: logger } = captureLog();
  const { client } = await startDaemonWithClient({
    overrides: {
      store: { kind: 'memory' },
      // 2 s for the DNS server in this process to answer: a loaded machine may not run it at once.
      dns: { servers: [dns.address], timeout: '2s', tries: 1 },
      callout: { helo: 'verifier.callout.test', port: mx.port, allowTargets: ['127.0.0.0/8'], timeouts: { overall: '5s' } },
      policy: { listen: '127.0.0.1:0', stages },
      metrics: { listen: '' },
    },
    log: logger,
  }, cleanups);
  return {
    callouts: () => mx.connectionCount,
    async ask(overrides) {
      const instance = `al-${++instances}`;
      const action = await client.request(postfixRequest({ sender: 'nobody@users.test', ...overrides, instance }));
      const line = logs.find((l) => l.msg === 'decision' && l.instance === instance);
      assert.ok(line, `a decision line for ${JSON.stringify(overrides)}`);
      assert.equal(line.action, action, 'the log line shows the answer given');
      return { action, decidedBy: line.decidedBy, stages: line.stages as string[] };
    },
  };
}

const CALLOUT_REJECT = /^550 5\.7\.1 Sender address rejected: .*550 5\.1\.1/;

/** Asserts the allowlist (or postmaster) stage ended the request with `action` and this reason. */
async function assertListed(world: World, overrides: Record<string, string>, action: string, stage: string, reason: string): Promise<void> {
  const before = world.callouts();
  const answer = await world.ask(overrides);
  const what = JSON.stringify(overrides);
  assert.equal(answer.action, action, what);
  assert.equal(answer.decidedBy, stage, what);
  assert.ok(answer.stages.includes(`${stage}=${reason}`), `${what}: ${JSON.stringify(answer.stages)}`);
  assert.ok(!answer.stages.some((s) => s.startsWith('sender-callout=')), `${what}: the callout did not run`);
  assert.equal(world.callouts(), before, `${what}: no connection to the sender's MX`);
}

async function assertNotListed(world: World, overrides: Record<string, string>): Promise<void> {
  const answer = await world.ask(overrides);
  const what = JSON.stringify(overrides);
  assert.match(answer.action, CALLOUT_REJECT, what);
  assert.equal(answer.decidedBy, 'sender-callout', what);
}

describe('allowlist', () => {
  it('lets listed client names past the callout: exact names and .domain for the domain and its subdomains', async () => {
    const world = await setup([{ name: 'allowlist', clientNames: ['mail.trusted.test', '.Friends.test'] }, { name: 'sender-callout' }]);
    const listed = (name: string, shown = name) =>
      assertListed(world, { client_name: name, reverse_client_name: name }, 'DUNNO', 'allowlist', `listed: client name ${shown} is allow-listed`);
    await listed('mail.trusted.test');
    await listed('MAIL.Trusted.test.', 'MAIL.Trusted.test.');
    await listed('relay.friends.test');
    await listed('a.b.friends.test');
    await listed('friends.test');
    for (const name of ['other.trusted.test', 'trusted.test', 'mail.trusted.test.evil.test', 'notfriends.test', 'friends.test.evil.test']) {
      await assertNotListed(world, { client_name: name, reverse_client_name: name });
    }
    // Postfix sends client_name=unknown when the reverse name is not forward-confirmed: the
    // unverified reverse_client_name must not be trusted.
    await assertNotListed(world, { client_name: 'unknown', reverse_client_name: 'mail.trusted.test' });
  });

  it('lets a client that authenticated (sasl_username) past the callout, unless authenticated: false', async () => {
    const world = await setup([{ name: 'allowlist' }, { name: 'sender-callout' }]);
    await assertListed(world, { sasl_method: 'PLAIN', sasl_username: 'alice' }, 'DUNNO', 'allowlist', 'authenticated: client authenticated as alice');
    await assertNotListed(world, { sasl_method: '', sasl_username: '' });
    const strict = await setup([{ name: 'allowlist', authenticated: false }, { name: 'sender-callout' }]);
    await assertNotListed(strict, { sasl_method: 'PLAIN', sasl_username: 'alice' });
  });

  it('lets listed senders past the callout: addresses, domains and @domains', async () => {
    const world = await setup([{ name: 'allowlist', senders: ['List@lists.test', 'partner.test', '@vendor.test'] }, { name: 'sender-callout' }]);
    const listed = (sender: string) => assertListed(world, { sender }, 'DUNNO', 'allowlist', `listed: sender ${sender} is allow-listed`);
    await listed('list@lists.test');
    await listed('LIST@Lists.Test');
    await listed('nobody@partner.test');
    await listed('nobody@PARTNER.TEST');
    await listed('nobody@vendor.test');
    // An address entry lists that address only; a domain entry that domain, not its subdomains.
    await assertNotListed(world, { sender: 'other@lists.test' });
    await assertNotListed(world, { sender: 'nobody@sub.partner.test' });
    await assertNotListed(world, { sender: 'nobody@users.test' });
  });

  it('lets mail to listed recipients past the callout: addresses, domains and @domains', async () => {
    const world = await setup([{ name: 'allowlist', recipients: ['vip@example.test', 'backup.test', '@relay.test'] }, { name: 'sender-callout' }]);
    const listed = (recipient: string) => assertListed(world, { recipient }, 'DUNNO', 'allowlist', `listed: recipient ${recipient} is allow-listed`);
    await listed('vip@example.test');
    await listed('VIP@Example.Test');
    await listed('anyone@backup.test');
    await listed('anyone@relay.test');
    await assertNotListed(world, { recipient: 'alice@example.test' });
    await assertNotListed(world, { recipient: 'anyone@sub.backup.test' });
    // A recipient entry is not a sender entry.
    await assertNotListed(world, { sender: 'vip@example.test', recipient: 'alice@example.test' });
  });

  it('matches an internationalised domain entry (RFC 6531) whichever form the sender is written in', async () => {
    const world = await setup([{ name: 'allowlist', senders: ['bücher.test'] }, { name: 'sender-callout' }]);
    await assertListed(world, { sender: 'nobody@xn--bcher-kva.test' }, 'DUNNO', 'allowlist', 'listed: sender nobody@xn--bcher-kva.test is allow-listed');
    await assertListed(world, { sender: 'nobody@bücher.test' }, 'DUNNO', 'allowlist', 'listed: sender nobody@bücher.test is allow-listed');
  });

  it('matches an address entry whose domain is internationalised, as written and in A-labels', async () => {
    const world = await setup([{ name: 'allowlist', senders: ['list@bücher.test'], recipients: ['vip@bücher.test'] }, { name: 'sender-callout' }]);
    await assertListed(world, { sender: 'list@bücher.test' }, 'DUNNO', 'allowlist', 'listed: sender list@bücher.test is allow-listed');
    await assertListed(world, { sender: 'list@xn--bcher-kva.test' }, 'DUNNO', 'allowlist', 'listed: sender list@xn--bcher-kva.test is allow-listed');
    await assertListed(world, { recipient: 'vip@bücher.test' }, 'DUNNO', 'allowlist', 'listed: recipient vip@bücher.test is allow-listed');
    await assertNotListed(world, { sender: 'other@bücher.test' });
  });

  it('lets listed clients past the callout: IPv4 and IPv6, single addresses and CIDRs', async () => {
    const world = await setup([{ name: 'allowlist', clients: ['198.51.100.7', '2001:db8::/32'] }, { name: 'sender-callout' }]);
    await assertListed(world, { client_address: '198.51.100.7' }, 'DUNNO', 'allowlist', 'listed: client 198.51.100.7 is allow-listed');
    await assertListed(world, { client_address: '2001:db8:1::25' }, 'DUNNO', 'allowlist', 'listed: client 2001:db8:1::25 is allow-listed');
    await assertNotListed(world, { client_address: '198.51.100.8' });
    await assertNotListed(world, { client_address: '2001:db9::25' });
  });

  it('runs at MAIL too, where sender checks may be configured: a listed client is let past them there', async () => {
    const world = await setup([
      { name: 'allowlist', states: ['MAIL', 'RCPT'], clients: ['198.51.100.7'] },
      { name: 'sender-syntax', states: ['MAIL', 'RCPT'] },
      { name: 'sender-callout', states: ['MAIL', 'RCPT'] },
    ]);
    const mail = { protocol_state: 'MAIL', recipient: '' };
    await assertListed(world, { ...mail, client_address: '198.51.100.7', sender: 'bad sender@@users.test' }, 'DUNNO', 'allowlist', 'listed: client 198.51.100.7 is allow-listed');
    await assertListed(world, { ...mail, client_address: '198.51.100.7' }, 'DUNNO', 'allowlist', 'listed: client 198.51.100.7 is allow-listed');
    const other = await world.ask({ ...mail, client_address: '198.51.100.8' });
    assert.match(other.action, CALLOUT_REJECT, 'a client not listed is checked at MAIL');
  });

  it('answers acceptAction OK for every kind of entry, and only for its own stage', async () => {
    const world = await setup([
      { name: 'allowlist', acceptAction: 'OK', clients: ['203.0.113.0/24'], clientNames: ['mail.trusted.test'], senders: ['partner.test'], recipients: ['vip@example.test'] },
      { name: 'postmaster' },
      { name: 'sender-callout' },
    ]);
    await assertListed(world, { client_address: '203.0.113.9' }, 'OK', 'allowlist', 'listed: client 203.0.113.9 is allow-listed');
    await assertListed(world, { client_name: 'mail.trusted.test' }, 'OK', 'allowlist', 'listed: client name mail.trusted.test is allow-listed');
    await assertListed(world, { sender: 'nobody@partner.test' }, 'OK', 'allowlist', 'listed: sender nobody@partner.test is allow-listed');
    await assertListed(world, { recipient: 'vip@example.test' }, 'OK', 'allowlist', 'listed: recipient vip@example.test is allow-listed');
    await assertListed(
      world,
      { recipient: 'postmaster@example.test' },
      'DUNNO',
      'postmaster',
      'role: postmaster@example.test is a role address that must always be reachable (RFC 5321 §4.5.1, RFC 2142)',
    );
    await assertNotListed(world, {});
  });
});

describe('postmaster', () => {
  const role = (recipient: string) => `role: ${recipient} is a role address that must always be reachable (RFC 5321 §4.5.1, RFC 2142)`;

  it('keeps abuse@ and postmaster@ reachable from a sender the callout would reject', async () => {
    const world = await setup([{ name: 'postmaster' }, { name: 'sender-callout' }]);
    for (const recipient of ['abuse@example.test', 'Abuse@Example.Test', 'postmaster@example.test', 'POSTMASTER@example.test', 'postmaster']) {
      await assertListed(world, { recipient }, 'DUNNO', 'postmaster', role(recipient));
    }
    for (const recipient of ['abuser@example.test', 'abuse.team@example.test', 'alice@example.test']) {
      await assertNotListed(world, { recipient });
    }
  });

  it('follows the configured localParts and acceptAction', async () => {
    const world = await setup([{ name: 'postmaster', localParts: ['Hostmaster'], acceptAction: 'OK' }, { name: 'sender-callout' }]);
    await assertListed(world, { recipient: 'hostmaster@example.test' }, 'OK', 'postmaster', role('hostmaster@example.test'));
    await assertNotListed(world, { recipient: 'abuse@example.test' });
    await assertListed(world, { recipient: 'postmaster@example.test' }, 'OK', 'postmaster', role('postmaster@example.test'));
  });
});

describe('postmaster localParts as administrators write them', () => {
  /** The postmaster stage's result for an RCPT request to `recipient`, with the context the pipeline builds. */
  const resultFor = async (localParts: string[], recipient: string) => {
    const stage = postmasterStage.create({ localParts, acceptAction: 'DUNNO' }, {} as never);
    return (await stage.evaluate(stageContext({ protocol_state: 'RCPT', sender: 'user@sender.test', recipient }))).result;
  };

  it('folds only A-Z: a UTF-8 local part whose Unicode lower case is a role is no role', async () => {
    assert.equal(await resultFor(['Kontakt'], 'KONTAKT@example.test'), 'role');
    assert.equal(await resultFor(['Kontakt'], '\u212Aontakt@example.test'), 'other');
  });

  it('takes a bare postmaster without a domain in any case (RFC 5321 §4.5.1: case-insensitive)', async () => {
    for (const recipient of ['<Postmaster>', 'POSTMASTER', 'postmaster']) {
      assert.equal(await resultFor(['abuse'], recipient), 'role', recipient);
    }
    for (const recipient of ['<abuse>', 'postmasters', '<>']) {
      assert.equal(await resultFor(['abuse'], recipient), 'other', recipient);
    }
  });

  it('runs only at RCPT, where there is a recipient: a configuration naming another state is refused', () => {
    const clock = new ManualClock();
    for (const state of ['MAIL', 'DATA']) {
      const config = validateConfig({ policy: { stages: [{ name: 'postmaster', states: [state] }] } });
      assert.throws(
        () => buildPipeline(config, { resolver: undefined as never, store: new MemoryStore({ clock }), clock, log: createLogger('silent') }),
        (err: unknown) => err instanceof ConfigError && err.message === `policy.stages.0.states (postmaster): got ${state}: this stage runs only in RCPT`,
        state,
      );
    }
  });

  it('refuses an entry that is no local part, which would leave that role unprotected', () => {
    for (const entry of ['abuse@example.test', '', '  ', 'abuse team']) {
      const parsed = postmasterStage.options.safeParse({ localParts: ['hostmaster', entry] });
      assert.equal(parsed.success, false, JSON.stringify(entry));
      assert.deepEqual(parsed.error?.issues[0]?.path, ['localParts', 1]);
      assert.match(parsed.error?.issues[0]?.message ?? '', /expected a local part such as abuse, without @domain/);
    }
    assert.deepEqual(postmasterStage.options.parse({ localParts: [' Hostmaster ', 'abuse'] }).localParts, ['Hostmaster', 'abuse']);
  });
});

describe('allowlist entries as administrators write them', () => {
  it('ignores spaces around entries and a trailing dot (the DNS root) in names and domains', () => {
    const patterns = namePatterns(['  mail.trusted.test. ', '.friends.test.', '.Bücher.test', 'mail_1.legacy.test'], 'allowlist.clientNames');
    assert.ok(nameMatches(patterns, 'mail.trusted.test'), 'nameMatches(patterns, \'mail.trusted.test\')');
    assert.ok(nameMatches(patterns, 'smtp.friends.test'), 'nameMatches(patterns, \'smtp.friends.test\')');
    assert.ok(!nameMatches(patterns, 'evilfriends.test'), '!nameMatches(patterns, \'evilfriends.test\')');
    // Postfix sends client_name in A-labels, and lets an underscore through (valid_hostname).
    assert.ok(nameMatches(patterns, 'mx.xn--bcher-kva.test'), 'nameMatches(patterns, \'mx.xn--bcher-kva.test\')');
    assert.ok(nameMatches(patterns, 'MAIL_1.legacy.test'), 'nameMatches(patterns, \'MAIL_1.legacy.test\')');
    // An underscore in one label and a U-label in another: each label as Postfix sends it.
    assert.deepEqual(namePatterns(['a_b.Bücher.example'], 'allowlist.clientNames'), ['a_b.xn--bcher-kva.example']);
    const senders = new AddressList([' partner.test. ', 'List@Bücher.test'], 'allowlist.senders');
    const mailbox = (text: string) => {
      const parsed = parseMailbox(text, { utf8: true });
      assert.ok(parsed.ok, 'parsed.ok');
      return parsed.value;
    };
    assert.ok(senders.has(mailbox('anyone@partner.test')), 'senders.has(mailbox(\'anyone@partner.test\'))');
    assert.ok(senders.has(mailbox('list@xn--bcher-kva.test')), 'senders.has(mailbox(\'list@xn--bcher-kva.test\'))');
    assert.ok(!senders.has(mailbox('other@xn--bcher-kva.test')), '!senders.has(mailbox(\'other@xn--bcher-kva.test\'))');
    const literals = new AddressList(['[192.0.2.1]', '@[IPv6:2001:DB8::1]'], 'allowlist.recipients');
    assert.ok(literals.has(mailbox('postmaster@[192.0.2.1]')), 'literals.has(mailbox(\'postmaster@[192.0.2.1]\'))');
    assert.ok(literals.has(mailbox('abuse@[IPv6:2001:db8::1]')), 'literals.has(mailbox(\'abuse@[IPv6:2001:db8::1]\'))');
    assert.ok(!literals.has(mailbox('abuse@[192.0.2.2]')), '!literals.has(mailbox(\'abuse@[192.0.2.2]\'))');
  });

  it('folds only A-Z in an address entry: a UTF-8 local part whose Unicode lower case is the entry is another mailbox', () => {
    const recipients = new AddressList(['kate@example.test', 'Ärger@example.test'], 'allowlist.recipients');
    const mailbox = (text: string) => {
      const parsed = parseMailbox(text, { utf8: true });
      assert.ok(parsed.ok, 'parsed.ok');
      return parsed.value;
    };
    assert.ok(recipients.has(mailbox('KATE@Example.Test')), 'recipients.has(mailbox(\'KATE@Example.Test\'))');
    assert.ok(recipients.has(mailbox('Ärger@example.test')), 'recipients.has(mailbox(\'Ärger@example.test\'))');
    // The Kelvin sign lower-cases to an ASCII k: \u212Aate@ is not kate@ (RFC 6531), nor ärger@ Ärger@.
    assert.ok(!recipients.has(mailbox('\u212Aate@example.test')), '!recipients.has(mailbox(\'\\u212Aate@example.test\'))');
    assert.ok(!recipients.has(mailbox('ärger@example.test')), '!recipients.has(mailbox(\'ärger@example.test\'))');
  });

  it('takes an address entry written with a trailing dot (the DNS root), as a domain entry is', () => {
    const senders = new AddressList(['List@Partner.test.'], 'allowlist.senders');
    const parsed = parseMailbox('list@partner.test', { utf8: true });
    assert.ok(parsed.ok, 'parsed.ok');
    assert.ok(senders.has(parsed.value), 'senders.has(parsed.value)');
  });

  it('never matches client_name=unknown (no forward-confirmed name), even against a clientNames entry "unknown"', async () => {
    const stage = allowlistStage.create(allowlistStage.options.parse({ clientNames: ['unknown'] }) as never, {} as never);
    const verdict = await stage.evaluate(stageContext({ client_address: '192.0.2.9', client_name: 'unknown', sender: '', recipient: '' }));
    assert.equal(verdict.result, 'not-listed', verdict.reason);
  });

  it('refuses a client name that could never match, naming the list and the entry', () => {
    const refused = (entry: string, why: RegExp) =>
      assert.throws(() => namePatterns(['mail.trusted.test', entry], 'allowlist.clientNames'), (err: unknown) => err instanceof ConfigError && why.test(err.message), entry);
    refused('*.friends.test', /^allowlist\.clientNames: "\*\.friends\.test" is not a host name: .*; write "\.friends\.test" for the domain and its subdomains$/);
    refused('192.0.2.1', /^allowlist\.clientNames: "192\.0\.2\.1" is an IP address, not a host name: list it in clients$/);
    refused('[192.0.2.1]', /^allowlist\.clientNames: "\[192\.0\.2\.1\]" is an IP address, not a host name: list it in clients$/);
    refused('2001:db8::1', /^allowlist\.clientNames: "2001:db8::1" is an IP address, not a host name: list it in clients$/);
    refused('', /^allowlist\.clientNames: "" is not a host name/);
    refused('.', /^allowlist\.clientNames: "\." is not a host name/);
    refused('mail trusted.test', /^allowlist\.clientNames: "mail trusted\.test" is not a host name/);
  });

  it('refuses every clients entry that is no address or network with the other problems, by its index and with what it expects (built, it said only the first, without its index, as `"x": not an IPv4 or IPv6 address: "x"`)', () => {
    const clients = ['192.0.2.0/24', 'mail.example.org', '10.1.2.3/8', '[2001:db8::]/32', 'x', '010.1.1.0/24'];
    const expected = 'expected an IPv4 or IPv6 address or network';
    assert.throws(() => validateConfig({ callout: { port: 0 }, policy: { stages: [{ name: 'postmaster' }, { name: 'allowlist', clients }] } }), {
      code: 'CONFIG_INVALID',
      message: [
        'configuration: callout.port: got 0, expected at least 1',
        `policy.stages.1.clients.1 (allowlist): got "mail.example.org", ${expected} (192.0.2.0/24, 2001:db8::/32)`,
        `policy.stages.1.clients.2 (allowlist): got "10.1.2.3/8", ${expected} (host bits set after the prefix: write the network, 10.0.0.0/8, or the address alone)`,
        `policy.stages.1.clients.4 (allowlist): got "x", ${expected} (192.0.2.0/24, 2001:db8::/32)`,
        `policy.stages.1.clients.5 (allowlist): got "010.1.1.0/24", ${expected} (an octet with a leading zero (010): write it in decimal without the zero)`,
      ].join('; '),
    });
    assert.deepEqual(validateConfig({ policy: { stages: [{ name: 'allowlist', clients: ['192.0.2.0/24', '[2001:db8::]/32', '::1'] }] } }).policy.stages[0]?.clients, ['192.0.2.0/24', '[2001:db8::]/32', '::1'], 'entries kept as written');
    // A configuration built without the schema still gets a coded error naming the list and the entry.
    const built = () => allowlistStage.create({ ...allowlistStage.options.parse({}), clients: ['192.0.2.0/24', 'mail.example.org'] } as never, {} as never);
    assert.throws(built, (err: unknown) => err instanceof ConfigError && err.message.startsWith('allowlist.clients: "mail.example.org": '));
  });

  it('refuses an entry that is no address or domain, naming the list and the entry', () => {
    assert.throws(() => new AddressList(['a@@b'], 'allowlist.senders'), (err: unknown) => err instanceof ConfigError && /^allowlist\.senders: "a@@b" is not an address/.test(err.message));
    assert.throws(() => new AddressList(['bad domain'], 'allowlist.recipients'), (err: unknown) => err instanceof ConfigError && /^allowlist\.recipients: "bad domain" is not a domain/.test(err.message));
    // The patterns of other allow-lists parsed as a mailbox "*", or were refused without a word of what to write.
    assert.throws(() => new AddressList(['*@friends.test'], 'allowlist.senders'), (err: unknown) => err instanceof ConfigError && err.message === 'allowlist.senders: "*@friends.test" names the mailbox "*", not every address of its domain: write "@friends.test"');
    assert.throws(() => new AddressList(['*@*.friends.test'], 'allowlist.senders'), (err: unknown) => err instanceof ConfigError && err.message === 'allowlist.senders: "*@*.friends.test" names the mailbox "*", not every address of its domain: write "@friends.test", and each subdomain meant');
    for (const entry of ['*@', '*@*']) {
      assert.throws(() => new AddressList([entry], 'allowlist.senders'), (err: unknown) => err instanceof ConfigError && err.message === `allowlist.senders: "${entry}" names the mailbox "*", not every address of its domain`);
    }
    for (const pattern of ['.friends.test', '*.friends.test']) {
      assert.throws(() => new AddressList([pattern], 'allowlist.recipients'), (err: unknown) => err instanceof ConfigError && err.message === `allowlist.recipients: "${pattern}" is a pattern, not a domain: an entry names that domain only, not its subdomains: write "friends.test", and each subdomain meant`, pattern);
    }
    // Read as the entry is compared, without the spaces around it.
    assert.throws(() => new AddressList([' *.friends.test '], 'allowlist.recipients'), (err: unknown) => err instanceof ConfigError && err.message.startsWith('allowlist.recipients: " *.friends.test " is a pattern, not a domain'));
    // No pattern of a domain, and nothing to suggest: not a domain.
    for (const entry of ['.', '..friends.test']) {
      assert.throws(() => new AddressList([entry], 'allowlist.recipients'), (err: unknown) => err instanceof ConfigError && err.message.startsWith(`allowlist.recipients: "${entry}" is not a domain`), entry);
    }
    // Quoted as a string is, and only its start: a pasted block made a message of many lines (or megabytes).
    assert.throws(() => new AddressList(['a@b\nc@d'], 'allowlist.senders'), (err: unknown) => err instanceof ConfigError && err.message.startsWith('allowlist.senders: "a@b\\nc@d" is not an address') && !err.message.includes('\n'));
    assert.throws(() => namePatterns([`${'x'.repeat(70)}.${'y'.repeat(5000)}`], 'allowlist.clientNames'), (err: unknown) => err instanceof ConfigError && /^allowlist\.clientNames: "x{70}\.y{29}\.\.\." is not a host name/.test(err.message) && err.message.length < 300);
    // The `*.` hint quotes the entry it suggests the same way.
    assert.throws(() => namePatterns([`*.${'y'.repeat(2500)}\n${'z'.repeat(2500)}`], 'allowlist.clientNames'), (err: unknown) => err instanceof ConfigError && /; write "\.y{99}\.\.\." for the domain and its subdomains$/.test(err.message) && !err.message.includes('\n') && err.message.length < 400);
  });
});

describe('allow-list entries fuzzed', () => {
  it('read any entry as a canonical domain or pattern, or a ConfigError naming the list and the entry', () => {
    const entry = fc.oneof(fc.string({ maxLength: 60 }), fc.tuple(fc.constantFrom('', '@', '.', '*.'), fc.domain()).map(([prefix, d]) => prefix + d), fc.ipV4().map((a) => `[${a}]`), fc.ipV6().map((a) => `@[IPv6:${a}]`));
    fc.assert(
      fc.property(entry, (raw) => {
        for (const read of [() => domainEntry(raw, 'allow.domains'), () => namePatterns([raw], 'allow.clientNames')[0]!]) {
          try {
            const value = read();
            assert.equal(value, value.toLowerCase());
            assert.ok(!/\s/.test(value), value);
          } catch (err) {
            assert.ok(err instanceof ConfigError && /^allow\.(domains|clientNames): "/.test(err.message), String(err));
          }
        }
      }),
      { numRuns: 500 },
    );
  });

  it('refuse long crafted entries without a quadratic scan', () => {
    for (const raw of ['@['.repeat(100_000), '.'.repeat(200_000), `${'*.'.repeat(100_000)}x`, '_'.repeat(200_000), `[IPv6:${':'.repeat(100_000)}]`]) {
      // Generous bound against a quadratic scan, not a speed claim.
      assert.ok(elapsedMs(() => {
        assert.throws(() => domainEntry(raw, 'k'), ConfigError);
        assert.throws(() => namePatterns([raw], 'k'), ConfigError);
      }) < 300, raw.slice(0, 8));
    }
  });
});
