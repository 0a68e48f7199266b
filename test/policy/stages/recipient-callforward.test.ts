// The recipient-callforward stage with the contexts the pipeline builds (test/support/stage-context), against the
// in-process DNS server; the call-forward host is a loopback port where nothing listens.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { validateConfig } from '../../../src/config/schema.js';
import { ManualClock, ManualTimers } from '../../support/manual-time.js';
import { ConfigError } from '../../../src/core/errors.js';
import { createLogger } from '../../../src/core/log.js';
import { parseMailbox } from '../../../src/address/index.js';
import { createNodeResolver } from '../../../src/dns/node-resolver.js';
import { Metrics } from '../../../src/http/metrics.js';
import { callforwardNamespace, recipientCallforwardStage } from '../../../src/policy/stages/recipient-callforward.js';
import type { Stage, StageContext, StageDeps, StageVerdict } from '../../../src/policy/types.js';
import { MemoryStore } from '../../../src/store/memory.js';
import { CalloutEngine } from '../../../src/verify/engine.js';
import { startDnsServer, type DnsTestServer } from '../../support/dns-server.js';
import { acceptAll, pathOf, silentGreeting, startSmtpServers, usersOnly, type SmtpTestServer } from '../../support/smtp-server.js';
import { stageContext } from '../../support/stage-context.js';
import { until, watch } from '../../support/wait.js';

const clock = new ManualClock();

function context(recipient: string, deadlineMs: number, timers?: ManualTimers): StageContext {
  const ctx = stageContext({ client_address: '192.0.2.7', helo_name: 'mail.sender.test', sender: 'user@sender.test', recipient, instance: 'msg-1' }, { clock, deadlineMs, timers });
  assert.ok(ctx.recipient, recipient);
  return ctx;
}

describe('recipient-callforward stage', () => {
  let server: DnsTestServer;
  let silent: SmtpTestServer;
  let primary: SmtpTestServer;
  let users: SmtpTestServer;
  let everyone: SmtpTestServer;
  const stages: Stage[] = [];
  let make: (options: Record<string, unknown>, extra?: Partial<StageDeps>) => Stage;

  before(async () => {
    // A primary whose name server never answers, as a broken or overloaded one can.
    server = await startDnsServer({ 'primary.slow.test': { drop: true } });
    // The resolver waits far longer than the decision deadline, as the defaults do (5 s x 2 tries against a 6 s deadline).
    const resolver = createNodeResolver({ servers: [server.address], timeoutMs: 3000, tries: 1 });
    const store = new MemoryStore({ clock });
    [silent] = (await startSmtpServers(['127.0.0.47'], () => silentGreeting())) as [SmtpTestServer];
    // A primary that takes a moment per RCPT, so that recipients of a burst are verified at once.
    [primary] = (await startSmtpServers(['127.0.0.48'], () => ({ rcpt: (arg) => ({ reply: `550 5.1.1 <${pathOf(arg)}>: User unknown`, delayMs: 50 }) }))) as [SmtpTestServer];
    [users] = (await startSmtpServers(['127.0.0.49'], () => usersOnly(['alice']))) as [SmtpTestServer];
    [everyone] = (await startSmtpServers(['127.0.0.51'], () => acceptAll())) as [SmtpTestServer];
    const config = validateConfig({ callout: { helo: 'verifier.callout.test', allowTargets: ['127.0.0.0/8'], timeouts: { connect: '1s', greeting: '1s', overall: '2s' } } });
    const engine = new CalloutEngine(config, { resolver, store, clock });
    make = (options, extra = {}) => {
      const stage = recipientCallforwardStage.create(recipientCallforwardStage.options.parse(options) as never, { resolver, store, clock, engine, log: createLogger('silent'), ...extra });
      stages.push(stage);
      return stage;
    };
  });

  after(async () => {
    await Promise.all(stages.map((stage) => stage.close?.()));
    await silent.close();
    await primary.close();
    await users.close();
    await everyone.close();
    await server.close();
  });

  it('answers within the deadline when the call-forward hosts\' names cannot be looked up in time', async () => {
    // On the pipeline's timers, which the stage waits on (StageContext.timers): answered at the deadline exactly.
    const timers = new ManualTimers();
    const stage = make({ hosts: ['primary.slow.test'] });
    const answer = watch(stage.evaluate(context('bob@backup.test', 300, timers)));
    await timers.advance(299);
    // Past the deadline (and its grace) the pipeline would fault the stage: faultAction, not this stage's answer.
    assert.equal(answer(), undefined, 'not answered before the deadline');
    await timers.advance(1);
    const verdict = answer();
    assert.ok(verdict, 'answered at the deadline');
    assert.equal(verdict.result, 'in-progress');
    assert.deepEqual(verdict.decision, { kind: 'defer-if-permit', enhanced: '4.1.1', text: 'unverified address: Address verification in progress' });
  });

  it('answers a primary that never greets as unknown (DUNNO) on the retry, not "in progress" until the mail bounces', async () => {
    // A backup MX queues while its primary is down: that is what it is for.
    const kept = new MemoryStore({ clock });
    const stage = make({ hosts: ['127.0.0.47'], port: silent.port }, { store: kept });
    const first = await stage.evaluate(context('carol@backup.test', 200));
    assert.equal(first.result, 'in-progress');
    // Asked again, the running callout is shared; once it has ended its unknown verdict is cached.
    assert.ok(await until(async () => (await stage.evaluate(context('carol@backup.test', 200))).result === 'unknown'), 'the callout ended');
    // The client retries after the cache has let the unknown verdict go (cache.tempfail, 60 s).
    clock.advance(10 * 60_000);
    const retry = await stage.evaluate(context('carol@backup.test', 200));
    assert.equal(retry.result, 'unknown', retry.reason);
    assert.match(retry.reason, /\(the previous callout's answer: this one was still running at the deadline\)$/);
    assert.deepEqual(retry.decision, { kind: 'continue' });
    // In the store, for every process on it, apart from the sender callouts' late verdicts.
    assert.ok(await kept.get(`${callforwardNamespace(['127.0.0.47'], silent.port)}late:carol@backup.test`), 'the late verdict under the call-forward namespace');
    assert.equal(await kept.get('late:carol@backup.test'), undefined);
  });

  it('verifies a burst of recipients at our own primary past the politeness limits meant for other people\'s servers', async () => {
    // The engine's defaults: 4 connections to one host at once, 30 callouts to one domain a
    // minute. Against our primary, a recipient past them was "unknown: rate-limited" (DUNNO):
    // accepted unverified during exactly the dictionary attack the stage is for.
    const stage = make({ hosts: ['127.0.0.48'], port: primary.port });
    const verdicts: StageVerdict[] = [];
    for (let round = 0; round < 4; round++) {
      verdicts.push(...(await Promise.all(Array.from({ length: 10 }, (_, i) => stage.evaluate(context(`guess${round * 10 + i}@burst.test`, 10_000))))));
    }
    assert.deepEqual(
      verdicts.filter((v) => v.result !== 'undeliverable').map((v) => v.reason),
      [],
    );
    assert.equal(verdicts.length, 40);
  });

  it('matches recipient domains as administrators write them: any case, a trailing dot, Unicode or A-labels', async () => {
    // Port 1 on loopback: nothing listens, so a call-forward is refused at once (unknown).
    const stage = make({ hosts: ['127.0.0.46'], port: 1, domains: [' Backup.Test. ', 'bücher.test', '@relay.test'] });
    for (const recipient of ['bob@backup.test', 'bob@BACKUP.test', 'bob@xn--bcher-kva.test', 'bob@bücher.test', 'bob@relay.test']) {
      const verdict = await stage.evaluate(context(recipient, 5000));
      assert.equal(verdict.result, 'unknown', `${recipient} is called forward: ${verdict.reason}`);
    }
    const other = await stage.evaluate(context('bob@sub.backup.test', 5000));
    assert.equal(other.result, 'none');
    assert.match(other.reason, /is not a call-forward domain/);
  });

  it('counts its callouts in callout_callforward_verifications_total, apart from the sender callouts\' callout_verifications_total', async () => {
    // Uncounted, a primary that was down answered every recipient "unknown" (DUNNO) and the
    // outage showed nowhere in /metrics; counted with the sender callouts, it would change
    // their cache hit ratio.
    const metrics = new Metrics();
    const stage = make({ hosts: ['127.0.0.49'], port: users.port }, { metrics });
    assert.equal((await stage.evaluate(context('alice@counted.test', 5000))).result, 'deliverable');
    assert.equal((await stage.evaluate(context('bob@counted.test', 5000))).result, 'undeliverable');
    assert.equal((await stage.evaluate(context('alice@counted.test', 5000))).result, 'deliverable');
    // Port 1 on loopback: nothing listens, as on a primary that is down.
    const down = make({ hosts: ['127.0.0.46'], port: 1 }, { metrics });
    assert.equal((await down.evaluate(context('dave@down.test', 5000))).result, 'unknown');
    const counted = await metrics.registry.getSingleMetric('callout_callforward_verifications_total')?.get();
    assert.ok(counted, 'the metric is registered');
    assert.deepEqual(
      Object.fromEntries(counted.values.map((v) => [`${String(v.labels['verdict'])}/${String(v.labels['source'])}`, v.value])),
      { 'deliverable/probe': 1, 'undeliverable/probe': 1, 'deliverable/address-cache': 1, 'unknown/probe': 1 },
    );
    assert.match(counted.help, /call-forward/i);
    const senderCallouts = await metrics.registry.getSingleMetric('callout_verifications_total')?.get();
    assert.deepEqual(senderCallouts?.values, []);
  });

  it('rejects a recipient the primary refuses with 550 5.1.1, even where callout.allowTargets leaves the primary out', async () => {
    // The hosts are the administrator's own: allowTargets guards callouts to other people's exchangers.
    const narrow = validateConfig({ callout: { helo: 'verifier.callout.test', allowTargets: ['127.0.0.1/32'], timeouts: { connect: '1s', greeting: '1s', overall: '2s' } } });
    const store = new MemoryStore({ clock });
    const resolver = createNodeResolver({ servers: [server.address], timeoutMs: 1000, tries: 1 });
    const senderEngine = new CalloutEngine(narrow, { resolver, store, clock });
    const stage = make({ hosts: ['127.0.0.49'], port: users.port }, { engine: senderEngine, store, resolver });
    const verdict = await stage.evaluate(context('bob@narrow.test', 5000));
    assert.equal(verdict.result, 'undeliverable', verdict.reason);
    const { kind, code, enhanced, text } = verdict.decision as { kind: string; code?: number; enhanced?: string; text?: string };
    assert.deepEqual({ kind, code, enhanced }, { kind: 'reject', code: 550, enhanced: '5.1.1' });
    assert.match(text ?? '', /^undeliverable address: /);
    // Cached apart (cf:): the sender callouts must not answer bob@narrow.test from a call-forward.
    const bob = parseMailbox('bob@narrow.test');
    assert.ok(bob.ok, 'bob.ok');
    assert.equal(senderEngine.verifyNow(bob.value), undefined);
  });

  it('asks another primary afresh (hosts or port changed and reloaded), while the same hosts written otherwise keep their answers', async () => {
    // Under one namespace for every call-forward the wrong primary's 550 went on rejecting carol
    // after the administrator had named the right one: for cache.addressNegative, 2 h.
    const store = new MemoryStore({ clock });
    const wrong = make({ hosts: ['127.0.0.49'], port: users.port }, { store });
    assert.equal((await wrong.evaluate(context('carol@moved.test', 5000))).result, 'undeliverable');
    const asked = users.connectionCount;
    // The same primary as a reload may write it: in another order, twice, another form of its address.
    const same = make({ hosts: ['127.0.0.49', '::ffff:127.0.0.49'], port: users.port }, { store });
    assert.equal((await same.evaluate(context('carol@moved.test', 5000))).result, 'undeliverable');
    assert.equal(users.connectionCount, asked, 'the cached answer, not a new callout');
    const right = make({ hosts: ['127.0.0.51'], port: everyone.port }, { store });
    const verdict = await right.evaluate(context('carol@moved.test', 5000));
    assert.equal(verdict.result, 'deliverable', verdict.reason);
    assert.equal(everyone.connectionCount, 1, 'the new primary was asked');
  });

  it('does not call forward a request from one of the hosts: it decides its own recipients', async () => {
    const before = users.connectionCount;
    const stage = make({ hosts: ['127.0.0.49'], port: users.port });
    const verdict = await stage.evaluate({ ...context('bob@own.test', 5000), clientAddress: '127.0.0.49' });
    assert.equal(verdict.result, 'none', verdict.reason);
    assert.match(verdict.reason, /client 127\.0\.0\.49 is a call-forward host/);
    assert.deepEqual(verdict.decision, { kind: 'continue' });
    assert.equal(users.connectionCount, before, 'no callout was made');
  });

  it('refuses a domain entry that could never match, naming it', () => {
    assert.throws(
      () => make({ hosts: ['127.0.0.46'], domains: ['example.org', 'example .org'] }),
      (err: unknown) => err instanceof ConfigError && /^recipient-callforward\.domains: "example \.org" is not a domain/.test(err.message),
    );
  });

  it('refuses hosts that are neither an IP address nor a host name, which would leave every recipient unverified', () => {
    for (const host of ['[10.0.0.5]', 'mx.example.org:2525', 'mx.example.org 10.0.0.5', '']) {
      const parsed = recipientCallforwardStage.options.safeParse({ hosts: ['10.0.0.6', host] });
      assert.equal(parsed.success, false, host);
      assert.match(parsed.error?.issues[0]?.message ?? '', /expected an IP address or a host name/, host);
      assert.deepEqual(parsed.error?.issues[0]?.path, ['hosts', 1], host);
    }
    // A single label too: the resolver may complete it from resolv.conf's search list.
    assert.ok(recipientCallforwardStage.options.safeParse({ hosts: ['10.0.0.5', '2001:db8::25', 'mx.example.org', 'mx.example.org.', 'exchange'] }).success, 'recipientCallforwardStage.options.safeParse({ hosts: [\'10.0.0.5\', \'2001:db8::25\', \'mx.example.org...');
  });
});

describe('callforwardNamespace', () => {
  it('names who answers: the same hosts in any order, case or form share one, another host or port does not', () => {
    const namespace = callforwardNamespace(['mx1.example.net', 'mx2.example.net'], 25);
    assert.match(namespace, /^cf:[0-9a-f]{8}:$/);
    for (const hosts of [['mx2.example.net', 'mx1.example.net'], ['MX1.Example.NET.', 'mx2.example.net', 'mx2.example.net']]) {
      assert.equal(callforwardNamespace(hosts, 25), namespace, hosts.join(' '));
    }
    assert.equal(callforwardNamespace(['mx.bücher.example'], 25), callforwardNamespace(['mx.xn--bcher-kva.example'], 25), 'a U-label as its A-label');
    assert.equal(callforwardNamespace(['2001:DB8::1'], 25), callforwardNamespace(['2001:db8:0::1'], 25), 'an IPv6 address in another form');
    assert.notEqual(callforwardNamespace(['mx1.example.net', 'mx2.example.net'], 2525), namespace, 'another port');
    assert.notEqual(callforwardNamespace(['mx1.example.net'], 25), namespace, 'another set of hosts');
  });
});
