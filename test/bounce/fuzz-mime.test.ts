// Property tests of the MIME reader under the bounce parser: any text gives a part tree within
// MIME_LIMITS, Content-Type parameters and encoded words read back what was written, and the
// shapes that make a regular expression backtrack stay linear.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { parseDeliveryStatus, DSN_LIMITS } from '../../src/bounce/dsn.js';
import { decodeWords, MIME_LIMITS, parseContentType, parseHeaderBlock, parseMime, walkParts, type MimePart } from '../../src/bounce/mime.js';
import { elapsedMs } from '../support/fuzz.js';

const piece = fc.oneof(
  fc.constantFrom(
    'Content-Type: multipart/mixed; boundary=b',
    'Content-Type: multipart/report; report-type=delivery-status; boundary="b"',
    'Content-Type: message/rfc822',
    'Content-Type: text/rfc822-headers',
    'Content-Type: message/delivery-status',
    'Content-Type: text/plain; charset="iso-8859-1"',
    'Content-Type: text/plain; charset=nonsense',
    'Content-Transfer-Encoding: base64',
    'Content-Transfer-Encoding: quoted-printable',
    '--b',
    '--b--',
    '',
    ' folded',
    '\tfolded',
    'Subject: =?UTF-8?B?w6k=?= =?ISO-8859-1?Q?=E9_x?=',
    'Final-Recipient: rfc822; a@b.example',
    'Status: 5.1.1',
    '=41=\r',
    'w6k=',
  ),
  fc.string({ maxLength: 60 }),
  fc.string({ unit: 'binary', maxLength: 30 }),
);
const message = fc.tuple(fc.array(piece, { maxLength: 40 }), fc.constantFrom('\n', '\r\n')).map(([lines, eol]) => lines.join(eol));

/** Elapsed milliseconds of f(). */

function checkPart(part: MimePart, depth: number): void {
  assert.equal(part.depth, depth);
  assert.ok(part.depth < MIME_LIMITS.depth, `depth ${part.depth}`);
  assert.ok(part.headers.length <= MIME_LIMITS.headerFields, 'part.headers.length <= MIME_LIMITS.headerFields');
  for (const field of part.headers) assert.equal(field.name, field.name.toLowerCase());
  assert.match(part.contentType.mediaType, /^[a-z0-9!#$&^_.+-]+\/[a-z0-9!#$&^_.+-]+$/);
  for (const child of part.parts) checkPart(child, depth + 1);
  if (part.message) checkPart(part.message, depth + 1);
}

describe('parseMime fuzzed', () => {
  it('gives a part tree within MIME_LIMITS for any text', () => {
    fc.assert(
      fc.property(message, (text) => {
        const top = parseMime(text);
        checkPart(top, 0);
        assert.ok([...walkParts(top)].length <= MIME_LIMITS.parts, '[...walkParts(top)].length <= MIME_LIMITS.parts');
      }),
      { numRuns: 400 },
    );
  });

  it('parseHeaderBlock keeps at most headerFields fields, whatever the block', () => {
    const block = fc.array(fc.oneof(fc.constantFrom('a: b', ' c', 'x-y:z', ':', 'no colon'), fc.string({ maxLength: 12 })), { maxLength: 700 });
    fc.assert(
      fc.property(block, (lines) => {
        const fields = parseHeaderBlock(lines.join('\n'));
        assert.ok(fields.length <= MIME_LIMITS.headerFields, 'fields.length <= MIME_LIMITS.headerFields');
        for (const field of fields) assert.equal(field.value, field.value.trim());
      }),
      { numRuns: 100 },
    );
  });
});

describe('parseContentType fuzzed', () => {
  // __proto__ left out: assigning it sets no parameter (params is a plain object), and no MIME parameter has that name.
  const token = fc.stringMatching(/^[a-z0-9!#$&^_.+-]{1,12}$/).filter((name) => name !== '__proto__');
  const value = fc.string({ unit: fc.constantFrom(...'aZ9 ;=\\"()\t-.'), maxLength: 20 });

  it('never throws, and gives text/plain for what is not type/subtype', () => {
    fc.assert(
      fc.property(fc.option(fc.string({ unit: 'binary', maxLength: 80 }), { nil: undefined }), (text) => {
        const parsed = parseContentType(text);
        assert.match(parsed.mediaType, /^[a-z0-9!#$&^_.+-]+\/[a-z0-9!#$&^_.+-]+$/);
      }),
      { numRuns: 1000 },
    );
  });

  it('reads back every parameter written as a token or a quoted string', () => {
    fc.assert(
      fc.property(token, token, fc.uniqueArray(fc.tuple(token, value), { selector: ([name]) => name, maxLength: 5 }), (type, subtype, params) => {
        const text = `${type}/${subtype}${params.map(([name, v]) => `; ${name}="${v.replace(/["\\]/g, '\\$&')}"`).join('')}`;
        const parsed = parseContentType(text);
        assert.equal(parsed.mediaType, `${type}/${subtype}`);
        assert.deepEqual(parsed.params, Object.fromEntries(params.map(([name, v]) => [name, v])));
      }),
      { numRuns: 500 },
    );
  });

  it('stays linear on a long run without "=" and on a long run of white space', () => {
    // Each took 3.5 s at 64 KiB (quadratic) before parameter names could start only where a run starts.
    for (const text of [`text/plain; ${'a'.repeat(64_000)}`, `text/plain;${' '.repeat(64_000)}x`, `text/plain; ${'a\t'.repeat(32_000)}`, `text/plain; ${'"a'.repeat(32_000)}`]) {
      const ms = elapsedMs(() => parseContentType(text));
      assert.ok(ms < 500, `${ms.toFixed(0)} ms for ${JSON.stringify(text.slice(0, 20))}...`);
    }
    const ms = elapsedMs(() => parseMime(`Content-Type: multipart/mixed; ${'b'.repeat(60_000)}\n\nbody`));
    assert.ok(ms < 500, `${ms.toFixed(0)} ms`);
  });
});

describe('decodeWords fuzzed', () => {
  it('never throws and decodes what B and Q encoding wrote', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 80 }), (text) => void decodeWords(text)),
      { numRuns: 1000 },
    );
    const text = fc.string({ unit: fc.constantFrom(...'ab Z9é日?=_'), minLength: 1, maxLength: 20 }).filter((s) => !/^\s|\s$/.test(s));
    fc.assert(
      fc.property(text, (value) => {
        const b64 = `=?UTF-8?B?${Buffer.from(value).toString('base64')}?=`;
        const qp = `=?UTF-8?Q?${[...Buffer.from(value)].map((byte) => `=${byte.toString(16).toUpperCase().padStart(2, '0')}`).join('')}?=`;
        assert.equal(decodeWords(b64), value);
        assert.equal(decodeWords(qp), value);
        assert.equal(decodeWords(`${b64} ${qp}`), value + value);
      }),
      { numRuns: 300 },
    );
  });
});

describe('parseDeliveryStatus fuzzed', () => {
  it('never throws and returns at most DSN_LIMITS.recipients recipients', () => {
    const line = fc.oneof(fc.constantFrom('Final-Recipient: rfc822; a@b.example', 'Original-Recipient: utf-8; \\x{E9}@b.example', 'Action: failed (x', 'Status: 4.0.0', 'Diagnostic-Code: smtp; 550 5.1.1 x', '', '  ', ' indented: x'), fc.string({ maxLength: 30 }));
    fc.assert(
      fc.property(fc.array(line, { maxLength: 40 }), (lines) => {
        const status = parseDeliveryStatus(lines.join('\n'));
        assert.ok(status.recipients.length <= DSN_LIMITS.recipients, 'status.recipients.length <= DSN_LIMITS.recipients');
      }),
      { numRuns: 300 },
    );
    const many = 'Final-Recipient: rfc822; a@b.example\n\n'.repeat(DSN_LIMITS.recipients + 10);
    assert.equal(parseDeliveryStatus(many).recipients.length, DSN_LIMITS.recipients);
  });
});
