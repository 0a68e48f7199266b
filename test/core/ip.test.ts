import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { isIP } from 'node:net';
import fc from 'fast-check';
import {
  AddressSet,
  cidrContains,
  cidrWithin,
  classifyAddress,
  formatCidr,
  formatIp,
  hostKey,
  networkOf,
  parseCidr,
  parseIp,
  parseNetwork,
  type AddressClass,
  type Cidr,
} from '../../src/core/ip.js';
import { elapsedMs } from '../support/fuzz.js';

/** Random text, half of it drawn from the characters addresses are made of, to reach deep parser paths. */
const addressishText = fc.oneof(
  fc.string({ maxLength: 70 }),
  fc.string({ unit: fc.constantFrom(...'0123456789abcdefABCDEF:.:/[]%'.split('')), maxLength: 50 }),
);

function cidr(text: string): Cidr {
  const parsed = parseCidr(text);
  assert.ok(parsed.ok, `${text} should parse`);
  return parsed.value;
}

describe('parseIp / formatIp', () => {
  const canonical: Array<[string, string]> = [
    ['0.0.0.0', '0.0.0.0'],
    ['255.255.255.255', '255.255.255.255'],
    ['::', '::'],
    ['::1', '::1'],
    ['2001:DB8::1', '2001:db8::1'],
    ['2001:0db8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
    ['2001:db8:0:1:0:0:0:1', '2001:db8:0:1::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['2001:db8:1:2:3:4:5:6', '2001:db8:1:2:3:4:5:6'],
    ['2001:db8::0:1', '2001:db8::1'],
    ['1:0:2:3:4:5:6:7', '1:0:2:3:4:5:6:7'],
    ['1::2:3:4:5:6:7', '1:0:2:3:4:5:6:7'],
    ['::ffff:127.0.0.2', '::ffff:127.0.0.2'],
    ['::ffff:7f00:2', '::ffff:127.0.0.2'],
    ['::1.2.3.4', '::102:304'],
    ['1:2:3:4:5:6:1.2.3.4', '1:2:3:4:5:6:102:304'],
    ['fe80::', 'fe80::'],
  ];
  for (const [input, want] of canonical) {
    it(`formats ${input} as ${want}`, () => {
      const parsed = parseIp(input);
      assert.ok(parsed, 'parsed');
      assert.equal(formatIp(parsed), want);
    });
  }

  const invalid = [
    '', ' 1.2.3.4', '1.2.3.4 ', '1.2.3', '1.2.3.4.5', '256.0.0.0', '01.2.3.4', '1.2.3.04', '0x7f.0.0.1', '127.1',
    '1..2.3', '-1.2.3.4', '1.2.3.4/32', ':', ':::', '1:::2', '1::2::3', ':1:2:3:4:5:6:7', '1:2:3:4:5:6:7:',
    '1:2:3:4:5:6:7', '1:2:3:4:5:6:7:8:9', '1::2:3:4:5:6:7:8', '12345::', 'g::', 'fe80::1%eth0', '[::1]',
    '1.2.3.4::', '::1.2.3', '::1.2.3.4:5', '1:2:3:4:5:6:7:1.2.3.4', 'a'.repeat(65),
  ];
  for (const input of invalid) {
    it(`refuses ${JSON.stringify(input.length > 20 ? `${input.slice(0, 20)}…` : input)}`, () => {
      assert.equal(parseIp(input), undefined);
    });
  }

  it('accepts what fast-check generates and agrees with node:net', () => {
    fc.assert(
      fc.property(fc.oneof(fc.ipV4(), fc.ipV6()), (text) => {
        const parsed = parseIp(text);
        assert.ok(parsed, text);
        assert.equal(parsed.family, isIP(text));
        // The canonical form is a fixed point and still names the same address.
        const canonicalText = formatIp(parsed);
        assert.deepEqual(parseIp(canonicalText), parsed);
        assert.equal(formatIp(parseIp(canonicalText) ?? parsed), canonicalText);
      }),
    );
  });

  it('formats IPv6 as the WHATWG URL serializer does (RFC 5952 compression)', () => {
    fc.assert(
      fc.property(fc.ipV6(), (text) => {
        const parsed = parseIp(text);
        assert.ok(parsed, 'parsed');
        fc.pre(parsed.bits >> 32n !== 0xffffn);
        assert.equal(formatIp(parsed), new URL(`http://[${text}]/`).hostname.slice(1, -1));
      }),
    );
  });

  it('never throws on arbitrary strings, and accepts only what node:net calls an address', () => {
    fc.assert(
      fc.property(addressishText, (text) => {
        const parsed = parseIp(text);
        if (parsed !== undefined) assert.equal(isIP(text), parsed.family);
      }),
    );
  });
});

describe('parseCidr', () => {
  const good: Array<[string, string]> = [
    ['192.0.2.0/24', '192.0.2.0/24'],
    ['192.0.2.77/24', '192.0.2.0/24'],
    ['10.1.2.3/8', '10.0.0.0/8'],
    ['10.1.2.3', '10.1.2.3/32'],
    ['0.0.0.0/0', '0.0.0.0/0'],
    ['1.2.3.4/0', '0.0.0.0/0'],
    ['2001:db8::/32', '2001:db8::/32'],
    ['2001:db8:ffff::1/32', '2001:db8::/32'],
    ['[2001:db8::]/32', '2001:db8::/32'],
    ['[::1]', '::1/128'],
    ['::1', '::1/128'],
    ['::/0', '::/0'],
    ['2001:db8::1/128', '2001:db8::1/128'],
    ['::ffff:10.0.0.0/104', '10.0.0.0/8'],
    ['::ffff:127.0.0.2', '127.0.0.2/32'],
    ['::ffff:0:0/96', '0.0.0.0/0'],
    ['::ffff:0:0/95', '::fffe:0:0/95'],
  ];
  for (const [input, want] of good) {
    it(`parses ${input} as ${want}`, () => {
      assert.equal(formatCidr(cidr(input)), want);
    });
  }

  const bad: Array<[string, RegExp]> = [
    ['', /not an IPv4 or IPv6 address/],
    ['/24', /not an IPv4 or IPv6 address/],
    ['192.0.2/24', /not an IPv4 or IPv6 address/],
    ['example.com/24', /not an IPv4 or IPv6 address/],
    ['[192.0.2.0]/24', /not an IPv4 or IPv6 address/],
    ['192.0.2.0/', /prefix length must be 0 to 32/],
    ['192.0.2.0/33', /prefix length must be 0 to 32/],
    ['192.0.2.0/024', /prefix length must be 0 to 32/],
    ['192.0.2.0/-1', /prefix length must be 0 to 32/],
    ['192.0.2.0/24/8', /prefix length must be 0 to 32/],
    ['192.0.2.0/ 24', /prefix length must be 0 to 32/],
    ['2001:db8::/129', /prefix length must be 0 to 128/],
    ['2001:db8::/1e2', /prefix length must be 0 to 128/],
    ['fe80::1%eth0/64', /not an IPv4 or IPv6 address/],
    [`${'1'.repeat(70)}/8`, /longer than 64/],
  ];
  for (const [input, reason] of bad) {
    it(`refuses ${JSON.stringify(input.length > 20 ? `${input.slice(0, 20)}…` : input)}`, () => {
      const parsed = parseCidr(input);
      assert.equal(parsed.ok, false);
      if (!parsed.ok) assert.match(parsed.reason, reason);
    });
  }

  it('names an IPv4 octet with a leading zero (010: eight to inet_aton, ten to whoever wrote it), IPv4 only', () => {
    for (const [text, octet] of [['010.1.1.1', '010'], ['10.020.30.0/24', '020'], ['192.0.2.00', '00'], ['1.2.3.007/32', '007']]) {
      assert.deepEqual(parseCidr(text!), { ok: false, reason: `an octet with a leading zero (${octet}): write it in decimal without the zero`, leadingZero: true }, text);
    }
    // The reason reaches a configuration's lists and a command's network argument alike.
    assert.deepEqual(AddressSet.parse(['010.1.1.0/24']), { ok: false, reason: '"010.1.1.0/24": an octet with a leading zero (010): write it in decimal without the zero' });
    assert.deepEqual(parseNetwork('172.016.0.0/12'), { ok: false, reason: 'an octet with a leading zero (016): write it in decimal without the zero', leadingZero: true });
    // Not an IPv4 dotted quad of decimal octets: the general reason.
    for (const text of ['00::1::2', '::ffff:010.1.1.1', '[010.1.1.1]', '010.1.1', '010.1.1.1.1', '0x0a.1.1.1', '0100.1.1.1']) {
      assert.deepEqual(parseCidr(text), { ok: false, reason: `not an IPv4 or IPv6 address: ${JSON.stringify(text.replace(/^\[(.*)\]$/, '$1'))}`, notAddress: true }, text);
    }
  });

  it('never throws on arbitrary strings', () => {
    fc.assert(
      fc.property(addressishText, (text) => {
        const parsed = parseCidr(text);
        assert.equal(typeof parsed.ok, 'boolean');
      }),
    );
  });

  it('never throws on address-like strings with a prefix', () => {
    const addressLike = fc.oneof(fc.ipV4(), fc.ipV6(), fc.ipV4Extended(), fc.string({ maxLength: 10 }));
    fc.assert(
      fc.property(addressLike, fc.oneof(fc.nat(200).map(String), fc.string({ maxLength: 4 })), (address, prefix) => {
        parseCidr(`${address}/${prefix}`);
      }),
    );
  });

  it('parseNetwork takes what parseCidr takes, as parseCidr reads it, but for host bits, and always takes the network it names', () => {
    const addressLike = fc.oneof(fc.ipV4(), fc.ipV6(), fc.ipV4Extended(), fc.constantFrom('::ffff:0.0.0.0', '::ffff:192.0.2.1', '010.1.1.1'), fc.string({ maxLength: 10 }));
    fc.assert(
      fc.property(addressLike, fc.oneof(fc.nat(130).map(String), fc.string({ maxLength: 4 })), fc.boolean(), (address, prefix, bare) => {
        const text = bare ? address : `${address}/${prefix}`;
        const cidr = parseCidr(text);
        const network = parseNetwork(text);
        if (network.ok) assert.deepEqual(network, cidr, text);
        else if (cidr.ok) assert.match(network.reason, /^host bits set after the prefix: write the network, /, text);
        else assert.deepEqual(network, cidr, text);
        if (cidr.ok) assert.deepEqual(parseNetwork(formatCidr(cidr.value)), cidr, text);
      }),
    );
  });
});

describe('cidrContains', () => {
  const cases: Array<[string, string, boolean]> = [
    ['192.0.2.0/24', '192.0.2.0', true],
    ['192.0.2.0/24', '192.0.2.255', true],
    ['192.0.2.0/24', '192.0.1.255', false],
    ['192.0.2.0/24', '192.0.3.0', false],
    ['0.0.0.0/0', '203.0.113.9', true],
    ['0.0.0.0/0', '2001:db8::1', false],
    ['127.0.0.0/8', '::ffff:127.0.0.2', true],
    ['127.0.0.0/8', '::ffff:7f00:2', true],
    ['::ffff:127.0.0.0/104', '127.9.9.9', true],
    ['2001:db8::/32', '2001:db8::', true],
    ['2001:db8::/32', '2001:db8:ffff:ffff:ffff:ffff:ffff:ffff', true],
    ['2001:db8::/32', '2001:db7:ffff:ffff:ffff:ffff:ffff:ffff', false],
    ['2001:db8::/32', '2001:db9::', false],
    ['::/0', '192.0.2.1', false],
    ['::1/128', '::1', true],
    ['192.0.2.0/24', 'not an address', false],
  ];
  for (const [range, ip, want] of cases) {
    it(`${range} ${want ? 'contains' : 'does not contain'} ${ip}`, () => {
      assert.equal(cidrContains(cidr(range), ip), want);
    });
  }
});

describe('cidrWithin', () => {
  const cases: Array<[string, string, boolean]> = [
    ['198.51.100.0/24', '198.51.0.0/16', true],
    ['198.51.0.0/16', '198.51.0.0/16', true],
    ['198.51.0.0/16', '198.51.100.0/24', false],
    // A narrower outer network at the start of the inner one: its bits match, its length does not.
    ['198.51.0.0/16', '198.51.0.0/24', false],
    ['2001:db8::/32', '2001:db8::/48', false],
    ['198.52.0.0/24', '198.51.0.0/16', false],
    ['192.0.2.7/32', '0.0.0.0/0', true],
    ['2001:db8:1:2::/64', '0.0.0.0/0', false],
    ['2001:db8:1:2::/64', '2001:db8::/32', true],
    ['2001:db9::/64', '2001:db8::/32', false],
  ];
  for (const [inner, outer, want] of cases) {
    it(`${inner} ${want ? 'lies' : 'does not lie'} in ${outer}`, () => {
      assert.equal(cidrWithin(cidr(inner), cidr(outer)), want);
    });
  }
});

describe('AddressSet', () => {
  const set = AddressSet.parse(['127.0.0.0/8', '192.0.2.7', '198.51.100.0/24', '10.0.0.0/8', '::1', '2001:db8:1::/48']);
  assert.ok(set.ok, 'set.ok');
  const cases: Array<[string, boolean]> = [
    ['127.0.0.1', true],
    ['127.255.255.255', true],
    ['128.0.0.0', false],
    ['::ffff:127.0.0.2', true],
    ['192.0.2.7', true],
    ['192.0.2.8', false],
    ['198.51.100.200', true],
    ['10.200.0.1', true],
    ['11.0.0.0', false],
    ['::1', true],
    ['::2', false],
    ['2001:db8:1:ffff::1', true],
    ['2001:db8:2::1', false],
    ['garbage', false],
    ['', false],
  ];
  for (const [ip, want] of cases) {
    it(`${want ? 'has' : 'lacks'} ${JSON.stringify(ip)}`, () => {
      assert.equal(set.value.has(ip), want);
    });
  }

  it('keeps the parsed entries', () => {
    assert.deepEqual(set.value.cidrs.map(formatCidr), ['127.0.0.0/8', '192.0.2.7/32', '198.51.100.0/24', '10.0.0.0/8', '::1/128', '2001:db8:1::/48']);
  });

  it('names the first bad entry', () => {
    const parsed = AddressSet.parse(['127.0.0.0/8', '10.0.0.0/33', 'nonsense']);
    assert.equal(parsed.ok, false);
    if (!parsed.ok) assert.match(parsed.reason, /^"10\.0\.0\.0\/33": prefix length/);
  });

  it('refuses an entry with host bits set, as Postfix\'s cidr tables skip it, and names the network', () => {
    for (const [entry, network] of [['10.1.2.3/8', '10.0.0.0/8'], ['192.0.2.10/24', '192.0.2.0/24'], ['2001:db8::1/32', '2001:db8::/32'], ['::ffff:192.0.2.5/120', '192.0.2.0/24'], ['::ffff:192.0.2.5/64', '::/64'], ['::ffff:0:0/95', '::fffe:0:0/95'], ['::ffff:0.0.0.0/64', '::/64']]) {
      const parsed = AddressSet.parse(['127.0.0.0/8', entry!]);
      assert.equal(parsed.ok, false, entry);
      if (!parsed.ok) assert.equal(parsed.reason, `${JSON.stringify(entry)}: host bits set after the prefix: write the network, ${network}, or the address alone`);
    }
    const written = AddressSet.parse(['10.0.0.0/8', '192.0.2.10', '192.0.2.10/32', '2001:db8::/32', '::ffff:192.0.2.0/120', '[2001:db8::]/32', '0.0.0.0/0']);
    assert.ok(written.ok, 'written.ok');
  });

  it('an empty set has nothing', () => {
    assert.equal(new AddressSet([]).has('127.0.0.1'), false);
  });

  it('agrees with checking each CIDR in turn', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.ipV4(), fc.integer({ min: 0, max: 32 })), { maxLength: 8 }),
        fc.ipV4(),
        (entries, ip) => {
          const cidrs = entries.map(([address, prefix]) => cidr(`${address}/${prefix}`));
          assert.equal(new AddressSet(cidrs).has(ip), cidrs.some((c) => cidrContains(c, ip)));
        },
      ),
    );
  });
});

describe('classifyAddress', () => {
  // First and last address of each range, and the addresses just outside it.
  const cases: Array<[string, AddressClass]> = [
    ['0.0.0.0', 'unspecified'],
    ['0.0.0.1', 'reserved'],
    ['0.255.255.255', 'reserved'],
    ['1.0.0.0', 'public'],
    ['9.255.255.255', 'public'],
    ['10.0.0.0', 'private'],
    ['10.255.255.255', 'private'],
    ['11.0.0.0', 'public'],
    ['100.63.255.255', 'public'],
    ['100.64.0.0', 'shared'],
    ['100.127.255.255', 'shared'],
    ['100.128.0.0', 'public'],
    ['126.255.255.255', 'public'],
    ['127.0.0.0', 'loopback'],
    ['127.255.255.255', 'loopback'],
    ['128.0.0.0', 'public'],
    ['169.253.255.255', 'public'],
    ['169.254.0.0', 'link-local'],
    ['169.254.255.255', 'link-local'],
    ['169.255.0.0', 'public'],
    ['172.15.255.255', 'public'],
    ['172.16.0.0', 'private'],
    ['172.31.255.255', 'private'],
    ['172.32.0.0', 'public'],
    ['191.255.255.255', 'public'],
    ['192.0.0.0', 'reserved'],
    ['192.0.0.8', 'reserved'],
    ['192.0.0.9', 'public'],
    ['192.0.0.10', 'public'],
    ['192.0.0.11', 'reserved'],
    ['192.0.0.255', 'reserved'],
    ['192.0.1.255', 'public'],
    ['192.0.2.0', 'documentation'],
    ['192.0.2.255', 'documentation'],
    ['192.0.3.0', 'public'],
    ['192.88.98.255', 'public'],
    ['192.88.99.0', 'reserved'],
    ['192.88.99.255', 'reserved'],
    ['192.88.100.0', 'public'],
    ['192.167.255.255', 'public'],
    ['192.168.0.0', 'private'],
    ['192.168.255.255', 'private'],
    ['192.169.0.0', 'public'],
    ['198.17.255.255', 'public'],
    ['198.18.0.0', 'benchmark'],
    ['198.19.255.255', 'benchmark'],
    ['198.20.0.0', 'public'],
    ['198.51.99.255', 'public'],
    ['198.51.100.0', 'documentation'],
    ['198.51.100.255', 'documentation'],
    ['198.51.101.0', 'public'],
    ['203.0.112.255', 'public'],
    ['203.0.113.0', 'documentation'],
    ['203.0.113.255', 'documentation'],
    ['203.0.114.0', 'public'],
    ['223.255.255.255', 'public'],
    ['224.0.0.0', 'multicast'],
    ['239.255.255.255', 'multicast'],
    ['240.0.0.0', 'reserved'],
    ['255.255.255.254', 'reserved'],
    ['255.255.255.255', 'reserved'],
    ['8.8.8.8', 'public'],

    ['::', 'unspecified'],
    ['::1', 'loopback'],
    ['::2', 'reserved'],
    ['::ffff:127.0.0.2', 'loopback'],
    ['::ffff:10.0.0.1', 'private'],
    ['::ffff:8.8.8.8', 'public'],
    ['::ffff:0.0.0.0', 'unspecified'],
    ['::fffe:ffff:ffff', 'reserved'],
    ['::1:0:0:0', 'reserved'],
    ['::8.8.8.8', 'reserved'],
    ['64:ff9a:ffff:ffff:ffff:ffff:ffff:ffff', 'reserved'],
    ['64:ff9b::8.8.8.8', 'public'],
    ['64:ff9b::10.0.0.1', 'private'],
    ['64:ff9b::127.0.0.1', 'loopback'],
    ['64:ff9b::1:0:0', 'reserved'],
    ['64:ff9b:1::', 'private'],
    ['64:ff9b:1:ffff:ffff:ffff:ffff:ffff', 'private'],
    ['64:ff9b:2::', 'reserved'],
    ['100::', 'reserved'],
    ['100::ffff:ffff:ffff:ffff', 'reserved'],
    ['100:0:0:1::', 'reserved'],
    ['1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'reserved'],
    ['2000::', 'public'],
    ['2000:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'public'],
    ['2001::', 'reserved'],
    ['2001:0:ffff::1', 'reserved'],
    ['2001:1::1', 'public'],
    ['2001:1::2', 'public'],
    ['2001:1::3', 'public'],
    ['2001:1::4', 'reserved'],
    ['2001:1:ffff::', 'reserved'],
    ['2001:2::', 'benchmark'],
    ['2001:2:0:ffff:ffff:ffff:ffff:ffff', 'benchmark'],
    ['2001:2:1::', 'reserved'],
    ['2001:3::', 'public'],
    ['2001:3:ffff:ffff:ffff:ffff:ffff:ffff', 'public'],
    ['2001:4:112::', 'public'],
    ['2001:4:112:ffff:ffff:ffff:ffff:ffff', 'public'],
    ['2001:4:113::', 'reserved'],
    ['2001:10::', 'reserved'],
    ['2001:1f:ffff:ffff:ffff:ffff:ffff:ffff', 'reserved'],
    ['2001:20::', 'public'],
    ['2001:2f:ffff:ffff:ffff:ffff:ffff:ffff', 'public'],
    ['2001:30::', 'public'],
    ['2001:3f:ffff:ffff:ffff:ffff:ffff:ffff', 'public'],
    ['2001:40::', 'reserved'],
    ['2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff', 'reserved'],
    ['2001:200::', 'public'],
    ['2001:db7:ffff:ffff:ffff:ffff:ffff:ffff', 'public'],
    ['2001:db8::', 'documentation'],
    ['2001:db8:ffff:ffff:ffff:ffff:ffff:ffff', 'documentation'],
    ['2001:db9::', 'public'],
    ['2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'public'],
    ['2002::', 'unspecified'],
    ['2002:808:808::1', 'public'],
    ['2002:c0a8:101::1', 'private'],
    ['2002:7f00:1::', 'loopback'],
    ['2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'reserved'],
    ['2003::', 'public'],
    ['2606:4700:4700::1111', 'public'],
    ['3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'public'],
    ['3fff::', 'documentation'],
    ['3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff', 'documentation'],
    ['3fff:1000::', 'public'],
    ['3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'public'],
    ['4000::', 'reserved'],
    ['5f00::', 'reserved'],
    ['fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'reserved'],
    ['fc00::', 'private'],
    ['fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'private'],
    ['fe00::', 'reserved'],
    ['fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'reserved'],
    ['fe80::', 'link-local'],
    ['febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'link-local'],
    ['fec0::', 'reserved'],
    ['feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'reserved'],
    ['ff00::', 'multicast'],
    ['ff02::1', 'multicast'],
    ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'multicast'],

    ['', 'invalid'],
    ['localhost', 'invalid'],
    ['127.1', 'invalid'],
    ['fe80::1%lo', 'invalid'],
  ];
  for (const [ip, want] of cases) {
    it(`${JSON.stringify(ip)} is ${want}`, () => {
      assert.equal(classifyAddress(ip), want);
    });
  }

  it('never throws on arbitrary strings and answers invalid for non-addresses', () => {
    fc.assert(
      fc.property(addressishText, (text) => {
        const addressClass = classifyAddress(text);
        if (parseIp(text) === undefined) assert.equal(addressClass, 'invalid');
      }),
    );
  });

  it('classifies a mapped address like the IPv4 address', () => {
    fc.assert(
      fc.property(fc.ipV4(), (ip) => {
        assert.equal(classifyAddress(`::ffff:${ip}`), classifyAddress(ip));
      }),
    );
  });

  it('never answers invalid for a generated address', () => {
    fc.assert(
      fc.property(fc.oneof(fc.ipV4(), fc.ipV6()), (ip) => {
        assert.notEqual(classifyAddress(ip), 'invalid');
      }),
    );
  });
});

describe('networkOf', () => {
  const cases: Array<[string, number, number, string | undefined]> = [
    ['192.0.2.77', 24, 64, '192.0.2.0/24'],
    ['192.0.2.77', 32, 64, '192.0.2.77/32'],
    ['192.0.2.77', 0, 64, '0.0.0.0/0'],
    ['192.0.2.77', 16, 64, '192.0.0.0/16'],
    ['::ffff:192.0.2.77', 24, 64, '192.0.2.0/24'],
    ['2001:db8:1:2:3:4:5:6', 24, 64, '2001:db8:1:2::/64'],
    ['2001:db8:1:2:3:4:5:6', 24, 48, '2001:db8:1::/48'],
    ['2001:db8:1:2:3:4:5:6', 24, 128, '2001:db8:1:2:3:4:5:6/128'],
    ['2001:DB8::1', 24, 64, '2001:db8::/64'],
    ['::1', 24, 64, '::/64'],
    ['not an ip', 24, 64, undefined],
  ];
  for (const [ip, v4, v6, want] of cases) {
    it(`${ip} /${v4} //${v6} is ${want}`, () => {
      assert.equal(networkOf(ip, v4, v6), want);
    });
  }

  it('refuses prefix lengths outside the family', () => {
    assert.throws(() => networkOf('192.0.2.1', 33, 64), { code: 'INTERNAL' });
    assert.throws(() => networkOf('192.0.2.1', 24, 129), { code: 'INTERNAL' });
    assert.throws(() => networkOf('192.0.2.1', -1, 64), { code: 'INTERNAL' });
    assert.throws(() => networkOf('192.0.2.1', 24.5, 64), { code: 'INTERNAL' });
  });

  it('the /24 of a random a.b.c.d contains it and is a.b.c.0/24', () => {
    fc.assert(
      fc.property(fc.ipV4(), (ip) => {
        const network = networkOf(ip, 24, 64);
        assert.ok(network, 'network');
        assert.equal(network, `${ip.split('.').slice(0, 3).join('.')}.0/24`);
        assert.ok(cidrContains(cidr(network), ip), 'cidrContains(cidr(network), ip)');
      }),
    );
  });

  it('the /64 of a random IPv6 address contains it', () => {
    fc.assert(
      fc.property(fc.ipV6(), (ip) => {
        const network = networkOf(ip, 24, 64);
        assert.ok(network, 'network');
        assert.ok(cidrContains(cidr(network), ip), 'cidrContains(cidr(network), ip)');
      }),
    );
  });
});

describe('hostKey', () => {
  it('names one server one way: mapped IPv4 unmapped, IPv6 in RFC 5952 form, anything else as it is', () => {
    assert.equal(hostKey('::ffff:127.0.0.2'), '127.0.0.2');
    assert.equal(hostKey('::FFFF:7f00:2'), '127.0.0.2');
    assert.equal(hostKey('2001:DB8:0:0:0:0:0:1'), '2001:db8::1');
    assert.equal(hostKey('192.0.2.1'), '192.0.2.1');
    assert.equal(hostKey('not an address'), 'not an address');
  });
});

describe('address parsers in linear time', () => {
  it('refuse long crafted texts without a quadratic scan', () => {
    const texts = [':'.repeat(100_000), '1.'.repeat(100_000), `::ffff:${'1.'.repeat(50_000)}`, `${'a'.repeat(100_000)}/${'1'.repeat(100_000)}`, `1::${'f:'.repeat(50_000)}1/64`];
    for (const text of texts) {
      // Generous bound against a quadratic scan, not a speed claim.
      assert.ok(elapsedMs(() => (parseIp(text), parseCidr(text), classifyAddress(text), hostKey(text))) < 200, text.slice(0, 10));
      assert.equal(parseIp(text), undefined);
    }
  });
});
