import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ConfigError } from '../../src/core/errors.js';
import { Batv, batvKeyFileLines, parsePrvs, prvsDayStamp, prvsSign, prvsStampValid } from '../../src/rewrite/batv.js';
import type { EximVectors } from '../fixtures/batv/generate.js';

const vectors = JSON.parse(readFileSync(new URL('../fixtures/batv/exim-vectors.json', import.meta.url), 'utf8')) as EximVectors;
const DAY = 86_400_000;
const T0 = Date.parse('2020-01-01T00:01:00Z');

describe('BATV prvs against vectors made by Exim 4.96', () => {
  for (const v of vectors.sign) {
    it(`\${prvs{${v.address}}{…}{${v.keynum ?? ''}}} at ${v.at}`, () => {
      const result = prvsSign(v.address, { keynum: Number(v.keynum ?? '0'), secret: v.secret }, Date.parse(v.at));
      assert.deepEqual(result, { ok: true, address: v.result });
    });
  }
  for (const v of vectors.check) {
    it(`\${prvscheck{${v.address}}} at ${v.at} is ${v.decoded === '' ? 'not prvs' : v.valid ? 'valid' : 'invalid'}`, () => {
      const keys = Array.from({ length: 10 }, (_, keynum) => ({ keynum, secret: v.secret }));
      const result = new Batv({ keys }).check(v.address, Date.parse(v.at));
      if (v.decoded === '') return assert.deepEqual(result, { status: 'not-prvs' });
      assert.equal(result.status === 'valid', v.valid, JSON.stringify(result));
      assert.equal('original' in result ? result.original : '', v.decoded);
    });
  }
});

describe('Batv keyring', () => {
  const batv = new Batv({ keys: [{ keynum: 2, secret: 'new' }, { keynum: 1, secret: 'old' }] });

  it('the newest (first) key signs and every key verifies', () => {
    const signed = batv.sign('user@example.com', T0);
    assert.ok(signed.ok && signed.address.startsWith('prvs=2'), 'signed.ok && signed.address.startsWith(\'prvs=2\')');
    const byOld = prvsSign('user@example.com', { keynum: 1, secret: 'old' }, T0);
    assert.ok(byOld.ok, 'byOld.ok');
    assert.deepEqual(batv.check(byOld.address, T0), { status: 'valid', original: 'user@example.com', keynum: 1 });
    if (signed.ok) assert.equal(batv.check(signed.address, T0).status, 'valid');
  });

  it('a key number without a key, a wrong secret and expiry are told apart', () => {
    const byMissing = prvsSign('user@example.com', { keynum: 5, secret: 'new' }, T0);
    const forged = prvsSign('user@example.com', { keynum: 2, secret: 'guess' }, T0);
    const fresh = batv.sign('user@example.com', T0);
    assert.ok(byMissing.ok && forged.ok && fresh.ok, 'byMissing.ok && forged.ok && fresh.ok');
    assert.equal(batv.check(byMissing.address, T0).status, 'unknown-key');
    assert.equal(batv.check(forged.address, T0).status, 'bad-signature');
    assert.equal(batv.check(fresh.address, T0 + 7 * DAY).status, 'valid');
    assert.equal(batv.check(fresh.address, T0 + 8 * DAY).status, 'expired');
  });

  it('refuses to sign twice, unqualified addresses and over-long ones', () => {
    const once = batv.sign('user@example.com', T0);
    assert.ok(once.ok, 'once.ok');
    assert.equal(once.ok && batv.sign(once.address, T0).ok, false);
    assert.deepEqual(batv.sign('user', T0), { ok: false, reason: 'unqualified', message: 'prvs needs a qualified address (local@domain)' });
    assert.equal(batv.sign('@example.com', T0).ok, false);
    assert.equal(batv.sign(`${'a'.repeat(600)}@example.com`, T0).ok, false);
  });

  it('refuses addresses Exim signs into invalid ones: a quoted local part, a second @, a control character', () => {
    const refusal = (address: string) => {
      const result = batv.sign(address, T0);
      return result.ok ? `signed as ${result.address}` : `${result.reason}: ${result.message}`;
    };
    // Exim writes prvs=…="a b"@x.test: the quoted string is no longer the whole local part.
    const quoted = 'malformed: cannot sign an address with a quoted local part (a quoted string cannot be embedded in another local part)';
    assert.equal(refusal('"a b"@x.test'), quoted);
    assert.equal(refusal('"a@b"@x.test'), quoted);
    assert.equal(refusal('a@b@c'), "malformed: cannot sign an address with more than one '@'");
    assert.equal(refusal('a\u0001@x.test'), 'malformed: cannot sign an address with a control character (U+0001)');
    // A path copied from the mail log was signed into prvs=…=<user@example.com> (regression).
    assert.equal(refusal('<user@example.com>'), 'malformed: cannot sign an address with angle brackets (a path, as the mail log writes it: give the address alone)');
    // Half a path too: the domain is not written into the local part, so no other check sees its '>'.
    assert.equal(refusal('user@example.com>'), 'malformed: cannot sign an address with angle brackets (a path, as the mail log writes it: give the address alone)');
    assert.equal(prvsSign('"a b"@x.test', { keynum: 0, secret: 's' }, T0).ok, false);
  });

  it('refuses an address whose signed form would be longer than check reads (512 octets)', () => {
    // prvs=KDDDHHHHHH= adds 16 octets.
    const longest = `${'u'.repeat(496 - '@example.com'.length)}@example.com`;
    const signed = batv.sign(longest, T0);
    assert.ok(signed.ok, 'signed.ok');
    assert.equal(signed.ok && Buffer.byteLength(signed.address), 512);
    assert.equal(signed.ok && batv.check(signed.address, T0).status, 'valid');
    assert.deepEqual(batv.sign(`u${longest}`, T0), { ok: false, reason: 'too-long', message: 'the signed address would be longer than 512 octets' });
  });

  it('rejects unusable keyrings with ConfigError', () => {
    assert.throws(() => new Batv({ keys: [] }), ConfigError);
    assert.throws(() => new Batv({ keys: [{ keynum: 10, secret: 'x' }] }), ConfigError);
    assert.throws(() => new Batv({ keys: [{ keynum: 1, secret: 'x' }, { keynum: 1, secret: 'y' }] }), ConfigError);
    // 33 two-byte characters (66 bytes) too: the limit is in bytes, as Exim's.
    for (const secret of ['y'.repeat(65), 'é'.repeat(33)]) {
      assert.throws(() => new Batv({ keys: [{ keynum: 1, secret }] }), (err: unknown) => err instanceof ConfigError && err.message === 'batv: the secret of key 1 is longer than 64 bytes (Exim refuses it)', secret);
    }
    // An empty HMAC key is public: anyone could sign a bounce that checks valid (regression).
    assert.throws(() => new Batv({ keys: [{ keynum: 2, secret: 'x' }, { keynum: 1, secret: '' }] }), (err: unknown) => err instanceof ConfigError && err.message === 'batv: the secret of key 1 is empty');
  });

  it("the 'bounded' window refuses stamps Exim would take again later in the 1000-day cycle", () => {
    const signed = prvsSign('user@example.com', { keynum: 0, secret: 's' }, T0);
    assert.ok(signed.ok, 'signed.ok');
    const later = T0 + 300 * DAY; // today's stamp 562 > 269: expired for Exim too
    const cycleLater = T0 + 800 * DAY; // today's stamp 69 < 269: Exim calls it valid
    assert.equal(new Batv({ keys: [{ keynum: 0, secret: 's' }] }).check(signed.address, later).status, 'expired');
    assert.equal(new Batv({ keys: [{ keynum: 0, secret: 's' }] }).check(signed.address, cycleLater).status, 'valid');
    assert.equal(new Batv({ keys: [{ keynum: 0, secret: 's' }], window: 'bounded' }).check(signed.address, cycleLater).status, 'expired');
    assert.equal(new Batv({ keys: [{ keynum: 0, secret: 's' }], window: 'bounded' }).check(signed.address, T0 - DAY).status, 'valid');
  });
});

describe('BATV edges (mutation testing)', () => {
  const batv = new Batv({ keys: [{ keynum: 2, secret: 'new' }, { keynum: 1, secret: 'old' }] });

  it("Exim's wrap fudge at its bounds: stamp 000 is valid on its signing day 993, stamp 007 is not a wrapped one", () => {
    const day993 = 20_993 * DAY;
    assert.equal(prvsDayStamp(day993), 993);
    const signed = batv.sign('user@example.com', day993);
    assert.ok(signed.ok && signed.address.startsWith('prvs=2000'), 'signed.ok && signed.address.startsWith(\'prvs=2000\')');
    assert.equal(signed.ok && batv.check(signed.address, day993).status, 'valid');
    assert.equal(prvsStampValid(6, 20_999 * DAY), true);
    // 007 is signed on day 1000 (000): on day 993 it is 14 days ahead, which Exim does not fudge.
    assert.equal(prvsStampValid(7, day993), false);
    assert.equal(prvsStampValid(7, 20_999 * DAY), false);
  });

  it("the 'bounded' window takes a stamp up to today + 8 (a day of clock skew) and no further, across the wrap too", () => {
    for (const day of [20_500, 20_995]) {
      const today = prvsDayStamp(day * DAY);
      assert.equal(prvsStampValid((today + 8) % 1000, day * DAY, 'bounded'), true, `day ${day}: today + 8`);
      assert.equal(prvsStampValid((today + 9) % 1000, day * DAY, 'bounded'), false, `day ${day}: today + 9`);
      assert.equal(prvsStampValid((today + 999) % 1000, day * DAY, 'bounded'), false, `day ${day}: yesterday`);
    }
  });

  it('a forged signature is told as such even when its stamp is also out of date (Exim checks the hash first)', () => {
    const forged = prvsSign('user@example.com', { keynum: 2, secret: 'guess' }, T0);
    assert.ok(forged.ok, 'forged.ok');
    assert.equal(batv.check(forged.address, T0 + 30 * DAY).status, 'bad-signature');
  });

  it("tells an empty local part as unqualified, and an address of exactly 512 octets by its signed form's length", () => {
    assert.deepEqual(batv.sign('@example.com', T0), { ok: false, reason: 'unqualified', message: 'prvs needs a qualified address (local@domain)' });
    const limit = `${'u'.repeat(512 - '@example.com'.length)}@example.com`;
    assert.deepEqual(batv.sign(limit, T0), { ok: false, reason: 'too-long', message: 'the signed address would be longer than 512 octets' });
  });

  it('takes a 64-byte secret (the limit, Exim takes it) and refuses a key number that is no integer', () => {
    const long = new Batv({ keys: [{ keynum: 0, secret: 'y'.repeat(64) }] });
    const signed = long.sign('user@example.com', T0);
    assert.equal(signed.ok && long.check(signed.address, T0).status, 'valid');
    assert.throws(() => new Batv({ keys: [{ keynum: 1.5, secret: 'x' }] }), ConfigError);
    assert.throws(() => new Batv({ keys: [{ keynum: Number.NaN, secret: 'x' }] }), ConfigError);
  });

  it('parsePrvs splits the address at its last @, as the greedy pattern of Exim does', () => {
    const parts = parsePrvs('prvs=1269e93bf9=a@b@example.com');
    assert.deepEqual(parts && { local: parts.local, domain: parts.domain, original: parts.original }, { local: 'a@b', domain: 'example.com', original: 'a@b@example.com' });
  });
});

describe('BATV properties', () => {
  const address = fc
    .tuple(fc.stringMatching(/^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,40}$/), fc.stringMatching(/^[A-Za-z0-9-]{1,20}(\.[A-Za-z]{2,6}){1,2}$/))
    .map(([l, d]) => `${l}@${d}`);
  const now = fc.integer({ min: Date.UTC(2000, 0, 1), max: Date.UTC(2100, 0, 1) });
  const key = fc.record({ keynum: fc.integer({ min: 0, max: 9 }), secret: fc.string({ minLength: 1, maxLength: 64 }).filter((s) => Buffer.byteLength(s) <= 64) });

  it('sign then check is valid from the signing day through day 7, with the original back, in both windows', () => {
    fc.assert(
      fc.property(address, now, key, fc.integer({ min: 0, max: 7 * DAY }), (addr, t, k, later) => {
        for (const window of ['exim', 'bounded'] as const) {
          const batv = new Batv({ keys: [k], window });
          const signed = batv.sign(addr, t);
          if (!signed.ok) return addr.startsWith('prvs=') || addr.toLowerCase().startsWith('prvs=');
          const checkDay = Math.floor(t / DAY) * DAY + later;
          assert.deepEqual(batv.check(signed.address, checkDay), { status: 'valid', original: addr, keynum: k.keynum });
        }
        return true;
      }),
    );
  });

  it('any single changed character of the tag or the address fails', () => {
    fc.assert(
      fc.property(address, now, key, fc.nat(), fc.constantFrom(...'0123456789abcdefXYZ.@'), (addr, t, k, index, replacement) => {
        const batv = new Batv({ keys: [k] });
        const signed = batv.sign(addr, t);
        if (!signed.ok) return true;
        const position = 5 + (index % (signed.address.length - 5));
        const tampered = signed.address.slice(0, position) + replacement + signed.address.slice(position + 1);
        if (tampered === signed.address) return true;
        const result = batv.check(tampered, t);
        // A changed stamp digit may still match by chance only if the hash also matches: 2^-24.
        return result.status !== 'valid';
      }),
    );
  });

  it('a week and a day later it is expired (Exim\'s window: except across its 999 to 000 wrap; the bounded window: always)', () => {
    fc.assert(
      fc.property(address, now, key, (addr, t, k) => {
        const later = Math.floor(t / DAY) * DAY + 8 * DAY;
        // Exim compares three-digit day stamps: a stamp of 993-999 checked after the wrap to
        // 000-007 counts as later than today, so it is valid again (the hole 'bounded' closes).
        const acrossWrap = Math.floor(later / DAY) % 1000 < 8;
        const exim = new Batv({ keys: [k] });
        const signed = exim.sign(addr, t);
        if (!signed.ok) return true;
        if (!acrossWrap) assert.equal(exim.check(signed.address, later).status, 'expired');
        assert.equal(new Batv({ keys: [k], window: 'bounded' }).check(signed.address, later).status, 'expired');
        return true;
      }),
    );
  });

  it('whatever the address, sign either refuses it or writes one address that checks valid with it as the original', () => {
    const batv = new Batv({ keys: [{ keynum: 3, secret: 's' }] });
    // Mostly harmless characters, so that about one address in eight is signed.
    const unit = fc.oneof({ arbitrary: fc.constantFrom('a', 'b', '.', '+', '-', '=', ' ', 'é'), weight: 6 }, fc.constantFrom('@', '"', '\u0000', '\u007f'));
    const part = fc.string({ unit, maxLength: 6 });
    const text = fc.oneof(part, fc.tuple(part, part).map(([local, domain]) => `${local}@${domain}`));
    fc.assert(
      fc.property(text, now, (addr, t) => {
        const signed = batv.sign(addr, t);
        if (!signed.ok) return true;
        assert.equal(signed.address.split('@').length, 2, signed.address);
        assert.ok(!signed.address.includes('"'), signed.address);
        assert.deepEqual(batv.check(signed.address, t), { status: 'valid', original: addr, keynum: 3 });
        return true;
      }),
      { numRuns: 400 },
    );
  });

  it('a key file line is KEYNUM (one digit) then a secret that starts at a character that is not white space', () => {
    assert.deepEqual(batvKeyFileLines('# keys\n\n 1 s3cret \r\n1  \n10 ten\n2\tx'), [
      { number: 3, key: { keynum: 1, secret: 's3cret ' } },
      { number: 4, key: undefined },
      { number: 5, key: undefined },
      { number: 6, key: { keynum: 2, secret: 'x' } },
    ]);
    const unit = fc.constantFrom('0', '1', '9', ' ', '\t', '#', 'a', '\n', '\r\n');
    fc.assert(
      fc.property(fc.string({ unit, maxLength: 60 }), (text) => {
        const lines = text.split(/\r?\n/);
        for (const { number, key } of batvKeyFileLines(text)) {
          assert.ok(number >= 1 && number <= lines.length, 'number >= 1 && number <= lines.length');
          if (key) assert.ok(key.keynum >= 0 && key.keynum <= 9 && /^\S/.test(key.secret) && lines[number - 1]!.includes(key.secret), JSON.stringify(text));
        }
      }),
    );
  });

  it('parsing and checking never throw on any text', () => {
    const batv = new Batv({ keys: [{ keynum: 0, secret: 's' }] });
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 600 }), fc.string().map((s) => `prvs=0123abcdef=${s}`)), now, (text, t) => {
        parsePrvs(text);
        batv.check(text, t);
        batv.sign(text, t);
        return true;
      }),
    );
  });

  it('day stamps and the Exim wrap fudge', () => {
    assert.equal(prvsDayStamp(T0), 262);
    assert.equal(prvsDayStamp(T0, 7), 269);
    assert.equal(prvsStampValid(3, 20_995 * DAY), true);
    assert.equal(prvsStampValid(990, 20_995 * DAY), false);
  });
});
