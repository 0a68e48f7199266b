import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setImmediate as nextTurn } from 'node:timers/promises';
import fc from 'fast-check';
import { availableParallelism } from 'node:os';
import { DEFAULT_IDLE_POLL_MICROS, IdlePoller, PollWindow } from '../../src/core/idle-poll.js';

describe('PollWindow (haltpoll-style adaptation)', () => {
  it('starts closed, opens when a request came soon after the process slept, and doubles up to the maximum', () => {
    const window = new PollWindow({ maxMicros: 200, growMicros: 50 });
    assert.equal(window.micros, 0);
    window.observe(30, false);
    assert.equal(window.micros, 50);
    window.observe(120, false);
    assert.equal(window.micros, 100);
    window.observe(150, false);
    assert.equal(window.micros, 200);
    window.observe(199, false);
    assert.equal(window.micros, 200, 'never beyond the maximum');
  });

  it('leaves the window as it is when polling caught the request', () => {
    const window = new PollWindow({ maxMicros: 200, growMicros: 50 });
    window.observe(10, false);
    window.observe(10, true);
    assert.equal(window.micros, 50, 'not grown by a caught request');
    window.observe(10_000, true);
    assert.equal(window.micros, 50, 'not shrunk by a caught request');
  });

  it('polls 200 µs by default on a machine of more than one CPU, and never on one of one (the client could not run meanwhile)', () => {
    assert.equal(DEFAULT_IDLE_POLL_MICROS, availableParallelism() === 1 ? 0 : 200);
  });

  it('takes a negative maximum as 0, which never polls', () => {
    assert.equal(new PollWindow({ maxMicros: -5 }).maxMicros, 0);
  });

  it('halves the window when a request came later than any poll would wait, and closes it below the first step', () => {
    const window = new PollWindow({ maxMicros: 400, growMicros: 50 });
    for (const gap of [10, 60, 150, 300]) window.observe(gap, false);
    assert.equal(window.micros, 400);
    window.observe(5_000, false);
    assert.equal(window.micros, 200);
    window.observe(5_000, false);
    window.observe(5_000, false);
    assert.equal(window.micros, 50);
    window.observe(5_000, false);
    assert.equal(window.micros, 0, 'an idle service stops polling');
  });

  it('never opens with a maximum of 0', () => {
    const window = new PollWindow({ maxMicros: 0 });
    window.observe(1, false);
    assert.equal(window.micros, 0);
  });

  it('stays closed or between the first step and the maximum, whatever the gaps', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 2_000 }),
        fc.integer({ min: 1, max: 500 }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 100_000 }), fc.boolean()), { maxLength: 60 }),
        (maxMicros, growMicros, gaps) => {
          const window = new PollWindow({ maxMicros, growMicros });
          for (const [gap, caught] of gaps) {
            window.observe(gap, caught);
            const micros = window.micros;
            assert.ok(micros === 0 || (micros >= window.growMicros && micros <= maxMicros), `window ${micros} with max ${maxMicros}`);
          }
        },
      ),
    );
  });
});

/** A clock the test moves; the poller reads it at every turn of the real event loop. */
function manualTime(): { now: () => number; advance: (ms: number) => void } {
  let t = 1_000;
  return { now: () => t, advance: (ms) => (t += ms) };
}

/** Lets the loop turn, 10 µs of manual time a turn, until `until`, and one turn more for the poll to notice. */
async function turnsUntil(time: ReturnType<typeof manualTime>, until: number): Promise<void> {
  while (time.now() < until) {
    await nextTurn();
    time.advance(0.01);
  }
  await nextTurn();
}

describe('IdlePoller', () => {
  it('does not poll until a connection asks again soon after its answer, then catches its next requests', async () => {
    const time = manualTime();
    const poller = new IdlePoller({ maxMicros: 200, growMicros: 50, now: time.now });
    let answeredAt = poller.answered();
    time.advance(0.03);
    poller.arrived(answeredAt);
    assert.deepEqual({ caught: poller.stats.caught, slept: poller.stats.slept }, { caught: 0, slept: 1 });
    // The window is open now: the next answer polls, and a request meanwhile is caught.
    answeredAt = poller.answered();
    await nextTurn();
    time.advance(0.02);
    await nextTurn();
    poller.arrived(answeredAt);
    assert.equal(poller.stats.caught, 1);
    // The poll ends once the test's clock passes the window.
    time.advance(1);
    await nextTurn();
    await nextTurn();
    assert.ok(poller.stats.pollSeconds > 0, 'poller.stats.pollSeconds > 0');
  });

  it('keeps the loop turning for the window after the latest answer, then sleeps and counts the time', async () => {
    const time = manualTime();
    const poller = new IdlePoller({ maxMicros: 200, growMicros: 100, now: time.now });
    const first = poller.answered();
    time.advance(0.01);
    poller.arrived(first); // opens the window to 100 µs
    const second = poller.answered()!;
    await turnsUntil(time, second + 0.2);
    assert.ok(poller.stats.pollSeconds > 0.000099 && poller.stats.pollSeconds < 0.00012, `polled ${poller.stats.pollSeconds} s`);
    poller.arrived(second);
    assert.deepEqual({ caught: poller.stats.caught, slept: poller.stats.slept }, { caught: 0, slept: 2 });
  });

  it('counts the time between requests as polling, not the time spent answering a request it caught', async () => {
    const time = manualTime();
    const poller = new IdlePoller({ maxMicros: 200, growMicros: 200, now: time.now });
    const first = poller.answered();
    time.advance(0.01);
    poller.arrived(first); // opens the window to 200 µs
    let answeredAt = poller.answered()!;
    await nextTurn();
    time.advance(0.02);
    await nextTurn(); // 20 µs of polling
    poller.arrived(answeredAt);
    time.advance(1); // a decision that took 1 ms; the poll goes on around it
    answeredAt = poller.answered()!;
    await turnsUntil(time, answeredAt + 0.2);
    assert.equal(poller.stats.caught, 1);
    assert.ok(poller.stats.pollSeconds > 0.000219 && poller.stats.pollSeconds < 0.00024, `polled ${poller.stats.pollSeconds} s`);
  });

  it('counts no turn in which a request was read as polling, and the turns after it again', async () => {
    const time = manualTime();
    const poller = new IdlePoller({ maxMicros: 200, growMicros: 200, now: time.now });
    const first = poller.answered();
    time.advance(0.01);
    poller.arrived(first); // opens the window to 200 µs
    const answeredAt = poller.answered()!;
    await nextTurn();
    time.advance(0.02);
    poller.arrived(answeredAt); // read, its answer still to come (a callout)
    time.advance(0.01);
    await nextTurn(); // the turn that read it: 30 µs not counted
    time.advance(0.05);
    await nextTurn(); // 50 µs polling again
    await turnsUntil(time, answeredAt + 0.2);
    // 50 µs, then 10 µs a turn to the end of the window at 200 µs, and the turn that notices it.
    assert.ok(poller.stats.pollSeconds > 0.000169 && poller.stats.pollSeconds < 0.000181, `polled ${poller.stats.pollSeconds} s`);
  });

  it('keeps the window open across a reload that leaves the maximum as it was', () => {
    const time = manualTime();
    const poller = new IdlePoller({ maxMicros: 200, growMicros: 50, now: time.now });
    const first = poller.answered();
    time.advance(0.01);
    poller.arrived(first); // opens the window
    poller.setMaxMicros(200);
    const second = poller.answered();
    time.advance(0.01);
    poller.arrived(second);
    assert.deepEqual({ caught: poller.stats.caught, slept: poller.stats.slept }, { caught: 1, slept: 1 }, 'the request after the reload caught by a poll');
    time.advance(1);
  });

  it('learns nothing from a request whose connection had no answer since its last one', () => {
    const time = manualTime();
    const poller = new IdlePoller({ maxMicros: 200, now: time.now });
    poller.answered();
    poller.arrived(undefined);
    assert.deepEqual(poller.stats, { caught: 0, slept: 0, pollSeconds: 0 });
  });

  it('does not count a request as caught when a blocked loop let the poll run past its end', () => {
    // 5 ms: the loop was blocked, no turn ended the 50 µs poll.
    assert.deepEqual(secondRequestAfter(5), { caught: 0, slept: 2 });
  });

  it('with a maximum of 0 never polls and counts nothing', async () => {
    const time = manualTime();
    const poller = new IdlePoller({ maxMicros: 0, now: time.now });
    for (let i = 0; i < 5; i++) {
      const at = poller.answered();
      time.advance(0.01);
      poller.arrived(at);
    }
    await nextTurn();
    assert.deepEqual(poller.stats, { caught: 0, slept: 0, pollSeconds: 0 });
  });

  it('takes a new maximum on reload: off counts nothing more, on again grows from the configured first step', async () => {
    const time = manualTime();
    const poller = new IdlePoller({ maxMicros: 0, growMicros: 50, now: time.now });
    poller.setMaxMicros(0);
    const before = poller.answered();
    poller.setMaxMicros(200);
    poller.arrived(before);
    assert.equal(poller.stats.slept, 0, 'nothing was answered while polling was on');
    const at = poller.answered();
    time.advance(0.01);
    poller.arrived(at); // opens the window at the configured 50 µs, not at a step capped by the old maximum
    const polled = poller.answered()!;
    await turnsUntil(time, polled + 0.1);
    assert.ok(poller.stats.pollSeconds > 0.000049 && poller.stats.pollSeconds < 0.00007, `polled ${poller.stats.pollSeconds} s`);
    const last = poller.answered();
    poller.setMaxMicros(0);
    poller.arrived(last);
    assert.equal(poller.stats.slept, 1, 'the request after the reload to 0 is not counted');
    time.advance(1);
    await nextTurn();
  });
});

/**
 * A poller whose first request opened a 50 µs window, and whose second request came gapMs after
 * the answer before it, with no turn of the event loop between: what it counted.
 */
function secondRequestAfter(gapMs: number): { caught: number; slept: number } {
  const time = manualTime();
  const poller = new IdlePoller({ maxMicros: 200, growMicros: 50, now: time.now });
  const first = poller.answered();
  time.advance(0.01);
  poller.arrived(first);
  const second = poller.answered();
  time.advance(gapMs);
  poller.arrived(second);
  const { caught, slept } = poller.stats;
  time.advance(1);
  return { caught, slept };
}

describe('poll boundaries', () => {
  it('opens the window for a gap of exactly the maximum, and to at least 1 µs when the first step is 0', () => {
    const window = new PollWindow({ maxMicros: 200, growMicros: 50 });
    window.observe(200, false);
    assert.equal(window.micros, 50);
    const tiny = new PollWindow({ maxMicros: 200, growMicros: 0 });
    tiny.observe(10, false);
    assert.equal(tiny.micros, 1);
  });

  it('counts a request that arrives at the very end of the poll as caught', () => {
    assert.deepEqual(secondRequestAfter(0.05), { caught: 1, slept: 1 });
  });
});
