import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError } from '../../../src/core/errors.js';
import { validateConfig } from '../../../src/config/schema.js';
import { sharedLimitNames } from '../../../src/policy/stages/ratelimit.js';

const perClient = (max: number, extra: Record<string, unknown> = {}) => ({ per: 'client', count: 'recipients', max, ...extra });

describe('ratelimit stage options', () => {
  it('refuses a limit name two ratelimit stages share (the default name included): their counters were one, counted twice per request', () => {
    const stages = [{ name: 'ratelimit', limits: [perClient(10)] }, { name: 'allowlist' }, { name: 'ratelimit', limits: [perClient(3)] }];
    assert.throws(
      () => validateConfig({ policy: { stages } }),
      (err: unknown) => err instanceof ConfigError && /policy\.stages\.2\.limits \(ratelimit\): a limit named "recipients-per-client-1h" is in policy\.stages\.0 too, .*give each its own name/.test(err.message),
    );
    const named = [{ name: 'ratelimit', limits: [perClient(10, { name: 'own', window: '3600' })] }, { name: 'ratelimit', limits: [perClient(3, { window: '1d' }), perClient(5, { name: 'own' })] }];
    assert.deepEqual(sharedLimitNames(named), ['policy.stages.1.limits (ratelimit): a limit named "own" is in policy.stages.0 too, and the two would count into one counter; give each its own name']);
  });

  it('refuses every exemptClients entry that is no address or network with the other problems, by its index and with what it expects (built, it said only the first, without its index)', () => {
    const exemptClients = ['10.0.0.0/8', 'localhost', '::1', '2001:db8::1/64', 'x'];
    const expected = 'expected an IPv4 or IPv6 address or network';
    assert.throws(() => validateConfig({ policy: { stages: [{ name: 'ratelimit', limits: [perClient(10)], exemptClients, deferCode: 550 }] } }), {
      code: 'CONFIG_INVALID',
      message: [
        `configuration: policy.stages.0.exemptClients.1 (ratelimit): got "localhost", ${expected} (192.0.2.0/24, 2001:db8::/32)`,
        `policy.stages.0.exemptClients.3 (ratelimit): got "2001:db8::1/64", ${expected} (host bits set after the prefix: write the network, 2001:db8::/64, or the address alone)`,
        `policy.stages.0.exemptClients.4 (ratelimit): got "x", ${expected} (192.0.2.0/24, 2001:db8::/32)`,
        'policy.stages.0.deferCode (ratelimit): got 550, expected at most 499',
      ].join('; '),
    });
  });

  it('takes limits of one name in one stage only, and default names that differ by window', () => {
    const stages = [{ name: 'ratelimit', limits: [perClient(10)] }, { name: 'allowlist' }, { name: 'ratelimit', limits: [perClient(3, { window: '10m' }), perClient(3, { name: 'outside' })] }];
    assert.equal(validateConfig({ policy: { stages } }).policy.stages.length, 3);
    // create() refuses it in its own words; this check would name the stage as sharing with itself.
    assert.deepEqual(sharedLimitNames([{ name: 'ratelimit', limits: [perClient(1, { name: 'twice' }), perClient(2, { name: 'twice' })] }]), [], 'a name given twice in one stage');
    assert.deepEqual(sharedLimitNames([{ name: 'ratelimit', limits: 'not a list' }, { name: 'ratelimit', limits: [perClient(1)] }]), [], 'a stage refused on its own is not compared');
  });
});
