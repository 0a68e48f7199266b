/**
 * NAME
 *   greylist/normalise - the sender as the greylist keys it
 *
 * DESCRIPTION
 *   Many senders put a per-message part into the envelope sender (bounce tracking, signed
 *   bounce addresses). Keyed as sent, every message of theirs would be a new triplet and be
 *   greylisted again. normaliseSender() strips those parts, in this order (BATV also before SRS,
 *   for a forwarder that signs its SRS addresses):
 *     SRS      SRS0=HASH=TT=HOST=USER@forwarder is USER@HOST, the original sender (the hash
 *              and timestamp change daily); SRS1=HASH=FIRSTHOP=<SRS0 rest>@forwarder is the
 *              original sender of the first hop. The hash is not checked: it is the
 *              forwarder's, and the key only has to be stable.
 *     BATV     prvs=TAG=LOCAL@ is LOCAL@ (the tag changes daily). postgrey also meets the
 *              swapped prvs=LOCAL=TAG@ form and tells them apart as it does: the part that
 *              starts with ten [0-9a-z] characters is the tag, and the standard order wins a
 *              tie; but a part of the tag's exact shape (four digits, six hex digits, either
 *              case) is the tag wherever it stands, and after one the rest is LOCAL even when it
 *              holds '=' (prvs=TAG=list-bounces+bob=example.org@): postgrey keys those by the
 *              tag, which changes daily. msprvs1= (Microsoft) and btv1== (Barracuda) are the
 *              same idea.
 *     +ext     everything from the first `+` of the local part (postgrey); this also removes
 *              Postfix-style VERP (LIST+USER=DOMAIN@).
 *     VERP     qmail-style LIST-return-...-USER=DOMAIN@ loses the encoded recipient
 *              (-USER=DOMAIN), when `verp` is on.
 *     numbers  every run of digits that stands alone between word boundaries becomes `#`
 *              (postgrey), so list-123@ and list-124@ are one sender. Letters of every script
 *              are word characters and digits of every script are digits (RFC 6531 local parts):
 *              postgrey sees octets, so for it ö1@ lost its 1 and news-٢٠٢٤@ kept its number.
 *   The result is keyed as address/key mailboxKey() says: A-Z lower-cased, as postgrey lower-cases its whole
 *   key (Perl's lc on octets changes nothing else), and the domain as A-labels, so that a sender
 *   written with a U-label and with its A-label is one sender. The null sender stays ''.
 *   With `verp` off, the result equals postgrey 1.37's do_sender_substitutions() for every
 *   ASCII sender that is not SRS, msprvs1/btv1, an upper-case PRVS= tag, or a prvs= address of which
 *   postgrey keeps the tag (postgrey leaves those as they are, or keys them by the tag, so each
 *   message, or each day, of such a sender is a new triplet there). With `verp` on, an
 *   ordinary sender shaped like qmail VERP (alerts-noreply=x.io@) loses that part too.
 *
 * LIMITS
 *   Every step is one linear pass over the whole input (at most a policy line, 4 kB), which is
 *   never cut: senders that differ only past a cut were one triplet, and a cut through the local
 *   part lost the domain. The greylist bounds the key it makes of an over-long result
 *   (address/key keyPart). Never throws.
 */

import { asciiLower, mailboxKey } from '../../address/index.js';

const BATV_TAG = /^[0-9a-z]{10}/;
/** BATV's tag-val exactly (K DDD SSSSSS: key number, day, six hex digits of the hash), either case. */
const BATV_TAG_VAL = /^[0-9]{4}[0-9a-f]{6}$/i;
/** A run of decimal digits with no letter, mark, digit or '_' either side: \b\d+\b beyond ASCII. */
const STANDALONE_NUMBER = /(?<![\p{L}\p{M}\p{N}_])\p{Nd}+(?![\p{L}\p{M}\p{N}_])/gu;
const QMAIL_VERP = /^(.+?)-[^-=@]+=[a-z0-9-]+(?:\.[a-z0-9-]+)+$/;

export interface NormaliseOptions {
  /** Strip qmail-style VERP (-USER=DOMAIN) from the local part (default true). */
  verp?: boolean;
}

/** The original sender of an SRS0 or SRS1 address, or undefined when it is not one. */
export function srsOriginal(localPart: string): string | undefined {
  if (localPart.length < 6) return undefined;
  const tag = localPart.slice(0, 4).toLowerCase();
  const separator = localPart[4];
  if (separator !== '=' && separator !== '+' && separator !== '-') return undefined;
  let rest = localPart.slice(5);
  if (tag === 'srs1') {
    // HASH=FIRSTHOP=<S0 separator><SRS0 rest>
    const match = /^[^=]+=[^=]+=[=+-](.+)$/.exec(rest);
    if (!match?.[1]) return undefined;
    rest = match[1];
  } else if (tag !== 'srs0') {
    return undefined;
  }
  // HASH=TT=HOST=USER, where USER may itself contain '='.
  const fields = /^[^=]+=[^=]+=([^=]+)=(.+)$/.exec(rest);
  if (!fields?.[1] || !fields[2]) return undefined;
  return `${fields[2]}@${fields[1]}`;
}

function withoutBatv(local: string): string {
  const lower = local.toLowerCase();
  if (lower.startsWith('prvs=')) {
    const parts = local.split('=');
    // Perl's split, which postgrey uses, drops trailing empty fields.
    while (parts.length > 0 && parts.at(-1) === '') parts.pop();
    // A local part with '=' of its own (Mailman's list-bounces+bob=example.org) after a tag.
    if (parts.length > 3 && BATV_TAG_VAL.test(parts[1] ?? '')) return parts.slice(2).join('=');
    if (parts.length !== 3) return local;
    const [, first = '', second = ''] = parts;
    // A part of the tag's exact shape is the tag even where postgrey's rule below keeps it (an
    // upper-case tag, a swapped form with a long local part): the tag changes every day.
    if (BATV_TAG_VAL.test(first) !== BATV_TAG_VAL.test(second)) return BATV_TAG_VAL.test(first) ? second : first;
    if (BATV_TAG.test(first) && !BATV_TAG.test(second)) return second;
    if (BATV_TAG.test(second) && !BATV_TAG.test(first)) return first;
    return second;
  }
  // msprvs1=TAG=LOCAL, btv1==TAG==LOCAL
  const microsoft = /^msprvs1=[^=]+=(.+)$/i.exec(local);
  if (microsoft?.[1]) return microsoft[1];
  const barracuda = /^btv1==[^=]+==(.+)$/i.exec(local);
  if (barracuda?.[1]) return barracuda[1];
  return local;
}

export function normaliseSender(sender: string, options: NormaliseOptions = {}): string {
  let at = sender.lastIndexOf('@');
  if (at < 0) return asciiLower(sender);
  // A forwarder that signs its bounces signs its SRS addresses too (prvs=TAG=SRS0=...@).
  let local = withoutBatv(sender.slice(0, at));
  let domain = sender.slice(at + 1);
  const original = srsOriginal(local);
  if (original !== undefined) {
    at = original.lastIndexOf('@');
    local = withoutBatv(original.slice(0, at));
    domain = original.slice(at + 1);
  }
  const plus = local.indexOf('+');
  if (plus >= 0) local = local.slice(0, plus);
  if (options.verp !== false) local = QMAIL_VERP.exec(asciiLower(local))?.[1] ?? local;
  local = local.replace(STANDALONE_NUMBER, '#');
  return mailboxKey(`${local}@${domain}`);
}

/** The domain of a normalised sender ('' for the null sender or a sender without one). */
export function senderDomain(normalised: string): string {
  const at = normalised.lastIndexOf('@');
  return at < 0 ? '' : normalised.slice(at + 1);
}
