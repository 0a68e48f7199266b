import { test } from 'node:test';
import assert from 'node:assert/strict';
import { reverseName } from '../../src/dns/reverse.js';
import { CalloutError } from '../../src/core/errors.js';
import { parseIp } from '../../src/core/ip.js';
import fc from 'fast-check';

test('IPv4 reverses its octets under in-addr.arpa', () => {
  assert.equal(reverseName('127.0.0.2'), '2.0.0.127.in-addr.arpa');
  assert.equal(reverseName('192.0.2.10'), '10.2.0.192.in-addr.arpa');
});

test('IPv6 expands to 32 nibbles, lowest first, under ip6.arpa', () => {
  assert.equal(
    reverseName('2001:db8::567:89ab'),
    'b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa',
  );
  assert.equal(reverseName('::1'), `1.${'0.'.repeat(31)}ip6.arpa`);
  assert.equal(reverseName('::'), `${'0.'.repeat(32)}ip6.arpa`);
  assert.equal(reverseName('1::'), `${'0.'.repeat(28)}1.0.0.0.ip6.arpa`);
});

test('IPv6 forms that name the same address give the same name', () => {
  const expected = reverseName('2001:0db8:0000:0000:0000:0000:0000:0001');
  for (const form of ['2001:db8::1', '2001:DB8:0:0:0:0:0:1', '2001:db8::0:1', '2001:db8::1%eth0']) {
    assert.equal(reverseName(form), expected, form);
  }
});

test('an embedded dotted quad is read as the last 32 bits', () => {
  assert.equal(reverseName('::ffff:192.0.2.1'), reverseName('::ffff:c000:201'));
});

test('a string that is not an IP address throws DNS_PERMANENT', () => {
  for (const bad of ['', 'example.com', '1.2.3', '256.1.1.1', '1:2:3', '[::1]']) {
    assert.throws(() => reverseName(bad), (err: unknown) => err instanceof CalloutError && err.code === 'DNS_PERMANENT', bad);
  }
});

test('fuzzed: the nibbles are the bits core/ip reads, and only what node:net calls an address has a name', () => {
  fc.assert(
    fc.property(fc.oneof(fc.ipV4(), fc.ipV6()), (ip) => {
      const parsed = parseIp(ip);
      assert.ok(parsed, ip);
      const want =
        parsed.family === 4
          ? `${[24n, 16n, 8n, 0n].map((shift) => String((parsed.bits >> shift) & 0xffn)).reverse().join('.')}.in-addr.arpa`
          : `${[...parsed.bits.toString(16).padStart(32, '0')].reverse().join('.')}.ip6.arpa`;
      assert.equal(reverseName(ip), want);
    }),
    { numRuns: 2000 },
  );
  fc.assert(
    fc.property(fc.string({ unit: fc.constantFrom(...'0123456789abcdefABCDEF:.%x'.split('')), maxLength: 48 }), (text) => {
      let name: string | undefined;
      try {
        name = reverseName(text);
      } catch (err) {
        assert.ok(err instanceof CalloutError && err.code === 'DNS_PERMANENT', String(err));
        return;
      }
      assert.equal(name, reverseName(text.split('%')[0] ?? ''));
      assert.match(name, /^(?:(?:[0-9a-f]\.){32}ip6|(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){4}in-addr)\.arpa$/, text);
    }),
    { numRuns: 5000 },
  );
});
