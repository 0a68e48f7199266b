// Greylist.decide: the outcome at once when nothing is written and the rows are at hand, a promise otherwise.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManualClock } from '../../support/manual-time.js';
import { POSTGREY, triplet } from '../../support/greylist-request.js';
import { Greylist, type GreylistOutcome, type GreylistSettings } from '../../../src/checks/greylist/index.js';
import { MemoryStore, SqliteStore } from '../../../src/store/index.js';
import { ASK_LATER, type Store } from '../../../src/store/types.js';

const S = 1000;

const dir = mkdtempSync(join(tmpdir(), 'callout-greylist-decide-'));
const stores: Store[] = [];
after(async () => {
  for (const store of stores) await store.close();
  rmSync(dir, { recursive: true, force: true });
});

const kinds: Array<[string, (clock: ManualClock) => Promise<Store>]> = [
  ['memory', async (clock) => new MemoryStore({ clock })],
  ['sqlite', (clock) => SqliteStore.open(join(dir, `${stores.length}.sqlite`), { clock })],
];

/** The outcome decide() gave at once; fails when it gave a promise. */
function atOnce(answer: GreylistOutcome | Promise<GreylistOutcome>, what: string): GreylistOutcome {
  assert.ok(!(answer instanceof Promise), `expected ${what} to be decided at once, without a promise`);
  return answer;
}

for (const [kind, open] of kinds) {
  describe(`Greylist.decide on ${kind}`, () => {
    async function setup(settings: Partial<GreylistSettings> = {}) {
      const clock = new ManualClock();
      const store = await open(clock);
      stores.push(store);
      return { clock, store, greylist: new Greylist(store, clock, { ...POSTGREY, ...settings }) };
    }

    it('answers a triplet passed within the hour at once, as check() does, and writes nothing', async () => {
      const { clock, store, greylist } = await setup();
      await greylist.check(triplet());
      clock.advance(300 * S);
      assert.equal((await greylist.check(triplet())).kind, 'pass');
      const row = await store.get(greylist.tripletKey('192.0.2.0/24', 'bob@sender.example', 'alice@example.test'));
      clock.advance(59 * 60 * S);
      const outcome = atOnce(greylist.decide(triplet()), 'a repeat of a passed triplet');
      assert.deepEqual(outcome, { kind: 'pass', reason: 'triplet', firstPass: false, waitedMs: 3840 * S });
      assert.deepEqual(await greylist.check(triplet()), outcome, 'check() gives the same outcome');
      assert.deepEqual(await store.get(greylist.tripletKey('192.0.2.0/24', 'bob@sender.example', 'alice@example.test')), row, 'the row is as it was');
    });

    it('answers a client auto-allowed within the hour at once', async () => {
      const { greylist } = await setup();
      await greylist.allowClient('192.0.2.10');
      assert.deepEqual(atOnce(greylist.decide(triplet({ recipient: 'new@example.test' })), 'an auto-allowed client'), { kind: 'pass', reason: 'client-auto-allow', count: 5 });
    });

    it('with domainAutoAllow, answers a sender domain auto-allowed within the hour, and a triplet passed within the hour, at once (the domain\'s row was read with get: never at once)', async () => {
      const { clock, greylist } = await setup({ domainAutoAllow: 2, autoAllowClients: 0 });
      await greylist.check(triplet({ sender: 'a@pool.example' }));
      clock.advance(300 * S);
      assert.equal((await greylist.check(triplet({ sender: 'a@pool.example' }))).kind, 'pass');
      clock.advance(60 * S);
      assert.deepEqual(atOnce(greylist.decide(triplet({ sender: 'a@pool.example' })), 'a passed triplet of a domain not yet auto-allowed'), { kind: 'pass', reason: 'triplet', firstPass: false, waitedMs: 360 * S });
      await greylist.check(triplet({ sender: 'b@pool.example' }));
      clock.advance(300 * S);
      assert.equal((await greylist.check(triplet({ sender: 'b@pool.example' }))).kind, 'pass');
      const domainPass = { kind: 'pass', reason: 'domain-auto-allow', domain: 'pool.example' };
      assert.deepEqual(atOnce(greylist.decide(triplet({ sender: 'c@pool.example', recipient: 'new@example.test' })), 'a sender of an auto-allowed domain'), domainPass);
      clock.advance(3600 * S);
      const refreshed = greylist.decide(triplet({ sender: 'c@pool.example', recipient: 'new@example.test' }));
      assert.ok(refreshed instanceof Promise, "expected a promise for an auto-allowed domain whose record's last-seen time is an hour old");
      assert.deepEqual(await refreshed, domainPass);
      assert.deepEqual(atOnce(greylist.decide(triplet({ sender: 'd@pool.example', recipient: 'new@example.test' })), 'the domain once its record is refreshed'), domainPass);
    });

    it('gives a promise when it writes: a new triplet, a passed triplet an hour later, an auto-allowed client an hour later', async () => {
      const { clock, store, greylist } = await setup();
      const first = greylist.decide(triplet());
      assert.ok(first instanceof Promise, 'expected a promise for a new triplet, whose row is written');
      assert.equal((await first).kind, 'defer');
      clock.advance(300 * S);
      await greylist.check(triplet());
      clock.advance(3600 * S);
      const refreshed = greylist.decide(triplet());
      assert.ok(refreshed instanceof Promise, 'expected a promise for a passed triplet whose last-seen time is an hour old');
      assert.deepEqual(await refreshed, { kind: 'pass', reason: 'triplet', firstPass: false, waitedMs: 3900 * S });
      assert.equal((await store.get(greylist.tripletKey('192.0.2.0/24', 'bob@sender.example', 'alice@example.test')))?.value.split(',')[1], String(clock.now()), 'last-seen refreshed');
      await greylist.allowClient('192.0.2.10');
      clock.advance(3600 * S);
      const counted = greylist.decide(triplet());
      assert.ok(counted instanceof Promise, 'expected a promise for an auto-allowed client whose last-seen time is an hour old');
      assert.deepEqual(await counted, { kind: 'pass', reason: 'client-auto-allow', count: 5 });
    });
  });
}

describe('Greylist.decide on a store that cannot peek (Redis)', () => {
  it('reads the client and the triplet together and gives a promise, with check()\'s outcome', async () => {
    const clock = new ManualClock();
    const reads: string[][] = [];
    class RemoteStore extends MemoryStore {
      override peek(): typeof ASK_LATER {
        return ASK_LATER;
      }
      override getMany(keys: readonly string[]) {
        reads.push([...keys]);
        return super.getMany(keys);
      }
    }
    const greylist = new Greylist(new RemoteStore({ clock }), clock, POSTGREY);
    await greylist.check(triplet());
    clock.advance(300 * S);
    await greylist.check(triplet());
    clock.advance(60 * S);
    reads.length = 0;
    const answer = greylist.decide(triplet());
    assert.ok(answer instanceof Promise, 'expected a promise where only get() can tell');
    assert.deepEqual(await answer, { kind: 'pass', reason: 'triplet', firstPass: false, waitedMs: 360 * S });
    assert.equal(reads.length, 1, 'one read of both keys');
  });
});
