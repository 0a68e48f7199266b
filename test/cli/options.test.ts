// Numbers on the command line: decimal only, within range, and named when refused.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CalloutError, UsageError } from '../../src/core/errors.js';
import { IDLE_POLL_MICROSECONDS, TIMEOUT_MILLISECONDS, TIMEOUT_SECONDS, engineOverrides, flagOf, numberFlag, once, readMessageInput, unitFlag, wholeNumberFlag } from '../../src/cli/options.js';
import { Readable } from 'node:stream';
import { serveOverrides } from '../../src/cli/serve.js';
import { dirname, join, resolve } from 'node:path';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { loadConfig } from '../../src/config/load.js';
import type { RawConfig } from '../../src/config/load.js';
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

describe('flags of one value', () => {
  it('take the first value and refuse a second, quoting both (commander kept the last without a word)', () => {
    const parse = once('--socketmap');
    const first = parse('/run/a.sock', undefined);
    assert.equal(first, '/run/a.sock');
    assert.throws(() => parse('127.0.0.1:10050', first), (err: unknown) => err instanceof UsageError && err.message === '--socketmap given twice ("/run/a.sock", then "127.0.0.1:10050"): it takes one value');
  });
});

describe('message input', () => {
  const dir = mkdtempSync(join(tmpdir(), 'callout-message-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('reads a file, or standard input for "-", text chunks too', async () => {
    const path = join(dir, 'message.eml');
    writeFileSync(path, 'Subject: x\r\n\r\nbody\r\n');
    assert.equal((await readMessageInput(path, Readable.from([]))).toString(), 'Subject: x\r\n\r\nbody\r\n');
    assert.equal((await readMessageInput('-', Readable.from(['Subject: y\r\n', Buffer.from('\r\nbody\r\n')]))).toString(), 'Subject: y\r\n\r\nbody\r\n');
  });

  it('refuses a file it cannot read, naming what it is and the file, and standard input over the limit', async () => {
    const missing = join(dir, 'missing.eml');
    await assert.rejects(readMessageInput(missing, Readable.from([]), 'bounce'), (err: unknown) => err instanceof UsageError && err.message === `bounce "${missing}": cannot read: no such file (ENOENT)`);
    await assert.rejects(readMessageInput(missing, Readable.from([])), (err: unknown) => err instanceof UsageError && err.message === `"${missing}": cannot read: no such file (ENOENT)`);
    const huge = Readable.from((function* () {
      for (let i = 0; i < 65; i++) yield Buffer.alloc(1024 * 1024);
    })());
    await assert.rejects(readMessageInput('-', huge, 'message'), (err: unknown) => err instanceof UsageError && err.message === 'message standard input: larger than 64 MiB');
  });
});

describe('engine flags', () => {
  const none = { dnsServer: [], allowTarget: [] };

  it('--timeout and --idle-poll say their bounds in their own units (--timeout 99999999 said "expected at most 2147483647 ms" of a flag in seconds)', () => {
    const usage = (run: () => unknown, message: string) => assert.throws(run, (err: unknown) => err instanceof UsageError && err.message === message);
    usage(() => engineOverrides({ ...none, timeout: '99999999' }), '--timeout: got "99999999", expected at most 2147483 seconds (about 24 days)');
    usage(() => engineOverrides({ ...none, timeout: '0' }), '--timeout: got "0", expected at least 0.001 seconds');
    usage(() => engineOverrides({ ...none, timeout: '-1' }), '--timeout: got "-1", expected at least 0.001 seconds');
    usage(() => engineOverrides({ ...none, timeout: '5s' }), '--timeout: got "5s", expected a number of seconds');
    usage(() => serveOverrides({ ...none, idlePoll: '99999' }), '--idle-poll: got "99999", expected at most 10000 microseconds');
    usage(() => serveOverrides({ ...none, idlePoll: '1.5' }), '--idle-poll: got "1.5", expected a whole number of microseconds');
    // The bounds themselves are taken, and the schema takes them too.
    // A bound of 1 in the singular.
    usage(() => unitFlag('--timeout-ms', '0', TIMEOUT_MILLISECONDS), '--timeout-ms: got "0", expected at least 1 millisecond');
    assert.equal(unitFlag('--timeout', '2147483', TIMEOUT_SECONDS), 2147483);
    assert.equal(unitFlag('--timeout', '0.001', TIMEOUT_SECONDS), 0.001);
    assert.equal(unitFlag('--idle-poll', '0', IDLE_POLL_MICROSECONDS), 0);
    assert.equal(loadConfig(undefined, engineOverrides({ ...none, timeout: '2147483' })).callout.timeouts.overall, 2_147_483_000);
    assert.equal(loadConfig(undefined, engineOverrides({ ...none, timeout: '0.001' })).callout.timeouts.overall, 1);
  });

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

  it('a bad value is a usage error named by the flag that gave it, with its key (it said "command line: callout.port: got 0" to one who typed --port 0, and exited 78)', () => {
    const refused = (overrides: RawConfig, path?: string) => {
      try {
        loadConfig(path, overrides, {}, { flagOf });
      } catch (err) {
        assert.ok(err instanceof UsageError, `a usage error (64), as --timeout 0 is: ${String(err)}`);
        return err.message;
      }
      assert.fail('expected a UsageError');
    };
    assert.equal(refused(engineOverrides({ ...none, port: '0' })), 'command line: --port (callout.port): got 0, expected at least 1');
    assert.match(refused(engineOverrides({ ...none, dnsServer: ['127.0.0.1:0'] })), /^command line: --dns-server \(dns\.servers\.0\): got "127\.0\.0\.1:0", /);
    assert.match(refused(serveOverrides({ ...none, allowTarget: ['127.0.0.0/8', 'foo'], workers: '100' })), /^command line: --allow-target \(callout\.allowTargets\.1\): got "foo", expected an IPv4 or IPv6 address or network \(192\.0\.2\.0\/24, 2001:db8::\/32\); --workers \(policy\.workers\): got 100, expected at most 64$/);
    const file = join(mkdtempSync(join(tmpdir(), 'callout-flags-')), 'callout.yaml');
    writeFileSync(file, 'callout:\n  port: 2525\n');
    assert.equal(refused({ limits: { listConcurrency: 0 } }, file), 'command line: --concurrency (limits.listConcurrency): got 0, expected at least 1');
    assert.equal(flagOf('callout.portal'), 'callout.portal', 'a key only by its start is no flag\'s');
    rmSync(dirname(file), { recursive: true });
  });

  it('names by its flag every key a flag sets (flagOf\'s table is kept by hand beside the builders)', () => {
    const every = { config: '/etc/callout.yaml', dnsServer: ['127.0.0.1'], helo: 'mx.example.org', sender: '<>', timeout: '7', allowTarget: ['127.0.0.0/8'], port: '2525', cache: 'v.sqlite', listen: '127.0.0.1:0', workers: '2', idlePoll: '0', dataDir: '/srv/callout', metrics: '' };
    const leaves = (raw: unknown, path: string[]): string[] =>
      raw !== null && typeof raw === 'object' && !Array.isArray(raw) ? Object.entries(raw).flatMap(([key, value]) => leaves(value, [...path, key])) : [path.join('.')];
    const keys = leaves(serveOverrides(every), []);
    assert.deepEqual(keys.filter((key) => key.startsWith('store.')), ['store.kind', 'store.path']);
    for (const key of keys.filter((k) => !k.startsWith('store.'))) assert.match(flagOf(key), /^--[a-z-]+ \(/, key);
    // --cache's keys are left out: a sqlite store at an absolute file, which the schema takes whatever the name.
    assert.doesNotThrow(() => loadConfig(undefined, engineOverrides({ ...none, cache: ':memory:' }), {}, { flagOf }));
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
          assert.ok(Number.isInteger(n) && n >= 1 && n <= 1000, 'Number.isInteger(n) && n >= 1 && n <= 1000');
        } catch (err) {
          assert.ok(err instanceof UsageError, 'err instanceof UsageError');
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('refuse a long run of digits in linear time', () => {
    const digits = '1'.repeat(100_000);
    // Generous bound against a quadratic scan, not a speed claim.
    assert.ok(elapsedMs(() => assert.throws(() => numberFlag('--timeout', `${digits}.${digits}x`), CalloutError)) < 200, 'elapsedMs(() => assert.throws(() => numberFlag(\'--timeout\', `${digits}.${digits}x`), CalloutError...');
  });
});
