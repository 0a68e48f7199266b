// Property tests of the Redis URL checks (store/redis-url): whatever the URL, checkRedisUrl
// answers a URL or a ConfigError, and neither its errors nor maskPassword ever show the
// password the driver would send, as ioredis reads it (WHATWG URL, then decodeURIComponent).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ConfigError } from '../../src/core/errors.js';
import { checkRedisUrl, maskPassword } from '../../src/store/redis-url.js';
import { validateConfig } from '../../src/config/schema.js';
import { elapsedMs } from '../support/fuzz.js';
// The driver's own URL reading, to show that a setting given twice with one value reaches it as that value.
import { parseURL } from 'ioredis/built/utils/index.js';

/** What the message refusing a scheme names itself. */
const SCHEMES_NAMED = 'URL must be redis://, rediss:// or a unix socket path';

/** The password ioredis takes from url, in the forms a log could show it: as written and decoded. */
function passwordsOf(url: string): string[] {
  const found: string[] = [];
  // What the URL shows besides its user part, as WHATWG writes it out (a host "127.0.0.1" and an
  // encoded DEL "%7F" after it hold the password "127.0.0.1%"): rightly shown in a message.
  let elsewhere = '';
  const query = url.indexOf('?');
  if (query !== -1) found.push(...new URLSearchParams(url.slice(query + 1)).getAll('password'));
  if (!url.startsWith('/')) {
    try {
      const parsed = new URL(url);
      elsewhere = `${parsed.host}${parsed.pathname}${parsed.search}${parsed.hash}`;
      found.push(parsed.password, ...parsed.searchParams.getAll('password'));
      found.push(decodeURIComponent(parsed.password));
    } catch {
      // Neither the driver nor the store takes a URL WHATWG cannot parse.
    }
  }
  // The other parameters as a message may quote them (encoded): a password that is also one of
  // them (user:[::1]@host?[::1]) is rightly shown as that parameter.
  const others = new URLSearchParams(query === -1 ? '' : url.slice(query + 1));
  others.delete('password');
  const shownParameters = others.toString();
  // Short ones could stand anywhere in a URL by chance, and one written twice (user:127.0.0.1@127.0.0.1) is also something else.
  // One that is a scheme ("?password=redis://") is rightly in the message naming the schemes.
  return found.filter((password) => password.length >= 6 && url.split(password).length <= 2 && !shownParameters.includes(password) && !elsewhere.includes(password) && !SCHEMES_NAMED.includes(password));
}

const piece = fc.oneof(
  fc.constantFrom('redis://', 'REDISS://', 'rediss://', '/run/redis.sock', 'user', ':', '@', '?', '#', '/', '%', '%4', '%41', 'password=', 'db=', '&', '127.0.0.1', '[::1]', ':6379', '/0', '/abc', 'secretsecret', 'Pa55w0rd!', 'enableOfflineQueue=false'),
  fc.string({ unit: 'binary', maxLength: 12 }),
);
const url = fc.oneof(
  fc.array(piece, { maxLength: 12 }).map((pieces) => pieces.join('')),
  // A user part that holds a password, itself of any pieces.
  fc.tuple(fc.constantFrom('redis://', 'rediss://', 'REDIS://'), fc.array(piece, { minLength: 1, maxLength: 4 }), fc.array(piece, { maxLength: 4 })).map(([scheme, password, rest]) => `${scheme}user:${password.join('')}@127.0.0.1${rest.join('')}`),
);

describe('redis URL fuzzed', () => {
  it('checkRedisUrl answers a URL or a ConfigError, and never shows the password', () => {
    fc.assert(
      fc.property(url, (text) => {
        const masked = maskPassword(text);
        for (const password of passwordsOf(text)) assert.ok(!masked.includes(password), `${masked} shows ${password}`);
        try {
          assert.equal(typeof checkRedisUrl(text), 'string');
        } catch (err) {
          if (!(err instanceof ConfigError)) throw err;
          for (const password of passwordsOf(text)) assert.ok(!err.message.includes(password), `${err.message} shows ${password}`);
        }
      }),
      // A password that is also a parameter's name, quoted (encoded) by the error message.
      { numRuns: 3000, examples: [['redis://user:[::1]@127.0.0.1?[::1]'], ['?password=redis://'], ['redis://user:127.0.0.1%@127.0.0.1\x7f']] },
    );
  });

  it('masks any password, written in the user part or as a parameter', () => {
    const password = fc.string({ unit: 'binary', minLength: 6, maxLength: 30 });
    fc.assert(
      fc.property(password, (secret) => {
        const encoded = encodeURIComponent(secret);
        for (const text of [`redis://user:${encoded}@127.0.0.1:6379/0`, `rediss://127.0.0.1?password=${encoded}`, `/run/redis.sock?db=1&password=${encoded}`]) {
          const masked = maskPassword(text);
          assert.ok(!masked.includes(secret) && !masked.includes(encoded), masked);
          assert.ok(masked.includes('***'), masked);
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('refuses a password that is the mask config print shows, in the user part or as a parameter', () => {
    // A socket path's password parameter too: config print masks it alike (it logged in with "***").
    for (const url of ['redis://:***@127.0.0.1:6379/0', 'redis://user:%2A%2A%2A@127.0.0.1', 'rediss://127.0.0.1?password=***', '/run/redis.sock?password=***', maskPassword('/run/redis.sock?db=1&password=s3cret')]) {
      assert.throws(() => checkRedisUrl(url), (err: unknown) => err instanceof ConfigError && /put the real password back/.test(err.message), url);
    }
    assert.equal(checkRedisUrl('redis://:****@127.0.0.1'), 'redis://:****@127.0.0.1');
  });

  it('stays linear on long URLs', () => {
    for (const text of [`redis://${'a:'.repeat(50_000)}@h`, `redis://h?${'password=x&'.repeat(20_000)}`, `/${'%'.repeat(100_000)}?db=${'1'.repeat(100_000)}`, `redis://h/${'0'.repeat(100_000)}x`]) {
      const ms = elapsedMs(() => {
        maskPassword(text);
        try {
          checkRedisUrl(text);
        } catch (err) {
          if (!(err instanceof ConfigError)) throw err;
        }
      });
      assert.ok(ms < 500, `${text.slice(0, 20)}: ${ms.toFixed(0)} ms`);
    }
  });
});

describe('redis URL checks', () => {
  it('refuses an empty or non-numeric database, in the path or as db=', () => {
    for (const url of ['redis://127.0.0.1:6379?db=', 'redis://127.0.0.1:6379/1abc', 'redis://127.0.0.1:6379/0/']) {
      assert.throws(() => checkRedisUrl(url), ConfigError, url);
    }
    assert.equal(checkRedisUrl('redis://127.0.0.1:6379/?db=3'), 'redis://127.0.0.1:6379/?db=3');
  });

  it('refuses what the driver would read one way of two where the two differ: a database in the path and db=, a user part and a credential parameter, a parameter twice', () => {
    // ioredis selects the path's database, takes the user part's name and password (an empty one
    // for the part left out) and the last of a parameter given twice, dropping the rest without a word.
    assert.throws(() => checkRedisUrl('redis://127.0.0.1:6379/1?db=2'), /^ConfigError: redis store: the database is given twice, as the path \/1 and as db=2, in redis:\/\/127\.0\.0\.1:6379\/1\?db=2: give it once/);
    assert.throws(() => checkRedisUrl('redis://user@127.0.0.1:6379?password=secretsecret'), (err: unknown) => err instanceof ConfigError && err.message.startsWith('redis store: the URL has a user part (before the @) and a different password=, in redis://user@127.0.0.1:6379?password=***') && !err.message.includes('secretsecret'));
    assert.throws(() => checkRedisUrl('redis://:secretsecret@127.0.0.1:6379?username=app'), (err: unknown) => err instanceof ConfigError && err.message.startsWith('redis store: the URL has a user part (before the @) and a different username=, in redis://:***@127.0.0.1:6379?username=app') && !err.message.includes('secretsecret'));
    assert.throws(() => checkRedisUrl('redis://app:secretsecret@127.0.0.1:6379?password=secretsecret&password=other'), /^ConfigError: redis store: the URL has a user part \(before the @\) and a different password=/, 'each value compared');
    for (const url of ['redis://127.0.0.1:6379?db=1&db=x', '/run/redis.sock?db=1&db=2', 'redis://127.0.0.1:6379?family=4&family=6', 'redis://127.0.0.1:6379/1?db=1&db=2']) {
      assert.throws(() => checkRedisUrl(url), /^ConfigError: redis store: URL parameter (db|family) is given twice, with different values: /, url);
    }
    assert.equal(checkRedisUrl('redis://127.0.0.1:6379?username=app&password=secretsecret&db=2'), 'redis://127.0.0.1:6379?username=app&password=secretsecret&db=2');
    assert.equal(checkRedisUrl('redis://app:secretsecret@127.0.0.1:6379/2'), 'redis://app:secretsecret@127.0.0.1:6379/2');
  });

  it('takes a setting given twice with one value, as the driver reads them (it connects to what both say)', () => {
    // Decoded as ioredis decodes them: the user part with decodeURIComponent, parameters as URLSearchParams.
    const same = [
      'redis://127.0.0.1:6379/0?db=0',
      'redis://127.0.0.1:6379/02?db=2',
      'redis://127.0.0.1:6379/3?db=3&family=4',
      'redis://:secretsecret@127.0.0.1:6379?password=secretsecret',
      'redis://app:p%40ss@127.0.0.1:6379?username=app&password=p%40ss',
      'redis://app%20one:x@127.0.0.1:6379?username=app+one',
      'redis://user@127.0.0.1:6379?password=',
      'redis://127.0.0.1:6379?db=1&db=1&family=6&family=6',
      '/run/redis.sock?db=4&db=4',
    ];
    for (const url of same) {
      assert.equal(checkRedisUrl(url), url, url);
      const driver = parseURL(url) as Record<string, unknown>;
      const parameters = new URLSearchParams(url.slice(url.indexOf('?') + 1));
      for (const name of ['username', 'password'] as const) {
        if (parameters.has(name)) assert.equal(driver[name], parameters.get(name), `${url}: the driver's ${name} is the parameter's`);
      }
      if (parameters.has('db')) assert.equal(Number(driver.db), Number(parameters.get('db')), `${url}: the driver's database is db='s`);
    }
  });

  it('gives the driver the scheme in lower case, so that REDISS:// still turns TLS on', () => {
    assert.equal(checkRedisUrl('REDISS://127.0.0.1:6380/0'), 'rediss://127.0.0.1:6380/0');
    assert.equal(checkRedisUrl('Redis://127.0.0.1:6379'), 'redis://127.0.0.1:6379');
  });

  it('refuses a URL parameter for an option the store sets itself', () => {
    assert.throws(() => checkRedisUrl('redis://127.0.0.1:6379?db=1', { db: 0 }), /URL parameter db is set by the store, not the URL/);
    assert.throws(() => checkRedisUrl('/run/redis.sock?family=6', { family: 4 }), /URL parameter family is set by the store/);
  });

  it('names an unparsable URL without a user part, which holds no password, and says what may be wrong', () => {
    assert.throws(() => checkRedisUrl('redis://127.0.0.1:99999/0'), /^ConfigError: redis store: unusable URL redis:\/\/127\.0\.0\.1:99999\/0: not a URL \(a port above 65535/);
    assert.equal(maskPassword('redis://127.0.0.1:99999/0?password=x'), 'redis://127.0.0.1:99999/0?password=***');
    assert.equal(maskPassword('redis://:secret@127.0.0.1:99999/0'), '(unparsable redis URL)');
  });

  it('never shows a password written in a URL with a mistyped scheme, in the refusal or in config check\'s "got"', () => {
    // Without "//" WHATWG reads no user part, but the administrator wrote the password there.
    for (const url of ['redis:/:hunter2pw@10.0.0.5:6379/0', 'redis:user:hunter2pw@10.0.0.5', ':hunter2pw@10.0.0.5:6379/0', 'redis//:hunter2pw@10.0.0.5:6379/0', 'http://:hunter2pw@10.0.0.5:6379/0']) {
      assert.ok(!maskPassword(url).includes('hunter2pw'), `maskPassword(${url}) = ${maskPassword(url)}`);
      assert.throws(() => checkRedisUrl(url), (err: unknown) => err instanceof ConfigError && !err.message.includes('hunter2pw'), url);
      // The schema quotes the value it refuses: store.url is masked as a URL whatever it holds.
      assert.throws(
        () => validateConfig({ store: { kind: 'redis', url } }),
        (err: unknown) => err instanceof ConfigError && /store\.url: got "/.test(err.message) && !err.message.includes('hunter2pw'),
        `config check showed the password of ${url}`,
      );
    }
    assert.equal(maskPassword('redis:/:hunter2pw@10.0.0.5:6379/0'), '(unparsable redis URL)');
    assert.equal(maskPassword('/run/redis.sock'), '/run/redis.sock');
  });

  it('refuses tls=false, which the driver reads as a TLS profile and so turns TLS on', () => {
    for (const url of ['redis://127.0.0.1:6379/0?tls=false', 'redis://127.0.0.1:6379?tls=OFF', '/run/redis.sock?tls=0', 'redis://127.0.0.1:6379?tls=no']) {
      assert.throws(() => checkRedisUrl(url), /URL parameter tls=\w+ turns TLS on .*leave tls out for no TLS/, url);
    }
    assert.equal(checkRedisUrl('redis://127.0.0.1:6379?tls=RedisCloudFixed'), 'redis://127.0.0.1:6379?tls=RedisCloudFixed');
  });

  it('refuses a family other than 4, 6 or 0, which Node cannot connect with', () => {
    for (const url of ['redis://127.0.0.1:6379?family=7', 'redis://127.0.0.1:6379?family=4x', '/run/redis.sock?family=']) {
      assert.throws(() => checkRedisUrl(url), /URL parameter family must be 4 or 6 \(or 0 for either\)/, url);
    }
    assert.equal(checkRedisUrl('redis://127.0.0.1:6379?family=6'), 'redis://127.0.0.1:6379?family=6');
  });
});
