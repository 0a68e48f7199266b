// The spf and iprev stages called directly with the contexts the pipeline builds (test/support/stage-context).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createLogger } from '../../../src/core/log.js';
import { ConfigError } from '../../../src/core/errors.js';
import { validateConfig } from '../../../src/config/schema.js';
import { buildPipeline } from '../../../src/policy/pipeline.js';
import { ManualClock, ManualTimers } from '../../support/manual-time.js';
import type { DnsAnswer, Resolver } from '../../../src/dns/types.js';
import { iprevStage } from '../../../src/policy/stages/iprev.js';
import { STAGE_DEFINITIONS } from '../../../src/policy/stages/index.js';
import { spfStage } from '../../../src/policy/stages/spf.js';
import type { StageContext, StageDeps } from '../../../src/policy/types.js';
import { MemoryStore } from '../../../src/store/memory.js';
import { createNodeResolver } from '../../../src/dns/node-resolver.js';
import { startDnsServer } from '../../support/dns-server.js';
import { buildZone, SuiteResolver } from '../../support/spf-suite.js';
import { heapAfterGc } from '../../support/heap.js';
import { stageContext, type GivenContext } from '../../support/stage-context.js';

/** V8's gc(), which Node exposes only under --expose-gc: the flag is set now and the function taken from a new context. */
const zone = buildZone({
  'pass.example': [{ TXT: 'v=spf1 ip4:192.0.2.0/24 -all' }],
  'fail.example': [{ TXT: 'v=spf1 -all exp=why.fail.example' }],
  'why.fail.example': [{ TXT: '%{i} is not allowed for %{d}' }],
  'soft.example': [{ TXT: 'v=spf1 ~all' }],
  'neutral.example': [{ TXT: 'v=spf1 ip4:10.0.0.1' }],
  'xn--bcher-kva.example': [{ TXT: 'v=spf1 ip4:192.0.2.0/24 -all' }],
  'broken.example': [{ TXT: 'v=spf1 foo:bar' }],
  'slow.example': ['TIMEOUT'],
  'voids.example': [{ TXT: 'v=spf1 a:nx1.voids.example a:nx2.voids.example a:nx3.voids.example +all' }],
  'helo.example': [{ TXT: 'v=spf1 -all' }],
  '1.2.0.192.in-addr.arpa': [{ PTR: 'mx.pass.example' }],
  'mx.pass.example': [{ A: '192.0.2.1' }],
});

/** Counts TXT lookups, to show that recipients of one message share one evaluation. */
class CountingResolver implements Resolver {
  txtLookups = 0;
  private readonly inner = new SuiteResolver(zone);
  a(name: string): Promise<DnsAnswer<string>> {
    return this.inner.a(name);
  }
  aaaa(name: string): Promise<DnsAnswer<string>> {
    return this.inner.aaaa(name);
  }
  mx(name: string) {
    return this.inner.mx(name);
  }
  txt(name: string): Promise<DnsAnswer<string>> {
    this.txtLookups += 1;
    return this.inner.txt(name);
  }
  ptr(address: string): Promise<DnsAnswer<string>> {
    return this.inner.ptr(address);
  }
}

const silent = createLogger('silent');

function deps(resolver: Resolver): StageDeps {
  const clock = new ManualClock();
  return { resolver, store: new MemoryStore({ clock }), clock, log: silent };
}

interface Request extends GivenContext {
  clientAddress?: string;
  heloName?: string;
  recipientText?: string;
  instance?: string;
}

function context(sender: string, more: Request = {}): StageContext {
  const { clientAddress = '192.0.2.1', heloName = 'helo.example', recipientText = 'rcpt@receiver.example', instance = 'msg-1', ...given } = more;
  return stageContext({ client_address: clientAddress, helo_name: heloName, sender, recipient: recipientText, instance }, given);
}

function spf(options: Record<string, unknown> = {}, resolver: Resolver = new CountingResolver()) {
  return spfStage.create(spfStage.options.parse({ authservId: 'mx.receiver.example', ...options }) as never, deps(resolver));
}


/** inner with `each` around every lookup's answer (a lookup that takes time, or steps a clock). */
function everyLookup(inner: Resolver, each: <T>(answer: Promise<T>) => Promise<T>): Resolver {
  return {
    a: (name) => each(inner.a(name)),
    aaaa: (name) => each(inner.aaaa(name)),
    mx: (name) => each(inner.mx(name)),
    txt: (name) => each(inner.txt(name)),
    ptr: (address) => each(inner.ptr(address)),
  };
}

describe('spf stage', () => {
  it('is registered under the name the sender callout looks for', () => {
    assert.ok(STAGE_DEFINITIONS.some((definition) => definition.name === 'spf'), 'STAGE_DEFINITIONS.some((definition) => definition.name === \'spf\')');
    assert.ok(STAGE_DEFINITIONS.some((definition) => definition.name === 'iprev'), 'STAGE_DEFINITIONS.some((definition) => definition.name === \'iprev\')');
  });

  it('pass continues, with Authentication-Results and Received-SPF headers', async () => {
    const verdict = await spf().evaluate(context('user@pass.example'));
    assert.equal(verdict.stage, 'spf');
    assert.equal(verdict.result, 'pass');
    assert.deepEqual(verdict.decision, { kind: 'continue' });
    assert.deepEqual(verdict.headers, [
      'Authentication-Results: mx.receiver.example; spf=pass (domain of user@pass.example designates 192.0.2.1 as permitted sender) smtp.mailfrom=user@pass.example',
      'Received-SPF: pass (mx.receiver.example: domain of user@pass.example designates 192.0.2.1 as permitted sender) client-ip=192.0.2.1; envelope-from="user@pass.example"; helo=helo.example; receiver=mx.receiver.example; identity=mailfrom; mechanism="ip4:192.0.2.0/24";',
    ]);
  });

  it('authenticationResults and receivedSpf each turn their own header off', async () => {
    const [noReceived, noAuthResults] = await Promise.all([spf({ receivedSpf: false }), spf({ authenticationResults: false })].map((stage) => stage.evaluate(context('user@pass.example'))));
    assert.deepEqual(noReceived?.headers?.map((header) => header.slice(0, header.indexOf(':'))), ['Authentication-Results']);
    assert.deepEqual(noAuthResults?.headers?.map((header) => header.slice(0, header.indexOf(':'))), ['Received-SPF']);
  });

  it('fail rejects with 550 5.7.23 and the explanation', async () => {
    const verdict = await spf().evaluate(context('user@fail.example'));
    assert.equal(verdict.result, 'fail');
    assert.deepEqual(verdict.decision, { kind: 'reject', code: 550, enhanced: '5.7.23', text: 'SPF fail for fail.example: 192.0.2.1 is not allowed for fail.example' });
  });

  it('temperror defers with 451 4.7.24; softfail and permerror continue by default', async () => {
    const temp = await spf().evaluate(context('user@slow.example'));
    assert.equal(temp.result, 'temperror');
    assert.equal(temp.decision.kind, 'defer');
    assert.ok(temp.decision.kind === 'defer' && temp.decision.code === 451 && temp.decision.enhanced === '4.7.24', 'temp.decision.kind === \'defer\' && temp.decision.code === 451 && temp.decision.enhanced === \'4.7.24\'');
    assert.deepEqual((await spf().evaluate(context('user@soft.example'))).decision, { kind: 'continue' });
    assert.deepEqual((await spf().evaluate(context('user@broken.example'))).decision, { kind: 'continue' });
  });

  it('pass, neutral and none continue by default, with no actions given or only some; temperror defers with deferText', async () => {
    for (const options of [{}, { actions: {} }, { actions: { fail: 'reject' } }]) {
      const stage = spf(options);
      for (const [sender, result] of [['user@pass.example', 'pass'], ['user@neutral.example', 'neutral'], ['user@nothing.example', 'none']] as const) {
        const verdict = await stage.evaluate(context(sender));
        assert.equal(verdict.result, result, `${sender} with ${JSON.stringify(options)}`);
        assert.deepEqual(verdict.decision, { kind: 'continue' }, `${result} with ${JSON.stringify(options)}`);
      }
    }
    // A record's default decided: no term matched, which the reason says.
    assert.equal((await spf().evaluate(context('user@neutral.example'))).reason, 'mailfrom neutral.example: neutral (192.0.2.1 matched no mechanism)');
    const temp = await spf().evaluate(context('user@slow.example'));
    assert.deepEqual(temp.decision, { kind: 'defer', code: 451, enhanced: '4.7.24', text: `SPF temperror for slow.example, try again later: ${(temp.evidence as { problem: string }).problem}` });
  });

  it('takes the configured deferCode, reply codes of their own class only, and fills {sender} and {ip}', async () => {
    const temp = await spf({ deferCode: 450, deferText: '{sender} from {ip}: {result}' }).evaluate(context('user@slow.example'));
    assert.deepEqual(temp.decision, { kind: 'defer', code: 450, enhanced: '4.7.24', text: 'user@slow.example from 192.0.2.1: temperror' });
    const fail = await spf({ rejectText: '{sender} from {ip} for {domain}' }).evaluate(context('user@fail.example'));
    assert.equal(fail.decision.kind === 'reject' && fail.decision.text, 'user@fail.example from 192.0.2.1 for fail.example');
    for (const [option, code, valid] of [['rejectCode', 499, false], ['rejectCode', 500, true], ['rejectCode', 599, true], ['rejectCode', 600, false], ['deferCode', 399, false], ['deferCode', 400, true], ['deferCode', 499, true], ['deferCode', 500, false]] as const) {
      assert.equal(spfStage.options.safeParse({ [option]: code }).success, valid, `${option} ${code}`);
    }
  });

  it('names this host in Received-SPF by receiver when it is given, and by authservId otherwise', async () => {
    const verdict = await spf({ receiver: 'mx1.receiver.example' }).evaluate(context('user@pass.example'));
    const [authenticationResults = '', receivedSpf = ''] = verdict.headers ?? [];
    assert.match(authenticationResults, /^Authentication-Results: mx\.receiver\.example; /);
    assert.match(receivedSpf, /^Received-SPF: pass \(mx1\.receiver\.example: .* receiver=mx1\.receiver\.example; /);
  });

  it('the RFC 7208 §4.6.4 limits apply by default: a third void lookup is a permerror, reported in Received-SPF', async () => {
    const verdict = await spf().evaluate(context('user@voids.example'));
    assert.equal(verdict.result, 'permerror');
    assert.equal(verdict.reason, 'mailfrom voids.example: permerror (more than 2 void DNS lookups)');
    assert.match(verdict.headers?.[1] ?? '', /^Received-SPF: permerror .*problem="?more than 2 void DNS lookups/);
    // Raising one limit leaves the other at its default.
    assert.equal((await spf({ limits: { dnsTerms: 20 } }).evaluate(context('user@voids.example'))).result, 'permerror');
  });

  it('with checkHelo but no HELO name, only MAIL FROM is checked and reported', async () => {
    const verdict = await spf({ checkHelo: true }).evaluate(context('user@pass.example', { heloName: '' }));
    assert.equal(verdict.result, 'pass');
    assert.doesNotMatch(verdict.headers?.[0] ?? '', /smtp\.helo/);
  });

  it('per-result actions are configurable', async () => {
    const stage = spf({ actions: { softfail: 'defer-if-permit', permerror: 'reject' }, rejectCode: 554 });
    // RFC 7372's code goes with a DEFER_IF_PERMIT too, or Postfix would send its own 4.7.1.
    assert.deepEqual((await stage.evaluate(context('user@soft.example'))).decision, { kind: 'defer-if-permit', enhanced: '4.7.23', text: 'SPF softfail for soft.example, try again later: 192.0.2.1 matched ~all' });
    const perm = await stage.evaluate(context('user@broken.example'));
    assert.ok(perm.decision.kind === 'reject' && perm.decision.code === 554 && perm.decision.enhanced === '5.7.24', 'perm.decision.kind === \'reject\' && perm.decision.code === 554 && perm.decision.enhanced === \'5.7.24\'');
    assert.throws(() => spfStage.options.parse({ actions: { fail: 'explode' } }), /"fail"[\s\S]*Invalid option: expected one of .*continue/);
    assert.throws(() => spfStage.options.parse({ unknownOption: true }), /Unrecognized key: .*unknownOption/);
  });

  it('evaluates once per message for all its recipients, again for the next message', async () => {
    const resolver = new CountingResolver();
    const stage = spf({}, resolver);
    await stage.evaluate(context('user@pass.example', { recipientText: 'a@r.example' }));
    await stage.evaluate(context('user@pass.example', { recipientText: 'b@r.example' }));
    assert.equal(resolver.txtLookups, 1);
    await stage.evaluate(context('user@pass.example', { instance: 'msg-2' }));
    assert.equal(resolver.txtLookups, 2);
  });

  it('remembers each message of several whose recipients come interleaved, and per client', async () => {
    const resolver = new CountingResolver();
    const stage = spf({}, resolver);
    for (const instance of ['msg-1', 'msg-2', 'msg-1', 'msg-2']) await stage.evaluate(context('user@pass.example', { instance }));
    assert.equal(resolver.txtLookups, 2, 'one evaluation per message');
    // Postfix never gives two clients one instance, but a verdict is about its client.
    const other = await stage.evaluate(context('user@pass.example', { instance: 'msg-1', clientAddress: '198.51.100.1' }));
    assert.equal(other.result, 'fail');
    assert.equal(resolver.txtLookups, 3, 'another client is evaluated on its own');
  });

  it('remembers a message\'s verdicts without their trace, which a sender\'s records can make hundreds of KiB long', async () => {
    // 250 terms that do not match (a record stays under 4096 characters): a trace of over 250 entries a verdict.
    const terms = Array.from({ length: 250 }, (_, i) => `ip4:10.0.0.${i}`).join(' ');
    const resolver = new SuiteResolver(buildZone({ 'long.example': [{ TXT: `v=spf1 ${terms} -all` }] }));
    const stage = spf({ actions: { fail: 'continue' } }, resolver);
    const before = heapAfterGc();
    for (let message = 0; message < 1000; message += 1) {
      const verdict = await stage.evaluate(context('user@long.example', { instance: `msg-${message}` }));
      assert.equal(verdict.result, 'fail');
    }
    const grownMiB = (heapAfterGc() - before) / 2 ** 20;
    // With the traces kept the heap grew by about 19 MiB here.
    assert.ok(grownMiB < 8, `the heap grew by ${grownMiB.toFixed(1)} MiB over 1000 remembered verdicts`);
  });

  it('remembers a message\'s verdicts without the request string its HELO name was sliced from', async () => {
    const stage = spf({ checkHelo: true, actions: { fail: 'continue' } });
    // Each HELO name is a slice of a 64 KiB string of its own, as a policy attribute is of the
    // chunk it came in; made in a function that has returned before the heap is measured.
    const decide = async (count: number): Promise<void> => {
      for (let i = 0; i < count; i++) {
        const chunk = `${'x'.repeat(65_536)}${i}\nhelo_name=mx1.client-${i}.example\n`;
        const heloName = chunk.slice(chunk.indexOf('mx1.'), -1);
        await stage.evaluate(context('user@pass.example', { heloName, instance: `msg-${i}` }));
      }
    };
    const before = heapAfterGc();
    await decide(300);
    const grown = heapAfterGc() - before;
    // Held whole, the 300 strings would take 19 MiB (a verdict keeps the HELO name it was checked with).
    assert.ok(grown < 4 * 1024 * 1024, `${grown} octets held for 300 messages`);
  });

  it('a message\'s verdict is remembered for cacheSeconds only, and per HELO name', async () => {
    const resolver = new CountingResolver();
    const stage = spf({ cacheSeconds: 60, checkHelo: true, actions: { fail: 'continue' } }, resolver);
    const clock = new ManualClock();
    const ask = (heloName = 'soft.example') => stage.evaluate(context('user@pass.example', { clock, heloName }));
    await ask();
    clock.advance(59_000);
    await ask();
    assert.equal(resolver.txtLookups, 2, 'HELO and MAIL FROM looked up once');
    clock.advance(1_000);
    await ask();
    assert.equal(resolver.txtLookups, 4, 'asked again once cacheSeconds are over');
    // Another HELO name is another evaluation, whose HELO fail decides.
    assert.equal((await ask('helo.example')).result, 'fail');
    assert.equal((await ask()).result, 'pass');
  });

  it('an evaluation that threw is not remembered: the next recipient of the message is evaluated again', async () => {
    const inner = new CountingResolver();
    let throwing = true;
    const resolver: Resolver = {
      ...everyLookup(inner, (answer) => answer),
      txt: (name) => {
        if (throwing) {
          throwing = false;
          return Promise.reject(new Error('resolver bug'));
        }
        return inner.txt(name);
      },
    };
    const stage = spf({}, resolver);
    await assert.rejects(Promise.resolve(stage.evaluate(context('user@pass.example', { recipientText: 'a@r.example' }))), /resolver bug/);
    assert.equal((await stage.evaluate(context('user@pass.example', { recipientText: 'b@r.example' }))).result, 'pass');
  });

  it('checks an internationalised sender domain as its A-labels, and reports it so', async () => {
    const verdict = await spf().evaluate(context('user@bücher.example'));
    assert.equal(verdict.result, 'pass', verdict.reason);
    assert.match(verdict.headers?.[0] ?? '', / smtp\.mailfrom=user@xn--bcher-kva\.example$/);
  });

  it('a temperror is not remembered', async () => {
    const resolver = new CountingResolver();
    const stage = spf({}, resolver);
    await stage.evaluate(context('user@slow.example'));
    await stage.evaluate(context('user@slow.example'));
    assert.equal(resolver.txtLookups, 2);
  });

  it('the null sender is checked as postmaster@HELO; checkHelo lets a HELO fail decide', async () => {
    const bounce = await spf().evaluate(context(''));
    assert.equal(bounce.result, 'fail');
    assert.match(bounce.reason, /helo\.example/);
    const helo = await spf({ checkHelo: true }).evaluate(context('user@pass.example'));
    assert.equal(helo.result, 'fail');
    assert.match(helo.headers?.[0] ?? '', /spf=fail .* smtp\.helo=helo\.example/);
  });

  it('a sender of "<>", which the other stages read as the null sender, is checked as the null sender, not as a domain "<>"', async () => {
    const bounce = await spf().evaluate(context('<>'));
    assert.equal(bounce.result, 'fail');
    assert.match(bounce.reason, /helo\.example/);
    assert.match(bounce.headers?.[0] ?? '', /smtp\.mailfrom=postmaster@helo\.example$/);
  });

  it('with checkHelo, a HELO result other than fail does not decide: MAIL FROM does, and Authentication-Results reports both identities', async () => {
    const verdict = await spf({ checkHelo: true }).evaluate(context('user@pass.example', { heloName: 'soft.example' }));
    assert.equal(verdict.result, 'pass', verdict.reason);
    assert.deepEqual(verdict.decision, { kind: 'continue' });
    const [authenticationResults = '', receivedSpf = ''] = verdict.headers ?? [];
    assert.match(authenticationResults, /spf=pass .*smtp\.mailfrom=user@pass\.example/);
    assert.match(authenticationResults, /spf=softfail .*smtp\.helo=soft\.example/);
    assert.match(receivedSpf, /^Received-SPF: pass .*identity=mailfrom;/);
    assert.deepEqual((verdict.evidence as { identities: unknown }).identities, [
      { identity: 'mailfrom', result: 'pass', domain: 'pass.example' },
      { identity: 'helo', result: 'softfail', domain: 'soft.example' },
    ]);
  });

  it('with checkHelo, the HELO and MAIL FROM checks share one time budget: the second does not get a fresh one past the deadline', async () => {
    // Each lookup takes a second: either check alone (a TXT and 7 address lookups, 8 s) fits the 10 s deadline, both do not.
    const terms = 'v=spf1 a:h1.example a:h2.example a:h3.example a:h4.example a:h5.example a:h6.example a:h7.example +all';
    const hosts = Object.fromEntries(Array.from({ length: 7 }, (_, i) => [`h${i + 1}.example`, [{ A: '203.0.113.9' }]]));
    const inner = new SuiteResolver(buildZone({ 'slowhelo.example': [{ TXT: terms }], 'late.example': [{ TXT: terms }], ...hosts }));
    // The pipeline's monotonic timers, which the decision deadline counts down on: they move only when told to.
    const timers = new ManualTimers();
    const slow = async <T>(answer: Promise<T>): Promise<T> => {
      await timers.advance(1000);
      return answer;
    };
    const resolver = everyLookup(inner, slow);
    const verdict = await spf({ checkHelo: true }, resolver).evaluate(context('user@late.example', { heloName: 'slowhelo.example', timers, deadlineMs: 10_000 }));
    assert.equal(verdict.result, 'temperror');
    assert.match(verdict.reason, /longer than/);
    assert.ok(timers.now() <= 11_000, `the checks ran for ${timers.now()} ms`);
  });

  it('bounds an evaluation by 20 s by default (RFC 7208 §4.6.4), or by timeoutMs', async () => {
    // Each lookup takes 3 s: a TXT and seven address lookups, 24 s in all, within the 60 s deadline.
    const terms = 'v=spf1 a:h1.example a:h2.example a:h3.example a:h4.example a:h5.example a:h6.example a:h7.example +all';
    const hosts = Object.fromEntries(Array.from({ length: 7 }, (_, i) => [`h${i + 1}.example`, [{ A: '203.0.113.9' }]]));
    const inner = new SuiteResolver(buildZone({ 'late.example': [{ TXT: terms }], ...hosts }));
    for (const [options, result] of [[{}, 'temperror'], [{ timeoutMs: 30_000 }, 'pass']] as const) {
      const timers = new ManualTimers();
      const resolver = everyLookup(inner, async (answer) => {
        await timers.advance(3000);
        return answer;
      });
      const verdict = await spf(options, resolver).evaluate(context('user@late.example', { timers, deadlineMs: 60_000 }));
      assert.equal(verdict.result, result, `${JSON.stringify(options)}: ${verdict.reason}`);
      if (result === 'temperror') {
        assert.match(verdict.reason, /evaluation took longer than 20000 ms\)$/);
        assert.ok(timers.now() >= 20_000 && timers.now() <= 21_000, `ended after ${timers.now()} ms`);
      }
    }
  });

  it('counts 10 DNS terms by default (RFC 7208 §4.6.4), also when only voidLookups is configured', async () => {
    const record = (count: number) => `v=spf1 ${Array.from({ length: count }, (_, i) => `a:h${i + 1}.terms.example`).join(' ')} +all`;
    const hosts = Object.fromEntries(Array.from({ length: 11 }, (_, i) => [`h${i + 1}.terms.example`, [{ A: '203.0.113.9' }]]));
    const resolver = new SuiteResolver(buildZone({ 'ten.example': [{ TXT: record(10) }], 'eleven.example': [{ TXT: record(11) }], ...hosts }));
    for (const options of [{}, { limits: { voidLookups: 2 } }]) {
      assert.equal((await spf(options, resolver).evaluate(context('user@ten.example'))).result, 'pass', JSON.stringify(options));
      assert.equal((await spf(options, resolver).evaluate(context('user@eleven.example'))).result, 'permerror', JSON.stringify(options));
    }
  });

  it('runs at RCPT by default, and may be configured at MAIL, and nowhere else', async () => {
    const clock = new ManualClock();
    const stageDeps = { ...deps(new SuiteResolver(zone)), clock };
    const request = (state: string) => ({ request: 'smtpd_access_policy', protocol_state: state, client_address: '192.0.2.1', helo_name: 'helo.example', sender: 'user@pass.example', recipient: state === 'RCPT' ? 'rcpt@receiver.example' : '', instance: `states-${state}` });
    const ran = async (pipeline: ReturnType<typeof buildPipeline>, state: string) => (await pipeline.decide(request(state))).verdicts.some((verdict) => verdict.stage === 'spf');
    const configured = (states?: string[]) => buildPipeline(validateConfig({ policy: { stages: [{ name: 'spf', authservId: 'mx.receiver.example', ...(states ? { states } : {}) }] } }), stageDeps);
    assert.equal(await ran(configured(), 'MAIL'), false, 'not at MAIL by default');
    assert.equal(await ran(configured(), 'RCPT'), true, 'at RCPT by default');
    assert.equal(await ran(configured(['MAIL']), 'MAIL'), true, 'at MAIL when configured there');
    assert.throws(() => configured(['CONNECT']), (err: unknown) => err instanceof ConfigError && /^policy\.stages\.0\.states \(spf\): got CONNECT: this stage runs only in MAIL, RCPT$/.test(err.message));
  });

  it('with checkHelo, a wall clock stepped back during the HELO check does not give the MAIL FROM check time past the deadline', async () => {
    // The first lookup steps the clock back an hour (NTP), each other one takes a second; a second is left before the deadline.
    const terms = 'v=spf1 a:h1.example a:h2.example a:h3.example a:h4.example a:h5.example a:h6.example a:h7.example +all';
    const hosts = Object.fromEntries(Array.from({ length: 7 }, (_, i) => [`h${i + 1}.example`, [{ A: '203.0.113.9' }]]));
    const inner = new SuiteResolver(buildZone({ 'slowhelo.example': [{ TXT: terms }], 'late.example': [{ TXT: terms }], ...hosts }));
    const clock = new ManualClock();
    const timers = new ManualTimers();
    let lookups = 0;
    const slow = async <T>(answer: Promise<T>): Promise<T> => {
      if (lookups++ === 0) clock.advance(-3_600_000);
      else await timers.advance(1000);
      return answer;
    };
    const resolver = everyLookup(inner, slow);
    const ctx = context('user@late.example', { heloName: 'slowhelo.example', clock, timers, deadlineMs: 1000 });
    const verdict = await spf({ checkHelo: true }, resolver).evaluate(ctx);
    assert.equal(verdict.result, 'temperror', verdict.reason);
    assert.match(verdict.reason, /^mailfrom late\.example: temperror \(evaluation took longer than \d+ ms\)$/);
  });

  it('over loopback DNS, ctx.clock stepped an hour forward during the check still gives pass, and stepped an hour back still ends the check at its time limit', async () => {
    // Seven a: terms, each answered 100 ms late: about 700 ms in all, past a 300 ms timeoutMs.
    const hosts = Object.fromEntries(Array.from({ length: 7 }, (_, i) => [`h${i + 1}.stepped.example`, { A: ['203.0.113.9'], delayMs: 100 }]));
    const terms = Array.from({ length: 7 }, (_, i) => `a:h${i + 1}.stepped.example`).join(' ');
    const server = await startDnsServer({ 'quick.example': { TXT: ['v=spf1 a:h1.stepped.example ip4:192.0.2.0/24 -all'] }, 'slow.stepped.example': { TXT: [`v=spf1 ${terms} +all`] }, ...hosts });
    try {
      const dns = createNodeResolver({ servers: [server.address], timeoutMs: 2000, tries: 1 });
      const stepping = (clock: ManualClock, step: number): Resolver => ({ ...dns, a: (name) => (clock.advance(step), dns.a(name)) });
      const forward = new ManualClock();
      const pass = await spf({}, stepping(forward, 3_600_000)).evaluate(context('user@quick.example', { clock: forward }));
      assert.equal(pass.result, 'pass', pass.reason);
      const back = new ManualClock();
      const asked = server.queries.length;
      const started = performance.now();
      const late = await spf({ timeoutMs: 300 }, stepping(back, -3_600_000)).evaluate(context('user@slow.stepped.example', { clock: back }));
      const took = performance.now() - started;
      assert.equal(late.result, 'temperror', late.reason);
      assert.match(late.reason, /evaluation took longer than \d+ ms/);
      assert.ok(took >= 300, `ended after ${Math.round(took)} ms`);
      assert.ok(server.queries.slice(asked).filter((q) => q.type === 'A').length < 7, 'the check ended before asking for every host');
    } finally {
      await server.close();
    }
  });

  it('without a client address there is nothing to check', async () => {
    const verdict = await spf().evaluate(context('user@pass.example', { clientAddress: '' }));
    assert.equal(verdict.result, 'none');
    assert.deepEqual(verdict.decision, { kind: 'continue' });
  });

  it('a client address Postfix does not know (client_address=unknown) is not checked, and no header claims the domain publishes no policy', async () => {
    const resolver = new CountingResolver();
    // '[UNAVAILABLE]' reaches the stage as UNAVAILABLE (the pipeline takes brackets off), still no address.
    for (const [clientAddress, seen] of [['unknown', 'unknown'], ['[UNAVAILABLE]', 'UNAVAILABLE']] as const) {
      const verdict = await spf({}, resolver).evaluate(context('user@fail.example', { clientAddress }));
      assert.equal(verdict.result, 'none', clientAddress);
      assert.equal(verdict.reason, `no usable client address in the request (${JSON.stringify(seen)})`);
      assert.deepEqual(verdict.decision, { kind: 'continue' });
      assert.equal(verdict.headers, undefined, `no spf=none / client-ip=${clientAddress} header`);
    }
    assert.equal(resolver.txtLookups, 0);
    assert.equal((await spf().evaluate(context('user@fail.example', { clientAddress: '::ffff:192.0.2.1' }))).result, 'fail', 'an IPv4-mapped address is the IPv4 client');
  });
});

describe('iprev stage', () => {
  const iprev = (options: Record<string, unknown> = {}) =>
    iprevStage.create(iprevStage.options.parse({ authservId: 'mx.receiver.example', ...options }) as never, deps(new SuiteResolver(zone)));

  it('reports pass in Authentication-Results and continues', async () => {
    const verdict = await iprev().evaluate(context('user@pass.example'));
    assert.equal(verdict.result, 'pass');
    assert.deepEqual(verdict.decision, { kind: 'continue' });
    assert.deepEqual(verdict.headers, ['Authentication-Results: mx.receiver.example; iprev=pass (mx.pass.example) policy.iprev=192.0.2.1']);
  });

  it('a client without PTR is a permerror; rejecting it is configurable (550 5.7.25)', async () => {
    const verdict = await iprev({ actions: { permerror: 'reject' } }).evaluate(context('user@pass.example', { clientAddress: '198.51.100.9' }));
    assert.equal(verdict.result, 'permerror');
    assert.ok(verdict.decision.kind === 'reject' && verdict.decision.enhanced === '5.7.25', 'verdict.decision.kind === \'reject\' && verdict.decision.enhanced === \'5.7.25\'');
    assert.match(verdict.decision.kind === 'reject' ? verdict.decision.text : '', /no PTR record/);
  });
});
