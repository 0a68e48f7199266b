// The store of a one-shot command: an upgrade of an old SQLite schema is said on stderr, once,
// as the daemon logs it (the commands upgraded the daemon's file without a word).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { configuredStore, createResolver, createRuntime, daemonStateConfig, openCommandStore, schemaUpgradeLine } from '../../src/cli/runtime.js';
import { validateConfig } from '../../src/config/schema.js';
import type { Resolver } from '../../src/dns/types.js';
import { ManualClock } from '../support/manual-time.js';
import { writeVersion1Store } from '../support/sqlite-version-1.js';
import { startServeProcess } from '../support/serve-process.js';
import { usersOnly } from '../support/smtp-server.js';
import { mxZone, worldMaker } from '../verify/fixture.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'callout-cli-runtime-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const version = (path: string): unknown => {
  const db = new Database(path, { readonly: true });
  try {
    return db.pragma('user_version', { simple: true });
  } finally {
    db.close();
  }
};

describe('createResolver', () => {
  it('keeps DNS answers as dns.minTtl, dns.maxTtl and dns.negativeTtl say', async () => {
    const clock = new ManualClock();
    let asked = 0;
    const base = {
      a: async (name: string) => {
        asked++;
        return name.startsWith('gone.') ? { kind: 'nxdomain', ttl: 86_400 } : { kind: 'records', records: ['192.0.2.1'], ttl: name.startsWith('short.') ? 1 : 86_400 };
      },
    } as unknown as Resolver;
    const resolver = createResolver(validateConfig({ dns: { minTtl: '30s', maxTtl: '1h', negativeTtl: '10m' } }), clock, base);
    for (const name of ['short.test', 'long.test', 'gone.test']) await resolver.a(name);
    clock.advance(29_000);
    for (const name of ['short.test', 'long.test', 'gone.test']) await resolver.a(name);
    assert.equal(asked, 3, 'a TTL of 1 s kept for minTtl, 30 s');
    clock.advance(5 * 60_000);
    await resolver.a('gone.test');
    assert.equal(asked, 3, 'a negative answer still kept after 5 minutes: for negativeTtl, not for minTtl');
    clock.advance(10 * 60_000 - 5 * 60_000 - 29_000);
    await resolver.a('gone.test');
    assert.equal(asked, 4, 'a negative answer kept for negativeTtl, 10 minutes, not its day');
    clock.advance(60 * 60_000 - 10 * 60_000);
    await resolver.a('long.test');
    assert.equal(asked, 5, 'a day\'s TTL kept for maxTtl, an hour');
  });
});

describe('createRuntime', () => {
  const world = worldMaker();

  it('closes once the work still running has ended, within callout.timeouts.overall: a stale verdict\'s refresh is saved, not given up', async () => {
    // Each RCPT answered after 300 ms: the refresh is still running when close() is called.
    const { rcpt } = usersOnly(['alice']);
    const w = await world(mxZone({ 'a.test': '127.0.0.3' }), { '127.0.0.3': { rcpt: (arg, session) => ({ reply: rcpt!(arg, session) as string, delayMs: 300 }) } });
    const config = w.config({ dns: { servers: [w.dns.address], tries: 1 }, store: { kind: 'sqlite', path: join(dir, 'refresh.sqlite') }, cache: { addressPositiveRefresh: '0s' } });
    const first = await createRuntime(config, w.clock);
    const probed = await first.engine.verify('alice@a.test');
    w.clock.advance(60_000);
    const stale = await first.engine.verify('alice@a.test');
    assert.deepEqual([stale.source, stale.stale], ['address-cache', true], 'the second answer is the cached one, its refresh started');
    await first.close();
    const second = await createRuntime(config, w.clock);
    try {
      const cached = await second.engine.verify('alice@a.test');
      assert.equal(cached.checkedAt, probed.checkedAt + 60_000, 'the cache holds the refresh that was running at close(), not the first probe');
    } finally {
      await second.close();
    }
  });
});

describe('configuredStore', () => {
  it('opens the store the configuration names, with its sync mode or its key prefix', () => {
    assert.deepEqual(configuredStore(validateConfig({ dataDir: '/var/lib/x', store: { sync: 'full' } })), { kind: 'sqlite', path: '/var/lib/x/callout.sqlite', sync: 'full' });
    assert.deepEqual(configuredStore(validateConfig({ store: { kind: 'redis', url: 'redis://127.0.0.1:6379/1', keyPrefix: 'mx1:' } })), { kind: 'redis', url: 'redis://127.0.0.1:6379/1', keyPrefix: 'mx1:' });
    assert.deepEqual(configuredStore(validateConfig({ store: { kind: 'memory' } })), { kind: 'memory' });
  });
});

describe('openCommandStore', () => {
  it('says in one line on its stream that it upgraded a version 1 file, naming it; nothing for a new or a current file', async () => {
    const path = join(dir, 'old.sqlite');
    writeVersion1Store(path, [['grey:t:k', 'v', Date.now() + 86_400_000]]);
    const said = async (open: (err: PassThrough) => Promise<{ close(): Promise<void> }>) => {
      const err = new PassThrough();
      let text = '';
      err.on('data', (chunk: Buffer) => (text += chunk.toString()));
      await (await open(err)).close();
      return text;
    };
    assert.equal(await said((err) => openCommandStore({ kind: 'sqlite', path }, undefined, err)), `callout: store ${path}: schema upgraded from version 1 to 2\n`);
    assert.equal(version(path), 2);
    assert.equal(await said((err) => openCommandStore({ kind: 'sqlite', path }, undefined, err)), '', 'a current file: nothing');
    assert.equal(await said((err) => openCommandStore({ kind: 'sqlite', path: join(dir, 'new.sqlite') }, undefined, err)), '', 'a new file is no upgrade');
  });

  it('says why a file was not compacted after the upgrade, and how to get the room back', () => {
    assert.equal(schemaUpgradeLine('/var/lib/callout/callout.sqlite', { from: 1, to: 2, compacted: true }), 'callout: store /var/lib/callout/callout.sqlite: schema upgraded from version 1 to 2');
    assert.equal(
      schemaUpgradeLine('/var/lib/callout/callout.sqlite', { from: 1, to: 2, compacted: 'database or disk is full' }),
      'callout: store /var/lib/callout/callout.sqlite: schema upgraded from version 1 to 2; not compacted: database or disk is full (sqlite3 /var/lib/callout/callout.sqlite VACUUM, with the daemon stopped, gives the pages back)',
    );
  });

  it('is how greylist, bounce and verify --cache open their store (list: one that must exist): each says it on stderr', async () => {
    const callout = async (args: string[]) => {
      try {
        const { stderr } = await promisify(execFile)(process.execPath, ['--import', 'tsx', '--import', './test/support/loopback-guard.ts', 'src/cli/main.ts', ...args], { cwd: ROOT });
        return stderr;
      } catch (err) {
        // verify exits 1 for an invalid address; its stderr is what is checked.
        return (err as { stderr: string }).stderr;
      }
    };
    const old = (name: string) => {
      mkdirSync(join(dir, name));
      const path = join(dir, name, 'callout.sqlite');
      writeVersion1Store(path, []);
      return path;
    };
    const greylist = old('greylist');
    const bounce = old('bounce');
    const verify = old('verify');
    const cases: Array<[string, string[]]> = [
      [greylist, ['greylist', 'list', '--data-dir', join(dir, 'greylist')]],
      [bounce, ['bounce', 'list', '--store', bounce]],
      [verify, ['verify', '--cache', verify, '--helo', 'verifier.callout.test', '--dns-server', '127.0.0.1:9', 'not an address']],
    ];
    for (const [path, args] of cases) {
      const stderr = await callout(args);
      assert.equal(stderr.split('\n').filter((line) => line.includes('schema upgraded')).join('\n'), `callout: store ${path}: schema upgraded from version 1 to 2`, `${args[0]}: ${stderr}`);
      assert.equal(version(path), 2, args[0]);
    }
  });
});

describe('--data-dir', () => {
  it('where it places no store (a Redis store, an absolute store.path) is said on stderr, and the command goes on: it was ignored without a word', () => {
    const config = (name: string, yaml: string) => {
      const path = join(dir, name);
      writeFileSync(path, yaml);
      return path;
    };
    const said = (run: (err: PassThrough) => void) => {
      const err = new PassThrough();
      let text = '';
      err.on('data', (chunk: Buffer) => (text += chunk.toString()));
      run(err);
      return text;
    };
    const dataDir = join(dir, 'unused-data-dir');
    const redis = config('redis.yaml', 'store: { kind: redis, url: "redis://127.0.0.1:6379/0" }\n');
    assert.equal(
      said((err) => assert.equal(daemonStateConfig({ config: redis, dataDir }, 'the greylist', err).store.kind, 'redis')),
      'callout: warning: --data-dir has no effect: the store is redis (store.kind), which keeps no file in the data directory; leave --data-dir out\n',
    );
    const absolute = config('absolute.yaml', `store: { kind: sqlite, path: ${join(dir, 'elsewhere.sqlite')} }\n`);
    assert.equal(
      said((err) => assert.equal(daemonStateConfig({ config: absolute, dataDir }, 'the suppression list', err).store.path, join(dir, 'elsewhere.sqlite'))),
      `callout: warning: --data-dir has no effect: the store's file ${join(dir, 'elsewhere.sqlite')} is an absolute path (store.path), which the data directory does not place; leave --data-dir out\n`,
    );
    const relative = config('relative.yaml', 'store: { kind: sqlite, path: state.sqlite }\n');
    assert.equal(said((err) => assert.equal(daemonStateConfig({ config: relative, dataDir }, 'the greylist', err).dataDir, dataDir)), '', 'it places this store: nothing to say');
    assert.equal(said((err) => daemonStateConfig({ config: redis }, 'the greylist', err)), '', 'no --data-dir, nothing to say');
  });

  it('serve starts with it, and logs one warning naming it (not one per policy worker)', async () => {
    const unused = `--data-dir has no effect: the store's file ${join(dir, 'cache.sqlite')} is an absolute path (--cache), which the data directory does not place; leave --data-dir out`;
    const args = ['--listen', '127.0.0.1:0', '--metrics', '', '--helo', 'verifier.callout.test', '--dns-server', '127.0.0.1:1', '--cache', join(dir, 'cache.sqlite'), '--data-dir', join(dir, 'unused-data-dir')];
    for (const [extra, started] of [[[], 'callout serve started'], [['--workers', '2'], 'policy workers started']] as const) {
      const serve = await startServeProcess([...args, ...extra], (line) => line.msg === started);
      try {
        assert.deepEqual(
          serve.logs.filter((line) => line.flag !== undefined).map(({ level, flag, msg }) => ({ level, flag, msg })),
          [{ level: 40, flag: '--data-dir', msg: unused }],
          `${extra.join(' ')}: ${serve.stderr()}`,
        );
      } finally {
        assert.deepEqual(await serve.stop('SIGTERM'), { code: 0, signal: null }, serve.stderr());
      }
    }
  });
});
