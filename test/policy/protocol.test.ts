import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { CalloutError } from '../../src/core/errors.js';
import {
  DEFAULT_POLICY_MAX_ATTRIBUTES,
  DEFAULT_POLICY_MAX_LINE_LENGTH,
  DEFAULT_POLICY_MAX_REQUEST_SIZE,
  POLICY_ATTRIBUTE_NAMES,
  PolicyRequestDecoder,
  encodeResponse,
  isProtocolState,
  policyRequestFields,
  type PolicyDecodeEvent,
  type PolicyLimits,
} from '../../src/policy/protocol.js';
import { elapsedMs } from '../support/fuzz.js';

/**
 * A RCPT request as Postfix 3.7.11 sent it to check_policy_service (captured on loopback, then
 * given documentation addresses and TLS values): 29 attributes, in Postfix's own order.
 */
const FIXTURE = readFileSync(new URL('./fixtures/postfix-3.7-rcpt.txt', import.meta.url));

function decodeAll(input: string | Buffer, limits?: PolicyLimits): PolicyDecodeEvent[] {
  return new PolicyRequestDecoder(limits).push(Buffer.isBuffer(input) ? input : Buffer.from(input, 'utf8'));
}

function decodeByteByByte(input: string | Buffer, limits?: PolicyLimits): PolicyDecodeEvent[] {
  const bytes = Buffer.isBuffer(input) ? input : Buffer.from(input, 'utf8');
  const decoder = new PolicyRequestDecoder(limits);
  const events: PolicyDecodeEvent[] = [];
  for (let i = 0; i < bytes.length; i += 1) events.push(...decoder.push(bytes.subarray(i, i + 1)));
  return events;
}

const REQ = 'request=smtpd_access_policy\n';

interface Case {
  name: string;
  input: string | Buffer;
  limits?: PolicyLimits;
  want: PolicyDecodeEvent[];
}

function request(attributes: Record<string, string>): PolicyDecodeEvent {
  return { kind: 'request', attributes: { request: 'smtpd_access_policy', ...attributes } };
}

function error(reason: Extract<PolicyDecodeEvent, { kind: 'error' }>['reason'], clientAddress?: string): Partial<PolicyDecodeEvent> {
  return clientAddress === undefined ? { kind: 'error', reason } : { kind: 'error', reason, clientAddress };
}

const cases: Case[] = [
  {
    name: 'single request',
    input: `${REQ}protocol_state=RCPT\nsender=a@b.example\n\n`,
    want: [request({ protocol_state: 'RCPT', sender: 'a@b.example' })],
  },
  {
    name: 'several requests in one chunk',
    input: `${REQ}instance=1\n\n${REQ}instance=2\n\n${REQ}instance=3\n\n`,
    want: [request({ instance: '1' }), request({ instance: '2' }), request({ instance: '3' })],
  },
  {
    name: 'CRLF line ends',
    input: `request=smtpd_access_policy\r\nsender=a@b.example\r\n\r\n`,
    want: [request({ sender: 'a@b.example' })],
  },
  {
    name: 'mixed LF and CRLF, CR only removed at the end of a line',
    input: `${REQ}a=x\ry\r\n\n`,
    want: [request({ a: 'x\ry' })],
  },
  {
    name: 'duplicate attribute keeps the last value',
    input: `${REQ}sender=first@example.com\nsender=last@example.com\n\n`,
    want: [request({ sender: 'last@example.com' })],
  },
  {
    name: 'the first = splits, values may hold =',
    input: `${REQ}ccert_subject=CN=mx,O=x==\n\n`,
    want: [request({ ccert_subject: 'CN=mx,O=x==' })],
  },
  {
    name: 'empty values and unknown attributes are kept',
    input: `${REQ}queue_id=\nfuture_attribute=42\n\n`,
    want: [request({ queue_id: '', future_attribute: '42' })],
  },
  {
    name: 'prototype-like names are plain attributes',
    input: `${REQ}__proto__=x\nconstructor=y\n\n`,
    want: [{ kind: 'request', attributes: Object.fromEntries([['request', 'smtpd_access_policy'], ['__proto__', 'x'], ['constructor', 'y']]) }],
  },
  {
    name: 'UTF-8 values (SMTPUTF8 addresses)',
    input: `${REQ}sender=jösé@bücher.example\nrecipient=用户@例子.example\n\n`,
    want: [request({ sender: 'jösé@bücher.example', recipient: '用户@例子.example' })],
  },
  {
    name: 'invalid UTF-8 becomes U+FFFD',
    input: Buffer.concat([Buffer.from(`${REQ}sender=a`), Buffer.from([0xff, 0xc3]), Buffer.from('@b.example\n\n')]),
    want: [request({ sender: 'a\ufffd\ufffd@b.example' })],
  },
  {
    name: 'an unfinished request yields nothing yet',
    input: `${REQ}sender=a@b.example\n`,
    want: [],
  },
  { name: 'line without =', input: `${REQ}garbage\n\n`, want: [error('malformed-line')] as PolicyDecodeEvent[] },
  { name: 'empty name', input: `${REQ}=value\n\n`, want: [error('malformed-line')] as PolicyDecodeEvent[] },
  { name: 'NUL in a value', input: `${REQ}sender=a\0b\n\n`, want: [error('malformed-line')] as PolicyDecodeEvent[] },
  { name: 'NUL in a name', input: `${REQ}sen\0der=ab\n\n`, want: [error('malformed-line')] as PolicyDecodeEvent[] },
  { name: 'missing request attribute', input: 'sender=a@b.example\n\n', want: [error('bad-request-type')] as PolicyDecodeEvent[] },
  { name: 'a lone empty line is a request without request=', input: '\n', want: [error('bad-request-type')] as PolicyDecodeEvent[] },
  {
    name: 'wrong request type',
    input: 'request=smtpd_access_policy2\n\n',
    want: [error('bad-request-type')] as PolicyDecodeEvent[],
  },
  {
    name: 'the request type is matched exactly, case included (SMTPD_POLICY_README: request=smtpd_access_policy)',
    input: 'request=SMTPD_ACCESS_POLICY\n\n',
    want: [error('bad-request-type')] as PolicyDecodeEvent[],
  },
  {
    name: 'the error names the client_address seen before it',
    input: `${REQ}client_address=192.0.2.1\nbroken\n\n`,
    want: [error('malformed-line', '192.0.2.1')] as PolicyDecodeEvent[],
  },
  {
    name: 'requests before an error are delivered, nothing after it',
    input: `${REQ}instance=1\n\nbroken\n\n${REQ}instance=3\n\n`,
    want: [request({ instance: '1' }), error('malformed-line')] as PolicyDecodeEvent[],
  },
];

/** Error events carry a free-text detail; compare everything else. */
function withoutDetail(events: PolicyDecodeEvent[]): Partial<PolicyDecodeEvent>[] {
  return events.map((event) => {
    if (event.kind !== 'error') return event;
    assert.equal(typeof event.detail, 'string');
    assert.ok(event.detail.length > 0 && event.detail.length < 200, event.detail);
    const { detail: _detail, ...rest } = event;
    return rest;
  });
}

describe('PolicyRequestDecoder', () => {
  for (const c of cases) {
    it(c.name, () => {
      assert.deepEqual(withoutDetail(decodeAll(c.input, c.limits)), c.want);
    });
    it(`${c.name} (byte by byte)`, () => {
      assert.deepEqual(withoutDetail(decodeByteByByte(c.input, c.limits)), c.want);
    });
  }

  it('decodes the Postfix 3.7 RCPT fixture (29 attributes)', () => {
    const events = decodeAll(FIXTURE);
    assert.equal(events.length, 1);
    const event = events[0];
    assert.ok(event?.kind === 'request', 'event?.kind === \'request\'');
    assert.equal(Object.keys(event.attributes).length, 29);
    for (const name of Object.keys(event.attributes)) assert.ok(POLICY_ATTRIBUTE_NAMES.includes(name), name);
    assert.equal(event.attributes['instance'], '578f.6b12d2cd.260c3.0');
  });

  it('stops after an error', () => {
    const decoder = new PolicyRequestDecoder();
    assert.equal(decoder.push(Buffer.from('broken\n'))[0]?.kind, 'error');
    assert.ok(decoder.isStopped, 'decoder.isStopped');
    assert.deepEqual(decoder.push(Buffer.from(`${REQ}\n`)), []);
    assert.equal(decoder.bufferedBytes, 0);
    assert.equal(decoder.requestBytes, 0);
  });

  it('has the documented defaults', () => {
    assert.equal(DEFAULT_POLICY_MAX_LINE_LENGTH, 4096);
    assert.equal(DEFAULT_POLICY_MAX_ATTRIBUTES, 100);
    assert.equal(DEFAULT_POLICY_MAX_REQUEST_SIZE, 32768);
  });

  describe('limits at their edges', () => {
    it('a line of exactly maxLineLength octets (LF included) is accepted, one more is not', () => {
      const value = (length: number): string => 'x'.repeat(length - 'sender='.length - 1);
      assert.deepEqual(decodeAll(`${REQ}sender=${value(4096)}\n\n`), [request({ sender: value(4096) })]);
      assert.equal(decodeAll(`${REQ}sender=${value(4097)}\n\n`)[0]?.kind, 'error');
      assert.equal((decodeAll(`${REQ}sender=${value(4097)}\n\n`)[0] as { reason: string }).reason, 'line-too-long');
    });

    it('the CR of CRLF counts towards the line length', () => {
      const limits = { maxLineLength: 10 };
      assert.deepEqual(decodeAll('a=1234567\n', limits), []);
      assert.equal((decodeAll('a=1234567\r\n', limits)[0] as { reason: string }).reason, 'line-too-long');
    });

    it('an over-long line is reported before its end arrives, and nothing of it is held', () => {
      const decoder = new PolicyRequestDecoder({ maxLineLength: 16 });
      assert.deepEqual(decoder.push(Buffer.from('sender=12345678')), []);
      assert.equal(decoder.bufferedBytes, 15);
      const events = decoder.push(Buffer.from('9'));
      assert.equal((events[0] as { reason: string }).reason, 'line-too-long');
      assert.equal(decoder.bufferedBytes, 0);
    });

    it('maxAttributes lines are accepted, one more is not', () => {
      const lines = (count: number): string => REQ + Array.from({ length: count - 1 }, (_, i) => `a${i}=v\n`).join('') + '\n';
      assert.equal(decodeAll(lines(100))[0]?.kind, 'request');
      assert.equal((decodeAll(lines(101))[0] as { reason: string }).reason, 'too-many-attributes');
    });

    it('duplicates count towards maxAttributes', () => {
      const input = REQ + 'sender=x\n'.repeat(3) + '\n';
      assert.equal((decodeAll(input, { maxAttributes: 3 })[0] as { reason: string }).reason, 'too-many-attributes');
      assert.equal(decodeAll(input, { maxAttributes: 4 })[0]?.kind, 'request');
    });

    it('a request of exactly maxRequestSize octets is accepted, one more is not', () => {
      const exact = `${REQ}x=${'y'.repeat(100 - REQ.length - 'x=\n\n'.length)}\n\n`;
      assert.equal(Buffer.byteLength(exact), 100);
      assert.equal(decodeAll(exact, { maxRequestSize: 100 })[0]?.kind, 'request');
      assert.equal((decodeAll(exact, { maxRequestSize: 99 })[0] as { reason: string }).reason, 'request-too-large');
      assert.equal((decodeByteByByte(exact, { maxRequestSize: 99 })[0] as { reason: string }).reason, 'request-too-large');
    });

    it('a line that crosses both limits at the same octet is too long, whole or byte by byte', () => {
      // Octet 10 is both the line's 10th non-LF octet and the request's (9 + 1)-th.
      const limits = { maxLineLength: 10, maxRequestSize: 9 };
      assert.equal((decodeAll('a=12345678901\n', limits)[0] as { reason: string }).reason, 'line-too-long');
      assert.equal((decodeByteByByte('a=12345678901\n', limits)[0] as { reason: string }).reason, 'line-too-long');
    });

    it('a limit below one is taken as one, not as a decoder that refuses every request', () => {
      assert.equal(decodeAll(`${REQ}\n`, { maxAttributes: 0 })[0]?.kind, 'request');
      assert.equal((decodeAll(`${REQ}a=b\n\n`, { maxAttributes: 0 })[0] as { reason: string }).reason, 'too-many-attributes');
    });

    it('the size limit is per request, not per connection', () => {
      const one = `${REQ}instance=1\n\n`;
      const events = decodeAll(one.repeat(10), { maxRequestSize: one.length });
      assert.equal(events.length, 10);
      assert.ok(events.every((event) => event.kind === 'request'), 'events.every((event) => event.kind === \'request\')');
    });
  });
});

describe('encodeResponse', () => {
  it('writes action=TEXT and the empty line', () => {
    assert.equal(encodeResponse('DUNNO').toString(), 'action=DUNNO\n\n');
    assert.equal(encodeResponse('550 5.1.0 <a@b.example>: Sender address rejected').toString(), 'action=550 5.1.0 <a@b.example>: Sender address rejected\n\n');
    assert.equal(encodeResponse('PREPEND X-Ünïcode: yes').toString('utf8'), 'action=PREPEND X-Ünïcode: yes\n\n');
  });

  for (const bad of ['DUNNO\n', 'REJECT a\r\nx', 'OK\0', '', '  ']) {
    it(`refuses ${JSON.stringify(bad)} as a bug`, () => {
      assert.throws(
        () => encodeResponse(bad),
        (err: unknown) => err instanceof CalloutError && err.code === 'INTERNAL',
      );
    });
  }
});

describe('policyRequestFields', () => {
  it('reads the fixture', () => {
    const event = decodeAll(FIXTURE)[0];
    assert.ok(event?.kind === 'request', 'event?.kind === \'request\'');
    const fields = policyRequestFields(event.attributes);
    assert.deepEqual(fields, {
      request: 'smtpd_access_policy',
      protocolState: 'RCPT',
      protocolName: 'ESMTP',
      heloName: 'mail.sender.example',
      queueId: '',
      sender: 'bob@sender.example',
      recipient: 'alice@example.test',
      recipientCount: 0,
      clientAddress: '192.0.2.10',
      clientName: 'mail.sender.example',
      reverseClientName: 'mail.sender.example',
      clientPort: 57962,
      instance: '578f.6b12d2cd.260c3.0',
      saslMethod: '',
      saslUsername: '',
      saslSender: '',
      size: 2048,
      ccertSubject: '',
      ccertIssuer: '',
      ccertFingerprint: '',
      ccertPubkeyFingerprint: '',
      encryptionProtocol: 'TLSv1.3',
      encryptionCipher: 'TLS_AES_256_GCM_SHA384',
      encryptionKeysize: 256,
      etrnDomain: '',
      stress: false,
      policyContext: '',
      serverAddress: '198.51.100.25',
      serverPort: 25,
      compatibilityLevel: '',
      mailVersion: '',
    });
  });

  it('gives defaults for an empty request', () => {
    const fields = policyRequestFields({});
    assert.equal(fields.sender, '');
    assert.equal(fields.size, 0);
    assert.equal(fields.stress, false);
    assert.equal(fields.protocolState, '');
  });

  it('normalises state, addresses, numbers and stress', () => {
    const fields = policyRequestFields({
      protocol_state: 'end-of-message',
      client_address: '[IPv6:2001:db8::1]',
      server_address: '[192.0.2.1]',
      size: '12abc',
      recipient_count: '3',
      client_port: '-1',
      stress: 'yes',
      compatibility_level: '3.6',
      mail_version: '3.8.1',
    });
    assert.equal(fields.protocolState, 'END-OF-MESSAGE');
    assert.ok(isProtocolState(fields.protocolState), 'isProtocolState(fields.protocolState)');
    assert.equal(fields.clientAddress, '2001:db8::1');
    assert.equal(fields.serverAddress, '192.0.2.1');
    assert.equal(fields.size, 0);
    assert.equal(fields.recipientCount, 3);
    assert.equal(fields.clientPort, 0);
    assert.equal(fields.stress, true);
    assert.equal(fields.compatibilityLevel, '3.6');
    assert.equal(fields.mailVersion, '3.8.1');
    assert.equal(policyRequestFields({ client_address: '1:2:3::4:5:6' }).clientAddress, '1:2:3::4:5:6');
  });

  it('strips only a whole pair of brackets: a lone bracket is no literal, and no other address is made of it', () => {
    assert.equal(policyRequestFields({ client_address: '192.0.2.1]' }).clientAddress, '192.0.2.1]');
    assert.equal(policyRequestFields({ client_address: '[192.0.2.1' }).clientAddress, '[192.0.2.1');
    assert.equal(policyRequestFields({ client_address: ' [192.0.2.1] ' }).clientAddress, '192.0.2.1');
  });

  it('reads a number of more than 15 digits as not available, since a double is no longer exact there', () => {
    // 2^53 + 1 (16 digits) would read as 2^53.
    assert.equal(policyRequestFields({ size: '9007199254740993' }).size, 0);
    assert.equal(policyRequestFields({ size: '999999999999999' }).size, 999_999_999_999_999);
    assert.equal(policyRequestFields({ size: ' 2048 ' }).size, 2048, 'surrounding blanks are no reason to lose the value');
  });

  it('reads stress=yes in any case', () => {
    assert.equal(policyRequestFields({ stress: 'YES' }).stress, true);
    assert.equal(policyRequestFields({ stress: 'no' }).stress, false);
  });

  it('knows every protocol state and no others', () => {
    for (const state of ['CONNECT', 'EHLO', 'HELO', 'MAIL', 'RCPT', 'DATA', 'END-OF-MESSAGE', 'VRFY', 'ETRN']) assert.ok(isProtocolState(state), 'isProtocolState(state)');
    assert.ok(!isProtocolState('rcpt'), '!isProtocolState(\'rcpt\')');
    assert.ok(!isProtocolState('BDAT'), '!isProtocolState(\'BDAT\')');
  });

  it('lists the 31 attributes Postfix sends up to 3.8', () => {
    assert.equal(POLICY_ATTRIBUTE_NAMES.length, 31);
    assert.equal(new Set(POLICY_ATTRIBUTE_NAMES).size, 31);
  });
});

describe('PolicyRequestDecoder properties', () => {
  const limits = { maxLineLength: 64, maxAttributes: 8, maxRequestSize: 256 };

  it('random bytes never throw and never buffer beyond the limits', () => {
    const interesting = fc.oneof(
      fc.uint8Array({ maxLength: 80 }),
      fc.constantFrom('\n', '\r\n', '=', 'request=smtpd_access_policy\n', '\0', 'a=b\n').map((text) => new Uint8Array(Buffer.from(text))),
    );
    fc.assert(
      fc.property(fc.array(interesting, { maxLength: 60 }), (chunks) => {
        const decoder = new PolicyRequestDecoder(limits);
        for (const chunk of chunks) {
          const events = decoder.push(Buffer.from(chunk));
          for (const event of events) assert.ok(event.kind === 'request' || event.kind === 'error', 'event.kind === \'request\' || event.kind === \'error\'');
          assert.ok(decoder.bufferedBytes < limits.maxLineLength, 'decoder.bufferedBytes < limits.maxLineLength');
          assert.ok(decoder.requestBytes <= limits.maxRequestSize, 'decoder.requestBytes <= limits.maxRequestSize');
        }
      }),
      { numRuns: 500 },
    );
  });

  it('decoding any input byte by byte gives the same events as decoding it whole', () => {
    const validLine = fc.nat({ max: 70 }).map((length) => `k=${'v'.repeat(length)}\n`);
    const piece = fc.oneof(
      { arbitrary: fc.uint8Array({ maxLength: 40 }), weight: 1 },
      { arbitrary: fc.constantFrom('\n', '\r\n', 'request=smtpd_access_policy\n', 'x'.repeat(30)), weight: 3 },
      { arbitrary: validLine, weight: 6 },
    ).map((p) => (typeof p === 'string' ? new Uint8Array(Buffer.from(p)) : p));
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 30 }), (pieces) => {
        const input = Buffer.concat(pieces.map((p) => Buffer.from(p)));
        assert.deepEqual(decodeByteByByte(input, limits), decodeAll(input, limits));
      }),
      { numRuns: 300 },
    );
  });

  const attributeName = fc.stringMatching(/^[a-z_]{1,12}$/);
  const attributeValue = fc.string({ maxLength: 20, unit: 'grapheme' }).filter((v) => !/[\0\r\n]/.test(v));
  const validRequest = fc
    .dictionary(attributeName, attributeValue, { maxKeys: 6 })
    .map((attributes) => ({ ...attributes, request: 'smtpd_access_policy' }));

  it('any split of a valid stream gives the same requests', () => {
    fc.assert(
      fc.property(fc.array(validRequest, { minLength: 1, maxLength: 5 }), fc.array(fc.nat(), { maxLength: 20 }), fc.boolean(), (requests, cuts, crlf) => {
        const eol = crlf ? '\r\n' : '\n';
        const stream = Buffer.from(requests.map((attributes) => Object.entries(attributes).map(([k, v]) => `${k}=${v}${eol}`).join('') + eol).join(''), 'utf8');
        const whole = new PolicyRequestDecoder().push(stream);
        assert.deepEqual(whole, requests.map((attributes) => ({ kind: 'request', attributes })));
        const positions = [...new Set(cuts.map((cut) => cut % (stream.length + 1)))].sort((a, b) => a - b);
        const decoder = new PolicyRequestDecoder();
        const split: PolicyDecodeEvent[] = [];
        let previous = 0;
        for (const position of [...positions, stream.length]) {
          split.push(...decoder.push(stream.subarray(previous, position)));
          previous = position;
        }
        assert.deepEqual(split, whole);
      }),
      { numRuns: 300 },
    );
  });
});

const DEFAULT_LINE = 4096;

describe('PolicyRequestDecoder in linear time', () => {
  it('decodes the largest request its default limits let through, fed an octet at a time, without a quadratic scan', () => {
    const line = `x=${'v'.repeat(DEFAULT_LINE - 3)}\n`;
    const bytes = Buffer.from(`request=smtpd_access_policy\n${line.repeat(7)}\n${'y'.repeat(DEFAULT_LINE * 2)}`);
    let requests = 0;
    // Generous bound against a quadratic scan, not a speed claim.
    const ms = elapsedMs(() => {
      const decoder = new PolicyRequestDecoder();
      for (let i = 0; i < bytes.length; i++) for (const event of decoder.push(bytes.subarray(i, i + 1))) requests += event.kind === 'request' ? 1 : 0;
    });
    // One request each of the three calls; the over-long line after it is refused.
    assert.equal(requests, 3);
    assert.ok(ms < 1000, `${ms} ms`);
  });
});
