import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  ReplyDecoder,
  formatEnhanced,
  formatReply,
  isPositive,
  parseEhloKeywords,
  parseEnhancedStatus,
  replyText,
  type DecodeEvent,
} from '../../src/smtp/reply.js';

function decodeAll(input: string | Buffer, decoder = new ReplyDecoder()): DecodeEvent[] {
  return decoder.push(Buffer.isBuffer(input) ? input : Buffer.from(input, 'utf8'));
}

function decodeByteByByte(input: string | Buffer, decoder = new ReplyDecoder()): DecodeEvent[] {
  const bytes = Buffer.isBuffer(input) ? input : Buffer.from(input, 'utf8');
  const events: DecodeEvent[] = [];
  for (let i = 0; i < bytes.length; i += 1) events.push(...decoder.push(bytes.subarray(i, i + 1)));
  return events;
}

interface Case {
  name: string;
  input: string;
  want: DecodeEvent[];
}

const cases: Case[] = [
  {
    name: 'single line',
    input: '220 mx.example.com ESMTP\r\n',
    want: [{ kind: 'reply', reply: { code: 220, lines: ['mx.example.com ESMTP'] }, raw: ['220 mx.example.com ESMTP'] }],
  },
  {
    name: 'multi-line',
    input: '250-mx.example.com\r\n250-SIZE 1000\r\n250 8BITMIME\r\n',
    want: [
      {
        kind: 'reply',
        reply: { code: 250, lines: ['mx.example.com', 'SIZE 1000', '8BITMIME'] },
        raw: ['250-mx.example.com', '250-SIZE 1000', '250 8BITMIME'],
      },
    ],
  },
  {
    name: 'enhanced code on every line is stripped from each',
    input: '550-5.1.1 The email account that you tried to reach\r\n550 5.1.1 does not exist.\r\n',
    want: [
      {
        kind: 'reply',
        reply: {
          code: 550,
          enhanced: { klass: 5, subject: 1, detail: 1 },
          lines: ['The email account that you tried to reach', 'does not exist.'],
        },
        raw: ['550-5.1.1 The email account that you tried to reach', '550 5.1.1 does not exist.'],
      },
    ],
  },
  {
    name: 'enhanced code of another class is text',
    input: '250 5.1.1 odd\r\n',
    want: [{ kind: 'reply', reply: { code: 250, lines: ['5.1.1 odd'] }, raw: ['250 5.1.1 odd'] }],
  },
  {
    name: 'bare LF line ends',
    input: '250-a\n250 b\n',
    want: [{ kind: 'reply', reply: { code: 250, lines: ['a', 'b'] }, raw: ['250-a', '250 b'] }],
  },
  {
    name: 'a code alone',
    input: '250\r\n',
    want: [{ kind: 'reply', reply: { code: 250, lines: [''] }, raw: ['250'] }],
  },
  {
    name: 'two replies in one chunk',
    input: '250 one\r\n451 4.3.0 two\r\n',
    want: [
      { kind: 'reply', reply: { code: 250, lines: ['one'] }, raw: ['250 one'] },
      { kind: 'reply', reply: { code: 451, enhanced: { klass: 4, subject: 3, detail: 0 }, lines: ['two'] }, raw: ['451 4.3.0 two'] },
    ],
  },
  {
    name: 'malformed line, then decoding resumes',
    input: 'hello there\r\n250 ok\r\n',
    want: [
      { kind: 'error', reason: 'malformed', detail: 'line does not start with a reply code', line: 'hello there' },
      { kind: 'reply', reply: { code: 250, lines: ['ok'] }, raw: ['250 ok'] },
    ],
  },
  {
    name: 'bad separator is malformed',
    input: '250x\r\n',
    want: [{ kind: 'error', reason: 'malformed', detail: 'line does not start with a reply code', line: '250x' }],
  },
  {
    name: 'code outside 2xx-5xx is malformed',
    input: '199 nope\r\n',
    want: [{ kind: 'error', reason: 'malformed', detail: 'reply code 199 is not one of 2xx to 5xx (RFC 5321 §4.2.1)', line: '199 nope' }],
  },
  {
    name: 'a code of 999 is named as out of range',
    input: '999\r\n',
    want: [{ kind: 'error', reason: 'malformed', detail: 'reply code 999 is not one of 2xx to 5xx (RFC 5321 §4.2.1)', line: '999' }],
  },
  {
    name: 'inconsistent code on a final line',
    input: '250-a\r\n550 b\r\n250 next\r\n',
    want: [
      { kind: 'error', reason: 'inconsistent-code', detail: 'line with code 550 inside a reply with code 250', line: '550 b' },
      { kind: 'reply', reply: { code: 250, lines: ['next'] }, raw: ['250 next'] },
    ],
  },
  {
    name: 'inconsistent code on a continuation skips the rest of the broken reply',
    input: '250-a\r\n550-b\r\n550 c\r\n221 bye\r\n',
    want: [
      { kind: 'error', reason: 'inconsistent-code', detail: 'line with code 550 inside a reply with code 250', line: '550-b' },
      { kind: 'reply', reply: { code: 221, lines: ['bye'] }, raw: ['221 bye'] },
    ],
  },
  {
    // A line without a code cannot say whether its reply goes on: what follows is decoded afresh.
    name: 'a line without a code ends the reply it interrupts',
    input: '250-a\r\nhello\r\n250 b\r\n',
    want: [
      { kind: 'error', reason: 'malformed', detail: 'line does not start with a reply code', line: 'hello' },
      { kind: 'reply', reply: { code: 250, lines: ['b'] }, raw: ['250 b'] },
    ],
  },
  {
    name: "the first line's enhanced code is the reply's",
    input: '550-5.1.1 first\r\n550 5.7.1 second\r\n',
    want: [
      {
        kind: 'reply',
        reply: { code: 550, enhanced: { klass: 5, subject: 1, detail: 1 }, lines: ['first', 'second'] },
        raw: ['550-5.1.1 first', '550 5.7.1 second'],
      },
    ],
  },
];

describe('ReplyDecoder', () => {
  for (const { name, input, want } of cases) {
    it(`${name} (whole)`, () => assert.deepEqual(decodeAll(input), want));
    it(`${name} (byte by byte)`, () => assert.deepEqual(decodeByteByByte(input), want));
  }

  it('holds a partial line until its end arrives', () => {
    const decoder = new ReplyDecoder();
    assert.deepEqual(decoder.push(Buffer.from('250-mx\r\n25')), []);
    assert.deepEqual(decoder.push(Buffer.from('0 ok\r')), []);
    assert.deepEqual(decoder.push(Buffer.from('\n')), [
      { kind: 'reply', reply: { code: 250, lines: ['mx', 'ok'] }, raw: ['250-mx', '250 ok'] },
    ]);
  });

  it('accepts a line of exactly maxLineLength octets including CRLF', () => {
    const line = `250 ${'a'.repeat(12)}\r\n`;
    const events = decodeAll(line, new ReplyDecoder({ maxLineLength: line.length }));
    assert.equal(events[0]?.kind, 'reply');
  });

  it('reports a line one octet over the limit, and resumes after it', () => {
    const line = `250 ${'a'.repeat(13)}\r\n`;
    const decoder = new ReplyDecoder({ maxLineLength: line.length - 1 });
    const events = decodeByteByByte(`${line}250 ok\r\n`, decoder);
    assert.equal(events.length, 2);
    assert.deepEqual(events[0], {
      kind: 'error',
      reason: 'line-too-long',
      detail: `reply line longer than ${line.length - 1} octets`,
      line: `250 ${'a'.repeat(13)}`.slice(0, line.length - 2),
    });
    assert.deepEqual(events[1], { kind: 'reply', reply: { code: 250, lines: ['ok'] }, raw: ['250 ok'] });
  });

  it('reports a 100 kB line once, early, without buffering it', () => {
    const decoder = new ReplyDecoder();
    const events: DecodeEvent[] = [];
    events.push(...decoder.push(Buffer.from('250-')));
    for (let i = 0; i < 100; i += 1) {
      events.push(...decoder.push(Buffer.alloc(1000, 0x78)));
      assert.ok(decoder.bufferedBytes < 2048, 'decoder.bufferedBytes < 2048');
    }
    events.push(...decoder.push(Buffer.from('\r\n250 OK\r\n220 next\r\n')));
    assert.equal(events.length, 2);
    assert.equal(events[0]?.kind === 'error' && events[0].reason, 'line-too-long');
    assert.equal(events[0]?.kind === 'error' && events[0].line?.length, 80);
    // "250 OK" ends the broken reply: it is skipped, not taken for a reply of its own.
    assert.deepEqual(events[1], { kind: 'reply', reply: { code: 220, lines: ['next'] }, raw: ['220 next'] });
  });

  it('reports too many lines once and skips to the end of that reply', () => {
    const input = `${'250-x\r\n'.repeat(5)}250 end\r\n220 next\r\n`;
    const events = decodeAll(input, new ReplyDecoder({ maxLines: 3 }));
    assert.deepEqual(events, [
      { kind: 'error', reason: 'too-many-lines', detail: 'reply longer than 3 lines' },
      { kind: 'reply', reply: { code: 220, lines: ['next'] }, raw: ['220 next'] },
    ]);
  });

  it('accepts a reply of exactly maxLines lines, and not one line more', () => {
    const events = decodeAll('250-a\r\n250-b\r\n250 c\r\n', new ReplyDecoder({ maxLines: 3 }));
    assert.equal(events[0]?.kind, 'reply');
    const over = decodeAll('250-a\r\n250-b\r\n250-c\r\n250 d\r\n', new ReplyDecoder({ maxLines: 3 }));
    assert.deepEqual(over, [{ kind: 'error', reason: 'too-many-lines', detail: 'reply longer than 3 lines' }], 'one line more is too many');
  });

  it('by default takes lines of 2048 octets with CRLF and replies of 100 lines, and no more', () => {
    const longest = `250 ${'a'.repeat(2048 - 6)}\r\n`;
    assert.equal(decodeAll(longest)[0]?.kind, 'reply', 'a line of 2048 octets');
    assert.equal(decodeAll(`250 a${longest.slice(4)}`)[0]?.kind, 'error', 'a line of 2049 octets');
    assert.equal(decodeAll(`${'250-x\r\n'.repeat(99)}250 x\r\n`)[0]?.kind, 'reply', 'a reply of 100 lines');
    assert.deepEqual(decodeAll(`${'250-x\r\n'.repeat(100)}250 x\r\n`), [{ kind: 'error', reason: 'too-many-lines', detail: 'reply longer than 100 lines' }]);
  });

  it('decodes UTF-8 text (SMTPUTF8 servers)', () => {
    const events = decodeAll('550 5.1.1 <jörg@example.de> unknown\r\n');
    assert.deepEqual(events[0]?.kind === 'reply' && events[0].reply.lines, ['<jörg@example.de> unknown']);
  });
});

describe('parseEnhancedStatus', () => {
  const table: Array<[string, number | undefined, ReturnType<typeof parseEnhancedStatus>]> = [
    ['5.1.1 User unknown', 550, { status: { klass: 5, subject: 1, detail: 1 }, rest: 'User unknown' }],
    ['4.7.1', 450, { status: { klass: 4, subject: 7, detail: 1 }, rest: '' }],
    ['2.0.0\tOk', undefined, { status: { klass: 2, subject: 0, detail: 0 }, rest: 'Ok' }],
    ['5.123.456 long', 554, { status: { klass: 5, subject: 123, detail: 456 }, rest: 'long' }],
    ['5.1.1 class mismatch', 450, undefined],
    ['3.1.1 no such class', undefined, undefined],
    ['5.1 too short', undefined, undefined],
    ['5.1.1234 detail too long', undefined, undefined],
    ['5.1.1User glued', undefined, undefined],
    ['mx.example.com', undefined, undefined],
  ];
  for (const [text, code, want] of table) {
    it(JSON.stringify(text), () => assert.deepEqual(parseEnhancedStatus(text, code), want));
  }
});

describe('reply helpers', () => {
  const reply = { code: 550, enhanced: { klass: 5, subject: 1, detail: 1 } as const, lines: ['No such', ' user here '] };
  it('formatEnhanced', () => assert.equal(formatEnhanced(reply.enhanced), '5.1.1'));
  it('replyText joins the lines', () => assert.equal(replyText(reply), 'No such user here'));
  it('formatReply puts the whole reply on one line', () => {
    assert.equal(formatReply(reply), '550 5.1.1 No such user here');
    assert.equal(formatReply({ code: 250, lines: [''] }), '250');
  });
  it('isPositive takes 2xx only: a 3xx is no acceptance of a command', () => {
    assert.equal(isPositive({ code: 200, lines: [''] }), true);
    assert.equal(isPositive({ code: 299, lines: [''] }), true);
    assert.equal(isPositive({ code: 354, lines: ['Start mail input'] }), false);
    assert.equal(isPositive({ code: 199, lines: [''] }), false);
    assert.equal(isPositive({ code: 300, lines: [''] }), false);
  });
  it('parseEhloKeywords reads keywords after the first line', () => {
    const keywords = parseEhloKeywords({
      code: 250,
      lines: ['mx.example.com Hello', 'size 10240000', 'STARTTLS', 'AUTH PLAIN  LOGIN', '', 'smtputf8'],
    });
    assert.deepEqual(
      [...keywords],
      [
        ['SIZE', '10240000'],
        ['STARTTLS', ''],
        ['AUTH', 'PLAIN  LOGIN'],
        ['SMTPUTF8', ''],
      ],
    );
    assert.equal(parseEhloKeywords({ code: 250, lines: ['mx.example.com'] }).size, 0);
  });
});

describe('ReplyDecoder properties', () => {
  const maxLineLength = 64;

  it('random bytes never throw and never buffer more than maxLineLength', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 200 }), { maxLength: 20 }), (chunks) => {
        const decoder = new ReplyDecoder({ maxLineLength, maxLines: 5 });
        for (const chunk of chunks) {
          const events = decoder.push(Buffer.from(chunk));
          assert.ok(decoder.bufferedBytes < maxLineLength, 'decoder.bufferedBytes < maxLineLength');
          for (const event of events) {
            if (event.kind === 'reply') {
              assert.ok(event.reply.lines.length <= 5, 'event.reply.lines.length <= 5');
              // Characters, not UTF-8 octets: an invalid octet decodes to U+FFFD, three octets in UTF-8.
              assert.ok(event.raw.every((line) => line.length < maxLineLength), 'event.raw.every((line) => line.length < maxLineLength)');
            }
          }
        }
      }),
      { numRuns: 500 },
    );
  });

  const replyLine = fc.tuple(
    fc.constantFrom('2', '3', '4', '5'),
    fc.stringMatching(/^[0-9]{2}$/),
    fc.option(fc.constantFrom('2.0.0 ', '4.7.1 ', '5.1.1 '), { nil: '' }),
    fc.stringMatching(/^[ -~]{0,30}$/),
  );
  const validStream = fc
    .array(
      fc.tuple(replyLine, fc.integer({ min: 1, max: 4 }), fc.constantFrom('\r\n', '\n')),
      { minLength: 1, maxLength: 6 },
    )
    .map((replies) =>
      replies
        .map(([[first, rest, enhanced, text], count, eol]) =>
          Array.from({ length: count }, (_, i) => `${first}${rest}${i < count - 1 ? '-' : ' '}${enhanced}${text}${eol}`).join(''),
        )
        .join(''),
    );

  it('any split of a valid stream decodes to the same replies', () => {
    fc.assert(
      fc.property(validStream, fc.array(fc.nat(), { maxLength: 10 }), (stream, cutSeeds) => {
        const bytes = Buffer.from(stream, 'latin1');
        const whole = new ReplyDecoder().push(bytes);
        assert.ok(whole.every((event) => event.kind === 'reply'), 'whole.every((event) => event.kind === \'reply\')');
        const cuts = [...new Set(cutSeeds.map((seed) => seed % (bytes.length + 1)))].sort((a, b) => a - b);
        const decoder = new ReplyDecoder();
        const split: DecodeEvent[] = [];
        let from = 0;
        for (const cut of [...cuts, bytes.length]) {
          split.push(...decoder.push(bytes.subarray(from, cut)));
          from = cut;
        }
        assert.deepEqual(split, whole);
      }),
      { numRuns: 500 },
    );
  });
});
