import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { MAX_COMMAND_LINE_OCTETS, formatCommand, mailFromCommand, rcptToCommand } from '../../src/smtp/command.js';

describe('command lines', () => {
  it('builds MAIL, RCPT and bare commands', () => {
    assert.deepEqual(mailFromCommand(''), { kind: 'line', text: 'MAIL FROM:<>' });
    assert.deepEqual(mailFromCommand('a@example.com', { smtputf8: true }), { kind: 'line', text: 'MAIL FROM:<a@example.com> SMTPUTF8' });
    assert.deepEqual(rcptToCommand('b@example.com'), { kind: 'line', text: 'RCPT TO:<b@example.com>' });
    assert.deepEqual(formatCommand('RSET'), { kind: 'line', text: 'RSET' });
    assert.deepEqual(formatCommand('EHLO', 'callout.example'), { kind: 'line', text: 'EHLO callout.example' });
  });

  for (const injected of ['a@b.example\r\nDATA', 'a@b.example\nDATA', 'a@b.example\rX', 'a\u0000@b.example', 'a\t@b.example', 'a\u007f@b.example']) {
    it(`refuses ${JSON.stringify(injected)}`, () => {
      const line = rcptToCommand(injected);
      assert.equal(line.kind, 'unsafe');
    });
  }

  it('refuses a verb holding a control character as it refuses such an argument', () => {
    assert.equal(formatCommand('RSET\r\nDATA').kind, 'unsafe');
    assert.equal(formatCommand('VRFY\r\nDATA', 'a@b.example').kind, 'unsafe');
  });

  it('refuses a command line over 512 octets', () => {
    const local = 'a'.repeat(MAX_COMMAND_LINE_OCTETS);
    assert.equal(rcptToCommand(`${local}@example.com`).kind, 'unsafe');
    const fits = 'a'.repeat(MAX_COMMAND_LINE_OCTETS - 'RCPT TO:<@x>\r\n'.length);
    assert.equal(rcptToCommand(`${fits}@x`).kind, 'line');
  });

  it('counts the CRLF and octets, not characters, against the 512 of RFC 5321 §4.5.3.1.4', () => {
    assert.equal(MAX_COMMAND_LINE_OCTETS, 512);
    // "RCPT TO:<" + 499 + "@x>" is 511 octets, 513 with its CRLF.
    assert.equal(rcptToCommand(`${'a'.repeat(499)}@x`).kind, 'unsafe');
    // 497 characters but 498 octets ("é" is two in UTF-8): 512 octets with the CRLF, then one too many.
    assert.equal(rcptToCommand(`${'a'.repeat(496)}é@x`).kind, 'line');
    assert.equal(rcptToCommand(`${'a'.repeat(497)}é@x`).kind, 'unsafe');
  });

  it('property: a line is never produced with CR or LF inside it', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 600 }), (argument) => {
        const line = formatCommand('VRFY', argument);
        if (line.kind === 'line') assert.ok(!/[\r\n]/.test(line.text), '!/[\\r\\n]/.test(line.text)');
        // eslint-disable-next-line no-control-regex
        else assert.ok(/[\x00-\x1f\x7f]/.test(argument) || Buffer.byteLength(argument) > 500, '/[\\x00-\\x1f\\x7f]/.test(argument) || Buffer.byteLength(argument) > 500');
      }),
    );
  });
});
