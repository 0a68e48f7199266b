// `callout verify --file`: address lists as people export them, one per line or CSV.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { csvFields, readAddressList } from '../../src/cli/verify.js';

const dir = mkdtempSync(join(tmpdir(), 'callout-verify-list-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function list(text: string): string[] {
  const path = join(dir, 'list');
  writeFileSync(path, text);
  return readAddressList(path);
}

describe('address lists', () => {
  it('reads quoted CSV fields as RFC 4180 writes them: commas inside quotes, "" for a quote', () => {
    assert.deepEqual(csvFields('"q,r", b@y.test ,"say ""hi"""'), ['q,r', 'b@y.test', 'say "hi"']);
    assert.deepEqual(list('name,email\nx,"a@x.test"\n"q,r",b@y.test\n"Smith, J","j@z.test"\n'), ['a@x.test', 'b@y.test', 'j@z.test']);
    assert.deepEqual(list('"Name","E-mail"\n"Alice","alice@x.test"\n'), ['alice@x.test']);
  });

  it('takes a line without a comma or quote, or an address with a quoted local part, as it is', () => {
    assert.deepEqual(list('alice@x.test\n"a b"@x.test\n"a,b"@x.test\n"a\\"b"@example.org\n# comment\n\n'), ['alice@x.test', '"a b"@x.test', '"a,b"@x.test', '"a\\"b"@example.org']);
    // With a header every row is CSV, even one that starts with a quoted local part.
    assert.deepEqual(list('name,email\n"x"@y.org,second@example.org\n'), ['second@example.org']);
  });
});
