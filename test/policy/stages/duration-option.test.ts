// Durations in stage options: what they take, and the bounds that keep a store's expiry exact.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { greylistStage } from '../../../src/policy/stages/greylist.js';
import { ratelimitStage } from '../../../src/policy/stages/ratelimit.js';
import { durationMs } from '../../../src/policy/stages/duration-option.js';

describe('stage durations', () => {
  it('take up to ten years, written with a unit or in seconds', () => {
    const parsed = greylistStage.options.parse({ delay: 600, retryWindow: '3650d', maxAge: '3650d' }) as { delay: string; retryWindow: string; maxAge: string };
    assert.deepEqual([parsed.delay, parsed.retryWindow, parsed.maxAge], ['10m', '3650d', '3650d']);
  });

  it('refuse a longer one by its key, which made every request of the stage fail in the store', () => {
    // 60,000,000 days: an exact number of milliseconds, but twice it (a row's lifetime) is not.
    const greylist = greylistStage.options.safeParse({ retryWindow: '60000000d', maxAge: '60000000d' });
    assert.equal(greylist.success, false);
    assert.deepEqual(greylist.error?.issues.map((issue) => [issue.path.join('.'), issue.message]), [['retryWindow', 'expected at most 3650d'], ['maxAge', 'expected at most 3650d']]);
    const ratelimit = ratelimitStage.options.safeParse({ limits: [{ per: 'client', count: 'messages', max: 10, window: '3651d' }] });
    assert.equal(ratelimit.success, false);
    assert.deepEqual(ratelimit.error?.issues.map((issue) => issue.path.join('.')), ['limits.0.window']);
  });

  it("take a stage's shortest duration itself and refuse anything shorter, by its key", () => {
    const limit = (window: unknown) => ({ limits: [{ per: 'client', count: 'messages', max: 10, window }] });
    const shortest = ratelimitStage.options.parse(limit(1)) as { limits: Array<{ window: string }> };
    assert.equal(shortest.limits[0]?.window, '1s');
    const shorter = ratelimitStage.options.safeParse(limit('0s'));
    assert.deepEqual(shorter.error?.issues.map((issue) => [issue.path.join('.'), issue.message]), [['limits.0.window', 'expected at least 1s']]);
  });

  it('say what a duration is for a value of no accepted type (YAML .nan, .inf, 1e309, true), not "Invalid input"', () => {
    for (const delay of [Number.NaN, Number.POSITIVE_INFINITY, true]) {
      const parsed = greylistStage.options.safeParse({ delay });
      assert.equal(parsed.success, false);
      assert.deepEqual(parsed.error?.issues.map((issue) => [issue.path.join('.'), issue.message]), [['delay', 'expected a duration such as 30s, 5m, 2h, 7d, or a number of seconds']], String(delay));
    }
  });

  it('durationMs reads a written duration, and throws ConfigError for one the option would have refused', () => {
    assert.deepEqual([durationMs('5m'), durationMs(30)], [300_000, 30_000]);
    assert.throws(() => durationMs('five minutes'), { name: 'ConfigError', message: /^got "five minutes", / });
  });
});
