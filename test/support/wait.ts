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
