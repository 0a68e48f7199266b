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
 *   With { governing: true }, for a file that governs what the process does (the configuration,
 *   a file of secrets, a whitelist): only a regular file is read, a symlink's target included.
 *   A FIFO with no writer held the daemon at its start or reload for ever, and opening a device
 *   may act on it (a watchdog, a tape). So it is looked at first, and opened O_NONBLOCK in case
 *   it was swapped meanwhile. A file any user may write is refused as Exim refuses such a
 *   configuration file: anyone on the host could change what the daemon does.
 *
 *   secretExposure(read) says what else makes a file of secrets unsafe: group or others may
 *   read or write it (its group may read it when that is this process's group), or a user
 *   other than root and this process owns it (sshd, OpenDKIM refuse such keys; a mail server
 *   is often started as root). The callers warn, through warnIfSecretExposed: refusing would
 *   stop a running site at its next restart over a mode that is only loose.
 *
 *   makeDirectories(dir, mode) is mkdir -p, each directory it makes given mode under the umask.
 *
 *   withholdFromOthers() adds 027 to the process's umask, for good: a program's choice (callout
 *   serve makes it), so that whatever the process creates next is not for other users. A
 *   library call does not change the umask: the SQLite store gives its own files their mode.
 *
 * LIMITS
 *   Synchronous: for start-up, reloads and command-line tools, not for a request path.
 */

import { closeSync, constants, existsSync, fstatSync, mkdirSync, openSync, readSync, statSync, type Stats } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { describeFileError } from './errors.js';

export const MIB = 1024 * 1024;
/** A file of secrets or keys: a line each, a few of them. */
export const SECRET_FILE_BYTES = 64 * 1024;
/** A message (Postfix's message_size_limit is 10 MB by default), or a list of addresses. */
export const MESSAGE_FILE_BYTES = 64 * MIB;

const CHUNK_BYTES = 64 * 1024;

/**
 * `mode`, `uid` and `gid`: the file's (a symlink's target's). `code`: the system's error code (ENOENT,
 * EISDIR...) when the file could not be read at all.
 */
export type FileRead = { ok: true; bytes: Buffer; mode: number; uid: number; gid: number } | { ok: false; reason: string; code?: string };

export interface ReadOptions {
  /** The file governs what the process does: a regular file only, and not writable by any user. */
  governing?: boolean;
}

export function readFileLimited(path: string, limitBytes: number, options: ReadOptions = {}): FileRead {
  const chunks: Buffer[] = [];
  let total = 0;
  let fd: number | undefined;
  let stats: Stats;
  try {
    if (options.governing) {
      const refused = ungoverning(statSync(path));
      if (refused) return { ok: false, reason: refused };
    }
    fd = openSync(path, options.governing ? constants.O_RDONLY | constants.O_NONBLOCK : 'r');
    stats = fstatSync(fd);
    if (options.governing) {
      const refused = ungoverning(stats);
      if (refused) return { ok: false, reason: refused };
    }
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
    return { ok: false, reason: `cannot read: ${describeFileError(err)}`, ...(code ? { code } : {}) };
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  return { ok: true, bytes: Buffer.concat(chunks, total), mode: stats.mode, uid: stats.uid, gid: stats.gid };
}

/** Why a file cannot govern the process, or undefined. */
function ungoverning(stats: Stats): string | undefined {
  if (!stats.isFile()) return `not a regular file (${fileKind(stats)})`;
  if (stats.mode & 0o002) return `writable by any user (mode ${octalMode(stats.mode)}), so anyone on this host could change it: chmod o-w`;
  return undefined;
}

function fileKind(stats: Stats): string {
  if (stats.isDirectory()) return 'a directory';
  if (stats.isFIFO()) return 'a FIFO';
  if (stats.isCharacterDevice()) return 'a character device';
  if (stats.isBlockDevice()) return 'a block device';
  if (stats.isSocket()) return 'a socket';
  return 'of an unknown kind';
}

/** Permission bits as chmod takes them: "0660". */
export function octalMode(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0');
}

/**
 * What makes a file of secrets, read as `euid` and `egid` (with the supplementary `groups`),
 * unsafe to rely on, for a warning naming it; or undefined. Nobody else is trusted with a key:
 * root and the reading user, and a group of the reader may read it (root:callout 0640 is how a
 * daemon not run as root is given a key root keeps; a supplementary group such as Debian's
 * ssl-cert or a Kubernetes fsGroup is how the reader gets at it just as well).
 */
export function secretExposure(
  read: { mode: number; uid: number; gid: number },
  euid = process.geteuid?.(),
  egid = process.getegid?.(),
  groups: readonly number[] = process.getgroups?.() ?? [],
): string | undefined {
  const problems: string[] = [];
  const groupReads = (read.mode & 0o040) !== 0 && read.gid !== egid && !groups.includes(read.gid);
  if ((read.mode & 0o037) !== 0 || groupReads) problems.push(`group or other users may read or write it (mode ${octalMode(read.mode)}): chmod 600`);
  if (read.uid !== 0 && euid !== undefined && read.uid !== euid) problems.push(`it is owned by uid ${read.uid}, who can change it, while this process runs as uid ${euid}`);
  return problems.length > 0 ? problems.join('; ') : undefined;
}

/** One warning line naming a secret file, the setting that named it and what exposes it; none when nothing does. */
export function warnIfSecretExposed(read: { mode: number; uid: number; gid: number }, path: string, setting: string, log: { warn(fields: Record<string, unknown>, message: string): void } | undefined): void {
  const problem = secretExposure(read);
  if (problem !== undefined) log?.warn({ file: path, setting, problem }, 'secret file is not private');
}

/** The reason given for input past a limit (also for standard input, read as a stream). */
export function tooLarge(limitBytes: number): string {
  const size = limitBytes % MIB === 0 ? `${limitBytes / MIB} MiB` : limitBytes % 1024 === 0 ? `${limitBytes / 1024} KiB` : `${limitBytes} bytes`;
  return `larger than ${size}`;
}

const WITHHELD_FROM_OTHERS = 0o027;

/**
 * Adds 027 to the umask; a stricter umask is kept. For the whole process and its children, so
 * only a program calls it (callout serve, the policy daemon), never a library: started from a
 * shell (umask 022), what the daemon made was readable by every user of the host (systemd's unit
 * sets UMask=0027 too).
 */
export function withholdFromOthers(): void {
  const previous = process.umask(WITHHELD_FROM_OTHERS);
  process.umask(previous | WITHHELD_FROM_OTHERS);
}

/**
 * Creates a directory and its missing ancestors (mkdir -p), one at a time: Node 20's
 * mkdirSync({ recursive: true }) never returns for a path under /proc, retrying a mkdir that
 * fails with ENOENT for ever. Those it makes get mode (default 0777) under the umask; one that
 * exists keeps its own. Throws the system's error for the first one that cannot be made.
 */
export function makeDirectories(dir: string, mode = 0o777): void {
  const missing: string[] = [];
  for (let at = resolve(dir); !existsSync(at); at = dirname(at)) {
    missing.push(at);
    if (dirname(at) === at) break;
  }
  for (const path of missing.reverse()) {
    try {
      mkdirSync(path, mode);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  // What was there already may be a file: say so here, as mkdir -p does, not later.
  if (!statSync(dir).isDirectory()) throw Object.assign(new Error(`ENOTDIR: not a directory, mkdir '${dir}'`), { code: 'ENOTDIR' });
}
