/**
 * NAME
 *   checks/senderid/pra - the Purported Responsible Address of a message (RFC 4407)
 *
 * DESCRIPTION
 *   purportedResponsibleAddress(fields) picks the one mailbox that claims responsibility for
 *   the most recent introduction of the message, from its header fields in top-down order.
 *   splitHeaderFields(text) turns a raw header block into such fields (unfolded); headerBlock(bytes)
 *   is that block of a message as read from a file, decoded as UTF-8 (RFC 6532), its body left
 *   undecoded.
 *
 * RFC
 *   RFC 4407 §2: "non-empty" means containing a non-whitespace character.
 *     1. The first non-empty Resent-Sender, unless a non-empty Resent-From precedes it with a
 *        Received or Return-Path field in between (they belong to different resent blocks):
 *        then step 2. That Resent-From is the first one: steps 1 and 2 take the first
 *        (most recent) resent block, so an older block's own Resent-From does not count.
 *     2. The first non-empty Resent-From.
 *     3. The non-empty Sender fields: one is selected; more than one is ill-formed (6).
 *     4. The non-empty From fields: exactly one is selected; otherwise ill-formed (6).
 *     5. The selected field must hold exactly one valid mailbox; otherwise ill-formed (6).
 *        A group, even of one member or beside a mailbox, is no mailbox: RFC 4407 reads these
 *        fields as RFC 2822 defines them (mailbox, mailbox-list), and RFC 6854, which lets From
 *        and Sender hold a group, does so for messages that name no responsible mailbox. A
 *        mailbox must "contain a domain name": an address literal (`a@[192.0.2.1]`) is none.
 *     6. No PRA: the message is ill-formed.
 *   Mailboxes are parsed by src/address (RFC 5322 §3.4, including obsolete forms), without
 *   RFC 5321's 64-octet local part limit, which binds SMTP and not headers (a mailing list's
 *   VERP Sender is often longer). Field names may be followed by white space before the colon
 *   (RFC 5322 §4.5 obs-sender, obs-from).
 *
 * LIMITS
 *   splitHeaderFields reads the first 1 MiB of a header block (the fields PRA selection
 *   takes come first: the resent blocks are on top), and headerBlock decodes no more than
 *   that of a message; more than 10000 fields is reported as no PRA.
 *
 * ERRORS
 *   Returned as values; nothing here throws.
 */

import { parseAddressList, type Mailbox } from '../../address/index.js';

export interface HeaderField {
  name: string;
  value: string;
}

export type PraField = 'resent-sender' | 'resent-from' | 'sender' | 'from';

export type PraOutcome = { kind: 'pra'; mailbox: Mailbox; field: PraField } | { kind: 'none'; reason: string };

export const PRA_LIMITS = { headerBytes: 1024 * 1024, fields: 10_000 } as const;

/** Unfolds a raw header block (up to the first empty line) into fields; lines that are not fields are skipped. */
export function splitHeaderFields(block: string): HeaderField[] {
  const head = block.slice(0, PRA_LIMITS.headerBytes + 1);
  const end = head.search(/\r?\n\r?\n/);
  const lines = (end < 0 ? head : head.slice(0, end)).split(/\r?\n/);
  const fields: HeaderField[] = [];
  let current: HeaderField | undefined;
  for (const line of lines) {
    if (/^[ \t]/.test(line)) {
      // RFC 5322 §2.2.3: unfolding removes the line break only, so `"john\r\n  doe"@x` keeps
      // both spaces of its local part. A continuation of a skipped line is skipped with it.
      if (current !== undefined) current.value += line;
      continue;
    }
    const colon = line.indexOf(':');
    current = colon > 0 && /^[\x21-\x39\x3b-\x7e]+[ \t]*$/.test(line.slice(0, colon))
      ? { name: line.slice(0, colon).trimEnd(), value: line.slice(colon + 1) }
      : undefined;
    if (current !== undefined) fields.push(current);
  }
  for (const field of fields) field.value = field.value.trim();
  return fields;
}

/**
 * The header block of `message` as splitHeaderFields reads it: the bytes up to its first empty
 * line (kept, as splitHeaderFields looks for it), at most PRA_LIMITS.headerBytes + 1, decoded
 * as UTF-8. Decoding the whole of a 60 MiB message took up to 250 ms and 63 MB of heap (run
 * with 48 MB of heap, `callout senderid` aborted) for a body no field is read from. A block cut
 * at the limit may end inside a character, as U+FFFD.
 */
export function headerBlock(message: Buffer): string {
  const head = message.subarray(0, PRA_LIMITS.headerBytes + 1);
  // splitHeaderFields ends the block at /\r?\n\r?\n/: an LF, then an LF or CR LF.
  const lf = head.indexOf('\n\n');
  const crlf = head.indexOf('\n\r\n');
  const end = crlf >= 0 && (lf < 0 || crlf < lf) ? crlf + 3 : lf >= 0 ? lf + 2 : head.length;
  return head.toString('utf8', 0, end);
}

const nonEmpty = (field: HeaderField) => /\S/.test(field.value);

export function purportedResponsibleAddress(fields: readonly HeaderField[]): PraOutcome {
  if (fields.length > PRA_LIMITS.fields) return { kind: 'none', reason: `more than ${PRA_LIMITS.fields} header fields` };
  const named = (name: string) => (field: HeaderField) => field.name.trim().toLowerCase() === name;
  const resentSender = fields.findIndex((field) => named('resent-sender')(field) && nonEmpty(field));
  const resentFrom = fields.findIndex((field) => named('resent-from')(field) && nonEmpty(field));
  if (resentSender >= 0) {
    const separated =
      resentFrom >= 0 &&
      resentFrom < resentSender &&
      fields.slice(resentFrom + 1, resentSender).some((field) => named('received')(field) || named('return-path')(field));
    if (!separated) return selected(fields[resentSender], 'resent-sender');
  }
  if (resentFrom >= 0) return selected(fields[resentFrom], 'resent-from');
  const senders = fields.filter((field) => named('sender')(field) && nonEmpty(field));
  if (senders.length > 1) return { kind: 'none', reason: `${senders.length} Sender fields` };
  if (senders.length === 1) return selected(senders[0], 'sender');
  const froms = fields.filter((field) => named('from')(field) && nonEmpty(field));
  if (froms.length !== 1) return { kind: 'none', reason: froms.length === 0 ? 'no Resent-Sender, Resent-From, Sender or From field' : `${froms.length} From fields` };
  return selected(froms[0], 'from');
}

function selected(field: HeaderField | undefined, name: PraField): PraOutcome {
  const parsed = parseAddressList(field?.value ?? '', { groups: false, sizeLimits: false });
  if (!parsed.ok) return { kind: 'none', reason: `${name}: ${parsed.error.message}` };
  const [only, ...others] = parsed.value;
  if (only === undefined || others.length > 0) return { kind: 'none', reason: `${name} holds ${parsed.value.length} mailboxes, not one` };
  if (only.mailbox.literal) return { kind: 'none', reason: `${name}: an address literal, not a domain name` };
  return { kind: 'pra', mailbox: only.mailbox, field: name };
}
