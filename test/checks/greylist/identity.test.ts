import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { looksDynamic, organisationalDomain } from '../../../src/checks/greylist/identity.js';
import fc from 'fast-check';
import { elapsedMs } from '../../support/fuzz.js';

describe('greylist identity: a confirmed name as the client identity', () => {
  it('takes the registrable domain, with the private suffixes of hosters as suffixes', () => {
    assert.equal(organisationalDomain('mail-db5eur01.outbound.protection.outlook.com'), 'outlook.com');
    assert.equal(organisationalDomain('a8-30.smtp-out.amazonses.com'), 'amazonses.com');
    assert.equal(organisationalDomain('mx1.example.co.uk.'), 'example.co.uk');
    // Customers of one hoster are not one organisation.
    assert.equal(organisationalDomain('li123-45.members.linode.com'), 'li123-45.members.linode.com');
    assert.equal(organisationalDomain('myvm.cloudapp.net'), 'myvm.cloudapp.net');
    assert.equal(organisationalDomain('co.uk'), undefined);
  });

  it('refuses names that embed the address, with or without leading zeros, or name an access network', () => {
    assert.equal(looksDynamic('host-89-123-45-67.provider.example', '89.123.45.67'), true);
    assert.equal(looksDynamic('host-089-123-045-067.provider.example', '89.123.45.67'), true);
    assert.equal(looksDynamic('67.45.123.89.static.provider.example', '89.123.45.67'), true);
    assert.equal(looksDynamic('dsl-pool7.provider.example', '89.123.45.67'), true);
    assert.equal(looksDynamic('mail.provider.example', '89.123.45.67'), false);
    assert.equal(looksDynamic('mx10.provider.example', '10.0.0.7'), false, 'a number that is not the address');
  });

  it('reads an IPv4-mapped client address as the IPv4 address it names', () => {
    assert.equal(looksDynamic('host-89-123-45-67.provider.example', '::ffff:89.123.45.67'), true);
    assert.equal(looksDynamic('67.45.123.89.static.provider.example', '::FFFF:89.123.45.67'), true);
    assert.equal(looksDynamic('mail.provider.example', '::ffff:89.123.45.67'), false);
  });

  it('refuses names that embed an IPv6 address as a nibble-reversed (ip6.arpa) or unseparated hex string', () => {
    assert.equal(looksDynamic('5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.v6.isp.example', '2001:db8:1::5'), true);
    assert.equal(looksDynamic('20010db8000100000000000000000005.v6.isp.example', '2001:db8:1::5'), true);
    assert.equal(looksDynamic('host-2001-db8-1-0-0-0-0-5.isp.example', '2001:db8:1::5'), true);
    assert.equal(looksDynamic('mail.isp.example', '2001:db8:1::5'), false);
    assert.equal(looksDynamic('mx25.isp.example', '2001:db8:1::25'), false);
  });
});

describe('greylist identity fuzzed', () => {
  it('never throws on any name (a PTR answer) and address', () => {
    const name = fc.oneof(fc.string({ maxLength: 80 }), fc.domain(), fc.stringMatching(/^[0-9a-f.-]{0,60}$/));
    fc.assert(
      fc.property(name, fc.oneof(fc.ipV4(), fc.ipV6(), fc.string({ maxLength: 20 })), (n, ip) => {
        assert.equal(typeof looksDynamic(n, ip), 'boolean');
        const org = organisationalDomain(n);
        assert.ok(org === undefined || typeof org === 'string');
      }),
      { numRuns: 500 },
    );
  });

  it('answers a name of the DNS limit of any shape in linear time', () => {
    for (const n of ['a1-'.repeat(85), '0-'.repeat(126), 'dyn'.repeat(85), `${'0123.'.repeat(50)}example`, '.'.repeat(253)]) {
      // Generous bound against a quadratic scan, not a speed claim.
      assert.ok(elapsedMs(() => (looksDynamic(n, '192.0.2.1'), organisationalDomain(n))) < 100, n.slice(0, 12));
    }
  });
});
