// `callout spf` through a commander program of its own, against the in-process DNS server.
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { Command } from 'commander';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { registerSenderIdCommand, registerSpfCommand } from '../../src/cli/spf.js';
import { reverseName, startDnsServer, type DnsTestServer } from '../support/dns-server.js';

let server: DnsTestServer;

before(async () => {
  server = await startDnsServer({
    'example.test': { TXT: [['v=spf1 ip4:127.0.0.0/24 ', 'include:_spf.example.test -all']] },
    '_spf.example.test': { TXT: ['v=spf1 a:mail.example.test ?all'] },
    'mail.example.test': { A: ['127.0.1.5'] },
    'deny.test': { TXT: ['v=spf1 -all exp=why.deny.test'] },
    'why.deny.test': { TXT: ['%{i} may not send for %{d}'] },
    'helo.test': { TXT: ['v=spf1 ip4:127.0.0.9 -all'] },
    [reverseName('127.0.0.9')]: { PTR: ['helo.test'] },
    'escape.test': { TXT: ['v=spf1 \x1b]0;owned\x07\x1b[2J -all'] },
    // node:dns reads TXT bytes as Latin-1: the UTF-8 of U+009B holds byte 0x9B, a terminal's CSI.
    'c1.test': { TXT: ['v=spf1 -all exp=why.c1.test', 'site-verification \u009b2J'] },
    'why.c1.test': { TXT: ['%x \u009b2J \u202e'] },
    'pra.test': { TXT: ['v=spf1 -all exp=why.pra.test'] },
    'why.pra.test': { TXT: ['%{l} may not send'] },
    'soft.test': { TXT: ['v=spf1 ~all'] },
    'neutral.test': { TXT: ['v=spf1 ?all'] },
  });
});
after(async () => {
  await server.close();
});

function run(args: string[]): Promise<{ output: string; exitCode: number | undefined; notes: string }> {
  return runCommand('spf', args);
}

async function runCommand(command: 'spf' | 'senderid', args: string[]): Promise<{ output: string; exitCode: number | undefined; notes: string }> {
  const out = new PassThrough();
  let output = '';
  out.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const err = new PassThrough();
  let notes = '';
  err.on('data', (chunk: Buffer) => (notes += chunk.toString()));
  const program = new Command('callout').exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} });
  registerSpfCommand(program, { out, err });
  registerSenderIdCommand(program, { out, err });
  const previous = process.exitCode;
  try {
    await program.parseAsync(['node', 'callout', command, '--dns-server', server.address, '--timeout', '500', ...args]);
    return { output, exitCode: process.exitCode as number | undefined, notes };
  } finally {
    process.exitCode = previous;
  }
}

describe('callout spf', () => {
  it('prints result, mechanism and the trace of terms and lookups', async () => {
    const { output, exitCode } = await run(['--ip', '127.0.1.5', '--sender', 'someone@example.test']);
    assert.equal(exitCode, 0);
    assert.match(output, /^result: pass$/m);
    assert.match(output, /^mechanism: include:_spf\.example\.test$/m);
    assert.match(output, /dns TXT example\.test: records "v=spf1 ip4:127\.0\.0\.0\/24 include:_spf\.example\.test -all"/);
    assert.match(output, /term a:mail\.example\.test \(_spf\.example\.test\): match/);
  });

  it('prints no control character a sender\'s DNS data holds: a record is shown quoted', async () => {
    const { output, exitCode } = await run(['--ip', '127.0.0.7', '--sender', 'x@escape.test']);
    assert.equal(exitCode, 2);
    assert.match(output, /^result: permerror$/m);
    assert.match(output, /record escape\.test: "v=spf1 \\u001b\]0;owned\\u0007\\u001b\[2J -all"/);
    // eslint-disable-next-line no-control-regex -- the control characters are what must not be there
    assert.doesNotMatch(output, /[\x00-\x09\x0b-\x1f\x7f]/);
  });

  it('prints no C1 or bidi control from DNS text: other TXT records and an exp= that does not parse are escaped', async () => {
    const { output, exitCode } = await run(['--ip', '127.0.0.7', '--sender', 'x@c1.test']);
    assert.equal(exitCode, 1);
    assert.match(output, /dns TXT c1\.test: records .*"site-verification \S*\\u009b2J"/);
    assert.match(output, /note: .*exp= ignored: .*\\u009b2J/);
    assert.doesNotMatch(output, /[\x80-\x9f\u202e]/);
    const json = await run(['--ip', '127.0.0.7', '--sender', 'x@c1.test', '--json']);
    assert.doesNotMatch(json.output, /[\x80-\x9f\u202e]/);
    const verdict = JSON.parse(json.output) as { trace: Array<{ kind: string; data?: string[] }> };
    assert.ok(verdict.trace.some((entry) => entry.kind === 'dns' && entry.data?.some((d) => d.includes('\u009b2J'))), 'verdict.trace.some((entry) => entry.kind === \'dns\' && entry.data?.some((d) => d.includes(\'\\u009b2...');
  });

  it('senderid prints no C1 control a message header holds: the PRA and the explanation made of it are quoted', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'callout-spf-cli-'));
    try {
      const message = join(dir, 'message.eml');
      // U+009B, a terminal's CSI, inside a quoted local part (RFC 6532 UTF-8).
      writeFileSync(message, Buffer.from('From: "x\u009b2J"@pra.test\r\n\r\nbody\r\n', 'utf8'));
      const { output, exitCode } = await runCommand('senderid', ['--ip', '127.0.0.7', '--message', message]);
      assert.equal(exitCode, 1);
      assert.match(output, /^pra: "x\\u009b2J@pra\.test" \(from the from field\)$/m);
      assert.match(output, /^explanation: "x\\u009b2J may not send"$/m);
      assert.doesNotMatch(output, /[\x80-\x9f]/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('senderid reads the message as UTF-8 (RFC 6532): an internationalised From domain is that domain, not its Latin-1 misreading', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'callout-spf-cli-'));
    try {
      const message = join(dir, 'message.eml');
      writeFileSync(message, Buffer.from('From: José <jose@bücher.example>\r\n\r\nbody\r\n', 'utf8'));
      const { output } = await runCommand('senderid', ['--ip', '127.0.0.7', '--message', message, '--json']);
      const verdict = JSON.parse(output) as { domain: string; praField: string };
      assert.deepEqual([verdict.domain, verdict.praField], ['xn--bcher-kva.example', 'from']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('senderid finds no PRA in a From field with a byte that is not UTF-8, and checks no other mailbox in its place', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'callout-spf-cli-'));
    try {
      const message = join(dir, 'message.eml');
      writeFileSync(message, Buffer.concat([Buffer.from('From: x'), Buffer.from([0xff]), Buffer.from('@pra.test\r\n\r\nbody\r\n')]));
      const { output, exitCode } = await runCommand('senderid', ['--ip', '127.0.0.7', '--message', message]);
      assert.equal(exitCode, 2);
      assert.match(output, /^result: permerror$/m);
      assert.match(output, /no PRA: from: local part holds U\+FFFD, the mark of bytes that were not UTF-8 at 0$/m);
      assert.doesNotMatch(output, /^pra:/m);
      assert.match(output, /^identity: pra none found, client 127\.0\.0\.7$/m, 'the identity line says no PRA was found, not pra "" (domain )');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('--json prints one object with result, explanation and trace', async () => {
    const { output, exitCode } = await run(['--ip', '127.0.0.7', '--sender', '<x@deny.test>', '--json']);
    assert.equal(exitCode, 1);
    const verdict = JSON.parse(output) as { result: string; explanation: string; trace: Array<{ kind: string }> };
    assert.equal(verdict.result, 'fail');
    assert.equal(verdict.explanation, '127.0.0.7 may not send for deny.test');
    assert.ok(verdict.trace.some((entry) => entry.kind === 'dns'), 'verdict.trace.some((entry) => entry.kind === \'dns\')');
    assert.equal(output.trim().split('\n').length, 1);
  });

  it('the null sender is checked as postmaster@HELO', async () => {
    const { output } = await run(['--ip', '127.0.0.9', '--sender', '<>', '--helo', 'helo.test', '--json']);
    const verdict = JSON.parse(output) as { result: string; sender: string; identity: string };
    assert.deepEqual([verdict.result, verdict.sender, verdict.identity], ['pass', 'postmaster@helo.test', 'mailfrom']);
  });

  it('exits 0 pass, 1 fail or softfail, 2 neutral or none, as the README documents', async () => {
    const status = async (sender: string) => (await run(['--ip', '127.0.0.7', '--sender', sender])).exitCode;
    assert.deepEqual(
      [await status('a@example.test'), await status('a@deny.test'), await status('a@soft.test'), await status('a@neutral.test'), await status('a@norecord.test')],
      [0, 1, 1, 2, 2],
    );
  });

  it('usage errors: a bad --ip, a null sender without --helo, a missing option', async () => {
    await assert.rejects(run(['--ip', 'nope', '--sender', 'a@example.test']), { code: 'USAGE' });
    await assert.rejects(run(['--ip', '127.0.0.1', '--sender', '']), /need --helo/);
    await assert.rejects(run(['--ip', '127.0.0.1', '--identity', 'helo']), /need --helo/);
    await assert.rejects(run(['--ip', '127.0.0.1']), { code: 'USAGE', message: "spf: --sender: give the MAIL FROM address ('' or '<>' for the null sender), or --identity helo" });
    await assert.rejects(run(['--sender', 'a@example.test']), { code: 'commander.missingMandatoryOptionValue' });
    await assert.rejects(run(['--ip', '127.0.0.1', '--sender', 'a@example.test', '--dns-server', '127.0.0.1:0']), { code: 'USAGE', message: 'spf: --dns-server: dns server "127.0.0.1:0": port must be 1..65535' });
    await assert.rejects(run(['--ip', '127.0.0.1', '--sender', 'a@example.test', '--timeout', '0']), { code: 'USAGE', message: 'spf: --timeout: got "0", expected at least 1 millisecond' });
    await assert.rejects(run(['--ip', '127.0.0.1', '--sender', 'a@example.test', '--timeout', '2147483648']), { code: 'USAGE', message: 'spf: --timeout: got "2147483648", expected at most 2147483647 milliseconds (about 24 days)' });
    await assert.rejects(run(['--ip', '127.0.0.1', '--sender', 'a@example.test', '--receiver', '']), { code: 'USAGE', message: 'spf: --receiver: got "", expected this host\'s name' });
    // scope mfrom checks the MAIL FROM: without --sender there is nothing to check.
    await assert.rejects(runCommand('senderid', ['--ip', '127.0.0.1', '--message', '/dev/null', '--scope', 'mfrom']), { code: 'USAGE', message: 'senderid: --scope mfrom needs --sender' });
    await assert.rejects(runCommand('senderid', ['--ip', '127.0.0.1', '--message', '/dev/null', '--scope', 'from']), { code: 'USAGE', message: 'senderid: --scope must be pra or mfrom, got "from"' });
  });

  it('takes a --sender that its identity or scope does not check, with one note on stderr (--identity helo required it before)', async () => {
    // --identity helo checks the HELO name alone; --sender was required all the same, so every existing call passes one.
    const withSender = await run(['--ip', '127.0.0.9', '--sender', 'a@deny.test', '--helo', 'helo.test', '--identity', 'helo', '--json']);
    assert.deepEqual([JSON.parse(withSender.output).result, withSender.exitCode], ['pass', 0], 'the HELO name checked, not deny.test');
    assert.equal(withSender.notes, 'callout: warning: --sender is not checked with --identity helo (the HELO name alone is); leave --sender out\n');
    const helo = await run(['--ip', '127.0.0.9', '--helo', 'helo.test', '--identity', 'helo', '--json']);
    assert.deepEqual([JSON.parse(helo.output).result, helo.exitCode, helo.notes], ['pass', 0, '']);
    assert.equal((await run(['--ip', '127.0.1.5', '--sender', 'someone@example.test'])).notes, '', 'a --sender checked: no note');
    // Scope pra (the default) checks the address of the headers.
    const dir = mkdtempSync(join(tmpdir(), 'callout-spf-cli-'));
    try {
      const message = join(dir, 'pra.eml');
      writeFileSync(message, 'From: someone@pra.test\r\n\r\nbody\r\n');
      const pra = await runCommand('senderid', ['--ip', '127.0.0.1', '--message', message, '--sender', 'a@example.test']);
      const praAlone = await runCommand('senderid', ['--ip', '127.0.0.1', '--message', message]);
      assert.deepEqual([pra.output, pra.exitCode], [praAlone.output, praAlone.exitCode], 'the same verdict as without --sender');
      assert.equal(pra.exitCode, 1, pra.output);
      assert.equal(pra.notes, "callout: warning: --sender is not checked with scope pra (the address of the message's headers is); give --scope mfrom to check it, or leave --sender out\n");
      assert.equal(praAlone.notes, '');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
