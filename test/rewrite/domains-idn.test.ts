// idnDomainMatcher skips UTS #46 for a plain ASCII name without A-labels: its answer must be the
// one the full reading gives, for any entries and any such name.
import assert from 'node:assert/strict';
import { it } from 'node:test';
import fc from 'fast-check';
import { normaliseDomain } from '../../src/address/index.js';
import { domainMatcher, idnDomainMatcher } from '../../src/rewrite/domains.js';

const label = fc.stringMatching(/^[A-Za-z0-9](?:[A-Za-z0-9-]{0,6}[A-Za-z0-9])?$/);
const name = fc.array(label, { minLength: 1, maxLength: 4 }).map((labels) => labels.join('.'));
const entry = fc.tuple(fc.boolean(), name).map(([suffix, domain]) => (suffix ? `.${domain.toLowerCase()}` : domain.toLowerCase()));

it('answers a plain ASCII name as the full IDNA reading does', () => {
  fc.assert(
    fc.property(fc.array(entry, { maxLength: 5 }), name, (entries, domain) => {
      const matches = domainMatcher(entries);
      const forms = normaliseDomain(domain);
      const full = matches(domain) || (forms.ok && (matches(forms.value.ascii) || matches(forms.value.unicode)));
      assert.equal(idnDomainMatcher(entries)(domain), full, `${domain} against ${JSON.stringify(entries)}`);
    }),
    { numRuns: 2000 },
  );
});

it('still reads an A-label or a U-label name in both forms', () => {
  assert.equal(idnDomainMatcher(['bücher.example'])('xn--bcher-kva.example'), true, 'A-label sender, U-label entry');
  assert.equal(idnDomainMatcher(['xn--bcher-kva.example'])('bücher.example'), true, 'U-label sender, A-label entry');
  assert.equal(idnDomainMatcher(['.bücher.example'])('mail.XN--BCHER-KVA.example'), true, 'a subdomain, A-label in capitals');
});
