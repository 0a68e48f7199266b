// The greylist stage as Postfix sees it: `callout serve` over real sockets, time moved by ManualClock.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { createLogger } from '../../../src/core/log.js';
import { ManualClock, ManualTimers } from '../../support/manual-time.js';
import { ConfigError } from '../../../src/core/errors.js';
import { Daemon } from '../../../src/policy/daemon.js';
import { greylistStage } from '../../../src/policy/stages/greylist.js';
import { validateConfig } from '../../../src/config/schema.js';
import { ABSOLUTE_PATH_EXPECTED } from '../../../src/config/paths.js';
import type { StageContext, StageDeps, StageVerdict } from '../../../src/policy/types.js';
import { MemoryStore } from '../../../src/store/index.js';
import { startDnsServer, reverseName } from '../../support/dns-server.js';
import type { DnsTestServer } from '../../support/dns-server.js';
import { greylistOnce, startSmtpServers } from '../../support/smtp-server.js';
import { PolicyClient, postfixRequest } from '../../support/policy-client.js';
import { startDaemonWithClient } from '../../support/daemon.js';
import { mxZone } from '../../verify/fixture.js';
import { captureLog } from '../../support/log-capture.js';
import { stageContext } from '../../support/stage-context.js';
import { turnsUntil, until, watch } from '../../support/wait.js';
import { CALLOUT_VERSION } from '../../../src/core/version.js';
import { createNodeResolver } from '../../../src/dns/node-resolver.js';
import { UNANSWERED_REMEMBERED_MS } from '../../../src/checks/iprev/index.js';

const S = 1000;
const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

const dir = mkdtempSync(join(tmpdir(), 'callout-greylist-'));
cleanups.push(() => rmSync(dir, { recursive: true, force: true }));

let dnsServer: DnsTestServer | undefined;
async function dns(): Promise<DnsTestServer> {
  if (dnsServer) return dnsServer;
  dnsServer = await startDnsServer({
    ...mxZone({ 'grey.test': '127.0.0.3' }),
    [reverseName('192.0.2.10')]: { PTR: ['mail-a.outbound.pool.example'] },
    'mail-a.outbound.pool.example': { A: ['192.0.2.10'] },
    [reverseName('198.51.100.20')]: { PTR: ['mail-b.outbound.pool.example'] },
    'mail-b.outbound.pool.example': { A: ['198.51.100.20'] },
    [reverseName('203.0.113.5')]: { PTR: ['liar.pool.example'] },
    'liar.pool.example': { A: ['203.0.113.99'] },
    [reverseName('203.0.113.7')]: { PTR: ['dyn-203-0-113-7.isp.example'] },
    'dyn-203-0-113-7.isp.example': { A: ['203.0.113.7'] },
  });
  const server = dnsServer;
  cleanups.push(() => server.close());
  return server;
}

interface Setup {
  client: PolicyClient;
  clock: ManualClock;
  daemon: Daemon;
  logs: Array<Record<string, unknown>>;
  ask(overrides?: Record<string, string>): Promise<string>;
}

let instances = 0;
async function serve(stages: Array<Record<string, unknown>>, extra: Record<string, unknown> = {}): Promise<Setup> {
  const { lines: logs, log: logger } = captureLog();
  const clock = new ManualClock(Date.UTC(2026, 0, 1, 12));
  const { daemon, client } = await startDaemonWithClient({
    overrides: {
      store: { kind: 'memory' },
      // 2 s for the DNS server in this process to answer: a loaded machine may not run it at once.
      dns: { servers: [(await dns()).address], timeout: '2s', tries: 1 },
      policy: { listen: '127.0.0.1:0', stages },
      metrics: { listen: '' },
      ...extra,
    },
    log: logger,
    clock,
  }, cleanups);
  // Each request is its own message unless the test says otherwise.
  const ask = (overrides: Record<string, string> = {}) => client.request(postfixRequest({ instance: `m${(instances += 1)}`, ...overrides }));
  return { client, clock, daemon, logs, ask };
}

const greylisted = (logs: Array<Record<string, unknown>>) => logs.filter((l) => l.msg === 'greylisted');

describe('greylist stage over the policy protocol', () => {
  it('defers first sight and an early retry with the time left, passes in the window with X-Greylist once', async () => {
    const { clock, logs, ask } = await serve([{ name: 'greylist' }]);
    assert.equal(await ask(), 'DEFER_IF_PERMIT 4.2.0 Greylisted, please try again in 300 seconds');
    clock.advance(120 * S);
    assert.equal(await ask(), 'DEFER_IF_PERMIT 4.2.0 Greylisted, please try again in 180 seconds');
    clock.advance(180 * S);
    const instance = 'passing-message';
    assert.match(await ask({ instance }), /^PREPEND X-Greylist: delayed 300 seconds by callout at \S+; Thu, 01 Jan 2026 12:05:00 GMT$/);
    assert.equal(await ask({ instance, recipient: 'alice@example.test' }), 'DUNNO', 'the header is given once per message');
    assert.equal(await ask(), 'DUNNO', 'a passed triplet stays passed');
    assert.deepEqual(greylisted(logs).map((l) => l.reason), ['new', 'early-retry (180s missing)']);
    const decision = logs.filter((l) => l.msg === 'decision')[1]!;
    assert.ok((decision.stages as string[]).some((s) => /^greylist=early-retry: greylisted: early-retry \(180s missing\)/.test(s)), '(decision.stages as string[]).some((s) => /^greylist=early-retry: greylisted: early-retry \\(180s ...');
  });

  it("takes postgrey's --x-greylist-header placeholders, so a site's header carries over", async () => {
    const { clock, ask } = await serve([{ name: 'greylist', headerText: 'X-Greylist: delayed %t seconds by callout-%v at %h; %d' }]);
    await ask();
    clock.advance(300 * S);
    assert.match(await ask({ instance: 'm1' }), new RegExp(`^PREPEND X-Greylist: delayed 300 seconds by callout-${CALLOUT_VERSION.replace(/\./g, '\\.')} at \\S+; Thu, 01 Jan 2026 12:05:00 GMT$`));
  });

  it('starts again after the retry window, and logs why', async () => {
    const { clock, logs, ask } = await serve([{ name: 'greylist', retryWindow: '6h', text: 'Greylisted until {retryAt} ({reason})' }]);
    await ask({ sender: 'late@sender.example' });
    clock.advance(6 * 3600 * S + S);
    assert.equal(await ask({ sender: 'late@sender.example' }), 'DEFER_IF_PERMIT 4.2.0 Greylisted until 2026-01-01T18:05:01Z (window-expired)');
    assert.deepEqual(greylisted(logs).map((l) => l.reason), ['new', 'window-expired']);
  });

  it('never names a retry time before the delay has passed: {retryAt} and {seconds} are rounded up to the second', async () => {
    const { clock, ask } = await serve([{ name: 'greylist', text: 'Greylisted until {retryAt}, in {seconds} seconds' }]);
    clock.advance(400);
    // First seen at 12:00:00.400: the delay ends at 12:05:00.400, so 12:05:00 would be too early.
    assert.equal(await ask({ sender: 'ms@sender.example' }), 'DEFER_IF_PERMIT 4.2.0 Greylisted until 2026-01-01T12:05:01Z, in 300 seconds');
    clock.advance(299 * S);
    assert.equal(await ask({ sender: 'ms@sender.example' }), 'DEFER_IF_PERMIT 4.2.0 Greylisted until 2026-01-01T12:05:01Z, in 1 seconds');
    clock.advance(500);
    assert.equal(await ask({ sender: 'ms@sender.example' }), 'DEFER_IF_PERMIT 4.2.0 Greylisted until 2026-01-01T12:05:01Z, in 1 seconds', '500 ms left: one second, not none');
    clock.set(Date.UTC(2026, 0, 1, 12, 5, 1));
    assert.doesNotMatch(await ask({ sender: 'ms@sender.example' }), /^DEFER/, 'a retry at the time named passes');
  });

  it('puts the enhanced code before a text that starts with a number, and keeps a text\'s own', async () => {
    const { ask } = await serve([{ name: 'greylist', text: '{seconds} seconds to wait' }]);
    assert.equal(await ask({ sender: 'count@sender.example' }), 'DEFER_IF_PERMIT 4.2.0 300 seconds to wait');
    const own = await serve([{ name: 'greylist', text: '4.7.1 Greylisted, retry in {seconds} s' }]);
    assert.equal(await own.ask({ sender: 'count@sender.example' }), 'DEFER_IF_PERMIT 4.7.1 Greylisted, retry in 300 s');
  });

  it('groups IPv6 clients by /64 and keys by the normalised sender', async () => {
    const { clock, ask } = await serve([{ name: 'greylist', header: false }]);
    const v6 = { client_address: '2001:db8:1:2::25', sender: 'prvs=1234567890=bounces+123@list.example' };
    assert.match(await ask(v6), /^DEFER_IF_PERMIT/);
    clock.advance(300 * S);
    assert.equal(await ask({ client_address: '2001:db8:1:2:ffff::9', sender: 'prvs=0987654321=BOUNCES+124@list.example' }), 'DUNNO', 'same /64, same normalised sender');
    assert.match(await ask({ client_address: '2001:db8:1:3::25', sender: v6.sender }), /^DEFER_IF_PERMIT/, 'another /64');
  });

  it('keys one client by one identity however its address is spelt, an IPv4-mapped one by its IPv4 /24', async () => {
    const { clock, logs, ask } = await serve([{ name: 'greylist', header: false, whitelistClients: ['2001:db8:aaaa::/48'] }]);
    assert.match(await ask({ client_address: '2001:0DB8:0001:0002:0000:0000:0000:0025', sender: 'spelt@sender.example' }), /^DEFER_IF_PERMIT/);
    assert.match(await ask({ client_address: '::FFFF:192.0.2.1', sender: 'mapped@sender.example' }), /^DEFER_IF_PERMIT/);
    clock.advance(300 * S);
    assert.equal(await ask({ client_address: '2001:db8:1:2::26', sender: 'spelt@sender.example' }), 'DUNNO');
    assert.equal(await ask({ client_address: '192.0.2.200', sender: 'mapped@sender.example' }), 'DUNNO');
    assert.deepEqual(greylisted(logs).map((l) => l.identity), ['2001:db8:1:2::/64', '192.0.2.0/24']);
    assert.equal(await ask({ client_address: '2001:DB8:AAAA:0::1', sender: 'listed@sender.example' }), 'DUNNO', 'a whitelisted network, whatever the spelling');
    assert.equal(await ask({ client_address: 'unknown', sender: 'nowhere@sender.example' }), 'DUNNO', 'no address: nothing to key by');
  });

  it('keys UTF-8 senders and recipients (raw UTF-8 from Postfix with smtputf8_enable) by A-label domains, folding only A-Z', async () => {
    const { clock, logs, ask } = await serve([{ name: 'greylist', header: false }]);
    const first = { sender: 'news-1@Bücher.example', recipient: 'Élise@Empfänger.example' };
    assert.match(await ask(first), /^DEFER_IF_PERMIT/);
    const entry = greylisted(logs)[0]!;
    assert.equal(entry.sender, 'news-#@xn--bcher-kva.example');
    assert.equal(entry.recipient, first.recipient, 'the log names the recipient as Postfix sent it');
    clock.advance(300 * S);
    assert.equal(await ask({ sender: 'NEWS-2@xn--bcher-kva.example', recipient: 'Élise@XN--EMPFNGER-3ZA.example' }), 'DUNNO', 'the same triplet written with A-labels');
    assert.match(await ask({ sender: first.sender, recipient: 'élise@empfänger.example' }), /^DEFER_IF_PERMIT/, "'É' is not folded: another recipient");
    assert.equal(greylisted(logs).length, 2);
  });

  it('keys an over-long sender and recipient by a bounded digest: the same one retried passes, another stays apart', async () => {
    const path = join(dir, 'long.sqlite');
    const { clock, ask } = await serve([{ name: 'greylist', header: false }], { store: { kind: 'sqlite', path } });
    // As much as a policy line holds, for each recipient; they differ only at their ends.
    const long = (end: string) => ({ sender: `${'s'.repeat(1800)}${end}@sender.example`, recipient: `${'r'.repeat(1800)}${end}@example.test` });
    assert.match(await ask(long('1')), /^DEFER_IF_PERMIT/);
    clock.advance(300 * S);
    assert.match(await ask(long('2')), /^DEFER_IF_PERMIT 4\.2\.0 Greylisted, please try again in 300 seconds$/, 'another address: a new triplet');
    assert.equal(await ask(long('1')), 'DUNNO', 'the same address: its retry');
    const db = new Database(path, { readonly: true });
    try {
      const keys = (db.prepare("SELECT key FROM kv WHERE key LIKE 'grey:t:%'").all() as Array<{ key: string }>).map((r) => r.key);
      assert.equal(keys.length, 2);
      for (const key of keys) assert.ok(Buffer.byteLength(key) <= 320, `${Buffer.byteLength(key)} octets`);
    } finally {
      db.close();
    }
  });

  it('clientIdentity address keys a triplet by the exact client address, not its /24', async () => {
    const { clock, logs, ask } = await serve([{ name: 'greylist', clientIdentity: 'address', header: false }]);
    assert.match(await ask({ client_address: '192.0.2.10' }), /^DEFER_IF_PERMIT/);
    clock.advance(300 * S);
    assert.match(await ask({ client_address: '192.0.2.11' }), /^DEFER_IF_PERMIT 4\.2\.0 Greylisted, please try again in 300 seconds$/, 'a neighbour in the /24 is a new triplet');
    assert.equal(await ask({ client_address: '192.0.2.10' }), 'DUNNO', 'the address that waited passes');
    assert.match(await ask({ client_address: '2001:db8:1:2::26' }), /^DEFER_IF_PERMIT/);
    clock.advance(300 * S);
    assert.match(await ask({ client_address: '2001:db8:1:2::27' }), /^DEFER_IF_PERMIT/, 'a neighbour in the /64 is a new triplet');
    assert.deepEqual(greylisted(logs).map((l) => l.identity), ['192.0.2.10/32', '192.0.2.11/32', '2001:db8:1:2::26/128', '2001:db8:1:2::27/128']);
  });

  it('clientIdentity network (the default) lets a retry from the same /24 pass, unlike address', async () => {
    const { clock, logs, ask } = await serve([{ name: 'greylist', header: false }]);
    assert.match(await ask({ client_address: '192.0.2.10' }), /^DEFER_IF_PERMIT/);
    clock.advance(300 * S);
    assert.equal(await ask({ client_address: '192.0.2.11' }), 'DUNNO');
    assert.deepEqual(greylisted(logs).map((l) => l.identity), ['192.0.2.0/24']);
  });

  it('leaves the purge to the store (store.purgeInterval): expired triplets go, live ones stay; its own purgeInterval is logged as obsolete, under its key', async () => {
    const path = join(dir, 'purge.sqlite');
    const { clock, logs, ask, daemon } = await serve([{ name: 'postmaster' }, { name: 'greylist', header: false, retryWindow: '1h', maxAge: '35d', purgeInterval: '1h' }], {
      store: { kind: 'sqlite', path, purgeInterval: '1s' },
    });
    assert.deepEqual(
      logs.filter((l) => /purgeInterval/.test(String(l.msg))).map((l) => [l.level, l.msg]),
      [[40, 'policy.stages.1.purgeInterval (greylist): obsolete and ignored: expired entries are purged with the rest of the store every store.purgeInterval']],
      'a configuration of an earlier release still starts, and says what became of its setting, as the schema names an option (config/stage-key)',
    );
    // One triplet passes (kept maxAge), one is only seen once (kept two retry windows).
    await ask({ sender: 'kept@sender.example' });
    clock.advance(300 * S);
    assert.equal(await ask({ sender: 'kept@sender.example' }), 'DUNNO');
    await ask({ sender: 'once@sender.example' });
    const rows = () => {
      const db = new Database(path, { readonly: true });
      try {
        return (db.prepare('SELECT key FROM kv ORDER BY key').all() as Array<{ key: string }>).map((r) => r.key);
      } finally {
        db.close();
      }
    };
    const once = (keys: string[]) => keys.filter((k) => k.includes('once@sender.example'));
    assert.equal(once(rows()).length, 1);

    clock.advance(2 * 3600 * S + S);
    // The purge timer is real time (the clock only judges expiry): at 1 s it fires within a few
    // seconds, given 15 for a loaded machine.
    await until(() => logs.some((l) => l.msg === 'expired store entries purged'), 15_000, 50);
    const purged = logs.filter((l) => /entries purged/.test(String(l.msg)));
    assert.deepEqual(purged.map((l) => [l.msg, l.removed]), [['expired store entries purged', 1]], 'one purge, of the store, removed the one expired triplet');
    assert.match(await daemon.metricsText(), /^callout_store_purged_entries_total 1$/m, 'and counted it');
    const left = rows();
    assert.deepEqual(once(left), [], 'the expired row is gone from the SQLite file');
    assert.ok(left.some((k) => k.includes('kept@sender.example')), 'the passed triplet stays');
    assert.match(await ask({ sender: 'kept@sender.example' }), /^DUNNO$/);
  });

  it('auto-allows a client after five passes', async () => {
    const { clock, ask } = await serve([{ name: 'greylist', header: false }]);
    for (let n = 0; n < 5; n += 1) {
      await ask({ recipient: `user${n}x@example.test` });
      clock.advance(300 * S);
      assert.equal(await ask({ recipient: `user${n}x@example.test` }), 'DUNNO');
      clock.advance(3600 * S);
    }
    assert.equal(await ask({ recipient: 'brand-new@example.test' }), 'DUNNO');
    assert.match(await ask({ recipient: 'brand-new@example.test', client_address: '192.0.2.77' }), /^DEFER_IF_PERMIT/, 'the auto-allow is the address\'s, not its /24\'s');
  });

  it('reads postgrey whitelist files: clients by name and network, recipients', async () => {
    const clients = join(dir, 'whitelist_clients');
    const recipients = join(dir, 'whitelist_recipients');
    writeFileSync(clients, '# postgrey format\nsender.example\n/^mx\\d+\\.bulk\\.example$/\n203.0.113.0/24\n');
    writeFileSync(recipients, 'postmaster@\nopen.example\n');
    const { ask } = await serve([{ name: 'greylist', whitelistClientFiles: [clients, `${clients}.local`], whitelistRecipientFiles: [recipients] }]);
    assert.equal(await ask({ client_name: 'mail.sender.example' }), 'DUNNO');
    assert.equal(await ask({ client_name: 'mx12.bulk.example' }), 'DUNNO');
    assert.equal(await ask({ client_name: 'unknown', client_address: '203.0.113.80' }), 'DUNNO');
    assert.equal(await ask({ client_name: 'unknown', recipient: 'postmaster@example.test' }), 'DUNNO');
    assert.equal(await ask({ client_name: 'unknown', recipient: 'bob@open.example' }), 'DUNNO');
    assert.match(await ask({ client_name: 'unknown' }), /^DEFER_IF_PERMIT/);
  });

  it('names a bad inline whitelist entry by its key and index, not as a line of a file ("whitelistClients:3" was the third entry)', async () => {
    const { logs } = await serve([{ name: 'greylist', whitelistClients: ['sender.example', '10.0.0.300', 'bad name!'], whitelistRecipients: ['postmaster@', 'a b@'] }]);
    assert.deepEqual(logs.filter((l) => l.msg === 'greylist whitelist entry ignored').map((l) => l.problem), [
      'whitelistClients.1: got "10.0.0.300", expected an IPv4 or IPv6 address or network (192.0.2.0/24, 2001:db8::/32)',
      'whitelistClients.2: got "bad name!", expected a host name or domain, an address or network, or a /regular expression/',
      'whitelistRecipients.1: got "a b@", expected an address, a local part (user@), a domain (domain.tld, @domain.tld) or a /regular expression/',
    ]);
  });

  it('names a bad entry of a whitelist file by file:line, the entry once and what was expected (it said "bad address: not an IPv4 or IPv6 address" and the entry again)', async () => {
    const file = join(dir, 'whitelist_clients_bad');
    writeFileSync(file, 'sender.example\n10.0.0.300\n010.1.1.1\n');
    const { logs } = await serve([{ name: 'greylist', whitelistClientFiles: [file] }]);
    assert.deepEqual(logs.filter((l) => l.msg === 'greylist whitelist entry ignored').map((l) => l.problem), [
      `${file}:2: got "10.0.0.300", expected an IPv4 or IPv6 address or network (192.0.2.0/24, 2001:db8::/32)`,
      `${file}:3: got "010.1.1.1", expected an IPv4 or IPv6 address or network (an octet with a leading zero (010): write it in decimal without the zero); postgrey reads it as octal: 010 is 8`,
    ]);
  });

  it('refuses to start when a named whitelist file is missing', async () => {
    // Named by its option too: the path alone left the reader to find which of two lists holds it.
    // Keyed as the schema keys an option (config/stage-key), each file's problem under its own option.
    const missing = join(dir, 'missing');
    await assert.rejects(serve([{ name: 'greylist', whitelistClientFiles: [missing] }]), (err: unknown) => err instanceof ConfigError && err.message === `policy.stages.0.whitelistClientFiles (greylist): ${missing}: cannot read: no such file (ENOENT)`);
    await assert.rejects(
      serve([{ name: 'greylist', whitelistClientFiles: [missing], whitelistRecipientFiles: [missing] }]),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.message === `policy.stages.0.whitelistClientFiles (greylist): ${missing}: cannot read: no such file (ENOENT); policy.stages.0.whitelistRecipientFiles (greylist): ${missing}: cannot read: no such file (ENOENT)`,
    );
    // Start (and `config check`) read such a file whole: this one used to take every byte of memory.
    await assert.rejects(serve([{ name: 'greylist', whitelistRecipientFiles: ['/dev/zero'] }]), /policy\.stages\.0\.whitelistRecipientFiles \(greylist\): \/dev\/zero: not a regular file \(a character device\)/);
    // A FIFO with no writer held the start for ever.
    const fifo = join(dir, 'whitelist-fifo');
    assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
    await assert.rejects(serve([{ name: 'greylist', whitelistClientFiles: [fifo] }]), (err: unknown) => err instanceof ConfigError && err.message.endsWith(`${fifo}: not a regular file (a FIFO)`));
  });

  it('refuses a relative whitelist file: config check found it in its own directory, the daemon (started in /) did not', () => {
    const stages = [{ name: 'greylist', whitelistClientFiles: [join(dir, 'whitelist_clients'), 'whitelist_clients'], whitelistRecipientFiles: ['./whitelist_recipients.local'] }];
    assert.throws(
      () => validateConfig({ policy: { stages } }),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.message ===
          `configuration: policy.stages.0.whitelistClientFiles.1 (greylist): got "whitelist_clients", ${ABSOLUTE_PATH_EXPECTED}; policy.stages.0.whitelistRecipientFiles.0 (greylist): got "./whitelist_recipients.local", ${ABSOLUTE_PATH_EXPECTED}`,
    );
  });

  it('keys a forward-confirmed sender pool by its organisational domain, never an unconfirmed or dynamic name', async () => {
    const { clock, ask, logs } = await serve([{ name: 'greylist', clientIdentity: 'fcrdns-domain', header: false }]);
    const pool = { sender: 'news@pool.example', client_name: 'unknown' };
    assert.match(await ask({ ...pool, client_address: '192.0.2.10' }), /^DEFER_IF_PERMIT/);
    clock.advance(300 * S);
    assert.equal(await ask({ ...pool, client_address: '198.51.100.20' }), 'DUNNO', 'the retry from another pool address matches');
    assert.match(await ask({ ...pool, client_address: '203.0.113.5' }), /^DEFER_IF_PERMIT/, 'a PTR name that does not resolve back is not trusted');
    assert.match(await ask({ sender: 'other@pool.example', client_address: '203.0.113.7' }), /^DEFER_IF_PERMIT/);
    const reasons = logs.filter((l) => l.msg === 'greylisted').map((l) => l.identity);
    assert.deepEqual(reasons, ['domain:pool.example', '203.0.113.0/24', '203.0.113.0/24'], 'a dynamic-looking name falls back to the network');
  });

  // Keyed by the first confirmed name in answer order, a resolver that rotated the PTR answer
  // made the retry a new triplet (domain:zulu-mail.example, then domain:alpha-hosting.example).
  it('keys a client with confirmed names of two organisations by the same one, whichever order the PTR answer lists them in', async () => {
    const names = ['out.zulu-mail.example', 'relay.alpha-hosting.example'];
    const zone = (ptr: string[]) => ({
      [reverseName('192.0.2.40')]: { PTR: ptr, ttl: 1 },
      'out.zulu-mail.example': { A: ['192.0.2.40'] },
      'relay.alpha-hosting.example': { A: ['192.0.2.40'] },
    });
    const server = await startDnsServer(zone(names));
    cleanups.push(() => server.close());
    const greylist = { name: 'greylist', clientIdentity: 'fcrdns-domain', header: false };
    // Without an iprev stage the greylist stage looks the names up itself; with one it takes iprev's.
    for (const stages of [[greylist], [{ name: 'iprev' }, greylist]]) {
      server.setZone(zone(names));
      const { clock, ask, logs } = await serve(stages, { dns: { servers: [server.address], timeout: '2s', tries: 1 } });
      const request = { sender: 'news@zulu-mail.example', client_name: 'unknown', client_address: '192.0.2.40' };
      assert.match(await ask(request), /^DEFER_IF_PERMIT/);
      clock.advance(300 * S);
      server.setZone(zone([...names].reverse()));
      const ptrQueries = server.queries.filter((q) => q.type === 'PTR').length;
      assert.doesNotMatch(await ask(request), /DEFER/, `the retry passes (${stages.length} stages)`);
      assert.equal(server.queries.filter((q) => q.type === 'PTR').length, ptrQueries + 1, 'the retry read the PTR answer again, in the other order');
      assert.deepEqual(greylisted(logs).map((l) => l.identity), ['domain:alpha-hosting.example']);
    }
  });

  it('auto-allows a pool host by its address, never the whole organisation', async () => {
    const { clock, ask, logs } = await serve([{ name: 'greylist', clientIdentity: 'fcrdns-domain', autoAllowClients: 1, header: false }]);
    const pool = { sender: 'news@pool.example', client_name: 'unknown' };
    assert.match(await ask({ ...pool, client_address: '192.0.2.10' }), /^DEFER_IF_PERMIT/);
    clock.advance(300 * S);
    assert.equal(await ask({ ...pool, client_address: '198.51.100.20' }), 'DUNNO', 'the retry from another pool address passes (one pass: auto-allowed)');
    clock.advance(3600 * S);
    const fresh = { sender: 'alerts@pool.example', recipient: 'carol@example.test', client_name: 'unknown' };
    assert.equal(await ask({ ...fresh, client_address: '198.51.100.20' }), 'DUNNO', 'the address that passed is auto-allowed');
    assert.match(await ask({ ...fresh, recipient: 'dave@example.test', client_address: '192.0.2.10' }), /^DEFER_IF_PERMIT/, 'another host of the organisation is not');
    assert.deepEqual(greylisted(logs).map((l) => l.identity), ['domain:pool.example', 'domain:pool.example']);
  });

  it('takes the confirmed name from an earlier iprev stage and skips listed providers', async () => {
    const { ask, logs } = await serve([{ name: 'iprev' }, { name: 'greylist', skip: { fcrdnsProviders: ['outbound.pool.example'] } }]);
    assert.match(await ask({ client_address: '192.0.2.10' }), /^PREPEND Authentication-Results: .*iprev=pass/, 'not greylisted');
    assert.match(await ask({ client_address: '203.0.113.5' }), /^DEFER_IF_PERMIT/);
    const first = logs.filter((l) => l.msg === 'decision')[0]!;
    assert.ok((first.stages as string[]).some((s) => s.startsWith('greylist=skipped: client mail-a.outbound.pool.example is forward-confirmed')), '(first.stages as string[]).some((s) => s.startsWith(\'greylist=skipped: client mail-a.outbound.poo...');
  });

  it('answers 450 when the sender\'s MX greylists our callout, and greylists the retry', async () => {
    const smtp = await startSmtpServers(['127.0.0.3'], () => greylistOnce());
    cleanups.push(() => Promise.all(smtp.map((s) => s.close())).then(() => undefined));
    const { clock, ask } = await serve([{ name: 'sender-callout' }, { name: 'greylist' }], {
      callout: { helo: 'verifier.callout.test', port: smtp[0]!.port, allowTargets: ['127.0.0.0/8'], timeouts: { overall: '5s' } },
    });
    assert.match(await ask({ sender: 'bob@grey.test' }), /^450 4\.7\.1 Sender address verification failed temporarily/);
    clock.advance(10 * 60 * S);
    assert.match(await ask({ sender: 'bob@grey.test' }), /^DEFER_IF_PERMIT 4\.2\.0 Greylisted/);
  });

  it('can answer with a 451 DEFER and count decisions in the metrics', async () => {
    const { ask, daemon } = await serve([{ name: 'greylist', action: 'defer', deferCode: 451, enhanced: '4.7.1', text: 'Greylisted, see http://postgrey.schweikert.ch/help/%r.html' }]);
    assert.equal(await ask(), '451 4.7.1 Greylisted, see http://postgrey.schweikert.ch/help/example.test.html');
    assert.match(await daemon.metricsText(), /callout_greylist_total\{result="new"\} 1/);
  });

  it('counts a triplet through greylisting once, at its first pass, and every pass under result="passed"', async () => {
    const { clock, ask, daemon } = await serve([{ name: 'greylist' }]);
    const counts = async () => {
      const text = await daemon.metricsText();
      const value = (pattern: RegExp) => Number(pattern.exec(text)?.[1] ?? 0);
      return { triplets: value(/^callout_greylist_triplets_passed_total (\d+)$/m), passed: value(/^callout_greylist_total\{result="passed"\} (\d+)$/m) };
    };
    assert.match(await daemon.metricsText(), /^callout_greylist_triplets_passed_total 0$/m, 'there from the start, so that increase() sees the first');
    assert.match(await ask(), /^DEFER_IF_PERMIT /);
    clock.advance(120 * S);
    assert.match(await ask(), /^DEFER_IF_PERMIT /, 'an early retry');
    assert.deepEqual(await counts(), { triplets: 0, passed: 0 });
    clock.advance(180 * S);
    assert.match(await ask(), /^PREPEND X-Greylist: /, 'the retry after the delay');
    assert.deepEqual(await counts(), { triplets: 1, passed: 1 });
    clock.advance(60 * S);
    assert.equal(await ask(), 'DUNNO');
    // Past the hour after which a passed triplet's last-seen time is written again: no first pass either.
    clock.advance(2 * 3600 * S);
    assert.equal(await ask(), 'DUNNO');
    assert.deepEqual(await counts(), { triplets: 1, passed: 3 }, 'later mail of the triplet is a pass, not a triplet through greylisting');
    assert.match(await ask({ recipient: 'carol@example.test' }), /^DEFER_IF_PERMIT /);
    clock.advance(300 * S);
    assert.match(await ask({ recipient: 'carol@example.test' }), /^PREPEND X-Greylist: /);
    assert.deepEqual(await counts(), { triplets: 2, passed: 4 });
  });
});

describe('greylist stage evidence rules', () => {
  const silent = createLogger('silent');
  const clock = new ManualClock();
  const deps: StageDeps = { resolver: undefined as never, store: new MemoryStore({ clock }), clock, log: silent };
  const stage = greylistStage.create(greylistStage.options.parse({ skip: { spfPassDomains: ['bank.example', 'Bücher.Example.'] } }) as never, deps);
  cleanups.push(() => stage.close?.());
  const ctx = (sender: string, spf: string | undefined, earlier = new Map<string, StageVerdict>(spf ? [['spf', { stage: 'spf', result: spf, reason: '', decision: { kind: 'continue' } }]] : [])): StageContext =>
    stageContext({ client_address: '192.0.2.50', helo_name: 'x', sender, recipient: 'alice@example.test', instance: 'i' }, { clock, deadlineMs: 5000, earlier });
  /** An earlier iprev stage's pass with these confirmed names (given to stageContext: a spread of its context would read its getters). */
  const confirmedBy = (names: string[]) => new Map<string, StageVerdict>([['iprev', { stage: 'iprev', result: 'pass', reason: '', decision: { kind: 'continue' }, evidence: { confirmedNames: names } }]]);

  it('fcrdns-domain waits fcrdnsTimeoutMs (2000 ms by default), or what is left of the deadline if less, for a reverse zone that never answers, not the whole deadline', async () => {
    // Bounded by the deadline alone, every recipient of such a client waited 6 s.
    const server = await startDnsServer({ [reverseName('192.0.2.50')]: { drop: true } });
    // Far longer than the bounds tested, so that the stage's bound is what ends the wait.
    const resolver = createNodeResolver({ servers: [server.address], timeoutMs: 60_000, tries: 1 });
    cleanups.push(() => {
      resolver.cancel();
      return server.close();
    });
    // And by the deadline when less is left: past it the pipeline would fault the stage.
    for (const [options, bound, deadlineMs] of [[{}, 2000, 6000], [{ fcrdnsTimeoutMs: 500 }, 500, 6000], [{}, 1000, 1000]] as const) {
      const pooled = greylistStage.create(greylistStage.options.parse({ clientIdentity: 'fcrdns-domain', header: false, ...options }) as never, { ...deps, resolver });
      cleanups.push(() => pooled.close?.());
      const timers = new ManualTimers();
      const asked = server.queries.length;
      const request = { client_address: '192.0.2.50', helo_name: 'x', sender: 'news@pool.example', recipient: 'alice@example.test', instance: 'i' };
      const answer = watch(pooled.evaluate(stageContext(request, { clock, deadlineMs, timers })));
      await turnsUntil(() => server.queries.length > asked, 'the PTR query');
      await timers.advance(bound - 1);
      assert.equal(answer(), undefined, `not answered before ${bound} ms`);
      await timers.advance(1);
      // A few turns for the store, far too few for the resolver's own timeout to end the wait.
      for (let turn = 0; turn < 100 && answer() === undefined; turn += 1) await new Promise((resolve) => setImmediate(resolve));
      assert.equal(answer()?.result, 'new');
      assert.equal((answer()?.evidence as { identity?: unknown } | undefined)?.identity, '192.0.2.0/24', 'keyed by the network');
    }
    assert.equal(greylistStage.options.safeParse({ fcrdnsTimeoutMs: 99 }).success, false);
  });

  it('fcrdns-domain: a client whose check ran out of fcrdnsTimeoutMs is keyed by its network at once for a minute, then asked again; no other client is', async () => {
    const server = await startDnsServer({
      [reverseName('192.0.2.51')]: { drop: true },
      [reverseName('192.0.2.52')]: { drop: true },
      [reverseName('192.0.2.53')]: { PTR: ['mail.pool53.example'] },
      'mail.pool53.example': { A: ['192.0.2.53'] },
    });
    const resolver = createNodeResolver({ servers: [server.address], timeoutMs: 60_000, tries: 1 });
    cleanups.push(() => {
      resolver.cancel();
      return server.close();
    });
    const pooled = greylistStage.create(greylistStage.options.parse({ clientIdentity: 'fcrdns-domain', header: false }) as never, { ...deps, resolver });
    cleanups.push(() => pooled.close?.());
    const timers = new ManualTimers();
    const asked = (ip: string) => server.queries.filter((query) => query.type === 'PTR' && query.name === reverseName(ip)).length;
    let recipients = 0;
    /** The request's identity, if its verdict came within a few turns of the event loop (no time moved), and the PTR queries it sent. */
    const atOnce = async (ip: string) => {
      const before = asked(ip);
      recipients += 1;
      const request = { client_address: ip, helo_name: 'x', sender: 'news@pool.example', recipient: `user${recipients}@example.test`, instance: 'i' };
      const answer = watch(pooled.evaluate(stageContext(request, { clock, deadlineMs: 6000, timers })));
      for (let turn = 0; turn < 100 && answer() === undefined; turn += 1) await new Promise((resolve) => setImmediate(resolve));
      const identity = () => (answer()?.evidence as { identity?: unknown } | undefined)?.identity;
      return { identity, asked: asked(ip) - before };
    };
    const waitsItsBound = async (ip: string) => {
      const before = asked(ip);
      const first = await atOnce(ip);
      assert.equal(first.identity(), undefined, `${ip}: not answered at once`);
      await turnsUntil(() => asked(ip) > before, `the PTR query of ${ip}`);
      await timers.advance(2000);
      for (let turn = 0; turn < 100 && first.identity() === undefined; turn += 1) await new Promise((resolve) => setImmediate(resolve));
      assert.equal(first.identity(), '192.0.2.0/24', `${ip}: keyed by its network after 2000 ms`);
    };

    await waitsItsBound('192.0.2.51');
    const ranOutAt = timers.now();
    const second = await atOnce('192.0.2.51');
    assert.equal(second.identity(), '192.0.2.0/24', 'answered at once, by the network');
    assert.equal(second.asked, 0, 'the DNS server is not asked again');
    // Another client is asked, and waits its own bound; one whose zone answers is asked every time.
    await waitsItsBound('192.0.2.52');
    for (let round = 1; round <= 2; round += 1) {
      const confirmed = await atOnce('192.0.2.53');
      assert.equal(confirmed.identity(), 'domain:pool53.example', `round ${round}`);
      assert.equal(confirmed.asked, 1, `round ${round}: asked`);
    }

    await timers.advance(ranOutAt + UNANSWERED_REMEMBERED_MS - 1 - timers.now());
    assert.equal((await atOnce('192.0.2.51')).asked, 0, 'still remembered 1 ms before the minute is over');
    await timers.advance(1);
    await waitsItsBound('192.0.2.51');
  });

  it('skips on SPF pass for a listed domain only, never on the sender alone', async () => {
    assert.equal((await stage.evaluate(ctx('alerts@mail.bank.example', 'pass'))).result, 'skipped');
    assert.equal((await stage.evaluate(ctx('alerts@bank.example', 'softfail'))).result, 'new');
    assert.equal((await stage.evaluate(ctx('alerts@other.example', 'pass'))).result, 'new');
    assert.equal((await stage.evaluate(ctx('ceo@bank.example', undefined))).result, 'new', 'a forged sender without SPF evidence is greylisted');
    // Entries are compared as names are: A-labels, any case, no trailing dot.
    assert.equal((await stage.evaluate(ctx('news@xn--bcher-kva.example', 'pass'))).result, 'skipped');
  });

  it('refuses a skip entry that is no domain, naming it, instead of matching nothing, and reads a leading dot as the domain', async () => {
    assert.throws(
      () => greylistStage.create(greylistStage.options.parse({ skip: { fcrdnsProviders: ['*.outlook.com'] } }) as never, deps),
      (err: unknown) => err instanceof ConfigError && err.message.startsWith('greylist.skip.fcrdnsProviders: "*.outlook.com" is not a domain'),
    );
    const dotted = greylistStage.create(greylistStage.options.parse({ skip: { fcrdnsProviders: ['.outlook.com'] } }) as never, deps);
    cleanups.push(() => dotted.close?.());
    const confirmed = (name: string): StageContext => ctx('alerts@other.example', undefined, confirmedBy([name]));
    assert.equal((await dotted.evaluate(confirmed('mail-db5eur01.outbound.protection.outlook.com'))).result, 'skipped');
    assert.equal((await dotted.evaluate(confirmed('mail.outlook.com.example'))).result, 'new');
  });

  // confirmedOrganisation needs no order; the provider skip names the first name it finds.
  it('names the first provider name in code-point order in a skip, whichever order the PTR answer lists them in', async () => {
    const skipping = greylistStage.create(greylistStage.options.parse({ skip: { fcrdnsProviders: ['outlook.com'] } }) as never, deps);
    cleanups.push(() => skipping.close?.());
    const names = ['mail-z.outbound.protection.outlook.com', 'mail-a.outbound.protection.outlook.com'];
    for (const order of [names, [...names].reverse()]) {
      const verdict = await skipping.evaluate(ctx('alerts@other.example', undefined, confirmedBy(order)));
      assert.equal(verdict.reason, 'client mail-a.outbound.protection.outlook.com is forward-confirmed under outlook.com', order.join(' '));
    }
  });

  it('refuses a retry window no longer than the delay and takes a max-age equal to the retry window', () => {
    assert.equal(greylistStage.options.safeParse({ delay: '300s', retryWindow: '300s' }).success, false);
    assert.equal(greylistStage.options.safeParse({ delay: '300s', retryWindow: '301s' }).success, true);
    assert.equal(greylistStage.options.safeParse({ retryWindow: '2d', maxAge: '2d' }).success, true);
    assert.equal(greylistStage.options.safeParse({ retryWindow: '2d', maxAge: '47h' }).success, false);
  });
});
