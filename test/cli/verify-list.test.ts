// `callout verify --file`: address lists as people export them, one per line or CSV.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { csvFields, readAddressList, runVerify } from '../../src/cli/verify.js';
import { defaultConfig, validateConfig } from '../../src/config/schema.js';
import { UsageError } from '../../src/core/errors.js';
import fc from 'fast-check';
import { elapsedMs } from '../support/fuzz.js';

const dir = mkdtempSync(join(tmpdir(), 'callout-verify-list-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function list(text: string): string[] {
  const path = join(dir, 'list');
  writeFileSync(path, text);
  return readAddressList(path).map((entry) => entry.address);
}

describe('address lists', () => {
  it('reads quoted CSV fields as RFC 4180 writes them: commas inside quotes, "" for a quote', () => {
    assert.deepEqual(csvFields('"q,r", b@y.test ,"say ""hi"""'), ['q,r', 'b@y.test', 'say "hi"']);
    assert.deepEqual(list('name,email\nx,"a@x.test"\n"q,r",b@y.test\n"Smith, J","j@z.test"\n'), ['a@x.test', 'b@y.test', 'j@z.test']);
    assert.deepEqual(list('"Name","E-mail"\n"Alice","alice@x.test"\n'), ['alice@x.test']);
  });

  it('takes a quote inside an unquoted field as written: only a field that starts with one is quoted', () => {
    assert.deepEqual(csvFields('Robert "Bob" Smith,bob@x.test'), ['Robert "Bob" Smith', 'bob@x.test']);
    assert.deepEqual(csvFields('a"b,c"d'), ['a"b', 'c"d']);
  });

  it('takes a line without a comma or quote, or an address with a quoted local part, as it is', () => {
    assert.deepEqual(list('alice@x.test\n"a b"@x.test\n"a,b"@x.test\n"a\\"b"@example.org\n# comment\n\n'), ['alice@x.test', '"a b"@x.test', '"a,b"@x.test', '"a\\"b"@example.org']);
    // With a header every row is CSV, even one that starts with a quoted local part.
    assert.deepEqual(list('name,email\n"x"@y.org,second@example.org\n'), ['second@example.org']);
  });
});

describe('invalid lines of a list', () => {
  it('answer invalid with the line number, past a byte order mark, CRLF, comments, blank lines and a header, and the run goes on', async () => {
    const path = join(dir, 'with-invalid.csv');
    writeFileSync(path, '\uFEFF# exported\r\n\r\nemail,name\r\nnot an address,X\r\n\r\n"a@b@c",Y\r\n');
    const out = new PassThrough();
    let printed = '';
    out.on('data', (chunk: Buffer) => (printed += chunk.toString()));
    const config = validateConfig({ store: { kind: 'memory' }, callout: { helo: 'verifier.callout.test' } });
    const status = await runVerify([], { json: false, file: path, concurrency: 2 }, config, out);
    const lines = printed.split('\n').filter((l) => l !== '');
    assert.equal(lines.length, 2);
    assert.match(lines[0]!, new RegExp(`^"?not an address"?: invalid \\(syntax\\) - .* \\(${path} line 4\\)$`));
    assert.match(lines[1]!, new RegExp(`^a@b@c: invalid \\(syntax\\) - .* \\(${path} line 6\\)$`));
    assert.equal(status, 1);
  });

  it('name the line of the list, not of the addresses given beside it, and only for an invalid verdict', async () => {
    const path = join(dir, 'beside-arguments.txt');
    writeFileSync(path, 'alice@x.test\na@b@c\n');
    const out = new PassThrough();
    let printed = '';
    out.on('data', (chunk: Buffer) => (printed += chunk.toString()));
    // A DNS server that is not there: alice@x.test is unknown, a verdict its line is not added to.
    const config = validateConfig({ store: { kind: 'memory' }, dns: { servers: ['127.0.0.1:9'], timeout: '200ms', tries: 1 }, callout: { helo: 'verifier.callout.test' } });
    const status = await runVerify(['not an address'], { json: false, file: path, concurrency: 2 }, config, out);
    const lines = printed.split('\n').filter((l) => l !== '');
    assert.equal(lines.length, 3, printed);
    assert.match(lines[0]!, /^"?not an address"?: invalid \(syntax\) - /);
    assert.ok(!lines[0]!.includes(path), `an address of the command line is on no line of the list: ${lines[0]!}`);
    assert.match(lines[1]!, /^alice@x\.test: unknown \(dns-tempfail\) - /);
    assert.ok(!lines[1]!.includes(path), `no line number after a verdict other than invalid: ${lines[1]!}`);
    assert.match(lines[2]!, new RegExp(`^a@b@c: invalid \\(syntax\\) - .* \\(${path} line 2\\)$`));
    assert.equal(status, 1);
  });
});

describe('a line with a byte that is not UTF-8', () => {
  it('is invalid (syntax), naming the byte and its line, and no other mailbox is verified in its place', async () => {
    const path = join(dir, 'not-utf8.txt');
    writeFileSync(path, Buffer.concat([Buffer.from('# list\nbob'), Buffer.from([0xff]), Buffer.from('@x.test\n')]));
    const out = new PassThrough();
    let printed = '';
    out.on('data', (chunk: Buffer) => (printed += chunk.toString()));
    // A DNS server that is not there: were the address verified, it would be unknown, not invalid.
    const config = validateConfig({ store: { kind: 'memory' }, dns: { servers: ['127.0.0.1:9'], timeout: '200ms', tries: 1 }, callout: { helo: 'verifier.callout.test' } });
    const status = await runVerify([], { json: false, file: path, concurrency: 1 }, config, out);
    assert.match(printed, new RegExp(`: invalid \\(syntax\\) - local part holds U\\+FFFD, the mark of bytes that were not UTF-8 at 0 \\(${path} line 2\\)\n$`));
    assert.equal(status, 1);
  });
});

describe('a list without addresses', () => {
  it('says the list has none, where it told someone who gave --file LIST to give one', async () => {
    const path = join(dir, 'only-comments.txt');
    writeFileSync(path, '# exported 2024-01-01\n\n');
    await assert.rejects(runVerify([], { json: false, file: path, concurrency: 1 }, defaultConfig()), (err: unknown) => err instanceof UsageError && err.message === `--file ${path}: no address in it (blank lines and lines starting with # are skipped)`);
    await assert.rejects(runVerify([], { json: false, concurrency: 1 }, defaultConfig()), (err: unknown) => err instanceof UsageError && err.message === 'verify: give at least one ADDRESS or --file LIST');
    // The flag first, as every problem with a flag's file reads (it was "verify: --file X: no address in it" beside "--file X: cannot read").
    const missing = join(dir, 'no-such-list.txt');
    await assert.rejects(runVerify([], { json: false, file: missing, concurrency: 1 }, defaultConfig()), (err: unknown) => err instanceof UsageError && err.message.startsWith(`--file ${missing}: cannot read`));
  });
});

describe('address lists fuzzed', () => {
  it('csvFields reads back any fields written as RFC 4180 quoted fields', () => {
    fc.assert(
      fc.property(fc.array(fc.string({ maxLength: 20 }).filter((f) => !/[\r\n]/.test(f)), { minLength: 1, maxLength: 6 }), (fields) => {
        const line = fields.map((f) => `"${f.replace(/"/g, '""')}"`).join(',');
        assert.deepEqual(csvFields(line), fields.map((f) => f.trim()));
      }),
      { numRuns: 500 },
    );
    fc.assert(fc.property(fc.string({ maxLength: 200 }), (line) => assert.ok(csvFields(line).every((f) => typeof f === 'string'), 'csvFields(line).every((f) => typeof f === \'string\')')), { numRuns: 500 });
  });

  it('reads a file of any text and a line of quotes and commas in linear time', () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(fc.string({ maxLength: 40 }), fc.constantFrom('email,name', '"a,b"@x.example', '"', '""', ',')), { maxLength: 20 }), (lines) => {
        const file = join(dir, 'fuzz.txt');
        writeFileSync(file, lines.join('\n'));
        assert.ok(readAddressList(file).every((a) => typeof a.address === 'string' && Number.isInteger(a.line)), 'readAddressList(file).every((a) => typeof a.address === \'string\' && Number.isInteger(a.line))');
      }),
      { numRuns: 100 },
    );
    const file = join(dir, 'long.txt');
    writeFileSync(file, `"${'\\"'.repeat(200_000)}@x\n${'"",'.repeat(200_000)}\n`);
    // Generous bound against a quadratic scan, not a speed claim.
    assert.ok(elapsedMs(() => readAddressList(file)) < 1000, 'elapsedMs(() => readAddressList(file)) < 1000');
  });
});
