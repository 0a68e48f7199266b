/**
 * NAME
 *   bench/greylist - callout's greylist against Debian's postgrey on one replayed trace
 *
 * SYNOPSIS
 *   import { benchGreylist } from './greylist.js';
 *   const markdown = await benchGreylist({ quick: false });
 *
 * DESCRIPTION
 *   generateTrace() makes a deterministic trace of RCPT requests with timestamps over a few
 *   days: sending servers on IPv4 /24s and IPv6 /64s (several addresses each), legitimate
 *   senders that retry after 1 to 30 minutes (some too early, some again hours later, a few
 *   only after the retry window), spam runs that never retry, repeat mail of passed triplets
 *   (so clients reach the auto-allow), senders with BATV tags, +extensions and numbered
 *   bounce addresses, and clients and recipients on the whitelists.
 *
 *   The trace is replayed over the Postfix policy protocol, one request at a time on one
 *   connection as an smtpd sends them (or on 16 or 64), from this process to a server in its own:
 *     - `callout serve` from the build (bench/serve), with the greylist stage alone and the
 *       SQLite store in a temporary directory, policy.acceptTestTime on, so that each request's
 *       `policy_test_time` attribute sets its clock (never backwards), as postgrey's does; with
 *       more connections also `--workers 2` on that one SQLite file, and on a fresh redis-server
 *       (test/support/redis) when one is installed, and one process with `store.kind: memory`
 *       (nothing persisted: the request path without the store's cost, a calibration row), and
 *       with store.sync full (every commit fsynced: postgrey's durability, a calibration row);
 *     - postgrey 1.37 (/usr/sbin/postgrey, BerkeleyDB in a temporary --dbdir) on loopback in
 *       the foreground with the same delay, retry window, max-age, auto-allow count and
 *       whitelist files; and again with its --dbdir on tmpfs (/dev/shm), a calibration row:
 *       postgrey's BerkeleyDB environment is transactional with auto-commit (DB_INIT_TXN, as
 *       Debian ships it; no option turns the sync off), so every write it makes (each request
 *       that reaches the triplet lookup) is flushed with fdatasync before it answers, while
 *       callout's SQLite store (WAL, synchronous=NORMAL) syncs only at checkpoints; on tmpfs
 *       that fdatasync costs nothing and the row shows postgrey's own work.
 *       postgrey reads the time of a request from its `policy_test_time`
 *       attribute when present (the hook its own test script uses), so the trace's timestamps
 *       drive both servers without faketime and without compressing the delays. postgrey's
 *       maintenance runs on the wall clock (at most hourly, at night), never during a replay;
 *       the trace spans less than max-age, so no entry either side keeps would have expired.
 *   The requests are encoded before the clock starts (an smtpd has its request ready), and the
 *   benchmark replays to each server first, unmeasured, a warm-up trace as large as the measured
 *   one (warmupTrace: a namespace of clients, senders and recipients of its own, days earlier,
 *   since the servers' clocks never go back), so that a server that has been running is
 *   measured, not one whose first thousands of requests run before the JIT has compiled them.
 *   Each answer is classified as defer (DEFER_IF_PERMIT) or pass (DUNNO, PREPEND X-Greylist),
 *   and the two sequences must be equal. Throughput is requests answered per second of wall
 *   time over the whole trace, for each server, with the CPU time (user and system, from /proc)
 *   the server's processes used meanwhile (callout's whole tree: workers, the SQLite checkpoint
 *   thread, V8's threads; postgrey's one process) and the load generator's (this process): the
 *   load generator shares the machine's cores, and the cost of a request tells apart what a
 *   server does from how many cores it was given. The report works out the cores the target
 *   would take at the measured costs. The same replay to the two floor servers of
 *   bench/greylist-floor-server (one answers without reading, one applies the bare triplet
 *   rule on SQLite) calibrates the target: what the protocol and Node's I/O allow here, and one
 *   lean design on SQLite.
 *
 * LIMITS
 *   Needs /usr/sbin/postgrey (Debian package postgrey); without it only callout is measured
 *   and the report says so. postgrey is started as the current user (--user/--group), so its
 *   --dbdir is ours.
 */

import { execFileSync, fork, spawn, type ChildProcess } from 'node:child_process';
import { accessSync, closeSync, constants, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { PolicyClient, encodeRequest } from '../test/support/policy-client.js';
import { freePort } from '../test/support/ports.js';
import { startRedis } from '../test/support/redis.js';
import { CONTENDED_CORES, machineTicks } from './measure.js';
import { processCpuSeconds, startServe, stopChild, tmpfsDir } from './serve.js';

export const POSTGREY = '/usr/sbin/postgrey';

export interface TraceEvent {
  /** Seconds since the epoch. */
  time: number;
  clientAddress: string;
  clientName: string;
  sender: string;
  recipient: string;
}

export interface TraceOptions {
  /** Messages (each with its retries) to generate. */
  messages: number;
  seed?: number;
  /** Start of the trace, seconds since the epoch. */
  start?: number;
  /**
   * 0 (default): the measured trace. Another number gives clients, senders and recipients of
   * their own (172.16.0.0/12 and 2001:db8:8000::/33 clients, *.wN.example domains), so such a
   * trace warms a server up without touching any state the measured trace reads.
   */
  namespace?: number;
}

export type Verdict = 'pass' | 'defer';

/** When the measured trace starts, seconds since the epoch. */
const TRACE_START = Date.UTC(2026, 2, 2, 8) / 1000;

/** The same settings for both servers (postgrey's defaults). */
export const GREYLIST_SETTINGS = { delaySeconds: 300, retryWindowDays: 2, maxAgeDays: 35, autoAllowClients: 5 } as const;
export const WHITELIST_CLIENTS = '# bench whitelist (postgrey format)\nlists.whitelisted.example\n/^mx\\d+\\.bulk\\.example$/\n203.0.113.0/24\n';
export const WHITELIST_RECIPIENTS = 'postmaster@\nabuse@\n';

function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Sender {
  addresses: string[];
  names: string[];
  domain: string;
  spam: boolean;
}

/** A deterministic trace (see DESCRIPTION), sorted by time. */
export function generateTrace(options: TraceOptions): TraceEvent[] {
  const rand = random(options.seed ?? 1);
  const pick = <T>(list: readonly T[]): T => list[Math.floor(rand() * list.length)]!;
  const start = options.start ?? TRACE_START;
  const space = options.namespace ?? 0;
  const suffix = space === 0 ? '.example' : `.w${space}.example`;
  const span = 5 * 86_400;
  const servers: Sender[] = [];
  const serverCount = Math.max(8, Math.round(options.messages / 25));
  for (let s = 0; s < serverCount; s += 1) {
    const spam = rand() < 0.3;
    const v6 = rand() < 0.25;
    const base = v6
      ? `2001:db8:${((space === 0 ? 0 : 0x8000) + (s % 4000)).toString(16)}:${Math.floor(rand() * 3).toString(16)}`
      : `${space === 0 ? `10.${Math.floor(s / 250) % 250}` : `172.${16 + (space % 16)}`}.${s % 250}`;
    const addresses = Array.from({ length: 1 + Math.floor(rand() * 3) }, (_, i) => (v6 ? `${base}::${(i + 1).toString(16)}` : `${base}.${10 + i}`));
    const kind = rand();
    const names = addresses.map((_, i) =>
      kind < 0.05 ? 'lists.whitelisted.example' : kind < 0.1 ? `mx${i + 1}.bulk.example` : kind < 0.5 ? `mail${i}.sender${s}${suffix}` : 'unknown',
    );
    servers.push({ addresses: s % 40 === 7 ? ['203.0.113.25'] : addresses, names, domain: `sender${s}${suffix}`, spam });
  }
  const recipients = Array.from({ length: 200 }, (_, i) => `user${i % 97}x${Math.floor(i / 97)}@rcpt${i % 3}${suffix}`);
  const localParts = ['alice', 'bob', 'news', 'billing', 'noreply'];
  const senderOf = (server: Sender): string => {
    const local = pick(localParts);
    const form = rand();
    const n = Math.floor(rand() * 100000);
    if (form < 0.1) return `prvs=0${String(100 + (n % 900))}${(n % 0xffffff).toString(16).padStart(6, '0')}=${local}@${server.domain}`;
    if (form < 0.2) return `${local}+${n}@${server.domain}`;
    if (form < 0.3) return `bounce-${n}-${local}@${server.domain}`;
    if (form < 0.33) return '';
    return `${local}@${server.domain}`;
  };

  const events: TraceEvent[] = [];
  for (let m = 0; m < options.messages; m += 1) {
    const server = pick(servers);
    const sender = senderOf(server);
    const recipient = rand() < 0.02 ? `postmaster@rcpt0${suffix}` : pick(recipients);
    let time = start + Math.floor(rand() * span);
    const attempts = server.spam ? 1 : 1 + Math.floor(rand() * 4);
    for (let a = 0; a < attempts && time < start + span + 3 * 86_400; a += 1) {
      const index = Math.floor(rand() * server.addresses.length);
      events.push({ time, clientAddress: server.addresses[index]!, clientName: server.names[index] ?? 'unknown', sender, recipient });
      const gap = rand();
      // Retries: mostly after 1-30 minutes, some too early, some hours later, some past the window.
      time += gap < 0.2 ? 30 + Math.floor(rand() * 240) : gap < 0.85 ? 300 + Math.floor(rand() * 1500) : gap < 0.95 ? 3_600 + Math.floor(rand() * 40_000) : 2 * 86_400 + 60 + Math.floor(rand() * 3_600);
    }
    // Some triplets come back with new mail later.
    if (!server.spam && rand() < 0.3) events.push({ time: time + Math.floor(rand() * 86_400), clientAddress: pick(server.addresses), clientName: server.names[0] ?? 'unknown', sender, recipient });
  }
  return events.sort((x, y) => x.time - y.time);
}

function request(event: TraceEvent, instance: string): Record<string, string> {
  return {
    request: 'smtpd_access_policy',
    protocol_state: 'RCPT',
    protocol_name: 'ESMTP',
    client_address: event.clientAddress,
    client_name: event.clientName,
    reverse_client_name: event.clientName,
    helo_name: event.clientName === 'unknown' ? 'helo.example' : event.clientName,
    sender: event.sender,
    recipient: event.recipient,
    recipient_count: '0',
    queue_id: '',
    instance,
    size: '0',
    etrn_domain: '',
    // The trace's time, which both servers take as their clock (postgrey's test hook).
    policy_test_time: String(event.time),
  };
}

/** The requests of a trace as they go over the wire, encoded before the clock starts, as an smtpd has its request ready. */
function encodeTrace(trace: readonly TraceEvent[], instancePrefix: string): string[] {
  return trace.map((event, index) => encodeRequest(request(event, `${instancePrefix}.${index}`)));
}

/**
 * A greylister's answer as defer (DEFER_IF_PERMIT) or pass (DUNNO, PREPEND of its header).
 * Anything else (callout's "451 4.3.0" for a stage fault, an error) throws: counted as a pass,
 * a server that fails would look fast.
 */
export function classify(action: string): Verdict {
  if (/^DEFER_IF_PERMIT\b/.test(action)) return 'defer';
  if (action === 'DUNNO' || /^PREPEND X-Greylist:/.test(action)) return 'pass';
  throw new Error(`a greylisting answer that is neither a deferral nor a pass: ${JSON.stringify(action.slice(0, 120))}`);
}

export interface Replay {
  /** The answers as the server sent them, in trace order (with one connection); their verdicts are actions.map(classify). */
  actions: string[];
  seconds: number;
  perSecond: number;
  /** CPU seconds the server's processes used during the measured replay (utime + stime, whole tree). */
  serverCpuSeconds: number;
  /** CPU seconds this process, the load generator, used meanwhile. */
  loadCpuSeconds: number;
  /** Busy CPU seconds of the whole machine meanwhile (/proc/stat); NaN without it. */
  machineCpuSeconds: number;
}

/** CPU seconds a server's processes have used so far. */
type CpuMeter = () => number;

/**
 * Sends the requests in order over `clients` connections, each taking the next request when its
 * previous one is answered (Postfix runs many smtpd processes, each with its own policy
 * connection). With one connection the answers are in trace order and exactly comparable;
 * with more, requests a few positions apart overlap, which is what throughput is about.
 */
async function replay(clients: readonly PolicyClient[], requests: readonly string[], serverCpu: CpuMeter): Promise<Replay> {
  const actions: string[] = new Array<string>(requests.length);
  let next = 0;
  const serverCpuBefore = serverCpu();
  const loadCpuBefore = process.cpuUsage();
  const ticksBefore = machineTicks();
  const started = performance.now();
  await Promise.all(
    clients.map(async (client) => {
      for (let index = next++; index < requests.length; index = next++) {
        const action = await client.requestEncoded(requests[index]!);
        actions[index] = action;
        // An answer that is neither a deferral nor a pass ends the replay here, not at the report.
        classify(action);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const load = process.cpuUsage(loadCpuBefore);
  const ticksAfter = machineTicks();
  const machineCores =
    ticksBefore && ticksAfter && ticksAfter.total > ticksBefore.total ? ((ticksAfter.busy - ticksBefore.busy) / (ticksAfter.total - ticksBefore.total)) * ticksAfter.cpus : Number.NaN;
  return {
    actions,
    seconds,
    perSecond: requests.length / seconds,
    serverCpuSeconds: serverCpu() - serverCpuBefore,
    loadCpuSeconds: (load.user + load.system) / 1e6,
    machineCpuSeconds: machineCores * seconds,
  };
}

/**
 * The measured replay, after an unmeasured one of the warm-up trace (if any) on the same
 * connections: a server that has been running a while, as in production, not one that has just
 * started (whose first thousands of requests run before the JIT has compiled the hot code).
 */
async function warmThenReplay(clients: readonly PolicyClient[], trace: readonly TraceEvent[], warmup: readonly TraceEvent[] | undefined, serverCpu: CpuMeter): Promise<Replay> {
  if (warmup) await replay(clients, encodeTrace(warmup, 'warmup'), serverCpu);
  return replay(clients, encodeTrace(trace, 'bench'), serverCpu);
}

/**
 * A warm-up trace for `trace`: as large, in a namespace of its own (TraceOptions.namespace), and
 * over days before it, since the servers' clocks follow the requests and never go back.
 */
export function warmupTrace(trace: readonly TraceEvent[], messages: number): TraceEvent[] {
  const first = trace[0]?.time ?? TRACE_START;
  return generateTrace({ messages, seed: 99, namespace: 1, start: first - 10 * 86_400 });
}

async function connectAll(address: string, count: number): Promise<PolicyClient[]> {
  return Promise.all(Array.from({ length: count }, () => PolicyClient.connect(address)));
}

function writeWhitelists(dir: string): { clients: string; recipients: string } {
  const clients = join(dir, 'whitelist_clients');
  const recipients = join(dir, 'whitelist_recipients');
  writeFileSync(clients, WHITELIST_CLIENTS);
  writeFileSync(recipients, WHITELIST_RECIPIENTS);
  return { clients, recipients };
}

export interface CalloutReplayOptions {
  connections?: number;
  /** policy.workers of the daemon (SQLite shared by the workers). */
  workers?: number;
  /** Run the build, as production does (the benchmark), or the source tree (the tests). */
  from?: 'build' | 'source';
  /** A Redis store at this URL instead of SQLite. */
  redisUrl?: string;
  /** store.kind memory instead of SQLite: nothing persisted, the request path without a store's cost. */
  unpersisted?: boolean;
  /** store.sync full: every commit fsynced, postgrey's durability (see DESCRIPTION). */
  syncFull?: boolean;
  /** Replayed first, unmeasured (warmThenReplay). */
  warmup?: readonly TraceEvent[];
}

/** Replays the trace through `callout serve` with the greylist stage (see DESCRIPTION and replay()). */
export async function replayCallout(trace: readonly TraceEvent[], options: CalloutReplayOptions = {}): Promise<Replay> {
  const { connections = 1, workers = 1, from = 'build', redisUrl, unpersisted = false, syncFull = false, warmup } = options;
  const dir = mkdtempSync(join(tmpdir(), 'callout-bench-grey-'));
  const whitelists = writeWhitelists(dir);
  const port = await freePort();
  const config = {
    dataDir: dir,
    store: redisUrl ? { kind: 'redis', url: redisUrl } : unpersisted ? { kind: 'memory' } : { kind: 'sqlite', path: join(dir, 'callout.sqlite'), ...(syncFull ? { sync: 'full' } : {}) },
    policy: {
      listen: `127.0.0.1:${port}`,
      workers,
      acceptTestTime: true,
      // A stage fault answers 451, which classify() refuses, instead of a DUNNO it would count as a fast pass.
      faultAction: 'DEFER',
      stages: [
        {
          name: 'greylist',
          delay: GREYLIST_SETTINGS.delaySeconds,
          retryWindow: `${GREYLIST_SETTINGS.retryWindowDays}d`,
          maxAge: `${GREYLIST_SETTINGS.maxAgeDays}d`,
          autoAllowClients: GREYLIST_SETTINGS.autoAllowClients,
          normaliseVerp: false,
          whitelistClientFiles: [whitelists.clients],
          whitelistRecipientFiles: [whitelists.recipients],
        },
      ],
    },
    metrics: { listen: '' },
  };
  // JSON is YAML.
  const configFile = join(dir, 'callout.yaml');
  writeFileSync(configFile, JSON.stringify(config));
  const serve = await startServe(['--config', configFile], port, 'callout serve (greylist)', from);
  return replayThenStop(serve.child, serve.cpuSeconds, dir, () => connectAll(`127.0.0.1:${port}`, connections), trace, warmup);
}

function redisAvailable(): boolean {
  try {
    accessSync('/usr/bin/redis-server', constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export function postgreyAvailable(): boolean {
  try {
    accessSync(POSTGREY, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}


async function connectWhenUp(port: number, connections: number, child: ChildProcess, output: () => string): Promise<PolicyClient[]> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`postgrey exited during start:\n${output()}`);
    try {
      return await connectAll(`127.0.0.1:${port}`, connections);
    } catch {
      await sleep(100);
    }
  }
  throw new Error(`postgrey did not listen on 127.0.0.1:${port} within 15 s:\n${output()}`);
}

/**
 * Replays the trace through postgrey on loopback (see DESCRIPTION and replay()), its --dbdir under `parent`;
 * `extraArgs` go on its command line after the bench's settings (e.g. a --greylist-text that says the seconds).
 */
export async function replayPostgrey(
  trace: readonly TraceEvent[],
  connections = 1,
  warmup?: readonly TraceEvent[],
  parent = tmpdir(),
  extraArgs: readonly string[] = [],
): Promise<Replay> {
  const dir = mkdtempSync(join(parent, 'postgrey-bench-'));
  const whitelists = writeWhitelists(dir);
  const port = await freePort();
  const group = execFileSync('id', ['-gn'], { encoding: 'utf8' }).trim();
  const log = join(dir, 'postgrey.log');
  const logFd = openSync(log, 'w');
  const child = spawn(
    POSTGREY,
    [
      `--inet=127.0.0.1:${port}`,
      `--dbdir=${dir}`,
      `--user=${userInfo().username}`,
      `--group=${group}`,
      `--delay=${GREYLIST_SETTINGS.delaySeconds}`,
      `--retry-window=${GREYLIST_SETTINGS.retryWindowDays}`,
      `--max-age=${GREYLIST_SETTINGS.maxAgeDays}`,
      `--auto-whitelist-clients=${GREYLIST_SETTINGS.autoAllowClients}`,
      `--whitelist-clients=${whitelists.clients}`,
      `--whitelist-recipients=${whitelists.recipients}`,
      ...extraArgs,
    ],
    // In the foreground postgrey logs every decision on stderr: to a file, as callout's log goes
    // to /dev/null, not through a pipe that the load generator (this process) would have to read.
    { stdio: ['ignore', logFd, logFd] },
  );
  closeSync(logFd);
  const output = (): string => readFileSync(log, 'utf8').slice(-4000);
  return replayThenStop(child, () => processCpuSeconds(child.pid), dir, () => connectWhenUp(port, connections, child, output), trace, warmup);
}

/**
 * warmThenReplay() on the connections that connect() opens once the server is up; then the
 * server process is stopped (SIGTERM, SIGKILL after 5 s) and its directory removed, however
 * the replay ended.
 */
async function replayThenStop(
  child: ChildProcess,
  serverCpu: CpuMeter,
  dir: string,
  connect: () => Promise<PolicyClient[]>,
  trace: readonly TraceEvent[],
  warmup: readonly TraceEvent[] | undefined,
): Promise<Replay> {
  try {
    const clients = await connect();
    try {
      return await warmThenReplay(clients, trace, warmup, serverCpu);
    } finally {
      for (const client of clients) client.close();
    }
  } finally {
    await stopChild(child);
    rmSync(dir, { recursive: true, force: true });
  }
}

export type FloorMode = 'unread' | 'sqlite';

/** Replays the trace through a floor server (bench/greylist-floor-server) in a process of its own. */
export async function replayFloor(trace: readonly TraceEvent[], mode: FloorMode, connections: number, warmup?: readonly TraceEvent[]): Promise<Replay> {
  const dir = mkdtempSync(join(tmpdir(), 'callout-bench-floor-'));
  const port = await freePort();
  const child = fork(new URL('./greylist-floor-server.ts', import.meta.url), [mode, String(port), join(dir, 'floor.sqlite')], { execArgv: process.execArgv });
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`greylist floor server (${mode}) not ready in 15 s`)), 15_000);
    child.once('message', () => {
      clearTimeout(timer);
      resolve();
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`greylist floor server (${mode}) exited with ${code} during start`));
    });
  });
  return replayThenStop(child, () => processCpuSeconds(child.pid), dir, () => ready.then(() => connectAll(`127.0.0.1:${port}`, connections)), trace, warmup);
}

const FLOORS: Array<[FloorMode, string, string]> = [
  ['unread', 'floor: answers DUNNO without reading', '—'],
  ['sqlite', 'floor: the triplet rule alone, no log', 'SQLite'],
];

export interface Comparison {
  events: number;
  differences: Array<{ index: number; event: TraceEvent; callout: Verdict; postgrey: Verdict }>;
  deferred: { callout: number; postgrey: number };
}

export function compare(trace: readonly TraceEvent[], callout: readonly Verdict[], postgrey: readonly Verdict[]): Comparison {
  const differences: Comparison['differences'] = [];
  for (const [index, event] of trace.entries()) {
    const ours = callout[index] ?? 'pass';
    const theirs = postgrey[index] ?? 'pass';
    if (ours !== theirs) differences.push({ index, event, callout: ours, postgrey: theirs });
  }
  const deferred = (list: readonly Verdict[]) => list.filter((v) => v === 'defer').length;
  return { events: trace.length, differences, deferred: { callout: deferred(callout), postgrey: deferred(postgrey) } };
}

/** One connection (trace order, decisions compared), 16 smtpd processes, and a busy MX's 64 (Postfix's default_process_limit is 100). */
const CONNECTIONS = [1, 16, 64];
const TARGET_RATIO = 10;
const WORKERS = 2;

const cpuPerRequest = (r: Replay, cpuSeconds: number): number => (cpuSeconds / r.actions.length) * 1e6;

/**
 * What the target asks of this machine: postgrey's CPU per request against callout's, and the
 * cores that TARGET_RATIO × postgrey's rate would take at callout's CPU per request, with the
 * load generator's (which runs on the same machine), against the cores there are.
 */
function cpuBudget(connections: number, callout: Replay, postgrey: Replay, postgreyTmpfs?: Replay): string {
  const calloutUs = cpuPerRequest(callout, callout.serverCpuSeconds);
  const postgreyUs = cpuPerRequest(postgrey, postgrey.serverCpuSeconds);
  const tmpfsUs = postgreyTmpfs ? cpuPerRequest(postgreyTmpfs, postgreyTmpfs.serverCpuSeconds) : undefined;
  const loadUs = cpuPerRequest(callout, callout.loadCpuSeconds);
  const targetRate = TARGET_RATIO * postgrey.perSecond;
  return (
    `- CPU per request at ${connections} connections: callout ${calloutUs.toFixed(0)} µs, postgrey ${postgreyUs.toFixed(0)} µs ` +
    `(postgrey ${(postgreyUs / calloutUs).toFixed(1)}× callout's; it ran at ${(postgrey.serverCpuSeconds / postgrey.seconds).toFixed(2)} cores, one process, each of whose writes waits for an fdatasync` +
    (tmpfsUs === undefined ? '' : `; with its database on tmpfs ${tmpfsUs.toFixed(0)} µs, ${(tmpfsUs / calloutUs).toFixed(1)}× callout's`) +
    '). ' +
    `${TARGET_RATIO}× postgrey's rate, ${targetRate.toFixed(0)} requests/s, at these costs takes ${((targetRate * calloutUs) / 1e6).toFixed(2)} cores of callout ` +
    `and ${((targetRate * loadUs) / 1e6).toFixed(2)} of the load generator (${loadUs.toFixed(0)} µs per request); this machine has ${availableParallelism()}.`
  );
}

/** The benchmark as a Markdown section for docs/benchmarks.md. */
export async function benchGreylist(options: { quick: boolean }): Promise<string> {
  const messages = options.quick ? 400 : 12_000;
  const trace = generateTrace({ messages, seed: 2026 });
  const warmup = warmupTrace(trace, messages);
  const hours = Math.round(((trace.at(-1)?.time ?? 0) - (trace[0]?.time ?? 0)) / 3600);
  const deferred = (r: Replay) => r.actions.filter((action) => classify(action) === 'defer').length;
  const lines = [
    '## Greylisting: callout and postgrey on one trace',
    '',
    `Trace: ${trace.length} RCPT requests (${messages} messages with their retries, ${new Set(trace.map((e) => e.clientAddress)).size} client addresses, ${hours} hours of trace time), ` +
      'replayed over the policy protocol from the benchmark process to each server in a process of its own (callout serve from the build, as production runs it), ' +
      `each request encoded before the clock starts; before it, unmeasured, each server answers a warm-up trace of ${warmup.length} requests of clients, senders and recipients of its own, days earlier, so that what is measured is a server that has been running, not one starting up; ` +
      'with the time taken from the trace: each request carries it in `policy_test_time`, which postgrey reads and callout reads with policy.acceptTestTime; on fresh stores. ' +
      `Settings on both: delay ${GREYLIST_SETTINGS.delaySeconds} s, retry window ${GREYLIST_SETTINGS.retryWindowDays} d, max-age ${GREYLIST_SETTINGS.maxAgeDays} d, ` +
      `auto-allow after ${GREYLIST_SETTINGS.autoAllowClients} passes, the same whitelist files. With one connection the requests are answered in trace order and the decisions are compared; ` +
      'with 16 or 64 (as that many smtpd processes would hold; Postfix allows 100 by default) neighbouring requests overlap.',
    '',
    '| server | store | connections | requests/s | seconds | deferred | server CPU (cores) | server CPU per request (µs) | load generator CPU (cores) | other work on the machine (cores) |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  let disturbed = false;
  /** The machine's busy CPU minus the server's and the load generator's: kernel work not charged to them, other programs. */
  const otherWork = (r: Replay): string => {
    if (!Number.isFinite(r.machineCpuSeconds)) return 'n/a';
    const cores = (r.machineCpuSeconds - r.serverCpuSeconds - r.loadCpuSeconds) / r.seconds;
    disturbed ||= cores > CONTENDED_CORES;
    return `${Math.max(0, cores).toFixed(2)}${cores > CONTENDED_CORES ? ' ⚠' : ''}`;
  };
  const row = (server: string, store: string, connections: number, r: Replay): string =>
    `| ${server} | ${store} | ${connections} | ${r.perSecond.toFixed(0)} | ${r.seconds.toFixed(2)} | ${deferred(r)} | ` +
    `${(r.serverCpuSeconds / r.seconds).toFixed(2)} | ${cpuPerRequest(r, r.serverCpuSeconds).toFixed(0)} | ${(r.loadCpuSeconds / r.seconds).toFixed(2)} | ${otherWork(r)} |`;
  const postgreyHere = postgreyAvailable();
  const tmpfs = postgreyHere ? tmpfsDir() : undefined;
  const results: Array<{ connections: number; callout: Replay; postgrey?: Replay; postgreyTmpfs?: Replay }> = [];
  const workersRows: string[] = [];
  const floorRows: string[] = [];
  const pathRows: string[] = [];
  for (const connections of CONNECTIONS) {
    const callout = await replayCallout(trace, { connections, warmup });
    const postgrey = postgreyHere ? await replayPostgrey(trace, connections, warmup) : undefined;
    // The same postgrey with its database where fdatasync costs nothing (see DESCRIPTION).
    const postgreyTmpfs = postgrey && tmpfs ? await replayPostgrey(trace, connections, warmup, tmpfs) : undefined;
    results.push({ connections, callout, ...(postgrey ? { postgrey } : {}), ...(postgreyTmpfs ? { postgreyTmpfs } : {}) });
    lines.push(row('callout serve (greylist stage)', 'SQLite', connections, callout));
    if (connections > 1) {
      const stores: Array<[string, string | undefined]> = [['SQLite', undefined]];
      const redis = redisAvailable() ? await startRedis() : undefined;
      if (redis) stores.push(['Redis', redis.url]);
      try {
        for (const [store, redisUrl] of stores) {
          // A fresh database for each row: the trace must start from nothing.
          const workers = await replayCallout(trace, { connections, workers: WORKERS, warmup, ...(redisUrl ? { redisUrl } : {}) });
          lines.push(row(`callout serve --workers ${WORKERS} (greylist stage)`, store, connections, workers));
          if (postgrey) workersRows.push(`- ${connections} connections, \`--workers ${WORKERS}\` on ${store}: callout ${(workers.perSecond / postgrey.perSecond).toFixed(1)}× postgrey's requests per second.`);
        }
      } finally {
        await redis?.stop();
      }
      if (!redis) workersRows.push('- redis-server is not installed: no Redis row.');
      const synced = await replayCallout(trace, { connections, warmup, syncFull: true });
      lines.push(row('callout serve (greylist stage), store.sync full (every commit fsynced, as postgrey)', 'SQLite', connections, synced));
      if (postgrey) pathRows.push(`- ${connections} connections, callout with \`store.sync: full\` (every commit fsynced, safe from a power loss, postgrey's durability; one fsync per turn of the event loop, not per request) against postgrey as shipped: ${(synced.perSecond / postgrey.perSecond).toFixed(1)}× postgrey.`);
      const unpersisted = await replayCallout(trace, { connections, warmup, unpersisted: true });
      lines.push(row('callout serve (greylist stage), nothing persisted', 'memory', connections, unpersisted));
      if (postgrey) pathRows.push(`- ${connections} connections, callout with \`store.kind: memory\` (nothing persisted: not for production, where a restart would forget every triplet; it measures callout's request path without the store's cost): ${(unpersisted.perSecond / postgrey.perSecond).toFixed(1)}× postgrey.`);
    }
    if (postgrey) lines.push(row('postgrey 1.37', 'BerkeleyDB', connections, postgrey));
    if (postgreyTmpfs) lines.push(row(`postgrey 1.37, --dbdir on tmpfs (${tmpfs ?? ''}: its fdatasync per write costs nothing)`, 'BerkeleyDB', connections, postgreyTmpfs));
    for (const [mode, name, store] of FLOORS) {
      const floor = await replayFloor(trace, mode, connections, warmup);
      lines.push(row(`${name} (bench/greylist-floor-server)`, store, connections, floor));
      if (postgrey) floorRows.push(`- ${connections} connection${connections > 1 ? 's' : ''}, ${name}: ${(floor.perSecond / postgrey.perSecond).toFixed(1)}× postgrey.`);
    }
  }
  lines.push('');
  if (disturbed) lines.push(`⚠ More than ${CONTENDED_CORES} cores went to other work during the replay: its numbers understate what that server can do, and ratios with it are not to be trusted. Run again on a quiet machine.`, '');
  if (!postgreyHere) {
    lines.push(`postgrey is not installed (${POSTGREY}): install the Debian package postgrey to compare.`);
    return `${lines.join('\n')}\n`;
  }
  lines.push(
    tmpfs
      ? "- postgrey's BerkeleyDB environment is transactional with auto-commit, as Debian ships it (no option turns the sync off): every write is flushed with fdatasync before postgrey answers, " +
          "while callout's SQLite store (WAL, synchronous=NORMAL) syncs only at checkpoints, so callout's acknowledged writes survive a crash of the process, postgrey's also a power loss. " +
          `The "--dbdir on tmpfs" rows take that cost out (${tmpfs}: fdatasync returns at once): postgrey's own work, the like-for-like comparison.`
      : "- postgrey's BerkeleyDB environment is transactional with auto-commit, as Debian ships it: every write is flushed with fdatasync before postgrey answers, while callout's SQLite store (WAL, synchronous=NORMAL) syncs only at checkpoints; /dev/shm is not a tmpfs here, so no row takes that cost out.",
  );
  for (const { connections, callout, postgrey, postgreyTmpfs } of results) {
    if (postgrey) {
      lines.push(
        `- ${connections} connection${connections > 1 ? 's' : ''}: callout ${(callout.perSecond / postgrey.perSecond).toFixed(1)}× postgrey's requests per second` +
          (postgreyTmpfs ? `; ${(callout.perSecond / postgreyTmpfs.perSecond).toFixed(1)}× postgrey's with its database on tmpfs.` : '.'),
      );
    }
  }
  for (const { connections, callout, postgrey, postgreyTmpfs } of results) {
    if (postgrey && connections > 1) lines.push(cpuBudget(connections, callout, postgrey, postgreyTmpfs));
  }
  lines.push(...workersRows);
  lines.push(
    `- Target (issue 6): at least ${TARGET_RATIO}× postgrey's requests per second. The floor rows (bench/greylist-floor-server) calibrate it on this trace and this machine: "answers DUNNO without reading" is what the protocol, Node's I/O and this load generator allow any policy server here (where its load generator CPU nears 1.00, the load generator, one Node process, is the limit, not the server); "the triplet rule alone" is one design at its leanest (one Node process, synchronous SQLite as callout's store, one committed transaction per turn of the event loop, nothing else: no whitelists, auto-allow, retry window, normalisation, log or metrics; it writes a triplet when it is new and when it passes, and its deferrals differ from postgrey's where those features decide). It is not a bound on other designs, such as a store that acknowledges before its commit.`,
    ...floorRows,
    ...pathRows,
  );
  const sequential = results[0];
  if (sequential?.postgrey) {
    const comparison = compare(trace, sequential.callout.actions.map(classify), sequential.postgrey.actions.map(classify));
    lines.push(
      `- Decisions (one connection, trace order): equal on ${comparison.events - comparison.differences.length} of ${comparison.events} requests` +
        (comparison.differences.length === 0 ? '.' : `; first difference: ${JSON.stringify(comparison.differences[0])}.`),
    );
  }
  return `${lines.join('\n')}\n`;
}
