// The catch-all probe met with a 4xx (a greylister, an exchanger's own verification in progress):
// remembered on the domain record for cache.greylistRetry, so that the domain's other senders
// cost one RCPT each, not two, then asked again with the same random local part, which is what
// lets a greylister pass it. Real loopback DNS and SMTP servers, time moved by hand.
import { describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { MemoryStore } from '../../src/store/memory.js';
import { SqliteStore } from '../../src/store/sqlite.js';
import { RedisStore } from '../../src/store/redis.js';
import { domainKey } from '../../src/verify/cache.js';
import type { Store } from '../../src/store/types.js';
import { pathOf, startSmtpServer, type SmtpScript } from '../support/smtp-server.js';
import { startRedis } from '../support/redis.js';
import type { ManualClock } from '../support/manual-time.js';
import { mxZone, worldMaker, type World } from './fixture.js';

const make = worldMaker();
const MINUTE = 60_000;
const GREYLIST_RETRY = 5 * MINUTE;

const RANDOM = /^RCPT TO:<(callout-[a-z0-9]{12})@/i;

/** The RCPT commands the exchanger at host got, in order. */
function rcpts(w: World, host: string): string[] {
  return w.commands(host).filter((c) => c.startsWith('RCPT '));
}

/** The random local parts the exchanger at host was asked, in order. */
function randomNames(w: World, host: string): string[] {
  return rcpts(w, host).flatMap((c) => RANDOM.exec(c)?.[1] ?? []);
}

/** Real users accepted; every unknown local part deferred, always (unknown_local_recipient_reject_code = 450). */
function defersUnknown(users: string[]): Partial<SmtpScript> {
  return {
    rcpt: (arg) => {
      const path = pathOf(arg);
      return users.includes(path.split('@')[0]!) ? '250 2.1.5 Ok' : `450 4.7.1 <${path}>: Recipient address rejected: Greylisted, see https://postgrey.schweikert.ch/help/`;
    },
  };
}

/**
 * Real users accepted; an unknown local part greylisted by triplet (one sender, one client: by
 * recipient) until it is retried `delayMs` after it was first seen, on the world's clock, then
 * refused as unknown, as a greylister in front of recipient verification does.
 */
function greylistsUnknown(users: string[], delayMs: number, clock: () => ManualClock): Partial<SmtpScript> {
  const firstSeen = new Map<string, number>();
  return {
    rcpt: (arg) => {
      const path = pathOf(arg).toLowerCase();
      if (users.includes(path.split('@')[0]!)) return '250 2.1.5 Ok';
      const now = clock().now();
      const seen = firstSeen.get(path) ?? now;
      firstSeen.set(path, seen);
      if (now - seen < delayMs) return `450 4.7.1 <${path}>: Recipient address rejected: Greylisted, try again in ${Math.ceil((seen + delayMs - now) / 1000)} s`;
      return `550 5.1.1 <${path}>: Recipient address rejected: User unknown in local recipient table`;
    },
  };
}

describe('catch-all probe deferred with a 4xx', () => {
  it('the second sender\'s callout sends one RCPT, not two; after cache.greylistRetry the probe runs again; the verdicts are those of an inconclusive probe', async () => {
    const w = await make(mxZone({ 'grey.test': '127.0.0.81' }), { '127.0.0.81': defersUnknown(['alice', 'bob', 'carol', 'dave']) });
    // A connection per callout, so that the commands below are each callout's own: on a reused
    // connection a 4xx makes the callout run again on a new one (verify/probe), the random RCPT twice.
    const engine = w.engine({ callout: { connectionCache: { enabled: false } } });
    const first = await engine.verify('alice@grey.test');
    assert.deepEqual([first.verdict, first.reason, first.catchAll], ['unknown', 'catch-all-unknown', 'inconclusive'], first.description);
    assert.equal(rcpts(w, '127.0.0.81').length, 2, 'the first callout asks the random local part and the address');

    w.clock.advance(GREYLIST_RETRY - 1);
    const second = await engine.verify('bob@grey.test');
    assert.deepEqual([second.verdict, second.reason, second.catchAll, second.source], ['unknown', 'catch-all-unknown', 'inconclusive', 'probe'], second.description);
    assert.match(second.description, /answered RCPT TO:<bob@grey\.test> with 250 2\.1\.5 Ok, but the catch-all probe got no definite answer \(remembered for the domain: a 450 to the random local part\)$/);
    assert.deepEqual(rcpts(w, '127.0.0.81').slice(2), ['RCPT TO:<bob@grey.test>'], 'the second callout asks the address alone');

    w.clock.advance(1);
    const third = await engine.verify('carol@grey.test');
    assert.deepEqual([third.verdict, third.reason, third.catchAll], ['unknown', 'catch-all-unknown', 'inconclusive'], third.description);
    assert.doesNotMatch(third.description, /remembered/, 'asked, not remembered');
    const names = randomNames(w, '127.0.0.81');
    assert.equal(names.length, 2, 'after cache.greylistRetry the random local part is asked again');
    assert.equal(names[1], names[0], 'the same one: a greylister passes only a triplet it has seen');
    assert.deepEqual(rcpts(w, '127.0.0.81').slice(3).map((c) => c.replace(RANDOM, 'RCPT TO:<R@')), ['RCPT TO:<R@grey.test>', 'RCPT TO:<carol@grey.test>']);

    // Asked again, the retry time starts anew: the next sender costs one RCPT again.
    const fourth = await engine.verify('dave@grey.test');
    assert.deepEqual([fourth.verdict, fourth.reason, fourth.catchAll], ['unknown', 'catch-all-unknown', 'inconclusive'], fourth.description);
    assert.deepEqual(rcpts(w, '127.0.0.81').slice(5), ['RCPT TO:<dave@grey.test>']);
  });

  it('an unknown address still gets its 5xx, and a definite answer is not cut short: the same verdicts as with the probe asked', async () => {
    const w = await make(mxZone({ 'grey2.test': '127.0.0.82' }), {
      '127.0.0.82': { rcpt: (arg) => (RANDOM.test(`RCPT ${arg}`) ? '450 4.2.0 Greylisted' : pathOf(arg).startsWith('alice@') ? '250 2.1.5 Ok' : '550 5.1.1 User unknown') },
    });
    const engine = w.engine();
    await engine.verify('alice@grey2.test');
    const nobody = await engine.verify('nobody@grey2.test');
    assert.deepEqual([nobody.verdict, nobody.reason, nobody.catchAll], ['undeliverable', 'rejected-at-rcpt', 'inconclusive'], nobody.description);
    assert.equal(randomNames(w, '127.0.0.82').length, 1);
  });

  it('a greylister passes the same random local part at the retry: the catch-all question gets its answer, and an accepted address is deliverable', async (t: TestContext) => {
    const w: World = await make(mxZone({ 'triplet.test': '127.0.0.83' }), { '127.0.0.83': greylistsUnknown(['alice', 'bob', 'carol'], GREYLIST_RETRY, () => w.clock) });
    const engine = w.engine();
    const first = await engine.verify('alice@triplet.test');
    assert.deepEqual([first.verdict, first.reason], ['unknown', 'catch-all-unknown'], first.description);
    w.clock.advance(GREYLIST_RETRY);
    const retried = await engine.verify('bob@triplet.test');
    assert.deepEqual([retried.verdict, retried.reason, retried.catchAll], ['deliverable', 'accepted', 'refused'], retried.description);
    const names = randomNames(w, '127.0.0.83');
    assert.deepEqual(names, [names[0], names[0]], 'asked twice, by the same name');
    // The answer is a catch-all record like any other: no random probe for cache.domainPositive.
    const later = await engine.verify('carol@triplet.test');
    assert.deepEqual([later.verdict, later.catchAll], ['deliverable', 'refused'], later.description);
    assert.equal(randomNames(w, '127.0.0.83').length, 2);
    t.diagnostic(`the exchanger saw: ${rcpts(w, '127.0.0.83').join(' | ')}`);
  });

  it('a random local part is not asked again once it is cache.domainNegative old: the next retry asks a new one', async () => {
    const w = await make(mxZone({ 'old.test': '127.0.0.84' }), { '127.0.0.84': defersUnknown(['alice']) });
    const engine = w.engine({ cache: { tempfail: '0s' } });
    await engine.verify('alice@old.test');
    for (let at = GREYLIST_RETRY; at < 3 * 60 * MINUTE; at += GREYLIST_RETRY) {
      w.clock.advance(GREYLIST_RETRY);
      await engine.verify('alice@old.test');
    }
    const names = randomNames(w, '127.0.0.84');
    assert.equal(new Set(names).size, 1, `one name for 3 h: ${names.length} retries`);
    w.clock.advance(GREYLIST_RETRY + 1);
    await engine.verify('alice@old.test');
    const after = randomNames(w, '127.0.0.84');
    assert.equal(after.length, names.length + 1);
    assert.notEqual(after.at(-1), names[0], 'a new name after cache.domainNegative (3 h)');
  });

  it('concurrent callouts of the domain: one asks the random local part, the others wait for its turn and ask their addresses alone', async () => {
    const users = ['alice', 'bob', 'carol', 'dave'];
    const w = await make(mxZone({ 'busy.test': '127.0.0.85' }), { '127.0.0.85': defersUnknown(users) });
    const engine = w.engine();
    const results = await Promise.all(users.map((user) => engine.verify(`${user}@busy.test`)));
    assert.deepEqual(results.map((r) => [r.verdict, r.catchAll]), users.map(() => ['unknown', 'inconclusive']));
    assert.equal(randomNames(w, '127.0.0.85').length, 1);
    assert.equal(rcpts(w, '127.0.0.85').length, 5, rcpts(w, '127.0.0.85').join(' | '));
    // At the retry time they take turns again: one retry, not one per sender.
    w.clock.advance(GREYLIST_RETRY);
    const retried = await Promise.all(users.map((user) => engine.verify(`${user}@busy.test`)));
    assert.deepEqual(retried.map((r) => [r.verdict, r.catchAll]), users.map(() => ['unknown', 'inconclusive']));
    assert.equal(randomNames(w, '127.0.0.85').length, 2, rcpts(w, '127.0.0.85').join(' | '));
  });

  it('a refusal of us (5xx) at the random local part is no 4xx: not remembered, the next callout asks it again', async () => {
    const w = await make(mxZone({ 'policy.test': '127.0.0.92' }), {
      '127.0.0.92': { rcpt: (arg) => (RANDOM.test(`RCPT ${arg}`) ? '554 5.7.1 Client host rejected: blocked' : '250 2.1.5 Ok') },
    });
    const engine = w.engine();
    for (const user of ['alice', 'bob']) {
      const r = await engine.verify(`${user}@policy.test`);
      assert.deepEqual([r.verdict, r.reason, r.catchAll], ['unknown', 'catch-all-unknown', 'inconclusive'], r.description);
    }
    assert.equal(randomNames(w, '127.0.0.92').length, 2);
  });

  it('a 4xx at a backup exchanger is not remembered: the primary, back, is asked the random local part', async () => {
    const w = await make(mxZone({ 'backup.test': ['127.0.0.86', '127.0.0.87'] }), {
      '127.0.0.86': { rcpt: (arg) => (pathOf(arg).startsWith('alice@') || pathOf(arg).startsWith('bob@') ? '250 2.1.5 Ok' : '550 5.1.1 User unknown') },
      '127.0.0.87': defersUnknown(['alice', 'bob']),
    });
    const primary = w.smtp.get('127.0.0.86')!;
    const port = primary.port;
    await primary.close();
    const engine = w.engine();
    const during = await engine.verify('alice@backup.test');
    assert.equal(during.attempts.at(-1)?.address, '127.0.0.87');
    assert.deepEqual([during.verdict, during.catchAll], ['unknown', 'inconclusive'], during.description);
    const back = await startSmtpServer({ host: '127.0.0.86', port, script: { rcpt: (arg) => (pathOf(arg).startsWith('bob@') ? '250 2.1.5 Ok' : '550 5.1.1 User unknown') } });
    try {
      const after = await engine.verify('bob@backup.test');
      assert.deepEqual([after.verdict, after.catchAll], ['deliverable', 'refused'], after.description);
    } finally {
      await engine.idle();
      await back.close();
    }
  });

  it('with the random probe turned off, a remembered 4xx changes no verdict', async () => {
    const w = await make(mxZone({ 'off.test': '127.0.0.88' }), { '127.0.0.88': defersUnknown(['alice', 'bob']) });
    const shared = new MemoryStore({ clock: w.clock });
    await w.engine({}, shared).verify('alice@off.test');
    const r = await w.engine({ callout: { randomProbe: false } }, shared).verify('bob@off.test');
    assert.deepEqual([r.verdict, r.reason, r.catchAll], ['deliverable', 'accepted', 'not-run'], r.description);
  });
});

describe('catch-all deferral records in the shared stores', () => {
  /** A record as the previous release wrote it (it knew only accepted and refused). */
  const previousRefused = JSON.stringify({ state: 'refused', reason: 'catch-all', description: 'mx1.prev.test [127.0.0.89] refuses unknown local parts', reply: { stage: 'rcpt', code: 550, enhanced: '5.1.1', text: 'User unknown' }, at: Date.UTC(2026, 0, 1) });

  async function sharedStores(t: TestContext, w: World): Promise<Array<{ kind: string; open: () => Promise<Store> }>> {
    const dir = mkdtempSync(join(tmpdir(), 'callout-catchall-'));
    const redis = await startRedis();
    const opened: Store[] = [];
    t.after(async () => {
      await Promise.all(opened.map((s) => s.close().catch(() => undefined)));
      await redis.stop();
      rmSync(dir, { recursive: true, force: true });
    });
    const track = async (store: Promise<Store>) => {
      const s = await store;
      opened.push(s);
      return s;
    };
    return [
      { kind: 'SQLite', open: () => track(SqliteStore.open(join(dir, 'cache.sqlite'), { clock: w.clock })) },
      { kind: 'Redis', open: () => track(RedisStore.open(redis.url, { clock: w.clock })) },
    ];
  }

  it('another process on the store (Redis), or the daemon restarted (SQLite), skips the random probe too; a record of the previous release is read as before', async (t) => {
    const w = await make(mxZone({ 'shared.test': '127.0.0.89', 'prev.test': '127.0.0.90' }), {
      '127.0.0.89': defersUnknown(['alice', 'bob', 'carol']),
      '127.0.0.90': defersUnknown(['alice']),
    });
    for (const { kind, open } of await sharedStores(t, w)) {
      const before = rcpts(w, '127.0.0.89').length;
      const first = await open();
      const r1 = await w.engine({ cache: { tempfail: '0s' } }, first).verify('alice@shared.test');
      assert.equal(r1.catchAll, 'inconclusive', `${kind}: ${r1.description}`);
      const other = kind === 'SQLite' ? (await first.close(), await open()) : await open();
      const r2 = await w.engine({ cache: { tempfail: '0s' } }, other).verify('bob@shared.test');
      assert.deepEqual([r2.verdict, r2.reason, r2.catchAll], ['unknown', 'catch-all-unknown', 'inconclusive'], `${kind}: ${r2.description}`);
      assert.deepEqual(rcpts(w, '127.0.0.89').slice(before + 2), ['RCPT TO:<bob@shared.test>'], `${kind}: the other engine asks the address alone`);
      // The previous release's record: a refused catch-all, read and used.
      await other.set(domainKey('prev.test', 'catchall'), previousRefused, 60 * MINUTE);
      const prev = await w.engine({}, other).verify('alice@prev.test');
      assert.deepEqual([prev.verdict, prev.catchAll], ['deliverable', 'refused'], `${kind}: ${prev.description}`);
      assert.equal(randomNames(w, '127.0.0.90').length, 0, `${kind}: no random probe`);
    }
  });

  it('the stored record: state inconclusive at dom:DOMAIN:catchall with the local part, its first asking and the retry time, kept cache.domainNegative', async (t) => {
    const w = await make(mxZone({ 'rec.test': '127.0.0.91' }), { '127.0.0.91': defersUnknown(['alice']) });
    const redis = await startRedis();
    t.after(() => redis.stop());
    const store = await RedisStore.open(redis.url, { clock: w.clock });
    t.after(() => store.close());
    await w.engine({}, store).verify('alice@rec.test');
    const admin = new Redis(redis.url);
    t.after(() => admin.quit());
    const raw = await admin.get(`callout:${domainKey('rec.test', 'catchall')}`);
    const record = JSON.parse(raw ?? 'null') as Record<string, unknown>;
    const [name] = randomNames(w, '127.0.0.91');
    const at = w.clock.now();
    assert.deepEqual(
      { state: record.state, reason: record.reason, localPart: record.localPart, at: record.at, firstAskedAt: record.firstAskedAt, retryAt: record.retryAt, code: (record.reply as { code: number }).code },
      { state: 'inconclusive', reason: 'catch-all-unknown', localPart: name, at, firstAskedAt: at, retryAt: at + GREYLIST_RETRY, code: 450 },
    );
    // Lives as long as its local part may be asked (cache.domainNegative, 3 h), not only the retry time.
    const ttl = await admin.pttl(`callout:${domainKey('rec.test', 'catchall')}`);
    assert.ok(ttl > 2 * 60 * MINUTE && ttl <= 3 * 60 * MINUTE, `ttl ${ttl}`);
  });
});
