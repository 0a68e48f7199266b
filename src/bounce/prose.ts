/**
 * NAME
 *   bounce/prose - bounces written as text instead of RFC 3464 reports
 *
 * DESCRIPTION
 *   Formats still seen from MTAs that send no message/delivery-status part (or whose report part
 *   was lost by forwarding), each recognised by its fixed opening text:
 *     qmail      "Hi. This is the qmail-send program at ..."; `<addr>:` then the remote text,
 *                up to "--- Below this line is a copy of the message."
 *     exim       "This message was created automatically by mail delivery software."; the
 *                failed addresses indented two spaces, details four; "has not yet been
 *                delivered" marks a delay warning; X-Failed-Recipients in the header
 *     postfix    "This is the mail system at host ..."; `<addr>: text` with indented
 *                continuation lines; "THIS IS A WARNING ONLY" marks a delay
 *     sendmail   "----- The following addresses had permanent fatal errors -----" (or
 *                "transient non-fatal errors") then `<addr>` and "(reason: ...)"
 *     exchange   "Delivery has failed to these recipients or groups", "Your message to ADDR
 *                couldn't be delivered", with `#550 5.1.1 ...##` or "Remote Server returned"
 *     generic    a bounce-like Subject or From (MAILER-DAEMON, postmaster) and lines that carry
 *                both an address and an SMTP or enhanced code
 *   Each returns the recipients it found with a default action (failed, or delayed for
 *   warnings); codes come from the text through bounce/recipient.
 *
 * LIMITS
 *   Only the first PROSE_LIMITS.textChars characters of the text are read, line by line with each
 *   line cut to lineChars (so the address pattern's backtracking stays bounded), and at most
 *   PROSE_LIMITS.recipients recipients are returned.
 */

import { mailboxKey } from '../address/index.js';
import { makeRecipient } from './recipient.js';
import type { BounceFormat, BounceRecipient, DsnAction } from './types.js';

export const PROSE_LIMITS = { textChars: 64 * 1024, lineChars: 500, recipients: 100 } as const;

const ADDRESS = /<?([^\s<>()"',;:@[\]]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+)>?/;
const ADDRESS_LINE = new RegExp(`^\\s*${ADDRESS.source}\\s*:?\\s*$`);

export interface ProseBounce {
  format: Exclude<BounceFormat, 'dsn'>;
  reportingMta?: string;
  recipients: BounceRecipient[];
}

/** Lines cut to lineChars, so that no pattern ever scans a long run of text. */
function linesOf(text: string): string[] {
  return text.split(/\r?\n/).map((line) => (line.length > PROSE_LIMITS.lineChars ? line.slice(0, PROSE_LIMITS.lineChars) : line));
}

interface Found {
  address: string;
  diagnostic: string;
}

/**
 * `stated`: the format's own words tell a failure from a delay (a qmail bounce, a Postfix one
 * without "THIS IS A WARNING ONLY"), so the 4.x.x reply a failure quotes, the last one before
 * the MTA gave up, does not make it a delay; a generic bounce leaves that to the code.
 */
function recipients(found: Found[], action: DsnAction, stated = true): BounceRecipient[] {
  const seen = new Set<string>();
  const out: BounceRecipient[] = [];
  for (const f of found) {
    const key = mailboxKey(f.address);
    if (seen.has(key) || out.length >= PROSE_LIMITS.recipients) continue;
    seen.add(key);
    out.push(makeRecipient({ address: f.address, diagnostic: f.diagnostic, defaultAction: action, final: stated && action === 'failed', ...(action === 'delayed' ? { action } : {}) }));
  }
  return out;
}

function qmail(text: string): ProseBounce | undefined {
  const intro = /This is the qmail-send program at ([^\s.]+(?:\.[^\s.]+)*)/i.exec(text);
  if (!intro) return undefined;
  const body = text.split(/^--- Below this line is a copy of the message\./m)[0] ?? '';
  const found: Found[] = [];
  let current: Found | undefined;
  for (const line of linesOf(body)) {
    const start = /^<([^<>\s]+@[^<>\s]+)>:\s*(.*)$/.exec(line);
    if (start) {
      current = { address: start[1]!, diagnostic: start[2] ?? '' };
      found.push(current);
    } else if (current && line.trim() !== '') current.diagnostic += ` ${line.trim()}`;
    else current = undefined;
  }
  return { format: 'qmail', reportingMta: intro[1], recipients: recipients(found, 'failed') };
}

function exim(text: string, failedHeader: string | undefined): ProseBounce | undefined {
  if (!/This message was created automatically by mail delivery software/i.test(text) && !failedHeader) return undefined;
  // Exim's own words only: the returned copy of the message may say anything.
  const own = text.split(/^-{6} This is a copy of the message/m)[0] ?? text;
  const delayed = /has not yet been delivered/i.test(own);
  const found: Found[] = [];
  let current: Found | undefined;
  for (const line of linesOf(own)) {
    const address = /^ {2}(\S+@\S+?)(?:\s*$|\s+<)/.exec(line);
    if (address && !/^ {3}/.test(line)) {
      current = { address: address[1]!, diagnostic: '' };
      found.push(current);
    } else if (current && /^ {4,}\S/.test(line)) current.diagnostic += ` ${line.trim()}`;
    else if (current && line.trim() === '') current = undefined;
  }
  // A set, and no more than can be returned: comparing each header address with every one found
  // took 2.5 s for a 64 KiB X-Failed-Recipients.
  const seen = new Set(found.map((f) => mailboxKey(f.address)));
  for (const address of (failedHeader ?? '').split(',').map((a) => a.trim()).filter((a) => a.includes('@'))) {
    if (seen.size >= PROSE_LIMITS.recipients) break;
    const key = mailboxKey(address);
    if (seen.has(key)) continue;
    seen.add(key);
    found.push({ address, diagnostic: '' });
  }
  return { format: 'exim', recipients: recipients(found, delayed ? 'delayed' : 'failed') };
}

function postfix(text: string): ProseBounce | undefined {
  const intro = /This is the mail system at host ([^\s]+?)\.?\s*$/im.exec(text);
  if (!intro) return undefined;
  const delayed = /THIS IS A WARNING ONLY/.test(text);
  const found: Found[] = [];
  let current: Found | undefined;
  for (const line of linesOf(text)) {
    const start = /^<([^<>\s]+@[^<>\s]+)>(?: \([^)]*\))?:\s*(.*)$/.exec(line);
    if (start) {
      current = { address: start[1]!, diagnostic: start[2] ?? '' };
      found.push(current);
    } else if (current && /^\s+\S/.test(line)) current.diagnostic += ` ${line.trim()}`;
    else current = undefined;
  }
  return { format: 'postfix', reportingMta: intro[1], recipients: recipients(found, delayed ? 'delayed' : 'failed') };
}

function sendmail(text: string): ProseBounce | undefined {
  // '---', not '-{3,}', before the words: from every dash of a long run, -{3,} scanned the rest of the run.
  const header = /--- The following addresses had (permanent fatal|transient non-fatal) errors -{3,}/i.exec(text);
  if (!header) return undefined;
  const found: Found[] = [];
  let current: Found | undefined;
  for (const line of linesOf(text.slice(header.index + header[0].length))) {
    if (/^\s*-{3,}/.test(line)) break;
    const address = ADDRESS_LINE.exec(line);
    if (address) {
      current = { address: address[1]!, diagnostic: '' };
      found.push(current);
    } else if (current && line.trim() !== '') current.diagnostic += ` ${line.trim().replace(/^\(reason:\s*/i, '').replace(/\)$/, '')}`;
  }
  // A recipient without a reason line gets the reply the transcript shows for it, never another
  // recipient's: only a lone recipient may take a lone reply.
  const replies = transcriptReplies(text);
  for (const f of found) {
    if (f.diagnostic !== '') continue;
    f.diagnostic = replies.byRecipient.get(mailboxKey(f.address)) ?? (found.length === 1 && replies.all.length === 1 ? replies.all[0]! : '');
  }
  return { format: 'sendmail', recipients: recipients(found, header[1]!.toLowerCase().startsWith('transient') ? 'delayed' : 'failed') };
}

const TRANSCRIPT_REPLY = /^<<< ([45]\d\d[ -].*)$/;

/**
 * The 4xx and 5xx replies of a Sendmail transcript: all of them, and the one each recipient got
 * (">>> RCPT To:<a>" then "<<< 550 ..."), by address key (address/key mailboxKey).
 */
function transcriptReplies(text: string): { all: string[]; byRecipient: Map<string, string> } {
  const all: string[] = [];
  const byRecipient = new Map<string, string>();
  const lines = linesOf(text);
  lines.forEach((line, i) => {
    const reply = TRANSCRIPT_REPLY.exec(line);
    if (reply) all.push(reply[1]!);
    const rcpt = /^>>> RCPT To:\s*<([^<>\s]+)>/i.exec(line);
    const next = TRANSCRIPT_REPLY.exec(lines[i + 1] ?? '');
    if (rcpt && next) byRecipient.set(mailboxKey(rcpt[1]!), next[1]!);
  });
  return { all, byRecipient };
}

function exchange(text: string): ProseBounce | undefined {
  const classic = /Delivery has failed to these recipients or groups:/i.exec(text);
  const lines = linesOf(text);
  const modern = lines.map((line) => /Your message to (\S+@\S+?) couldn'?t be delivered/i.exec(line)).find((m) => m !== null);
  if (!classic && !modern) return undefined;
  const found: Found[] = [];
  // Diagnostic section: an address line followed by "#550 5.1.1 ... ##".
  lines.forEach((line, i) => {
    // Trimmed first, and the reply greedy up to the first '#': white space on both sides of an
    // optional '#' before the end made every split of a run of spaces a try (4.6 s for 64 KiB).
    const next = (lines[i + 1] ?? '').trim();
    // Exchange 2010 puts the name of the server that refused before the '#' of a remote reply.
    const code = /^(?:[^\s#]+\s+(?=#))?#?\s*([45]\d\d[ -][^#]*)#*$/.exec(next);
    const address = ADDRESS_LINE.exec(line);
    if (address && code && next.includes('#')) found.push({ address: address[1]!, diagnostic: code[1]!.trimEnd() });
  });
  const remote = /Remote Server returned '([^']+)'/i.exec(text)?.[1] ?? '';
  if (modern) found.push({ address: modern[1]!, diagnostic: remote });
  if (classic) {
    const listed: Array<{ address: string; line: string }> = [];
    // Exchange 2007 and later put a blank line before the list: it ended the list before its first address.
    const after = linesOf(text.slice(classic.index + classic[0].length)).slice(1);
    const first = after.findIndex((line) => line.trim() !== '');
    for (const line of first < 0 ? [] : after.slice(first)) {
      const address = ADDRESS.exec(line);
      if (!address || line.trim() === '') break;
      listed.push({ address: address[1]!, line });
    }
    // One "Remote Server returned" line belongs to one recipient: with several, none takes it.
    for (const { address, line } of listed) found.push({ address, diagnostic: listed.length === 1 && remote ? remote : line });
  }
  return { format: 'exchange', recipients: recipients(found, 'failed') };
}

const GENERIC_CODE = /(?<!\d)[45]\d\d(?!\d)|(?<![\d.])[45]\.\d{1,3}\.\d{1,3}/;

function generic(text: string, subject: string, from: string): ProseBounce | undefined {
  const bounceLike = /undeliver|delivery (status notification|failure|has failed)|returned mail|failure notice|mail delivery (failed|system)|non-?delivery/i.test(subject) || /mailer-daemon|postmaster/i.test(from);
  if (!bounceLike) return undefined;
  const found: Found[] = [];
  const lines = linesOf(text);
  lines.forEach((line, i) => {
    const address = ADDRESS.exec(line);
    if (!address) return;
    // The next line explains this address only when this one has no code and the next names no
    // address of its own: "a@x: 554 rejected" then "b@x: 550 user unknown" made a@x hard too.
    const next = lines[i + 1] ?? '';
    const context = GENERIC_CODE.test(line) || ADDRESS.test(next) ? line : `${line} ${next}`;
    if (GENERIC_CODE.test(context)) found.push({ address: address[1]!, diagnostic: context.trim() });
  });
  return { format: 'generic', recipients: recipients(found, /delay|warning/i.test(subject) ? 'delayed' : 'failed', false) };
}

/** The first prose format that recognises the text, most specific first. */
export function parseProseBounce(fullText: string, headers: { subject: string; from: string; failedRecipients?: string }): ProseBounce | undefined {
  const text = fullText.length > PROSE_LIMITS.textChars ? fullText.slice(0, PROSE_LIMITS.textChars) : fullText;
  const candidates = [qmail(text), postfix(text), sendmail(text), exchange(text), exim(text, headers.failedRecipients), generic(text, headers.subject, headers.from)];
  return candidates.find((c) => c !== undefined && c.recipients.length > 0) ?? candidates.find((c) => c !== undefined);
}
