import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { confirmedOrganisation, looksDynamic, organisationalDomain } from '../../../src/checks/greylist/identity.js';
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

  it('takes the smallest organisation of several confirmed names, in any order, passing over dynamic ones', () => {
    const names = ['mail.zulu.example', 'dyn-89-123-45-67.aaa-isp.example', 'out.alpha.example', 'co.uk'];
    for (const order of [names, [...names].reverse(), [names[2]!, names[0]!, names[3]!, names[1]!]]) {
      assert.equal(confirmedOrganisation(order, '89.123.45.67'), 'alpha.example', order.join(' '));
    }
    // Code points, not UTF-16 units: U+FF5A sorts before U+1F600, whose surrogates come first.
    assert.equal(confirmedOrganisation(['a.\u{1f600}.example', 'a.\uff5a.example'], '192.0.2.1'), organisationalDomain('a.\uff5a.example'));
    assert.equal(confirmedOrganisation(['dyn-89-123-45-67.isp.example', 'co.uk'], '89.123.45.67'), undefined);
    assert.equal(confirmedOrganisation([], '89.123.45.67'), undefined);
  });

  it('refuses names that embed the address, with or without leading zeros, or name an access network', () => {
    assert.equal(looksDynamic('host-89-123-45-67.provider.example', '89.123.45.67'), true);
    assert.equal(looksDynamic('host-089-123-045-067.provider.example', '89.123.45.67'), true);
    assert.equal(looksDynamic('67.45.123.89.static.provider.example', '89.123.45.67'), true);
    assert.equal(looksDynamic('597b2d43.provider.example', '89.123.45.67'), true, 'as eight hex digits');
    assert.equal(looksDynamic('h1501244739.provider.example', '89.123.45.67'), true, 'as one decimal number');
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

// PTR names of the sender pools that retry from other addresses (as their published headers
// show them; the address is one of the name's own or one of the pool's). Each must be keyed by
// its organisation, none taken for an access network.
describe('greylist identity of real sender pools', () => {
  const pools: Array<[string, string, string]> = [
    ['a8-30.smtp-out.amazonses.com', '54.240.8.30', 'amazonses.com'],
    ['a27-12.smtp-out.us-west-2.amazonses.com', '54.240.27.12', 'amazonses.com'],
    ['e226-55.smtp-out.us-east-2.amazonses.com', '23.251.226.55', 'amazonses.com'],
    ['mail-wr1-f54.google.com', '209.85.221.54', 'google.com'],
    ['mail-ed1-x52f.google.com', '2a00:1450:4864:20::52f', 'google.com'],
    ['mail-yb1-xb2f.google.com', '2607:f8b0:4864:20::b2f', 'google.com'],
    ['mail-am6eur05on2070.outbound.protection.outlook.com', '40.107.22.70', 'outlook.com'],
    ['mail-eopbgr70070.outbound.protection.outlook.com', '40.107.7.70', 'outlook.com'],
    ['mail-dm6nam10on2057.outbound.protection.outlook.com', '40.107.93.57', 'outlook.com'],
    ['mail-oln040092066050.outbound.protection.outlook.com', '40.92.66.50', 'outlook.com'],
    ['mail-db3eur04on0701.outbound.protection.outlook.com', '2a01:111:f400:fe0c::701', 'outlook.com'],
    ['us-smtp-delivery-1.mimecast.com', '205.139.110.120', 'mimecast.com'],
    ['eu-smtp-delivery-151.mimecast.com', '185.58.85.151', 'mimecast.com'],
    ['za-smtp-delivery-1.mimecast.co.za', '41.74.201.1', 'mimecast.co.za'],
    ['o1678.shared.sendgrid.net', '167.89.101.2', 'sendgrid.net'],
    ['mail194.atl221.mcdlv.net', '198.2.136.194', 'mcdlv.net'],
    ['mail187-10.suw11.mandrillapp.com', '198.2.187.10', 'mandrillapp.com'],
    ['m228-12.mailgun.net', '159.135.228.12', 'mailgun.net'],
    ['mta-224-33.sparkpostmail.com', '192.174.82.33', 'sparkpostmail.com'],
    ['smtp13-ia4-sp3.mta.salesforce.com', '13.110.74.206', 'salesforce.com'],
    ['sonic301-20.consmr.mail.bf2.yahoo.com', '74.6.129.83', 'yahoo.com'],
    ['mx0a-00123401.pphosted.com', '148.163.156.1', 'pphosted.com'],
    ['mail1.bemta25.messagelabs.com', '195.245.230.1', 'messagelabs.com'],
    ['outbound-ip191b.ess.barracuda.com', '209.222.82.191', 'barracuda.com'],
    ['outbyoip18.pod19.use1.zdsys.com', '192.161.151.18', 'zdsys.com'],
    ['out-18.smtp.github.com', '192.30.252.201', 'github.com'],
  ];
  for (const [name, address, organisation] of pools) {
    it(`${name} [${address}] is ${organisation}`, () => {
      assert.equal(looksDynamic(name, address), false);
      assert.equal(organisationalDomain(name), organisation);
    });
  }

  it('keys a pool whose names embed their address by its network, as postgrey does', () => {
    assert.equal(looksDynamic('66-220-155-178.mail-mail.facebook.com', '66.220.155.178'), true);
  });
});

describe('greylist identity fuzzed', () => {
  it('never throws on any name (a PTR answer) and address', () => {
    const name = fc.oneof(fc.string({ maxLength: 80 }), fc.domain(), fc.stringMatching(/^[0-9a-f.-]{0,60}$/));
    fc.assert(
      fc.property(name, fc.oneof(fc.ipV4(), fc.ipV6(), fc.string({ maxLength: 20 })), (n, ip) => {
        assert.equal(typeof looksDynamic(n, ip), 'boolean');
        const org = organisationalDomain(n);
        assert.ok(org === undefined || typeof org === 'string', 'org === undefined || typeof org === \'string\'');
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
