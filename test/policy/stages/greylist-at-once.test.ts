// The greylist stage answers at once (no promise) when nothing has to be waited for.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger } from '../../../src/core/log.js';
import { greylistStage } from '../../../src/policy/stages/greylist.js';
import type { StageDeps, StageVerdict } from '../../../src/policy/types.js';
import { MemoryStore } from '../../../src/store/index.js';
import { ManualClock } from '../../support/manual-time.js';
import { stageContext } from '../../support/stage-context.js';

const S = 1000;

describe('greylist stage answers at once', () => {
  const clock = new ManualClock();
  const store = new MemoryStore({ clock });
  const deps: StageDeps = { resolver: undefined as never, store, clock, log: createLogger('silent') };
  const stage = greylistStage.create(greylistStage.options.parse({ whitelistClients: ['203.0.113.0/24'], whitelistRecipients: ['postmaster@'] }) as never, deps);
  after(() => stage.close?.());
  const request = (over: Record<string, string> = {}) =>
    stageContext({ client_address: '192.0.2.50', client_name: 'mx.sender.example', helo_name: 'mx.sender.example', sender: 'bob@sender.example', recipient: 'alice@example.test', instance: 'i', ...over }, { clock });

  /** The verdict the stage gave at once; fails when it gave a promise. */
  function atOnce(answer: StageVerdict | Promise<StageVerdict>, what: string): StageVerdict {
    assert.ok(!(answer instanceof Promise), `expected ${what} to be answered at once, without a promise`);
    return answer;
  }

  it('a whitelisted client and a whitelisted recipient, without reading the store', async () => {
    // A stage of its own over a store that names every call made to it.
    const calls: string[] = [];
    const watched = new Proxy(store, {
      get(target, key) {
        const member: unknown = Reflect.get(target, key, target);
        if (typeof member !== 'function') return member;
        return (...args: unknown[]) => (calls.push(String(key)), (member as (...a: unknown[]) => unknown).apply(target, args));
      },
    });
    const listed = greylistStage.create(greylistStage.options.parse({ whitelistClients: ['203.0.113.0/24'], whitelistRecipients: ['postmaster@'] }) as never, { ...deps, store: watched });
    after(() => listed.close?.());
    assert.equal(atOnce(listed.evaluate(request({ client_address: '203.0.113.9' })), 'a whitelisted client').result, 'whitelisted');
    assert.equal(atOnce(listed.evaluate(request({ recipient: 'postmaster@example.test' })), 'a whitelisted recipient').result, 'whitelisted');
    assert.deepEqual(calls, [], 'expected no call to the store for a whitelisted client or recipient');
    // The watch itself sees a read: a client that is not whitelisted is looked up (a triplet of its own).
    await listed.evaluate(request({ client_address: '198.51.100.7', sender: 'watch@sender.example' }));
    assert.ok(calls.length > 0, 'expected the store to be read for a client that is not whitelisted');
  });

  it('without skip.spfPassDomains, never reads the parsed sender', () => {
    const ctx = request({ client_address: '203.0.113.9' });
    Object.defineProperty(ctx, 'sender', {
      get() {
        throw new Error('the greylist stage read ctx.sender');
      },
    });
    assert.equal(atOnce(stage.evaluate(ctx), 'a whitelisted client').result, 'whitelisted');
  });

  it('a known triplet within the hour, with the verdict and evidence an awaited answer had', async () => {
    const first = stage.evaluate(request());
    assert.ok(first instanceof Promise, 'expected a promise for a new triplet, whose row is written');
    assert.equal((await first).result, 'new');
    clock.advance(300 * S);
    assert.equal((await stage.evaluate(request({ instance: 'j' }))).result, 'passed');
    clock.advance(60 * S);
    const known = atOnce(stage.evaluate(request({ instance: 'k' })), 'a known triplet');
    assert.deepEqual(known, {
      stage: 'greylist',
      result: 'passed',
      reason: 'triplet seen before',
      decision: { kind: 'continue' },
      evidence: { identity: '192.0.2.0/24', sender: 'bob@sender.example', kind: 'pass', reason: 'triplet', firstPass: false, waitedMs: 360 * S },
    });
  });
});
