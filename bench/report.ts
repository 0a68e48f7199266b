/**
 * NAME
 *   bench/report - renders a benchmark run as docs/benchmarks.md
 *
 * DESCRIPTION
 *   Machine facts, the command that reproduces the run, the throughput tables (tool x
 *   concurrency -> ops/s with p50/p99 latency; CPU of both processes; verdicts that were wrong),
 *   the correctness table, and the targets of the issue with met / not met, computed from the
 *   numbers measured here and nothing else. Beside the ratio target, the I/O floor rows
 *   (bench/io-floor) say what bare I/O reached and what the benchmark's servers spent per
 *   callout meanwhile: with N cores, servers that spend S µs per callout allow at most
 *   N / S callouts a second to any client, however little the client itself costs.
 */

import { CONTENDED_CORES, isContended, otherCores } from './measure.js';
import type { CellResult, MeasuredCell } from './measure.js';
import type { ToolCorrectness } from './correctness.js';
import { checkCases } from './world.js';

export interface Row {
  name: string;
  note: string;
  cells: MeasuredCell[];
}

export interface BenchReport {
  quick: boolean;
  facts: Array<[string, string]>;
  setup: string[];
  rows: { coldProbe: Row; coldNoReuse: Row; coldNoProbe: Row; coldDnsCached: Row[]; coldBatched: Row; coldShared: Row; warm: Row; peers: Row[]; floor: Row[] };
  peersSkipped?: string;
  correctness: ToolCorrectness[];
  concurrencies: number[];
  /** CPUs of the machine, which the servers and the verifier share. */
  cores: number;
}

const TARGET_COLD = 2_000;
const TARGET_WARM = 100_000;
const TARGET_RATIO = 5;

function rate(value: number): string {
  if (!Number.isFinite(value)) return 'n/a';
  return value >= 100 ? Math.round(value).toLocaleString('en-US') : value.toFixed(1);
}

function ms(value: number): string {
  if (!Number.isFinite(value)) return 'n/a';
  return value >= 10 ? value.toFixed(0) : value >= 1 ? value.toFixed(1) : value.toFixed(2);
}

/** Right answers per second: a cell's wrong or failed answers, however fast, count for nothing. */
function rightPerSecond(cell: CellResult): number {
  return (cell.tally.right ?? 0) / cell.seconds;
}

function best(row: Row): number {
  return Math.max(0, ...row.cells.map(rightPerSecond));
}

function wrong(cell: CellResult): string {
  const bad = Object.entries(cell.tally).filter(([label]) => label !== 'right');
  return bad.length === 0 ? '0' : bad.map(([label, n]) => `${n} × ${label}`).join('; ');
}

function otherWork(cell: MeasuredCell): string {
  if (!Number.isFinite(cell.machineCores)) return 'n/a';
  return `${Math.max(0, otherCores(cell)).toFixed(2)}${isContended(cell) ? ' ⚠' : ''}`;
}

function throughputTable(rows: Row[], concurrencies: number[]): string[] {
  const header = `| tool / mode | ${concurrencies.map((c) => `c=${c}: ops/s (p50 / p99 ms)`).join(' | ')} |`;
  const lines = [header, `|---|${concurrencies.map(() => '---:').join('|')}|`];
  for (const row of rows) {
    const cells = concurrencies.map((c) => {
      const cell = row.cells.find((x) => x.concurrency === c);
      return cell ? `**${rate(cell.opsPerSecond)}**${isContended(cell) ? ' ⚠' : ''}${wrong(cell) === '0' ? '' : ' ✗'} (${ms(cell.p50Ms)} / ${ms(cell.p99Ms)})` : '—';
    });
    lines.push(`| ${row.name} | ${cells.join(' | ')} |`);
  }
  return lines;
}

function detailTable(rows: Row[]): string[] {
  const lines = [
    '| tool / mode | concurrency | answers | seconds | bench process CPU | server process CPU | whole machine busy | other work | wrong or failed answers |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---|',
  ];
  for (const row of rows) {
    for (const cell of row.cells) {
      lines.push(`| ${row.name} | ${cell.concurrency} | ${cell.ops.toLocaleString('en-US')} | ${cell.seconds.toFixed(2)} | ${cell.cpuCores.toFixed(2)} | ${cell.serverCores.toFixed(2)} | ${Number.isFinite(cell.machineCores) ? cell.machineCores.toFixed(2) : 'n/a'} | ${otherWork(cell)} | ${wrong(cell)} |`);
    }
  }
  return lines;
}

function correctnessTable(results: ToolCorrectness[]): string[] {
  const lines = [
    `| case | address | expected | ${results.map((r) => r.tool).join(' | ')} |`,
    `|---|---|---|${results.map(() => '---').join('|')}|`,
  ];
  checkCases.forEach((testCase, i) => {
    const answers = results.map((r) => {
      const o = r.outcomes[i];
      if (!o) return '—';
      const spy = o.localhostConnections ? `; connected to 127.0.0.1:25 ×${o.localhostConnections}` : '';
      return `${o.right ? '✅' : '❌'} ${o.answer}: ${o.detail}${spy}`;
    });
    lines.push(`| ${testCase.label} | \`${testCase.address}\` | ${testCase.expected} (${testCase.because}) | ${answers.join(' | ')} |`);
  });
  lines.push(`| **right** | | | ${results.map((r) => `**${r.outcomes.filter((o) => o.right).length} / ${r.outcomes.length}**`).join(' | ')} |`);
  return lines;
}

/** "met" on the default configuration, and which other callout variants meet it. */
function judged(defaultValue: number, target: number, variants: Row[], value: (row: Row) => number): string {
  const others = variants.filter((row) => value(row) >= target).map((row) => row.name);
  const head = defaultValue >= target ? '**met**' : '**not met**';
  return `${head} (default config, cold DNS)${others.length ? `; met by: ${others.join('; ')}` : '; no variant meets it'}`;
}

/**
 * The floor row's line in the targets table: its best rate as a multiple of the peer's, and the
 * bound its servers' CPU per callout sets (cores / µs per callout) for any client.
 */
function floorLine(row: Row, peerRate: number, cores: number): string {
  const top = row.cells.reduce<MeasuredCell | undefined>((a, c) => (!a || rightPerSecond(c) > rightPerSecond(a) ? c : a), undefined);
  if (!top || rightPerSecond(top) <= 0) return `| ${row.name} | not measured | — |`;
  const serverMicros = (top.serverCores / top.opsPerSecond) * 1e6;
  const bound = (cores * 1e6) / serverMicros;
  const ratio = bound / peerRate;
  const verdict =
    ratio < TARGET_RATIO
      ? `**out of reach here**: the servers alone allow at most ${ratio.toFixed(1)}× the faster peer on ${cores} cores, before any work of the client`
      : `not ruled out by the servers' CPU (their bound is ${ratio.toFixed(1)}× the faster peer)`;
  return `| ${row.name}: what any client could reach | bare I/O: ${rate(rightPerSecond(top))}/s = ${(rightPerSecond(top) / peerRate).toFixed(2)}× the faster peer (c=${top.concurrency}); the servers spent ${serverMicros.toFixed(0)} µs of CPU per callout, so ${cores} cores allow at most ${rate(bound)}/s | ${verdict} |`;
}

function targets(report: BenchReport): string[] {
  const { coldProbe, coldNoReuse, coldNoProbe, coldDnsCached, coldBatched, coldShared, warm, peers, floor } = report.rows;
  const variants = [coldNoReuse, coldNoProbe, ...coldDnsCached, coldBatched, coldShared];
  const cold = best(coldProbe);
  const cached = best(warm);
  const fasterPeer = peers.reduce<Row | undefined>((top, row) => (!top || best(row) > best(top) ? row : top), undefined);
  const peerRate = fasterPeer ? best(fasterPeer) : Number.NaN;
  const measuredList = (rows: Row[], scale = 1, unit = '/s'): string =>
    rows.map((row) => `${row.name}: ${scale === 1 ? rate(best(row)) : (best(row) / scale).toFixed(2)}${unit}`).join('<br>');
  const anyContended = [coldProbe, ...variants, warm, ...peers, ...floor].some((row) => row.cells.some(isContended));
  const lines = [
    ...(anyContended
      ? [
          `> ⚠ Some cells ran while more than ${CONTENDED_CORES} cores went to other work (see "other work" in the cell details); their numbers understate what this machine can do. Run again on a quiet machine before drawing conclusions.`,
          '',
        ]
      : []),
    '| target (from the issue) | measured (best concurrency; right answers per second) | result |',
    '|---|---|---|',
    `| ≥ ${TARGET_COLD.toLocaleString('en-US')} cold callouts/s on 2 cores | ${measuredList([coldProbe, ...variants])} | ${judged(cold, TARGET_COLD, variants, best)} |`,
    `| ≥ ${TARGET_WARM.toLocaleString('en-US')} cached verdicts/s on 2 cores | ${rate(cached)}/s | ${cached >= TARGET_WARM ? '**met**' : '**not met**'} |`,
  ];
  if (fasterPeer && Number.isFinite(peerRate) && peerRate > 0) {
    lines.push(
      `| ≥ ${TARGET_RATIO}× the faster peer (cold callouts) | faster peer: ${fasterPeer.name}, ${rate(peerRate)}/s.<br>${measuredList([coldProbe, ...variants], peerRate, '×')} | ${judged(cold / peerRate, TARGET_RATIO, variants, (row) => best(row) / peerRate)} |`,
    );
    for (const row of floor) lines.push(floorLine(row, peerRate, report.cores));
  } else {
    lines.push(`| ≥ ${TARGET_RATIO}× the faster peer | peers not measured${report.peersSkipped ? ` (${report.peersSkipped})` : ''} | not judged |`);
  }
  return lines;
}

export function renderReport(report: BenchReport): string {
  const { coldProbe, coldNoReuse, coldNoProbe, coldDnsCached, coldBatched, coldShared, warm, peers, floor } = report.rows;
  const allRows = [coldProbe, coldNoReuse, coldNoProbe, ...coldDnsCached, coldBatched, coldShared, warm, ...peers, ...floor];
  return [
    '# Benchmarks',
    '',
    report.quick
      ? '> **Quick smoke run** (`--quick`): cells of a fraction of a second; the numbers are not meaningful.'
      : '> Generated by `npm run bench` (bench/run.ts). Do not edit by hand: run it again.',
    '',
    '## Machine',
    '',
    '| | |',
    '|---|---|',
    ...report.facts.map(([key, value]) => `| ${key} | ${value} |`),
    '',
    'Reproduce with `npm run bench` (as root: the peers only connect to port 25, and their MX host',
    'names are put in /etc/hosts for the run and taken out afterwards). `npm run bench -- --quick`',
    'is a smoke run of a few seconds that prints the report instead of writing this file.',
    '',
    '## Setup',
    '',
    ...report.setup.map((line) => `- ${line}`),
    '',
    '## Targets',
    '',
    ...targets(report),
    '',
    '## Throughput and latency',
    '',
    'Operations per second over the whole cell, and the latency of one verification (p50 / p99, ms); ✗: the cell has wrong or failed answers (see the cell details), which the targets do not count.',
    '',
    ...throughputTable(allRows, report.concurrencies),
    '',
    ...allRows.map((row) => `- **${row.name}**: ${row.note}`),
    ...(report.peersSkipped ? [`- Peers not measured: ${report.peersSkipped}.`] : []),
    '',
    '### Cell details',
    '',
    'CPU is CPU time over wall time, in cores (1.00 = one core fully busy): of the benchmark',
    'process (the verifier), of the server process, and of the whole machine (/proc/stat, which',
    'includes the kernel\'s loopback work and anything else that ran meanwhile). "Wrong or failed',
    'answers" counts every answer that was not the expected one (user<i> exists, nouser<i> does',
    'not; cold answers must come from a dialogue, warm ones from the cache). "Other work" is the',
    `machine's busy CPU minus both processes' own: kernel work not charged to them and other programs; ⚠ above ${CONTENDED_CORES} cores.`,
    '',
    ...detailTable(allRows),
    '',
    '## Correctness',
    '',
    'The labelled cases, each tool against the same DNS zone and freshly started exchangers',
    '(bench/correctness.ts). ✅ = the expected answer, without contacting anything it should not.',
    '',
    ...correctnessTable(report.correctness),
    '',
  ].join('\n');
}
