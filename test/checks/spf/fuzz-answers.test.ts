// SPF and Sender ID over any DNS answers: the records a zone publishes are fuzzed in
// evaluate.test.ts; here every answer is (A, AAAA, MX, PTR and TXT alike: addresses that are no
// addresses, exchanger and PTR names of any text, many records, long ones, several SPF records,
// failures), as a hostile or broken zone may give them. An evaluation gives one of the seven
// results, never throws, asks no more than the RFC 7208 §4.6.4 limits let it, and keeps its
// explanation within 512 characters, in bounded time.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { checkSenderId, splitHeaderFields } from '../../../src/checks/senderid/index.js';
import { SPF_RESULTS, evaluateSpf, type SpfVerdict } from '../../../src/checks/spf/index.js';
import type { DnsAnswer, MxRecord, Resolver } from '../../../src/dns/types.js';
import { elapsedMsAsync } from '../../support/fuzz.js';

const name = fc.oneof(
  fc.constantFrom('', '.', 'fuzz.example', 'FUZZ.EXAMPLE.', 'mx.fuzz.example', 'h.example', '1.2.3.4', 'a..b', '-a.example', `${'l'.repeat(63)}.example`, `${'a.'.repeat(130)}example`, 'ex\u00e4mple.example', 'xn--.example', '*.example'),
  fc.domain(),
  fc.string({ unit: 'binary', maxLength: 40 }),
);
const address = fc.oneof(
  fc.constantFrom('192.0.2.1', '2001:db8::1', '::ffff:192.0.2.1', '192.0.2.01', '0.0.0.0', '::', '', 'fuzz.example', '192.0.2.1/24', '[192.0.2.1]', 'fe80::1%eth0'),
  fc.ipV4(),
  fc.ipV6(),
  fc.string({ maxLength: 20 }),
);
const term = fc.oneof(
  { weight: 12, arbitrary: fc.constantFrom('all', '-all', '~all', '?all', 'a', 'mx', 'ptr', 'a/24', 'mx//64', 'a:fuzz.example', 'mx:%{d}', 'ptr:%{d}', 'exists:%{i}.%{d}', 'include:%{d1r}.fuzz.example') },
  { weight: 8, arbitrary: fc.constantFrom('include:fuzz.example', 'redirect=fuzz.example', 'exp=%{d}', 'exp=x.fuzz.example', 'ip4:192.0.2.0/24', 'ip6:::/0', 'a:%{p}', 'a:%{p}.fuzz.example', 'exists:%{p}') },
  { weight: 1, arbitrary: fc.string({ maxLength: 12 }) },
);
const txt = fc.oneof(
  fc.array(term, { maxLength: 12 }).map((terms) => `v=spf1 ${terms.join(' ')}`),
  fc.array(term, { maxLength: 8 }).map((terms) => `spf2.0/mfrom,pra ${terms.join(' ')}`),
  fc.constantFrom('v=spf1', 'v=spf1 -all', 'spf2.0/pra', 'v=spf10', 'V=SPF1 ?all', `v=spf1 ${'a '.repeat(2100)}`, `v=spf1 exp=${'%{d}'.repeat(1020)}`, '%{c} %{r} %{t} %{x', `${'%{i}'.repeat(900)}`),
  fc.string({ maxLength: 60 }),
);
/** A client address: mostly one an evaluation can check. */
const client = fc.oneof({ weight: 4, arbitrary: fc.oneof(fc.constantFrom('192.0.2.1', '2001:db8::1', '::ffff:192.0.2.1'), fc.ipV4(), fc.ipV6()) }, address);
const mx: fc.Arbitrary<MxRecord> = fc.record({ priority: fc.oneof(fc.integer({ min: 0, max: 65535 }), fc.constantFrom(-1, 1.5, Number.NaN)), exchange: name });

/** An answer of any kind; records up to `many` of them (over the 10 names §4.6.4 resolves). */
function answer<T>(value: fc.Arbitrary<T>, many = 14): fc.Arbitrary<DnsAnswer<T>> {
  return fc.oneof(
    { weight: 3, arbitrary: fc.array(value, { maxLength: many }).map((records) => ({ kind: 'records' as const, records, ttl: 60 })) },
    fc.constantFrom<DnsAnswer<T>>({ kind: 'nodata', ttl: 60 }, { kind: 'nxdomain', ttl: 60 }, { kind: 'tempfail', reason: 'SERVFAIL' }, { kind: 'records', records: [], ttl: 60 }),
  );
}

/** Mostly the one SPF record a domain should publish, so that evaluations go on to their terms' lookups. */
const spfAnswer = fc.oneof(
  { weight: 3, arbitrary: fc.array(term, { maxLength: 12 }).map((terms): DnsAnswer<string> => ({ kind: 'records', records: [`v=spf1 ${terms.join(' ')}`], ttl: 60 })) },
  answer(txt, 4),
);
/** Answers for each type, given in turn to the queries of that type (the nth query gets the nth, round and round). */
const zone = fc.record({
  a: fc.array(answer(address), { minLength: 1, maxLength: 4 }),
  aaaa: fc.array(answer(address), { minLength: 1, maxLength: 4 }),
  mx: fc.array(answer(mx), { minLength: 1, maxLength: 4 }),
  txt: fc.array(spfAnswer, { minLength: 1, maxLength: 4 }),
  ptr: fc.array(answer(name), { minLength: 1, maxLength: 4 }),
});
type Zone = typeof zone extends fc.Arbitrary<infer T> ? T : never;

type Queries = Record<'a' | 'aaaa' | 'mx' | 'txt' | 'ptr', number>;

/** A resolver answering from `plan`, counting the queries it is asked, by type. */
function planned(plan: Zone): { resolver: Resolver; queries: () => Queries } {
  const queries: Queries = { a: 0, aaaa: 0, mx: 0, txt: 0, ptr: 0 };
  const turn = <T>(type: keyof Queries, answers: DnsAnswer<T>[]) => {
    let next = 0;
    return () => {
      queries[type] += 1;
      return Promise.resolve(answers[next++ % answers.length]!);
    };
  };
  return { resolver: { a: turn('a', plan.a), aaaa: turn('aaaa', plan.aaaa), mx: turn('mx', plan.mx), txt: turn('txt', plan.txt), ptr: turn('ptr', plan.ptr) }, queries: () => ({ ...queries }) };
}

/**
 * RFC 7208 §4.6.4, as the queries of one evaluation: the sender's record (a TXT); at most 10
 * DNS-querying terms (the 11th is refused unasked), each with one query of its own (the record
 * of an include or a redirect, the MX of mx, the address of a or exists, the PTR of ptr), an mx
 * term then the addresses of at most 10 exchangers; the client's validated names (a PTR and
 * the addresses of at most 10 of its names), found once for every ptr term and %{p}; and the
 * exp= TXT of a fail. At most 1 + 10 * 11 + 11 + 1 in all (ten mx terms, one of them with
 * %{p}, reach it), and of them at most 12 TXT and MX queries together and one PTR.
 */
const MAX_QUERIES = 1 + 10 * (1 + 10) + (1 + 10) + 1;
const MAX_RECORD_AND_MX_QUERIES = 1 + 10 + 1;

function assertBounded(verdict: SpfVerdict, queries: Queries): void {
  assert.ok(SPF_RESULTS.includes(verdict.result), `result ${verdict.result}`);
  assert.ok(verdict.lookups.dnsTerms <= 11 && verdict.lookups.voidLookups <= 3, JSON.stringify(verdict.lookups));
  const total = queries.a + queries.aaaa + queries.mx + queries.txt + queries.ptr;
  assert.ok(total <= MAX_QUERIES, `${total} DNS queries, more than ${MAX_QUERIES}: ${JSON.stringify(queries)}`);
  assert.ok(queries.txt + queries.mx <= MAX_RECORD_AND_MX_QUERIES && queries.ptr <= 1, `more TXT and MX, or PTR, queries than 10 terms ask: ${JSON.stringify(queries)}`);
  assert.ok((verdict.explanation ?? '').length <= 512, `an explanation of ${verdict.explanation?.length} characters`);
  assert.ok(verdict.result === 'fail' || verdict.explanation === undefined, 'only a fail carries an explanation');
  if (['none', 'temperror', 'permerror'].includes(verdict.result) && verdict.problem !== undefined) assert.ok(verdict.problem.length > 0, 'an empty problem');
}

describe('SPF over any DNS answers', () => {
  it('evaluateSpf gives one of the seven results within the lookup limits, for a sender, a null sender and any HELO', async () => {
    await fc.assert(
      fc.asyncProperty(zone, client, fc.constantFrom('u@fuzz.example', '', 'postmaster@FUZZ.example.'), fc.oneof(fc.constant('h.fuzz.example'), name), async (plan, ip, mailFrom, helo) => {
        const { resolver, queries } = planned(plan);
        const verdict = await evaluateSpf({ ip, mailFrom, helo }, { resolver, receiver: 'mx.example.org' });
        assertBounded(verdict, queries());
      }),
      { numRuns: 400 },
    );
  });

  it('checkSenderId gives one of the seven results within the lookup limits, in the mfrom and the pra scope', async () => {
    const headers = fc.constantFrom('From: u@fuzz.example\r\n\r\n', 'Sender: <a@FUZZ.example>\r\nFrom: b@c.example\r\n\r\n', 'From: \r\n\r\n', 'Resent-From: x@[192.0.2.1]\r\n\r\n');
    await fc.assert(
      fc.asyncProperty(zone, client, fc.constantFrom('mfrom' as const, 'pra' as const), headers, async (plan, ip, scope, block) => {
        const { resolver, queries } = planned(plan);
        const verdict = await checkSenderId({ scope, ip, helo: 'h.fuzz.example', mailFrom: 'u@fuzz.example', headers: splitHeaderFields(block) }, { resolver });
        assertBounded(verdict, queries());
      }),
      { numRuns: 200 },
    );
  });

  it('asks the most queries §4.6.4 allows when a zone calls for the most, and not one more', async () => {
    const records = <T>(...values: T[]): DnsAnswer<T> => ({ kind: 'records', records: values, ttl: 60 });
    const many = <T>(count: number, each: (i: number) => T) => records(...Array.from({ length: count }, (_, i) => each(i)));
    const evaluate = async (record: string, zone: Partial<Zone> = {}) => {
      const { resolver, queries } = planned({
        a: [many(10, () => '192.0.2.99')],
        aaaa: [records<string>()],
        mx: [many(10, (i) => ({ priority: i, exchange: `mx${i}.fuzz.example` }))],
        txt: [records(record), records('not from here')],
        ptr: [many(10, (i) => `host${i}.fuzz.example`)],
        ...zone,
      });
      const verdict = await evaluateSpf({ ip: '192.0.2.1', mailFrom: 'u@fuzz.example', helo: 'h.fuzz.example' }, { resolver });
      assertBounded(verdict, queries());
      return { verdict, queries: queries() };
    };
    // Ten mx terms of ten exchangers, one of them naming %{p}, then a fail with exp=: the bound itself.
    const most = await evaluate(`v=spf1 mx:%{p}.fuzz.example ${'mx '.repeat(9)}-all exp=exp.fuzz.example`);
    assert.equal(most.verdict.result, 'fail', most.verdict.problem);
    assert.deepEqual(most.queries, { a: 110, aaaa: 0, mx: 10, txt: 2, ptr: 1 }, 'every query the bound counts');
    // An 11th term is refused before it asks, and so is a chain of includes past the 10th.
    for (const record of [`v=spf1 ${'mx '.repeat(20)}-all`, 'v=spf1 include:fuzz.example -all', 'v=spf1 redirect=fuzz.example']) {
      const over = await evaluate(record, { txt: [records(record)] });
      assert.equal(over.verdict.result, 'permerror', record);
      assert.equal(over.verdict.problem, 'more than 10 DNS-querying terms', record);
    }
    // 20 PTR names: 10 are looked up. 11 exchangers: a permerror before any is.
    const wide = await evaluate('v=spf1 ptr mx -all', { mx: [many(11, (i) => ({ priority: i, exchange: `mx${i}.fuzz.example` }))], ptr: [many(20, (i) => `host${i}.fuzz.example`)] });
    assert.equal(wide.verdict.problem, 'fuzz.example has 11 MX records, more than 10');
    assert.deepEqual(wide.queries, { a: 10, aaaa: 0, mx: 1, txt: 1, ptr: 1 }, 'the addresses of 10 PTR names and of no exchanger');
  });

  it('evaluates in bounded time when every answer is the largest a zone may give', async () => {
    // Ten MX names for each mx term, each with 14 addresses, TXT answers of 14 records of 4 kB,
    // PTR answers of 14 names: generous bounds against a quadratic walk, not speed claims.
    const many = <T>(record: T): DnsAnswer<T> => ({ kind: 'records', records: Array<T>(14).fill(record), ttl: 60 });
    const record = `v=spf1 ${'mx '.repeat(9)}a:%{p}.%{d} ${'ip4:192.0.2.0/24 '.repeat(230)}`.padEnd(4096, ' ');
    const shapes: Zone[] = [
      { a: [many('192.0.2.9')], aaaa: [many('2001:db8::9')], mx: [{ kind: 'records', records: Array.from({ length: 10 }, (_, i) => ({ priority: i, exchange: `mx${i}.fuzz.example` })), ttl: 60 }], txt: [{ kind: 'records', records: [record], ttl: 60 }], ptr: [many('fuzz.example')] },
      { a: [many('x')], aaaa: [many('')], mx: [many({ priority: 0, exchange: 'a.'.repeat(2000) })], txt: [many(record)], ptr: [many('%{p}'.repeat(1000))] },
    ];
    for (const shape of shapes) {
      const ms = await elapsedMsAsync(async () => {
        const { resolver } = planned(shape);
        assert.ok(SPF_RESULTS.includes((await evaluateSpf({ ip: '192.0.2.1', mailFrom: 'u@fuzz.example', helo: 'h.example' }, { resolver })).result), 'a result');
      });
      assert.ok(ms < 1000, `${ms.toFixed(0)} ms`);
    }
  });
});
