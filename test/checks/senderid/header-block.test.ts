// checks/senderid headerBlock: the header block of a message file, decoded without its body,
// gives splitHeaderFields the fields the whole message decoded gave.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { PRA_LIMITS, headerBlock, splitHeaderFields } from '../../../src/checks/senderid/index.js';

const fieldsOfWhole = (message: Buffer) => splitHeaderFields(message.toString('utf8'));

describe('headerBlock', () => {
  it('gives the fields of the whole message, whatever its line ends and characters', () => {
    const piece = fc.constantFrom('From: a@b.example', 'Sender:', ' x', '\t', 'é', '\u{1F600}', '\r', '\n', '\r\n', ':', 'X', ' ');
    const bytes = fc.oneof(fc.array(piece, { maxLength: 40 }).map((parts) => Buffer.from(parts.join(''), 'utf8')), fc.uint8Array({ maxLength: 60 }).map((raw) => Buffer.from(raw)));
    fc.assert(
      fc.property(bytes, (message) => {
        assert.deepEqual(splitHeaderFields(headerBlock(message)), fieldsOfWhole(message));
      }),
      { numRuns: 2000 },
    );
  });

  it('stops at the first empty line and leaves the body undecoded', () => {
    const message = Buffer.from('Resent-From: r@pra.example\nFrom: a@b.example\r\n\r\nFrom: body@c.example\n\nmore\n');
    assert.equal(headerBlock(message), 'Resent-From: r@pra.example\nFrom: a@b.example\r\n\r\n');
    assert.equal(headerBlock(Buffer.from('From: a@b.example\n\nbody')), 'From: a@b.example\n\n');
  });

  it('decodes at most PRA_LIMITS.headerBytes + 1 of a header section without an end', () => {
    const message = Buffer.from(`From: a@b.example\r\n${'X-Filler: y\r\n'.repeat(PRA_LIMITS.headerBytes / 8)}\r\nbody\r\n`);
    const block = headerBlock(message);
    assert.equal(block.length, PRA_LIMITS.headerBytes + 1);
    assert.deepEqual(splitHeaderFields(block), fieldsOfWhole(message));
  });
});
