// RequestTimeClock: the time of replayed requests (policy_test_time), and the time maintenance goes by; ManualTimers: monotonic time tests move.
import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { describe, it } from 'node:test';
import { RequestTimeClock, settleWithin, sleep } from '../../src/core/clock.js';
import { ManualClock, ManualTimers } from '../support/manual-time.js';

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

describe('ManualTimers', () => {
  it('fires due timers in time order, each at its due time, and set order breaks ties', async () => {
    const timers = new ManualTimers({ start: 1_000 });
    const fired: string[] = [];
    timers.setTimeout(() => fired.push(`b@${timers.now()}`), 20);
    timers.setTimeout(() => fired.push(`a@${timers.now()}`), 10);
    timers.setTimeout(() => fired.push(`c@${timers.now()}`), 20);
    timers.setTimeout(() => fired.push(`late@${timers.now()}`), 31);
    await timers.advance(30);
    assert.deepEqual(fired, ['a@1010', 'b@1020', 'c@1020']);
    assert.equal(timers.now(), 1_030);
    assert.equal(timers.waiting, 1);
    await timers.advance(1);
    assert.deepEqual(fired.at(-1), 'late@1031');
    assert.equal(timers.waiting, 0);
  });

  it('sees a timer set by a promise chain a firing started, within the same advance', async () => {
    const timers = new ManualTimers();
    const woke: number[] = [];
    const loop = async (): Promise<void> => {
      for (let i = 0; i < 3; i++) {
        await sleep(100, timers);
        await Promise.resolve();
        woke.push(timers.now());
      }
    };
    const done = loop();
    await timers.advance(250);
    assert.deepEqual(woke, [100, 200]);
    await timers.advance(50);
    await done;
    assert.deepEqual(woke, [100, 200, 300]);
  });

  it('never fires a cleared timer, fires a delay below 1 ms after 1 ms, and moves a wall clock along', async () => {
    const wall = new ManualClock(5_000);
    const timers = new ManualTimers({ wall });
    let fired = 0;
    const cleared = timers.setTimeout(() => fired++, 10);
    timers.clearTimeout(cleared);
    timers.setTimeout(() => fired += 10, 0);
    timers.setTimeout(() => fired += 100, Number.NaN);
    await timers.advance(0);
    assert.equal(fired, 0, 'nothing is due before time moves');
    await timers.advance(1);
    assert.equal(fired, 110);
    await timers.advance(20);
    assert.equal(fired, 110, 'the cleared timer stayed silent');
    assert.equal(wall.now(), 5_021);
  });

  it('refreshes a timer as Node does: its whole delay again from now, again after it fired, never after it was cleared', async () => {
    const timers = new ManualTimers();
    const fired: number[] = [];
    const timer = timers.setTimeout(() => fired.push(timers.now()), 100);
    await timers.advance(60);
    timer.refresh();
    await timers.advance(99);
    assert.deepEqual(fired, [], 'due 100 ms after the refresh, not after it was set');
    await timers.advance(1);
    assert.deepEqual(fired, [160]);
    timer.refresh();
    await timers.advance(100);
    assert.deepEqual(fired, [160, 260], 'a timer that fired is set going again');
    timers.clearTimeout(timer);
    timer.refresh();
    await timers.advance(1_000);
    assert.deepEqual(fired, [160, 260], 'a cleared timer stays cleared');
    assert.equal(timers.waiting, 0);
  });

  it('bounds settleWithin on the timers given', async () => {
    const timers = new ManualTimers();
    const never = new Promise<string>(() => undefined);
    const bounded = settleWithin(never, 500, () => 'late', timers);
    assert.equal(timers.waiting, 1, 'its bound is a timer of the timers given');
    await timers.advance(499);
    let settled: string | undefined;
    void bounded.then((value) => (settled = value));
    await timers.advance(0);
    assert.equal(settled, undefined);
    await timers.advance(1);
    // Moved, not waited for: a bound on a real timer would settle only 500 ms later.
    assert.equal(settled, 'late');
    assert.equal(await settleWithin(Promise.resolve('work'), 500, () => 'late', timers), 'work');
    assert.equal(timers.waiting, 0, 'the bound of work that settled first is cleared');
  });

  it('ends a sleep at once when its signal is aborted, its timer cleared; one aborted before does not start', async () => {
    const timers = new ManualTimers();
    const stop = new AbortController();
    let woke: number | undefined;
    const sleeping = sleep(30_000, timers, stop.signal).then(() => (woke = timers.now()));
    await timers.advance(10_000);
    assert.equal(woke, undefined);
    assert.equal(timers.waiting, 1);
    stop.abort();
    await sleeping;
    assert.equal(woke, 10_000, 'woken by the abort, not by the timer');
    assert.equal(timers.waiting, 0, 'its timer is cleared');
    await sleep(30_000, timers, stop.signal);
    assert.equal(timers.waiting, 0, 'an aborted signal sets no timer');
    const kept = new AbortController();
    const slept = sleep(100, timers, kept.signal).then(() => (woke = timers.now()));
    assert.equal(getEventListeners(kept.signal, 'abort').length, 1);
    await timers.advance(100);
    await slept;
    assert.equal(woke, 10_100, 'a signal not aborted leaves the sleep its whole delay');
    // A signal outlives its sleeps (one per connection, a tarpit's many waits): each takes its listener back.
    assert.equal(getEventListeners(kept.signal, 'abort').length, 0, 'a sleep that ran its course leaves no listener on the signal');
  });
});
