/**
 * The evaluator over the real node:dns resolver against the in-process DNS server on loopback,
 * with zones from the OpenSPF suite: multi-string TXT, SERVFAIL, PTR, MX, CNAME, exp= and the
 * limits all through real packets. Names that c-ares refuses to send (with ':', '/', spaces or
 * '%') are left to the in-memory suite run.
 */

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { ManualClock } from '../../../src/core/clock.js';
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
  assert.ok(scenario);
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
