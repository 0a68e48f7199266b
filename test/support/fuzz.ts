/**
 * NAME
 *   test/support/fuzz - helpers of the fuzz tests
 *
 * DESCRIPTION
 *   splitAt(bytes, seeds) cuts bytes at the points the seeds give (modulo its length), as a
 *   socket may deliver them, so that a test can check an incremental decoder gives the same
 *   events however its input is split. elapsedMs(f) times f, for the linear-time checks of
 *   crafted inputs (generous bounds against quadratic scans, not speed claims): the CPU time
 *   this process spent, not the time on the clock, which on a loaded machine (load 20 on two
 *   CPUs) counts the other processes' turns too and varied threefold from one call to the
 *   next; and the fastest of three calls, because a garbage collection can stall any one call,
 *   while a quadratic scan is slow every time. elapsedMsAsync(f) does the same for an f that
 *   answers with a promise, from the call until it settles; the CPU time is the whole
 *   process's, so f's own work should be all the process does meanwhile, and each call should
 *   start from the same state (a call that rewrites what it reads is then timed on another
 *   input).
 *   paddedRecords(json, limit) gives a stored record's JSON padded with white space (still the
 *   same JSON) to lengths around a decoder's length limit, paired with whether that decoder
 *   should read it: the limit's edges, a few characters either side, and far beyond.
 */
import fc from 'fast-check';

/** bytes in non-empty chunks, cut at the given points. */
export function splitAt(bytes: Buffer, seeds: readonly number[]): Buffer[] {
  const cuts = [...new Set(seeds.map((seed) => seed % (bytes.length + 1)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let from = 0;
  for (const cut of [...cuts, bytes.length]) {
    chunks.push(bytes.subarray(from, cut));
    from = cut;
  }
  return chunks.filter((chunk) => chunk.length > 0);
}

/**
 * The timing both elapsedMs and elapsedMsAsync share: the caller makes one call each time it
 * resumes this, which then returns the milliseconds of CPU time the fastest call took.
 */
function* fastestOfThree(): Generator<void, number, void> {
  let fastest = Infinity;
  for (let call = 0; call < 3; call += 1) {
    const started = process.cpuUsage();
    yield;
    const { user, system } = process.cpuUsage(started);
    fastest = Math.min(fastest, (user + system) / 1000);
  }
  return fastest;
}

/** Milliseconds of CPU time the fastest of three calls of f took. */
export function elapsedMs(f: () => unknown): number {
  const timing = fastestOfThree();
  let step = timing.next();
  for (; !step.done; step = timing.next()) f();
  return step.value;
}

/** Milliseconds of CPU time the fastest of three calls of f took, each until its promise settled. */
export async function elapsedMsAsync(f: () => Promise<unknown>): Promise<number> {
  const timing = fastestOfThree();
  let step = timing.next();
  for (; !step.done; step = timing.next()) await f();
  return step.value;
}

/** json padded to lengths near limit (from json's own length), and whether a decoder with that limit reads it. */
export function paddedRecords(json: string, limit: number): fc.Arbitrary<{ text: string; readable: boolean }> {
  const length = fc.oneof(
    fc.constantFrom(limit, limit + 1, 64 * limit),
    fc.integer({ min: Math.max(json.length, limit - 64), max: limit + 64 }),
  );
  return length.map((n) => ({ text: json + ' '.repeat(Math.max(0, n - json.length)), readable: Math.max(n, json.length) <= limit }));
}
