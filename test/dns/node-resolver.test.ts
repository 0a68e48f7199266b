import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createNodeResolver, parseDnsServer } from '../../src/dns/node-resolver.js';
import { reverseName } from '../../src/dns/reverse.js';
import { ConfigError } from '../../src/core/errors.js';
import type { DnsAnswer, Resolver } from '../../src/dns/types.js';
import { startDnsServer, type DnsTestServer, type Zone } from '../support/dns-server.js';
import fc from 'fast-check';
import { isIP } from 'node:net';
import { readDnsServer } from '../../src/dns/node-resolver.js';
import { elapsedMs } from '../support/fuzz.js';
import dgram from 'node:dgram';
import dnsPacket from 'dns-packet';

const zone: Zone = {
  'example.test': {
    A: ['192.0.2.1', '192.0.2.2'],
    AAAA: ['2001:db8::1'],
    MX: [{ priority: 10, exchange: 'mx1.example.test' }],
    TXT: ['v=spf1 -all', ['part one ', 'part two']],
    ttl: 120,
  },
  'only-a.example.test': { A: ['192.0.2.3'] },
  'a.b.example.test': { A: ['192.0.2.4'] },
  'alias.example.test': { CNAME: 'alias2.example.test' },
  'alias2.example.test': { CNAME: 'only-a.example.test' },
  'dangling.example.test': { CNAME: 'missing.example.test' },
  'long.example.test': { TXT: ['x'.repeat(300)] },
  'big.example.test': { TXT: Array.from({ length: 8 }, (_, i) => `${i}`.repeat(500)) },
  'servfail.example.test': { servfail: true },
  'refused.example.test': { refused: true },
  'drop.example.test': { drop: true },
  'slow.example.test': { A: ['192.0.2.5'], delayMs: 50 },
  'xn--bcher-kva.example.test': { A: ['192.0.2.6'] },
  // No valid Punycode, so no IDNA conversion accepts it; the DNS holds it all the same.
  'xn--zz.example.test': { A: ['192.0.2.7'] },
  [reverseName('192.0.2.1')]: { PTR: ['host.example.test', 'other.example.test'] },
  [reverseName('2001:db8::1')]: { PTR: ['v6host.example.test'] },
};

let server: DnsTestServer;
let resolver: Resolver;

before(async () => {
  server = await startDnsServer(zone);
  resolver = createNodeResolver({ servers: [server.address], timeoutMs: 2000, tries: 1 });
});
after(() => server.close());

function records<T>(answer: DnsAnswer<T>): T[] {
  assert.equal(answer.kind, 'records', JSON.stringify(answer));
  return answer.kind === 'records' ? answer.records : [];
}

describe('record types', () => {
  test('A with the TTL from the answer', async () => {
    const answer = await resolver.a('example.test');
    assert.deepEqual(answer, { kind: 'records', records: ['192.0.2.1', '192.0.2.2'], ttl: 120 });
  });

  test('AAAA with the TTL from the answer', async () => {
    assert.deepEqual(await resolver.aaaa('example.test'), { kind: 'records', records: ['2001:db8::1'], ttl: 120 });
  });

  test('names are case-insensitive', async () => {
    assert.deepEqual(records(await resolver.a('EXAMPLE.Test')), ['192.0.2.1', '192.0.2.2']);
  });

  test('MX carries the default TTL, node:dns giving none', async () => {
    assert.deepEqual(await resolver.mx('example.test'), {
      kind: 'records',
      records: [{ exchange: 'mx1.example.test', priority: 10 }],
      ttl: 300,
    });
  });

  test('TXT joins the character-strings of each record', async () => {
    assert.deepEqual(records(await resolver.txt('example.test')).sort(), ['part one part two', 'v=spf1 -all']);
  });

  test('a TXT string over 255 bytes arrives whole', async () => {
    assert.deepEqual(records(await resolver.txt('long.example.test')), ['x'.repeat(300)]);
  });

  test('PTR of IPv4 and IPv6 addresses', async () => {
    assert.deepEqual(records(await resolver.ptr('192.0.2.1')).sort(), ['host.example.test', 'other.example.test']);
    assert.deepEqual(records(await resolver.ptr('2001:db8::1')), ['v6host.example.test']);
  });

  /** A resolver asking a server that answers every query with answersFor(name), for answers the test server cannot give. */
  async function withRawAnswers(answersFor: (name: string) => dnsPacket.Answer[], use: (raw: Resolver) => Promise<void>): Promise<void> {
    const socket = dgram.createSocket('udp4');
    socket.on('message', (message, peer) => {
      const query = dnsPacket.decode(message);
      const answers = answersFor(query.questions?.[0]?.name ?? '');
      socket.send(dnsPacket.encode({ type: 'response', id: query.id, flags: dnsPacket.AUTHORITATIVE_ANSWER, questions: query.questions, answers }), peer.port, peer.address);
    });
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    try {
      await use(createNodeResolver({ servers: [`127.0.0.1:${socket.address().port}`], timeoutMs: 2000, tries: 1 }));
    } finally {
      socket.close();
    }
  }

  test('an A RRset whose records carry different TTLs has the lowest (RFC 2181 §5.2)', async () => {
    await withRawAnswers(
      (name) => [
        { type: 'A', name, ttl: 600, data: '192.0.2.1' },
        { type: 'A', name, ttl: 30, data: '192.0.2.2' },
      ],
      async (raw) => {
        const answer = await raw.a('mixed.example.test');
        assert.equal(answer.kind === 'records' && answer.ttl, 30, JSON.stringify(answer));
      },
    );
  });

  test('an MX answer holding no MX record is nodata, never an empty list of records', async () => {
    // node:dns gives [] here (for A it throws ENODATA).
    await withRawAnswers(
      (name) => [{ type: 'TXT', name, ttl: 600, data: 'not an exchanger' }],
      async (raw) => assert.deepEqual(await raw.mx('odd.example.test'), { kind: 'nodata', ttl: 300 }),
    );
  });

  test('a CNAME chain is followed', async () => {
    assert.deepEqual(records(await resolver.a('alias.example.test')), ['192.0.2.3']);
  });

  test('defaultTtlSeconds applies to MX, TXT and PTR', async () => {
    const custom = createNodeResolver({ servers: [server.address], timeoutMs: 2000, tries: 1, defaultTtlSeconds: 42 });
    for (const answer of [await custom.mx('example.test'), await custom.txt('example.test'), await custom.ptr('192.0.2.1')]) {
      assert.equal(answer.kind === 'records' && answer.ttl, 42);
    }
  });

  test('a large TXT answer is truncated over UDP and retried over TCP', async () => {
    const before = server.queries.length;
    const strings = records(await resolver.txt('big.example.test'));
    assert.equal(strings.length, 8);
    assert.ok(strings.includes('7'.repeat(500)), 'strings.includes(\'7\'.repeat(500))');
    const transports = server.queries.slice(before).map((query) => query.transport);
    assert.deepEqual(transports, ['udp', 'tcp']);
  });
});

describe('negative answers', () => {
  test('a name that does not exist is nxdomain with the negative TTL', async () => {
    assert.deepEqual(await resolver.a('nothing.example.test'), { kind: 'nxdomain', ttl: 300 });
    assert.deepEqual(await resolver.mx('nothing.example.test'), { kind: 'nxdomain', ttl: 300 });
  });

  test('a name without records of the type is nodata', async () => {
    assert.deepEqual(await resolver.aaaa('only-a.example.test'), { kind: 'nodata', ttl: 300 });
    assert.deepEqual(await resolver.mx('only-a.example.test'), { kind: 'nodata', ttl: 300 });
    assert.deepEqual(await resolver.txt('only-a.example.test'), { kind: 'nodata', ttl: 300 });
  });

  test('an empty non-terminal is nodata, not nxdomain', async () => {
    assert.equal((await resolver.a('b.example.test')).kind, 'nodata');
  });

  test('a CNAME to a missing name is nxdomain', async () => {
    assert.equal((await resolver.a('dangling.example.test')).kind, 'nxdomain');
  });

  test('a PTR lookup of an address without a reverse name is nxdomain', async () => {
    assert.equal((await resolver.ptr('192.0.2.99')).kind, 'nxdomain');
  });

  test('defaultNegativeTtlSeconds sets the TTL of nxdomain and nodata', async () => {
    const custom = createNodeResolver({ servers: [server.address], timeoutMs: 2000, tries: 1, defaultNegativeTtlSeconds: 60 });
    assert.deepEqual(await custom.a('nothing.example.test'), { kind: 'nxdomain', ttl: 60 });
    assert.deepEqual(await custom.aaaa('only-a.example.test'), { kind: 'nodata', ttl: 60 });
  });
});

describe('names', () => {
  /** A name of exactly `length` characters under example.test, in labels of at most 63. */
  function nameOfLength(length: number): string {
    let name = 'example.test';
    while (name.length < length) name = `${'n'.repeat(Math.min(63, length - name.length - 1))}.${name}`;
    return name;
  }

  test('a U-label is asked as its A-label', async () => {
    assert.deepEqual(records(await resolver.a('Bücher.example.test')), ['192.0.2.6']);
  });

  test('a name of 253 characters is asked; a longer one is nxdomain without a query', async () => {
    const longest = nameOfLength(253);
    assert.equal((await resolver.a(longest)).kind, 'nxdomain');
    assert.ok(server.queries.some((query) => query.name === longest), 'server.queries.some((query) => query.name === longest)');
    for (const length of [254, 255]) {
      const name = nameOfLength(length);
      assert.equal(name.length, length);
      const before = server.queries.length;
      // c-ares sends these (it refuses only past 255), and a server answers FORMERR or nothing:
      // a timeout here, a temporary failure for a name that cannot exist.
      assert.deepEqual(await resolver.a(name), { kind: 'nxdomain', ttl: 300 });
      assert.deepEqual(await resolver.a(`${name}.`), { kind: 'nxdomain', ttl: 300 });
      assert.equal(server.queries.length, before);
    }
  });

  test('a name holding a NUL is nxdomain, never the answer for the part before the NUL', async () => {
    // c-ares reads the name as a C string: it would ask for example.test and return its records.
    const before = server.queries.length;
    for (const name of ['example.test\0.other.test', 'example.test\0']) {
      assert.deepEqual(await resolver.a(name), { kind: 'nxdomain', ttl: 300 }, JSON.stringify(name));
      assert.deepEqual(await resolver.txt(name), { kind: 'nxdomain', ttl: 300 }, JSON.stringify(name));
    }
    assert.equal(server.queries.length, before);
  });

  test('a name with an empty label is nxdomain without a query, as no host can have it', async () => {
    const before = server.queries.length;
    for (const name of ['a..example.test', '.example.test']) {
      assert.deepEqual(await resolver.a(name), { kind: 'nxdomain', ttl: 300 }, name);
    }
    assert.equal(server.queries.length, before);
  });

  test('a name IDNA cannot convert is tempfail, never an answer about the root', async () => {
    // node:dns would ask for "." in its place and read its NXDOMAIN (or NODATA) as this name's.
    const before = server.queries.length;
    for (const name of ['xn--zz.example.test', 'a\u200d.example.test']) {
      const answer = await resolver.mx(name);
      assert.equal(answer.kind, 'tempfail', `${name}: ${JSON.stringify(answer)}`);
      assert.equal((await resolver.a(name)).kind, 'tempfail', name);
    }
    assert.equal(server.queries.length, before);
  });
});

describe('temporary failures', () => {
  function assertTempfail(answer: DnsAnswer<unknown>, code: RegExp, name: string): void {
    assert.equal(answer.kind, 'tempfail', JSON.stringify(answer));
    if (answer.kind !== 'tempfail') return;
    assert.match(answer.reason, code);
    assert.ok(answer.reason.includes(name), answer.reason);
  }

  test('SERVFAIL is tempfail naming the code and the name', async () => {
    assertTempfail(await resolver.mx('servfail.example.test'), /ESERVFAIL/, 'servfail.example.test');
  });

  test('REFUSED is tempfail', async () => {
    assertTempfail(await resolver.a('refused.example.test'), /EREFUSED/, 'refused.example.test');
  });

  test('no answer at all is tempfail (timeout)', async () => {
    const impatient = createNodeResolver({ servers: [server.address], timeoutMs: 200, tries: 1 });
    assertTempfail(await impatient.txt('drop.example.test'), /ETIMEOUT/, 'drop.example.test');
  });

  test('a server that is gone is tempfail', async () => {
    const gone = await startDnsServer({});
    await gone.close();
    const nobody = createNodeResolver({ servers: [gone.address], timeoutMs: 200, tries: 1 });
    assert.equal((await nobody.a('example.test')).kind, 'tempfail');
  });

  test('a late answer within the timeout is still an answer', async () => {
    assert.deepEqual(records(await resolver.a('slow.example.test')), ['192.0.2.5']);
  });
});

describe('configuration', () => {
  test('server entries in every accepted form', () => {
    assert.equal(parseDnsServer('127.0.0.1'), '127.0.0.1');
    assert.equal(parseDnsServer('127.0.0.1:5353'), '127.0.0.1:5353');
    assert.equal(parseDnsServer('[::1]:5353'), '[::1]:5353');
    assert.equal(parseDnsServer('[::1]'), '::1');
    assert.equal(parseDnsServer('::1'), '::1');
  });

  test('a bad server entry throws ConfigError naming it', () => {
    for (const bad of ['dns.example.test', '127.0.0.1:0', '127.0.0.1:65536', '127.0.0.1:', '[127.0.0.1]:53', '', '1.2.3.4:53:53']) {
      assert.throws(
        () => createNodeResolver({ servers: ['127.0.0.1', bad] }),
        (err: unknown) => err instanceof ConfigError && err.message.includes(JSON.stringify(bad)),
        bad,
      );
    }
  });

  test('timeouts, tries and TTLs must be integers in range', () => {
    assert.throws(() => createNodeResolver({ timeoutMs: 0 }), ConfigError);
    assert.throws(() => createNodeResolver({ tries: 0 }), ConfigError);
    assert.throws(() => createNodeResolver({ timeoutMs: 1.5 }), ConfigError);
    assert.throws(() => createNodeResolver({ defaultTtlSeconds: -1 }), ConfigError);
    assert.throws(() => createNodeResolver({ defaultNegativeTtlSeconds: -1 }), ConfigError);
    // Zero is a TTL: answers then are not to be kept at all.
    assert.doesNotThrow(() => createNodeResolver({ defaultTtlSeconds: 0, defaultNegativeTtlSeconds: 0 }));
  });

  test('ptr of something that is not an IP address rejects', async () => {
    await assert.rejects(resolver.ptr('not-an-address'), /not an IP address/);
  });
});

describe('dns server entries fuzzed', () => {
  test('read any text as an address with a port from 1 to 65535, or a reason', () => {
    const entry = fc.oneof(
      fc.string({ maxLength: 60 }),
      fc.tuple(fc.oneof(fc.ipV4(), fc.ipV6().map((a) => `[${a}]`), fc.ipV6()), fc.option(fc.oneof(fc.integer({ min: -1, max: 70_000 }).map(String), fc.string({ maxLength: 6 })))).map(([host, port]) => (port === null ? host : `${host}:${port}`)),
    );
    fc.assert(
      fc.property(entry, (text) => {
        const read = readDnsServer(text);
        if (!read.ok) {
          assert.ok(read.reason.length > 0, 'read.reason.length > 0');
          assert.throws(() => parseDnsServer(text), ConfigError);
          return;
        }
        const m = /^\[(.+)\]:(\d+)$/.exec(read.value) ?? /^([^:]+):(\d+)$/.exec(read.value);
        const host = m ? m[1]! : read.value;
        assert.notEqual(isIP(host), 0, read.value);
        if (m) assert.ok(Number(m[2]) >= 1 && Number(m[2]) <= 65535, read.value);
      }),
      { numRuns: 1000 },
    );
  });

  test('refuses a long entry in linear time', () => {
    for (const text of [`[${':'.repeat(100_000)}`, `${'1'.repeat(100_000)}:${'1'.repeat(100_000)}`, `[::1]:${'9'.repeat(100_000)}`]) {
      // Generous bound against a quadratic scan, not a speed claim.
      assert.ok(elapsedMs(() => assert.equal(readDnsServer(text).ok, false)) < 200, text.slice(0, 10));
    }
  });
});
