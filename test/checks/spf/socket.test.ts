/**
 * The evaluator over the real node:dns resolver against the in-process DNS server on loopback,
 * with zones from the OpenSPF suite: multi-string TXT, SERVFAIL, PTR, MX, CNAME, exp= and the
 * limits all through real packets. Names that c-ares refuses to send (with ':', '/', spaces or
 * '%') are left to the in-memory suite run.
 */

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { ManualClock } from '../../support/manual-time.js';
import { CachingResolver } from '../../../src/dns/cache.js';
import { createNodeResolver } from '../../../src/dns/node-resolver.js';
import { evaluateSpf } from '../../../src/checks/spf/index.js';
import { startDnsServer, type DnsTestServer } from '../../support/dns-server.js';
import { loadSpfSuite, SUITE_DEFAULT_EXPLANATION, suiteDnsZone, type SuiteScenario } from '../../support/spf-suite.js';

const CASES = [
  'nolocalpart',
  'null-text',
  'txttimeout',
  'multitxt2',
  'ptr-match-ip6',
  'ptr-cname-loop',
  'mx-cidr6-0-ip6',
  'include-temperror',
  'redirect-cancels-prior-exp',
  'p-macro-ip6-valid',
  'domain-name-truncation',
  'mech-over-limit',
  'void-over-limit',
  'cname-aliasing',
];

let server: DnsTestServer;
const scenarios: SuiteScenario[] = loadSpfSuite('rfc7208-tests.yml');

before(async () => {
  server = await startDnsServer({});
});
after(async () => {
  await server.close();
});

test('suite cases over loopback DNS give the suite answers', async () => {
  // 2 s for the DNS server in this process to answer (a loaded machine may not run it at once),
  // which txttimeout waits out once.
  const resolver = createNodeResolver({ servers: [server.address], timeoutMs: 2000, tries: 1 });
  const failures: string[] = [];
  let ran = 0;
  for (const scenario of scenarios) {
    const cases = scenario.cases.filter((c) => CASES.includes(c.id));
    if (cases.length === 0) continue;
    server.setZone(suiteDnsZone(scenario.zone));
    for (const c of cases) {
      const verdict = await evaluateSpf({ ip: c.host, mailFrom: c.mailfrom, helo: c.helo }, { resolver, defaultExplanation: SUITE_DEFAULT_EXPLANATION });
      const ok = (c.results as string[]).includes(verdict.result) && (c.explanation === undefined || verdict.explanation === c.explanation);
      ran += 1;
      if (!ok) failures.push(`${c.id}: got ${verdict.result} ${String(verdict.explanation)} (${String(verdict.problem)})`);
    }
  }
  assert.deepEqual(failures, []);
  assert.equal(ran, CASES.length);
});

test('through the DNS cache a second evaluation sends no query', async () => {
  const scenario = scenarios.find((s) => s.cases.some((c) => c.id === 'cname-aliasing'));
  assert.ok(scenario, 'scenario');
  server.setZone(suiteDnsZone(scenario.zone));
  const resolver = new CachingResolver(createNodeResolver({ servers: [server.address], timeoutMs: 2000, tries: 1 }), { clock: new ManualClock() });
  const request = { ip: '192.0.2.27', mailFrom: 'test@mail.example.org', helo: 'mail.example.org' };
  const first = await evaluateSpf(request, { resolver });
  const sent = server.queries.length;
  const second = await evaluateSpf(request, { resolver });
  assert.equal(first.result, 'fail');
  assert.equal(second.result, 'fail');
  assert.equal(server.queries.length, sent);
});

test('a wall clock (Date.now) stepped an hour forward during an evaluation over loopback DNS neither ends it nor keeps %{t} from reading the wall clock', async () => {
  server.setZone({
    'stepped.example': { TXT: ['v=spf1 a:h1.stepped.example a:h2.stepped.example -all exp=why.stepped.example'] },
    'h1.stepped.example': { A: ['203.0.113.1'] },
    'h2.stepped.example': { A: ['192.0.2.9'] },
    'why.stepped.example': { TXT: ['at %{t}'] },
  });
  const inner = createNodeResolver({ servers: [server.address], timeoutMs: 2000, tries: 1 });
  const realNow = Date.now;
  const stepped = realNow() + 3_600_000;
  // The step comes while the first term's lookup is in flight.
  const resolver = { ...inner, a: (name: string) => ((Date.now = () => stepped), inner.a(name)) };
  try {
    const pass = await evaluateSpf({ ip: '192.0.2.9', mailFrom: 'user@stepped.example', helo: 'h' }, { resolver });
    assert.equal(pass.result, 'pass', pass.problem);
    assert.equal(pass.mechanism, 'a:h2.stepped.example');
    const fail = await evaluateSpf({ ip: '192.0.2.10', mailFrom: 'user@stepped.example', helo: 'h' }, { resolver });
    assert.equal(fail.result, 'fail', fail.problem);
    assert.equal(fail.explanation, `at ${Math.floor(stepped / 1000)}`);
  } finally {
    Date.now = realNow;
  }
});
