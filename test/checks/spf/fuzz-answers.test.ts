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

/** A resolver answering from `plan`, counting the queries it is asked. */
function planned(plan: Zone): { resolver: Resolver; queries: () => number } {
  let queries = 0;
  const turn = <T>(answers: DnsAnswer<T>[]) => {
    let next = 0;
    return () => {
      queries += 1;
      return Promise.resolve(answers[next++ % answers.length]!);
    };
  };
  return { resolver: { a: turn(plan.a), aaaa: turn(plan.aaaa), mx: turn(plan.mx), txt: turn(plan.txt), ptr: turn(plan.ptr) }, queries: () => queries };
}

/**
 * What every verdict keeps to, whatever the answers. Each counted term asks at most 11 queries
 * (an mx or ptr term: its own lookup and 10 names' addresses), and %{p} asks a PTR and as many
 * as 10 forward lookups more; the record, exp= and a rejected 11th term come on top.
 */
function assertBounded(verdict: SpfVerdict, queries: number): void {
  assert.ok(SPF_RESULTS.includes(verdict.result), `result ${verdict.result}`);
  assert.ok(verdict.lookups.dnsTerms <= 11 && verdict.lookups.voidLookups <= 3, JSON.stringify(verdict.lookups));
  assert.ok(queries <= 1 + 11 * 11 + 11 * 11 + 2, `${queries} DNS queries`);
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
