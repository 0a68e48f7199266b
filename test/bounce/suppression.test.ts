import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { ManualClock } from '../support/manual-time.js';
import { SuppressionList } from '../../src/bounce/index.js';
import { Batv } from '../../src/rewrite/batv.js';
import { MemoryStore } from '../../src/store/memory.js';
import { StoreError } from '../../src/core/errors.js';
import fc from 'fast-check';
import { paddedRecords } from '../support/fuzz.js';

const fixture = (name: string) => readFileSync(new URL(`../fixtures/bounce/${name}`, import.meta.url), 'utf8');
const T0 = Date.parse('2020-01-01T00:01:00Z');
const batv = new Batv({ keys: [{ keynum: 1, secret: 'secret' }, { keynum: 0, secret: 'secret' }] });
const verp = [{ sender: 'list-bounces@lists.example.com' }];

function setup() {
  const clock = new ManualClock(T0);
  const store = new MemoryStore({ clock });
  return { clock, store, list: new SuppressionList(store, { clock, ttlMs: 30 * 86_400_000 }) };
}

describe('SuppressionList', () => {
  it('records the hard failures of a bounce to a valid BATV address', async () => {
    const { list } = setup();
    const outcome = await list.recordBounce({ envelopeRecipient: 'prvs=12693bd285=alice@example.com', message: fixture('postfix-dsn.eml') }, { batv, verp });
    assert.equal(outcome.kind, 'recorded');
    assert.equal(outcome.kind === 'recorded' && outcome.proof, 'batv');
    assert.deepEqual(await list.get('Bob@Example.org'), {
      address: 'bob@example.org',
      status: '5.1.1',
      diagnostic: '550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown in virtual mailbox table',
      reportingMta: 'mx.example.net',
      format: 'dsn',
      proof: 'batv',
      firstSeen: T0,
      lastSeen: T0,
      count: 1,
    });
  });

  it('suppresses nothing for a failure reached by forwarding (Original-Recipient): the address we mailed may reach others too', async () => {
    const { list } = setup();
    // team@ expands to several people; one of them, a leaver, bounced.
    const forwarded = fixture('postfix-dsn.eml')
      .replace(/Final-Recipient: rfc822; ?bob@example\.org/i, 'Final-Recipient: rfc822; leaver@gmail.example\nOriginal-Recipient: rfc822;bob@example.org');
    assert.notEqual(forwarded, fixture('postfix-dsn.eml'), 'the fixture names bob@example.org as Final-Recipient');
    const outcome = await list.recordBounce({ envelopeRecipient: 'prvs=12693bd285=alice@example.com', message: forwarded }, { batv });
    assert.deepEqual(outcome, { kind: 'not-proven', reason: 'every hard failure was reached by forwarding: the address we mailed may reach others too, so it is not suppressed' });
    assert.deepEqual((await list.list()).entries, []);
  });

  it('with BATV alone records every hard failure but not the full mailbox', async () => {
    const { list } = setup();
    const signed = batv.sign('news@example.com', T0);
    assert.ok(signed.ok, 'signed.ok');
    const outcome = await list.recordBounce({ envelopeRecipient: signed.ok ? signed.address : '', message: fixture('multi-recipient-dsn.eml') }, { batv });
    assert.equal(outcome.kind, 'recorded');
    assert.deepEqual((await list.list()).entries.map((e) => e.address), ['dave@example.org']);
  });

  it('records no entry for a hard failure that names no address (Final-Recipient: rfc822; with nothing after it)', async () => {
    const { list } = setup();
    const nameless = fixture('postfix-dsn.eml').replace(/Final-Recipient: rfc822; ?bob@example\.org\nOriginal-Recipient: rfc822; ?bob@example\.org/i, 'Final-Recipient: rfc822;');
    assert.notEqual(nameless, fixture('postfix-dsn.eml'));
    const outcome = await list.recordBounce({ envelopeRecipient: 'prvs=12693bd285=alice@example.com', message: nameless }, { batv });
    assert.deepEqual(outcome, { kind: 'not-proven', reason: 'the report\'s hard failures name no address' });
    assert.deepEqual((await list.list()).entries, []);
  });

  it('records no entry for a hard failure whose address has no domain or holds control characters', async () => {
    const { list } = setup();
    for (const name of ['undisclosed-recipients', 'bob@example.org\x1b[2J']) {
      const odd = fixture('postfix-dsn.eml').replace(/Final-Recipient: rfc822; ?bob@example\.org\nOriginal-Recipient: rfc822; ?bob@example\.org/i, `Final-Recipient: rfc822; ${name}`);
      assert.notEqual(odd, fixture('postfix-dsn.eml'));
      const outcome = await list.recordBounce({ envelopeRecipient: 'prvs=12693bd285=alice@example.com', message: odd }, { batv });
      assert.deepEqual(outcome, { kind: 'not-proven', reason: 'the report\'s hard failures name no address' }, name);
    }
    assert.deepEqual((await list.list()).entries, []);
  });

  it('records the VERP recipient when the report confirms it, counting repeats', async () => {
    const { list, clock } = setup();
    const message = fixture('qmail.eml');
    const first = await list.recordBounce({ envelopeRecipient: '<list-bounces+judy=example.org@lists.example.com>', message }, { verp });
    assert.equal(first.kind === 'recorded' && first.proof, 'verp');
    clock.advance(3_600_000);
    await list.recordBounce({ envelopeRecipient: 'list-bounces+judy=example.org@lists.example.com', message }, { verp });
    const entry = await list.get('judy@example.org');
    assert.equal(entry?.count, 2);
    assert.equal(entry?.firstSeen, T0, 'a repeat keeps the first sighting');
    assert.equal(entry?.lastSeen, T0 + 3_600_000);
    // qmail's bounce also names mallory, but the VERP address proves only judy.
    assert.equal(await list.isSuppressed('mallory@example.org'), false);
  });

  it('suppresses no VERP recipient that was forwarded: named as Original-Recipient, or the report\'s one recipient under another address', async () => {
    const { list } = setup();
    const multi = fixture('multi-recipient-dsn.eml').replace('Final-Recipient: RFC822; dave@example.org', 'Final-Recipient: rfc822; dave.forward@gmail.example\nOriginal-Recipient: rfc822; dave@example.org');
    assert.notEqual(multi, fixture('multi-recipient-dsn.eml'), 'the fixture names dave@example.org as Final-Recipient');
    const named = await list.recordBounce({ envelopeRecipient: 'list-bounces+dave=example.org@lists.example.com', message: multi }, { verp });
    assert.deepEqual(named, { kind: 'not-proven', reason: 'dave@example.org was forwarded, and only where it led failed: the address we mailed may reach others too, so it is not suppressed' });
    const single = fixture('postfix-dsn.eml').replace(/Final-Recipient: rfc822; ?bob@example\.org\nOriginal-Recipient: rfc822; ?bob@example\.org/i, 'Final-Recipient: rfc822; bob.forward@gmail.example');
    assert.notEqual(single, fixture('postfix-dsn.eml'));
    const only = await list.recordBounce({ envelopeRecipient: 'list-bounces+bob=example.org@lists.example.com', message: single }, { verp });
    assert.deepEqual(only, { kind: 'not-proven', reason: 'bob@example.org was forwarded, and only where it led failed: the address we mailed may reach others too, so it is not suppressed' });
    assert.deepEqual((await list.list()).entries, []);
    // The VERP recipient itself failed: suppressed, as ever.
    const direct = await list.recordBounce({ envelopeRecipient: 'list-bounces+bob=example.org@lists.example.com', message: fixture('postfix-dsn.eml') }, { verp });
    assert.deepEqual(direct.kind === 'recorded' && direct.entries.map((e) => [e.address, e.proof]), [['bob@example.org', 'verp']]);
  });

  it('of two list senders that both decode the address, keeps the recipient the report confirms, whichever is listed first', async () => {
    // list-bounces+news+bob=example.org@… is bob@example.org to list-bounces+news, and
    // news+bob@example.org to list-bounces: the report names bob as the one that failed.
    const senders = [{ sender: 'list-bounces@lists.example.com' }, { sender: 'list-bounces+news@lists.example.com' }];
    const finalOnly = fixture('postfix-dsn.eml').replace(/Original-Recipient: rfc822; ?bob@example\.org\n/i, '');
    assert.notEqual(finalOnly, fixture('postfix-dsn.eml'), 'the fixture names bob@example.org as Original-Recipient');
    for (const order of [senders, [...senders].reverse()]) {
      const { list } = setup();
      const outcome = await list.recordBounce({ envelopeRecipient: 'list-bounces+news+bob=example.org@lists.example.com', message: finalOnly }, { verp: order });
      assert.deepEqual(outcome.kind === 'recorded' ? outcome.entries.map((e) => [e.address, e.proof]) : outcome, [['bob@example.org', 'verp']], `recorded bob with ${order[0]!.sender} first`);
    }
    // Neither reading failed in the report: the first one is named, as with one sender.
    const { list } = setup();
    const outcome = await list.recordBounce({ envelopeRecipient: 'list-bounces+news+judy=example.org@lists.example.com', message: fixture('multi-recipient-dsn.eml') }, { verp: senders });
    assert.deepEqual(outcome, { kind: 'not-proven', reason: 'the report\'s hard failures do not include the VERP recipient news+judy@example.org' });
    // The second reading forwarded: named as such, and nothing recorded.
    const multi = fixture('multi-recipient-dsn.eml').replace('Final-Recipient: RFC822; dave@example.org', 'Final-Recipient: rfc822; dave.forward@gmail.example\nOriginal-Recipient: rfc822; dave@example.org');
    assert.notEqual(multi, fixture('multi-recipient-dsn.eml'), 'the fixture names dave@example.org as Final-Recipient');
    const forwarded = await list.recordBounce({ envelopeRecipient: 'list-bounces+news+dave=example.org@lists.example.com', message: multi }, { verp: senders });
    assert.deepEqual(forwarded, { kind: 'not-proven', reason: 'dave@example.org was forwarded, and only where it led failed: the address we mailed may reach others too, so it is not suppressed' });
    assert.deepEqual((await list.list()).entries, []);
  });

  it('an Original-Recipient that differs from the Final-Recipient only in the case of A-Z is no forwarding', async () => {
    const { list } = setup();
    // Postfix writes Original-Recipient as the sender wrote it, Final-Recipient after its maps.
    const recased = fixture('postfix-dsn.eml').replace('Original-Recipient: rfc822;bob@example.org', 'Original-Recipient: rfc822;Bob@EXAMPLE.org');
    assert.notEqual(recased, fixture('postfix-dsn.eml'), 'the fixture names bob@example.org as Original-Recipient');
    const outcome = await list.recordBounce({ envelopeRecipient: 'prvs=12693bd285=alice@example.com', message: recased }, { batv });
    assert.deepEqual(outcome.kind === 'recorded' && outcome.entries.map((e) => e.address), ['bob@example.org']);
  });

  it('a VERP recipient matches the report\'s address with A-Z folded (a member subscribed as Bob@Example.org)', async () => {
    const { list } = setup();
    const outcome = await list.recordBounce({ envelopeRecipient: 'list-bounces+Bob=Example.org@lists.example.com', message: fixture('postfix-dsn.eml') }, { verp });
    assert.deepEqual(outcome.kind === 'recorded' && outcome.entries.map((e) => [e.address, e.proof]), [['bob@example.org', 'verp']]);
    assert.equal(await list.isSuppressed('Bob@Example.org'), true, 'suppressed under the address as subscribed');
  });

  it('a BATV-signed VERP address proves batv+verp, and only the VERP recipient is recorded', async () => {
    const { list } = setup();
    const signed = batv.sign('list-bounces+judy=example.org@lists.example.com', T0);
    assert.ok(signed.ok, 'signed.ok');
    const outcome = await list.recordBounce({ envelopeRecipient: signed.address, message: fixture('qmail.eml') }, { batv, verp });
    assert.equal(outcome.kind === 'recorded' && outcome.proof, 'batv+verp');
    assert.deepEqual((await list.list()).entries.map((e) => [e.address, e.proof]), [['judy@example.org', 'batv+verp']]);
  });

  it('refuses bounces that prove nothing, or name someone else, or are not hard', async () => {
    const { list } = setup();
    const unsigned = await list.recordBounce({ envelopeRecipient: 'alice@example.com', message: fixture('postfix-dsn.eml') }, { batv, verp });
    assert.equal(unsigned.kind, 'not-proven');
    const forged = await list.recordBounce({ envelopeRecipient: 'prvs=12693bd284=alice@example.com', message: fixture('postfix-dsn.eml') }, { batv, verp });
    assert.deepEqual(forged, { kind: 'not-proven', reason: 'the bounce came to a prvs address whose tag is not signed by our key (bad-signature)' });
    const otherKey = await list.recordBounce({ envelopeRecipient: 'prvs=92693bd284=alice@example.com', message: fixture('postfix-dsn.eml') }, { batv, verp });
    assert.deepEqual(otherKey, { kind: 'not-proven', reason: 'the bounce came to a prvs address whose tag names a key number we have no key for (unknown-key)' });
    // A tag no key was given to check is said to be that, not "neither a valid BATV signature" (regression).
    const unchecked = await list.recordBounce({ envelopeRecipient: 'prvs=12693bd285=list-bounces+judy=example.org@lists.example.com', message: fixture('qmail.eml') }, { verp });
    assert.deepEqual(unchecked, { kind: 'not-proven', reason: 'the bounce came to a prvs (BATV) address, and no BATV keys were given to check its tag' });
    // No prvs address: the missing keys are not what is wrong.
    const plain = await list.recordBounce({ envelopeRecipient: 'alice@example.com', message: fixture('postfix-dsn.eml') }, { verp });
    assert.deepEqual(plain, { kind: 'not-proven', reason: 'the bounce came to an address with neither a valid BATV signature nor a VERP tag of ours' });
    const expired = await new SuppressionList(setup().store, { clock: new ManualClock(T0 + 30 * 86_400_000) }).recordBounce(
      { envelopeRecipient: 'prvs=12693bd285=alice@example.com', message: fixture('postfix-dsn.eml') },
      { batv },
    );
    assert.equal(expired.kind, 'not-proven');
    const other = await list.recordBounce({ envelopeRecipient: 'list-bounces+someone=example.org@lists.example.com', message: fixture('multi-recipient-dsn.eml') }, { verp });
    assert.equal(other.kind, 'not-proven');
    const delayed = await list.recordBounce({ envelopeRecipient: 'list-bounces+carol=example.org@lists.example.com', message: fixture('delayed-dsn.eml') }, { verp });
    assert.equal(delayed.kind, 'not-hard');
    const vacation = await list.recordBounce({ envelopeRecipient: 'list-bounces+wendy=example.org@lists.example.com', message: fixture('vacation.eml') }, { verp });
    assert.equal(vacation.kind, 'not-a-bounce');
    assert.deepEqual((await list.list()).entries, []);
  });

  it('lists in address order, removes, and forgets after the TTL', async () => {
    const { list, clock } = setup();
    for (const address of ['zed@example.org', 'amy@example.org']) await list.add({ address, status: '5.1.1', format: 'manual', proof: 'manual' });
    assert.deepEqual((await list.list()).entries.map((e) => e.address), ['amy@example.org', 'zed@example.org']);
    assert.deepEqual([(await list.list(2)).more, (await list.list(1)).more], [false, true], 'more only when entries were left out');
    assert.equal(await list.remove('AMY@example.org'), true);
    assert.equal(await list.remove('amy@example.org'), false);
    clock.advance(31 * 86_400_000);
    assert.equal(await list.isSuppressed('zed@example.org'), false);
  });

  it('keys an address as the greylist does: only A-Z folded, the domain as A-labels', async () => {
    const { list } = setup();
    // The Kelvin sign lower-cases to an ASCII k in Unicode: another person's address.
    await list.add({ address: '\u212Aate@example.org', status: '5.1.1', format: 'manual', proof: 'manual' });
    assert.equal(await list.isSuppressed('kate@example.org'), false);
    assert.equal(await list.isSuppressed('\u212Aate@EXAMPLE.org'), true);
    await list.add({ address: 'Bob@Bücher.example', status: '5.1.1', format: 'manual', proof: 'manual' });
    assert.equal(await list.isSuppressed('bob@xn--bcher-kva.example'), true);
    assert.deepEqual((await list.list()).entries.map((e) => e.address), ['bob@xn--bcher-kva.example', '\u212Aate@example.org']);
  });
});

describe('suppression list: values that are not entries', () => {
  it('reads a damaged or foreign value as no entry, lists the rest, and lets the next bounce replace it', async () => {
    const clock = new ManualClock();
    const store = new MemoryStore({ clock });
    const list = new SuppressionList(store, { clock });
    await list.add({ address: 'good@example.org', status: '5.1.1', format: 'manual', proof: 'manual' });
    await store.set('supp:broken@example.org', '{not json', 86_400_000);
    await store.set('supp:foreign@example.org', JSON.stringify({ address: 'foreign@example.org', status: '5.1.1', firstSeen: 'yesterday', lastSeen: 1, count: 1 }), 86_400_000);
    // JSON reads 1e999 as Infinity: not a count.
    await store.set('supp:huge@example.org', JSON.stringify({ address: 'huge@example.org', status: '5.1.1', format: 'manual', proof: 'manual', firstSeen: 1, lastSeen: 1, count: 1 }).replace('"count":1', '"count":1e999'), 86_400_000);
    await store.set('supp:proof@example.org', JSON.stringify({ address: 'proof@example.org', status: '5.1.1', format: 'manual', proof: 'trust me', firstSeen: 1, lastSeen: 1, count: 1 }), 86_400_000);
    assert.deepEqual((await list.list()).entries.map((e) => e.address), ['good@example.org']);
    assert.equal(await list.get('broken@example.org'), undefined);
    assert.equal(await list.isSuppressed('broken@example.org'), false, 'the senders agree with the listing');
    const replaced = await list.add({ address: 'broken@example.org', status: '5.1.1', format: 'manual', proof: 'manual' });
    assert.deepEqual([replaced.count, replaced.firstSeen], [1, clock.now()]);
  });

  it('gives up with a StoreError when the entry changes under every attempt, instead of spinning for good', async () => {
    const clock = new ManualClock();
    let reads = 0;
    // Another writer that refreshes the entry between each read and its compare-and-set.
    const store = new (class extends MemoryStore {
      override async get(key: string) {
        const row = await super.get(key);
        reads += 1;
        await super.set(key, JSON.stringify({ address: 'busy@example.org', status: '5.1.1', format: 'manual', proof: 'manual', firstSeen: 1, lastSeen: reads, count: reads }), 86_400_000);
        return row;
      }
    })({ clock });
    const list = new SuppressionList(store, { clock });
    await assert.rejects(list.add({ address: 'busy@example.org', status: '5.1.1', format: 'manual', proof: 'manual' }), (err: unknown) => err instanceof StoreError && /supp:busy@example\.org changed under 16 updates in a row/.test(err.message));
    assert.equal(reads, 16);
  });
});

describe('suppression entries read back, fuzzed', () => {
  const entry = { address: 'a@example.org', status: '5.1.1', format: 'manual', proof: 'manual', firstSeen: 1, lastSeen: 1, count: 1 };

  it('reads an entry whose diagnostic or reporting MTA is no text as none: `bounce list` threw a TypeError on it (regression)', async () => {
    const store = new MemoryStore();
    const list = new SuppressionList(store);
    await store.set('supp:a@example.org', JSON.stringify({ ...entry, diagnostic: { toString: 1 } }), 60_000);
    await store.set('supp:b@example.org', JSON.stringify({ ...entry, address: 'b@example.org', reportingMta: 5 }), 60_000);
    await store.set('supp:c@example.org', JSON.stringify({ ...entry, address: 'c@example.org', diagnostic: 'smtp; 550 no such user' }), 60_000);
    assert.deepEqual((await list.list()).entries.map((e) => e.address), ['c@example.org']);
    assert.equal(await list.get('a@example.org'), undefined);
  });

  it('reads an entry of up to 1 MiB, and none longer (another program\'s on a shared Redis)', async () => {
    const store = new MemoryStore();
    const list = new SuppressionList(store);
    await fc.assert(
      fc.asyncProperty(paddedRecords(JSON.stringify(entry), 1_048_576), async ({ text, readable }) => {
        await store.set('supp:a@example.org', text, 60_000);
        assert.equal((await list.get('a@example.org')) !== undefined, readable, `an entry of ${text.length} characters`);
      }),
      { numRuns: 50 },
    );
  });

  it('reads any stored text as an entry of the declared shape or as none, and lists only those', async () => {
    const good = { address: 'a@example.org', status: '5.1.1', diagnostic: 'smtp; 550 5.1.1 no such user', reportingMta: 'dns; mx.example.org', proof: 'batv', format: 'dsn', firstSeen: 1, lastSeen: 2, count: 1 };
    const stored = fc.oneof(
      fc.string({ maxLength: 100 }),
      fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
      fc.tuple(fc.constantFrom(...Object.keys(good)), fc.jsonValue({ maxDepth: 2 })).map(([k, v]) => JSON.stringify({ ...good, [k]: v })),
    );
    await fc.assert(
      fc.asyncProperty(stored, async (value) => {
        const store = new MemoryStore();
        const list = new SuppressionList(store);
        await list.add({ address: 'a@example.org', status: '5.1.1', format: 'dsn', proof: 'batv' });
        const [row] = await store.scan('', 10);
        await store.set(row!.key, value, 60_000);
        const entries = [await list.get('a@example.org'), ...(await list.list()).entries];
        for (const entry of entries) {
          if (entry === undefined) continue;
          for (const text of [entry.address, entry.status, entry.proof, entry.format]) assert.equal(typeof text, 'string');
          for (const n of [entry.firstSeen, entry.lastSeen, entry.count]) assert.ok(Number.isFinite(n), 'Number.isFinite(n)');
          for (const text of [entry.diagnostic, entry.reportingMta]) assert.ok(text === undefined || typeof text === 'string', `optional text ${JSON.stringify(text)}`);
        }
        assert.equal(typeof (await list.isSuppressed('a@example.org')), 'boolean');
      }),
      { numRuns: 300 },
    );
  });
});
