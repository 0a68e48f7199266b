import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { isIP } from 'node:net';
import fc from 'fast-check';
import { resolveConfiguredHosts, resolveMailHosts } from '../../src/dns/mx.js';
import { createNodeResolver } from '../../src/dns/node-resolver.js';
import { ConfigError } from '../../src/core/errors.js';
import type { DnsAnswer, MxHost, MxRecord, MxResolution, Resolver } from '../../src/dns/types.js';
import { startDnsServer, type DnsTestServer, type Zone } from '../support/dns-server.js';

const host = (n: number) => ({ A: [`192.0.2.${n}`] });

const zone: Zone = {
  'a.mx.test': host(1),
  'b.mx.test': host(2),
  'c.mx.test': host(3),
  'd.mx.test': host(4),
  'dual.mx.test': { AAAA: ['2001:db8::1', '2001:db8::2', '2001:db8::3'], A: ['192.0.2.10', '192.0.2.11', '192.0.2.12'] },
  'noaddr.mx.test': { TXT: ['exists, no address'] },
  'noaddr2.mx.test': { TXT: ['exists, no address'] },
  'servfail.mx.test': { servfail: true },
  'servfail2.mx.test': { servfail: true },
  'v6fails.mx.test': { A: ['192.0.2.20'], servfail: ['AAAA'] },
  'v6only.mx.test': { AAAA: ['2001:db8::70'] },
  'v6fails-noa.mx.test': { TXT: ['no A record'], servfail: ['AAAA'] },

  'sorted.test': { MX: [{ priority: 30, exchange: 'c.mx.test' }, { priority: 10, exchange: 'a.mx.test' }, { priority: 20, exchange: 'b.mx.test' }] },
  'equal.test': {
    MX: [
      { priority: 10, exchange: 'a.mx.test' },
      { priority: 10, exchange: 'b.mx.test' },
      { priority: 10, exchange: 'c.mx.test' },
      { priority: 5, exchange: 'd.mx.test' },
    ],
  },
  'implicit.test': { A: ['192.0.2.50'], AAAA: ['2001:db8::50'] },
  'implicit-none.test': { TXT: ['v=spf1 -all'] },
  'implicit-v6only.test': { AAAA: ['2001:db8::71'] },
  'v6only.test': { MX: [{ priority: 10, exchange: 'v6only.mx.test' }, { priority: 20, exchange: 'noaddr.mx.test' }] },
  'implicit-tempfail.test': { servfail: ['A', 'AAAA'] },
  'implicit-halffail.test': { TXT: ['no A record'], servfail: ['AAAA'] },
  'halffail.test': { MX: [{ priority: 10, exchange: 'v6fails-noa.mx.test' }] },
  'null.test': { MX: [{ priority: 0, exchange: '.' }] },
  'null-mixed.test': { MX: [{ priority: 0, exchange: '.' }, { priority: 10, exchange: 'b.mx.test' }] },
  'mx-tempfail.test': { servfail: ['MX'], A: ['192.0.2.60'] },
  'partial.test': { MX: [{ priority: 10, exchange: 'servfail.mx.test' }, { priority: 20, exchange: 'b.mx.test' }] },
  'all-tempfail.test': { MX: [{ priority: 10, exchange: 'servfail.mx.test' }, { priority: 20, exchange: 'servfail2.mx.test' }] },
  'all-noaddr.test': { MX: [{ priority: 10, exchange: 'noaddr.mx.test' }, { priority: 20, exchange: 'missing.mx.test' }] },
  'tempfail-and-missing.test': { MX: [{ priority: 10, exchange: 'missing.mx.test' }, { priority: 20, exchange: 'servfail.mx.test' }] },
  'literal.test': { MX: [{ priority: 10, exchange: '192.0.2.1' }, { priority: 20, exchange: 'b.mx.test' }] },
  'literal-only.test': { MX: [{ priority: 10, exchange: '192.0.2.1' }] },
  'literal6-only.test': { MX: [{ priority: 10, exchange: '2001:DB8::25' }] },
  'literal-bracketed.test': { MX: [{ priority: 10, exchange: '[192.0.2.1]' }] },
  'dangling.test': { MX: [{ priority: 10, exchange: 'missing.mx.test' }, { priority: 20, exchange: 'a.mx.test' }] },
  'dual.test': { MX: [{ priority: 10, exchange: 'dual.mx.test' }] },
  'v6fails.test': { MX: [{ priority: 10, exchange: 'v6fails.mx.test' }] },
  'many.test': {
    MX: [
      { priority: 40, exchange: 'd.mx.test' },
      { priority: 30, exchange: 'c.mx.test' },
      { priority: 20, exchange: 'b.mx.test' },
      { priority: 10, exchange: 'a.mx.test' },
    ],
  },
  'six.test': {
    MX: ['a', 'b', 'c', 'd', 'dual', 'v6fails'].map((name, i) => ({ priority: 60 - i * 10, exchange: `${name}.mx.test` })),
  },
  'dupes.test': {
    MX: [
      { priority: 20, exchange: 'A.mx.test' },
      { priority: 10, exchange: 'a.mx.test' },
      { priority: 15, exchange: 'b.mx.test' },
    ],
  },
};

let server: DnsTestServer;
let resolver: Resolver;

before(async () => {
  server = await startDnsServer(zone);
  resolver = createNodeResolver({ servers: [server.address], timeoutMs: 2000, tries: 1 });
});
after(() => server.close());
beforeEach(() => {
  server.queries.length = 0;
});

function hostsOf(result: MxResolution): MxHost[] {
  assert.equal(result.kind, 'hosts', JSON.stringify(result));
  return result.kind === 'hosts' ? result.hosts : [];
}

/** A random() that returns the given values in turn. */
function sequence(...values: number[]): () => number {
  let next = 0;
  return () => values[next++ % values.length] ?? 0;
}

describe('ordering', () => {
  test('exchangers come sorted by preference, each with its addresses', async () => {
    const result = await resolveMailHosts(resolver, 'sorted.test');
    assert.deepEqual(result, {
      kind: 'hosts',
      implicit: false,
      hosts: [
        { name: 'a.mx.test', preference: 10, addresses: ['192.0.2.1'] },
        { name: 'b.mx.test', preference: 20, addresses: ['192.0.2.2'] },
        { name: 'c.mx.test', preference: 30, addresses: ['192.0.2.3'] },
      ],
    });
  });

  test('equal preferences are shuffled by the injected random, lower preferences stay first', async () => {
    // One random key per record, in answer order: a, b, c, d.
    const first = hostsOf(await resolveMailHosts(resolver, 'equal.test', { random: sequence(0.9, 0.1, 0.5, 0.3) }));
    assert.deepEqual(first.map((h) => h.name), ['d.mx.test', 'b.mx.test', 'c.mx.test', 'a.mx.test']);
    const second = hostsOf(await resolveMailHosts(resolver, 'equal.test', { random: sequence(0.2, 0.6, 0.4, 0.9) }));
    assert.deepEqual(second.map((h) => h.name), ['d.mx.test', 'a.mx.test', 'c.mx.test', 'b.mx.test']);
  });

  test('with Math.random every order of an equal-preference group turns up', async () => {
    const seen = new Set<string>();
    for (let i = 0; i < 200 && seen.size < 6; i++) {
      const hosts = hostsOf(await resolveMailHosts(resolver, 'equal.test'));
      assert.equal(hosts[0]?.name, 'd.mx.test');
      seen.add(hosts.map((h) => h.name).join(' '));
    }
    assert.equal(seen.size, 6);
  });

  test('exchangers are deduplicated by name, keeping the lowest preference', async () => {
    const hosts = hostsOf(await resolveMailHosts(resolver, 'dupes.test'));
    assert.deepEqual(hosts.map((h) => [h.name, h.preference]), [['a.mx.test', 10], ['b.mx.test', 15]]);
  });
});

describe('implicit MX and null MX', () => {
  test('no MX records: the domain itself, preference 0, implicit', async () => {
    assert.deepEqual(await resolveMailHosts(resolver, 'implicit.test'), {
      kind: 'hosts',
      implicit: true,
      hosts: [{ name: 'implicit.test', preference: 0, addresses: ['2001:db8::50', '192.0.2.50'] }],
    });
  });

  test('no MX records and no address is no-mail-host, said once (the address lookup\'s own problem repeated it)', async () => {
    assert.deepEqual(await resolveMailHosts(resolver, 'implicit-none.test'), { kind: 'no-mail-host', reason: 'implicit-none.test has no MX record and no A or AAAA record: it accepts no mail' });
    assert.deepEqual(await resolveMailHosts(resolver, 'implicit-none.test', { ipv6: false }), { kind: 'no-mail-host', reason: 'implicit-none.test has no MX record and no A record: it accepts no mail' });
  });

  test('no MX records and the address lookups fail temporarily is tempfail', async () => {
    const result = await resolveMailHosts(resolver, 'implicit-tempfail.test');
    assert.equal(result.kind, 'tempfail');
    assert.match(result.kind === 'tempfail' ? result.reason : '', /ESERVFAIL/);
  });

  test('a single MX to the root is a null MX', async () => {
    assert.deepEqual(await resolveMailHosts(resolver, 'null.test'), { kind: 'null-mx' });
  });

  test('a null MX is recognised whether the resolver gives the root as "." or as ""', async () => {
    // node:dns gives ""; a resolver that keeps the presentation form (a cache, a test zone) gives ".".
    for (const exchange of ['.', '']) {
      const stub: Resolver = { ...resolver, mx: () => Promise.resolve({ kind: 'records', records: [{ priority: 0, exchange }], ttl: 60 }) };
      assert.deepEqual(await resolveMailHosts(stub, 'null.test'), { kind: 'null-mx' }, JSON.stringify(exchange));
    }
  });

  test('a null MX mixed with real ones is skipped', async () => {
    const hosts = hostsOf(await resolveMailHosts(resolver, 'null-mixed.test'));
    assert.deepEqual(hosts.map((h) => h.name), ['b.mx.test']);
  });

  test('a domain that does not exist is nxdomain', async () => {
    assert.deepEqual(await resolveMailHosts(resolver, 'missing.test'), { kind: 'nxdomain' });
  });

  test('an MX lookup that fails temporarily is tempfail, never the implicit MX', async () => {
    const result = await resolveMailHosts(resolver, 'mx-tempfail.test');
    assert.equal(result.kind, 'tempfail');
    assert.equal(server.queries.filter((q) => q.type !== 'MX').length, 0);
  });
});

describe('exchanger addresses', () => {
  test('an exchanger that fails temporarily is kept with its problem, the others are used', async () => {
    const hosts = hostsOf(await resolveMailHosts(resolver, 'partial.test'));
    assert.equal(hosts.length, 2);
    assert.equal(hosts[0]?.name, 'servfail.mx.test');
    assert.deepEqual(hosts[0]?.addresses, []);
    assert.match(hosts[0]?.addressProblem ?? '', /ESERVFAIL/);
    assert.deepEqual(hosts[1], { name: 'b.mx.test', preference: 20, addresses: ['192.0.2.2'] });
  });

  test('when every exchanger fails temporarily the result is tempfail', async () => {
    const result = await resolveMailHosts(resolver, 'all-tempfail.test');
    assert.equal(result.kind, 'tempfail');
    assert.match(result.kind === 'tempfail' ? result.reason : '', /servfail\.mx\.test.*servfail2\.mx\.test/);
  });

  test('when every exchanger exists without an address the result is no-mail-host', async () => {
    const result = await resolveMailHosts(resolver, 'all-noaddr.test');
    assert.equal(result.kind, 'no-mail-host');
    const reason = result.kind === 'no-mail-host' ? result.reason : '';
    assert.equal(reason, 'no mail exchanger of all-noaddr.test has an address, so it accepts no mail: noaddr.mx.test has no AAAA or A records; missing.mx.test does not exist (NXDOMAIN)');
  });

  test('one temporary failure among permanent ones keeps the result temporary', async () => {
    assert.equal((await resolveMailHosts(resolver, 'tempfail-and-missing.test')).kind, 'tempfail');
  });

  test('an AAAA lookup that fails temporarily, with no A record, is tempfail, never no-mail-host', async () => {
    // The AAAA records that could not be read might be the addresses the mail goes to.
    const viaMx = await resolveMailHosts(resolver, 'halffail.test');
    assert.equal(viaMx.kind, 'tempfail', JSON.stringify(viaMx));
    assert.match(viaMx.kind === 'tempfail' ? viaMx.reason : '', /ESERVFAIL/);
    const implicit = await resolveMailHosts(resolver, 'implicit-halffail.test');
    assert.equal(implicit.kind, 'tempfail', JSON.stringify(implicit));
  });

  test('an exchanger that does not exist gets an addressProblem', async () => {
    const hosts = hostsOf(await resolveMailHosts(resolver, 'dangling.test'));
    assert.deepEqual(hosts[0], { name: 'missing.mx.test', preference: 10, addresses: [], addressProblem: 'missing.mx.test does not exist (NXDOMAIN)' });
    assert.deepEqual(hosts[1]?.addresses, ['192.0.2.1']);
  });

  test('an IP address as exchange is that address, not looked up, as Postfix delivers to it', async () => {
    const hosts = hostsOf(await resolveMailHosts(resolver, 'literal.test'));
    assert.deepEqual(hosts[0], { name: '192.0.2.1', preference: 10, addresses: ['192.0.2.1'] });
    assert.deepEqual(hostsOf(await resolveMailHosts(resolver, 'literal-only.test')), [{ name: '192.0.2.1', preference: 10, addresses: ['192.0.2.1'] }]);
    assert.deepEqual(hostsOf(await resolveMailHosts(resolver, 'literal6-only.test'))[0]?.addresses, ['2001:db8::25']);
    assert.deepEqual(server.queries.filter((q) => q.type !== 'MX' && q.name !== 'b.mx.test'), []);
    const [v6off] = hostsOf(await resolveMailHosts(resolver, 'literal6-only.test', { ipv6: false }));
    assert.deepEqual(v6off?.addresses, []);
    assert.match(v6off?.addressProblem ?? '', /IPv6 is off/);
    const bracketed = await resolveMailHosts(resolver, 'literal-bracketed.test');
    assert.equal(bracketed.kind, 'no-mail-host');
    assert.match(bracketed.kind === 'no-mail-host' ? bracketed.reason : '', /\[192\.0\.2\.1\] is an address literal, not a host name/);
  });

  test('IPv6 and IPv4 addresses are interleaved IPv6 first, up to maxAddressesPerHost', async () => {
    const [dual] = hostsOf(await resolveMailHosts(resolver, 'dual.test'));
    assert.deepEqual(dual?.addresses, ['2001:db8::1', '192.0.2.10', '2001:db8::2', '192.0.2.11']);
    const [capped] = hostsOf(await resolveMailHosts(resolver, 'dual.test', { maxAddressesPerHost: 1 }));
    assert.deepEqual(capped?.addresses, ['2001:db8::1']);
  });

  test('an address given twice (a duplicated record) is tried once', async () => {
    const stub: Resolver = {
      ...resolver,
      mx: () => Promise.resolve({ kind: 'records', records: [{ priority: 10, exchange: 'twice.mx.test' }], ttl: 60 }),
      a: () => Promise.resolve({ kind: 'records', records: ['192.0.2.30', '192.0.2.30', '192.0.2.31'], ttl: 60 }),
      aaaa: () => Promise.resolve({ kind: 'nodata', ttl: 60 }),
    };
    assert.deepEqual(hostsOf(await resolveMailHosts(stub, 'twice.test'))[0]?.addresses, ['192.0.2.30', '192.0.2.31']);
  });

  test('ipv6: false asks no AAAA', async () => {
    const [dual] = hostsOf(await resolveMailHosts(resolver, 'dual.test', { ipv6: false }));
    assert.deepEqual(dual?.addresses, ['192.0.2.10', '192.0.2.11', '192.0.2.12']);
    assert.equal(server.queries.filter((q) => q.type === 'AAAA').length, 0);
  });

  test('ipv6: false keeps an exchanger with IPv6 addresses only, without addresses: the domain takes mail, out of our reach', async () => {
    const [only, none] = hostsOf(await resolveMailHosts(resolver, 'v6only.test', { ipv6: false }));
    assert.deepEqual(only?.addresses, []);
    assert.match(only?.addressProblem ?? '', /^v6only\.mx\.test has IPv6 addresses only, and IPv6 is off/);
    assert.deepEqual(none?.addresses, []);
    const implicit = await resolveMailHosts(resolver, 'implicit-v6only.test', { ipv6: false });
    assert.equal(implicit.kind === 'hosts' && implicit.implicit, true);
    assert.deepEqual(hostsOf(implicit)[0]?.addresses, []);
    assert.equal((await resolveMailHosts(resolver, 'all-noaddr.test', { ipv6: false })).kind, 'no-mail-host', 'no address in either family is still none');
  });

  test('ipv6: false still says NXDOMAIN for an exchanger that does not exist, and asks it no AAAA', async () => {
    server.queries.length = 0;
    const result = await resolveMailHosts(resolver, 'all-noaddr.test', { ipv6: false });
    assert.match(result.kind === 'no-mail-host' ? result.reason : '', /missing\.mx\.test does not exist \(NXDOMAIN\)/);
    assert.deepEqual(server.queries.filter((q) => q.type === 'AAAA').map((q) => q.name), ['noaddr.mx.test'], 'AAAA only of the name that exists without an A record');
  });

  test('AAAA and A are asked for every exchanger', async () => {
    await resolveMailHosts(resolver, 'sorted.test');
    const asked = server.queries.filter((q) => q.name === 'a.mx.test').map((q) => q.type).sort();
    assert.deepEqual(asked, ['A', 'AAAA']);
  });

  test('an AAAA failure does not matter when A answers', async () => {
    const [only] = hostsOf(await resolveMailHosts(resolver, 'v6fails.test'));
    assert.deepEqual(only, { name: 'v6fails.mx.test', preference: 10, addresses: ['192.0.2.20'] });
  });
});

describe('limits', () => {
  test('maxHosts keeps the most preferred exchangers, and only they are looked up', async () => {
    const hosts = hostsOf(await resolveMailHosts(resolver, 'many.test', { maxHosts: 2 }));
    assert.deepEqual(hosts.map((h) => h.name), ['a.mx.test', 'b.mx.test']);
    assert.equal(server.queries.filter((q) => q.name === 'd.mx.test').length, 0);
  });

  test('the default cap is 5 exchangers', async () => {
    const hosts = hostsOf(await resolveMailHosts(resolver, 'six.test'));
    assert.deepEqual(hosts.map((h) => h.name), ['v6fails.mx.test', 'dual.mx.test', 'd.mx.test', 'c.mx.test', 'b.mx.test']);
  });

  test('limits that are not positive integers throw ConfigError', async () => {
    await assert.rejects(resolveMailHosts(resolver, 'sorted.test', { maxHosts: 0 }), ConfigError);
    await assert.rejects(resolveMailHosts(resolver, 'sorted.test', { maxAddressesPerHost: 2.5 }), ConfigError);
  });
});

describe('resolveConfiguredHosts (call-forward to configured hosts)', () => {
  test('keeps the order given, takes IP addresses as they are and resolves names', async () => {
    const hosts = hostsOf(await resolveConfiguredHosts(resolver, ['192.0.2.99', 'a.mx.test', 'missing.mx.test']));
    assert.deepEqual(hosts.map((h) => [h.name, h.preference, h.addresses]), [
      ['192.0.2.99', 0, ['192.0.2.99']],
      ['a.mx.test', 1, ['192.0.2.1']],
      ['missing.mx.test', 2, []],
    ]);
    assert.match(hosts[2]!.addressProblem!, /NXDOMAIN/);
  });

  test('is a temporary failure when every name fails temporarily', async () => {
    const result = await resolveConfiguredHosts(resolver, ['servfail.mx.test']);
    assert.equal(result.kind, 'tempfail');
  });

  test('a name that fails temporarily does not keep the others from being used', async () => {
    const hosts = hostsOf(await resolveConfiguredHosts(resolver, ['servfail.mx.test', 'a.mx.test']));
    assert.deepEqual(hosts[0]?.addresses, []);
    assert.match(hosts[0]?.addressProblem ?? '', /ESERVFAIL/);
    assert.deepEqual(hosts[1], { name: 'a.mx.test', preference: 1, addresses: ['192.0.2.1'] });
  });
});

describe('resolveMailHosts fuzzed', () => {
  // Whatever a domain's DNS answers (any exchange text, preference, duplicates, any addresses or
  // failures), the result is one of the declared outcomes within the limits, never a throw.
  const exchange = fc.oneof(
    fc.constantFrom('', '.', 'a.mx.test', 'A.MX.TEST.', '192.0.2.1', '[192.0.2.1]', '2001:db8::1', 'fe80::1%eth0', '[2001:db8::1]'),
    fc.domain(),
    fc.string({ unit: 'binary', maxLength: 40 }),
  );
  const record = fc.record({ priority: fc.integer({ min: 0, max: 65535 }), exchange });
  const answer = <T>(value: fc.Arbitrary<T>): fc.Arbitrary<DnsAnswer<T>> =>
    fc.oneof(
      fc.array(value, { maxLength: 12 }).map((records) => ({ kind: 'records' as const, records, ttl: 60 })),
      fc.constantFrom<DnsAnswer<T>>({ kind: 'nodata', ttl: 60 }, { kind: 'nxdomain', ttl: 60 }, { kind: 'tempfail', reason: 'SERVFAIL' }),
    );
  const v4 = fc.ipV4();
  const v6 = fc.ipV6();

  test('gives hosts in preference order within maxHosts and maxAddressesPerHost, or a declared outcome', async () => {
    await fc.assert(
      fc.asyncProperty(
        answer<MxRecord>(record),
        answer(v4),
        answer(v6),
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 1, max: 5 }),
        fc.boolean(),
        async (mx, a, aaaa, maxHosts, maxAddressesPerHost, ipv6) => {
          const stub: Resolver = { ...resolver, mx: () => Promise.resolve(mx), a: () => Promise.resolve(a), aaaa: () => Promise.resolve(aaaa) };
          const result = await resolveMailHosts(stub, 'fuzz.test', { maxHosts, maxAddressesPerHost, ipv6 });
          assert.ok(['hosts', 'null-mx', 'nxdomain', 'no-mail-host', 'tempfail'].includes(result.kind), JSON.stringify(result));
          if (result.kind === 'tempfail' || result.kind === 'no-mail-host') assert.ok(result.reason.length > 0, 'result.reason.length > 0');
          if (result.kind !== 'hosts') return;
          assert.ok(result.hosts.length >= 1 && result.hosts.length <= maxHosts, 'result.hosts.length >= 1 && result.hosts.length <= maxHosts');
          assert.ok(new Set(result.hosts.map((host) => host.name)).size === result.hosts.length, 'exchangers named twice');
          for (const [i, host] of result.hosts.entries()) {
            if (i > 0) assert.ok(result.hosts[i - 1]!.preference <= host.preference, 'result.hosts[i - 1]!.preference <= host.preference');
            assert.ok(host.addresses.length <= maxAddressesPerHost, 'host.addresses.length <= maxAddressesPerHost');
            assert.equal(new Set(host.addresses).size, host.addresses.length);
            for (const address of host.addresses) assert.ok(isIP(address) === 4 || (ipv6 && isIP(address) === 6), address);
            assert.ok(host.addresses.length > 0 || (host.addressProblem ?? '').length > 0, 'host.addresses.length > 0 || (host.addressProblem ?? \'\').length > 0');
          }
        },
      ),
      { numRuns: 500 },
    );
  });
});
