/**
 * NAME
 *   bench/run - the callout benchmark: cold and cached callouts, the npm peers, correctness
 *
 * SYNOPSIS
 *   npm run bench                 full run (about two minutes), writes docs/benchmarks.md
 *   npm run bench -- --quick      smoke run of a few seconds, prints the report
 *   npm run bench -- --out FILE   write the report to FILE instead
 *
 * DESCRIPTION
 *   All traffic stays on loopback. A child process (bench/servers) serves the DNS zone of
 *   bench/world and instant SMTP servers on 127.77.0.1-250:25; this process runs the verifiers:
 *     1. correctness: callout and each peer against the labelled cases (bench/correctness);
 *     2. callout cold: a fresh engine, store and DNS cache for every round of 1000 addresses
 *        (one per domain), so each verification is a real MX lookup and SMTP dialogue, with
 *        the random (catch-all) probe on (default) and off; within a round the engine reuses
 *        its connection to an exchanger address for the other domains there and pipelines
 *        (defaults), and one row turns both off;
 *     3. callout on one long-lived engine, which learns each domain's catch-all state once;
 *        then the same addresses again: cached verdicts;
 *     4. the peers on the same addresses and servers;
 *     5. the I/O floor (bench/io-floor): the queries and the dialogue with no verifier behind
 *        them, per callout and on reused connections, and the servers' CPU per callout;
 *     6. the sections of bench/policy, bench/spf, bench/greylist and bench/srs, each against
 *        its own peers (postgrey, policyd-spf, mailauth, pyspf, postsrsd) in the same run.
 *   Each cell is bounded by an operation count and a time (bench/measure). The peers need port
 *   25 and /etc/hosts entries (bench/etc-hosts), so they run only as root; the entries are
 *   removed when the run ends, however it ends.
 */

import dns from 'node:dns';
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import { checkTool } from './correctness.js';
import type { ToolCorrectness } from './correctness.js';
import { addHostsEntries } from './etc-hosts.js';
import { acquireRunLock } from './lock.js';
import type { HostsEntries } from './etc-hosts.js';
import { isContended, otherCores, runCell, waitForQuiet } from './measure.js';
import type { CellOptions, MeasuredCell } from './measure.js';
import { renderReport } from './report.js';
import type { Row } from './report.js';
import { startServerProcess } from './servers-client.js';
import type { ServerProcess } from './servers-client.js';
import { benchConfig, benchResolver, engineTool, freshEngine, installedVersion, limitsForBench, peers } from './tools.js';
import type { Tool } from './tools.js';
import { DOMAIN_COUNT, HOST_COUNT, SMTP_PORT, benchAddress, domainOf, hostsEntries } from './world.js';
import { resolveMailHosts } from '../src/dns/mx.js';
import { benchGreylist } from './greylist.js';
import { createIoFloor } from './io-floor.js';
import type { FloorConnections, IoFloor } from './io-floor.js';
import { benchPolicy } from './policy.js';
import { benchSpf } from './spf.js';
import { benchSrs } from './srs.js';
import type { CalloutEngine } from '../src/verify/engine.js';

const CONCURRENCIES = [1, 16, 128];

/** The other issues' benchmarks, each a section of the same report from the same run. */
const SECTIONS: Array<[string, (options: { quick: boolean }) => Promise<string>]> = [
  ['policy service', benchPolicy],
  ['SPF', benchSpf],
  ['greylisting', benchGreylist],
  ['SRS', benchSrs],
];

interface Budget {
  /** Seconds that re-runs of disturbed cells may take in all. */
  retry: number;
  cold: CellOptions['maxMs'];
  coldOps: number;
  sharedAddresses: number;
  warm: number;
  peer: number;
  peerOps: number;
  warmup: number;
}

const FULL: Budget = { retry: 70, cold: 2_000, coldOps: 100_000, sharedAddresses: 10_000, warm: 1_500, peer: 4_000, peerOps: 100_000, warmup: 1_000 };
const QUICK: Budget = { retry: 0, cold: 300, coldOps: 5_000, sharedAddresses: 1_000, warm: 300, peer: 300, peerOps: 5_000, warmup: 200 };

function parseArgs(argv: string[]): { quick: boolean; out: string | undefined } {
  const quick = argv.includes('--quick');
  const at = argv.indexOf('--out');
  const out = at === -1 ? (quick ? undefined : 'docs/benchmarks.md') : argv[at + 1];
  return { quick, out };
}

function log(message: string): void {
  process.stderr.write(`bench: ${message}\n`);
}

/** The label of a callout answer: right, or what was wrong with it. */
function judge(exists: boolean, verdict: string, source: string, wantSource: string): string {
  if (source !== wantSource) return `source ${source}`;
  const expected = exists ? 'deliverable' : 'undeliverable';
  return verdict === expected ? 'right' : `${verdict} for ${exists ? 'an existing' : 'a missing'} user`;
}

type Op = (index: number) => Promise<string | string[]>;

/** Seconds left for repeating cells that other work on the machine disturbed. */
let retrySecondsLeft = 0;

async function measuredOnce(servers: ServerProcess, options: CellOptions, op: Op): Promise<MeasuredCell> {
  const before = await servers.cpu();
  const cell = await runCell(options, op);
  const after = await servers.cpu();
  return { ...cell, serverCores: (after.micros - before.micros) / 1e6 / cell.seconds };
}

/**
 * One cell. When other work took a share of the CPU during it, the cell is run again (with
 * fresh state from makeOp) once the machine is quiet, while the retry budget lasts, and the
 * least disturbed run is kept; the report marks a cell that stayed disturbed.
 */
async function measured(servers: ServerProcess, options: CellOptions, makeOp: () => Op): Promise<MeasuredCell> {
  let kept = await measuredOnce(servers, options, makeOp());
  while (isContended(kept) && retrySecondsLeft > 0) {
    const started = Date.now();
    const quiet = await waitForQuiet(Math.min(15_000, retrySecondsLeft * 1000));
    if (quiet) {
      log('  other work disturbed the cell; running it again');
      const again = await measuredOnce(servers, options, makeOp());
      if (otherCores(again) < otherCores(kept)) kept = again;
    }
    retrySecondsLeft -= (Date.now() - started) / 1000;
    if (!quiet) break;
  }
  return kept;
}

interface ColdVariant {
  randomProbe: boolean;
  /** callout.connectionCache and callout.pipelining as configured by default (on), or both off. */
  reuse: boolean;
  /** 'fresh': an empty DNS cache with every engine; 'cached': one resolver, filled before the cell. */
  dns: 'fresh' | 'cached';
  /** Addresses of one domain per verifyMany() call; 1 means verify(). */
  batch: number;
}

function coldName(variant: ColdVariant): string {
  const how = variant.batch > 1 ? `verifyMany × ${variant.batch} per domain` : variant.dns === 'cached' ? 'DNS cached' : '';
  const reuse = variant.reuse ? '' : ', no connection reuse or pipelining';
  return `callout cold${how ? `, ${how}` : ''}, random probe ${variant.randomProbe ? 'on (default)' : 'off'}${reuse}`;
}

function coldNote(variant: ColdVariant): string {
  const dns = variant.dns === 'fresh' ? 'an MX lookup (empty DNS cache) and' : 'an SMTP dialogue with the MX records and addresses cached (DNS cache filled before the cell), i.e.';
  const base =
    variant.batch > 1
      ? `each call verifies ${variant.batch} distinct addresses of one domain, which the engine probes on one connection (limits.addressesPerConnection 20); ops/s counts addresses, latency is per call`
      : `every verification is ${dns} an SMTP dialogue`;
  const reuse = variant.reuse
    ? `; within a round each of the ${HOST_COUNT} exchanger addresses serves ${DOMAIN_COUNT / HOST_COUNT} domains, and the engine reuses its connection to an address for the next callout there (callout.connectionCache, default: idle after RSET for at most 2 s, at most 5 refused RCPTs and limits.addressesPerConnection addresses per connection), so about one callout in ${DOMAIN_COUNT / HOST_COUNT} connects, greets and says EHLO; the servers advertise PIPELINING, so MAIL, the RCPTs and RSET go as one group (callout.pipelining, default)`
    : '; callout.connectionCache.enabled and callout.pipelining off: a new connection and one command at a time for every callout, as before those options';
  return `${base}; a fresh engine and store every ${DOMAIN_COUNT} ${variant.batch > 1 ? 'calls' : 'addresses'} (one per domain)${variant.randomProbe ? '; the dialogue first sends RCPT for a random local part (catch-all probe), then RSET and MAIL again' : ''}${reuse}.`;
}

/** The addresses of call `index`: one, or `batch` distinct addresses of the same domain. */
function addressesOfCall(index: number, batch: number): Array<{ address: string; exists: boolean }> {
  return Array.from({ length: batch }, (_, k) => benchAddress(index + k * DOMAIN_COUNT * 1_000_000));
}

/** Cold callouts: a fresh engine and store for each round of one call per domain, so every answer is a dialogue. */
async function coldRow(servers: ServerProcess, budget: Budget, variant: ColdVariant): Promise<Row> {
  const defaults = benchConfig({ port: servers.port, randomProbe: variant.randomProbe });
  const config = variant.reuse
    ? defaults
    : { ...defaults, callout: { ...defaults.callout, pipelining: false, connectionCache: { ...defaults.callout.connectionCache, enabled: false } } };
  const cells = [];
  for (const concurrency of CONCURRENCIES) {
    const sharedResolver = variant.dns === 'cached' ? benchResolver(servers.dns) : undefined;
    if (sharedResolver) {
      const lookups = { maxHosts: config.callout.maxMxHosts, ipv6: config.callout.ipv6 };
      // 32 at a time: a burst of thousands of UDP queries overflows socket buffers and waits out c-ares timeouts.
      await runCell({ concurrency: 32, maxOps: DOMAIN_COUNT, maxMs: 60_000 }, (i) => resolveMailHosts(sharedResolver, domainOf(i), lookups).then((r) => r.kind));
    }
    const engines: CalloutEngine[] = [];
    const makeOp = (): Op => {
      let round = -1;
      let engine: CalloutEngine | undefined;
      return async (index) => {
        const thisRound = Math.floor(index / DOMAIN_COUNT);
        if (thisRound !== round || !engine) {
          round = thisRound;
          engine = freshEngine(config, servers.dns, sharedResolver);
          engines.push(engine);
        }
        const targets = addressesOfCall(index, variant.batch);
        const results = await engine.verifyMany(targets.map((t) => t.address));
        return results.map((result, k) => judge(targets[k]!.exists, result.verdict, result.source, 'probe'));
      };
    };
    log(`${coldName(variant)}, concurrency ${concurrency}`);
    cells.push(await measured(servers, { concurrency, maxOps: budget.coldOps, maxMs: budget.cold }, makeOp));
    await Promise.all(engines.map((e) => e.idle()));
  }
  return { name: coldName(variant), note: coldNote(variant), cells };
}

/** One long-lived engine: first a cold pass over the addresses, then the same addresses from its cache. */
async function sharedAndWarmRows(servers: ServerProcess, budget: Budget): Promise<{ shared: Row; warm: Row }> {
  const engine = freshEngine(benchConfig({ port: servers.port, randomProbe: true }), servers.dns);
  const count = budget.sharedAddresses;
  log(`callout cold on one engine, ${count} addresses`);
  // Not repeated when disturbed: a second pass would find every address cached.
  const fill = await measuredOnce(servers, { concurrency: 128, maxOps: count, maxMs: 120_000 }, async (index) => {
    const { address, exists } = benchAddress(index);
    const result = await engine.verify(address);
    return judge(exists, result.verdict, result.source, 'probe');
  });
  const warmCells = [];
  for (const concurrency of CONCURRENCIES) {
    log(`callout warm, concurrency ${concurrency}`);
    warmCells.push(
      await measured(servers, { concurrency, maxOps: 5_000_000, maxMs: budget.warm }, () => async (index) => {
        const { address, exists } = benchAddress(index % fill.ops);
        const result = await engine.verify(address);
        return judge(exists, result.verdict, result.source, 'address-cache');
      }),
    );
  }
  await engine.idle();
  return {
    shared: {
      name: 'callout cold, one long-lived engine',
      note: `${fill.ops.toLocaleString('en-US')} distinct addresses (${Math.round(fill.ops / DOMAIN_COUNT)} per domain) on one engine, random probe on: the catch-all probe runs once per domain, then the domain record answers it; connections are reused and dialogues pipelined (defaults); measured at concurrency 128 only.`,
      cells: [fill],
    },
    warm: {
      name: 'callout warm (cached verdicts)',
      note: `the same ${fill.ops.toLocaleString('en-US')} addresses again on that engine: every answer from the address cache (MemoryStore).`,
      cells: warmCells,
    },
  };
}

/** An untimed warm-up (so the JIT's first minutes are not counted), then a cell per concurrency on the peers' budget. */
async function peerCells(servers: ServerProcess, budget: Budget, name: string, makeOp: () => Op): Promise<MeasuredCell[]> {
  await runCell({ concurrency: 16, maxOps: 1_000_000, maxMs: budget.warmup }, makeOp());
  const cells = [];
  for (const concurrency of CONCURRENCIES) {
    log(`${name}, concurrency ${concurrency}`);
    cells.push(await measured(servers, { concurrency, maxOps: budget.peerOps, maxMs: budget.peer }, makeOp));
  }
  return cells;
}

async function peerRow(servers: ServerProcess, budget: Budget, tool: Tool): Promise<Row> {
  const cells = await peerCells(servers, budget, tool.name, () => async (index) => {
    const { address, exists } = benchAddress(index);
    const { answer, detail } = await tool.check(address);
    return answer === (exists ? 'accept' : 'reject') ? 'right' : `${answer} for ${exists ? 'an existing' : 'a missing'} user (${detail})`;
  });
  return {
    name: `${tool.name} ${installedVersion(tool.name)}`,
    note: 'its defaults; no cache, so every check is an MX lookup, a getaddrinfo of the MX name and an SMTP dialogue.',
    cells,
  };
}

const FLOOR_NOTES: Record<FloorConnections, [string, string]> = {
  'per-callout': [
    'I/O floor: a new connection per callout (no verifier)',
    'bench/io-floor: only the I/O a cold callout needs, with no verification logic at all: an MX query for each domain (dns-packet over one UDP socket; the exchanger\'s A record asked once per name and kept), connect, greeting, EHLO, then MAIL FROM:<>, RCPT and QUIT as one pipelined group, closed at the RCPT reply; the answer is the RCPT code. Each callout has its own connection, as the issue\'s "cold" and the peers have it (with fewer round trips than theirs). Cells as long as the peers\'.',
  ],
  reused: [
    'I/O floor: reused connections (no verifier)',
    'bench/io-floor: the same queries, then MAIL FROM:<>, RCPT and RSET as one pipelined group on an idle connection to the exchanger address (a new one, with greeting and EHLO, only when none is idle), as callout\'s connection cache does; no catch-all probe. Cells as long as the peers\'.',
  ],
};

/** What bare I/O reaches, and what the benchmark's servers spend per callout meanwhile. */
async function floorRow(servers: ServerProcess, budget: Budget, connections: FloorConnections): Promise<Row> {
  const [name, note] = FLOOR_NOTES[connections];
  const floors: IoFloor[] = [];
  const makeOp = (): Op => {
    const floor = createIoFloor({ dnsServer: servers.dns, port: servers.port, connections });
    floors.push(floor);
    return async (index) => {
      const { address, exists } = benchAddress(index);
      const code = await floor.check(address);
      return code === (exists ? 250 : 550) ? 'right' : `${code} for ${exists ? 'an existing' : 'a missing'} user`;
    };
  };
  const cells = await peerCells(servers, budget, name, makeOp);
  await Promise.all(floors.map((f) => f.close()));
  return { name, note, cells };
}

function machineFacts(quick: boolean): Array<[string, string]> {
  const cpus = os.cpus();
  return [
    ['date', new Date().toISOString()],
    ['CPUs (nproc)', `${os.availableParallelism()} × ${cpus[0]?.model ?? 'unknown'}`],
    ['memory', `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`],
    ['OS', `${os.type()} ${os.release()} (${os.arch()})`],
    ['Node.js', process.version],
    ['load average at start (1, 5, 15 min)', os.loadavg().map((n) => n.toFixed(2)).join(', ')],
    ['command', quick ? '`npm run bench -- --quick`' : '`npm run bench`'],
  ];
}

async function main(): Promise<void> {
  const { quick, out } = parseArgs(process.argv.slice(2));
  const budget = quick ? QUICK : FULL;
  retrySecondsLeft = budget.retry;
  const releaseLock = acquireRunLock();
  const started = Date.now();
  log('starting the server process');
  const servers = await startServerProcess();
  let hosts: HostsEntries | undefined;
  let peersSkipped: string | undefined;
  if (servers.port !== SMTP_PORT) {
    peersSkipped = `the SMTP servers could not listen on port 25 (got ${servers.port}); the peers connect to nothing else`;
  } else {
    try {
      hosts = addHostsEntries(hostsEntries());
      log(`added ${hostsEntries().length} entries to /etc/hosts (copy in ${hosts.backup})`);
    } catch (err) {
      peersSkipped = `/etc/hosts could not be written (${String(err)})`;
    }
  }
  if (peersSkipped) log(`peers skipped: ${peersSkipped}`);
  dns.setServers([servers.dns]);
  try {
    const correctness: ToolCorrectness[] = [];
    if (servers.port === SMTP_PORT) {
      log('correctness: callout');
      correctness.push(await checkTool(engineTool(freshEngine(benchConfig({ port: SMTP_PORT, randomProbe: true }), servers.dns))));
      for (const peer of peersSkipped ? [] : peers) {
        const tool = peer();
        log(`correctness: ${tool.name}`);
        correctness.push(await checkTool(tool));
      }
    }
    log('warming up the engine');
    // As long as each peer's warm-up, and cold throughout: a fresh engine for every round of the domains.
    const warmupConfig = benchConfig({ port: servers.port, randomProbe: true });
    const warmupEngines: CalloutEngine[] = [];
    await runCell({ concurrency: 16, maxOps: 1_000_000, maxMs: budget.warmup }, (index) => {
      if (index % DOMAIN_COUNT === 0) warmupEngines.push(freshEngine(warmupConfig, servers.dns));
      return warmupEngines.at(-1)!.verify(benchAddress(index).address).then(() => 'warmup');
    });
    await Promise.all(warmupEngines.map((e) => e.idle()));
    const coldProbe = await coldRow(servers, budget, { randomProbe: true, reuse: true, dns: 'fresh', batch: 1 });
    const coldNoReuse = await coldRow(servers, budget, { randomProbe: true, reuse: false, dns: 'fresh', batch: 1 });
    const coldNoProbe = await coldRow(servers, budget, { randomProbe: false, reuse: true, dns: 'fresh', batch: 1 });
    const coldDnsCached = [
      await coldRow(servers, budget, { randomProbe: true, reuse: true, dns: 'cached', batch: 1 }),
      await coldRow(servers, budget, { randomProbe: false, reuse: true, dns: 'cached', batch: 1 }),
    ];
    const coldBatched = await coldRow(servers, budget, { randomProbe: true, reuse: true, dns: 'fresh', batch: 20 });
    const { shared, warm } = await sharedAndWarmRows(servers, budget);
    const peerRows: Row[] = [];
    for (const peer of peersSkipped ? [] : peers) peerRows.push(await peerRow(servers, budget, peer()));
    const floorRows = [await floorRow(servers, budget, 'per-callout'), await floorRow(servers, budget, 'reused')];
    const report = renderReport({
      quick,
      facts: machineFacts(quick),
      setup: [
        `Servers: a child process runs the test DNS server (test/support/dns-server) on ${servers.dns} and an instant SMTP server (bench/instant-smtp: 220, EHLO advertising PIPELINING, MAIL, RCPT 250/550, RSET, QUIT, answered at once, pipelined commands too) on each of ${HOST_COUNT} addresses 127.77.0.1-${HOST_COUNT}, port ${servers.port}. The verifiers run in the benchmark process; both processes share the machine's ${os.availableParallelism()} CPUs.`,
        `Domains: ${DOMAIN_COUNT} (d0.bench.test … d${DOMAIN_COUNT - 1}.bench.test), each with one MX on one of the ${HOST_COUNT} addresses; the i-th address is user<i>@d<i mod ${DOMAIN_COUNT}> (exists) or, every tenth, nouser<i> (550 5.1.1).`,
        `callout config: defaults (validateConfig) except callout.helo, callout.port ${servers.port}, callout.allowTargets 127.0.0.0/8 and the limits raised so that the limiter never cuts the benchmark: limits.concurrency ${limitsForBench.concurrency}, limits.perHostConcurrency ${limitsForBench.perHostConcurrency}, limits.perDomainPerMinute ${limitsForBench.perDomainPerMinute.toLocaleString('en-US')}, limits.perHostConnectionsPerMinute ${limitsForBench.perHostConnectionsPerMinute.toLocaleString('en-US')} (defaults 64, 4, 30, 60). TLS is opportunistic (default) and the servers offer none. Store: MemoryStore; DNS: CachingResolver over createNodeResolver.`,
        `Cells: each stops after ${quick ? 'a fraction of a second' : `${budget.cold / 1000} s (callout cold), ${budget.warm / 1000} s (warm), ${budget.peer / 1000} s (peers)`} or a fixed number of operations, whichever comes first; one untimed warm-up precedes the callout and each peer's cells.${budget.retry > 0 ? ` A cell that other work disturbed is run again when the machine is quiet (within ${budget.retry} s in all) and the least disturbed run is kept.` : ''}`,
        'Numbers are from this one run. On shared or virtual machines the same cell can differ by tens of percent from one run to the next even without visible contention: compare rows within a run, not across runs.',
        'The machine may be shared with other work (this repository is built by several people at once): the "whole machine busy" column of the cell details shows how much of its CPU was in use during each cell; compare it with the two processes\' own CPU before trusting a number.',
        'Peers: dns.setServers() points node:dns at the benchmark DNS server, and the MX host names are in /etc/hosts for the run (the peers connect to port 25 of the name via getaddrinfo).',
      ],
      rows: { coldProbe, coldNoReuse, coldNoProbe, coldDnsCached, coldBatched, coldShared: shared, warm, peers: peerRows, floor: floorRows },
      ...(peersSkipped ? { peersSkipped } : {}),
      correctness,
      concurrencies: CONCURRENCIES,
      cores: os.availableParallelism(),
    });
    const sections: string[] = [];
    for (const [name, section] of SECTIONS) {
      log(`benchmark: ${name}`);
      try {
        sections.push(await section({ quick }));
      } catch (err) {
        sections.push(`## ${name}\n\nThis section failed in this run: ${err instanceof Error ? err.message : String(err)}\n`);
      }
    }
    const full = [report.trimEnd(), ...sections.map((s) => s.trim())].join('\n\n') + '\n';
    if (out) {
      writeFileSync(out, full);
      log(`wrote ${out}`);
    } else {
      process.stdout.write(full);
    }
    log(`done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } finally {
    hosts?.remove();
    await servers.stop();
    releaseLock();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
