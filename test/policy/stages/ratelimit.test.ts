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
      (err: unknown) => err instanceof ConfigError && /policy\.stages\.2\.limits: a limit named "recipients-per-client-1h" is in policy\.stages\.0 too, .*give each its own name/.test(err.message),
    );
    const named = [{ name: 'ratelimit', limits: [perClient(10, { name: 'own', window: '3600' })] }, { name: 'ratelimit', limits: [perClient(3, { window: '1d' }), perClient(5, { name: 'own' })] }];
    assert.deepEqual(sharedLimitNames(named), ['policy.stages.1.limits: a limit named "own" is in policy.stages.0 too, and the two would count into one counter; give each its own name']);
  });

  it('takes limits of one name in one stage only, and default names that differ by window', () => {
    const stages = [{ name: 'ratelimit', limits: [perClient(10)] }, { name: 'allowlist' }, { name: 'ratelimit', limits: [perClient(3, { window: '10m' }), perClient(3, { name: 'outside' })] }];
    assert.equal(validateConfig({ policy: { stages } }).policy.stages.length, 3);
    // create() refuses it in its own words; this check would name the stage as sharing with itself.
    assert.deepEqual(sharedLimitNames([{ name: 'ratelimit', limits: [perClient(1, { name: 'twice' }), perClient(2, { name: 'twice' })] }]), [], 'a name given twice in one stage');
    assert.deepEqual(sharedLimitNames([{ name: 'ratelimit', limits: 'not a list' }, { name: 'ratelimit', limits: [perClient(1)] }]), [], 'a stage refused on its own is not compared');
  });
});
