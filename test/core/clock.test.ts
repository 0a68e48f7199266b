// RequestTimeClock: the time of replayed requests (policy_test_time), and the time maintenance goes by.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ManualClock, RequestTimeClock } from '../../src/core/clock.js';

describe('RequestTimeClock', () => {
  const DAY = 86_400_000;

  it('follows the latest request time, never going back', () => {
    const base = new ManualClock(1_000 * DAY);
    const clock = new RequestTimeClock(base);
    assert.equal(clock.now(), 1_000 * DAY, 'the base clock before any request carried a time');
    clock.follow(1_100 * DAY);
    clock.follow(1_050 * DAY);
    assert.equal(clock.now(), 1_100 * DAY);
  });

  it('gives maintenance the base clock when a request time is ahead of it, the request time when that is behind', () => {
    const base = new ManualClock(1_000 * DAY);
    const ahead = new RequestTimeClock(base);
    ahead.follow(1_100 * DAY);
    assert.equal(ahead.maintenanceNow(), 1_000 * DAY, 'a far-future policy_test_time does not age the store');
    const replay = new RequestTimeClock(base);
    replay.follow(700 * DAY);
    assert.equal(replay.maintenanceNow(), 700 * DAY, 'a past trace\'s entries live at its time are not purged by the real clock');
  });
});
