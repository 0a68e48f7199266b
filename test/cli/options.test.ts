// Numbers on the command line: decimal only, within range, and named when refused.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CalloutError, UsageError } from '../../src/core/errors.js';
import { engineOverrides, numberFlag, wholeNumberFlag } from '../../src/cli/options.js';
import { serveOverrides } from '../../src/cli/serve.js';
import { resolve } from 'node:path';
import fc from 'fast-check';
import { elapsedMs } from '../support/fuzz.js';

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
    assert.equal(wholeNumberFlag('--limit', '1', 1), 1, 'the minimum itself');
    assert.throws(() => wholeNumberFlag('--limit', '0', 1), /--limit: got "0", expected a whole number 1 or more/);
    assert.throws(() => wholeNumberFlag('--limit', '0x10', 1), UsageError);
    assert.throws(() => wholeNumberFlag('--limit', '9'.repeat(1000), 1), (err: unknown) => err instanceof UsageError && err.message.length < 120);
  });
});

describe('engine flags', () => {
  const none = { dnsServer: [], allowTarget: [] };

  it('--cache FILE is a SQLite store at FILE taken from the current directory, and --cache "" is refused', () => {
    assert.deepEqual(engineOverrides({ ...none, cache: 'verdicts.sqlite' }).store, { kind: 'sqlite', path: resolve('verdicts.sqlite') });
    assert.throws(() => engineOverrides({ ...none, cache: '' }), (err: unknown) => err instanceof UsageError && err.message === '--cache: got "", expected a file');
  });

  it('--timeout and --port set callout.timeouts.overall and callout.port, as numbers for the schema to check', () => {
    assert.deepEqual(engineOverrides({ ...none, timeout: '7', port: '2525' }), { callout: { port: 2525, timeouts: { overall: 7 } } });
  });

  it('`serve` flags override the file: --listen, --workers, --idle-poll, --data-dir and --metrics ("" disables it)', () => {
    const overrides = serveOverrides({ ...none, listen: '127.0.0.1:0', workers: '2', idlePoll: '0', dataDir: '/srv/callout', metrics: '' });
    assert.deepEqual({ policy: overrides.policy, dataDir: overrides.dataDir, metrics: overrides.metrics }, { policy: { listen: '127.0.0.1:0', workers: 2, idlePollMicros: 0 }, dataDir: '/srv/callout', metrics: { listen: '' } });
  });
});

describe('number flags fuzzed', () => {
  it('give a finite number or a usage error naming the flag, for any text', () => {
    const text = fc.oneof(fc.string({ maxLength: 40 }), fc.double().map(String), fc.stringMatching(/^[\s0-9.eExX+-]{0,20}$/));
    fc.assert(
      fc.property(text, (value) => {
        for (const read of [() => numberFlag('--timeout', value), () => wholeNumberFlag('--limit', value, 1, 1000)]) {
          try {
            const n = read();
            assert.ok(Number.isFinite(n), `${JSON.stringify(value)} read as ${n}`);
          } catch (err) {
            assert.ok(err instanceof CalloutError, String(err));
            assert.match((err as Error).message, /^--(timeout|limit): got /);
          }
        }
        try {
          const n = wholeNumberFlag('--limit', value, 1, 1000);
          assert.ok(Number.isInteger(n) && n >= 1 && n <= 1000);
        } catch (err) {
          assert.ok(err instanceof UsageError);
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('refuse a long run of digits in linear time', () => {
    const digits = '1'.repeat(100_000);
    // Generous bound against a quadratic scan, not a speed claim.
    assert.ok(elapsedMs(() => assert.throws(() => numberFlag('--timeout', `${digits}.${digits}x`), CalloutError)) < 200);
  });
});
