import assert from 'node:assert/strict';
import net from 'node:net';
import { spawnSync } from 'node:child_process';
import { lstatSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import { ManualClock } from '../support/manual-time.js';
import { ConfigError } from '../../src/core/errors.js';
import { IdlePoller } from '../../src/core/idle-poll.js';
import { Batv } from '../../src/rewrite/batv.js';
import type { LookupLog, LookupMap } from '../../src/rewrite/lookup.js';
import { batvMaps, srsMaps } from '../../src/rewrite/maps.js';
import { NetstringDecoder, SocketmapServer, encodeNetstring, type NetstringEvent } from '../../src/rewrite/socketmap.js';
import { Srs } from '../../src/rewrite/srs.js';
import { TcpTableServer, tcpTableDecode, tcpTableEncode } from '../../src/rewrite/tcp-table.js';
import { SocketmapClient, TcpTableClient } from '../support/lookup-clients.js';
import { until } from '../support/wait.js';

const T0 = 1_577_836_860_000;
const clock = new ManualClock(T0);
const srs = new Srs({ domain: 'example.com', secrets: ['tops3cr3t'] });
const batv = new Batv({ keys: [{ keynum: 1, secret: 'secret' }] });
const maps: Record<string, LookupMap> = {
  ...srsMaps(srs, clock),
  ...batvMaps(batv, { domains: ['example.com', '.example.com'] }, clock),
  boom: () => {
    throw new Error('bug');
  },
};
const loopback = { kind: 'tcp', host: '127.0.0.1', port: 0 } as const;
const closers: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const close of closers.reverse()) await close();
});

/** A LookupLog that keeps what it is told. */
function recordingLog(): { log: LookupLog; lines: Array<{ level: string; message: string; fields: Record<string, unknown> }> } {
  const lines: Array<{ level: string; message: string; fields: Record<string, unknown> }> = [];
  return {
    lines,
    log: {
      info: (fields, message) => void lines.push({ level: 'info', message, fields }),
      warn: (fields, message) => void lines.push({ level: 'warn', message, fields }),
    },
  };
}

/** A client of either protocol on target, closed after the tests. */
async function connected<C extends { close(): void }, T>(kind: { connect(target: T): Promise<C> }, target: T): Promise<C> {
  const client = await kind.connect(target);
  closers.push(() => client.close());
  return client;
}

async function started<T extends SocketmapServer | TcpTableServer>(server: T): Promise<{ server: T; target: { host: string; port: number } }> {
  const target = (await server.listen(loopback)) as { host: string; port: number };
  closers.push(() => server.close());
  return { server, target };
}

/**
 * Sends raw bytes and collects the answer until the server closes, `until` is satisfied, or (for
 * fuzzing, where no answer is awaited) `settleMs` of silence.
 */
function raw(target: { host: string; port: number }, bytes: Buffer | string, until: ((data: string) => boolean) | number = () => false): Promise<{ data: string; closed: boolean }> {
  const settleMs = typeof until === 'number' ? until : 10_000;
  return new Promise((resolve) => {
    const socket = net.connect(target.port, target.host);
    let data = '';
    let timer: NodeJS.Timeout | undefined;
    const finish = (closed: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ data, closed });
    };
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => finish(false), settleMs);
    };
    socket.on('data', (chunk) => {
      data += chunk.toString('latin1');
      if (typeof until === 'function' && until(data)) finish(false);
      else arm();
    });
    socket.on('end', () => finish(true));
    socket.on('error', () => finish(true));
    socket.on('connect', () => {
      socket.write(bytes);
      arm();
    });
  });
}

describe('netstrings', () => {
  const shown = (events: NetstringEvent[]) => events.map((e) => (e.kind === 'frame' ? e.data.toString() : e.kind === 'skipped' ? `skipped ${e.length}` : e.reason));
  it('decodes frames split anywhere and several in one chunk', () => {
    const decoder = new NetstringDecoder(100);
    const bytes = Buffer.from('3:abc,0:,5:he');
    assert.deepEqual(shown(decoder.push(bytes)), ['abc', '']);
    assert.deepEqual(shown(decoder.push(Buffer.from('llo,'))), ['hello']);
  });
  it('refuses bad lengths, over-long frames early, and missing commas, then stays silent', () => {
    for (const text of ['x:', ':abc,', '3:abcd', '1001:', '12345', '3:abc;']) {
      const decoder = new NetstringDecoder(1000);
      const events = decoder.push(Buffer.from(text));
      assert.equal(events.at(-1)?.kind, 'error', text);
      assert.deepEqual(decoder.push(Buffer.from('3:abc,')), []);
    }
  });
  it('drops a frame over the request limit but within the skip limit, without keeping it, and reads on', () => {
    const decoder = new NetstringDecoder(10, 1000);
    assert.deepEqual(shown(decoder.push(Buffer.from(`500:${'x'.repeat(200)}`))), []);
    assert.deepEqual(shown(decoder.push(Buffer.from(`${'x'.repeat(300)},3:abc,`))), ['skipped 500', 'abc']);
    assert.deepEqual(shown(new NetstringDecoder(10, 1000).push(Buffer.from(`11:${'x'.repeat(11)};`))), ['missing comma']);
    assert.deepEqual(shown(new NetstringDecoder(10, 1000).push(Buffer.from('1001:'))), ['too long']);
    assert.deepEqual(shown(new NetstringDecoder(10, 1000).push(Buffer.from('10000'))), ['bad length']);
  });
  it('reads a frame of exactly the request limit, skips one of exactly the skip limit, and refuses an empty length prefix', () => {
    assert.deepEqual(shown(new NetstringDecoder(10, 1000).push(Buffer.from(`10:${'x'.repeat(10)},`))), ['x'.repeat(10)]);
    assert.deepEqual(shown(new NetstringDecoder(10, 1000).push(Buffer.from(`1000:${'x'.repeat(1000)},3:abc,`))), ['skipped 1000', 'abc']);
    // "[len] is a nonempty sequence of ASCII digits": ':,' is no empty string, '0:,' is.
    assert.deepEqual(shown(new NetstringDecoder(10).push(Buffer.from(':,'))), ['bad length']);
    // "Extra zeros at the front of [len] are prohibited": '03:abc,' and '00:,' are no netstrings.
    assert.deepEqual(shown(new NetstringDecoder(10).push(Buffer.from('03:abc,'))), ['bad length']);
    assert.deepEqual(shown(new NetstringDecoder(10).push(Buffer.from('00:,'))), ['bad length']);
    assert.deepEqual(shown(new NetstringDecoder(10).push(Buffer.from('0:,10:0123456789,'))), ['', '0123456789']);
  });
  it('never throws and round-trips what it encodes', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 40 }), { maxLength: 10 }), fc.array(fc.string({ maxLength: 50 })), (chunks, texts) => {
        const decoder = new NetstringDecoder(64);
        for (const c of chunks) decoder.push(Buffer.from(c));
        const fresh = new NetstringDecoder(1000);
        const all = Buffer.from(texts.map(encodeNetstring).join(''));
        const got: string[] = [];
        for (let i = 0; i < all.length; i += 7) for (const e of fresh.push(all.subarray(i, i + 7))) if (e.kind === 'frame') got.push(e.data.toString());
        assert.deepEqual(got, texts);
      }),
    );
  });
});

describe('tcp_table %-encoding', () => {
  it('encodes %, white space, controls and non-ASCII bytes; decodes any case', () => {
    assert.equal(tcpTableEncode('sp ace%@x\u00e9'), 'sp%20ace%25@x%C3%A9');
    assert.equal(tcpTableEncode('a\u007fb\tc'), 'a%7Fb%09c');
    assert.equal(tcpTableDecode('sp%20ace%25@x%c3%a9'), 'sp ace%@x\u00e9');
    assert.equal(tcpTableDecode('bad%2'), undefined);
    assert.equal(tcpTableDecode('bad%zz'), undefined);
    assert.equal(tcpTableDecode('bad%4g'), undefined);
  });
  it('decode(encode(x)) is x for any text, and decoding any bytes never throws', () => {
    fc.assert(fc.property(fc.string({ unit: 'grapheme' }), (s) => tcpTableDecode(tcpTableEncode(s)) === s));
    fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => void tcpTableDecode(Buffer.from(bytes))));
  });
});

describe('SocketmapServer', () => {
  it('answers postsrsd 2.x map names and BATV maps, several requests on one connection', async () => {
    const { target } = await started(new SocketmapServer(maps));
    const client = await connected(SocketmapClient, target);
    assert.equal(await client.query('forward', 'test@otherdomain.com'), 'OK SRS0=vmyz=2W=otherdomain.com=test@example.com');
    assert.equal(await client.query('reverse', 'SRS0=vmyz=2W=otherdomain.com=test@example.com'), 'OK test@otherdomain.com');
    assert.equal(await client.query('forward', 'local@example.com'), 'NOTFOUND Need not rewrite local domain.');
    assert.equal(await client.query('reverse', 'nobody@example.com'), 'NOTFOUND Not an SRS address.');
    assert.equal(await client.query('batv-sign', 'user@example.com'), 'OK prvs=1269e93bf9=user@example.com');
    assert.equal(await client.query('batv-sign', 'user@elsewhere.example'), 'NOTFOUND Not a signing domain.');
    // Signed in lower case, because Postfix's smtpd folds the bounce recipient before batv-strip sees it.
    assert.equal(await client.query('batv-sign', 'User@Example.COM'), 'OK prvs=1269e93bf9=user@example.com');
    assert.equal(await client.query('batv-sign', '@example.com'), 'NOTFOUND prvs needs a qualified address (local@domain)');
    assert.equal(await client.query('batv-strip', 'prvs=1269e93bf9=user@example.com'), 'OK user@example.com');
    assert.equal(await client.query('batv-strip', 'prvs=1269e93bf8=user@example.com'), 'NOTFOUND prvs bad-signature');
    assert.equal(await client.query('nosuchmap', 'x'), 'PERM Invalid map.');
    // Map names are matched exactly (Postfix sends the name as configured): an unknown spelling is an unknown map.
    assert.equal(await client.query('FORWARD', 'test@otherdomain.com'), 'PERM Invalid map.');
    assert.equal(await client.query('boom', 'x'), 'TEMP Internal error.');
    const parallel = await Promise.all(Array.from({ length: 50 }, (_, i) => client.query('forward', `u${i}@other.example`)));
    parallel.forEach((reply, i) => assert.match(reply, new RegExp(`^OK SRS0=.{4}=2W=other\\.example=u${i}@example\\.com$`)));
  });

  it('answers framing errors with PERM Invalid query. and closes, like postsrsd, and logs why', async () => {
    const { log, lines } = recordingLog();
    const { server, target } = await started(new SocketmapServer(maps, { log, label: 'socketmap' }));
    const reasons = ['empty netstring', 'netstring: bad length', 'netstring: bad length', 'netstring: missing comma', 'netstring: too long'];
    for (const bytes of ['0:,', 'get test@example.com\n', '1000000:', '3:abc;', '100001:']) {
      const { data, closed } = await raw(target, bytes);
      assert.equal(data, '19:PERM Invalid query.,', JSON.stringify(bytes));
      assert.equal(closed, true);
    }
    assert.ok(server.stats.protocolErrors >= 5, 'server.stats.protocolErrors >= 5');
    assert.deepEqual(lines.map((l) => [l.message, l.fields.listener, l.fields.reason]), reasons.map((reason) => ['request refused; closing the connection', 'socketmap', reason]));
    assert.equal(lines[1]!.fields.input, JSON.stringify('get test@example.com\n'));
    // A tcp: line in main.cf aimed at the socketmap listener: the log says what to write instead.
    assert.match(String(lines[1]!.fields.hint), /main\.cf names this socketmap listener with tcp:; write socketmap:inet:HOST:PORT:MAP/, 'the refusal of a tcp_table line says main.cf has tcp: where socketmap: belongs');
    assert.deepEqual(lines.filter((l, i) => i !== 1 && 'hint' in l.fields), [], 'no hint on the refusals of other framing errors');
  });

  it('logs a request for a map it does not serve, once a minute per map name, with the maps it serves', async () => {
    const { log, lines } = recordingLog();
    const { target } = await started(new SocketmapServer(srsMaps(srs, clock), { log, label: 'socketmap' }));
    const client = await connected(SocketmapClient, target);
    for (let i = 0; i < 3; i++) assert.equal(await client.query('batv-sign', 'user@example.com'), 'PERM Invalid map.');
    assert.equal(await client.query('FORWARD', 'user@example.com'), 'PERM Invalid map.');
    assert.equal(await client.query('forward', 'test@otherdomain.com'), 'OK SRS0=vmyz=2W=otherdomain.com=test@example.com');
    assert.deepEqual(
      lines.map((l) => [l.level, l.fields.listener, l.fields.map, l.fields.maps]),
      [
        ['warn', 'socketmap', '"batv-sign"', ['forward', 'reverse']],
        ['warn', 'socketmap', '"FORWARD"', ['forward', 'reverse']],
      ],
    );
    assert.match(lines[0]!.message, /map this service does not serve; answered PERM Invalid map\. \(Postfix defers the mail\)/, 'the line says what Postfix got and what it does');
  });

  it('answers a request too long for any address NOTFOUND, not PERM (Postfix would defer the mail), and keeps the connection', async () => {
    const { target } = await started(new SocketmapServer(maps));
    const client = await connected(SocketmapClient, target);
    assert.equal(await client.query('forward', `${'u'.repeat(2000)}@other.example`), 'NOTFOUND Too big.');
    assert.equal(await client.query('reverse', `SRS0=vmyz=2W=otherdomain.com=${'u'.repeat(50_000)}@example.com`), 'NOTFOUND Too big.');
    assert.equal(await client.query('forward', 'test@otherdomain.com'), 'OK SRS0=vmyz=2W=otherdomain.com=test@example.com');
  });

  it('answers nothing more, and logs nothing more, after a refusal, even to a client that keeps its half open', async () => {
    const { log, lines } = recordingLog();
    const { target } = await started(new SocketmapServer(maps, { log, label: 'socketmap' }));
    const socket = net.connect({ port: target.port, host: target.host, allowHalfOpen: true });
    await new Promise<void>((resolve) => socket.once('connect', resolve));
    let received = '';
    socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    const ended = new Promise<void>((resolve) => socket.once('end', () => resolve()));
    socket.on('error', () => undefined);
    socket.write('0:,');
    await ended;
    for (let i = 0; i < 20; i++) {
      await new Promise((resolve) => setTimeout(resolve, 5));
      socket.write(`${i % 2 ? '0:,' : encodeNetstring('forward a@b.example')}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
    socket.destroy();
    assert.equal(received, encodeNetstring('PERM Invalid query.'));
    assert.equal(lines.length, 1, JSON.stringify(lines));
  });

  it('logs a listener error once a minute, not once per failed accept, and keeps serving', async () => {
    const { log, lines } = recordingLog();
    const { server, target } = await started(new SocketmapServer(maps, { log, label: 'socketmap' }));
    // What Node reports for each accept while the process is out of descriptors.
    const listener = (server as unknown as { server: net.Server }).server;
    for (let i = 0; i < 5; i++) listener.emit('error', Object.assign(new Error('accept EMFILE'), { code: 'EMFILE' }));
    assert.deepEqual(lines.map((l) => [l.message, l.fields.listener]), [['listener error', 'socketmap']]);
    const client = await connected(SocketmapClient, target);
    assert.match(await client.query('forward', 'a@b.example'), /^OK /);
  });

  it('logs a map that throws, once a minute per error, and answers it TEMP', async () => {
    const { log, lines } = recordingLog();
    const { target } = await started(new SocketmapServer(maps, { log, label: 'socketmap' }));
    const client = await connected(SocketmapClient, target);
    for (let i = 0; i < 3; i++) assert.equal(await client.query('boom', `x${i}`), 'TEMP Internal error.');
    assert.deepEqual(lines.map((l) => [l.level, l.message, l.fields.listener]), [['warn', 'lookup map failed; answered as a temporary error', 'socketmap']]);
    assert.equal(lines[0]!.fields.error, 'bug');
  });

  it('leaves alone a key with control characters or octets that are not UTF-8, rather than signing it', async () => {
    const { target } = await started(new SocketmapServer(maps));
    const client = await connected(SocketmapClient, target);
    assert.equal(await client.query('forward', 'a\r\nX@other.example'), 'NOTFOUND Bad characters in key.');
    assert.equal(await client.query('forward', 'a\u0000b@other.example'), 'NOTFOUND Bad characters in key.');
    assert.equal(await client.query('forward', 'a\u007fb@other.example'), 'NOTFOUND Bad characters in key.');
    const invalidUtf8 = Buffer.concat([Buffer.from('forward a'), Buffer.from([0xff, 0xfe]), Buffer.from('@other.example')]);
    const { data } = await raw(target, Buffer.concat([Buffer.from(`${invalidUtf8.length}:`), invalidUtf8, Buffer.from(',')]), (d) => d.endsWith(','));
    assert.equal(data, encodeNetstring('NOTFOUND Bad characters in key.'));
    assert.match(await client.query('forward', 'ünïcode@other.example'), /^OK SRS0=/, 'UTF-8 addresses (RFC 6531) are rewritten');
  });

  it('leaves alone (NOTFOUND, so Postfix keeps it) a sender that would be rewritten or signed into an address nothing reverses', async () => {
    const { target } = await started(new SocketmapServer(maps));
    const client = await connected(SocketmapClient, target);
    const quoted = 'a quoted local part (a quoted string cannot be embedded in another local part)';
    assert.equal(await client.query('forward', '"a@b"@other.example'), `NOTFOUND Cannot rewrite an address with ${quoted}.`);
    assert.equal(await client.query('forward', 'a@b@other.example'), "NOTFOUND Cannot rewrite an address with more than one '@'.");
    assert.equal(await client.query('forward', '@other.example'), 'NOTFOUND Cannot rewrite an address with an empty local part.');
    // The domain goes into the local part: a ':' there, even outside an address literal, would need quotes.
    assert.match(await client.query('forward', 'a@other:example'), /^NOTFOUND Cannot rewrite an address with ':' in its domain /);
    assert.equal(await client.query('forward', `${'u'.repeat(480)}@other.example`), 'NOTFOUND Rewritten address too big.');
    // Over 512 octets: postsrsd 2.x answers PERM, and Postfix defers the message for good.
    assert.equal(await client.query('forward', `${'u'.repeat(600)}@other.example`), 'NOTFOUND Too big.');
    assert.equal(await client.query('reverse', `SRS0=vmyz=2W=otherdomain.com=${'u'.repeat(600)}@example.com`), 'NOTFOUND Too big.');
    assert.equal(await client.query('batv-sign', '"a b"@example.com'), `NOTFOUND cannot sign an address with ${quoted}`);
    assert.equal(await client.query('batv-sign', 'a@b@example.com'), "NOTFOUND cannot sign an address with more than one '@'");
    const tcp = await connected(TcpTableClient, (await started(new TcpTableServer(maps.forward!))).target);
    assert.equal(await tcp.query('"a b"@other.example'), `500 ${tcpTableEncode(`Cannot rewrite an address with ${quoted}.`)}`);
  });

  it('logs once per burst when connections are over the limit, and when it accepts again', async () => {
    const { log, lines } = recordingLog();
    const { server, target } = await started(new SocketmapServer(maps, { log, label: 'socketmap', maxConnections: 1 }));
    const first = await SocketmapClient.connect(target);
    // Closed by the server at once; the 10 s of silence raw() allows only bound a wait for nothing.
    const refused = await Promise.all([raw(target, ''), raw(target, '')]);
    assert.ok(refused.every((r) => r.closed), 'refused.every((r) => r.closed)');
    first.close();
    // A connection made before the server has seen the first one close would be refused too.
    const listener = (server as unknown as { server: net.Server }).server;
    const open = () => new Promise<number>((resolve, reject) => listener.getConnections((err, count) => (err ? reject(err) : resolve(count))));
    assert.ok(await until(async () => (await open()) === 0), 'the server saw the first connection close');
    const again = await connected(SocketmapClient, target);
    assert.match(await again.query('forward', 'a@b.example'), /^OK /);
    assert.deepEqual(lines.map((l) => l.message), ['too many connections; refusing new ones until some close', 'accepting connections again']);
    assert.equal(lines[1]!.fields.refused, 2);
  });

  it('survives random bytes and keeps serving', async () => {
    const { target } = await started(new SocketmapServer(maps));
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 300 }), async (bytes) => {
        await raw(target, Buffer.from(bytes), 20);
      }),
      { numRuns: 40 },
    );
    const client = await connected(SocketmapClient, target);
    assert.match(await client.query('forward', 'a@b.example'), /^OK SRS0=/);
  });

  it('listens on a UNIX socket too', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'callout-socketmap-'));
    closers.push(() => rmSync(dir, { recursive: true, force: true }));
    const server = new SocketmapServer(maps);
    const bound = await server.listen({ kind: 'unix', path: join(dir, 'srs') });
    closers.push(() => server.close());
    assert.deepEqual(bound, { kind: 'unix', path: join(dir, 'srs') });
    const client = await connected(SocketmapClient, { path: join(dir, 'srs') });
    assert.match(await client.query('reverse', 'SRS0=vmyz=2W=otherdomain.com=test@example.com'), /^OK test@otherdomain\.com$/);
  });

  it('names the client in its log lines as the policy service does: [IPv6]:port, unix:PATH on a UNIX socket', async () => {
    const { log, lines } = recordingLog();
    const v6 = new SocketmapServer(maps, { log, label: 'socketmap' });
    closers.push(() => v6.close());
    const bound = (await v6.listen({ kind: 'tcp', host: '::1', port: 0 })) as { host: string; port: number };
    await raw({ host: '::1', port: bound.port }, '0:,');
    const dir = mkdtempSync(join(tmpdir(), 'callout-socketmap-'));
    closers.push(() => rmSync(dir, { recursive: true, force: true }));
    const local = new SocketmapServer(maps, { log, label: 'socketmap' });
    closers.push(() => local.close());
    await local.listen({ kind: 'unix', path: join(dir, 'srs') });
    // A request cut off by the client's end: logged with the client's name.
    const socket = net.connect(join(dir, 'srs'));
    closers.push(() => void socket.destroy());
    socket.on('error', () => undefined);
    socket.on('connect', () => socket.end('5:ab'));
    assert.ok(await until(() => lines.length >= 2), JSON.stringify(lines));
    // "::1:4711" left the port to be guessed, and every UNIX client was "unix:".
    assert.match(String(lines[0]?.fields.remote), /^\[::1\]:\d+$/);
    assert.equal(lines[1]?.fields.remote, `unix:${join(dir, 'srs')}`);
  });

  it('gives a UNIX socket mode 0660 whatever the umask (Postfix connects as a group member), or socketMode', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'callout-socketmap-'));
    closers.push(() => rmSync(dir, { recursive: true, force: true }));
    const previous = process.umask(0o022);
    try {
      const byDefault = new SocketmapServer(maps);
      closers.push(() => byDefault.close());
      await byDefault.listen({ kind: 'unix', path: join(dir, 'default') });
      assert.equal(lstatSync(join(dir, 'default')).mode & 0o777, 0o660);
      const table = new TcpTableServer(maps.forward!, { socketMode: 0o600 });
      closers.push(() => table.close());
      await table.listen({ kind: 'unix', path: join(dir, 'owner') });
      assert.equal(lstatSync(join(dir, 'owner')).mode & 0o777, 0o600);
    } finally {
      process.umask(previous);
    }
  });

  it('does not take over a UNIX socket a running server has, and takes one a dead server left', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'callout-socketmap-'));
    closers.push(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'srs');
    const running = new SocketmapServer(maps);
    await running.listen({ kind: 'unix', path });
    // A second `rewrite serve` on the same path unlinked it, and the running one lost Postfix for good.
    const second = new SocketmapServer(maps);
    closers.push(() => second.close());
    await assert.rejects(second.listen({ kind: 'unix', path }), (err: unknown) => err instanceof ConfigError && /another server is listening there/.test(err.message));
    const client = await connected(SocketmapClient, { path });
    assert.match(await client.query('forward', 'a@b.example'), /^OK SRS0=/);
    await running.close();
    // The socket file of a process that died without removing it is stale: taken over.
    const stale = join(dir, 'stale');
    assert.equal(spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale)}, () => process.exit(0))`]).status, 0);
    assert.ok(lstatSync(stale).isSocket(), 'the dead process left its socket behind');
    const next = new SocketmapServer(maps);
    closers.push(() => next.close());
    await next.listen({ kind: 'unix', path: stale });
    const again = await connected(SocketmapClient, { path: stale });
    assert.match(await again.query('forward', 'a@b.example'), /^OK SRS0=/);
  });
});

describe('TcpTableServer', () => {
  it('serves one map with postsrsd 1.x replies and %-encoding', async () => {
    const { target } = await started(new TcpTableServer(maps.forward!));
    const client = await connected(TcpTableClient, target);
    assert.equal(await client.query('test@otherdomain.com'), '200 SRS0=vmyz=2W=otherdomain.com=test@example.com');
    assert.equal(await client.query('sp ace@otherdomain.com'), '200 SRS0=rB5n=2W=otherdomain.com=sp%20ace@example.com');
    assert.equal(await client.query('local@example.com'), '500 Need%20not%20rewrite%20local%20domain.');
    const { target: boomTarget } = await started(new TcpTableServer(maps.boom!));
    assert.equal((await raw(boomTarget, 'get x\n', (d) => d.endsWith('\n'))).data, '400 Internal%20error.\n');
    // tcp_table has no permanent error: a map's perm is "not found" (500), never a retry (400).
    const { target: permTarget } = await started(new TcpTableServer(() => ({ kind: 'perm', reason: 'No way.' })));
    assert.equal((await raw(permTarget, 'get x\n', (d) => d.endsWith('\n'))).data, '500 No%20way.\n');
  });

  it('refuses what is not a get request, broken escapes and over-long lines, closes, and logs why', async () => {
    const { log, lines } = recordingLog();
    const { target } = await started(new TcpTableServer(maps.reverse!, { maxLineOctets: 100, log, label: 'tcp_table reverse' }));
    // 'getx' and a tab after 'get' too: postsrsd 1.x takes only "get" and one space.
    for (const bytes of ['put a b\n', 'get bad%2\n', `get ${'x'.repeat(200)}\n`, `get ${'x'.repeat(300)}`, '\n', 'Get a@b\n', 'getxa@b\n', 'get\ta@b\n']) {
      const { data, closed } = await raw(target, bytes);
      assert.equal(data, '500 Invalid request\n', JSON.stringify(bytes));
      assert.equal(closed, true);
    }
    assert.deepEqual(
      lines.map((l) => l.fields.reason),
      ['not a "get KEY" request', 'broken %-escape', 'line longer than 100 octets', 'line longer than 100 octets', 'not a "get KEY" request', 'not a "get KEY" request', 'not a "get KEY" request', 'not a "get KEY" request'],
    );
    assert.ok(lines.every((l) => l.fields.listener === 'tcp_table reverse' && l.level === 'warn'), 'lines.every((l) => l.fields.listener === \'tcp_table reverse\' && l.level === \'warn\')');
    const { data } = await raw(target, 'get a@b\r\nget SRS0=vmyz=2W=otherdomain.com=test@example.com\n', (d) => d.split('\n').length === 3);
    assert.equal(data, '500 Not%20an%20SRS%20address.\n200 test@otherdomain.com\n');
  });

  it('refuses at once, not at the arrival bound, a line that cannot be a get request: a socketmap netstring has no line end', async () => {
    const { log, lines } = recordingLog();
    const { target } = await started(new TcpTableServer(maps.forward!, { arrivalTimeoutMs: 5_000, log, label: 'tcp_table forward' }));
    const startedAt = Date.now();
    // What Postfix sends for socketmap:inet:HOST:PORT:forward, and then waits.
    const { data, closed } = await raw(target, encodeNetstring('forward alice@example.org'));
    assert.equal(data, '500 Invalid request\n', 'the tcp_table refusal, at once');
    assert.ok(closed && Date.now() - startedAt < 2_000, `closed at once, not after the 5 s arrival bound (${Date.now() - startedAt} ms)`);
    assert.equal(lines.length, 1, `one line: ${JSON.stringify(lines)}`);
    assert.equal(lines[0]!.fields.reason, 'not a "get KEY" request');
    assert.match(String(lines[0]!.fields.hint), /main\.cf names this tcp_table listener with socketmap:; write tcp:HOST:PORT/, 'the line says main.cf has socketmap: where tcp: belongs');
    // The first octets of a get request, and nothing else, are still waited for.
    const { log: quiet, lines: none } = recordingLog();
    const { target: slow } = await started(new TcpTableServer(maps.forward!, { arrivalTimeoutMs: 5_000, log: quiet }));
    assert.deepEqual(await raw(slow, 'ge', 300), { data: '', closed: false });
    assert.deepEqual(await raw(slow, 'xe', 300), { data: '500 Invalid request\n', closed: true });
    // "ge" is logged only as a request its client left unfinished.
    const refusals = none.filter((l) => l.message === 'request refused; closing the connection');
    assert.deepEqual(refusals.map((l) => l.fields.input), [JSON.stringify('xe')], 'only "xe" is refused');
    assert.equal(refusals[0]!.fields.hint, undefined, 'no netstring hint for a line that is no netstring');
  });

  it('survives random bytes', async () => {
    const { target } = await started(new TcpTableServer(maps.forward!));
    await fc.assert(fc.asyncProperty(fc.uint8Array({ maxLength: 300 }), async (bytes) => void (await raw(target, Buffer.from(bytes), 20))), { numRuns: 40 });
    const client = await connected(TcpTableClient, target);
    assert.match(await client.query('a@b.example'), /^200 SRS0=/);
  });
});

describe('connection limits of the lookup services', () => {
  it("closes a connection idle for postsrsd's keep-alive: 30 s for socketmap (2.x), 1800 s for tcp_table (1.x), or idleTimeoutMs; takes 200 connections by default", async () => {
    const seen: Array<number | undefined> = [];
    class SocketmapSpy extends SocketmapServer {
      protected override attach(socket: net.Socket): void {
        seen.push(socket.timeout);
        super.attach(socket);
      }
    }
    class TcpTableSpy extends TcpTableServer {
      protected override attach(socket: net.Socket): void {
        seen.push(socket.timeout);
        super.attach(socket);
      }
    }
    for (const server of [new SocketmapSpy(maps), new TcpTableSpy(maps.forward!), new TcpTableSpy(maps.forward!, { idleTimeoutMs: 5_000 })]) {
      const { target } = await started(server);
      assert.equal((server as unknown as { server: net.Server }).server.maxConnections, 200);
      const socket = net.connect(target.port, target.host);
      await until(() => server.stats.connections === 1);
      socket.destroy();
    }
    assert.deepEqual(seen, [30_000, 1_800_000, 5_000]);
  });
});

/**
 * Writes the chunks one every gapMs on one connection and reads until the server closes it or
 * settleMs after the last chunk; says what came back, whether and when (after the first chunk) it closed.
 */
function paced(target: { host: string; port: number }, chunks: string[], gapMs: number, settleMs: number): Promise<{ data: string; closedAfterMs: number | undefined }> {
  return new Promise((resolve) => {
    const socket = net.connect(target.port, target.host);
    let data = '';
    let started = 0;
    let settled = false;
    const timers: NodeJS.Timeout[] = [];
    socket.on('data', (chunk: Buffer) => (data += chunk.toString('latin1')));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      for (const timer of timers) clearTimeout(timer);
      resolve({ data, closedAfterMs: settled ? undefined : Date.now() - started });
    });
    socket.on('connect', () => {
      started = Date.now();
      chunks.forEach((chunk, i) => timers.push(setTimeout(() => socket.write(chunk), i * gapMs)));
      timers.push(
        setTimeout(() => {
          settled = true;
          socket.destroy();
        }, (chunks.length - 1) * gapMs + settleMs),
      );
    });
  });
}

describe('arrival bound of the lookup services', () => {
  const limits = { idleTimeoutMs: 1_000, arrivalTimeoutMs: 1_500 };

  it('closes, and logs, a connection whose request trickles in for longer than the bound, though every octet restarts the idle timer', async () => {
    const cases: Array<{ make: (log: LookupLog) => SocketmapServer | TcpTableServer; request: string; label: string }> = [
      { make: (log) => new SocketmapServer(maps, { ...limits, log, label: 'socketmap' }), request: encodeNetstring('forward trickle@elsewhere.example'), label: 'socketmap' },
      // A frame read past (over maxRequestOctets) holds nothing, but its octets may come as slowly.
      { make: (log) => new SocketmapServer(maps, { ...limits, log, label: 'socketmap' }), request: `99999:${'x'.repeat(40)}`, label: 'socketmap' },
      { make: (log) => new TcpTableServer(maps.forward!, { ...limits, log, label: 'tcp_table forward' }), request: 'get trickled-in@elsewhere.example\n', label: 'tcp_table forward' },
    ];
    for (const { make, request, label } of cases) {
      const { log, lines } = recordingLog();
      const { target } = await started(make(log));
      const { data, closedAfterMs } = await paced(target, [...request.slice(0, 30)], 100, 600);
      assert.equal(data, '', `${label}: no reply to a request that never came whole`);
      assert.ok(closedAfterMs !== undefined && closedAfterMs >= 1_450 && closedAfterMs < 2_900, `${label} ${request.slice(0, 8)}: closed at the bound (${closedAfterMs} ms), not left open while octets trickle in`);
      assert.deepEqual(
        lines.map((l) => [l.level, l.message, l.fields.listener, l.fields.arrivalTimeoutMs]),
        [['warn', 'request not complete in time; closing the connection', label, 1_500]],
      );
      assert.ok(typeof lines[0]!.fields.unfinishedOctets === 'number' && lines[0]!.fields.unfinishedOctets > 0, `unfinishedOctets logged: ${JSON.stringify(lines[0]!.fields)}`);
    }
  });

  it('logs a client that ends the connection in the middle of a request, and answers the whole ones before it', async () => {
    for (const [make, bytes, unfinished] of [
      [(log: LookupLog) => new TcpTableServer(maps.forward!, { log, label: 'tcp_table forward' }), 'get a@elsewhere.example\nget b@elsewhere.example', 'get b@elsewhere.example'],
      [(log: LookupLog) => new SocketmapServer(maps, { log, label: 'socketmap' }), `${encodeNetstring('forward a@elsewhere.example')}27:forward b@else`, '27:forward b@else'],
    ] as const) {
      const { log, lines } = recordingLog();
      const { target } = await started(make(log));
      const socket = net.connect(target.port, target.host);
      let data = '';
      socket.on('data', (chunk: Buffer) => (data += chunk.toString('latin1')));
      await new Promise((resolve) => socket.on('close', resolve).end(bytes));
      assert.equal(data.split(/SRS0=/).length, 2, `one answer: ${data}`);
      assert.deepEqual(
        lines.map((l) => [l.level, l.message, l.fields.unfinishedOctets]),
        [['info', 'client ended the connection in the middle of a request; dropped without a reply', unfinished.length]],
      );
    }
  });

  it('gives each request of a connection the whole bound: pipelined requests finished in pieces over longer than it are answered', async () => {
    const { log, lines } = recordingLog();
    const tcp = await started(new TcpTableServer(maps.forward!, { ...limits, log }));
    // Four requests, each begun in one chunk and ended in the next: 1800 ms in all, 600 ms each.
    const line = 'get a@elsewhere.example\n';
    const answered = await paced(tcp.target, [line + line.slice(0, 10), line.slice(10) + line.slice(0, 10), line.slice(10) + line.slice(0, 10), line.slice(10)], 600, 300);
    assert.equal(answered.data.match(/^200 SRS0=/gm)?.length, 4, answered.data);
    assert.equal(answered.closedAfterMs, undefined, 'the connection stays open');
    const netstrings = await started(new SocketmapServer(maps, { ...limits, log }));
    const request = encodeNetstring('forward a@elsewhere.example');
    const split = await paced(netstrings.target, [request + request.slice(0, 10), request.slice(10) + request.slice(0, 10), request.slice(10) + request.slice(0, 10), request.slice(10)], 600, 300);
    assert.equal(split.data.match(/OK SRS0=/g)?.length, 4, split.data);
    assert.equal(split.closedAfterMs, undefined, 'the connection stays open');
    assert.deepEqual(lines, []);
  });
});

describe('idle poll of the lookup services', () => {
  it('one poller shared by several listeners learns from every request that followed its own connection\'s answer', async () => {
    const poller = new IdlePoller({ maxMicros: 200 });
    const forward = await started(new TcpTableServer(maps.forward!, { poller }));
    const socketmap = await started(new SocketmapServer(maps, { poller }));
    const tcp = await TcpTableClient.connect(forward.target);
    const netstrings = await SocketmapClient.connect(socketmap.target);
    closers.push(() => tcp.close(), () => netstrings.close());
    for (let i = 0; i < 5; i++) {
      assert.match(await tcp.query(`user${i}@elsewhere.example`), /^200 SRS0=/);
      assert.match(await netstrings.query('forward', `user${i}@elsewhere.example`), /^OK SRS0=/);
    }
    // Each connection's first request followed no answer of its own: 4 + 4.
    assert.equal(poller.stats.caught + poller.stats.slept, 8);
  });

  it('with the poll off the answers are the same and nothing is counted', async () => {
    const { target, server } = await started(new SocketmapServer(maps, { idlePollMicros: 0 }));
    const client = await connected(SocketmapClient, target);
    for (let i = 0; i < 3; i++) assert.match(await client.query('forward', `user${i}@elsewhere.example`), /^OK SRS0=/);
    assert.deepEqual(server.idlePoll, { caught: 0, slept: 0, pollSeconds: 0 });
  });
});
