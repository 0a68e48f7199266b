import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { formatAuthenticationResults, formatCalloutResult, formatReceivedSpf } from '../../src/checks/auth-results.js';
import type { IprevVerdict } from '../../src/checks/iprev/index.js';
import type { SpfVerdict } from '../../src/checks/spf/types.js';
import type { VerifyResult } from '../../src/verify/types.js';
import { MAX_HEADER_LINE } from '../../src/core/text.js';
import { safeHeader } from '../../src/policy/actions.js';
import { elapsedMs } from '../support/fuzz.js';

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
  assert.ok(!/[\r\n]/.test(header), '!/[\\r\\n]/.test(header)');
  const helo = formatAuthenticationResults({ authservId: 'mx', spf: [spf({ identity: 'helo', helo: '[192.0.2.1]' })] });
  assert.match(helo, /smtp\.helo="\[192\.0\.2\.1\]"$/);
});


test('an address is a pvalue unquoted only with an RFC 6376 domain-name: two labels, no "-" at either end', () => {
  const property = (sender: string) => formatAuthenticationResults({ authservId: 'mx', spf: [spf({ sender })] }).replace(/^.*smtp\.mailfrom=/, '');
  assert.equal(property('user@localhost'), '"user@localhost"');
  assert.equal(property('user@-evil.example'), '"user@-evil.example"');
  assert.equal(property('user@evil-.example'), '"user@evil-.example"');
  assert.equal(property('user@mail.example.com'), 'user@mail.example.com');
  assert.equal(property('@example.com'), '@example.com');
  assert.equal(property('localhost'), 'localhost', 'a token without "@" needs no quotes');

  // RFC 8601 §2.2 pvalue, read independently: a MIME token, a quoted-string, or [[local-part] "@"] domain-name.
  const label = '[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?';
  const atext = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+";
  const pvalue = new RegExp(`^(?:"(?:[^"\\\\]|\\\\.)*"|[^\\s()<>@,;:\\\\"/[\\]?=]+|(?:(?:${atext}(?:\\.${atext})*)?@)?${label}(?:\\.${label})+)$`);
  const piece = fc.constantFrom('a', 'b-', '-', '.', '@', 'localhost', 'example', '_', '1');
  fc.assert(
    fc.property(fc.array(piece, { maxLength: 8 }), (pieces) => {
      const value = property(pieces.join(''));
      assert.match(value, pvalue, pieces.join(''));
    }),
    { numRuns: 2000 },
  );
  // The domain-name test's nested repetition meets long labels, hyphen runs and dot runs in linear time.
  for (const sender of [`a@${'a-'.repeat(50_000)}`, `a@${'a.'.repeat(50_000)}-`, `a@${'a'.repeat(100_000)}-.x`, `a@${'a-a.'.repeat(25_000)}-`, `@${'-a'.repeat(50_000)}`]) {
    const ms = elapsedMs(() => {
      formatAuthenticationResults({ authservId: 'mx', spf: [spf({ sender, helo: sender })] });
      formatReceivedSpf(spf({ sender, helo: sender }), 'mx');
    });
    assert.ok(ms < 200, `${sender.slice(0, 10)}: ${ms.toFixed(0)} ms`);
  }
});
test('"=" makes a value a quoted-string (RFC 2045 tspecials), and "_" is no domain-name character (RFC 5321 sub-domain)', () => {
  assert.equal(formatAuthenticationResults({ authservId: 'mx=evil', spf: [spf({ identity: 'helo', helo: 'a=b' })] }).replace(/ \(.*\)/, ''), 'Authentication-Results: "mx=evil"; spf=pass smtp.helo="a=b"');
  assert.match(formatAuthenticationResults({ authservId: 'mx', spf: [spf({ sender: 'user@a_b.example' })] }), / smtp\.mailfrom="user@a_b\.example"$/);
  // "/" is a tspecial too (RFC 2045 §5.1).
  assert.match(formatAuthenticationResults({ authservId: 'mx', spf: [spf({ identity: 'helo', helo: 'a/b' })] }), / smtp\.helo="a\/b"$/);
});

test('iprev: a result other than pass is explained by its reason, not by a name', () => {
  const header = formatAuthenticationResults({ authservId: 'mx', iprev: { ...iprev, result: 'temperror', reason: 'PTR lookup timed out' } });
  assert.equal(header, 'Authentication-Results: mx; iprev=temperror (PTR lookup timed out) policy.iprev="2001:db8::1"');
});

test('comment and problem texts are cut to 200 characters', () => {
  const problem = `p${'x'.repeat(299)}`;
  const received = formatReceivedSpf(spf({ result: 'permerror', mechanism: undefined, problem }), 'mx');
  assert.match(received, / problem="px{196}\.\.\.";$/);
  const comment = /\((.*?)\)/.exec(formatAuthenticationResults({ authservId: 'mx', spf: [spf({ result: 'permerror', problem })] }))?.[1] ?? '';
  assert.equal(comment.length, 200, comment);
  assert.ok(comment.endsWith('...'), 'comment.endsWith(\'...\')');
});

test('Received-SPF: key=value pairs as dot-atom or quoted-string', () => {
  assert.equal(
    formatReceivedSpf(spf({ result: 'fail', mechanism: '-all', ip: '2001:db8::1' }), 'mx.example.net'),
    'Received-SPF: fail (mx.example.net: domain of user@example.com does not designate 2001:db8::1 as permitted sender) client-ip="2001:db8::1"; envelope-from="user@example.com"; helo=mail.example.com; receiver=mx.example.net; identity=mailfrom; mechanism=-all;',
  );
  const temperror = formatReceivedSpf(spf({ result: 'temperror', mechanism: undefined, problem: 'TXT lookup of example.com failed' }), 'mx');
  assert.match(temperror, /problem="TXT lookup of example\.com failed";$/);
  // RFC 7208 §9.1: a record's default (no mechanism matched) is reported as mechanism=default.
  assert.match(formatReceivedSpf(spf({ result: 'neutral', mechanism: undefined }), 'mx'), / identity=mailfrom; mechanism=default;$/);
  assert.match(formatReceivedSpf(spf({ result: 'none', mechanism: undefined }), 'mx'), / identity=mailfrom;$/, 'no record, so no mechanism');
  // The HELO identity's verdict carries postmaster@HELO, which is no envelope sender: none is claimed.
  assert.equal(
    formatReceivedSpf(spf({ identity: 'helo', sender: 'postmaster@mail.example.com' }), 'mx'),
    'Received-SPF: pass (mx: HELO mail.example.com designates 192.0.2.1 as permitted sender) client-ip=192.0.2.1; helo=mail.example.com; receiver=mx; identity=helo; mechanism="ip4:192.0.2.0/24";',
  );
});

test('Received-SPF explains each result in its comment, as RFC 7208 §9.1 words them', () => {
  const comment = (overrides: Partial<SpfVerdict>) => /^Received-SPF: \S+ \((.*?)\) client-ip=/.exec(formatReceivedSpf(spf({ mechanism: undefined, ...overrides }), 'mx'))?.[1];
  assert.equal(comment({ result: 'pass' }), 'mx: domain of user@example.com designates 192.0.2.1 as permitted sender');
  assert.equal(comment({ result: 'fail' }), 'mx: domain of user@example.com does not designate 192.0.2.1 as permitted sender');
  assert.equal(comment({ result: 'softfail' }), 'mx: domain of user@example.com discourages use of 192.0.2.1 as permitted sender');
  assert.equal(comment({ result: 'neutral' }), 'mx: 192.0.2.1 is neither permitted nor denied by domain of user@example.com');
  assert.equal(comment({ result: 'none' }), 'mx: domain of user@example.com does not designate permitted sender hosts');
  assert.equal(comment({ result: 'temperror', problem: 'TXT lookup of example.com failed' }), 'mx: temporary error checking domain of user@example.com: TXT lookup of example.com failed');
  assert.equal(comment({ result: 'temperror' }), 'mx: temporary error checking domain of user@example.com: DNS error');
  assert.equal(comment({ result: 'permerror', problem: '2 SPF records' }), 'mx: permanent error in the SPF record of example.com: 2 SPF records');
});

test('sender-id: header.<field> in lower case, and only with both the field and the address', () => {
  assert.equal(formatAuthenticationResults({ authservId: 'mx', senderId: { result: 'pass', header: 'Resent-From', address: 'r@example.net' } }), 'Authentication-Results: mx; sender-id=pass header.resent-from=r@example.net');
  assert.equal(formatAuthenticationResults({ authservId: 'mx', senderId: { result: 'permerror', address: 'r@example.net' } }), 'Authentication-Results: mx; sender-id=permerror');
});

test('folding keeps lines within 78 characters at element boundaries', () => {
  const folded = formatReceivedSpf(spf(), 'mx.example.net', { fold: true });
  const lines = folded.split('\r\n');
  assert.ok(lines.length > 1, 'lines.length > 1');
  for (const line of lines.slice(1)) assert.match(line, /^ \S/);
  assert.equal(folded.replace(/\r\n/g, ''), formatReceivedSpf(spf(), 'mx.example.net'));
  const authResults = formatAuthenticationResults({ authservId: 'mx.example.net', spf: [spf()], iprev }, { fold: true });
  // Only a single element wider than the line (here a comment) may exceed 78 characters.
  for (const line of [...lines, ...authResults.split('\r\n')]) assert.ok(line.length <= 78 || /^ \(.*\)$/.test(line), line);
  // RFC 5322 §2.1.1: 78 characters are allowed, so a line of exactly 78 is not folded.
  const exact = formatAuthenticationResults({ authservId: 'a'.repeat(44), spf: [spf()] }, { fold: true });
  assert.equal(exact.split('\r\n')[0], `Authentication-Results: ${'a'.repeat(44)}; spf=pass`);
  // An element wider than a line goes on the first line all the same, not after a field name alone.
  const wide = formatAuthenticationResults({ authservId: 'a'.repeat(100), spf: [spf()] }, { fold: true });
  assert.equal(wide.split('\r\n')[0], `Authentication-Results: ${'a'.repeat(100)};`);
  // One more character, and the element goes on the next line.
  const over = formatAuthenticationResults({ authservId: 'a'.repeat(45), spf: [spf()] }, { fold: true });
  assert.deepEqual(over.split('\r\n').slice(0, 2), [`Authentication-Results: ${'a'.repeat(45)};`, ' spf=pass']);
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

/**
 * A reader of RFC 8601 §2.2 (authserv-id, then "; method=result" with ptype.property=pvalue
 * properties, comments skipped), strict enough to see a value that escaped its quoting.
 */
function readAuthenticationResults(header: string): { id: string; resinfos: { method: string; properties: Record<string, string> }[] } {
  const reader = fieldReader(header);
  const id = reader.value(/[ ;(]/);
  const resinfos: { method: string; properties: Record<string, string> }[] = [];
  for (reader.skipCfws(); !reader.done(); reader.skipCfws()) {
    reader.expect(';');
    const method = reader.value(/[ ;(]/);
    const properties: Record<string, string> = {};
    for (reader.skipCfws(); !reader.done() && !reader.at(';'); reader.skipCfws()) {
      const key = reader.value(/[= ;(]/);
      reader.expect('=');
      properties[key] = reader.value(/[ ;(]/);
    }
    resinfos.push({ method, properties });
  }
  return { id, resinfos };
}

/** RFC 7208 §9.1: result, then key=value pairs each ended by ";". */
function readKeyValueField(header: string): { result: string; pairs: Record<string, string> } {
  const reader = fieldReader(header);
  const result = reader.value(/[ (]/);
  const pairs: Record<string, string> = {};
  for (reader.skipCfws(); !reader.done(); reader.skipCfws()) {
    const key = reader.value(/[= ;(]/);
    reader.expect('=');
    pairs[key] = reader.value(/[ ;(]/);
    reader.expect(';');
  }
  return { result, pairs };
}

/** Tokens of a structured field body: comments skipped, quoted-strings unquoted. */
function fieldReader(header: string) {
  let i = header.indexOf(':') + 1;
  const skipCfws = (): void => {
    for (;;) {
      while (header[i] === ' ') i += 1;
      if (header[i] !== '(') return;
      let depth = 0;
      do {
        if (i >= header.length) throw new Error(`unterminated comment in ${header}`);
        if (header[i] === '\\') i += 1;
        else if (header[i] === '(') depth += 1;
        else if (header[i] === ')') depth -= 1;
        i += 1;
      } while (depth > 0);
    }
  };
  const readValue = (end: RegExp): string => {
    skipCfws();
    if (header[i] !== '"') {
      const start = i;
      while (i < header.length && !end.test(header[i]!)) i += 1;
      return header.slice(start, i);
    }
    let text = '';
    for (i += 1; header[i] !== '"'; i += 1) {
      if (i >= header.length) throw new Error(`unterminated quoted-string in ${header}`);
      if (header[i] === '\\') i += 1;
      text += header[i];
    }
    i += 1;
    return text;
  };
  return {
    skipCfws,
    value: readValue,
    done: () => i >= header.length,
    at: (ch: string) => header[i] === ch,
    expect: (ch: string) => {
      assert.equal(header[i], ch, `${JSON.stringify(ch)} expected at ${i} of ${header}`);
      i += 1;
    },
  };
}

test('fuzz: no sender, HELO or problem text escapes its value or comment, or adds a property', () => {
  const printable = (text: string) => text.replace(/[\r\n\t]+/g, ' ').replace(/[^\x20-\x7e]/g, '?');
  const piece = fc.constantFrom(...'a@.;=()"\\ \t\r\n:<>[]é-', 'smtp.helo=x', '; spf=pass', 'policy.iprev=1');
  // At most 140 characters each: escaped, the three still fit in one field, so no property is
  // dropped (see the next test), and a problem text is not cut.
  const text = fc.array(piece, { maxLength: 10 }).map((pieces) => pieces.join(''));
  fc.assert(
    fc.property(text, text, text, (sender, helo, id) => {
      const header = formatAuthenticationResults({ authservId: id, spf: [spf({ sender, helo, problem: helo, result: 'fail' }), spf({ identity: 'helo', helo, problem: sender, result: 'permerror' })], iprev });
      assert.deepEqual(readAuthenticationResults(header), {
        id: printable(id),
        resinfos: [
          { method: 'spf=fail', properties: { 'smtp.mailfrom': printable(sender) } },
          { method: 'spf=permerror', properties: { 'smtp.helo': printable(helo) } },
          { method: 'iprev=pass', properties: { 'policy.iprev': '2001:db8::1' } },
        ],
      });
    }),
    { numRuns: 2000 },
  );
  fc.assert(
    fc.property(text, text, text, (sender, helo, reply) => {
      const received = formatReceivedSpf(spf({ sender, helo, problem: reply, result: 'temperror', mechanism: undefined }), 'mx.example.net');
      assert.deepEqual(readKeyValueField(received), {
        result: 'temperror',
        pairs: {
          'client-ip': '192.0.2.1',
          ...(printable(sender) === '' ? {} : { 'envelope-from': printable(sender) }),
          ...(printable(helo) === '' ? {} : { helo: printable(helo) }),
          receiver: 'mx.example.net',
          identity: 'mailfrom',
          ...(printable(reply) === '' ? {} : { problem: printable(reply) }),
        },
      });
      const result = { address: sender, verdict: 'undeliverable', reason: 'rejected-at-rcpt', description: reply, source: 'probe' } as VerifyResult;
      assert.deepEqual(readKeyValueField(formatCalloutResult(result, 'mx.example.net')), {
        result: 'undeliverable',
        pairs: { receiver: 'mx.example.net', sender: printable(sender), reason: 'rejected-at-rcpt', source: 'probe' },
      });
    }),
    { numRuns: 2000 },
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
  // A field of exactly MAX_HEADER_LINE characters fits and loses nothing.
  const base = formatAuthenticationResults({ authservId: 'a', spf: [spf()] });
  const full = formatAuthenticationResults({ authservId: 'a'.repeat(MAX_HEADER_LINE - base.length + 1), spf: [spf()] });
  assert.equal(full.length, MAX_HEADER_LINE);
  assert.ok(full.endsWith(base.slice(base.indexOf('; spf='))), full.slice(-200));
  // Even when the rest cannot fit, each method and its result stay (the line is then cut at PREPEND).
  assert.match(formatAuthenticationResults({ authservId: huge, spf: [spf(), spf({ identity: 'helo' })] }), /; spf=pass; spf=pass$/);
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
