import assert from 'node:assert/strict';
import { chmodSync, copyFileSync, existsSync, lstatSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { Command } from 'commander';
import fc from 'fast-check';
import { clockFromFlag, readBatvKeys, readSrsSecrets, registerRewriteCommands } from '../../src/cli/rewrite.js';
import { elapsedMs } from '../support/fuzz.js';
import { ConfigError, UsageError } from '../../src/core/errors.js';
import { SocketmapClient, TcpTableClient } from '../support/lookup-clients.js';
import type { LookupLog } from '../../src/rewrite/lookup.js';
import type { Clock } from '../../src/core/clock.js';
import { startRedis } from '../support/redis.js';

const dir = mkdtempSync(join(tmpdir(), 'callout-cli-rewrite-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const srsSecret = join(dir, 'srs.secret');
writeFileSync(srsSecret, 'tops3cr3t\nolder\n');
// Private, as secrets should be: srs forward and reverse warn of one others can read.
chmodSync(srsSecret, 0o600);
const batvKeys = join(dir, 'batv.keys');
writeFileSync(batvKeys, '# newest first\n1 secret\n0 old secret\n');
const fixture = (name: string) => new URL(`../fixtures/bounce/${name}`, import.meta.url).pathname;
const NOW = '2020-01-01T00:01:00Z';

async function run(args: string[], options: { stdin?: string; stop?: AbortSignal; onOutput?: (text: string) => void; log?: LookupLog; err?: NodeJS.WritableStream; clock?: Clock } = {}): Promise<{ out: string; code: number }> {
  const program = new Command('callout').exitOverride().configureOutput({ writeErr: () => undefined, writeOut: () => undefined });
  const out = new PassThrough();
  let text = '';
  out.on('data', (chunk: Buffer) => {
    text += chunk.toString();
    options.onOutput?.(text);
  });
  registerRewriteCommands(program, { out, stdin: Readable.from([options.stdin ?? '']), ...(options.stop ? { stop: options.stop } : {}), ...(options.log ? { log: options.log } : {}), ...(options.err ? { err: options.err } : {}), ...(options.clock ? { clock: options.clock } : {}) });
  process.exitCode = 0;
  try {
    await program.parseAsync(['node', 'callout', ...args]);
    return { out: text, code: Number(process.exitCode ?? 0) };
  } finally {
    process.exitCode = 0;
  }
}

describe('callout batv', () => {
  it('signs as Exim and checks, with --now', async () => {
    assert.deepEqual(await run(['batv', 'sign', '--secret', 'secret', '--keynum', '1', '--now', NOW, 'user@example.com']), { out: 'prvs=1269e93bf9=user@example.com\n', code: 0 });
    assert.deepEqual(await run(['batv', 'check', '--secret', 'secret', '--now', NOW, 'prvs=1269e93bf9=user@example.com']), { out: 'valid: user@example.com (key 1)\n', code: 0 });
    assert.deepEqual(await run(['batv', 'check', '--secret', 'secret', '--now', '2020-01-09T00:00:01Z', 'prvs=1269e93bf9=user@example.com']), { out: 'expired: user@example.com (key 1)\n', code: 1 });
    assert.deepEqual(await run(['batv', 'check', '--secret', 'secret', '--keynum', '2', '--now', NOW, 'prvs=1269e93bf9=user@example.com']), { out: 'unknown-key: user@example.com (key 1)\n', code: 1 });
    const json = await run(['batv', 'check', '--secret', 'x', '--json', 'user@example.com']);
    assert.deepEqual(JSON.parse(json.out), { status: 'not-prvs' });
    assert.equal((await run(['batv', 'sign', '--secret', 'secret', 'unqualified'])).code, 1);
    // Unix seconds work as --now too.
    assert.equal((await run(['batv', 'sign', '--secret', 'secret', '--keynum', '1', '--now', '1577836860', 'user@example.com'])).out, 'prvs=1269e93bf9=user@example.com\n');
    await assert.rejects(run(['batv', 'sign', '--secret', 's', '--keynum', '12', 'a@b']), UsageError);
  });

  it('batv sign and check take the secret from --secret-file (a --secret is in every local user\'s ps), exactly one of the two', async () => {
    const file = (name: string, text: string, mode = 0o600) => {
      const path = join(dir, name);
      writeFileSync(path, text);
      chmodSync(path, mode);
      return path;
    };
    const secret = file('batv.secret', 'secret\n');
    const warned: string[] = [];
    const log: LookupLog = { info: () => undefined, warn: (fields, message) => warned.push(`${String(fields.file)}: ${message}`) };
    assert.deepEqual(await run(['batv', 'sign', '--secret-file', secret, '--keynum', '1', '--now', NOW, 'user@example.com'], { log }), { out: 'prvs=1269e93bf9=user@example.com\n', code: 0 });
    assert.deepEqual(await run(['batv', 'check', '--secret-file', secret, '--now', NOW, 'prvs=1269e93bf9=user@example.com'], { log }), { out: 'valid: user@example.com (key 1)\n', code: 0 });
    assert.deepEqual(warned, []);
    const open = file('batv-open.secret', 'secret\n', 0o644);
    assert.equal((await run(['batv', 'sign', '--secret-file', open, '--now', NOW, 'user@example.com'], { log })).code, 0);
    assert.deepEqual(warned, [`${open}: secret file is not private`]);
    // The rewrite service's key file, one line: the whole line would be the secret, said as the stage says it.
    const keyLine = file('batv-keyline.secret', '1 secret\n');
    assert.equal((await run(['batv', 'sign', '--secret-file', keyLine, '--keynum', '1', '--now', NOW, 'user@example.com'], { log })).code, 0);
    assert.equal((await run(['batv', 'check', '--secret-file', keyLine, '--now', NOW, 'prvs=1269e93bf9=user@example.com'], { log })).code, 1);
    assert.equal((await run(['batv', 'sign', '--secret-file', keyLine, '--keynum', '2', '--now', NOW, 'user@example.com'], { log })).code, 0);
    const keyLineWarning = `${keyLine}: --secret-file holds "1 ..." as a --batv-key-file line does: the whole line, number included, is the secret; if the rewrite service signs with this file, write the secret alone`;
    assert.deepEqual(warned.slice(1), [keyLineWarning, keyLineWarning], 'said for key 1 and for a check of any key, not for a key of another number');
    for (const both of [['--secret', 'secret', '--secret-file', secret], []]) {
      await assert.rejects(run(['batv', 'sign', ...both, 'a@b.test']), (err: unknown) => err instanceof UsageError && err.message === 'give exactly one of --secret and --secret-file');
      await assert.rejects(run(['batv', 'check', ...both, 'a@b.test']), (err: unknown) => err instanceof UsageError && err.message === 'give exactly one of --secret and --secret-file');
    }
    const refused = async (path: string, problem: string) =>
      assert.rejects(run(['batv', 'sign', '--secret-file', path, 'a@b.test'], { log }), (err: unknown) => err instanceof ConfigError && err.message === `--secret-file ${path}: ${problem}`);
    await refused(join(dir, 'missing.secret'), 'cannot read: no such file (ENOENT)');
    await refused(file('empty.secret', '\n\n'), 'no secret in the file');
    await refused(file('keys.secret', '1 secret\n0 old\n'), 'more than one line, expected the secret alone (KEYNUM SECRET lines are a --batv-key-file: a secret file holds one secret alone)');
    await refused(file('long.secret', `${'x'.repeat(65)}\n`), 'longer than 64 bytes (Exim refuses it)');
    await assert.rejects(run(['batv', 'sign', '--secret', 's', '--now', 'yesterday', 'a@b']), UsageError);
    // A --secret no keyring takes is a usage error (64) naming the flag (regression: 78, "the secret of key 0").
    for (const command of ['sign', 'check']) {
      await assert.rejects(run(['batv', command, '--secret', '', 'a@b.test']), (err: unknown) => err instanceof UsageError && err.message === '--secret: got an empty secret', command);
      await assert.rejects(run(['batv', command, '--secret', 'x'.repeat(65), 'a@b.test']), (err: unknown) => err instanceof UsageError && err.message === '--secret: longer than 64 bytes (Exim refuses it)', command);
    }
    assert.equal((await run(['batv', 'sign', '--secret', 'x'.repeat(64), 'a@b.test'])).code, 0);
  });
  it('refuses to sign an address whose prvs address would be invalid, naming it and why', async () => {
    assert.deepEqual(await run(['batv', 'sign', '--secret', 's', 'a@b@c']), { out: "a@b@c: not signed: cannot sign an address with more than one '@'\n", code: 1 });
    assert.deepEqual(await run(['batv', 'sign', '--secret', 's', 'a\u0001@x.test']), { out: '"a\\u0001@x.test": not signed: cannot sign an address with a control character (U+0001)\n', code: 1 });
  });
  it('signs with key 0 by default; check without --keynum tries key numbers 0-9, under Exim\'s window unless told', async () => {
    assert.deepEqual(await run(['batv', 'sign', '--secret', 's', '--now', NOW, 'a@x.test']), { out: 'prvs=02694f4aa2=a@x.test\n', code: 0 });
    const nine = (await run(['batv', 'sign', '--secret', 'secret', '--keynum', '9', '--now', NOW, 'user@example.com'])).out.trim();
    assert.deepEqual(await run(['batv', 'check', '--secret', 'secret', '--now', NOW, nine]), { out: 'valid: user@example.com (key 9)\n', code: 0 });
    // Day 19100 takes the stamp 269 of 2020-01-01 for valid again under Exim's ${prvscheck}, not under --window bounded.
    const old = ['--secret', 'secret', '--now', '2022-04-18T00:00:00Z', 'prvs=1269e93bf9=user@example.com'];
    assert.deepEqual(await run(['batv', 'check', ...old]), { out: 'valid: user@example.com (key 1)\n', code: 0 });
    assert.deepEqual(await run(['batv', 'check', '--window', 'bounded', ...old]), { out: 'expired: user@example.com (key 1)\n', code: 1 });
  });
  it('refuses a batv check --window that is neither exim nor bounded, naming the flag and the value', async () => {
    await assert.rejects(
      run(['batv', 'check', '--secret', 'secret', '--window', 'Exim', '--now', NOW, 'prvs=1269e93bf9=user@example.com']),
      (err: unknown) => err instanceof UsageError && err.message === '--window: got "Exim", expected exim or bounded',
    );
  });
});

describe('callout srs', () => {
  it('forwards and reverses with a postsrsd secrets file', async () => {
    const common = ['--secret-file', srsSecret, '--domain', 'example.com', '--now', NOW];
    assert.deepEqual(await run(['srs', 'forward', ...common, 'test@otherdomain.com']), { out: 'SRS0=vmyz=2W=otherdomain.com=test@example.com\n', code: 0 });
    // postsrsd's local@domain form of the SRS domain, as the library takes it.
    assert.equal((await run(['srs', 'forward', '--secret-file', srsSecret, '--domain', 'srs@example.com', '--now', NOW, 'test@otherdomain.com'])).out, 'SRS0=vmyz=2W=otherdomain.com=test@example.com\n');
    assert.deepEqual(await run(['srs', 'reverse', ...common, 'SRS0=vmyz=2W=otherdomain.com=test@example.com']), { out: 'test@otherdomain.com\n', code: 0 });
    assert.deepEqual(await run(['srs', 'forward', ...common, '--local-domain', 'example.org', 'a@example.org']), { out: 'a@example.org: local-domain: Need not rewrite local domain.\n', code: 1 });
    assert.equal((await run(['srs', 'forward', ...common, '--separator', '+', '--alphabet', 'base64url', 'test@otherdomain.com'])).out, 'SRS0+vmyz=2W=otherdomain.com=test@example.com\n');
    assert.equal((await run(['srs', 'reverse', ...common, 'SRS0=vmyz=2W=otherdomain.com=test@example.com', '--now', '2020-02-01T00:00:00Z'])).code, 1);
    assert.match((await run(['srs', 'forward', ...common, '--separator', '-', 'test@otherdomain.com'])).out, /^SRS0-vmyz=2W=otherdomain\.com=test@example\.com\n$/);
    const always = await run(['srs', 'forward', ...common, '--local-domain', 'example.org', '--always-rewrite', 'a@example.org']);
    assert.equal(always.code, 0, always.out);
    assert.match(always.out, /^SRS0=[^=]{4}=2W=example\.org=a@example\.com\n$/);
    await assert.rejects(run(['srs', 'forward', '--secret-file', join(dir, 'missing'), '--domain', 'x', 'a@b']), ConfigError);
    await assert.rejects(run(['srs', 'forward', '--domain', 'x', 'a@b']), UsageError);
  });
  it('writes the hash in the --alphabet given: base64url has - and _ where base64 has + and /', async () => {
    // The hash of u3@otherdomain.com holds a '+' in base64: the address it is written in tells the alphabets apart.
    const common = ['--secret-file', srsSecret, '--domain', 'example.com', '--now', NOW];
    assert.deepEqual(await run(['srs', 'forward', ...common, 'u3@otherdomain.com']), { out: 'SRS0=W+oy=2W=otherdomain.com=u3@example.com\n', code: 0 });
    assert.deepEqual(await run(['srs', 'forward', ...common, '--alphabet', 'base64url', 'u3@otherdomain.com']), { out: 'SRS0=W-oy=2W=otherdomain.com=u3@example.com\n', code: 0 });
  });
  it('names a secrets file that holds no secret by the flag that gave it, not only "srs: at least one non-empty secret is needed"', async () => {
    const blank = join(dir, 'blank-srs.secret');
    writeFileSync(blank, '\n  \n', { mode: 0o600 });
    await assert.rejects(run(['srs', 'forward', '--secret-file', blank, '--domain', 'example.com', 'a@b.test']), (err: unknown) => err instanceof ConfigError && err.message === `--secret-file ${blank}: no secret in the file`);
    await assert.rejects(
      run(['rewrite', 'serve', '--socketmap', '127.0.0.1:0', '--srs-secret-file', blank, '--srs-domain', 'example.com'], { stop: AbortSignal.abort() }),
      (err: unknown) => err instanceof ConfigError && err.message === `--srs-secret-file ${blank}: no secret in the file`,
    );
  });
  it('says on stderr that the flags only forward uses do nothing in reverse (they were taken and ignored), and reverses all the same; reverse reads any separator and either alphabet', async () => {
    const common = ['--secret-file', srsSecret, '--domain', 'example.com', '--now', NOW];
    for (const given of [['--separator', '+'], ['--alphabet', 'base64url'], ['--local-domain', 'example.org'], ['--always-rewrite']]) {
      const err = new PassThrough();
      let said = '';
      err.on('data', (chunk: Buffer) => (said += chunk.toString()));
      const reversed = await run(['srs', 'reverse', ...common, ...given, 'SRS0=vmyz=2W=otherdomain.com=test@example.com'], { err });
      assert.deepEqual(reversed, { out: 'test@otherdomain.com\n', code: 0 }, given.join(' '));
      assert.equal(said, `callout: warning: ${given[0]!} has no effect in srs reverse, which reads any separator and either alphabet and reverses addresses of every domain; leave it out\n`);
    }
    assert.deepEqual(await run(['srs', 'reverse', ...common, 'SRS0+vmyz=2W=otherdomain.com=test@example.com']), { out: 'test@otherdomain.com\n', code: 0 });
    // --hash-length is reverse's shortest hash too.
    assert.equal((await run(['srs', 'reverse', ...common, '--hash-length', '6', 'SRS0=vmyz=2W=otherdomain.com=test@example.com'])).out, 'SRS0=vmyz=2W=otherdomain.com=test@example.com: hash-too-short: Hash too short in SRS address.\n');
  });
  it('warns of a --secret-file others can read, as batv sign and check do (regression: srs forward and reverse said nothing)', async () => {
    const open = join(dir, 'srs-open.secret');
    writeFileSync(open, 'tops3cr3t\nolder\n');
    chmodSync(open, 0o644);
    const warnings: Array<[Record<string, unknown>, string]> = [];
    const log: LookupLog = { info: () => undefined, warn: (fields, message) => warnings.push([fields, message]) };
    for (const [direction, address, rewritten] of [['forward', 'test@otherdomain.com', 'SRS0=vmyz=2W=otherdomain.com=test@example.com'], ['reverse', 'SRS0=vmyz=2W=otherdomain.com=test@example.com', 'test@otherdomain.com']] as const) {
      const common = ['srs', direction, '--domain', 'example.com', '--now', NOW, address];
      assert.deepEqual(await run([...common, '--secret-file', srsSecret], { log }), { out: `${rewritten}\n`, code: 0 }, direction);
      assert.deepEqual(await run([...common, '--secret-file', open], { log }), { out: `${rewritten}\n`, code: 0 }, `${direction}: still used`);
    }
    const warning: [Record<string, unknown>, string] = [{ file: open, setting: '--secret-file', problem: 'group or other users may read or write it (mode 0644): chmod 600' }, 'secret file is not private'];
    assert.deepEqual(warnings, [warning, warning], 'once per command, of the open file only');
  });
  it("reads a secrets file line starting with '#' as a secret, as postsrsd does (regression: skipped as a comment)", async () => {
    const hashFirst = join(dir, 'hash-first.secret');
    writeFileSync(hashFirst, '#first\nsecond\n', { mode: 0o600 });
    assert.deepEqual(readSrsSecrets(hashFirst), ['#first', 'second']);
    // Debian's postsrsd 1.10 with this file wrote this at 2020-01-01 00:01 UTC.
    const common = ['--secret-file', hashFirst, '--domain', 'example.com', '--now', NOW];
    assert.deepEqual(await run(['srs', 'forward', ...common, 'a@b.org']), { out: 'SRS0=u5TY=2W=b.org=a@example.com\n', code: 0 });
    assert.deepEqual(await run(['srs', 'reverse', ...common, 'SRS0=u5TY=2W=b.org=a@example.com']), { out: 'a@b.org\n', code: 0 });
    writeFileSync(hashFirst, '# only\n');
    assert.deepEqual(readSrsSecrets(hashFirst), ['# only']);
  });
  it('refuses to forward a sender its reverse could not give back, naming it and why', async () => {
    const common = ['--secret-file', srsSecret, '--domain', 'srs.test', '--now', NOW];
    assert.deepEqual(await run(['srs', 'forward', ...common, '"a b"@x.test']), {
      out: '"a b"@x.test: malformed: Cannot rewrite an address with a quoted local part (a quoted string cannot be embedded in another local part).\n',
      code: 1,
    });
    assert.deepEqual(await run(['srs', 'forward', ...common, '@x']), { out: '@x: malformed: Cannot rewrite an address with an empty local part.\n', code: 1 });
  });
});

describe('callout verp', () => {
  it('encodes and decodes', async () => {
    assert.deepEqual(await run(['verp', 'encode', '--sender', 'list-bounces@lists.example', 'user@example.org']), { out: 'list-bounces+user=example.org@lists.example\n', code: 0 });
    assert.deepEqual(await run(['verp', 'decode', '--sender', 'list-bounces@lists.example', 'list-bounces+user=example.org@lists.example']), { out: 'user@example.org\n', code: 0 });
    assert.equal((await run(['verp', 'encode', '--delimiters', '-=', '--sender', 'list@l.example', 'u@e.example'])).out, 'list-u=e.example@l.example\n');
    assert.equal((await run(['verp', 'decode', '--sender', 'list@l.example', 'other@l.example'])).code, 1);
    await assert.rejects(run(['verp', 'encode', '--delimiters', '#', '--sender', 'a@b', 'c@d']), UsageError);
  });
  it('refuses a recipient (exit 1) or a --sender (usage error) it cannot encode into an address that decodes', async () => {
    assert.deepEqual(await run(['verp', 'encode', '--sender', 'list-bounces@lists.test', '']), { out: '"": not encoded: the recipient is an address with no \'@\' and domain\n', code: 1 });
    assert.deepEqual(await run(['verp', 'encode', '--sender', 'list-bounces@lists.test', 'a@']), { out: 'a@: not encoded: the recipient is an address with an empty domain\n', code: 1 });
    await assert.rejects(run(['verp', 'encode', '--sender', '@', 'a@b.test']), (err: Error) => err instanceof UsageError && err.message === '--sender "@": the sender is an address with an empty local part');
    // Decoding with a sender no address was made of is the same mistake (it answered 1, "domain is not empty").
    await assert.rejects(run(['verp', 'decode', '--sender', 'list-bounces', 'list-bounces+a=b.test@lists.test']), (err: Error) => err instanceof UsageError && err.message === '--sender "list-bounces": the sender is an address with no \'@\' and domain');
  });
});

describe('callout bounce', () => {
  it('parses a file or standard input, plain and --json', async () => {
    const plain = await run(['bounce', 'parse', fixture('postfix-dsn.eml')]);
    assert.equal(plain.code, 0);
    assert.match(plain.out, /^format: dsn, reported by mx\.example\.net\nbob@example\.org: failed 5\.1\.1 \(permanent failure: bad destination mailbox address \(user unknown\)\) \[hard\] - 550 5\.1\.1/);
    const json = await run(['bounce', 'parse', '--json', '-'], { stdin: 'Subject: hi\n\nhello\n' });
    assert.deepEqual(JSON.parse(json.out), { ok: false, reason: 'no-recipients', message: 'no failed recipient found in the message', truncated: false });
    assert.equal(json.code, 1);
    await assert.rejects(run(['bounce', 'parse', join(dir, 'missing.eml')]), UsageError);
  });
  it('prints the Message-ID and subject of the message that bounced, and marks a message read only up to the size limit', async () => {
    assert.deepEqual((await run(['bounce', 'parse', fixture('postfix-dsn.eml')])).out.split('\n').slice(-2), ['original: <lunch-42@example.com> "Lunch on Friday?"', '']);
    // 2 MiB are read (BOUNCE_LIMITS): the report is in them, the padding after it is not.
    const long = readFileSync(fixture('postfix-dsn.eml'), 'utf8') + 'x'.repeat(2 * 1024 * 1024);
    const cut = await run(['bounce', 'parse', '-'], { stdin: long });
    assert.equal(cut.code, 0, cut.out);
    assert.match(cut.out, /^format: dsn, reported by mx\.example\.net \(truncated\)\n/);
  });

  it('quotes what a bounce says when it holds control characters, so it cannot drive the terminal (regression)', async () => {
    const bounce = [
      'From: Mail Delivery System <Mailer-Daemon@old.example.net>',
      'Subject: Mail delivery failed: returning message to sender',
      '',
      'This message was created automatically by mail delivery software.',
      '',
      'A message that you sent could not be delivered to one or more of its',
      'recipients. This is a permanent error. The following address(es) failed:',
      '',
      '  grace@example.org',
      '    host mx.example.org [192.0.2.28]: 550 5.1.1 \u001b]0;owned\u0007\u001b[2J User unknown',
      '',
    ].join('\n');
    const { out, code } = await run(['bounce', 'parse', '-'], { stdin: bounce });
    assert.equal(code, 0);
    assert.equal(out.includes('\u001b') || out.includes('\u0007'), false, out);
    assert.match(out, /- "host mx\.example\.org \[192\.0\.2\.28\]: 550 5\.1\.1 \\u001b\]0;owned\\u0007\\u001b\[2J User unknown"\n$/);
    // --json too: JSON leaves C1 controls (U+009B, a terminal's CSI) and bidi overrides as they are.
    const c1 = await run(['bounce', 'parse', '--json', '-'], { stdin: bounce.replace('\u001b]0;owned\u0007\u001b[2J', '\u009b2J \u202e') });
    assert.equal(/[\u0080-\u009f\u202e]/.test(c1.out), false, c1.out);
    assert.match(JSON.parse(c1.out).report.recipients[0].diagnostic, /550 5\.1\.1 \u009b2J \u202e User unknown/);
  });

  it('quotes a recipient holding a space, so that a script splitting a line at spaces gets its fields', async () => {
    const bounce = [
      'Content-Type: multipart/report; report-type=delivery-status; boundary="b"',
      '',
      '--b',
      'Content-Type: message/delivery-status',
      '',
      'Reporting-MTA: dns; mx.example.net',
      '',
      'Final-Recipient: rfc822; "john doe"@example.org',
      'Action: failed',
      'Status: 5.1.1',
      '',
      '--b--',
      '',
    ].join('\n');
    const { out, code } = await run(['bounce', 'parse', '-'], { stdin: bounce });
    assert.equal(code, 0);
    assert.match(out, /^"\\"john doe\\"@example\.org": failed 5\.1\.1 /m, out);
  });

  it('records proven bounces into the store and lists, queries and removes them', async () => {
    const store = join(dir, 'supp.sqlite');
    // postfix-dsn.eml came back to prvs=12693bd285=alice@example.com, signed 2020-01-01 with key 1.
    // A year after it was signed the tag has expired and proves nothing. (Not by the system
    // clock: BATV's day wraps every 1000 days, so on some days of each cycle it is valid again.)
    const recorded = await run(['bounce', 'record', fixture('postfix-dsn.eml'), '--rcpt', 'prvs=12693bd285=alice@example.com', '--store', store, '--batv-key-file', batvKeys, '--now', '2021-01-01T00:00:00Z']);
    assert.equal(recorded.code, 1);
    assert.match(recorded.out, /^nothing recorded: the bounce came to a prvs address whose tag has expired \(expired\)/);
    const inTime = await run(['bounce', 'record', fixture('postfix-dsn.eml'), '--rcpt', 'prvs=12693bd285=alice@example.com', '--store', store, '--batv-key-file', batvKeys, '--now', '2020-01-02T00:00:00Z', '--json']);
    assert.equal(inTime.code, 0, inTime.out);
    assert.deepEqual((JSON.parse(inTime.out) as { entries: Array<{ address: string }> }).entries.map((e) => e.address), ['bob@example.org']);
    // 2022-04-18 is day 19100: Exim's window takes the stamp 269 for valid again (100 <= 269), and a
    // tag two years old would prove every address of a forged report (regression).
    const stale = await run(['bounce', 'record', fixture('postfix-dsn.eml'), '--rcpt', 'prvs=12693bd285=alice@example.com', '--store', store, '--batv-key-file', batvKeys, '--now', '2022-04-18T00:00:00Z']);
    assert.deepEqual(stale, { out: 'nothing recorded: the bounce came to a prvs address whose tag has expired (expired)\n', code: 1 });
    // Recorded as of 2020 with a 365-day TTL: already gone by the system clock.
    assert.equal((await run(['bounce', 'query', 'bob@example.org', '--store', store])).code, 1);
    const viaVerp = await run(['bounce', 'record', fixture('qmail.eml'), '--rcpt', 'list-bounces+judy=example.org@lists.example.com', '--store', store, '--verp-sender', 'list-bounces@lists.example.com']);
    assert.equal(viaVerp.code, 0, viaVerp.out);
    assert.match(viaVerp.out, /^suppressed judy@example\.org: 5\.1\.1 since /);
    assert.match((await run(['bounce', 'list', '--store', store])).out, /^judy@example\.org: 5\.1\.1 since .* \(1 bounce, proof verp\)/);
    assert.equal(JSON.parse((await run(['bounce', 'list', '--store', store, '--json'])).out).address, 'judy@example.org');
    assert.equal((await run(['bounce', 'query', 'Judy@example.org', '--store', store])).code, 0);
    assert.deepEqual(await run(['bounce', 'remove', 'judy@example.org', '--store', store]), { out: 'judy@example.org: removed\n', code: 0 });
    assert.deepEqual(await run(['bounce', 'query', 'judy@example.org', '--store', store]), { out: 'judy@example.org: not suppressed\n', code: 1 });
    await assert.rejects(run(['bounce', 'record', fixture('qmail.eml'), '--rcpt', 'x@y', '--store', store]), UsageError);
  });

  it('quotes an address it echoes when it holds a control character (batv check, verp decode, bounce query and remove), as srs and batv sign do', async () => {
    // An address copied out of a bounce may carry an escape sequence; printed raw it drove the terminal.
    const esc = 'a\u001b[2J@example.org';
    const quoted = '"a\\u001b[2J@example.org"';
    assert.deepEqual(await run(['batv', 'check', '--secret', 's', esc]), { out: `${quoted}: not a prvs address\n`, code: 1 });
    assert.deepEqual(await run(['batv', 'check', '--secret', 's', `prvs=1269e93bf9=${esc}`]), { out: `bad-signature: ${quoted} (key 1)\n`, code: 1 });
    assert.deepEqual(await run(['verp', 'decode', '--sender', 'lb@lists.example', 'lb+a\u001b[2J=example.org@lists.example']), { out: `${quoted}\n`, code: 0 });
    assert.deepEqual(await run(['verp', 'decode', '--sender', 'lb@lists.example', esc]), { out: `${quoted}: not a VERP address of lb@lists.example: domain is not lists.example\n`, code: 1 });
    const store = join(dir, 'quoted-echo.sqlite');
    assert.equal((await run(['bounce', 'record', fixture('qmail.eml'), '--rcpt', 'list-bounces+judy=example.org@lists.example.com', '--store', store, '--verp-sender', 'list-bounces@lists.example.com'])).code, 0);
    assert.deepEqual(await run(['bounce', 'query', esc, '--store', store]), { out: `${quoted}: not suppressed\n`, code: 1 });
    assert.deepEqual(await run(['bounce', 'remove', esc, '--store', store]), { out: `${quoted}: was not suppressed\n`, code: 1 });
    assert.deepEqual(await run(['bounce', 'query', '', '--store', store]), { out: '"": not suppressed\n', code: 1 }, 'an empty address is seen');
  });

  it('refuses a --verp-sender no VERP address can be made of (64, the wrapper keeps the bounce) instead of answering "nothing recorded" (1, dropped)', async () => {
    const store = join(dir, 'bad-verp-sender.sqlite');
    for (const sender of ['list-bounces', 'list-bounces@', 'a@b@lists.example.com', '']) {
      await assert.rejects(
        run(['bounce', 'record', fixture('qmail.eml'), '--rcpt', 'list-bounces+judy=example.org@lists.example.com', '--store', store, '--verp-sender', 'list-bounces@lists.example.com', '--verp-sender', sender]),
        (err: unknown) => err instanceof UsageError && err.message.startsWith(`--verp-sender ${JSON.stringify(sender)}: the sender is an address with `),
        sender,
      );
    }
    assert.equal(existsSync(store), false, 'refused before the store is made');
  });

  it("reads '#' after white space in a key file as a comment too", () => {
    const indented = join(dir, 'indented.keys');
    writeFileSync(indented, '  # rotated 2020-01-01\n1 secret\n\t# older\n0 old secret\n');
    assert.deepEqual(readBatvKeys(indented), [{ keynum: 1, secret: 'secret' }, { keynum: 0, secret: 'old secret' }]);
  });

  it('record refuses a key file it cannot read before it makes the store', async () => {
    const store = join(dir, 'never-made.sqlite');
    const missingKeys = join(dir, 'no-such.keys');
    await assert.rejects(run(['bounce', 'record', fixture('postfix-dsn.eml'), '--rcpt', 'prvs=12693bd285=alice@example.com', '--store', store, '--batv-key-file', missingKeys]), (err: unknown) => err instanceof ConfigError && err.message.includes('no-such.keys'));
    // A bad line is named by its number in the file, comments and blank lines counted (regression: they were not).
    const badKeys = join(dir, 'bad.keys');
    writeFileSync(badKeys, '# newest first\n\n1 secret\nsecret without number\n');
    await assert.rejects(
      run(['bounce', 'record', fixture('postfix-dsn.eml'), '--rcpt', 'prvs=12693bd285=alice@example.com', '--store', store, '--batv-key-file', badKeys]),
      (err: unknown) => err instanceof ConfigError && err.message === `--batv-key-file ${badKeys}: line 4: expected "KEYNUM SECRET" with KEYNUM 0-9`,
    );
    // So is a keyring the file makes unusable.
    writeFileSync(badKeys, '1 secret\n# older\n1 other secret\n');
    await assert.rejects(
      run(['bounce', 'record', fixture('postfix-dsn.eml'), '--rcpt', 'prvs=12693bd285=alice@example.com', '--store', store, '--batv-key-file', badKeys]),
      (err: unknown) => err instanceof ConfigError && err.message === `--batv-key-file ${badKeys}: batv: key number 1 is given twice`,
    );
    await assert.rejects(run(['bounce', 'record', fixture('qmail.eml'), '--rcpt', 'x@y.test', '--store', store, '--verp-sender', 'l@x.test', '--verp-delimiters', '??']), UsageError);
    assert.equal(existsSync(store), false);
  });

  it('record says on stderr that --verp-delimiters without --verp-sender has no effect, and records (the pipe(8) wrapper runs it unattended)', async () => {
    const store = join(dir, 'delimiters-alone.sqlite');
    const err = new PassThrough();
    let said = '';
    err.on('data', (chunk: Buffer) => (said += chunk.toString()));
    // Without a list sender no VERP address is decoded: the delimiters were ignored without a word,
    // and then refused, which kept every bounce of a working installation queued after an upgrade.
    const { code } = await run(['bounce', 'record', fixture('postfix-dsn.eml'), '--rcpt', 'prvs=12693bd285=alice@example.com', '--store', store, '--batv-key-file', batvKeys, '--verp-delimiters', '-=', '--now', '2020-01-02T00:00:00Z'], { err });
    assert.match(said, /^callout: warning: --verp-delimiters has no effect without --verp-sender/);
    assert.equal(code, 0, 'recorded, as without the flag');
    assert.equal(existsSync(store), true, 'the bounce was recorded into the store');
  });

  it('record decodes the --verp-sender addresses with --verp-delimiters (qmail\'s -=), and then says nothing of the flag', async () => {
    const store = join(dir, 'qmail-delimiters.sqlite');
    const err = new PassThrough();
    let said = '';
    err.on('data', (chunk: Buffer) => (said += chunk.toString()));
    const recorded = await run(['bounce', 'record', fixture('qmail.eml'), '--rcpt', 'list-bounces-judy=example.org@lists.example.com', '--store', store, '--verp-sender', 'list-bounces@lists.example.com', '--verp-delimiters', '-='], { err });
    assert.equal(recorded.code, 0, recorded.out);
    assert.match(recorded.out, /^suppressed judy@example\.org: 5\.1\.1 since /);
    assert.equal(said, '', 'no warning: the delimiters were used');
  });

  it('record says why nothing was recorded when the report holds no hard failure (a delay)', async () => {
    const store = join(dir, 'delayed.sqlite');
    const args = ['bounce', 'record', fixture('delayed-dsn.eml'), '--rcpt', 'list-bounces+carol=example.org@lists.example.com', '--store', store, '--verp-sender', 'list-bounces@lists.example.com'];
    assert.deepEqual(await run(args), { out: 'nothing recorded: no hard failure in the report\n', code: 1 });
  });

  it('names a key file that holds no key, comments and blank lines aside', () => {
    const commentsOnly = join(dir, 'comments-only.keys');
    writeFileSync(commentsOnly, '# rotated 2020-01-01\n\n  # none yet\n');
    assert.throws(() => readBatvKeys(commentsOnly), (err: unknown) => err instanceof ConfigError && err.message === `--batv-key-file ${commentsOnly}: no key in the file`);
  });
});

describe('callout bounce on the configured store', () => {
  const record = (store: string[]) =>
    run(['bounce', 'record', fixture('qmail.eml'), '--rcpt', 'list-bounces+judy=example.org@lists.example.com', ...store, '--verp-sender', 'list-bounces@lists.example.com']);

  it('uses the store of -c FILE, SQLite under --data-dir', async () => {
    const dataDir = join(dir, 'configured');
    const config = join(dir, 'sqlite.yaml');
    writeFileSync(config, 'store:\n  kind: sqlite\n  path: state.sqlite\n');
    assert.equal((await record(['-c', config, '--data-dir', dataDir])).code, 0);
    assert.equal((await run(['bounce', 'query', 'judy@example.org', '--store', join(dataDir, 'state.sqlite')])).code, 0, 'the file the configuration names');
    assert.match((await run(['bounce', 'list', '-c', config, '--data-dir', dataDir])).out, /^judy@example\.org: 5\.1\.1/);
  });

  it('records with a --data-dir that places no store, saying so on stderr: pipe(8) runs it unattended, and a usage error kept every bounce queued', async () => {
    const absolute = join(dir, 'absolute-store.sqlite');
    const config = join(dir, 'absolute.yaml');
    writeFileSync(config, `store:\n  kind: sqlite\n  path: ${absolute}\n`);
    const dataDir = join(dir, 'unused-data-dir');
    const err = new PassThrough();
    let said = '';
    err.on('data', (chunk: Buffer) => (said += chunk.toString()));
    const recorded = await run(['bounce', 'record', fixture('qmail.eml'), '--rcpt', 'list-bounces+judy=example.org@lists.example.com', '-c', config, '--data-dir', dataDir, '--verp-sender', 'list-bounces@lists.example.com'], { err });
    assert.equal(recorded.code, 0, recorded.out);
    assert.equal(said, `callout: warning: --data-dir has no effect: the store's file ${absolute} is an absolute path (store.path), which the data directory does not place; leave --data-dir out\n`);
    assert.equal((await run(['bounce', 'query', 'judy@example.org', '--store', absolute])).code, 0, 'recorded in the file the configuration names');
    assert.equal(existsSync(dataDir), false, 'nothing made in the data directory');
  });

  // Like the other Redis tests it needs Debian's redis-server and fails without it (startRedis says so), rather than vanishing from a green run.
  it('uses a Redis store named by the configuration', async () => {
    const redis = await startRedis();
    try {
      const config = join(dir, 'redis.yaml');
      writeFileSync(config, `store:\n  kind: redis\n  url: ${redis.url}\n`);
      assert.equal((await record(['-c', config])).code, 0);
      assert.equal((await run(['bounce', 'query', 'judy@example.org', '-c', config])).code, 0);
      assert.deepEqual(await run(['bounce', 'remove', 'judy@example.org', '-c', config]), { out: 'judy@example.org: removed\n', code: 0 });
    } finally {
      await redis.stop();
    }
  });

  it('refuses --store with --config or --data-dir, and a memory store', async () => {
    const config = join(dir, 'memory.yaml');
    writeFileSync(config, 'store:\n  kind: memory\n');
    await assert.rejects(run(['bounce', 'list', '--store', join(dir, 'x.sqlite'), '-c', config]), UsageError);
    // --data-dir does not place --store: `record` made a new store where --store pointed (for a
    // relative name, the working directory) while the daemon's under --data-dir never heard of it.
    const dataDir = join(dir, 'data-dir-with-store');
    const elsewhere = join(dir, 'elsewhere.sqlite');
    await assert.rejects(record(['--store', elsewhere, '--data-dir', dataDir]), (err: unknown) => err instanceof UsageError && /--store or --data-dir, not both/.test(err.message));
    assert.equal(existsSync(elsewhere), false, 'no store made');
    assert.equal(existsSync(dataDir), false);
    await assert.rejects(run(['bounce', 'list', '-c', config]), (err: unknown) => err instanceof ConfigError && err.message.startsWith(`${config}: store.kind: got "memory", expected sqlite or redis`));
  });
});

/**
 * Runs `rewrite serve ARGS` until `use`, given its stdout once every listener it was given (each
 * --socketmap and --tcp-table) is listening, has finished; then stops it, which must exit 0.
 */
async function serving<T>(args: string[], io: { log?: LookupLog; clock?: Clock }, use: (out: string) => Promise<T>): Promise<T> {
  const listeners = args.filter((arg) => arg === '--socketmap' || arg === '--tcp-table').length;
  const stop = new AbortController();
  let listening: (out: string) => void = () => undefined;
  const up = new Promise<string>((resolve) => (listening = resolve));
  const served = run(['rewrite', 'serve', ...args], { ...io, stop: stop.signal, onOutput: (text) => (text.match(/ listening on .*\n/g) ?? []).length >= listeners && listening(text) });
  try {
    // A serve that ends before it listens fails the test instead of leaving it waiting.
    return await use(await Promise.race([up, served.then(({ out }) => assert.fail(`rewrite serve ended before listening: ${JSON.stringify(out)}`))]));
  } finally {
    stop.abort();
    assert.equal((await served).code, 0);
  }
}

describe('callout rewrite serve', () => {
  it('serves socketmap and tcp_table listeners until stopped', async () => {
    const socketmapPort = await serving(
      ['--socketmap', '127.0.0.1:0', '--tcp-table', 'forward=127.0.0.1:0', '--srs-secret-file', srsSecret, '--srs-domain', 'example.com', '--batv-key-file', batvKeys, '--batv-domain', 'example.com'],
      {},
      async (out) => {
        const socketmapPort = Number(/socketmap \(forward, reverse, batv-sign, batv-strip\) listening on 127\.0\.0\.1:(\d+)/.exec(out)?.[1]);
        const tcpPort = Number(/tcp_table forward listening on 127\.0\.0\.1:(\d+)/.exec(out)?.[1]);
        const tcp = await TcpTableClient.connect({ host: '127.0.0.1', port: tcpPort });
        assert.match(await tcp.query('test@otherdomain.com'), /^200 SRS0=.{4}=..=otherdomain\.com=test@example\.com$/);
        tcp.close();
        const socketmap = await SocketmapClient.connect({ host: '127.0.0.1', port: socketmapPort });
        assert.match(await socketmap.query('batv-sign', 'user@example.com'), /^OK prvs=1\d{3}[0-9a-f]{6}=user@example\.com$/);
        socketmap.close();
        return socketmapPort;
      },
    );
    // Stopped: the socketmap port no longer answers.
    await assert.rejects(SocketmapClient.connect({ host: '127.0.0.1', port: socketmapPort }), { code: 'ECONNREFUSED' });
  });

  /** `rewrite serve` with a BATV key file in a process of its own, its output collected as it comes. */
  function serveProcess(keyFile: string) {
    const child = spawn(process.execPath, ['--import', 'tsx', '--import', './test/support/loopback-guard.ts', 'src/cli/main.ts', 'rewrite', 'serve', '--socketmap', '127.0.0.1:0', '--batv-key-file', keyFile, '--batv-domain', 'example.com'], { cwd: new URL('../../', import.meta.url).pathname });
    const output = { stdout: '', stderr: '' };
    child.stdout.on('data', (chunk: Buffer) => (output.stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output.stderr += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const waitFor = async (what: string, done: () => boolean) => {
      for (const start = Date.now(); !done(); await new Promise((resolve) => setTimeout(resolve, 20))) {
        if (Date.now() - start > 30_000 || child.exitCode !== null || child.signalCode !== null) assert.fail(`${what}: stdout ${JSON.stringify(output.stdout)}, stderr ${JSON.stringify(output.stderr)}`);
      }
    };
    return { child, output, exited, waitFor };
  }

  it('reads its key files again on SIGHUP, and keeps the keys in use when the file no longer reads (regression: SIGHUP ended it)', async () => {
    const keys = join(dir, 'rotated.keys');
    writeFileSync(keys, '1 secret\n', { mode: 0o600 });
    // A process of its own: the test runner's SIGHUP handler (test/support/exit-hooks) ends this one.
    const { child, output, exited, waitFor } = serveProcess(keys);
    try {
      await waitFor('listening', () => / listening on 127\.0\.0\.1:\d+\n/.test(output.stdout));
      const client = await SocketmapClient.connect({ host: '127.0.0.1', port: Number(/listening on 127\.0\.0\.1:(\d+)/.exec(output.stdout)?.[1]) });
      try {
        assert.match(await client.query('batv-sign', 'user@example.com'), /^OK prvs=1\d{3}[0-9a-f]{6}=user@example\.com$/);
        writeFileSync(keys, '2 newer\n1 secret\n');
        child.kill('SIGHUP');
        await waitFor('the reload', () => output.stderr.includes('SIGHUP: secret files read again'));
        assert.match(await client.query('batv-sign', 'user@example.com'), /^OK prvs=2\d{3}[0-9a-f]{6}=user@example\.com$/, 'signed with the new first key');
        writeFileSync(keys, '2\n');
        child.kill('SIGHUP');
        await waitFor('the refused reload', () => output.stderr.includes('SIGHUP: reload refused, the secrets read before stay in use'));
        assert.match(output.stderr, new RegExp(`--batv-key-file ${keys}: line 1: expected`), output.stderr);
        assert.match(await client.query('batv-sign', 'user@example.com'), /^OK prvs=2\d{3}/, 'the keys read before stay in use');
      } finally {
        client.close();
      }
      child.kill('SIGTERM');
      assert.equal(await exited, 0, output.stderr);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('ignores SIGUSR1, saying so, where Node would open its inspector to any local user (as callout serve does)', async () => {
    // A process of its own, sent the signal, as test/cli/serve-signals.test.ts does to serve.
    const { child, output, exited, waitFor } = serveProcess(batvKeys);
    try {
      await waitFor('listening', () => / listening on 127\.0\.0\.1:\d+\n/.test(output.stdout));
      child.kill('SIGUSR1');
      await waitFor('that SIGUSR1 was ignored', () => output.stderr.includes('SIGUSR1 ignored: callout rewrite serve takes SIGHUP (reads the secret files again) and SIGTERM (stop)'));
      child.kill('SIGTERM');
      assert.equal(await exited, 0, output.stderr);
      assert.doesNotMatch(output.stderr, /Debugger listening/);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('takes SIGHUP and SIGUSR1 while it serves and leaves no handler behind once stopped', async () => {
    const quiet: LookupLog = { info: () => undefined, warn: () => undefined };
    for (const signal of ['SIGHUP', 'SIGUSR1'] as const) {
      const before = process.listenerCount(signal);
      const whileServing = await serving(['--socketmap', '127.0.0.1:0', '--batv-key-file', batvKeys, '--batv-domain', 'example.com'], { log: quiet }, async () => process.listenerCount(signal));
      assert.equal(whileServing, before + 1, `a ${signal} handler while it serves`);
      // Left behind, a SIGHUP handler read the files of a stopped service again on every SIGHUP to the process.
      assert.equal(process.listenerCount(signal), before, `no ${signal} handler once stopped`);
    }
  });

  it('strips by default only tags of the bounded window, not an old one Exim takes again later in the 1000-day cycle', async () => {
    // The tag `batv check` takes under Exim's window and not the bounded one above: signed with
    // key 1 ("secret", as in batvKeys) on 2020-01-01, checked on 2022-04-18.
    const clock = clockFromFlag('2022-04-18T00:00:00Z');
    const quiet: LookupLog = { info: () => undefined, warn: () => undefined };
    const strip = (extra: string[]) =>
      serving(['--socketmap', '127.0.0.1:0', '--batv-key-file', batvKeys, '--batv-domain', 'example.com', ...extra], { log: quiet, clock }, async (out) => {
        const client = await SocketmapClient.connect({ host: '127.0.0.1', port: Number(/listening on 127\.0\.0\.1:(\d+)/.exec(out)?.[1]) });
        try {
          return await client.query('batv-strip', 'prvs=1269e93bf9=user@example.com');
        } finally {
          client.close();
        }
      });
    assert.equal(await strip([]), 'NOTFOUND prvs expired');
    assert.equal(await strip(['--batv-window', 'exim']), 'OK user@example.com');
  });

  it('gives its UNIX socket mode 0660 whatever the umask, --socket-mode another, and warns when every user may connect', async () => {
    // Under umask 022 the socket was 0755: Postfix (user postfix, a group member) could not connect; under umask 0 anyone could.
    const serveOn = async (path: string, extra: string[], umask: number) => {
      const lines: Array<{ message: string; fields: Record<string, unknown> }> = [];
      const log: LookupLog = { info: () => undefined, warn: (fields, message) => lines.push({ message, fields }) };
      const previous = process.umask(umask);
      try {
        const mode = await serving(['--socketmap', path, ...extra, '--srs-secret-file', srsSecret, '--srs-domain', 'example.com'], { log }, async () => {
          const mode = lstatSync(path).mode & 0o777;
          const client = await SocketmapClient.connect({ path });
          assert.match(await client.query('forward', 'test@otherdomain.com'), /^OK SRS0=/);
          client.close();
          return mode;
        });
        return { mode, warnings: lines.filter((line) => line.message.startsWith('socket ')) };
      } finally {
        process.umask(previous);
      }
    };
    const byDefault = await serveOn(join(dir, 'default.sock'), [], 0o022);
    assert.equal(byDefault.mode, 0o660);
    assert.deepEqual(byDefault.warnings, []);
    assert.equal((await serveOn(join(dir, 'umask0.sock'), [], 0)).mode, 0o660);
    assert.equal((await serveOn(join(dir, 'owner.sock'), ['--socket-mode', '0600'], 0o022)).mode, 0o600);
    const open = await serveOn(join(dir, 'open.sock'), ['--socket-mode', '666'], 0o022);
    assert.equal(open.mode, 0o666);
    assert.deepEqual(open.warnings.map((w) => w.fields), [{ listener: 'socketmap (forward, reverse)', listen: join(dir, 'open.sock'), socketMode: '0666' }]);
    assert.match(open.warnings[0]?.message ?? '', /^socket is writable by all users: any local user can have addresses signed and rewritten/);
    for (const bad of ['660x', '0999', '', '12345']) {
      await assert.rejects(run(['rewrite', 'serve', '--socketmap', join(dir, 'bad.sock'), '--socket-mode', bad, '--srs-secret-file', srsSecret, '--srs-domain', 'example.com']), (err: unknown) => err instanceof UsageError && err.message === `--socket-mode: got "${bad}", expected an octal mode of 3 or 4 digits, such as 0660`, bad);
    }
    // TCP listeners alone have no mode to set: it was ignored without a word; now the service
    // starts and says so (a refusal stopped services that had run with it).
    for (const listeners of [['--socketmap', '127.0.0.1:0'], ['--tcp-table', 'forward=127.0.0.1:0']]) {
      const warnings: Array<[Record<string, unknown>, string]> = [];
      const log: LookupLog = { info: () => undefined, warn: (fields, message) => warnings.push([fields, message]) };
      const served = await run(['rewrite', 'serve', ...listeners, '--socket-mode', '0600', '--srs-secret-file', srsSecret, '--srs-domain', 'example.com'], { stop: AbortSignal.abort(), log });
      assert.equal(served.code, 0, listeners.join(' '));
      assert.match(served.out, / listening on 127\.0\.0\.1:\d+\n$/, listeners.join(' '));
      assert.deepEqual(warnings, [[{ flag: '--socket-mode' }, '--socket-mode has no effect: a TCP listener has no permissions to set, and no UNIX socket listener is given; give --socketmap PATH or --tcp-table MAP=PATH, or leave --socket-mode out']], listeners.join(' '));
    }
  });

  it('gives a tcp_table UNIX socket --socket-mode as it gives the socketmap one, and does not call the flag unused then', async () => {
    const path = join(dir, 'tcp-table.sock');
    const warnings: Array<[Record<string, unknown>, string]> = [];
    const log: LookupLog = { info: () => undefined, warn: (fields, message) => warnings.push([fields, message]) };
    const previous = process.umask(0o022);
    try {
      const mode = await serving(['--tcp-table', `forward=${path}`, '--socket-mode', '0600', '--srs-secret-file', srsSecret, '--srs-domain', 'example.com'], { log }, async () => lstatSync(path).mode & 0o777);
      assert.equal(mode, 0o600);
    } finally {
      process.umask(previous);
    }
    assert.deepEqual(warnings.filter(([fields]) => 'flag' in fields), [], 'no "--socket-mode has no effect"');
  });

  it('logs a warning per secret file that group or others can read, naming it and its flag; refuses a FIFO at once', async () => {
    const srs = join(dir, 'serve-srs.secret');
    const keys = join(dir, 'serve-batv.keys');
    writeFileSync(srs, 'tops3cr3t\n');
    writeFileSync(keys, '1 secret\n');
    chmodSync(srs, 0o644);
    chmodSync(keys, 0o604);
    const warnings: Array<[Record<string, unknown>, string]> = [];
    const log: LookupLog = { info: () => undefined, warn: (fields, message) => warnings.push([fields, message]) };
    const args = ['rewrite', 'serve', '--socketmap', '127.0.0.1:0', '--srs-secret-file', srs, '--srs-domain', 'example.com', '--batv-key-file', keys, '--batv-domain', 'example.com'];
    assert.equal((await run(args, { stop: AbortSignal.abort(), log })).code, 0);
    assert.deepEqual(warnings, [
      [{ file: srs, setting: '--srs-secret-file', problem: 'group or other users may read or write it (mode 0644): chmod 600' }, 'secret file is not private'],
      [{ file: keys, setting: '--batv-key-file', problem: 'group or other users may read or write it (mode 0604): chmod 600' }, 'secret file is not private'],
    ]);
    const fifo = join(dir, 'serve-fifo');
    assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
    await assert.rejects(run(['rewrite', 'serve', '--socketmap', '127.0.0.1:0', '--batv-key-file', fifo, '--batv-domain', 'example.com'], { stop: AbortSignal.abort(), log }), (err: unknown) => err instanceof ConfigError && err.message === `--batv-key-file ${fifo}: not a regular file (a FIFO)`);
    // A one-shot command takes a pipe (`--secret-file <(pass show srs)`), waited for in front of its user.
    const writer = spawn('sh', ['-c', `printf 'tops3cr3t\\n' > ${fifo}`]);
    try {
      const forwarded = await run(['srs', 'forward', '--secret-file', fifo, '--domain', 'example.com', 'a@b.example'], { log });
      await new Promise((resolve) => writer.once('exit', resolve));
      assert.match(forwarded.out, /^SRS0=/);
    } finally {
      // A refused FIFO leaves the writer blocked, and it held the test file open for ever.
      writer.kill();
    }
  });

  it('refuses a second --socketmap, --srs-domain, secret file or key file that differs from the first, naming both values, rather than keeping the last without a word; the same value twice is taken', async () => {
    const srs = ['--srs-secret-file', srsSecret, '--srs-domain', 'example.com'];
    const otherSrsSecret = join(dir, 'other-srs.secret');
    const otherBatvKeys = join(dir, 'other-batv.keys');
    copyFileSync(srsSecret, otherSrsSecret);
    copyFileSync(batvKeys, otherBatvKeys);
    const twice: Array<[string, string[]]> = [
      // The UNIX socket Postfix was told to use went unserved.
      ['--socketmap', ['rewrite', 'serve', '--socketmap', join(dir, 'twice.sock'), '--socketmap', '127.0.0.1:0', ...srs]],
      // The keys of the first file no longer checked the tags they had signed.
      ['--batv-key-file', ['rewrite', 'serve', '--socketmap', '127.0.0.1:0', '--batv-key-file', batvKeys, '--batv-key-file', otherBatvKeys, '--batv-domain', 'example.com']],
      ['--srs-secret-file', ['rewrite', 'serve', '--socketmap', '127.0.0.1:0', '--srs-secret-file', otherSrsSecret, ...srs]],
      ['--srs-domain', ['rewrite', 'serve', '--socketmap', '127.0.0.1:0', '--srs-domain', 'other.example', ...srs]],
      ['--secret-file', ['srs', 'forward', '--secret-file', srsSecret, '--secret-file', otherSrsSecret, '--domain', 'example.com', 'alice@example.org']],
      ['--batv-key-file', ['bounce', 'record', fixture('postfix-dsn.eml'), '--rcpt', 'a@example.com', '--store', join(dir, 'one.sqlite'), '--batv-key-file', batvKeys, '--batv-key-file', otherBatvKeys]],
    ];
    for (const [flag, args] of twice) {
      await assert.rejects(
        run(args, { stop: AbortSignal.abort() }),
        (err: unknown) => err instanceof UsageError && err.message.startsWith(`${flag} given twice ("`) && err.message.endsWith('"): it takes one value'),
        flag,
      );
    }
    assert.equal(existsSync(join(dir, 'twice.sock')), false, 'nothing listened: the command stopped at its flags');
    assert.equal(existsSync(join(dir, 'one.sqlite')), false, 'nothing was recorded: the command stopped at its flags');
    // The same value twice changes nothing, as a Redis URL's setting given twice alike: a
    // pipe(8) wrapper that repeats one kept working across the upgrade.
    assert.match((await run(['srs', 'forward', '--secret-file', srsSecret, '--secret-file', srsSecret, '--domain', 'example.com', '--domain', 'example.com', 'alice@example.org'])).out, /^SRS0=/);
    // Other flags take the last value, so a line can override what a shared part of it set.
    assert.equal((await run(['srs', 'forward', '--secret-file', srsSecret, '--domain', 'example.com', '--now', '2019-01-01', '--now', NOW, 'test@otherdomain.com'])).out, 'SRS0=vmyz=2W=otherdomain.com=test@example.com\n');
  });

  it('refuses incomplete configurations', async () => {
    await assert.rejects(run(['rewrite', 'serve', '--socketmap', '127.0.0.1:0']), UsageError);
    await assert.rejects(run(['rewrite', 'serve', '--srs-secret-file', srsSecret, '--srs-domain', 'example.com']), UsageError);
    await assert.rejects(
      run(['rewrite', 'serve', '--tcp-table', 'nosuch=127.0.0.1:1', '--srs-secret-file', srsSecret, '--srs-domain', 'example.com']),
      (err: unknown) => err instanceof UsageError && err.message === '--tcp-table: got "nosuch=127.0.0.1:1", expected MAP=HOST:PORT with MAP one of forward, reverse',
    );
    await assert.rejects(run(['rewrite', 'serve', '--socketmap', 'nowhere', '--srs-secret-file', srsSecret, '--srs-domain', 'example.com']), UsageError);
    // Names of Object's own methods are no maps: "constructor" served Object() and the first request ended the process (regression).
    for (const name of ['constructor', '__proto__', 'toString']) {
      await assert.rejects(
        run(['rewrite', 'serve', '--tcp-table', `${name}=127.0.0.1:0`, '--srs-secret-file', srsSecret, '--srs-domain', 'example.com'], { stop: AbortSignal.abort() }),
        (err: unknown) => err instanceof UsageError && err.message.startsWith(`--tcp-table: got "${name}=127.0.0.1:0", expected MAP=HOST:PORT`),
        name,
      );
    }
    // An SRS domain every rewritten sender would carry and no bounce could reach (regression: accepted).
    await assert.rejects(
      run(['rewrite', 'serve', '--socketmap', '127.0.0.1:0', '--srs-secret-file', srsSecret, '--srs-domain', '.example.com']),
      (err: unknown) => err instanceof UsageError && err.message === '--srs-domain: the SRS domain ".example.com" is not a domain name: empty domain label at 0',
    );
    // The secret file is named by the flag that gave it.
    await assert.rejects(
      run(['rewrite', 'serve', '--socketmap', '127.0.0.1:0', '--srs-secret-file', join(dir, 'no-such.secret'), '--srs-domain', 'example.com']),
      (err: unknown) => err instanceof ConfigError && err.message.startsWith(`--srs-secret-file ${join(dir, 'no-such.secret')}: `),
    );
    const batv = ['rewrite', 'serve', '--socketmap', '127.0.0.1:0', '--batv-key-file', batvKeys];
    // Without a domain batv-sign signs nothing, and nothing says so.
    await assert.rejects(run(batv, { stop: AbortSignal.abort() }), (err: unknown) => err instanceof UsageError && err.message === '--batv-domain: give the sender domains to sign (repeatable)');
    await assert.rejects(run([...batv, '--batv-domain', 'example.com', '--batv-window', 'Exim'], { stop: AbortSignal.abort() }), (err: unknown) => err instanceof UsageError && err.message === '--batv-window: got "Exim", expected exim or bounded');
    // Flags with no map to act on are logged, one warning each, and the service starts (as
    // Postfix does with a parameter it does not use): a refusal stopped services that had run with them.
    const servedWith = async (args: string[]) => {
      const warnings: Array<[Record<string, unknown>, string]> = [];
      const log: LookupLog = { info: () => undefined, warn: (fields, message) => warnings.push([fields, message]) };
      const served = await run(args, { stop: AbortSignal.abort(), log });
      // The key file's mode (0644 here) is warned of too: only the flags' warnings are compared.
      return { code: served.code, listening: served.out.includes(' listening on '), warnings: warnings.filter(([fields]) => 'flag' in fields) };
    };
    // Without --batv-key-file there is no BATV map: the window and the domains (refused by the previous release) have no effect.
    const srsOnly = ['rewrite', 'serve', '--socketmap', '127.0.0.1:0', '--srs-secret-file', srsSecret, '--srs-domain', 'example.com'];
    const noKeys = (flag: string, use: string) => [{ flag }, `${flag} has no effect: without --batv-key-file there is no BATV map to ${use} with it; give --batv-key-file, or leave ${flag} out`];
    assert.deepEqual(await servedWith([...srsOnly, '--batv-window', 'exim']), { code: 0, listening: true, warnings: [noKeys('--batv-window', 'check')] });
    assert.deepEqual(await servedWith([...srsOnly, '--batv-window', 'bounded', '--batv-domain', 'example.com']), { code: 0, listening: true, warnings: [noKeys('--batv-window', 'check'), noKeys('--batv-domain', 'sign')] }, 'the default named too');
    // Without --srs-secret-file and --srs-domain there is no SRS map: its other flags have no effect.
    const batvOnly = [...batv, '--batv-domain', 'example.com'];
    for (const given of [['--srs-separator', '+'], ['--srs-separator', '='], ['--srs-alphabet', 'base64url'], ['--srs-hash-length', '6'], ['--srs-local-domain', 'example.org'], ['--srs-always-rewrite']]) {
      const flag = given[0]!;
      assert.deepEqual(
        await servedWith([...batvOnly, ...given]),
        { code: 0, listening: true, warnings: [[{ flag }, `${flag} has no effect: without --srs-secret-file and --srs-domain there is no SRS map to rewrite with it; give both, or leave ${flag} out`]] },
        given.join(' '),
      );
    }
    assert.deepEqual((await servedWith([...batvOnly, '--srs-separator', '+', '--srs-always-rewrite'])).warnings.map(([fields]) => fields.flag), ['--srs-separator', '--srs-always-rewrite'], 'each flag named');
    assert.deepEqual((await servedWith([...batvOnly])).warnings, [], 'nothing unused, nothing said');
    // Their defaults still apply when SRS is configured (the default written out is the same address).
    const defaults = await run(['srs', 'forward', '--secret-file', srsSecret, '--domain', 'fwd.example', '--now', NOW, 'alice@example.org']);
    assert.match(defaults.out, /^SRS0=[A-Za-z0-9+/]{4}=/, 'separator = and a hash of four characters');
    assert.deepEqual(
      defaults,
      await run(['srs', 'forward', '--secret-file', srsSecret, '--domain', 'fwd.example', '--separator', '=', '--alphabet', 'base64', '--hash-length', '4', '--now', NOW, 'alice@example.org']),
    );
    await assert.rejects(run([...batv, '--batv-domain', 'example.com', '--max-connections', '0'], { stop: AbortSignal.abort() }), (err: unknown) => err instanceof UsageError && err.message.startsWith('--max-connections: got "0"'));
    for (const idlePoll of ['-1', 'soon', '10001']) {
      await assert.rejects(
        run(['rewrite', 'serve', '--socketmap', '127.0.0.1:0', '--idle-poll', idlePoll, '--srs-secret-file', srsSecret, '--srs-domain', 'example.com']),
        (err: unknown) => err instanceof UsageError && err.message.startsWith(`--idle-poll: got "${idlePoll}"`),
      );
    }
  });
});

describe('rewrite commands: inputs without end, times that are no times', () => {
  it('refuses /dev/zero as a secret file or a message, naming it, instead of reading it until memory runs out', async () => {
    // A one-shot command reads a device up to the limit (it takes pipes); rewrite serve refuses it.
    await assert.rejects(run(['srs', 'forward', '--secret-file', '/dev/zero', '--domain', 'x.test', 'a@b.test']), (err: unknown) => err instanceof ConfigError && err.message === '--secret-file /dev/zero: larger than 64 KiB');
    const large = join(dir, 'large.secret');
    writeFileSync(large, 'x'.repeat(64 * 1024 + 1));
    await assert.rejects(run(['srs', 'forward', '--secret-file', large, '--domain', 'x.test', 'a@b.test']), (err: unknown) => err instanceof ConfigError && err.message === `--secret-file ${large}: larger than 64 KiB`);
    await assert.rejects(run(['bounce', 'parse', '/dev/zero']), (err: unknown) => err instanceof UsageError && err.message === '"/dev/zero": larger than 64 MiB');
  });

  it('reads rewrite serve listen addresses as serve does: no name that is a mistyped IPv4 address, no socket path too long', async () => {
    await assert.rejects(run(['rewrite', 'serve', '--socketmap', '999.1.1.1:1234', '--srs-secret-file', srsSecret, '--srs-domain', 'srs.test']), (err: unknown) => err instanceof UsageError && /"999\.1\.1\.1" is not an IPv4 address/.test(err.message));
    await assert.rejects(run(['rewrite', 'serve', '--socketmap', `/${'a'.repeat(120)}`, '--srs-secret-file', srsSecret, '--srs-domain', 'srs.test']), (err: unknown) => err instanceof UsageError && /more than the 107 a UNIX socket address holds/.test(err.message));
    // The value quoted once, then what is wrong with it, as the configuration says it (--tcp-table ::1:10001 was told only the forms).
    await assert.rejects(run(['rewrite', 'serve', '--tcp-table', 'forward=::1:10001', '--srs-secret-file', srsSecret, '--srs-domain', 'srs.test']), (err: unknown) => err instanceof UsageError && err.message === '--tcp-table: got "::1:10001", expected HOST:PORT, [IPv6]:PORT or an absolute UNIX socket path (an IPv6 address with a port is written in brackets: [::1]:10001)');
    await assert.rejects(run(['rewrite', 'serve', '--socketmap', '127.0.0.1:0', '--batv-key-file', batvKeys, '--batv-domain', 'example.org', '--batv-domain', '']), (err: unknown) => err instanceof UsageError && err.message === '--batv-domain: got "", expected a domain, not an empty entry');
  });

  it('refuses a --batv-domain or --local-domain entry that can match no domain, naming the flag and the entry', async () => {
    const serve = ['rewrite', 'serve', '--socketmap', '127.0.0.1:0'];
    const batv = [...serve, '--batv-key-file', batvKeys];
    const refused = (flag: string, entry: string) => (err: unknown) => err instanceof UsageError && err.message === `${flag}: got ${JSON.stringify(entry)}, expected a domain such as example.com, or .example.com for its subdomains (no @, no * and no trailing dot)`;
    // Stopped at once should it start: it must not.
    const stop = AbortSignal.abort();
    // Taken, it left example.org's senders unsigned without a word.
    await assert.rejects(run([...batv, '--batv-domain', 'example.com', '--batv-domain', 'example.org.'], { stop }), refused('--batv-domain', 'example.org.'));
    await assert.rejects(run([...batv, '--batv-domain', '*.example.org'], { stop }), refused('--batv-domain', '*.example.org'));
    await assert.rejects(run([...serve, '--srs-secret-file', srsSecret, '--srs-domain', 'srs.test', '--srs-local-domain', '@example.org'], { stop }), refused('--srs-local-domain', '@example.org'));
    await assert.rejects(run(['srs', 'forward', '--secret-file', srsSecret, '--domain', 'x.test', '--local-domain', 'example.org.', 'a@example.org']), refused('--local-domain', 'example.org.'));
    await assert.rejects(run(['srs', 'forward', '--secret-file', srsSecret, '--domain', 'x.test', '--local-domain', ' ', 'a@example.org']), (err: unknown) => err instanceof UsageError && err.message === '--local-domain: got " ", expected a domain, not an empty entry');
    assert.deepEqual(await run(['srs', 'forward', '--secret-file', srsSecret, '--domain', 'x.test', '--local-domain', '.example.org', 'a@mx.example.org']), { out: 'a@mx.example.org: local-domain: Need not rewrite local domain.\n', code: 1 });
  });

  it('reads a --batv-domain or --local-domain entry in capitals or other Unicode forms as the domain it names, in U-labels and A-labels (regression: refused after an upgrade, exit 64, every map down)', async () => {
    const quiet: LookupLog = { info: () => undefined, warn: () => undefined };
    const lookups = await serving(
      ['--socketmap', '127.0.0.1:0', '--batv-key-file', batvKeys, '--batv-domain', 'BÜCHER.example', '--batv-domain', '.\uff45xample.org', '--srs-secret-file', srsSecret, '--srs-domain', 'srs.test', '--srs-local-domain', 'BU\u0308CHER.example'],
      { log: quiet, clock: clockFromFlag(NOW) },
      async (out) => {
        const client = await SocketmapClient.connect({ host: '127.0.0.1', port: Number(/listening on 127\.0\.0\.1:(\d+)/.exec(out)?.[1]) });
        try {
          const answers: string[] = [];
          for (const [map, key] of [['batv-sign', 'user@bücher.example'], ['batv-sign', 'user@xn--bcher-kva.example'], ['batv-sign', 'user@mx.example.org'], ['batv-sign', 'user@example.org'], ['forward', 'user@bücher.example'], ['forward', 'user@XN--BCHER-KVA.example']] as const) {
            answers.push(`${map} ${key}: ${await client.query(map, key)}`);
          }
          return answers;
        } finally {
          client.close();
        }
      },
    );
    assert.match(lookups[0]!, /^batv-sign user@bücher\.example: OK prvs=\w+=user@bücher\.example$/);
    assert.match(lookups[1]!, /^batv-sign user@xn--bcher-kva\.example: OK prvs=\w+=user@xn--bcher-kva\.example$/);
    assert.match(lookups[2]!, /^batv-sign user@mx\.example\.org: OK prvs=\w+=user@mx\.example\.org$/);
    assert.match(lookups[3]!, /^batv-sign user@example\.org: NOTFOUND/, 'the subdomains only');
    assert.match(lookups[4]!, /^forward user@bücher\.example: NOTFOUND/, 'a local domain is not rewritten');
    assert.match(lookups[5]!, /^forward user@XN--BCHER-KVA\.example: NOTFOUND/, 'nor in A-labels');
    assert.deepEqual(await run(['srs', 'forward', '--secret-file', srsSecret, '--domain', 'x.test', '--local-domain', '.BÜCHER.example', 'a@mx.bücher.example']), { out: 'a@mx.bücher.example: local-domain: Need not rewrite local domain.\n', code: 1 });
  });

  it('a bad flag value is a usage error naming the flag, not a configuration error', async () => {
    await assert.rejects(run(['srs', 'forward', '--secret-file', srsSecret, '--domain', 'x.test', '--hash-length', '', 'a@b.test']), (err: unknown) => err instanceof UsageError && err.message.startsWith('--hash-length: got ""'));
    await assert.rejects(run(['srs', 'forward', '--secret-file', srsSecret, '--domain', 'x.test', '--hash-length', '28', 'a@b.test']), (err: unknown) => err instanceof UsageError && /expected a whole number from 1 to 27/.test(err.message));
    await assert.rejects(run(['verp', 'encode', '--sender', 'list@x.test', '--delimiters', '+', 'a@b.test']), (err: unknown) => err instanceof UsageError && err.message.startsWith('--delimiters: got "+"'));
    await assert.rejects(run(['rewrite', 'serve', '--socketmap', '127.0.0.1:0', '--srs-domain', 'x.test']), (err: unknown) => err instanceof UsageError && err.message === '--srs-secret-file and --srs-domain are both needed');
    for (const [flag, value] of [['--srs-separator', '/'], ['--srs-alphabet', 'hex']]) {
      await assert.rejects(run(['rewrite', 'serve', '--socketmap', '127.0.0.1:0', '--srs-secret-file', srsSecret, '--srs-domain', 'x.test', flag!, value!]), (err: unknown) => err instanceof UsageError && err.message.startsWith(`${flag}: got "${value}"`), flag);
    }
  });

  it('refuses a file, domain or listener flag given an empty value (an unset variable in a unit file), naming it, rather than leaving out what it names', async () => {
    // Regression: taken for flags not given, they left rewrite serve without its BATV maps, its
    // SRS maps or its socketmap listener, and bounce record without its BATV proof ("nothing recorded"):
    // bounce record with nothing else to prove a bounce (with --verp-sender it warns: the next test).
    const stop = AbortSignal.abort();
    const srs = ['--srs-secret-file', srsSecret, '--srs-domain', 'example.com'];
    const batv = ['--batv-key-file', batvKeys, '--batv-domain', 'example.com'];
    const refused = (flag: string, expected: string) => (err: unknown) => err instanceof UsageError && err.message === `${flag}: got "", expected ${expected}`;
    await assert.rejects(
      run(['rewrite', 'serve', '--socketmap', '', '--tcp-table', 'forward=127.0.0.1:0', ...srs], { stop }),
      (err: unknown) => err instanceof UsageError && err.message.startsWith('--socketmap: got "", expected HOST:PORT'),
    );
    await assert.rejects(run(['rewrite', 'serve', '--socketmap', '127.0.0.1:0', ...srs, '--batv-key-file', '', '--batv-domain', 'example.com'], { stop }), refused('--batv-key-file', 'a file'));
    await assert.rejects(run(['rewrite', 'serve', '--socketmap', '127.0.0.1:0', ...batv, '--srs-secret-file', '', '--srs-domain', ''], { stop }), refused('--srs-secret-file', 'a file'));
    await assert.rejects(run(['srs', 'forward', '--secret-file', srsSecret, '--domain', '', 'a@b.test']), refused('--domain', 'a domain'));
    await assert.rejects(run(['batv', 'sign', '--secret-file', '', 'a@b.test']), refused('--secret-file', 'a file'));
    const store = join(dir, 'empty-key-file.sqlite');
    const record = ['bounce', 'record', fixture('postfix-dsn.eml'), '--rcpt', 'prvs=12693bd285=alice@example.com', '--store', store];
    await assert.rejects(run([...record, '--batv-key-file', '']), refused('--batv-key-file', 'a file (without --verp-sender nothing else can prove the bounce)'));
    assert.equal(existsSync(store), false, 'nothing recorded: the command stopped at its flags');
  });

  it('bounce record with an empty --batv-key-file beside --verp-sender says BATV proof is off, and records what VERP proves (regression: exit 64, every bounce of the pipe(8) transport kept queued)', async () => {
    const store = join(dir, 'empty-key-file-verp.sqlite');
    const err = new PassThrough();
    let said = '';
    err.on('data', (chunk: Buffer) => (said += chunk.toString()));
    const record = ['bounce', 'record', fixture('qmail.eml'), '--rcpt', 'list-bounces+judy=example.org@lists.example.com', '--store', store, '--verp-sender', 'list-bounces@lists.example.com'];
    const recorded = await run([...record, '--batv-key-file', ''], { err });
    assert.equal(recorded.code, 0, `recorded: ${recorded.out}${said}`);
    assert.match(recorded.out, /^suppressed judy@example\.org: /, recorded.out);
    assert.equal(said, 'callout: warning: --batv-key-file is empty (""): BATV proof is off, only --verp-sender addresses prove bounces; give the key file, or leave --batv-key-file out\n');
    // A bounce only BATV could prove is not recorded, as without the flag: the key file's absence is what the warning said.
    const signed = await run(['bounce', 'record', fixture('postfix-dsn.eml'), '--rcpt', 'prvs=12693bd285=alice@example.com', '--store', store, '--verp-sender', 'list-bounces@lists.example.com', '--batv-key-file', '', '--now', '2020-01-02T00:00:00Z'], { err });
    assert.equal(signed.code, 1, `nothing recorded: ${signed.out}`);
  });

  it('takes --now as ISO 8601 or Unix seconds only, and a date that exists', async () => {
    for (const bad of ['-1', 'x 1', ' 7 ', '2024-02-30', '2026-12-05T24:00:00Z', '1e3', '8640000000001', '', '2024-01-01+02:00']) {
      await assert.rejects(run(['batv', 'sign', '--secret', 's', '--now', bad, 'a@x.test']), UsageError, JSON.stringify(bad));
    }
    assert.equal(clockFromFlag('8640000000000').now(), 8.64e15, 'the latest instant a Date holds');
    for (const good of ['2024-02-29', '2020-01-01T23:59:59Z', '2020-01-01T00:01:00Z', '2020-01-01T00:01:00.5+02:00', '1577836860', '1577836860.25', '1700000000.123456789', '2000-02-29']) {
      assert.equal((await run(['batv', 'sign', '--secret', 's', '--now', good, 'a@x.test'])).code, 0, good);
    }
  });

  it('refuses a store that would keep nothing, and reads no store that is not there', async () => {
    for (const store of ['', ':memory:']) {
      await assert.rejects(run(['bounce', 'record', fixture('qmail.eml'), '--rcpt', 'list-bounces+judy=example.org@lists.example.com', '--store', store, '--verp-sender', 'list-bounces@lists.example.com']), UsageError);
    }
    const missing = join(dir, 'never-written.sqlite');
    for (const args of [['bounce', 'list'], ['bounce', 'query', 'judy@example.org'], ['bounce', 'remove', 'judy@example.org']]) {
      await assert.rejects(run([...args, '--store', missing]), (err: unknown) => err instanceof ConfigError && err.message.startsWith(`${missing}: no store there`));
    }
    assert.equal(existsSync(missing), false);
  });

  it('says on stderr when --limit cut the list, and only then; stdout holds the entries as before', async () => {
    const store = join(dir, 'limited.sqlite');
    const { SqliteStore } = await import('../../src/store/sqlite.js');
    const raw = await SqliteStore.open(store);
    const now = Date.now();
    const addresses = ['a@example.org', 'b@example.org', 'c@example.org', 'd@example.org'];
    for (const address of addresses) await raw.set(`supp:${address}`, JSON.stringify({ address, status: '5.1.1', format: 'manual', proof: 'manual', firstSeen: now, lastSeen: now, count: 1 }), 86_400_000);
    await raw.close();
    const list = async (...args: string[]) => {
      const err = new PassThrough();
      let stderr = '';
      err.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      const { out, code } = await run(['bounce', 'list', '--store', store, ...args], { err });
      return { out, code, stderr };
    };
    const notice = 'callout bounce list: stopped at --limit 3 entries; more are stored (give a larger --limit)\n';
    const cut = await list('--limit', '3');
    assert.equal(cut.code, 0, 'exit 0: the entries asked for were printed');
    assert.deepEqual(cut.out.match(/^[^:]+/gm), addresses.slice(0, 3));
    assert.equal(cut.stderr, notice);
    const json = await list('--limit', '3', '--json');
    assert.deepEqual(json.out.trimEnd().split('\n').map((line) => (JSON.parse(line) as { address: string }).address), addresses.slice(0, 3));
    assert.equal(json.stderr, notice);
    await assert.rejects(list('--limit', '0'), (err: unknown) => err instanceof UsageError && err.message.startsWith('--limit: got "0"'));
    const whole = await list('--limit', '4');
    assert.deepEqual(whole.out.match(/^[^:]+/gm), addresses);
    assert.equal(whole.stderr, '', 'exactly --limit entries stored: nothing left out');
  });

  it('lists at most 1000 entries without --limit, and says so', async () => {
    const store = join(dir, 'over-default-limit.sqlite');
    const { SqliteStore } = await import('../../src/store/sqlite.js');
    const raw = await SqliteStore.open(store);
    const now = Date.now();
    for (let i = 0; i < 1001; i++) {
      const address = `u${i}@example.org`;
      await raw.set(`supp:${address}`, JSON.stringify({ address, status: '5.1.1', format: 'manual', proof: 'manual', firstSeen: now, lastSeen: now, count: 1 }), 86_400_000);
    }
    await raw.close();
    const err = new PassThrough();
    let stderr = '';
    err.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const { out, code } = await run(['bounce', 'list', '--store', store], { err });
    assert.equal(code, 0);
    assert.equal(out.trimEnd().split('\n').length, 1000);
    assert.equal(stderr, 'callout bounce list: stopped at --limit 1000 entries; more are stored (give a larger --limit)\n');
  });

  it('lists a suppression store that holds a value it did not write', async () => {
    const store = join(dir, 'damaged.sqlite');
    assert.equal((await run(['bounce', 'record', fixture('qmail.eml'), '--rcpt', 'list-bounces+judy=example.org@lists.example.com', '--store', store, '--verp-sender', 'list-bounces@lists.example.com'])).code, 0);
    const { SqliteStore } = await import('../../src/store/sqlite.js');
    const raw = await SqliteStore.open(store);
    await raw.set('supp:mallory@example.org', JSON.stringify({ address: 'mallory@example.org', status: '5.1.1', format: 'manual', proof: 'manual', firstSeen: 1e300, lastSeen: 1e300, count: 1 }), 86_400_000);
    await raw.set('supp:trudy@example.org', '{"address":"trudy@example.org"', 86_400_000);
    await raw.close();
    const listed = await run(['bounce', 'list', '--store', store]);
    assert.equal(listed.code, 0);
    const lines = listed.out.trimEnd().split('\n');
    assert.deepEqual(lines.map((line) => line.slice(0, line.indexOf(':'))), ['judy@example.org', 'mallory@example.org'], 'the damaged entry is left out');
    assert.match(lines[0]!, /^judy@example\.org: 5\.1\.1 since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(1 bounce, proof verp\)/);
    assert.equal(lines[1], 'mallory@example.org: 5.1.1 since 1e+300 (not a representable time) (1 bounce, proof manual)');
    assert.equal((await run(['bounce', 'query', 'mallory@example.org', '--store', store])).code, 0);
  });

  it('quotes an address or status holding a space, a quote or a control, and lists no entry whose proof is not one of the four, so that a script splitting a line at spaces gets its fields', async () => {
    const store = join(dir, 'spaced.sqlite');
    const { SqliteStore } = await import('../../src/store/sqlite.js');
    const { SuppressionList } = await import('../../src/bounce/index.js');
    const raw = await SqliteStore.open(store);
    await new SuppressionList(raw).add({ address: '"john doe"@example.org', status: '5.1.1', format: 'manual', proof: 'manual' });
    // A shared Redis holds what any program wrote.
    await raw.set('supp:odd@example.org', JSON.stringify({ address: 'odd@example.org', status: '5.1.1 x', format: 'manual', proof: 'manual', firstSeen: 0, lastSeen: 0, count: 1 }), 86_400_000);
    // A proof that is none of the four is a damaged entry: left out, never printed.
    await raw.set('supp:proof@example.org', JSON.stringify({ address: 'proof@example.org', status: '5.1.1', format: 'manual', proof: '\u001b[2J', firstSeen: 0, lastSeen: 0, count: 1 }), 86_400_000);
    await raw.close();
    const listed = await run(['bounce', 'list', '--store', store]);
    assert.equal(listed.code, 0);
    const lines = listed.out.trimEnd().split('\n');
    assert.match(lines[0]!, /^"\\"john doe\\"@example\.org": 5\.1\.1 since \S+ \(1 bounce, proof manual\)$/);
    assert.deepEqual(lines.slice(1), ['odd@example.org: "5.1.1 x" since 1970-01-01T00:00:00Z (1 bounce, proof manual)']);
    assert.equal(JSON.parse((await run(['bounce', 'list', '--store', store, '--json', '--limit', '1'])).out).address, '"john doe"@example.org', '--json as before');
  });
});

// Every assert.ok below has a message: without one, a failing assert.ok has Node quote the expression
// by parsing this file's source, which on this TypeScript took minutes per failure, and the file
// hung instead of failing (nodejs/node#52677).
describe('rewrite flags and key files fuzzed', () => {
  it('--now gives a clock at an instant a Date holds, or a usage error naming the flag', () => {
    const text = fc.oneof(
      fc.string({ maxLength: 40 }),
      fc.date({ noInvalidDate: true }).map((d) => d.toISOString()),
      fc.stringMatching(/^[0-9]{1,14}(\.[0-9]{0,10})?$/),
      fc.tuple(fc.integer({ min: 0, max: 9999 }), fc.integer({ min: 0, max: 99 }), fc.integer({ min: 0, max: 99 }), fc.integer({ min: 0, max: 99 })).map(([y, m, d, h]) => `${String(y).padStart(4, '0')}-${String(m).padStart(2, '0')}-${String(d).padStart(2, '0')}T${String(h).padStart(2, '0')}:00:00Z`),
    );
    fc.assert(
      fc.property(text, (now) => {
        try {
          const ms = clockFromFlag(now).now();
          assert.ok(Number.isFinite(ms) && Number.isFinite(new Date(ms).getTime()), `${now} read as ${ms}`);
        } catch (err) {
          assert.ok(err instanceof UsageError && err.message.startsWith('--now: got "'), String(err));
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('key and secret files of any text give keys 0-9 and non-blank secrets, or a ConfigError naming the file and line', () => {
    const file = join(dir, 'fuzz.keys');
    const line = fc.oneof(fc.string({ maxLength: 30 }), fc.constantFrom('# c', '', ' ', '\r', '1 s', '9  x y', '10 s', 'x s', '2  ', '3 \t'));
    fc.assert(
      fc.property(fc.array(line, { maxLength: 8 }), fc.constantFrom('\n', '\r\n'), (lines, eol) => {
        writeFileSync(file, lines.join(eol));
        try {
          for (const key of readBatvKeys(file)) assert.ok(Number.isInteger(key.keynum) && key.keynum >= 0 && key.keynum <= 9 && key.secret.trim() !== '', `read ${JSON.stringify(key)}`);
        } catch (err) {
          assert.ok(err instanceof ConfigError && err.message.startsWith(`--batv-key-file ${file}: `), String(err));
        }
        try {
          const secrets = readSrsSecrets(file);
          assert.ok(secrets.every((secret) => secret.trim() !== '' && !/[\r\n]/.test(secret)), `read ${JSON.stringify(secrets)}`);
        } catch (err) {
          assert.ok(err instanceof ConfigError && err.message.startsWith(`--secret-file ${file}: `), String(err));
        }
      }),
      // A key number of two digits and a line without one, each alone in the file, on every run, not only when chance gives them.
      { numRuns: 150, examples: [[['10 s'], '\n'], [['x s'], '\n']] },
    );
  });

  it('reads a key file at the size limit in linear time', () => {
    const file = join(dir, 'long.keys');
    writeFileSync(file, `1 ${' '.repeat(60_000)}x\n${'\r\n'.repeat(2000)}`);
    // Generous bound against a quadratic scan, not a speed claim.
    const keys = elapsedMs(() => (readBatvKeys(file), readSrsSecrets(file)));
    assert.ok(keys < 500, `read the key file in ${keys} ms`);
    const now = elapsedMs(() => assert.throws(() => clockFromFlag(`${'1'.repeat(100_000)}`), UsageError));
    assert.ok(now < 200, `refused a --now of 100000 digits in ${now} ms`);
  });
});
