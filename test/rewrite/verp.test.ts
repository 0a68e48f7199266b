import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ConfigError } from '../../src/core/errors.js';
import { QMAIL_VERP_DELIMITERS, parseVerpDelimiters, verpDecode, verpEncode, verpSenderProblem } from '../../src/rewrite/verp.js';

describe('VERP', () => {
  it('encodes as Postfix verp_sender() does, with +=', () => {
    assert.deepEqual(verpEncode('owner-listname@origin', 'user@domain'), { ok: true, address: 'owner-listname+user=domain@origin' });
    assert.deepEqual(verpEncode('list-bounces@list.example', 'x=y@z.example'), { ok: true, address: 'list-bounces+x=y=z.example@list.example' });
  });
  it('refuses what it cannot write as an address that decodes to the recipient', () => {
    const refusal = (sender: string, recipient: string, delimiters = parseVerpDelimiters('+=')) => {
      const result = verpEncode(sender, recipient, delimiters);
      return result.ok ? `encoded as ${result.address}` : `${result.reason}: ${result.message}`;
    };
    const list = 'list-bounces@lists.test';
    // Postfix's verp_sender() writes list-bounces+@lists.test, list-bounces+a@lists.test, owner+user, +a=b.test.
    assert.equal(refusal(list, ''), "bad-recipient: the recipient is an address with no '@' and domain");
    assert.equal(refusal(list, '<>'), "bad-recipient: the recipient is an address with no '@' and domain");
    assert.equal(refusal(list, 'a@'), 'bad-recipient: the recipient is an address with an empty domain');
    assert.match(refusal(list, 'a@[192.0.2.1]'), /^bad-recipient: the recipient is an address with '\[' in its domain \(an address literal/);
    assert.equal(refusal(list, '@x'), 'bad-recipient: the recipient is an address with an empty local part');
    assert.equal(refusal(list, 'a@b@c'), "bad-recipient: the recipient is an address with more than one '@'");
    assert.equal(refusal(list, '"a b"@x.test'), 'bad-recipient: the recipient is an address with a quoted local part (a quoted string cannot be embedded in another local part)');
    assert.equal(refusal(list, 'a\u007f@x.test'), 'bad-recipient: the recipient is an address with a control character (U+007F)');
    assert.equal(refusal('owner', 'user'), "bad-sender: the sender is an address with no '@' and domain");
    assert.equal(refusal('', 'a@b.test'), "bad-sender: the sender is an address with no '@' and domain");
    assert.equal(refusal('@', 'a@b.test'), 'bad-sender: the sender is an address with an empty local part');
    assert.equal(refusal('list@', 'a@b.test'), 'bad-sender: the sender is an address with an empty domain');
    assert.equal(refusal('"list x"@lists.test', 'a@b.test'), 'bad-sender: the sender is an address with a quoted local part (a quoted string cannot be embedded in another local part)');
    // Decoding would take the domain after its '-': a@my-host.test would come back as a=my@host.test.
    assert.equal(refusal(list, 'a@my-host.test', parseVerpDelimiters('+-')), 'bad-recipient: the recipient\'s domain holds the delimiter "-", so the address would not decode');
  });
  it('encodes qmail style with -=', () => {
    assert.deepEqual(verpEncode('list-@example.com', 'joe@big.example', QMAIL_VERP_DELIMITERS), { ok: true, address: 'list--joe=big.example@example.com' });
    assert.deepEqual(verpEncode('list@example.com', 'joe@big.example', parseVerpDelimiters('-=')), { ok: true, address: 'list-joe=big.example@example.com' });
  });
  it('decodes at the last domain delimiter, prefix and origin in any case', () => {
    assert.deepEqual(verpDecode('list-bounces+x=y=z.example@list.example', 'list-bounces@list.example'), {
      ok: true,
      recipient: 'x=y@z.example',
      sender: 'list-bounces@list.example',
    });
    assert.equal(verpDecode('LIST-BOUNCES+a=b.example@LIST.example', 'list-bounces@list.example').ok, true);
  });
  it('says what does not match', () => {
    const reason = (address: string) => {
      const r = verpDecode(address, 'list-bounces@list.example');
      return r.ok ? `decoded ${r.recipient}` : r.message;
    };
    assert.equal(reason('other+a=b.example@list.example'), 'local part does not start with list-bounces+');
    assert.equal(reason('list-bounce@list.example'), 'local part does not start with list-bounces+');
    assert.equal(reason('list-bounces+a=b.example@other.example'), 'domain is not list.example');
    const noDelimiter = 'no "=" between the recipient\'s local part and domain';
    assert.equal(reason('list-bounces+ab.example@list.example'), noDelimiter);
    // It starts with list-bounces+ and names no recipient (regression: "does not start with").
    assert.equal(reason('list-bounces+@list.example'), noDelimiter);
    assert.equal(reason('list-bounces+a=@list.example'), noDelimiter);
    assert.equal(reason('list-bounces+=b.example@list.example'), noDelimiter);
    // Read up to the last @, it named the recipient a@b@x, which no encode writes.
    assert.equal(reason('list-bounces+a=b@x@list.example'), 'an "@" in the encoded recipient');
  });
  it('decodes for no sender that encode refuses, saying why as encode does (regression: "domain is not empty")', () => {
    for (const sender of ['list-bounces', '', '@list.example', 'list@', '"list x"@list.example', 'a@b@list.example', '<list-bounces@list.example>', 'list-bounces@list.example.']) {
      const problem = verpSenderProblem(sender);
      assert.ok(problem !== undefined, sender);
      const encoded = verpEncode(sender, 'a@b.example');
      assert.deepEqual(encoded, { ok: false, reason: 'bad-sender', message: problem }, sender);
      assert.deepEqual(verpDecode('list-bounces+a=b.example@list.example', sender), { ok: false, reason: 'bad-sender', message: problem }, sender);
    }
    // As the mail log writes it, or with the root's dot, it was taken, and no bounce ever decoded (regression).
    assert.equal(verpSenderProblem('<list-bounces@list.example>'), 'the sender is an address with angle brackets (a path, as the mail log writes it: give the address alone)');
    assert.equal(verpSenderProblem('list-bounces@list.example.'), 'the sender is not an address: empty domain label at 26');
    assert.deepEqual(verpEncode('list-bounces@list.example.', 'a@b.example'), { ok: false, reason: 'bad-sender', message: 'the sender is not an address: empty domain label at 26' });
    assert.equal(verpSenderProblem('list-bounces'), "the sender is an address with no '@' and domain");
    assert.equal(verpSenderProblem('list-bounces@list.example'), undefined);
    // A local part over RFC 5321's 64 octets is a sender Postfix takes and VERP writes (addresses up to 512 octets).
    const long = `${'l'.repeat(70)}@list.example`;
    assert.equal(verpSenderProblem(long), undefined);
    assert.deepEqual(verpDecode(`${'l'.repeat(70)}+a=b.example@list.example`, long), { ok: true, recipient: 'a@b.example', sender: long });
  });
  it('folds only A-Z in the prefix and origin, as address/key does: a Kelvin sign is no k', () => {
    // toLowerCase() folds U+212A KELVIN SIGN to an ASCII 'k': another sender's return path matched.
    assert.equal(verpDecode('list-\u212Aey+a=b.example@list.example', 'list-key@list.example').ok, false);
    assert.equal(verpDecode('list-key+a=b.example@\u212A.example', 'list-key@k.example').ok, false);
    assert.equal(verpDecode('LIST-KEY+a=b.example@K.EXAMPLE', 'list-key@k.example').ok, true);
  });
  it('takes addresses of exactly 512 octets both ways; the sender prefix counts only with its delimiter', () => {
    const sender = 'list@l.test';
    const recipient = `${'r'.repeat(512 - 'list+=x.test@l.test'.length)}@x.test`;
    const encoded = verpEncode(sender, recipient);
    assert.ok(encoded.ok, 'encoded.ok');
    assert.equal(encoded.ok && Buffer.byteLength(encoded.address), 512);
    assert.deepEqual(encoded.ok && verpDecode(encoded.address, sender), { ok: true, recipient, sender });
    // list-bouncesx... is another local part, not list-bounces + a recipient.
    assert.equal(verpDecode('list-bouncesxa=b.example@list.example', 'list-bounces@list.example').ok, false);
  });
  it('refuses delimiters Postfix refuses', () => {
    assert.throws(() => parseVerpDelimiters('+'), ConfigError);
    assert.throws(() => parseVerpDelimiters('+#'), ConfigError);
    assert.throws(() => parseVerpDelimiters('+=='), ConfigError);
    assert.deepEqual(parseVerpDelimiters('+='), { local: '+', domain: '=' });
  });
  it('reads any text as two of - = + or refuses it with a ConfigError naming it', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: fc.constantFrom('-', '=', '+', 'x', '\ud83d', '\ude00'), maxLength: 3 }), fc.string({ unit: 'binary', maxLength: 5 })), (text) => {
        try {
          const { local, domain } = parseVerpDelimiters(text);
          assert.equal(local + domain, text);
          assert.ok('-=+'.includes(local) && '-=+'.includes(domain) && local.length === 1 && domain.length === 1, '\'-=+\'.includes(local) && \'-=+\'.includes(domain) && local.length === 1 && domain.length === 1');
        } catch (err) {
          assert.ok(err instanceof ConfigError && err.message.includes(JSON.stringify(text)), String(err));
        }
      }),
    );
  });
  it('encode then decode is the identity; decode never throws', () => {
    // RFC 5321 dot-strings and domain names: a sender must be one (verpSenderProblem).
    const local = fc.stringMatching(/^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,10}(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,10}){0,2}$/);
    const domain = fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?(\.[a-z]{2,5}){1,2}$/);
    const delimiters = fc.constantFrom('+=', '-=', '==').map(parseVerpDelimiters);
    fc.assert(
      fc.property(local, domain, local, domain, delimiters, (rl, rd, sl, sd, d) => {
        const sender = `${sl}@${sd}`;
        const encoded = verpEncode(sender, `${rl}@${rd}`, d);
        assert.ok(encoded.ok, 'encoded.ok');
        const decoded = encoded.ok ? verpDecode(encoded.address, sender, d) : undefined;
        assert.deepEqual(decoded, { ok: true, recipient: `${rl}@${rd}`, sender });
      }),
    );
    fc.assert(fc.property(fc.string({ maxLength: 600 }), fc.string({ maxLength: 60 }), (a, s) => void verpDecode(a, s)));
  });
  it('whatever the sender and recipient, encode either refuses them or writes one address that decodes to the recipient', () => {
    // Mostly local@domain of harmless characters, and mostly a sender that is a mailbox (random
    // text seldom is one, and encode refuses any other sender): about one pair in nine is encoded.
    const unit = fc.oneof({ arbitrary: fc.constantFrom('a', 'b', '.', '+', '-', '=', ' ', 'é'), weight: 12 }, fc.constantFrom('@', '"', '\u0000', '\u007f'));
    const part = fc.string({ unit, maxLength: 6 });
    const address = fc.oneof(part, { arbitrary: fc.tuple(part, part).map(([local, domain]) => `${local}@${domain}`), weight: 3 });
    const mailbox = fc.tuple(fc.stringMatching(/^[ab+=-]{1,6}$/), fc.constantFrom('a.example', 'b.example', 'example')).map(([local, domain]) => `${local}@${domain}`);
    const delimiters = fc.constantFrom('+=', '-=', '==', '+-', '=+').map(parseVerpDelimiters);
    // Counted, so that a generator whose pairs are all refused cannot pass without checking a
    // decode (a stricter sender check once left 2 of the 600 encoded).
    let encodedPairs = 0;
    fc.assert(
      fc.property(fc.oneof({ arbitrary: mailbox, weight: 3 }, address), address, delimiters, (sender, recipient, d) => {
        const encoded = verpEncode(sender, recipient, d);
        if (!encoded.ok) return true;
        encodedPairs += 1;
        assert.equal(encoded.address.split('@').length, 2, encoded.address);
        assert.ok(!encoded.address.includes('"'), encoded.address);
        assert.deepEqual(verpDecode(encoded.address, sender, d), { ok: true, recipient, sender });
        return true;
      }),
      { numRuns: 600 },
    );
    assert.ok(encodedPairs >= 20, `only ${encodedPairs} of 600 pairs encoded`);
  });
});
