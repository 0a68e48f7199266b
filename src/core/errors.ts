/**
 * NAME
 *   core/errors - the one error base class of callout, with a stable code per failure
 *
 * DESCRIPTION
 *   Expected outcomes (an address that does not exist, a domain without MX) are values, never
 *   exceptions. Exceptions are for faults and for input that cannot be used at all; each carries a
 *   stable `code` that logs (describeError), the exit status (cli/exit-status) and a policy
 *   worker's start failure (policy/workers) rely on. No fault ever becomes a permanent
 *   answer: the policy pipeline (src/policy/pipeline.ts) is the one place that answers every fault
 *   of a stage by `policy.faultAction` (DUNNO or 451), and the callout engine turns its own faults
 *   into an `unknown` verdict (a StoreError it passes on, wherever in a callout the store failed).
 *   describeFileError says in words why a file could not be used, the system's code kept.
 */

import { getSystemErrorMap } from 'node:util';

export type ErrorCode =
  | 'ADDRESS_SYNTAX'
  | 'CONFIG_INVALID'
  | 'DNS_PERMANENT'
  | 'LISTEN_UNAVAILABLE'
  | 'STORE_DAMAGED'
  | 'STORE_UNAVAILABLE'
  | 'USAGE'
  | 'INTERNAL';

export class CalloutError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** Bad configuration: names the key, the value and what was expected. */
export class ConfigError extends CalloutError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('CONFIG_INVALID', message, options);
  }
}

/** A command line that cannot be carried out (unknown option, missing argument). */
export class UsageError extends CalloutError {
  constructor(message: string) {
    super('USAGE', message);
  }
}

/**
 * An address to listen on that is not there yet: at boot the interface may not be up
 * (EADDRNOTAVAIL) or a host name not resolvable (EAI_AGAIN). Not a configuration to fix: a
 * restart a moment later works, so it exits 75, which systemd's Restart=on-failure retries.
 */
export class ListenUnavailableError extends CalloutError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('LISTEN_UNAVAILABLE', message, options);
  }
}

/**
 * The store (SQLite, Redis) failed; callers decide by configuration whether to fail open.
 * `outage` says the store as a whole does not answer or take writes now (a connection lost, no
 * answer in time, a lock held past the busy timeout, a full disk, an I/O error), which a later
 * write that succeeds ends (the daemon's 'store available' line), as against a fault of one key
 * or one call (a value of another type under a key, an argument out of range, use after close),
 * after which nothing comes back.
 */
export class StoreError extends CalloutError {
  readonly outage: boolean;

  constructor(message: string, options?: { cause?: unknown; outage?: boolean }) {
    super('STORE_UNAVAILABLE', message, options);
    this.outage = options?.outage ?? false;
  }
}

/**
 * A store file found damaged (SQLite's SQLITE_CORRUPT), at open or by a read or write after it.
 * A StoreError all the same, so that it is answered as any store fault (policy.faultAction; the
 * callout engine passes it on rather than taking it for a verdict), but with a code of its own:
 * waiting does not mend it, and a command that exited 75 on it was tried again for ever (systemd's
 * Restart=, pipe(8)'s deferral).
 */
export class StoreDamagedError extends StoreError {
  override readonly code: ErrorCode = 'STORE_DAMAGED';
}

/** A one-line description of any thrown value, for logs and CLI output (no stack traces). */
export function describeError(err: unknown): string {
  // Called from catch blocks and log lines, so it must not throw itself: instanceof runs a
  // Proxy's getPrototypeOf trap (a revoked Proxy throws there), and message may be a getter.
  try {
    if (err instanceof CalloutError) return `${err.code}: ${String(err.message)}`;
    if (err instanceof Error) return String(err.message);
    return String(err);
  } catch {
    try {
      // An object without a prototype (or whose toString throws) has no text of its own.
      return Object.prototype.toString.call(err);
    } catch {
      return 'a thrown value that cannot be described';
    }
  }
}

/**
 * Why a system call on a file failed, in words, with the system's code kept for searching:
 * "no such file (ENOENT)", "permission denied, running as uid 998 (EACCES)". For a reason that
 * follows a path its caller names already; anything but a system error is described as
 * describeError does. A bare "ENOENT" or "EACCES" told an administrator neither what was wrong nor, for a
 * permission, which user was refused (a daemon started by systemd under User= is not the one
 * who tried it from a shell).
 */
export function describeFileError(err: unknown): string {
  // Called from catch blocks as describeError is, so it must not throw either (a getter, a Proxy).
  try {
    const { code, errno } = (err ?? {}) as { code?: unknown; errno?: unknown };
    // Only the system's codes: a CalloutError's or Node's own (ERR_...) have their message to say.
    let words = typeof code === 'string' ? (FILE_ERRORS[code] ?? (typeof errno === 'number' ? getSystemErrorMap().get(errno)?.[1] : undefined)) : undefined;
    if (words === undefined) return describeError(err);
    const euid = process.geteuid?.();
    if ((code === 'EACCES' || code === 'EPERM') && euid !== undefined) words += `, running as uid ${euid}`;
    return `${words} (${code})`;
  } catch {
    return describeError(err);
  }
}

/** The errors a file's path or its reading meets, as an administrator would put them. */
const FILE_ERRORS: Partial<Record<string, string>> = {
  ENOENT: 'no such file',
  ENOTDIR: 'a part of the path is not a directory',
  EISDIR: 'is a directory',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  ELOOP: 'too many levels of symbolic links',
  ENAMETOOLONG: 'file name too long',
  ENXIO: 'no device or reader there (a socket, or a device not present)',
  EMFILE: 'this process has too many files open',
  ENFILE: 'the system has too many files open',
  EIO: 'input/output error (a failing disk or a lost network file system)',
};

/** The start of an input quoted in a message: a configuration value may be any length. */
export function abbreviate(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max)}...` : text;
}
