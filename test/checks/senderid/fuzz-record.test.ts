// Property tests of Sender ID record selection (RFC 4406 §3.4) and PRA header splitting beyond
// senderid.test.ts: any TXT set gives none, permerror or the one record covering the scope,
// whose terms are what follows its version; split header fields stay within the limits.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { PRA_LIMITS, purportedResponsibleAddress, selectSenderIdRecord, splitHeaderFields } from '../../../src/checks/senderid/index.js';
import { elapsedMs } from '../../support/fuzz.js';

const record = fc.oneof(
  fc.tuple(fc.constantFrom('spf2.0/', 'SPF2.0/', 'spf2.0', 'v=spf1', 'V=SPF1', 'spf2.0/pra'), fc.constantFrom('', 'pra', 'mfrom', 'mfrom,pra', 'pra,', ',', 'prax', ' '), fc.constantFrom('', ' -all', ' ip4:192.0.2.1', '-all')).map((parts) => parts.join('')),
  fc.string({ maxLength: 30 }),
);

describe('selectSenderIdRecord fuzzed', () => {
  it('gives none, permerror, or one record that covers the scope, with the terms after its version', () => {
    fc.assert(
      fc.property(fc.array(record, { maxLength: 5 }), fc.constantFrom('pra' as const, 'mfrom' as const), (txt, scope) => {
        const selection = selectSenderIdRecord(scope)(txt);
        if (selection.kind !== 'record') return;
        assert.ok(txt.includes(selection.record), 'txt.includes(selection.record)');
        assert.ok(selection.record.endsWith(selection.terms), 'selection.record.endsWith(selection.terms)');
        assert.ok(selection.terms === '' || selection.terms.startsWith(' '), JSON.stringify(selection));
        const version = selection.record.slice(0, selection.record.length - selection.terms.length).toLowerCase();
        if (version === 'v=spf1') assert.ok(!txt.some((r) => /^spf2\.0\//i.test(r)), 'v=spf1 only when no spf2.0 record exists');
        else assert.ok(version.slice('spf2.0/'.length).split(',').includes(scope), version);
      }),
      { numRuns: 1000 },
    );
  });
});

describe('splitHeaderFields fuzzed', () => {
  it('gives fields with a name free of white space and colons, within PRA_LIMITS', () => {
    const line = fc.oneof(fc.constantFrom('From: a@b.example', ' folded', '\tfolded', 'No colon', ': empty name', 'Sp ace: x', 'Sender \t: s@b.example', ''), fc.string({ unit: 'binary', maxLength: 20 }));
    fc.assert(
      fc.property(fc.array(line, { maxLength: 30 }), fc.constantFrom('\n', '\r\n'), (lines, eol) => {
        for (const field of splitHeaderFields(lines.join(eol))) {
          assert.match(field.name, /^[\x21-\x39\x3b-\x7e]+$/);
          assert.equal(field.value, field.value.trim());
        }
      }),
      { numRuns: 500 },
    );
  });

  it('reads only the first headerBytes and answers a block of many fields at once', () => {
    const folded = `From: a@b.example\r\n${' x\r\n'.repeat(PRA_LIMITS.headerBytes / 4)}`;
    const many = 'X: y\r\n'.repeat(PRA_LIMITS.fields + 10);
    const ms = elapsedMs(() => {
      const [field] = splitHeaderFields(`${folded}Sender: late@b.example\r\n`);
      assert.ok(field !== undefined && field.value.length <= PRA_LIMITS.headerBytes, 'field !== undefined && field.value.length <= PRA_LIMITS.headerBytes');
      assert.equal(purportedResponsibleAddress(splitHeaderFields(many)).kind, 'none');
    });
    assert.ok(ms < 2000, `${ms.toFixed(0)} ms`);
    assert.equal(splitHeaderFields(`${folded}Sender: late@b.example\r\n`).length, 1, 'a field past headerBytes is not read');
  });
});
