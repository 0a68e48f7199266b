// Property tests of the 512-octet address limit of SRS, BATV and VERP (batv.test.ts, srs.test.ts
// and verp.test.ts fuzz the round trips): nothing over the limit is read or written, counted in
// octets (a non-ASCII address is longer in octets than in characters), and reading an address
// of the limit's length takes linear time whatever its shape.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { Batv, BATV_LIMITS, parsePrvs } from '../../src/rewrite/batv.js';
import { Srs, SRS_LIMITS } from '../../src/rewrite/srs.js';
import { verpDecode, verpEncode, VERP_LIMITS } from '../../src/rewrite/verp.js';
import { elapsedMs } from '../support/fuzz.js';

const T0 = 1_700_000_000_000;
const octets = (text: string) => Buffer.byteLength(text);
const unit = fc.constantFrom(...'ab.=-+@_'.split(''), 'é', '日', '😀');
/** Addresses around the limit, in octets, often with multi-octet characters. */
const longish = fc.string({ unit, minLength: 150, maxLength: 520 });
const prefixed = fc.tuple(fc.constantFrom('prvs=0123abcdef=', 'PRVS=9999999999=', 'SRS0=HHHH=TT=', 'SRS1=HHHH=host=', 'list+'), longish).map(([prefix, rest]) => prefix + rest);

describe('BATV address limit', () => {
  const batv = new Batv({ keys: [{ keynum: 0, secret: 'secret' }] });

  it('reads no address over 512 octets, and signs into none', () => {
    fc.assert(
      fc.property(fc.oneof(prefixed, longish), (address) => {
        if (octets(address) > BATV_LIMITS.addressOctets) {
          assert.equal(parsePrvs(address), undefined, `${octets(address)} octets`);
          assert.equal(batv.check(address, T0).status, 'not-prvs');
        }
        const signed = batv.sign(address, T0);
        if (signed.ok) {
          assert.ok(octets(signed.address) <= BATV_LIMITS.addressOctets, 'octets(signed.address) <= BATV_LIMITS.addressOctets');
          assert.deepEqual(batv.check(signed.address, T0), { status: 'valid', original: address, keynum: 0 });
        }
      }),
      { numRuns: 500 },
    );
  });

  it('refuses a prvs address of 512 characters but more octets (regression)', () => {
    // 16 + 200 + 2 + 294 = 512 characters, 712 octets (é is two): parsePrvs counted characters.
    const address = `prvs=0123abcdef=${'é'.repeat(200)}x@${'d'.repeat(294)}`;
    assert.equal(address.length, 512);
    assert.equal(parsePrvs(address), undefined);
    assert.equal(batv.check(address, T0).status, 'not-prvs');
  });

  it('splits any prvs-shaped address of the limit\'s length in linear time', () => {
    const half = BATV_LIMITS.addressOctets / 2;
    for (const address of [`prvs=0123abcdef=${'@'.repeat(490)}`, `prvs=0123abcdef=${'a@'.repeat(half - 10)}\n`, `prvs=0123abcdef=${'@a'.repeat(half - 10)}\n@`]) {
      const ms = elapsedMs(() => {
        for (let i = 0; i < 100; i++) parsePrvs(address);
      });
      assert.ok(ms < 500, `${ms.toFixed(0)} ms for 100 × ${JSON.stringify(address.slice(0, 24))}...`);
    }
  });
});

describe('SRS address limit', () => {
  const srs = new Srs({ domain: 'srs.example', secrets: ['s3cret'] });

  it('reverses no address over 512 octets, and forwards into none', () => {
    fc.assert(
      fc.property(fc.oneof(prefixed, longish), (address) => {
        if (octets(address) > SRS_LIMITS.addressOctets) assert.equal(srs.reverse(address, T0).ok, false);
        const forwarded = srs.forward(address, T0);
        if (forwarded.ok) {
          assert.ok(octets(forwarded.address) <= SRS_LIMITS.addressOctets, 'octets(forwarded.address) <= SRS_LIMITS.addressOctets');
          const back = srs.reverse(forwarded.address, T0);
          assert.ok(back.ok, forwarded.address);
        }
      }),
      { numRuns: 500 },
    );
  });
});

describe('VERP address limit', () => {
  it('decodes no address over 512 octets, and encodes into none', () => {
    fc.assert(
      fc.property(fc.oneof(prefixed, longish), fc.string({ unit, maxLength: 40 }), (address, recipient) => {
        if (octets(address) > VERP_LIMITS.addressOctets) assert.deepEqual(verpDecode(address, 'list@x.example').ok, false);
        const encoded = verpEncode('list@x.example', recipient);
        if (encoded.ok) {
          assert.ok(octets(encoded.address) <= VERP_LIMITS.addressOctets, 'octets(encoded.address) <= VERP_LIMITS.addressOctets');
          assert.deepEqual(verpDecode(encoded.address, 'list@x.example'), { ok: true, recipient, sender: 'list@x.example' });
        }
        const long = verpEncode(address, `${recipient}@y.example`);
        if (long.ok) assert.ok(octets(long.address) <= VERP_LIMITS.addressOctets, 'octets(long.address) <= VERP_LIMITS.addressOctets');
      }),
      { numRuns: 500 },
    );
  });
});

describe('SRS and VERP in linear time', () => {
  it('refuse a long crafted address at once, whatever its shape', () => {
    const srs = new Srs({ domain: 'srs.example', secrets: ['s3cret'] });
    for (const address of [`SRS0=${'='.repeat(100_000)}@x`, `SRS1=${'=='.repeat(50_000)}@x`, `SRS0+${'+'.repeat(100_000)}`, `${'a+'.repeat(100_000)}@x`, 'a@'.repeat(100_000)]) {
      // Generous bound against a quadratic scan, not a speed claim.
      assert.ok(elapsedMs(() => (srs.reverse(address, T0), srs.forward(address, T0), verpDecode(address, 'list@x.example'))) < 200, address.slice(0, 8));
      assert.equal(srs.reverse(address, T0).ok, false);
    }
  });
});
