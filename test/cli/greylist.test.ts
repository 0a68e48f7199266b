// `callout greylist list|allow|drop` through a commander program of its own, on a SQLite store.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { Command } from 'commander';
import fc from 'fast-check';
import { printGreylist, registerGreylistCommands } from '../../src/cli/greylist.js';
import { exitCodeFor } from '../../src/cli/exit-status.js';
import { ConfigError, StoreError, UsageError } from '../../src/core/errors.js';
import { systemClock } from '../../src/core/clock.js';
import { mailboxKey } from '../../src/address/index.js';
import { Greylist, normaliseSender } from '../../src/checks/greylist/index.js';
import { MemoryStore, RedisStore, SqliteStore } from '../../src/store/index.js';
import type { Store } from '../../src/store/types.js';
import { createLogger } from '../../src/core/log.js';
import { Daemon } from '../../src/policy/daemon.js';
import { PolicyClient, postfixRequest } from '../support/policy-client.js';
import { startRedis } from '../support/redis.js';
import { Redis } from 'ioredis';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const execFileAsync = promisify(execFile);

const dir = mkdtempSync(join(tmpdir(), 'callout-greylist-cli-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const configPath = join(dir, 'callout.yaml');
writeFileSync(configPath, `dataDir: ${dir}\npolicy:\n  stages:\n    - name: greylist\n      delay: 5m\n      ipv4Prefix: 24\n`);

async function run(args: string[], config = configPath): Promise<{ output: string; stderr: string; error?: Error }> {
  const out = new PassThrough();
  const err = new PassThrough();
  let output = '';
  let stderr = '';
  out.on('data', (chunk: Buffer) => (output += chunk.toString()));
  err.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const program = new Command('callout').exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} });
  registerGreylistCommands(program, { out, err });
  try {
    await program.parseAsync(['node', 'callout', 'greylist', ...args, '--config', config]);
    return { output, stderr };
  } catch (error) {
    return { output, stderr, error: error as Error };
  }
}

async function seed(): Promise<void> {
  const store = await SqliteStore.open(join(dir, 'callout.sqlite'));
  const greylist = new Greylist(store, systemClock, { delayMs: 300_000, retryWindowMs: 2 * 86_400_000, maxAgeMs: 35 * 86_400_000, autoAllowClients: 5, domainAutoAllow: 0 });
  await greylist.check({ client: '192.0.2.0/24', autoAllowKey: '192.0.2.10', sender: 'bob@sender.example', recipient: 'alice@example.test' });
  await greylist.check({ client: '198.51.100.0/24', autoAllowKey: '198.51.100.1', sender: 'carol@other.example', recipient: 'alice@example.test' });
  await store.close();
}

describe('callout greylist', () => {
  it('lists, allows and drops entries on the configured store', async () => {
    await seed();
    let listed = await run(['list']);
    assert.equal(listed.error, undefined);
    assert.match(listed.output, /^triplet 192\.0\.2\.0\/24 bob@sender\.example alice@example\.test waiting first=\S+ last=\S+ expires=\S+\ntriplet 198\.51\.100\.0\/24 carol@other\.example /);

    assert.equal((await run(['allow', '192.0.2.99', 'prvs=1234567890=Bob@Sender.Example', 'alice@example.test'])).output, 'allowed triplet 192.0.2.0/24 bob@sender.example alice@example.test\n');
    listed = await run(['list', '--client', '192.0.2.5', '--json']);
    const entries = listed.output.trim().split('\n').map((line) => JSON.parse(line) as { kind: string; passed?: boolean });
    assert.deepEqual(entries.map((e) => [e.kind, e.passed]), [['triplet', true]]);

    assert.equal((await run(['allow', '203.0.113.9'])).output, 'allowed client 203.0.113.9\n');
    assert.match((await run(['list', '--kind', 'client'])).output, /^client 203\.0\.113\.9 allowed passes=5 /);

    assert.equal((await run(['drop', '198.51.100.1', 'carol@other.example', 'alice@example.test'])).output, 'dropped triplet 198.51.100.0/24 carol@other.example alice@example.test\n');
    assert.equal((await run(['drop', '192.0.2.0/24'])).output, 'dropped 1 triplet of 192.0.2.0/24\n');
    assert.equal((await run(['drop', '203.0.113.9'])).output, 'dropped the auto-allow entry of 203.0.113.9\n', 'the address\'s entry, not one of its /24');
    await run(['allow', '203.0.113.9']);
    await run(['allow', '203.0.113.10', 'bob@x.example', 'alice@example.test']);
    assert.equal((await run(['drop', '203.0.113.9'])).output, 'dropped the auto-allow entry of 203.0.113.9, and 1 triplet of 203.0.113.0/24\n');
    assert.equal((await run(['drop', '203.0.113.9'])).output, 'dropped nothing: no entry of 203.0.113.9 or 203.0.113.0/24\n');
    assert.equal((await run(['list'])).output, '');
  });

  it('lists a sender and recipient with control characters quoted (SMTP clients chose them), as JSON escapes them', async () => {
    const store = await SqliteStore.open(join(dir, 'callout.sqlite'));
    const greylist = new Greylist(store, systemClock, { delayMs: 300_000, retryWindowMs: 2 * 86_400_000, maxAgeMs: 35 * 86_400_000, autoAllowClients: 5, domainAutoAllow: 0 });
    await greylist.check({ client: '203.0.113.0/24', autoAllowKey: '203.0.113.7', sender: 'x\u001b[2k\r@sender.example', recipient: 'alice\u009b@example.test' });
    await store.close();
    const listed = await run(['list', '--client', '203.0.113.7', '--kind', 'triplet']);
    assert.match(listed.output, /^triplet 203\.0\.113\.0\/24 "x\\u001b\[2k\\r@sender\.example" "alice\\u009b@example\.test" waiting /);
    assert.equal((await run(['drop', '203.0.113.7', 'x\u001b[2k\r@sender.example', 'alice\u009b@example.test'])).output, 'dropped triplet 203.0.113.0/24 "x\\u001b[2k\\r@sender.example" "alice\\u009b@example.test"\n');
  });

  it('quotes a sender or recipient holding a space or a quote, so that a script splitting a line at spaces gets its fields', async () => {
    const sender = '"john doe"@example.org';
    const recipient = '"ann\u00a0lee"@example.test';
    const allowed = await run(['allow', '203.0.113.8', sender, recipient]);
    assert.equal(allowed.output, 'allowed triplet 203.0.113.0/24 "\\"john doe\\"@example.org" "\\"ann\u00a0lee\\"@example.test"\n');
    assert.equal((await run(['allow', '203.0.113.8', '"john"@example.org', 'bob@example.test'])).output, 'allowed triplet 203.0.113.0/24 "\\"john\\"@example.org" bob@example.test\n', 'a field that starts with a quote is quoted');
    const lines = (await run(['list', '--client', '203.0.113.8', '--kind', 'triplet'])).output.trimEnd().split('\n');
    assert.equal(lines.length, 2);
    // What an administrator's script does: a field is a JSON string when it starts with a quote.
    const fields = lines.map((line) => (line.match(/"(?:[^"\\]|\\.)*"|\S+/g) ?? []).map((field) => (field.startsWith('"') ? (JSON.parse(field) as string) : field)));
    assert.deepEqual(
      fields.map((f) => f.slice(0, 5)),
      [
        ['triplet', '203.0.113.0/24', sender, recipient, 'passed'],
        ['triplet', '203.0.113.0/24', '"john"@example.org', 'bob@example.test', 'passed'],
      ],
    );
    assert.ok(fields.every((f) => f.length === 8), 'fields.every((f) => f.length === 8)');
    const json = (await run(['list', '--client', '203.0.113.8', '--kind', 'triplet', '--json'])).output.trimEnd().split('\n');
    assert.deepEqual(json.map((line) => (JSON.parse(line) as { sender: string }).sender), [sender, '"john"@example.org'], '--json as before');
    assert.equal((await run(['drop', '203.0.113.0/24'])).output, 'dropped 2 triplets of 203.0.113.0/24\n');
  });

  it('names the null sender (a bounce) <> in list, allow and drop, and takes <> for it, as the stage keys it (empty)', async () => {
    const store = await SqliteStore.open(join(dir, 'callout.sqlite'));
    const greylist = new Greylist(store, systemClock, { delayMs: 300_000, retryWindowMs: 2 * 86_400_000, maxAgeMs: 35 * 86_400_000, autoAllowClients: 5, domainAutoAllow: 0 });
    await greylist.check({ client: '100.64.0.0/24', autoAllowKey: '100.64.0.7', sender: '', recipient: 'alice@example.test' });
    await store.close();
    assert.match((await run(['list', '--client', '100.64.0.7', '--kind', 'triplet'])).output, /^triplet 100\.64\.0\.0\/24 <> alice@example\.test waiting /);
    assert.equal((await run(['allow', '100.64.0.7', '<>', 'alice@example.test'])).output, 'allowed triplet 100.64.0.0/24 <> alice@example.test\n');
    assert.match((await run(['list', '--client', '100.64.0.7', '--kind', 'triplet'])).output, /^triplet 100\.64\.0\.0\/24 <> alice@example\.test passed [^\n]*\n$/, 'the one triplet of the null sender, now passed');
    assert.equal((await run(['drop', '100.64.0.7', '<>', 'alice@example.test'])).output, 'dropped triplet 100.64.0.0/24 <> alice@example.test\n');
    assert.equal((await run(['list', '--client', '100.64.0.7'])).output, '', 'nothing left of it');
    assert.equal((await run(['drop', '100.64.0.7', '<>', 'alice@example.test'])).output, 'no such triplet 100.64.0.0/24 <> alice@example.test\n', 'a second drop finds none');
  });

  it('allows a client on the file a busy daemon is writing: the command waits its turn, the daemon sees it, nothing faults', async () => {
    const liveDir = mkdtempSync(join(tmpdir(), 'callout-greylist-live-'));
    const liveConfig = join(liveDir, 'callout.yaml');
    writeFileSync(liveConfig, `dataDir: ${liveDir}\npolicy:\n  listen: 127.0.0.1:0\n  stages:\n    - name: greylist\nmetrics:\n  listen: ''\n`);
    const daemon = await Daemon.start({ configPath: liveConfig, log: createLogger('silent') });
    const clients = await Promise.all(Array.from({ length: 8 }, () => PolicyClient.connect(daemon.policyAddress)));
    try {
      // Eight connections of new triplets, each a write, until the commands are done.
      let commandsDone = false;
      let sent = 0;
      const answers = new Set<string>();
      const load = Promise.all(
        clients.map(async (client, c) => {
          while (!commandsDone && sent < 20_000) {
            sent += 1;
            answers.add(await client.request(postfixRequest({ client_address: `192.0.2.${c + 1}`, sender: `s${sent}@load.example`, instance: `l${sent}` })));
          }
        }),
      );
      const cli = (...args: string[]) => execFileAsync(process.execPath, ['--import', 'tsx', join(ROOT, 'src/cli/main.ts'), 'greylist', ...args, '--config', liveConfig], { cwd: ROOT });
      try {
        assert.equal((await cli('allow', '203.0.113.9')).stdout, 'allowed client 203.0.113.9\n');
        assert.match((await cli('list', '--kind', 'client', '--client', '203.0.113.9')).stdout, /^client 203\.0\.113\.9 /);
      } finally {
        commandsDone = true;
        await load;
      }
      assert.ok(sent > 50, `the daemon was busy meanwhile (${sent} requests)`);
      assert.deepEqual([...answers], ['DEFER_IF_PERMIT 4.2.0 Greylisted, please try again in 300 seconds']);
      const newTriplet = postfixRequest({ client_address: '203.0.113.9', sender: 'first@allowed.example', instance: 'allowed' });
      assert.equal(await clients[0]!.request(newTriplet), 'DUNNO', 'the daemon sees the command\'s write');
      assert.match(await daemon.metricsText(), /^callout_stage_faults_total 0$/m);
    } finally {
      for (const client of clients) client.close();
      await daemon.stop();
      rmSync(liveDir, { recursive: true, force: true });
    }
  });

  it('refuses a client that is neither an address, a network nor a domain identity', async () => {
    const bad = await run(['allow', 'mail.example.org']);
    assert.match(bad.error?.message ?? '', /expected an IP address, a network such as 192\.0\.2\.0\/24, or domain:NAME/);
    assert.match((await run(['allow', '192.0.2.0/24'])).error?.message ?? '', /only an address can be auto-allowed, not a network or domain:NAME/);
    assert.match((await run(['allow', 'domain:pool.example'])).error?.message ?? '', /only an address can be auto-allowed/);
    assert.match((await run(['allow', '192.0.2.1', 'only-sender@x.example'])).error?.message ?? '', /both SENDER and RECIPIENT/);
    assert.match((await run(['list', '--kind', 'weird'])).error?.message ?? '', /--kind/);
    for (const odd of ['domain:a..b', 'domain:-', 'domain:.', 'domain:-a.example', 'domain:']) {
      assert.match((await run(['drop', odd])).error?.message ?? '', /expected an IP address, a network such as 192\.0\.2\.0\/24, or domain:NAME/, odd);
    }
    // Written as a network: what is wrong with it, in core/ip's words; nothing like an address
    // before the slash, the forms it may take (core/ip's reason quoted the argument a second time).
    for (const odd of ['mail.example/24', '/24', 'domain:pool.example/24']) {
      assert.equal((await run(['drop', odd])).error?.message, `client: got ${JSON.stringify(odd)}, expected an IP address, a network such as 192.0.2.0/24, or domain:NAME`, odd);
    }
    assert.equal((await run(['drop', '192.0.2.0/33'])).error?.message, 'client: got "192.0.2.0/33": prefix length must be 0 to 32: "33"');
    assert.equal((await run(['drop', '010.1.1.0/24'])).error?.message, 'client: got "010.1.1.0/24": an octet with a leading zero (010): write it in decimal without the zero');
    assert.equal((await run(['allow', '192.0.2.010'])).error?.message, 'client: got "192.0.2.010": an octet with a leading zero (010): write it in decimal without the zero');
    for (const recipient of ['', 'al\u0001ice@example.test', 'bob\r\n@example.test']) {
      assert.match((await run(['allow', '192.0.2.1', 'bob@x.example', recipient])).error?.message ?? '', /RECIPIENT: got .*, expected an address/, JSON.stringify(recipient));
    }
    assert.equal((await run(['allow', '192.0.2.1', '<>', '"a b"@example.test'])).output, 'allowed triplet 192.0.2.0/24 <> "\\"a b\\"@example.test"\n', 'quoted: it holds a space');
    // Postfix passes RCPT TO:<postmaster> on as it is, and the stage keys it so.
    assert.equal((await run(['allow', '192.0.2.1', 'a@example.org', 'Postmaster'])).output, 'allowed triplet 192.0.2.0/24 a@example.org postmaster\n');
  });

  it('refuses to allow a triplet under an identity the stage never keys by, instead of writing an entry nobody reads', async () => {
    const untouched = join(dir, 'identity-dir');
    for (const [client, why] of [
      ['192.0.2.0/25', /allow: 192\.0\.2\.0\/25: the greylist stage keys IPv4 clients by their \/24; give an address or a \/24 network; a triplet allowed under it would never be read/],
      ['10.0.0.0/8', /keys IPv4 clients by their \/24/],
      ['192.0.2.7/32', /keys IPv4 clients by their \/24/],
      ['2001:db8::/48', /allow: 2001:db8::\/48: the greylist stage keys IPv6 clients by their \/64/],
      ['domain:pool.example', /allow: domain:pool\.example: the greylist stage keys clients by domain:NAME only with clientIdentity: fcrdns-domain \(it has network\)/],
    ] as const) {
      const { error } = await run(['allow', client, 'bob@x.example', 'alice@example.test', '--data-dir', untouched]);
      assert.ok(error instanceof UsageError, `${client}: ${String(error)}`);
      assert.match(error.message, why);
    }
    assert.equal(existsSync(untouched), false, 'no store made for a refused command');
    assert.equal((await run(['allow', '2001:db8:1:2::/64', 'bob@x.example', 'alice@example.test'])).output, 'allowed triplet 2001:db8:1:2::/64 bob@x.example alice@example.test\n');
    assert.equal((await run(['drop', '2001:db8:1:2::9'])).output, 'dropped 1 triplet of 2001:db8:1:2::/64\n', 'an IPv6 client drops its /64');
  });

  it('drops a network with the auto-allow entries of its addresses, which would go on skipping greylisting', async () => {
    for (const address of ['198.51.100.7', '198.51.100.8', '198.51.101.7', '2001:db8:5:6::25', '2001:db8:5:7::25']) await run(['allow', address]);
    await run(['allow', '198.51.100.9', 'bob@x.example', 'alice@example.test']);
    assert.equal((await run(['drop', '198.51.100.0/24'])).output, 'dropped 1 triplet of 198.51.100.0/24, and 2 auto-allow entries of addresses in 198.51.100.0/24\n');
    assert.equal((await run(['drop', '2001:db8:5:6::/64'])).output, 'dropped 1 auto-allow entry of addresses in 2001:db8:5:6::/64\n');
    assert.deepEqual((await run(['list', '--kind', 'client'])).output.match(/^client \S+/gm), ['client 198.51.101.7', 'client 2001:db8:5:7::25']);
    await run(['drop', '198.51.101.7']);
    await run(['drop', '2001:db8:5:7::25']);
  });

  it('lists and drops the triplets of every identity inside a wider network (a /16 of /24s), not only one keyed by that very network', async () => {
    for (const address of ['198.51.100.9', '198.51.101.9', '203.0.113.9']) await run(['allow', address, 'bob@x.example', 'alice@example.test']);
    assert.deepEqual((await run(['list', '--client', '198.51.0.0/16'])).output.match(/^\S+ \S+/gm), ['triplet 198.51.100.0/24', 'triplet 198.51.101.0/24']);
    assert.equal((await run(['drop', '198.51.0.0/16'])).output, 'dropped 2 triplets of 198.51.0.0/16\n');
    assert.equal((await run(['list', '--client', '198.51.0.0/16'])).output, '');
    assert.deepEqual((await run(['list', '--client', '203.0.113.0/24'])).output.match(/^\S+ \S+/gm), ['triplet 203.0.113.0/24'], 'the network outside kept its triplet');
    assert.equal((await run(['drop', '203.0.113.0/25'])).output, 'dropped nothing: no entry of 203.0.113.0/25 or of its addresses\n', 'a narrower network holds no /24 identity');
    await run(['drop', '203.0.113.0/24']);

    // Keyed by address, a network's triplets are those of its hosts: none went before.
    const ownDir = mkdtempSync(join(tmpdir(), 'callout-greylist-hosts-'));
    const ownConfig = join(ownDir, 'callout.yaml');
    writeFileSync(ownConfig, `dataDir: ${ownDir}\npolicy:\n  stages:\n    - name: greylist\n      clientIdentity: address\n`);
    try {
      for (const address of ['192.0.2.7', '192.0.2.8', '192.0.3.7', '2001:db8::7']) await run(['allow', address, 'bob@x.example', 'alice@example.test'], ownConfig);
      await run(['allow', '192.0.2.7'], ownConfig);
      assert.deepEqual((await run(['list', '--client', '192.0.2.0/24'], ownConfig)).output.match(/^\S+ \S+/gm), ['triplet 192.0.2.7/32', 'triplet 192.0.2.8/32', 'client 192.0.2.7']);
      assert.equal((await run(['drop', '192.0.2.0/24'], ownConfig)).output, 'dropped 2 triplets of 192.0.2.0/24, and 1 auto-allow entry of addresses in 192.0.2.0/24\n');
      assert.deepEqual((await run(['list'], ownConfig)).output.match(/^\S+ \S+/gm), ['triplet 192.0.3.7/32', 'triplet 2001:db8::7/128']);
    } finally {
      rmSync(ownDir, { recursive: true, force: true });
    }
  });

  it('refuses a network with host bits set, a typo that masked to a far wider network, before touching the store', async () => {
    for (const address of ['198.51.100.7', '198.51.101.7']) await run(['allow', address]);
    for (const args of [['drop', '198.51.100.7/8'], ['list', '--client', '198.51.100.7/16'], ['drop', '2001:db8:5:6::25/32']]) {
      const { error, output } = await run(args);
      assert.ok(error instanceof UsageError, `${args.join(' ')}: ${String(error)}`);
      assert.match(error.message, /^client: got "[^"]+": host bits set after the prefix: write the network, \S+, or the address alone$/);
      assert.equal(output, '');
    }
    assert.deepEqual((await run(['list', '--kind', 'client'])).output.match(/^client \S+/gm), ['client 198.51.100.7', 'client 198.51.101.7'], 'nothing dropped');
    assert.equal((await run(['drop', '198.51.0.0/16'])).output, 'dropped 2 auto-allow entries of addresses in 198.51.0.0/16\n', 'the network written as such still drops');
  });

  it('lists the auto-allow entries of every address in a network given as --client, as drop removes them', async () => {
    for (const address of ['198.51.100.7', '198.51.100.200', '198.51.101.7', '2001:db8:5:6::25', '2001:db8:5:7::25']) await run(['allow', address]);
    await run(['allow', '198.51.100.9', 'bob@x.example', 'alice@example.test']);
    const clients = async (...args: string[]) => (await run(['list', ...args])).output.match(/^\S+ \S+/gm);
    assert.deepEqual(await clients('--client', '198.51.100.0/24', '--kind', 'client'), ['client 198.51.100.200', 'client 198.51.100.7']);
    assert.deepEqual(await clients('--client', '198.51.100.0/25', '--kind', 'client'), ['client 198.51.100.7']);
    assert.deepEqual(await clients('--client', '2001:db8:5:6::/64', '--kind', 'client'), ['client 2001:db8:5:6::25']);
    assert.deepEqual(await clients('--client', '198.51.100.0/24'), ['triplet 198.51.100.0/24', 'client 198.51.100.200', 'client 198.51.100.7']);
    assert.deepEqual(await clients('--client', '198.51.100.0/24', '--kind', 'client', '--limit', '1'), ['client 198.51.100.200']);
    assert.deepEqual(await clients('--client', '198.51.100.7', '--kind', 'client'), ['client 198.51.100.7'], 'an address: its own entry');
    for (const client of ['198.51.100.0/24', '198.51.101.7', '2001:db8:5:6::/64', '2001:db8:5:7::25']) await run(['drop', client]);
    assert.equal((await run(['list', '--kind', 'client'])).output, '');
  });

  it('lists a triplet of an over-long sender and recipient by its digest, and allows and drops it by the address or as listed', async () => {
    const sender = `Bounce-${'x'.repeat(3000)}@sender.example`;
    const recipient = `${'r'.repeat(300)}@example.test`;
    const store = await SqliteStore.open(join(dir, 'callout.sqlite'));
    const greylist = new Greylist(store, systemClock, { delayMs: 300_000, retryWindowMs: 2 * 86_400_000, maxAgeMs: 35 * 86_400_000, autoAllowClients: 5, domainAutoAllow: 0 });
    await greylist.check({ client: '198.18.0.0/24', autoAllowKey: '198.18.0.10', sender: normaliseSender(sender), recipient: mailboxKey(recipient) });
    await store.close();
    const listed = await run(['list', '--client', '198.18.0.0/24']);
    const match = /^triplet 198\.18\.0\.0\/24 (bounce-x{57}…\[sha256:[0-9a-f]{64}\]) (r{64}…\[sha256:[0-9a-f]{64}\]) waiting /.exec(listed.output);
    assert.ok(match, listed.output);
    const [, shownSender = '', shownRecipient = ''] = match;
    assert.equal((await run(['allow', '198.18.0.10', sender, recipient])).output, `allowed triplet 198.18.0.0/24 ${shownSender} ${shownRecipient}\n`, 'named as list names it');
    assert.match((await run(['list', '--client', '198.18.0.0/24'])).output, /^triplet \S+ \S+ \S+ passed [^\n]*\n$/, 'the same one triplet, now passed');
    assert.equal((await run(['drop', '198.18.0.10', shownSender, shownRecipient])).output, `dropped triplet 198.18.0.0/24 ${shownSender} ${shownRecipient}\n`);
    assert.equal((await run(['list', '--client', '198.18.0.0/24'])).output, '');
  });

  it('lists more entries than a spread of arguments holds (140,000): all of them, not a stack overflow', async () => {
    const ownDir = mkdtempSync(join(tmpdir(), 'callout-greylist-many-'));
    const ownConfig = join(ownDir, 'callout.yaml');
    writeFileSync(ownConfig, `dataDir: ${ownDir}\npolicy:\n  stages:\n    - name: greylist\n`);
    try {
      const store = await SqliteStore.open(join(ownDir, 'callout.sqlite'));
      const now = Date.now();
      // One group commit: every write of this turn.
      await Promise.all(Array.from({ length: 140_000 }, (_, i) => store.set(`grey:t:192.0.2.0%2F24/s@x.example/r${i}@example.test`, `${now},${now}`, 86_400_000)));
      await store.close();
      const listed = await run(['list', '--kind', 'triplet', '--limit', '200000'], ownConfig);
      assert.equal(listed.error, undefined);
      assert.equal(listed.output.split('\n').length - 1, 140_000);
    } finally {
      rmSync(ownDir, { recursive: true, force: true });
    }
  });

  it('names the defaults it assumes on stderr when the configuration has no greylist stage, and goes on (a host that only reaches the shared store)', async () => {
    const ownDir = mkdtempSync(join(tmpdir(), 'callout-greylist-nostage-'));
    const ownConfig = join(ownDir, 'callout.yaml');
    writeFileSync(ownConfig, `dataDir: ${ownDir}\n`);
    try {
      const assumed = `callout: warning: ${ownConfig} has no greylist stage in policy.stages; assuming its defaults (delay: 5m, retryWindow: 2d, maxAge: 5w, clientIdentity: network, ipv4Prefix: 24, ipv6Prefix: 64, autoAllowClients: 5, domainAutoAllow: 0, normaliseVerp: true): copy the daemons' greylist stage into it if theirs differ\n`;
      const allowed = await run(['allow', '203.0.113.9'], ownConfig);
      assert.deepEqual([allowed.error, allowed.output, allowed.stderr], [undefined, 'allowed client 203.0.113.9\n', assumed]);
      const listed = await run(['list'], ownConfig);
      assert.match(listed.output, /^client 203\.0\.113\.9 allowed /);
      assert.equal(listed.stderr, assumed);
      writeFileSync(ownConfig, `dataDir: ${ownDir}\npolicy:\n  stages:\n    - name: greylist\n      mode: 'off'\n`);
      assert.equal((await run(['drop', '203.0.113.9'], ownConfig)).stderr, '', 'a greylist stage, even one turned off, says which settings the daemons use');
    } finally {
      rmSync(ownDir, { recursive: true, force: true });
    }
  });

  it('says on stderr when --limit cut the list, and only then; stdout holds the entries as before', async () => {
    const ownDir = mkdtempSync(join(tmpdir(), 'callout-greylist-limit-'));
    const ownConfig = join(ownDir, 'callout.yaml');
    writeFileSync(ownConfig, `dataDir: ${ownDir}\npolicy:\n  stages:\n    - name: greylist\n`);
    const notice = (limit: number) => `callout greylist list: stopped at --limit ${limit} entries; more are stored (give a larger --limit)\n`;
    try {
      const store = await SqliteStore.open(join(ownDir, 'callout.sqlite'));
      const now = Date.now();
      await Promise.all(Array.from({ length: 4 }, (_, i) => store.set(`grey:t:192.0.2.0%2F24/s@x.example/r${i}@example.test`, `${now},${now}`, 86_400_000)));
      await store.close();
      const listed = await run(['list', '--limit', '3'], ownConfig);
      assert.equal(listed.error, undefined, 'exit 0: the entries asked for were printed');
      assert.deepEqual(listed.output.match(/^triplet \S+ \S+ \S+/gm), ['0', '1', '2'].map((i) => `triplet 192.0.2.0/24 s@x.example r${i}@example.test`));
      assert.equal(listed.stderr, notice(3));
      const json = await run(['list', '--limit', '3', '--json'], ownConfig);
      assert.deepEqual(json.output.trimEnd().split('\n').map((line) => (JSON.parse(line) as { recipient: string }).recipient), ['r0@example.test', 'r1@example.test', 'r2@example.test']);
      assert.equal(json.stderr, notice(3));
      const whole = await run(['list', '--limit', '4'], ownConfig);
      assert.equal(whole.output.split('\n').length - 1, 4);
      assert.equal(whole.stderr, '', 'exactly --limit entries stored: nothing left out');
      // The entry past the limit may be of the next kind.
      await run(['allow', '203.0.113.9'], ownConfig);
      const cut = await run(['list', '--limit', '4'], ownConfig);
      assert.deepEqual(cut.output.match(/^\S+/gm), ['triplet', 'triplet', 'triplet', 'triplet']);
      assert.equal(cut.stderr, notice(4));
      const all = await run(['list', '--limit', '5'], ownConfig);
      assert.deepEqual(all.output.match(/^\S+/gm), ['triplet', 'triplet', 'triplet', 'triplet', 'client']);
      assert.equal(all.stderr, '');
    } finally {
      rmSync(ownDir, { recursive: true, force: true });
    }
  });

  it('ends quietly and at once when its reader closes the pipe early (list | head -1)', async () => {
    const ownDir = mkdtempSync(join(tmpdir(), 'callout-greylist-pipe-'));
    const ownConfig = join(ownDir, 'callout.yaml');
    writeFileSync(ownConfig, `dataDir: ${ownDir}\npolicy:\n  stages:\n    - name: greylist\n`);
    try {
      const store = await SqliteStore.open(join(ownDir, 'callout.sqlite'));
      const now = Date.now();
      // About 4 MB of lines: far more than a pipe holds, so the command is still writing.
      await Promise.all(Array.from({ length: 30_000 }, (_, i) => store.set(`grey:t:192.0.2.0%2F24/s@x.example/r${i}@example.test`, `${now},${now}`, 86_400_000)));
      await store.close();
      for (const format of [[], ['--json']]) {
        const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src/cli/main.ts'), 'greylist', 'list', '--limit', '100000', ...format, '--config', ownConfig], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
        let stderr = '';
        child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
        const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
        const [first] = (await once(child.stdout, 'data')) as [Buffer];
        assert.match(first.toString(), /^(triplet 192\.0\.2\.0\/24 |\{"kind":"triplet")/);
        child.stdout.destroy();
        const started = performance.now();
        const hung = setTimeout(() => child.kill('SIGKILL'), 20_000);
        const [code, signal] = await exited;
        clearTimeout(hung);
        assert.ok(performance.now() - started < 20_000, 'not still running 20 s after its reader went');
        assert.deepEqual([code, signal], [141, null], `as a tool stopped by SIGPIPE (${format.join('')})`);
        assert.equal(stderr, '', 'no stack trace, no message');
      }
    } finally {
      rmSync(ownDir, { recursive: true, force: true });
    }
  });

  it('keys a triplet as the configured stage does (normaliseVerp), and refuses a client auto-allow the stage would never read', async () => {
    const ownDir = mkdtempSync(join(tmpdir(), 'callout-greylist-opts-'));
    const ownConfig = join(ownDir, 'callout.yaml');
    writeFileSync(ownConfig, `dataDir: ${ownDir}\npolicy:\n  stages:\n    - name: greylist\n      normaliseVerp: false\n      autoAllowClients: 0\n`);
    try {
      const verp = 'list-return-12-bob=example.org@lists.example.com';
      assert.equal((await run(['allow', '192.0.2.7', verp, 'alice@example.test'], ownConfig)).output, 'allowed triplet 192.0.2.0/24 list-return-#-bob=example.org@lists.example.com alice@example.test\n');
      assert.match((await run(['allow', '192.0.2.7'], ownConfig)).error?.message ?? '', /autoAllowClients: 0 and reads no auto-allow entries; list the client in whitelistClients/);
    } finally {
      rmSync(ownDir, { recursive: true, force: true });
    }
  });

  it('keys a domain:NAME client in lower case, as the stage does, whatever case it is given in', async () => {
    const ownDir = mkdtempSync(join(tmpdir(), 'callout-greylist-domain-'));
    const ownConfig = join(ownDir, 'callout.yaml');
    writeFileSync(ownConfig, `dataDir: ${ownDir}\npolicy:\n  stages:\n    - name: greylist\n      clientIdentity: fcrdns-domain\n`);
    try {
      assert.equal((await run(['allow', 'domain:Pool.EXAMPLE', 'bob@x.example', 'alice@example.test'], ownConfig)).output, 'allowed triplet domain:pool.example bob@x.example alice@example.test\n');
      assert.equal((await run(['drop', 'DOMAIN:pool.example', 'bob@x.example', 'alice@example.test'], ownConfig)).output, 'dropped triplet domain:pool.example bob@x.example alice@example.test\n');
    } finally {
      rmSync(ownDir, { recursive: true, force: true });
    }
  });
});

describe('callout greylist on a store that is not there', () => {
  it('lists or drops nothing from a mistyped --data-dir, saying so, and creates no store there; allow may create one', async () => {
    const elsewhere = join(dir, 'no-such-dir');
    const listed = await run(['list', '--data-dir', elsewhere]);
    assert.ok(listed.error instanceof ConfigError, String(listed.error));
    assert.match(listed.error.message, /no-such-dir\/callout\.sqlite: no store there: nothing has been written to it yet/);
    // It names only options `greylist` takes: it has no --store.
    assert.match(listed.error.message, /\(check --data-dir, -c or store\.path\)$/);
    assert.ok((await run(['drop', '192.0.2.1', '--data-dir', elsewhere])).error instanceof ConfigError, '(await run([\'drop\', \'192.0.2.1\', \'--data-dir\', elsewhere])).error instanceof ConfigError');
    assert.equal(existsSync(elsewhere), false);
    assert.equal((await run(['allow', '192.0.2.1', '--data-dir', elsewhere])).output, 'allowed client 192.0.2.1\n');
    assert.match((await run(['list', '--data-dir', elsewhere])).output, /^client 192\.0\.2\.1 allowed/);
  });

  it('says on its stderr that a --data-dir places no store beside an absolute store.path, and goes on (it was ignored without a word)', async () => {
    const absolute = join(dir, 'absolute-greylist.sqlite');
    const config = join(dir, 'absolute-greylist.yaml');
    writeFileSync(config, `store: { kind: sqlite, path: ${absolute} }\npolicy:\n  stages:\n    - name: greylist\n`);
    const unused = join(dir, 'unused-data-dir');
    const allowed = await run(['allow', '192.0.2.1', '--data-dir', unused], config);
    assert.deepEqual([allowed.output, allowed.error], ['allowed client 192.0.2.1\n', undefined]);
    assert.equal(allowed.stderr, `callout: warning: --data-dir has no effect: the store's file ${absolute} is an absolute path (store.path), which the data directory does not place; leave --data-dir out\n`);
    assert.equal(existsSync(unused), false, 'nothing made in the data directory');
  });

  // `callout serve` added 027 to its umask, the one-shot commands did not: from a shell (022)
  // `allow` made the directory 0755 and the store's files 0644, every user could read addresses.
  it('keeps a store that allow creates, its directory and its files from other users under umask 022', async () => {
    const dataDir = join(dir, 'private', 'store');
    const umask = process.umask(0o022);
    try {
      assert.equal((await run(['allow', '192.0.2.1', '--data-dir', dataDir])).output, 'allowed client 192.0.2.1\n');
    } finally {
      process.umask(umask);
    }
    const paths = [join(dir, 'private'), dataDir, ...readdirSync(dataDir).map((name) => join(dataDir, name))];
    assert.ok(paths.some((path) => path.endsWith('callout.sqlite')), paths.join(' '));
    for (const path of paths) {
      const mode = statSync(path).mode & 0o777;
      assert.equal(mode & 0o007, 0, `${path} has mode ${mode.toString(8)}`);
    }
  });

  // `allow` opened (made) the store before it read CLIENT, and `list`/`drop` said "no store there" (78).
  it('fuzz: reads any CLIENT as a client or refuses it with a usage error naming it, before the store, in linear time', async () => {
    const untouched = join(dir, 'untouched-fuzz-dir');
    const label = fc.stringMatching(/^[a-z0-9-]{0,12}$/);
    const client = fc.oneof(
      fc.string(),
      fc.ipV4(),
      fc.ipV6(),
      fc.tuple(fc.oneof(fc.ipV4(), fc.ipV6()), fc.string({ maxLength: 4 })).map(([ip, prefix]) => `${ip}/${prefix}`),
      fc.array(label, { maxLength: 5 }).map((labels) => `domain:${labels.join('.')}`),
    );
    const check = async (text: string): Promise<void> => {
      const { error } = await run(['list', `--client=${text}`, '--data-dir', untouched]);
      // A client read goes on to the store, which is not there.
      if (error instanceof ConfigError) assert.match(error.message, /no store there/, JSON.stringify(text));
      else assert.ok(error instanceof UsageError && /^client: got /.test(error.message), `${JSON.stringify(text)}: ${String(error)}`);
    };
    await fc.assert(fc.asyncProperty(client, check), { numRuns: 200 });
    for (const crafted of [`domain:${'a-'.repeat(50_000)}!`, `domain:${'a.'.repeat(50_000)}-`, `${'1'.repeat(100_000)}/24`, `${'::'.repeat(50_000)}/64`]) {
      const started = process.cpuUsage();
      await check(crafted);
      const { user, system } = process.cpuUsage(started);
      assert.ok((user + system) / 1000 < 1_000, `${crafted.slice(0, 20)}…: ${(user + system) / 1000} ms`);
    }
    assert.equal(existsSync(untouched), false, 'no store made');
  });

  it('checks the arguments before the store: a bad one is a usage error (64) and makes no store', async () => {
    const untouched = join(dir, 'untouched-dir');
    const bad: string[][] = [
      ['allow', 'mail.example.org'],
      ['allow', '192.0.2.0/24'],
      ['allow', '192.0.2.1', 'only-sender@x.example'],
      ['drop', 'mail.example.org'],
      ['list', '--client', 'mail.example.org'],
      ['list', '--limit', '1e3'],
      ['list', '--limit', '0x10'],
      ['list', '--limit', '0'],
    ];
    for (const args of bad) {
      const { error } = await run([...args, '--data-dir', untouched]);
      assert.ok(error instanceof UsageError, `${args.join(' ')}: ${String(error)}`);
      assert.equal(exitCodeFor(error), 64);
    }
    assert.equal(existsSync(untouched), false, 'no store made for a refused command');
  });

  it('refuses a store path that cannot be a store as a configuration error (exit 78), naming it', async () => {
    const notADirectory = join(dir, 'a-file');
    writeFileSync(notADirectory, 'not a directory');
    const { error } = await run(['allow', '192.0.2.1', '--data-dir', notADirectory]);
    assert.ok(error instanceof ConfigError, String(error));
    assert.match(error.message, /a-file\/callout\.sqlite: cannot open: a part of the path is not a directory \(ENOTDIR\) \(check the path/);
    assert.equal(exitCodeFor(error), 78);
    assert.equal(exitCodeFor(new StoreError('redis store: connection refused')), 75);
  });

  it('refuses store.kind memory naming the file and the key, as every configuration error does', async () => {
    const memoryConfig = join(dir, 'memory.yaml');
    writeFileSync(memoryConfig, 'store:\n  kind: memory\n');
    const { error } = await run(['list'], memoryConfig);
    assert.ok(error instanceof ConfigError, String(error));
    assert.equal(error.message, `${memoryConfig}: store.kind: got "memory", expected sqlite or redis (the greylist in a running daemon's memory cannot be reached from here)`);
    assert.equal(exitCodeFor(error), 78);
  });
});

describe('callout greylist on a shared Redis', () => {
  it('writes under store.keyPrefix, where the daemons of the same site read', async () => {
    const redis = await startRedis();
    const admin = new Redis(redis.url);
    const ownDir = mkdtempSync(join(tmpdir(), 'callout-greylist-redis-'));
    const ownConfig = join(ownDir, 'callout.yaml');
    writeFileSync(ownConfig, `store:\n  kind: redis\n  url: ${redis.url}\n  keyPrefix: "mx-site:"\npolicy:\n  stages:\n    - name: greylist\n`);
    try {
      assert.equal((await run(['allow', '203.0.113.9'], ownConfig)).output, 'allowed client 203.0.113.9\n');
      assert.deepEqual(await admin.keys('*'), ['mx-site:grey:c:203.0.113.9']);
      // A key something else wrote without an expiry never expires: the listing says so, not a time no date holds.
      await admin.persist('mx-site:grey:c:203.0.113.9');
      assert.match((await run(['list'], ownConfig)).output, /^client 203\.0\.113\.9 allowed passes=5 last=\S+Z expires=never\n$/);
    } finally {
      admin.disconnect();
      await redis.stop();
      rmSync(ownDir, { recursive: true, force: true });
    }
  });
});

describe('callout greylist list, page by page', () => {
  const settings = { delayMs: 300_000, retryWindowMs: 2 * 86_400_000, maxAgeMs: 35 * 86_400_000, autoAllowClients: 5, domainAutoAllow: 0 };
  const sender = (i: number) => `s${String(i).padStart(5, '0')}@sender.example`;

  /** n waiting triplets of 192.0.2.0/24, their senders numbered in key order. */
  async function seedTriplets(store: Store, n: number): Promise<Greylist> {
    const greylist = new Greylist(store, systemClock, settings);
    const now = Date.now();
    for (let start = 0; start < n; start += 1000) {
      const keys = Array.from({ length: Math.min(1000, n - start) }, (_, i) => greylist.tripletKey('192.0.2.0/24', sender(start + i), 'alice@example.test'));
      await Promise.all(keys.map((key) => store.set(key, `${now},${now}`, 86_400_000)));
    }
    return greylist;
  }

  /** A slow reader: each write is taken a turn later, so write() asks for a drain at once. */
  function slowOutput(): { out: Writable; lines: () => string[] } {
    const chunks: string[] = [];
    const out = new Writable({
      highWaterMark: 1,
      write(chunk: Buffer, _encoding, done) {
        chunks.push(chunk.toString());
        setImmediate(done);
      },
    });
    return { out, lines: () => chunks.join('').split('\n').slice(0, -1) };
  }

  it('prints 25,000 entries of a SQLite store read 1,000 at a time, every one, in key order', async () => {
    const store = await SqliteStore.open(join(mkdtempSync(join(tmpdir(), 'callout-greylist-pages-')), 'callout.sqlite'));
    try {
      const greylist = await seedTriplets(store, 25_000);
      const output = slowOutput();
      assert.deepEqual(await printGreylist(greylist, { kinds: ['triplet', 'client', 'domain'], limit: 1_000_000, json: false, pageSize: 1000 }, output.out), { printed: 25_000, more: false });
      const senders = output.lines().map((line) => line.split(' ')[2]);
      assert.deepEqual(senders, Array.from({ length: 25_000 }, (_, i) => sender(i)));
      // --limit stops within a page; --json prints one object a line.
      const limited = slowOutput();
      assert.deepEqual(await printGreylist(greylist, { kinds: ['triplet'], limit: 1234, json: true, pageSize: 100 }, limited.out), { printed: 1234, more: true });
      assert.deepEqual(limited.lines().map((line) => (JSON.parse(line) as { sender: string }).sender), Array.from({ length: 1234 }, (_, i) => sender(i)));
    } finally {
      await store.close();
    }
  });

  it('lists the client entries of a network page by page, the addresses outside it left out', async () => {
    const store = await SqliteStore.open(':memory:');
    try {
      const greylist = new Greylist(store, systemClock, settings);
      for (const third of [1, 2, 3, 4]) for (let host = 0; host < 20; host += 1) await greylist.allowClient(`192.0.${third}.${host}`);
      const output = slowOutput();
      const client = { identity: '192.0.2.0/23', network: { family: 4 as const, network: 0xc0000200n, prefixLength: 23 } };
      assert.deepEqual(await printGreylist(greylist, { kinds: ['client'], client, limit: 1000, json: false, pageSize: 7 }, output.out), { printed: 40, more: false });
      const expected = [2, 3].flatMap((third) => Array.from({ length: 20 }, (_, host) => `192.0.${third}.${host}`)).sort();
      assert.deepEqual(output.lines().map((line) => line.split(' ')[1]), expected);
    } finally {
      await store.close();
    }
  });

  for (const kind of ['sqlite', 'redis', 'memory'] as const) {
    it(`prints each page before it reads the next, and waits for a slow reader (${kind})`, async () => {
      const redis = kind === 'redis' ? await startRedis() : undefined;
      const store: Store = redis ? await RedisStore.open(redis.url) : kind === 'sqlite' ? await SqliteStore.open(':memory:') : new MemoryStore();
      try {
        await seedTriplets(store, 2500);
        // The store as list reads it, counting the pages it has given.
        let pagesRead = 0;
        const counted: Store = Object.assign(Object.create(store) as Store, {
          async *scanPages(prefix: string, pageSize: number) {
            for await (const page of store.scanPages(prefix, pageSize)) {
              pagesRead += 1;
              yield page;
            }
          },
        });
        const output = slowOutput();
        const seen: Array<{ pagesRead: number; buffered: number }> = [];
        const write = output.out.write.bind(output.out);
        output.out.write = ((chunk: string) => {
          seen.push({ pagesRead, buffered: output.out.writableLength });
          return write(chunk);
        }) as typeof output.out.write;
        assert.deepEqual(await printGreylist(new Greylist(counted, systemClock, settings), { kinds: ['triplet'], limit: 1_000_000, json: false, pageSize: 100 }, output.out), { printed: 2500, more: false });
        // One write a page, each made before the next page was read, into an empty buffer.
        assert.equal(seen.length, 25);
        assert.deepEqual(seen, seen.map((_, i) => ({ pagesRead: i + 1, buffered: 0 })));
        const lines = output.lines();
        const senders = lines.map((line) => line.split(' ')[2] ?? '');
        if (kind === 'redis') {
          // In the order SCAN found them, each page in key order.
          for (let start = 0; start < senders.length; start += 100) {
            const page = senders.slice(start, start + 100);
            assert.deepEqual(page, [...page].sort());
          }
          senders.sort();
        }
        assert.deepEqual(senders, Array.from({ length: 2500 }, (_, i) => sender(i)));
      } finally {
        await store.close();
        await redis?.stop();
      }
    });
  }
});
