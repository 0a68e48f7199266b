import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ConfigError } from '../../src/core/errors.js';
import { Srs, isSrsAddress, srsDomain, srsTimestamp } from '../../src/rewrite/srs.js';
import { elapsedMs } from '../support/fuzz.js';

const DAY = 86_400_000;
/** 2020-01-01 00:01 UTC, the instant of postsrsd's and libsrs2's own test vectors (day 854 mod 1024). */
const T0 = 1_577_836_860_000;
const srs = new Srs({ domain: 'example.com', secrets: ['tops3cr3t'] });

function forwarded(result: ReturnType<Srs['forward']>): string {
  assert.ok(result.ok, JSON.stringify(result));
  return result.ok ? result.address : '';
}

describe('SRS forward, the vectors of postsrsd and libsrs2 (secret tops3cr3t, 2020-01-01)', () => {
  it('SRS0 of a plain sender', () => {
    assert.equal(forwarded(srs.forward('test@otherdomain.com', T0)), 'SRS0=vmyz=2W=otherdomain.com=test@example.com');
  });
  it('SRS1 of a foreign SRS0, keeping its separator (double =), without checking its hash', () => {
    assert.equal(forwarded(srs.forward('SRS0=opaque+string@otherdomain.com', T0)), 'SRS1=chaI=otherdomain.com==opaque+string@example.com');
  });
  it('separator + and SRS1 of SRS0 made by the first hop (its hash is the same whatever the separator)', () => {
    const hop2 = new Srs({ domain: 'forwarder.example', secrets: ['tops3cr3t'], separator: '+' });
    // A month later the SRS0 no longer reverses here, so it is not "already rewritten".
    assert.equal(
      forwarded(hop2.forward('SRS0+vmyz=2W=otherdomain.com=test@example.com', T0 + 30 * DAY)),
      'SRS1+VLN/=example.com=+vmyz=2W=otherdomain.com=test@forwarder.example',
    );
  });
  it('hashes the decoded text with spaces', () => {
    assert.equal(forwarded(srs.forward('sp ace@otherdomain.com', T0)), 'SRS0=rB5n=2W=otherdomain.com=sp ace@example.com');
  });
  it('refuses senders libsrs2 rewrites into addresses that do not reverse to them', () => {
    const refusal = (sender: string) => {
      const result = srs.forward(sender, T0);
      return result.ok ? `rewritten to ${result.address}` : `${result.reason}: ${result.message}`;
    };
    // libsrs2 and postsrsd write SRS0=Cqui=2W=b@otherdomain.com=a@example.com, which reverses to nothing.
    assert.equal(refusal('a@b@otherdomain.com'), "malformed: Cannot rewrite an address with more than one '@'.");
    const quoted = 'malformed: Cannot rewrite an address with a quoted local part (a quoted string cannot be embedded in another local part).';
    assert.equal(refusal('"a@b"@x.test'), quoted);
    assert.equal(refusal('"a b"@x.test'), quoted);
    assert.equal(refusal('@x'), 'malformed: Cannot rewrite an address with an empty local part.');
    assert.equal(refusal('a@'), 'malformed: Cannot rewrite an address with an empty domain.');
    assert.equal(refusal('a\u0001@x.test'), 'malformed: Cannot rewrite an address with a control character (U+0001).');
    // SRS0=…=[192.0.2.1]=user@example.com leaves Postfix quoted, and its quoted form reverses to nothing.
    const literal = "malformed: Cannot rewrite an address with '[' in its domain (an address literal: the local part written with it would need quotes, and Postfix's quoted form does not reverse).";
    assert.equal(refusal('user@[192.0.2.1]'), literal);
    assert.equal(refusal('user@[IPv6:2001:db8::1]'), literal);
    // Not an address literal, so not called one (regression: "'>' in its domain (an address literal: ..."), and a path is no address.
    assert.equal(refusal('<user@example.org>'), 'malformed: Cannot rewrite an address with angle brackets (a path, as the mail log writes it: give the address alone).');
    assert.equal(refusal('user@example.org:25'), "malformed: Cannot rewrite an address with ':' in its domain (the local part written with it would need quotes, and Postfix's quoted form does not reverse).");
    assert.equal(refusal('user@example.org;'), "malformed: Cannot rewrite an address with ';' in its domain (the local part written with it would need quotes, and Postfix's quoted form does not reverse).");
    assert.equal(refusal('user@example.org extra'), "malformed: Cannot rewrite an address with a space in its domain (the local part written with it would need quotes, and Postfix's quoted form does not reverse).");
    assert.equal(refusal('user@example.org\u00a0'), "malformed: Cannot rewrite an address with white space (U+00A0) in its domain (the local part written with it would need quotes, and Postfix's quoted form does not reverse).");
    assert.equal(refusal('a@b=c.test'), "malformed: Cannot rewrite an address with '=' in its domain (reverse would end the domain there).");
    assert.equal(refusal('SRS0=opaque@b=c.test'), "malformed: Cannot rewrite an address with '=' in its domain (reverse would end the domain there).");
  });
  it('refuses a sender whose SRS address would be longer than reverse takes (512 octets), as NOTFOUND, not PERM', () => {
    // SRS0=HHHH=TT=host=user@example.com is the sender plus 25 octets.
    const longest = `${'u'.repeat(487 - '@otherdomain.com'.length)}@otherdomain.com`;
    const made = forwarded(srs.forward(longest, T0));
    assert.equal(Buffer.byteLength(made), 512);
    assert.deepEqual(srs.reverse(made, T0), { ok: true, scheme: 'SRS0', address: longest });
    assert.deepEqual(srs.forward(`u${longest}`, T0), { ok: false, reason: 'result-too-long', message: 'Rewritten address too big.' });
  });
  it('matches Debian postsrsd 1.10 in real time (2026-12-04)', () => {
    assert.equal(forwarded(srs.forward('alice@example.org', 1_796_392_569_000)), 'SRS0=Ceun=JX=example.org=alice@example.com');
  });
  it('re-signs an SRS1 keeping the first hop and the original SRS0 remainder', () => {
    const other = new Srs({ domain: 'third.example', secrets: ['different'] });
    const srs1 = forwarded(srs.forward('SRS0=opaque+string@otherdomain.com', T0));
    const again = forwarded(other.forward(srs1, T0));
    assert.match(again, /^SRS1=[A-Za-z0-9+/]{4}=otherdomain\.com==opaque\+string@third\.example$/);
    assert.equal(other.reverse(again, T0).ok && (other.reverse(again, T0) as { address: string }).address, 'SRS0=opaque+string@otherdomain.com');
  });
  it('leaves local domains, the SRS domain, addresses without a domain and our own SRS addresses alone', () => {
    const local = new Srs({ domain: 'example.com', secrets: ['s'], localDomains: ['example.net', '.corp.example'] });
    assert.equal(local.forward('a@example.net', T0).ok, false);
    assert.equal(local.forward('a@EXAMPLE.com', T0).ok, false);
    assert.equal(local.forward('a@x.corp.example', T0).ok, false);
    assert.equal(local.forward('a@corp.example', T0).ok, true);
    assert.deepEqual(local.forward('nodomain', T0), { ok: false, reason: 'no-domain', message: 'No domain.' });
    const own = forwarded(srs.forward('test@otherdomain.com', T0)).replace('@example.com', '@elsewhere.example');
    assert.deepEqual(srs.forward(own, T0), { ok: false, reason: 'already-rewritten', message: 'Already rewritten' });
    const always = new Srs({ domain: 'example.com', secrets: ['s'], localDomains: ['example.net'], alwaysRewrite: true });
    assert.equal(always.forward('a@example.net', T0).ok, true);
  });
});

describe('SRS reverse', () => {
  it('keeps the case of the received address and ignores its domain', () => {
    assert.deepEqual(srs.reverse('SRS0=XJO9=2V=OTHERDOMAIN.COM=TEST@EXAMPLE.COM', T0), { ok: true, scheme: 'SRS0', address: 'TEST@OTHERDOMAIN.COM' });
    assert.equal(srs.reverse('srs0=vmyz=2w=otherdomain.com=test@elsewhere.example', T0).ok, true);
  });
  it('SRS1 reverses to the SRS0 it was made from', () => {
    assert.deepEqual(srs.reverse('SRS1=chaI=otherdomain.com==opaque+string@example.com', T0), {
      ok: true,
      scheme: 'SRS1',
      address: 'SRS0=opaque+string@otherdomain.com',
    });
  });
  it('accepts 21 days, refuses 22 and the future', () => {
    const at = (stamp: string) => srs.forward('test@otherdomain.com', T0) && srs.reverse(`SRS0=xxxx=${stamp}=otherdomain.com=test@example.com`, T0);
    // Hash is checked after the timestamp: a bad hash with a good stamp says so.
    assert.equal((at('2B') as { reason: string }).reason, 'bad-hash');
    assert.equal((at('2A') as { reason: string }).reason, 'expired');
    const tomorrow = forwarded(srs.forward('test@otherdomain.com', T0 + DAY));
    assert.deepEqual(srs.reverse(tomorrow, T0), { ok: false, reason: 'future', message: 'Time stamp out of date.' });
    const aged = forwarded(srs.forward('test@otherdomain.com', T0 - 21 * DAY));
    assert.equal(srs.reverse(aged, T0).ok, true);
    assert.equal(srs.reverse(forwarded(srs.forward('test@otherdomain.com', T0 - 22 * DAY)), T0).ok, false);
  });
  it('accepts base64url hashes, smashed case and longer hashes; refuses short ones', () => {
    const url = new Srs({ domain: 'forwarder.example', secrets: ['tops3cr3t'], separator: '+', alphabet: 'base64url' });
    const srs1 = forwarded(url.forward('SRS0+vmyz=2W=otherdomain.com=test@example.com', T0 + 30 * DAY));
    assert.equal(srs1, 'SRS1+VLN_=example.com=+vmyz=2W=otherdomain.com=test@forwarder.example');
    const vln = new Srs({ domain: 'forwarder.example', secrets: ['tops3cr3t'] });
    assert.equal(vln.reverse('SRS1+VLN_=example.com=+vmyz=2W=otherdomain.com=test@forwarder.example', T0).ok, true);
    assert.equal(vln.reverse('SRS1+vln/=example.com=+vmyz=2W=otherdomain.com=test@forwarder.example', T0).ok, true);
    assert.equal(srs.reverse('SRS0=vmyzQ=2W=otherdomain.com=test@example.com', T0).ok, true);
    assert.deepEqual(srs.reverse('SRS0=vmy=2W=otherdomain.com=test@example.com', T0), { ok: false, reason: 'hash-too-short', message: 'Hash too short in SRS address.' });
  });
  it('every secret verifies, the first signs', () => {
    const rotated = new Srs({ domain: 'example.com', secrets: ['new', 'tops3cr3t'] });
    assert.equal(rotated.reverse('SRS0=vmyz=2W=otherdomain.com=test@example.com', T0).ok, true);
    assert.notEqual(forwarded(rotated.forward('test@otherdomain.com', T0)), 'SRS0=vmyz=2W=otherdomain.com=test@example.com');
  });
  it('names what is missing in malformed addresses', () => {
    const reason = (a: string) => {
      const r = srs.reverse(a, T0);
      return r.ok ? 'ok' : r.message;
    };
    assert.equal(reason('user@example.com'), 'Not an SRS address.');
    assert.equal(reason('SRS0=@example.com'), 'No hash in SRS0 address.');
    assert.equal(reason('SRS0=abcd@example.com'), 'No timestamp in SRS0 address.');
    assert.equal(reason('SRS0=abcd=2W@example.com'), 'No host in SRS0 address.');
    assert.equal(reason('SRS0==2W=host=user@example.com'), 'Hash too short in SRS address.');
    assert.equal(reason('SRS0=abcd==host=user@example.com'), 'Time stamp out of date.');
    assert.equal(reason('SRS0=abcd=2W=host=@example.com'), 'No user in SRS0 address.');
    assert.equal(reason('SRS0=abcd=2!=host=user@example.com'), 'Bad base32 character in timestamp.');
    assert.equal(reason('SRS1=abcd=host@example.com'), 'No host in SRS1 address.');
    assert.equal(reason('SRS1=abcd=host=@example.com'), 'No user in SRS1 address.');
  });
  it('detects SRS tags in any case, with any of the three separators', () => {
    assert.equal(isSrsAddress('srs0-x'), true);
    assert.equal(isSrsAddress('Srs1+x'), true);
    assert.equal(isSrsAddress('SRS2=x'), false);
    assert.equal(isSrsAddress('ſRS0=x'), false);
    assert.equal(srsTimestamp(T0), '2W');
  });
  it('refuses unusable options with ConfigError', () => {
    assert.throws(() => new Srs({ domain: 'x', secrets: [] }), ConfigError);
    assert.throws(() => new Srs({ domain: '', secrets: ['s'] }), ConfigError);
    // postsrsd's subdomain form, or a quoting slip, would write senders no bounce can reach (regression).
    assert.throws(() => new Srs({ domain: '.example.com', secrets: ['s'] }), (err: unknown) => err instanceof ConfigError && err.message === 'srs: the SRS domain ".example.com" is not a domain name: empty domain label at 0');
    assert.throws(() => new Srs({ domain: 'example.com ', secrets: ['s'] }), (err: unknown) => err instanceof ConfigError && err.message.startsWith('srs: the SRS domain "example.com " is not a domain name: '));
    // The root's dot was written into every sender, and the forwarder's own senders were rewritten (regression).
    assert.throws(() => new Srs({ domain: 'forwarder.example.', secrets: ['s'] }), (err: unknown) => err instanceof ConfigError && err.message === 'srs: the SRS domain "forwarder.example." ends in a dot: write it without the root\'s dot');
    assert.equal(new Srs({ domain: 'postmaster@forwarder.example', secrets: ['s'] }).domain, 'forwarder.example');
    assert.throws(() => new Srs({ domain: 'x', secrets: ['s'], separator: '#' as '=' }), ConfigError);
    assert.throws(() => new Srs({ domain: 'x', secrets: ['s'], hashLength: 28 }), ConfigError);
    assert.throws(() => new Srs({ domain: 'x', secrets: ['s'], hashMin: 5 }), ConfigError);
  });
});

describe('SRS edges (mutation testing)', () => {
  const reason = (r: ReturnType<Srs['reverse']> | ReturnType<Srs['forward']>) => (r.ok ? `ok ${r.address}` : `${r.reason}: ${r.message}`);

  it("hashes compare with '+' equal to '-' and in any case, 'z' included", () => {
    assert.equal(forwarded(srs.forward('user7@otherdomain.com', T0)), 'SRS0=5w+l=2W=otherdomain.com=user7@example.com');
    assert.equal(reason(srs.reverse('SRS0=5w-l=2W=otherdomain.com=user7@example.com', T0)), 'ok user7@otherdomain.com');
    assert.equal(reason(srs.reverse('SRS0=VMYZ=2W=otherdomain.com=test@example.com', T0)), 'ok test@otherdomain.com');
  });

  it('with several secrets, what the first signs reverses (as does what any other signed)', () => {
    const rotated = new Srs({ domain: 'example.com', secrets: ['new', 'tops3cr3t'] });
    const made = forwarded(rotated.forward('test@otherdomain.com', T0));
    assert.equal(reason(rotated.reverse(made, T0)), 'ok test@otherdomain.com');
    assert.deepEqual(rotated.forward(made.replace('@example.com', '@elsewhere.example'), T0), { ok: false, reason: 'already-rewritten', message: 'Already rewritten' });
  });

  it('refuses an empty secret among others, hashMin 0 (an empty hash would pass) and maxAgeDays past half the cycle; takes the limits themselves', () => {
    assert.throws(() => new Srs({ domain: 'x', secrets: ['s', ''] }), ConfigError);
    assert.throws(() => new Srs({ domain: 'x', secrets: ['s'], hashMin: 0 }), ConfigError);
    assert.throws(() => new Srs({ domain: 'x', secrets: ['s'], maxAgeDays: 512 }), ConfigError);
    assert.throws(() => new Srs({ domain: 'x', secrets: ['s'], maxAgeDays: -1 }), ConfigError);
    const widest = new Srs({ domain: 'x.example', secrets: ['s'], maxAgeDays: 511 });
    assert.equal(widest.reverse(forwarded(widest.forward('a@b.example', T0)), T0 + 511 * DAY).ok, true, 'an address 511 days old is taken');
    const full = new Srs({ domain: 'example.com', secrets: ['tops3cr3t'], hashLength: 27 });
    assert.equal(reason(full.reverse(forwarded(full.forward('test@otherdomain.com', T0)), T0)), 'ok test@otherdomain.com');
  });

  it('forwards a sender of exactly 512 octets when its rewrite fits (an SRS1 with a long foreign hash shrinks)', () => {
    const head = `SRS1=${'h'.repeat(20)}=hop.example==`;
    const tail = `@${'d'.repeat(60)}.example`;
    const sender = `${head}${'u'.repeat(512 - head.length - tail.length)}${tail}`;
    assert.equal(Buffer.byteLength(sender), 512);
    assert.match(forwarded(srs.forward(sender, T0)), /^SRS1=[^=]{4}=hop\.example==u+@example\.com$/);
  });

  it('refuses an empty host, in forward of an SRS1 and in reverse of SRS0 and SRS1', () => {
    assert.equal(reason(srs.forward('SRS1=abcd==x=user@other.example', T0)), 'malformed: No host or user in SRS1 address.');
    assert.equal(reason(srs.reverse('SRS1=abcd==x=user@example.com', T0)), 'malformed: No host in SRS1 address.');
    assert.equal(reason(srs.reverse('SRS0=abcd=2W==user@example.com', T0)), 'malformed: No host in SRS0 address.');
  });

  it('a stamp up to maxAgeDays ahead is from the future, one further is expired', () => {
    assert.equal(reason(srs.reverse(forwarded(srs.forward('test@otherdomain.com', T0 + 21 * DAY)), T0)), 'future: Time stamp out of date.');
    assert.equal(reason(srs.reverse(forwarded(srs.forward('test@otherdomain.com', T0 + 22 * DAY)), T0)), 'expired: Time stamp out of date.');
    // A stamp that is not two characters is out of date, whatever the hash.
    assert.equal(reason(srs.reverse('SRS0=vmyz=2WA=otherdomain.com=test@example.com', T0)), 'expired: Time stamp out of date.');
  });

  it('reverse reads the local part up to the first @', () => {
    assert.equal(reason(srs.reverse('SRS0=vmyz=2W=otherdomain.com=test@x@example.com', T0)), 'ok test@otherdomain.com');
  });

  it('with hashMin below hashLength, a hash is compared over every character given, not over hashMin', () => {
    const lenient = new Srs({ domain: 'example.com', secrets: ['tops3cr3t'], hashMin: 2 });
    assert.equal(reason(lenient.reverse('SRS0=vm=2W=otherdomain.com=test@example.com', T0)), 'ok test@otherdomain.com');
    assert.equal(reason(lenient.reverse('SRS0=vmy=2W=otherdomain.com=test@example.com', T0)), 'ok test@otherdomain.com');
    assert.equal(reason(lenient.reverse('SRS0=vmyq=2W=otherdomain.com=test@example.com', T0)), 'bad-hash: Hash invalid in SRS address.');
    assert.equal(reason(lenient.reverse('SRS0=vmq=2W=otherdomain.com=test@example.com', T0)), 'bad-hash: Hash invalid in SRS address.');
  });
});

describe('SRS properties', () => {
  const user = fc.stringMatching(/^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,40}$/);
  const host = fc.stringMatching(/^[A-Za-z0-9-]{1,20}(\.[A-Za-z]{2,6}){1,2}$/).filter((h) => h.toLowerCase() !== 'fwd.example');
  const now = fc.integer({ min: Date.UTC(2000, 0, 1), max: Date.UTC(2100, 0, 1) });
  const options = fc.record({
    separator: fc.constantFrom('=', '+', '-' as const),
    alphabet: fc.constantFrom('base64', 'base64url' as const),
    hashLength: fc.integer({ min: 4, max: 10 }),
    secret: fc.string({ minLength: 1, maxLength: 40 }),
  });
  const make = (o: { separator: '=' | '+' | '-'; alphabet: 'base64' | 'base64url'; hashLength: number; secret: string }) =>
    new Srs({ domain: 'fwd.example', secrets: [o.secret], separator: o.separator, alphabet: o.alphabet, hashLength: o.hashLength });

  it('forward then reverse is the identity (SRS0), within 21 days', () => {
    fc.assert(
      fc.property(user, host, now, options, fc.integer({ min: 0, max: 21 }), (u, h, t, o, days) => {
        const s = make(o);
        const out = s.forward(`${u}@${h}`, t);
        if (!out.ok) return out.reason === 'already-rewritten';
        const back = s.reverse(out.address, t + days * DAY);
        return back.ok && back.address === `${u}@${h}`;
      }),
    );
  });

  it('tampered addresses and addresses older than 21 days fail', () => {
    fc.assert(
      fc.property(user, host, now, options, fc.nat(), fc.integer({ min: 22, max: 1000 }), (u, h, t, o, index, days) => {
        const s = make(o);
        const out = s.forward(`${u}@${h}`, t);
        if (!out.ok) return true;
        if (s.reverse(out.address, t + days * DAY).ok) return false;
        const local = out.address.slice(0, out.address.lastIndexOf('@'));
        const position = 5 + (index % (local.length - 5));
        const original = local[position]!;
        const swap = /[a-z]/i.test(original) ? (original === 'q' || original === 'Q' ? 'z' : 'q') : 'x';
        const tampered = local.slice(0, position) + swap + local.slice(position + 1) + '@fwd.example';
        const back = s.reverse(tampered, t);
        // A case change inside the hash is not tampering (hashes compare case-insensitively).
        return !back.ok || back.address !== `${u}@${h}` || tampered.toLowerCase() === out.address.toLowerCase();
      }),
    );
  });

  it('whatever the sender, forward either refuses it or writes one address that reverses to it', () => {
    const s = new Srs({ domain: 'fwd.example', secrets: ['x'] });
    // Mostly harmless characters, so that about one sender in eight is rewritten.
    const unit = fc.oneof({ arbitrary: fc.constantFrom('a', 'b', '.', '+', '-', ' ', '\\', 'é'), weight: 6 }, fc.constantFrom('=', '@', '"', '\u0000', '\u007f'));
    const part = fc.string({ unit, maxLength: 6 });
    const sender = fc.oneof(part, fc.tuple(part, part).map(([local, domain]) => `${local}@${domain}`));
    fc.assert(
      fc.property(sender, now, (text, t) => {
        const out = s.forward(text, t);
        if (!out.ok) return true;
        assert.equal(out.address.split('@').length, 2, out.address);
        assert.ok(!out.address.includes('"'), out.address);
        assert.deepEqual(s.reverse(out.address, t), { ok: true, scheme: 'SRS0', address: text });
        return true;
      }),
      { numRuns: 400 },
    );
  });

  it('srsDomain reads any text as a domain without "@" or says why it is none, in linear time', () => {
    const written = fc.oneof(fc.domain(), fc.tuple(fc.string({ maxLength: 10 }), fc.domain()).map(([local, domain]) => `${local}@${domain}`), fc.string({ unit: 'binary', maxLength: 80 }));
    fc.assert(
      fc.property(written, (text) => {
        const result = srsDomain(text);
        if (!result.ok) return assert.ok(result.problem.length > 0, 'result.problem.length > 0');
        assert.ok(result.domain !== '' && !result.domain.includes('@') && text.endsWith(result.domain), JSON.stringify(result));
      }),
    );
    for (const text of ['@'.repeat(100_000), `${'a.'.repeat(50_000)}example`, 'ä'.repeat(100_000)]) {
      assert.ok(elapsedMs(() => srsDomain(text)) < 100, text.slice(0, 10));
    }
  });

  it('never throws on any input', () => {
    const s = new Srs({ domain: 'fwd.example', secrets: ['x'] });
    const srsish = fc.tuple(fc.constantFrom('SRS0', 'srs1', 'SRS1', 'SRS0'), fc.constantFrom('=', '+', '-'), fc.string({ maxLength: 80 })).map(([a, b, c]) => a + b + c);
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 600 }), srsish), now, (text, t) => {
        s.forward(text, t);
        s.reverse(text, t);
        return true;
      }),
    );
  });
});
