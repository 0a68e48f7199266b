// store/redis-url: white space after a redis:// or rediss:// URL is dropped, as the driver
// dropped it before it was checked (a quoted value, a YAML block scalar's line break); white
// space before a URL, or after a socket path, is refused, naming it.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parse } from 'yaml';
import { loadConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/core/errors.js';
import { validateConfig } from '../../src/config/schema.js';
import { RedisStore } from '../../src/store/index.js';
import { checkRedisUrl, maskPassword } from '../../src/store/redis-url.js';
import { callout } from '../support/cli.js';
import { startRedis, type RedisInstance } from '../support/redis.js';

let redis: RedisInstance;
const dir = mkdtempSync(join(tmpdir(), 'callout-redis-url-space-'));
before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis.stop();
  rmSync(dir, { recursive: true, force: true });
});

function refusal(url: string): string {
  try {
    validateConfig({ store: { kind: 'redis', url } }, 'callout.yaml');
  } catch (err) {
    assert.ok(err instanceof ConfigError, `a ConfigError for ${JSON.stringify(url)}: ${String(err)}`);
    return err.message;
  }
  assert.fail(`${JSON.stringify(url)} was taken`);
}

/** A configuration file whose store.url is written as `urlLines` (after `url:`). */
function configFile(name: string, urlLines: string): string {
  const path = join(dir, name);
  writeFileSync(path, `store:\n  kind: redis\n  url: ${urlLines}`);
  return path;
}

describe('white space after a redis:// URL', () => {
  it('is no part of the URL: config check takes it, quoted or as a block scalar\'s line break, in any scheme case (regression: refused after an upgrade, exit 78)', () => {
    for (const url of ['redis://127.0.0.1:6379/0 ', 'redis://127.0.0.1:6379/0\n', 'rediss://127.0.0.1:6379/0\t \r\n', 'REDIS://127.0.0.1:6379?db=1 ', 'redis://127.0.0.1:6379/0\u00a0']) {
      assert.doesNotThrow(() => validateConfig({ store: { kind: 'redis', url } }), `${JSON.stringify(url)} taken`);
      assert.equal(checkRedisUrl(url), url.replace(/^REDIS/, 'redis').trimEnd(), `${JSON.stringify(url)} given to the driver without the white space`);
    }
    // `url: |` keeps the value's last line break, `url: >` too; both read as the URL.
    for (const [name, written] of [['literal.yaml', '|\n    redis://127.0.0.1:6379/0\n'], ['folded.yaml', '>\n    redis://127.0.0.1:6379/0\n'], ['quoted.yaml', '"redis://127.0.0.1:6379/0 "\n']] as const) {
      const config = loadConfig(configFile(name, written));
      assert.match(config.store.url, /^redis:\/\/127\.0\.0\.1:6379\/0\s+$/, `${name}: the white space is in the value read`);
    }
  });

  it('is left out of the URL shown: masked, in config print and in the store\'s own name', async () => {
    assert.equal(maskPassword('redis://:hunter2secret@127.0.0.1:6379/0 \n'), 'redis://:***@127.0.0.1:6379/0');
    assert.equal(maskPassword('redis://127.0.0.1:6379?password=hunter2secret\n'), 'redis://127.0.0.1:6379?password=***');
    const { code, stdout, stderr } = await callout(['config', 'print', '--config', configFile('print.yaml', '|\n    redis://:hunter2secret@127.0.0.1:6379/0\n')]);
    assert.equal(code, 0, stderr);
    assert.equal((parse(stdout) as { store: { url: string } }).store.url, 'redis://:***@127.0.0.1:6379/0', stdout);
    const check = await callout(['config', 'check', configFile('check.yaml', '>\n    redis://127.0.0.1:6379/0\n')]);
    assert.equal(check.code, 0, `config check: ${check.stdout}${check.stderr}`);
  });

  it('the store connects with it, and names itself without it', async () => {
    const store = await RedisStore.open(`${redis.url} \n`);
    try {
      assert.equal(store.url, redis.url, 'the store\'s name, in its logs and errors');
      await store.set('space', 'kept', 60_000);
      assert.equal((await store.get('space'))?.value, 'kept', 'the store answers');
    } finally {
      await store.close();
    }
  });
});

describe('white space that is refused', () => {
  it('before a URL: config check names it, the URL shown with and without it', () => {
    // The scheme check said: got "redis://127.0.0.1:6379", URL must be redis://, ... got redis://127.0.0.1:6379
    assert.equal(refusal(' redis://127.0.0.1:6379'), 'callout.yaml: store.url: got " redis://127.0.0.1:6379", the URL "redis://127.0.0.1:6379" has white space before it (" "): remove it');
    assert.equal(refusal('\tredis://127.0.0.1:6379\n'), 'callout.yaml: store.url: got "\\tredis://127.0.0.1:6379\\n", the URL "redis://127.0.0.1:6379" has white space before and after it ("\\t", "\\n"): remove it');
  });

  it('keeps the password masked', () => {
    const message = refusal(' redis://:hunter2secret@127.0.0.1:6379');
    assert.ok(!message.includes('hunter2secret'), `the password is not shown: ${message}`);
    assert.match(message, /the URL "redis:\/\/:\*\*\*@127\.0\.0\.1:6379" has white space before it/);
  });

  it('after a socket path: config check and open refuse it, rather than connect() to a file that is not there', async () => {
    // The driver kept the space in a path: "connect ENOENT /tmp/.../redis.sock ".
    assert.equal(refusal(`${redis.socketPath}\n`), `callout.yaml: store.url: got ${JSON.stringify(`${redis.socketPath}\n`)}, the URL ${JSON.stringify(redis.socketPath)} has white space after it ("\\n"): remove it`);
    await assert.rejects(RedisStore.open(`${redis.socketPath} `), (err: unknown) => err instanceof ConfigError && err.message === `redis store: the URL ${JSON.stringify(redis.socketPath)} has white space after it (" "): remove it`);
    await assert.rejects(RedisStore.open(`${redis.socketPath}?db=0 `), (err: unknown) => err instanceof ConfigError && err.message.endsWith('has white space after it (" "): remove it'));
    const store = await RedisStore.open(redis.socketPath);
    await store.close();
  });
});
