/**
 * NAME
 *   bench/srs - SRS forward+reverse per second: in process, through callout's lookup services, and postsrsd
 *
 * SYNOPSIS
 *   import { benchSrs } from './srs.js';  const markdown = await benchSrs({ quick: false });
 *   node --import tsx bench/srs.ts [--quick]          prints the section on its own
 *   node --import tsx bench/srs.ts --pinned MS       the 1-connection cells as JSON (run under taskset)
 *
 * DESCRIPTION
 *   The requests are 2000 distinct senders of 200 domains: each operation pair forwards one
 *   sender and reverses the address that came back. All rows use the same secret, SRS domain and
 *   requests in the same run:
 *     callout in process      Srs.forward + Srs.reverse, no I/O
 *     callout tcp_table       our TcpTableServer (forward and reverse listeners) over loopback
 *     callout socketmap       our SocketmapServer (maps forward, reverse) over loopback
 *     callout socketmap, idle poll off
 *                             the same with --idle-poll 0: the server sleeps in epoll as soon as it
 *                             has answered (core/idle-poll), so the effect of polling shows
 *     postsrsd tcp_table      Debian's postsrsd 1.x (what Debian ships; it speaks tcp_table only)
 *     Node.js echo (floor)    a bare node:net server answering every request line with a fixed
 *                             "500" line: no parsing, no SRS, no polling; the fastest a Node.js
 *                             service that sleeps between requests can be over the same client
 *                             with 1 connection (measured with 1 only)
 *   callout's servers and the echo run in a child process (this file with --serve), as postsrsd
 *   runs in its own, so client and server do not share one event loop; the tcp_table and
 *   socketmap servers share one idle poller, as the listeners of `callout rewrite serve` do. Each client connection
 *   sends one request and waits for its reply, as Postfix's table clients do; rows are measured
 *   with 1 and with 8 connections, three times each, interleaved across the rows, and the median
 *   is shown (the machine's other load then hits every row alike). Every reply of the first round
 *   is checked: forwards must equal the in-process result (postsrsd's too: same secret, same day)
 *   and reverses must give the sender back; mismatches are counted in the table (not for the
 *   echo, which answers nothing).
 *   The 1-connection cells are then measured once more with this process, callout's servers
 *   and postsrsd all on CPU 0 (this file with --pinned, under `taskset -c 0`): the wake-ups of
 *   a ping-pong across two CPUs of a VM dominate that column otherwise, and one CPU leaves each
 *   server's own work.
 *
 * LIMITS
 *   Each cell runs for 2 s (0.3 s with --quick) after a warm-up (1 s in process, where the JIT
 *   matters most; 0.3 s over the wire). An operation is one lookup (a forward or a reverse).
 *   Without /usr/sbin/postsrsd its row says so. With 1 connection every lookup wakes the server
 *   and then the client: when the kernel runs them on two CPUs of a VM each wake-up costs tens of
 *   microseconds, when they share one CPU almost nothing, and which it does depends on the
 *   machine's other load, so that column can move by 2× between runs; compare rows of one run.
 */

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { systemClock } from '../src/core/clock.js';
import { DEFAULT_IDLE_POLL_MICROS, IdlePoller } from '../src/core/idle-poll.js';
import { srsMaps } from '../src/rewrite/maps.js';
import { SocketmapServer } from '../src/rewrite/socketmap.js';
import { Srs } from '../src/rewrite/srs.js';
import { TcpTableServer } from '../src/rewrite/tcp-table.js';
import { SocketmapClient, TcpTableClient } from '../test/support/lookup-clients.js';
import { POSTSRSD, startPostsrsd, type Postsrsd } from '../test/support/postsrsd.js';
import { freePorts } from '../test/support/ports.js';

const SECRET = 'bench-secret-9f2c';
const DOMAIN = 'forwarder.example';
const SENDERS = Array.from({ length: 2000 }, (_, i) => `user${i}.name+tag@domain${i % 200}.example`);
const CONCURRENCIES = [1, 8];
const REPETITIONS = 3;

function median(cells: Cell[]): Cell {
  const sorted = [...cells].sort((a, b) => a.opsPerSecond - b.opsPerSecond);
  return { opsPerSecond: sorted[Math.floor(sorted.length / 2)]!.opsPerSecond, mismatches: cells.reduce((sum, c) => sum + c.mismatches, 0) };
}

interface Target {
  forward: (key: string) => Promise<string>;
  reverse: (key: string) => Promise<string>;
  close(): void;
}

interface Cell {
  opsPerSecond: number;
  mismatches: number;
}

function srs(): Srs {
  return new Srs({ domain: DOMAIN, secrets: [SECRET] });
}

function inProcess(durationMs: number): Cell {
  const s = srs();
  let mismatches = 0;
  const now = Date.now();
  for (const sender of SENDERS) {
    const f = s.forward(sender, now);
    if (!f.ok || !s.reverse(f.address, now).ok) mismatches++;
  }
  const run = (ms: number) => {
    let ops = 0;
    const started = performance.now();
    while (performance.now() - started < ms) {
      for (let i = 0; i < 200; i++) {
        const t = Date.now();
        const f = s.forward(SENDERS[(ops >> 1) % SENDERS.length]!, t);
        if (f.ok) s.reverse(f.address, t);
        ops += 2;
      }
    }
    return { ops, seconds: (performance.now() - started) / 1000 };
  };
  run(1000);
  const { ops, seconds } = run(durationMs);
  return { opsPerSecond: ops / seconds, mismatches };
}

/** Strips the protocol's status word: "200 x" / "OK x" → x, anything else → undefined. */
function value(reply: string): string | undefined {
  const match = /^(?:200|OK) (.*)$/.exec(reply);
  return match ? decodeURIComponent(match[1]!) : undefined;
}

async function overWire(connect: () => Promise<Target>, concurrency: number, durationMs: number, checked: boolean): Promise<Cell> {
  const targets = await Promise.all(Array.from({ length: concurrency }, connect));
  try {
    const expected = srs();
    let mismatches = 0;
    const now = Date.now();
    const first = targets[0]!;
    for (const sender of checked ? SENDERS.slice(0, 500) : []) {
      const forwarded = value(await first.forward(sender));
      const mine = expected.forward(sender, now);
      if (!mine.ok || forwarded !== mine.address) mismatches++;
      if (forwarded === undefined || value(await first.reverse(forwarded)) !== sender) mismatches++;
    }
    const round = async (ms: number) => {
      let ops = 0;
      let next = 0;
      const started = performance.now();
      await Promise.all(
        targets.map(async (t) => {
          while (performance.now() - started < ms) {
            const sender = SENDERS[next++ % SENDERS.length]!;
            const forwarded = value(await t.forward(sender));
            ops++;
            if (forwarded !== undefined) {
              await t.reverse(forwarded);
              ops++;
            }
          }
        }),
      );
      return { ops, seconds: (performance.now() - started) / 1000 };
    };
    await round(Math.min(300, durationMs));
    const { ops, seconds } = await round(durationMs);
    return { opsPerSecond: ops / seconds, mismatches };
  } finally {
    for (const t of targets) t.close();
  }
}

function tcpTableTarget(forward: { host: string; port: number }, reverse: { host: string; port: number }) {
  return async (): Promise<Target> => {
    const [f, r] = await Promise.all([TcpTableClient.connect(forward), TcpTableClient.connect(reverse)]);
    return { forward: (k) => f.query(k), reverse: (k) => r.query(k), close: () => (f.close(), r.close()) };
  };
}

function socketmapTarget(at: { host: string; port: number }) {
  return async (): Promise<Target> => {
    const c = await SocketmapClient.connect(at);
    return { forward: (k) => c.query('forward', k), reverse: (k) => c.query('reverse', k), close: () => c.close() };
  };
}

/** A fixed "500" line for every request line: what any Node.js service costs before doing any work. */
async function echoServer(): Promise<number> {
  const server = net.createServer((socket) => {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      for (let at = chunk.indexOf(0x0a); at >= 0; at = chunk.indexOf(0x0a, at + 1)) socket.write('500 echo\n');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as net.AddressInfo).port;
}

/** Child process mode: serve tcp_table forward/reverse, socketmap (polling and not) and the echo on ephemeral ports, print them. */
async function serve(): Promise<void> {
  const maps = srsMaps(srs(), systemClock);
  const poller = new IdlePoller({ maxMicros: DEFAULT_IDLE_POLL_MICROS });
  const servers = [
    new TcpTableServer(maps.forward, { poller }),
    new TcpTableServer(maps.reverse, { poller }),
    new SocketmapServer(maps, { poller }),
    new SocketmapServer(maps, { idlePollMicros: 0 }),
  ];
  const ports = [];
  for (const s of servers) ports.push(((await s.listen({ kind: 'tcp', host: '127.0.0.1', port: 0 })) as { port: number }).port);
  ports.push(await echoServer());
  process.stdout.write(`${ports.join(' ')}\n`);
  process.stdin.resume();
  process.stdin.on('end', () => process.exit(0));
}

async function startChild(): Promise<{ child: ChildProcess; ports: number[] }> {
  const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--serve'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const ports = await new Promise<number[]>((resolve, reject) => {
    let text = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      text += chunk.toString();
      if (text.includes('\n')) resolve(text.trim().split(' ').map(Number));
    });
    child.once('exit', (code) => reject(new Error(`bench/srs server child exited with ${code}`)));
  });
  return { child, ports };
}


const rate = (cell: Cell | string) => (typeof cell === 'string' ? cell : `${Math.round(cell.opsPerSecond).toLocaleString('en-US')}`);
const wrong = (cells: Array<Cell | string>) => {
  const numbers = cells.filter((c): c is Cell => typeof c !== 'string');
  return numbers.length === 0 ? '-' : String(numbers.reduce((sum, c) => sum + c.mismatches, 0));
};

type Row = { name: string; cells: Array<Cell | string>; unchecked?: boolean };

const FLOOR_ROW = 'Node.js echo, no parsing, no SRS, no idle poll (loopback)';
const NO_POLL_ROW = 'callout socketmap, idle poll off (loopback)';

/** "met at 8 connections, not at 1" style verdict of callout's best map service against postsrsd. */
function versusPostsrsd(rows: Row[]): string {
  const theirs = rows.find((r) => r.name.startsWith('postsrsd'));
  if (!theirs || typeof theirs.cells[0] === 'string') return 'postsrsd not measured';
  const ours = rows.filter(isDefaultService);
  const sleeping = rows.find((r) => r.name === NO_POLL_ROW);
  return CONCURRENCIES.map((c, i) => {
    const best = Math.max(...ours.map((r) => (typeof r.cells[i] === 'string' ? 0 : (r.cells[i] as Cell).opsPerSecond)));
    const them = (theirs.cells[i] as Cell).opsPerSecond;
    const withoutPoll = sleeping && typeof sleeping.cells[i] !== 'string' ? `, ${((sleeping.cells[i] as Cell).opsPerSecond / them).toFixed(2)}× with the idle poll off` : '';
    return `${best >= them ? 'met' : 'NOT met'} with ${c} connection${c === 1 ? '' : 's'}: ${(best / them).toFixed(2)}×${withoutPoll}`;
  }).join('; ');
}

/** callout's lookup services as `callout rewrite serve` runs them by default: the rows the target is judged on. */
function isDefaultService(row: Row): boolean {
  return row.name.startsWith('callout') && row.name.includes('loopback') && row.name !== NO_POLL_ROW;
}

/** The echo floor against postsrsd: how fast a Node.js service could be at all on this machine. */
function floorVersusPostsrsd(rows: Row[]): string {
  const theirs = rows.find((r) => r.name.startsWith('postsrsd'));
  const floor = rows.find((r) => r.name === FLOOR_ROW);
  if (!theirs || !floor || typeof theirs.cells[0] === 'string') return '';
  const ratio = (floor.cells[0] as Cell).opsPerSecond / (theirs.cells[0] as Cell).opsPerSecond;
  return (
    ` The echo row is a Node.js server that does no work at all (a fixed reply per request) and sleeps between requests: with 1 connection it reaches ` +
    `${ratio.toFixed(2)}× postsrsd's rate, the ceiling of a Node.js service over this client on this machine unless it polls for the next request ` +
    `(core/idle-poll; compare the socketmap rows with and without it).`
  );
}

interface Contender {
  name: string;
  connect: () => Promise<Target>;
  unchecked?: boolean;
}

/** Starts callout's servers (a child process) and postsrsd, runs `work` over them, stops them. */
async function withContenders<T>(work: (contenders: Contender[], postsrsdVersion: string | undefined) => Promise<T>): Promise<T> {
  const { child, ports } = await startChild();
  let postsrsd: Postsrsd | undefined;
  try {
    const [forwardPort, reversePort, socketmapPort, sleepingSocketmapPort, echoPort] = ports as [number, number, number, number, number];
    const host = '127.0.0.1';
    const echo = { host, port: echoPort };
    const contenders: Contender[] = [
      { name: 'callout tcp_table (loopback)', connect: tcpTableTarget({ host, port: forwardPort }, { host, port: reversePort }) },
      { name: 'callout socketmap (loopback)', connect: socketmapTarget({ host, port: socketmapPort }) },
      { name: NO_POLL_ROW, connect: socketmapTarget({ host, port: sleepingSocketmapPort }) },
      { name: FLOOR_ROW, connect: tcpTableTarget(echo, echo), unchecked: true },
    ];
    if (existsSync(POSTSRSD)) {
      const [forwardPort, reversePort] = (await freePorts(2)) as [number, number];
      postsrsd = await startPostsrsd({ secrets: [SECRET], domain: DOMAIN, forwardPort, reversePort });
      contenders.push({ name: `${postsrsd.version} tcp_table (loopback)`, connect: tcpTableTarget(postsrsd.forward, postsrsd.reverse) });
    }
    return await work(contenders, postsrsd?.version);
  } finally {
    child.stdin!.end();
    await postsrsd?.stop();
  }
}

/** Interleaved repetitions of every contender at one concurrency, the median of each (or 'n/a'). */
async function measureAll(contenders: readonly Contender[], concurrency: number, durationMs: number): Promise<Array<Cell | 'n/a'>> {
  const samples = contenders.map(() => [] as Cell[]);
  // The echo is a floor for one connection only; with more, both sides' CPU time decides.
  const measured = contenders.filter((c) => concurrency === 1 || !c.unchecked);
  for (let rep = 0; rep < REPETITIONS; rep++) {
    for (const c of measured) samples[contenders.indexOf(c)]!.push(await overWire(c.connect, concurrency, durationMs, !c.unchecked));
  }
  return samples.map((list) => (list.length > 0 ? median(list) : 'n/a'));
}

/**
 * The 1-connection cells again with this benchmark, callout's servers and postsrsd all on CPU 0
 * (`taskset -c 0`, inherited by every child): no request then needs a wake-up on another CPU.
 * Runs this file with --pinned under taskset; undefined without taskset.
 */
async function pinnedOneConnection(durationMs: number): Promise<Map<string, Cell | 'n/a'> | undefined> {
  if (spawnSync('taskset', ['-c', '0', 'true']).status !== 0) return undefined;
  const run = spawnSync('taskset', ['-c', '0', process.execPath, '--import', 'tsx', fileURLToPath(import.meta.url), '--pinned', String(durationMs)], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  if (run.status !== 0) throw new Error(`bench/srs --pinned exited with ${run.status ?? run.signal}`);
  return new Map(JSON.parse(run.stdout) as Array<[string, Cell | 'n/a']>);
}

export async function benchSrs(options: { quick: boolean }): Promise<string> {
  const durationMs = options.quick ? 300 : 2000;
  const rows: Row[] = [];
  const local = inProcess(durationMs);
  rows.push({ name: 'callout, in process', cells: [local, 'n/a'] });
  const postsrsdVersion = await withContenders(async (contenders, version) => {
    const results = contenders.map((c) => ({ name: c.name, cells: [] as Array<Cell | string>, unchecked: c.unchecked }));
    for (const concurrency of CONCURRENCIES) {
      (await measureAll(contenders, concurrency, durationMs)).forEach((cell, i) => results[i]!.cells.push(cell));
    }
    rows.push(...results);
    if (!version) rows.push({ name: 'postsrsd tcp_table', cells: ['not installed', 'not installed'] });
    return version ?? 'not installed';
  });
  const pinned = await pinnedOneConnection(durationMs);
  const pinnedCell = (row: Row): Cell | string => (row.name === rows[0]!.name ? 'n/a' : (pinned?.get(row.name) ?? 'n/a'));

  const lines = [
    '## SRS rewriting (forward + reverse)',
    '',
    `Lookups per second (one lookup = one forward or one reverse; each pair forwards a sender and reverses the result) ` +
      `over ${SENDERS.length} distinct senders, secret and SRS domain shared by all rows; ${options.quick ? 'quick run, ' : ''}` +
      `${durationMs / 1000} s per cell (median of ${REPETITIONS} interleaved runs over loopback), ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? 'unknown'}), Node ${process.version}, ${postsrsdVersion}. ` +
      `Over loopback each connection waits for its reply before the next request, as Postfix does; callout's servers run in a child process, ` +
      `with their defaults (idle poll ${DEFAULT_IDLE_POLL_MICROS} µs) except the "idle poll off" row. ` +
      `Wrong answers: forwards that differ from callout's in-process result, or reverses that do not give the sender back (first round, checked). ` +
      `The "pinned" column runs the 1-connection cells again with client and every server on one CPU (\`taskset -c 0\`).`,
    '',
    `| implementation | 1 connection | ${CONCURRENCIES[1]} connections | 1 connection, pinned to one CPU | wrong answers |`,
    '| --- | ---: | ---: | ---: | ---: |',
    ...rows.map((r) => `| ${r.name} | ${rate(r.cells[0] ?? '-')} | ${rate(r.cells[1] ?? '-')} | ${rate(pinned ? pinnedCell(r) : 'taskset missing')} | ${r.unchecked ? 'n/a' : wrong(r.cells)} |`),
    '',
    `With 1 connection the rates depend on whether the kernel runs client and server on one CPU or on two (a cross-CPU wake-up per request), ` +
      `which depends on the machine's other load: compare rows within one run. On this VM an idle CPU halts at once, so a wake-up on the other CPU ` +
      `costs tens of microseconds per request; pinned to one CPU nothing waits for a halted CPU, and the column compares the work each server does.`,
    '',
    `Targets: in process ≥ 200,000 lookups/s (${local.opsPerSecond >= 200_000 ? 'met' : 'NOT met'}); through the lookup services at least as fast as postsrsd on the same requests (${versusPostsrsd(rows)}${pinned ? `; pinned to one CPU with 1 connection: ${versusPostsrsdPinned(rows, pinned)}` : ''}).${floorVersusPostsrsd(rows)}`,
    '',
  ];
  return lines.join('\n');
}

/** callout's best map service against postsrsd in the pinned column. */
function versusPostsrsdPinned(rows: Row[], pinned: Map<string, Cell | 'n/a'>): string {
  const theirs = rows.find((r) => r.name.startsWith('postsrsd'));
  const them = theirs ? pinned.get(theirs.name) : undefined;
  if (!them || them === 'n/a') return 'postsrsd not measured';
  const best = Math.max(...rows.filter(isDefaultService).map((r) => {
    const cell = pinned.get(r.name);
    return cell && cell !== 'n/a' ? cell.opsPerSecond : 0;
  }));
  return `${(best / them.opsPerSecond).toFixed(2)}×`;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const pinnedAt = process.argv.indexOf('--pinned');
  if (process.argv.includes('--serve')) await serve();
  else if (pinnedAt >= 0) {
    const durationMs = Number(process.argv[pinnedAt + 1]);
    const cells = await withContenders(async (contenders) => {
      const measured = await measureAll(contenders, 1, durationMs);
      return contenders.map((c, i) => [c.name, measured[i]!] as const);
    });
    process.stdout.write(JSON.stringify(cells));
  }
  else process.stdout.write(await benchSrs({ quick: process.argv.includes('--quick') }));
}
