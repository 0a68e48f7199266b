/**
 * NAME
 *   cli/options - the engine options every command takes
 *
 * DESCRIPTION
 *   Flags are turned into the nested shape of the configuration file and merged over it, so
 *   the one schema validates a value the same way wherever it came from.
 */

import { resolve } from 'node:path';
import type { Command } from 'commander';
import { UsageError, abbreviate } from '../core/errors.js';
import { MESSAGE_FILE_BYTES, readFileLimited, tooLarge } from '../core/files.js';
import type { RawConfig } from '../config/load.js';
import { TIMER_MAX_MS, TIMER_MAX_TEXT } from '../config/duration.js';
import { MAX_IDLE_POLL_MICROS } from '../core/idle-poll.js';
import { shownJson } from '../core/text.js';

/** commander's accumulator for a repeatable option. */
export const collect = (value: string, previous: string[]) => [...previous, value];

/**
 * commander's parser for `flag`, which takes one value (and has no commander default) and is
 * easily taken for repeatable: given twice with different values, it is a usage error.
 * commander kept the last one without a word, so `rewrite serve --socketmap PATH --socketmap
 * HOST:PORT` served no UNIX socket, and a second --batv-key-file dropped the keys of the first.
 * The same value twice changes nothing and is taken, as a Redis URL's setting given twice alike:
 * a pipe(8) wrapper that repeats one must keep recording bounces after an upgrade. (Other flags
 * keep the last value, so that a command line can override what a shared part of it set.)
 */
export function once(flag: string): (value: string, previous: string | undefined) => string {
  return (value, previous) => {
    if (previous !== undefined && previous !== value) throw new UsageError(`${flag} given twice (${shownJson(abbreviate(previous, 40))}, then ${shownJson(abbreviate(value, 40))}): it takes one value`);
    return value;
  };
}

/** --dns-server, as every command that resolves names takes it (repeatable, with collect). */
export const DNS_SERVER_FLAG = '--dns-server <ip[:port]>';
export const DNS_SERVER_HELP = 'DNS server to query, by IP address (IPv6 with a port: [addr]:port; repeatable; default: the system resolver)';

export interface EngineFlags {
  config?: string;
  dnsServer: string[];
  helo?: string;
  sender?: string;
  timeout?: string;
  allowTarget: string[];
  port?: string;
  cache?: string;
}

/** Where `serve` and `config print` keep verdicts without --cache. */
export const SERVICE_CACHE_DEFAULT = 'store.path, callout.sqlite under the data directory';

/**
 * The engine flags on `command`. `cacheDefault` says where verdicts are kept without --cache:
 * in memory for a one-off `verify`, in the configured store for the service.
 */
export function addEngineOptions(command: Command, cacheDefault: string): Command {
  return command
    .option('-c, --config <file>', 'configuration file (YAML)')
    .option(DNS_SERVER_FLAG, DNS_SERVER_HELP, collect, [])
    .option('--helo <name>', 'EHLO name: this host\'s fully qualified name')
    .option('--sender <address>', 'MAIL FROM for probes (default: the null sender <>)')
    .option('--timeout <seconds>', 'overall time limit of one verification')
    .option('--allow-target <cidr>', 'allow probing exchangers in this private/loopback range (repeatable)', collect, [])
    .option('--port <n>', 'SMTP port of the exchangers (default 25)')
    .option('--cache <file>', `SQLite file for the verification cache (default: ${cacheDefault})`);
}

/** Flags in the nested shape of the configuration file, so the schema validates both alike. */
export function engineOverrides(flags: EngineFlags): RawConfig {
  const callout: RawConfig = {};
  if (flags.helo !== undefined) callout.helo = flags.helo;
  // "<>" and "<address>" are the schema's to read, as in the file.
  if (flags.sender !== undefined) callout.sender = flags.sender;
  if (flags.allowTarget.length > 0) callout.allowTargets = flags.allowTarget;
  if (flags.port !== undefined) callout.port = numberFlag('--port', flags.port);
  if (flags.timeout !== undefined) callout.timeouts = { overall: unitFlag('--timeout', flags.timeout, TIMEOUT_SECONDS) };
  const overrides: RawConfig = { callout };
  if (flags.dnsServer.length > 0) overrides.dns = { servers: flags.dnsServer };
  // A file named on the command line is where the shell is, not under the data directory.
  refuseEmpty('--cache', flags.cache, 'a file');
  if (flags.cache !== undefined) overrides.store = { kind: 'sqlite', path: resolve(flags.cache) };
  return overrides;
}

/**
 * The flags that set configuration keys (engineOverrides, serveOverrides, verify's --concurrency):
 * a test feeds every flag of engineOverrides and serveOverrides through them and checks each key
 * they set is named here (verify's --concurrency, set in cli/main, has its own test).
 * (--cache sets store.path to an absolute file, which the schema never refuses.)
 */
const FLAG_KEYS: Readonly<Record<string, string>> = {
  'callout.helo': '--helo',
  'callout.sender': '--sender',
  'callout.allowTargets': '--allow-target',
  'callout.port': '--port',
  'callout.timeouts.overall': '--timeout',
  'dns.servers': '--dns-server',
  'limits.listConcurrency': '--concurrency',
  'policy.listen': '--listen',
  'policy.workers': '--workers',
  'policy.idlePollMicros': '--idle-poll',
  'metrics.listen': '--metrics',
  dataDir: '--data-dir',
};

/**
 * A key of a problem with the command line, with the flag that set it: "callout.port: got 0"
 * sent the administrator who typed --port 0 looking for a key in no file. An entry of a list
 * (callout.allowTargets.1) is its repeated flag's.
 */
export function flagOf(key: string): string {
  const set = Object.keys(FLAG_KEYS).find((k) => key === k || key.startsWith(`${k}.`));
  return set === undefined ? key : `${FLAG_KEYS[set]!} (${key})`;
}

/** Decimal only: Number() also reads 0x19 as 25, 1e3 and Infinity. */
const DECIMAL = /^\s*-?\d+(\.\d+)?\s*$/;

/**
 * The refusal of a flag's value, quoted in part (a value may be a megabyte of digits) as JSON
 * with core/text's escapes: in quotes of its own, --limit '"5"' read `got ""5""`, and a control
 * character reached the terminal raw.
 */
function refusal(name: string, value: string, expected: string): UsageError {
  return new UsageError(`${name}: got ${shownJson(abbreviate(value, 40))}, expected ${expected}`);
}

export function numberFlag(name: string, value: string): number {
  if (!DECIMAL.test(value)) throw refusal(name, value, 'a number');
  return Number(value);
}

/** What a flag counts in (plural, as its bounds are said), and its bounds in that unit. */
export interface FlagUnit {
  readonly unit: 'seconds' | 'milliseconds' | 'microseconds';
  readonly min: number;
  readonly max: number;
  /** Takes fractions (--timeout 2.5); whole numbers only without. */
  readonly fractions?: boolean;
  /** What the maximum is, said after it. */
  readonly why?: string;
}

/** A timer's range: a Node.js timer holds at most TIMER_MAX_MS. */
export const TIMEOUT_SECONDS: FlagUnit = { unit: 'seconds', min: 0.001, max: Math.floor(TIMER_MAX_MS / 1000), fractions: true, why: TIMER_MAX_TEXT };
export const TIMEOUT_MILLISECONDS: FlagUnit = { unit: 'milliseconds', min: 1, max: TIMER_MAX_MS, why: TIMER_MAX_TEXT };
export const IDLE_POLL_MICROSECONDS: FlagUnit = { unit: 'microseconds', min: 0, max: MAX_IDLE_POLL_MICROS };

/**
 * `value` read as a number from min to max (a whole one unless `fractions`), or what is wrong
 * with it: unitFlag and wholeNumberFlag each say that in their own words.
 */
function boundedNumber(value: string, min: number, max: number, fractions: boolean): { ok: true; n: number } | { ok: false; wrong: 'form' | 'below' | 'above' } {
  const n = Number(value);
  if (!DECIMAL.test(value) || (!fractions && !Number.isInteger(n))) return { ok: false, wrong: 'form' };
  if (n < min) return { ok: false, wrong: 'below' };
  if (n > max) return { ok: false, wrong: 'above' };
  return { ok: true, n };
}

/**
 * A number of `range.unit` within its bounds, which are said in that unit: --timeout, in
 * seconds, was refused as "expected at most 2147483647 ms", the schema's milliseconds.
 */
export function unitFlag(name: string, value: string, range: FlagUnit): number {
  const read = boundedNumber(value, range.min, range.max, range.fractions === true);
  if (read.ok) return read.n;
  const amount = (bound: number) => `${bound} ${bound === 1 ? range.unit.slice(0, -1) : range.unit}`;
  if (read.wrong === 'form') throw refusal(name, value, `a ${range.fractions === true ? '' : 'whole '}number of ${range.unit}`);
  if (read.wrong === 'below') throw refusal(name, value, `at least ${amount(range.min)}`);
  throw refusal(name, value, `at most ${amount(range.max)}${range.why === undefined ? '' : ` (${range.why})`}`);
}

/** A whole number from min to max (inclusive) for a flag the configuration schema does not check. */
export function wholeNumberFlag(name: string, value: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const read = boundedNumber(value, min, max, false);
  if (read.ok) return read.n;
  throw refusal(name, value, `a whole number ${max === Number.MAX_SAFE_INTEGER ? `${min} or more` : `from ${min} to ${max}`}`);
}

/**
 * Says on `err` (standard error unless given) that a listing stopped at its --limit with more
 * stored: standard output stays the entries, and the exit status 0, as with head -n.
 */
export function reportLimitCut(command: string, limit: number, err: NodeJS.WritableStream = process.stderr): void {
  err.write(`callout ${command}: stopped at --limit ${limit} entries; more are stored (give a larger --limit)\n`);
}

/**
 * A message given as a file, or `-` for standard input, within MESSAGE_FILE_BYTES; `what` starts
 * the usage error (`senderid: --message`), followed by the file's name (its start, as JSON with
 * core/text's escapes: a C1 control in it reached the terminal raw). Standard input is read as
 * a stream, not opened as /dev/stdin: a parent that hands over a socket (Node's spawn, a service
 * manager) makes that open fail with ENXIO.
 */
export async function readMessageInput(file: string, stdin: NodeJS.ReadableStream, what?: string): Promise<Buffer> {
  const prefix = what === undefined ? '' : `${what} `;
  if (file !== '-') {
    const read = readFileLimited(file, MESSAGE_FILE_BYTES);
    if (!read.ok) throw new UsageError(`${prefix}${shownJson(abbreviate(file, 200))}: ${read.reason}`);
    return read.bytes;
  }
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of stdin) {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
    total += bytes.length;
    if (total > MESSAGE_FILE_BYTES) throw new UsageError(`${prefix}standard input: ${tooLarge(MESSAGE_FILE_BYTES)}`);
    chunks.push(bytes);
  }
  return Buffer.concat(chunks);
}

/**
 * Refuses a file or domain flag given an empty value, as `--batv-key-file "$KEYS"` gives it in a
 * unit file where KEYS is unset: taken for a flag not given, it left out the BATV map of `rewrite serve`, or
 * the BATV proof of `bounce record` (its bounces answered "nothing recorded"), without a word.
 * (`bounce record` beside --verp-sender warns instead: its VERP addresses still prove bounces.)
 */
export function refuseEmpty(flag: string, value: string | undefined, expected: string): void {
  if (value === '') throw new UsageError(`${flag}: got "", expected ${expected}`);
}
