/**
 * NAME
 *   rewrite/srs - Sender Rewriting Scheme (SRS0/SRS1) as libsrs2 and postsrsd implement it
 *
 * DESCRIPTION
 *   A forwarder that relays mail keeps SPF intact by sending it with a reverse path in its own
 *   domain that encodes the original one; bounces to that address are reversed and relayed.
 *
 *     SRS0 S HASH = TT = HOST = USER @ srs-domain       (original sender USER@HOST)
 *     SRS1 S HASH = FIRSTHOP = S0 REST @ srs-domain     (re-forwarding SRS0 S0 REST @ FIRSTHOP)
 *
 *   S is the configured first separator (=, + or -); every later separator is '='. HASH is the
 *   base64 HMAC-SHA1 of the lower-cased fields concatenated (SRS0: TT HOST USER; SRS1: FIRSTHOP
 *   S0REST), cut to hashLength characters. TT is the day number modulo 1024 in two base32
 *   characters. Forwarding an SRS0 or SRS1 address of another forwarder makes an SRS1 that keeps
 *   the first hop (the old hash is someone else's and is not checked); reversing an SRS1 gives the
 *   SRS0 back, which the first hop reverses in turn.
 *
 *   Behaviour that decides interoperability, shared with libsrs2 1.0.14 and postsrsd:
 *   - the sender is split at its '@' (libsrs2 takes the first; two are refused, below); the tag
 *     SRS0/SRS1 is matched in any case;
 *   - reverse ignores the domain part (the caller decides which domains are SRS domains);
 *   - timestamps decode in any case; valid when 0 <= (today - TT) mod 1024 <= maxAgeDays (21), so a
 *     stamp from the future counts as ~1000 days old and is refused; the timestamp is checked
 *     before the hash;
 *   - hashes compare case-insensitively, '+' equal to '-' and '/' to '_' (postsrsd >= 2.2.6
 *     writes base64url, 1.x and Mail::SRS standard base64, so both are accepted), over
 *     min(received length, hashLength) characters after requiring hashMin; every secret is
 *     tried, the first one signs; the output alphabet is a setting ('base64' by default, which
 *     every peer accepts);
 *   - senders in a local domain (exact, or '.suffix' for every subdomain; the SRS domain is always
 *     local) are not rewritten, and neither is an address that already reverses under our secrets
 *     (postsrsd 1.x "Already rewritten"); alwaysRewrite turns the local-domain rule off. A sender's
 *     domain is matched in A-labels and in U-labels, however the local domains are written, as
 *     batv-sign matches its domains (postsrsd compares them as written: its local domain
 *     bücher.example leaves xn--bcher-kva.example senders rewritten as foreign).
 *
 *   Forward refuses ('malformed') a sender it cannot rewrite into an address that reverses to it,
 *   where libsrs2 and postsrsd write one anyway: what embeddableAddress (rewrite/embed) refuses
 *   (a second '@' or a quoted local part: libsrs2 splits at the first '@', reverse reads the
 *   local part up to the first '@'; an empty local part or domain; a control character), and an
 *   '=' in the domain (reverse ends the host at the next '=').
 *
 * LIMITS
 *   Addresses at most 512 octets (postsrsd 2.x answers "Too big." beyond that); a sender whose
 *   SRS address would be longer is not rewritten ('result-too-long'), since reverse would refuse
 *   that address.
 *
 * ERRORS
 *   Outcomes are values with postsrsd's message texts. Unusable options (no secret, an SRS
 *   domain that is no domain name, a bad separator, hash lengths out of range) throw ConfigError.
 */

import { createHmac } from 'node:crypto';
import { asciiLower, normaliseDomain } from '../address/index.js';
import { ConfigError } from '../core/errors.js';
import { idnDomainMatcher, type DomainMatcher } from './domains.js';
import { embeddableAddress } from './embed.js';

export const SRS_LIMITS = {
  addressOctets: 512,
  /** Base64 of a 20-byte SHA-1 digest has 27 significant characters. */
  maxHashLength: 27,
} as const;

const DAY_MS = 86_400_000;
const TIME_SLOTS = 1024;
const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

export type SrsSeparator = '=' | '+' | '-';
export type SrsAlphabet = 'base64' | 'base64url';

export interface SrsOptions {
  /** The forwarder's SRS domain, the domain of every rewritten address. */
  domain: string;
  /** The first signs, all verify. */
  secrets: string[];
  separator?: SrsSeparator;
  /** Characters of hash written (default 4). */
  hashLength?: number;
  /** Fewest hash characters accepted on reverse (default hashLength). */
  hashMin?: number;
  /** Days an SRS address stays reversible (default 21). */
  maxAgeDays?: number;
  /** Alphabet of written hashes (default 'base64'; postsrsd >= 2.2.6 writes 'base64url'). */
  alphabet?: SrsAlphabet;
  /** Domains whose senders are not rewritten: 'example.com' exactly, '.example.com' its subdomains. */
  localDomains?: string[];
  /** Rewrite senders of local domains too (postsrsd always-rewrite). */
  alwaysRewrite?: boolean;
}

export type SrsForwardFailure = 'no-domain' | 'local-domain' | 'already-rewritten' | 'too-long' | 'malformed' | 'result-too-long';
export type SrsReverseFailure = 'not-srs' | 'malformed' | 'bad-timestamp' | 'expired' | 'future' | 'hash-too-short' | 'bad-hash' | 'too-long';

export type SrsForwardResult =
  | { ok: true; address: string; scheme: 'SRS0' | 'SRS1' }
  | { ok: false; reason: SrsForwardFailure; message: string };

export type SrsReverseResult =
  | { ok: true; address: string; scheme: 'SRS0' | 'SRS1' }
  | { ok: false; reason: SrsReverseFailure; message: string };

/** Whether the local part starts with an SRS tag: SRS0 or SRS1 (any case) and a separator. */
export function isSrsAddress(address: string): boolean {
  return srsScheme(address) !== undefined;
}

function srsScheme(localPart: string): 'SRS0' | 'SRS1' | undefined {
  if (localPart.length < 5) return undefined;
  const separator = localPart.charCodeAt(4);
  if (separator !== 0x3d && separator !== 0x2b && separator !== 0x2d) return undefined;
  if ((localPart.charCodeAt(0) | 0x20) !== 0x73 || (localPart.charCodeAt(1) | 0x20) !== 0x72 || (localPart.charCodeAt(2) | 0x20) !== 0x73) return undefined;
  const digit = localPart.charCodeAt(3);
  return digit === 0x30 ? 'SRS0' : digit === 0x31 ? 'SRS1' : undefined;
}

/** The two-character day stamp of `nowMs`. */
export function srsTimestamp(nowMs: number): string {
  const day = Math.floor(nowMs / DAY_MS) % TIME_SLOTS;
  return BASE32[day >> 5]! + BASE32[day & 31]!;
}

/** Maps a hash character to its base64url equivalent, upper-cased, so equivalent hashes compare equal. */
function foldHashChar(c: number): number {
  if (c === 0x2b) return 0x2d; // + -> -
  if (c === 0x2f) return 0x5f; // / -> _
  if (c >= 0x61 && c <= 0x7a) return c - 32;
  return c;
}

/**
 * The domain SRS writes, from a domain or postsrsd's `local@domain` form, or why it cannot be
 * one: every rewritten sender is written with it, and '.example.com' (postsrsd's subdomain
 * form), 'example.com.' (the root's dot) or a stray space would make addresses no bounce can reach.
 */
export function srsDomain(written: string): { ok: true; domain: string } | { ok: false; problem: string } {
  const domain = written.slice(written.lastIndexOf('@') + 1);
  if (domain === '') return { ok: false, problem: 'the SRS domain is empty' };
  // The root's dot would be written into every sender (no RFC 5321 domain ends in one), and the
  // SRS domain, local as written, no longer matched its own senders, which were rewritten.
  if (domain.endsWith('.')) return { ok: false, problem: `the SRS domain ${JSON.stringify(domain)} ends in a dot: write it without the root's dot` };
  const checked = normaliseDomain(domain);
  return checked.ok ? { ok: true, domain } : { ok: false, problem: `the SRS domain ${JSON.stringify(domain)} is not a domain name: ${checked.error.message}` };
}

export class Srs {
  readonly domain: string;
  /** One HMAC per secret, the first signs. */
  private readonly macs: Array<(text: string) => Buffer>;
  private readonly separator: SrsSeparator;
  private readonly hashLength: number;
  private readonly hashMin: number;
  private readonly maxAgeDays: number;
  private readonly encoding: 'base64' | 'base64url';
  private readonly isLocal: DomainMatcher;
  private readonly alwaysRewrite: boolean;

  constructor(options: SrsOptions) {
    const domain = srsDomain(options.domain);
    if (!domain.ok) throw new ConfigError(`srs: ${domain.problem}`);
    this.domain = domain.domain;
    if (options.secrets.length === 0 || options.secrets.some((s) => s === '')) throw new ConfigError('srs: at least one non-empty secret is needed');
    this.macs = options.secrets.map((secret) => (text: string) => createHmac('sha1', secret).update(text).digest());
    this.separator = options.separator ?? '=';
    if (!['=', '+', '-'].includes(this.separator)) throw new ConfigError(`srs: separator got ${JSON.stringify(this.separator)}, expected one of = + -`);
    this.hashLength = options.hashLength ?? 4;
    this.hashMin = options.hashMin ?? this.hashLength;
    if (!Number.isInteger(this.hashLength) || this.hashLength < 1 || this.hashLength > SRS_LIMITS.maxHashLength) {
      throw new ConfigError(`srs: hashLength got ${this.hashLength}, expected 1-${SRS_LIMITS.maxHashLength}`);
    }
    if (!Number.isInteger(this.hashMin) || this.hashMin < 1 || this.hashMin > this.hashLength) {
      throw new ConfigError(`srs: hashMin got ${this.hashMin}, expected 1-${this.hashLength}`);
    }
    this.maxAgeDays = options.maxAgeDays ?? 21;
    if (!Number.isInteger(this.maxAgeDays) || this.maxAgeDays < 0 || this.maxAgeDays >= TIME_SLOTS / 2) {
      throw new ConfigError(`srs: maxAgeDays got ${this.maxAgeDays}, expected 0-${TIME_SLOTS / 2 - 1}`);
    }
    this.encoding = options.alphabet ?? 'base64';
    this.isLocal = idnDomainMatcher([this.domain, ...(options.localDomains ?? [])]);
    this.alwaysRewrite = options.alwaysRewrite === true;
  }

  private hash(mac: (text: string) => Buffer, fields: string): string {
    return mac(asciiLower(fields)).toString(this.encoding).slice(0, this.hashLength);
  }

  /** Constant time over the compared length, whichever secret matches. */
  private hashMatches(received: string, fields: string): boolean {
    const length = Math.min(received.length, this.hashLength);
    let matched = false;
    for (const mac of this.macs) {
      const expected = this.hash(mac, fields);
      let diff = 0;
      for (let i = 0; i < length; i++) diff |= foldHashChar(received.charCodeAt(i)) ^ foldHashChar(expected.charCodeAt(i));
      matched = matched || diff === 0;
    }
    return matched;
  }

  forward(sender: string, nowMs: number): SrsForwardResult {
    if (Buffer.byteLength(sender) > SRS_LIMITS.addressOctets) return { ok: false, reason: 'too-long', message: 'Too big.' };
    if (!sender.includes('@')) return { ok: false, reason: 'no-domain', message: 'No domain.' };
    const parts = embeddableAddress(sender, { domainInLocalPart: true });
    if (!parts.ok) return { ok: false, reason: 'malformed', message: `Cannot rewrite an address with ${parts.problem}.` };
    const { local: user, domain: host } = parts;
    if (host.includes('=')) return { ok: false, reason: 'malformed', message: "Cannot rewrite an address with '=' in its domain (reverse would end the domain there)." };
    if (!this.alwaysRewrite && this.isLocal(host)) return { ok: false, reason: 'local-domain', message: 'Need not rewrite local domain.' };
    const scheme = srsScheme(user);
    if (scheme !== undefined && this.reverse(sender, nowMs).ok) return { ok: false, reason: 'already-rewritten', message: 'Already rewritten' };
    const s = this.separator;
    // Reverse refuses an address over the limit, so forward does not write one.
    const made = (kind: 'SRS0' | 'SRS1', address: string): SrsForwardResult =>
      Buffer.byteLength(address) > SRS_LIMITS.addressOctets ? { ok: false, reason: 'result-too-long', message: 'Rewritten address too big.' } : { ok: true, scheme: kind, address };
    if (scheme === 'SRS1') {
      // SRS1 S OLDHASH = FIRSTHOP = REST: keep the first hop, sign it afresh.
      const hashEnd = user.indexOf('=', 5);
      const hostEnd = hashEnd < 0 ? -1 : user.indexOf('=', hashEnd + 1);
      if (hostEnd < 0 || hostEnd === hashEnd + 1 || hostEnd === user.length - 1) return { ok: false, reason: 'malformed', message: 'No host or user in SRS1 address.' };
      const firstHop = user.slice(hashEnd + 1, hostEnd);
      const rest = user.slice(hostEnd + 1);
      return made('SRS1', `SRS1${s}${this.hash(this.macs[0]!, firstHop + rest)}=${firstHop}=${rest}@${this.domain}`);
    }
    if (scheme === 'SRS0') {
      const rest = user.slice(4);
      return made('SRS1', `SRS1${s}${this.hash(this.macs[0]!, host + rest)}=${host}=${rest}@${this.domain}`);
    }
    const stamp = srsTimestamp(nowMs);
    return made('SRS0', `SRS0${s}${this.hash(this.macs[0]!, stamp + host + user)}=${stamp}=${host}=${user}@${this.domain}`);
  }

  reverse(address: string, nowMs: number): SrsReverseResult {
    if (Buffer.byteLength(address) > SRS_LIMITS.addressOctets) return { ok: false, reason: 'too-long', message: 'Too big.' };
    const scheme = srsScheme(address);
    if (scheme === undefined) return { ok: false, reason: 'not-srs', message: 'Not an SRS address.' };
    const at = address.indexOf('@');
    const local = at < 0 ? address : address.slice(0, at);
    const fields = local.slice(5);
    if (fields === '') return { ok: false, reason: 'malformed', message: `No hash in ${scheme} address.` };
    const hashEnd = fields.indexOf('=');
    if (scheme === 'SRS1') {
      const hostEnd = hashEnd < 0 ? -1 : fields.indexOf('=', hashEnd + 1);
      if (hostEnd < 0 || hostEnd === hashEnd + 1) return { ok: false, reason: 'malformed', message: 'No host in SRS1 address.' };
      if (hostEnd === fields.length - 1) return { ok: false, reason: 'malformed', message: 'No user in SRS1 address.' };
      const hash = fields.slice(0, hashEnd);
      const host = fields.slice(hashEnd + 1, hostEnd);
      const user = fields.slice(hostEnd + 1);
      const bad = this.checkHash(hash, host + user);
      return bad ?? { ok: true, scheme, address: `SRS0${user}@${host}` };
    }
    const stampEnd = hashEnd < 0 ? -1 : fields.indexOf('=', hashEnd + 1);
    const hostEnd = stampEnd < 0 ? -1 : fields.indexOf('=', stampEnd + 1);
    if (hashEnd < 0) return { ok: false, reason: 'malformed', message: 'No timestamp in SRS0 address.' };
    if (hostEnd < 0 || hostEnd === stampEnd + 1) return { ok: false, reason: 'malformed', message: 'No host in SRS0 address.' };
    if (hostEnd === fields.length - 1) return { ok: false, reason: 'malformed', message: 'No user in SRS0 address.' };
    const hash = fields.slice(0, hashEnd);
    const stamp = fields.slice(hashEnd + 1, stampEnd);
    const host = fields.slice(stampEnd + 1, hostEnd);
    const user = fields.slice(hostEnd + 1);
    const stale = this.checkTimestamp(stamp, nowMs);
    if (stale) return stale;
    const bad = this.checkHash(hash, stamp + host + user);
    return bad ?? { ok: true, scheme, address: `${user}@${host}` };
  }

  private checkHash(hash: string, fields: string): SrsReverseResult | undefined {
    if (hash.length < this.hashMin) return { ok: false, reason: 'hash-too-short', message: 'Hash too short in SRS address.' };
    if (!this.hashMatches(hash, fields)) return { ok: false, reason: 'bad-hash', message: 'Hash invalid in SRS address.' };
    return undefined;
  }

  private checkTimestamp(stamp: string, nowMs: number): SrsReverseResult | undefined {
    if (stamp.length !== 2) return { ok: false, reason: 'expired', message: 'Time stamp out of date.' };
    let then = 0;
    for (let i = 0; i < 2; i++) {
      const c = stamp.charCodeAt(i);
      const value = BASE32.indexOf(String.fromCharCode(c >= 0x61 && c <= 0x7a ? c - 32 : c));
      if (value < 0) return { ok: false, reason: 'bad-timestamp', message: 'Bad base32 character in timestamp.' };
      then = then * 32 + value;
    }
    const today = Math.floor(nowMs / DAY_MS) % TIME_SLOTS;
    const age = (today - then + TIME_SLOTS) % TIME_SLOTS;
    if (age <= this.maxAgeDays) return undefined;
    // A stamp a little ahead of today is "from the future"; libsrs2 sees it as ~1000 days old.
    const ahead = TIME_SLOTS - age;
    return ahead <= this.maxAgeDays
      ? { ok: false, reason: 'future', message: 'Time stamp out of date.' }
      : { ok: false, reason: 'expired', message: 'Time stamp out of date.' };
  }
}
