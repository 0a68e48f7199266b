// store/redis-url: a store.url with white space around it is refused, naming the white space.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ConfigError } from '../../src/core/errors.js';
import { validateConfig } from '../../src/config/schema.js';
import { RedisStore } from '../../src/store/index.js';
import { startRedis, type RedisInstance } from '../support/redis.js';

let redis: RedisInstance;
before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis.stop();
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

describe('white space around store.url', () => {
  it('config check names it, before or after the URL, the URL shown with and without it', () => {
    assert.equal(refusal('redis://127.0.0.1:6379/0 '), 'callout.yaml: store.url: got "redis://127.0.0.1:6379/0 ", the URL "redis://127.0.0.1:6379/0" has white space after it (" "): remove it');
    // The scheme check said: got "redis://127.0.0.1:6379", URL must be redis://, ... got redis://127.0.0.1:6379
    assert.equal(refusal(' redis://127.0.0.1:6379'), 'callout.yaml: store.url: got " redis://127.0.0.1:6379", the URL "redis://127.0.0.1:6379" has white space before it (" "): remove it');
    assert.equal(refusal('\tredis://127.0.0.1:6379\n'), 'callout.yaml: store.url: got "\\tredis://127.0.0.1:6379\\n", the URL "redis://127.0.0.1:6379" has white space before and after it ("\\t", "\\n"): remove it');
  });

  it('keeps the password masked', () => {
    const message = refusal('redis://:hunter2secret@127.0.0.1:6379 ');
    assert.ok(!message.includes('hunter2secret'), `the password is not shown: ${message}`);
    assert.match(message, /the URL "redis:\/\/:\*\*\*@127\.0\.0\.1:6379" has white space after it/);
  });

  it('a socket path with a space after it is refused at open, not sent to connect() as a file that is not there', async () => {
    // The driver dropped the space from a redis:// URL but kept it in a path: "connect ENOENT /tmp/.../redis.sock ".
    await assert.rejects(RedisStore.open(`${redis.socketPath} `), (err: unknown) => err instanceof ConfigError && err.message === `redis store: the URL ${JSON.stringify(redis.socketPath)} has white space after it (" "): remove it`);
    const store = await RedisStore.open(redis.socketPath);
    await store.close();
  });
});
