/**
 * NAME
 *   rewrite/batv - BATV "prvs" signed reverse paths, exactly as Exim's ${prvs} and ${prvscheck}
 *
 * DESCRIPTION
 *   Outgoing mail gets the reverse path `prvs=KDDDSSSSSS=local@domain`: K is the key number
 *   (one digit), DDD the expiry day (days since 1970-01-01, today + 7, last three digits) and
 *   SSSSSS the first three bytes of HMAC-SHA1(key, K ‖ DDD ‖ local@domain) in lower-case hex.
 *   A bounce can only come back to such an address when the signature is ours and fresh, so
 *   bounces to unsigned or badly signed addresses are backscatter.
 *
 *   Signing and checking follow Exim 4 to the byte, so an address Exim signed validates here and
 *   the reverse (test/fixtures/batv/exim-vectors.json was made by Debian's exim4):
 *   - the address is hashed as received (case kept); Exim compares the hash case-sensitively, so
 *     an upper-cased hash or a re-cased local part or domain is a bad signature;
 *   - the tag `prvs=` itself is matched in any case, the address is split at its last `@`;
 *   - validity (window 'exim'): the stamp is valid while it is not before today, with Exim's
 *     fudge for the wrap from 999 to 000. Exim sets no upper bound, so an address is valid from
 *     its signing day through the 7th day after, and an old stamp becomes "valid" again later in
 *     the 1000-day cycle. Window 'bounded' closes that hole: valid only when the stamp is between
 *     today and today + 8 (one day of clock skew between signer and checker), modulo 1000.
 *
 *   Signing refuses, where Exim signs, an address whose prvs address would not be valid or
 *   would not check: what embeddableAddress (rewrite/embed) refuses (a quoted local part, a
 *   second '@', a control character: `prvs=…="a b"@x` is no address, RFC 5321 §4.1.2) and a
 *   signed address over 512 octets (parsePrvs reads none).
 *
 *   A keyring holds up to ten keys by key number: the first listed (the newest) signs, every one
 *   verifies the addresses that carry its number. Hashes are compared in constant time.
 *
 * KEY FILES
 *   `rewrite serve --batv-key-file` and `bounce record --batv-key-file` read `KEYNUM SECRET`
 *   lines, newest first; blank lines and lines starting with '#' are skipped. batvKeyFileLines
 *   reads them, for those commands and for the policy stage, which tells an administrator who
 *   gave it such a file as a secretFile what it is.
 *
 * RFC
 *   draft-levine-smtp-batv-01 (expired; the grammar as Exim and batv-tools implement it);
 *   RFC 2104 (HMAC); RFC 5321 §4.1.2 (Local-part).
 *
 * LIMITS
 *   Secrets at most 64 bytes (Exim refuses longer ones: "prvs hmac-sha1 conversion failed");
 *   addresses at most 512 octets.
 *
 * ERRORS
 *   Outcomes are values. A keyring that cannot work (no keys, a key number that is not one digit,
 *   a duplicate number, an empty secret, a secret over 64 bytes) throws ConfigError.
 */

import { createHmac, timingSafeEqual } from 'node:crypto';
import { ConfigError } from '../core/errors.js';
import { embeddableAddress } from './embed.js';

export const BATV_LIMITS = {
  secretOctets: 64,
  addressOctets: 512,
  /** Exim's fixed lifetime: the stamp is the signing day plus this many days. */
  lifetimeDays: 7,
} as const;

const DAY_MS = 86_400_000;
const PRVS = /^prvs=([0-9])([0-9]{3})([0-9a-f]{6})=(.+)@(.+)$/i;

export interface BatvKey {
  /** 0-9; carried in the address so the checker knows which key signed. */
  keynum: number;
  secret: string;
}

/** A key file's `KEYNUM SECRET` line; the secret starts at a character that is not white space: "1  " gave the secret " ". */
const KEY_FILE_LINE = /^\s*(\d)\s+(\S.*)$/;

/**
 * The lines of a text that are neither blank nor (unless told otherwise) comments, with their
 * line numbers in the text (from 1).
 */
export function contentLines(text: string, options: { comments?: boolean } = {}): Array<{ line: string; number: number }> {
  const comments = options.comments ?? true;
  return text
    .split(/\r?\n/)
    .map((line, index) => ({ line: line.replace(/\r$/, ''), number: index + 1 }))
    .filter(({ line }) => line.trim() !== '' && !(comments && line.trimStart().startsWith('#')));
}

/**
 * A key file's lines (see KEY FILES), each with the key it holds, undefined for a line that is not
 * `KEYNUM SECRET`.
 */
export function batvKeyFileLines(text: string): Array<{ number: number; key: BatvKey | undefined }> {
  return contentLines(text).map(({ line, number }) => {
    const match = KEY_FILE_LINE.exec(line);
    return { number, key: match ? { keynum: Number(match[1]), secret: match[2]! } : undefined };
  });
}

/** The warning for a secret file that holds a `--batv-key-file` line, named by `what`. */
export function keyFileLineWarning(what: string, keynum: number): string {
  return `${what} holds "${keynum} ..." as a --batv-key-file line does: the whole line, number included, is the secret; if the rewrite service signs with this file, write the secret alone`;
}

/**
 * The secret of a file that holds one key alone (`batv sign|check --secret-file`, the policy
 * stage's secretFile): the text without the line ends an editor leaves at its end (a loop, not
 * /(\r?\n)+$/, which tries every run of line ends: 64 KiB of them took 4 s). An empty key lets
 * anyone sign; a second line (a comment, or `KEYNUM SECRET` lines) would be part of the key and
 * match no tag the signer made: refused, saying so when every line is a `--batv-key-file` line.
 * keyFileLine is the secret read as such a line, when it reads as one.
 */
export function oneSecretFileText(text: string): { ok: true; secret: string; keyFileLine?: BatvKey } | { ok: false; problem: string } {
  let end = text.length;
  while (end > 0 && (text[end - 1] === '\n' || text[end - 1] === '\r')) end--;
  const secret = text.slice(0, end);
  if (secret === '') return { ok: false, problem: 'no secret in the file' };
  if (/[\r\n]/.test(secret)) {
    const lines = batvKeyFileLines(secret);
    const keyFile = lines.length > 0 && lines.every((line) => line.key !== undefined);
    return { ok: false, problem: `more than one line, expected the secret alone${keyFile ? ' (KEYNUM SECRET lines are a --batv-key-file: a secret file holds one secret alone)' : ''}` };
  }
  // One `KEYNUM SECRET` line is a secret too (a space is legal in one), but likely a key file's:
  // the caller warns when its number is the key's, as the whole line would then be the secret.
  const keyFileLine = batvKeyFileLines(secret)[0]?.key;
  return { ok: true, secret, ...(keyFileLine ? { keyFileLine } : {}) };
}

export type BatvWindow = 'exim' | 'bounded';

export interface BatvOptions {
  /** Newest first: keys[0] signs, all verify. */
  keys: BatvKey[];
  /** Default 'exim'. */
  window?: BatvWindow;
}

/** The parts of a prvs address, as written in it. */
export interface PrvsParts {
  keynum: number;
  /** The three-digit expiry stamp. */
  stamp: number;
  hash: string;
  /** The unsigned address `local@domain`, exactly as it was signed. */
  original: string;
  local: string;
  domain: string;
}

export type BatvSignResult =
  | { ok: true; address: string }
  | { ok: false; reason: 'unqualified' | 'malformed' | 'too-long' | 'already-signed'; message: string };

export type BatvCheckResult =
  | { status: 'valid'; original: string; keynum: number }
  | { status: 'not-prvs' }
  | { status: 'unknown-key' | 'bad-signature' | 'expired'; original: string; keynum: number };

/** The last three digits of the day number `offsetDays` after now, as Exim's prvs_daystamp. */
export function prvsDayStamp(nowMs: number, offsetDays = 0): number {
  return Math.floor(nowMs / DAY_MS + offsetDays) % 1000;
}

function hmacHex(secret: string, keynum: number, stamp: string, address: string): string {
  return createHmac('sha1', secret).update(`${keynum}${stamp}${address}`).digest('hex').slice(0, 6);
}

const threeDigits = (stamp: number) => String(stamp).padStart(3, '0');

/**
 * ${prvs{address}{secret}{keynum}}: the signed address, or why it cannot be signed. The address
 * must have something on both sides of its last `@` and nothing embeddableAddress refuses; an
 * address that is already signed is signed again, as Exim does (Batv.sign refuses that).
 */
export function prvsSign(address: string, key: BatvKey, nowMs: number): BatvSignResult {
  if (Buffer.byteLength(address) > BATV_LIMITS.addressOctets) {
    return { ok: false, reason: 'too-long', message: `address longer than ${BATV_LIMITS.addressOctets} octets` };
  }
  const at = address.lastIndexOf('@');
  if (at <= 0 || at === address.length - 1) {
    return { ok: false, reason: 'unqualified', message: 'prvs needs a qualified address (local@domain)' };
  }
  const parts = embeddableAddress(address);
  if (!parts.ok) return { ok: false, reason: 'malformed', message: `cannot sign an address with ${parts.problem}` };
  const stamp = threeDigits(prvsDayStamp(nowMs, BATV_LIMITS.lifetimeDays));
  const signed = `prvs=${key.keynum}${stamp}${hmacHex(key.secret, key.keynum, stamp, address)}=${address}`;
  if (Buffer.byteLength(signed) > BATV_LIMITS.addressOctets) {
    return { ok: false, reason: 'too-long', message: `the signed address would be longer than ${BATV_LIMITS.addressOctets} octets` };
  }
  return { ok: true, address: signed };
}

/** Splits a prvs address as Exim's prvscheck pattern does; undefined when it is not one. */
export function parsePrvs(address: string): PrvsParts | undefined {
  if (Buffer.byteLength(address) > BATV_LIMITS.addressOctets) return undefined;
  const match = PRVS.exec(address);
  if (!match) return undefined;
  const [, keynum = '', stamp = '', hash = '', local = '', domain = ''] = match;
  return { keynum: Number(keynum), stamp: Number(stamp), hash, original: `${local}@${domain}`, local, domain };
}

/** Whether a stamp is still valid on the day of `nowMs`. */
export function prvsStampValid(stamp: number, nowMs: number, window: BatvWindow = 'exim'): boolean {
  const today = prvsDayStamp(nowMs);
  if (window === 'bounded') return (stamp - today + 1000) % 1000 <= BATV_LIMITS.lifetimeDays + 1;
  // Exim: a stamp that wrapped past 999 counts as later than today's 993..999.
  const inow = stamp < BATV_LIMITS.lifetimeDays && today >= 1000 - BATV_LIMITS.lifetimeDays ? 0 : today;
  return stamp >= inow;
}

/**
 * Why a secret is too long for a keyring ("longer than 64 bytes (Exim refuses it)"), or
 * undefined. The one check of the limit: the keyring, `batv --secret` and `batv --secret-file`
 * each say it after the key, flag or file the secret came from.
 */
export function batvSecretTooLong(secret: string): string | undefined {
  return Buffer.byteLength(secret) > BATV_LIMITS.secretOctets ? `longer than ${BATV_LIMITS.secretOctets} bytes (Exim refuses it)` : undefined;
}

function validateKeys(keys: BatvKey[]): Map<number, BatvKey> {
  if (keys.length === 0) throw new ConfigError('batv: at least one key is needed');
  const byNumber = new Map<number, BatvKey>();
  for (const key of keys) {
    if (!Number.isInteger(key.keynum) || key.keynum < 0 || key.keynum > 9) {
      throw new ConfigError(`batv: key number got ${JSON.stringify(key.keynum)}, expected one digit 0-9`);
    }
    if (byNumber.has(key.keynum)) throw new ConfigError(`batv: key number ${key.keynum} is given twice`);
    // HMAC with an empty key is computable by anyone: every bounce's tag could be forged.
    if (key.secret === '') throw new ConfigError(`batv: the secret of key ${key.keynum} is empty`);
    const tooLong = batvSecretTooLong(key.secret);
    if (tooLong !== undefined) throw new ConfigError(`batv: the secret of key ${key.keynum} is ${tooLong}`);
    byNumber.set(key.keynum, key);
  }
  return byNumber;
}

export class Batv {
  private readonly keys: Map<number, BatvKey>;
  private readonly signing: BatvKey;
  private readonly window: BatvWindow;

  constructor(options: BatvOptions) {
    this.keys = validateKeys(options.keys);
    this.signing = options.keys[0]!;
    this.window = options.window ?? 'exim';
  }

  /** Signs with the newest key; an address that already carries a prvs tag is left alone. */
  sign(address: string, nowMs: number): BatvSignResult {
    if (parsePrvs(address)) return { ok: false, reason: 'already-signed', message: 'the address already carries a prvs tag' };
    return prvsSign(address, this.signing, nowMs);
  }

  check(address: string, nowMs: number): BatvCheckResult {
    const parts = parsePrvs(address);
    if (!parts) return { status: 'not-prvs' };
    const { original, keynum } = parts;
    const key = this.keys.get(keynum);
    if (!key) return { status: 'unknown-key', original, keynum };
    const expected = Buffer.from(hmacHex(key.secret, keynum, threeDigits(parts.stamp), original));
    const received = Buffer.from(parts.hash);
    // Exim compares with strcmp: an upper-cased hash is not the hash it made.
    if (received.length !== expected.length || !timingSafeEqual(received, expected)) return { status: 'bad-signature', original, keynum };
    if (!prvsStampValid(parts.stamp, nowMs, this.window)) return { status: 'expired', original, keynum };
    return { status: 'valid', original, keynum };
  }
}
