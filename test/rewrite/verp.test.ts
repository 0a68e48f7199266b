import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ConfigError } from '../../src/core/errors.js';
import { QMAIL_VERP_DELIMITERS, parseVerpDelimiters, verpDecode, verpEncode } from '../../src/rewrite/verp.js';

describe('VERP', () => {
  it('encodes as Postfix verp_sender() does, with +=', () => {
    assert.deepEqual(verpEncode('owner-listname@origin', 'user@domain'), { ok: true, address: 'owner-listname+user=domain@origin' });
    assert.deepEqual(verpEncode('list-bounces@list.example', 'x=y@z.example'), { ok: true, address: 'list-bounces+x=y=z.example@list.example' });
    assert.deepEqual(verpEncode('owner', 'user'), { ok: true, address: 'owner+user' });
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
    const reasons = ['other+a=b.example@list.example', 'list-bounces+a=b.example@other.example', 'list-bounces+ab.example@list.example', 'list-bounces+@list.example', 'list-bounces+a=@list.example'].map(
      (a) => verpDecode(a, 'list-bounces@list.example'),
    );
    for (const r of reasons) assert.equal(r.ok, false);
  });
  it('refuses delimiters Postfix refuses', () => {
    assert.throws(() => parseVerpDelimiters('+'), ConfigError);
    assert.throws(() => parseVerpDelimiters('+#'), ConfigError);
    assert.deepEqual(parseVerpDelimiters('+='), { local: '+', domain: '=' });
  });
  it('encode then decode is the identity; decode never throws', () => {
    const local = fc.stringMatching(/^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,30}$/);
    const domain = fc.stringMatching(/^[a-z0-9-]{1,15}(\.[a-z]{2,5}){1,2}$/);
    const delimiters = fc.constantFrom('+=', '-=', '==').map(parseVerpDelimiters);
    fc.assert(
      fc.property(local, domain, local, domain, delimiters, (rl, rd, sl, sd, d) => {
        const sender = `${sl}@${sd}`;
        const encoded = verpEncode(sender, `${rl}@${rd}`, d);
        assert.ok(encoded.ok);
        const decoded = encoded.ok ? verpDecode(encoded.address, sender, d) : undefined;
        assert.deepEqual(decoded, { ok: true, recipient: `${rl}@${rd}`, sender });
      }),
    );
    fc.assert(fc.property(fc.string({ maxLength: 600 }), fc.string({ maxLength: 60 }), (a, s) => void verpDecode(a, s)));
  });
});
