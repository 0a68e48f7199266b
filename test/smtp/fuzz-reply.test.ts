// Property tests of the SMTP reply decoder and reply helpers beyond reply.test.ts (which splits
// valid streams only): the events of any byte stream, broken lines and over-long lines included,
// do not depend on how it was split; enhanced status codes read back what was written; and the
// EHLO keyword reader stays linear on the longest lines the decoder lets through.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { DEFAULT_MAX_REPLY_LINE_LENGTH, DEFAULT_MAX_REPLY_LINES, formatEnhanced, parseEhloKeywords, parseEnhancedStatus, ReplyDecoder, type DecodeEvent } from '../../src/smtp/reply.js';
import { elapsedMs, splitAt } from '../support/fuzz.js';

const limits = { maxLineLength: 40, maxLines: 3 };
const piece = fc.oneof(
  fc.constantFrom('250-a\r\n', '250 b\r\n', '250-\n', '550 5.1.1 x\n', '451-4.7.1 y\r\n', '220 ', '250-x', '199 no\n', '600 no\n', '2', '\r', '\n', 'garbage\n', '250-'.padEnd(45, 'l'), `550 ${'m'.repeat(50)}\n`, '250 é\n', '\xff\xfe\n'),
  fc.string({ unit: 'binary', maxLength: 12 }),
);
const stream = fc.array(piece, { maxLength: 12 }).map((pieces) => Buffer.from(pieces.join(''), 'latin1'));

function decode(chunks: readonly Buffer[]): DecodeEvent[] {
  const decoder = new ReplyDecoder(limits);
  return chunks.flatMap((chunk) => {
    const events = decoder.push(chunk);
    assert.ok(decoder.bufferedBytes < limits.maxLineLength, `${decoder.bufferedBytes} octets held`);
    return events;
  });
}

describe('ReplyDecoder fuzzed', () => {
  it('gives the same events for any bytes however they are split, within its limits', () => {
    fc.assert(
      fc.property(stream, fc.array(fc.nat(), { maxLength: 12 }), (bytes, seeds) => {
        const whole = decode([bytes]);
        assert.deepEqual(decode(splitAt(bytes, seeds)), whole);
        assert.deepEqual(decode([...bytes].map((byte) => Buffer.of(byte))), whole);
        for (const event of whole) {
          if (event.kind === 'reply') {
            assert.ok(event.reply.code >= 200 && event.reply.code <= 599, 'event.reply.code >= 200 && event.reply.code <= 599');
            assert.ok(event.reply.lines.length >= 1 && event.reply.lines.length <= limits.maxLines, 'event.reply.lines.length >= 1 && event.reply.lines.length <= limits.maxLines');
            // In characters: octets that are not UTF-8 become U+FFFD, three octets each, one character.
            assert.ok(event.raw.every((line) => line.length < limits.maxLineLength), 'event.raw.every((line) => line.length < limits.maxLineLength)');
          } else {
            assert.ok(event.line === undefined || event.line.length <= 80, 'event.line === undefined || event.line.length <= 80');
          }
        }
      }),
      { numRuns: 500 },
    );
  });

  it('quotes the same start of an over-long line whichever chunk shows it too long (regression)', () => {
    // Whole, the error quoted 45 octets of the line; byte by byte, the 40 held when it was found too long.
    const bytes = Buffer.from(`250-${'l'.repeat(41)}`);
    const expected = [{ kind: 'error', reason: 'line-too-long', detail: 'reply line longer than 40 octets', line: `250-${'l'.repeat(36)}` }];
    assert.deepEqual(decode([bytes]), expected);
    assert.deepEqual(decode([...bytes].map((byte) => Buffer.of(byte))), expected);
  });
});

describe('parseEnhancedStatus fuzzed', () => {
  it('never throws, and reads back a status written before any text', () => {
    fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 40 }), fc.integer({ min: 100, max: 699 }), (text, code) => void parseEnhancedStatus(text, code)), { numRuns: 1000 });
    const text = fc.string({ unit: 'binary', maxLength: 30 }).filter((t) => !/^[ \t]/.test(t));
    fc.assert(
      fc.property(fc.constantFrom(2, 4, 5), fc.integer({ min: 0, max: 999 }), fc.integer({ min: 0, max: 999 }), fc.constantFrom(' ', '\t', '  '), text, (klass, subject, detail, gap, rest) => {
        const status = { klass, subject, detail } as const;
        const line = rest === '' ? formatEnhanced(status) : `${formatEnhanced(status)}${gap}${rest}`;
        assert.deepEqual(parseEnhancedStatus(line, klass * 100 + 50), { status, rest });
        assert.equal(parseEnhancedStatus(line, ((klass % 5) + 2) * 100), undefined, 'a class that differs from the reply code is no status');
      }),
      { numRuns: 500 },
    );
  });
});

describe('parseEhloKeywords fuzzed', () => {
  it('reads back every keyword and its parameters, upper-cased', () => {
    const keyword = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9-]{0,10}$/);
    const params = fc.stringMatching(/^([!-~]{1,8}( [!-~]{1,8}){0,2})?$/);
    fc.assert(
      fc.property(fc.uniqueArray(fc.tuple(keyword, params), { selector: ([k]) => k.toUpperCase(), maxLength: 8 }), (extensions) => {
        const keywords = parseEhloKeywords({ code: 250, lines: ['mx.example greets you', ...extensions.map(([k, p]) => (p === '' ? k : `${k} ${p}`))] });
        assert.deepEqual([...keywords], extensions.map(([k, p]) => [k.toUpperCase(), p]));
      }),
      { numRuns: 300 },
    );
    fc.assert(fc.property(fc.array(fc.string({ unit: 'binary', maxLength: 30 }), { maxLength: 5 }), (lines) => void parseEhloKeywords({ code: 250, lines })), { numRuns: 300 });
  });

  it('stays linear on the longest reply the decoder gives, whatever its white space', () => {
    const long = DEFAULT_MAX_REPLY_LINE_LENGTH - 10;
    const shapes = [`K${' '.repeat(long)}x`, `K ${'x '.repeat(long / 2)}`, `${' \t'.repeat(long / 2)}`, `K${' '.repeat(long)}`];
    for (const shape of shapes) {
      const ms = elapsedMs(() => parseEhloKeywords({ code: 250, lines: ['mx', ...Array<string>(DEFAULT_MAX_REPLY_LINES - 1).fill(shape)] }));
      assert.ok(ms < 500, `${ms.toFixed(0)} ms for ${JSON.stringify(shape.slice(0, 10))}...`);
    }
  });
});

describe('ReplyDecoder in linear time', () => {
  it('decodes the longest reply its default limits let through, fed an octet at a time, without a quadratic scan', () => {
    const line = (sep: string) => `250${sep}${'x'.repeat(DEFAULT_MAX_REPLY_LINE_LENGTH - 6)}\r\n`;
    const bytes = Buffer.from(`${line('-').repeat(DEFAULT_MAX_REPLY_LINES - 1)}${line(' ')}`);
    let replies = 0;
    // Generous bound against a quadratic scan, not a speed claim.
    const ms = elapsedMs(() => {
      replies = 0;
      const decoder = new ReplyDecoder();
      for (let i = 0; i < bytes.length; i++) for (const event of decoder.push(bytes.subarray(i, i + 1))) if (event.kind === 'reply') replies += 1;
    });
    assert.equal(replies, 1);
    assert.ok(ms < 1500, `${ms} ms`);
  });
});
