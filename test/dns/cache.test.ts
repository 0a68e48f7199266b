import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { CachingResolver, type CachingResolverOptions } from '../../src/dns/cache.js';
import { createNodeResolver } from '../../src/dns/node-resolver.js';
import { reverseName } from '../../src/dns/reverse.js';
import { ManualClock } from '../support/manual-time.js';
import { ConfigError } from '../../src/core/errors.js';
import type { Resolver } from '../../src/dns/types.js';
import { startDnsServer, type DnsTestServer, type Zone } from '../support/dns-server.js';
import { heapAfterGc } from '../support/heap.js';

const zone: Zone = {
  'ttl60.test': { A: ['192.0.2.1'], ttl: 60 },
  'ttl0.test': { A: ['192.0.2.2'], ttl: 0 },
  'ttl1y.test': { A: ['192.0.2.3'], ttl: 31536000 },
  'mail.test': { MX: [{ priority: 10, exchange: 'mx.mail.test' }], TXT: ['hello'] },
  'only-a.test': { A: ['192.0.2.4'] },
  'servfail.test': { servfail: true },
  'slow.test': { A: ['192.0.2.5'], delayMs: 100 },
  [reverseName('192.0.2.1')]: { PTR: ['ttl60.test'] },
};

let server: DnsTestServer;
let upstream: Resolver;
let clock: ManualClock;

before(async () => {
  server = await startDnsServer(zone);
  upstream = createNodeResolver({ servers: [server.address], timeoutMs: 2000, tries: 1 });
});
after(() => server.close());
beforeEach(() => {
  clock = new ManualClock();
  server.queries.length = 0;
});

function cached(options: Partial<CachingResolverOptions> = {}): CachingResolver {
  return new CachingResolver(upstream, { clock, ...options });
}

function queriesFor(name: string, type: string): number {
  return server.queries.filter((query) => query.name === name && query.type === type).length;
}

describe('positive answers', () => {
  test('a repeated lookup is a hit until the TTL runs out', async () => {
    const cache = cached();
    assert.deepEqual(await cache.a('ttl60.test'), { kind: 'records', records: ['192.0.2.1'], ttl: 60 });
    clock.advance(59_000);
    assert.deepEqual(await cache.a('ttl60.test'), { kind: 'records', records: ['192.0.2.1'], ttl: 1 });
    assert.equal(queriesFor('ttl60.test', 'A'), 1);
    assert.deepEqual(cache.stats(), { hits: 1, misses: 1, entries: 1 });
    clock.advance(1_000);
    await cache.a('ttl60.test');
    assert.equal(queriesFor('ttl60.test', 'A'), 2);
    assert.deepEqual(cache.stats(), { hits: 1, misses: 2, entries: 1 });
  });

  test('a hit reports the TTL left, rounded up', async () => {
    const cache = cached();
    await cache.a('ttl60.test');
    clock.advance(10_500);
    const answer = await cache.a('ttl60.test');
    assert.equal(answer.kind === 'records' && answer.ttl, 50);
  });

  test('a TTL below the minimum is raised to it', async () => {
    const cache = cached({ minTtlSeconds: 5 });
    await cache.a('ttl0.test');
    clock.advance(4_999);
    await cache.a('ttl0.test');
    assert.equal(queriesFor('ttl0.test', 'A'), 1);
    clock.advance(1);
    await cache.a('ttl0.test');
    assert.equal(queriesFor('ttl0.test', 'A'), 2);
  });

  test('a TTL above the maximum is lowered to it', async () => {
    const cache = cached({ maxTtlSeconds: 3600 });
    await cache.a('ttl1y.test');
    clock.advance(3_599_000);
    await cache.a('ttl1y.test');
    assert.equal(queriesFor('ttl1y.test', 'A'), 1);
    clock.advance(1_000);
    await cache.a('ttl1y.test');
    assert.equal(queriesFor('ttl1y.test', 'A'), 2);
  });

  test('names match without regard to case or a trailing dot, types apart', async () => {
    const cache = cached();
    await cache.mx('mail.test');
    await cache.mx('MAIL.test.');
    await cache.txt('mail.test');
    assert.equal(queriesFor('mail.test', 'MX'), 1);
    assert.equal(queriesFor('mail.test', 'TXT'), 1);
  });

  test('every record type is cached', async () => {
    const cache = cached();
    for (let round = 0; round < 2; round++) {
      await cache.a('ttl60.test');
      await cache.aaaa('only-a.test');
      await cache.mx('mail.test');
      await cache.txt('mail.test');
      await cache.ptr('192.0.2.1');
    }
    assert.equal(server.queries.length, 5);
    assert.deepEqual(cache.stats(), { hits: 5, misses: 5, entries: 5 });
  });
});

describe('negative answers and failures', () => {
  test('nxdomain is cached for its TTL capped by negativeTtlSeconds', async () => {
    const cache = cached({ negativeTtlSeconds: 30 });
    assert.deepEqual(await cache.a('missing.test'), { kind: 'nxdomain', ttl: 300 });
    clock.advance(29_000);
    assert.deepEqual(await cache.a('missing.test'), { kind: 'nxdomain', ttl: 1 });
    assert.equal(queriesFor('missing.test', 'A'), 1);
    clock.advance(1_000);
    await cache.a('missing.test');
    assert.equal(queriesFor('missing.test', 'A'), 2);
  });

  test('negativeTtlSeconds caps at an hour by default', async () => {
    const negative: Resolver = { ...upstream, a: async () => ({ kind: 'nxdomain', ttl: 86_400 }) };
    const cache = new CachingResolver(negative, { clock });
    assert.deepEqual(await cache.a('gone.test'), { kind: 'nxdomain', ttl: 86_400 });
    clock.advance(3_599_000);
    assert.deepEqual(await cache.a('gone.test'), { kind: 'nxdomain', ttl: 1 }, 'kept for 3600 s, not the day its zone says');
    clock.advance(1_000);
    assert.deepEqual(cache.stats(), { hits: 1, misses: 1, entries: 1 });
    await cache.a('gone.test');
    assert.deepEqual(cache.stats(), { hits: 1, misses: 2, entries: 1 }, 'asked again after an hour');
  });

  test('nodata is cached like nxdomain, and the cap still respects the minimum', async () => {
    const cache = cached({ negativeTtlSeconds: 1, minTtlSeconds: 10 });
    assert.equal((await cache.aaaa('only-a.test')).kind, 'nodata');
    clock.advance(9_000);
    assert.equal((await cache.aaaa('only-a.test')).kind, 'nodata');
    assert.equal(queriesFor('only-a.test', 'AAAA'), 1);
  });

  test('a temporary failure is not cached by default', async () => {
    const cache = cached();
    assert.equal((await cache.mx('servfail.test')).kind, 'tempfail');
    assert.equal((await cache.mx('servfail.test')).kind, 'tempfail');
    assert.equal(queriesFor('servfail.test', 'MX'), 2);
    assert.equal(cache.stats().entries, 0);
  });

  test('tempfailTtlSeconds remembers a failure briefly', async () => {
    const cache = cached({ tempfailTtlSeconds: 2 });
    const first = await cache.mx('servfail.test');
    clock.advance(1_999);
    const again = await cache.mx('servfail.test');
    assert.equal(again.kind, 'tempfail');
    // A failure has no TTL to count down: it is handed back as it came.
    assert.deepEqual(again, first);
    assert.equal(queriesFor('servfail.test', 'MX'), 1);
    clock.advance(1);
    await cache.mx('servfail.test');
    assert.equal(queriesFor('servfail.test', 'MX'), 2);
  });

  test('a rejected upstream lookup is passed on and not cached', async () => {
    const cache = new CachingResolver(upstream, { clock });
    // reverseName's own error, as the upstream resolver rejects with it.
    await assert.rejects(cache.ptr('not-an-address'), { code: 'DNS_PERMANENT' });
    await assert.rejects(cache.ptr('not-an-address'), { code: 'DNS_PERMANENT' });
    assert.deepEqual(cache.stats(), { hits: 0, misses: 2, entries: 0 });
  });
});

describe('single flight, eviction, clear', () => {
  test('concurrent lookups of one name and type share one query', async () => {
    const cache = cached();
    const answers = await Promise.all(Array.from({ length: 10 }, () => cache.a('slow.test')));
    for (const answer of answers) assert.deepEqual(answer, { kind: 'records', records: ['192.0.2.5'], ttl: 300 });
    assert.equal(queriesFor('slow.test', 'A'), 1);
    assert.deepEqual(cache.stats(), { hits: 9, misses: 1, entries: 1 });
  });

  test('concurrent tempfails share one query too, and the next lookup asks again', async () => {
    const cache = cached();
    await Promise.all([cache.a('servfail.test'), cache.a('servfail.test'), cache.a('servfail.test')]);
    assert.equal(queriesFor('servfail.test', 'A'), 1);
    await cache.a('servfail.test');
    assert.equal(queriesFor('servfail.test', 'A'), 2);
  });

  test('beyond maxEntries the oldest entry is evicted', async () => {
    const cache = cached({ maxEntries: 2 });
    await cache.a('ttl60.test');
    await cache.a('only-a.test');
    await cache.mx('mail.test');
    assert.equal(cache.stats().entries, 2);
    await cache.mx('mail.test');
    await cache.a('only-a.test');
    assert.equal(server.queries.length, 3);
    await cache.a('ttl60.test');
    assert.equal(queriesFor('ttl60.test', 'A'), 2);
  });

  test('answers are kept within maxBytes, however many names a wildcard zone answers', async () => {
    // Each name under the wildcard is a new key, answered with a 60000-character TXT record.
    let asked = 0;
    const wildcard: Resolver = {
      ...upstream,
      txt: async () => {
        asked++;
        return { kind: 'records', records: ['x'.repeat(60_000)], ttl: 3600 };
      },
    };
    const cache = new CachingResolver(wildcard, { clock, maxBytes: 1_000_000 });
    for (let i = 0; i < 100; i++) await cache.txt(`n${i}.wildcard.test`);
    // 120 kB a record in UTF-16: 8 fit in 1 MB.
    assert.equal(cache.stats().entries, 8);
    await cache.txt('n99.wildcard.test');
    await cache.txt('n0.wildcard.test');
    assert.equal(asked, 101);
    const huge = new CachingResolver(wildcard, { clock, maxBytes: 100_000 });
    assert.equal((await huge.txt('big.wildcard.test')).kind, 'records');
    assert.equal(huge.stats().entries, 0);
  });

  test('an answer bigger than maxBytes leaves the answers already kept in place', async () => {
    // Else one lookup under a wildcard zone with huge TXT records would flush the whole cache.
    let asked = 0;
    const mixed: Resolver = {
      ...upstream,
      txt: async (name) => {
        asked++;
        return { kind: 'records', records: [name.startsWith('big.') ? 'x'.repeat(60_000) : 'small'], ttl: 3600 };
      },
    };
    const cache = new CachingResolver(mixed, { clock, maxBytes: 100_000 });
    await cache.txt('small.wildcard.test');
    assert.equal((await cache.txt('big.wildcard.test')).kind, 'records');
    assert.equal(cache.stats().entries, 1);
    await cache.txt('small.wildcard.test');
    assert.equal(asked, 2);
  });

  test('counts a kept failure\'s reason and each entry\'s own overhead against maxBytes', async () => {
    const failing: Resolver = { ...upstream, a: async () => ({ kind: 'tempfail', reason: 'r'.repeat(60_000) }) };
    const fails = new CachingResolver(failing, { clock, tempfailTtlSeconds: 60, maxBytes: 100_000 });
    await fails.a('down.test');
    assert.equal(fails.stats().entries, 0, 'a 120 kB reason is not kept within 100 kB');
    // A short name with one short record is some 100 octets of text, and 160 more of the entry's own.
    const small: Resolver = { ...upstream, a: async () => ({ kind: 'records', records: ['192.0.2.1'], ttl: 3600 }) };
    const cache = new CachingResolver(small, { clock, maxBytes: 2000 });
    for (let i = 0; i < 20; i++) await cache.a(`n${i}.test`);
    assert.ok(cache.stats().entries <= 8, `${cache.stats().entries} entries in 2000 octets`);
  });

  test('forgets an expired answer when it is asked again, even when the new answer is not kept', async () => {
    let down = false;
    const flaky: Resolver = { ...upstream, a: async () => (down ? { kind: 'tempfail', reason: 'timeout' } : { kind: 'records', records: ['192.0.2.1'], ttl: 60 }) };
    const cache = new CachingResolver(flaky, { clock });
    await cache.a('flaky.test');
    clock.advance(60_000);
    down = true;
    assert.equal((await cache.a('flaky.test')).kind, 'tempfail');
    assert.equal(cache.stats().entries, 0, 'the expired answer no longer held');
  });

  test('clear() gives back the bytes its entries took: the cache fills to maxBytes again after it', async () => {
    const big: Resolver = { ...upstream, txt: async () => ({ kind: 'records', records: ['x'.repeat(30_000)], ttl: 3600 }) };
    const cache = new CachingResolver(big, { clock, maxBytes: 100_000 });
    await cache.txt('one.test');
    cache.clear();
    await cache.txt('two.test');
    assert.equal(cache.stats().entries, 1, 'the second answer kept');
  });

  test('a name sliced from a larger string (a policy request) is kept without that string', async () => {
    const cache = cached();
    // Each name is a slice of a 64 KiB string of its own, as a policy attribute is of the chunk
    // it came in; made in a function that has returned before the heap is measured.
    const lookUp = async (count: number): Promise<void> => {
      for (let i = 0; i < count; i++) await cache.a(`${'x'.repeat(65_536)}.n${i}-not-in-the-zone.test`.slice(65_537));
    };
    const before = heapAfterGc();
    await lookUp(300);
    const grown = heapAfterGc() - before;
    assert.equal(cache.stats().entries, 300);
    // Held whole, the 300 strings would take 19 MiB.
    assert.ok(grown < 4 * 1024 * 1024, `${grown} octets held for 300 short names`);
  });

  test('clear() forgets every entry, even one whose lookup was in flight', async () => {
    const cache = cached();
    await cache.a('ttl60.test');
    const inFlight = cache.a('slow.test');
    cache.clear();
    await inFlight;
    assert.equal(cache.stats().entries, 0);
    await cache.a('ttl60.test');
    assert.equal(queriesFor('ttl60.test', 'A'), 2);
  });
});

describe('options', () => {
  test('out-of-range options throw ConfigError', () => {
    for (const bad of [
      { minTtlSeconds: -1 },
      { maxTtlSeconds: Number.NaN },
      { minTtlSeconds: 100, maxTtlSeconds: 10 },
      { negativeTtlSeconds: -5 },
      { tempfailTtlSeconds: 61 },
      { maxEntries: 0 },
      { maxEntries: 1.5 },
      { maxBytes: 0 },
      { maxBytes: Number.POSITIVE_INFINITY },
    ]) {
      assert.throws(() => cached(bad), ConfigError, JSON.stringify(bad));
    }
  });

  test('takes a minimum TTL equal to the maximum, as the configuration does (dns.minTtl: 1d)', () => {
    assert.doesNotThrow(() => cached({ minTtlSeconds: 86_400, maxTtlSeconds: 86_400 }));
  });
});
