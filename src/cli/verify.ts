/**
 * NAME
 *   cli/verify - `callout verify ADDRESS... | --file LIST`
 *
 * DESCRIPTION
 *   Prints one verdict per address, in input order: plain words with the reason, or with
 *   --json one JSON object per line (JSON Lines) with the verdict and its evidence (MX hosts,
 *   attempts with transcripts). Addresses of one domain share connections; at most
 *   --concurrency domains are verified at once, one batch of each at a time. A progress bar is
 *   drawn on stderr when it is a terminal. Ctrl-C gives up the callouts still running.
 *
 * EXIT STATUS
 *   0 every address deliverable; 1 at least one undeliverable, invalid or without a mail
 *   domain; 2 otherwise (some risky or unknown); 64 usage error; 78 configuration error; 75 the
 *   store cannot be reached now; 70 internal error; 130 interrupted (Ctrl-C); 141 the reader of
 *   the output went away.
 */

import { MESSAGE_FILE_BYTES, readFileLimited } from '../core/files.js';
import { UsageError } from '../core/errors.js';
import { shown, shownField, shownJson } from '../core/text.js';
import type { Config } from '../config/schema.js';
import type { Verdict, VerifyResult } from '../verify/types.js';
import { createRuntime } from './runtime.js';
import { refuseEmpty } from './options.js';

export interface VerifyOptions {
  json: boolean;
  file?: string;
  concurrency: number;
  /** Ends the run early as Ctrl-C does; without it, SIGINT does and the process exits 130. */
  signal?: AbortSignal;
}

/** 128 + SIGINT: the status a shell sees from a tool stopped by Ctrl-C. */
export const EXIT_INTERRUPTED = 130;

/**
 * How far past the first verdict not yet printed a batch may start. Verdicts are printed in
 * input order, so those behind a slow domain wait in memory: without a bound, one domain stuck
 * on timeouts early in a list of 100,000 held nearly every other verdict, transcripts and all.
 */
const MAX_AHEAD = 1000;

export async function runVerify(addresses: string[], options: VerifyOptions, config: Config, out: NodeJS.WritableStream = process.stdout): Promise<number> {
  const listed = options.file ? readAddressList(options.file) : [];
  const all = [...addresses, ...listed.map((entry) => entry.address)];
  refuseEmpty('--file', options.file, 'a file');
  // "give --file LIST" to someone who gave one sent them looking at the command line, not at the list.
  if (all.length === 0 && options.file !== undefined) throw new UsageError(`--file ${options.file}: no address in it (blank lines and lines starting with # are skipped)`);
  if (all.length === 0) throw new UsageError('verify: give at least one ADDRESS or --file LIST');
  const runtime = await createRuntime(config);
  const progress = new Progress(all.length, options.file !== undefined && process.stderr.isTTY === true);
  const sigint = new AbortController();
  const onSigint = (): void => sigint.abort();
  // Once: a second Ctrl-C kills at once, as without this listener.
  if (!options.signal) process.once('SIGINT', onSigint);
  const signal = options.signal ?? sigint.signal;
  // The scheduler sleeps until a batch ends or the run is interrupted. One resolver, not a race
  // over the interruption at every batch, which left a reaction on it per batch until the end.
  let wake = (): void => undefined;
  const onAbort = (): void => wake();
  signal.addEventListener('abort', onAbort, { once: true });
  let failure: { error: unknown } | undefined;
  let abandoned = false;
  try {
    // Each printed verdict is let go; the exit status needs only which verdicts were seen.
    const results: Array<VerifyResult | undefined> = new Array(all.length);
    const seen = new Set<Verdict>();
    let printed = 0;
    const flush = () => {
      for (let result = results[printed]; result; result = results[printed]) {
        out.write(format(result, options.json) + '\n');
        seen.add(result.verdict);
        results[printed++] = undefined;
      }
    };
    const batches = batchByDomain(all, config.limits.addressesPerConnection);
    // One batch of a domain at a time, as "domains verified at once" says: its batches side by
    // side went over limits.perHostConcurrency at its exchangers, answered "rate-limited" at
    // once. And no more at once than limits.concurrency, over which the engine does the same.
    const busy = new Set<string>();
    let running = 0;
    let from = 0;
    const startable = (): BatchOfDomain | undefined => {
      while (from < batches.length && batches[from]!.started) from++;
      for (let i = from; i < batches.length && batches[i]!.indexes[0]! < printed + MAX_AHEAD; i++) {
        const batch = batches[i]!;
        if (!batch.started && !busy.has(batch.domain)) return batch;
      }
      return undefined;
    };
    const start = (batch: BatchOfDomain): void => {
      batch.started = true;
      busy.add(batch.domain);
      running++;
      runtime.engine.verifyMany(batch.indexes.map((i) => all[i]!)).then(
        (verdicts) => {
          // Nothing after "interrupted": its count is what was printed.
          if (signal.aborted) return;
          batch.indexes.forEach((index, k) => (results[index] = inList(verdicts[k]!, listed[index - addresses.length], options.file)));
          busy.delete(batch.domain);
          running--;
          // The bar is drawn again below the verdicts: on a terminal that shows stdout and stderr
          // both, each verdict line began with it ("[###---] 1/2alice@example.org: ...").
          progress.clear();
          flush();
          progress.advance(batch.indexes.length);
          wake();
        },
        (error: unknown) => {
          failure ??= { error };
          wake();
        },
      );
    };
    const concurrency = Math.min(options.concurrency, config.limits.concurrency);
    while (!signal.aborted) {
      for (let batch = running < concurrency ? startable() : undefined; batch; batch = running < concurrency ? startable() : undefined) start(batch);
      if (running === 0) break;
      await new Promise<void>((resolve) => (wake = resolve));
      if (failure) throw failure.error;
    }
    progress.done();
    if (signal.aborted) {
      // What was verified in input order is printed; the callouts still running are given up:
      // their probe locks let go (a daemon on the same --cache would wait them out), idle
      // connections closed with QUIT.
      abandoned = true;
      await runtime.engine.abandon();
      process.stderr.write(`callout: verify: interrupted: ${printed} of ${all.length} verdicts printed\n`);
      // The callouts given up would hold the process until their timeouts.
      if (!options.signal) process.exit(EXIT_INTERRUPTED);
      return EXIT_INTERRUPTED;
    }
    return exitStatus(seen);
  } finally {
    process.off('SIGINT', onSigint);
    signal.removeEventListener('abort', onAbort);
    // Closing waits for the callouts given up to end.
    if (!abandoned) await runtime.close();
  }
}

/** An address of a list and the line it is on (from 1), for an error to say where. */
export interface ListedAddress {
  address: string;
  line: number;
}

/** One address per line, or CSV whose first column (or the column named email/address) holds it. */
export function readAddressList(path: string): ListedAddress[] {
  const read = readFileLimited(path, MESSAGE_FILE_BYTES);
  if (!read.ok) throw new UsageError(`--file ${path}: ${read.reason}`);
  const text = read.bytes.toString('utf8');
  const lines = text
    .split(/\r?\n/)
    .map((l, i) => ({ text: l.trim(), line: i + 1 }))
    .filter((l) => l.text !== '' && !l.text.startsWith('#'));
  if (lines.length === 0) return [];
  const header = csvFields(lines[0]!.text).map((c) => c.toLowerCase());
  const named = header.findIndex((c) => c === 'email' || c === 'address' || c === 'e-mail');
  const column = named >= 0 ? named : 0;
  const rows = named >= 0 ? lines.slice(1) : lines;
  if (named >= 0) return rows.map(({ text, line }) => ({ address: csvFields(text)[column] ?? '', line }));
  // Without a header, a line that is one address (a quoted local part included) is taken as written.
  return rows.map(({ text, line }) => ({ address: /[,"]/.test(text) && !QUOTED_ADDRESS.test(text) ? (csvFields(text)[0] ?? '') : text, line }));
}

/**
 * An invalid address of the list names its line: blank lines, comments and a CSV header are
 * skipped, so counting verdicts does not find it in a list of 100,000.
 */
function inList(result: VerifyResult, listed: ListedAddress | undefined, file: string | undefined): VerifyResult {
  if (result.verdict !== 'invalid' || !listed) return result;
  return { ...result, description: `${result.description} (${file} line ${listed.line})` };
}

/** A whole line that is an address with a quoted local part (RFC 5321 Quoted-string, \\ escapes). */
const QUOTED_ADDRESS = /^"(?:[^"\\]|\\.)*"@[^,"\s]+$/;

/**
 * The fields of one CSV line (RFC 4180): a field in double quotes may hold commas, and "" for a
 * quote; fields are trimmed. Exported lists ("Name","e-mail") quote every field.
 */
export function csvFields(line: string): string[] {
  const fields: string[] = [];
  let field = '';
  let quoted = false;
  // Whether the field is white space so far: field.trim() at every quote flattened and copied
  // the field each time, quadratic on a long line of quotes.
  let blank = true;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]!;
    if (quoted) {
      if (ch === '"' && line[i + 1] === '"') {
        field += '"';
        blank = false;
        i += 1;
      } else if (ch === '"') {
        quoted = false;
      } else {
        field += ch;
        blank &&= /\s/.test(ch);
      }
    } else if (ch === '"' && blank) {
      quoted = true;
      field = '';
    } else if (ch === ',') {
      fields.push(field.trim());
      field = '';
      blank = true;
    } else {
      field += ch;
      blank &&= /\s/.test(ch);
    }
  }
  fields.push(field.trim());
  return fields;
}

interface BatchOfDomain {
  domain: string;
  /** Positions in the input, at most limits.addressesPerConnection of one domain. */
  indexes: number[];
  started: boolean;
}

/** Batches of one domain each, in the order of their first address. */
function batchByDomain(addresses: string[], size: number): BatchOfDomain[] {
  const byDomain = new Map<string, number[]>();
  addresses.forEach((address, index) => {
    const domain = address.slice(address.lastIndexOf('@') + 1).toLowerCase();
    const list = byDomain.get(domain) ?? [];
    list.push(index);
    byDomain.set(domain, list);
  });
  const batches: BatchOfDomain[] = [];
  for (const [domain, list] of byDomain) for (let i = 0; i < list.length; i += size) batches.push({ domain, indexes: list.slice(i, i + size), started: false });
  return batches.sort((a, b) => a.indexes[0]! - b.indexes[0]!);
}

function format(result: VerifyResult, json: boolean): string {
  if (json) return shownJson(result);
  const source = result.source === 'probe' || result.source === 'none' ? '' : ` [${result.source}${result.stale ? ', stale' : ''}]`;
  // An address read from a list may hold control characters, and so may the reply text of the
  // exchanger in the description (its owner writes it: an escape sequence, a bare CR that
  // overwrites the line with another verdict); the terminal gets them quoted, and an address
  // with a space is quoted as a field (shownField), so it cannot pass for two.
  return `${shownField(result.address)}: ${result.verdict} (${result.reason}) - ${shown(result.description)}${source}`;
}

/** The exit status for the verdicts a run printed (which, not how many). */
function exitStatus(verdicts: ReadonlySet<Verdict>): number {
  if ([...verdicts].every((v) => v === 'deliverable')) return 0;
  if (verdicts.has('undeliverable') || verdicts.has('invalid') || verdicts.has('no-mail-domain')) return 1;
  return 2;
}

class Progress {
  private doneCount = 0;
  constructor(private readonly total: number, private readonly enabled: boolean) {}
  /** Erases the bar from its line (ESC [ K: to the end of the line), the cursor left at its start. */
  clear(): void {
    if (this.enabled && this.doneCount > 0) process.stderr.write('\r\u001b[K');
  }
  advance(n: number): void {
    this.doneCount += n;
    if (!this.enabled) return;
    const width = 30;
    const filled = Math.round((this.doneCount / this.total) * width);
    process.stderr.write(`\r[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${this.doneCount}/${this.total}`);
  }
  done(): void {
    if (this.enabled) process.stderr.write('\n');
  }
}
