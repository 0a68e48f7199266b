/**
 * NAME
 *   http/metrics - Prometheus metrics and the health endpoint
 *
 * DESCRIPTION
 *   GET /metrics  Prometheus text format: policy decisions by action and stage, decision
 *                 latency, callouts by verdict and source (cache hit ratio), callouts skipped
 *                 because cheaper evidence sufficed, call-forward callouts by verdict and
 *                 source (a counter of their own: the hit ratio above is the sender
 *                 callouts'), the callout connection cache (parked, reused, retired), stage
 *                 faults, expired store entries purged, the stages' own counters (greylist,
 *                 triplets through greylisting, tarpit, ratelimit, batv), the time spent
 *                 polling for the next request after an answer and the requests it caught,
 *                 process metrics.
 *   GET /health   200 {"status":"ok"} while the store answers, 503 {"status":"degraded"} when
 *                 it does not, or not within METRICS_HEALTH_TIMEOUT_MS (the daemon still
 *                 answers Postfix then, by policy.faultAction).
 *   The listener belongs on loopback (metrics.listen): it has no authentication, and one other
 *   hosts can reach is logged as a warning at start. It shares the process's file descriptors
 *   with the policy listener, so it takes at most
 *   METRICS_MAX_CONNECTIONS connections at once and gives a request METRICS_REQUEST_TIMEOUT_MS
 *   to arrive whole: without those, connections that never finish their headers (Node's own
 *   bounds are a minute and more) filled the descriptor table, and Postfix's policy
 *   connections were then closed unanswered. A connection on which nothing moves for three
 *   times as long (a client that sends requests and never reads the answers) is closed too: it
 *   held its slot for good, and 64 of them took /health away. A query string is ignored
 *   (/metrics?x is /metrics); HEAD is answered as GET without the body (RFC 9110 §9.3.2:
 *   monitors probe with it); other paths get 404, other methods 405, each with a one-line text.
 *   Every answer says X-Content-Type-Options: nosniff.
 *   A failed request (500) and a listener error after binding are logged.
 *   closeMetricsServer() ends the connections left open as well: a stop never waits on a client.
 *   A UNIX socket left behind by a crash is removed before binding (core/listen
 *   removeStaleSocket), as the policy listener's is: without that the next start failed with
 *   EADDRINUSE, exit 78, which systemd does not restart. The socket gets socketMode
 *   (metrics.socketMode, default DEFAULT_SOCKET_MODE, 0660) whatever the umask: under serve's
 *   027 it was 0750, and a scraper in the socket's group could not connect.
 */

import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { IdlePollStats } from '../core/idle-poll.js';
import type { VerifyResult } from '../verify/types.js';
import type { ConnectionCacheStats } from '../verify/connections.js';
import type { StageLogger, StageMetrics } from '../policy/types.js';
import { removeStaleSocket } from '../core/listen.js';
import type { PipelineOutcome } from '../policy/pipeline.js';
import { ConfigError, describeError } from '../core/errors.js';
import { settleWithin } from '../core/clock.js';
import { DEFAULT_SOCKET_MODE, boundAddress, formatListenAddress, listenOn, listenRefusal, parseListenAddress, reachableFromNetwork } from '../core/listen.js';

/**
 * From a cached answer (0.1 ms or less) to the decision deadline (policy.decisionTimeout, 6 s):
 * with 0.5 ms as the first bound every cached answer fell in one bucket, and a cached path
 * grown four times slower did not show.
 */
const DECISION_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * The HELP lines of the counters stages bump by name (increment): "Stage counter greylist" told
 * a reader of /metrics nothing of what the results mean.
 */
const STAGE_COUNTER_HELP: Readonly<Record<string, string>> = {
  callouts_skipped: 'Sender callouts not made because cheaper evidence sufficed (reason spf-pass)',
  callforward_verifications: 'Recipient call-forward verdicts by verdict and where the answer came from (probe, address-cache, domain-cache, none); apart from callout_verifications_total, whose cache hit ratio is the sender callouts\'',
  greylist: 'Greylist verdicts: deferrals by reason (new, early-retry, window-expired) and passes (passed: every pass of a known triplet, auto-allowed, whitelisted, skipped, none)',
  greylist_triplets_passed: 'Triplets that got through greylisting: the first pass of each, after the delay (its later mail counts in callout_greylist_total{result="passed"} only)',
  tarpit: 'Tarpit actions: answers delayed, clients refused at the hard limit, hard limit reached in warn mode (warned)',
  ratelimit: 'Rate limits exceeded, by limit name and what was done (deferred, warned)',
  batv: 'BATV checks of bounces by result',
};

export class Metrics implements StageMetrics {
  readonly registry = new Registry();
  private readonly decisions = new Tallies({
    name: 'callout_policy_decisions_total',
    help: 'Policy answers by action (the first word; a numeric code by its class, REJECT for 5xx and DEFER for 4xx) and the stage that decided (none when no stage did)',
    labelNames: ['action', 'stage'],
    registers: [this.registry],
  });
  private readonly latency = new Histogram({
    name: 'callout_policy_decision_seconds',
    help: 'Time from policy request to answer',
    buckets: DECISION_BUCKETS,
    registers: [this.registry],
  });
  private readonly callouts = new Counter({
    name: 'callout_verifications_total',
    help: 'Verification verdicts by verdict and where the answer came from (probe, address-cache, domain-cache, none)',
    labelNames: ['verdict', 'source'],
    registers: [this.registry],
  });
  private readonly connections = new Counter({
    name: 'callout_connection_cache_total',
    help: 'SMTP connections of the callout engine kept idle after a callout (parked), used again (reused), or closed from idle (retired)',
    labelNames: ['event'],
    registers: [this.registry],
  });
  private readonly faults = new Counter({
    name: 'callout_stage_faults_total',
    help: 'Stage faults (store outage, internal errors), answered by policy.faultAction',
    registers: [this.registry],
  });
  /** From 0, so that an alert on it needs no series to appear first. */
  private readonly checkpointerFailures = new Counter({
    name: 'callout_store_checkpoint_thread_failures_total',
    help: 'Failures of the SQLite checkpoint thread: until a restart, checkpoints run inside commits, on the request path',
    registers: [this.registry],
  });
  /** From 0, as the failures above: the greylist's triplets leave the store through this purge. */
  private readonly purged = new Counter({
    name: 'callout_store_purged_entries_total',
    help: 'Expired store entries (cached verdicts, greylist triplets, counters) removed by the purge every store.purgeInterval (always 0 with Redis, which expires keys itself)',
    registers: [this.registry],
  });
  private readonly stageCounters = new Map<string, Tallies>();

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'callout_' });
    this.newCounter('callouts_skipped', ['reason']);
    // From 0, so that increase() counts the first triplet to pass.
    this.newCounter('greylist_triplets_passed', []);
  }

  recordDecision(outcome: PipelineOutcome): void {
    const space = outcome.action.indexOf(' ');
    const word = space < 0 ? outcome.action : outcome.action.slice(0, space);
    const stage = outcome.decidedBy ?? 'none';
    // By the first word as it came: the class of a numeric one is worked out once, for its tally.
    this.decisions.tally(`${word}\0${stage}`, () => ({ action: /^5\d\d$/.test(word) ? 'REJECT' : /^4\d\d$/.test(word) ? 'DEFER' : word, stage })).value++;
    this.latency.observe(outcome.durationMs / 1000);
    if (outcome.faults.length > 0) this.faults.inc(outcome.faults.length);
  }

  /** Reads the policy server's idle-poll statistics at each scrape (core/idle-poll). */
  watchIdlePoll(stats: () => IdlePollStats): void {
    new Counter({
      name: 'callout_idle_poll_seconds_total',
      help: 'Time the policy service spent polling for the next request after answering (policy.idlePollMicros)',
      registers: [this.registry],
      collect() {
        this.reset();
        this.inc(stats().pollSeconds);
      },
    });
    new Counter({
      name: 'callout_idle_poll_requests_total',
      help: 'Requests that arrived while the policy service was polling (caught: no wake-up) or after it had gone to sleep (slept)',
      labelNames: ['outcome'],
      registers: [this.registry],
      collect() {
        const { caught, slept } = stats();
        this.reset();
        this.inc({ outcome: 'caught' }, caught);
        this.inc({ outcome: 'slept' }, slept);
      },
    });
  }

  recordVerification(result: VerifyResult): void {
    this.callouts.inc({ verdict: result.verdict, source: result.source });
  }

  recordConnection(event: keyof ConnectionCacheStats): void {
    this.connections.inc({ event });
  }

  recordCheckpointerFailure(): void {
    this.checkpointerFailures.inc();
  }

  recordPurge(removed: number): void {
    this.purged.inc(removed);
  }

  increment(name: string, labels: Record<string, string> = {}): void {
    (this.stageCounters.get(name) ?? this.newCounter(name, Object.keys(labels))).inc(labels);
  }

  private newCounter(name: string, labelNames: string[]): Tallies {
    const counter = new Tallies({ name: `callout_${name}_total`, help: STAGE_COUNTER_HELP[name] ?? `Stage counter ${name}`, labelNames, registers: [this.registry] });
    this.stageCounters.set(name, counter);
    return counter;
  }
}

interface Tally {
  readonly labels: Record<string, string>;
  value: number;
  /** What prom-client has been given of value. */
  reported: number;
}

/**
 * A counter whose busiest series are counted in plain numbers (Tally) and handed to prom-client
 * when it is read (collect). prom-client's inc() checks the labels and builds and hashes a
 * string of them on every call, a bound child's too: the decision counter and the greylist
 * stage's, counted on every request, cost 2 to 3% of a greylisting answer that way.
 */
class Tallies {
  private readonly tallies = new Map<string, Tally>();
  private readonly counter: Counter;
  /** The label of a counter of one label, whose value keys its tally. */
  private readonly soleLabel: string | undefined;

  constructor(configuration: { name: string; help: string; labelNames: string[]; registers: Registry[] }) {
    const tallies = this.tallies;
    this.soleLabel = configuration.labelNames.length === 1 ? configuration.labelNames[0] : undefined;
    this.counter = new Counter({
      ...configuration,
      collect() {
        for (const tally of tallies.values()) {
          if (tally.value === tally.reported) continue;
          this.inc(tally.labels, tally.value - tally.reported);
          tally.reported = tally.value;
        }
      },
    });
  }

  /** The tally of key, made with labels() the first time: a label the counter lacks throws then, as inc() would. */
  tally(key: string, labels: () => Record<string, string>): Tally {
    let tally = this.tallies.get(key);
    if (!tally) {
      const made = labels();
      this.counter.inc(made, 0);
      tally = { labels: made, value: 0, reported: 0 };
      this.tallies.set(key, tally);
    }
    return tally;
  }

  /** Counts one: labels of the one label by their tally, others through prom-client. */
  inc(labels: Record<string, string>): void {
    let value: string | undefined;
    let count = 0;
    for (const label in labels) {
      count++;
      value = label === this.soleLabel ? labels[label] : undefined;
    }
    if (count === 1 && value !== undefined) this.tally(value, () => ({ ...labels })).value++;
    else this.counter.inc(labels);
  }
}

/** What the listener serves: one daemon's registry, or the sum over policy workers. */
export interface MetricsSource {
  metricsText(): Promise<string>;
  readonly contentType: string;
  healthy(): Promise<boolean>;
}

/** Scrapers, health checks and an administrator's curl: a few at a time. */
export const METRICS_MAX_CONNECTIONS = 64;
export const METRICS_REQUEST_TIMEOUT_MS = 10_000;
/**
 * /health answers 503 when the store has not taken its probe write by then. Unbounded, it
 * waited as long as the store did (SQLite's busy timeout, 5 s, while another process holds the
 * write lock): a monitor's own timeout came first, and it reported the daemon unreachable.
 */
export const METRICS_HEALTH_TIMEOUT_MS = 1_000;

const TEXT = { 'content-type': 'text/plain; charset=utf-8' };

export async function startMetricsServer(
  listen: string,
  source: MetricsSource,
  limits: { maxConnections?: number; requestTimeoutMs?: number; healthTimeoutMs?: number; socketMode?: number; log?: StageLogger } = {},
): Promise<{ server: Server; address: string }> {
  const requestTimeoutMs = limits.requestTimeoutMs ?? METRICS_REQUEST_TIMEOUT_MS;
  const healthTimeoutMs = limits.healthTimeoutMs ?? METRICS_HEALTH_TIMEOUT_MS;
  const serverOptions = { headersTimeout: requestTimeoutMs, requestTimeout: requestTimeoutMs, connectionsCheckingInterval: Math.min(1000, requestTimeoutMs) };
  const server = createServer(serverOptions, (req, res) => {
    // A browser that reaches the listener (a page the administrator opens, DNS rebinding) must
    // not take an answer for HTML or script whatever it holds: every answer, the 500 included.
    res.setHeader('x-content-type-options', 'nosniff');
    void (async () => {
      const path = (req.url ?? '').split('?', 1)[0];
      // Node leaves the body out of an answer to HEAD itself.
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { ...TEXT, allow: 'GET, HEAD' }).end('only GET and HEAD\n');
      } else if (path === '/metrics') {
        const body = await source.metricsText();
        res.writeHead(200, { 'content-type': source.contentType }).end(body);
      } else if (path === '/health') {
        const ok = await settleWithin(source.healthy(), healthTimeoutMs, () => {
          limits.log?.warn({ waitedMs: healthTimeoutMs }, 'health: the store did not answer in time; answered 503');
          return false;
        });
        res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify({ status: ok ? 'ok' : 'degraded' }));
      } else {
        res.writeHead(404, TEXT).end('not found: /metrics and /health are served here\n');
      }
    })().catch((err: unknown) => {
      // The scraper sees only the 500: the reason (a policy worker that did not answer the supervisor) is logged.
      limits.log?.error({ path: req.url, error: describeError(err) }, 'metrics request failed');
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
  server.maxConnections = limits.maxConnections ?? METRICS_MAX_CONNECTIONS;
  // headersTimeout and requestTimeout end at the request's last octet; this bounds the rest
  // (answers never read). Three times as long: a request that never arrives whole gets its 408
  // at the first check of connections after requestTimeoutMs, up to an interval later.
  server.setTimeout(3 * requestTimeoutMs);
  const parsed = parseListenAddress(listen);
  if (!parsed.ok) throw new ConfigError(`metrics.listen: ${listenRefusal(listen, parsed.reason)}`);
  const target = parsed.value;
  if (target.kind === 'unix') await removeStaleSocket(target.path);
  await listenOn(server, target, `${listen} (metrics.listen)`, limits.socketMode ?? DEFAULT_SOCKET_MODE);
  // An accept that fails after listening (ENOBUFS, EPERM) is an 'error' event: unheard, it ended the process.
  server.on('error', (err) => limits.log?.error({ listen, error: describeError(err) }, 'metrics listener failed'));
  const bound = boundAddress(server);
  if (bound && reachableFromNetwork(bound)) {
    limits.log?.warn({ listen: formatListenAddress(bound) }, 'metrics listener is reachable from other hosts, without authentication (each /health request writes to the store); listen on 127.0.0.1, [::1] or a UNIX socket, or firewall the port');
  }
  return { server, address: bound ? formatListenAddress(bound) : listen };
}

/**
 * Stops the listener and ends the connections still open on it, a scrape in progress among
 * them. close() alone waited for every connection to end: one that never sent a whole request
 * (a client that connects and waits, a half-sent request) held it for the socket timeout, 30 s,
 * past the drain `callout serve` promises on SIGTERM and into systemd's TimeoutStopSec.
 */
export function closeMetricsServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}
