/**
 * NAME
 *   cli/greylist - `callout greylist`: look at and change the greylist of a running site
 *
 * SYNOPSIS
 *   callout greylist list  [-c FILE] [--data-dir DIR] [--client CLIENT] [--kind KIND] [--limit N] [--json]
 *   callout greylist allow [-c FILE] [--data-dir DIR] CLIENT [SENDER RECIPIENT]
 *   callout greylist drop  [-c FILE] [--data-dir DIR] CLIENT [SENDER RECIPIENT]
 *
 * DESCRIPTION
 *   Works on the store the policy service uses (the configuration's store: the SQLite file
 *   under the data directory, or the shared Redis), with the settings of the configuration's
 *   `greylist` stage, so a change is seen by every daemon at once. A configuration without one
 *   (a host that only reaches the shared Redis) gets the stage's defaults, named on stderr.
 *     list   triplets (client identity, normalised sender, recipient, first and last seen,
 *            waiting or passed), client auto-allow entries and domain auto-allow entries, in
 *            key order (on Redis, each 10,000 in key order, in the order SCAN finds them),
 *            printed 10,000 at a time as they are read; --client narrows to one identity (for a network, the entries
 *            of the identities and addresses inside it, as `drop` removes them), --kind to triplet, client or domain;
 *            --limit (1000) stops it, with a line on stderr when more are stored
 *     allow  CLIENT alone: the client skips greylisting from now on (its auto-allow entry, for
 *            max-age); with SENDER and RECIPIENT: that triplet counts as passed
 *     drop   CLIENT alone: forget the client's auto-allow entry and every triplet and domain
 *            entry of its identity (for a network, those of every identity inside it and the
 *            auto-allow entries of all its addresses), saying how many of each kind went and
 *            whose; with SENDER and RECIPIENT: that triplet only
 *   CLIENT is an IP address (reduced to its /24 or /64 as the stage does), a network as `list`
 *   shows it (192.0.2.0/24), or domain:NAME for a sender-pool identity; only an address has an
 *   auto-allow entry (`allow CLIENT` alone), and only while the stage's autoAllowClients is
 *   not 0; a triplet is allowed only under an identity the stage keys by (a network of its
 *   prefix, domain:NAME in fcrdns-domain mode). SENDER is normalised as the stage does (prvs=,
 *   SRS, +extension, numbers, and VERP as its normaliseVerp says). A sender or recipient over
 *   256 octets is keyed as HEAD…[sha256:HEX] (address/key keyPart): give it in full, or as
 *   `list` prints it.
 *
 * EXIT STATUS
 *   0 on success; 64 for a bad CLIENT or arguments; 78 when the configuration is invalid or its
 *   store is `memory` (a running daemon's memory cannot be reached from here).
 */

import type { Command } from 'commander';
import { once } from 'node:events';
import { isIP } from 'node:net';
import { isDigestedKeyPart, keyPart, mailboxKey } from '../address/index.js';
import type { Config } from '../config/schema.js';
import { isoSeconds, systemClock } from '../core/clock.js';
import { UsageError, abbreviate } from '../core/errors.js';
import { CONTROL_CHARACTER, shownField, shownJson } from '../core/text.js';
import { clientAddress } from '../checks/client-ip.js';
import { formatCidr, parseCidr, parseNetwork, type Cidr } from '../core/ip.js';
import { normaliseSender, type DroppedClient, type Greylist, type GreylistEntry, type GreylistEntryKind } from '../checks/greylist/index.js';
import { greylistFromOptions, greylistOptions, identityPrefix, networkIdentity, type GreylistOptions } from '../policy/stages/greylist.js';
import type { Store } from '../store/types.js';
import { reportLimitCut, wholeNumberFlag } from './options.js';
import { configuredStore, daemonStateConfig, openCommandStore, openExistingStore } from './runtime.js';

export interface GreylistCommandIo {
  out: NodeJS.WritableStream;
  /** Where `list` says that --limit cut it short (default: standard error), so stdout stays the entries. */
  err?: NodeJS.WritableStream;
}

interface CommonFlags {
  config?: string;
  dataDir?: string;
}

interface ListFlags extends CommonFlags {
  client?: string;
  kind?: string;
  limit: string;
  json?: boolean;
}

const KINDS: readonly GreylistEntryKind[] = ['triplet', 'client', 'domain'];

/** The stage settings these commands key and expire entries by: a daemon with others reads what they write differently. */
const SETTINGS_USED = ['delay', 'retryWindow', 'maxAge', 'clientIdentity', 'ipv4Prefix', 'ipv6Prefix', 'autoAllowClients', 'domainAutoAllow', 'normaliseVerp'] as const;

/**
 * The greylist stage's settings. Without a greylist stage they are its defaults, said on `err`
 * (not refused: a host that only reaches the daemons' shared Redis may have a configuration
 * without stages), so that an administrator whose daemons differ is told before `allow` writes
 * entries that they would key or expire otherwise.
 */
function stageOptions(config: Config, configPath: string | undefined, err: NodeJS.WritableStream): GreylistOptions {
  const entry = config.policy.stages.find((stage) => stage.name === 'greylist');
  if (entry) {
    const { name: _name, mode: _mode, states: _states, ...options } = entry;
    return greylistOptions.parse(options);
  }
  const defaults = greylistOptions.parse({});
  const assumed = SETTINGS_USED.map((key) => `${key}: ${String(defaults[key])}`).join(', ');
  err.write(`callout: warning: ${configPath ?? 'the configuration'} has no greylist stage in policy.stages; assuming its defaults (${assumed}): copy the daemons' greylist stage into it if theirs differ\n`);
  return defaults;
}

interface Settings {
  config: Config;
  options: GreylistOptions;
  /** Where the command's warnings and the store's upgrade line go. */
  err: NodeJS.WritableStream;
}

/**
 * The configuration and its greylist stage, without the store: the arguments are checked against
 * them first, so that a mistyped CLIENT is a usage error (64), not an empty store made by `allow`
 * or a "no store there" (78) from `list` and `drop`.
 */
function configured(flags: CommonFlags, err: NodeJS.WritableStream): Settings {
  const config = daemonStateConfig(flags, 'the greylist', err);
  return { config, options: stageOptions(config, flags.config, err), err };
}

/** domain:NAME with NAME a host name as the stage makes them (organisational domains): labels of letters, digits and inner hyphens. */
const DOMAIN_IDENTITY = /^domain:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*$/i;

/** A CLIENT argument read: the triplet identity, the auto-allow key of an address, the network of a network. */
export interface ClientArgument {
  identity: string;
  autoAllowKey?: string;
  network?: Cidr;
}

/** The triplet identity and the auto-allow key CLIENT names (see SYNOPSIS). */
function clientOf(options: GreylistOptions, client: string): ClientArgument {
  // A sender pool's triplets are keyed by its organisation; auto-allow entries only by address.
  if (DOMAIN_IDENTITY.test(client)) return { identity: client.toLowerCase() };
  if (isIP(client)) {
    const identity = networkIdentity(options, client);
    const address = clientAddress(client)?.text;
    if (identity && address) return { identity, autoAllowKey: address };
  }
  // Host bits after the prefix (192.0.2.7/8) are a typo for a narrower network, refused as in
  // the configuration's lists: masked, `drop` forgot the auto-allow entries of a whole /8. An
  // address with a leading zero (010.1.1.1) gets core/ip's reason too, not the list of forms.
  // Text that is no address at all before the slash gets the list of forms: its reason would
  // quote the argument a second time (core/ip networkExpected).
  const network = parseNetwork(client);
  if (network.ok && client.includes('/')) return { identity: formatCidr(network.value), network: network.value };
  if (!network.ok && !network.notAddress && (client.includes('/') || network.leadingZero)) {
    throw new UsageError(`client: got ${shownJson(abbreviate(client, 80))}: ${network.reason}`);
  }
  throw new UsageError(`client: got ${shownJson(abbreviate(client, 80))}, expected an IP address, a network such as 192.0.2.0/24, or domain:NAME`);
}

/**
 * Why the stage never reads a triplet of this identity, or undefined when it may: it keys a
 * client by the network of its configured prefix (by the address in `address` mode), and by
 * domain:NAME only in `fcrdns-domain` mode. A triplet allowed under another identity
 * (192.0.2.0/25 where the stage keys /24s) would be written and never read.
 */
function unreadIdentity(options: GreylistOptions, identity: string): string | undefined {
  if (identity.startsWith('domain:')) {
    return options.clientIdentity === 'fcrdns-domain' ? undefined : `the greylist stage keys clients by domain:NAME only with clientIdentity: fcrdns-domain (it has ${options.clientIdentity})`;
  }
  const network = parseCidr(identity);
  if (!network.ok) return undefined;
  const family = network.value.family;
  const prefix = identityPrefix(options, family);
  return network.value.prefixLength === prefix ? undefined : `the greylist stage keys IPv${family} clients by their /${prefix}; give an address or a /${prefix} network`;
}

/** A Redis key that something else wrote without an expiry has expiresAt MAX_SAFE_INTEGER (store/redis). */
const iso = (ms: number) => (ms === Number.MAX_SAFE_INTEGER ? 'never' : isoSeconds(ms));

/**
 * The sender and recipient are what SMTP clients sent (Postfix passes an escape sequence or a
 * bare CR on), and a shared Redis holds what any program wrote: shownField() quotes control
 * characters, white space and quotes ("john doe"@example.org), so a script that splits the line
 * at spaces (awk, cut -d' ') gets its fields: one that starts with a quote is a JSON string.
 */
function describeEntry(entry: GreylistEntry): string {
  switch (entry.kind) {
    case 'triplet':
      return `triplet ${shownField(entry.client)} ${shownField(entry.sender || '<>')} ${shownField(entry.recipient)} ${entry.passed ? 'passed' : 'waiting'} first=${iso(entry.firstSeen)} last=${iso(entry.lastSeen)} expires=${iso(entry.expiresAt)}`;
    case 'client':
      return `client ${shownField(entry.client)} ${entry.allowed ? 'allowed' : 'counting'} passes=${entry.count} last=${iso(entry.lastSeen)} expires=${iso(entry.expiresAt)}`;
    case 'domain':
      return `domain ${shownField(entry.client)} ${shownField(entry.domain)} ${entry.allowed ? 'allowed' : 'counting'} senders=${entry.senders} expires=${iso(entry.expiresAt)}`;
  }
}

/** What `list` prints: its flags read. */
export interface ListRequest {
  kinds: readonly GreylistEntryKind[];
  client?: ClientArgument;
  limit: number;
  json: boolean;
  /** Store rows read at once (Greylist.listPages); its default outside tests. */
  pageSize?: number;
}

/** What printGreylist did: how many entries it printed, and whether the limit left some out. */
export interface PrintedList {
  printed: number;
  more: boolean;
}

/**
 * Prints the entries page by page as the store gives them, each page in one write, and waits
 * for `out` to drain when it asks to (a pipe into a slow reader), so that memory holds a page,
 * not the list: gathered, a million entries took about 700 MB. It reads one entry past the
 * limit, not printed, so that a list the limit cut is told from one that ended there.
 */
export async function printGreylist(list: Greylist, request: ListRequest, out: NodeJS.WritableStream): Promise<PrintedList> {
  const { client } = request;
  let printed = 0;
  for (const kind of request.kinds) {
    // A client entry is keyed by the address, a triplet by the identity; a network's entries
    // are those of its addresses and of the identities inside it, as `drop` removes them.
    const filter = client === undefined ? {} : client.network ? { network: client.network } : kind !== 'client' ? { client: client.identity } : { client: client.autoAllowKey ?? client.identity };
    for await (const page of list.listPages({ kind, limit: request.limit + 1 - printed, pageSize: request.pageSize, ...filter })) {
      const kept = page.slice(0, request.limit - printed);
      if (kept.length > 0 && !out.write(kept.map((entry) => `${request.json ? shownJson(entry) : describeEntry(entry)}\n`).join(''))) await once(out, 'drain');
      printed += kept.length;
      if (kept.length < page.length) return { printed, more: true };
    }
  }
  return { printed, more: false };
}

/** `read`: listing or dropping, which need an existing store; `write`: allowing, which may make it. */
async function withGreylist(settings: Settings, access: 'read' | 'write', work: (greylist: Greylist) => Promise<void>): Promise<void> {
  const spec = configuredStore(settings.config);
  const store: Store = access === 'write' ? await openCommandStore(spec, undefined, settings.err) : await openExistingStore(spec, undefined, undefined, settings.err);
  try {
    await work(greylistFromOptions(settings.options, store, systemClock));
  } finally {
    await store.close();
  }
}

interface TripletArgument {
  sender: string;
  recipient: string;
}

/** SENDER and RECIPIENT as the stage keys them (its normaliseVerp setting included). */
function tripletArguments(options: GreylistOptions, sender: string | undefined, recipient: string | undefined): TripletArgument | undefined {
  if (sender === undefined && recipient === undefined) return undefined;
  if (sender === undefined || recipient === undefined) throw new UsageError('give both SENDER and RECIPIENT, or neither');
  // The stage keys any recipient Postfix sends, `postmaster` without a domain included; never an
  // empty one or one with a control character.
  if (recipient === '' || CONTROL_CHARACTER.test(recipient)) throw new UsageError(`RECIPIENT: got ${shownJson(abbreviate(recipient, 80))}, expected an address`);
  // An over-long part as `list` prints it (HEAD…[sha256:HEX]) is already its key.
  return {
    sender: isDigestedKeyPart(sender) ? sender : normaliseSender(sender === '<>' ? '' : sender, { verp: options.normaliseVerp }),
    recipient: isDigestedKeyPart(recipient) ? recipient : mailboxKey(recipient),
  };
}

/**
 * What `drop CLIENT` removed, each kind under the name it was kept by: an address's auto-allow
 * entry under the address, triplets and domain entries under its network (`drop 192.0.2.7` said
 * "dropped 1 entries of 192.0.2.0/24" for the auto-allow entry of 192.0.2.7 alone).
 */
function droppedText(client: ClientArgument, dropped: DroppedClient, addresses: number): string {
  const counted = (n: number, one: string, many: string) => (n === 0 ? [] : [`${n} ${n === 1 ? one : many}`]);
  const ofIdentity = [...counted(dropped.triplets, 'triplet', 'triplets'), ...counted(dropped.domains, 'domain entry', 'domain entries')];
  const parts = [
    ...(dropped.autoAllow ? [`the auto-allow entry of ${client.autoAllowKey ?? client.identity}`] : []),
    ...(ofIdentity.length > 0 ? [`${ofIdentity.join(' and ')} of ${client.identity}`] : []),
    ...counted(addresses, 'auto-allow entry', 'auto-allow entries').map((part) => `${part} of addresses in ${client.identity}`),
  ];
  if (parts.length > 0) return `dropped ${parts.join(', and ')}`;
  return `dropped nothing: no entry of ${client.autoAllowKey === undefined ? client.identity : `${client.autoAllowKey} or ${client.identity}`}${client.network ? ' or of its addresses' : ''}`;
}

/** A triplet as `list` prints it: an over-long sender or recipient by its key (HEAD…[sha256:HEX]). */
const tripletText = (identity: string, triplet: TripletArgument) => `${identity} ${shownField(keyPart(triplet.sender) || '<>')} ${shownField(keyPart(triplet.recipient))}`;

export function registerGreylistCommands(program: Command, io: GreylistCommandIo = { out: process.stdout }): void {
  const err = io.err ?? process.stderr;
  const greylist = program.command('greylist').description('list, allow and drop greylist entries (the store of `callout serve`)');
  const common = (command: Command) => command.option('-c, --config <file>', 'configuration file (YAML)').option('--data-dir <dir>', 'directory of the SQLite store');

  common(greylist.command('list').description('list triplets, client and domain auto-allow entries'))
    .option('--client <client>', 'only this client: an IP address, a network or domain:NAME')
    .option('--kind <kind>', 'only triplet, client or domain entries')
    .option('--limit <n>', 'at most this many entries', '1000')
    .option('--json', 'one JSON object per entry')
    .action(async (flags: ListFlags) => {
      // Decimal, as every count flag: Number() also took 1e3 and 0x10.
      const limit = wholeNumberFlag('--limit', flags.limit, 1);
      if (flags.kind !== undefined && !KINDS.includes(flags.kind as GreylistEntryKind)) throw new UsageError(`--kind: got ${shownJson(abbreviate(flags.kind, 40))}, expected one of ${KINDS.join(', ')}`);
      const settings = configured(flags, err);
      const client = flags.client === undefined ? undefined : clientOf(settings.options, flags.client);
      await withGreylist(settings, 'read', async (list) => {
        const { more } = await printGreylist(list, { kinds: flags.kind ? [flags.kind as GreylistEntryKind] : KINDS, client, limit, json: flags.json === true }, io.out);
        if (more) reportLimitCut('greylist list', limit, err);
      });
    });

  /** allow and drop: CLIENT [SENDER RECIPIENT], read as the configured stage keys them. */
  const clientCommand = (name: string, description: string, run: (settings: Settings, client: ClientArgument, triplet: TripletArgument | undefined) => Promise<void>) =>
    common(greylist.command(name).description(description))
      .argument('<client>')
      .argument('[sender]')
      .argument('[recipient]')
      .action(async (clientText: string, sender: string | undefined, recipient: string | undefined, flags: CommonFlags) => {
        const settings = configured(flags, err);
        const client = clientOf(settings.options, clientText);
        await run(settings, client, tripletArguments(settings.options, sender, recipient));
      });

  clientCommand('allow', 'let a client skip greylisting, or mark one triplet as passed', async (settings, client, triplet) => {
    if (triplet) {
      const unread = unreadIdentity(settings.options, client.identity);
      if (unread) throw new UsageError(`allow: ${client.identity}: ${unread}; a triplet allowed under it would never be read`);
      await withGreylist(settings, 'write', (list) => list.allowTriplet({ client: client.identity, ...triplet }));
      io.out.write(`allowed triplet ${tripletText(client.identity, triplet)}\n`);
      return;
    }
    const key = client.autoAllowKey;
    if (!key) throw new UsageError(`allow: only an address can be auto-allowed, not a network or domain:NAME; use a whitelist file, or give SENDER and RECIPIENT`);
    if (settings.options.autoAllowClients === 0) {
      throw new UsageError('allow: the greylist stage has autoAllowClients: 0 and reads no auto-allow entries; list the client in whitelistClients (or a whitelist file) instead');
    }
    await withGreylist(settings, 'write', (list) => list.allowClient(key));
    io.out.write(`allowed client ${key}\n`);
  });

  clientCommand('drop', 'forget a client (all its entries) or one triplet', async (settings, client, triplet) => {
    await withGreylist(settings, 'read', async (list) => {
      if (triplet) {
        const existed = await list.dropTriplet({ client: client.identity, ...triplet });
        io.out.write(`${existed ? 'dropped' : 'no such'} triplet ${tripletText(client.identity, triplet)}\n`);
        return;
      }
      // A network's triplets are those of every identity inside it (its /24s, or its hosts keyed
      // by address), and its addresses each have their own auto-allow entry: they go with it.
      const dropped = client.network ? { autoAllow: false, ...(await list.dropIdentitiesIn(client.network)) } : await list.dropClient(client.identity, client.autoAllowKey ?? client.identity);
      const addresses = client.network ? await list.dropClientsIn(client.network) : 0;
      io.out.write(`${droppedText(client, dropped, addresses)}\n`);
    });
  });
}
