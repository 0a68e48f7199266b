// An unknown key that is a key of another section, or of its own in another case, says which.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError } from '../../src/core/errors.js';
import { validateConfig } from '../../src/config/schema.js';

const TOP_KEYS = 'dataDir, dns, callout, cache, limits, store, policy, metrics, log';

describe('an unknown key', () => {
  it('written in the wrong section names the key of that name (it was told only the keys of the section it is in)', () => {
    assert.throws(() => validateConfig({ helo: 'mx.example.org', callout: { level: 'debug' } }, 'callout.yaml'), {
      name: ConfigError.name,
      message: `callout.yaml: callout.level: unknown key (the key of that name is log.level), expected one of helo, sender, fallbackSender, port, tls, timeouts, randomProbe, randomLocalPart, postmasterProbe, vrfy, noDetails, maxMxHosts, ipv6, allowTargets, sourceAddress, pipelining, connectionCache; helo: unknown key (the key of that name is callout.helo), expected one of ${TOP_KEYS}`,
    });
  });

  it('names every key of that name, a nested one too, and the key in its own case', () => {
    assert.throws(() => validateConfig({ callout: { listen: '127.0.0.1:10040' } }), { name: ConfigError.name, message: /callout\.listen: unknown key \(the keys of that name are policy\.listen, metrics\.listen\), expected one of helo, / });
    assert.throws(() => validateConfig({ idleTime: '2s' }), { name: ConfigError.name, message: /^configuration: idleTime: unknown key \(the key of that name is callout\.connectionCache\.idleTime\), expected one of dataDir, / });
    assert.throws(() => validateConfig({ callout: { HELO: 'mx.example.org' } }), { name: ConfigError.name, message: /callout\.HELO: unknown key \(the key of that name is callout\.helo\), / });
  });

  it('of no other section is told the keys of its own only', () => {
    assert.throws(() => validateConfig({ limits: { perDomain: 5 } }), {
      name: ConfigError.name,
      message: 'configuration: limits.perDomain: unknown key, expected one of concurrency, perHostConcurrency, perDomainPerMinute, perHostConnectionsPerMinute, addressesPerConnection, listConcurrency',
    });
  });
});
