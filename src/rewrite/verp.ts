/**
 * NAME
 *   rewrite/verp - Variable Envelope Return Paths, as qmail and Postfix write them
 *
 * DESCRIPTION
 *   Each recipient of a list message gets a copy whose reverse path names it, so a bounce's
 *   envelope recipient tells which address failed without parsing the bounce:
 *
 *     encode('list-bounces@list.example', 'user@example.org') = list-bounces+user=example.org@list.example
 *
 *   Encoding is Postfix's verp_sender(): the sender is split at its '@' into prefix and origin,
 *   the recipient into local part and domain; the result is prefix d1 local d2 domain @ origin.
 *   Nothing is escaped (Postfix and qmail do not), so decoding takes the recipient domain after
 *   the last d2 (domains cannot hold it) and the local part is everything between. The
 *   delimiters default to Postfix's "+=" ("-=" for qmail/ezmlm); Postfix allows only - = + as
 *   delimiters (verp_delimiter_filter), and so does this module; a '-' as the second delimiter
 *   cannot be decoded reliably (domains contain '-'), so keep '=' there.
 *
 *   Encoding refuses what it cannot write as a valid address that decodes to the recipient
 *   (Postfix writes them all, and nothing reads them back): a sender or recipient that
 *   embeddableAddress (rewrite/embed) refuses, among them an unqualified one (verp_sender()
 *   makes `owner+user` of `owner` and `user`), a sender that is no RFC 5321 mailbox
 *   (`<owner@host>`, a domain with the root's dot), and a recipient whose domain holds the
 *   second delimiter. Decoding answers 'bad-sender' for a sender that encoding refuses
 *   (verpSenderProblem): it never made an address to read.
 *
 * RFC
 *   RFC 5321 §4.1.2 (Local-part: a Dot-string, or a Quoted-string as a whole).
 *
 * LIMITS
 *   Addresses at most 512 octets on both sides.
 *
 * ERRORS
 *   Outcomes are values. Unusable delimiters throw ConfigError.
 */

import { asciiLower, parseMailbox } from '../address/index.js';
import { ConfigError } from '../core/errors.js';
import { embeddableAddress, type EmbeddableAddress } from './embed.js';

export const VERP_LIMITS = { addressOctets: 512 } as const;

export interface VerpDelimiters {
  /** Between the sender's local part and the recipient's local part. */
  local: string;
  /** Between the recipient's local part and its domain. */
  domain: string;
}

export const POSTFIX_VERP_DELIMITERS: VerpDelimiters = { local: '+', domain: '=' };
export const QMAIL_VERP_DELIMITERS: VerpDelimiters = { local: '-', domain: '=' };

export type VerpEncodeResult = { ok: true; address: string } | { ok: false; reason: 'bad-sender' | 'bad-recipient' | 'too-long'; message: string };

export type VerpDecodeResult =
  | { ok: true; recipient: string; sender: string }
  | { ok: false; reason: 'bad-sender' | 'not-verp' | 'too-long'; message: string };

/** Reads "+=" style text (Postfix XVERP=+=, -V+=) into delimiters; throws ConfigError when unusable. */
export function parseVerpDelimiters(text: string): VerpDelimiters {
  if (text.length !== 2 || [...text].some((c) => !'-=+'.includes(c))) {
    throw new ConfigError(`verp: delimiters got ${JSON.stringify(text)}, expected two of - = + (e.g. "+=")`);
  }
  return { local: text[0]!, domain: text[1]! };
}

function splitLast(address: string): [string, string] {
  const at = address.lastIndexOf('@');
  return at < 0 ? [address, ''] : [address.slice(0, at), address.slice(at + 1)];
}

const senderProblem = (problem: string) => `the sender is an address with ${problem}`;

/** The parts of a sender VERP addresses can be made of, or why none can (see DESCRIPTION). */
function senderParts(sender: string): EmbeddableAddress {
  const from = embeddableAddress(sender);
  if (!from.ok) return { ok: false, problem: senderProblem(from.problem) };
  // `<list-bounces@lists.example>` as the mail log writes it, or the root's dot: no envelope
  // recipient ever decoded against it, and every bounce of the list was "nothing recorded".
  const parsed = parseMailbox(sender, { sizeLimits: false });
  return parsed.ok ? from : { ok: false, problem: `the sender is not an address: ${parsed.error.message}` };
}

/**
 * Why no VERP address can be made of a sender (see DESCRIPTION), undefined when one can: what
 * verpEncode and verpDecode answer 'bad-sender' for, and commands refuse in a flag at once.
 */
export function verpSenderProblem(sender: string): string | undefined {
  const from = senderParts(sender);
  return from.ok ? undefined : from.problem;
}

export function verpEncode(sender: string, recipient: string, delimiters: VerpDelimiters = POSTFIX_VERP_DELIMITERS): VerpEncodeResult {
  const from = senderParts(sender);
  if (!from.ok) return { ok: false, reason: 'bad-sender', message: from.problem };
  const to = embeddableAddress(recipient, { domainInLocalPart: true });
  if (!to.ok) return { ok: false, reason: 'bad-recipient', message: `the recipient is an address with ${to.problem}` };
  // Decoding takes the domain after the last domain delimiter.
  if (to.domain.includes(delimiters.domain)) {
    return { ok: false, reason: 'bad-recipient', message: `the recipient's domain holds the delimiter "${delimiters.domain}", so the address would not decode` };
  }
  const address = `${from.local}${delimiters.local}${to.local}${delimiters.domain}${to.domain}@${from.domain}`;
  if (Buffer.byteLength(address) > VERP_LIMITS.addressOctets) return { ok: false, reason: 'too-long', message: `VERP address longer than ${VERP_LIMITS.addressOctets} octets` };
  return { ok: true, address };
}

/**
 * The recipient a VERP return path names, given the sender it was made from. The local part
 * prefix and the origin domain compare with A-Z folded (mail systems may re-case them), as
 * address/key folds: Unicode folding matched a Kelvin sign (U+212A) to a configured 'k'.
 */
export function verpDecode(address: string, sender: string, delimiters: VerpDelimiters = POSTFIX_VERP_DELIMITERS): VerpDecodeResult {
  // No address decodes to a recipient of a sender verpEncode refuses: say so rather than "domain is not empty".
  const problem = verpSenderProblem(sender);
  if (problem !== undefined) return { ok: false, reason: 'bad-sender', message: problem };
  if (Buffer.byteLength(address) > VERP_LIMITS.addressOctets) return { ok: false, reason: 'too-long', message: `address longer than ${VERP_LIMITS.addressOctets} octets` };
  const [prefix, origin] = splitLast(sender);
  const [local, domain] = splitLast(address);
  const head = prefix + delimiters.local;
  const notVerp = (message: string): VerpDecodeResult => ({ ok: false, reason: 'not-verp', message });
  if (asciiLower(domain) !== asciiLower(origin)) return notVerp(`domain is not ${origin || 'empty'}`);
  if (asciiLower(local.slice(0, head.length)) !== asciiLower(head)) return notVerp(`local part does not start with ${head}`);
  const encoded = local.slice(head.length);
  // verpEncode never writes one: the recipient it gave back would hold two.
  if (encoded.includes('@')) return notVerp('an "@" in the encoded recipient');
  const split = encoded.lastIndexOf(delimiters.domain);
  if (split <= 0 || split === encoded.length - 1) return notVerp(`no "${delimiters.domain}" between the recipient's local part and domain`);
  return { ok: true, recipient: `${encoded.slice(0, split)}@${encoded.slice(split + 1)}`, sender };
}
