import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ManualClock } from '../../support/manual-time.js';
import { ConfigError } from '../../../src/core/errors.js';
import { validateConfig } from '../../../src/config/schema.js';
import { createLogger } from '../../../src/core/log.js';
import { buildPipeline } from '../../../src/policy/pipeline.js';
import { MemoryStore } from '../../../src/store/index.js';
import { prvsSign } from '../../../src/rewrite/batv.js';
import { batvStage, createBatvStage, type BatvStageOptions } from '../../../src/policy/stages/batv.js';
import type { StageContext, StageDeps } from '../../../src/policy/types.js';
import { stageContext } from '../../support/stage-context.js';

const T0 = Date.parse('2020-01-01T00:01:00Z');
const DAY = 86_400_000;
const dir = mkdtempSync(join(tmpdir(), 'callout-batv-stage-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function context(sender: string, recipient: string, now = T0): StageContext {
  return stageContext({ client_address: '192.0.2.1', helo_name: 'mx.remote.example', sender, recipient, instance: 'msg-1' }, { clock: new ManualClock(now) });
}

const metrics: Array<Record<string, string> | undefined> = [];
function stage(extra: Partial<Record<keyof BatvStageOptions, unknown>> = {}) {
  const opts = batvStage.options.parse({ domains: ['example.com', '.example.net'], keys: [{ keynum: 1, secret: 'secret' }], ...extra }) as BatvStageOptions;
  return createBatvStage(opts, { metrics: { increment: (_name, labels) => metrics.push(labels) } });
}
const sign = (address: string, at = T0, keynum = 1, secret = 'secret') => {
  const s = prvsSign(address, { keynum, secret }, at);
  assert.ok(s.ok, 's.ok');
  return s.ok ? s.address : '';
};

describe('batv stage secretFile', () => {
  it('refuses a FIFO at once and a file any user may write; warns, once per start, of one group or others can read', () => {
    const fifo = join(dir, 'secret-fifo');
    assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
    assert.throws(() => stage({ keys: [{ keynum: 1, secretFile: fifo }] }), (err: unknown) => err instanceof ConfigError && err.message === `batv.keys.0.secretFile: ${fifo} (keynum 1): not a regular file (a FIFO)`);
    const file = join(dir, 'mode.secret');
    writeFileSync(file, 'secret\n');
    chmodSync(file, 0o666);
    assert.throws(() => stage({ keys: [{ keynum: 1, secretFile: file }] }), (err: unknown) => err instanceof ConfigError && err.message === `batv.keys.0.secretFile: ${file} (keynum 1): writable by any user (mode 0666), so anyone on this host could change it: chmod o-w`);
    const warnings: Array<[Record<string, unknown>, string]> = [];
    const log = { warn: (fields: Record<string, unknown>, message: string) => warnings.push([fields, message]) } as unknown as StageDeps['log'];
    const opts = (path: string) => batvStage.options.parse({ domains: ['example.com'], keys: [{ keynum: 1, secretFile: path }] }) as BatvStageOptions;
    chmodSync(file, 0o644);
    // Through a symlink, the target's mode is the one that counts.
    const link = join(dir, 'link.secret');
    symlinkSync(file, link);
    createBatvStage(opts(link), { log });
    assert.deepEqual(warnings, [[{ file: link, setting: 'batv.keys secretFile', problem: 'group or other users may read or write it (mode 0644): chmod 600' }, 'secret file is not private']]);
    chmodSync(file, 0o600);
    createBatvStage(opts(link), { log });
    assert.equal(warnings.length, 1);
  });

  it('says so when given a --batv-key-file (KEYNUM SECRET lines) instead of a secret alone', () => {
    const keys = join(dir, 'batv.keys');
    writeFileSync(keys, '1 batvsecret\n0 older\n', { mode: 0o600 });
    assert.throws(() => stage({ keys: [{ keynum: 1, secretFile: keys }] }), (err: unknown) => err instanceof ConfigError && err.message === `batv.keys.0.secretFile: ${keys} (keynum 1): more than one line, expected the secret alone (KEYNUM SECRET lines are a --batv-key-file: a secret file holds one secret alone)`);
    // A key file as `rewrite serve` reads it, comment header and all (regression: the '#' line hid the hint).
    writeFileSync(keys, '# BATV keys, newest first\n\n1 batvsecret\n  0 older\n');
    assert.throws(() => stage({ keys: [{ keynum: 1, secretFile: keys }] }), (err: unknown) => err instanceof ConfigError && err.message.endsWith('(KEYNUM SECRET lines are a --batv-key-file: a secret file holds one secret alone)'));
    writeFileSync(keys, '1 batvsecret\n');
    const warnings: Array<[Record<string, unknown>, string]> = [];
    const log = { warn: (fields: Record<string, unknown>, message: string) => warnings.push([fields, message]) } as unknown as StageDeps['log'];
    const opts = (keynum: number) => batvStage.options.parse({ domains: ['example.com'], keys: [{ keynum, secretFile: keys }] }) as BatvStageOptions;
    createBatvStage(opts(1), { log });
    assert.equal(warnings.length, 1);
    assert.deepEqual(warnings[0]![0], { file: keys, keynum: 1 });
    assert.match(warnings[0]![1], /^batv\.keys secretFile holds "1 \.\.\." as a --batv-key-file line does: the whole line, number included, is the secret/);
    // A secret that merely has a space in it, under another key number, is taken without a word.
    createBatvStage(opts(2), { log });
    assert.equal(warnings.length, 1);
    // Comment lines alone, or a line that is no `KEYNUM SECRET` among them, are no key file: the plain reason, without the hint.
    for (const text of ['# one\n# two\n', 'batvsecret\n1 older\n']) {
      writeFileSync(keys, text);
      assert.throws(() => stage({ keys: [{ keynum: 1, secretFile: keys }] }), (err: unknown) => err instanceof ConfigError && err.message === `batv.keys.0.secretFile: ${keys} (keynum 1): more than one line, expected the secret alone`, text);
    }
  });

  it('refuses a {word} in its texts, which take no placeholders, instead of sending it as it is', () => {
    assert.throws(() => stage({ unsignedText: 'no bounce to {sender}' }), { code: 'CONFIG_INVALID', message: 'unsignedText: unknown placeholder {sender}; this text takes no placeholders' });
  });
});

describe('batv stage', () => {
  it('lets a bounce to a valid signature through, and counts it', async () => {
    const s = stage();
    const verdict = await s.evaluate(context('', 'prvs=1269e93bf9=user@example.com'));
    assert.equal(verdict.result, 'valid');
    assert.deepEqual(verdict.decision, { kind: 'continue' });
    assert.deepEqual(verdict.evidence, { original: 'user@example.com', keynum: 1 });
    assert.equal(s.counters.valid, 1);
    assert.deepEqual(metrics.at(-1), { result: 'valid' });
  });

  it('rejects unsigned, forged, unknown-key and expired bounces as backscatter', async () => {
    const s = stage();
    const cases: Array<[string, string, string, number?]> = [
      ['user@example.com', 'unsigned', 'This address does not send an unsigned reverse path'],
      ['prvs=1269e93bf8=user@example.com', 'bad-signature', 'Invalid reverse path signature'],
      [sign('user@example.com', T0, 4), 'unknown-key', 'Invalid reverse path signature'],
      ['prvs=1269e93bf9=user@example.com', 'expired', 'Bounce address tag expired', T0 + 8 * DAY],
      [sign('someone@sub.example.net'), 'valid', ''],
    ];
    for (const [recipient, result, text, now] of cases) {
      const verdict = await s.evaluate(context('', recipient, now));
      assert.equal(verdict.result, result, recipient);
      if (text) assert.deepEqual(verdict.decision, { kind: 'reject', code: 550, enhanced: '5.7.1', text });
    }
    assert.equal(s.counters.unsigned + s.counters['bad-signature'] + s.counters['unknown-key'] + s.counters.expired, 4);
  });

  it('says in its reasons which address and key a bounce was for, and keeps them as evidence of a refused tag', async () => {
    const s = stage({ unsignedAllowedUntil: '2020-01-08T00:00:00Z' });
    const valid = await s.evaluate(context('', 'prvs=1269e93bf9=user@example.com'));
    assert.equal(valid.reason, 'bounce to a valid prvs address of user@example.com (key 1)');
    const grace = await s.evaluate(context('', 'user@example.com'));
    assert.equal(grace.reason, 'unsigned bounce to user@example.com accepted until 2020-01-08T00:00:00Z');
    const expired = await s.evaluate(context('', 'prvs=1269e93bf9=user@example.com', T0 + 8 * DAY));
    assert.deepEqual([expired.result, expired.reason, expired.evidence], ['expired', 'backscatter: the prvs tag of user@example.com has expired', { original: 'user@example.com', keynum: 1 }]);
    const forged = await s.evaluate(context('', 'prvs=1269e93bf8=user@example.com'));
    assert.deepEqual([forged.result, forged.reason, forged.evidence], ['bad-signature', 'backscatter: the prvs tag of user@example.com is not ours (bad-signature, key 1)', { original: 'user@example.com', keynum: 1 }]);
  });

  it('checks the tag over the recipient exactly as Postfix sent it, upper case included', async () => {
    const signed = sign('User.Name@example.com');
    assert.equal((await stage().evaluate(context('', signed))).result, 'valid', signed);
  });

  it('protects the domain of a recipient that does not parse as an address', async () => {
    // Bytes that were not UTF-8, as Postfix passes them on: the local part holds U+FFFD once decoded.
    const ctx = context('', 'us\ufffder@example.com');
    assert.equal(ctx.recipient, undefined, 'the recipient does not parse');
    const verdict = await stage().evaluate(ctx);
    assert.equal(verdict.result, 'unsigned', verdict.reason);
  });

  it("refuses by default a tag that expired years ago, which Exim's window takes for valid again later in the 1000-day cycle", async () => {
    // Signed 2020-01-01 (stamp 269); 2022-04-18 is day 19100, stamp 100: 269 is "not before today" for Exim.
    const later = Date.parse('2022-04-18T00:00:00Z');
    assert.equal((await stage().evaluate(context('', 'prvs=1269e93bf9=user@example.com', later))).result, 'expired');
    assert.equal((await stage({ window: 'exim' }).evaluate(context('', 'prvs=1269e93bf9=user@example.com', later))).result, 'valid');
  });

  it('answers at once, without a promise: it has nothing to wait for, so the pipeline spends no timer on it', () => {
    const s = stage();
    for (const [sender, recipient] of [['', 'prvs=1269e93bf9=user@example.com'], ['', 'user@example.com'], ['someone@remote.example', 'user@example.com']] as const) {
      assert.ok(!(s.evaluate(context(sender, recipient)) instanceof Promise), `${sender} -> ${recipient}`);
    }
  });

  it('leaves mail with a sender, other domains and exempt recipients alone', async () => {
    const s = stage({ exemptRecipients: ['List-Owner', 'NoReply@Example.com'] });
    assert.equal((await s.evaluate(context('someone@remote.example', 'user@example.com'))).result, 'not-bounce');
    // A sender that does not parse is still a sender, not the null one (sender-syntax is the stage for it).
    assert.equal((await s.evaluate(context('someone@192.0.2.1', 'user@example.com'))).result, 'not-bounce');
    assert.equal((await s.evaluate(context('', 'user@other.example'))).result, 'unprotected');
    assert.equal((await s.evaluate(context('', 'user@example.net'))).result, 'unprotected');
    assert.equal((await s.evaluate(context('', 'list-owner@example.com'))).result, 'exempt');
    assert.equal((await s.evaluate(context('', 'NoReply@example.com'))).result, 'exempt');
    // Exempt by the address inside a prvs tag too, whatever the tag: it never signs, so a tag on it is not ours to check.
    assert.equal((await s.evaluate(context('', 'prvs=1269e93bf8=list-owner@example.com'))).result, 'exempt');
  });

  it('refuses a domain entry that can match no domain, saying why (rewrite/domains unmatchableDomainEntry)', () => {
    for (const entry of ['example.org.', '@example.org', '*.example.org', '']) {
      const parsed = batvStage.options.safeParse({ domains: [entry], keys: [{ keynum: 1, secret: 's' }] });
      assert.ok(!parsed.success, entry);
      assert.match(parsed.error.issues[0]!.message, /^expected a domain(, not an empty entry| such as example\.com, or \.example\.com for its subdomains)/, entry);
    }
    assert.ok(batvStage.options.safeParse({ domains: ['.example.org'], keys: [{ keynum: 1, secret: 's' }] }).success, 'batvStage.options.safeParse({ domains: [\'.example.org\'], keys: [{ keynum: 1, secret: \'s\' }] }).su...');
  });

  it('refuses an exemptRecipients entry that can match no recipient, saying why (regression: taken, and its bounces refused)', () => {
    for (const [entry, why] of [
      ['@example.com', 'not a domain alone (leave a domain out of domains instead)'],
      ['list-owner@', 'not a local part with an "@" and no domain'],
      ['', 'not an empty entry'],
      ['  ', 'not an empty entry'],
      [' list-owner', 'without white space around it'],
      // A recipient's local part ends before its last '@': no recipient has this one's.
      ['list-owner@example.com@', 'not a local part with an "@" and no domain'],
    ] as const) {
      const parsed = batvStage.options.safeParse({ domains: ['example.com'], keys: [{ keynum: 1, secret: 's' }], exemptRecipients: ['list-owner', entry] });
      assert.ok(!parsed.success, entry);
      assert.deepEqual(parsed.error.issues.map((i) => [i.path.join('.'), i.message]), [['exemptRecipients.1', `expected a local part (list-owner) or an address (noreply@example.com), ${why}`]], entry);
    }
  });

  it('protects an internationalised domain whether it is configured or addressed as U-labels or A-labels', async () => {
    for (const [configured, addressed] of [['bücher.example', 'user@xn--bcher-kva.example'], ['xn--bcher-kva.example', 'user@bücher.example'], ['.bücher.example', 'user@sub.xn--bcher-kva.example']] as const) {
      const verdict = await stage({ domains: [configured] }).evaluate(context('', addressed));
      assert.equal(verdict.result, 'unsigned', `${configured} protects ${addressed}`);
    }
  });

  it('reads a domains entry in capitals or other Unicode forms as the domain it names (regression: refused after an upgrade, serve exit 78)', async () => {
    // As serve builds it: the configuration is taken, and the stage protects the domain the entry names.
    const config = validateConfig({ policy: { stages: [{ name: 'postmaster' }, { name: 'batv', domains: ['BÜCHER.example', '.BU\u0308CHER.test', '\uff45xample.org'], keys: [{ keynum: 1, secret: 'secret' }] }] } });
    const clock = new ManualClock(T0);
    const pipeline = buildPipeline(config, { resolver: undefined as never, store: new MemoryStore({ clock }), clock, log: createLogger('silent') });
    assert.ok(pipeline, 'the pipeline is built');
    const s = stage({ domains: ['BÜCHER.example', '.BU\u0308CHER.test', '\uff45xample.org'] });
    for (const protectedRecipient of ['user@bücher.example', 'user@xn--bcher-kva.example', 'user@BÜCHER.example', 'user@mx.bücher.test', 'user@mx.xn--bcher-kva.test', 'user@example.org']) {
      assert.equal((await s.evaluate(context('', protectedRecipient))).result, 'unsigned', `${protectedRecipient} protected`);
    }
    assert.equal((await s.evaluate(context('', sign('user@bücher.example')))).result, 'valid', 'a signed bounce to it is valid');
    for (const other of ['user@bücher.test', 'user@other.example']) assert.equal((await s.evaluate(context('', other))).result, 'unprotected', `${other} unprotected`);
  });

  it('accepts unsigned bounces during the grace period, with custom texts and codes', async () => {
    const s = stage({ unsignedAllowedUntil: '2020-01-08T00:00:00Z', code: 554, enhanced: '5.7.0', unsignedText: 'no backscatter here' });
    assert.equal((await s.evaluate(context('', 'user@example.com'))).result, 'unsigned-grace');
    // The grace period ends at unsignedAllowedUntil itself.
    assert.equal((await s.evaluate(context('', 'user@example.com', Date.parse('2020-01-08T00:00:00Z') - 1))).result, 'unsigned-grace');
    assert.equal((await s.evaluate(context('', 'user@example.com', Date.parse('2020-01-08T00:00:00Z')))).result, 'unsigned');
    const later = await s.evaluate(context('', 'user@example.com', T0 + 8 * DAY));
    assert.deepEqual(later.decision, { kind: 'reject', code: 554, enhanced: '5.7.0', text: 'no backscatter here' });
  });

  it('reads secrets from files, newest key first, and validates its options with the configuration', async () => {
    const file = join(dir, 'batv.secret');
    writeFileSync(file, 'secret\n');
    const s = stage({ keys: [{ keynum: 2, secretFile: file }, { keynum: 1, secret: 'secret' }] });
    assert.equal((await s.evaluate(context('', sign('user@example.com', T0, 2)))).result, 'valid');
    assert.equal((await s.evaluate(context('', 'prvs=1269e93bf9=user@example.com'))).result, 'valid');
    assert.throws(() => stage({ keys: [{ keynum: 1, secretFile: join(dir, 'missing') }] }), ConfigError);
    // The key number of a secret given in the configuration, and a secret file's spaces, are as written.
    assert.equal((await stage({ keys: [{ keynum: 3, secret: 'secret' }] }).evaluate(context('', sign('user@example.com', T0, 3)))).result, 'valid');
    const spaced = join(dir, 'spaced.secret');
    writeFileSync(spaced, ' spaced secret \n');
    assert.equal((await stage({ keys: [{ keynum: 2, secretFile: spaced }] }).evaluate(context('', sign('user@example.com', T0, 2, ' spaced secret ')))).result, 'valid');

    // Built as serve builds it, the entry and the key are named (it said "policy.stages.1.keys: secretFile ...").
    const twoKeys = validateConfig({ policy: { stages: [{ name: 'postmaster' }, { name: 'batv', domains: ['example.com'], keys: [{ keynum: 2, secretFile: file }, { keynum: 1, secretFile: join(dir, 'missing') }] }] } });
    const clock = new ManualClock(T0);
    assert.throws(
      () => buildPipeline(twoKeys, { resolver: undefined as never, store: new MemoryStore({ clock }), clock, log: createLogger('silent') }),
      (err: unknown) => err instanceof ConfigError && err.message.startsWith(`policy.stages.1.keys.1.secretFile (batv): ${join(dir, 'missing')} (keynum 1): `),
    );
    const large = join(dir, 'large.secret');
    writeFileSync(large, 'x'.repeat(64 * 1024 + 1));
    assert.throws(() => stage({ keys: [{ keynum: 1, secretFile: large }] }), (err: unknown) => err instanceof ConfigError && err.message === `batv.keys.0.secretFile: ${large} (keynum 1): larger than 64 KiB`);
    assert.throws(() => stage({ keys: [{ keynum: 1, secretFile: '/dev/zero' }] }), (err: unknown) => err instanceof ConfigError && err.message === 'batv.keys.0.secretFile: /dev/zero (keynum 1): not a regular file (a character device)');
    // An empty file is an empty HMAC key, which anyone can sign with; a second line would be
    // part of the key and no genuine tag would check (regressions).
    for (const [content, why] of [['', 'no secret in the file'], ['\n\n', 'no secret in the file'], ['# key 2\nsecret\n', 'more than one line, expected the secret alone']]) {
      const bad = join(dir, 'bad.secret');
      writeFileSync(bad, content!);
      assert.throws(() => stage({ keys: [{ keynum: 2, secretFile: bad }] }), (err: unknown) => err instanceof ConfigError && err.message === `batv.keys.0.secretFile: ${bad} (keynum 2): ${why}`, JSON.stringify(content));
    }
    // A file of line ends and one more character is read in linear time (a regex took 4 s).
    const lineEnds = join(dir, 'line-ends.secret');
    writeFileSync(lineEnds, `${'\n'.repeat(60_000)}x`);
    const started = performance.now();
    assert.throws(() => stage({ keys: [{ keynum: 2, secretFile: lineEnds }] }), /more than one line/);
    assert.ok(performance.now() - started < 1000, `${Math.round(performance.now() - started)} ms`);
    writeFileSync(file, 'secret\r\n\n');
    assert.equal((await stage({ keys: [{ keynum: 2, secretFile: file }] }).evaluate(context('', sign('user@example.com', T0, 2)))).result, 'valid');
    assert.equal(batvStage.options.safeParse({ domains: ['example.com'], keys: [{ keynum: 1 }] }).success, false);
    assert.equal(batvStage.options.safeParse({ domains: [], keys: [{ keynum: 1, secret: 's' }] }).success, false);
    // No key would refuse every bounce; a prvs tag holds one digit for the key number (0-9).
    assert.equal(batvStage.options.safeParse({ domains: ['example.com'], keys: [] }).success, false);
    assert.equal(batvStage.options.safeParse({ domains: ['example.com'], keys: [{ keynum: 10, secret: 's' }] }).success, false);
    // Ten keys at most (one per key number); a key has one secret, given once; "***" is config print's mask, not a secret.
    const keys = (count: number) => Array.from({ length: count }, (_, keynum) => ({ keynum: keynum % 10, secret: 's' }));
    assert.equal(batvStage.options.safeParse({ domains: ['example.com'], keys: keys(10) }).success, true);
    assert.equal(batvStage.options.safeParse({ domains: ['example.com'], keys: keys(11) }).success, false);
    assert.equal(batvStage.options.safeParse({ domains: ['example.com'], keys: [{ keynum: 1, secret: 's', secretFile: file }] }).success, false);
    assert.match(batvStage.options.safeParse({ domains: ['example.com'], keys: [{ keynum: 1, secret: '***' }] }).error?.issues[0]?.message ?? '', /as config print hides it/);

    // Backscatter will not stop on a retry: a permanent code only.
    assert.equal(batvStage.options.safeParse({ domains: ['example.com'], keys: [{ keynum: 1, secret: 's' }], code: 450 }).success, false);
    const config = validateConfig({ policy: { stages: [{ name: 'postmaster' }, { name: 'batv', domains: ['example.com'], keys: [{ keynum: 0, secret: 's' }] }] } });
    assert.equal(config.policy.stages[1]?.name, 'batv');
  });
});
