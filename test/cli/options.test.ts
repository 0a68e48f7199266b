// Numbers on the command line: decimal only, within range, and named when refused.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CalloutError, UsageError } from '../../src/core/errors.js';
import { numberFlag, wholeNumberFlag } from '../../src/cli/options.js';

describe('number flags', () => {
  it('take decimal numbers only: Number() also read 0x19 as 25, 1e3 as 1000 and Infinity', () => {
    assert.equal(numberFlag('--port', '25'), 25);
    assert.equal(numberFlag('--timeout', ' 2.5 '), 2.5);
    for (const bad of ['0x19', '1e3', 'Infinity', '', ' ', '0b1', '+5', '5s']) {
      assert.throws(() => numberFlag('--port', bad), (err: unknown) => err instanceof CalloutError && err.code === 'USAGE' && err.message.startsWith('--port: got '), bad);
    }
  });

  it('take whole numbers within their range, and quote a long value only in part', () => {
    assert.equal(wholeNumberFlag('--timeout', '2147483647', 1, 2 ** 31 - 1), 2 ** 31 - 1);
    assert.throws(() => wholeNumberFlag('--timeout', '2147483648', 1, 2 ** 31 - 1), /--timeout: got "2147483648", expected a whole number from 1 to 2147483647/);
    assert.throws(() => wholeNumberFlag('--limit', '0x10', 1), UsageError);
    assert.throws(() => wholeNumberFlag('--limit', '9'.repeat(1000), 1), (err: unknown) => err instanceof UsageError && err.message.length < 120);
  });
});
