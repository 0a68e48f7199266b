/**
 * NAME
 *   cli/spf - `callout spf --ip IP --sender ADDR|--identity helo [--helo NAME] [--dns-server IP[:PORT]] [--json]`
 *
 * DESCRIPTION
 *   Evaluates SPF (RFC 7208) for one client address and envelope sender and prints the
 *   result, the explanation (for a fail) or the problem (for an error), and the trace: every
 *   check_host() entered, every term with its outcome and every DNS lookup with its answer.
 *   --sender '' or '<>' is the null reverse-path, checked as postmaster@HELO; --identity helo
 *   checks the HELO identity instead, and does not check a --sender given with it (one note on
 *   stderr: --sender was required before, so every existing helo call passes one). --json prints
 *   one JSON object: result (the RFC's lower-case word), explanation, trace, and the rest of the verdict.
 *
 * EXIT STATUS
 *   0 pass; 1 fail or softfail; 2 neutral, none, temperror or permerror; 64 usage error
 *   (a missing option, an --ip that is not an address, a null sender without --helo).
 */

import type { Command } from 'commander';
import { ConfigError, UsageError, abbreviate } from '../core/errors.js';
import { createNodeResolver } from '../dns/node-resolver.js';
import type { Resolver } from '../dns/types.js';
import { clientAddress } from '../checks/client-ip.js';
import { evaluateSpf } from '../checks/spf/index.js';
import { checkSenderId, headerBlock, splitHeaderFields } from '../checks/senderid/index.js';
import { shown, shownJson } from '../core/text.js';
import type { SpfTraceEntry, SpfVerdict } from '../checks/spf/types.js';
import { DNS_SERVER_FLAG, DNS_SERVER_HELP, TIMEOUT_MILLISECONDS, collect, readMessageInput, unitFlag } from './options.js';

interface SpfFlags {
  ip: string;
  sender?: string;
  helo?: string;
  dnsServer: string[];
  identity: string;
  receiver?: string;
  timeout?: string;
  json?: boolean;
}

export interface SpfCommandIo {
  out: NodeJS.WritableStream;
  /** Where a note of a flag that is not checked goes (default: standard error). */
  err?: NodeJS.WritableStream;
  /** `senderid --message -` (default: standard input). */
  stdin?: NodeJS.ReadableStream;
}


export function registerSpfCommand(program: Command, io: SpfCommandIo = { out: process.stdout }): void {
  program
    .command('spf')
    .description('evaluate SPF (RFC 7208) for a client address and sender, and show how the result came about')
    .requiredOption('--ip <address>', 'the SMTP client address (IPv4 or IPv6)')
    .option('--sender <address>', "the MAIL FROM address ('' or '<>' for the null sender); not checked with --identity helo")
    .option('--helo <name>', 'the EHLO/HELO name (needed for the null sender and --identity helo)')
    .option(DNS_SERVER_FLAG, DNS_SERVER_HELP, collect, [])
    .option('--identity <identity>', 'mailfrom or helo', 'mailfrom')
    .option('--receiver <name>', 'this host name, for the %{r} macro of explanations')
    .option('--timeout <ms>', 'per-query DNS timeout in milliseconds', '3000')
    .option('--json', 'print one JSON object with result, explanation and trace')
    .action(async (flags: SpfFlags) => {
      const verdict = await runSpf(flags, io.err ?? process.stderr);
      io.out.write(flags.json ? `${shownJson(verdict)}\n` : formatVerdict(verdict));
      process.exitCode = exitStatus(verdict);
    });
}

async function runSpf(flags: SpfFlags, err: NodeJS.WritableStream): Promise<SpfVerdict> {
  if (clientAddress(flags.ip) === undefined) throw new UsageError(`spf: --ip ${shownJson(abbreviate(flags.ip, 80))} is not an IP address`);
  if (flags.identity !== 'mailfrom' && flags.identity !== 'helo') throw new UsageError(`spf: --identity must be mailfrom or helo, got ${shownJson(abbreviate(flags.identity, 80))}`);
  // The HELO identity is the name alone. --sender was required with it before, so a call that
  // gives one is told, not refused.
  if (flags.identity === 'helo' && flags.sender !== undefined) err.write('callout: warning: --sender is not checked with --identity helo (the HELO name alone is); leave --sender out\n');
  if (flags.identity === 'mailfrom' && flags.sender === undefined) throw new UsageError("spf: --sender: give the MAIL FROM address ('' or '<>' for the null sender), or --identity helo");
  const mailFrom = flags.sender === undefined || flags.sender === '<>' ? '' : flags.sender.replace(/^<(.*)>$/, '$1');
  const helo = flags.helo ?? '';
  if ((mailFrom === '' || flags.identity === 'helo') && helo === '') throw new UsageError('spf: the null sender and --identity helo need --helo');
  // As the spf stage's receiver: an empty name left %{r} of an explanation empty where RFC 7208 §7.3 says "unknown".
  if (flags.receiver === '') throw new UsageError('spf: --receiver: got "", expected this host\'s name');
  const timeoutMs = unitFlag('spf: --timeout', flags.timeout ?? '', TIMEOUT_MILLISECONDS);
  const resolver = resolverFlags('spf', flags.dnsServer, timeoutMs);
  return evaluateSpf(
    { ip: flags.ip, mailFrom, helo, identity: flags.identity },
    { resolver, ...(flags.receiver === undefined ? {} : { receiver: flags.receiver }) },
  );
}

function exitStatus(verdict: SpfVerdict): number {
  if (verdict.result === 'pass') return 0;
  if (verdict.result === 'fail' || verdict.result === 'softfail') return 1;
  return 2;
}

function describeEntry(entry: SpfTraceEntry): string {
  const indent = (depth: number) => '  '.repeat(depth + 1);
  switch (entry.kind) {
    case 'check':
      return `${indent(entry.depth)}check_host(${entry.domain})`;
    case 'record':
      // The record is shown before it is parsed, as DNS gave it: control characters a sender's domain publishes stay quoted.
      return `    record ${entry.domain}: ${shown(entry.record)}`;
    case 'term':
      return `    term ${entry.term} (${entry.domain}): ${entry.outcome}`;
    case 'dns':
      // Any TXT record of a sender's domain is shown, and JSON leaves C1 and bidi controls raw.
      return `    dns ${entry.type} ${entry.name}: ${entry.answer}${entry.data.length > 0 ? ` ${entry.data.map((d) => shownJson(d)).join(' ')}` : ''}`;
    case 'note':
      // A note may quote DNS text (an exp= explanation that does not parse).
      return `    note: ${shown(entry.message)}`;
  }
}

export function formatVerdict(verdict: SpfVerdict): string {
  const lines = [
    `result: ${verdict.result}`,
    // Sender ID's sender is the PRA, from message headers anyone can write.
    // A message without a PRA has no sender to show: `pra "" (domain )` said nothing.
    `identity: ${verdict.identity} ${verdict.sender === '' ? 'none found' : `${shown(verdict.sender)} (domain ${verdict.domain})`}, client ${verdict.ip}${verdict.helo === '' ? '' : `, helo ${verdict.helo}`}`,
  ];
  if (verdict.mechanism !== undefined) lines.push(`mechanism: ${verdict.mechanism}`);
  if (verdict.explanation !== undefined) lines.push(`explanation: ${shown(verdict.explanation)}`);
  if (verdict.problem !== undefined) lines.push(`problem: ${shown(verdict.problem)}`);
  lines.push(`lookups: ${verdict.lookups.dnsTerms} DNS-querying terms, ${verdict.lookups.voidLookups} void`);
  lines.push('trace:', ...verdict.trace.map(describeEntry));
  return `${lines.join('\n')}\n`;
}

interface SenderIdFlags {
  ip: string;
  message: string;
  scope: string;
  sender?: string;
  helo?: string;
  dnsServer: string[];
  timeout?: string;
  json?: boolean;
}

/**
 * `callout senderid`: Sender ID (RFC 4406/4407, historic) for a message file: the Purported
 * Responsible Address from its headers (scope pra), or --sender (scope mfrom).
 */
export function registerSenderIdCommand(program: Command, io: SpfCommandIo = { out: process.stdout }): void {
  program
    .command('senderid')
    .description('evaluate Sender ID (RFC 4406/4407, historic) for a message file: the PRA of its headers, or the MAIL FROM')
    .requiredOption('--ip <address>', 'the SMTP client address (IPv4 or IPv6)')
    .requiredOption('--message <file>', 'the message (RFC 5322), or at least its header section; - for standard input')
    .option('--scope <scope>', 'pra (the headers) or mfrom (--sender)', 'pra')
    .option('--sender <address>', "the MAIL FROM address, for scope mfrom ('' or '<>' for the null sender)")
    .option('--helo <name>', 'the EHLO/HELO name')
    .option(DNS_SERVER_FLAG, DNS_SERVER_HELP, collect, [])
    .option('--timeout <ms>', 'per-query DNS timeout in milliseconds', '3000')
    .option('--json', 'print one JSON object with result, the PRA field and the trace')
    .action(async (flags: SenderIdFlags) => {
      const err = io.err ?? process.stderr;
      if (clientAddress(flags.ip) === undefined) throw new UsageError(`senderid: --ip ${shownJson(abbreviate(flags.ip, 80))} is not an IP address`);
      if (flags.scope !== 'pra' && flags.scope !== 'mfrom') throw new UsageError(`senderid: --scope must be pra or mfrom, got ${shownJson(abbreviate(flags.scope, 80))}`);
      if (flags.scope === 'mfrom' && flags.sender === undefined) throw new UsageError('senderid: --scope mfrom needs --sender');
      // Scope pra takes its address from the headers: a --sender was ignored without a word.
      if (flags.scope === 'pra' && flags.sender !== undefined) err.write("callout: warning: --sender is not checked with scope pra (the address of the message's headers is); give --scope mfrom to check it, or leave --sender out\n");
      // As spf: the null sender is checked as postmaster@HELO, so it needs --helo.
      if (flags.scope === 'mfrom' && (flags.sender === '' || flags.sender === '<>') && !flags.helo) throw new UsageError('senderid: the null sender needs --helo');
      const timeoutMs = unitFlag('senderid: --timeout', flags.timeout ?? '', TIMEOUT_MILLISECONDS);
      const message = await readMessageInput(flags.message, io.stdin ?? process.stdin, 'senderid: --message');
      // UTF-8 (RFC 6532): read as Latin-1, "bücher.example" became another domain, which was
      // then checked. A byte that is not UTF-8 becomes U+FFFD, which the address parser refuses
      // in a local part or a domain (rule not-utf8): such a PRA field gives no PRA (permerror).
      const text = headerBlock(message);
      const verdict = await checkSenderId(
        {
          scope: flags.scope,
          ip: flags.ip,
          helo: flags.helo ?? '',
          ...(flags.sender !== undefined ? { mailFrom: flags.sender === '<>' ? '' : flags.sender.replace(/^<(.*)>$/, '$1') } : {}),
          headers: splitHeaderFields(text),
        },
        { resolver: resolverFlags('senderid', flags.dnsServer, timeoutMs) },
      );
      const praLine = verdict.praField ? `pra: ${shown(verdict.sender)} (from the ${verdict.praField} field)\n` : '';
      io.out.write(flags.json ? `${shownJson(verdict)}\n` : praLine + formatVerdict(verdict));
      process.exitCode = exitStatus(verdict);
    });
}

/** The resolver --dns-server names: a bad server is a usage error (64) naming the flag. */
function resolverFlags(command: string, servers: string[], timeoutMs: number): Resolver {
  try {
    return createNodeResolver({ servers, timeoutMs });
  } catch (err) {
    if (err instanceof ConfigError) throw new UsageError(`${command}: --dns-server: ${err.message}`);
    throw err;
  }
}
