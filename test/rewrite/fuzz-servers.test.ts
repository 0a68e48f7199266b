// Property tests of the socketmap and tcp_table lookup services' decoders: whatever the bytes,
// the events (and the replies the services write) do not depend on how the input was split into
// chunks, nothing is held past the limits, and a key goes through the encodings unchanged. The
// services are driven through a stand-in socket (their data handler), so no network is used.
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import type net from 'node:net';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { CONTROL_CHARACTER } from '../../src/core/text.js';
import type { LookupMap } from '../../src/rewrite/lookup.js';
import { encodeNetstring, NetstringDecoder, SocketmapServer, type NetstringEvent } from '../../src/rewrite/socketmap.js';
import { tcpTableDecode, tcpTableEncode, TcpTableServer } from '../../src/rewrite/tcp-table.js';
import { elapsedMs, splitAt } from '../support/fuzz.js';

/** What a service wrote to a connection and whether it closed it. */
interface Transcript {
  written: string;
  closed: boolean;
}

/** The part of net.Socket the lookup services use. */
class StandInSocket extends EventEmitter {
  readonly remoteAddress = '127.0.0.1';
  readonly remotePort = 10001;
  writable = true;
  written = '';
  closed = false;
  write(data: string | Buffer): boolean {
    this.written += data.toString();
    return true;
  }
  end(data?: string): void {
    if (data !== undefined) this.written += data;
    this.closed = true;
    this.writable = false;
  }
  pause(): void {}
  resume(): void {}
  destroy(): void {
    this.closed = true;
  }
}

/** The service's answer to `chunks`, arriving one by one on a new connection. */
function converse(attach: (socket: net.Socket) => void, chunks: readonly Buffer[]): Transcript {
  const socket = new StandInSocket();
  attach(socket as unknown as net.Socket);
  for (const chunk of chunks) socket.emit('data', chunk);
  return { written: socket.written, closed: socket.closed };
}

class TcpTableProbe extends TcpTableServer {
  converse(chunks: readonly Buffer[]): Transcript {
    return converse((socket) => this.attach(socket), chunks);
  }
}

class SocketmapProbe extends SocketmapServer {
  converse(chunks: readonly Buffer[]): Transcript {
    return converse((socket) => this.attach(socket), chunks);
  }
}

const echo: LookupMap = (key) => (key.startsWith('nf') ? { kind: 'notfound', reason: `no ${key}` } : { kind: 'found', value: key });
const cuts = fc.array(fc.nat(), { maxLength: 12 });

describe('tcp_table service fuzzed', () => {
  const max = 40;
  const line = fc.oneof(
    fc.tuple(fc.string({ unit: fc.constantFrom(...'ab@ %0Fzé\r\t'), maxLength: max }), fc.constantFrom('\n', '\r\n')).map(([key, eol]) => `get ${key}${eol}`),
    fc.constantFrom('get ', 'get %2', 'put x\n', '\n', '\r\n', '\r', 'x'.repeat(max), `get ${'y'.repeat(max - 4)}\r\n`, `get ${'y'.repeat(max - 3)}\r\n`),
    fc.string({ unit: 'binary', maxLength: 20 }),
  );
  const stream = fc.array(line, { maxLength: 8 }).map((lines) => Buffer.from(lines.join('')));

  it('answers and closes the same way however the bytes are split', () => {
    const server = new TcpTableProbe(echo, { maxLineOctets: max, idlePollMicros: 0 });
    fc.assert(
      fc.property(stream, cuts, (bytes, seeds) => {
        const whole = server.converse([bytes]);
        assert.deepEqual(server.converse(splitAt(bytes, seeds)), whole);
        assert.deepEqual(server.converse([...bytes].map((byte) => Buffer.of(byte))), whole);
      }),
      { numRuns: 500 },
    );
  });

  it('a line of exactly maxLineOctets is answered even when its CRLF arrives split (regression)', () => {
    const server = new TcpTableProbe(echo, { maxLineOctets: max, idlePollMicros: 0 });
    const request = `get ${'y'.repeat(max - 4)}`;
    const expected = { written: `200 ${'y'.repeat(max - 4)}\n`, closed: false };
    assert.deepEqual(server.converse([Buffer.from(`${request}\r\n`)]), expected);
    // Before the fix the CR, held with the line until its LF came, counted against the limit.
    assert.deepEqual(server.converse([Buffer.from(`${request}\r`), Buffer.from('\n')]), expected);
    assert.deepEqual(server.converse([Buffer.from(`${request}y\r`), Buffer.from('\n')]), { written: '500 Invalid request\n', closed: true });
  });

  it('closes a connection as soon as an unfinished line is longer than the limit', () => {
    const server = new TcpTableProbe(echo, { maxLineOctets: max, idlePollMicros: 0 });
    // The start of a get request: any other first octets are refused before the limit.
    assert.deepEqual(server.converse([Buffer.from(`get ${'g'.repeat(max - 4)}`)]), { written: '', closed: false });
    assert.deepEqual(server.converse([Buffer.from(`get ${'g'.repeat(max - 3)}`)]), { written: '500 Invalid request\n', closed: true });
  });

  it('gives any key to the map as it was, and its answer back as it was', () => {
    const server = new TcpTableProbe(echo, { idlePollMicros: 0 });
    // Keys as Postfix passes them: no control character, valid UTF-8 (the service answers others NOTFOUND).
    const key = fc.string({ unit: 'grapheme', minLength: 1, maxLength: 40 }).filter((k) => !CONTROL_CHARACTER.test(k) && !k.includes('\ufffd'));
    fc.assert(
      fc.property(key, (k) => {
        const { written } = server.converse([Buffer.from(`get ${tcpTableEncode(k)}\n`)]);
        const reply = /^(\d{3}) (.*)\n$/s.exec(written);
        assert.ok(reply, written);
        assert.equal(tcpTableDecode(reply[2]!), k.startsWith('nf') ? `no ${k}` : k);
        assert.equal(reply[1], k.startsWith('nf') ? '500' : '200');
      }),
      { numRuns: 500 },
    );
  });
});

describe('NetstringDecoder fuzzed', () => {
  const shown = (events: NetstringEvent[]) => events.map((e) => (e.kind === 'frame' ? `frame ${e.data.toString('latin1')}` : e.kind === 'skipped' ? `skipped ${e.length}` : `error ${e.reason}`));
  const piece = fc.oneof(
    fc.string({ maxLength: 12 }).map((text) => encodeNetstring(text)),
    fc.integer({ min: 13, max: 40 }).map((length) => `${length}:${'s'.repeat(length)},`),
    fc.constantFrom('0:,', '3:abc;', '41:', '999', '00012:', ':', ',', '12345678', `40:${'z'.repeat(40)}`),
    fc.string({ unit: 'binary', maxLength: 8 }),
  );
  const stream = fc.array(piece, { maxLength: 8 }).map((pieces) => Buffer.from(pieces.join(''), 'latin1'));

  function decode(chunks: readonly Buffer[]): string[] {
    const decoder = new NetstringDecoder(12, 40);
    return chunks.flatMap((chunk) => shown(decoder.push(chunk)));
  }

  it('gives the same events however the bytes are split, and none after an error', () => {
    fc.assert(
      fc.property(stream, cuts, (bytes, seeds) => {
        const whole = decode([bytes]);
        assert.deepEqual(decode(splitAt(bytes, seeds)), whole);
        assert.deepEqual(decode([...bytes].map((byte) => Buffer.of(byte))), whole);
        const error = whole.findIndex((event) => event.startsWith('error'));
        assert.ok(error === -1 || error === whole.length - 1, 'error === -1 || error === whole.length - 1');
        for (const event of whole) {
          if (event.startsWith('frame')) assert.ok(event.length - 'frame '.length <= 12, 'event.length - \'frame \'.length <= 12');
          if (event.startsWith('skipped')) assert.ok(Number(event.slice('skipped '.length)) <= 40, 'Number(event.slice(\'skipped \'.length)) <= 40');
        }
      }),
      { numRuns: 500 },
    );
  });

  it('decodes what encodeNetstring wrote, any text, split anywhere', () => {
    fc.assert(
      fc.property(fc.array(fc.string({ unit: 'grapheme', maxLength: 6 }), { maxLength: 6 }), cuts, (texts, seeds) => {
        const decoder = new NetstringDecoder(100);
        const bytes = Buffer.from(texts.map(encodeNetstring).join(''));
        const frames = splitAt(bytes, seeds).flatMap((chunk) => decoder.push(chunk));
        assert.deepEqual(frames.map((e) => (e.kind === 'frame' ? e.data.toString() : e.kind)), texts);
      }),
      { numRuns: 300 },
    );
  });

  it('refuses a length prefix as soon as it has more digits than the skip limit needs', () => {
    const decoder = new NetstringDecoder(12, 40);
    assert.deepEqual(shown(decoder.push(Buffer.from('12'))), []);
    assert.deepEqual(shown(decoder.push(Buffer.from('3'))), ['error bad length']);
  });
});

describe('socketmap service fuzzed', () => {
  it('answers and closes the same way however the bytes are split', () => {
    const server = new SocketmapProbe({ echo }, { maxRequestOctets: 20, maxSkippedRequestOctets: 60, idlePollMicros: 0 });
    const request = fc.oneof(
      fc.string({ unit: fc.constantFrom(...'ab@ é%'), maxLength: 30 }).map((key) => encodeNetstring(`echo ${key}`)),
      fc.constantFrom(encodeNetstring('nomap x'), encodeNetstring(''), '0:', '61:', 'get x\n', `25:echo ${'k'.repeat(20)},`),
      fc.string({ unit: 'binary', maxLength: 10 }),
    );
    fc.assert(
      fc.property(fc.array(request, { maxLength: 6 }), cuts, (requests, seeds) => {
        const bytes = Buffer.from(requests.join(''));
        const whole = server.converse([bytes]);
        assert.deepEqual(server.converse(splitAt(bytes, seeds)), whole);
      }),
      { numRuns: 300 },
    );
  });
});

describe('NetstringDecoder in linear time', () => {
  it('skips a frame of the skip limit, fed an octet at a time, without a quadratic scan', () => {
    const frame = Buffer.from(`99999:${'x'.repeat(99_999)},1:k,`);
    const events: NetstringEvent[] = [];
    // Generous bound against a quadratic scan, not a speed claim.
    const ms = elapsedMs(() => {
      events.length = 0;
      const decoder = new NetstringDecoder(1024, 100_000);
      for (let i = 0; i < frame.length; i++) events.push(...decoder.push(frame.subarray(i, i + 1)));
    });
    assert.equal(events.length, 2);
    assert.ok(ms < 1000, `${ms} ms`);
  });
});
