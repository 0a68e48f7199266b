// The ratelimit stage run side by side with a reference model of the README's rules ("Rate
// limits (`ratelimit`)") over random sequences of requests, on a MemoryStore with time moved by
// ManualClock. The model is written from the README, not from src/, in exact integer
// arithmetic: each answer, the limit and key it names and the seconds of its retry text must agree.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { createLogger } from '../../../src/core/log.js';
import { ManualClock } from '../../support/manual-time.js';
import { ratelimitStage } from '../../../src/policy/stages/ratelimit.js';
import type { Stage, StageContext, StageDeps } from '../../../src/policy/types.js';
import { MemoryStore } from '../../../src/store/index.js';
import { stageContext } from '../../support/stage-context.js';

const S = 1000;
const MINUTE = 60 * S;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
/** Windows with the text the deferral gives them. */
const WINDOWS = { '10s': 10 * S, '1m': MINUTE, '1h': HOUR, '1d': DAY } as const;
type WindowText = keyof typeof WINDOWS;

interface Limit {
  name: string;
  per: 'client' | 'sender' | 'sender-domain';
  count: 'recipients' | 'messages';
  max: number;
  window: WindowText;
  action: 'defer' | 'warn';
}

interface Settings {
  limits: Limit[];
  ipv4Prefix: 24 | 32;
  ipv6Prefix: 64 | 128;
}

/**
 * Client addresses with their key by address and by network, as the README names them, by hand;
 * an IPv4-mapped address counts as the IPv4 address it names (as in the greylist).
 */
const CLIENTS = [
  { address: '192.0.2.1', host: '192.0.2.1', network: '192.0.2.0/24' },
  { address: '192.0.2.77', host: '192.0.2.77', network: '192.0.2.0/24' },
  { address: '::ffff:192.0.2.1', host: '192.0.2.1', network: '192.0.2.0/24' },
  { address: '198.51.100.7', host: '198.51.100.7', network: '198.51.100.0/24' },
  { address: '2001:db8:1:2::1', host: '2001:db8:1:2::1', network: '2001:db8:1:2::/64' },
  { address: '2001:DB8:1:2:0:0:0:1', host: '2001:db8:1:2::1', network: '2001:db8:1:2::/64' },
  { address: '2001:db8:1:2::beef', host: '2001:db8:1:2::beef', network: '2001:db8:1:2::/64' },
] as const;

/** Senders with their key (only A-Z of the local part lower-cased, the domain as its A-label) and domain. */
const SENDERS = [
  { text: 'alice@d1.example', key: 'alice@d1.example', domain: 'd1.example' },
  { text: 'Alice@D1.Example', key: 'alice@d1.example', domain: 'd1.example' },
  { text: 'bob@d1.example', key: 'bob@d1.example', domain: 'd1.example' },
  { text: 'news@bücher.example', key: 'news@xn--bcher-kva.example', domain: 'xn--bcher-kva.example' },
  { text: 'News@xn--bcher-kva.example', key: 'news@xn--bcher-kva.example', domain: 'xn--bcher-kva.example' },
  // Bounces count per client only; a sender without a domain per client and per sender.
  { text: '', key: undefined, domain: undefined },
  { text: 'user', key: 'user', domain: undefined },
] as const;

type Answer = { action: 'DUNNO'; warned: boolean } | { action: string };

/** The README's rules over logs of the events each limit let through, per key. */
class RatelimitModel {
  /** Times of the events counted, per limit and key. */
  private readonly counted = new Map<string, number[]>();
  /** Per message and limit: whether its first counted recipient was let through or deferred. */
  private readonly messages = new Map<string, 'through' | 'deferred'>();

  constructor(private readonly s: Settings) {}

  decide(now: number, client: (typeof CLIENTS)[number], sender: (typeof SENDERS)[number], message: string): Answer {
    const judged: Array<{ limit: Limit; key: string; over: boolean }> = [];
    const counting: Array<{ limit: Limit; key: string }> = [];
    for (const limit of this.s.limits) {
      const key = this.keyOf(limit, client, sender);
      if (key === undefined) continue;
      // A later recipient of a message let through is let through; one of a deferred message counts it again.
      if (limit.count === 'messages' && this.messages.get(`${limit.name}/${message}`) === 'through') continue;
      counting.push({ limit, key });
      judged.push({ limit, key, over: this.over(limit, key, now) });
    }
    const enforced = judged.find((j) => j.over && j.limit.action === 'defer');
    for (const { limit } of counting) if (limit.count === 'messages') this.messages.set(`${limit.name}/${message}`, enforced ? 'deferred' : 'through');
    if (enforced) {
      const { limit, key } = enforced;
      const seconds = Math.max(1, Math.ceil((this.roomAt(limit, key, now) - now) / S));
      return { action: `450 4.7.1 Rate limit ${limit.name} exceeded for ${key}: more than ${limit.max} ${limit.count} in ${limit.window}, try again in ${seconds} seconds` };
    }
    // What is let through counts, warn limits over theirs included; what is deferred counts nowhere.
    for (const { limit, key } of counting) this.log(limit, key).push(now);
    return { action: 'DUNNO', warned: judged.some((j) => j.over) };
  }

  private keyOf(limit: Limit, client: (typeof CLIENTS)[number], sender: (typeof SENDERS)[number]): string | undefined {
    if (limit.per === 'client') return (client.host.includes(':') ? this.s.ipv6Prefix === 128 : this.s.ipv4Prefix === 32) ? client.host : client.network;
    return limit.per === 'sender' ? sender.key : sender.domain;
  }

  private log(limit: Limit, key: string): number[] {
    const id = `${limit.name}/${key}`;
    const times = this.counted.get(id) ?? [];
    this.counted.set(id, times);
    return times;
  }

  /** Events counted in fixed window `index` (windows are multiples of the window since the epoch). */
  private inWindow(limit: Limit, key: string, index: number): number {
    const w = WINDOWS[limit.window];
    return this.log(limit, key).filter((t) => Math.floor(t / w) === index).length;
  }

  /**
   * Whether one more event at `at` is over the limit: previous × (window − elapsed) / window +
   * current, with it, above max (times window: integers, no rounding). Only events before `at`
   * are in the log.
   */
  private over(limit: Limit, key: string, at: number): boolean {
    const w = WINDOWS[limit.window];
    const index = Math.floor(at / w);
    const elapsed = at - index * w;
    return this.inWindow(limit, key, index - 1) * (w - elapsed) + (this.inWindow(limit, key, index) + 1) * w > limit.max * w;
  }

  /** The first millisecond at which one more event is within the limit, if nothing else came. */
  private roomAt(limit: Limit, key: string, now: number): number {
    const w = WINDOWS[limit.window];
    const index = Math.floor(now / w);
    for (let j = index; ; j += 1) {
      const previous = j - 1 <= index ? this.inWindow(limit, key, j - 1) : 0;
      const current = j === index ? this.inWindow(limit, key, j) : 0;
      const room = limit.max - 1 - current;
      if (room < 0) continue;
      const from = j === index ? now - j * w : 0;
      // previous × (w − e) ≤ room × w
      const earliest = previous === 0 ? 0 : Math.max(0, Math.ceil(((previous - room) * w) / previous));
      const e = Math.max(from, earliest);
      if (e < w) return j * w + e;
    }
  }
}

const silent = createLogger('silent');

function stageOf(settings: Settings, clock: ManualClock): Stage {
  const deps: StageDeps = { resolver: undefined as never, store: new MemoryStore({ clock }), clock, log: silent };
  return ratelimitStage.create(ratelimitStage.options.parse(settings) as never, deps);
}

function contextOf(clock: ManualClock, client: string, sender: string, instance: string): StageContext {
  const request = { client_address: client, client_port: '40000', server_address: '127.0.0.1', server_port: '25', helo_name: 'mx.example', sender, recipient: 'r@example.test', instance };
  return stageContext(request, { clock, deadlineMs: 5000 });
}

async function stageAnswer(stage: Stage, ctx: StageContext): Promise<Answer> {
  const verdict = await stage.evaluate(ctx);
  const { decision } = verdict;
  if (decision.kind === 'defer') return { action: `${decision.code} ${decision.enhanced} ${decision.text}` };
  return { action: 'DUNNO', warned: verdict.result === 'warn' };
}

interface Event {
  stepMs: number;
  /** Another recipient of the latest message, or a new message. */
  more: boolean;
  client: number;
  sender: number;
}

const limitArbitrary = (name: string): fc.Arbitrary<Limit> =>
  fc.record({
    name: fc.constant(name),
    per: fc.constantFrom('client' as const, 'sender' as const, 'sender-domain' as const),
    count: fc.constantFrom('recipients' as const, 'messages' as const),
    max: fc.integer({ min: 1, max: 4 }),
    window: fc.constantFrom(...(Object.keys(WINDOWS) as WindowText[])),
    action: fc.constantFrom('defer' as const, 'defer' as const, 'warn' as const),
  });

const settingsArbitrary: fc.Arbitrary<Settings> = fc.record({
  limits: fc.integer({ min: 1, max: 3 }).chain((n) => fc.tuple(...Array.from({ length: n }, (_, i) => limitArbitrary(`l${i}`)))),
  ipv4Prefix: fc.constantFrom(24 as const, 32 as const),
  ipv6Prefix: fc.constantFrom(64 as const, 128 as const),
});

/** Steps of 0 to 3 days, most of them around the windows' lengths and their fractions. */
function eventsArbitrary(s: Settings): fc.Arbitrary<Event[]> {
  const edges = s.limits
    .flatMap((l) => [WINDOWS[l.window] / 4, WINDOWS[l.window] / 3, WINDOWS[l.window] / 2, WINDOWS[l.window], (4 * WINDOWS[l.window]) / 3, 2 * WINDOWS[l.window]])
    .flatMap((t) => [t - 1, t, t + 1, t - S, t + S].map(Math.round));
  const step = fc.oneof(
    { arbitrary: fc.constant(0), weight: 4 },
    { arbitrary: fc.constantFrom(...edges), weight: 3 },
    { arbitrary: fc.integer({ min: 0, max: 10 * S }), weight: 2 },
    { arbitrary: fc.integer({ min: 0, max: 3 * DAY }), weight: 1 },
  );
  return fc.array(fc.record({ stepMs: step, more: fc.boolean(), client: fc.nat(CLIENTS.length - 1), sender: fc.nat(SENDERS.length - 1) }), { minLength: 1, maxLength: 60 });
}

/** Runs the events through the stage and the model; the first disagreement, or the answers they agreed on. */
async function compare(settings: Settings, events: readonly Event[], start: number): Promise<{ problem: string } | { answers: Answer[] }> {
  const clock = new ManualClock(start);
  const stage = stageOf(settings, clock);
  const model = new RatelimitModel(settings);
  let message: { n: number; client: number; sender: number; since: number } | undefined;
  const answers: Answer[] = [];
  try {
    for (const [n, event] of events.entries()) {
      clock.advance(event.stepMs);
      // Recipients of one message come within its SMTP session: a later one within half an hour.
      if (!event.more || !message || clock.now() - message.since > 30 * MINUTE) message = { n, client: event.client, sender: event.sender, since: clock.now() };
      const [client, sender] = [CLIENTS[message.client]!, SENDERS[message.sender]!];
      const expected = model.decide(clock.now(), client, sender, `m${message.n}`);
      const actual = await stageAnswer(stage, contextOf(clock, client.address, sender.text, `m${message.n}`));
      if (JSON.stringify(actual) !== JSON.stringify(expected)) {
        return { problem: `event ${n} at ${new Date(clock.now()).toISOString()} (${client.address}, <${sender.text}>, m${message.n}): model ${JSON.stringify(expected)}, stage ${JSON.stringify(actual)}` };
      }
      answers.push(expected);
    }
    return { answers };
  } finally {
    await stage.close?.();
  }
}

describe('ratelimit stage against a model of the README', () => {
  it('agrees on every answer, the limit and key named and the retry seconds over random request sequences', async () => {
    await fc.assert(
      fc.asyncProperty(
        settingsArbitrary.chain((settings) => fc.tuple(fc.constant(settings), eventsArbitrary(settings))),
        // Starts at a window's start, on a second, or anywhere in a millisecond of the day: windows are counted from the epoch.
        fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 86_399 }).map((n) => n * S), fc.integer({ min: 0, max: DAY - 1 })),
        async ([settings, events], offset) => {
          const outcome = await compare(settings, events, Date.UTC(2026, 0, 1) + offset);
          assert.ok(!('problem' in outcome), `${JSON.stringify(settings)}: ${'problem' in outcome ? outcome.problem : ''}`);
        },
      ),
      // A fixed seed, so CI never meets a new sequence; MODEL_SEED and MODEL_RUNS explore others by hand.
      { numRuns: Number(process.env.MODEL_RUNS ?? 600), seed: Number(process.env.MODEL_SEED ?? 20261206) },
    );
  });

  it('names the exact second when the previous window holds a third of its count to slide out', async () => {
    // Three recipients in 00:00-01:00; at 01:20 two thirds of them still count, so one more is
    // the limit's third and a second one is over: room at 01:40, 1200 s later. (1 − 1/3) × 1h is
    // 2400000.0000000005 ms in floating point, a millisecond past it rounded up: a whole second
    // more in the text were it not added to the window's start, where the excess is below an ulp.
    const settings: Settings = { limits: [{ name: 'l0', per: 'client', count: 'recipients', max: 3, window: '1h', action: 'defer' }], ipv4Prefix: 32, ipv6Prefix: 128 };
    const event = (stepMs: number): Event => ({ stepMs, more: false, client: 0, sender: 0 });
    const events = [event(0), event(0), event(0), event(HOUR + 20 * MINUTE), event(0)];
    const outcome = await compare(settings, events, Date.UTC(2026, 0, 1));
    assert.ok('answers' in outcome, 'problem' in outcome ? outcome.problem : '');
    assert.deepEqual(outcome.answers.slice(3), [
      { action: 'DUNNO', warned: false },
      { action: '450 4.7.1 Rate limit l0 exceeded for 192.0.2.1: more than 3 recipients in 1h, try again in 1200 seconds' },
    ]);
  });
});
