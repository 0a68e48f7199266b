// checks/client-ip: what the SPF, iprev, greylisting, tarpit and rate-limit stages take the SMTP
// client's address to be, and which networks and DNS answers hold it.
import assert from 'node:assert/strict';
import { isIP } from 'node:net';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { addressHolds, clientAddress, countingKey, networkHolds, unusableClientAddress } from '../../src/checks/client-ip.js';
import { parseCidr, type Cidr } from '../../src/core/ip.js';

function cidr(text: string): Cidr {
  const parsed = parseCidr(text);
  assert.ok(parsed.ok, text);
  return parsed.value;
}

function client(text: string) {
  const parsed = clientAddress(text);
  assert.ok(parsed, text);
  return parsed;
}

describe('clientAddress', () => {
  it('gives the canonical text, and an IPv4-mapped address as the IPv4 address', () => {
    assert.deepEqual([client('::ffff:192.0.2.1').text, client('::ffff:192.0.2.1').family], ['192.0.2.1', 4]);
    assert.deepEqual([client('2001:DB8:0:0::1').text, client('2001:DB8:0:0::1').family], ['2001:db8::1', 6]);
    assert.equal(client('192.0.2.1').text, '192.0.2.1');
    assert.equal(clientAddress('192.0.2.1'), clientAddress('192.0.2.1'), 'one object for a recurring client');
  });

  it('takes only a bare address: no network, brackets, padding or name', () => {
    for (const text of ['192.0.2.0/24', '2001:db8::/32', '[2001:db8::1]', '[192.0.2.1]', ' 192.0.2.1', '192.0.2.1 ', '', 'mx.example.com', '192.0.2.256']) {
      assert.equal(clientAddress(text), undefined, JSON.stringify(text));
    }
  });

  it('unusableClientAddress says which request had no address and which had one no check can use', () => {
    assert.equal(unusableClientAddress('192.0.2.1'), undefined);
    assert.equal(unusableClientAddress('::ffff:192.0.2.1'), undefined);
    assert.equal(unusableClientAddress(''), 'no client address in the request');
    assert.equal(unusableClientAddress('unknown'), 'no usable client address in the request ("unknown")');
  });

  it('fuzz: any client_address text is an address node:net reads, whose canonical text reads back the same, or none', () => {
    const text = fc.oneof(
      fc.string({ maxLength: 50 }),
      fc.string({ unit: fc.constantFrom(...'0123456789abcdefABCDEF:.%/[]f x'.split('')), maxLength: 48 }),
      fc.ipV4(),
      fc.ipV6(),
      fc.ipV4().map((v4) => `::ffff:${v4}`),
    );
    fc.assert(
      fc.property(text, (ip) => {
        const parsed = clientAddress(ip);
        if (parsed === undefined) {
          assert.match(unusableClientAddress(ip) ?? '', /client address/);
          return;
        }
        assert.notEqual(isIP(ip), 0, ip);
        assert.equal(isIP(parsed.text), parsed.family, ip);
        assert.equal(clientAddress(parsed.text)?.text, parsed.text, ip);
        assert.ok(countingKey(parsed, 24, 64).length > 0, ip);
      }),
      { numRuns: 2_000 },
    );
  });
});

describe('networkHolds and addressHolds', () => {
  it('hold a client inside the network and no other', () => {
    const v4 = client('192.0.2.77');
    const v6 = client('2001:db8:1:2:3:4:5:6');
    assert.equal(networkHolds(cidr('192.0.2.0/24'), v4), true);
    assert.equal(networkHolds(cidr('192.0.3.0/24'), v4), false);
    assert.equal(networkHolds(cidr('192.0.2.77/32'), v4), true);
    assert.equal(networkHolds(cidr('192.0.2.76/32'), v4), false);
    assert.equal(networkHolds(cidr('2001:db8:1:2::/64'), v6), true);
    assert.equal(networkHolds(cidr('2001:db8:1:3::/64'), v6), false);
    // The host part's high bit is outside the network's prefix too.
    assert.equal(networkHolds(cidr('192.0.2.0/24'), client('192.0.2.200')), true);
    assert.equal(networkHolds(cidr('2001:db8:1:2::/64'), client('2001:db8:1:2:8000::1')), true);
    assert.equal(addressHolds('192.0.2.1', 24, v4), true);
    assert.equal(addressHolds('192.0.2.1', 32, v4), false);
    assert.equal(addressHolds('2001:db8:1:2::9', 64, v6), true);
    assert.equal(addressHolds('2001:db8:1:2::9', 128, v6), false);
    assert.equal(addressHolds('not an address', 0, v4), false);
  });

  it('never hold a client of the other family, even with prefix 0', () => {
    const v4 = client('0.0.0.1');
    const v6 = client('::1');
    assert.equal(networkHolds(cidr('::/0'), v4), false);
    assert.equal(networkHolds(cidr('0.0.0.0/0'), v6), false);
    assert.equal(addressHolds('::1', 0, v4), false);
    assert.equal(addressHolds('::', 32, v4), false);
    assert.equal(addressHolds('0.0.0.1', 0, v6), false);
    assert.equal(addressHolds('0.0.0.1', 128, v6), false);
  });
});

describe('countingKey', () => {
  it('counts a client under its address, or under its network for a shorter prefix of its family', () => {
    const v4 = client('192.0.2.77');
    const v6 = client('2001:db8:1:2:3:4:5:6');
    assert.equal(countingKey(v4, 32, 64), '192.0.2.77');
    assert.equal(countingKey(v4, 24, 128), '192.0.2.0/24');
    assert.equal(countingKey(v6, 24, 128), '2001:db8:1:2:3:4:5:6');
    assert.equal(countingKey(v6, 32, 64), '2001:db8:1:2::/64');
    assert.equal(countingKey(client('::ffff:192.0.2.77'), 24, 64), '192.0.2.0/24', 'a mapped client counts as IPv4');
  });
});
