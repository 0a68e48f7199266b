// Property tests of SPF macro-strings (RFC 7208 §7) beyond record.test.ts's "never throws":
// parsing any text gives tokens or a problem, literal text reads back as written, expansion
// stays within the length it is given, targetName always gives a usable DNS name or a problem,
// and the largest record a domain may publish expands and is cut in linear time.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { expandDomainSpec, expandMacroString, MAX_NAME_LENGTH, parseDomainSpec, parseMacroString, targetName, type MacroContext } from '../../../src/checks/spf/macro.js';
import { MAX_RECORD_LENGTH, parseRecordTerms } from '../../../src/checks/spf/record.js';
import { elapsedMs } from '../../support/fuzz.js';

const macroish = fc.oneof(
  fc.string({ unit: fc.constantFrom(...'%{}slodiphvcrtSLR0123456789.-+,/_= a'.split('')), maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 30 }),
);
const context = fc.record({
  sender: fc.string({ maxLength: 60 }),
  localPart: fc.string({ maxLength: 20 }),
  senderDomain: fc.domain(),
  domain: fc.domain(),
  ipDotted: fc.ipV4(),
  ipReadable: fc.ipV4(),
  ipVersion: fc.constantFrom('in-addr' as const, 'ip6' as const),
  helo: fc.string({ unit: 'binary', maxLength: 60 }),
  receiver: fc.domain(),
  nowSeconds: fc.nat(),
});

describe('SPF macro-strings fuzzed', () => {
  it('parse any text into tokens a record may hold, or a problem', () => {
    fc.assert(
      fc.property(macroish, fc.boolean(), (text, explanation) => {
        const parsed = parseMacroString(text, { explanation });
        parseDomainSpec(text);
        if (!parsed.ok) return;
        for (const token of parsed.value) {
          // A space only from %_ outside explanation text, which may hold spaces as they are.
          if (token.kind === 'literal') assert.match(token.text, /^[\x20-\x7e]+$/);
          else {
            assert.ok(explanation || !['c', 'r', 't'].includes(token.letter), token.letter);
            assert.ok(token.parts === undefined || token.parts >= 1, `parts ${String(token.parts)}`);
            assert.match(token.delimiters, /^[.\-+,/_=]*$/);
          }
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('read literal text and the escapes %%, %_ and %- back as written', () => {
    const literal = fc.string({ unit: fc.constantFrom(...'abc.-_=+/0'.split('')), minLength: 1, maxLength: 20 });
    fc.assert(
      fc.property(literal, literal, (a, b) => {
        const parsed = parseMacroString(`${a}%%${b}%_%-`, { explanation: false });
        assert.deepEqual(parsed, { ok: true, value: [{ kind: 'literal', text: `${a}%${b} %20` }] });
      }),
      { numRuns: 200 },
    );
  });

  it('expand within the length they are given, and targetName gives a usable name or a problem', () => {
    fc.assert(
      fc.property(macroish, context, fc.nat(300), (text, values, maxLength) => {
        const parsed = parseMacroString(text, { explanation: true });
        if (!parsed.ok) return;
        assert.ok(expandMacroString(parsed.value, values as MacroContext, maxLength).length <= maxLength, 'expandMacroString(parsed.value, values as MacroContext, maxLength).length <= maxLength');
        const expanded = expandMacroString(parsed.value, values as MacroContext);
        const target = targetName(expanded);
        if (!target.ok) return;
        assert.ok(target.name.length >= 1 && target.name.length <= MAX_NAME_LENGTH, 'target.name.length >= 1 && target.name.length <= MAX_NAME_LENGTH');
        assert.ok(target.name.split('.').every((label) => label.length >= 1 && label.length <= 63), target.name);
        assert.ok(expanded.replace(/\.$/, '').endsWith(target.name), 'expanded.replace(/\\.$/, \'\').endsWith(target.name)');
      }),
      { numRuns: 1000 },
    );
  });

  it('expand a domain-spec to the name the whole expansion is cut to, keeping no more than that cut reads', () => {
    // Mostly with an ending a domain-spec needs (a macro or a top label): without one, 25 texts
    // in 2,000 were domain-specs and the property checked next to nothing.
    const ending = fc.constantFrom('', '.example', '%{d}', '%{s}');
    const repeated = fc.tuple(macroish, fc.integer({ min: 1, max: 60 }), ending).map(([text, times, end]) => text.repeat(times) + end);
    let specs = 0;
    fc.assert(
      fc.property(repeated, context, (text, values) => {
        const parsed = parseDomainSpec(text);
        if (!parsed.ok) return;
        specs += 1;
        const bounded = expandDomainSpec(parsed.value, values as MacroContext);
        assert.ok(bounded.length <= MAX_NAME_LENGTH + 2, 'bounded.length <= MAX_NAME_LENGTH + 2');
        const whole = targetName(expandMacroString(parsed.value, values as MacroContext));
        const cut = targetName(bounded);
        assert.equal(cut.ok, whole.ok);
        if (cut.ok && whole.ok) assert.equal(cut.name, whole.name);
      }),
      { numRuns: 2000 },
    );
    assert.ok(specs >= 200, `only ${specs} of 2,000 texts were domain-specs`);
  });

  it('expand and cut the largest record full of macros in linear time', () => {
    // Each %{s} gives a 320-character sender of 160 labels: about 330,000 characters and 165,000 dots.
    const values: MacroContext = { sender: `${'a.'.repeat(158)}@example.org`, localPart: 'a', senderDomain: 'example.org', domain: 'example.org', ipDotted: '192.0.2.1', ipReadable: '192.0.2.1', ipVersion: 'in-addr', helo: 'x.'.repeat(500), receiver: 'r.example', nowSeconds: 0 };
    for (const macro of ['%{s}', '%{h}', '%{s9r}', '%{h1r-.}', '%{S}']) {
      const spec = macro.repeat(Math.floor((MAX_RECORD_LENGTH - 20) / macro.length));
      const record = parseRecordTerms(` a:${spec}`);
      assert.ok(record.ok, macro);
      const parsed = parseDomainSpec(spec);
      assert.ok(parsed.ok, 'parsed.ok');
      const ms = elapsedMs(() => {
        const expanded = expandMacroString(parsed.value, values);
        const target = targetName(expanded);
        assert.ok(!target.ok || target.name.length <= MAX_NAME_LENGTH, '!target.ok || target.name.length <= MAX_NAME_LENGTH');
      });
      assert.ok(ms < 1000, `${ms.toFixed(0)} ms for ${macro}`);
    }
  });

  it('parse a record of the maximum length in linear time, whatever its shape', () => {
    const fill = (unit: string, prefix = ' ') => prefix + unit.repeat(Math.floor((MAX_RECORD_LENGTH - prefix.length) / unit.length));
    for (const terms of [fill('/1', ' a:x'), fill('//1', ' mx:x'), fill('%{', ' exists:'), fill('%{s', ' include:'), fill('1', ' a/'), fill('x=', ' '), fill('a.', ' ptr:'), fill(' '), fill('ip4:1.2.3.4/3 ')]) {
      const ms = elapsedMs(() => {
        for (let i = 0; i < 10; i++) parseRecordTerms(terms);
      });
      assert.ok(ms < 1000, `${ms.toFixed(0)} ms for 10 × ${JSON.stringify(terms.slice(0, 20))}...`);
    }
    assert.equal(parseRecordTerms(' '.repeat(MAX_RECORD_LENGTH + 1)).ok, false);
  });
});
