/**
 * NAME
 *   cli/verify - `callout verify ADDRESS... | --file LIST`
 *
 * DESCRIPTION
 *   Prints one verdict per address, in input order: plain words with the reason, or with
 *   --json one JSON object per line (JSON Lines) with the verdict and its evidence (MX hosts,
 *   attempts with transcripts). Addresses of one domain share connections; at most
 *   --concurrency domain batches run at once. A progress bar is drawn on stderr when it is a
 *   terminal.
 *
 * EXIT STATUS
 *   0 every address deliverable; 1 at least one undeliverable, invalid or without a mail
 *   domain; 2 otherwise (some risky or unknown); 64 usage error; 78 configuration error; 75 the
 *   store cannot be reached now; 70 internal error; 141 the reader of the output went away.
 */

import { MESSAGE_FILE_BYTES, readFileLimited } from '../core/files.js';
import { UsageError } from '../core/errors.js';
import { shown, shownJson } from '../core/text.js';
import type { Config } from '../config/schema.js';
import type { VerifyResult } from '../verify/types.js';
import { createRuntime } from './runtime.js';

export interface VerifyOptions {
  json: boolean;
  file?: string;
  concurrency: number;
}

export async function runVerify(addresses: string[], options: VerifyOptions, config: Config, out: NodeJS.WritableStream = process.stdout): Promise<number> {
  const all = [...addresses, ...(options.file ? readAddressList(options.file) : [])];
  if (options.file === '') throw new UsageError('verify: --file: got "", expected a file');
  // "give --file LIST" to someone who gave one sent them looking at the command line, not at the list.
  if (all.length === 0 && options.file !== undefined) throw new UsageError(`verify: --file ${options.file}: no address in it (blank lines and lines starting with # are skipped)`);
  if (all.length === 0) throw new UsageError('verify: give at least one ADDRESS or --file LIST');
  const runtime = await createRuntime(config);
  const progress = new Progress(all.length, options.file !== undefined && process.stderr.isTTY === true);
  try {
    const results: Array<VerifyResult | undefined> = new Array(all.length);
    let printed = 0;
    const flush = () => {
      while (printed < all.length && results[printed]) {
        out.write(format(results[printed]!, options.json) + '\n');
        printed++;
      }
    };
    const batches = batchByDomain(all, config.limits.addressesPerConnection);
    let next = 0;
    const worker = async () => {
      while (next < batches.length) {
        const batch = batches[next++]!;
        const verdicts = await runtime.engine.verifyMany(batch.map((i) => all[i]!));
        batch.forEach((index, k) => (results[index] = verdicts[k]));
        progress.advance(batch.length);
        flush();
      }
    };
    await Promise.all(Array.from({ length: Math.min(options.concurrency, batches.length) }, worker));
    progress.done();
    return exitStatus(results as VerifyResult[]);
  } finally {
    await runtime.close();
  }
}

/** One address per line, or CSV whose first column (or the column named email/address) holds it. */
export function readAddressList(path: string): string[] {
  const read = readFileLimited(path, MESSAGE_FILE_BYTES);
  if (!read.ok) throw new UsageError(`--file ${path}: ${read.reason}`);
  const text = read.bytes.toString('utf8');
  const lines = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  if (lines.length === 0) return [];
  const header = csvFields(lines[0]!).map((c) => c.toLowerCase());
  const named = header.findIndex((c) => c === 'email' || c === 'address' || c === 'e-mail');
  const column = named >= 0 ? named : 0;
  const rows = named >= 0 ? lines.slice(1) : lines;
  if (named >= 0) return rows.map((row) => csvFields(row)[column] ?? '');
  // Without a header, a line that is one address (a quoted local part included) is taken as written.
  return rows.map((line) => (/[,"]/.test(line) && !QUOTED_ADDRESS.test(line) ? (csvFields(line)[0] ?? '') : line));
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

/** Indexes grouped so each batch holds addresses of one domain, at most `size` of them. */
function batchByDomain(addresses: string[], size: number): number[][] {
  const byDomain = new Map<string, number[]>();
  addresses.forEach((address, index) => {
    const domain = address.slice(address.lastIndexOf('@') + 1).toLowerCase();
    const list = byDomain.get(domain) ?? [];
    list.push(index);
    byDomain.set(domain, list);
  });
  const batches: number[][] = [];
  for (const list of byDomain.values()) for (let i = 0; i < list.length; i += size) batches.push(list.slice(i, i + size));
  return batches.sort((a, b) => a[0]! - b[0]!);
}

function format(result: VerifyResult, json: boolean): string {
  if (json) return shownJson(result);
  const source = result.source === 'probe' || result.source === 'none' ? '' : ` [${result.source}${result.stale ? ', stale' : ''}]`;
  // An address read from a list may hold control characters, and so may the reply text of the
  // exchanger in the description (its owner writes it: an escape sequence, a bare CR that
  // overwrites the line with another verdict); the terminal gets them quoted.
  return `${shown(result.address)}: ${result.verdict} (${result.reason}) - ${shown(result.description)}${source}`;
}

export function exitStatus(results: VerifyResult[]): number {
  if (results.every((r) => r.verdict === 'deliverable')) return 0;
  if (results.some((r) => r.verdict === 'undeliverable' || r.verdict === 'invalid' || r.verdict === 'no-mail-domain')) return 1;
  return 2;
}

class Progress {
  private doneCount = 0;
  constructor(private readonly total: number, private readonly enabled: boolean) {}
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
