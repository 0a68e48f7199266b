import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { ManualClock } from '../../support/manual-time.js';
import type { Resolver } from '../../../src/dns/types.js';
import { evaluateSpf, SPF_RESULTS } from '../../../src/checks/spf/index.js';
import { buildZone, SuiteResolver } from '../../support/spf-suite.js';

const zone = buildZone({
  'example.com': [{ TXT: 'v=spf1 ip4:192.0.2.0/24 include:_spf.example.com -all' }],
  '_spf.example.com': [{ TXT: 'v=spf1 a:mail.example.com ~all' }],
  'mail.example.com': [{ A: '198.51.100.7' }, { TXT: 'v=spf1 a -all exp=why.example.com' }],
  'why.example.com': [{ TXT: '%{c} is not %{d} (seen by %{r})' }],
  'helo.example.net': [{ TXT: 'v=spf1 ip6:2001:db8::/32 -all' }],
  'voids.example.com': [{ TXT: 'v=spf1 a:nx1.example.com ?all' }],
  'voidptr.example.com': [{ TXT: 'v=spf1 a:nx1.example.com a:nx2.example.com ptr ?all' }],
  // A single-label name publishing a policy: not a sender domain check_host() may look up.
  singlelabel: [{ TXT: 'v=spf1 +all' }],
  'slow.example.com': [{ TXT: 'v=spf1 a a a -all' }, { A: '203.0.113.1' }],
  'ptr.example.com': [{ TXT: 'v=spf1 ptr -all' }],
  'mapped6.example.com': [{ TXT: 'v=spf1 ip6:::ffff:192.0.2.0/120 -all' }],
  // MX hosts with IPv4 addresses only: an IPv6 client's AAAA lookups of them all come back empty.
  'mx4only.example.com': [{ TXT: 'v=spf1 mx -all' }, { MX: [10, 'mx1.mx4only.example.com'] }, { MX: [20, 'mx2.mx4only.example.com'] }, { MX: [30, 'mx3.mx4only.example.com'] }],
  'mx1.mx4only.example.com': [{ A: '192.0.2.11' }],
  'mx2.mx4only.example.com': [{ A: '192.0.2.12' }],
  'mx3.mx4only.example.com': [{ A: '192.0.2.13' }],
  // Ten MX hosts, the most that an mx term may resolve; only the last one is the client.
  'mx10.example.com': [{ TXT: 'v=spf1 mx -all' }, ...Array.from({ length: 10 }, (_, i) => ({ MX: [i, `h${i}.mx10.example.com`] as [number, string] }))],
  ...Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`h${i}.mx10.example.com`, [{ A: `192.0.2.${30 + i}` }]])),
  '7.100.51.198.in-addr.arpa': [{ PTR: 'host.ptr.example.com' }],
  'host.ptr.example.com': [{ A: '198.51.100.7' }],
  // A client whose validated name only ends in the same characters as example.com.
  'ptrsuffix.example.com': [{ TXT: 'v=spf1 ptr:example.com -all' }],
  '8.100.51.198.in-addr.arpa': [{ PTR: 'mail.attackerexample.com' }],
  'mail.attackerexample.com': [{ A: '198.51.100.8' }],
});
const resolver = new SuiteResolver(zone);

test('pass through ip4 and include, with the deciding mechanism and a trace', async () => {
  const verdict = await evaluateSpf({ ip: '198.51.100.7', mailFrom: 'user@example.com', helo: 'client.example.org' }, { resolver });
  assert.equal(verdict.result, 'pass');
  assert.equal(verdict.mechanism, 'include:_spf.example.com');
  assert.equal(verdict.domain, 'example.com');
  assert.equal(verdict.identity, 'mailfrom');
  assert.deepEqual(verdict.lookups, { dnsTerms: 2, voidLookups: 0 });
  assert.deepEqual(
    verdict.trace.filter((entry) => entry.kind === 'term').map((entry) => entry.kind === 'term' && `${entry.domain} ${entry.term} ${entry.outcome}`),
    ['example.com ip4:192.0.2.0/24 no match', '_spf.example.com a:mail.example.com match', 'example.com include:_spf.example.com match'],
  );
  assert.ok(verdict.trace.some((entry) => entry.kind === 'dns' && entry.type === 'TXT' && entry.name === '_spf.example.com'), 'verdict.trace.some((entry) => entry.kind === \'dns\' && entry.type === \'TXT\' && entry.name === \'_sp...');
});

test('fail carries the exp= explanation with c, d and r expanded', async () => {
  const verdict = await evaluateSpf(
    { ip: '192.0.2.99', mailFrom: 'x@mail.example.com', helo: 'h.example.org' },
    { resolver, receiver: 'mx.receiver.example' },
  );
  assert.equal(verdict.result, 'fail');
  assert.equal(verdict.mechanism, '-all');
  assert.equal(verdict.explanation, '192.0.2.99 is not mail.example.com (seen by mx.receiver.example)');
});

test('fail without exp= gets the built-in or the configured default explanation', async () => {
  const request = { ip: '203.0.113.9', mailFrom: 'x@example.com', helo: 'h.example.org' };
  const builtin = await evaluateSpf(request, { resolver });
  assert.equal(builtin.explanation, 'The domain example.com does not designate 203.0.113.9 as a permitted sender');
  const configured = await evaluateSpf(request, { resolver, defaultExplanation: 'See https://example.com/spf?s=%{S}' });
  assert.equal(configured.explanation, 'See https://example.com/spf?s=x%40example.com');
});

test('HELO identity and the null reverse-path', async () => {
  const helo = await evaluateSpf({ ip: '2001:db8::5', mailFrom: 'a@example.com', helo: 'helo.example.net', identity: 'helo' }, { resolver });
  assert.equal(helo.result, 'pass');
  assert.equal(helo.identity, 'helo');
  assert.equal(helo.domain, 'helo.example.net');
  assert.equal(helo.sender, 'postmaster@helo.example.net');
  const bounce = await evaluateSpf({ ip: '192.0.2.1', mailFrom: '', helo: 'helo.example.net' }, { resolver });
  assert.equal(bounce.result, 'fail');
  assert.equal(bounce.identity, 'mailfrom');
  assert.equal(bounce.sender, 'postmaster@helo.example.net');
});

test('an IPv4-mapped client is checked, and reverse-resolved, as IPv4', async () => {
  const verdict = await evaluateSpf({ ip: '::ffff:198.51.100.7', mailFrom: 'a@ptr.example.com', helo: 'h' }, { resolver });
  assert.equal(verdict.result, 'pass');
  assert.ok(verdict.trace.some((entry) => entry.kind === 'dns' && entry.name === '7.100.51.198.in-addr.arpa'), 'verdict.trace.some((entry) => entry.kind === \'dns\' && entry.name === \'7.100.51.198.in-addr.arpa\')');
});

test('ptr:example.com matches names in example.com only, not a name that merely ends in "example.com" (RFC 7208 §5.5)', async () => {
  const verdict = await evaluateSpf({ ip: '198.51.100.8', mailFrom: 'a@ptrsuffix.example.com', helo: 'h' }, { resolver });
  assert.equal(verdict.result, 'fail');
  assert.equal(verdict.mechanism, '-all');
});

test('an ip6 network of IPv4-mapped addresses matches no client: an IPv4 client only ever matches ip4 (RFC 7208 §5)', async () => {
  for (const ip of ['192.0.2.1', '::ffff:192.0.2.1']) {
    const verdict = await evaluateSpf({ ip, mailFrom: 'a@mapped6.example.com', helo: 'h' }, { resolver });
    assert.equal(verdict.result, 'fail', ip);
    assert.equal(verdict.mechanism, '-all', ip);
  }
});

test('limits are configurable: void lookups and DNS terms', async () => {
  const request = { ip: '192.0.2.1', mailFrom: 'a@voids.example.com', helo: 'h' };
  assert.equal((await evaluateSpf(request, { resolver })).result, 'neutral');
  const strict = await evaluateSpf(request, { resolver, limits: { voidLookups: 0 } });
  assert.equal(strict.result, 'permerror');
  assert.match(strict.problem ?? '', /void/);
  const terms = await evaluateSpf({ ...request, mailFrom: 'a@slow.example.com' }, { resolver, limits: { dnsTerms: 2 } });
  assert.equal(terms.result, 'permerror');
  assert.match(terms.problem ?? '', /more than 2 DNS-querying terms/);
});

test('only the lookup that decides a term can be void: MX hosts without an address of the client\'s family are not void lookups (RFC 7208 §4.6.4)', async () => {
  const verdict = await evaluateSpf({ ip: '2001:db8::9', mailFrom: 'a@mx4only.example.com', helo: 'h' }, { resolver });
  assert.equal(verdict.result, 'fail', verdict.problem);
  assert.equal(verdict.mechanism, '-all');
  assert.deepEqual(verdict.lookups, { dnsTerms: 1, voidLookups: 0 });
});

test('an mx term resolves up to 10 MX names (RFC 7208 §4.6.4): the tenth can match', async () => {
  const verdict = await evaluateSpf({ ip: '192.0.2.39', mailFrom: 'a@mx10.example.com', helo: 'h' }, { resolver });
  assert.equal(verdict.result, 'pass', verdict.problem);
  assert.equal(verdict.mechanism, 'mx');
});

test('a sender of any length is checked: a long local part (SRS, or a forger evading -all) does not turn a fail into none', async () => {
  // RFC 7208 §4.3 makes only a malformed domain none; the local part's length is not the
  // domain owner's business, and a policy request's sender may be 4 KiB long.
  for (const length of [320, 321, 4000]) {
    const localPart = 'a'.repeat(length - 'example.com'.length - 1);
    const verdict = await evaluateSpf({ ip: '203.0.113.9', mailFrom: `${localPart}@example.com`, helo: 'h' }, { resolver });
    assert.equal(verdict.result, 'fail', `${length}: ${verdict.problem}`);
    assert.ok((verdict.explanation ?? '').length <= 512, `${length}: explanation of ${verdict.explanation?.length}`);
  }
});

test('a sender or HELO domain of thousands of distinct non-ASCII characters is too long before it is converted (Punycode takes time quadratic in a label)', async () => {
  const label = Array.from({ length: 16_000 }, (_, i) => String.fromCodePoint(0x4e00 + i)).join('');
  for (const request of [{ mailFrom: `a@${label}.example`, helo: 'h' }, { mailFrom: '', helo: `${label}.example` }]) {
    const started = performance.now();
    const verdict = await evaluateSpf({ ip: '203.0.113.9', ...request }, { resolver });
    assert.equal(verdict.result, 'none');
    // Cut as other quoted values are (core/errors abbreviate), where its quote closed before the dots.
    assert.ok((verdict.problem ?? '').includes(`"${label.slice(0, 79)}... is longer than 253 characters`), verdict.problem);
    assert.ok(performance.now() - started < 200, `took ${performance.now() - started} ms`);
  }
});

test('a ptr term whose PTR lookup comes back empty is a void lookup too: the third is a permerror', async () => {
  const verdict = await evaluateSpf({ ip: '192.0.2.77', mailFrom: 'a@voidptr.example.com', helo: 'h' }, { resolver });
  assert.equal(verdict.result, 'permerror');
  assert.equal(verdict.mechanism, 'ptr');
  assert.match(verdict.problem ?? '', /more than 2 void DNS lookups/);
});

/** The resolver's methods as a plain object, to replace one of them. */
function resolverOf(inner: Resolver): Resolver {
  return { a: (name) => inner.a(name), aaaa: (name) => inner.aaaa(name), mx: (name) => inner.mx(name), txt: (name) => inner.txt(name), ptr: (address) => inner.ptr(address) };
}

/** The resolver, with `before` run ahead of each A lookup (time taken, a clock stepped). */
function onAddressLookup(before: () => void): Resolver {
  return {
    ...resolverOf(resolver),
    a: async (name) => {
      before();
      return resolver.a(name);
    },
  };
}

test('an evaluation over its time budget is a temperror', async () => {
  let monotonic = 0;
  const slow = onAddressLookup(() => (monotonic += 15_000));
  const verdict = await evaluateSpf({ ip: '192.0.2.1', mailFrom: 'a@slow.example.com', helo: 'h' }, { resolver: slow, monotonic: () => monotonic });
  assert.equal(verdict.result, 'temperror');
  assert.match(verdict.problem ?? '', /longer than 20000 ms/);
});

test('the time budget is measured on the monotonic clock: a wall clock stepped back an hour does not let an evaluation overrun, nor one stepped forward end it', async () => {
  for (const step of [-3_600_000, 3_600_000]) {
    const clock = new ManualClock();
    let monotonic = 0;
    const stepping = onAddressLookup(() => {
      clock.advance(step);
      monotonic += 15_000;
    });
    const request = { ip: '192.0.2.1', mailFrom: 'a@slow.example.com', helo: 'h' };
    const late = await evaluateSpf(request, { resolver: stepping, clock, monotonic: () => monotonic });
    assert.equal(late.result, 'temperror', `step ${step}`);
    assert.match(late.problem ?? '', /longer than 20000 ms/);
    monotonic = 0;
    const inTime = await evaluateSpf(request, { resolver: stepping, clock, monotonic: () => monotonic, limits: { elapsedMs: 60_000 } });
    assert.equal(inTime.result, 'fail', `step ${step}: ${String(inTime.problem)}`);
  }
});

test('the time budget ending while PTR names are validated is a temperror, not a ptr term that does not match', async () => {
  let monotonic = 0;
  const late: Resolver = { ...resolverOf(resolver), ptr: (address) => ((monotonic += 25_000), resolver.ptr(address)) };
  const verdict = await evaluateSpf({ ip: '198.51.100.7', mailFrom: 'a@ptr.example.com', helo: 'h' }, { resolver: late, monotonic: () => monotonic });
  assert.equal(verdict.result, 'temperror');
  assert.match(verdict.problem ?? '', /longer than 20000 ms/);
});

test('the time budget ends at exactly elapsedMs: a query asked once it is all spent is a temperror, one asked a millisecond earlier is not', async () => {
  for (const [spent, expected] of [[20_000, 'temperror'], [19_999, 'fail']] as const) {
    let monotonic = 0;
    // The first A lookup takes the time; the two after it take none.
    const spending = onAddressLookup(() => (monotonic = spent));
    const verdict = await evaluateSpf({ ip: '192.0.2.1', mailFrom: 'a@slow.example.com', helo: 'h' }, { resolver: spending, monotonic: () => monotonic });
    assert.equal(verdict.result, expected, `${spent} ms: ${String(verdict.problem)}`);
  }
});

test('only a fail carries an explanation: softfail, neutral and the other results have none, with exp= or without (RFC 7208 §6.2)', async () => {
  const explaining = new SuiteResolver(
    buildZone({
      'soft.exp.example': [{ TXT: 'v=spf1 ~all exp=why.exp.example' }],
      'neutral.exp.example': [{ TXT: 'v=spf1 ?all exp=why.exp.example' }],
      'default.exp.example': [{ TXT: 'v=spf1 a:nothing.exp.example' }],
      'perm.exp.example': [{ TXT: 'v=spf1 moo -all exp=why.exp.example' }],
      'temp.exp.example': [{ TXT: 'v=spf1 a:temp.exp.example -all exp=why.exp.example' }, { A: 'TIMEOUT' }],
      'none.exp.example': [{ A: '192.0.2.1' }],
      'why.exp.example': [{ TXT: 'explained' }],
    }),
  );
  for (const [domain, expected] of [['soft', 'softfail'], ['neutral', 'neutral'], ['default', 'neutral'], ['perm', 'permerror'], ['temp', 'temperror'], ['none', 'none']] as const) {
    const verdict = await evaluateSpf({ ip: '192.0.2.1', mailFrom: `a@${domain}.exp.example`, helo: 'h' }, { resolver: explaining });
    assert.equal(verdict.result, expected, domain);
    assert.equal(verdict.explanation, undefined, domain);
  }
});

test('the exp= TXT lookup is not a void lookup, even when it finds nothing (RFC 7208 §4.6.4)', async () => {
  const voidExp = new SuiteResolver(buildZone({ 'voidexp.example': [{ TXT: 'v=spf1 a:nx1.voidexp.example a:nx2.voidexp.example -all exp=nx3.voidexp.example' }] }));
  const verdict = await evaluateSpf({ ip: '192.0.2.1', mailFrom: 'a@voidexp.example', helo: 'h' }, { resolver: voidExp });
  assert.equal(verdict.result, 'fail', verdict.problem);
  assert.equal(verdict.explanation, 'The domain voidexp.example does not designate 192.0.2.1 as a permitted sender');
  assert.deepEqual(verdict.lookups, { dnsTerms: 2, voidLookups: 2 });
});

test('exp= text of exactly 4096 characters is used (and cut to 512), one character more is ignored', async () => {
  const long = new SuiteResolver(
    buildZone({
      'exp4096.example': [{ TXT: 'v=spf1 -all exp=why.exp4096.example' }],
      'why.exp4096.example': [{ TXT: 'x'.repeat(4096) }],
      'exp4097.example': [{ TXT: 'v=spf1 -all exp=why.exp4097.example' }],
      'why.exp4097.example': [{ TXT: 'x'.repeat(4097) }],
    }),
  );
  const exact = await evaluateSpf({ ip: '192.0.2.1', mailFrom: 'a@exp4096.example', helo: 'h' }, { resolver: long });
  assert.equal(exact.explanation, 'x'.repeat(512));
  const over = await evaluateSpf({ ip: '192.0.2.1', mailFrom: 'a@exp4097.example', helo: 'h' }, { resolver: long });
  assert.equal(over.explanation, 'The domain exp4097.example does not designate 192.0.2.1 as a permitted sender');
});

test('%{p} is the domain itself when it is a validated name, before a subdomain of it and before any other name (RFC 7208 §7.3)', async () => {
  const validated = new SuiteResolver(
    buildZone({
      'pexact.example': [{ TXT: 'v=spf1 -all exp=why.pexact.example' }, { A: '198.51.100.20' }],
      'why.pexact.example': [{ TXT: 'validated as %{p}' }],
      '20.100.51.198.in-addr.arpa': [{ PTR: 'host.other.example' }, { PTR: 'mail.pexact.example' }, { PTR: 'pexact.example' }],
      'host.other.example': [{ A: '198.51.100.20' }],
      'mail.pexact.example': [{ A: '198.51.100.20' }],
    }),
  );
  const verdict = await evaluateSpf({ ip: '198.51.100.20', mailFrom: 'a@pexact.example', helo: 'h' }, { resolver: validated });
  assert.equal(verdict.result, 'fail');
  assert.equal(verdict.explanation, 'validated as pexact.example');
});

test('an include: whose target macro expansion leaves unusable is a permerror, where an a: term only does not match (RFC 7208 §5.2)', async () => {
  const unusable = new SuiteResolver(
    buildZone({
      'incbad.example': [{ TXT: 'v=spf1 include:%{l}.incbad.example -all' }],
      'abad.example': [{ TXT: 'v=spf1 a:%{l}.abad.example -all' }],
    }),
  );
  // A 64-character local part makes a label one longer than DNS allows.
  const localPart = 'x'.repeat(64);
  const include = await evaluateSpf({ ip: '192.0.2.1', mailFrom: `${localPart}@incbad.example`, helo: 'h' }, { resolver: unusable });
  assert.equal(include.result, 'permerror');
  assert.equal(include.mechanism, 'include:%{l}.incbad.example');
  assert.match(include.problem ?? '', /^include:%\{l\}\.incbad\.example: .*longer than 63 characters$/);
  const a = await evaluateSpf({ ip: '192.0.2.1', mailFrom: `${localPart}@abad.example`, helo: 'h' }, { resolver: unusable });
  assert.equal(a.result, 'fail', a.problem);
  assert.equal(a.mechanism, '-all');
});

test('a temporary failure of an MX exchanger\'s address lookup is a temperror, unless an exchanger before it matched (RFC 7208 §5.4, §2.6.6)', async () => {
  const timeouts = new SuiteResolver(
    buildZone({
      'mxtemp.example': [{ TXT: 'v=spf1 mx -all' }, { MX: [10, 'mx1.mxtemp.example'] }, { MX: [20, 'mx2.mxtemp.example'] }],
      'mx1.mxtemp.example': [{ A: 'TIMEOUT' }],
      'mx2.mxtemp.example': [{ A: '192.0.2.50' }],
      'mxlate.example': [{ TXT: 'v=spf1 mx -all' }, { MX: [20, 'mx2.mxlate.example'] }, { MX: [10, 'mx1.mxlate.example'] }],
      'mx1.mxlate.example': [{ A: '192.0.2.50' }],
      'mx2.mxlate.example': [{ A: 'TIMEOUT' }],
    }),
  );
  for (const ip of ['192.0.2.50', '192.0.2.51']) {
    const verdict = await evaluateSpf({ ip, mailFrom: 'a@mxtemp.example', helo: 'h' }, { resolver: timeouts });
    assert.equal(verdict.result, 'temperror', ip);
    assert.equal(verdict.mechanism, 'mx', ip);
    assert.match(verdict.problem ?? '', /^lookup of mx1\.mxtemp\.example failed/);
  }
  const matchedFirst = await evaluateSpf({ ip: '192.0.2.50', mailFrom: 'a@mxlate.example', helo: 'h' }, { resolver: timeouts });
  assert.equal(matchedFirst.result, 'pass', matchedFirst.problem);
});

test('a sender domain with a numeric top-level label is not looked up: none, and the problem says why (RFC 7208 §4.3)', async () => {
  const verdict = await evaluateSpf({ ip: '192.0.2.1', mailFrom: 'a@example.123', helo: 'h' }, { resolver });
  assert.equal(verdict.result, 'none');
  assert.equal(verdict.problem, '"example.123" has a numeric top-level label');
  assert.ok(!verdict.trace.some((entry) => entry.kind === 'dns'), 'a DNS query was made');
});

test('a sender domain of one label is not looked up: none (RFC 7208 §4.3)', async () => {
  const verdict = await evaluateSpf({ ip: '192.0.2.1', mailFrom: 'a@singlelabel', helo: 'h' }, { resolver });
  assert.equal(verdict.result, 'none');
  assert.match(verdict.problem ?? '', /not a fully qualified domain name/);
  assert.ok(!verdict.trace.some((entry) => entry.kind === 'dns'), '!verdict.trace.some((entry) => entry.kind === \'dns\')');
});

test('unusable input is a result, not an exception', async () => {
  const badIp = await evaluateSpf({ ip: 'not-an-ip', mailFrom: 'a@example.com', helo: 'h' }, { resolver });
  assert.equal(badIp.result, 'none');
  assert.match(badIp.problem ?? '', /not an IP address/);
  const literal = await evaluateSpf({ ip: '192.0.2.1', mailFrom: 'a@[192.0.2.1]', helo: 'h' }, { resolver });
  assert.equal(literal.result, 'none');
});

test('fuzz: any published record gives one of the seven results, within the DNS lookup limits', async () => {
  const term = fc.oneof(
    fc.constantFrom('all', '-all', '~all', '?all', 'a', 'mx', 'ptr', 'a/24', 'mx//64', 'include:inc.fuzz.example', 'redirect=inc.fuzz.example', 'exists:%{i}.fuzz.example'),
    fc.constantFrom('exp=x.fuzz.example', 'ip4:192.0.2.0/24', 'ip6:2001:db8::/32', 'a:%{d2}', 'include:%{l}.fuzz.example', 'ptr:fuzz.example'),
    fc.string({ maxLength: 12 }),
  );
  await fc.assert(
    fc.asyncProperty(fc.array(term, { maxLength: 12 }), fc.array(term, { maxLength: 6 }), fc.constantFrom('192.0.2.1', '2001:db8::1'), async (outer, inner, ip) => {
      const fuzzZone = new SuiteResolver(
        buildZone({
          'fuzz.example': [{ TXT: `v=spf1 ${outer.join(' ')}` }, { A: '192.0.2.1' }, { MX: [0, 'fuzz.example'] }],
          'inc.fuzz.example': [{ TXT: `v=spf1 ${inner.join(' ')}` }],
          'x.fuzz.example': [{ TXT: '%{c} %{x' }],
        }),
      );
      const verdict = await evaluateSpf({ ip, mailFrom: 'u@fuzz.example', helo: 'h.example' }, { resolver: fuzzZone });
      assert.ok(SPF_RESULTS.includes(verdict.result), 'SPF_RESULTS.includes(verdict.result)');
      // RFC 7208 §4.6.4: the term past the 10th, or the void lookup past the 2nd, is counted and
      // ends the check; each counted term asks at most 11 queries (mx or ptr: 10 names' addresses).
      assert.ok(verdict.lookups.dnsTerms <= 11 && verdict.lookups.voidLookups <= 3, JSON.stringify(verdict.lookups));
      assert.ok(verdict.trace.filter((entry) => entry.kind === 'dns').length <= 1 + 10 * 11 + 1, 'more DNS queries than the limits allow');
    }),
    { numRuns: 500 },
  );
});
