// The pipeline's own logic, with hand-made stages: modes, states, headers once per message, faults.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { sleep, type Timers } from '../../src/core/clock.js';
import { ManualClock, ManualTimers } from '../support/manual-time.js';
import { ConfigError, StoreError } from '../../src/core/errors.js';
import { createLogger } from '../../src/core/log.js';
import { validateConfig } from '../../src/config/schema.js';
import type { StageEntry } from '../../src/config/schema.js';
import { MemoryStore } from '../../src/store/index.js';
import { MESSAGE_HEADER_LIMIT, MESSAGE_MEMORY_LIMIT, Pipeline, buildPipeline } from '../../src/policy/pipeline.js';
import type { ConfiguredStage, PipelineOptions, PipelineOutcome } from '../../src/policy/pipeline.js';
import type { Decision, ProtocolState, StageContext, StageVerdict } from '../../src/policy/types.js';
import { heapAfterGc } from '../support/heap.js';
import { watch } from '../support/wait.js';

const silent = { info() {}, warn() {}, error() {} };

function stage(name: string, decide: (ctx: StageContext) => Decision | Error, extra: Partial<StageVerdict> = {}, mode: ConfiguredStage['mode'] = 'enforce', states: ProtocolState[] = ['RCPT']): ConfiguredStage {
  return {
    mode,
    states: new Set(states),
    acceptAction: 'DUNNO',
    stage: {
      name,
      states: new Set(states),
      async evaluate(ctx) {
        const decision = decide(ctx);
        if (decision instanceof Error) throw decision;
        return { stage: name, result: decision.kind, reason: `${name} says ${decision.kind}`, decision, ...extra };
      },
    },
  };
}

/** An enforcing RCPT stage with its own evaluate. */
function rcptStage(name: string, evaluate: ConfiguredStage['stage']['evaluate']): ConfiguredStage {
  return { mode: 'enforce', states: new Set(['RCPT']), acceptAction: 'DUNNO', stage: { name, states: new Set(['RCPT']), evaluate } };
}

/** A stage that answers at once (no promise), as an allow-list or a cached verdict does. */
function syncStage(name: string, decide: (ctx: StageContext) => Decision | Error): ConfiguredStage {
  return rcptStage(name, (ctx) => {
    const decision = decide(ctx);
    if (decision instanceof Error) throw decision;
    return { stage: name, result: decision.kind, reason: `${name} says ${decision.kind}`, decision };
  });
}

function pipeline(stages: ConfiguredStage[], options: Partial<PipelineOptions> = {}): Pipeline {
  return new Pipeline(stages, { decisionTimeoutMs: 1000, faultAction: 'DUNNO', warnAction: 'WARN', clock: new ManualClock(), log: silent, ...options });
}

const rcpt = (more: Record<string, string> = {}) => ({ request: 'smtpd_access_policy', protocol_state: 'RCPT', sender: 'a@example.org', recipient: 'b@example.net', instance: 'i1', ...more });
const reject: Decision = { kind: 'reject', code: 550, enhanced: '5.7.1', text: 'no' };

describe('pipeline: stages that answer at once and stages that are waited for', () => {
  const go: Decision = { kind: 'continue' };

  it('cuts a reply text to what fits in one 512-octet line after Postfix\'s "<recipient>: Recipient address rejected: "', () => {
    const long: Decision = { kind: 'reject', code: 550, enhanced: '5.7.1', text: 'why '.repeat(200) };
    const recipient = `${'r'.repeat(64)}@${'d'.repeat(120)}.example`;
    const out = pipeline([syncStage('a', () => long)]).decide(rcpt({ recipient }));
    assert.ok(!(out instanceof Promise), '!(out instanceof Promise)');
    const line = `550 5.7.1 <${recipient}>: Recipient address rejected: ${out.action.slice('550 5.7.1 '.length)}\r\n`;
    assert.ok(line.length <= 512, `${line.length} octets`);
    assert.ok(out.action.endsWith('...'), 'out.action.endsWith(\'...\')');
  });

  it('decides at once, without a promise, when every stage answers at once', () => {
    const out = pipeline([syncStage('a', () => go), syncStage('b', () => reject)]).decide(rcpt());
    assert.ok(!(out instanceof Promise), '!(out instanceof Promise)');
    assert.equal(out.action, '550 5.7.1 no');
    assert.deepEqual(out.verdicts.map((v) => v.stage), ['a', 'b']);
  });

  it('reads the monotonic clock twice for a decision made at once, when the request came and when it was decided, and sets no timer', () => {
    // The per-request cost: as often as performance.now() was read before the timers were injected.
    const timers = new ManualTimers();
    let reads = 0;
    const counted: Timers = { now: () => (reads++, timers.now()), setTimeout: (fire, ms) => timers.setTimeout(fire, ms), clearTimeout: (handle) => timers.clearTimeout(handle) };
    const out = pipeline([syncStage('a', () => go), syncStage('b', () => reject)], { timers: counted }).decide(rcpt());
    assert.ok(!(out instanceof Promise), '!(out instanceof Promise)');
    assert.deepEqual([reads, timers.waiting], [2, 0]);
  });

  it('goes on asynchronously from the first stage that must be waited for, in order, each seeing the earlier verdicts', async () => {
    const seen: string[][] = [];
    const watch = (name: string) => (ctx: StageContext) => (seen.push([name, ...ctx.earlier.keys()]), go);
    const decided = pipeline([syncStage('a', watch('a')), stage('b', watch('b')), syncStage('c', watch('c')), stage('d', watch('d'))]).decide(rcpt());
    assert.ok(decided instanceof Promise, 'decided instanceof Promise');
    const out = await decided;
    assert.equal(out.action, 'DUNNO');
    assert.deepEqual(out.verdicts.map((v) => v.stage), ['a', 'b', 'c', 'd']);
    assert.deepEqual(seen, [['a'], ['b', 'a'], ['c', 'a', 'b'], ['d', 'a', 'b', 'c']]);
  });

  it('logs a repeated fault once a minute, with how many it left out, and lists it in every outcome', async () => {
    const clock = new ManualClock();
    const errors: Array<Record<string, unknown>> = [];
    const log = { info() {}, warn() {}, error: (fields: Record<string, unknown>) => void errors.push(fields) };
    const failing = pipeline([stage('store-user', () => new StoreError('database or disk is full'))], { clock, log });
    for (let i = 0; i < 50; i++) assert.deepEqual((await failing.decide(rcpt({ instance: `m${i}` }))).faults, ['store-user: STORE_UNAVAILABLE: database or disk is full']);
    assert.equal(errors.length, 1);
    assert.equal(errors[0]!.repeatsNotLogged, undefined);
    clock.advance(61_000);
    await failing.decide(rcpt({ instance: 'later' }));
    assert.equal(errors.length, 2);
    assert.equal(errors[1]!.repeatsNotLogged, 49);
  });

  it('a stage that throws at once is a fault like one that rejects later, before and after a stage that is waited for', async () => {
    const boom = () => new StoreError('down');
    const first = pipeline([syncStage('x', boom), syncStage('y', () => go)]).decide(rcpt());
    assert.ok(!(first instanceof Promise), '!(first instanceof Promise)');
    assert.deepEqual([first.action, first.faults], ['DUNNO', ['x: STORE_UNAVAILABLE: down']]);
    const later = await pipeline([stage('w', () => go), syncStage('x', boom), syncStage('y', () => reject)], { faultAction: 'DEFER' }).decide(rcpt());
    assert.match(later.action, /^451 4\.3\.0 /);
    assert.equal(later.decidedBy, 'x');
  });

  it('a verdict without a decision it can take is a fault, recorded nowhere, whether given at once or later', async () => {
    const broken = (name: string, later: boolean): ConfiguredStage =>
      rcptStage(name, () => {
        const bad = { stage: name, result: 'odd', reason: 'odd', decision: { kind: 'maybe' } } as unknown as StageVerdict;
        return later ? Promise.resolve(bad) : bad;
      });
    for (const later of [false, true]) {
      const out: PipelineOutcome = await pipeline([broken('odd', later), syncStage('next', () => go)]).decide(rcpt());
      assert.equal(out.action, 'DUNNO');
      assert.deepEqual(out.verdicts.map((v) => v.stage), ['next']);
      assert.match(out.faults[0]!, /^odd: INTERNAL: stage odd answered without a decision it can take/);
    }
  });

  it('a stage that answers at once and ends the pipeline keeps the later ones from running', () => {
    let ran = false;
    const out = pipeline([syncStage('a', () => reject), syncStage('b', () => ((ran = true), go))]).decide(rcpt());
    assert.ok(!(out instanceof Promise), '!(out instanceof Promise)');
    assert.deepEqual([out.action, out.decidedBy, ran], ['550 5.7.1 no', 'a', false]);
    const failed = pipeline([syncStage('x', () => new StoreError('down')), syncStage('y', () => ((ran = true), reject))], { faultAction: 'DEFER' }).decide(rcpt());
    assert.ok(!(failed instanceof Promise), '!(failed instanceof Promise)');
    assert.deepEqual([failed.decidedBy, ran], ['x', false]);
  });

  it('a stage waited for that ends the pipeline keeps the later ones from running', async () => {
    let ran = false;
    const out = await pipeline([syncStage('a', () => go), stage('b', () => reject), syncStage('c', () => ((ran = true), go))]).decide(rcpt());
    assert.equal(out.decidedBy, 'b');
    assert.equal(ran, false);
  });
});

describe('pipeline', () => {
  it('answers DUNNO when every stage continues, and records every verdict in order', async () => {
    const out = await pipeline([stage('a', () => ({ kind: 'continue' })), stage('b', () => ({ kind: 'continue' }))]).decide(rcpt());
    assert.equal(out.action, 'DUNNO');
    assert.deepEqual(out.verdicts.map((v) => v.stage), ['a', 'b']);
    assert.equal(out.decidedBy, undefined);
  });

  it('stops at the first enforcing reject; later stages do not run', async () => {
    let ran = false;
    const out = await pipeline([stage('a', () => reject), stage('b', () => ((ran = true), { kind: 'continue' }))]).decide(rcpt());
    assert.equal(out.action, '550 5.7.1 no');
    assert.equal(out.decidedBy, 'a');
    assert.equal(ran, false);
  });

  it('in warn mode a reject becomes WARN (or a header) and the pipeline goes on', async () => {
    const warn = await pipeline([stage('a', () => reject, {}, 'warn')]).decide(rcpt());
    assert.equal(warn.action, 'WARN a would answer 550 5.7.1 no');
    const prepend = await pipeline([stage('a', () => reject, {}, 'warn')], { warnAction: 'PREPEND' }).decide(rcpt());
    assert.equal(prepend.action, 'PREPEND X-Callout-Warning: a would answer 550 5.7.1 no');
  });

  it('off stages and stages of other protocol states do not run', async () => {
    const out = await pipeline([stage('off', () => reject, {}, 'off'), stage('data', () => reject, {}, 'enforce', ['DATA'])]).decide(rcpt());
    assert.equal(out.action, 'DUNNO');
    assert.equal(out.verdicts.length, 0);
  });

  it('gives each header once per message (instance), one per reply', async () => {
    const p = pipeline([stage('auth', () => ({ kind: 'continue' }), { headers: ['Authentication-Results: mx.example; spf=pass', 'Received-SPF: pass'] })]);
    assert.equal((await p.decide(rcpt())).action, 'PREPEND Authentication-Results: mx.example; spf=pass');
    assert.equal((await p.decide(rcpt({ recipient: 'c@example.net' }))).action, 'PREPEND Received-SPF: pass');
    assert.equal((await p.decide(rcpt({ recipient: 'd@example.net' }))).action, 'DUNNO');
    assert.equal((await p.decide(rcpt({ instance: 'i2' }))).action, 'PREPEND Authentication-Results: mx.example; spf=pass', 'a new message gets its own');
  });

  it('joins the Authentication-Results of several stages into the one field waiting for the message (RFC 8601 §2.2)', async () => {
    const results = (name: string, ...headers: string[]) => stage(name, () => ({ kind: 'continue' }), { headers });
    const p = pipeline([
      results('iprev', 'Authentication-Results: mx.example; iprev=pass policy.iprev=192.0.2.1'),
      results('spf', 'Authentication-Results: mx.example; spf=pass smtp.mailfrom=a@example.org', 'Received-SPF: pass'),
      results('other-id', 'Authentication-Results: mx.other.example; dkim=none'),
    ]);
    // One reply carries both methods: a second field would wait for a reply a one-recipient message never gets.
    assert.equal((await p.decide(rcpt())).action, 'PREPEND Authentication-Results: mx.example; iprev=pass policy.iprev=192.0.2.1; spf=pass smtp.mailfrom=a@example.org');
    assert.equal((await p.decide(rcpt({ recipient: 'c@example.net' }))).action, 'PREPEND Received-SPF: pass');
    assert.equal((await p.decide(rcpt({ recipient: 'd@example.net' }))).action, 'PREPEND Authentication-Results: mx.other.example; dkim=none', 'another authserv-id keeps its own field');
    assert.equal((await p.decide(rcpt({ recipient: 'e@example.net' }))).action, 'DUNNO');
  });

  it('keeps Authentication-Results fields apart when joined they would pass 990 characters, or one says none', async () => {
    const results = (name: string, header: string) => stage(name, () => ({ kind: 'continue' }), { headers: [header] });
    const long = `Authentication-Results: mx.example; spf=pass smtp.mailfrom=${'a'.repeat(900)}@example.org`;
    const p = pipeline([results('spf', long), results('iprev', 'Authentication-Results: mx.example; iprev=pass policy.iprev=192.0.2.1'), results('x', 'Authentication-Results: mx.example; none')]);
    assert.equal((await p.decide(rcpt())).action, `PREPEND ${long}`);
    assert.equal((await p.decide(rcpt({ recipient: 'c@example.net' }))).action, 'PREPEND Authentication-Results: mx.example; iprev=pass policy.iprev=192.0.2.1');
    assert.equal((await p.decide(rcpt({ recipient: 'd@example.net' }))).action, 'PREPEND Authentication-Results: mx.example; none');
  });

  it('joins Authentication-Results fields into a line of 990 characters at most, not one more', async () => {
    const iprev = 'Authentication-Results: mx.example; iprev=pass';
    for (const [length, joined] of [[990, true], [991, false]] as const) {
      const head = 'Authentication-Results: mx.example; spf=pass smtp.mailfrom=';
      const spf = `${head}${'a'.repeat(length - head.length - '@example.org; iprev=pass'.length)}@example.org`;
      const p = pipeline([stage('spf', () => ({ kind: 'continue' }), { headers: [spf] }), stage('iprev', () => ({ kind: 'continue' }), { headers: [iprev] })]);
      const first = (await p.decide(rcpt())).action;
      assert.equal(first, joined ? `PREPEND ${spf}; iprev=pass` : `PREPEND ${spf}`, `${length}`);
      if (joined) assert.equal(first.length - 'PREPEND '.length, 990);
    }
  });

  it('a fault fails open by default and defers with faultAction DEFER, never rejects', async () => {
    const broken = stage('store', () => new StoreError('redis down'));
    const open = await pipeline([broken, stage('next', () => ({ kind: 'continue' }))]).decide(rcpt());
    assert.equal(open.action, 'DUNNO');
    assert.deepEqual(open.faults, ['store: STORE_UNAVAILABLE: redis down']);
    assert.equal(open.verdicts.length, 1, 'the next stage still ran');
    const closed = await pipeline([broken], { faultAction: 'DEFER' }).decide(rcpt());
    assert.match(closed.action, /^451 4\.3\.0 /);
  });

  it('a stage in warn mode that faults never defers, even with faultAction DEFER: it warns, and the stages after it decide', async () => {
    const watched = stage('new-check', () => new StoreError('redis down'), {}, 'warn');
    const out = await pipeline([watched, stage('next', () => ({ kind: 'continue' }))], { faultAction: 'DEFER' }).decide(rcpt());
    assert.equal(out.action, 'WARN new-check would answer 451 4.3.0 Temporary policy failure, please try again later');
    assert.equal(out.decidedBy, undefined);
    assert.deepEqual(out.faults, ['new-check: STORE_UNAVAILABLE: redis down']);
    assert.deepEqual(out.verdicts.map((v) => v.stage), ['next']);
  });

  it('remembers only the messages that have headers to give', async () => {
    const p = pipeline([stage('a', () => ({ kind: 'continue' }))]);
    const memory = (p as unknown as { messages: Map<string, unknown> }).messages;
    for (let i = 0; i < 100; i++) await p.decide(rcpt({ instance: `plain${i}` }));
    assert.equal(memory.size, 0);
  });

  it('hands its message memory to the pipeline that replaces it, so a reload gives no header twice', async () => {
    const header = stage('a', () => ({ kind: 'prepend', header: 'X-Test: yes' }));
    const before = pipeline([header]);
    assert.equal((await before.decide(rcpt({ instance: 'spans' }))).action, 'PREPEND X-Test: yes');
    const after = pipeline([header], { messages: before.messages });
    assert.equal((await after.decide(rcpt({ instance: 'spans', recipient: 'second@example.net' }))).action, 'DUNNO');
    assert.equal((await pipeline([header]).decide(rcpt({ instance: 'spans' }))).action, 'PREPEND X-Test: yes', 'a pipeline of its own would give it again');
  });

  it('when its message memory is full, forgets the oldest tenth at once, not one message per new one', async () => {
    const p = pipeline([stage('a', () => ({ kind: 'prepend', header: 'X-Test: yes' }))]);
    const memory = (p as unknown as { messages: Map<string, unknown> }).messages;
    for (let i = 0; i <= MESSAGE_MEMORY_LIMIT; i++) await p.decide(rcpt({ instance: `m${i}` }));
    assert.ok(memory.size <= MESSAGE_MEMORY_LIMIT * 0.9 + 1, `size ${memory.size}`);
    assert.ok(!memory.has('m0') && memory.has(`m${MESSAGE_MEMORY_LIMIT}`), '!memory.has(\'m0\') && memory.has(`m${MESSAGE_MEMORY_LIMIT}`)');
  });

  it('remembers a message by its instance without the request string the instance was sliced from', async () => {
    const p = pipeline([syncStage('a', () => ({ kind: 'prepend', header: 'X-Test: yes' }))]);
    // Each instance is a slice of a 64 KiB string of its own, as a policy attribute is of the
    // chunk it came in; made in a function that has returned before the heap is measured.
    const decide = (count: number): void => {
      for (let i = 0; i < count; i++) void p.decide(rcpt({ instance: `${'x'.repeat(65_536)}${i}.6b12d2cd.260c3.0`.slice(65_530) }));
    };
    const before = heapAfterGc();
    decide(300);
    const grown = heapAfterGc() - before;
    assert.equal(p.messages.size, 300);
    // Held whole, the 300 strings would take 19 MiB.
    assert.ok(grown < 4 * 1024 * 1024, `${grown} octets held for 300 messages`);
  });

  it('forgets, once full, every message not seen for an hour by the injected clock', async () => {
    const clock = new ManualClock();
    const p = pipeline([stage('a', () => ({ kind: 'prepend', header: 'X-Test: yes' }))], { clock });
    const memory = (p as unknown as { messages: Map<string, unknown> }).messages;
    for (let i = 0; i < MESSAGE_MEMORY_LIMIT; i++) await p.decide(rcpt({ instance: `old${i}` }));
    clock.advance(2 * 3_600_000);
    await p.decide(rcpt({ instance: 'new' }));
    assert.deepEqual([...memory.keys()], ['new']);
  });

  it('keeps, once full, a message seen within the hour, also when that request was refused after a stage asked for its header', async () => {
    const clock = new ManualClock();
    const refuseOne = (ctx: StageContext): Decision => (ctx.instance === 'old5000' ? reject : { kind: 'continue' });
    const p = pipeline([stage('a', () => ({ kind: 'prepend', header: 'X-Test: yes' })), stage('b', refuseOne)], { clock });
    const memory = (p as unknown as { messages: Map<string, unknown> }).messages;
    for (let i = 0; i < MESSAGE_MEMORY_LIMIT; i++) await p.decide(rcpt({ instance: `old${i}` }));
    clock.advance(2 * 3_600_000);
    assert.equal((await p.decide(rcpt({ instance: 'old5000' }))).action, '550 5.7.1 no');
    await p.decide(rcpt({ instance: 'new' }));
    assert.ok(memory.has('old5000') && memory.has('new'), `${memory.size} messages kept`);
  });

  it('a stage that does not answer by the deadline is a fault: the pipeline answers anyway', async () => {
    const hanging: ConfiguredStage = {
      mode: 'enforce',
      states: new Set(['RCPT']),
      acceptAction: 'DUNNO',
      stage: { name: 'hangs', states: new Set(['RCPT']), evaluate: () => new Promise(() => undefined) },
    };
    const timers = new ManualTimers();
    const answer = watch(pipeline([hanging], { decisionTimeoutMs: 100, timers }).decide(rcpt()));
    // The deadline and the half second of grace after it.
    await timers.advance(599);
    assert.equal(answer(), undefined, 'waited for until the deadline and its grace');
    await timers.advance(1);
    const out = answer();
    assert.equal(out?.action, 'DUNNO');
    assert.match(out.faults[0]!, /hangs: INTERNAL: no answer within the decision deadline \(100 ms\)/);
    assert.equal(out.durationMs, 600);
  });

  it('a wall clock stepped back while a stage runs (NTP, a restored VM) does not move the deadline away', async () => {
    const clock = new ManualClock();
    const timers = new ManualTimers({ wall: clock });
    const hanging = rcptStage('hangs', () => {
      clock.advance(-3_600_000);
      return new Promise(() => undefined);
    });
    const answer = watch(pipeline([hanging], { decisionTimeoutMs: 100, clock, timers }).decide(rcpt()));
    await timers.advance(600);
    const out = answer();
    assert.ok(out, 'answered at the deadline and its grace, not an hour later');
    assert.match(out.faults[0]!, /hangs: INTERNAL: no answer within the decision deadline \(100 ms\)/);
  });

  it('gives a stage the time left on the monotonic clock: a wall clock stepped while an earlier stage ran neither lengthens it nor takes it away', async () => {
    const clock = new ManualClock();
    const timers = new ManualTimers({ wall: clock });
    const left: number[] = [];
    const steps = (ms: number) =>
      rcptStage('steps', async () => {
        await sleep(50, timers);
        clock.advance(ms);
        return { stage: 'steps', result: 'stepped', reason: '', decision: { kind: 'continue' } };
      });
    const reads = syncStage('reads', (ctx) => {
      left.push(ctx.timeLeft());
      return { kind: 'continue' };
    });
    for (const step of [-3_600_000, 3_600_000]) {
      const decided = pipeline([steps(step), reads], { clock, timers }).decide(rcpt());
      await timers.advance(50);
      await decided;
    }
    assert.equal(left[0], 950, 'stepped back: not a whole decision timeout again');
    assert.equal(left[1], 950, 'stepped forward: not none');
  });

  it('gives a stage that starts after the deadline no time left, not less than none', async () => {
    const timers = new ManualTimers();
    const left: number[] = [];
    const slow = rcptStage('slow', async () => {
      await sleep(1200, timers);
      return { stage: 'slow', result: 'slow', reason: '', decision: { kind: 'continue' } };
    });
    const reads = syncStage('reads', (ctx) => (left.push(ctx.timeLeft()), { kind: 'continue' }));
    const decided = pipeline([slow, reads], { timers }).decide(rcpt());
    await timers.advance(1200);
    await decided;
    assert.deepEqual(left, [0]);
  });

  it('measures a decision\'s duration on the monotonic clock: a wall clock stepped back while it ran does not make it negative', async (t) => {
    let wall = Date.now();
    t.mock.method(Date, 'now', () => wall);
    const clock = new ManualClock();
    const timers = new ManualTimers({ wall: clock });
    const decided = pipeline([rcptStage('steps', async () => {
      wall -= 3_600_000;
      clock.advance(-3_600_000);
      await sleep(30, timers);
      return { stage: 'steps', result: 'stepped', reason: '', decision: { kind: 'continue' } };
    })], { clock, timers }).decide(rcpt());
    await timers.advance(30);
    assert.equal((await decided).durationMs, 30);
  });

  it('after a stage that used the deadline up, the stages to be waited for are not blamed as late; those that answer at once still count', async () => {
    const errors: Array<Record<string, unknown>> = [];
    const log = { ...silent, error: (fields: Record<string, unknown>) => errors.push(fields) };
    const hanging = rcptStage('hangs', () => new Promise(() => undefined));
    let greylistAsked = false;
    const greylist = rcptStage('greylist', async () => {
      greylistAsked = true;
      return new Promise(() => undefined);
    });
    const timers = new ManualTimers();
    const answer = watch(pipeline([hanging, greylist, syncStage('rejects', () => reject)], { decisionTimeoutMs: 50, log, timers }).decide(rcpt()));
    await timers.advance(550);
    const out = answer();
    assert.ok(out, 'answered at the deadline and its grace');
    assert.equal(out.action, '550 5.7.1 no', 'a stage that answers at once still decides');
    assert.equal(greylistAsked, true, 'the stage was asked (its work may warm a cache)');
    assert.deepEqual(errors.map((e) => e.stage), ['hangs'], 'one error line, for the stage that was late');
    assert.match(out.faults[0]!, /^hangs: INTERNAL: no answer within the decision deadline/);
    assert.equal(out.faults[1], 'greylist: not waited for: no time left after the decision deadline');
  });

  it('after the deadline, a stage that throws as it is asked is a fault answered by faultAction, not a stage "not waited for"', async () => {
    const errors: Array<Record<string, unknown>> = [];
    const log = { ...silent, error: (fields: Record<string, unknown>) => errors.push(fields) };
    // In warn mode, so that its own lateness does not end the pipeline under faultAction DEFER.
    const hanging: ConfiguredStage = { ...rcptStage('hangs', () => new Promise(() => undefined)), mode: 'warn' };
    const timers = new ManualTimers();
    const answer = watch(pipeline([hanging, syncStage('throws', () => new StoreError('down')), syncStage('rejects', () => reject)], { decisionTimeoutMs: 50, log, timers, faultAction: 'DEFER' }).decide(rcpt()));
    await timers.advance(550);
    const out = answer();
    assert.ok(out, 'answered at the deadline and its grace');
    assert.match(out.faults[0]!, /^hangs: INTERNAL: no answer within the decision deadline/);
    assert.equal(out.faults[1], 'throws: STORE_UNAVAILABLE: down', 'the throw is the stage\'s fault, as before the deadline');
    assert.deepEqual(errors.map((e) => e.stage), ['hangs', 'throws'], 'an error line for each fault');
    assert.match(out.action, /^451 4\.3\.0 /, 'faultAction DEFER answers the fault');
    assert.equal(out.decidedBy, 'throws');
  });

  it('an observer that has not finished by the deadline and its grace does not hold the answer; it goes on, and the answer is unchanged', async () => {
    const errors: Array<Record<string, unknown>> = [];
    let finishObserving: () => void = () => undefined;
    let observed = false;
    const slowObserver: ConfiguredStage = {
      mode: 'enforce',
      states: new Set(['RCPT']),
      acceptAction: 'DUNNO',
      stage: {
        name: 'counts-slowly',
        states: new Set(['RCPT']),
        evaluate: () => ({ stage: 'counts-slowly', result: 'counted', reason: 'counted', decision: { kind: 'continue' } }),
        // A store that takes its time to count (a lock held by another process).
        observe: () =>
          new Promise<void>((resolve) => {
            finishObserving = () => {
              observed = true;
              resolve();
            };
          }),
      },
    };
    let shownToNext = false;
    const nextObserver: ConfiguredStage = {
      ...slowObserver,
      stage: {
        name: 'next-observer',
        states: new Set(['RCPT']),
        evaluate: () => ({ stage: 'next-observer', result: 'ok', reason: 'ok', decision: { kind: 'continue' } }),
        observe: () => {
          shownToNext = true;
          return new Promise<void>(() => undefined);
        },
      },
    };
    const log = { ...silent, error: (fields: Record<string, unknown>) => errors.push(fields) };
    const timers = new ManualTimers();
    const answer = watch(pipeline([slowObserver, nextObserver, syncStage('rejects', () => reject)], { decisionTimeoutMs: 100, log, timers }).decide(rcpt()));
    await timers.advance(599);
    assert.equal(answer(), undefined, 'the observer is waited for until the deadline (100 ms) and its grace (500 ms)');
    await timers.advance(1);
    const out = answer();
    assert.equal(out?.action, '550 5.7.1 no', 'the answer is the one decided, at the deadline and its grace, not when the observer ends');
    assert.deepEqual(errors.map((e) => e.stage), ['counts-slowly'], 'one wait past the deadline at most');
    assert.equal(shownToNext, true, 'the observers after a late one are shown the answer, not waited for');
    assert.equal(observed, false);
    finishObserving();
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(observed, true, 'the observer was not cut off, only no longer waited for');
  });

  it('later stages see earlier verdicts', async () => {
    const out = await pipeline([
      stage('spf', () => ({ kind: 'continue' })),
      stage('uses', (ctx) => (ctx.earlier.has('spf') ? { kind: 'continue' } : reject)),
    ]).decide(rcpt());
    assert.equal(out.action, 'DUNNO');
  });

  it('parses the request once: sender, recipient, client address', async () => {
    let seen: StageContext | undefined;
    await pipeline([stage('peek', (ctx) => ((seen = ctx), { kind: 'continue' }))]).decide(rcpt({ client_address: '2001:db8::1', sender: '', recipient: '<Postmaster>' }));
    assert.equal(seen!.clientAddress, '2001:db8::1');
    assert.equal(seen!.sender?.kind, 'null');
    assert.equal(seen!.recipient, undefined);
    assert.equal(seen!.recipientText, '<Postmaster>');
  });

  it('takes senders and recipients as Postfix received them, over RFC 5321\'s 64-octet local part (SRS, BATV, VERP)', async () => {
    let seen: StageContext | undefined;
    const sender = 'SRS0=Ab3d=QX=customer-service.example.com=firstname.lastname.longer@forwarder.example.net';
    const recipient = `prvs=0123456789=${'a'.repeat(60)}@example.org`;
    await pipeline([stage('peek', (ctx) => ((seen = ctx), { kind: 'continue' }))]).decide(rcpt({ sender, recipient }));
    assert.equal(seen!.senderError, undefined);
    assert.equal(seen!.sender?.kind === 'mailbox' && seen!.sender.mailbox.address, sender);
    assert.equal(seen!.recipient?.address, recipient);
  });

  it('reads an address with a trailing dot after its domain as the one Postfix delivers to, so recipient checks are not skipped for it', async () => {
    // Postfix takes RCPT TO:<dave@example.org.>, hands it over as written, and delivers to
    // dave@example.org: unparsed, recipient-callforward let it through unverified.
    let seen: StageContext | undefined;
    const peek = pipeline([stage('peek', (ctx) => ((seen = ctx), { kind: 'continue' }))]);
    await peek.decide(rcpt({ sender: 'bob@sender.example.', recipient: 'dave@example.org.' }));
    assert.equal(seen!.recipient?.address, 'dave@example.org');
    assert.equal(seen!.recipientText, 'dave@example.org.');
    assert.equal(seen!.sender?.kind === 'mailbox' && seen!.sender.mailbox.address, 'bob@sender.example');
    // Only one dot, after a domain: Postfix keeps dot-dot and @-dot, and so they stay no address.
    for (const recipient of ['dave@example.org..', 'dave@.', 'postmaster.']) {
      await peek.decide(rcpt({ recipient }));
      assert.equal(seen!.recipient, undefined, recipient);
    }
  });

  it('makes action texts safe: no CR/LF, ASCII only', async () => {
    const out = await pipeline([stage('a', () => ({ kind: 'reject', code: 550, enhanced: '5.7.1', text: 'bad\r\naction=OK\n\nü' }))]).decide(rcpt());
    assert.equal(out.action, '550 5.7.1 bad action=OK ?');
  });
});

describe('pipeline: DEFER_IF_PERMIT as Postfix applies it (access(5))', () => {
  const deferIfPermit: Decision = { kind: 'defer-if-permit', enhanced: '4.7.1', text: 'verification in progress' };
  const defer: Decision = { kind: 'defer', code: 450, enhanced: '4.7.1', text: 'later' };

  it('a later stage\'s reject or defer wins over it', async () => {
    for (const [later, action] of [
      [reject, '550 5.7.1 no'],
      [defer, '450 4.7.1 later'],
    ] as const) {
      const out: PipelineOutcome = await pipeline([stage('first', () => deferIfPermit), stage('later', () => later)]).decide(rcpt());
      assert.equal(out.action, action);
      assert.equal(out.decidedBy, 'later');
    }
  });

  it('stands when the later stages continue, answer DEFER_IF_PERMIT themselves, or accept (which ends the pipeline)', async () => {
    const cases: Array<[Decision, ConfiguredStage[]]> = [
      [{ kind: 'continue' }, []],
      [{ kind: 'defer-if-permit', text: 'greylisted' }, []],
      [{ kind: 'accept' }, [syncStage('not-run', () => reject)]],
    ];
    for (const [later, after] of cases) {
      let ran = false;
      const out: PipelineOutcome = await pipeline([stage('first', () => deferIfPermit), stage('later', () => ((ran = true), later)), ...after]).decide(rcpt());
      assert.equal(out.action, 'DEFER_IF_PERMIT 4.7.1 verification in progress', later.kind);
      assert.equal(out.decidedBy, 'first', later.kind);
      assert.equal(ran, true, `${later.kind}: the stages after it run (greylisting records the triplet)`);
      assert.deepEqual(out.verdicts.map((v) => v.stage), ['first', 'later'], later.kind);
    }
  });

  it('in warn mode is a warning, and changes nothing', async () => {
    const out = await pipeline([stage('first', () => deferIfPermit, {}, 'warn'), stage('later', () => ({ kind: 'accept' }))]).decide(rcpt());
    assert.equal(out.action, 'DUNNO');
    assert.deepEqual(out.warnings, ['first would answer DEFER_IF_PERMIT 4.7.1 verification in progress']);
  });
});

describe('pipeline: headers only where Postfix takes PREPEND for the message', () => {
  const twoHeaders = (states: ProtocolState[]) =>
    stage('auth', () => ({ kind: 'continue' }), { headers: ['Authentication-Results: mx.example; spf=pass', 'Received-SPF: pass'] }, 'enforce', states);

  it('gives no header at END-OF-MESSAGE, where Postfix ignores PREPEND (smtpd_check.c: "action PREPEND must be used before smtpd_end_of_data_restrictions")', async () => {
    const p = pipeline([twoHeaders(['RCPT', 'END-OF-MESSAGE'])]);
    assert.equal((await p.decide(rcpt())).action, 'PREPEND Authentication-Results: mx.example; spf=pass');
    assert.equal((await p.decide(rcpt({ protocol_state: 'END-OF-MESSAGE', recipient: '' }))).action, 'DUNNO');
  });

  it('gives no header at MAIL, where the instance still names the previous message (smtpd.c sets it after smtpd_check_mail)', async () => {
    const p = pipeline([twoHeaders(['RCPT', 'MAIL'])]);
    assert.equal((await p.decide(rcpt({ instance: 'previous' }))).action, 'PREPEND Authentication-Results: mx.example; spf=pass');
    // smtpd_delay_reject=no: the next message's MAIL FROM is checked with the previous instance.
    assert.equal((await p.decide(rcpt({ protocol_state: 'MAIL', instance: 'previous', recipient: '' }))).action, 'DUNNO', 'no header of the previous message in the next one');
  });

  it('in warn mode answers WARN, never PREPEND, where Postfix would drop the header', async () => {
    const warned = stage('a', () => reject, {}, 'warn', ['CONNECT', 'END-OF-MESSAGE']);
    const p = pipeline([warned], { warnAction: 'PREPEND' });
    for (const state of ['CONNECT', 'END-OF-MESSAGE']) {
      assert.equal((await p.decide(rcpt({ protocol_state: state }))).action, 'WARN a would answer 550 5.7.1 no', state);
    }
  });

  it('with warnAction PREPEND gives each warning header once per message, not once per recipient', async () => {
    const p = pipeline([stage('sender-check', () => reject, {}, 'warn')], { warnAction: 'PREPEND' });
    assert.equal((await p.decide(rcpt())).action, 'PREPEND X-Callout-Warning: sender-check would answer 550 5.7.1 no');
    for (const recipient of ['c@example.net', 'd@example.net']) {
      assert.equal((await p.decide(rcpt({ recipient }))).action, 'DUNNO', recipient);
    }
    assert.equal((await p.decide(rcpt({ instance: 'i2' }))).action, 'PREPEND X-Callout-Warning: sender-check would answer 550 5.7.1 no', 'a new message gets its own');
  });

  it('gives a message at most MESSAGE_HEADER_LIMIT header lines, however many recipients its warnings name; the rest are WARN', async () => {
    // A warning that names the recipient differs for each one: 1000 recipients made 1000 header fields.
    const p = pipeline([stage('recipient-check', (ctx) => ({ ...reject, text: `no ${ctx.recipientText}` }), {}, 'warn')], { warnAction: 'PREPEND' });
    const actions: string[] = [];
    for (let i = 0; i < 1000; i++) actions.push((await p.decide(rcpt({ recipient: `r${i}@example.net`, instance: 'many' }))).action);
    assert.equal(actions.filter((action) => action.startsWith('PREPEND ')).length, MESSAGE_HEADER_LIMIT);
    assert.equal(actions[MESSAGE_HEADER_LIMIT], `WARN recipient-check would answer 550 5.7.1 no r${MESSAGE_HEADER_LIMIT}@example.net`, 'still logged by Postfix');
    assert.ok(p.messages.get('many')!.given.size <= MESSAGE_HEADER_LIMIT, 'p.messages.get(\'many\')!.given.size <= MESSAGE_HEADER_LIMIT');
  });
});

describe('pipeline: modes, states and observers as configured', () => {
  it('an accept in warn mode is no warning: there is nothing it would have refused', async () => {
    const out = await pipeline([stage('a', () => ({ kind: 'accept' }), {}, 'warn')]).decide(rcpt());
    assert.deepEqual([out.action, out.warnings], ['DUNNO', []]);
  });

  it('a stage that answers within the half second after the deadline still decides', async () => {
    const timers = new ManualTimers();
    // 499 ms past the deadline of 50 ms: the last millisecond of the grace.
    const slow = rcptStage('slow', async () => {
      await sleep(549, timers);
      return { stage: 'slow', result: 'reject', reason: '', decision: reject };
    });
    const decided = pipeline([slow], { decisionTimeoutMs: 50, timers }).decide(rcpt());
    await timers.advance(549);
    const out = await decided;
    assert.deepEqual([out.action, out.faults], ['550 5.7.1 no', []]);
  });

  it('takes a request without protocol_state as RCPT, and reads a state in any case', async () => {
    const { protocol_state: _state, ...stateless } = rcpt();
    assert.equal((await pipeline([stage('a', () => reject)]).decide(stateless)).action, '550 5.7.1 no');
    assert.equal((await pipeline([stage('a', () => reject, {}, 'enforce', ['DATA'])]).decide(rcpt({ protocol_state: 'data' }))).action, '550 5.7.1 no');
  });

  it('at MAIL cuts a reply text to what fits after Postfix\'s "<sender>: Sender address rejected: "', async () => {
    const sender = `${'s'.repeat(64)}@${'d'.repeat(180)}.example`;
    const out = await pipeline([stage('a', () => ({ ...reject, text: 'why '.repeat(200) }), {}, 'enforce', ['MAIL'])]).decide(rcpt({ protocol_state: 'MAIL', recipient: '', sender }));
    assert.ok(out.action.startsWith('550 5.7.1 why') && out.action.endsWith('...'), out.action);
    const line = `550 5.7.1 <${sender}>: Sender address rejected: ${out.action.slice('550 5.7.1 '.length)}\r\n`;
    assert.ok(line.length <= 512, `${line.length} octets`);
  });

  it('names a client without a verified name "unknown", as Postfix does', async () => {
    let seen: StageContext | undefined;
    await pipeline([stage('peek', (ctx) => ((seen = ctx), { kind: 'continue' }))]).decide(rcpt({ client_name: '' }));
    assert.equal(seen!.clientName, 'unknown');
  });

  it('shows the answer only to observers that are on and configured for the request\'s state (a tarpit turned off delays nothing)', async () => {
    const observed: string[] = [];
    const observer = (name: string, mode: ConfiguredStage['mode'], states: ProtocolState[]): ConfiguredStage => ({
      mode,
      states: new Set(states),
      acceptAction: 'DUNNO',
      stage: {
        name,
        states: new Set(['MAIL', 'RCPT']),
        evaluate: () => ({ stage: name, result: 'ok', reason: 'ok', decision: { kind: 'continue' } }),
        observe: async () => {
          observed.push(name);
        },
      },
    });
    await pipeline([observer('off', 'off', ['RCPT']), observer('mail-only', 'enforce', ['MAIL']), observer('on', 'enforce', ['RCPT'])]).decide(rcpt());
    assert.deepEqual(observed, ['on']);
  });

  it('with warnAction PREPEND gives the warning header at once to a request without an instance', async () => {
    const out = await pipeline([stage('a', () => reject, {}, 'warn')], { warnAction: 'PREPEND' }).decide(rcpt({ instance: '' }));
    assert.equal(out.action, 'PREPEND X-Callout-Warning: a would answer 550 5.7.1 no');
  });

  it('does not remember headers asked for where Postfix would not take them (END-OF-MESSAGE, MAIL)', async () => {
    const p = pipeline([stage('auth', () => ({ kind: 'prepend', header: 'X-Test: yes' }), {}, 'enforce', ['MAIL', 'END-OF-MESSAGE'])]);
    await p.decide(rcpt({ protocol_state: 'END-OF-MESSAGE', recipient: '' }));
    await p.decide(rcpt({ protocol_state: 'MAIL', recipient: '', instance: 'i0' }));
    assert.equal(p.messages.size, 0);
  });
});

describe('buildPipeline', () => {
  const deps = () => {
    const clock = new ManualClock();
    return { resolver: undefined as never, store: new MemoryStore({ clock }), clock, log: createLogger('silent') };
  };

  it('gives a stage its configured states and acceptAction', async () => {
    const config = validateConfig({ policy: { stages: [{ name: 'allowlist', clients: ['192.0.2.0/24'], acceptAction: 'OK', states: ['MAIL'] }] } });
    const p = buildPipeline(config, deps());
    assert.equal((await p.decide(rcpt({ protocol_state: 'MAIL', recipient: '', client_address: '192.0.2.7' }))).action, 'OK');
    assert.equal((await p.decide(rcpt({ client_address: '192.0.2.7' }))).action, 'DUNNO', 'not at RCPT, its default state');
  });

  it('refuses states a stage cannot run in, naming the entry', () => {
    const config = validateConfig({ policy: { stages: [{ name: 'postmaster', states: ['CONNECT'] }] } });
    assert.throws(() => buildPipeline(config, deps()), (err: unknown) => err instanceof ConfigError && /^policy\.stages\.0\.states \(postmaster\): got CONNECT: this stage runs only in RCPT/.test(err.message));
  });

  it('names a problem found as a stage is built as the schema names its problems: the full key, then the stage\'s name', () => {
    const refusal = (stage: Record<string, unknown>) => {
      try {
        buildPipeline(validateConfig({ policy: { stages: [{ name: 'postmaster' }, stage] } }), deps());
      } catch (err) {
        assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
        return err.message;
      }
      assert.fail(`expected ${JSON.stringify(stage)} to be refused`);
    };
    // An option named bare ("text: ...") and with the stage's name ("greylist.skip...: ...").
    assert.equal(refusal({ name: 'greylist', text: 'in {reson}' }), 'policy.stages.1.text (greylist): unknown placeholder {reson}; this text takes {seconds}, %s, {retryAt}, {recipientDomain}, %r, {reason}');
    assert.match(refusal({ name: 'greylist', skip: { fcrdnsProviders: ['*.outlook.com'] } }), /^policy\.stages\.1\.skip\.fcrdnsProviders \(greylist\): "\*\.outlook\.com" is not a domain/);
    // No option: the entry alone (it said "policy.stages.1 (recipient-callforward): policy.stages recipient-callforward: ...").
    assert.equal(
      refusal({ name: 'recipient-callforward', hosts: ['127.0.0.1'] }),
      "policy.stages.1 (recipient-callforward): call-forward callouts need callout.helo (or a fully qualified host name); the stage's own helo only changes the name they send",
    );
  });

  it('refuses a stage name no module registers with a ConfigError naming its key, not an uncoded Error', () => {
    const config = validateConfig({});
    config.policy.stages = [...config.policy.stages, { name: 'nonesuch' } as StageEntry];
    const clock = new ManualClock();
    const deps = { resolver: undefined as never, store: new MemoryStore({ clock }), clock, log: createLogger('silent') };
    assert.throws(
      () => buildPipeline(config, deps),
      (err: unknown) => err instanceof ConfigError && err.code === 'CONFIG_INVALID' && err.message.startsWith(`policy.stages.${config.policy.stages.length - 1}.name: got "nonesuch", expected one of allowlist, `),
    );
  });
});
