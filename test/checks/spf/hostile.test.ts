/**
 * The evaluator against senders and DNS data chosen by an attacker, over the real node:dns
 * resolver and the in-process DNS server on loopback: what the OpenSPF suite does not cover.
 */

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createNodeResolver } from '../../../src/dns/node-resolver.js';
import { evaluateSpf } from '../../../src/checks/spf/index.js';
import { startDnsServer, type DnsTestServer } from '../../support/dns-server.js';

let server: DnsTestServer;

before(async () => {
  server = await startDnsServer({});
});
after(async () => {
  await server.close();
});

const resolver = () => createNodeResolver({ servers: [server.address], timeoutMs: 1000, tries: 1 });

test('a sender domain longer than 253 characters is malformed (none), not the policy of its right-hand labels', async () => {
  const label = 'a'.repeat(60);
  const published = `${label}.${label}.${label}.example.com`;
  server.setZone({ [published]: { TXT: ['v=spf1 +all'] } });
  const sent = server.queries.length;
  const verdict = await evaluateSpf({ ip: '192.0.2.1', mailFrom: `user@${label}.${published}`, helo: 'h.example' }, { resolver: resolver() });
  assert.equal(verdict.result, 'none');
  assert.match(verdict.problem ?? '', /longer than 253 characters/);
  assert.equal(server.queries.length, sent);
});

test('an exp= explanation is bounded: its expansion is cut, and a text longer than a record is ignored', async () => {
  server.setZone({
    'exp.example': { TXT: ['v=spf1 -all exp=why.exp.example'] },
    // 4000 characters of %{s}: 1000 copies of the sender, 77 000 characters, if nothing stopped it.
    'why.exp.example': { TXT: ['%{s}'.repeat(1000)] },
    'huge.example': { TXT: ['v=spf1 -all exp=why.huge.example'] },
    // 60 000 characters (the answer comes over TCP).
    'why.huge.example': { TXT: ['%{s}'.repeat(15_000)] },
  });
  const sender = `${'x'.repeat(64)}@exp.example`;
  const cut = await evaluateSpf({ ip: '192.0.2.1', mailFrom: sender, helo: 'h.example' }, { resolver: resolver() });
  assert.equal(cut.result, 'fail');
  assert.equal(cut.explanation, sender.repeat(7).slice(0, 512));
  const huge = await evaluateSpf({ ip: '192.0.2.1', mailFrom: 'x@huge.example', helo: 'h.example' }, { resolver: resolver() });
  assert.equal(huge.result, 'fail');
  assert.equal(huge.explanation, 'The domain huge.example does not designate 192.0.2.1 as a permitted sender');
  assert.ok(huge.trace.some((entry) => entry.kind === 'note' && /explanation longer than 4096 characters/.test(entry.message)), 'huge.trace.some((entry) => entry.kind === \'note\' && /explanation longer than 4096 characters/.tes...');
});

test('a HELO name with an @ is not a domain: it is not checked as the domain after its @', async () => {
  server.setZone({ 'victim.example': { TXT: ['v=spf1 +all'] } });
  for (const request of [
    { ip: '192.0.2.1', mailFrom: 'user@elsewhere.example', helo: 'x@victim.example', identity: 'helo' as const },
    { ip: '192.0.2.1', mailFrom: '', helo: 'x@victim.example' },
  ]) {
    const verdict = await evaluateSpf(request, { resolver: resolver() });
    assert.equal(verdict.result, 'none', JSON.stringify(request));
    assert.equal(verdict.domain, 'x@victim.example');
  }
});

test('an IPv4-mapped client is reported as the IPv4 address it was checked as', async () => {
  server.setZone({ 'mapped.example': { TXT: ['v=spf1 ip4:192.0.2.0/24 -all'] } });
  const verdict = await evaluateSpf({ ip: '::ffff:192.0.2.1', mailFrom: 'user@mapped.example', helo: 'h.example' }, { resolver: resolver() });
  assert.equal(verdict.result, 'pass');
  assert.equal(verdict.ip, '192.0.2.1');
});

test('a domain-spec of repeated macros costs what one name does: its expansion is not kept whole', async () => {
  const macros = '%{h}'.repeat(1000);
  // §7.3 keeps the right-hand labels of a long expansion: 100 copies of the HELO x.y.example
  // are cut to the 253 characters or fewer after a dot.
  const full = 'x.y.example'.repeat(100);
  const cutName = full.slice(full.length - 253).replace(/^[^.]*\./, '');
  server.setZone({
    'redirect.example': { TXT: [`v=spf1 redirect=${macros}`] },
    'terms.example': { TXT: [`v=spf1 a:${macros.slice(0, 1000)} exists:${macros.slice(0, 1000)} ptr:${macros.slice(0, 1000)} -all`] },
    'tail.example': { TXT: [`v=spf1 exists:${macros.slice(0, 400)} -all`] },
    [cutName]: { A: ['127.0.0.2'] },
  });
  // A 4000-character HELO without a dot: every expansion is one label of megabytes, unusable.
  const helo = 'a'.repeat(4000);
  const redirected = await evaluateSpf({ ip: '192.0.2.1', mailFrom: 'x@redirect.example', helo }, { resolver: resolver() });
  assert.equal(redirected.result, 'permerror');
  assert.ok((redirected.problem ?? '').length < 5000, `problem of ${redirected.problem?.length} characters`);
  const terms = await evaluateSpf({ ip: '192.0.2.1', mailFrom: 'x@terms.example', helo }, { resolver: resolver() });
  assert.equal(terms.result, 'fail');
  assert.ok(JSON.stringify(terms).length < 20_000, `verdict of ${JSON.stringify(terms).length} characters`);
  const tail = await evaluateSpf({ ip: '192.0.2.1', mailFrom: 'x@tail.example', helo: 'x.y.example' }, { resolver: resolver() });
  assert.equal(tail.result, 'pass');
  assert.ok(cutName.length <= 253 && cutName.length > 240, 'cutName.length <= 253 && cutName.length > 240');
});

test('a null MX (RFC 7505) names no host: an mx term asks for no address of "." and does not match', async () => {
  server.setZone({ 'nullmx.example': { TXT: ['v=spf1 mx -all'], MX: [{ priority: 0, exchange: '.' }] } });
  const sent = server.queries.length;
  const verdict = await evaluateSpf({ ip: '192.0.2.1', mailFrom: 'user@nullmx.example', helo: 'h.example' }, { resolver: resolver() });
  assert.equal(verdict.result, 'fail', verdict.problem);
  assert.equal(verdict.mechanism, '-all');
  assert.deepEqual(
    server.queries.slice(sent).map((q) => q.type),
    ['TXT', 'MX'],
  );
});
