// Fuzz tests of the records the verification cache reads back from the store: a row written by
// another program, an older version or damaged must read as absent, never as a verdict.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ManualClock } from '../support/manual-time.js';
import { validateConfig } from '../../src/config/schema.js';
import { MemoryStore } from '../../src/store/memory.js';
import { parseMailbox } from '../../src/address/index.js';
import { MAX_VERDICT_RECORD_LENGTH, VerificationCache, calloutRecordKey, domainKey } from '../../src/verify/cache.js';
import type { AddressRecord, CatchAllFact, DomainFact } from '../../src/verify/cache.js';
import { elapsedMs, paddedRecords } from '../support/fuzz.js';

const VERDICTS = ['deliverable', 'undeliverable', 'risky', 'unknown', 'invalid', 'no-mail-domain'];
const PROBE_STATES = ['not-run', 'accepted', 'refused', 'inconclusive'];

function assertAddressRecord(record: AddressRecord | undefined): void {
  if (record === undefined) return;
  assert.equal(typeof record, 'object');
  assert.ok(VERDICTS.includes(record.verdict), `verdict ${String(record.verdict)}`);
  assert.equal(typeof record.reason, 'string');
  assert.equal(typeof record.description, 'string');
  assert.ok(PROBE_STATES.includes(record.catchAll) && PROBE_STATES.includes(record.postmaster), 'PROBE_STATES.includes(record.catchAll) && PROBE_STATES.includes(record.postmaster)');
  assert.ok(Number.isFinite(record.checkedAt) && Number.isFinite(record.refreshAt), 'Number.isFinite(record.checkedAt) && Number.isFinite(record.refreshAt)');
  assertReply(record.reply);
}

/** A reply read back is absent or has the form the header and the domain's lifetime read. */
function assertReply(reply: unknown): void {
  if (reply === undefined) return;
  assert.ok(typeof reply === 'object' && reply !== null, `reply ${JSON.stringify(reply)}`);
  const r = reply as Record<string, unknown>;
  assert.ok(typeof r.stage === 'string' && Number.isInteger(r.code), `reply ${JSON.stringify(reply)}`);
}

function assertDomainFact(fact: (DomainFact & { state?: unknown }) | undefined): void {
  if (fact === undefined) return;
  assert.equal(typeof fact, 'object');
  assert.equal(typeof fact.reason, 'string');
  assert.equal(typeof fact.description, 'string');
  assert.ok(Number.isFinite(fact.at), 'Number.isFinite(fact.at)');
  assertReply(fact.reply);
}

const good: AddressRecord = {
  verdict: 'undeliverable', reason: 'rejected-at-rcpt', description: 'rejected', catchAll: 'refused', postmaster: 'not-run', checkedAt: 1, refreshAt: 2,
  reply: { stage: 'rcpt', code: 550, enhanced: '5.1.1', text: 'no such user' },
} as AddressRecord;
// Replies of another version's records (`reply: null`) threw in the header and in the domain's lifetime.
const goodFact = { reason: 'refused-at-mail', description: 'try again later', at: 1, state: 'accepted', reply: { stage: 'mail', code: 451, text: 'later' } };
/** A 4xx to the random local part, remembered (verify/engine). */
const deferredFact: Extract<CatchAllFact, { state: 'inconclusive' }> = { state: 'inconclusive', reason: 'catch-all-unknown', description: 'greylisted', reply: { stage: 'rcpt', code: 450 }, at: 1, retryAt: 2, localPart: 'callout-abc123abc123', firstAskedAt: 1 };

/** A store where another process writes `then` to a key right after each read of it (at most `times` reads). */
class RacingStore extends MemoryStore {
  constructor(clock: ManualClock, private readonly racing: { key: string; then: () => string; times: number }) {
    super({ clock });
  }

  override async get(key: string) {
    const read = await super.get(key);
    if (key === this.racing.key && this.racing.times-- > 0) await super.set(key, this.racing.then(), 60_000);
    return read;
  }
}

/** Stored text: anything, JSON of anything, or a good record with one field changed to anything. */
const stored = fc.oneof(
  fc.string({ maxLength: 200 }),
  fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
  fc.tuple(fc.constantFrom(...Object.keys(good)), fc.jsonValue({ maxDepth: 2 })).map(([k, v]) => JSON.stringify({ ...good, [k]: v })),
  fc.tuple(fc.constantFrom(...Object.keys(goodFact)), fc.jsonValue({ maxDepth: 2 })).map(([k, v]) => JSON.stringify({ ...goodFact, [k]: v })),
  fc.tuple(fc.constantFrom(...Object.keys(deferredFact)), fc.jsonValue({ maxDepth: 2 })).map(([k, v]) => JSON.stringify({ ...deferredFact, [k]: v })),
);

describe('VerificationCache records fuzzed', () => {
  it('reads any stored text as a record of the declared shape or as absent, without throwing', async () => {
    const config = validateConfig({}).cache;
    await fc.assert(
      fc.asyncProperty(stored, async (value) => {
        const store = new MemoryStore();
        const cache = new VerificationCache(store, config, new ManualClock());
        await store.set(calloutRecordKey('a@example.org'), value, 60_000);
        for (const name of ['catchall', 'nullsender', 'postmaster', 'greylist', 'useless'] as const) await store.set(domainKey('example.org', name), value, 60_000);
        assertAddressRecord(await cache.getAddress('a@example.org'));
        const peeked = cache.peekAddress('a@example.org');
        assertAddressRecord(typeof peeked === 'symbol' ? undefined : peeked);
        const facts = await cache.getDomain('example.org');
        for (const fact of Object.values(facts)) assertDomainFact(fact);
        if (facts.catchall?.state === 'inconclusive') {
          const f = facts.catchall;
          assert.ok(Number.isFinite(f.retryAt) && Number.isFinite(f.firstAskedAt) && parseMailbox(`${f.localPart}@example.org`, { utf8: false }).ok, JSON.stringify(f));
        } else if (facts.catchall) {
          assert.ok(['accepted', 'refused'].includes(facts.catchall.state), '[\'accepted\', \'refused\'].includes(facts.catchall.state)');
        }
        for (const name of ['nullsender', 'postmaster', 'greylist', 'useless'] as const) {
          assert.notEqual((facts[name] as { state?: unknown } | undefined)?.state, 'inconclusive', `${name}: inconclusive is a catch-all state only`);
        }
        // A temporary verdict over whatever is stored neither throws nor keeps a damaged record.
        await cache.putAddress('a@example.org', { verdict: 'unknown', reason: 'timeout', description: 't', catchAll: 'not-run', postmaster: 'not-run', checkedAt: 1 } as Omit<AddressRecord, 'refreshAt'>);
        assertAddressRecord(await cache.getAddress('a@example.org'));
      }),
      { numRuns: 400 },
    );
  });

  it('still reads a record it wrote', async () => {
    const store = new MemoryStore();
    const clock = new ManualClock();
    const cache = new VerificationCache(store, validateConfig({}).cache, clock);
    await cache.putAddress('a@example.org', { ...good });
    assert.deepEqual((await cache.getAddress('a@example.org'))?.reply, good.reply);
    await cache.putDomain('example.org', 'catchall', goodFact as DomainFact & { state: 'accepted' });
    assert.equal((await cache.getDomain('example.org')).catchall?.state, 'accepted');
    // As another version may have written them: a record with a null reply reads as absent.
    await store.set(calloutRecordKey('b@example.org'), JSON.stringify({ ...good, reply: null }), 60_000);
    assert.equal(await cache.getAddress('b@example.org'), undefined);
  });

  it('remembers a domain that refused us with a 4xx only cache.tempfail, one that refused with a 5xx cache.domainNegative', async () => {
    const clock = new ManualClock();
    const store = new MemoryStore({ clock });
    const cache = new VerificationCache(store, validateConfig({}).cache, clock);
    await cache.putDomain('busy.example', 'useless', { reason: 'refused-at-greeting', description: '421', reply: { stage: 'greeting', code: 421, enhanced: '4.7.0' }, at: clock.now() });
    await cache.putDomain('banner.example', 'useless', { reason: 'refused-at-greeting', description: '554', reply: { stage: 'greeting', code: 554, enhanced: '5.7.1' }, at: clock.now() });
    assert.ok((await cache.getDomain('busy.example')).useless, 'a 4xx is remembered');
    clock.advance(61_000);
    assert.equal((await cache.getDomain('busy.example')).useless, undefined, 'a 4xx is temporary');
    assert.ok((await cache.getDomain('banner.example')).useless, 'a 5xx lasts cache.domainNegative');
    clock.advance(validateConfig({}).cache.domainNegative);
    assert.equal((await cache.getDomain('banner.example')).useless, undefined, 'and no longer');
  });

  it('keeps each domain fact for its own lifetime: greylist cache.greylistRetry, postmaster accepted domainPositive, refused domainNegative', async () => {
    const clock = new ManualClock();
    const store = new MemoryStore({ clock });
    const config = validateConfig({}).cache;
    const cache = new VerificationCache(store, config, clock);
    const fact = { reason: 'greylisted', description: 'd', at: clock.now() } as const;
    await cache.putDomain('grey.example', 'greylist', fact);
    await cache.putDomain('pm-ok.example', 'postmaster', { ...fact, reason: 'postmaster-refused', state: 'accepted' });
    await cache.putDomain('pm-no.example', 'postmaster', { ...fact, reason: 'postmaster-refused', state: 'refused' });
    // A 500 (a protocol error at MAIL) is a 5xx: refused for good, not a temporary refusal.
    await cache.putDomain('syntax.example', 'useless', { ...fact, reason: 'refused-at-mail', reply: { stage: 'mail', code: 500 } });
    clock.advance(config.tempfail + 1_000);
    assert.ok((await cache.getDomain('grey.example')).greylist, 'a greylisting domain is left alone past cache.tempfail');
    clock.advance(config.greylistRetry - config.tempfail);
    assert.equal((await cache.getDomain('grey.example')).greylist, undefined, 'and retried after cache.greylistRetry');
    assert.ok((await cache.getDomain('syntax.example')).useless, 'a 500 lasts cache.domainNegative');
    assert.equal((await cache.getDomain('pm-no.example')).postmaster?.state, 'refused', 'a refused postmaster outlasts cache.tempfail and cache.greylistRetry');
    clock.advance(config.domainNegative);
    assert.equal((await cache.getDomain('pm-no.example')).postmaster, undefined, 'a refused postmaster lasts cache.domainNegative');
    assert.equal((await cache.getDomain('pm-ok.example')).postmaster?.state, 'accepted', 'an accepted one cache.domainPositive');
    clock.advance(config.domainPositive - (config.greylistRetry + 1_000 + config.domainNegative) - 1);
    assert.equal((await cache.getDomain('pm-ok.example')).postmaster?.state, 'accepted', 'to its last millisecond');
    clock.advance(1);
    assert.equal((await cache.getDomain('pm-ok.example')).postmaster, undefined, 'and no longer');
  });

  it('a 4xx to the random local part lasts until its retry time or until its local part is cache.domainNegative old, whichever is later; it never replaces a definite catch-all answer', async () => {
    const clock = new ManualClock();
    const store = new MemoryStore({ clock });
    const config = validateConfig({}).cache;
    const cache = new VerificationCache(store, config, clock);
    const deferred = (firstAskedAt: number): typeof deferredFact => ({ ...deferredFact, at: clock.now(), retryAt: clock.now() + config.greylistRetry, firstAskedAt });
    await cache.putDomain('grey.example', 'catchall', deferred(clock.now()));
    assert.deepEqual((await cache.getDomain('grey.example')).catchall, deferred(clock.now()), 'read back as written');
    clock.advance(config.domainNegative - 1);
    assert.equal((await cache.getDomain('grey.example')).catchall?.state, 'inconclusive', 'its local part may be asked for cache.domainNegative');
    // Asked again near the end of its local part's life: kept until the retry time.
    await cache.putDomain('grey.example', 'catchall', deferred(clock.now() - (config.domainNegative - 1)));
    clock.advance(config.greylistRetry - 1);
    assert.equal((await cache.getDomain('grey.example')).catchall?.state, 'inconclusive', 'until its retry time');
    clock.advance(1);
    assert.equal((await cache.getDomain('grey.example')).catchall, undefined, 'and no longer');

    for (const state of ['accepted', 'refused'] as const) {
      await cache.putDomain(`${state}.example`, 'catchall', { state, reason: 'catch-all', description: state, at: clock.now() });
      await cache.putDomain(`${state}.example`, 'catchall', deferred(clock.now()));
      assert.equal((await cache.getDomain(`${state}.example`)).catchall?.state, state, `a definite answer (${state}) stays`);
    }
    await cache.putDomain('again.example', 'catchall', deferred(clock.now()));
    await cache.putDomain('again.example', 'catchall', { ...deferred(clock.now()), localPart: 'callout-zzzzzzzzzzzz' });
    assert.equal(((await cache.getDomain('again.example')).catchall as { localPart?: string }).localPart, 'callout-zzzzzzzzzzzz', 'an inconclusive one is replaced');
  });

  it('an inconclusive catch-all fact never replaces a definite answer another process writes right after the record was read; another inconclusive one it replaces', async () => {
    const clock = new ManualClock();
    const config = validateConfig({}).cache;
    const key = domainKey('race.example', 'catchall');
    const deferred = { ...deferredFact, at: clock.now(), retryAt: clock.now() + config.greylistRetry, firstAskedAt: clock.now() };
    const other = { ...deferred, localPart: 'callout-zzzzzzzzzzzz' };
    for (const state of ['accepted', 'refused'] as const) {
      const definite = JSON.stringify({ state, reason: 'catch-all', description: state, at: clock.now() });
      // Absent when read, and inconclusive when read: the definite answer lands in between either way.
      for (const before of [undefined, JSON.stringify(other)]) {
        const store = new RacingStore(clock, { key, then: () => definite, times: 1 });
        if (before !== undefined) await store.set(key, before, 60_000);
        await new VerificationCache(store, config, clock).putDomain('race.example', 'catchall', deferred);
        assert.equal((await store.get(key))?.value, definite, `the ${state} answer written after the read (of ${before === undefined ? 'no record' : 'an inconclusive one'}) stays`);
      }
    }

    const once = new RacingStore(clock, { key, then: () => JSON.stringify(other), times: 1 });
    await new VerificationCache(once, config, clock).putDomain('race.example', 'catchall', deferred);
    assert.deepEqual(JSON.parse((await once.get(key))!.value), deferred, 'read again after another inconclusive fact came in between: written');

    // Changed under every write: given up, not retried for ever, and what the others wrote stays.
    let count = 0;
    const busy = new RacingStore(clock, { key, then: () => JSON.stringify({ ...other, at: ++count }), times: Infinity });
    await new VerificationCache(busy, config, clock).putDomain('race.example', 'catchall', deferred);
    assert.equal(JSON.parse((await busy.get(key))!.value).localPart, other.localPart, 'the last fact another process wrote stays');
  });

  it('reads an inconclusive catch-all fact whose local part would not make a plain ASCII address of the domain as absent: it is sent as written', async () => {
    const clock = new ManualClock();
    const store = new MemoryStore({ clock });
    const cache = new VerificationCache(store, validateConfig({}).cache, clock);
    for (const localPart of ['callout-abc123abc123', 'two words', 'a@b', 'x'.repeat(65), 'caf\u00e9', 'x>\r\nDATA', '']) {
      await store.set(domainKey('example.org', 'catchall'), JSON.stringify({ ...deferredFact, localPart }), 60_000);
      assert.equal((await cache.getDomain('example.org')).catchall !== undefined, localPart === 'callout-abc123abc123', JSON.stringify(localPart));
      assert.equal(cache.peekDomain('example.org') !== undefined && (cache.peekDomain('example.org') as { catchall?: unknown }).catchall !== undefined, localPart === 'callout-abc123abc123', `peek ${JSON.stringify(localPart)}`);
    }
  });

  it('a temporary verdict never replaces a definite one (undeliverable, risky) before it expires; a stale one is refreshed again only after cache.tempfail', async () => {
    const clock = new ManualClock();
    const store = new MemoryStore({ clock });
    const config = validateConfig({}).cache;
    const cache = new VerificationCache(store, config, clock);
    const temporary = { verdict: 'unknown', reason: 'timeout', description: 't', catchAll: 'not-run', postmaster: 'not-run', checkedAt: clock.now() } as const;
    await cache.putAddress('gone@example.org', { ...good, checkedAt: clock.now() });
    await cache.putAddress('risky@example.org', { ...good, verdict: 'risky', reason: 'null-sender-refused', checkedAt: clock.now() });
    await cache.putAddress('gone@example.org', temporary);
    await cache.putAddress('risky@example.org', temporary);
    assert.equal((await cache.getAddress('gone@example.org'))?.verdict, 'undeliverable');
    assert.equal((await cache.getAddress('risky@example.org'))?.verdict, 'risky');
    // Exactly at the refresh age the record is stale (the engine refreshes it): a failed refresh postpones the next.
    const refreshAt = (await cache.getAddress('gone@example.org'))!.refreshAt;
    clock.set(refreshAt);
    await cache.putAddress('gone@example.org', temporary);
    assert.equal((await cache.getAddress('gone@example.org'))?.refreshAt, refreshAt + config.tempfail);
  });

  it('a temporary verdict never replaces a definite one another process writes right after the record was read, nor does a postponed refresh; another temporary one it replaces', async () => {
    const clock = new ManualClock();
    const config = validateConfig({}).cache;
    const key = calloutRecordKey('race@example.org');
    const temporary = { verdict: 'unknown', reason: 'timeout', description: 't', catchAll: 'not-run', postmaster: 'not-run', checkedAt: clock.now() } as const;
    const otherTemporary = JSON.stringify({ ...temporary, description: 'other', refreshAt: clock.now() + config.tempfail });
    const staleDefinite = JSON.stringify({ ...good, checkedAt: clock.now(), refreshAt: clock.now() });
    for (const verdict of ['deliverable', 'undeliverable'] as const) {
      const definite = JSON.stringify({ ...good, verdict, description: `newer ${verdict}`, checkedAt: clock.now(), refreshAt: clock.now() + config.addressNegativeRefresh });
      // Absent, temporary or a stale definite record when read (the last is kept with its refresh
      // postponed): the newer definite answer lands in between each time.
      for (const before of [undefined, otherTemporary, staleDefinite]) {
        const store = new RacingStore(clock, { key, then: () => definite, times: 1 });
        if (before !== undefined) await store.set(key, before, 60_000);
        await new VerificationCache(store, config, clock).putAddress('race@example.org', temporary);
        assert.equal((await store.get(key))?.value, definite, `the ${verdict} answer written after the read (of ${before === undefined ? 'no record' : `a record ${JSON.parse(before).verdict}`}) stays`);
      }
    }

    const once = new RacingStore(clock, { key, then: () => otherTemporary, times: 1 });
    await new VerificationCache(once, config, clock).putAddress('race@example.org', temporary);
    assert.equal(JSON.parse((await once.get(key))!.value).description, temporary.description, 'read again after another temporary verdict came in between: written');

    // Changed under every write: given up, not retried for ever, and what the others wrote stays.
    let count = 0;
    const busy = new RacingStore(clock, { key, then: () => JSON.stringify({ ...JSON.parse(otherTemporary), checkedAt: ++count }), times: Infinity });
    await new VerificationCache(busy, config, clock).putAddress('race@example.org', temporary);
    assert.equal(JSON.parse((await busy.get(key))!.value).description, 'other', 'the last verdict another process wrote stays');
  });

  it('a lifetime of zero (cache.tempfail 0s) remembers nothing, and writing nothing is no store error', async () => {
    const clock = new ManualClock();
    const store = new MemoryStore({ clock });
    const cache = new VerificationCache(store, validateConfig({ cache: { tempfail: '0s' } }).cache, clock);
    await cache.putAddress('t@example.org', { verdict: 'unknown', reason: 'timeout', description: 't', catchAll: 'not-run', postmaster: 'not-run', checkedAt: clock.now() });
    await cache.putDomain('busy.example', 'useless', { reason: 'timeout', description: 't', at: clock.now() });
    assert.equal(await cache.getAddress('t@example.org'), undefined);
    assert.equal((await cache.getDomain('busy.example')).useless, undefined);
  });

  it('an undeliverable answer turns stale after cache.addressNegativeRefresh, a deliverable one after cache.addressPositiveRefresh', async () => {
    const clock = new ManualClock();
    const config = validateConfig({}).cache;
    const cache = new VerificationCache(new MemoryStore({ clock }), config, clock);
    await cache.putAddress('gone@example.org', { ...good, checkedAt: clock.now() });
    await cache.putAddress('here@example.org', { ...good, verdict: 'deliverable', reason: 'accepted', checkedAt: clock.now() });
    assert.equal((await cache.getAddress('gone@example.org'))?.refreshAt, clock.now() + config.addressNegativeRefresh);
    assert.equal((await cache.getAddress('here@example.org'))?.refreshAt, clock.now() + config.addressPositiveRefresh);
  });

  it('decodes a large stored value in linear time', async () => {
    const store = new MemoryStore();
    const cache = new VerificationCache(store, validateConfig({}).cache, new ManualClock());
    const big = JSON.stringify({ ...good, description: 'x'.repeat(1_000_000) });
    await store.set(calloutRecordKey('a@example.org'), `[${'['.repeat(100_000)}`, 60_000);
    assert.equal(await cache.getAddress('a@example.org'), undefined);
    await store.set(calloutRecordKey('b@example.org'), big, 60_000);
    // Generous bound: over its length limit the record is not even parsed.
    assert.ok(elapsedMs(() => cache.peekAddress('b@example.org')) < 500, 'elapsedMs(() => cache.peekAddress(\'b@example.org\')) < 500');
    assert.equal(cache.peekAddress('b@example.org'), undefined, 'a record over MAX_VERDICT_RECORD_LENGTH is absent');
  });

  it('reads a record of up to MAX_VERDICT_RECORD_LENGTH characters, and none longer (another program\'s on a shared Redis)', async () => {
    const config = validateConfig({}).cache;
    const records = fc.tuple(paddedRecords(JSON.stringify(good), MAX_VERDICT_RECORD_LENGTH), paddedRecords(JSON.stringify(goodFact), MAX_VERDICT_RECORD_LENGTH));
    await fc.assert(
      fc.asyncProperty(records, async ([address, fact]) => {
        const store = new MemoryStore();
        const cache = new VerificationCache(store, config, new ManualClock());
        await store.set(calloutRecordKey('a@example.org'), address.text, 60_000);
        await store.set(domainKey('example.org', 'catchall'), fact.text, 60_000);
        assert.equal((await cache.getAddress('a@example.org')) !== undefined, address.readable, `address record of ${address.text.length} characters`);
        assert.equal((await cache.getDomain('example.org')).catchall !== undefined, fact.readable, `domain fact of ${fact.text.length} characters`);
      }),
      { numRuns: 200 },
    );
  });
});

describe('VerificationCache locks', () => {
  it('gives each taker its own token: a holder whose lock expired, or a late second release, never deletes the next holder\'s lock, even within one millisecond', async () => {
    // Two caches on one store and one clock: two engines in one process, or two daemons on a Redis.
    const clock = new ManualClock();
    const store = new MemoryStore({ clock });
    const config = validateConfig({}).cache;
    const [first, second] = [new VerificationCache(store, config, clock), new VerificationCache(store, config, clock)];
    const key = first.addressLock('alice@example.org');
    const expired = await first.lock(key, 100);
    assert.ok(expired !== undefined, 'expired !== undefined');
    clock.advance(100);
    const taken = await second.lock(key, 60_000);
    assert.ok(taken !== undefined && taken !== expired, `tokens ${expired} and ${String(taken)}`);
    await first.unlock(key, expired);
    assert.equal(await first.holder(key), taken, 'the expired holder\'s release leaves the new lock');
    // Let go and taken again in the same millisecond.
    await second.unlock(key, taken);
    const retaken = await first.lock(key, 60_000);
    assert.ok(retaken !== undefined && retaken !== taken, `tokens ${taken} and ${String(retaken)}`);
    await second.unlock(key, taken);
    assert.equal(await first.holder(key), retaken, 'a second release of the old token leaves the new lock');
    const other = await first.lock(first.catchAllLock('example.org'), 60_000);
    assert.ok(other !== undefined && other !== retaken, 'a second lock of one cache gets a token of its own');
  });
});
