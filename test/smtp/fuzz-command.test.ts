// Property test of the command injection guard beyond command.test.ts (printable ASCII only):
// for any argument, control characters and lone surrogates included, a command line is sent only
// without a control character and within 512 octets with its CRLF, and what is refused says why.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { CONTROL_CHARACTER } from '../../src/core/text.js';
import { formatCommand, MAX_COMMAND_LINE_OCTETS, mailFromCommand, rcptToCommand } from '../../src/smtp/command.js';

describe('formatCommand fuzzed', () => {
  it('sends a line only without control characters and within the line limit', () => {
    const argument = fc.oneof(fc.string({ unit: 'binary', maxLength: 40 }), fc.string({ unit: 'grapheme', minLength: 120, maxLength: 130 }), fc.string({ unit: fc.constantFrom('a', 'é', '\r', '\n', '\u2028', '\ud800'), maxLength: 520 }));
    fc.assert(
      fc.property(argument, (text) => {
        for (const line of [formatCommand('VRFY', text), mailFromCommand(text, { smtputf8: true }), rcptToCommand(text)]) {
          if (line.kind === 'line') {
            assert.ok(!CONTROL_CHARACTER.test(line.text), JSON.stringify(line.text));
            assert.ok(Buffer.byteLength(line.text) + 2 <= MAX_COMMAND_LINE_OCTETS, 'Buffer.byteLength(line.text) + 2 <= MAX_COMMAND_LINE_OCTETS');
          } else {
            assert.ok(CONTROL_CHARACTER.test(text) || Buffer.byteLength(text) > MAX_COMMAND_LINE_OCTETS - 'MAIL FROM:<> SMTPUTF8\r\n'.length, line.detail);
            assert.match(line.detail, /^refused to send /);
          }
        }
      }),
      { numRuns: 1000 },
    );
  });
});
