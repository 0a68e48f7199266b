import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import dnsPacket from 'dns-packet';
import type { Answer, DecodedPacket, Packet, RecordType } from 'dns-packet';
import fc from 'fast-check';
import { createNodeResolver } from '../../src/dns/node-resolver.js';
import { startDnsServer, type DnsTestServer } from '../support/dns-server.js';

const NXDOMAIN = 3;

function query(name: string, type: RecordType, extra: Partial<Packet> = {}): Buffer {
  return dnsPacket.encode({ type: 'query', id: 4242, flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type }], ...extra });
}

/** One UDP exchange, as a test client that waits at most two seconds. */
function overUdp(server: DnsTestServer, message: Buffer): Promise<DecodedPacket> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket('udp4');
    const timer = setTimeout(() => {
      socket.close();
      reject(new Error('no UDP answer'));
    }, 2000);
    socket.on('message', (reply) => {
      clearTimeout(timer);
      socket.close();
      resolve(dnsPacket.decode(reply));
    });
    socket.send(message, server.port, server.host);
  });
}

/** Writes the given bytes on one TCP connection and collects length-prefixed answers until `enough`. */
function overTcp(server: DnsTestServer, bytes: Buffer, enough: (answers: DecodedPacket[]) => boolean): Promise<DecodedPacket[]> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(server.port, server.host);
    const answers: DecodedPacket[] = [];
    let pending = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`only ${answers.length} TCP answers`));
    }, 2000);
    socket.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 2 && pending.length >= 2 + pending.readUInt16BE(0)) {
        const length = pending.readUInt16BE(0);
        answers.push(dnsPacket.decode(pending.subarray(2, 2 + length)));
        pending = pending.subarray(2 + length);
      }
      if (enough(answers)) {
        clearTimeout(timer);
        socket.end();
        resolve(answers);
      }
    });
    socket.on('error', reject);
    socket.write(bytes);
  });
}

function framed(message: Buffer): Buffer {
  const prefix = Buffer.alloc(2);
  prefix.writeUInt16BE(message.length);
  return Buffer.concat([prefix, message]);
}

function dataOf(answer: Answer): unknown {
  return 'data' in answer ? answer.data : undefined;
}

function rcodeOf(packet: DecodedPacket): number {
  return (packet.flags ?? 0) & 0xf;
}

let server: DnsTestServer;

before(async () => {
  server = await startDnsServer({
    'example.test': { A: ['192.0.2.1'], TXT: ['y'.repeat(600)] },
    'deep.name.example.test': { A: ['192.0.2.2'] },
    'wide.example.test': { A: Array.from({ length: 40 }, (_, i) => `192.0.2.${i + 1}`) },
  });
});
after(() => server.close());

describe('wire format', () => {
  test('answers are authoritative and echo the id and question', async () => {
    const reply = await overUdp(server, query('example.test', 'A'));
    assert.equal(reply.id, 4242);
    assert.equal(reply.flag_aa, true);
    assert.equal(reply.flag_qr, true);
    assert.deepEqual(reply.questions?.map((q) => q.name), ['example.test']);
    assert.deepEqual(reply.answers?.map(dataOf), ['192.0.2.1']);
  });

  test('NXDOMAIN and NODATA carry an SOA whose minimum is 300', async () => {
    const nx = await overUdp(server, query('missing.example.test', 'A'));
    const nodata = await overUdp(server, query('example.test', 'MX'));
    assert.equal(rcodeOf(nx), NXDOMAIN);
    assert.equal(rcodeOf(nodata), 0);
    for (const reply of [nx, nodata]) {
      assert.equal(reply.answers?.length, 0);
      const soa = reply.authorities?.[0];
      assert.equal(soa?.type, 'SOA');
      assert.equal(soa?.type === 'SOA' && soa.data.minimum, 300);
    }
  });

  test('every ancestor of a zone name is an empty non-terminal', async () => {
    for (const name of ['name.example.test', 'example.test']) {
      const reply = await overUdp(server, query(name, 'AAAA'));
      assert.equal(rcodeOf(reply), 0, name);
    }
  });

  test('TXT strings longer than 255 bytes are split into character-strings', async () => {
    const [reply] = await overTcp(server, framed(query('example.test', 'TXT')), (answers) => answers.length === 1);
    const first = reply?.answers?.[0];
    const data = (first === undefined ? [] : dataOf(first)) as Buffer[];
    assert.deepEqual(data.map((part) => part.length), [255, 255, 90]);
  });

  test('over 512 bytes without EDNS the UDP answer is truncated, empty, with TC', async () => {
    const reply = await overUdp(server, query('wide.example.test', 'A'));
    assert.equal(reply.flag_tc, true);
    assert.equal(reply.answers?.length, 0);
  });

  test('an EDNS payload size raises the UDP limit', async () => {
    const opt = { type: 'OPT' as const, name: '.', udpPayloadSize: 4096, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] };
    const reply = await overUdp(server, query('wide.example.test', 'A', { additionals: [opt] }));
    assert.equal(reply.flag_tc, false);
    assert.equal(reply.answers?.length, 40);
  });

  test('TCP takes several framed queries in one write, split across segments or not', async () => {
    const both = Buffer.concat([framed(query('example.test', 'A')), framed(query('wide.example.test', 'A'))]);
    const replies = await overTcp(server, both, (answers) => answers.length === 2);
    assert.deepEqual(replies.map((r) => r.answers?.length), [1, 40]);
  });

  test('setZone replaces the zone', async () => {
    const own = await startDnsServer({ 'x.test': { A: ['192.0.2.1'] } });
    try {
      own.setZone({ 'x.test': { A: ['192.0.2.9'] } });
      const reply = await overUdp(own, query('x.test', 'A'));
      assert.deepEqual(reply.answers?.map(dataOf), ['192.0.2.9']);
      assert.deepEqual(own.queries, [{ name: 'x.test', type: 'A', transport: 'udp' }]);
    } finally {
      await own.close();
    }
  });
});

describe('addresses', () => {
  test('UDP and TCP share one port on the loopback', () => {
    assert.equal(server.host, '127.0.0.1');
    assert.ok(server.port > 0, 'server.port > 0');
    assert.equal(server.address, `127.0.0.1:${server.port}`);
  });

  test('an IPv6 loopback server is written with brackets and answers node:dns', async (t) => {
    let v6: DnsTestServer;
    try {
      v6 = await startDnsServer({ 'v6.test': { AAAA: ['2001:db8::5'] } }, { host: '::1' });
    } catch (err) {
      // Only a machine without ::1 skips; any other failure is the server's and fails the test.
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EADDRNOTAVAIL' && code !== 'EAFNOSUPPORT') throw err;
      t.skip(`no IPv6 loopback here (${code})`);
      return;
    }
    try {
      assert.equal(v6.address, `[::1]:${v6.port}`);
      const resolver = createNodeResolver({ servers: [v6.address], timeoutMs: 2000, tries: 1 });
      assert.deepEqual(await resolver.aaaa('v6.test'), { kind: 'records', records: ['2001:db8::5'], ttl: 300 });
    } finally {
      await v6.close();
    }
  });

  test('a host other than the loopback is refused', async () => {
    await assert.rejects(startDnsServer({}, { host: '0.0.0.0' }), /loopback only/);
  });

  test('a requested port that is taken is an error, not a silent other port', async () => {
    await assert.rejects(startDnsServer({}, { port: server.port }), { code: 'EADDRINUSE' });
  });

  test('a requested port whose UDP side alone is taken is an error, and its TCP listener is released', async () => {
    const holder = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => holder.bind({ address: '127.0.0.1', port: 0 }, resolve));
    const port = holder.address().port;
    try {
      await assert.rejects(startDnsServer({}, { port }), { code: 'EADDRINUSE' });
      const probe = net.createServer();
      await new Promise<void>((resolve, reject) => {
        probe.once('error', reject);
        probe.listen({ host: '127.0.0.1', port, exclusive: true }, resolve);
      });
      await new Promise<void>((resolve) => probe.close(() => resolve()));
    } finally {
      holder.close();
    }
  });

  test('servers started together each answer on their own port over both transports', async () => {
    const zones = Array.from({ length: 40 }, (_, i) => ({ [`s${i}.test`]: { A: [`192.0.2.${i + 1}`] } }));
    const servers = await Promise.all(zones.map((zone) => startDnsServer(zone)));
    try {
      assert.equal(new Set(servers.map((s) => s.port)).size, servers.length);
      for (const [i, s] of servers.entries()) {
        const udp = await overUdp(s, query(`s${i}.test`, 'A'));
        assert.deepEqual(udp.answers?.map(dataOf), [`192.0.2.${i + 1}`]);
        const [tcp] = await overTcp(s, framed(query(`s${i}.test`, 'A')), (answers) => answers.length === 1);
        assert.deepEqual(tcp?.answers?.map(dataOf), [`192.0.2.${i + 1}`]);
      }
    } finally {
      await Promise.all(servers.map((s) => s.close()));
    }
  });
});

describe('robustness', () => {
  const validQuery = query('example.test', 'A');
  const garbage = fc.oneof(
    fc.uint8Array({ maxLength: 600 }).map((bytes) => Buffer.from(bytes)),
    fc
      .array(fc.tuple(fc.nat(validQuery.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 })
      .map((edits) => {
        const mutated = Buffer.from(validQuery);
        for (const [offset, value] of edits) mutated[offset] = value;
        return mutated;
      }),
    fc.nat(validQuery.length - 1).map((length) => validQuery.subarray(0, length)),
  );

  test('random UDP datagrams never stop the server, and a valid query still answers', async () => {
    // One datagram of garbage and one probe at a time: a burst would overflow the socket buffer
    // and lose the probe on a healthy server.
    const client = dgram.createSocket('udp4');
    const waiting = new Map<number, () => void>();
    client.on('message', (reply) => {
      const id = reply.length >= 2 ? reply.readUInt16BE(0) : -1;
      waiting.get(id)?.();
    });
    let probeId = 0;
    try {
      await fc.assert(
        fc.asyncProperty(garbage, async (bytes) => {
          const id = ++probeId;
          const answered = new Promise<void>((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`probe ${id} unanswered after ${bytes.toString('hex')}`)), 2000);
            waiting.set(id, () => {
              clearTimeout(timer);
              resolve();
            });
          });
          client.send(bytes, server.port, server.host);
          client.send(query('example.test', 'A', { id }), server.port, server.host);
          await answered;
          waiting.delete(id);
        }),
        { numRuns: 300 },
      );
    } finally {
      client.close();
    }
  });

  test('random TCP frames never stop the server, and the connection still answers', async () => {
    const probe = framed(query('example.test', 'A', { id: 7 }));
    const answeredProbe = (answers: DecodedPacket[]) => answers.some((answer) => answer.id === 7 && answer.answers?.length === 1);
    await fc.assert(
      fc.asyncProperty(garbage, async (bytes) => {
        await overTcp(server, Buffer.concat([framed(bytes), probe]), answeredProbe);
      }),
      { numRuns: 100 },
    );
  });

  test('a query whose name cannot be written back gets no reply, not a malformed one', async () => {
    // 40 octets that are not UTF-8 read as 40 U+FFFD: 120 octets, too long for one label.
    const label = Buffer.alloc(40, 0xff);
    const unwritable = Buffer.concat([Buffer.from([0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, label.length]), label, Buffer.from([0, 0, 1, 0, 1])]);
    const probe = query('example.test', 'A', { id: 7 });
    const answers = await overTcp(server, Buffer.concat([framed(unwritable), framed(probe)]), (got) => got.some((answer) => answer.id === 7));
    assert.deepEqual(answers.map((answer) => answer.id), [7]);
  });

  test('unframed TCP garbage, closed mid-frame, leaves the server answering', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 300 }), async (bytes) => {
        await new Promise<void>((resolve, reject) => {
          const socket = net.connect(server.port, server.host, () => socket.end(Buffer.from(bytes)));
          socket.on('error', reject);
          socket.on('close', () => resolve());
          socket.resume();
        });
      }),
      { numRuns: 50 },
    );
    const reply = await overUdp(server, query('example.test', 'A'));
    assert.deepEqual(reply.answers?.map(dataOf), ['192.0.2.1']);
  });
});
