import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { BoundedIprev, checkIprev } from '../../../src/checks/iprev/index.js';
import type { DnsAnswer, Resolver } from '../../../src/dns/types.js';
import { ManualTimers } from '../../support/manual-time.js';
import { createNodeResolver } from '../../../src/dns/node-resolver.js';
import { reverseName } from '../../../src/dns/reverse.js';
import { startDnsServer } from '../../support/dns-server.js';
import { watch } from '../../support/wait.js';
import { buildZone, SuiteResolver } from '../../support/spf-suite.js';

const manyNames = Array.from({ length: 11 }, (_, i) => ({ PTR: `n${i}.example.com` }));
// Ten spellings of one name, then a second name: ten records, but only two names.
const spellings = ['dup', 'DUP', 'Dup', 'dUp', 'duP'].flatMap((label) => [`${label}.example.com`, `${label}.example.com.`]);
const resolver = new SuiteResolver(
  buildZone({
    [reverseName('192.0.2.1')]: [{ PTR: 'Mail.Example.COM.' }, { PTR: 'other.example.com' }],
    'mail.example.com': [{ A: '192.0.2.1' }, { AAAA: '2001:db8::1' }],
    'other.example.com': [{ A: '192.0.2.200' }],
    [reverseName('2001:db8::1')]: [{ PTR: 'mail.example.com' }],
    [reverseName('192.0.2.2')]: [{ PTR: 'other.example.com' }, { PTR: 'gone.example.com' }],
    [reverseName('192.0.2.3')]: [{ PTR: 'other.example.com' }, { PTR: 'slow.example.com' }],
    'slow.example.com': [{ A: 'TIMEOUT' }],
    [reverseName('192.0.2.4')]: [{ TXT: 'not a PTR' }],
    [reverseName('192.0.2.5')]: ['TIMEOUT'],
    [reverseName('192.0.2.6')]: manyNames,
    'n10.example.com': [{ A: '192.0.2.6' }],
    [reverseName('192.0.2.7')]: [{ PTR: 'slow.example.com' }, { PTR: 'seven.example.com' }],
    'seven.example.com': [{ A: '192.0.2.7' }],
    [reverseName('192.0.2.8')]: [...spellings.map((PTR) => ({ PTR })), { PTR: 'eight.example.com' }],
    'dup.example.com': [{ A: '192.0.2.200' }],
    'eight.example.com': [{ A: '192.0.2.8' }],
    [reverseName('192.0.2.9')]: [{ PTR: '.' }],
    [reverseName('2001:db8::7')]: [{ PTR: 'six.example.com' }],
    // Written out in full: an answer is compared as an address, not as text.
    'six.example.com': [{ AAAA: '2001:DB8:0:0:0:0:0:7' }],
  }),
);

test('pass: a PTR name resolves back (v4, v6 and IPv4-mapped)', async () => {
  const v4 = await checkIprev('192.0.2.1', { resolver });
  assert.equal(v4.result, 'pass');
  assert.equal(v4.kind, 'confirmed');
  assert.deepEqual(v4.confirmedNames, ['mail.example.com']);
  assert.deepEqual(v4.ptrNames, ['mail.example.com', 'other.example.com']);
  assert.equal((await checkIprev('2001:db8::1', { resolver })).result, 'pass');
  const mapped = await checkIprev('::ffff:192.0.2.1', { resolver });
  assert.equal(mapped.result, 'pass');
  assert.equal(mapped.ip, '192.0.2.1');
});

test('pass: one confirming name is enough, whatever the forward lookups of the others gave', async () => {
  const verdict = await checkIprev('192.0.2.7', { resolver });
  assert.equal(verdict.result, 'pass');
  assert.deepEqual(verdict.confirmedNames, ['seven.example.com']);
  assert.equal(verdict.reason, '192.0.2.7 has PTR seven.example.com, which resolves back to it', 'the name that confirms, not the first');
});

test('the verdict lists every lookup made, with its answer and data, as a log shows it', async () => {
  assert.deepEqual((await checkIprev('192.0.2.3', { resolver })).lookups.map(({ type, name, answer, data }) => [type, name, answer, data.length]), [
    ['PTR', '3.2.0.192.in-addr.arpa', 'records', 2],
    ['A', 'other.example.com', 'records', 1],
    ['A', 'slow.example.com', 'tempfail', 1],
  ]);
  const pass = await checkIprev('192.0.2.1', { resolver });
  assert.deepEqual(pass.lookups[1], { type: 'A', name: 'mail.example.com', answer: 'records', data: ['192.0.2.1'] });
  const reverse = await checkIprev('192.0.2.5', { resolver });
  assert.deepEqual(reverse.lookups.map(({ answer, data }) => [answer, data.length]), [['tempfail', 1]]);
  assert.ok((reverse.lookups[0]?.data[0] ?? '') !== '' && reverse.reason.endsWith(reverse.lookups[0]?.data[0] ?? '?'), 'the PTR failure is named in the lookup and the reason');
});

test('pass: a forward answer confirms when it is the same address written another way', async () => {
  const verdict = await checkIprev('2001:db8::7', { resolver });
  assert.equal(verdict.result, 'pass');
  assert.deepEqual(verdict.confirmedNames, ['six.example.com']);
});

test('fail: PTR names exist but none confirms (forward NXDOMAIN included)', async () => {
  const verdict = await checkIprev('192.0.2.2', { resolver });
  assert.equal(verdict.result, 'fail');
  assert.equal(verdict.kind, 'unconfirmed');
  assert.match(verdict.reason, /does not resolve back/);
});

test('permerror: no PTR data, which the reason says apart from "does not confirm"', async () => {
  const nodata = await checkIprev('192.0.2.4', { resolver });
  assert.equal(nodata.result, 'permerror');
  assert.equal(nodata.kind, 'no-ptr');
  assert.match(nodata.reason, /no PTR record/);
  const nxdomain = await checkIprev('198.51.100.1', { resolver });
  assert.equal(nxdomain.kind, 'no-ptr');
  const bogus = await checkIprev('bogus', { resolver });
  assert.deepEqual([bogus.result, bogus.kind, bogus.reason], ['permerror', 'invalid-address', '"bogus" is not an IP address']);
});

test('permerror: a PTR record naming the root names no host, and nothing is looked up forward', async () => {
  const verdict = await checkIprev('192.0.2.9', { resolver });
  assert.equal(verdict.result, 'permerror');
  assert.equal(verdict.kind, 'no-ptr');
  assert.match(verdict.reason, /name no host/);
  assert.deepEqual(verdict.lookups.map((lookup) => lookup.type), ['PTR']);
});

test('temperror: the reverse lookup, or an unconfirmed forward lookup, failed temporarily', async () => {
  assert.equal((await checkIprev('192.0.2.5', { resolver })).result, 'temperror');
  const forward = await checkIprev('192.0.2.3', { resolver });
  assert.equal(forward.result, 'temperror');
  assert.equal(forward.kind, 'dns-error');
  assert.deepEqual(forward.ptrNames, ['other.example.com', 'slow.example.com'], 'the names found are reported with a forward temperror');
});

test('only the first maxNames PTR names are looked up', async () => {
  const capped = await checkIprev('192.0.2.6', { resolver });
  assert.equal(capped.result, 'fail');
  assert.equal(capped.ptrNames.length, 10);
  assert.equal((await checkIprev('192.0.2.6', { resolver, maxNames: 11 })).result, 'pass');
});

test('maxNames counts names after de-duplication, not PTR records', async () => {
  const verdict = await checkIprev('192.0.2.8', { resolver });
  assert.deepEqual(verdict.ptrNames, ['dup.example.com', 'eight.example.com']);
  assert.equal(verdict.result, 'pass');
  assert.deepEqual(verdict.confirmedNames, ['eight.example.com']);
});

test('over loopback DNS: pass, no PTR and SERVFAIL', async () => {
  const server = await startDnsServer({
    [reverseName('127.0.0.9')]: { PTR: ['host.test'] },
    'host.test': { A: ['127.0.0.9'] },
    [reverseName('127.0.0.10')]: { servfail: true },
  });
  try {
    // 2 s for the DNS server in this process to answer: a loaded machine may not run it at once.
    const dns = createNodeResolver({ servers: [server.address], timeoutMs: 2000, tries: 1 });
    assert.equal((await checkIprev('127.0.0.9', { resolver: dns })).result, 'pass');
    assert.equal((await checkIprev('127.0.0.11', { resolver: dns })).kind, 'no-ptr');
    assert.equal((await checkIprev('127.0.0.10', { resolver: dns })).result, 'temperror');
  } finally {
    await server.close();
  }
});

test('timeoutMs: a reverse zone that never answers is a temperror once the bound is reached', async () => {
  const server = await startDnsServer({ [reverseName('127.0.0.12')]: { drop: true } });
  try {
    const dns = createNodeResolver({ servers: [server.address], timeoutMs: 3000, tries: 1 });
    // Measured on the timers given (a policy stage's), to the millisecond.
    const timers = new ManualTimers();
    const answer = watch(checkIprev('127.0.0.12', { resolver: dns, timeoutMs: 200, timers }));
    await timers.advance(199);
    assert.equal(answer(), undefined, 'not answered before the bound');
    await timers.advance(1);
    const verdict = answer();
    assert.ok(verdict, 'answered at the bound');
    assert.equal(verdict.result, 'temperror');
    assert.equal(verdict.kind, 'dns-error');
    assert.equal(verdict.ip, '127.0.0.12');
    assert.match(verdict.reason, /did not complete within 200 ms/);
  } finally {
    await server.close();
  }
});

test('fuzz: any client text and any PTR and forward answers give a verdict within maxNames, pass only when a name resolves back', async () => {
  const answer = <T>(value: fc.Arbitrary<T>): fc.Arbitrary<DnsAnswer<T>> =>
    fc.oneof(
      fc.array(value, { maxLength: 15 }).map((records) => ({ kind: 'records' as const, records, ttl: 60 })),
      fc.constantFrom<DnsAnswer<T>>({ kind: 'nodata', ttl: 60 }, { kind: 'nxdomain', ttl: 60 }, { kind: 'tempfail', reason: 'SERVFAIL' }),
    );
  const name = fc.oneof(fc.constantFrom('', '.', 'a.example', 'A.EXAMPLE.', 'b.example'), fc.domain(), fc.string({ unit: 'binary', maxLength: 30 }));
  const address = fc.oneof(fc.constantFrom('192.0.2.1', '::ffff:192.0.2.1', '2001:db8::1', '2001:DB8:0::1'), fc.ipV4(), fc.ipV6(), fc.string({ maxLength: 20 }));
  await fc.assert(
    fc.asyncProperty(address, answer(name), answer(address), fc.integer({ min: 1, max: 12 }), async (ip, ptr, forward, maxNames) => {
      const asked: string[] = [];
      const stub: Resolver = {
        mx: () => Promise.resolve({ kind: 'nodata', ttl: 60 }),
        txt: () => Promise.resolve({ kind: 'nodata', ttl: 60 }),
        ptr: () => Promise.resolve(ptr),
        a: (forwardName) => (asked.push(forwardName), Promise.resolve(forward)),
        aaaa: (forwardName) => (asked.push(forwardName), Promise.resolve(forward)),
      };
      const verdict = await checkIprev(ip, { resolver: stub, maxNames });
      assert.ok(['pass', 'fail', 'temperror', 'permerror'].includes(verdict.result), '[\'pass\', \'fail\', \'temperror\', \'permerror\'].includes(verdict.result)');
      assert.ok(verdict.reason.length > 0, 'verdict.reason.length > 0');
      assert.ok(verdict.ptrNames.length <= maxNames && asked.length <= maxNames, `${asked.length} forward lookups`);
      assert.ok(verdict.ptrNames.every((ptrName) => ptrName !== ''), 'verdict.ptrNames.every((ptrName) => ptrName !== \'\')');
      assert.equal(verdict.result === 'pass', verdict.confirmedNames.length > 0);
      assert.ok(verdict.confirmedNames.every((confirmed) => verdict.ptrNames.includes(confirmed)), 'verdict.confirmedNames.every((confirmed) => verdict.ptrNames.includes(confirmed))');
    }),
    { numRuns: 500 },
  );
});

test('BoundedIprev: a check that ran out is remembered by the canonical address, its lookups as they were then', async () => {
  // A reverse zone that answers only when told to, long after the bound.
  let answerPtr: (answer: DnsAnswer<string>) => void = () => undefined;
  let ptrQueries = 0;
  const silent: Resolver = {
    a: (name) => resolver.a(name),
    aaaa: (name) => resolver.aaaa(name),
    mx: (name) => resolver.mx(name),
    txt: (name) => resolver.txt(name),
    ptr: () => {
      ptrQueries += 1;
      return new Promise((resolve) => (answerPtr = resolve));
    },
  };
  const timers = new ManualTimers();
  const bounded = new BoundedIprev({ resolver: silent, timeoutMs: 200 });
  const first = watch(bounded.check('::ffff:192.0.2.1', timers, 6000));
  await timers.advance(200);
  const late = first();
  assert.ok(late, 'answered at the bound');
  assert.deepEqual([late.result, late.kind, late.ip, late.lookups], ['temperror', 'dns-error', '192.0.2.1', []]);
  // The lookup answers afterwards: the verdict already given, and logged, stays as it was.
  answerPtr({ kind: 'records', records: ['mail.example.com'], ttl: 60 });
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(late.lookups, []);
  // The same client written as IPv4 is the client remembered.
  const again = await bounded.check('192.0.2.1', timers, 6000);
  assert.deepEqual([again.result, again.kind, again.ip, ptrQueries], ['temperror', 'dns-error', '192.0.2.1', 1]);
  assert.match(again.reason, / 0 s ago; not asked again for 60 s$/);
});

test('BoundedIprev: a decision with no time left is bounded by 1 ms, not by a negative time', async () => {
  const timers = new ManualTimers();
  const never: Resolver = { a: (name) => resolver.a(name), aaaa: (name) => resolver.aaaa(name), mx: (name) => resolver.mx(name), txt: (name) => resolver.txt(name), ptr: () => new Promise(() => undefined) };
  const answer = watch(new BoundedIprev({ resolver: never, timeoutMs: 200 }).check('192.0.2.1', timers, -50));
  await timers.advance(1);
  assert.equal(answer()?.reason, 'the lookups for 192.0.2.1 did not complete within 1 ms');
});
