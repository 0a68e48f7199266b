// The command line as an administrator runs it: a child process, its output and its exit status.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/load.js';
import { startDnsServer } from '../support/dns-server.js';
import type { DnsTestServer } from '../support/dns-server.js';
import { acceptAll, startSmtpServers, usersOnly } from '../support/smtp-server.js';
import type { SmtpTestServer } from '../support/smtp-server.js';
import { mxZone } from '../verify/fixture.js';
import { until } from '../support/wait.js';
import { ROOT, callout } from '../support/cli.js';

/** A reply whose text clears the terminal line and writes a verdict of its own over it. */
const ESCAPING_REPLY = '550 5.1.1 \u001b[2K\rmallory@escape.test: deliverable (accepted) - \u009b0m';
let dns: DnsTestServer;
let smtp: SmtpTestServer[];
let dir: string;

before(async () => {
  dns = await startDnsServer({ ...mxZone({ 'real.test': '127.0.0.2', 'any.test': '127.0.0.3', 'escape.test': '127.0.0.4' }), 'nullmx.test': { MX: [{ priority: 0, exchange: '.' }] }, 'pra.test': { TXT: ['spf2.0/pra ip4:192.0.2.0/24 -all'] } });
  smtp = await startSmtpServers(['127.0.0.2', '127.0.0.3', '127.0.0.4'], (host) =>
    host === '127.0.0.2' ? usersOnly(['alice', 'carol']) : host === '127.0.0.4' ? { rcpt: () => ESCAPING_REPLY } : acceptAll(),
  );
  dir = mkdtempSync(join(tmpdir(), 'callout-cli-'));
});
after(async () => {
  await Promise.all(smtp.map((s) => s.close()));
  await dns.close();
  rmSync(dir, { recursive: true, force: true });
});

const engine = () => ['--dns-server', dns.address, '--allow-target', '127.0.0.0/8', '--port', String(smtp[0]!.port), '--helo', 'verifier.callout.test'];

describe('callout verify', () => {
  it('prints one plain verdict per address with the reason; exit 0 when all are deliverable', async () => {
    const { code, stdout } = await callout(['verify', ...engine(), 'alice@real.test']);
    assert.equal(code, 0);
    assert.match(stdout, /^alice@real\.test: deliverable \(accepted\) - mx1\.real\.test \[127\.0\.0\.2\] answered RCPT TO:<alice@real\.test> with 250/);
  });

  it('--json prints JSON Lines with the evidence; exit 1 when one is undeliverable', async () => {
    const { code, stdout } = await callout(['verify', '--json', ...engine(), 'alice@real.test', 'nobody@real.test', 'x@nullmx.test', 'not an address']);
    assert.equal(code, 1);
    const lines = stdout.trim().split('\n').map((l) => JSON.parse(l) as { address: string; verdict: string; reason: string; attempts: unknown[]; mxHosts: unknown[] });
    assert.deepEqual(lines.map((l) => l.verdict), ['deliverable', 'undeliverable', 'no-mail-domain', 'invalid']);
    assert.equal(lines[2]!.reason, 'null-mx');
    assert.ok(lines[0]!.attempts.length > 0 && lines[0]!.mxHosts.length > 0, 'lines[0]!.attempts.length > 0 && lines[0]!.mxHosts.length > 0');
  });

  it('exit 1 for an address without a mail domain, or an invalid one, beside a risky one', async () => {
    const nullMx = await callout(['verify', ...engine(), 'x@nullmx.test', 'whoever@any.test']);
    assert.equal(nullMx.code, 1, nullMx.stdout);
    assert.match(nullMx.stdout, /^x@nullmx\.test: no-mail-domain \(null-mx\)/);
    const invalid = await callout(['verify', ...engine(), 'not an address', 'whoever@any.test']);
    assert.equal(invalid.code, 1, invalid.stdout);
    assert.match(invalid.stdout, /^"not an address": invalid /);
  });

  it('exit 2 when nothing is definitely bad but something is risky', async () => {
    const { code, stdout } = await callout(['verify', ...engine(), 'whoever@any.test']);
    assert.equal(code, 2);
    assert.match(stdout, /risky \(catch-all\)/);
  });

  it('--file reads one address per line or CSV and keeps the input order', async () => {
    const csv = join(dir, 'list.csv');
    writeFileSync(csv, 'name,email\nAlice,alice@real.test\nBob,bob@real.test\n# a comment\nCarol,carol@real.test\n');
    const { stdout } = await callout(['verify', ...engine(), '--file', csv, '--concurrency', '2']);
    assert.deepEqual(stdout.trim().split('\n').map((l) => l.split(':')[0]), ['alice@real.test', 'bob@real.test', 'carol@real.test']);
  });

  it('--file verifies limits.listConcurrency domains at once, from the file or --concurrency', async () => {
    const hosts = ['127.0.0.81', '127.0.0.82', '127.0.0.83', '127.0.0.84', '127.0.0.85', '127.0.0.86'];
    const domains = Object.fromEntries(hosts.map((host, i) => [`slow${i}.test`, host]));
    const slowDns = await startDnsServer(mxZone(domains));
    // Greetings that take longer than the test: the connections open at once are the domains in flight.
    const slow = await startSmtpServers(hosts, () => ({ ...usersOnly(['a']), greeting: () => ({ reply: '220 slow', delayMs: 20_000 }) }));
    const list = join(dir, 'slow.txt');
    writeFileSync(list, Object.keys(domains).map((d) => `a@${d}`).join('\n'));
    const config = join(dir, 'two-at-once.yaml');
    writeFileSync(config, 'limits:\n  listConcurrency: 2\n');
    const args = ['verify', '--dns-server', slowDns.address, '--allow-target', '127.0.0.0/8', '--port', String(slow[0]!.port), '--helo', 'verifier.callout.test', '--file', list];
    const opened = () => slow.reduce((sum, server) => sum + server.connectionCount, 0);
    // As long as callout() gives a command: a child process starts slowly on a loaded machine.
    const startMs = 30_000;
    const runs: Array<ReturnType<typeof spawn>> = [];
    const start = (extra: string[]) => {
      const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args, ...extra], { cwd: ROOT, stdio: 'ignore' });
      runs.push(child);
      return child;
    };
    try {
      start(['--config', config]);
      assert.ok(await until(() => opened() >= 2, startMs, 20), `the first two domains (${opened()} connections)`);
      await new Promise((resolve) => setTimeout(resolve, 500));
      assert.equal(opened(), 2, 'limits.listConcurrency 2 from the file: two domains at a time');
      runs.pop()!.kill('SIGKILL');
      const before = opened();
      start(['--config', config, '--concurrency', '6']);
      assert.ok(await until(() => opened() - before === 6, startMs, 20), `all six domains at once with --concurrency 6 (${opened() - before} connections)`);
    } finally {
      for (const child of runs) child.kill('SIGKILL');
      await Promise.all(slow.map((server) => server.close()));
      await slowDns.close();
    }
  });

  it('a DNS failure is one clear line, not a stack trace', async () => {
    const { stdout, stderr } = await callout(['verify', '--dns-server', '127.0.0.1:9', '--helo', 'verifier.callout.test', '--timeout', '3', 'a@real.test']);
    assert.match(stdout, /^a@real\.test: unknown \(dns-tempfail\) - DNS lookup for real\.test failed temporarily/);
    assert.doesNotMatch(stdout + stderr, /\n\s+at /);
  });

  it('usage and configuration errors have their own exit status and one line', async () => {
    const usage = await callout(['verify', '--no-such-option']);
    assert.equal(usage.code, 64);
    const noHelo = await callout(['verify', 'a@real.test']);
    assert.equal(noHelo.code, 78);
    // It named neither the flag's argument nor where the key goes.
    assert.match(noHelo.stderr, /^callout: CONFIG_INVALID: callout\.helo: got nothing, .*: give --helo NAME or callout\.helo in the configuration file$/m);
    // Refused before the cache is made: it created the file (and its directories), then failed.
    const cache = join(dir, 'no-helo', 'cache.sqlite');
    const noHeloCache = await callout(['verify', '--cache', cache, 'a@real.test']);
    assert.equal(noHeloCache.code, 78);
    assert.equal(existsSync(join(dir, 'no-helo')), false);
    // A flag's value the schema refuses is a mistake on the command line, as --timeout 0 is (they exited 78).
    const badFlag = await callout(['verify', '--helo', 'not_a_name', 'a@real.test']);
    assert.equal(badFlag.code, 64);
    assert.match(badFlag.stderr, /^callout: USAGE: command line: --helo \(callout\.helo\): got "not_a_name"/);
    for (const [flag, value, key] of [['--port', '0', 'callout.port'], ['--dns-server', '127.0.0.1:0', 'dns.servers.0']] as const) {
      const refused = await callout(['verify', flag, value, '--helo', 'verifier.callout.test', 'a@real.test']);
      assert.equal(refused.code, 64, refused.stderr);
      assert.ok(refused.stderr.startsWith(`callout: USAGE: command line: ${flag} (${key}): got `), refused.stderr);
    }
  });

  it('prints the exchanger\'s reply text quoted when it holds control characters', async () => {
    const { code, stdout } = await callout(['verify', ...engine(), 'mallory@escape.test']);
    assert.equal(code, 1);
    assert.equal(
      stdout,
      'mallory@escape.test: undeliverable (rejected-at-rcpt) - "mx1.escape.test [127.0.0.4] answered RCPT TO:<mallory@escape.test> with 550 5.1.1 \\u001b[2K\\rmallory@escape.test: deliverable (accepted) - \\u009b0m"\n',
    );
  });

  it('names the key and the flag that let a refused target be probed (it said "allowTargets / --allow-target")', async () => {
    // An address literal: no DNS lookup, and 127.0.0.1 is refused before any connection.
    const { code, stdout } = await callout(['verify', '--helo', 'verifier.callout.test', 'user@[127.0.0.1]']);
    assert.equal(code, 2);
    assert.match(stdout, /: unknown \(target-refused\) - .*127\.0\.0\.1 is a loopback address \(allow it with callout\.allowTargets or --allow-target\)$/m);
  });

  it('prints an address with control characters, white space or a quote quoted, and names an empty --file', async () => {
    const { stdout } = await callout(['verify', ...engine(), 'a\u0001b@real.test']);
    assert.match(stdout, /^"a\\u0001b@real\.test": invalid \(syntax\)/);
    // A field a script splits the line into at spaces: "a b"@real.test bare would read as two.
    const spaced = await callout(['verify', ...engine(), '"a b"@real.test']);
    assert.match(spaced.stdout, /^"\\"a b\\"@real\.test": \w+ \(/, spaced.stdout);
    const empty = await callout(['verify', ...engine(), '--file', '']);
    assert.equal(empty.code, 64);
    assert.equal(empty.stderr, 'callout: USAGE: --file: got "", expected a file\n');
  });

  // The file's "<>" went out as MAIL FROM:<<>> (only --sender translated it), and a sender that is
  // no address as written: every server refused it, and every verdict was unknown (refused-at-mail).
  it('reads callout.sender as --sender does, "<>" and "<address>" included, and refuses one that is no address', async () => {
    const mailFrom = async (args: string[]) => {
      const { code, stdout, stderr } = await callout(['verify', '--json', ...engine(), ...args, 'alice@real.test']);
      assert.equal(code, 0, stdout + stderr);
      const { attempts } = JSON.parse(stdout) as { attempts: Array<{ transcript: Array<{ dir: string; line: string }> }> };
      return attempts[0]!.transcript.find((entry) => entry.dir === 'sent' && entry.line.startsWith('MAIL'))?.line;
    };
    const nullSender = join(dir, 'null-sender.yaml');
    writeFileSync(nullSender, 'callout:\n  sender: "<>"\n');
    assert.equal(await mailFrom(['-c', nullSender]), 'MAIL FROM:<>');
    assert.equal(await mailFrom(['--sender', '<Probe@Callout.Test>']), 'MAIL FROM:<Probe@callout.test>');
    const bad = await callout(['verify', ...engine(), '--sender', 'probe at callout.test', 'alice@real.test']);
    assert.equal(bad.code, 64);
    assert.match(bad.stderr, /^callout: USAGE: command line: --sender \(callout\.sender\): got "probe at callout\.test", expected an address, or "" for the null sender/);
    const fallback = join(dir, 'null-fallback.yaml');
    writeFileSync(fallback, 'callout:\n  fallbackSender: ""\n');
    const refused = await callout(['config', 'check', fallback]);
    assert.equal(refused.code, 78);
    assert.match(refused.stderr, /callout\.fallbackSender: got "", expected an address/);
  });

  it('ends quietly, as SIGPIPE would (141), when the reader of its output goes away (| head)', async () => {
    const list = join(dir, 'many-invalid.txt');
    // Invalid addresses: verdicts at once, without DNS or SMTP, far more than a pipe holds.
    writeFileSync(list, Array.from({ length: 20_000 }, (_, i) => `not an address ${i}`).join('\n'));
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'verify', '--json', ...engine(), '--file', list], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.stdout!.once('data', () => child.stdout!.destroy());
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    assert.equal(stderr, '', 'no stack trace');
    assert.equal(code, 141);
  });

  it('refuses an input file without end, as senderid does, instead of reading it until memory runs out', async () => {
    const list = await callout(['verify', ...engine(), '--file', '/dev/zero']);
    assert.equal(list.code, 64);
    assert.equal(list.stderr, 'callout: USAGE: --file /dev/zero: larger than 64 MiB\n');
    const message = await callout(['senderid', '--ip', '192.0.2.7', '--message', '/dev/zero', '--dns-server', dns.address]);
    assert.equal(message.code, 64);
    assert.equal(message.stderr, 'callout: USAGE: senderid: --message "/dev/zero": larger than 64 MiB\n');
  });
});

describe('--cache help', () => {
  // serve keeps verdicts in its store under --data-dir; its help said "in memory", which is verify's default.
  it('names the default store of each command', async () => {
    const serve = await callout(['serve', '--help']);
    assert.match(serve.stdout.replace(/\s+/g, ' '), /--cache <file> SQLite file for the verification cache \(default: store\.path, callout\.sqlite under the data directory\)/);
    const verify = await callout(['verify', '--help']);
    assert.match(verify.stdout.replace(/\s+/g, ' '), /--cache <file> SQLite file for the verification cache \(default: in memory, or the configuration file's store\)/);
    // Help asked for is no usage error: 0, as --version (sysexits 64 is for a mistake on the command line).
    assert.deepEqual([serve.code, verify.code, (await callout(['--version'])).code], [0, 0, 0]);
  });
});

describe('flag help', () => {
  // Commander wrote the empty list a repeatable flag starts from after the flag's own words: "(default: the system resolver) (default: [])".
  it('shows no "(default: [])" after a repeatable flag, in any command that has one', async () => {
    const commands = [['verify'], ['serve'], ['config', 'print'], ['spf'], ['senderid'], ['rewrite', 'serve'], ['srs', 'forward'], ['bounce', 'record']];
    const helps = await Promise.all(commands.map((command) => callout([...command, '--help'])));
    helps.forEach((help, i) => {
      assert.equal(help.code, 0, commands[i]!.join(' '));
      assert.match(help.stdout, /repeatable/, `${commands[i]!.join(' ')} has a repeatable flag`);
      assert.doesNotMatch(help.stdout, /\(default: \[\]\)/, commands[i]!.join(' '));
    });
    assert.match(helps[0]!.stdout.replace(/\s+/g, ' '), /--dns-server <ip\[:port\]> DNS server to query, .*default: the system resolver\) --helo/);
  });
});

describe('callout config', () => {
  it('check names every bad key with the value and what was expected', async () => {
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'callout:\n  tls: maybe\n  prot: 25\npolicy:\n  stages:\n    - name: sender-callout\n      actions: { undeliverable: explode }\n');
    const { code, stderr } = await callout(['config', 'check', bad]);
    assert.equal(code, 78);
    assert.match(stderr, /callout\.tls: got "maybe"/);
    assert.match(stderr, /callout\.prot: unknown key/);
    assert.match(stderr, /policy\.stages\.0\.actions\.undeliverable \(sender-callout\): got "explode"/);
    const good = join(dir, 'good.yaml');
    writeFileSync(good, 'callout:\n  helo: mx.example.org\n');
    const ok = await callout(['config', 'check', good]);
    assert.equal(ok.code, 0);
    assert.equal(ok.stdout, `${good}: ok\n`);
    // A file of comments only is valid, but a reload refuses it: check says so.
    const empty = join(dir, 'empty.yaml');
    writeFileSync(empty, '# nothing yet\n');
    const none = await callout(['config', 'check', empty]);
    assert.equal(none.code, 0);
    assert.equal(none.stdout, `${empty}: ok\n`);
    assert.ok(none.stderr.includes(`${empty}: holds no settings: serve starts with the defaults, and a reload (SIGHUP) refuses it`), none.stderr);
  });

  it('check says how to write a stage given by its name alone (it said only "expected a mapping of keys")', async () => {
    const file = join(dir, 'bare-stage.yaml');
    writeFileSync(file, 'policy:\n  stages: [allowlist, 42, frobnicate]\n');
    const { code, stderr } = await callout(['config', 'check', file]);
    assert.equal(code, 78, stderr);
    assert.equal(
      stderr,
      `callout: CONFIG_INVALID: ${file}: policy.stages.0: got "allowlist", expected a mapping such as { name: allowlist } (write - name: allowlist); ` +
        'policy.stages.1: got 42, expected a mapping of keys (key: value lines); policy.stages.2: got "frobnicate", expected a mapping of keys (key: value lines)\n',
    );
  });

  it('check builds the stages as serve would, so their own checks run too, and names the file', async () => {
    const cases: Array<[string, RegExp]> = [
      // Named by the entry's key, as the schema's own problems are (it said "allowlist.clientNames").
      ['policy:\n  stages:\n    - name: postmaster\n    - name: allowlist\n      clientNames: ["*.example.org"]\n', /: policy\.stages\.1\.clientNames \(allowlist\): "\*\.example\.org" is not a host name: .*; write "\.example\.org" for the domain and its subdomains\n/],
      ['policy:\n  stages:\n    - name: greylist\n      states: [MAIL]\n', /policy\.stages\.0\.states \(greylist\): got MAIL: this stage runs only in RCPT/],
      [`policy:\n  stages:\n    - name: greylist\n      whitelistClientFiles: [${join(dir, 'no-such-whitelist')}]\n`, /no-such-whitelist: cannot read/],
      // A typo of {reason} went out to SMTP clients as it was written.
      [
        'policy:\n  stages:\n    - name: postmaster\n    - name: sender-callout\n      rejectText: "Sender address rejected: {reson}"\n',
        /: policy\.stages\.1\.rejectText \(sender-callout\): unknown placeholder \{reson\}; this text takes \{sender\}, \{recipient\}, \{reason\}\n/,
      ],
    ];
    for (const [text, problem] of cases) {
      const file = join(dir, 'stage-problem.yaml');
      writeFileSync(file, text);
      const { code, stderr } = await callout(['config', 'check', file]);
      assert.equal(code, 78, text);
      assert.ok(stderr.startsWith(`callout: CONFIG_INVALID: ${file}: `), stderr);
      assert.match(stderr, problem);
    }
  });

  it('check prints, and still accepts, an option that reads a stage which runs after it', async () => {
    const file = join(dir, 'stage-order.yaml');
    writeFileSync(file, 'callout:\n  helo: mx.example.org\npolicy:\n  stages:\n    - name: sender-callout\n    - name: spf\n');
    const { code, stdout, stderr } = await callout(['config', 'check', file]);
    assert.equal(code, 0, stderr);
    assert.equal(stdout, `${file}: ok\n`);
    assert.ok(stderr.includes('policy.stages.0.skipOnSpfPass: reads the verdict of an earlier spf stage, but policy.stages.1 (spf) runs after it: no callout is skipped for an SPF pass'), stderr);
  });

  it('print writes durations as durations, so its output read back is the same configuration', async () => {
    const file = join(dir, 'durations.yaml');
    // Stage durations as bare numbers (seconds) and with units, beside the schema's own.
    writeFileSync(
      file,
      'callout:\n  helo: mx.example.org\n  connectionCache: { idleTime: 3 }\nstore: { purgeInterval: 15m }\npolicy:\n  stages:\n' +
        '    - { name: greylist, delay: 300, retryWindow: 172800, maxAge: 35d }\n' +
        '    - { name: tarpit, sleep: 2, maxSleep: 5, perClient: { window: 3600, soft: 20, hard: 50 } }\n' +
        '    - name: ratelimit\n      limits: [{ per: client, count: messages, max: 10, window: 3600 }]\n',
    );
    const printed = await callout(['config', 'print', '-c', file]);
    assert.equal(printed.code, 0, printed.stderr);
    const again = join(dir, 'printed.yaml');
    writeFileSync(again, printed.stdout);
    assert.deepEqual(loadConfig(again), loadConfig(file), 'the printed file is the same configuration');
    assert.match(printed.stdout, /idleTime: 3s/);
    assert.match(printed.stdout, /purgeInterval: 15m/);
    assert.match(printed.stdout, /delay: 5m/);
    assert.match(printed.stdout, /sleep: 2s/);
  });

  it('print shows the defaults that depend on the host as comments, so that a copy on another host takes its own', async () => {
    const file = join(dir, 'host-defaults.yaml');
    writeFileSync(file, 'policy:\n  stages:\n    - name: spf\n    - { name: iprev, authservId: mx.example.org }\n');
    const { code, stdout, stderr } = await callout(['config', 'print', '-c', file]);
    assert.equal(code, 0, stderr);
    const values = stdout.split('\n').filter((line) => !line.trimStart().startsWith('#'));
    assert.deepEqual(values.filter((line) => /^\s*(?:helo|idlePollMicros|authservId):/.test(line)), ['      authservId: mx.example.org'], 'only the authserv-id the file sets is a value');
    assert.match(stdout, new RegExp(`^ {2}# helo: \\S+ \\(default on this host: its name.*\\)\\n {2}sender: `, 'm'), 'helo where it would stand, as a comment');
    assert.match(stdout, /^ {2}# idlePollMicros: \d+ \(default on this host: it has \d+ CPUs?\)\n {2}acceptTestTime: /m, 'idlePollMicros in its place, as a comment');
    assert.match(stdout, new RegExp(`^ {6}# authservId: ${hostname().replace(/\./g, '\\.')} \\(default on this host: its name\\)\\n {6}authenticationResults: `, 'm'), 'the spf stage\'s authservId as a comment');
    const again = join(dir, 'host-defaults-printed.yaml');
    writeFileSync(again, stdout);
    assert.deepEqual(loadConfig(again), loadConfig(file), 'read back on this host, the printed file is the same configuration');
    // Set in the file or by a flag, they are the administrator's: values.
    writeFileSync(file, 'policy:\n  idlePollMicros: 0\n');
    const set = await callout(['config', 'print', '-c', file, '--helo', 'mx.example.org']);
    assert.equal(set.code, 0, set.stderr);
    assert.match(set.stdout, /^ {2}helo: mx\.example\.org\n/m, 'helo given by --helo is a value');
    assert.match(set.stdout, /^ {2}idlePollMicros: 0\n/m, 'idlePollMicros set in the file is a value');
    assert.doesNotMatch(set.stdout, /#/, 'nothing left to comment');
  });

  it('print shows secrets as ***: a BATV secret and the password of store.url', async () => {
    const file = join(dir, 'secrets.yaml');
    writeFileSync(
      file,
      'store: { kind: redis, url: "redis://:hunter2@127.0.0.1:6379/0" }\n' +
        'policy:\n  stages:\n    - { name: batv, domains: [example.org], keys: [{ keynum: 1, secret: topsecret }] }\n',
    );
    const { code, stdout, stderr } = await callout(['config', 'print', '-c', file]);
    assert.equal(code, 0, stderr);
    assert.doesNotMatch(stdout, /hunter2|hunter3|topsecret/);
    assert.match(stdout, /url: redis:\/\/:\*\*\*@127\.0\.0\.1:6379\/0\n/);
    // The password as a URL parameter (with a user part beside it, the driver ignored it: refused).
    const parameter = join(dir, 'secret-parameter.yaml');
    writeFileSync(parameter, 'store: { kind: redis, url: "redis://127.0.0.1:6379/0?username=app&password=hunter3" }\n');
    const printedParameter = await callout(['config', 'print', '-c', parameter]);
    assert.equal(printedParameter.code, 0, printedParameter.stderr);
    assert.doesNotMatch(printedParameter.stdout, /hunter3/);
    assert.match(printedParameter.stdout, /url: redis:\/\/127\.0\.0\.1:6379\/0\?username=app&password=\*\*\*\n/);
    assert.match(stdout, /secret: "\*\*\*"/);
    // Read back, the printed file must not sign with "***" or log in with it: refused, naming why.
    const printed = join(dir, 'printed.yaml');
    writeFileSync(printed, stdout);
    const back = await callout(['config', 'check', printed]);
    assert.equal(back.code, 78, back.stderr);
    assert.match(back.stderr, /put the real (secret|password) back/);
    writeFileSync(printed, stdout.replace(/url: .*\n/, 'url: redis://127.0.0.1:6379/0\n'));
    const batvOnly = await callout(['config', 'check', printed]);
    assert.equal(batvOnly.code, 78, batvOnly.stderr);
    assert.match(batvOnly.stderr, /keys\.0\.secret.*put the real secret back/);
  });

  it('check reports YAML syntax errors with the line', async () => {
    const broken = join(dir, 'broken.yaml');
    writeFileSync(broken, 'callout:\n  helo: [unclosed\n');
    const { code, stderr } = await callout(['config', 'check', broken]);
    assert.equal(code, 78);
    assert.match(stderr, /YAML syntax error at line \d+/);
  });

  it('print shows the effective configuration with defaults and flags', async () => {
    const { code, stdout } = await callout(['config', 'print', '--helo', 'mx.example.org', '--port', '2525']);
    assert.equal(code, 0);
    assert.match(stdout, /helo: mx\.example\.org/);
    assert.match(stdout, /port: 2525/);
    assert.match(stdout, /addressPositive: 1d/);
    assert.match(stdout, /listen: 127\.0\.0\.1:10040/);
  });
});

describe('callout senderid', () => {
  it('evaluates the Purported Responsible Address of a message file', async () => {
    const message = join(dir, 'message.eml');
    writeFileSync(message, 'Received: from x\r\nSender: list@pra.test\r\nFrom: Someone <someone@elsewhere.test>\r\nSubject: hi\r\n\r\nbody\r\n');
    const pass = await callout(['senderid', '--ip', '192.0.2.7', '--message', message, '--dns-server', dns.address]);
    assert.equal(pass.code, 0, pass.stderr);
    assert.match(pass.stdout, /^pra: list@pra\.test \(from the sender field\)\nresult: pass/);
    const fail = await callout(['senderid', '--ip', '198.51.100.7', '--message', message, '--dns-server', dns.address, '--json']);
    assert.equal(fail.code, 1);
    assert.equal((JSON.parse(fail.stdout) as { result: string }).result, 'fail');
  });

  it('reads the message from standard input for --message -, as the bounce commands do', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'senderid', '--ip', '192.0.2.7', '--message', '-', '--dns-server', dns.address], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
    child.stdin.end('Sender: list@pra.test\r\nFrom: someone@elsewhere.test\r\n\r\nbody\r\n');
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    assert.equal(code, 0, Buffer.concat(err).toString());
    assert.match(Buffer.concat(out).toString(), /^pra: list@pra\.test \(from the sender field\)\nresult: pass/, 'the PRA of the message piped in');
  });

  it('refuses the null sender in scope mfrom without --helo, as spf does', async () => {
    const message = join(dir, 'message.eml');
    writeFileSync(message, 'From: someone@elsewhere.test\r\n\r\nbody\r\n');
    const refused = await callout(['senderid', '--ip', '192.0.2.7', '--message', message, '--scope', 'mfrom', '--sender', '<>', '--dns-server', dns.address]);
    assert.equal(refused.code, 64);
    assert.equal(refused.stderr, 'callout: USAGE: senderid: the null sender needs --helo\n');
  });
});
