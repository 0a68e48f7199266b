import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { formatAuthenticationResults, formatCalloutResult, formatReceivedSpf } from '../../src/checks/auth-results.js';
import type { IprevVerdict } from '../../src/checks/iprev/index.js';
import type { SpfVerdict } from '../../src/checks/spf/types.js';
import type { VerifyResult } from '../../src/verify/types.js';
import { MAX_HEADER_LINE } from '../../src/core/text.js';
import { safeHeader } from '../../src/policy/actions.js';

function spf(overrides: Partial<SpfVerdict> = {}): SpfVerdict {
  return {
    result: 'pass',
    mechanism: 'ip4:192.0.2.0/24',
    domain: 'example.com',
    identity: 'mailfrom',
    sender: 'user@example.com',
    ip: '192.0.2.1',
    helo: 'mail.example.com',
    trace: [],
    lookups: { dnsTerms: 0, voidLookups: 0 },
    ...overrides,
  };
}

const iprev: IprevVerdict = {
  result: 'pass',
  kind: 'confirmed',
  reason: 'ok',
  ip: '2001:db8::1',
  ptrNames: ['mail.example.com'],
  confirmedNames: ['mail.example.com'],
  lookups: [],
};

test('Authentication-Results: resinfos separated by ";", IPv6 quoted, "none" without results', () => {
  assert.equal(
    formatAuthenticationResults({ authservId: 'mx.example.net', spf: [spf()], iprev }),
    'Authentication-Results: mx.example.net; spf=pass (domain of user@example.com designates 192.0.2.1 as permitted sender) smtp.mailfrom=user@example.com; iprev=pass (mail.example.com) policy.iprev="2001:db8::1"',
  );
  assert.equal(formatAuthenticationResults({ authservId: 'mx.example.net' }), 'Authentication-Results: mx.example.net; none');
});

test('values that are not tokens are quoted, comments escaped, non-ASCII replaced', () => {
  const header = formatAuthenticationResults({
    authservId: 'mx example',
    spf: [spf({ result: 'permerror', sender: 'odd "quote"@example.com', problem: 'bad (record) \\ here\r\nInjected: yes', domain: 'example.com' })],
  });
  assert.equal(
    header,
    'Authentication-Results: "mx example"; spf=permerror (permanent error in the SPF record of example.com: bad \\(record\\) \\\\ here Injected: yes) smtp.mailfrom="odd \\"quote\\"@example.com"',
  );
  assert.ok(!/[\r\n]/.test(header));
  const helo = formatAuthenticationResults({ authservId: 'mx', spf: [spf({ identity: 'helo', helo: '[192.0.2.1]' })] });
  assert.match(helo, /smtp\.helo="\[192\.0\.2\.1\]"$/);
});

test('Received-SPF: key=value pairs as dot-atom or quoted-string', () => {
  assert.equal(
    formatReceivedSpf(spf({ result: 'fail', mechanism: '-all', ip: '2001:db8::1' }), 'mx.example.net'),
    'Received-SPF: fail (mx.example.net: domain of user@example.com does not designate 2001:db8::1 as permitted sender) client-ip="2001:db8::1"; envelope-from="user@example.com"; helo=mail.example.com; receiver=mx.example.net; identity=mailfrom; mechanism=-all;',
  );
  const temperror = formatReceivedSpf(spf({ result: 'temperror', mechanism: undefined, problem: 'TXT lookup of example.com failed' }), 'mx');
  assert.match(temperror, /problem="TXT lookup of example\.com failed";$/);
});

test('folding keeps lines within 78 characters at element boundaries', () => {
  const folded = formatReceivedSpf(spf(), 'mx.example.net', { fold: true });
  const lines = folded.split('\r\n');
  assert.ok(lines.length > 1);
  for (const line of lines.slice(1)) assert.match(line, /^ \S/);
  assert.equal(folded.replace(/\r\n/g, ''), formatReceivedSpf(spf(), 'mx.example.net'));
  const authResults = formatAuthenticationResults({ authservId: 'mx.example.net', spf: [spf()], iprev }, { fold: true });
  // Only a single element wider than the line (here a comment) may exceed 78 characters.
  for (const line of [...lines, ...authResults.split('\r\n')]) assert.ok(line.length <= 78 || /^ \(.*\)$/.test(line), line);
});

test('the callout is reported in X-Callout-Result, not as an Authentication-Results method', () => {
  const result = {
    address: 'someone@example.org',
    verdict: 'undeliverable',
    reason: 'rejected-at-rcpt',
    description: 'mx.example.org said 550 5.1.1 at RCPT',
    reply: { stage: 'rcpt', code: 550, enhanced: '5.1.1' },
    source: 'probe',
  } as VerifyResult;
  assert.equal(
    formatCalloutResult(result, 'mx.example.net'),
    'X-Callout-Result: undeliverable (mx.example.org said 550 5.1.1 at RCPT) receiver=mx.example.net; sender="someone@example.org"; reason=rejected-at-rcpt; source=probe; reply="550 5.1.1";',
  );
});

test('fuzz: any texts give one header line of printable ASCII', () => {
  // unit 'binary': any code point, CR, LF and lone surrogates included (fc.string() alone gives printable ASCII).
  const text = fc.string({ unit: 'binary' });
  fc.assert(
    fc.property(text, text, text, text, (sender, helo, problem, id) => {
      const header = formatAuthenticationResults({ authservId: id, spf: [spf({ sender, helo, problem, result: 'permerror' }), spf({ identity: 'helo', helo })] });
      assert.match(header, /^Authentication-Results: [\x20-\x7e]*$/);
      assert.match(formatReceivedSpf(spf({ sender, helo, problem, result: 'temperror' }), id), /^Received-SPF: [\x20-\x7e]*$/);
    }),
    { numRuns: 1000 },
  );
});

test('a field too long for one PREPEND line loses comments, then whole properties, never part of a value', () => {
  // The sender's 279 quotes are escaped to 558 characters: with checkHelo, a cut at the line
  // limit used to fall right after "paypal.com" and report spf=pass smtp.helo=paypal.com.
  const helo = `paypal.com${'x'.repeat(40)}.attacker.example`;
  const verdicts = [spf({ sender: `${'"'.repeat(279)}@attacker.example`, helo }), spf({ identity: 'helo', sender: `postmaster@${helo}`, helo })];
  const header = formatAuthenticationResults({ authservId: 'mx.example.net', spf: verdicts });
  assert.ok(header.length <= MAX_HEADER_LINE, String(header.length));
  assert.equal(safeHeader(header), header, 'nothing is cut when it is PREPENDed');
  assert.ok(header.endsWith(`; spf=pass smtp.helo=${helo}`), header.slice(-120));
  assert.ok(!header.includes('(domain of'), 'comments were dropped first');

  // A HELO longer than the line can hold: its property goes, the result and the other identity stay.
  const huge = `${'h'.repeat(1200)}.example`;
  const withoutHelo = formatAuthenticationResults({ authservId: 'mx.example.net', spf: [spf({ helo: huge }), spf({ identity: 'helo', helo: huge })] });
  assert.equal(withoutHelo, 'Authentication-Results: mx.example.net; spf=pass smtp.mailfrom=user@example.com; spf=pass');
  const received = formatReceivedSpf(spf({ helo: huge }), 'mx.example.net');
  assert.equal(received, 'Received-SPF: pass client-ip=192.0.2.1; envelope-from="user@example.com"; receiver=mx.example.net; identity=mailfrom; mechanism="ip4:192.0.2.0/24";');
});

test('fuzz: any texts give fields within the PREPEND line limit', () => {
  const text = fc.string({ unit: 'binary', maxLength: 700, size: 'max' });
  fc.assert(
    fc.property(text, text, text, (sender, helo, problem) => {
      const verdicts = [spf({ sender, helo, problem, result: 'permerror' }), spf({ identity: 'helo', helo, problem, result: 'temperror' })];
      for (const header of [formatAuthenticationResults({ authservId: 'mx.example.net', spf: verdicts, iprev }), formatReceivedSpf(verdicts[0]!, 'mx.example.net')]) {
        assert.ok(header.length <= MAX_HEADER_LINE, header);
        assert.equal(safeHeader(header), header);
      }
    }),
    { numRuns: 200, endOnFailure: true },
  );
});
