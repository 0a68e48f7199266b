import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ManualClock } from '../support/manual-time.js';
import { Batv } from '../../src/rewrite/batv.js';
import { batvMaps } from '../../src/rewrite/maps.js';

const T0 = 1_577_836_860_000;
const batv = new Batv({ keys: [{ keynum: 1, secret: 'secret' }] });

describe('batv-sign', () => {
  it('signs a sender of an internationalised signing domain in U-labels or A-labels, however configured (regression: only as configured)', () => {
    for (const configured of ['xn--bcher-kva.example', 'bücher.example']) {
      const maps = batvMaps(batv, { domains: [configured, '.xn--mnchen-3ya.example'] }, new ManualClock(T0));
      for (const sender of ['user@bücher.example', 'user@xn--bcher-kva.example', 'user@a.münchen.example']) {
        const answer = maps['batv-sign'](sender);
        assert.equal(answer.kind, 'found', `${sender} with ${configured}`);
        if (answer.kind === 'found') assert.equal(batv.check(answer.value, T0).status, 'valid', answer.value);
      }
      assert.deepEqual(maps['batv-sign']('user@other.example'), { kind: 'notfound', reason: 'Not a signing domain.' });
      assert.deepEqual(maps['batv-sign']('user@münchen.example'), { kind: 'notfound', reason: 'Not a signing domain.' });
    }
  });
});

describe('batv-strip', () => {
  it('gives back the original of a valid tag only: an expired tag or an unknown key is NOTFOUND, saying which', () => {
    const signed = batv.sign('user@example.com', T0);
    assert.ok(signed.ok, 'signed.ok');
    const strip = (now: number, which = batv) => batvMaps(which, { domains: ['example.com'] }, new ManualClock(now))['batv-strip'](signed.address);
    assert.deepEqual(strip(T0), { kind: 'found', value: 'user@example.com' });
    assert.deepEqual(strip(T0 + 30 * 86_400_000), { kind: 'notfound', reason: 'prvs expired' });
    assert.deepEqual(strip(T0, new Batv({ keys: [{ keynum: 2, secret: 'secret' }] })), { kind: 'notfound', reason: 'prvs unknown-key' });
  });
});
