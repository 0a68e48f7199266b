/**
 * NAME
 *   cli/rewrite - BATV, SRS, VERP, bounce and suppression commands, and the Postfix lookup services
 *
 * SYNOPSIS
 *   callout batv sign  --secret S|--secret-file F [--keynum N] [--now T] ADDRESS
 *   callout batv check --secret S|--secret-file F [--keynum N] [--window exim|bounded] [--now T] ADDRESS
 *   callout srs forward --secret-file F --domain D [--separator C] [--alphabet A]
 *                     [--hash-length N] [--local-domain D]... [--always-rewrite] [--now T] ADDRESS
 *   callout srs reverse --secret-file F --domain D [--hash-length N] [--now T] ADDRESS
 *   callout verp encode --sender S [--delimiters +=] RECIPIENT
 *   callout verp decode --sender S [--delimiters +=] ADDRESS
 *   callout bounce parse FILE [--json]                  (FILE - reads standard input)
 *   callout bounce record FILE --rcpt ADDRESS STORE [--batv-key-file F] [--verp-sender S... [--verp-delimiters D]] [--now T]
 *   callout bounce list STORE [--limit N] [--json]      (a line on stderr when --limit left entries out)
 *   callout bounce query|remove ADDRESS STORE
 *     STORE: --store DB (a SQLite file), or -c FILE [--data-dir D] (the configured store,
 *     SQLite or Redis; without either, the default configuration's; --data-dir places only a
 *     SQLite store at a relative store.path)
 *   callout rewrite serve [--socketmap HOST:PORT|PATH] [--tcp-table MAP=HOST:PORT]... [--socket-mode MODE]
 *                     [--srs-domain D --srs-secret-file F ...] [--batv-key-file F --batv-domain D...]
 *
 * DESCRIPTION
 *   Time comes from the system clock (so `faketime` shifts it) unless --now gives an ISO 8601
 *   instant or Unix seconds. SRS secret files hold one secret per line, the first signs (as
 *   postsrsd's, where a line starting with '#' is a secret too); BATV key files hold `KEYNUM SECRET`
 *   lines, newest first, and '#' starts a comment. A `batv --secret-file` holds the secret
 *   alone, on one line, as the batv stage's secretFile: a --secret is in every local user's `ps`.
 *   `batv check` without --keynum uses the secret for whatever key number the address carries
 *   (as Exim's ${prvscheck} with a fixed secret does).
 *
 *   `rewrite serve` runs the lookup services for Postfix until SIGINT/SIGTERM (SIGHUP reads the
 *   secret and key files again; one that no longer reads keeps the secrets in use; SIGUSR1 is
 *   logged and ignored, not Node's inspector, as in `serve`): one socketmap
 *   listener with every configured map (SRS: forward, reverse; BATV: batv-sign, batv-strip), and
 *   tcp_table listeners, one map each (tcp_table carries no map name), e.g. postsrsd 1.x's
 *   layout: --tcp-table forward=127.0.0.1:10001 --tcp-table reverse=127.0.0.1:10002. A TCP
 *   listener other hosts can reach is logged as a warning: it signs for whoever connects. A
 *   UNIX socket gets --socket-mode (default 0660, whatever the umask: Postfix connects as user
 *   postfix, a member of the socket's group), and one every local user may connect to is
 *   logged as a warning too. A flag that has no effect (--socket-mode with no UNIX socket, an
 *   --srs- flag without --srs-secret-file and --srs-domain, a --batv- flag without
 *   --batv-key-file) is logged as a warning, and the service starts, as Postfix does with a
 *   parameter it does not use: a refusal stopped services that had run with it.
 *   Postfix configuration: README.md ("BATV, SRS, VERP and bounces").
 *
 *   `bounce record` reads a bounce as delivered to RCPT (the bounce's envelope recipient) and
 *   adds the recipients it proves dead to the suppression list in the store.
 *
 * EXIT STATUS
 *   0 success (signed, valid, rewritten, decoded, a bounce parsed, recorded, suppressed);
 *   1 the address is not valid / not rewritten / not suppressed, or the message is not a bounce
 *     (an address that cannot be signed, rewritten or encoded is named on stdout with the reason);
 *   64 usage error (a bad flag value, among them a `verp encode|decode --sender` or `bounce
 *      record --verp-sender` that cannot be encoded into, --store with --config or --data-dir,
 *      and a second --socketmap, --srs-domain, secret file or key file: taken for repeatable,
 *      each dropped the one before without a word; other flags given twice take the last).
 *   A flag that does nothing in the combination given (srs reverse's --separator, --alphabet,
 *   --local-domain, --always-rewrite; bounce record's --verp-delimiters without --verp-sender,
 *   and its empty --batv-key-file beside --verp-sender) is warned of on stderr and the command
 *   goes on: scripts that ran with it keep working.
 *   78 configuration error (unreadable secret file, bad keys).
 */

import { SECRET_FILE_BYTES, readFileLimited, warnIfSecretExposed } from '../core/files.js';
import type { Command } from 'commander';
import { SuppressionList, parseBounce, type BounceOutcome, type BounceReport, type SuppressionEntry } from '../bounce/index.js';
import { isoSeconds, systemClock, type Clock } from '../core/clock.js';
import { ConfigError, UsageError, abbreviate, describeError } from '../core/errors.js';
import { DEFAULT_IDLE_POLL_MICROS, IdlePoller } from '../core/idle-poll.js';
import { coalescingDestination, createLogger } from '../core/log.js';
import { DEFAULT_SOCKET_MODE, SOCKET_MODE_TEXT, formatListenAddress, listenRefusal, openToAllUsers, parseListenAddress, reachableFromNetwork, type ListenAddress } from '../core/listen.js';
import { octalMode } from '../core/files.js';
import { shown, shownField, shownJson } from '../core/text.js';
import { Batv, batvKeyFileLines, keyFileLineWarning, batvSecretTooLong, contentLines, oneSecretFileText, type BatvKey, type BatvWindow } from '../rewrite/batv.js';
import { unmatchableDomainEntry } from '../rewrite/domains.js';
import type { LookupLog, LookupMap } from '../rewrite/lookup.js';
import { ignoreInspectorSignal, reloadingCommand, takeStartupReloads } from './signals.js';
import { batvMaps, srsMaps } from '../rewrite/maps.js';
import { SocketmapServer } from '../rewrite/socketmap.js';
import { SRS_LIMITS, Srs, srsDomain, type SrsSeparator } from '../rewrite/srs.js';
import { TcpTableServer } from '../rewrite/tcp-table.js';
import { POSTFIX_VERP_DELIMITERS, parseVerpDelimiters, verpDecode, verpEncode, verpSenderProblem, type VerpDelimiters } from '../rewrite/verp.js';
import type { StoreSpec } from '../store/index.js';
import { IDLE_POLL_MICROSECONDS, collect, once, readMessageInput, refuseEmpty, reportLimitCut, unitFlag, wholeNumberFlag } from './options.js';
import { configuredStore, daemonStateConfig, openCommandStore, openExistingStore } from './runtime.js';

export interface RewriteCommandIo {
  out: NodeJS.WritableStream;
  /**
   * Where `bounce list` says that --limit cut it short, so stdout stays the entries, and the
   * suppression commands that a --data-dir places nothing (default: standard error).
   */
  err?: NodeJS.WritableStream;
  /** Read by `bounce parse -` and `bounce record -`. */
  stdin: NodeJS.ReadableStream;
  /** Ends `rewrite serve` (besides SIGINT/SIGTERM); tests use it. */
  stop?: AbortSignal;
  /** Where `rewrite serve` logs refused requests and connections (default: JSON lines on stderr). */
  log?: LookupLog;
  /** What `rewrite serve` signs and checks by (default: the system clock); tests pin it. */
  clock?: Clock;
}


/**
 * ISO 8601 as people write instants: a date, optionally a time (to the second, optionally with
 * a fraction) and a zone. Date.parse alone took anything V8 could make a date of: "-1" and
 * "x 1" were 2001-01-01, " 7 " July 2001, 2024-02-30 the first of March.
 */
const ISO_INSTANT = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$/;
/** The latest instant a Date holds (ECMA-262: 8.64e15 ms after the epoch), in seconds. */
const LATEST_SECONDS = 8.64e12;

/** A Clock frozen at --now, or the system clock. */
export function clockFromFlag(now: string | undefined): Clock {
  if (now === undefined) return systemClock;
  const ms = nowMs(now);
  if (ms === undefined) throw new UsageError(`--now: got "${abbreviate(now, 60)}", expected an ISO 8601 instant (2026-12-05T10:00:00Z) or Unix seconds`);
  return { now: () => ms };
}

function nowMs(text: string): number | undefined {
  // `date +%s.%N` writes nanoseconds.
  if (/^\d{1,13}(\.\d{1,9})?$/.test(text)) {
    const seconds = Number(text);
    return seconds <= LATEST_SECONDS ? Math.round(seconds * 1000) : undefined;
  }
  const parts = ISO_INSTANT.exec(text);
  if (!parts) return undefined;
  const [, year, month, day, hour = '0', minute = '0', second = '0'] = parts;
  // A date or time that does not exist (February 30th, hour 24) is refused, not carried over.
  const calendar = new Date(0);
  // setUTCFullYear, not Date.UTC, which takes years 0 to 99 for 1900 to 1999.
  calendar.setUTCFullYear(Number(year), Number(month) - 1, Number(day));
  if (calendar.getUTCMonth() !== Number(month) - 1 || calendar.getUTCDate() !== Number(day)) return undefined;
  if (Number(hour) > 23 || Number(minute) > 59 || Number(second) > 59) return undefined;
  // Without a zone, a date is UTC and a date with a time is local time, as ECMAScript reads them.
  const ms = Date.parse(text);
  return Number.isFinite(ms) ? ms : undefined;
}

/**
 * A file of secrets; `log` hears of one others can read or change. Governing (the default given
 * a `log`, as `rewrite serve` gives it): only a regular file not writable by all, since a FIFO
 * would hold the daemon's start for ever. A one-shot command passes false and takes a pipe too
 * (`--secret-file <(pass show srs)`): it is waited for in front of its user.
 */
function readText(path: string, what: string, log?: LookupLog, governing = log !== undefined): string {
  const read = readFileLimited(path, SECRET_FILE_BYTES, { governing });
  if (!read.ok) throw new ConfigError(`${what} ${path}: ${read.reason}`);
  warnIfSecretExposed(read, path, what, log);
  return read.bytes.toString('utf8');
}

/**
 * postsrsd's secrets file: one secret per line, the first signs. `flag` names the file in errors.
 * A line starting with '#' is a secret, not a comment: postsrsd 1.x and 2.x sign with it, and
 * skipping it signed with another secret and refused postsrsd's addresses.
 */
export function readSrsSecrets(path: string, flag = '--secret-file', log?: LookupLog, governing?: boolean): string[] {
  const secrets = contentLines(readText(path, flag, log, governing), { comments: false }).map(({ line }) => line);
  if (secrets.length === 0) throw new ConfigError(`${flag} ${path}: no secret in the file`);
  return secrets;
}

/** `KEYNUM SECRET` per line, newest first. */
export function readBatvKeys(path: string, log?: LookupLog): BatvKey[] {
  const keys = batvKeyFileLines(readText(path, '--batv-key-file', log)).map(({ key, number }) => {
    if (!key) throw new ConfigError(`--batv-key-file ${path}: line ${number}: expected "KEYNUM SECRET" with KEYNUM 0-9`);
    return key;
  });
  if (keys.length === 0) throw new ConfigError(`--batv-key-file ${path}: no key in the file`);
  return keys;
}

/** The keyring of a key file; what makes it unusable (a key number given twice, a secret over 64 bytes) names the file. */
function batvFromKeyFile(path: string, window: BatvWindow, log?: LookupLog): Batv {
  const keys = readBatvKeys(path, log);
  try {
    return new Batv({ keys, window });
  } catch (err) {
    if (err instanceof ConfigError) throw new ConfigError(`--batv-key-file ${path}: ${err.message}`, { cause: err });
    throw err;
  }
}

/** A --secret that no keyring takes is a usage error naming the flag, not a configuration error (78). */
function secretFlag(secret: string): string {
  if (secret === '') throw new UsageError('--secret: got an empty secret');
  const tooLong = batvSecretTooLong(secret);
  if (tooLong !== undefined) throw new UsageError(`--secret: ${tooLong}`);
  return secret;
}

/**
 * --secret or --secret-file, exactly one. The file is read as a one-shot command's (a pipe too),
 * and `log` hears of one others can read or change.
 */
function batvSecretFlags(flags: { secret?: string; secretFile?: string }, log: LookupLog, keynum: number | undefined): string {
  if ((flags.secret === undefined) === (flags.secretFile === undefined)) throw new UsageError('give exactly one of --secret and --secret-file');
  if (flags.secret !== undefined) return secretFlag(flags.secret);
  const path = flags.secretFile!;
  refuseEmpty('--secret-file', path, 'a file');
  const read = oneSecretFileText(readText(path, '--secret-file', log, false));
  if (!read.ok) throw new ConfigError(`--secret-file ${path}: ${read.problem}`);
  // A `--batv-key-file` line: as the stage does, said when its number is the key's (any, for a check without --keynum).
  if (read.keyFileLine && (keynum === undefined || read.keyFileLine.keynum === keynum)) {
    log.warn({ file: path, keynum: read.keyFileLine.keynum }, keyFileLineWarning('--secret-file', read.keyFileLine.keynum));
  }
  const tooLong = batvSecretTooLong(read.secret);
  if (tooLong !== undefined) throw new ConfigError(`--secret-file ${path}: ${tooLong}`);
  return read.secret;
}

function keynumFlag(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d$/.test(value)) throw new UsageError(`--keynum: got "${value}", expected one digit 0-9`);
  return Number(value);
}

function parseListen(text: string, what: string): ListenAddress {
  const parsed = parseListenAddress(text);
  if (!parsed.ok) throw new UsageError(`${what}: ${listenRefusal(text, parsed.reason)}`);
  return parsed.value;
}

function socketModeFlag(text: string): number {
  if (!SOCKET_MODE_TEXT.test(text)) throw new UsageError(`--socket-mode: got "${abbreviate(text, 60)}", expected an octal mode of 3 or 4 digits, such as 0660`);
  return parseInt(text, 8);
}

/** What the SRS flags default to, written into their help as commander would. */
const SRS_DEFAULTS = { separator: '=', alphabet: 'base64', hashLength: '4' } as const;

interface SrsFlags {
  secretFile?: string;
  domain?: string;
  /** No commander defaults (SRS_DEFAULTS): given to `rewrite serve` without an SRS map, they are warned of (unusedServeFlags). */
  separator?: string;
  alphabet?: string;
  hashLength?: string;
  localDomain: string[];
  alwaysRewrite?: boolean;
}

/** `log` and `governing` as readText takes them. */
function srsFromFlags(flags: SrsFlags, prefix = '', log?: LookupLog, governing?: boolean): Srs {
  refuseEmpty(`--${prefix}secret-file`, flags.secretFile, 'a file');
  refuseEmpty(`--${prefix}domain`, flags.domain, 'a domain');
  if (flags.secretFile === undefined || flags.domain === undefined) throw new UsageError(`--${prefix}secret-file and --${prefix}domain are both needed`);
  const { separator = SRS_DEFAULTS.separator, alphabet = SRS_DEFAULTS.alphabet } = flags;
  if (!['=', '+', '-'].includes(separator)) throw new UsageError(`--${prefix}separator: got "${separator}", expected one of = + -`);
  if (alphabet !== 'base64' && alphabet !== 'base64url') throw new UsageError(`--${prefix}alphabet: got "${alphabet}", expected base64 or base64url`);
  const domain = srsDomain(flags.domain);
  if (!domain.ok) throw new UsageError(`--${prefix}domain: ${domain.problem}`);
  const hashLength = wholeNumberFlag(`--${prefix}hash-length`, flags.hashLength ?? SRS_DEFAULTS.hashLength, 1, SRS_LIMITS.maxHashLength);
  return new Srs({
    domain: flags.domain,
    secrets: readSrsSecrets(flags.secretFile, `--${prefix}secret-file`, log, governing),
    separator: separator as SrsSeparator,
    alphabet,
    hashLength,
    localDomains: domainListFlag(`--${prefix}local-domain`, flags.localDomain),
    alwaysRewrite: flags.alwaysRewrite === true,
  });
}

/**
 * The entries of a repeatable domain flag (--batv-domain, --local-domain), each one that
 * rewrite/domains can match: "example.org." (the root's dot) or "@example.org" was taken, and
 * matched nothing, so the domain went unsigned, or was rewritten, without a word.
 */
function domainListFlag(flag: string, entries: string[]): string[] {
  for (const entry of entries) {
    const problem = unmatchableDomainEntry(entry);
    if (problem !== undefined) throw new UsageError(`${flag}: got ${JSON.stringify(abbreviate(entry, 60))}, ${problem}`);
  }
  return entries;
}

/** The VERP delimiters a flag gives: a usage error (64) naming the flag, not the library's configuration error. */
function delimitersFlag(flag: string, text: string): VerpDelimiters {
  try {
    return parseVerpDelimiters(text);
  } catch (err) {
    if (err instanceof ConfigError) throw new UsageError(`${flag}: got ${JSON.stringify(abbreviate(text, 20))}, expected two of - = + (e.g. "+=")`);
    throw err;
  }
}

/** A VERP sender a flag gives: one no VERP address can be made of is a usage error (64) naming the flag. */
function verpSenderFlag(flag: string, sender: string): string {
  const problem = verpSenderProblem(sender);
  if (problem !== undefined) throw new UsageError(`${flag} ${JSON.stringify(abbreviate(sender, 80))}: ${problem}`);
  return sender;
}

function addSrsOptions(command: Command, prefix = ''): Command {
  return command
    .option(`--${prefix}secret-file <file>`, 'secrets, one per line; the first signs (postsrsd format)', once(`--${prefix}secret-file`))
    .option(`--${prefix}domain <domain>`, 'the SRS domain of rewritten addresses', once(`--${prefix}domain`))
    .option(`--${prefix}separator <char>`, `first separator: = + or - (default: "${SRS_DEFAULTS.separator}")`)
    .option(`--${prefix}alphabet <name>`, `hash alphabet written: base64 (postsrsd 1.x, Mail::SRS) or base64url (postsrsd >= 2.2.6) (default: "${SRS_DEFAULTS.alphabet}")`)
    .option(`--${prefix}hash-length <n>`, `hash characters written (default: "${SRS_DEFAULTS.hashLength}")`)
    .option(`--${prefix}local-domain <domain>`, 'a domain not rewritten (.domain: its subdomains); repeatable', collect, [])
    .option(`--${prefix}always-rewrite`, 'rewrite senders of local domains too');
}

// Addresses and texts come from bounce messages, which anyone can send: shown() quotes one with
// a control character, so an escape sequence in it does not drive the administrator's terminal,
// and an address is a field (shownField), so one with a space cannot pass for two.
function formatReport(report: BounceReport): string {
  const lines = [`format: ${report.format}${report.reportingMta ? `, reported by ${shown(report.reportingMta)}` : ''}${report.truncated ? ' (truncated)' : ''}`];
  for (const r of report.recipients) {
    lines.push(`${shownField(r.address)}: ${r.action} ${r.status} (${r.statusText})${r.hard ? ' [hard]' : ''}${r.diagnostic ? ` - ${shown(r.diagnostic)}` : ''}`);
  }
  if (report.original?.messageId) lines.push(`original: ${shown(report.original.messageId)}${report.original.subject ? ` ${shownJson(report.original.subject)}` : ''}`);
  return lines.join('\n') + '\n';
}

// A store (a shared Redis) holds what any program wrote: the address and status are fields a
// script splits the line into at spaces, quoted when they hold one or a quote ("john
// doe"@example.org), the proof is one of four words (or the entry reads as damaged), and the
// diagnostic is the rest of the line.
function formatEntry(e: SuppressionEntry): string {
  return `${shownField(e.address)}: ${shownField(e.status)} since ${isoSeconds(e.firstSeen)} (${e.count} bounce${e.count === 1 ? '' : 's'}, proof ${e.proof})${e.diagnostic ? ` - ${shown(e.diagnostic)}` : ''}`;
}

interface StoreFlags {
  store?: string;
  config?: string;
  dataDir?: string;
}

/**
 * --store FILE (a SQLite file), or the store of the configuration (-c FILE, --data-dir), SQLite or
 * Redis; a --data-dir that places nothing is said on `err`.
 */
function suppressionStore(flags: StoreFlags, err: NodeJS.WritableStream): StoreSpec {
  if (flags.store !== undefined) {
    if (flags.config !== undefined) throw new UsageError('give --store or --config, not both');
    // --store is not under the data directory: a --data-dir beside it was ignored, a relative
    // --store taken from the working directory, and `record` made a new store there without a word.
    if (flags.dataDir !== undefined) throw new UsageError('give --store or --data-dir, not both (--store names the SQLite file itself)');
    // An empty name or :memory: is a database SQLite throws away at the end of the command.
    if (flags.store === '' || flags.store === ':memory:') throw new UsageError(`--store: got ${JSON.stringify(flags.store)}, expected a file (nothing kept there outlives the command)`);
    return { kind: 'sqlite', path: flags.store };
  }
  return configuredStore(daemonStateConfig(flags, 'the suppression list', err));
}

/** The store options of every suppression command. */
function storeOptions(command: Command): Command {
  return command
    .option('--store <file>', 'the SQLite store file')
    .option('-c, --config <file>', "use the configuration's store instead (SQLite or Redis)")
    .option('--data-dir <dir>', 'directory of the SQLite store (with --config or the default configuration)');
}

/** `read`: a listing, a query or a removal, which need an existing store; `write`: a bounce, which may make it. */
async function withSuppression<T>(flags: StoreFlags, access: 'read' | 'write', io: RewriteCommandIo, run: (list: SuppressionList) => Promise<T>, clock: Clock = systemClock): Promise<T> {
  const err = io.err ?? process.stderr;
  const spec = suppressionStore(flags, err);
  const store = access === 'write' ? await openCommandStore(spec, clock, err) : await openExistingStore(spec, clock, '--store, --data-dir, -c', err);
  try {
    return await run(new SuppressionList(store, { clock }));
  } finally {
    await store.close();
  }
}

/** Where a one-shot command warns (of a secret file others can read): io.log, or JSON lines on stderr. */
function oneShotWarnings(io: RewriteCommandIo): LookupLog {
  return io.log ?? createLogger('warn', coalescingDestination(2));
}

function registerBatv(program: Command, io: RewriteCommandIo): void {
  const batv = program.command('batv').description('BATV prvs signatures, as Exim ${prvs} / ${prvscheck}');
  batv
    .command('sign')
    .description('sign a reverse path: prvs=KDDDHHHHHH=local@domain')
    .argument('<address>')
    .option('--secret <secret>', 'the key (at most 64 bytes; every local user sees it in ps: prefer --secret-file)')
    .option('--secret-file <file>', 'a file holding the key alone, on one line', once('--secret-file'))
    .option('--keynum <n>', 'key number 0-9', '0')
    .option('--now <time>', 'sign as of this instant (ISO 8601 or Unix seconds)')
    .action((address: string, flags: { secret?: string; secretFile?: string; keynum: string; now?: string }) => {
      const keynum = keynumFlag(flags.keynum)!;
      const result = new Batv({ keys: [{ keynum, secret: batvSecretFlags(flags, oneShotWarnings(io), keynum) }] }).sign(address, clockFromFlag(flags.now).now());
      io.out.write(result.ok ? `${result.address}\n` : `${shown(address)}: not signed: ${result.message}\n`);
      process.exitCode = result.ok ? 0 : 1;
    });
  batv
    .command('check')
    .description('check a prvs address; prints the status and the original address')
    .argument('<address>')
    .option('--secret <secret>', 'the key (every local user sees it in ps: prefer --secret-file)')
    .option('--secret-file <file>', 'a file holding the key alone, on one line', once('--secret-file'))
    .option('--keynum <n>', 'the key number of the secret (default: any)')
    .option('--window <window>', "validity: 'exim' (Exim's) or 'bounded' (no stamps far in the future)", 'exim')
    .option('--now <time>', 'check as of this instant')
    .option('--json', 'print one JSON object')
    .action((address: string, flags: { secret?: string; secretFile?: string; keynum?: string; window: string; now?: string; json?: boolean }) => {
      if (flags.window !== 'exim' && flags.window !== 'bounded') throw new UsageError(`--window: got "${flags.window}", expected exim or bounded`);
      const keynum = keynumFlag(flags.keynum);
      const secret = batvSecretFlags(flags, oneShotWarnings(io), keynum);
      const keys = keynum !== undefined ? [{ keynum, secret }] : Array.from({ length: 10 }, (_, n) => ({ keynum: n, secret }));
      const result = new Batv({ keys, window: flags.window as BatvWindow }).check(address, clockFromFlag(flags.now).now());
      if (flags.json) io.out.write(`${shownJson(result)}\n`);
      else io.out.write(result.status === 'not-prvs' ? `${shown(address)}: not a prvs address\n` : `${result.status}: ${shown(result.original)} (key ${result.keynum})\n`);
      process.exitCode = result.status === 'valid' ? 0 : 1;
    });
}

/**
 * Flags only srs forward uses (reverse reads any separator and either alphabet, and reverses
 * addresses of every domain), said on stderr when given to reverse: a script that passes both
 * directions the same flags keeps working.
 */
function warnForwardOnlyFlags(flags: SrsFlags, err: NodeJS.WritableStream): void {
  const given = [
    flags.separator !== undefined && '--separator',
    flags.alphabet !== undefined && '--alphabet',
    flags.localDomain.length > 0 && '--local-domain',
    flags.alwaysRewrite === true && '--always-rewrite',
  ].filter((flag) => flag !== false);
  for (const flag of given) err.write(`callout: warning: ${flag} has no effect in srs reverse, which reads any separator and either alphabet and reverses addresses of every domain; leave it out\n`);
}

function registerSrs(program: Command, io: RewriteCommandIo): void {
  const srs = program.command('srs').description('Sender Rewriting Scheme, as libsrs2 / postsrsd');
  for (const direction of ['forward', 'reverse'] as const) {
    addSrsOptions(
      srs
        .command(direction)
        .description(direction === 'forward' ? 'rewrite a sender into an SRS0/SRS1 address of --domain' : 'the address an SRS address stands for')
        .argument('<address>'),
    )
      .option('--now <time>', 'as of this instant (ISO 8601 or Unix seconds)')
      .action((address: string, flags: SrsFlags & { now?: string }) => {
        if (direction === 'reverse') warnForwardOnlyFlags(flags, io.err ?? process.stderr);
        const rewriter = srsFromFlags(flags, '', oneShotWarnings(io), false);
        const now = clockFromFlag(flags.now).now();
        const result = direction === 'forward' ? rewriter.forward(address, now) : rewriter.reverse(address, now);
        io.out.write(result.ok ? `${result.address}\n` : `${shown(address)}: ${result.reason}: ${result.message}\n`);
        process.exitCode = result.ok ? 0 : 1;
      });
  }
}

function registerVerp(program: Command, io: RewriteCommandIo): void {
  const verp = program.command('verp').description('Variable Envelope Return Paths (qmail / Postfix)');
  const delimiters = (text: string | undefined) => (text === undefined ? POSTFIX_VERP_DELIMITERS : delimitersFlag('--delimiters', text));
  verp
    .command('encode')
    .description('the return path for one recipient: SENDERLOCAL+rcptlocal=rcptdomain@senderdomain')
    .argument('<recipient>')
    .requiredOption('--sender <address>', 'the list sender, e.g. list-bounces@lists.example')
    .option('--delimiters <two>', 'two of - = + (Postfix default +=, qmail -=)')
    .action((recipient: string, flags: { sender: string; delimiters?: string }) => {
      const result = verpEncode(verpSenderFlag('--sender', flags.sender), recipient, delimiters(flags.delimiters));
      io.out.write(result.ok ? `${result.address}\n` : `${shown(recipient)}: not encoded: ${result.message}\n`);
      process.exitCode = result.ok ? 0 : 1;
    });
  verp
    .command('decode')
    .description("the recipient a bounce's VERP address names")
    .argument('<address>')
    .requiredOption('--sender <address>', 'the list sender the address was made from')
    .option('--delimiters <two>', 'two of - = + (Postfix default +=, qmail -=)')
    .action((address: string, flags: { sender: string; delimiters?: string }) => {
      const result = verpDecode(address, verpSenderFlag('--sender', flags.sender), delimiters(flags.delimiters));
      io.out.write(result.ok ? `${shown(result.recipient)}\n` : `${shown(address)}: not a VERP address of ${shown(flags.sender)}: ${result.message}\n`);
      process.exitCode = result.ok ? 0 : 1;
    });
}

function registerBounce(program: Command, io: RewriteCommandIo): void {
  const bounce = program.command('bounce').description('read bounce messages; the suppression list');
  bounce
    .command('parse')
    .description('parse a bounce (RFC 3464 report, qmail, Exim, Postfix, Sendmail, Exchange) and list its recipients')
    .argument('<file>', 'the message, or - for standard input')
    .option('--json', 'print the result as one JSON object')
    .action(async (file: string, flags: { json?: boolean }) => {
      const result = parseBounce(await readMessageInput(file, io.stdin));
      if (flags.json) io.out.write(`${shownJson(result)}\n`);
      else io.out.write(result.ok ? formatReport(result.report) : `not a bounce: ${result.message}\n`);
      process.exitCode = result.ok ? 0 : 1;
    });
  storeOptions(bounce
    .command('record')
    .description('add the recipients a genuine bounce proves dead to the suppression list')
    .argument('<file>', 'the message, or - for standard input')
    .requiredOption('--rcpt <address>', "the bounce's envelope recipient (our reverse path)"))
    .option('--batv-key-file <file>', 'BATV keys ("KEYNUM SECRET" lines, newest first)', once('--batv-key-file'))
    .option('--verp-sender <address>', 'a list sender whose VERP addresses prove bounces; repeatable', collect, [])
    .option('--verp-delimiters <two>', 'VERP delimiters of the --verp-sender addresses (default: "+=")')
    .option('--now <time>', 'as of this instant (BATV validity, entry times)')
    .option('--json', 'print the outcome as one JSON object')
    .action(async (file: string, flags: StoreFlags & { rcpt: string; batvKeyFile?: string; verpSender: string[]; verpDelimiters?: string; now?: string; json?: boolean }) => {
      const err = io.err ?? process.stderr;
      const batvKeyFile = flags.batvKeyFile === '' ? undefined : flags.batvKeyFile;
      if (batvKeyFile === undefined && flags.verpSender.length === 0) {
        refuseEmpty('--batv-key-file', flags.batvKeyFile, 'a file (without --verp-sender nothing else can prove the bounce)');
        throw new UsageError('bounce record: give --batv-key-file or --verp-sender, or nothing can prove the bounce');
      }
      // An empty key file (`--batv-key-file "$KEYS"`, KEYS unset) beside --verp-sender: said, not
      // refused, as the VERP addresses still prove bounces, and a refusal kept every bounce of the
      // transport queued after an upgrade.
      if (flags.batvKeyFile === '') {
        err.write('callout: warning: --batv-key-file is empty (""): BATV proof is off, only --verp-sender addresses prove bounces; give the key file, or leave --batv-key-file out\n');
      }
      // Without a list sender no VERP address is decoded: the delimiters were ignored without a
      // word. Said, not refused: the pipe(8) wrapper runs this unattended, and a refusal kept
      // every bounce of a working installation queued after an upgrade.
      if (flags.verpDelimiters !== undefined && flags.verpSender.length === 0) {
        err.write('callout: warning: --verp-delimiters has no effect without --verp-sender (the delimiters are those of its VERP addresses); give --verp-sender, or leave --verp-delimiters out\n');
      }
      // Flags and key files first: read after the store was opened, a missing key file left an
      // empty store behind (the one `list` then takes for a store that has seen no bounce).
      const delimiters = flags.verpDelimiters === undefined ? POSTFIX_VERP_DELIMITERS : delimitersFlag('--verp-delimiters', flags.verpDelimiters);
      // A sender no VERP address can be made of proves nothing, and the wrapper's exit 1 ("nothing
      // recorded") dropped every bounce of the list; a usage error keeps them queued.
      for (const sender of flags.verpSender) verpSenderFlag('--verp-sender', sender);
      // Bounded: under Exim's window a tag stamped DDD is valid again on the first DDD+1 days of
      // every later 1000-day cycle, so an old tag of ours would prove a forged report's addresses.
      const batv = batvKeyFile !== undefined ? batvFromKeyFile(batvKeyFile, 'bounded') : undefined;
      const clock = clockFromFlag(flags.now);
      const message = await readMessageInput(file, io.stdin);
      const outcome: BounceOutcome = await withSuppression(
        flags,
        'write',
        io,
        (list) => list.recordBounce({ envelopeRecipient: flags.rcpt, message }, { ...(batv ? { batv } : {}), verp: flags.verpSender.map((sender) => ({ sender, delimiters })) }),
        clock,
      );
      if (flags.json) io.out.write(`${shownJson(outcome)}\n`);
      else if (outcome.kind === 'recorded') io.out.write(outcome.entries.map((e) => `suppressed ${formatEntry(e)}\n`).join(''));
      else io.out.write(`nothing recorded: ${outcome.kind === 'not-hard' ? 'no hard failure in the report' : outcome.reason}\n`);
      process.exitCode = outcome.kind === 'recorded' ? 0 : 1;
    });
  storeOptions(bounce.command('list').description('list suppressed addresses'))
    .option('--limit <n>', 'at most this many', '1000')
    .option('--json', 'print JSON Lines')
    .action(async (flags: StoreFlags & { limit: string; json?: boolean }) => {
      const limit = wholeNumberFlag('--limit', flags.limit, 1);
      const { entries, more } = await withSuppression(flags, 'read', io, (list) => list.list(limit));
      io.out.write(entries.map((e) => `${flags.json ? shownJson(e) : formatEntry(e)}\n`).join(''));
      if (more) reportLimitCut('bounce list', limit, io.err);
    });
  storeOptions(bounce.command('query').description('whether an address is suppressed (exit 0) or not (exit 1)').argument('<address>'))
    .option('--json', 'print the entry as JSON')
    .action(async (address: string, flags: StoreFlags & { json?: boolean }) => {
      const entry = await withSuppression(flags, 'read', io, (list) => list.get(address));
      if (flags.json) io.out.write(`${shownJson(entry ?? null)}\n`);
      else io.out.write(entry ? `${formatEntry(entry)}\n` : `${shownField(address)}: not suppressed\n`);
      process.exitCode = entry ? 0 : 1;
    });
  storeOptions(bounce.command('remove').description('take an address off the suppression list').argument('<address>'))
    .action(async (address: string, flags: StoreFlags) => {
      const removed = await withSuppression(flags, 'read', io, (list) => list.remove(address));
      io.out.write(`${shownField(address)}: ${removed ? 'removed' : 'was not suppressed'}\n`);
      process.exitCode = removed ? 0 : 1;
    });
}

interface ServeFlags {
  socketmap?: string;
  tcpTable: string[];
  srsSecretFile?: string;
  srsDomain?: string;
  srsSeparator?: string;
  srsAlphabet?: string;
  srsHashLength?: string;
  srsLocalDomain: string[];
  srsAlwaysRewrite?: boolean;
  batvKeyFile?: string;
  batvDomain: string[];
  /** No commander default: given without --batv-key-file it is warned of (unusedServeFlags). */
  batvWindow?: string;
  idlePoll: string;
  maxConnections: string;
  /** No commander default: given without a UNIX socket listener it is warned of (unusedServeFlags). */
  socketMode?: string;
}

function serveMaps(flags: ServeFlags, log: LookupLog, clock: Clock): Record<string, LookupMap> {
  const maps: Record<string, LookupMap> = {};
  if (flags.srsSecretFile !== undefined || flags.srsDomain !== undefined) {
    const srs = srsFromFlags(
      {
        secretFile: flags.srsSecretFile,
        domain: flags.srsDomain,
        separator: flags.srsSeparator,
        alphabet: flags.srsAlphabet,
        hashLength: flags.srsHashLength,
        localDomain: flags.srsLocalDomain,
        alwaysRewrite: flags.srsAlwaysRewrite,
      },
      'srs-',
      log,
    );
    Object.assign(maps, srsMaps(srs, clock));
  }
  if (flags.batvKeyFile !== undefined) {
    refuseEmpty('--batv-key-file', flags.batvKeyFile, 'a file');
    if (flags.batvDomain.length === 0) throw new UsageError('--batv-domain: give the sender domains to sign (repeatable)');
    // An empty entry (a quoting slip in a unit file) matched nothing and was dropped silently.
    domainListFlag('--batv-domain', flags.batvDomain);
    const window = flags.batvWindow ?? 'bounded';
    if (window !== 'exim' && window !== 'bounded') throw new UsageError(`--batv-window: got "${window}", expected exim or bounded`);
    const batv = batvFromKeyFile(flags.batvKeyFile, window, log);
    Object.assign(maps, batvMaps(batv, { domains: flags.batvDomain }, clock));
  }
  if (Object.keys(maps).length === 0) throw new UsageError('rewrite serve: configure SRS (--srs-secret-file, --srs-domain) and/or BATV (--batv-key-file, --batv-domain)');
  return maps;
}

/**
 * The flags given that have no effect, each with why and what to do. They were ignored without
 * a word; they are logged, not refused, so that a service that started with them still starts
 * (the previous release refused only --batv-window and --batv-domain without keys).
 */
function unusedServeFlags(flags: ServeFlags, unixListener: boolean): Array<{ flag: string; message: string }> {
  const unused: Array<{ flag: string; message: string }> = [];
  const note = (flag: string, why: string, fix: string) => unused.push({ flag, message: `${flag} has no effect: ${why}; ${fix}, or leave ${flag} out` });
  if (!flags.srsSecretFile && !flags.srsDomain) {
    const srsFlags = [
      flags.srsSeparator !== undefined && '--srs-separator',
      flags.srsAlphabet !== undefined && '--srs-alphabet',
      flags.srsHashLength !== undefined && '--srs-hash-length',
      flags.srsLocalDomain.length > 0 && '--srs-local-domain',
      flags.srsAlwaysRewrite === true && '--srs-always-rewrite',
    ];
    for (const flag of srsFlags) if (flag) note(flag, 'without --srs-secret-file and --srs-domain there is no SRS map to rewrite with it', 'give both');
  }
  if (!flags.batvKeyFile) {
    if (flags.batvWindow !== undefined) note('--batv-window', 'without --batv-key-file there is no BATV map to check with it', 'give --batv-key-file');
    if (flags.batvDomain.length > 0) note('--batv-domain', 'without --batv-key-file there is no BATV map to sign with it', 'give --batv-key-file');
  }
  if (flags.socketMode !== undefined && !unixListener) note('--socket-mode', 'a TCP listener has no permissions to set, and no UNIX socket listener is given', 'give --socketmap PATH or --tcp-table MAP=PATH');
  return unused;
}

function registerServe(program: Command, io: RewriteCommandIo): void {
  const rewrite = program.command('rewrite').description('address rewriting services for Postfix');
  addSrsOptions(
    reloadingCommand(rewrite.command('serve'))
      .description('serve SRS and BATV lookup maps to Postfix over socketmap and tcp_table until SIGINT/SIGTERM')
      .option('--socketmap <listen>', 'socketmap listener, HOST:PORT or a UNIX socket path (maps: forward, reverse, batv-sign, batv-strip)', once('--socketmap'))
      .option('--tcp-table <map=listen>', 'a tcp_table listener for one map, e.g. forward=127.0.0.1:10001; repeatable', collect, []),
    'srs-',
  )
    .option('--batv-key-file <file>', 'BATV keys ("KEYNUM SECRET" lines, newest first)', once('--batv-key-file'))
    .option('--batv-domain <domain>', 'a sender domain batv-sign signs (.domain: its subdomains); repeatable', collect, [])
    .option('--batv-window <window>', "bounded, or exim (Exim's check: an old tag is valid again on some days of BATV's 1000-day cycle) (default: \"bounded\")")
    .option('--max-connections <n>', 'per listener', '200')
    .option('--socket-mode <mode>', `permissions of a UNIX socket listener, octal (0660: its owner and group, which Postfix must be in) (default: "${octalMode(DEFAULT_SOCKET_MODE)}")`)
    .option('--idle-poll <micros>', 'after an answer, poll this many microseconds for the next request before sleeping (adaptive; 0: off)', String(DEFAULT_IDLE_POLL_MICROS))
    .action(async (flags: ServeFlags) => {
      // Refused requests and connections, and secret files others can read, are logged as JSON
      // on stderr; stdout has the listeners.
      const log = io.log ?? createLogger('info', coalescingDestination(2));
      const clock = io.clock ?? systemClock;
      // SIGHUP reads the secret and key files again (a rotated BATV key, a new SRS secret) and
      // the maps answer with them from the next lookup on; a file that no longer reads keeps the
      // secrets in use. Without a handler, SIGHUP (`systemctl reload`, the policy daemon's reload
      // signal) ended the service, and systemd does not restart a process a SIGHUP ended.
      let current = serveMaps(flags, log, clock);
      const maps: Record<string, LookupMap> = {};
      for (const name of Object.keys(current)) maps[name] = (key) => current[name]!(key);
      const reload = () => {
        try {
          current = serveMaps(flags, log, clock);
          log.info({}, 'SIGHUP: secret files read again');
        } catch (err) {
          log.warn({ error: describeError(err) }, 'SIGHUP: reload refused, the secrets read before stay in use');
        }
      };
      const maxConnections = wholeNumberFlag('--max-connections', flags.maxConnections, 1);
      const socketMode = flags.socketMode === undefined ? DEFAULT_SOCKET_MODE : socketModeFlag(flags.socketMode);
      const idlePollMicros = unitFlag('--idle-poll', flags.idlePoll, IDLE_POLL_MICROSECONDS);
      // One poller for every listener: they share the process's event loop.
      const poller = new IdlePoller({ maxMicros: idlePollMicros });
      const plan: Array<{ label: string; server: SocketmapServer | TcpTableServer; target: ListenAddress }> = [];
      if (flags.socketmap !== undefined) plan.push({ label: `socketmap (${Object.keys(maps).join(', ')})`, server: new SocketmapServer(maps, { maxConnections, poller, log, label: 'socketmap', socketMode }), target: parseListen(flags.socketmap, '--socketmap') });
      for (const entry of flags.tcpTable) {
        const eq = entry.indexOf('=');
        const name = eq > 0 ? entry.slice(0, eq) : '';
        // Own keys only: "constructor" named Object(), whose answer to the first request ended the process.
        const map = Object.hasOwn(maps, name) ? maps[name] : undefined;
        if (!map) throw new UsageError(`--tcp-table: got "${entry}", expected MAP=HOST:PORT with MAP one of ${Object.keys(maps).join(', ')}`);
        plan.push({ label: `tcp_table ${name}`, server: new TcpTableServer(map, { maxConnections, poller, log, label: `tcp_table ${name}`, socketMode }), target: parseListen(entry.slice(eq + 1), '--tcp-table') });
      }
      if (plan.length === 0) throw new UsageError('rewrite serve: give --socketmap and/or --tcp-table');
      for (const { flag, message } of unusedServeFlags(flags, plan.some((p) => p.target.kind === 'unix'))) log.warn({ flag }, message);
      const started: typeof plan = [];
      process.on('SIGHUP', reload);
      // The files were read just now, after any SIGHUP sent while the program loaded (cli/signals).
      if (takeStartupReloads() > 0) log.info({}, 'SIGHUP received while the program loaded, before the secret files were read: they are read as they are now');
      const noInspector = ignoreInspectorSignal(log, 'SIGUSR1 ignored: callout rewrite serve takes SIGHUP (reads the secret files again) and SIGTERM (stop); its log goes to stderr, there is no file to reopen');
      try {
        for (const p of plan) {
          const bound = await p.server.listen(p.target);
          started.push(p);
          io.out.write(`${p.label} listening on ${formatListenAddress(bound)}\n`);
          if (reachableFromNetwork(bound)) {
            log.warn({ listener: p.label, listen: formatListenAddress(bound) }, 'listener is reachable from other hosts: any of them can have addresses signed and rewritten with the secrets (valid BATV tags, SRS addresses); listen on 127.0.0.1, [::1] or a UNIX socket, or firewall the port to the mail servers');
          }
          if (bound.kind === 'unix' && openToAllUsers(socketMode)) {
            log.warn({ listener: p.label, listen: bound.path, socketMode: octalMode(socketMode) }, 'socket is writable by all users: any local user can have addresses signed and rewritten with the secrets (valid BATV tags, SRS addresses); give --socket-mode 0660 and the socket a group Postfix is in');
          }
        }
        let done = () => undefined as void;
        const stopped = new Promise<void>((resolve) => (done = resolve));
        process.once('SIGINT', done);
        process.once('SIGTERM', done);
        io.stop?.addEventListener('abort', done, { once: true });
        if (io.stop?.aborted) done();
        await stopped;
        process.off('SIGINT', done);
        process.off('SIGTERM', done);
      } finally {
        // Handlers kept while the listeners drain: without them a SIGHUP ends the process and a
        // SIGUSR1 opens the inspector.
        try {
          await Promise.all(started.map((p) => p.server.close()));
        } finally {
          process.off('SIGHUP', reload);
          noInspector();
        }
      }
    });
}

export function registerRewriteCommands(program: Command, io: RewriteCommandIo = { out: process.stdout, stdin: process.stdin }): void {
  registerBatv(program, io);
  registerSrs(program, io);
  registerVerp(program, io);
  registerBounce(program, io);
  registerServe(program, io);
}
