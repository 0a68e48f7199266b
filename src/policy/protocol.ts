/**
 * NAME
 *   policy/protocol - Postfix SMTPD policy delegation codec (pure, no I/O)
 *
 * DESCRIPTION
 *   PolicyRequestDecoder turns the bytes Postfix writes to a policy connection into requests. A
 *   request is a list of "name=value" lines, each ending in LF (CRLF is tolerated: the CR is
 *   dropped), and ends with an empty line. Chunks may split it anywhere, down to single bytes,
 *   and one chunk may hold several requests.
 *
 *   The first '=' of a line separates the name from the value, so values may contain '='. Names
 *   must be non-empty and free of NUL; values must be free of NUL. Attribute order does not
 *   matter and unknown attributes are kept. A repeated attribute keeps its last value (the README
 *   allows the first or the last; the last is what a later, more specific line means). Lines are
 *   decoded as UTF-8 because Postfix passes SMTPUTF8 addresses through unchanged; bytes that are
 *   not UTF-8 become U+FFFD, which the address parsers refuse in a local part or a domain (rule
 *   `not-utf8`, address/mailbox), so such a sender or recipient never passes as a valid address
 *   (sender-syntax refuses it; nothing calls it out). The `request` attribute is required and
 *   must be `smtpd_access_policy`.
 *
 *   After an error event the decoder stops and ignores further input: the protocol has no way to
 *   resynchronise or report an error, so the server must close the connection without a reply.
 *
 *   encodeResponse builds the one-attribute reply "action=TEXT" followed by the empty line.
 *   policyRequestFields reads the attributes Postfix sends (up to 3.8) into typed fields.
 *
 * STANDARDS
 *   Postfix SMTPD_POLICY_README (https://www.postfix.org/SMTPD_POLICY_README.html), access(5).
 *
 * LIMITS
 *   maxLineLength (default 4096 octets, including the LF and any CR), maxAttributes (default 100
 *   lines per request, duplicates included) and maxRequestSize (default 32 KiB, every octet of the
 *   request including the final empty line). Each limit is reported as soon as it is exceeded, so
 *   the decoder never holds more than maxLineLength - 1 octets of an unfinished line nor more than
 *   maxRequestSize octets of one request.
 *
 * ERRORS
 *   Decoder error reasons: 'line-too-long', 'too-many-attributes', 'request-too-large',
 *   'malformed-line' (no '=', an empty name, or a NUL), 'bad-request-type' (`request` missing or
 *   not smtpd_access_policy). encodeResponse throws CalloutError INTERNAL for an action that is
 *   empty or holds CR, LF or NUL: actions come from our own code, so such an action is a bug, and
 *   sending it would let one reply smuggle in another.
 */

import { isAscii } from 'node:buffer';
import { CalloutError } from '../core/errors.js';
import type { ProtocolState } from './types.js';

export interface PolicyLimits {
  maxLineLength?: number;
  maxAttributes?: number;
  maxRequestSize?: number;
}

export type PolicyDecodeErrorReason =
  | 'line-too-long'
  | 'too-many-attributes'
  | 'request-too-large'
  | 'malformed-line'
  | 'bad-request-type';

export type PolicyDecodeEvent =
  | { kind: 'request'; attributes: Record<string, string> }
  | {
      kind: 'error';
      reason: PolicyDecodeErrorReason;
      detail: string;
      /** client_address of the broken request, when it came before the fault (for the log). */
      clientAddress?: string;
    };

export const DEFAULT_POLICY_MAX_LINE_LENGTH = 4096;
export const DEFAULT_POLICY_MAX_ATTRIBUTES = 100;
export const DEFAULT_POLICY_MAX_REQUEST_SIZE = 32 * 1024;

export const POLICY_REQUEST_TYPE = 'smtpd_access_policy';

/** Every attribute Postfix sends, in the order of the README's version table. */
export const POLICY_ATTRIBUTE_NAMES: readonly string[] = [
  // Postfix 2.1
  'request',
  'protocol_state',
  'protocol_name',
  'helo_name',
  'queue_id',
  'sender',
  'recipient',
  'recipient_count',
  'client_address',
  'client_name',
  'reverse_client_name',
  'instance',
  // 2.2
  'sasl_method',
  'sasl_username',
  'sasl_sender',
  'size',
  'ccert_subject',
  'ccert_issuer',
  'ccert_fingerprint',
  // 2.3
  'encryption_protocol',
  'encryption_cipher',
  'encryption_keysize',
  'etrn_domain',
  // 2.5
  'stress',
  // 2.9
  'ccert_pubkey_fingerprint',
  // 3.0
  'client_port',
  // 3.1
  'policy_context',
  // 3.2
  'server_address',
  'server_port',
  // 3.8
  'compatibility_level',
  'mail_version',
];

/** Each of POLICY_ATTRIBUTE_NAMES by itself: the constant for a name read from a request. */
const KNOWN_ATTRIBUTE_NAMES: ReadonlyMap<string, string> = new Map(POLICY_ATTRIBUTE_NAMES.map((name) => [name, name]));

const PROTOCOL_STATES: ReadonlySet<string> = new Set<ProtocolState>([
  'CONNECT',
  'EHLO',
  'HELO',
  'MAIL',
  'RCPT',
  'DATA',
  'END-OF-MESSAGE',
  'VRFY',
  'ETRN',
]);

/** How much of an offending line an error event quotes: enough to recognise, never a flood. */
const QUOTED_PREFIX = 80;
const LF = 0x0a;
const CR = 0x0d;

export class PolicyRequestDecoder {
  private readonly maxLineLength: number;
  private readonly maxAttributes: number;
  private readonly maxRequestSize: number;
  private pieces: Buffer[] = [];
  private lineBytes = 0;
  /** Octets of the current request's finished lines, LFs included. */
  private finishedBytes = 0;
  private attributeLines = 0;
  private attributes: Record<string, string> = {};
  /** The attribute names of the last request, by line, where they are Postfix's (attributeName). */
  private readonly lastNames: Array<string | undefined> = [];
  private stopped = false;

  constructor(limits: PolicyLimits = {}) {
    this.maxLineLength = atLeastOne(limits.maxLineLength ?? DEFAULT_POLICY_MAX_LINE_LENGTH);
    this.maxAttributes = atLeastOne(limits.maxAttributes ?? DEFAULT_POLICY_MAX_ATTRIBUTES);
    this.maxRequestSize = atLeastOne(limits.maxRequestSize ?? DEFAULT_POLICY_MAX_REQUEST_SIZE);
  }

  /** Octets held for the line not yet terminated; never more than maxLineLength - 1. */
  get bufferedBytes(): number {
    return this.lineBytes;
  }

  /** Octets of the unfinished request received so far; never more than maxRequestSize. */
  get requestBytes(): number {
    return this.finishedBytes + this.lineBytes;
  }

  /** Whether an error has been reported; the decoder then ignores all further input. */
  get isStopped(): boolean {
    return this.stopped;
  }

  /** Whether a request has begun and is neither whole nor refused. */
  get hasUnfinishedRequest(): boolean {
    return this.requestBytes > 0 && !this.stopped;
  }

  push(chunk: Buffer): PolicyDecodeEvent[] {
    const events: PolicyDecodeEvent[] = [];
    let start = 0;
    // Tried once per chunk: a chunk with non-ASCII lines is read line by line, not rescanned.
    let tryAscii = true;
    while (!this.stopped && start < chunk.length) {
      // The common case: no line pending from the last chunk and only ASCII up to the chunk's
      // last LF. Those lines are read from one string (an octet is then a character), which
      // costs a fraction of decoding every line on its own.
      if (tryAscii && this.pieces.length === 0) {
        tryAscii = false;
        const lastLf = chunk.lastIndexOf(LF);
        if (lastLf >= start && isAscii(chunk.subarray(start, lastLf + 1))) {
          this.acceptAsciiLines(chunk.toString('latin1', start, lastLf + 1), events);
          start = lastLf + 1;
          continue;
        }
      }
      const lf = chunk.indexOf(LF, start);
      const segmentEnd = lf === -1 ? chunk.length : lf + 1;
      const segmentLength = segmentEnd - start;
      const fault = this.limitExceeded(segmentLength, lf !== -1);
      if (fault) {
        events.push(fault);
        break;
      }
      if (lf === -1) {
        this.pieces.push(Buffer.from(chunk.subarray(start)));
        this.lineBytes += segmentLength;
        break;
      }
      // A line wholly inside this chunk is decoded in place, without a copy.
      const joined = this.pieces.length === 0 ? undefined : Buffer.concat([...this.pieces, chunk.subarray(start, lf)]);
      this.finishedBytes += this.lineBytes + segmentLength;
      this.pieces = [];
      this.lineBytes = 0;
      const event = joined ? this.acceptLine(joined.toString('utf8')) : this.acceptLine(chunk.toString('utf8', start, lf));
      if (event) events.push(event);
      start = segmentEnd;
    }
    return events;
  }

  /** Whole lines, each ending in LF, of an ASCII text; read by position, without a string per line. */
  private acceptAsciiLines(text: string, events: PolicyDecodeEvent[]): void {
    const mayHoldNul = text.includes('\0');
    let start = 0;
    while (!this.stopped && start < text.length) {
      const lf = text.indexOf('\n', start);
      const segmentLength = lf + 1 - start;
      const fault = this.limitExceeded(segmentLength, true);
      if (fault) {
        events.push(fault);
        return;
      }
      this.finishedBytes += segmentLength;
      const end = lf > start && text.charCodeAt(lf - 1) === CR ? lf - 1 : lf;
      const event = this.acceptText(text, start, end, mayHoldNul);
      if (event) events.push(event);
      start = lf + 1;
    }
  }

  /**
   * The limit the next segmentLength octets exceed, if any. When one segment exceeds both, the
   * one crossed at the earlier octet wins, so that the outcome does not depend on how the input
   * was split into chunks. A line is too long at its maxLineLength-th octet that is not its LF
   * (the LF can no longer fit); a request is too large at its (maxRequestSize + 1)-th octet.
   */
  private limitExceeded(segmentLength: number, endsWithLf: boolean): PolicyDecodeEvent | undefined {
    const lineOctetsInSegment = endsWithLf ? segmentLength - 1 : segmentLength;
    const lineTrip = this.maxLineLength - this.lineBytes;
    const requestTrip = this.maxRequestSize - this.requestBytes + 1;
    const lineExceeded = lineTrip <= lineOctetsInSegment;
    const requestExceeded = requestTrip <= segmentLength;
    if (lineExceeded && (!requestExceeded || lineTrip <= requestTrip)) {
      return this.fail('line-too-long', `line longer than ${this.maxLineLength} octets`);
    }
    if (requestExceeded) return this.fail('request-too-large', `request larger than ${this.maxRequestSize} octets`);
    return undefined;
  }

  /** One decoded line, its LF excluded. */
  private acceptLine(line: string): PolicyDecodeEvent | undefined {
    return this.acceptText(line, 0, line.endsWith('\r') ? line.length - 1 : line.length, true);
  }

  /** The line text[start, end), its line end excluded. */
  private acceptText(text: string, start: number, end: number, mayHoldNul: boolean): PolicyDecodeEvent | undefined {
    if (end === start) return this.finishRequest();
    if (this.attributeLines === this.maxAttributes) {
      return this.fail('too-many-attributes', `request with more than ${this.maxAttributes} attributes`);
    }
    this.attributeLines += 1;
    // UTF-8 decoding never makes U+0000 of anything but a NUL octet, so the text tells.
    if (mayHoldNul && text.slice(start, end).includes('\0')) return this.fail('malformed-line', `attribute line with a NUL octet: ${quote(text, start, end)}`);
    const equals = text.indexOf('=', start);
    if (equals === -1 || equals >= end) return this.fail('malformed-line', `attribute line without '=': ${quote(text, start, end)}`);
    if (equals === start) return this.fail('malformed-line', `attribute line with an empty name: ${quote(text, start, end)}`);
    const name = this.attributeName(text, start, equals);
    const value = text.slice(equals + 1, end);
    // Plain assignment would set the prototype instead of an attribute named __proto__.
    if (name === '__proto__') Object.defineProperty(this.attributes, name, { value, enumerable: true, writable: true, configurable: true });
    else this.attributes[name] = value;
    return undefined;
  }

  /**
   * The name text[start, equals) of the request's next attribute line. Postfix sends its
   * attributes in the same order in every request, so the name is first looked for where the
   * connection's last request had it, as the constant of POLICY_ATTRIBUTE_NAMES: a name sliced
   * from the text had to be looked up in V8's string table to become a property key (a
   * hundredth of the CPU of a greylisting answer), a constant already is one.
   */
  private attributeName(text: string, start: number, equals: number): string {
    const line = this.attributeLines - 1;
    const expected = this.lastNames[line];
    if (expected !== undefined && expected.length === equals - start && text.startsWith(expected, start)) return expected;
    const name = text.slice(start, equals);
    // Only constants are kept: a slice would hold on to the whole chunk it came in.
    this.lastNames[line] = KNOWN_ATTRIBUTE_NAMES.get(name);
    return name;
  }

  private finishRequest(): PolicyDecodeEvent {
    const requestType = Object.hasOwn(this.attributes, 'request') ? this.attributes.request : undefined;
    if (requestType === undefined) return this.fail('bad-request-type', 'request without a request attribute');
    if (requestType !== POLICY_REQUEST_TYPE) {
      return this.fail('bad-request-type', `request=${JSON.stringify(requestType.slice(0, QUOTED_PREFIX))} is not ${POLICY_REQUEST_TYPE}`);
    }
    const attributes = this.attributes;
    this.resetRequest();
    return { kind: 'request', attributes };
  }

  private fail(reason: PolicyDecodeErrorReason, detail: string): PolicyDecodeEvent {
    const clientAddress = Object.hasOwn(this.attributes, 'client_address') ? this.attributes.client_address : undefined;
    this.stopped = true;
    this.pieces = [];
    this.lineBytes = 0;
    this.resetRequest();
    return clientAddress === undefined ? { kind: 'error', reason, detail } : { kind: 'error', reason, detail, clientAddress };
  }

  private resetRequest(): void {
    this.finishedBytes = 0;
    this.attributeLines = 0;
    this.attributes = {};
  }
}

function atLeastOne(limit: number): number {
  return Math.max(1, Math.floor(limit));
}

function quote(text: string, start: number, end: number): string {
  return JSON.stringify(text.slice(start, Math.min(end, start + QUOTED_PREFIX)));
}

/** The reply "action=TEXT\n\n"; TEXT is any access(5) action, e.g. 'DUNNO' or '550 5.1.0 text'. */
export function encodeResponse(action: string): Buffer {
  if (action.trim() === '') throw new CalloutError('INTERNAL', 'policy action is empty');
  if (/[\r\n\0]/.test(action)) {
    throw new CalloutError('INTERNAL', `policy action contains CR, LF or NUL: ${JSON.stringify(action.slice(0, QUOTED_PREFIX))}`);
  }
  return Buffer.from(`action=${action}\n\n`, 'utf8');
}

export function isProtocolState(text: string): text is ProtocolState {
  return PROTOCOL_STATES.has(text);
}

/**
 * The attributes a policy decision usually needs. Missing attributes read as '' (texts), 0
 * (numbers) or false, which is also how Postfix reports a value it does not have.
 */
export interface PolicyRequestFields {
  request: string;
  /** Upper-cased; see isProtocolState for the states Postfix defines. */
  protocolState: string;
  /** 'SMTP' or 'ESMTP' (upper-cased). */
  protocolName: string;
  heloName: string;
  queueId: string;
  /** As sent, without angle brackets; '' is the null sender. */
  sender: string;
  recipient: string;
  /** Non-zero only at DATA and END-OF-MESSAGE. */
  recipientCount: number;
  /** Without brackets or an 'IPv6:' prefix. */
  clientAddress: string;
  /** Verified client name, 'unknown' when it has none. */
  clientName: string;
  reverseClientName: string;
  clientPort: number;
  /** Links the requests of one message on this connection. */
  instance: string;
  saslMethod: string;
  saslUsername: string;
  saslSender: string;
  /** The MAIL FROM SIZE= value; the real size at END-OF-MESSAGE. */
  size: number;
  /** The ccert_* values are xtext-encoded (+XX) by Postfix and left so. */
  ccertSubject: string;
  ccertIssuer: string;
  ccertFingerprint: string;
  ccertPubkeyFingerprint: string;
  encryptionProtocol: string;
  encryptionCipher: string;
  encryptionKeysize: number;
  etrnDomain: string;
  /** Postfix is under stress (stress=yes). */
  stress: boolean;
  policyContext: string;
  serverAddress: string;
  serverPort: number;
  compatibilityLevel: string;
  mailVersion: string;
}

/** Postfix is under stress: all its smtpd processes are busy (stress=yes). */
export function isStressed(attributes: Readonly<Record<string, string>>): boolean {
  return (attributes.stress ?? '').toLowerCase() === 'yes';
}

export function policyRequestFields(attributes: Readonly<Record<string, string>>): PolicyRequestFields {
  const text = (name: string): string => attributes[name] ?? '';
  const count = (name: string): number => nonNegativeInteger(text(name));
  return {
    request: text('request'),
    protocolState: text('protocol_state').toUpperCase(),
    protocolName: text('protocol_name').toUpperCase(),
    heloName: text('helo_name'),
    queueId: text('queue_id'),
    sender: text('sender'),
    recipient: text('recipient'),
    recipientCount: count('recipient_count'),
    clientAddress: bareAddress(text('client_address')),
    clientName: text('client_name'),
    reverseClientName: text('reverse_client_name'),
    clientPort: count('client_port'),
    instance: text('instance'),
    saslMethod: text('sasl_method'),
    saslUsername: text('sasl_username'),
    saslSender: text('sasl_sender'),
    size: count('size'),
    ccertSubject: text('ccert_subject'),
    ccertIssuer: text('ccert_issuer'),
    ccertFingerprint: text('ccert_fingerprint'),
    ccertPubkeyFingerprint: text('ccert_pubkey_fingerprint'),
    encryptionProtocol: text('encryption_protocol'),
    encryptionCipher: text('encryption_cipher'),
    encryptionKeysize: count('encryption_keysize'),
    etrnDomain: text('etrn_domain'),
    stress: isStressed(attributes),
    policyContext: text('policy_context'),
    serverAddress: bareAddress(text('server_address')),
    serverPort: count('server_port'),
    compatibilityLevel: text('compatibility_level'),
    mailVersion: text('mail_version'),
  };
}

/** Postfix sends bare addresses, but an address written as an SMTP literal must compare equal. */
export function bareAddress(address: string): string {
  const trimmed = address.trim();
  const unbracketed = trimmed.startsWith('[') && trimmed.endsWith(']') ? trimmed.slice(1, -1) : trimmed;
  return /^ipv6:/i.test(unbracketed) ? unbracketed.slice('ipv6:'.length) : unbracketed;
}

/** Digits only (at most 15, to stay exact); anything else is "not available", i.e. 0. */
function nonNegativeInteger(text: string): number {
  return /^[0-9]{1,15}$/.test(text.trim()) ? Number(text.trim()) : 0;
}
