// The iprev stage against the in-process DNS server, with the contexts the pipeline builds (test/support/stage-context).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ManualClock, ManualTimers } from '../../support/manual-time.js';
import { createLogger } from '../../../src/core/log.js';
import { createNodeResolver } from '../../../src/dns/node-resolver.js';
import type { Resolver } from '../../../src/dns/types.js';
import { UNANSWERED_REMEMBERED_MS } from '../../../src/checks/iprev/index.js';
import { iprevStage } from '../../../src/policy/stages/iprev.js';
import type { Stage, StageContext } from '../../../src/policy/types.js';
import { MemoryStore } from '../../../src/store/memory.js';
import { reverseName, startDnsServer, type DnsTestServer } from '../../support/dns-server.js';
import { stageContext } from '../../support/stage-context.js';
import { buildZone, SuiteResolver } from '../../support/spf-suite.js';
import { turnsUntil, watch } from '../../support/wait.js';
import { validateConfig } from '../../../src/config/schema.js';
import { buildPipeline } from '../../../src/policy/pipeline.js';

function context(clientAddress: string, deadlineMs: number, timers?: ManualTimers): StageContext {
  return stageContext({ client_address: clientAddress, helo_name: 'mail.sender.test', sender: 'user@sender.test', recipient: 'rcpt@receiver.test', instance: 'msg-1' }, { deadlineMs, timers });
}

describe('iprev stage', () => {
  let server: DnsTestServer;
  let resolver: Resolver;
  let stage: Stage;

  /** The stage with `options` (authservId mx.receiver.test unless given), over the in-process DNS server. */
  const iprevWith = (options: Record<string, unknown>): Stage => {
    const clock = new ManualClock();
    const deps = { resolver, store: new MemoryStore({ clock }), clock, log: createLogger('silent') };
    return iprevStage.create(iprevStage.options.parse({ authservId: 'mx.receiver.test', ...options }) as never, deps);
  };

  before(async () => {
    server = await startDnsServer({
      [reverseName('127.0.0.20')]: { PTR: ['mail.sender.test'] },
      'mail.sender.test': { A: ['127.0.0.20'] },
      // A reverse zone whose server never answers, as a spammer's own can be made to.
      [reverseName('127.0.0.21')]: { drop: true },
      [reverseName('127.0.0.24')]: { drop: true },
      [reverseName('127.0.0.25')]: { servfail: true },
      // Two PTR names, only the second of which leads back (127.0.0.22 has none at all: permerror).
      [reverseName('127.0.0.23')]: { PTR: ['stale.sender.test', 'mail23.sender.test'] },
      'mail23.sender.test': { A: ['127.0.0.23'] },
    });
    // The resolver waits far longer than the decision deadline, as the defaults do (3 s x 2 tries against a 6 s deadline).
    resolver = createNodeResolver({ servers: [server.address], timeoutMs: 3000, tries: 1 });
    stage = iprevWith({ actions: { permerror: 'reject' } });
  });

  after(async () => {
    await server.close();
  });

  it('a defer-if-permit action carries RFC 7372\'s 4.7.25, which Postfix would otherwise make 4.7.1, and the deferText', async () => {
    const deferring = iprevWith({ actions: { temperror: 'defer-if-permit' } });
    const verdict = await deferring.evaluate(context('127.0.0.21', 300));
    assert.equal(verdict.result, 'temperror');
    assert.deepEqual(verdict.decision, { kind: 'defer-if-permit', enhanced: '4.7.25', text: `Client host reverse DNS of 127.0.0.21 could not be checked, try again later (${verdict.reason})` });
  });

  it('continues on every result by default (it only reports), with no actions given or only some', async () => {
    // 127.0.0.23 fails with maxNames 1 (its first PTR name does not lead back); 127.0.0.25's zone answers SERVFAIL.
    const clients = [['127.0.0.20', 'pass'], ['127.0.0.23', 'fail'], ['127.0.0.25', 'temperror'], ['127.0.0.22', 'permerror']] as const;
    for (const options of [{}, { actions: {} }]) {
      const reporting = iprevWith({ ...options, maxNames: 1 });
      for (const [ip, result] of clients) {
        const verdict = await reporting.evaluate(context(ip, 5000));
        assert.equal(verdict.result, result, `${ip} with ${JSON.stringify(options)}`);
        assert.deepEqual(verdict.decision, { kind: 'continue' }, `${result} with ${JSON.stringify(options)}`);
      }
    }
  });

  it('defers with 450 4.7.25 by default, and fills {result}, {ip} and {reason} in a configured text', async () => {
    const deferred = await iprevWith({ actions: { temperror: 'defer' } }).evaluate(context('127.0.0.25', 5000));
    assert.equal(deferred.result, 'temperror');
    assert.deepEqual(deferred.decision, { kind: 'defer', code: 450, enhanced: '4.7.25', text: `Client host reverse DNS of 127.0.0.25 could not be checked, try again later (${deferred.reason})` });
    const worded = iprevWith({ actions: { permerror: 'reject', temperror: 'defer' }, rejectText: '{result}/{ip}/{reason}', deferText: '{reason}/{ip}/{result}' });
    const rejected = await worded.evaluate(context('127.0.0.22', 5000));
    assert.equal(rejected.decision.kind === 'reject' && rejected.decision.text, `permerror/127.0.0.22/${rejected.reason}`);
    const later = await worded.evaluate(context('127.0.0.25', 5000));
    assert.equal(later.decision.kind === 'defer' && later.decision.text, `${later.reason}/127.0.0.25/temperror`);
  });

  it('looks up 10 PTR names forward by default, and takes maxNames from 1 to 100', async () => {
    // Eleven PTR names, of which only the last leads back to the client.
    const names = Array.from({ length: 11 }, (_, i) => ({ PTR: `n${i}.sender.test` }));
    const zone = buildZone({ [reverseName('192.0.2.6')]: names, 'n9.sender.test': [{ A: '192.0.2.99' }], 'n10.sender.test': [{ A: '192.0.2.6' }] });
    const clock = new ManualClock();
    const withZone = (options: Record<string, unknown>) =>
      iprevStage.create(iprevStage.options.parse({ authservId: 'mx.receiver.test', ...options }) as never, { resolver: new SuiteResolver(zone), store: new MemoryStore({ clock }), clock, log: createLogger('silent') });
    const capped = await withZone({}).evaluate(context('192.0.2.6', 5000));
    assert.equal(capped.result, 'fail', capped.reason);
    assert.equal((capped.evidence as { ptrNames: string[] }).ptrNames.length, 10, 'ten names looked up');
    assert.equal((await withZone({ maxNames: 11 }).evaluate(context('192.0.2.6', 5000))).result, 'pass');
    for (const [maxNames, valid] of [[0, false], [1, true], [100, true], [101, false]] as const) {
      assert.equal(iprevStage.options.safeParse({ maxNames }).success, valid, `maxNames ${maxNames}`);
    }
  });

  it("logs the check's names and lookups as the verdict's evidence", async () => {
    const verdict = await stage.evaluate(context('127.0.0.20', 5000));
    assert.deepEqual(verdict.evidence, {
      result: 'pass',
      kind: 'confirmed',
      reason: '127.0.0.20 has PTR mail.sender.test, which resolves back to it',
      ip: '127.0.0.20',
      ptrNames: ['mail.sender.test'],
      confirmedNames: ['mail.sender.test'],
      lookups: [
        { type: 'PTR', name: reverseName('127.0.0.20'), answer: 'records', data: ['mail.sender.test'] },
        { type: 'A', name: 'mail.sender.test', answer: 'records', data: ['127.0.0.20'] },
      ],
    });
  });

  it('runs at RCPT by default, and may be configured in any state from CONNECT to END-OF-MESSAGE', async () => {
    const clock = new ManualClock();
    const deps = { resolver, store: new MemoryStore({ clock }), clock, log: createLogger('silent') };
    const request = (state: string) => ({ request: 'smtpd_access_policy', protocol_state: state, client_address: '127.0.0.20', helo_name: 'mail.sender.test', sender: 'user@sender.test', recipient: state === 'RCPT' ? 'rcpt@receiver.test' : '', instance: `states-${state}` });
    const ran = async (pipeline: ReturnType<typeof buildPipeline>, state: string) => (await pipeline.decide(request(state))).verdicts.some((verdict) => verdict.stage === 'iprev');
    const byDefault = buildPipeline(validateConfig({ policy: { stages: [{ name: 'iprev', authservId: 'mx.receiver.test' }] } }), deps);
    assert.equal(await ran(byDefault, 'MAIL'), false, 'not at MAIL by default');
    assert.equal(await ran(byDefault, 'RCPT'), true, 'at RCPT by default');
    const states = ['CONNECT', 'EHLO', 'HELO', 'MAIL', 'RCPT', 'DATA', 'END-OF-MESSAGE'];
    const everywhere = buildPipeline(validateConfig({ policy: { stages: [{ name: 'iprev', authservId: 'mx.receiver.test', states }] } }), deps);
    for (const state of states) assert.equal(await ran(everywhere, state), true, `configured at ${state}`);
  });

  it("rejects and defers with RFC 7372's X.7.25, the configured codes and each its own text", async () => {
    const rejected = await stage.evaluate(context('127.0.0.22', 5000));
    assert.equal(rejected.result, 'permerror');
    assert.deepEqual(rejected.decision, { kind: 'reject', code: 550, enhanced: '5.7.25', text: `Client host rejected: reverse DNS of 127.0.0.22 does not confirm (${rejected.reason})` });
    const configured = iprevWith({ actions: { temperror: 'defer', permerror: 'reject' }, rejectCode: 554, deferCode: 451 });
    assert.deepEqual((await configured.evaluate(context('127.0.0.22', 5000))).decision, { ...rejected.decision, code: 554 });
    const deferred = await configured.evaluate(context('127.0.0.21', 300));
    assert.deepEqual(deferred.decision, { kind: 'defer', code: 451, enhanced: '4.7.25', text: `Client host reverse DNS of 127.0.0.21 could not be checked, try again later (${deferred.reason})` });
    // A reject code must be permanent and a defer code temporary, or Postfix would act on the other.
    assert.equal(iprevStage.options.safeParse({ rejectCode: 450 }).success, false);
    assert.equal(iprevStage.options.safeParse({ deferCode: 550 }).success, false);
  });

  it('looks up no more than maxNames PTR names forward', async () => {
    const one = iprevWith({ maxNames: 1 });
    assert.equal((await one.evaluate(context('127.0.0.23', 5000))).result, 'fail');
    assert.equal((await stage.evaluate(context('127.0.0.23', 5000))).result, 'pass');
  });

  it('reports pass over loopback DNS', async () => {
    const verdict = await stage.evaluate(context('127.0.0.20', 5000));
    assert.equal(verdict.result, 'pass');
    assert.deepEqual(verdict.headers, ['Authentication-Results: mx.receiver.test; iprev=pass (mail.sender.test) policy.iprev=127.0.0.20']);
  });

  it('authenticationResults: false adds no header', async () => {
    const quiet = iprevWith({ authenticationResults: false });
    const verdict = await quiet.evaluate(context('127.0.0.20', 5000));
    assert.equal(verdict.result, 'pass');
    assert.deepEqual(verdict.headers, []);
  });

  it('a reverse zone that never answers is a temperror by the deadline, not a stage that outlasts it', async () => {
    // On the pipeline's timers, which the stage waits on (StageContext.timers): answered at the deadline exactly.
    const timers = new ManualTimers();
    const answer = watch(iprevWith({}).evaluate(context('127.0.0.21', 300, timers)));
    await timers.advance(299);
    // Past the deadline (and its grace) the pipeline would fault the stage and skip the ones after it.
    assert.equal(answer(), undefined, 'not answered before the deadline');
    await timers.advance(1);
    const verdict = answer();
    assert.ok(verdict, 'answered at the deadline');
    assert.equal(verdict.result, 'temperror');
    assert.deepEqual(verdict.decision, { kind: 'continue' });
    assert.match(verdict.headers?.[0] ?? '', /; iprev=temperror \(.*\) policy\.iprev=127\.0\.0\.21$/);
  });

  it('a reverse zone that never answers takes timeoutMs (2000 ms by default), not the whole deadline of the stages after it', async () => {
    // Its timeout is not cached: with the deadline's 6 s taken at every retry, an spf stage
    // after it had 0 ms left and answered temperror (451) to a sender whose SPF passes.
    for (const [options, bound] of [[{}, 2000], [{ timeoutMs: 500 }, 500]] as const) {
      const timers = new ManualTimers();
      const answer = watch(iprevWith(options).evaluate(context('127.0.0.21', 6000, timers)));
      await timers.advance(bound - 1);
      assert.equal(answer(), undefined, `not answered before ${bound} ms`);
      await timers.advance(1);
      assert.equal(answer()?.result, 'temperror', `temperror at ${bound} ms`);
    }
    for (const [timeoutMs, valid] of [[99, false], [100, true], [120_000, true], [120_001, false]] as const) {
      assert.equal(iprevStage.options.safeParse({ timeoutMs }).success, valid, `timeoutMs ${timeoutMs}`);
    }
  });

  it('a client whose check ran out of timeoutMs is answered temperror at once for a minute, then asked again; no other client is', async () => {
    // Its timeout is not cached and the resolver goes on trying: every RCPT of a message waited 2 s again.
    const timers = new ManualTimers();
    const remembering = iprevWith({});
    const asked = (ip: string) => server.queries.filter((query) => query.type === 'PTR' && query.name === reverseName(ip)).length;
    /** The request's verdict so far, after a few turns of the event loop with no time moved (fewer once it asked the DNS server), and the PTR queries it sent then. */
    const atOnce = async (ip: string) => {
      const before = asked(ip);
      const answer = watch(remembering.evaluate(context(ip, 6000, timers)));
      for (let turn = 0; turn < 100 && answer() === undefined && asked(ip) === before; turn += 1) await new Promise((resolve) => setImmediate(resolve));
      return { answer, asked: asked(ip) - before };
    };
    const waitsItsBound = async (ip: string, bound: number) => {
      const before = asked(ip);
      const first = await atOnce(ip);
      assert.equal(first.answer(), undefined, `${ip}: not answered at once`);
      await turnsUntil(() => asked(ip) > before, `the PTR query of ${ip}`);
      await timers.advance(bound);
      const verdict = first.answer();
      assert.equal(verdict?.reason, `the lookups for ${ip} did not complete within ${bound} ms`);
    };

    await waitsItsBound('127.0.0.21', 2000);
    const ranOutAt = timers.now();
    await timers.advance(12_000);
    const second = await atOnce('127.0.0.21');
    assert.equal(second.asked, 0, 'the DNS server is not asked again');
    assert.equal(second.answer()?.result, 'temperror', 'answered at once');
    assert.equal(second.answer()?.reason, 'the lookups for 127.0.0.21 did not complete within 2000 ms 12 s ago; not asked again for 48 s');
    assert.match(second.answer()?.headers?.[0] ?? '', /; iprev=temperror \(.* 12 s ago; not asked again for 48 s\) policy\.iprev=127\.0\.0\.21$/);

    // Another client is asked, and waits its own bound.
    await waitsItsBound('127.0.0.24', 2000);
    // One whose zone answers, even with a temperror of its own (SERVFAIL), is asked every time.
    const [passing, failing] = [asked('127.0.0.20'), asked('127.0.0.25')];
    for (const ip of ['127.0.0.20', '127.0.0.20', '127.0.0.25', '127.0.0.25']) {
      const verdict = await remembering.evaluate(context(ip, 6000, timers));
      assert.equal(verdict.result, ip === '127.0.0.20' ? 'pass' : 'temperror', ip);
    }
    assert.equal(asked('127.0.0.20') - passing, 2, 'a client that passed is asked again');
    assert.ok(asked('127.0.0.25') - failing >= 2, `a client whose zone fails is asked again (${asked('127.0.0.25') - failing} queries)`);

    await timers.advance(ranOutAt + UNANSWERED_REMEMBERED_MS - 1 - timers.now());
    const last = await atOnce('127.0.0.21');
    assert.equal(last.answer()?.reason, 'the lookups for 127.0.0.21 did not complete within 2000 ms 59 s ago; not asked again for 1 s');
    await timers.advance(1);
    const before = asked('127.0.0.21');
    const again = await atOnce('127.0.0.21');
    assert.equal(again.answer(), undefined, 'not answered at once once the minute is over');
    await turnsUntil(() => asked('127.0.0.21') > before, 'the PTR query once the minute is over');
    await timers.advance(2000);
    assert.equal(again.answer()?.reason, 'the lookups for 127.0.0.21 did not complete within 2000 ms', 'remembered again');
    assert.equal((await atOnce('127.0.0.21')).answer()?.reason, 'the lookups for 127.0.0.21 did not complete within 2000 ms 0 s ago; not asked again for 60 s');
  });

  it('a check cut short by the decision deadline (less left than timeoutMs) is not remembered: it says nothing of the zone', async () => {
    const timers = new ManualTimers();
    const remembering = iprevWith({});
    const asked = () => server.queries.filter((query) => query.type === 'PTR' && query.name === reverseName('127.0.0.24')).length;
    for (let round = 1; round <= 2; round += 1) {
      const before = asked();
      const answer = watch(remembering.evaluate(context('127.0.0.24', 300, timers)));
      await turnsUntil(() => asked() > before, `the PTR query of round ${round}`);
      await timers.advance(300);
      assert.equal(answer()?.reason, 'the lookups for 127.0.0.24 did not complete within 300 ms', `round ${round}`);
    }
  });

  it("Postfix's client_address=unknown is no result and no header, not a permerror to act on", async () => {
    for (const address of ['unknown', '']) {
      const verdict = await stage.evaluate(context(address, 5000));
      assert.equal(verdict.result, 'none', address);
      assert.deepEqual(verdict.decision, { kind: 'continue' });
      assert.equal(verdict.headers, undefined);
    }
  });
});
