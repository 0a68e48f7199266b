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
 */

export type ErrorCode =
  | 'ADDRESS_SYNTAX'
  | 'CONFIG_INVALID'
  | 'DNS_PERMANENT'
  | 'LISTEN_UNAVAILABLE'
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

/** The store (SQLite, Redis) failed; callers decide by configuration whether to fail open. */
export class StoreError extends CalloutError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('STORE_UNAVAILABLE', message, options);
  }
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

/** The start of an input quoted in a message: a configuration value may be any length. */
export function abbreviate(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max)}...` : text;
}
