/**
 * NAME
 *   test/support/wait - waiting for an event a test cannot be told of, by asking until it came
 *
 * DESCRIPTION
 *   until(condition, deadlineMs) asks condition (it may answer with a promise) every pollMs
 *   (default 10 ms) and resolves true as soon as it holds, or false once deadlineMs (default
 *   10 s) has passed without it. Tests wait this way for what they then check (a QUIT arrived,
 *   a lock taken, a callout finished) rather than sleeping a fixed time: a sleep long enough on
 *   an idle machine is too short on a loaded CI machine, where the test then fails although
 *   nothing is wrong. The deadline only bounds the wait for something that never comes; the
 *   caller asserts what it waited for, so that a failure says what was missing.
 *   turnsUntil(condition, what) asks at every turn of the event loop (setImmediate), so that
 *   real socket I/O goes on meanwhile: what a test waits for (the server has the octets, a
 *   timer is set) before it moves ManualTimers, which must not overtake I/O still under way.
 *   It throws, naming `what`, after 10 s of real time.
 *   watch(promise) gives what the promise resolved with so far (undefined before): read after
 *   moving ManualTimers, it tells whether an answer came before a bound, and when.
 */

import { setTimeout as sleep } from 'node:timers/promises';

export async function until(condition: () => boolean | Promise<boolean>, deadlineMs = 10_000, pollMs = 10): Promise<boolean> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    if (await condition()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(pollMs);
  }
}

export async function turnsUntil(condition: () => boolean, what: string): Promise<void> {
  const giveUp = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() >= giveUp) throw new Error(`never came: ${what}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

export function watch<T>(promise: T | Promise<T>): () => T | undefined {
  let value: T | undefined;
  void Promise.resolve(promise).then((resolved) => (value = resolved));
  return () => value;
}
