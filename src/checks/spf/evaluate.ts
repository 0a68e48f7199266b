/**
 * NAME
 *   checks/spf/evaluate - check_host(): the SPF evaluation of RFC 7208
 *
 * DESCRIPTION
 *   evaluateSpf(request, options) checks the MAIL FROM identity (or, with identity 'helo' or
 *   a null reverse-path, postmaster@HELO) and resolves to an SpfVerdict. It never rejects for
 *   a DNS outcome: NXDOMAIN, NODATA, SERVFAIL and timeouts all become results.
 *
 *   evaluatePolicy() is the same machinery with the record selection and the identity left to
 *   the caller; Sender ID (src/checks/senderid) uses it with its spf2.0 scopes.
 *
 * RFC
 *   RFC 7208 §2.4 (null reverse-path: postmaster@HELO), §4.3 (malformed or missing domain:
 *   none; no local part: postmaster), §4.4 (TXT lookup; a DNS error other than NXDOMAIN is
 *   temperror), §4.5 (exactly one "v=spf1" record, else none or permerror), §4.6 (terms left
 *   to right, the first match decides by its qualifier), §4.7 (neutral by default), §5
 *   (mechanisms: a DNS error in a term is temperror, NXDOMAIN counts as no records; ptr skips
 *   names whose lookups fail), §5.2 (include: pass matches; fail, softfail, neutral do not;
 *   none and permerror are permerror), §6.1 (redirect, ignored when "all" is present; a target
 *   without a record is permerror), §6.2 (exp: only on fail, from the record that failed,
 *   never through include; any problem with it means the default explanation), §7.3 (%{p}:
 *   the domain itself, else a subdomain of it, else any validated name, else "unknown").
 *   A target name that macro expansion leaves unusable (an empty or over-long label) makes
 *   the term not match; the suite allows fail or permerror there and prefers fail.
 *
 * LIMITS
 *   The processing limits of SpfLimits (src/checks/spf/lookups). MX lists longer than
 *   mxNames are a permerror before any address is fetched. The addresses of an mx term's
 *   exchangers, and of the PTR names to validate, are asked for together and judged in order
 *   as if asked one by one. A client address that does not parse gives none; a sender of any
 *   length is checked (a none for a long one let a forger past a domain's -all by lengthening
 *   the local part), since every expansion is bounded (below, and expandDomainSpec). The last
 *   1000 distinct records parsed are kept in memory (parsing is pure; popular includes
 *   repeat). An explanation is cut to MAX_EXPLANATION_LENGTH characters, and exp= text
 *   longer than a record may be (MAX_RECORD_LENGTH) is ignored: its macros could otherwise
 *   expand a sender's DNS data into megabytes kept with the verdict.
 *
 * ERRORS
 *   None at run time: every DNS outcome and every malformed input is a result. A broken
 *   built-in macro-string would throw CalloutError INTERNAL when the module loads.
 */

import { domainToASCII } from 'node:url';
import { systemClock } from '../../core/clock.js';
import { CalloutError, abbreviate } from '../../core/errors.js';
import { addressHolds, clientAddress, networkHolds, type ClientAddress as Client } from '../client-ip.js';
import { SpfLookups, type LimitedAnswer } from './lookups.js';
import {
  expandDomainSpec,
  expandMacroString,
  MAX_NAME_LENGTH,
  parseMacroString,
  targetName,
  usesValidatedName,
  type MacroContext,
  type MacroString,
} from './macro.js';
import { MAX_RECORD_LENGTH, parseRecordTerms, type Directive, type Qualifier, type RecordParse } from './record.js';
import { MAX_WRITTEN_LENGTH, canonicalName } from '../../dns/names.js';
import {
  DEFAULT_SPF_LIMITS,
  type SpfIdentity,
  type SpfLimits,
  type SpfOptions,
  type SpfRequest,
  type SpfResult,
  type SpfTraceEntry,
  type SpfVerdict,
} from './types.js';

/**
 * The outcome of choosing a domain's policy record among its TXT records. A `none` with a
 * problem says why records that are there do not count (the result's problem then names the
 * domain and it); without one, the domain has no SPF record.
 */
export type RecordSelection = { kind: 'record'; record: string; terms: string } | { kind: 'none'; problem?: string } | { kind: 'permerror'; problem: string };

export type RecordSelector = (txt: readonly string[]) => RecordSelection;

/** The identity to check, already reduced to a <sender> (postmaster@HELO for a null path). */
export interface PolicyRequest {
  ip: string;
  sender: string;
  helo: string;
  identity: SpfIdentity;
  /**
   * The domain to check when the sender is postmaster@HELO (§2.3, §2.4): the whole HELO name,
   * which a client may write with an '@' that splitting the sender at its last '@' would cut.
   */
  domain?: string;
}

export const BUILTIN_DEFAULT_EXPLANATION = 'The domain %{o} does not designate %{c} as a permitted sender';

const BUILTIN_EXPLANATION_TOKENS = builtinMacroString(BUILTIN_DEFAULT_EXPLANATION);
/** RFC 5321 §4.5.3.1.5: a reply line, which is where an explanation goes, holds 512 octets. */
const MAX_EXPLANATION_LENGTH = 512;
const SPF1_VERSION = /^v=spf1(?: |$)/i;
const QUALIFIER_RESULT: Record<Qualifier, SpfResult> = { '+': 'pass', '-': 'fail', '~': 'softfail', '?': 'neutral' };

/** RFC 7208 §4.5: the one record that starts with "v=spf1" followed by a space or its end. */
export const selectSpf1Record: RecordSelector = (txt) => {
  const records = txt.filter((record) => SPF1_VERSION.test(record));
  const [record] = records;
  if (record === undefined) return { kind: 'none' };
  if (records.length > 1) return { kind: 'permerror', problem: `${records.length} SPF records` };
  return { kind: 'record', record, terms: record.slice('v=spf1'.length) };
};

export function evaluateSpf(request: SpfRequest, options: SpfOptions): Promise<SpfVerdict> {
  const useHelo = request.identity === 'helo' || request.mailFrom === '';
  const identity = request.identity ?? 'mailfrom';
  if (!useHelo) return evaluatePolicy({ ip: request.ip, sender: request.mailFrom, helo: request.helo, identity }, options, selectSpf1Record);
  return evaluatePolicy({ ip: request.ip, sender: `postmaster@${request.helo}`, domain: request.helo, helo: request.helo, identity }, options, selectSpf1Record);
}

interface HostOutcome {
  result: SpfResult;
  /** The domain whose record decided. */
  domain: string;
  mechanism?: string;
  problem?: string;
  explanation?: { spec: MacroString; domain: string };
}

type TermOutcome = { kind: 'match' } | { kind: 'no-match'; note?: string } | { kind: 'error'; result: 'temperror' | 'permerror'; problem: string };

type ValidatedNames = { kind: 'names'; names: string[] } | { kind: 'error'; result: 'temperror' | 'permerror'; problem: string };

export async function evaluatePolicy(request: PolicyRequest, options: SpfOptions, selector: RecordSelector): Promise<SpfVerdict> {
  const trace: SpfTraceEntry[] = [];
  const limits: SpfLimits = { ...DEFAULT_SPF_LIMITS, ...options.limits };
  const lookups = new SpfLookups(options.resolver, limits, options.monotonic ?? (() => performance.now()), trace);
  const at = request.sender.lastIndexOf('@');
  const localPart = request.domain !== undefined || at <= 0 ? 'postmaster' : request.sender.slice(0, at);
  const senderDomain = request.domain ?? (at < 0 ? request.sender : request.sender.slice(at + 1));
  const sender = `${localPart}@${senderDomain}`;
  const client = clientAddress(request.ip);
  const verdict = (outcome: Omit<HostOutcome, 'domain'>, domain: string, explanation?: string): SpfVerdict => {
    const built: SpfVerdict = {
      result: outcome.result,
      domain,
      identity: request.identity,
      sender,
      // An IPv4-mapped client is shown as the IPv4 address it was checked as, as iprev shows it.
      ip: client?.text ?? request.ip,
      helo: request.helo,
      trace,
      lookups: { dnsTerms: lookups.dnsTerms, voidLookups: lookups.voidLookups },
    };
    if (explanation !== undefined) built.explanation = explanation;
    if (outcome.mechanism !== undefined) built.mechanism = outcome.mechanism;
    if (outcome.problem !== undefined) built.problem = outcome.problem;
    return built;
  };

  if (client === undefined) return verdict({ result: 'none', problem: `${JSON.stringify(request.ip)} is not an IP address` }, senderDomain.toLowerCase());

  const evaluation = new Evaluation(request, options, client, lookups, selector, trace, limits, { sender, localPart, senderDomain });
  const outcome = await evaluation.checkHost(senderDomain, 0);
  const explanation = outcome.result === 'fail' ? await evaluation.explain(outcome) : undefined;
  return verdict(outcome, asciiDomain(senderDomain)?.toLowerCase() ?? senderDomain.toLowerCase(), explanation);
}

const MAX_PARSED_RECORDS = 1000;
const parsedRecords = new Map<string, RecordParse>();

/**
 * Parsed records are immutable, and a few popular ones (a large provider's include) make up
 * much of the traffic, so the latest parses are kept (at most MAX_PARSED_RECORDS).
 */
function parseRecordCached(terms: string): RecordParse {
  const known = parsedRecords.get(terms);
  if (known !== undefined) return known;
  const parsed = parseRecordTerms(terms);
  parsedRecords.set(terms, parsed);
  if (parsedRecords.size > MAX_PARSED_RECORDS) {
    const oldest = parsedRecords.keys().next();
    if (oldest.done !== true) parsedRecords.delete(oldest.value);
  }
  return parsed;
}

/** A macro-string written in this module; a typo there is a bug, caught at load. */
function builtinMacroString(text: string): MacroString {
  const parsed = parseMacroString(text, { explanation: true });
  if (!parsed.ok) throw new CalloutError('INTERNAL', `bad built-in macro-string ${JSON.stringify(text)}: ${parsed.problem}`);
  return parsed.value;
}

/** The A-label form; undefined for no domain, or for one too long to convert (dns/names MAX_WRITTEN_LENGTH: Punycode takes time quadratic in a label). */
function asciiDomain(domain: string): string | undefined {
  const name = domain.endsWith('.') ? domain.slice(0, -1) : domain;
  if (/^[\x21-\x7e]*$/.test(name)) return name;
  if (name.length > MAX_WRITTEN_LENGTH) return undefined;
  const ascii = domainToASCII(name);
  return ascii === '' ? undefined : ascii;
}

/** §4.3: the domain check_host() was given must be a fully qualified domain name of at most 253 characters. */
function checkableDomain(domain: string): { ok: true; name: string } | { ok: false; problem: string } {
  if (domain.startsWith('[')) return { ok: false, problem: `${domain} is an address literal, not a domain` };
  if (domain.length > MAX_WRITTEN_LENGTH) return { ok: false, problem: `${abbreviate(JSON.stringify(domain), 80)} is longer than ${MAX_NAME_LENGTH} characters` };
  const ascii = asciiDomain(domain);
  if (ascii === undefined) return { ok: false, problem: `${JSON.stringify(domain)} is not a valid domain name` };
  // Only an expanded name is cut from the left (§7.3); a longer <domain> is malformed.
  if (ascii.length > MAX_NAME_LENGTH) return { ok: false, problem: `${JSON.stringify(domain)} is longer than ${MAX_NAME_LENGTH} characters` };
  const target = targetName(ascii);
  if (!target.ok) return target;
  const labels = target.name.split('.');
  if (labels.length < 2) return { ok: false, problem: `${JSON.stringify(domain)} is not a fully qualified domain name` };
  if (/^[0-9]+$/.test(labels[labels.length - 1] ?? '')) return { ok: false, problem: `${JSON.stringify(domain)} has a numeric top-level label` };
  return target;
}

function nibbles(client: Client): string {
  return client.host.network.toString(16).padStart(32, '0').toUpperCase().split('').join('.');
}


class Evaluation {
  private validated: Promise<ValidatedNames> | undefined;
  /** Built on the first expansion: most records have no macros. */
  private context: MacroContext | undefined;

  constructor(
    private readonly request: PolicyRequest,
    private readonly options: SpfOptions,
    private readonly client: Client,
    private readonly lookups: SpfLookups,
    private readonly selector: RecordSelector,
    private readonly trace: SpfTraceEntry[],
    private readonly limits: SpfLimits,
    private readonly identity: { sender: string; localPart: string; senderDomain: string },
  ) {}

  private macroContext(domain: string): MacroContext {
    const client = this.client;
    this.context ??= {
      sender: this.identity.sender,
      localPart: this.identity.localPart,
      senderDomain: this.identity.senderDomain,
      domain,
      ipDotted: client.family === 4 ? client.text : nibbles(client),
      ipReadable: client.text,
      ipVersion: client.family === 4 ? 'in-addr' : 'ip6',
      helo: this.request.helo,
      receiver: this.options.receiver ?? 'unknown',
      nowSeconds: Math.floor((this.options.clock ?? systemClock).now() / 1000),
    };
    // Expansion is synchronous, so one context can serve every expansion in turn.
    this.context.domain = domain;
    return this.context;
  }

  async checkHost(domain: string, depth: number): Promise<HostOutcome> {
    this.trace.push({ kind: 'check', domain, depth });
    const checkable = checkableDomain(domain);
    if (!checkable.ok) return { result: 'none', domain, problem: checkable.problem };
    const name = checkable.name;
    const answer = await this.lookups.query('TXT', name, 'dependent');
    if (answer.kind === 'limit') return { result: answer.result, domain: name, problem: answer.problem };
    if (answer.kind === 'tempfail') return { result: 'temperror', domain: name, problem: `TXT lookup of ${name} failed: ${answer.reason}` };
    if (answer.kind !== 'records') return { result: 'none', domain: name, problem: `${name} has no SPF record (${answer.kind})` };
    const selection = this.selector(answer.records);
    if (selection.kind === 'none') return { result: 'none', domain: name, problem: selection.problem === undefined ? `${name} has no SPF record` : `${name}: ${selection.problem}` };
    if (selection.kind === 'permerror') return { result: 'permerror', domain: name, problem: `${name}: ${selection.problem}` };
    this.trace.push({ kind: 'record', domain: name, record: selection.record });
    const parsed = parseRecordCached(selection.terms);
    if (!parsed.ok) return { result: 'permerror', domain: name, problem: `${name}: ${parsed.problem}` };
    const record = parsed.record;

    for (const directive of record.directives) {
      const outcome = await this.evaluateDirective(directive, name, depth);
      this.trace.push({
        kind: 'term',
        domain: name,
        term: directive.text,
        outcome: outcome.kind === 'match' ? 'match' : outcome.kind === 'no-match' ? (outcome.note === undefined ? 'no match' : `no match (${outcome.note})`) : `${outcome.result}: ${outcome.problem}`,
      });
      if (outcome.kind === 'error') return { result: outcome.result, domain: name, mechanism: directive.text, problem: outcome.problem };
      if (outcome.kind === 'match') {
        const matched: HostOutcome = { result: QUALIFIER_RESULT[directive.qualifier], domain: name, mechanism: directive.text };
        if (record.explanation !== undefined) matched.explanation = { spec: record.explanation.domain, domain: name };
        return matched;
      }
    }
    // An "all" always matches, so a record with one never comes here: its redirect is ignored (§6.1).
    if (record.redirect === undefined) return { result: 'neutral', domain: name };

    const overLimit = this.lookups.countTerm();
    if (overLimit !== undefined) return { result: 'permerror', domain: name, mechanism: record.redirect.text, problem: overLimit };
    const target = targetName(await this.expand(record.redirect.domain, name, 'domain-spec'));
    if (!target.ok) return { result: 'permerror', domain: name, mechanism: record.redirect.text, problem: `${record.redirect.text}: ${target.problem}` };
    const inner = await this.checkHost(target.name, depth + 1);
    this.trace.push({ kind: 'term', domain: name, term: record.redirect.text, outcome: inner.result });
    if (inner.result === 'none') return { ...inner, result: 'permerror', problem: `${record.redirect.text}: ${inner.problem ?? 'no SPF record'}` };
    return inner;
  }

  private async evaluateDirective(directive: Directive, domain: string, depth: number): Promise<TermOutcome> {
    const mechanism = directive.mechanism;
    switch (mechanism.kind) {
      case 'all':
        return { kind: 'match' };
      case 'ip4':
      case 'ip6': {
        // §5: an IPv4-mapped client is IPv4 and only ip4 can match it; an ip6 network inside
        // ::ffff:0:0/96 (which parseCidr turns into IPv4) therefore matches nothing.
        const family = mechanism.kind === 'ip4' ? 4 : 6;
        const matches = mechanism.network.family === family && networkHolds(mechanism.network, this.client);
        return matches ? { kind: 'match' } : { kind: 'no-match' };
      }
      default:
        break;
    }
    const overLimit = this.lookups.countTerm();
    if (overLimit !== undefined) return { kind: 'error', result: 'permerror', problem: overLimit };
    const target = mechanism.domain === undefined ? { ok: true as const, name: domain } : targetName(await this.expand(mechanism.domain, domain, 'domain-spec'));
    if (mechanism.kind === 'include') {
      if (!target.ok) return { kind: 'error', result: 'permerror', problem: `${directive.text}: ${target.problem}` };
      return this.include(target.name, depth);
    }
    if (!target.ok) return { kind: 'no-match', note: target.problem };
    switch (mechanism.kind) {
      case 'a':
        return this.addressTerm(target.name, mechanism.cidr4, mechanism.cidr6);
      case 'mx':
        return this.mxTerm(target.name, mechanism.cidr4, mechanism.cidr6);
      case 'ptr':
        return this.ptrTerm(target.name);
      case 'exists':
        return this.existsTerm(target.name);
    }
  }

  private async include(target: string, depth: number): Promise<TermOutcome> {
    const inner = await this.checkHost(target, depth + 1);
    switch (inner.result) {
      case 'pass':
        return { kind: 'match' };
      case 'fail':
      case 'softfail':
      case 'neutral':
        return { kind: 'no-match', note: `${target}: ${inner.result}` };
      case 'temperror':
        return { kind: 'error', result: 'temperror', problem: inner.problem ?? `include:${target} gave temperror` };
      case 'permerror':
        return { kind: 'error', result: 'permerror', problem: inner.problem ?? `include:${target} gave permerror` };
      case 'none':
        return { kind: 'error', result: 'permerror', problem: `include:${target}: ${inner.problem ?? 'no SPF record'}` };
    }
  }

  private addressType(): 'A' | 'AAAA' {
    return this.client.family === 4 ? 'A' : 'AAAA';
  }

  private async addressTerm(name: string, cidr4: number, cidr6: number): Promise<TermOutcome> {
    const answer = await this.lookups.query(this.addressType(), name, 'term');
    const failed = termFailure(answer, name);
    if (failed !== undefined) return failed;
    if (answer.kind !== 'records') return { kind: 'no-match' };
    const prefix = this.client.family === 4 ? cidr4 : cidr6;
    return answer.records.some((address) => addressHolds(address, prefix, this.client)) ? { kind: 'match' } : { kind: 'no-match' };
  }

  private async mxTerm(name: string, cidr4: number, cidr6: number): Promise<TermOutcome> {
    const answer = await this.lookups.query('MX', name, 'term');
    const failed = termFailure(answer, name);
    if (failed !== undefined) return failed;
    if (answer.kind !== 'records') return { kind: 'no-match' };
    if (answer.records.length > this.limits.mxNames) {
      return { kind: 'error', result: 'permerror', problem: `${name} has ${answer.records.length} MX records, more than ${this.limits.mxNames}` };
    }
    const prefix = this.client.family === 4 ? cidr4 : cidr6;
    const exchanges = [...answer.records]
      .sort((x, y) => x.priority - y.priority)
      .map((mx) => canonicalName(mx.exchange))
      // RFC 7505: a null MX (".") names no host.
      .filter((exchange) => exchange !== '');
    // Asked together for latency, judged in preference order as if asked one by one.
    const answers = await Promise.all(exchanges.map((exchange) => this.lookups.query(this.addressType(), exchange, 'dependent')));
    for (const [index, addresses] of answers.entries()) {
      const addressFailure = termFailure(addresses, exchanges[index] ?? '');
      if (addressFailure !== undefined) return addressFailure;
      if (addresses.kind === 'records' && addresses.records.some((address) => addressHolds(address, prefix, this.client))) return { kind: 'match' };
    }
    return { kind: 'no-match' };
  }

  private async ptrTerm(target: string): Promise<TermOutcome> {
    const validated = await this.validatedNames('term');
    if (validated.kind === 'error') return validated;
    const suffix = `.${target.toLowerCase()}`;
    return validated.names.some((name) => name === target.toLowerCase() || name.endsWith(suffix)) ? { kind: 'match' } : { kind: 'no-match' };
  }

  private async existsTerm(name: string): Promise<TermOutcome> {
    const answer = await this.lookups.query('A', name, 'term');
    const failed = termFailure(answer, name);
    if (failed !== undefined) return failed;
    return answer.kind === 'records' ? { kind: 'match' } : { kind: 'no-match' };
  }

  /**
   * §5.5: the client's PTR names (at most ptrNames) whose forward lookup gives the client
   * address back. A failed PTR lookup means no names; a failed forward lookup skips the name.
   * Computed once per evaluation, for ptr terms and %{p} alike.
   */
  private validatedNames(role: 'term' | 'dependent'): Promise<ValidatedNames> {
    this.validated ??= this.findValidatedNames(role);
    return this.validated;
  }

  private async findValidatedNames(role: 'term' | 'dependent'): Promise<ValidatedNames> {
    const answer = await this.lookups.query('PTR', this.client.text, role);
    if (answer.kind === 'limit') return { kind: 'error', result: answer.result, problem: answer.problem };
    if (answer.kind !== 'records') return { kind: 'names', names: [] };
    const candidates = [...new Set(answer.records.map(canonicalName))].slice(0, this.limits.ptrNames);
    const fullLength = this.client.family === 4 ? 32 : 128;
    const forward = await Promise.all(candidates.map((candidate) => this.lookups.query(this.addressType(), candidate, 'dependent')));
    const names: string[] = [];
    for (const [index, addresses] of forward.entries()) {
      if (addresses.kind === 'limit') return { kind: 'error', result: addresses.result, problem: addresses.problem };
      if (addresses.kind === 'records' && addresses.records.some((address) => addressHolds(address, fullLength, this.client))) names.push(candidates[index] ?? '');
    }
    return { kind: 'names', names };
  }

  /** §7.3 %{p}: the domain itself, else one of its subdomains, else any validated name. */
  private async validatedNameFor(domain: string): Promise<string> {
    const validated = await this.validatedNames('dependent');
    if (validated.kind === 'error') return 'unknown';
    const lower = domain.toLowerCase();
    return (
      validated.names.find((name) => name === lower) ??
      validated.names.find((name) => name.endsWith(`.${lower}`)) ??
      validated.names[0] ??
      'unknown'
    );
  }

  /**
   * A domain-spec's expansion (the part of it §7.3 can keep) or an explanation's (cut to
   * MAX_EXPLANATION_LENGTH). Synchronous unless the string uses %{p}, which needs the
   * validated names first.
   */
  private expand(tokens: MacroString, domain: string, kind: 'domain-spec' | 'explanation'): string | Promise<string> {
    const run = (context: MacroContext): string =>
      kind === 'domain-spec' ? expandDomainSpec(tokens, context) : expandMacroString(tokens, context, MAX_EXPLANATION_LENGTH);
    if (!usesValidatedName(tokens)) return run(this.macroContext(domain));
    return this.validatedNameFor(domain).then((validatedName) => run({ ...this.macroContext(domain), validatedName }));
  }

  /** §6.2: the exp= text of the record that failed, or the default explanation. */
  async explain(outcome: HostOutcome): Promise<string> {
    const fromRecord = outcome.explanation === undefined ? undefined : await this.explanationText(outcome.explanation.spec, outcome.explanation.domain);
    if (fromRecord !== undefined) return fromRecord;
    const configured = parseMacroString(this.options.defaultExplanation ?? BUILTIN_DEFAULT_EXPLANATION, { explanation: true });
    return this.expand(configured.ok ? configured.value : BUILTIN_EXPLANATION_TOKENS, outcome.domain, 'explanation');
  }

  private async explanationText(spec: MacroString, domain: string): Promise<string | undefined> {
    const target = targetName(await this.expand(spec, domain, 'domain-spec'));
    if (!target.ok) {
      this.trace.push({ kind: 'note', message: `exp= ignored: ${target.problem}` });
      return undefined;
    }
    const answer: LimitedAnswer<string> = await this.lookups.query('TXT', target.name, 'explanation');
    if (answer.kind !== 'records' || answer.records.length !== 1) {
      this.trace.push({ kind: 'note', message: `exp= ignored: ${target.name} gave ${answer.kind === 'records' ? `${answer.records.length} TXT records` : answer.kind}` });
      return undefined;
    }
    const text = answer.records[0] ?? '';
    const parsed = text.length > MAX_RECORD_LENGTH ? { ok: false as const, problem: `explanation longer than ${MAX_RECORD_LENGTH} characters` } : parseMacroString(text, { explanation: true });
    if (!parsed.ok) {
      this.trace.push({ kind: 'note', message: `exp= ignored: ${parsed.problem}` });
      return undefined;
    }
    return this.expand(parsed.value, domain, 'explanation');
  }
}

/** §5: a term stops at a DNS error (temperror) or a processing limit; NXDOMAIN is no records. */
function termFailure(answer: LimitedAnswer<unknown>, name: string): TermOutcome | undefined {
  if (answer.kind === 'limit') return { kind: 'error', result: answer.result, problem: answer.problem };
  if (answer.kind === 'tempfail') return { kind: 'error', result: 'temperror', problem: `lookup of ${name} failed: ${answer.reason}` };
  return undefined;
}
