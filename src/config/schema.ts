/**
 * NAME
 *   config/schema - the one configuration schema of callout
 *
 * DESCRIPTION
 *   Every front end (the CLI commands, the policy service) reads its settings from this schema,
 *   so a key means the same thing everywhere and is documented once (README "Configuration
 *   reference"). Unknown keys are errors: a misspelt key silently ignored is how a site ends up
 *   with callouts it did not want. Durations accept "30s", "5m", "2h", "7d" or seconds.
 *
 * ERRORS
 *   validateConfig() throws ConfigError whose message names every bad key (the first 20, and how
 *   many more), the value found (its start as JSON, a secret or a Redis password in it masked,
 *   C1 and bidi controls escaped as core/text shownJson escapes them) and what
 *   was expected, e.g. `callout.tls: got "maybe", expected one of off, opportunistic, required`;
 *   an unknown key with the keys its mapping takes, and the full names of the keys of its name
 *   in other sections (a key written in the wrong one). A key of a stage's entry is followed by
 *   the stage's name, as the pipeline names a stage's problems when it builds it
 *   (config/stage-key): `policy.stages.1.delay (greylist): got "soon", expected a duration ...`.
 */

import { isIP } from 'node:net';
import { z } from 'zod';
import { ConfigError, abbreviate } from '../core/errors.js';
import { DURATION_EXPECTED, TIMER_MAX_MS, TIMER_MAX_TEXT, formatDuration, parseDuration } from './duration.js';
import { fqdn } from './fqdn.js';
import { networkList } from './networks.js';
import { DEFAULT_SOCKET_MODE, SOCKET_MODE_TEXT, listenExpected, parseListenAddress, sameListener } from '../core/listen.js';
import { octalMode } from '../core/files.js';
import { checkRedisUrl } from '../store/redis-url.js';
import { hideSecrets, isSecretKey } from './secrets.js';
import { escapeDisplayControls, shown, shownJson } from '../core/text.js';
import { stageKey } from './stage-key.js';
import { readDnsServer } from '../dns/node-resolver.js';
import { DEFAULT_POLICY_REQUEST_TIMEOUT_MS } from '../policy/server.js';
import { parseMailbox, parseReversePath } from '../address/index.js';
import { DEFAULT_IDLE_POLL_MICROS, MAX_IDLE_POLL_MICROS } from '../core/idle-poll.js';
import { STAGE_DEFINITIONS } from '../policy/stages/index.js';
import { sharedLimitNames } from '../policy/stages/ratelimit.js';

/**
 * A duration that arms a timer, so it must lie between minMs and what a timer can hold (or a
 * smaller max, with the reason it says).
 */
const timerDuration = (fallback: string, minMs: number, max = { ms: TIMER_MAX_MS, why: TIMER_MAX_TEXT }) =>
  duration(fallback).pipe(
    z
      .number()
      // In the form a file writes a duration (99s), not in the milliseconds it is kept in; a
      // timer's bound, 2^31 - 1 ms, as the whole seconds below it (2147483s, not 2147483647ms).
      .min(minMs, { message: `expected at least ${formatDuration(minMs)}` })
      .max(max.ms, { message: `expected at most ${formatDuration(max.ms < 1000 ? max.ms : max.ms - (max.ms % 1000))} (${max.why})` }),
  );

/**
 * The latest decision deadline: the pipeline answers a stage that is late half a second after
 * it, and the policy server closes a request still unanswered at DEFAULT_POLICY_REQUEST_TIMEOUT_MS
 * (Postfix's smtpd_policy_service_timeout, 100 s, after which Postfix has given up anyway). A
 * later deadline was accepted, and its "in progress" answer never sent: the connection closed.
 */
const DECISION_TIMEOUT_MAX = { ms: DEFAULT_POLICY_REQUEST_TIMEOUT_MS - 1000, why: "below Postfix's smtpd_policy_service_timeout, 100s, after which callout closes the request unanswered" };

const duration = (fallback: string) =>
  z
    // zod's number refuses Infinity and NaN (YAML's .inf, .nan, 1e309), and the union then said only "Invalid input".
    .union([z.string(), z.number()], { error: DURATION_EXPECTED })
    .default(fallback)
    .transform((value, ctx) => {
      const parsed = parseDuration(value);
      if (!parsed.ok) {
        ctx.addIssue({ code: 'custom', message: parsed.reason });
        return z.NEVER;
      }
      return parsed.ms;
    });

/**
 * A reverse path for MAIL FROM (RFC 5321 §4.1.2), as a file or --sender writes it: "" or "<>"
 * for the null sender, an address with or without its angle brackets. Kept as the address the
 * command sends: a value sent as written made every probe "MAIL FROM:<<>>" (the file's "<>",
 * which only --sender translated) or "MAIL FROM:<not an address>", which every server refuses,
 * and each verdict came out unknown (refused-at-mail) where the configuration should have been.
 */
const reversePath = (nullAllowed: boolean) =>
  z.string().transform((text, ctx) => {
    const parsed = parseReversePath(text, { tolerant: true });
    if (!parsed.ok) {
      ctx.addIssue({ code: 'custom', message: `expected an address${nullAllowed ? ', or "" for the null sender' : ''} (${parsed.error.message})` });
      return z.NEVER;
    }
    if (parsed.value.kind === 'mailbox') return parsed.value.mailbox.address;
    if (!nullAllowed) {
      ctx.addIssue({ code: 'custom', message: 'expected an address: it stands in for the null sender when that is refused' });
      return z.NEVER;
    }
    return '';
  });

const dnsSchema = z
  .object({
    /** DNS servers by IP address, with an optional port ([IPv6]:port); empty means the system's resolv.conf. */
    servers: z
      .array(
        z.string().superRefine((entry, ctx) => {
          // Here, not only in the resolver, so that the message names the key and the file.
          const read = readDnsServer(entry);
          if (!read.ok) ctx.addIssue({ code: 'custom', message: read.reason });
        }),
      )
      .default([]),
    timeout: timerDuration('5s', 1),
    tries: z.number().int().min(1).max(10).default(2),
    minTtl: duration('5s'),
    maxTtl: duration('1d'),
    negativeTtl: duration('1h'),
  })
  .strict()
  .superRefine((dns, ctx) => {
    // Here, not only in dns/cache, so that the message names the keys of the file.
    if (dns.minTtl > dns.maxTtl) ctx.addIssue({ code: 'custom', path: ['minTtl'], params: { used: formatDuration(dns.minTtl) }, message: `expected at most maxTtl (${formatDuration(dns.maxTtl)})` });
  });

const timeoutsSchema = z
  .object({
    connect: timerDuration('10s', 1),
    greeting: timerDuration('30s', 1),
    command: timerDuration('30s', 1),
    rcpt: timerDuration('30s', 1),
    tls: timerDuration('10s', 1),
    /** The whole verification, across every MX host tried (Exim's maxwait). */
    overall: timerDuration('60s', 1),
  })
  .strict();

const connectionCacheSchema = z
  .object({
    /** Keep a clean connection open for the next callout to the same MX address (Postfix's connection cache). */
    enabled: z.boolean().default(true),
    /** How long a connection stays open idle (Postfix: smtp_connection_cache_time_limit 2s). */
    idleTime: timerDuration('2s', 0),
    maxIdlePerHost: z.number().int().min(1).max(100).default(2),
    maxIdle: z.number().int().min(1).max(100000).default(256),
    /** A connection with this many RCPTs refused is closed (Postfix servers slow down at 10 errors). */
    maxRejectedRecipients: z.number().int().min(1).max(100).default(5),
  })
  .strict();

const calloutSchema = z
  .object({
    /** EHLO name: must be this host's real, fully qualified name (with forward-confirmed rDNS). */
    helo: fqdn.optional(),
    /** MAIL FROM for probes; empty is the null sender <>, which tests whether bounces can be delivered. */
    sender: reversePath(true).default(''),
    /** Used only when MAIL FROM:<> is refused (as smf-sav does); never verified by callout itself. */
    fallbackSender: reversePath(false).optional(),
    port: z.number().int().min(1).max(65535).default(25),
    tls: z.enum(['off', 'opportunistic', 'required']).default('opportunistic'),
    timeouts: timeoutsSchema.default(() => timeoutsSchema.parse({})),
    /** Probe a random local part first to detect catch-all domains (Exim's `random`). */
    randomProbe: z.boolean().default(true),
    /** Template of the random local part; {random} is replaced by 12 random letters and digits. */
    randomLocalPart: z
      .string()
      .regex(/\{random\}/, 'expected a template with {random} in it, such as callout-{random}')
      .superRefine((template, ctx) => {
        // A template that makes no plain ASCII local part ("probe {random}", "a@{random}", over 64
        // octets) was sent as written; every server refused the probe's syntax, and every
        // accepted address came out unknown (catch-all-unknown). The sample is as long as
        // verify/probe's token, 12 letters and digits.
        const sample = parseMailbox(`${template.replace('{random}', 'x'.repeat(12))}@example.org`, { utf8: false });
        if (!sample.ok) ctx.addIssue({ code: 'custom', message: `expected the local part of an address around {random} (${sample.error.message})` });
      })
      .default('callout-{random}'),
    /** Also check postmaster@domain (Exim's postmaster / fullpostmaster). */
    postmasterProbe: z.enum(['off', 'postmaster', 'fullpostmaster']).default('off'),
    /** Use VRFY before RCPT (off: VRFY is widely disabled and often logged as hostile). */
    vrfy: z.boolean().default(false),
    /** Hide the remote server's reply text from verdict descriptions (Exim's no_details). */
    noDetails: z.boolean().default(false),
    maxMxHosts: z.number().int().min(1).max(20).default(5),
    ipv6: z.boolean().default(true),
    /**
     * CIDRs that lift the refusal of private, loopback and reserved targets; checked here, not
     * only in the engine, so that `verify -c FILE` and a bad --allow-target name the file or the
     * command line, and the entry.
     */
    allowTargets: networkList(),
    /** Local address to connect from. */
    sourceAddress: z
      .string()
      .refine((address) => isIP(address) !== 0, { message: 'expected an IP address of this host' })
      .optional(),
    /** Send MAIL, RCPT and RSET as one group when the server advertises PIPELINING (RFC 2920). */
    pipelining: z.boolean().default(true),
    connectionCache: connectionCacheSchema.default(() => connectionCacheSchema.parse({})),
  })
  .strict();

const cacheSchema = z
  .object({
    addressPositive: duration('24h'),
    addressNegative: duration('2h'),
    /** Past this age a cached address answer is still served while one probe refreshes it. */
    addressPositiveRefresh: duration('12h'),
    addressNegativeRefresh: duration('1h'),
    domainPositive: duration('7d'),
    domainNegative: duration('3h'),
    /** Short memory of temporary results, so a burst does not probe a failing domain again. */
    tempfail: duration('60s'),
    /** How long a domain that greylisted us is left alone before the next attempt. */
    greylistRetry: duration('5m'),
  })
  .strict();

const limitsSchema = z
  .object({
    concurrency: z.number().int().min(1).max(10000).default(64),
    perHostConcurrency: z.number().int().min(1).max(1000).default(4),
    perDomainPerMinute: z.number().int().min(1).max(100000).default(30),
    /**
     * New connections to one exchanger address in a sliding minute, over every domain it serves:
     * a shared hoster's MX (or a host a forged domain's MX names) is asked only so often.
     */
    perHostConnectionsPerMinute: z.number().int().min(1).max(1_000_000).default(60),
    /** Recipients tried on one connection before QUIT and a new one, across the callouts that reuse it. */
    addressesPerConnection: z.number().int().min(1).max(100).default(20),
    /** Domains `callout verify --file` verifies at once (--concurrency). */
    listConcurrency: z.number().int().min(1).max(1000).default(8),
  })
  .strict();

const storeSchema = z
  .object({
    kind: z.enum(['memory', 'sqlite', 'redis']).default('sqlite'),
    /** SQLite file; relative paths are under the data directory. */
    path: z
      .string()
      .min(1, { message: 'expected a file name' })
      // SQLite's in-memory database would silently keep nothing across restarts or between workers.
      .refine((path) => path !== ':memory:', { message: 'expected a file; for no persistence at all use store.kind: memory' })
      .default('callout.sqlite'),
    /** Redis URL when several mail servers share one state, e.g. redis://10.0.0.5:6379/0. */
    url: z.string().default('redis://127.0.0.1:6379/0'),
    /** Redis: put before every key, so that sites sharing one Redis database keep their state apart. */
    keyPrefix: z
      .string()
      .regex(/^[\x21-\x7e]{1,64}$/, 'expected 1 to 64 printable ASCII characters without spaces')
      .default('callout:'),
    /** How often `callout serve` removes expired entries (a background walk; Redis expires keys itself). */
    purgeInterval: timerDuration('10m', 1000),
    /** SQLite: `normal` survives a crash of the process, `full` also a power loss (SqliteStoreOptions.sync). */
    sync: z.enum(['normal', 'full']).default('normal'),
  })
  .strict()
  .superRefine((store, ctx) => {
    // Here, not only when the store opens, so that `config check` names the key of a URL that
    // serve would refuse (a bad database, a driver option as a parameter, TLS off by a capital).
    if (store.kind !== 'redis') return;
    try {
      checkRedisUrl(store.url);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      ctx.addIssue({ code: 'custom', path: ['url'], message: err.message.replace(/^redis store: /, '') });
    }
  });

const listenAddress = z.string().superRefine((text, ctx) => {
  const parsed = parseListenAddress(text);
  if (!parsed.ok) ctx.addIssue({ code: 'custom', message: listenExpected(parsed.reason) });
});

/**
 * A UNIX socket listener's permissions, octal, given whatever the umask (core/listen listenOn):
 * the policy socket's and the metrics socket's.
 */
const socketMode = z
  // YAML reads an unquoted 0660 as the number 660: say what to write instead of "expected string".
  .string({ error: (issue) => (typeof issue.input === 'number' ? 'expected an octal mode in quotes, such as "0660" (YAML reads 0660 unquoted as a number)' : undefined) })
  .regex(SOCKET_MODE_TEXT, 'expected an octal mode of 3 or 4 digits, such as "0660"')
  .default(octalMode(DEFAULT_SOCKET_MODE));

const stageEntrySchema = z
  .object(
    {
      /** A stage from the registry (allowlist, postmaster, sender-syntax, sender-callout, ...). */
      name: z.string(),
      mode: z.enum(['enforce', 'warn', 'off']).default('enforce'),
      /** Protocol states to run in; default: the stage's own. */
      states: z.array(z.enum(['CONNECT', 'EHLO', 'HELO', 'MAIL', 'RCPT', 'DATA', 'END-OF-MESSAGE', 'VRFY', 'ETRN'])).optional(),
    },
    {
      // A stage written by its name alone (`stages: [allowlist]`, as the README's table names
      // stages) was told only "expected a mapping of keys", which does not say which key.
      error: (issue) =>
        issue.code === 'invalid_type' && typeof issue.input === 'string' && STAGE_DEFINITIONS.some((d) => d.name === issue.input)
          ? `expected a mapping such as { name: ${issue.input} } (write - name: ${issue.input})`
          : undefined,
    },
  )
  .catchall(z.unknown());

const DEFAULT_STAGES = [
  { name: 'allowlist' },
  { name: 'postmaster' },
  { name: 'sender-syntax' },
  { name: 'sender-callout' },
];

const policySchema = z
  .object({
    listen: listenAddress.default('127.0.0.1:10040'),
    /** Answer within this time (keep it below Postfix's check_policy_service timeout). */
    decisionTimeout: timerDuration('6s', 100, DECISION_TIMEOUT_MAX),
    /** What a fault (store outage, internal error) answers: fail open with DUNNO, or defer. */
    faultAction: z.enum(['DUNNO', 'DEFER']).default('DUNNO'),
    /** In warn mode: log with WARN, or prepend an X-Callout-Warning header. */
    warnAction: z.enum(['WARN', 'PREPEND']).default('WARN'),
    maxConnections: z.number().int().min(1).max(100000).default(1000),
    /** Worker processes sharing the listener and the store (1: the daemon answers itself). */
    workers: z.number().int().min(1).max(64).default(1),
    idleTimeout: timerDuration('300s', 1000),
    /**
     * After answering, keep polling for the next request this many microseconds before sleeping
     * (core/idle-poll: adaptive, as Linux's haltpoll); 0 turns it off. Default 200, or 0 on a
     * machine with one CPU, where the client could not run while the daemon polls.
     */
    idlePollMicros: z.number().int().min(0).max(MAX_IDLE_POLL_MICROS).default(DEFAULT_IDLE_POLL_MICROS),
    /**
     * Take the time from a request's policy_test_time attribute (epoch seconds), as postgrey's
     * tests do, so that a recorded trace replays with its own timestamps. For benchmarks and
     * tests only: whoever can reach the listener could move the clock.
     */
    acceptTestTime: z.boolean().default(false),
    /** UNIX socket permissions (octal string). */
    socketMode,
    stages: z.array(stageEntrySchema).default(() => DEFAULT_STAGES.map((s) => stageEntrySchema.parse(s))),
  })
  .strict();

const metricsSchema = z
  .object({
    /** Prometheus /metrics and /health; empty disables. Keep it on loopback. */
    listen: z.union([listenAddress, z.literal('')], { error: 'expected HOST:PORT, [IPv6]:PORT, an absolute UNIX socket path, or "" for none' }).default('127.0.0.1:10041'),
    /**
     * Permissions of a UNIX socket listener: under serve's umask (027) it was 0750, which only its
     * owner can connect to, not a scraper in its group.
     */
    socketMode,
  })
  .strict();

const logSchema = z
  .object({
    level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  })
  .strict();

export const configSchema = z
  .object({
    dataDir: z.string().min(1, { message: 'expected a directory' }).default('/var/lib/callout'),
    dns: dnsSchema.default(() => dnsSchema.parse({})),
    callout: calloutSchema.default(() => calloutSchema.parse({})),
    cache: cacheSchema.default(() => cacheSchema.parse({})),
    limits: limitsSchema.default(() => limitsSchema.parse({})),
    store: storeSchema.default(() => storeSchema.parse({})),
    policy: policySchema.default(() => policySchema.parse({})),
    metrics: metricsSchema.default(() => metricsSchema.parse({})),
    log: logSchema.default(() => logSchema.parse({})),
  })
  .strict();

export type Config = z.output<typeof configSchema>;
export type CalloutConfig = Config['callout'];
export type CacheConfig = Config['cache'];
export type LimitsConfig = Config['limits'];
export type PolicyConfig = Config['policy'];
export type StageEntry = PolicyConfig['stages'][number];

/**
 * How much of a bad value, and how many problems, a message quotes: a wrong value may be a list
 * of a million items (or an alias to one, quoted once per alias), and each item a problem of its
 * own; quoted whole, `config check` printed a line of 400 MB.
 */
const SHOWN_VALUE = 100;
const SHOWN_PROBLEMS = 20;

function problemList(source: string, problems: string[]): ConfigError {
  const more = problems.length > SHOWN_PROBLEMS ? `; and ${problems.length - SHOWN_PROBLEMS} more` : '';
  return new ConfigError(`${source}: ${problems.slice(0, SHOWN_PROBLEMS).join('; ')}${more}`);
}

/**
 * The value at `path` of `root` as a message quotes it: cut, a secret hidden, Infinity and NaN by
 * name, and as JSON with core/text's escapes (a C1 control in a value reached the terminal raw).
 */
export function describeValue(root: unknown, path: PropertyKey[]): string {
  let node: unknown = root;
  for (const key of path) {
    if (node === null || typeof node !== 'object') return 'nothing';
    node = (node as Record<PropertyKey, unknown>)[key];
  }
  if (node === undefined) return 'nothing';
  // A key written with nothing after it ("callout:" over no indented lines): YAML reads null.
  if (node === null) return 'an empty value (null)';
  // A secret (a BATV key's) of the wrong type is still the secret: YAML reads 84729301 as a number.
  if (isSecretKey(path.at(-1))) return 'a value not shown (a secret)';
  // A Redis URL may hold a password (`store: redis://:pw@host`, a URL where the store's mapping
  // goes), and a mapping quoted whole may hold a secret: both masked (config/secrets).
  // JSON has no Infinity or NaN (YAML's .inf and .nan): JSON.stringify wrote them as null.
  // The replacer sees the value quoted itself under the key "": it is masked as its own key's.
  const shown = hideSecrets(String(path.at(-1) ?? ''), node);
  if (typeof shown === 'number' && !Number.isFinite(shown)) return String(shown);
  // A text is cut before it is quoted, so that its quote is closed; a list or a mapping can
  // only be cut as JSON, where the cut may leave a quote open.
  if (typeof shown === 'string') return shownJson(abbreviate(shown, SHOWN_VALUE));
  return escapeDisplayControls(abbreviate(JSON.stringify(shown, hideSecrets), SHOWN_VALUE));
}

/**
 * What a key takes, in the words of a YAML file: zod's own messages name JavaScript types and
 * its syntax ("expected object, received string", "expected int, received number", "Invalid
 * option: expected one of \"DUNNO\"|\"DEFER\""), which tell an administrator little of what to
 * write. Given to each parse, so a schema's own message still wins; undefined keeps zod's.
 */
const TYPE_WORDS: Partial<Record<string, string>> = {
  string: 'text',
  number: 'a number',
  int: 'a whole number',
  boolean: 'true or false',
  array: 'a list',
  object: 'a mapping of keys (key: value lines)',
};

const unknownKey = (expected: readonly string[]) => `unknown key, expected one of ${expected.join(', ')}`;

/**
 * The full names of the schema's keys, by their name in lower case. A key written in the wrong
 * section (`level` under callout, `helo` at the top) or in the wrong case was told only the keys
 * of the mapping it is in, and the administrator searched the README for where it goes.
 */
const KEY_HOMES = keyHomes(schemaKeys(configSchema));

/**
 * Every key of a schema's mappings, nested ones too, by its full dotted name, each mapping before
 * its keys: those of configSchema, or of a stage's options (the README's reference lists them).
 */
export function schemaKeys(schema: z.ZodType, prefix = ''): string[] {
  const inner = schema instanceof z.ZodDefault || schema instanceof z.ZodOptional ? schema.unwrap() : schema;
  if (!(inner instanceof z.ZodObject)) return [];
  return Object.entries(inner.shape as Record<string, z.ZodType>).flatMap(([key, member]) => [`${prefix}${key}`, ...schemaKeys(member, `${prefix}${key}.`)]);
}

function keyHomes(names: string[]): Map<string, string[]> {
  const homes = new Map<string, string[]>();
  for (const name of names) {
    const key = name.slice(name.lastIndexOf('.') + 1).toLowerCase();
    homes.set(key, [...(homes.get(key) ?? []), name]);
  }
  return homes;
}

/** "unknown key" with the keys of its name elsewhere, if any. */
function unknownKeyAt(key: string, message: string): string {
  const homes = KEY_HOMES.get(key.toLowerCase());
  if (homes === undefined) return message;
  const hint = homes.length === 1 ? `the key of that name is ${homes[0]!}` : `the keys of that name are ${homes.join(', ')}`;
  return message.replace(/^unknown key/, `unknown key (${hint})`);
}

function plainWords(issue: z.core.$ZodRawIssue): string | undefined {
  const values = (list: readonly unknown[]) => list.map((v) => (v === '' ? '""' : String(v))).join(', ');
  const unit = (origin: string, n: unknown) => {
    const word = origin === 'array' || origin === 'set' ? 'item' : origin === 'string' ? 'character' : '';
    return word === '' ? '' : ` ${word}${Number(n) === 1 ? '' : 's'}`;
  };
  switch (issue.code) {
    case 'invalid_type':
      return `expected ${TYPE_WORDS[issue.expected] ?? issue.expected}`;
    case 'invalid_value':
      return issue.values.length === 1 ? `expected ${values(issue.values)}` : `expected one of ${values(issue.values)}`;
    case 'too_small':
      return `expected ${issue.inclusive === false ? 'more than' : 'at least'} ${String(issue.minimum)}${unit(issue.origin, issue.minimum)}`;
    case 'too_big':
      return `expected ${issue.inclusive === false ? 'less than' : 'at most'} ${String(issue.maximum)}${unit(issue.origin, issue.maximum)}`;
    case 'unrecognized_keys': {
      // The keys the mapping takes: a misspelt key (callout.timeout) is the commonest mistake,
      // and "unknown key" alone sent the reader to the README for the right one.
      const shape = (issue.inst as { shape?: object } | undefined)?.shape;
      return shape ? unknownKey(Object.keys(shape)) : 'unknown key';
    }
    default:
      return undefined;
  }
}

/**
 * Validates raw configuration (from YAML, flags or code); throws ConfigError listing the problems
 * (SHOWN_PROBLEMS of them, then a count). `keyName` names a key as its source writes it (the flag
 * that set it, for the command line). `partial`: raw is only part of the configuration (the flags
 * checked before the file is merged), so a default it leaves is not yet the value to compare.
 */
export function validateConfig(raw: unknown, source = 'configuration', keyName: (key: string) => string = (key) => key, partial = false): Config {
  const result = configSchema.safeParse(raw ?? {}, { error: plainWords });
  const rawStages = (raw as { policy?: { stages?: unknown } } | undefined)?.policy?.stages;
  if (!result.success) {
    // Report the stages' own options too, so one run shows every problem.
    const stageProblems = Array.isArray(rawStages) ? rawStages.flatMap((entry, i) => (isEntry(entry) ? checkStage(entry, i, entry).problems : [])) : [];
    throw problemList(source, [...describeIssues(raw, result.error.issues, configKey(rawStages, keyName), unknownKeyAt), ...stageProblems]);
  }
  const problems: string[] = [];
  result.data.policy.stages = result.data.policy.stages.map((entry, index) => {
    const checked = checkStage(entry, index, Array.isArray(rawStages) ? rawStages[index] : undefined);
    problems.push(...checked.problems);
    return checked.entry;
  });
  problems.push(...sharedLimitNames(result.data.policy.stages));
  if (result.data.policy.workers > 1 && result.data.store.kind === 'memory') {
    problems.push(`${keyName('policy.workers')}: got ${result.data.policy.workers}, expected 1 with store.kind memory (workers share their state through the store: use sqlite or redis)`);
  }
  if (!partial) problems.push(...listenerClash(raw, result.data, keyName));
  if (problems.length > 0) throw problemList(source, problems);
  return result.data;
}

/**
 * A key of the whole configuration as a problem names it: one in a stage's entry (its mode,
 * its states) as the stage's own options are named, with the stage's name (config/stage-key).
 */
function configKey(rawStages: unknown, keyName: (key: string) => string): (key: string) => string {
  return (key) => {
    if (key === '') return '(top level)';
    const entry = /^policy\.stages\.(\d+)(?:\.|$)/.exec(key);
    const name = entry && Array.isArray(rawStages) ? (rawStages[Number(entry[1])] as { name?: unknown } | undefined)?.name : undefined;
    // A name no stage has is refused on its own (checkStage): not given as a stage's.
    return entry && STAGE_DEFINITIONS.some((d) => d.name === name) ? stageKey(Number(entry[1]), name as string, key.slice(entry[0].length)) : keyName(key);
  };
}

/**
 * policy.listen and metrics.listen on one socket: `config check` said ok, and serve stopped at
 * start when the second listener found the address taken.
 */
function listenerClash(raw: unknown, config: Config, keyName: (key: string) => string): string[] {
  const policy = parseListenAddress(config.policy.listen);
  const metrics = config.metrics.listen === '' ? undefined : parseListenAddress(config.metrics.listen);
  if (!policy.ok || !metrics?.ok || !sameListener(policy.value, metrics.value)) return [];
  const found = (section: 'policy' | 'metrics') => {
    const value = describeValue(raw, [section, 'listen']);
    return value === 'nothing' ? `nothing (the default, ${config[section].listen})` : value;
  };
  return [`${keyName('policy.listen')} and ${keyName('metrics.listen')}: got ${found('policy')} and ${found('metrics')}, expected two addresses: serve listens on both, and the second would find its address taken`];
}

function isEntry(value: unknown): value is StageEntry {
  return value !== null && typeof value === 'object' && typeof (value as { name?: unknown }).name === 'string';
}

/** A stage entry against its definition's own option schema. */
function checkStage(entry: StageEntry, index: number, rawEntry: unknown): { entry: StageEntry; problems: string[] } {
  const where = `policy.stages.${index}`;
  const definition = STAGE_DEFINITIONS.find((d) => d.name === entry.name);
  if (!definition) {
    return { entry, problems: [`${where}.name: got ${shownJson(abbreviate(entry.name, SHOWN_VALUE))}, expected one of ${STAGE_DEFINITIONS.map((d) => d.name).join(', ')}`] };
  }
  const ownKeys = Object.keys(stageEntrySchema.shape);
  const options = Object.fromEntries(Object.entries(entry).filter(([key]) => !ownKeys.includes(key)));
  const parsed = definition.options.strict().safeParse(options, { error: plainWords });
  if (!parsed.success) {
    // An entry's own keys are taken off before its options are parsed: listed with them, so that
    // a misspelt "stats" is not told of every key but the one it meant.
    const entryKeys = [...ownKeys, ...Object.keys(definition.options.shape)];
    const issues = parsed.error.issues.map((issue) => (issue.code === 'unrecognized_keys' && issue.path.length === 0 ? { ...issue, message: unknownKey(entryKeys) } : issue));
    return { entry, problems: describeIssues(rawEntry, issues, (key) => stageKey(index, entry.name, key)) };
  }
  // An own key left out (states, for the stage's default) stays out, not present as undefined.
  const own = Object.fromEntries(Object.entries(entry).filter(([key, value]) => ownKeys.includes(key) && value !== undefined));
  return { entry: { ...own, ...parsed.data } as StageEntry, problems: [] };
}

/**
 * One problem per element, each starting with its key: `keyName` words the dotted path ('' at
 * the top level), of an unknown key too. `unknown` words the message of an unknown key.
 */
function describeIssues(raw: unknown, issues: z.core.$ZodIssue[], keyName: (key: string) => string, unknown = (_key: string, message: string) => message): string[] {
  return issues.flatMap((issue) => {
    if (issue.code === 'unrecognized_keys') {
      const where = issue.path.length ? `${issue.path.join('.')}.` : '';
      // As it is, but quoted when it holds a control character, which reached the terminal raw.
      return issue.keys.map((key) => `${keyName(`${where}${shown(abbreviate(key, SHOWN_VALUE))}`)}: ${unknown(key, issue.message)}`);
    }
    const key = keyName(issue.path.join('.'));
    let value = describeValue(raw, issue.path);
    // A check across keys (params.used: the value it judged) may fault a key the file leaves out,
    // whose default was then the value: "got nothing" sent the reader looking for a key not there.
    if (value === 'nothing' && issue.code === 'custom' && typeof issue.params?.used === 'string') value = `nothing (the default, ${issue.params.used})`;
    return [`${key}: got ${value}, ${issue.message}`];
  });
}

export function defaultConfig(): Config {
  return validateConfig({});
}
