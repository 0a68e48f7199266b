/**
 * NAME
 *   stages/allowlist - let listed clients, senders and recipients past callout's checks
 *
 * DESCRIPTION
 *   A match ends the pipeline with `acceptAction` (default DUNNO: Postfix goes on with its own
 *   restrictions; OK would permit the mail outright, skipping them). Lists:
 *     clients      IP addresses and CIDRs (IPv4 and IPv6)
 *     clientNames  verified client names: `mail.example.org`, or `.example.org` for the domain
 *                  and its subdomains
 *     senders      addresses `user@example.org`, domains `example.org`, or `@example.org`
 *     recipients   the same forms, matched against the recipient
 *   Sender lists are weak evidence: the envelope sender is trivially forged. Prefer client
 *   lists; sender entries suit mailing lists whose VERP addresses pollute a callout cache.
 *   It runs at RCPT by default, and in any state from CONNECT to END-OF-MESSAGE it is given
 *   (recipients are matched where Postfix sends one: RCPT, and DATA for a single recipient).
 *   A client that authenticated (Postfix sends its SASL login as `sasl_username`) is let past
 *   too, unless `authenticated: false`: Postfix has checked who it is, and greylisting a
 *   site's own users or calling out their senders helps no one. Postfix sends the attribute
 *   only when it did the authentication, so a client cannot claim it.
 *
 * CONFIGURATION
 *   policy.stages: - name: allowlist, clients, clientNames, senders, recipients, authenticated,
 *   acceptAction
 */

import { isIP } from 'node:net';
import { z } from 'zod';
import { AddressSet } from '../../core/ip.js';
import { ConfigError, abbreviate } from '../../core/errors.js';
import { networkList } from '../../config/networks.js';
import { canonicalName } from '../../dns/names.js';
import { mailboxKey, normaliseDomain, parseMailbox } from '../../address/index.js';
import type { Mailbox } from '../../address/index.js';
import type { StageDefinition, StageVerdict } from '../types.js';
import { stageVerdict } from './verdict.js';

const options = z
  .object({
    clients: networkList(),
    clientNames: z.array(z.string()).default([]),
    senders: z.array(z.string()).default([]),
    recipients: z.array(z.string()).default([]),
    authenticated: z.boolean().default(true),
    acceptAction: z.enum(['DUNNO', 'OK']).default('DUNNO'),
  })
  .strict();

type Options = z.output<typeof options>;

/** An entry as a message quotes it: a list entry may be any length, and hold a line break. */
const quoted = (raw: string): string => JSON.stringify(abbreviate(raw, 100));

/**
 * Address-or-domain list: exact addresses (local part A-Z folded, as most sites treat it; not
 * Unicode case, which turns a UTF-8 local part into another: address/key mailboxKey)
 * and domains. Entries are normalised as the request's addresses are (domains in A-labels,
 * lower case, no trailing dot), so `list@bücher.example` and `list@xn--bcher-kva.example`
 * name the same mailbox; an entry that is neither an address nor a domain is a ConfigError.
 */
export class AddressList {
  private readonly addresses = new Set<string>();
  private readonly domains = new Set<string>();

  constructor(entries: string[], key: string) {
    for (const raw of entries) {
      const entry = raw.trim();
      if (entry.includes('@') && !entry.startsWith('@')) {
        // `*` is a local-part character, so the wildcard of other allow-lists (SpamAssassin's
        // whitelist_from) parsed, as the mailbox "*", and never matched the domain it meant.
        // SpamAssassin's *@*.example.org too: the advice must be an entry this list takes.
        if (entry.startsWith('*@')) {
          const domain = entry.slice(2).replace(/^\*?\./, '');
          const advice = domain === '' || domain.includes('*') ? '' : `: write ${quoted(`@${domain}`)}${domain === entry.slice(2) ? '' : ', and each subdomain meant'}`;
          throw new ConfigError(`${key}: ${quoted(raw)} names the mailbox "*", not every address of its domain${advice}`);
        }
        const parsed = parseMailbox(entry.replace(/\.$/, ''), { utf8: true });
        if (!parsed.ok) throw new ConfigError(`${key}: ${quoted(raw)} is not an address: ${parsed.error.message}`);
        this.addresses.add(mailboxKey(parsed.value.address));
      } else {
        // The subdomain patterns of clientNames and other lists: here a domain is that domain alone.
        if (/^\*?\.[^.]/.test(entry)) throw new ConfigError(`${key}: ${quoted(raw)} is a pattern, not a domain: an entry names that domain only, not its subdomains: write ${quoted(entry.replace(/^\*?\./, ''))}, and each subdomain meant`);
        this.domains.add(domainEntry(raw, key));
      }
    }
  }

  has(mailbox: Mailbox | undefined): boolean {
    if (!mailbox || (this.addresses.size === 0 && this.domains.size === 0)) return false;
    return this.addresses.has(mailboxKey(mailbox.address)) || this.domains.has(mailbox.asciiDomain.toLowerCase());
  }
}

/**
 * A domain entry (`example.org`, `@example.org`, an address literal `[192.0.2.1]`) as a
 * Mailbox's asciiDomain is written, so that it is compared with one; ConfigError naming the
 * list and the entry when it is none of them.
 */
export function domainEntry(raw: string, key: string): string {
  const entry = raw.trim();
  if (/^@?\[/.test(entry)) {
    // An address literal ([192.0.2.1], [IPv6:...]) as the parser gives it for a mailbox.
    const parsed = parseMailbox(`postmaster@${entry.replace(/^@/, '')}`);
    if (!parsed.ok) throw new ConfigError(`${key}: ${quoted(raw)} is not an address literal: ${parsed.error.message}`);
    return parsed.value.asciiDomain.toLowerCase();
  }
  const domain = normaliseDomain(entry.replace(/^@/, ''));
  if (!domain.ok) throw new ConfigError(`${key}: ${quoted(raw)} is not a domain: ${domain.error.message}`);
  return domain.value.ascii;
}

/**
 * Client name patterns, as Postfix sends client_name (A-labels, lower case, no trailing dot: a
 * U-label entry is converted). An entry that is no host name is a ConfigError: it would never
 * match, silently (a `*.domain` of other allow-lists, an IP address that belongs in `clients`).
 */
export function namePatterns(entries: string[], key: string): string[] {
  return entries.map((raw) => {
    const trimmed = raw.trim();
    // The parser's advice for a numeric name (brackets: an address literal) is for mailbox
    // domains; a client name never is one, and `clients` is where an address matches.
    if (isIP(trimmed.replace(/^\[(.*)\]$/, '$1'))) throw new ConfigError(`${key}: ${quoted(raw)} is an IP address, not a host name: list it in clients`);
    const parent = trimmed.startsWith('.');
    const written = parent ? trimmed.slice(1) : trimmed;
    // Postfix's valid_hostname() lets an underscore through to client_name; a mailbox domain has none.
    const name = normaliseDomain(written.replace(/_/g, 'x'));
    if (!name.ok) {
      const hint = trimmed.startsWith('*.') ? `; write ${quoted(trimmed.slice(1))} for the domain and its subdomains` : '';
      throw new ConfigError(`${key}: ${quoted(raw)} is not a host name: ${name.error.message}${hint}`);
    }
    // Labels in A-labels, but a label with an underscore as written (its 'x' stood in for IDNA).
    const writtenLabels = canonicalName(written).split('.');
    const ascii = name.value.ascii
      .split('.')
      .map((label, index) => (writtenLabels[index]?.includes('_') ? writtenLabels[index] : label))
      .join('.');
    return parent ? `.${ascii}` : ascii;
  });
}

/** Whether name matches a canonical pattern: `host`, or `.domain` for the domain and below. */
export function nameMatches(patterns: string[], name: string): boolean {
  if (patterns.length === 0) return false;
  const lower = canonicalName(name);
  return patterns.some((pattern) => (pattern.startsWith('.') ? lower.endsWith(pattern) || lower === pattern.slice(1) : lower === pattern));
}

export const allowlistStage: StageDefinition<Options> = {
  name: 'allowlist',
  defaultStates: ['RCPT'],
  options,
  create(opts) {
    const clients = AddressSet.parse(opts.clients);
    if (!clients.ok) throw new ConfigError(`allowlist.clients: ${clients.reason}`);
    const senders = new AddressList(opts.senders, 'allowlist.senders');
    const recipients = new AddressList(opts.recipients, 'allowlist.recipients');
    const clientNames = namePatterns(opts.clientNames, 'allowlist.clientNames');
    const made = stageVerdict('allowlist');
    const verdict = (result: string, reason: string, listed: boolean): StageVerdict => made(result, reason, listed ? { kind: 'accept' } : { kind: 'continue' });
    // The usual answer, made once: verdicts are values nobody changes.
    const notListed = verdict('not-listed', 'no allow-list entry matches', false);
    return {
      name: 'allowlist',
      // Wherever another stage may run (iprev from CONNECT on, sender-syntax, spf and
      // sender-callout at MAIL): what is listed there must be let past there too.
      states: new Set(['CONNECT', 'EHLO', 'HELO', 'MAIL', 'RCPT', 'DATA', 'END-OF-MESSAGE']),
      evaluate(ctx) {
        const login = opts.authenticated ? ctx.attributes.sasl_username : undefined;
        if (login) return verdict('authenticated', `client authenticated as ${login}`, true);
        if (ctx.clientAddress && clients.value.has(ctx.clientAddress)) return verdict('listed', `client ${ctx.clientAddress} is allow-listed`, true);
        if (ctx.clientName !== 'unknown' && nameMatches(clientNames, ctx.clientName)) return verdict('listed', `client name ${ctx.clientName} is allow-listed`, true);
        const sender = ctx.sender?.kind === 'mailbox' ? ctx.sender.mailbox : undefined;
        if (senders.has(sender)) return verdict('listed', `sender ${ctx.senderText} is allow-listed`, true);
        if (recipients.has(ctx.recipient)) return verdict('listed', `recipient ${ctx.recipientText} is allow-listed`, true);
        return notListed;
      },
    };
  },
};
