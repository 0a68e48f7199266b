import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError } from '../../src/core/errors.js';
import { configSchema, schemaKeys, validateConfig } from '../../src/config/schema.js';
import { ABSOLUTE_PATH_EXPECTED } from '../../src/config/paths.js';
import { STAGE_DEFINITIONS } from '../../src/policy/stages/index.js';
import { STAGE_REQUIRED, leaves, setting } from '../support/config-keys.js';
import { DEFAULT_IDLE_POLL_MICROS } from '../../src/core/idle-poll.js';
import { isAnnounceable } from '../../src/config/fqdn.js';

function problem(raw: unknown): string {
  try {
    validateConfig(raw);
  } catch (err) {
    assert.ok(err instanceof ConfigError, 'err instanceof ConfigError');
    return err.message;
  }
  assert.fail('expected a ConfigError');
}

describe('problem messages', () => {
  it('quote the start of a long value and the first 20 problems, not a line of megabytes', () => {
    const message = problem({ callout: { allowTargets: Array(1000).fill(Array(10_000).fill('x')) } });
    assert.ok(message.length < 4000, `${message.length} characters`);
    assert.match(message, /^configuration: callout\.allowTargets\.0: got \["x","x",.*\.\.\., expected text/);
    assert.match(message, /callout\.allowTargets\.19: .*; and 980 more$/);
    assert.match(problem({ [`k${'y'.repeat(10_000)}`]: 1 }), /^configuration: ky{99}\.\.\.: unknown key, expected one of dataDir, dns, /);
  });

  it('say what to write in YAML words, not JavaScript types or zod syntax (it said "expected object, received string", "Invalid option: expected one of \\"DUNNO\\"|\\"DEFER\\"")', () => {
    assert.equal(problem({ callout: 'yes' }), 'configuration: callout: got "yes", expected a mapping of keys (key: value lines)');
    assert.equal(problem({ callout: null }), 'configuration: callout: got an empty value (null), expected a mapping of keys (key: value lines)', 'a key with nothing under it');
    assert.equal(problem(42), 'configuration: (top level): got 42, expected a mapping of keys (key: value lines)', 'a configuration that is no mapping at all');
    assert.equal(problem({ policy: { stages: 'greylist' } }), 'configuration: policy.stages: got "greylist", expected a list');
    assert.equal(problem({ callout: { helo: 42 } }), 'configuration: callout.helo: got 42, expected text');
    assert.equal(problem({ policy: { faultAction: 'REJECT' } }), 'configuration: policy.faultAction: got "REJECT", expected one of DUNNO, DEFER');
    assert.equal(problem({ policy: { workers: 1.5 } }), 'configuration: policy.workers: got 1.5, expected a whole number');
    assert.equal(problem({ policy: { workers: 0 } }), 'configuration: policy.workers: got 0, expected at least 1');
    assert.equal(problem({ callout: { port: 70000 } }), 'configuration: callout.port: got 70000, expected at most 65535');
    assert.equal(problem({ callout: { vrfy: 'yes' } }), 'configuration: callout.vrfy: got "yes", expected true or false');
    // A misspelt key, with the keys its mapping takes: "unknown key" alone sent the reader to the README.
    assert.equal(problem({ limits: { perDomain: 5 } }), 'configuration: limits.perDomain: unknown key, expected one of concurrency, perHostConcurrency, perDomainPerMinute, perHostConnectionsPerMinute, addressesPerConnection, listConcurrency');
    assert.match(problem({ policy: { stages: [{ name: 'tarpit', stats: ['RCPT'] }] } }), /^configuration: policy\.stages\.0\.stats \(tarpit\): unknown key, expected one of name, mode, states, perConnection, perClient, sleep, /);
    assert.match(problem({ policy: { stages: [{ name: 'ratelimit', limits: [{ per: 'client', count: 'messages', max: 5, key: 'x' }] }] } }), /policy\.stages\.0\.limits\.0\.key \(ratelimit\): unknown key, expected one of name, per, count, max, window, action$/);
    // A stage's own options, and a key left out: "received undefined" was all it said of the value.
    assert.equal(
      problem({ policy: { stages: [{ name: 'ratelimit', limits: [{ per: 'client', count: 'messages', window: '1m' }] }] } }),
      'configuration: policy.stages.0.limits.0.max (ratelimit): got nothing, expected a number',
    );
    assert.equal(problem({ policy: { stages: [{ name: 'greylist', mode: 'on' }] } }), 'configuration: policy.stages.0.mode (greylist): got "on", expected one of enforce, warn, off');
  });
});

describe('stage entries', () => {
  it('are checked with the rest, so that one run reports a bad key and a bad stage option together', () => {
    const message = problem({ callout: { port: 0 }, policy: { stages: [{ name: 'greylist', delay: 'soon' }] } });
    assert.match(message, /callout\.port: got 0, expected at least 1/);
    assert.match(message, /policy\.stages\.0\.delay \(greylist\): got "soon", expected a duration/, 'the stage\'s own problem beside the other key\'s');
  });

  it('quote the start of a long unknown stage name, not all of it', () => {
    const message = problem({ policy: { stages: [{ name: `x${'y'.repeat(10_000)}` }] } });
    assert.match(message, /^configuration: policy\.stages\.0\.name: got "xy{99}\.\.\.", expected one of /);
    assert.ok(message.length < 1000, `${message.length} characters`);
  });

  it('leave an own key left out (states) out, so that the stage\'s default applies, not present as undefined', () => {
    // A configuration built in code (a test's, a front end's) may give the key as undefined.
    for (const entry of [{ name: 'allowlist' }, { name: 'allowlist', states: undefined }]) {
      const [checked] = validateConfig({ policy: { stages: [entry] } }).policy.stages;
      assert.equal(Object.hasOwn(checked!, 'states'), false, `no states key from ${Object.keys(entry).join(', ')}`);
    }
  });
});

describe('defaults', () => {
  it('are those of the README\'s configuration reference (a changed default is a changed service: listeners exposed, TLS off, faults deferred)', () => {
    const config = validateConfig({});
    assert.equal(config.dataDir, '/var/lib/callout');
    assert.deepEqual(config.dns, { servers: [], timeout: 5000, tries: 2, minTtl: 5000, maxTtl: 86_400_000, negativeTtl: 3_600_000 });
    const { timeouts, connectionCache, ...callout } = config.callout;
    assert.deepEqual(callout, { sender: '', port: 25, tls: 'opportunistic', randomProbe: true, randomLocalPart: 'callout-{random}', postmasterProbe: 'off', vrfy: false, noDetails: false, maxMxHosts: 5, ipv6: true, allowTargets: [], pipelining: true });
    assert.deepEqual(timeouts, { connect: 10_000, greeting: 30_000, command: 30_000, rcpt: 30_000, tls: 10_000, overall: 60_000 });
    assert.deepEqual(connectionCache, { enabled: true, idleTime: 2000, maxIdlePerHost: 2, maxIdle: 256, maxRejectedRecipients: 5 });
    assert.deepEqual(config.cache, { addressPositive: 86_400_000, addressNegative: 7_200_000, addressPositiveRefresh: 43_200_000, addressNegativeRefresh: 3_600_000, domainPositive: 604_800_000, domainNegative: 10_800_000, tempfail: 60_000, greylistRetry: 300_000 });
    assert.deepEqual(config.limits, { concurrency: 64, perHostConcurrency: 4, perDomainPerMinute: 30, perHostConnectionsPerMinute: 60, addressesPerConnection: 20, listConcurrency: 8 });
    assert.deepEqual(config.store, { kind: 'sqlite', path: 'callout.sqlite', url: 'redis://127.0.0.1:6379/0', keyPrefix: 'callout:', purgeInterval: 600_000, sync: 'normal' });
    const { stages, idlePollMicros: _poll, ...policy } = config.policy;
    assert.deepEqual(policy, { listen: '127.0.0.1:10040', decisionTimeout: 6000, faultAction: 'DUNNO', warnAction: 'WARN', maxConnections: 1000, workers: 1, idleTimeout: 300_000, acceptTestTime: false, socketMode: '0660' });
    assert.deepEqual(stages.map((stage) => [stage.name, stage.mode]), [['allowlist', 'enforce'], ['postmaster', 'enforce'], ['sender-syntax', 'enforce'], ['sender-callout', 'enforce']]);
    assert.deepEqual(config.metrics, { listen: '127.0.0.1:10041', socketMode: '0660' });
    assert.equal(config.log.level, 'info');
  });
});

describe('bounds', () => {
  it('take the largest value of a bounded key and refuse the next, naming the key', () => {
    const cases: [string, string, number][] = [
      ['dns', 'tries', 10],
      ['callout', 'port', 65535],
      ['callout', 'maxMxHosts', 20],
      ['limits', 'addressesPerConnection', 100],
      ['policy', 'workers', 64],
    ];
    for (const [section, key, max] of cases) {
      assert.equal((validateConfig({ [section]: { [key]: max } }) as unknown as Record<string, Record<string, number>>)[section]![key], max, `${section}.${key}`);
      assert.match(problem({ [section]: { [key]: max + 1 } }), new RegExp(`^configuration: ${section}\\.${key}: got ${max + 1}, `), `${section}.${key}`);
    }
  });

  it('take each whole number of the README\'s ranges from its least to its largest, and refuse one past either end', () => {
    const ranges: [string, number, number][] = [
      ['dns.tries', 1, 10],
      ['callout.maxMxHosts', 1, 20],
      ['callout.connectionCache.maxIdlePerHost', 1, 100],
      ['callout.connectionCache.maxIdle', 1, 100_000],
      ['callout.connectionCache.maxRejectedRecipients', 1, 100],
      ['limits.concurrency', 1, 10_000],
      ['limits.perHostConcurrency', 1, 1000],
      ['limits.perDomainPerMinute', 1, 100_000],
      ['limits.perHostConnectionsPerMinute', 1, 1_000_000],
      ['limits.addressesPerConnection', 1, 100],
      ['limits.listConcurrency', 1, 1000],
      ['policy.maxConnections', 1, 100_000],
      ['policy.idlePollMicros', 0, 10_000],
    ];
    const at = (key: string, value: number): Record<string, unknown> => key.split('.').reduceRight<unknown>((inner, part) => ({ [part]: inner }), value) as Record<string, unknown>;
    const read = (config: unknown, key: string): unknown => key.split('.').reduce<unknown>((node, part) => (node as Record<string, unknown>)[part], config);
    for (const [key, min, max] of ranges) {
      for (const value of [min, max]) assert.equal(read(validateConfig(at(key, value)), key), value, `${key} takes ${value}`);
      assert.match(problem(at(key, min - 1)), new RegExp(`^configuration: ${key.replace(/\./g, '\\.')}: got ${min - 1}, expected at least ${min}$`), `${key} refuses ${min - 1}`);
      assert.match(problem(at(key, max + 1)), new RegExp(`^configuration: ${key.replace(/\./g, '\\.')}: got ${max + 1}, expected at most ${max}$`), `${key} refuses ${max + 1}`);
    }
  });

  it('say how many problems are not shown only when there are more than 20', () => {
    const servers = (n: number) => ({ dns: { servers: Array<string>(n).fill('resolver.example') } });
    assert.doesNotMatch(problem(servers(20)), /more$/);
    assert.match(problem(servers(20)), /dns\.servers\.19: /);
    assert.match(problem(servers(21)), /dns\.servers\.19: [^;]*; and 1 more$/);
  });
});

describe('timer durations', () => {
  it('refuses what a Node.js timer would fire after 1 ms: 0 and more than 2^31 - 1 ms', () => {
    assert.match(problem({ policy: { idleTimeout: 0 } }), /policy\.idleTimeout: got 0, expected at least 1s$/);
    // The bound as an administrator writes a duration, the whole seconds below 2^31 - 1 ms (not 2147483647ms).
    assert.match(problem({ policy: { idleTimeout: '4w' } }), /policy\.idleTimeout: got "4w", expected at most 2147483s \(about 24 days\)$/);
    assert.equal(validateConfig({ policy: { idleTimeout: '2147483s' } }).policy.idleTimeout, 2_147_483_000, 'the bound named is accepted');
    assert.match(problem({ policy: { decisionTimeout: '0s' } }), /policy\.decisionTimeout: got "0s", expected at least 100ms$/);
    assert.equal(validateConfig({ policy: { idleTimeout: '24d' } }).policy.idleTimeout, 24 * 86_400_000);
    assert.match(problem({ store: { purgeInterval: '500ms' } }), /store\.purgeInterval: got "500ms", expected at least 1s$/);
    // The least of each is taken: a bound one past it refused the value the message names.
    assert.equal(validateConfig({ policy: { idleTimeout: '1s' } }).policy.idleTimeout, 1000, 'policy.idleTimeout at least 1s');
    assert.equal(validateConfig({ policy: { decisionTimeout: '100ms' } }).policy.decisionTimeout, 100, 'policy.decisionTimeout at least 100ms');
    assert.equal(validateConfig({ store: { purgeInterval: '1s' } }).store.purgeInterval, 1000, 'store.purgeInterval at least 1s');
    assert.equal(validateConfig({ dns: { timeout: '1ms' } }).dns.timeout, 1, 'dns.timeout at least 1ms');
    // 0 keeps no idle connection: each callout closes its own, as with connectionCache.enabled false.
    assert.equal(validateConfig({ callout: { connectionCache: { idleTime: 0 } } }).callout.connectionCache.idleTime, 0, 'callout.connectionCache.idleTime may be 0');
    // The timer's own bound, 2^31 - 1 ms, and not one more: a Node.js timer fires a longer one after 1 ms.
    assert.equal(validateConfig({ dns: { timeout: '2147483647ms' } }).dns.timeout, 2_147_483_647, 'the longest timer is taken');
    assert.match(problem({ dns: { timeout: '2147483648ms' } }), /dns\.timeout: got "2147483648ms", expected at most 2147483s \(about 24 days\)$/);
    assert.equal(validateConfig({}).store.purgeInterval, 10 * 60_000);
  });

  it('bounds the DNS and callout timeouts and the connection cache the same way (they arm timers too)', () => {
    // dns.timeout went to c-ares, which threw a bare RangeError: exit 70 from `config check`.
    assert.match(problem({ dns: { timeout: '30d' } }), /dns\.timeout: got "30d", expected at most 2147483s \(about 24 days\)$/);
    assert.match(problem({ dns: { timeout: 0 } }), /dns\.timeout: got 0, expected at least 1ms$/);
    for (const key of ['connect', 'greeting', 'command', 'rcpt', 'tls', 'overall']) {
      assert.match(problem({ callout: { timeouts: { [key]: '25d' } } }), new RegExp(`callout\\.timeouts\\.${key}: got "25d", expected at most`));
    }
    assert.match(problem({ callout: { connectionCache: { idleTime: '4w' } } }), /callout\.connectionCache\.idleTime: got "4w", expected at most/);
  });

  it('refuses dns.minTtl over dns.maxTtl, naming the keys of the file (the DNS cache said minTtlSeconds)', () => {
    assert.match(problem({ dns: { minTtl: '2w' } }), /dns\.minTtl: got "2w", expected at most maxTtl \(1d\)/);
    assert.equal(validateConfig({ dns: { minTtl: '1d' } }).dns.minTtl, 86_400_000);
  });

  it('says which default a key the file leaves out had, when a check across keys faults it (it said "got nothing")', () => {
    assert.match(problem({ dns: { maxTtl: 0 } }), /dns\.minTtl: got nothing \(the default, 5s\), expected at most maxTtl \(0ms\)/);
  });

  it('takes store.sync normal (the default) or full, naming the key otherwise', () => {
    assert.equal(validateConfig({}).store.sync, 'normal');
    assert.equal(validateConfig({ store: { sync: 'full' } }).store.sync, 'full');
    assert.match(problem({ store: { sync: 'always' } }), /store\.sync: got "always"/);
  });

  it('names Infinity and NaN as what they are, not as null', () => {
    assert.match(problem({ dns: { tries: Number.POSITIVE_INFINITY } }), /dns\.tries: got Infinity,/);
    assert.match(problem({ limits: { concurrency: Number.NaN } }), /limits\.concurrency: got NaN,/);
  });

  it('names the whole path of every unknown key of a stage', () => {
    const message = problem({ policy: { stages: [{ name: 'sender-syntax', rejectCode: 550, rejectText: 'no' }] } });
    assert.match(message, /policy\.stages\.0\.rejectCode \(sender-syntax\): unknown key, expected one of [^;]+; policy\.stages\.0\.rejectText \(sender-syntax\): unknown key/);
  });

  it('takes a Redis key prefix of printable characters, naming the key when it is not', () => {
    assert.equal(validateConfig({}).store.keyPrefix, 'callout:');
    assert.equal(validateConfig({ store: { kind: 'redis', keyPrefix: 'mx1:' } }).store.keyPrefix, 'mx1:');
    assert.match(problem({ store: { keyPrefix: 'two words' } }), /store\.keyPrefix: got "two words", expected 1 to 64 printable ASCII characters without spaces/);
    assert.match(problem({ store: { keyPrefix: '' } }), /store\.keyPrefix/);
    assert.equal(validateConfig({ store: { keyPrefix: 'k'.repeat(64) } }).store.keyPrefix.length, 64, '64 characters are taken');
    assert.match(problem({ store: { keyPrefix: 'k'.repeat(65) } }), /store\.keyPrefix: got "k{65}", expected 1 to 64 printable ASCII characters/);
  });

  it('checks a Redis URL as the store will (config check names the key), showing its password masked', () => {
    const message = problem({ store: { kind: 'redis', url: 'redis://:s3cret@127.0.0.1:6379/0?keyPrefix=x:' } });
    assert.match(message, /^configuration: store\.url: got "redis:\/\/:\*\*\*@127\.0\.0\.1:6379\/0\?keyPrefix=x%3A", URL parameter keyPrefix is not one of username, password, db, family, tls/);
    assert.equal(message.includes('s3cret'), false, message);
    assert.match(problem({ store: { kind: 'redis', url: 'redis://127.0.0.1/abc' } }), /store\.url: .*the URL's path must be a database number/);
    assert.match(problem({ store: { kind: 'redis', url: 'http://127.0.0.1' } }), /store\.url: .*URL must be redis:\/\/, rediss:\/\/ or a unix socket path/);
    // The driver took the path's database and dropped db= without a word.
    assert.match(problem({ store: { kind: 'redis', url: 'redis://127.0.0.1:6379/1?db=2' } }), /^configuration: store\.url: got "redis:\/\/127\.0\.0\.1:6379\/1\?db=2", the database is given twice, as the path \/1 and as db=2,/);
    // One database written twice is no conflict: the driver connects to it either way.
    assert.equal(validateConfig({ store: { kind: 'redis', url: 'redis://127.0.0.1:6379/0?db=0' } }).store.url, 'redis://127.0.0.1:6379/0?db=0');
    // Only the store in use is checked: a URL left over beside a SQLite store stops nothing.
    assert.equal(validateConfig({ store: { kind: 'sqlite', url: 'http://127.0.0.1' } }).store.kind, 'sqlite');
    assert.equal(validateConfig({ store: { kind: 'redis', url: 'redis://u:p@127.0.0.1:6379/2?family=4' } }).store.url, 'redis://u:p@127.0.0.1:6379/2?family=4');
  });

  it('refuses policy workers with a memory store, naming the key', () => {
    assert.match(problem({ policy: { workers: 2 }, store: { kind: 'memory' } }), /policy\.workers: got 2, expected 1 with store\.kind memory/);
    assert.equal(validateConfig({ policy: { workers: 2 } }).policy.workers, 2);
  });

  it('takes the idle poll in whole microseconds up to 10 ms, 0 turning it off', () => {
    assert.match(problem({ policy: { idlePollMicros: -1 } }), /policy\.idlePollMicros: got -1, /);
    assert.match(problem({ policy: { idlePollMicros: 20_000 } }), /policy\.idlePollMicros: got 20000, /);
    assert.match(problem({ policy: { idlePollMicros: 2.5 } }), /policy\.idlePollMicros: got 2\.5, /);
    assert.equal(validateConfig({ policy: { idlePollMicros: 0 } }).policy.idlePollMicros, 0);
    assert.equal(validateConfig({}).policy.idlePollMicros, DEFAULT_IDLE_POLL_MICROS);
  });
});

describe('greylist durations', () => {
  const greylist = (options: Record<string, unknown>) => ({ policy: { stages: [{ name: 'greylist', ...options }] } });

  it('refuses a retry window no retry could pass and a max-age shorter than it, saying a bare number is seconds', () => {
    assert.match(problem(greylist({ retryWindow: 2, maxAge: '35d' })), /policy\.stages\.0\.retryWindow \(greylist\): got 2, expected longer than delay \(5m\): no retry could ever pass; a bare number is seconds/);
    assert.match(problem(greylist({ maxAge: '1d' })), /policy\.stages\.0\.maxAge \(greylist\): got "1d", expected at least retryWindow \(2d\)/);
    assert.match(problem(greylist({ maxAge: 0 })), /policy\.stages\.0\.maxAge \(greylist\): got 0, expected at least 1s$/);
    assert.doesNotThrow(() => validateConfig(greylist({ delay: '0s', retryWindow: '2d', maxAge: '35d' })));
    const both = problem(greylist({ ipv4Prefix: 'x', retryWindow: 2 }));
    assert.match(both, /policy\.stages\.0\.ipv4Prefix \(greylist\): /);
    assert.match(both, /policy\.stages\.0\.retryWindow \(greylist\): got 2, expected longer than delay/, 'one start reports every problem');
  });

  it('says which default a duration the entry leaves out had, when it is faulted against another (it said "got nothing")', () => {
    assert.match(problem(greylist({ delay: '3d' })), /policy\.stages\.0\.retryWindow \(greylist\): got nothing \(the default, 2d\), expected longer than delay \(3d\)/);
    assert.match(problem(greylist({ retryWindow: '40d' })), /policy\.stages\.0\.maxAge \(greylist\): got nothing \(the default, 5w\), expected at least retryWindow \(40d\)/);
  });
});

describe('tarpit limits', () => {
  const tarpit = (options: Record<string, unknown>) => ({ policy: { stages: [{ name: 'tarpit', ...options }] } });

  it('refuses a soft limit above the hard one, naming both keys and values (the soft limit never acted)', () => {
    assert.match(problem(tarpit({ perConnection: { soft: 30, hard: 20 } })), /policy\.stages\.0\.perConnection\.soft \(tarpit\): got 30, expected at most perConnection\.hard \(20\)/);
    assert.match(problem(tarpit({ perConnection: { hard: 5 } })), /policy\.stages\.0\.perConnection\.soft \(tarpit\): got nothing \(the default, 10\), expected at most perConnection\.hard \(5\)/);
    assert.match(problem(tarpit({ perClient: { soft: 60, hard: 50 } })), /policy\.stages\.0\.perClient\.soft \(tarpit\): got 60, expected at most perClient\.hard \(50\)/);
    assert.doesNotThrow(() => validateConfig(tarpit({ perConnection: { soft: 20, hard: 20 }, perClient: { soft: 0, hard: 1 } })));
  });

  it('refuses a hardEnhanced of another class than hardCode, naming both keys (550 with 4.7.0 was sent as 550 5.7.0)', () => {
    assert.match(problem(tarpit({ hardCode: 550, hardEnhanced: '4.7.0' })), /policy\.stages\.0\.hardEnhanced \(tarpit\): got "4\.7\.0", expected an enhanced status code of class 5, as hardCode \(550\) is/);
    assert.match(problem(tarpit({ hardEnhanced: '5.7.0' })), /policy\.stages\.0\.hardEnhanced \(tarpit\): got "5\.7\.0", expected an enhanced status code of class 4, as hardCode \(421\) is/, 'the default hardCode');
    assert.doesNotMatch(problem(tarpit({ hardCode: 550, hardEnhanced: '4.1' })), /as hardCode/, 'a malformed code is told only what it should look like');
    assert.doesNotThrow(() => validateConfig(tarpit({ hardCode: 554, hardEnhanced: '5.7.1' })));
    assert.doesNotThrow(() => validateConfig(tarpit({ hardCode: 450, hardEnhanced: '4.7.1' })));
  });

  it('refuses a sleep above maxSleep, naming both keys (every delay was maxSleep)', () => {
    assert.match(problem(tarpit({ sleep: '10s', maxSleep: '2s' })), /policy\.stages\.0\.sleep \(tarpit\): got "10s", expected at most maxSleep \(2s\)/);
    assert.match(problem(tarpit({ sleep: '6s' })), /policy\.stages\.0\.sleep \(tarpit\): got "6s", expected at most maxSleep \(5s\)/, 'the default maxSleep');
    assert.match(problem(tarpit({ maxSleep: '500ms' })), /policy\.stages\.0\.sleep \(tarpit\): got nothing \(the default, 1s\), expected at most maxSleep \(500ms\)/);
    assert.doesNotThrow(() => validateConfig(tarpit({ sleep: '3s', maxSleep: '3s' })));
  });
});

describe('receiver of the sender-callout and spf stages', () => {
  it('refuses an empty one alike, naming the key (sender-callout took it and wrote receiver="" in X-Callout-Result)', () => {
    for (const name of ['sender-callout', 'spf']) {
      assert.equal(problem({ policy: { stages: [{ name, receiver: '' }] } }), `configuration: policy.stages.0.receiver (${name}): got "", expected this host's name, not an empty string`, name);
      assert.doesNotThrow(() => validateConfig({ policy: { stages: [{ name, receiver: 'mx.example.org' }] } }), name);
    }
  });
});

describe('callout.sourceAddress', () => {
  it('is an IP address: a name made every callout end unreachable instead of stopping the start', () => {
    assert.match(problem({ callout: { sourceAddress: 'not-an-ip.example' } }), /callout\.sourceAddress: got "not-an-ip\.example", expected an IP address of this host/);
    assert.equal(validateConfig({ callout: { sourceAddress: '::1' } }).callout.sourceAddress, '::1');
  });
});

describe('store paths', () => {
  it('refuses an empty store path or data directory, and SQLite\'s :memory:, which keep nothing', () => {
    assert.match(problem({ store: { path: '' } }), /store\.path: got "", expected a file name/);
    assert.match(problem({ store: { path: ':memory:' } }), /store\.path: got ":memory:", expected a file; for no persistence at all use store\.kind: memory/);
    assert.match(problem({ dataDir: '' }), /dataDir: got "", expected a directory/);
  });
});

describe('policy.decisionTimeout', () => {
  it('is below the 100 s after which the policy server closes a request unanswered (Postfix gave up by then), said as a duration is written (it said "at most 99000 ms" of "120s")', () => {
    assert.match(problem({ policy: { decisionTimeout: '2m' } }), /policy\.decisionTimeout: got "2m", expected at most 99s \(below Postfix's smtpd_policy_service_timeout/);
    assert.match(problem({ policy: { decisionTimeout: '120s' } }), /policy\.decisionTimeout: got "120s", expected at most 99s /);
    assert.equal(validateConfig({ policy: { decisionTimeout: '99s' } }).policy.decisionTimeout, 99_000);
  });
});

describe('dns.servers', () => {
  it('names the key and each bad entry, where the resolver said only "dns server" after the start', () => {
    const message = problem({ dns: { servers: ['resolver.example', '192.0.2.53:0', '[192.0.2.53]:53'] } });
    assert.match(message, /dns\.servers\.0: got "resolver\.example", expected an IP address, optionally with :port/);
    assert.match(message, /dns\.servers\.1: got "192\.0\.2\.53:0", port must be 1\.\.65535/);
    assert.match(message, /dns\.servers\.2: got "\[192\.0\.2\.53\]:53", brackets must hold an IPv6 address/);
    assert.deepEqual(validateConfig({ dns: { servers: ['192.0.2.53', '192.0.2.54:5353', '2001:db8::53', '[2001:db8::53]:53'] } }).dns.servers, ['192.0.2.53', '192.0.2.54:5353', '2001:db8::53', '[2001:db8::53]:53']);
  });
});

describe('policy.socketMode', () => {
  it('says to quote the mode when YAML has read an unquoted 0660 as the number 660', () => {
    assert.match(problem({ policy: { socketMode: 660 } }), /policy\.socketMode: got 660, expected an octal mode in quotes, such as "0660"/);
    assert.match(problem({ policy: { socketMode: '0999' } }), /policy\.socketMode: got "0999", expected an octal mode of 3 or 4 digits/);
    assert.equal(validateConfig({ policy: { socketMode: '0600' } }).policy.socketMode, '0600');
  });
});

describe('metrics.socketMode', () => {
  it('is checked and defaulted as policy.socketMode is', () => {
    assert.match(problem({ metrics: { socketMode: 640 } }), /metrics\.socketMode: got 640, expected an octal mode in quotes, such as "0660"/);
    assert.match(problem({ metrics: { socketMode: '0999' } }), /metrics\.socketMode: got "0999", expected an octal mode of 3 or 4 digits/);
    assert.equal(validateConfig({ metrics: { socketMode: '0640' } }).metrics.socketMode, '0640');
    assert.equal(validateConfig({}).metrics.socketMode, '0660');
  });
});

describe('values of no accepted type', () => {
  it('say what a duration or a listen address is, where they said only "Invalid input" (YAML .nan, .inf, 1e309, true)', () => {
    for (const [value, shown] of [[Number.NaN, 'NaN'], [Number.POSITIVE_INFINITY, 'Infinity'], [true, 'true']] as const) {
      assert.match(problem({ dns: { timeout: value } }), new RegExp(`^configuration: dns\\.timeout: got ${shown}, expected a duration such as 30s, 5m, 2h, 7d, or a number of seconds$`));
      assert.match(problem({ cache: { tempfail: value } }), new RegExp(`^configuration: cache\\.tempfail: got ${shown}, expected a duration`));
    }
    assert.match(problem({ metrics: { listen: 10041 } }), /^configuration: metrics\.listen: got 10041, expected HOST:PORT, \[IPv6\]:PORT, an absolute UNIX socket path, or "" for none$/);
    assert.equal(validateConfig({ metrics: { listen: '' } }).metrics.listen, '');
  });

  it('quote a value that is no duration once (it read: got "5 min", "5 min" is not a duration)', () => {
    assert.equal(problem({ cache: { tempfail: '5 min' } }), 'configuration: cache.tempfail: got "5 min", expected a duration such as 30s, 5m, 2h, 7d, or a number of seconds');
    assert.equal(problem({ cache: { tempfail: -5 } }), 'configuration: cache.tempfail: got -5, expected a number of seconds, 0 or more');
    assert.equal(problem({ cache: { tempfail: `${'9'.repeat(30)}w` } }), `configuration: cache.tempfail: got "${'9'.repeat(30)}w", expected a shorter duration: callout keeps none longer than 285,000 years`);
  });

  it('say once what is wrong with a listen address: no port, or an IPv6 address and its port without brackets', () => {
    assert.equal(problem({ policy: { listen: '127.0.0.1' } }), 'configuration: policy.listen: got "127.0.0.1", expected HOST:PORT, [IPv6]:PORT or an absolute UNIX socket path (no port)');
    assert.equal(problem({ metrics: { listen: '::1:10041' } }), 'configuration: metrics.listen: got "::1:10041", expected HOST:PORT, [IPv6]:PORT or an absolute UNIX socket path (an IPv6 address with a port is written in brackets: [::1]:10041)');
  });
});

describe('callout.allowTargets', () => {
  it('names the key and each bad entry in the schema, so that `verify -c FILE` names the file (the engine said only the key)', () => {
    const message = problem({ callout: { allowTargets: ['127.0.0.0/8', 'mx.example.org', '10.1.2.3/8'] } });
    // The value once: the reason quoted it again (`got "x", expected an IP address or a network ("x": not an IPv4 or IPv6 address: "x")`).
    assert.equal(
      message,
      'configuration: callout.allowTargets.1: got "mx.example.org", expected an IPv4 or IPv6 address or network (192.0.2.0/24, 2001:db8::/32); ' +
        'callout.allowTargets.2: got "10.1.2.3/8", expected an IPv4 or IPv6 address or network (host bits set after the prefix: write the network, 10.0.0.0/8, or the address alone)',
    );
    assert.deepEqual(validateConfig({ callout: { allowTargets: ['10.0.0.0/8', '::1', '2001:db8::/32'] } }).callout.allowTargets, ['10.0.0.0/8', '::1', '2001:db8::/32']);
  });
});

describe('callout.randomLocalPart', () => {
  it('makes a plain ASCII local part around {random}: one no server takes made every accepted address unknown', () => {
    for (const template of ['probe {random}', 'a@{random}', 'a\r\nDATA {random}', '.{random}', 'é{random}', `${'x'.repeat(53)}{random}`]) {
      assert.match(problem({ callout: { randomLocalPart: template } }), /^configuration: callout\.randomLocalPart: got .*, expected the local part of an address around \{random\} \(/, JSON.stringify(template));
    }
    // Without {random} every probe asked one fixed address, which a catch-all test cannot be.
    assert.equal(problem({ callout: { randomLocalPart: 'callout-probe' } }), 'configuration: callout.randomLocalPart: got "callout-probe", expected a template with {random} in it, such as callout-{random}');
    for (const template of ['callout-{random}', '{random}', 'x.{random}+probe', `${'x'.repeat(52)}{random}`]) {
      assert.equal(validateConfig({ callout: { randomLocalPart: template } }).callout.randomLocalPart, template);
    }
  });
});

describe('callout.fallbackSender', () => {
  it('is an address, never the null sender it stands in for, while callout.sender may be the null sender', () => {
    for (const fallbackSender of ['<>', '']) {
      assert.match(problem({ callout: { fallbackSender } }), /^configuration: callout\.fallbackSender: got "(<>)?", expected an address: it stands in for the null sender when that is refused$/, JSON.stringify(fallbackSender));
    }
    assert.equal(validateConfig({ callout: { fallbackSender: '<verify@example.org>' } }).callout.fallbackSender, 'verify@example.org');
    assert.equal(validateConfig({ callout: { sender: '<>' } }).callout.sender, '');
    assert.match(problem({ callout: { sender: 'not an address' } }), /^configuration: callout\.sender: got "not an address", expected an address, or "" for the null sender \(/);
  });
});

describe('callout.helo', () => {
  it('refuses a name only this machine or its network can resolve, naming the key; takes a public one', () => {
    for (const helo of ['localhost', 'localhost.localdomain', 'mail.localdomain', 'mx.LOCAL', 'box.localhost']) {
      assert.match(problem({ callout: { helo } }), /callout\.helo: .*names no host outside this machine or its network/, helo);
    }
    for (const helo of ['mx.example.org', 'local.example.org', 'localhost-gw.example.net', 'verifier.callout.test']) {
      assert.equal(validateConfig({ callout: { helo } }).callout.helo, helo);
    }
  });

  it('is an RFC 5321 domain: labels of at most 63 octets, 253 in all, a last label that is not a number (an address is no name)', () => {
    const label = (n: number) => 'a'.repeat(n);
    const refused = [`${label(64)}.example.org`, `${label(63)}.${label(63)}.${label(63)}.${label(60)}.o`, '192.0.2.1', 'mx.example.123', 'mx', '-mx.example.org', 'mx.-example.org'];
    for (const helo of refused) assert.match(problem({ callout: { helo } }), /callout\.helo: .*expected a fully qualified domain name/, helo);
    for (const helo of [`${label(63)}.example.org`, `${label(63)}.${label(63)}.${label(63)}.${label(59)}.o`, 'mx1.example.org']) {
      assert.equal(validateConfig({ callout: { helo } }).callout.helo, helo, `${helo.length} characters`);
    }
  });

  it('says what to write for a name with a final dot or in Unicode, and refuses localhost once', () => {
    assert.equal(problem({ callout: { helo: 'mx.example.org.' } }), 'configuration: callout.helo: got "mx.example.org.", expected the name without its final dot, mx.example.org: EHLO sends the name as written');
    assert.equal(problem({ callout: { helo: 'mx.bücher.example' } }), 'configuration: callout.helo: got "mx.bücher.example", expected the name in A-labels (xn--...), as EHLO sends it: an EHLO name is ASCII (RFC 5321 §4.1.1.1)');
    assert.equal(problem({ callout: { helo: 'localhost' } }), 'configuration: callout.helo: got "localhost", names no host outside this machine or its network (localhost, .localdomain, .local): give the name other sites know this host by, such as mx.example.org');
    // Without its final dot still no name, or no final dot at all: not told to drop one.
    for (const helo of ['mx..example.org.', 'mx.example.org-']) {
      assert.equal(problem({ callout: { helo } }), `configuration: callout.helo: got "${helo}", expected a fully qualified domain name such as mx.example.org (RFC 5321 §4.1.1.1: EHLO names our host)`);
    }
    assert.equal(problem({ callout: { helo: 'mx.local.' } }), 'configuration: callout.helo: got "mx.local.", names no host outside this machine or its network (localhost, .localdomain, .local): give the name other sites know this host by, such as mx.example.org');
  });

  it('the host name callouts fall back to is announced only when announceable', () => {
    assert.equal(isAnnounceable('mx.example.org'), true);
    assert.equal(isAnnounceable('localhost.localdomain'), false);
    assert.equal(isAnnounceable('debian'), false);
  });
});

describe('enhanced status codes of the stages', () => {
  const cases: [Record<string, unknown>, string, string][] = [
    [{ name: 'sender-syntax' }, 'enhanced', '5'],
    [{ name: 'sender-callout' }, 'rejectEnhanced', '5'],
    [{ name: 'sender-callout' }, 'deferEnhanced', '4'],
    [{ name: 'recipient-callforward', hosts: ['127.0.0.1'] }, 'rejectEnhanced', '5'],
    [{ name: 'recipient-callforward', hosts: ['127.0.0.1'] }, 'deferEnhanced', '4'],
    [{ name: 'greylist' }, 'enhanced', '4'],
    [{ name: 'tarpit' }, 'hardEnhanced', '4 or 5'],
    [{ name: 'batv', domains: ['example.org'], keys: [{ keynum: 1, secret: 's' }] }, 'enhanced', '5'],
    [{ name: 'ratelimit', limits: [{ per: 'client', count: 'messages', max: 5 }] }, 'enhanced', '4'],
  ];

  it('say what a bad one should look like, not the pattern it missed (it said "Invalid string: must match pattern /^5\\.\\d{1,3}\\.\\d{1,3}$/")', () => {
    for (const [entry, key, klass] of cases) {
      const message = problem({ policy: { stages: [{ ...entry, [key]: '5.1' }] } });
      assert.match(message, new RegExp(`policy\\.stages\\.0\\.${key} \\(${String(entry.name)}\\): got "5\\.1", expected an enhanced status code of class ${klass}, such as [45]\\.7\\.1 \\(RFC 3463`), `${String(entry.name)} ${key}`);
      assert.doesNotMatch(message, /pattern/);
    }
    assert.doesNotThrow(() => validateConfig({ policy: { stages: [{ name: 'tarpit', hardCode: 550, hardEnhanced: '5.7.0' }, { name: 'greylist', enhanced: '4.7.1' }] } }));
  });
});

describe('the batv stage', () => {
  const batv = (options: Record<string, unknown>) => ({ policy: { stages: [{ name: 'batv', domains: ['example.org'], keys: [{ keynum: 1, secret: 's' }], ...options }] } });

  it('refuses a protected domain it could never match, naming the entry (it was accepted, and that domain\'s backscatter let through)', () => {
    for (const entry of ['example.org.', '@example.org', 'user@example.org', '*.example.org', 'not a domain!', '..example.org']) {
      assert.match(problem(batv({ domains: ['example.com', entry] })), new RegExp(`policy\\.stages\\.0\\.domains\\.1 \\(batv\\): got ${JSON.stringify(JSON.stringify(entry)).slice(1, -1).replace(/[.*]/g, '\\$&')}, expected a domain such as example\\.com, or \\.example\\.com for its subdomains`), entry);
    }
    for (const entry of ['example.com', '.example.com', 'EXAMPLE.com', 'bücher.example', '.xn--bcher-kva.example']) {
      assert.doesNotThrow(() => validateConfig(batv({ domains: [entry] })), entry);
    }
  });

  it('says what unsignedAllowedUntil should look like (it said "Invalid ISO datetime")', () => {
    assert.match(problem(batv({ unsignedAllowedUntil: '2026-07-01' })), /policy\.stages\.0\.unsignedAllowedUntil \(batv\): got "2026-07-01", expected a date and time with its offset, such as 2026-07-01T00:00:00Z/);
    assert.doesNotThrow(() => validateConfig(batv({ unsignedAllowedUntil: '2026-07-01T00:00:00+02:00' })));
  });

  it('never quotes a key\'s secret of the wrong type (YAML reads an all-digit secret as a number, and the message showed it)', () => {
    for (const secret of [84729301847, ['hunter2-secret'], '']) {
      const message = problem(batv({ keys: [{ keynum: 1, secret }] }));
      assert.match(message, /^configuration: policy\.stages\.0\.keys\.0\.secret \(batv\): got a value not shown \(a secret\), expected (text|at least 1 character)$/);
      assert.ok(!message.includes('84729301847') && !message.includes('hunter2'), message);
    }
  });

  it('never quotes a secret inside a value it quotes whole (a key with both secret and secretFile, keys written as a mapping)', () => {
    const both = problem(batv({ keys: [{ keynum: 1, secret: 'hunter2-secret', secretFile: '/etc/callout/batv.key' }] }));
    assert.equal(both, 'configuration: policy.stages.0.keys.0 (batv): got {"keynum":1,"secret":"***","secretFile":"/etc/callout/batv.key"}, expected exactly one of secret and secretFile');
    assert.equal(problem(batv({ keys: [{ keynum: 1, secret: '***' }] })), 'configuration: policy.stages.0.keys.0.secret (batv): got a value not shown (a secret), expected the secret, not *** as config print hides it: put the real secret back');
    const mapping = problem(batv({ keys: { keynum: 1, secret: 'hunter2-secret' } }));
    assert.equal(mapping, 'configuration: policy.stages.0.keys (batv): got {"keynum":1,"secret":"***"}, expected a list');
    const stages = problem({ policy: { stages: { name: 'batv', keys: [{ keynum: 1, secret: 'hunter2-secret' }] } } });
    assert.ok(!stages.includes('hunter2') && stages.includes('"secret":"***"'), `the secret masked in: ${stages}`);
    // A Redis URL where the store's mapping goes: its password too.
    assert.equal(problem({ store: 'redis://:hunter2@10.0.0.5:6379/0' }), 'configuration: store: got "redis://:***@10.0.0.5:6379/0", expected a mapping of keys (key: value lines)');
    assert.equal(problem({ store: [{ kind: 'redis', url: 'redis://:hunter2@10.0.0.5:6379/0' }] }), 'configuration: store: got [{"kind":"redis","url":"redis://:***@10.0.0.5:6379/0"}], expected a mapping of keys (key: value lines)', 'a store written as a list item');
    // A mistyped key of a secret, quoted in the refusal of the mapping it is in; a URL as a list item.
    const mistyped = problem(batv({ keys: [{ keynum: 1, Secret: 'hunter2-secret' }] }));
    assert.ok(!mistyped.includes('hunter2') && mistyped.includes('"Secret":"***"'), `the mistyped secret masked in: ${mistyped}`);
    const listed = problem({ store: { kind: 'redis', url: ['redis://:hunter2@10.0.0.5:6379/0'] } });
    assert.ok(!listed.includes('hunter2') && listed.includes('redis://:***@10.0.0.5'), `the password of a URL in a list masked in: ${listed}`);
  });

  it('refuses a relative secretFile: each command read it from the directory it started in, and serve, in / under systemd, did not find what config check found', () => {
    assert.equal(
      problem(batv({ keys: [{ keynum: 1, secretFile: 'batv.key' }] })),
      `configuration: policy.stages.0.keys.0.secretFile (batv): got "batv.key", ${ABSOLUTE_PATH_EXPECTED}`,
    );
    assert.doesNotThrow(() => validateConfig(batv({ keys: [{ keynum: 1, secretFile: '/etc/callout/batv.key' }] })));
  });
});

describe('every key', () => {
  // A value of another kind for each key (a mapping, text, a negative and a huge number, true,
  // lists): each refusal names the key's full path, a stage's with its index, and what it expects.
  const wrong: unknown[] = [{ x: 1 }, 'zz-not-it', -5, 1e12, true, [], ['not an entry']];
  const refusal = (raw: unknown) => {
    try {
      validateConfig(raw);
      return undefined;
    } catch (err) {
      assert.ok(err instanceof ConfigError, `a ConfigError, not ${String(err)}`);
      return err.message;
    }
  };

  it('of the configuration is named, with what it expects, when its value is refused', () => {
    for (const key of leaves(schemaKeys(configSchema))) {
      for (const value of wrong) {
        const message = refusal(setting(key, value));
        if (message === undefined) continue;
        assert.ok(message.startsWith(`configuration: ${key}`) && /: got .*expected/.test(message), `${key} = ${JSON.stringify(value)}: ${message}`);
      }
    }
  });

  it('of a stage is named, with the stage\'s index and what it expects, when its value is refused', () => {
    for (const definition of STAGE_DEFINITIONS) {
      for (const key of leaves(schemaKeys(definition.options))) {
        for (const value of wrong) {
          const entry = setting(key, value, { name: definition.name, ...STAGE_REQUIRED[definition.name] });
          const message = refusal({ policy: { stages: [{ name: 'postmaster' }, entry] } });
          if (message === undefined) continue;
          assert.ok(message.startsWith(`configuration: policy.stages.1.${key}`) && message.includes(` (${definition.name}): got `) && /: got .*expected/.test(message), `${definition.name} ${key} = ${JSON.stringify(value)}: ${message}`);
        }
      }
    }
  });
});
