/**
 * NAME
 *   bench/measure - runs one benchmark cell: N concurrent workers, bounded by count and time
 *
 * DESCRIPTION
 *   runCell() starts `concurrency` workers that each take the next operation index and await
 *   op(index), until maxOps operations have started or maxMs has passed, whichever comes first;
 *   operations already started are awaited, so a cell always stops by itself. Each operation's
 *   latency is kept, and every result is tallied by the label op() returns ("ok", a verdict,
 *   "wrong: ...") so that a fast but wrong run cannot hide. CPU use of this process over the
 *   cell is measured with process.cpuUsage(); that of the server process by the caller.
 */

import { performance } from 'node:perf_hooks';

export interface CellOptions {
  concurrency: number;
  maxOps: number;
  maxMs: number;
}

export interface CellResult {
  concurrency: number;
  ops: number;
  seconds: number;
  opsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  /** CPU time of this process over wall time (1.0 = one core busy). */
  cpuCores: number;
  tally: Record<string, number>;
}

function percentile(sorted: Float64Array, fraction: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(fraction * (sorted.length - 1)))]!;
}

export async function runCell(options: CellOptions, op: (index: number) => Promise<string>): Promise<CellResult> {
  const latencies = new Float64Array(options.maxOps);
  const tally: Record<string, number> = {};
  let next = 0;
  let done = 0;
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  const deadline = started + options.maxMs;
  const worker = async (): Promise<void> => {
    while (next < options.maxOps && performance.now() < deadline) {
      const index = next++;
      const t0 = performance.now();
      let label: string;
      try {
        label = await op(index);
      } catch (err) {
        label = `threw: ${String(err).slice(0, 80)}`;
      }
      latencies[done++] = performance.now() - t0;
      tally[label] = (tally[label] ?? 0) + 1;
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, worker));
  const seconds = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  const measured = latencies.subarray(0, done).sort();
  return {
    concurrency: options.concurrency,
    ops: done,
    seconds,
    opsPerSecond: done / seconds,
    p50Ms: percentile(measured, 0.5),
    p99Ms: percentile(measured, 0.99),
    cpuCores: (cpu.user + cpu.system) / 1e6 / seconds,
    tally,
  };
}
