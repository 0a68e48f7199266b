// Listen addresses as administrators write them: limits, and any input fuzzed.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { parseListenAddress } from '../../src/core/listen.js';

describe('listen addresses', () => {
  it('refuses a UNIX socket path longer than a socket address holds, or with a NUL', () => {
    assert.equal(parseListenAddress(`/${'a'.repeat(106)}`).ok, true);
    const long = parseListenAddress(`/${'a'.repeat(107)}`);
    assert.deepEqual(long, { ok: false, reason: 'socket path is 108 octets, more than the 107 a UNIX socket address holds' });
    assert.deepEqual(parseListenAddress('/run/call\0out'), { ok: false, reason: 'socket path contains a NUL character' });
  });

  it('never throws; what it accepts is a port up to 65535 or a short absolute path', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 200 }), fc.stringMatching(/^(\[[0-9a-f:]{0,20}\]|[a-z0-9.]{0,10}):[0-9]{0,6}$/)), (text) => {
        const parsed = parseListenAddress(text);
        if (!parsed.ok) {
          assert.ok(parsed.reason.length <= 200, parsed.reason);
          return;
        }
        if (parsed.value.kind === 'tcp') assert.ok(Number.isInteger(parsed.value.port) && parsed.value.port <= 65535);
        else assert.ok(parsed.value.path.startsWith('/') && Buffer.byteLength(parsed.value.path) <= 107 && !parsed.value.path.includes('\0'));
      }),
      { numRuns: 2000 },
    );
  });
});
