// policy.listen and metrics.listen on one socket: refused when the configuration is read, not at serve's start.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ConfigError, UsageError } from '../../src/core/errors.js';
import { validateConfig } from '../../src/config/schema.js';
import { loadConfig } from '../../src/config/load.js';
import { flagOf } from '../../src/cli/options.js';

const dir = mkdtempSync(join(tmpdir(), 'callout-listeners-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const listeners = (policy: string | undefined, metrics: string | undefined) => ({
  ...(policy === undefined ? {} : { policy: { listen: policy } }),
  ...(metrics === undefined ? {} : { metrics: { listen: metrics } }),
});

describe('policy.listen and metrics.listen', () => {
  it('are refused on one socket, naming both keys (config check said ok, and serve stopped at start with EADDRINUSE)', () => {
    assert.throws(() => validateConfig(listeners('127.0.0.1:10050', '127.0.0.1:10050'), 'callout.yaml'), {
      name: ConfigError.name,
      message: 'callout.yaml: policy.listen and metrics.listen: got "127.0.0.1:10050" and "127.0.0.1:10050", expected two addresses: serve listens on both, and the second would find its address taken',
    });
    // The default of the key the file leaves out is the value that clashes.
    assert.throws(() => validateConfig(listeners('127.0.0.1:10041', undefined)), { name: ConfigError.name, message: /got "127\.0\.0\.1:10041" and nothing \(the default, 127\.0\.0\.1:10041\)/ });
  });

  it('clash on the same address however written, under a wildcard, and on one socket path', () => {
    for (const [policy, metrics] of [
      ['[::ffff:127.0.0.1]:10050', '127.0.0.1:10050'],
      ['LOCALHOST:10050', 'localhost:10050'],
      ['0.0.0.0:10050', '127.0.0.1:10050'],
      ['[::]:10050', '127.0.0.1:10050'],
      ['[::1]:10050', '[::]:10050'],
      ['/run/callout/policy.sock', '/run/callout//policy.sock'],
    ]) {
      assert.throws(() => validateConfig(listeners(policy, metrics)), { name: ConfigError.name, message: /expected two addresses/ }, `${policy} and ${metrics}`);
    }
  });

  it('may share a port on different addresses, or each take any free port (0), or metrics be off', () => {
    for (const [policy, metrics] of [
      ['127.0.0.1:10050', '127.0.0.2:10050'],
      ['0.0.0.0:10050', '[::1]:10050'],
      ['127.0.0.1:0', '127.0.0.1:0'],
      ['127.0.0.1:10050', ''],
      ['/run/callout/policy.sock', '/run/callout/metrics.sock'],
    ]) {
      assert.equal(validateConfig(listeners(policy, metrics)).policy.listen, policy, `${policy} and ${metrics}`);
    }
  });

  it('are judged on the whole configuration: a --listen on the default metrics port is no clash when the file moves metrics', () => {
    const file = join(dir, 'metrics-elsewhere.yaml');
    writeFileSync(file, 'metrics: { listen: "127.0.0.1:10060" }\n');
    assert.equal(loadConfig(file, { policy: { listen: '127.0.0.1:10041' } }, {}, { flagOf }).policy.listen, '127.0.0.1:10041');
    // Without a file, the flags are the whole configuration: a usage error, naming the flag.
    assert.throws(() => loadConfig(undefined, { policy: { listen: '127.0.0.1:10041' } }, {}, { flagOf }), { name: UsageError.name, message: /^command line: --listen \(policy\.listen\) and / });
  });
});
