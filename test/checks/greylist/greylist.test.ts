// The greylist engine over a real store, with time moved by ManualClock.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { ManualClock } from '../../support/manual-time.js';
import { POSTGREY, triplet } from '../../support/greylist-request.js';
import { StoreError } from '../../../src/core/errors.js';
import { parseCidr } from '../../../src/core/ip.js';
import { keyPart } from '../../../src/address/index.js';
import { Greylist, MAX_DOMAIN_AUTO_ALLOW, type GreylistEntry, type GreylistEntryKind, type GreylistSettings, type ListOptions } from '../../../src/checks/greylist/index.js';
import { MemoryStore, RedisStore, SqliteStore } from '../../../src/store/index.js';
import { ASK_LATER, type Store } from '../../../src/store/types.js';
import { elapsedMsAsync, paddedRecords } from '../../support/fuzz.js';
import { startRedis } from '../../support/redis.js';
import { onStoreWrite } from '../../support/store-writes.js';

/** Every entry listPages() gives for the kinds (all by default), at most `limit` in all, for a list known to be short. */
async function listAll(greylist: Greylist, { kinds = ['triplet', 'client', 'domain'], ...options }: Omit<ListOptions, 'kind'> & { kinds?: readonly GreylistEntryKind[] }): Promise<GreylistEntry[]> {
  const entries: GreylistEntry[] = [];
  for (const kind of kinds) {
    if (entries.length >= options.limit) break;
    for await (const page of greylist.listPages({ ...options, kind, limit: options.limit - entries.length })) entries.push(...page);
  }
  return entries;
}

const S = 1000;
const DAY = 86_400 * S;

function setup(settings: Partial<GreylistSettings> = {}) {
  const clock = new ManualClock();
  const store = new MemoryStore({ clock });
  return { clock, store, greylist: new Greylist(store, clock, { ...POSTGREY, ...settings }) };
}

describe('greylist triplets', () => {
  it('defers a new triplet, then an early retry with the seconds missing, then passes', async () => {
    const { clock, greylist } = setup();
    const first = await greylist.check(triplet());
    assert.equal(first.kind, 'defer');
    assert.equal(first.kind === 'defer' && first.reason, 'new');
    assert.equal(first.kind === 'defer' && first.remainingMs, 300 * S);
    clock.advance(100 * S);
    const early = await greylist.check(triplet());
    assert.deepEqual(early.kind === 'defer' && [early.reason, early.remainingMs, early.retryAt], ['early-retry', 200 * S, first.kind === 'defer' ? first.retryAt : 0]);
    clock.advance(200 * S);
    const passed = await greylist.check(triplet());
    assert.deepEqual(passed, { kind: 'pass', reason: 'triplet', firstPass: true, waitedMs: 300 * S });
    clock.advance(DAY);
    assert.deepEqual(await greylist.check(triplet()), { kind: 'pass', reason: 'triplet', firstPass: false, waitedMs: DAY + 300 * S });
  });

  it('starts again when the first retry comes after the retry window', async () => {
    const { clock, greylist } = setup();
    await greylist.check(triplet());
    clock.advance(2 * DAY + S);
    const late = await greylist.check(triplet());
    assert.deepEqual(late.kind === 'defer' && [late.reason, late.remainingMs], ['window-expired', 300 * S]);
    clock.advance(300 * S);
    assert.equal((await greylist.check(triplet())).kind, 'pass');
  });

  it('forgets a passed triplet not seen for max-age', async () => {
    const { clock, greylist } = setup({ autoAllowClients: 0 });
    await greylist.check(triplet());
    clock.advance(300 * S);
    assert.equal((await greylist.check(triplet())).kind, 'pass');
    clock.advance(34 * DAY);
    assert.equal((await greylist.check(triplet())).kind, 'pass', 'seen again within max-age: refreshed');
    clock.advance(35 * DAY + S);
    const gone = await greylist.check(triplet());
    assert.equal(gone.kind === 'defer' && gone.reason, 'new');
  });

  it('refreshes the last-seen time of a passed triplet at most once an hour', async () => {
    const clock = new ManualClock();
    const store = new MemoryStore({ clock });
    const greylist = new Greylist(store, clock, { ...POSTGREY, autoAllowClients: 0 });
    await greylist.check(triplet());
    clock.advance(300 * S);
    await greylist.check(triplet());
    const key = greylist.tripletKey('192.0.2.0/24', 'bob@sender.example', 'alice@example.test');
    const passedAt = (await store.get(key))?.value;
    clock.advance(59 * 60 * S);
    assert.deepEqual(await greylist.check(triplet()), { kind: 'pass', reason: 'triplet', firstPass: false, waitedMs: 300 * S + 59 * 60 * S });
    assert.equal((await store.get(key))?.value, passedAt, 'within the hour: read, not written');
    clock.advance(60 * S);
    await greylist.check(triplet());
    assert.notEqual((await store.get(key))?.value, passedAt, 'an hour on: last-seen refreshed');
    assert.equal((await store.get(key))?.expiresAt, clock.now() + 35 * DAY);
  });

  it('keeps triplets of other senders, recipients and networks apart', async () => {
    const { clock, greylist } = setup();
    await greylist.check(triplet());
    clock.advance(300 * S);
    assert.equal((await greylist.check(triplet())).kind, 'pass');
    for (const other of [{ sender: 'carol@sender.example' }, { recipient: 'dave@example.test' }, { client: '198.51.100.0/24', autoAllowKey: '198.51.100.1' }]) {
      assert.equal((await greylist.check(triplet(other))).kind, 'defer', JSON.stringify(other));
    }
  });

  it('auto-allows a client after five first passes, counting at most one an hour', async () => {
    const { clock, greylist } = setup();
    for (let n = 0; n < 5; n += 1) {
      const t = triplet({ recipient: `r${n}@example.test` });
      assert.equal((await greylist.check(t)).kind, 'defer');
      clock.advance(300 * S);
      assert.equal((await greylist.check(t)).kind, 'pass');
      // A second pass in the same hour does not count.
      const again = triplet({ recipient: `x${n}@example.test` });
      await greylist.check(again);
      clock.advance(300 * S);
      await greylist.check(again);
      clock.advance(3_600 * S);
    }
    const fresh = await greylist.check(triplet({ recipient: 'never-seen@example.test' }));
    assert.equal(fresh.kind === 'pass' && fresh.reason, 'client-auto-allow');
    const sameNetworkOtherHost = await greylist.check(triplet({ recipient: 'never-seen@example.test', autoAllowKey: '192.0.2.11' }));
    assert.equal(sameNetworkOtherHost.kind, 'defer', 'the auto-allow is per address, as postgrey keys it');
  });

  it('auto-allows a sender domain from a client once enough of its senders passed (sqlgrey domain level)', async () => {
    const { clock, greylist } = setup({ domainAutoAllow: 2, autoAllowClients: 0 });
    for (const sender of ['a@pool.example', 'b@pool.example']) {
      await greylist.check(triplet({ sender }));
      clock.advance(300 * S);
      assert.equal((await greylist.check(triplet({ sender }))).kind, 'pass');
    }
    const third = await greylist.check(triplet({ sender: 'c@pool.example', recipient: 'new@example.test' }));
    assert.deepEqual(third, { kind: 'pass', reason: 'domain-auto-allow', domain: 'pool.example' });
    assert.equal((await greylist.check(triplet({ sender: 'c@other.example' }))).kind, 'defer');
    assert.equal((await greylist.check(triplet({ sender: 'c@pool.example', client: '203.0.113.0/24' }))).kind, 'defer');
  });

  it('corrects a first-seen time in the future (a clock stepped back)', async () => {
    const { clock, greylist } = setup();
    await greylist.check(triplet());
    clock.advance(-1_000 * S);
    const back = await greylist.check(triplet());
    assert.deepEqual(back.kind === 'defer' && [back.reason, back.remainingMs], ['new', 300 * S]);
  });

  it('keeps a passed triplet passed for a daemon whose clock is behind the one that passed it, and leaves its row alone', async () => {
    // Two daemons on one store: A's clock runs two minutes ahead of B's.
    const clockA = new ManualClock(1_700_000_000_000 + 120 * S);
    const clockB = new ManualClock(1_700_000_000_000);
    const store = new MemoryStore({ clock: clockB });
    const onA = new Greylist(store, clockA, POSTGREY);
    const onB = new Greylist(store, clockB, POSTGREY);
    assert.equal((await onA.check(triplet())).kind, 'defer');
    for (const clock of [clockA, clockB]) clock.advance(360 * S);
    assert.deepEqual(await onA.check(triplet()), { kind: 'pass', reason: 'triplet', firstPass: true, waitedMs: 360 * S });
    const key = onA.tripletKey('192.0.2.0/24', 'bob@sender.example', 'alice@example.test');
    const row = (await store.get(key))?.value;
    for (const clock of [clockA, clockB]) clock.advance(30 * S);
    // B's now is 4.5 minutes after A's first-seen time: without the fix, B deferred and rewrote the row.
    assert.deepEqual(await onB.check(triplet()), { kind: 'pass', reason: 'triplet', firstPass: false, waitedMs: 270 * S });
    assert.equal((await store.get(key))?.value, row, 'the row is not moved back in time');
    assert.deepEqual(await onA.check(triplet()), { kind: 'pass', reason: 'triplet', firstPass: false, waitedMs: 390 * S }, 'its first pass counted once');
    // An auto-allowed client's row is not moved back either (nor counted again) by the lagging daemon.
    await onA.allowClient('192.0.2.99');
    const clientRow = (await store.get(onA.clientKey('192.0.2.99')))?.value;
    assert.equal((await onB.check(triplet({ autoAllowKey: '192.0.2.99' }))).reason, 'client-auto-allow');
    assert.equal((await store.get(onA.clientKey('192.0.2.99')))?.value, clientRow);
  });

  it('passes a passed triplet after the clock stepped back before its first-seen time', async () => {
    const { clock, greylist } = setup();
    await greylist.check(triplet());
    clock.advance(300 * S);
    assert.equal((await greylist.check(triplet())).kind, 'pass');
    clock.advance(-1_000 * S);
    assert.deepEqual(await greylist.check(triplet()), { kind: 'pass', reason: 'triplet', firstPass: false, waitedMs: 0 });
  });

  it('acts on a fresh row when the row fetched with the client (a store without rows at hand) changed before the write', async () => {
    const clock = new ManualClock();
    /** A store that, as Redis, has no row at hand, and where another daemon writes between the read and the write. */
    class RemoteStore extends MemoryStore {
      meanwhile: (() => Promise<void>) | undefined;
      override peek(): typeof ASK_LATER {
        return ASK_LATER;
      }
      override async getMany(keys: readonly string[]) {
        const rows = await super.getMany(keys);
        const other = this.meanwhile;
        this.meanwhile = undefined;
        await other?.();
        return rows;
      }
    }
    const store = new RemoteStore({ clock });
    const greylist = new Greylist(store, clock, POSTGREY);
    const otherDaemon = new Greylist(store, clock, POSTGREY);
    // The other daemon sees the triplet first, 100 s before this one reads; its write lands between our read and our write.
    store.meanwhile = async () => {
      clock.advance(-100 * S);
      await otherDaemon.check(triplet());
      clock.advance(100 * S);
    };
    const outcome = await greylist.check(triplet());
    assert.equal(outcome.kind, 'defer');
    assert.equal(outcome.kind === 'defer' && outcome.reason, 'early-retry', 'the stale "absent" lost its compare-and-set and the row was read again');
    assert.equal(outcome.kind === 'defer' && outcome.remainingMs, 200 * S);
  });

  it('gives one first-seen time to concurrent first sightings', async () => {
    const { clock, greylist } = setup();
    const outcomes = await Promise.all(Array.from({ length: 20 }, () => greylist.check(triplet())));
    assert.ok(outcomes.every((o) => o.kind === 'defer'), 'outcomes.every((o) => o.kind === \'defer\')');
    clock.advance(300 * S);
    assert.equal((await greylist.check(triplet())).kind, 'pass');
  });

  it('defers a burst of one triplet from many connections at once, a millisecond apart, without a fault', async () => {
    // Each request writes its own last-seen time: every retry of the compare-and-set lost to
    // the next writer, the ninth threw, and the fault was answered DUNNO (greylisting skipped).
    const clock = new ManualClock();
    const ticking = { now: () => (clock.advance(1), clock.now()) };
    const store = new MemoryStore({ clock });
    const greylist = new Greylist(store, ticking, POSTGREY);
    const outcomes = await Promise.all(Array.from({ length: 40 }, () => greylist.check(triplet())));
    assert.deepEqual(new Set(outcomes.map((o) => o.kind)), new Set(['defer']));
    clock.advance(300 * S);
    assert.equal((await greylist.check(triplet())).kind, 'pass');
  });

  it('passes a retry exactly retryWindow after the first sighting: only a later one starts again', async () => {
    const { clock, greylist } = setup();
    await greylist.check(triplet());
    clock.advance(2 * DAY);
    assert.equal((await greylist.check(triplet())).kind, 'pass');
  });

  it('keeps an auto-allowed client allowed while it keeps sending, past max-age, counting its passes', async () => {
    const { clock, greylist } = setup();
    await greylist.allowClient('192.0.2.10');
    clock.advance(20 * DAY);
    assert.deepEqual(await greylist.check(triplet()), { kind: 'pass', reason: 'client-auto-allow', count: 5 });
    clock.advance(20 * DAY);
    assert.deepEqual(await greylist.check(triplet({ recipient: 'new@example.test' })), { kind: 'pass', reason: 'client-auto-allow', count: 6 });
  });

  it('keeps a sender domain allowed while its senders keep coming, past max-age, with no more senders than the level', async () => {
    const { clock, greylist } = setup({ domainAutoAllow: 2, autoAllowClients: 0 });
    for (const sender of ['a@pool.example', 'b@pool.example']) {
      await greylist.check(triplet({ sender }));
      clock.advance(300 * S);
      await greylist.check(triplet({ sender }));
    }
    clock.advance(20 * DAY);
    assert.equal((await greylist.check(triplet({ sender: 'c@pool.example' }))).kind, 'pass');
    clock.advance(20 * DAY);
    assert.deepEqual(await greylist.check(triplet({ sender: 'd@pool.example' })), { kind: 'pass', reason: 'domain-auto-allow', domain: 'pool.example' });
    assert.deepEqual((await listAll(greylist, { kinds: ['domain'], limit: 10 })).map((e) => e.kind === 'domain' && [e.domain, e.senders, e.allowed]), [['pool.example', 2, true]]);
  });

  it('counts only first passes towards the client auto-allow, not the hourly refreshes of a known triplet', async () => {
    const { clock, greylist } = setup();
    await greylist.check(triplet());
    clock.advance(300 * S);
    assert.equal((await greylist.check(triplet())).kind, 'pass');
    for (let n = 0; n < 6; n += 1) {
      clock.advance(2 * 3_600 * S);
      await greylist.check(triplet());
    }
    assert.equal((await greylist.check(triplet({ recipient: 'new@example.test' }))).kind, 'defer');
  });

  it('records the pass of a retry that lost its race to a deferred write of the triplet under a second before', async () => {
    const { clock, a, onA, behind, onB } = racingDaemons();
    await onA.check(triplet());
    clock.advance(300 * S);
    behind.advance(300 * S - 500);
    a.beforeWrite((k) => k === onA.tripletKey('192.0.2.0/24', 'bob@sender.example', 'alice@example.test'), () => onB.check(triplet()));
    assert.deepEqual(await onA.check(triplet()), { kind: 'pass', reason: 'triplet', firstPass: true, waitedMs: 300 * S });
    clock.advance(5 * DAY);
    assert.deepEqual(await onA.check(triplet()), { kind: 'pass', reason: 'triplet', firstPass: false, waitedMs: 5 * DAY + 300 * S }, 'kept max-age, not two retry windows');
  });
});


/**
 * Two daemons on one store: A's writes can be held back (interleaved) while B, whose clock can
 * be left behind A's, writes the same keys.
 */
function racingDaemons() {
  const clock = new ManualClock();
  const store = new MemoryStore({ clock });
  const a = interleaved(store);
  const behind = new ManualClock(clock.now());
  return { clock, store, a, onA: new Greylist(a.store, clock, POSTGREY), behind, onB: new Greylist(store, behind, POSTGREY) };
}
/**
 * A daemon's store whose next write (set, setIfAbsent, compareAndSet) of a key that `when` picks
 * first lets `meanwhile` run: another daemon's request landing between this one's read and its write.
 */
function interleaved(store: Store) {
  let pending: { when: (key: string) => boolean; meanwhile: () => Promise<unknown> } | undefined;
  const wrapped = onStoreWrite(store, async (key, write) => {
    const due = pending?.when(key) ? pending : undefined;
    if (due) pending = undefined;
    await due?.meanwhile();
    return write();
  });
  return { store: wrapped, beforeWrite: (when: (key: string) => boolean, meanwhile: () => Promise<unknown>) => void (pending = { when, meanwhile }) };
}

describe('greylist shared by two daemons (two connections to one SQLite file, one Redis)', () => {
  let redis: Awaited<ReturnType<typeof startRedis>>;
  const dir = mkdtempSync(join(tmpdir(), 'callout-greylist-'));
  let opened = 0;
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Two stores on one shared state, each judging expiry by its own daemon's clock. */
  async function twoDaemons(kind: 'sqlite' | 'redis', clockA: ManualClock, clockB: ManualClock): Promise<[Store, Store]> {
    opened += 1;
    if (kind === 'sqlite') {
      const path = join(dir, `shared-${opened}.db`);
      return [await SqliteStore.open(path, { clock: clockA }), await SqliteStore.open(path, { clock: clockB })];
    }
    const keyPrefix = `greylist-${opened}:`;
    return [await RedisStore.open(redis.url, { clock: clockA, keyPrefix }), await RedisStore.open(redis.url, { clock: clockB, keyPrefix })];
  }

  for (const kind of ['sqlite', 'redis'] as const) {
    it(`${kind}: a first sighting written between the other daemon's read and write decides the first-seen time`, async () => {
      const clockA = new ManualClock(1_700_000_000_000 + 100 * S);
      const clockB = new ManualClock(1_700_000_000_000);
      const [storeA, storeB] = await twoDaemons(kind, clockA, clockB);
      try {
        const a = interleaved(storeA);
        const onA = new Greylist(a.store, clockA, POSTGREY);
        const onB = new Greylist(storeB, clockB, POSTGREY);
        const key = onA.tripletKey('192.0.2.0/24', 'bob@sender.example', 'alice@example.test');
        a.beforeWrite((k) => k === key, () => onB.check(triplet()));
        const outcome = await onA.check(triplet());
        assert.deepEqual(outcome, { kind: 'defer', reason: 'early-retry', remainingMs: 200 * S, retryAt: clockB.now() + 300 * S, firstSeen: clockB.now() });
        assert.equal((await storeB.get(key))?.value, `${clockB.now()},${clockA.now()}`, 'one row: B\'s first-seen time, A\'s last-seen');
        clockA.advance(200 * S);
        clockB.advance(200 * S);
        assert.deepEqual(await onA.check(triplet()), { kind: 'pass', reason: 'triplet', firstPass: true, waitedMs: 300 * S });
        assert.deepEqual(await onB.check(triplet()), { kind: 'pass', reason: 'triplet', firstPass: false, waitedMs: 200 * S }, 'passed on A: passed for B too, whose clock is behind');
      } finally {
        await storeA.close();
        await storeB.close();
      }
    });

    it(`${kind}: first passes of two senders of one domain at once on two daemons: both senders kept, the client counted once for the hour`, async () => {
      const clock = new ManualClock(1_700_000_000_000);
      const [storeA, storeB] = await twoDaemons(kind, clock, clock);
      try {
        const settings = { ...POSTGREY, domainAutoAllow: 2 };
        const a = interleaved(storeA);
        const onA = new Greylist(a.store, clock, settings);
        const onB = new Greylist(storeB, clock, settings);
        const one = triplet({ sender: 'one@pool.example' });
        const two = triplet({ sender: 'two@pool.example' });
        await onA.check(one);
        await onB.check(two);
        clock.advance(300 * S);
        const domainKey = onA.domainKey('192.0.2.0/24', 'pool.example');
        let meanwhile: unknown;
        // B passes its triplet (counting the client, recording its sender) after A has read the
        // domain's row, before A writes it.
        a.beforeWrite((k) => k === domainKey, async () => (meanwhile = await onB.check(two)));
        assert.deepEqual(await onA.check(one), { kind: 'pass', reason: 'triplet', firstPass: true, waitedMs: 300 * S });
        assert.deepEqual(meanwhile, { kind: 'pass', reason: 'triplet', firstPass: true, waitedMs: 300 * S });
        assert.deepEqual(
          (await listAll(onB, { kinds: ['client', 'domain'], limit: 10 })).map((e) => (e.kind === 'client' ? ['client', e.count] : e.kind === 'domain' ? ['domain', e.senders] : [])),
          [['client', 1], ['domain', 2]],
          'the client counted once for the hour, neither sender lost',
        );
        assert.deepEqual(await onA.check(triplet({ sender: 'three@pool.example' })), { kind: 'pass', reason: 'domain-auto-allow', domain: 'pool.example' });
      } finally {
        await storeA.close();
        await storeB.close();
      }
    });

    it(`${kind}: first passes of thirty senders of one domain at once on two daemons: every sender counted for the domain auto-allow`, async () => {
      const clock = new ManualClock(1_700_000_000_000);
      const [storeA, storeB] = await twoDaemons(kind, clock, clock);
      try {
        const settings = { ...POSTGREY, domainAutoAllow: 30 };
        const daemons = [new Greylist(storeA, clock, settings), new Greylist(storeB, clock, settings)];
        const senders = Array.from({ length: 30 }, (_, i) => triplet({ sender: `list${i}@bulk.example` }));
        for (const one of senders) await daemons[0]!.check(one);
        clock.advance(300 * S);
        // A provider retrying its queue: every triplet's retry at once, spread over both daemons.
        const passes = await Promise.all(senders.map((one, i) => daemons[i % 2]!.check(one)));
        assert.ok(passes.every((outcome) => outcome.kind === 'pass'), JSON.stringify(passes));
        const [domain] = await listAll(daemons[1]!, { kinds: ['domain'], limit: 10 });
        assert.deepEqual(domain && domain.kind === 'domain' && [domain.senders, domain.allowed], [30, true], 'no sender lost to the race');
        assert.deepEqual(await daemons[0]!.check(triplet({ sender: 'another@bulk.example' })), { kind: 'pass', reason: 'domain-auto-allow', domain: 'bulk.example' });
      } finally {
        await storeA.close();
        await storeB.close();
      }
    });

    it(`${kind}: a passed triplet refreshed by the other daemon meanwhile stays passed, refreshed once, expiring max-age after`, async () => {
      const clock = new ManualClock(1_700_000_000_000);
      const [storeA, storeB] = await twoDaemons(kind, clock, clock);
      try {
        const a = interleaved(storeA);
        const onA = new Greylist(a.store, clock, { ...POSTGREY, autoAllowClients: 0 });
        const onB = new Greylist(storeB, clock, { ...POSTGREY, autoAllowClients: 0 });
        const key = onA.tripletKey('192.0.2.0/24', 'bob@sender.example', 'alice@example.test');
        await onA.check(triplet());
        clock.advance(300 * S);
        assert.equal((await onB.check(triplet())).kind, 'pass');
        const passedAt = clock.now();
        clock.advance(2 * 3_600 * S);
        a.beforeWrite((k) => k === key, () => onB.check(triplet()));
        assert.deepEqual(await onA.check(triplet()), { kind: 'pass', reason: 'triplet', firstPass: false, waitedMs: 2 * 3_600 * S + 300 * S });
        const row = await storeA.get(key);
        assert.equal(row?.value, `${passedAt - 300 * S},${clock.now()}`);
        // Redis counts the lifetime on its own clock, which the test cannot move: only the length is compared there.
        const left = (row?.expiresAt ?? 0) - clock.now();
        assert.ok(left > 35 * DAY - 60 * S && left <= 35 * DAY, `lifetime left ${left} ms, expected max-age from the refresh`);
      } finally {
        await storeA.close();
        await storeB.close();
      }
    });
  }
});

describe('greylist administration', () => {
  it('lists triplets and clients, allows a client and a triplet, drops them', async () => {
    const clock = new ManualClock();
    const store = await SqliteStore.open(':memory:', { clock });
    const greylist = new Greylist(store, clock, POSTGREY);
    await greylist.check(triplet({ sender: 'odd/name%x@sender.example' }));
    await greylist.check(triplet({ recipient: 'other@example.test' }));
    const listed = await listAll(greylist, { limit: 10 });
    assert.deepEqual(
      listed.map((e) => e.kind === 'triplet' && [e.client, e.sender, e.recipient, e.passed]),
      [
        ['192.0.2.0/24', 'bob@sender.example', 'other@example.test', false],
        ['192.0.2.0/24', 'odd/name%x@sender.example', 'alice@example.test', false],
      ],
    );
    await greylist.allowTriplet(triplet());
    assert.deepEqual(await greylist.check(triplet()), { kind: 'pass', reason: 'triplet', firstPass: false, waitedMs: 300 * S });
    await greylist.allowClient('198.51.100.7');
    const allowed = await greylist.check(triplet({ client: '198.51.100.0/24', autoAllowKey: '198.51.100.7' }));
    assert.equal(allowed.kind === 'pass' && allowed.reason, 'client-auto-allow');
    assert.deepEqual((await listAll(greylist, { kinds: ['client'], limit: 10 })).map((e) => e.kind === 'client' && [e.client, e.allowed]), [['198.51.100.7', true]]);
    assert.equal(await greylist.dropTriplet(triplet({ recipient: 'other@example.test' })), true);
    assert.deepEqual(await greylist.dropClient('192.0.2.0/24', '192.0.2.10'), { autoAllow: false, triplets: 2, domains: 0 });
    assert.deepEqual((await listAll(greylist, { kinds: ['triplet'], limit: 10 })).length, 0);
    clock.advance(36 * DAY);
    assert.equal(await store.purgeExpired(), 1, 'the client entry expired with its maxAge and is purged');
    await store.close();
  });

  it('drops the auto-allow entries of every address in a network, and of no other', async () => {
    const clock = new ManualClock();
    const store = await SqliteStore.open(':memory:', { clock });
    const greylist = new Greylist(store, clock, POSTGREY);
    const inside: Record<string, string[]> = {
      '192.0.2.0/24': ['192.0.2.0', '192.0.2.7', '192.0.2.255'],
      '198.51.100.128/25': ['198.51.100.128', '198.51.100.200'],
      '10.8.0.0/14': ['10.8.0.1', '10.11.255.3'],
      '203.0.113.9/32': ['203.0.113.9'],
      '2001:db8:0:5::/64': ['2001:db8:0:5::1', '2001:db8:0:5:1::'],
      '2a01:4180:4051:800::/64': ['2a01:4180:4051:800::25', '2a01:4180:4051:800:1:2:3:4'],
      '2001:db8:ffff::/64': ['2001:db8:ffff::1', '2001:db8:ffff:0:1::'],
    };
    const outside = ['192.0.20.7', '192.0.3.7', '198.51.100.127', '10.12.0.1', '10.7.255.255', '203.0.113.90', '2001:db8::5:0:0:1', '2001:db8:0:6::1', '2a01:4180:4051:801::25'];
    for (const address of [...Object.values(inside).flat(), ...outside]) await greylist.allowClient(address);
    for (const [network, addresses] of Object.entries(inside)) {
      const cidr = parseCidr(network);
      assert.ok(cidr.ok, 'cidr.ok');
      assert.equal(await greylist.dropClientsIn(cidr.value), addresses.length, network);
    }
    const left = (await listAll(greylist, { kinds: ['client'], limit: 100 })).map((e) => e.client);
    assert.deepEqual(left.sort(), [...outside].sort());
    await store.close();
  });

  it('drops no key without its "/" (another program\'s, or damaged) as a triplet of a network', async () => {
    const clock = new ManualClock();
    const store = await SqliteStore.open(':memory:', { clock });
    const greylist = new Greylist(store, clock, POSTGREY);
    // Its identity read as "192.0.2.7" (the last character cut), inside 192.0.2.7/32.
    await store.set('grey:t:192.0.2.70', '0,0', DAY);
    const host = parseCidr('192.0.2.7/32');
    assert.ok(host.ok, 'a network');
    assert.deepEqual(await greylist.dropIdentitiesIn(host.value), { triplets: 0, domains: 0 });
    assert.equal((await store.get('grey:t:192.0.2.70'))?.value, '0,0', 'the key is kept');
    await store.close();
  });

  it('lists and drops the triplets and domain entries of the identities inside a network, never a domain: identity or one of the other family', async () => {
    const { clock, greylist } = setup({ domainAutoAllow: 2 });
    const identities = ['198.51.100.0/24', '198.51.101.0/24', '203.0.113.0/24', '2001:db8:1:2::/64', 'domain:pool.example'];
    // Passed once each: a triplet and a domain entry of its identity.
    for (const client of identities) await greylist.check(triplet({ client }));
    clock.advance(300 * S);
    for (const client of identities) assert.equal((await greylist.check(triplet({ client }))).kind, 'pass', client);
    const network = (text: string) => {
      const parsed = parseCidr(text);
      assert.ok(parsed.ok, text);
      return parsed.value;
    };
    const clientsOf = async (kind: GreylistEntryKind, options: Omit<ListOptions, 'kind' | 'limit'> = {}) => (await listAll(greylist, { kinds: [kind], limit: 10, ...options })).map((e) => e.client);
    assert.deepEqual(await clientsOf('domain', { network: network('198.51.0.0/16') }), ['198.51.100.0/24', '198.51.101.0/24']);
    assert.deepEqual(await clientsOf('domain', { network: network('0.0.0.0/0') }), ['198.51.100.0/24', '198.51.101.0/24', '203.0.113.0/24']);
    assert.deepEqual(await greylist.dropIdentitiesIn(network('198.51.0.0/16')), { triplets: 2, domains: 2 });
    assert.deepEqual(await clientsOf('triplet'), ['2001:db8:1:2::/64', '203.0.113.0/24', 'domain:pool.example']);
    assert.deepEqual(await clientsOf('domain'), ['2001:db8:1:2::/64', '203.0.113.0/24', 'domain:pool.example']);
    assert.deepEqual(await greylist.dropIdentitiesIn(network('0.0.0.0/0')), { triplets: 1, domains: 1 });
    assert.deepEqual(await greylist.dropIdentitiesIn(network('::/0')), { triplets: 1, domains: 1 });
    assert.deepEqual(await clientsOf('triplet'), ['domain:pool.example']);
    assert.deepEqual(await clientsOf('domain'), ['domain:pool.example']);
  });

  it('drops a client of 2,500 triplets in few scans (each a walk of all of Redis) and with its deletes asked for together', async () => {
    const clock = new ManualClock();
    class CountingStore extends MemoryStore {
      scans = 0;
      deleting = 0;
      mostDeleting = 0;
      override scan(prefix: string, limit: number) {
        this.scans += 1;
        return super.scan(prefix, limit);
      }
      override async delete(key: string) {
        this.deleting += 1;
        this.mostDeleting = Math.max(this.mostDeleting, this.deleting);
        await new Promise((resolve) => setImmediate(resolve));
        await super.delete(key);
        this.deleting -= 1;
      }
    }
    const store = new CountingStore({ clock });
    const greylist = new Greylist(store, clock, POSTGREY);
    for (let i = 0; i < 2500; i += 1) await greylist.allowTriplet(triplet({ sender: `s${i}@sender.example` }));
    await greylist.allowTriplet(triplet({ client: '192.0.3.0/24' }));
    assert.deepEqual(await greylist.dropClient('192.0.2.0/24', '192.0.2.10'), { autoAllow: false, triplets: 2500, domains: 0 });
    // Triplets: one scan that finds them, one that finds none left; domain entries: one.
    assert.equal(store.scans, 3);
    assert.ok(store.mostDeleting > 100, `deletes in flight at once: ${store.mostDeleting}`);
    assert.deepEqual((await listAll(greylist, { kinds: ['triplet'], limit: 10 })).map((e) => e.client), ['192.0.3.0/24']);
    await store.close();
  });

  it('lists what it stores: a %2F in an address as written, one client not its longer namesakes, an allowed triplet as passed, no more than the limit', async () => {
    const { greylist } = setup();
    await greylist.check(triplet({ sender: 'a%2Fb@sender.example' }));
    const slash = await greylist.check(triplet({ sender: 'a/b@sender.example' }));
    assert.equal(slash.kind === 'defer' && slash.reason, 'new', 'a%2Fb and a/b are two senders');
    assert.deepEqual((await listAll(greylist, { kinds: ['triplet'], limit: 10 })).map((e) => e.kind === 'triplet' && e.sender).sort(), ['a%2Fb@sender.example', 'a/b@sender.example']);
    await greylist.allowClient('192.0.2.1');
    await greylist.allowClient('192.0.2.10');
    assert.deepEqual((await listAll(greylist, { kinds: ['client'], client: '192.0.2.1', limit: 10 })).map((e) => e.client), ['192.0.2.1']);
    await greylist.allowTriplet(triplet());
    const allowed = (await listAll(greylist, { kinds: ['triplet'], client: '192.0.2.0/24', limit: 10 })).find((e) => e.kind === 'triplet' && e.sender === 'bob@sender.example');
    assert.equal(allowed?.kind === 'triplet' && allowed.passed, true, 'allow makes a triplet that lists as passed');
    assert.equal((await listAll(greylist, { limit: 2 })).length, 2);
  });
});

describe('greylist drop of a network, page by page', () => {
  let redis: Awaited<ReturnType<typeof startRedis>>;
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await redis.stop();
  });

  const stores: Record<'memory' | 'sqlite' | 'redis', (clock: ManualClock) => Promise<Store>> = {
    memory: async (clock) => new MemoryStore({ clock }),
    sqlite: (clock) => SqliteStore.open(':memory:', { clock }),
    redis: (clock) => RedisStore.open(redis.url, { clock, keyPrefix: 'drop-pages:' }),
  };
  for (const [kind, open] of Object.entries(stores)) {
    // Its pages are deleted while the walk goes on: a store that went on by position, or listed
    // a deleted key again, would leave entries behind or count them twice. Over 1,000 keys: Redis
    // finds them in several SCAN calls, with deletes between them.
    it(`${kind}: deletes every auto-allow entry of the network's addresses over many pages, and no other`, async () => {
      const clock = new ManualClock();
      const store = await open(clock);
      try {
        const greylist = new Greylist(store, clock, POSTGREY);
        // Under the network's text prefix (10.) key order mixes them: 10.11., 10.12., 10.7., 10.8., 10.80.
        const inside = Array.from({ length: 800 }, (_, i) => `10.${8 + (i % 4)}.${Math.floor(i / 4)}.${i % 7}`);
        const outside = Array.from({ length: 400 }, (_, i) => `${['10.7', '10.12', '10.80', '100.8'][i % 4]}.${Math.floor(i / 4)}.1`);
        await Promise.all([...inside, ...outside].map((address) => greylist.allowClient(address)));
        const network = parseCidr('10.8.0.0/14');
        assert.ok(network.ok, 'network.ok');
        assert.equal(await greylist.dropClientsIn(network.value, 50), inside.length);
        const left = (await listAll(greylist, { kinds: ['client'], limit: 2000 })).map((e) => e.client);
        assert.deepEqual(left.sort(), outside.sort());
      } finally {
        await store.close();
      }
    });
  }
});

describe('greylist keys of over-long addresses', () => {
  // Up to a policy line (4 kB) per address, from any client, for each recipient it names.
  const huge = (tail: string) => `${'a'.repeat(1500)}${tail}@${'d'.repeat(1200)}.example`;
  const keysOf = async (store: Store) => (await store.scan('grey:', 100)).map((row) => row.key);

  it('bounds the key of a huge sender and recipient, and decides alike for the same one, apart for another', async () => {
    const clock = new ManualClock();
    const store = new MemoryStore({ clock });
    const greylist = new Greylist(store, clock, { ...POSTGREY, domainAutoAllow: 1 });
    const request = triplet({ sender: huge('x'), recipient: huge('r') });
    assert.equal((await greylist.check(request)).kind, 'defer');
    const [key] = await keysOf(store);
    assert.ok(key !== undefined && key.length <= 400, `key of ${key?.length} characters`);
    clock.advance(100 * S);
    // Each differs from the first only past its first kilobyte: a triplet of its own, not a retry.
    for (const apart of [{ sender: huge('y') }, { recipient: huge('s') }]) {
      const outcome = await greylist.check({ ...request, ...apart });
      assert.equal(outcome.kind === 'defer' && outcome.reason, 'new', JSON.stringify(Object.keys(apart)));
    }
    clock.advance(200 * S);
    assert.deepEqual(await greylist.check({ ...request }), { kind: 'pass', reason: 'triplet', firstPass: true, waitedMs: 300 * S }, 'the same address: the same triplet');
    const opened = await greylist.check({ ...request, sender: huge('z') });
    assert.equal(opened.kind === 'pass' && opened.reason, 'domain-auto-allow', 'the passed sender of the domain opened it (domainAutoAllow: 1)');
    for (const k of await keysOf(store)) assert.ok(k.length <= 400, `${k.slice(0, 40)}: ${k.length} characters`);
    assert.ok((await store.get(greylist.domainKey('192.0.2.0/24', huge('x').split('@')[1]!)))!.value.length < 400, 'the domain record holds the sender as its key part');

    const senders = (await listAll(greylist, { kinds: ['triplet'], limit: 10 })).map((entry) => entry.kind === 'triplet' && entry.sender);
    assert.equal(senders.length, 3);
    for (const sender of senders) assert.match(String(sender), /^a{64}…\[sha256:[0-9a-f]{64}\]$/, 'list shows its start and digest');
    assert.ok(senders.includes(keyPart(huge('x'))), 'senders.includes(keyPart(huge(\'x\')))');
    assert.equal(keyPart(keyPart(huge('x'))), keyPart(huge('x')), 'as list shows it, it is its own key');
    assert.ok(await greylist.dropTriplet({ client: '192.0.2.0/24', sender: huge('x'), recipient: huge('r') }), 'dropped by the address in full');
  });

  it('keys an address RFC 5321 allows as it is, escaping only / and %', () => {
    const { greylist } = setup();
    assert.equal(greylist.tripletKey('192.0.2.0/24', 'bob@sender.example', 'alice@example.test'), 'grey:t:192.0.2.0%2F24/bob@sender.example/alice@example.test');
  });
});

describe('greylist rows read back, fuzzed', () => {
  // Rows of another program or version, or damaged ones: a check still answers pass or a defer
  // within the delay, and a listing leaves out what it cannot read.
  const row = fc.oneof(
    fc.string({ maxLength: 60 }),
    fc.tuple(fc.oneof(fc.double(), fc.integer(), fc.string({ maxLength: 5 })), fc.oneof(fc.double(), fc.integer(), fc.string({ maxLength: 5 }))).map(([a, b]) => `${a},${b}`),
    fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
    fc.record({ senders: fc.array(fc.jsonValue({ maxDepth: 1 }), { maxLength: 5 }), last: fc.oneof(fc.double(), fc.jsonValue({ maxDepth: 1 })) }).map((v) => JSON.stringify(v)),
  );

  it('check() answers a pass or a defer within the delay, and list() reads what it can, whatever the rows', async () => {
    await fc.assert(
      fc.asyncProperty(row, row, row, fc.integer({ min: 0, max: 3 * DAY }), async (tripletRow, clientRow, domainRow, later) => {
        const { clock, store, greylist } = setup({ domainAutoAllow: 2 });
        const t = triplet();
        await store.set(greylist.tripletKey(t.client, t.sender, t.recipient), tripletRow, DAY);
        await store.set(greylist.clientKey(t.autoAllowKey), clientRow, DAY);
        await store.set(greylist.domainKey(t.client, 'sender.example'), domainRow, DAY);
        clock.advance(later);
        const outcome = await greylist.check(t);
        if (outcome.kind === 'defer') {
          assert.ok(outcome.remainingMs > 0 && outcome.remainingMs <= POSTGREY.delayMs, String(outcome.remainingMs));
          assert.ok(Number.isFinite(outcome.retryAt) && Number.isFinite(outcome.firstSeen), 'Number.isFinite(outcome.retryAt) && Number.isFinite(outcome.firstSeen)');
        } else {
          assert.equal(outcome.kind, 'pass');
        }
        for (const entry of await listAll(greylist, { limit: 10 })) {
          assert.ok(Number.isFinite(entry.expiresAt), 'Number.isFinite(entry.expiresAt)');
          if (entry.kind === 'domain') assert.ok(Number.isInteger(entry.senders) && entry.senders >= 0, 'Number.isInteger(entry.senders) && entry.senders >= 0');
          else if (entry.kind === 'client') assert.ok(Number.isFinite(entry.count) && Number.isFinite(entry.lastSeen), 'Number.isFinite(entry.count) && Number.isFinite(entry.lastSeen)');
          else assert.ok(Number.isFinite(entry.firstSeen) && Number.isFinite(entry.lastSeen), 'Number.isFinite(entry.firstSeen) && Number.isFinite(entry.lastSeen)');
        }
      }),
      { numRuns: 300 },
    );
  });

  it('reads a "first,last" row of up to 64 characters, and none longer', async () => {
    const { clock, store, greylist } = setup();
    const t = triplet();
    const key = greylist.tripletKey(t.client, t.sender, t.recipient);
    const passed = `${clock.now() - 2 * POSTGREY.delayMs},${clock.now() - POSTGREY.delayMs}`;
    await fc.assert(
      fc.asyncProperty(paddedRecords(passed, 64), async ({ text, readable }) => {
        await store.set(key, text, DAY);
        const outcome = await greylist.check(t);
        assert.equal(outcome.kind === 'pass' && outcome.reason === 'triplet', readable, `a row of ${text.length} characters: ${JSON.stringify(outcome)}`);
      }),
      { numRuns: 100 },
    );
  });

  it('reads a domain record of at most MAX_DOMAIN_AUTO_ALLOW senders and 1,539,064 characters, and none larger', async () => {
    const { clock, store, greylist } = setup({ domainAutoAllow: 2 });
    const t = triplet();
    const key = greylist.domainKey(t.client, 'sender.example');
    const allowed = async (value: string): Promise<boolean> => {
      await store.set(key, value, DAY);
      return (await greylist.check(t)).reason === 'domain-auto-allow';
    };
    const senders = (n: number) => JSON.stringify({ senders: Array.from({ length: n }, (_, i) => `s${i}@sender.example`), last: clock.now() });
    assert.equal(await allowed(senders(MAX_DOMAIN_AUTO_ALLOW)), true, 'the most senders callout writes');
    assert.equal(await allowed(senders(MAX_DOMAIN_AUTO_ALLOW + 1)), false, 'one more: not a record of callout\'s');
    await fc.assert(
      fc.asyncProperty(paddedRecords(senders(2), 1_539_064), async ({ text, readable }) => {
        assert.equal(await allowed(text), readable, `a record of ${text.length} characters`);
      }),
      { numRuns: 50 },
    );
  });

  it('check() auto-allows a client after the configured first passes, writing nothing for over max-age, whatever its count and triplet rows', async () => {
    const HOUR = 3_600 * S;
    const maxAge = POSTGREY.maxAgeMs;
    // Counts and times callout never writes: below 0, past safe integers, fractions, far ahead.
    const count = fc.oneof(fc.integer({ min: 1, max: 10 }), fc.integer({ max: -1 }), fc.double({ min: 2 ** 53, max: 1e300, noNaN: true }), fc.double({ min: -1e6, max: 1e6, noNaN: true, noDefaultInfinity: true }));
    const now0 = new ManualClock().now();
    const past = fc.integer({ min: now0 - maxAge, max: now0 - HOUR });
    const ahead = fc.integer({ min: now0 + maxAge + DAY, max: 8.64e15 });
    const time = fc.oneof(past, ahead);
    // A triplet with a time far ahead, or none: a row of a triplet passed before would rightly not count again.
    const tripletRow = fc.option(fc.oneof(fc.tuple(time, ahead), fc.tuple(ahead, time)).map(([first, last]) => `${first},${last}`), { nil: undefined });
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 5 }), count, time, fc.array(tripletRow, { minLength: 5, maxLength: 5 }), async (level, stored, last, tripletRows) => {
        const { clock, store, greylist } = setup({ autoAllowClients: level });
        const recipient = (n: number) => `r${n}@example.test`;
        await store.set(greylist.clientKey('192.0.2.10'), `${stored},${last}`, maxAge);
        for (const [n, row] of tripletRows.entries()) {
          if (row !== undefined) await store.set(greylist.tripletKey('192.0.2.0/24', 'bob@sender.example', recipient(n)), row, maxAge);
        }
        const writtenWithin = async () => {
          for (const row of await store.scan('grey:', 100)) assert.ok(row.expiresAt <= clock.now() + maxAge, `${row.key} expires ${row.expiresAt - clock.now()} ms on`);
        };
        for (let n = 0; n < level; n += 1) {
          await greylist.check(triplet({ recipient: recipient(n) }));
          await writtenWithin();
          clock.advance(POSTGREY.delayMs);
          assert.equal((await greylist.check(triplet({ recipient: recipient(n) }))).kind, 'pass');
          await writtenWithin();
          clock.advance(HOUR);
        }
        const fresh = await greylist.check(triplet({ recipient: 'never-seen@example.test' }));
        assert.equal(fresh.kind === 'pass' && fresh.reason, 'client-auto-allow', JSON.stringify(fresh));
        await writtenWithin();
      }),
      { numRuns: 300 },
    );
  });

  it('reads a long row in linear time', async () => {
    const { store, greylist } = setup({ domainAutoAllow: 2 });
    const t = triplet();
    // The rows are written again before each check: a check may rewrite what it read.
    const ms = await elapsedMsAsync(async () => {
      await store.set(greylist.tripletKey(t.client, t.sender, t.recipient), `${'1'.repeat(500_000)},${','.repeat(500_000)}`, DAY);
      // Near the longest domain record read: MAX_DOMAIN_AUTO_ALLOW senders of 1,500 characters.
      await store.set(greylist.domainKey(t.client, 'sender.example'), JSON.stringify({ senders: Array.from({ length: MAX_DOMAIN_AUTO_ALLOW }, () => 'x'.repeat(1_500)), last: 0 }), DAY);
      assert.equal((await greylist.check(t)).reason, 'domain-auto-allow');
    });
    assert.ok(ms < 1000, `${ms} ms`);
  });
});

describe('greylist bounds of time and counts', () => {
  const HOUR = 3_600 * S;

  it("refreshes an auto-allowed client's row, and a domain's, exactly an hour after it was written, not a millisecond before", async () => {
    const { clock, store, greylist } = setup({ domainAutoAllow: 2 });
    const written = clock.now();
    await greylist.allowClient('192.0.2.10');
    const domainKey = greylist.domainKey('192.0.2.0/24', 'pool.example');
    await store.set(domainKey, JSON.stringify({ senders: ['a@pool.example', 'b@pool.example'], last: written }), POSTGREY.maxAgeMs);
    const domainSender = triplet({ autoAllowKey: '192.0.2.11', sender: 'c@pool.example' });
    clock.advance(HOUR - 1);
    assert.deepEqual(await greylist.check(triplet()), { kind: 'pass', reason: 'client-auto-allow', count: 5 });
    assert.equal((await greylist.check(domainSender)).reason, 'domain-auto-allow');
    assert.equal((await store.get(greylist.clientKey('192.0.2.10')))?.value, `5,${written}`, 'within the hour: the client row is not written');
    assert.equal(JSON.parse((await store.get(domainKey))!.value).last, written, 'within the hour: the domain row is not written');
    clock.advance(1);
    await greylist.check(triplet());
    await greylist.check(domainSender);
    assert.equal((await store.get(greylist.clientKey('192.0.2.10')))?.value, `6,${clock.now()}`, 'an hour on: refreshed and counted');
    assert.equal(JSON.parse((await store.get(domainKey))!.value).last, clock.now(), 'an hour on: the domain row refreshed');
  });

  it('records the last-seen time of every deferred retry, one 500 ms after the first too', async () => {
    const { clock, store, greylist } = setup();
    const first = clock.now();
    await greylist.check(triplet());
    clock.advance(500);
    assert.equal((await greylist.check(triplet())).kind, 'defer');
    assert.equal((await store.get(greylist.tripletKey('192.0.2.0/24', 'bob@sender.example', 'alice@example.test')))?.value, `${first},${first + 500}`);
  });

  it("writes a deferred retry's last-seen time after a lost race to a write a whole second older", async () => {
    const { clock, store, a, onA, behind, onB } = racingDaemons();
    const first = clock.now();
    await onA.check(triplet());
    clock.advance(100 * S);
    behind.advance(99 * S);
    const key = onA.tripletKey('192.0.2.0/24', 'bob@sender.example', 'alice@example.test');
    a.beforeWrite((k) => k === key, () => onB.check(triplet()));
    assert.equal((await onA.check(triplet())).kind, 'defer');
    assert.equal((await store.get(key))?.value, `${first},${clock.now()}`, 'a gap of 1000 ms is not under the resolution');
  });

  it('gives up with StoreError after eight compare-and-sets of the triplet lost in a row', async () => {
    const clock = new ManualClock();
    let attempts = 0;
    const losing = onStoreWrite(new MemoryStore({ clock }), async () => {
      attempts += 1;
      return false;
    });
    const greylist = new Greylist(losing, clock, { ...POSTGREY, autoAllowClients: 0 });
    await assert.rejects(greylist.check(triplet()), StoreError);
    assert.equal(attempts, 8);
  });

  it('reads a row whose time is exactly max-age ahead (a daemon whose clock runs ahead), and none further, nor a row with no first field', async () => {
    const { clock, store, greylist } = setup();
    const maxAge = POSTGREY.maxAgeMs;
    const clientKey = greylist.clientKey('192.0.2.10');
    await store.set(clientKey, `5,${clock.now() + maxAge}`, maxAge);
    assert.equal((await greylist.check(triplet())).reason, 'client-auto-allow', 'last-seen exactly max-age ahead');
    await store.set(clientKey, `5,${clock.now() + maxAge + 1}`, maxAge);
    assert.equal((await greylist.check(triplet({ recipient: 'other@example.test' }))).kind, 'defer', 'last-seen a millisecond further');
    await store.delete(clientKey);
    const key = greylist.tripletKey('192.0.2.0/24', 'bob@sender.example', 'alice@example.test');
    await store.set(key, `,${clock.now()}`, maxAge);
    assert.deepEqual((await greylist.check(triplet())).reason, 'new', 'a row with no first-seen time is no passed triplet');
    const listed = async (first: number) => {
      await store.set(key, `${first},${clock.now()}`, maxAge);
      return (await listAll(greylist, { kinds: ['triplet'], limit: 10 })).filter((e) => e.kind === 'triplet' && e.recipient === 'alice@example.test').length;
    };
    assert.equal(await listed(clock.now() + maxAge), 1, 'first-seen exactly max-age ahead is listed');
    assert.equal(await listed(clock.now() + maxAge + 1), 0, 'first-seen further ahead is no row of ours');
  });
});
