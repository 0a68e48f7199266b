import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { domainMatcher, unmatchableDomainEntry } from '../../src/rewrite/domains.js';

describe('unmatchableDomainEntry', () => {
  it('refuses the entries domainMatcher can never match, saying why', () => {
    assert.equal(unmatchableDomainEntry(''), 'expected a domain, not an empty entry');
    assert.equal(unmatchableDomainEntry(' . '), 'expected a domain, not an empty entry');
    for (const entry of ['example.org.', '.example.org.', '@example.org', '*.example.org', 'user@example.org', '..example.org', 'exa mple.org']) {
      assert.equal(unmatchableDomainEntry(entry), 'expected a domain such as example.com, or .example.com for its subdomains (no @, no * and no trailing dot)', entry);
    }
  });

  it('accepts what domainMatcher matches: a domain, .domain for its subdomains, surrounding blanks as it trims them', () => {
    for (const [entry, domain] of [['example.org', 'EXAMPLE.org'], ['.example.org', 'mx.example.org'], [' example.org ', 'example.org'], ['bücher.example', 'bücher.example']] as const) {
      assert.equal(unmatchableDomainEntry(entry), undefined, entry);
      assert.ok(domainMatcher([entry])(domain), `${entry} matches ${domain}`);
    }
    // Entries match in any ASCII case, as domains do.
    assert.ok(domainMatcher(['Example.ORG'])('example.org'), 'domainMatcher([\'Example.ORG\'])(\'example.org\')');
    assert.ok(domainMatcher(['.Example.NET'])('mx.EXAMPLE.net'), 'domainMatcher([\'.Example.NET\'])(\'mx.EXAMPLE.net\')');
    // ASCII case only, as C's tolower(): the Kelvin sign (U+212A) folds onto 'k' in Unicode, not here.
    assert.ok(!domainMatcher(['kelvin.example'])('\u212aelvin.example'), '!domainMatcher([\'kelvin.example\'])(\'\\u212aelvin.example\')');
    // The refused ones indeed match nothing that an address carries.
    for (const entry of ['example.org.', '@example.org', '*.example.org']) {
      assert.ok(!['example.org', 'mx.example.org'].some(domainMatcher([entry])), entry);
    }
  });
});
