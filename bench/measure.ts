/**
 * NAME
 *   bench/measure - runs one benchmark cell: N concurrent workers, bounded by count and time
 *
 * DESCRIPTION
 *   runCell() starts `concurrency` workers that each take the next call index and await
 *   op(index), until maxOps calls have started or maxMs has passed, whichever comes first;
 *   calls already started are awaited, so a cell always stops by itself. Each call's latency is
 *   kept, and every answer is tallied by the label op() returns for it ("right", or what was
 *   wrong) so that a fast but wrong run cannot hide. A call may answer several addresses (a
 *   list of labels): operations are answers, latency is per call.
 *   CPU over the cell: this process by process.cpuUsage(), the whole machine from /proc/stat
 *   (where there is one), the server process by the caller; the rest is other work that shared
 *   the machine during the cell.
 */

import { readFileSync } from 'node:fs';
import os from 'node:os';
import { performance } from 'node:perf_hooks';

export interface CellOptions {
  concurrency: number;
  maxOps: number;
  maxMs: number;
}

export interface CellResult {
  concurrency: number;
  /** Answers (addresses verified). */
  ops: number;
  calls: number;
  seconds: number;
  opsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  /** CPU time of this process over wall time (1.0 = one core busy). */
  cpuCores: number;
  /** Busy CPU time of the whole machine over wall time; NaN without /proc/stat. */
  machineCores: number;
  tally: Record<string, number>;
}

/** Nearest rank: the smallest sample with at least `fraction` of all samples at or below it. */
function percentile(sorted: Float64Array, fraction: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.max(0, Math.ceil(fraction * sorted.length) - 1)]!;
}

/** Above this much CPU spent outside the two benchmark processes, a cell counts as contended. */
export const CONTENDED_CORES = 0.35;

/** A cell with the CPU its server process used over it. */
export type MeasuredCell = CellResult & { serverCores: number };

/** CPU the machine spent on neither benchmark process: kernel work not charged to them, and other programs. */
export function otherCores(cell: MeasuredCell): number {
  return cell.machineCores - cell.cpuCores - cell.serverCores;
}

export function isContended(cell: MeasuredCell): boolean {
  return otherCores(cell) > CONTENDED_CORES;
}

/** Waits until the whole machine is nearly idle for half a second, or maxMs has passed; true when it was. */
export async function waitForQuiet(maxMs: number): Promise<boolean> {
  const deadline = performance.now() + maxMs;
  while (performance.now() < deadline) {
    const before = machineTicks();
    await new Promise((resolve) => setTimeout(resolve, 500));
    const after = machineTicks();
    if (!before || !after) return false;
    const busyCores = ((after.busy - before.busy) / Math.max(1, after.total - before.total)) * after.cpus;
    if (busyCores < CONTENDED_CORES) return true;
  }
  return false;
}

/**
 * Busy and total jiffies of all CPUs, from the first line of /proc/stat, and the CPUs it sums
 * (its cpuN lines: all of the machine's, which may be more than this process may run on).
 */
export function machineTicks(): { busy: number; total: number; cpus: number } | undefined {
  try {
    const stat = readFileSync('/proc/stat', 'utf8');
    // user nice system idle iowait irq softirq steal; guest and guest_nice are already in user and nice.
    const fields = stat.split('\n', 1)[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
    const total = fields.reduce((sum, n) => sum + n, 0);
    const idle = (fields[3] ?? 0) + (fields[4] ?? 0);
    return { busy: total - idle, total, cpus: stat.match(/^cpu\d+ /gm)?.length ?? os.availableParallelism() };
  } catch {
    return undefined;
  }
}

export async function runCell(options: CellOptions, op: (index: number) => Promise<string | string[]>): Promise<CellResult> {
  const latencies = new Float64Array(options.maxOps);
  const tally: Record<string, number> = {};
  let next = 0;
  let done = 0;
  let answers = 0;
  const cpuBefore = process.cpuUsage();
  const ticksBefore = machineTicks();
  const started = performance.now();
  const deadline = started + options.maxMs;
  const worker = async (): Promise<void> => {
    while (next < options.maxOps && performance.now() < deadline) {
      const index = next++;
      const t0 = performance.now();
      let labels: string | string[];
      try {
        labels = await op(index);
      } catch (err) {
        labels = `threw: ${String(err).slice(0, 80)}`;
      }
      latencies[done++] = performance.now() - t0;
      for (const label of typeof labels === 'string' ? [labels] : labels) {
        tally[label] = (tally[label] ?? 0) + 1;
        answers++;
      }
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, worker));
  const seconds = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  const ticksAfter = machineTicks();
  const measured = latencies.subarray(0, done).sort();
  const machineCores =
    ticksBefore && ticksAfter && ticksAfter.total > ticksBefore.total
      ? ((ticksAfter.busy - ticksBefore.busy) / (ticksAfter.total - ticksBefore.total)) * ticksAfter.cpus
      : Number.NaN;
  return {
    concurrency: options.concurrency,
    ops: answers,
    calls: done,
    seconds,
    opsPerSecond: answers / seconds,
    p50Ms: percentile(measured, 0.5),
    p99Ms: percentile(measured, 0.99),
    cpuCores: (cpu.user + cpu.system) / 1e6 / seconds,
    machineCores,
    tally,
  };
}
