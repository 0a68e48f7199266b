/**
 * NAME
 *   core/files - read a whole file, up to a size limit
 *
 * SYNOPSIS
 *   const read = readFileLimited(path, 8 * MIB);
 *   if (!read.ok) throw new ConfigError(`--message ${path}: ${read.reason}`);
 *
 * DESCRIPTION
 *   readFileLimited(path, limitBytes) reads a file, a device or a FIFO whole, in chunks, and
 *   gives up past limitBytes. A path given
 *   where a message, a list or a secret was expected may be /dev/zero, a pipe that is never
 *   closed or a disk image: readFileSync read such input until the process ran out of memory
 *   (gigabytes within seconds). Each caller turns the reason into its own error, naming the
 *   option or key the path came from. What it holds meanwhile is what it read, however small
 *   the reads (a FIFO written an octet at a time).
 *
 *   makeDirectories(dir) is mkdir -p.
 *
 * LIMITS
 *   Synchronous: for start-up, reloads and command-line tools, not for a request path.
 */

import { closeSync, existsSync, mkdirSync, openSync, readSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

export const MIB = 1024 * 1024;
/** A file of secrets or keys: a line each, a few of them. */
export const SECRET_FILE_BYTES = 64 * 1024;
/** A message (Postfix's message_size_limit is 10 MB by default), or a list of addresses. */
export const MESSAGE_FILE_BYTES = 64 * MIB;

const CHUNK_BYTES = 64 * 1024;

/** `code`: the system's error code (ENOENT, EISDIR...) when the file could not be read at all. */
export type FileRead = { ok: true; bytes: Buffer } | { ok: false; reason: string; code?: string };

export function readFileLimited(path: string, limitBytes: number): FileRead {
  const chunks: Buffer[] = [];
  let total = 0;
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    // One buffer to read into, and a copy of what each read gave: a FIFO whose writer sends a
    // few octets at a time gives as few per read, and a buffer of CHUNK_BYTES kept per read made
    // a 64 KiB limit cost hundreds of megabytes.
    const chunk = Buffer.allocUnsafe(CHUNK_BYTES);
    for (;;) {
      const read = readSync(fd, chunk, 0, chunk.length, null);
      if (read === 0) break;
      total += read;
      if (total > limitBytes) return { ok: false, reason: tooLarge(limitBytes) };
      chunks.push(Buffer.from(chunk.subarray(0, read)));
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return { ok: false, reason: `cannot read: ${code ?? String(err)}`, ...(code ? { code } : {}) };
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  return { ok: true, bytes: Buffer.concat(chunks, total) };
}

/** The reason given for input past a limit (also for standard input, read as a stream). */
export function tooLarge(limitBytes: number): string {
  const size = limitBytes % MIB === 0 ? `${limitBytes / MIB} MiB` : limitBytes % 1024 === 0 ? `${limitBytes / 1024} KiB` : `${limitBytes} bytes`;
  return `larger than ${size}`;
}

/**
 * Creates a directory and its missing ancestors (mkdir -p), one at a time: Node 20's
 * mkdirSync({ recursive: true }) never returns for a path under /proc, retrying a mkdir that
 * fails with ENOENT for ever. Throws the system's error for the first one that cannot be made.
 */
export function makeDirectories(dir: string): void {
  const missing: string[] = [];
  for (let at = resolve(dir); !existsSync(at); at = dirname(at)) {
    missing.push(at);
    if (dirname(at) === at) break;
  }
  for (const path of missing.reverse()) {
    try {
      mkdirSync(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  // What was there already may be a file: say so here, as mkdir -p does, not later.
  if (!statSync(dir).isDirectory()) throw Object.assign(new Error(`ENOTDIR: not a directory, mkdir '${dir}'`), { code: 'ENOTDIR' });
}
