// The two readers the rewriting schemes share, fuzzed: embeddableAddress (what SRS, BATV and
// VERP write into a local part, from any sender an SMTP client gives) and the domain lists of
// postsrsd and the batv stage (unmatchableDomainEntry, domainMatcher: configuration and flags).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { asciiLower, normaliseDomain } from '../../src/address/index.js';
import { CONTROL_CHARACTER } from '../../src/core/text.js';
import { domainMatcher, unmatchableDomainEntry } from '../../src/rewrite/domains.js';
import { embeddableAddress } from '../../src/rewrite/embed.js';
import { elapsedMs } from '../support/fuzz.js';

/** Addresses as senders write them, and pieces that trip the reader. */
const piece = fc.oneof(
  fc.constantFrom('a', 'Bob', '.', '@', '"', '<', '>', '[', ']', ':', ';', ',', '\\', '(', ')', ' ', '\t', '\u00a0', '\u2028', '\u0085', '\0', '\x7f', '=', '+', '-', 'é', '\u{1F600}', 'example.org', '[192.0.2.1]', '[IPv6:2001:db8::1]'),
  fc.string({ maxLength: 6 }),
);
const address = fc.oneof(fc.array(piece, { maxLength: 10 }).map((pieces) => pieces.join('')), fc.emailAddress(), fc.string({ unit: 'binary', maxLength: 30 }));

describe('embeddableAddress fuzzed', () => {
  it('gives back the local part and domain the address is made of, free of what the written address could not hold, or a problem', () => {
    fc.assert(
      fc.property(address, fc.boolean(), (text, domainInLocalPart) => {
        const parts = embeddableAddress(text, { domainInLocalPart });
        if (!parts.ok) {
          assert.ok(parts.problem.length > 0 && !CONTROL_CHARACTER.test(parts.problem), `problem ${JSON.stringify(parts.problem)}`);
          return;
        }
        assert.equal(`${parts.local}@${parts.domain}`, text);
        assert.ok(parts.local !== '' && parts.domain !== '', `empty part in ${JSON.stringify(text)}`);
        assert.ok(!/[@"<>]/.test(text) || text.split('@').length === 2, `a second '@' in ${JSON.stringify(text)}`);
        assert.ok(!/["<>]/.test(text) && !CONTROL_CHARACTER.test(text), `${JSON.stringify(text)} taken`);
        if (domainInLocalPart) assert.ok(!/[[\]:\s()<>;\\,]/.test(parts.domain), `domain ${JSON.stringify(parts.domain)} taken into a local part`);
      }),
      { numRuns: 1000 },
    );
  });

  it('answers an address far over any limit in linear time, whatever its shape', () => {
    const n = 1_000_000;
    for (const text of ['@'.repeat(n), `a@${'['.repeat(n)}`, `a@${'a.'.repeat(n / 2)}`, `${'a'.repeat(n)}@b`, `a@${' '.repeat(n)}`]) {
      const ms = elapsedMs(() => embeddableAddress(text, { domainInLocalPart: true }));
      assert.ok(ms < 200, `${ms.toFixed(0)} ms for ${JSON.stringify(text.slice(0, 10))}...`);
    }
  });
});

describe('domain lists fuzzed', () => {
  const entry = fc.oneof(
    fc.constantFrom('', ' ', '.', '..', 'ｅxample.org', 'bu\u0308cher.example', 'example.org', '.example.org', 'Example.ORG', ' example.org ', 'example.org.', '@example.org', '*.example.org', 'bücher.example', '.BÜCHER.example', 'xn--bcher-kva.example', '_srv.example', 'a..b', `${'l'.repeat(64)}.example`),
    fc.domain().map((d) => (d.length % 2 === 0 ? `.${d}` : d)),
    fc.string({ maxLength: 20 }),
  );

  it('an entry it accepts matches the domain it names (or, with a leading dot, the subdomains only) in any ASCII case, in the U-labels and the A-labels an address is read into', () => {
    fc.assert(
      fc.property(entry, fc.boolean(), (text, upper) => {
        if (unmatchableDomainEntry(text) !== undefined) return;
        const written = text.trim();
        const matches = domainMatcher([text]);
        const cased = (domain: string) => (upper ? domain.replace(/[a-z]/g, (c) => c.toUpperCase()) : domain);
        const forms = normaliseDomain(written.replace(/^\./, ''));
        assert.ok(forms.ok, `${JSON.stringify(text)} accepted, but names no domain`);
        const sub = written.startsWith('.') ? 'mx.' : '';
        // The batv stage asks for both forms of a recipient's domain; one of them is to match.
        assert.ok([forms.value.unicode, forms.value.ascii].some((form) => matches(`${sub}${form}`)), `${JSON.stringify(text)} matches ${sub}${forms.value.unicode} or ${sub}${forms.value.ascii}`);
        // An ASCII entry names itself; "BÜCHER.example" names bücher.example, as a recipient's domain is read into.
        const name = /^[\x20-\x7e]*$/.test(written) ? written.replace(/^\./, '') : forms.value.unicode;
        if (written.startsWith('.')) {
          assert.ok(matches(cased(`mx.${name}`)), `${JSON.stringify(text)} matches mx.${name}`);
          assert.ok(!matches(name), `${JSON.stringify(text)} does not match ${name} itself`);
        } else {
          assert.ok(matches(cased(name)), `${JSON.stringify(text)} matches ${name}`);
          assert.ok(!matches(`mx.${name}`), `${JSON.stringify(text)} does not match mx.${name}`);
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('an entry it refuses matches no domain an address is read into', () => {
    fc.assert(
      fc.property(entry, fc.domain(), (text, other) => {
        if (unmatchableDomainEntry(text) === undefined) return;
        const matches = domainMatcher([text]);
        const near = text.trim().replace(/^\.+/, '').replace(/\.+$/, '');
        for (const domain of [other, near, `mx.${near}`, asciiLower(near)]) {
          const read = normaliseDomain(domain);
          if (!read.ok) continue;
          for (const form of [read.value.unicode, read.value.ascii]) assert.ok(!matches(form), `refused ${JSON.stringify(text)} matches ${form}`);
        }
      }),
      { numRuns: 1000 },
    );
  });
});

describe('domain entries in other characters than an address is read into', () => {
  it('reads them as the domain they name, as UTS #46 reads it (regression: refused after an upgrade, where they had been taken)', () => {
    for (const entry of ['BÜCHER.example', '.BÜCHER.example', 'bu\u0308cher.example', '\uff45xample.org', 'bücher.example', 'Bücher.EXAMPLE', 'XN--BCHER-KVA.example', '.bücher.example']) {
      assert.equal(unmatchableDomainEntry(entry), undefined, entry);
    }
    const matches = domainMatcher(['BÜCHER.example', '.BU\u0308CHER.test', ' \uff45xample.org ']);
    for (const domain of ['bücher.example', 'BüCHER.EXAMPLE', 'mx.bücher.test', 'example.org']) assert.ok(matches(domain), `matches ${domain}`);
    // Compared with what a domain is read into: the entry's form, not the entry as written.
    for (const domain of ['BÜCHER.example', 'bücher.test', 'mx.example.org', 'bu\u0308cher.example']) assert.ok(!matches(domain), `does not match ${domain}`);
  });
});
