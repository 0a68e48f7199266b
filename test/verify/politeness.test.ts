// The promises of responsible callouts, checked over real loopback sockets on every path that
// reaches an exchanger: what is refused as a target, what is sent (and what never is), and the
// limits and caches that keep one domain's or one server's load bounded.
import { describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { paddedRecords } from '../support/fuzz.js';
import net from 'node:net';
import { CachingResolver } from '../../src/dns/cache.js';
import { createNodeResolver } from '../../src/dns/node-resolver.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryStore } from '../../src/store/memory.js';
import { SqliteStore } from '../../src/store/sqlite.js';
import { RedisStore } from '../../src/store/redis.js';
import type { Store } from '../../src/store/types.js';
import type { Dialer } from '../../src/smtp/types.js';
import { CalloutEngine } from '../../src/verify/engine.js';
import { Politeness, type HostSlot, type PolitenessOptions } from '../../src/verify/politeness.js';
import { ManualClock, ManualTimers } from '../support/manual-time.js';
import { acceptAll, dropAfterRset, pathOf, pipelining, refuseNullSender, rejectEhlo, rejectGreeting, usersOnly } from '../support/smtp-server.js';
import { startRedis } from '../support/redis.js';
import { mxZone, worldMaker, type World } from './fixture.js';

const make = worldMaker();

/** Every connection the engines given it open, and the most open at once to each address. */
interface Dialled {
  hosts: string[];
  maxOpen: Map<string, number>;
  open: Map<string, number>;
}

/**
 * An engine of the world whose dialer records every connection it opens; engines given one
 * Dialled (workers sharing a store) are counted together.
 */
function recordingEngine(
  t: TestContext,
  w: World,
  overrides: Record<string, unknown>,
  store?: Store,
  dialled: Dialled = { hosts: [], maxOpen: new Map(), open: new Map() },
): { engine: CalloutEngine; dialled: Dialled } {
  const { open } = dialled;
  const dialer: Dialer = ({ host, port }) => {
    dialled.hosts.push(host);
    const now = (open.get(host) ?? 0) + 1;
    open.set(host, now);
    dialled.maxOpen.set(host, Math.max(now, dialled.maxOpen.get(host) ?? 0));
    const socket = net.connect({ host, port });
    // Open until it closes or says QUIT, whose 221 a callout does not wait for (Postfix's
    // smtp_skip_quit_response): the server's end of such a connection is closing already.
    let counted = true;
    const done = (): void => {
      if (counted) open.set(host, (open.get(host) ?? 1) - 1);
      counted = false;
    };
    const write = socket.write.bind(socket) as (chunk: unknown, ...rest: unknown[]) => boolean;
    socket.write = ((chunk: unknown, ...rest: unknown[]) => {
      if (/(^|\r\n)QUIT\r\n$/.test(String(chunk))) done();
      return write(chunk, ...rest);
    }) as typeof socket.write;
    socket.once('close', done);
    return socket;
  };
  const resolver = new CachingResolver(createNodeResolver({ servers: [w.dns.address], timeoutMs: 2000, tries: 1 }), { clock: w.clock });
  const s = store ?? new MemoryStore({ clock: w.clock });
  const engine = new CalloutEngine(w.config(overrides), { resolver, store: s, clock: w.clock, dialer, random: () => 0 });
  t.after(async () => {
    await engine.idle();
    if (!store) await s.close();
  });
  return { engine, dialled };
}


/**
 * A shared store whose reads wait until open() (another worker holding SQLite's write lock, a
 * slow Redis); not a memory store, so per-host slots are leased in it.
 */
function gatedStore(clock: ManualClock): { memory: MemoryStore; store: Store; open: () => void } {
  let open: () => void = () => undefined;
  const gate = new Promise<void>((resolve) => {
    open = resolve;
  });
  const memory = new MemoryStore({ clock });
  const store: Store = Object.assign(Object.create(memory) as MemoryStore, {
    kind: 'sqlite' as const,
    get: async (key: string) => {
      await gate;
      return memory.get(key);
    },
  });
  return { memory, store, open };
}

/** A Politeness on `store` with the settings these tests share: one connection per host, leases of 65 s, no rate limits. */
function politenessOn(store: Store, clock: ManualClock, over: Partial<PolitenessOptions> = {}): Politeness {
  return new Politeness({ clock, concurrency: 8, perHostConcurrency: 1, leaseMs: 65_000, perDomainPerMinute: Infinity, perHostConnectionsPerMinute: Infinity, allowTargets: [], store, keyPrefix: '', ...over });
}

describe('targets: private and loopback exchangers are refused unless allowTargets names them', () => {
  it('an exchanger with a public-looking and a private address is asked only at the allowed one; every private form is refused without a connection', async (t) => {
    const zone = {
      // One exchanger name, a private address beside the allowed loopback one.
      ...mxZone({ 'mixed.test': ['127.0.0.140'] }),
      'mx1.mixed.test': { A: ['10.0.0.1', '127.0.0.140'] },
      ...mxZone({
        'mapped10.test': '::ffff:10.0.0.1',
        'mapped10hex.test': '::ffff:a00:1',
        'unspec.test': '0.0.0.0',
        'unspec6.test': '::',
        'nat64.test': '64:ff9b::a00:1',
        '6to4.test': '2002:a00:1::1',
        'linklocal.test': '169.254.1.1',
        'ula.test': 'fd00::1',
      }),
      // The exchange written as an IP address (Postfix delivers to it).
      'numeric.test': { MX: [{ priority: 10, exchange: '10.0.0.1' }] },
      'numeric6.test': { MX: [{ priority: 10, exchange: '::ffff:10.0.0.1' }] },
    };
    const w = await make(zone, { '127.0.0.140': usersOnly(['alice']) });
    const { engine, dialled } = recordingEngine(t, w, { callout: { allowTargets: ['127.0.0.0/8'] } });
    // The loopback literals are refused by an engine that allows no target at all.
    const loopbackRefused = recordingEngine(t, w, { callout: { allowTargets: [] } });
    const mixed = await engine.verify('alice@mixed.test');
    assert.equal(mixed.verdict, 'deliverable', mixed.description);
    const refusedFirst = mixed.attempts.find((a) => a.address === '10.0.0.1');
    assert.ok(refusedFirst, 'the private address is in the attempts');
    assert.match(refusedFirst.outcome, /not contacted: 10\.0\.0\.1 is a private address/);
    for (const address of [
      'alice@mapped10.test',
      'alice@mapped10hex.test',
      'alice@unspec.test',
      'alice@unspec6.test',
      'alice@nat64.test',
      'alice@6to4.test',
      'alice@linklocal.test',
      'alice@ula.test',
      'alice@numeric.test',
      'alice@numeric6.test',
      'alice@[10.0.0.1]',
      'alice@[0.0.0.0]',
      'alice@[IPv6:::ffff:10.0.0.1]',
      'alice@[IPv6:::ffff:127.0.0.1]',
      'alice@[IPv6:64:ff9b::7f00:1]',
    ]) {
      const r = await (address.includes('127.0.0.1') || address.includes('7f00') ? loopbackRefused.engine : engine).verify(address);
      assert.deepEqual([r.verdict, r.reason], ['unknown', 'target-refused'], `${address}: ${r.description}`);
    }
    assert.deepEqual(dialled.hosts, ['127.0.0.140'], 'only the allowed address was dialled');
    assert.deepEqual(loopbackRefused.dialled.hosts, [], 'no loopback literal was dialled');
  });

  it('an allow-list entry of an IPv4 network lifts the refusal of that network only, not of an IPv6 form embedding another private address', () => {
    const clock = new ManualClock();
    const politeness = new Politeness({
      clock,
      concurrency: 1,
      perHostConcurrency: 1,
      leaseMs: 1,
      perDomainPerMinute: 1,
      perHostConnectionsPerMinute: 1,
      allowTargets: ['127.0.0.0/8'],
      store: new MemoryStore({ clock }),
      keyPrefix: '',
    });
    assert.equal(politeness.targetRefusal('127.0.0.5'), undefined);
    for (const ip of ['10.0.0.1', '192.168.1.1', '172.16.0.1', '100.64.0.1', '0.0.0.0', '::', '::1', '64:ff9b::a00:1', '2002:a00:1::1', 'fe80::1', '224.0.0.1', '255.255.255.255']) {
      assert.ok(politeness.targetRefusal(ip), `${ip} is refused`);
    }
  });
});

describe('identification: what a callout sends', () => {
  /** Every command the server got is one a callout may send, named as configured. */
  function assertOnlyCalloutCommands(commands: string[], helo: string, senders: string[]): void {
    for (const command of commands) {
      const verb = command.split(/[ :]/)[0]!.toUpperCase();
      assert.ok(['EHLO', 'HELO', 'MAIL', 'RCPT', 'RSET', 'QUIT'].includes(verb), `unexpected command ${command}`);
      if (verb === 'EHLO' || verb === 'HELO') assert.equal(command, `${verb} ${helo}`);
      if (verb === 'MAIL') assert.ok(senders.includes(pathOf(command.slice(5))), `MAIL FROM ${command}`);
    }
  }

  it('EHLO (and HELO when EHLO is refused) names callout.helo, MAIL FROM:<> by default, never VRFY or DATA, on the random and postmaster probes too', async () => {
    const w = await make(mxZone({ 'plain.test': '127.0.0.141', 'old.test': '127.0.0.142', 'piped.test': '127.0.0.143' }), {
      '127.0.0.141': usersOnly(['alice', 'postmaster']),
      '127.0.0.142': { ...rejectEhlo(), ...usersOnly(['alice', 'postmaster']) },
      '127.0.0.143': { ...pipelining(), ...usersOnly(['alice', 'postmaster']) },
    });
    const engine = w.engine({ callout: { postmasterProbe: 'fullpostmaster', tls: 'off' } });
    const results = await engine.verifyMany(['alice@plain.test', 'nobody@plain.test', 'alice@old.test', 'alice@piped.test', 'bob@piped.test']);
    assert.deepEqual(results.map((r) => r.verdict), ['deliverable', 'undeliverable', 'deliverable', 'deliverable', 'undeliverable']);
    for (const host of ['127.0.0.141', '127.0.0.142', '127.0.0.143']) {
      const commands = w.commands(host);
      assert.ok(commands.some((c) => /^RCPT TO:<callout-[a-z0-9]{12}@/.test(c)), `${host}: the random probe ran`);
      assertOnlyCalloutCommands(commands, 'verifier.callout.test', ['']);
    }
    assert.ok(w.commands('127.0.0.142').includes('HELO verifier.callout.test'), 'w.commands(\'127.0.0.142\').includes(\'HELO verifier.callout.test\')');
  });

  it('the fallback sender is used only after MAIL FROM:<> is refused, and nothing else is sent', async () => {
    const w = await make(mxZone({ 'nobounce.test': '127.0.0.144' }), { '127.0.0.144': { ...refuseNullSender(), ...usersOnly(['alice']) } });
    const engine = w.engine({ callout: { fallbackSender: 'verify@callout.test', tls: 'off' } });
    const r = await engine.verify('alice@nobounce.test');
    assert.equal(r.reason, 'null-sender-refused');
    const commands = w.commands('127.0.0.144');
    assert.equal(pathOf(commands.find((c) => c.startsWith('MAIL'))!.slice(5)), '', 'the null sender first');
    assertOnlyCalloutCommands(commands, 'verifier.callout.test', ['', 'verify@callout.test']);
  });
});

describe('caches: no second probe of what is known', () => {
  it('the address cache answers the same address with its domain in another letter case', async () => {
    const w = await make(mxZone({ 'case.test': '127.0.0.145' }), { '127.0.0.145': usersOnly(['alice']) });
    const engine = w.engine({ callout: { connectionCache: { enabled: false } } });
    assert.equal((await engine.verify('alice@case.test')).verdict, 'deliverable');
    for (const address of ['alice@CASE.TEST', 'alice@Case.Test', '<alice@CASE.test>']) {
      const r = await engine.verify(address);
      assert.deepEqual([r.verdict, r.source], ['deliverable', 'address-cache'], address);
    }
    assert.equal(w.connections('127.0.0.145'), 1);
  });

  it('a domain that refused us at the greeting with a 5xx is not asked again for another address within cache.domainNegative', async () => {
    const w = await make(mxZone({ 'banner.test': '127.0.0.146' }), { '127.0.0.146': rejectGreeting(554) });
    const engine = w.engine();
    assert.equal((await engine.verify('alice@banner.test')).reason, 'refused-at-greeting');
    const again = await engine.verify('BOB@BANNER.TEST');
    assert.equal(again.source, 'domain-cache');
    assert.equal(w.connections('127.0.0.146'), 1);
  });

  it('a domain that refused us with a 4xx at the greeting or at MAIL is not asked again for another address within cache.tempfail', async () => {
    const w = await make(mxZone({ 'busy.test': '127.0.0.147', 'later.test': '127.0.0.148' }), {
      '127.0.0.147': rejectGreeting(421),
      '127.0.0.148': { mail: () => '451 4.7.1 Service unavailable - try again later' },
    });
    const engine = w.engine();
    assert.equal((await engine.verify('alice@busy.test')).reason, 'refused-at-greeting');
    assert.equal((await engine.verify('alice@later.test')).reason, 'refused-at-mail');
    await engine.verify('bob@busy.test');
    await engine.verify('bob@later.test');
    assert.equal(w.connections('127.0.0.147'), 1, 'no second connection to a server that said 421 at the greeting');
    assert.equal(w.connections('127.0.0.148'), 1, 'no second connection to a server that deferred MAIL FROM');
  });

  it('stale answers refreshed in the background keep to the per-domain rate', async () => {
    const w = await make(mxZone({ 'stale.test': '127.0.0.149' }), { '127.0.0.149': usersOnly(['a', 'b', 'c', 'd']) });
    const engine = w.engine({ limits: { perDomainPerMinute: 1 }, callout: { connectionCache: { enabled: false } } });
    for (const user of ['a', 'b', 'c', 'd']) {
      assert.equal((await engine.verify(`${user}@stale.test`)).verdict, 'deliverable');
      w.clock.advance(61_000);
    }
    assert.equal(w.connections('127.0.0.149'), 4);
    // Past the refresh age (12 h) every answer is stale: four refreshes asked for in one minute.
    w.clock.advance(13 * 3_600_000);
    for (const user of ['a', 'b', 'c', 'd']) {
      const r = await engine.verify(`${user}@stale.test`);
      assert.deepEqual([r.verdict, r.stale], ['deliverable', true]);
    }
    await engine.idle();
    assert.equal(w.connections('127.0.0.149'), 5, 'one refresh in that minute');
  });

  it('an address answered stale again while its refresh runs starts no second refresh: the per-domain budget is spent once', async () => {
    const w = await make(mxZone({ 'stale2.test': '127.0.0.148' }), { '127.0.0.148': usersOnly(['a', 'b']) });
    const engine = w.engine({ limits: { perDomainPerMinute: 2 } });
    assert.equal((await engine.verify('a@stale2.test')).verdict, 'deliverable');
    w.clock.advance(13 * 3_600_000);
    const answers = await Promise.all([1, 2, 3].map(() => engine.verify('a@stale2.test')));
    assert.ok(answers.every((r) => r.stale), 'answers.every((r) => r.stale)');
    await engine.idle();
    const other = await engine.verify('b@stale2.test');
    assert.deepEqual([other.verdict, other.reason], ['deliverable', 'accepted'], 'one refresh and this callout: two of the minute\'s two');
  });

  it('a stale answer is not refreshed at a domain known to greylist us', async () => {
    const w = await make(mxZone({ 'grey.test': '127.0.0.153' }), {
      '127.0.0.153': { rcpt: (arg) => (/^<?alice@/i.test(pathOf(arg)) ? '250 2.1.5 Ok' : /callout-/.test(arg) ? '550 5.1.1 no such user' : '450 4.7.1 Greylisted, try again later') },
    });
    const engine = w.engine({ callout: { connectionCache: { enabled: false } } });
    assert.equal((await engine.verify('alice@grey.test')).verdict, 'deliverable');
    w.clock.advance(13 * 3_600_000);
    assert.equal((await engine.verify('carol@grey.test')).reason, 'greylisted');
    assert.equal(w.connections('127.0.0.153'), 2);
    const stale = await engine.verify('alice@grey.test');
    assert.deepEqual([stale.verdict, stale.stale], ['deliverable', true]);
    await engine.idle();
    assert.equal(w.connections('127.0.0.153'), 2, 'the refresh was answered by the greylist record');
  });
});

describe('limits on every path', () => {
  it('verifyMany of more addresses than one connection takes never opens more connections to one exchanger at once than perHostConcurrency', async (t) => {
    const users = Array.from({ length: 9 }, (_, i) => `u${i}`);
    const w = await make(mxZone({ 'many.test': '127.0.0.150' }), { '127.0.0.150': { ...usersOnly(users), greeting: () => ({ reply: '220 slow', delayMs: 200 }) } });
    const { engine, dialled } = recordingEngine(t, w, { limits: { perHostConcurrency: 1, addressesPerConnection: 3 } });
    const results = await engine.verifyMany(users.map((u) => `${u}@many.test`));
    assert.ok(results.every((r) => r.verdict === 'deliverable' || r.reason === 'rate-limited'), results.map((r) => r.reason).join());
    assert.equal(dialled.maxOpen.get('127.0.0.150'), 1);
  });

  it('reconnects (a server that drops us after RSET) count against perHostConnectionsPerMinute', async (t) => {
    const w = await make(mxZone({ 'dropping.test': '127.0.0.151' }), { '127.0.0.151': { ...dropAfterRset(), ...usersOnly(['alice']) } });
    const { engine, dialled } = recordingEngine(t, w, { limits: { perHostConnectionsPerMinute: 1 }, callout: { connectionCache: { enabled: false } } });
    await engine.verify('alice@dropping.test');
    await engine.verify('bob@dropping.test');
    assert.equal(dialled.hosts.length, 1, `connections: ${dialled.hosts.join()}`);
  });

  /** Two SQLite connections to one file: what two policy workers share. */
  async function sharedSqlite(t: TestContext, clock: ManualClock): Promise<[SqliteStore, SqliteStore]> {
    const dir = mkdtempSync(join(tmpdir(), 'callout-host-leases-'));
    const stores: [SqliteStore, SqliteStore] = [await SqliteStore.open(join(dir, 'shared.db'), { clock }), await SqliteStore.open(join(dir, 'shared.db'), { clock })];
    t.after(async () => {
      await Promise.all(stores.map((s) => s.close()));
      rmSync(dir, { recursive: true, force: true });
    });
    return stores;
  }

  it('two engines on one store (two policy workers) open no more connections to one exchanger at once than perHostConcurrency; the other answers as one engine would', async (t) => {
    // Two domains at one exchanger address, so that neither engine waits for the other's probe
    // or catch-all lock: only the per-host limit stands between them. b.test has a second MX.
    const w = await make(
      { ...mxZone({ 'a.test': '127.0.0.153', 'c.test': '127.0.0.153' }), ...mxZone({ 'b.test': ['127.0.0.153', '127.0.0.154'] }) },
      { '127.0.0.153': { ...usersOnly(['alice', 'bob', 'carol']), greeting: () => ({ reply: '220 slow', delayMs: 400 }) }, '127.0.0.154': usersOnly(['bob']) },
    );
    const [one, two] = await sharedSqlite(t, w.clock);
    const overrides = { limits: { perHostConcurrency: 1 }, callout: { connectionCache: { enabled: false } } };
    const first = recordingEngine(t, w, overrides, one);
    const second = recordingEngine(t, w, overrides, two, first.dialled);
    const [alice, carol] = await Promise.all([first.engine.verify('alice@a.test'), second.engine.verify('carol@c.test')]);
    assert.equal(first.dialled.maxOpen.get('127.0.0.153'), 1, `connections: ${first.dialled.hosts.join()}`);
    assert.deepEqual([alice.verdict, carol.verdict].sort(), ['deliverable', 'unknown'], `${alice.description} / ${carol.description}`);
    const limited = alice.verdict === 'unknown' ? alice : carol;
    assert.equal(limited.reason, 'rate-limited');
    assert.match(limited.description, /already has the most connections allowed/);
    // With a second exchanger the refused engine goes on to it, as within one process.
    const [again, bob] = await Promise.all([first.engine.verify('alice@c.test'), second.engine.verify('bob@b.test')]);
    assert.equal(first.dialled.maxOpen.get('127.0.0.153'), 1, `connections: ${first.dialled.hosts.join()}`);
    assert.equal(bob.verdict, 'deliverable', bob.description);
    if (again.verdict === 'deliverable') {
      // The first engine had the slot: bob was asked at b.test's second exchanger.
      assert.deepEqual(bob.attempts.map((a) => [a.address, a.outcome]), [['127.0.0.153', 'not contacted: per-host concurrency limit reached'], ['127.0.0.154', 'answered']]);
    } else {
      assert.equal(again.reason, 'rate-limited', again.description);
    }
  });

  /** Two connections to one Redis: what two daemons of a cluster share. */
  async function sharedRedis(t: TestContext, clock: ManualClock): Promise<[Store, Store]> {
    const redis = await startRedis();
    const stores: [Store, Store] = [await RedisStore.open(redis.url, { clock }), await RedisStore.open(redis.url, { clock })];
    t.after(async () => {
      await Promise.all(stores.map((s) => s.close()));
      await redis.stop();
    });
    return stores;
  }

  for (const [kind, shared] of [['SQLite', sharedSqlite], ['Redis', sharedRedis]] as const) it(`a per-host lease of a process that never gives it back (crashed) lapses after the overall deadline and its margin (${kind})`, async (t) => {
    const clock = new ManualClock();
    const [one, two] = await shared(t, clock);
    const politeness = (store: Store) =>
      politenessOn(store, clock);
    const crashed = politeness(one);
    const alive = politeness(two);
    const deadline = () => performance.now() + 5_000;
    const held = await crashed.acquireHost('192.0.2.1', deadline());
    assert.equal(typeof held, 'object');
    assert.equal(await alive.acquireHost('192.0.2.1', deadline()), 'limit');
    const other = await alive.acquireHost('192.0.2.2', deadline());
    assert.equal(typeof other, 'object', 'another address has its own slots');
    clock.advance(64_999);
    assert.equal(await alive.acquireHost('192.0.2.1', deadline()), 'limit', 'still held within the lease');
    clock.advance(1);
    const taken = await alive.acquireHost('192.0.2.1', deadline());
    assert.equal(typeof taken, 'object', 'the lapsed lease no longer counts');
    // A lease given back frees the slot for another process (the crashed one restarted) at once.
    const restarted = politeness(one);
    assert.equal(await restarted.acquireHost('192.0.2.1', deadline()), 'limit');
    if (typeof taken === 'object') taken.release();
    await alive.settled();
    const back = await restarted.acquireHost('192.0.2.1', deadline());
    assert.equal(typeof back, 'object');
    if (typeof back === 'object') back.release();
    if (typeof other === 'object') other.release();
    await Promise.all([restarted.settled(), alive.settled()]);
  });

  it('a store slow to grant a per-host lease never holds a callout past its deadline, and the lease it grants late is given back', async () => {
    const clock = new ManualClock();
    const { memory, store, open } = gatedStore(clock);
    const timers = new ManualTimers({ wall: clock });
    const politeness = politenessOn(store, clock, { timers });
    let slotAtDeadline: HostSlot | undefined;
    void politeness.acquireHost('192.0.2.1', timers.now() + 50).then((slot) => (slotAtDeadline = slot));
    await timers.advance(49);
    assert.equal(slotAtDeadline, undefined, 'gave up before the deadline');
    await timers.advance(1);
    assert.equal(slotAtDeadline, 'deadline');
    open();
    await politeness.settled();
    const slot = await politeness.acquireHost('192.0.2.1', performance.now() + 5_000);
    assert.equal(typeof slot, 'object', 'neither the local slot nor the late lease is kept');
    if (typeof slot === 'object') slot.release();
    await politeness.settled();
    assert.equal((await store.get('slots:host:192.0.2.1'))?.value, '{}');
    await memory.close();
  });

  it('a per-host lease the store grants after releaseLeases() (shutdown abandoning a callout mid-request) is given back, not held for leaseMs (regression)', async () => {
    const clock = new ManualClock();
    const { memory, store, open } = gatedStore(clock);
    const politeness = (): Politeness =>
      politenessOn(store, clock);
    const stopping = politeness();
    const asked = stopping.acquireHost('192.0.2.1', performance.now() + 5_000);
    stopping.releaseLeases();
    open();
    // The abandoned callout goes on without it; the process exits before that callout ends.
    assert.equal(await asked, 'limit');
    await stopping.settled();
    const next = await politeness().acquireHost('192.0.2.1', performance.now() + 5_000);
    assert.equal(typeof next, 'object', `another process (the daemon started in its place) has the slot: ${JSON.stringify(next)}`);
    await memory.close();
  });

  it('a per-host lease the store writes just as releaseLeases() runs is given back too, not held', async () => {
    const clock = new ManualClock();
    const memory = new MemoryStore({ clock });
    let wrote: () => void = () => undefined;
    const written = new Promise<void>((resolve) => (wrote = resolve));
    let gate: () => void = () => undefined;
    const opened = new Promise<void>((resolve) => (gate = resolve));
    // Shutdown comes while the compareAndSet that writes the lease is on its way.
    const store: Store = Object.assign(Object.create(memory) as MemoryStore, {
      kind: 'sqlite' as const,
      compareAndSet: async (...args: Parameters<Store['compareAndSet']>) => {
        wrote();
        await opened;
        return memory.compareAndSet(...args);
      },
    });
    const politeness = (): Politeness =>
      politenessOn(store, clock);
    const stopping = politeness();
    const asked = stopping.acquireHost('192.0.2.1', performance.now() + 5_000);
    await written;
    stopping.releaseLeases();
    gate();
    assert.equal(await asked, 'limit');
    await stopping.settled();
    const next = await politeness().acquireHost('192.0.2.1', performance.now() + 5_000);
    assert.equal(typeof next, 'object', `another process has the slot: ${JSON.stringify(next)}`);
    await memory.close();
  });

  it('a per-host lease is taken although other processes changed the address\'s leases at the first tries', async () => {
    const clock = new ManualClock();
    const memory = new MemoryStore({ clock });
    let busy = 3;
    const store: Store = Object.assign(Object.create(memory) as MemoryStore, {
      kind: 'sqlite' as const,
      compareAndSet: async (...args: Parameters<Store['compareAndSet']>) => (busy-- > 0 ? false : memory.compareAndSet(...args)),
    });
    const politeness = politenessOn(store, clock);
    const slot = await politeness.acquireHost('192.0.2.1', performance.now() + 5_000);
    assert.equal(typeof slot, 'object', `three lost races, then the lease: ${JSON.stringify(slot)}`);
    await memory.close();
  });

  it('without a per-domain or per-host rate limit (a call-forward to our own hosts) no counter is read or written', async () => {
    const clock = new ManualClock();
    const memory = new MemoryStore({ clock });
    const asked: string[] = [];
    const store: Store = Object.assign(Object.create(memory) as MemoryStore, {
      get: async (key: string) => (asked.push(key), memory.get(key)),
      increment: async (...args: Parameters<Store['increment']>) => (asked.push(args[0]), memory.increment(...args)),
    });
    const politeness = politenessOn(store, clock, { perHostConcurrency: Infinity });
    assert.equal(await politeness.admitDomain('example.org'), true);
    assert.equal(await politeness.admitConnection('192.0.2.1'), true);
    assert.deepEqual(asked, []);
    await memory.close();
  });

  it('a slot given back twice is given back once: the limits still hold', async () => {
    const clock = new ManualClock();
    const store = new MemoryStore({ clock });
    const politeness = politenessOn(store, clock, { concurrency: 1 });
    const release = politeness.acquireGlobal();
    assert.ok(release, 'the first callout gets a slot');
    release();
    release();
    assert.ok(politeness.acquireGlobal(), 'one slot free again');
    assert.equal(politeness.acquireGlobal(), undefined, 'and only one');
    const host = await politeness.acquireHost('192.0.2.1', performance.now() + 5_000);
    assert.equal(typeof host, 'object');
    if (typeof host === 'object') {
      host.release();
      host.release();
    }
    assert.equal(typeof (await politeness.acquireHost('192.0.2.1', performance.now() + 5_000)), 'object');
    assert.equal(await politeness.acquireHost('192.0.2.1', performance.now() + 5_000), 'limit');
    await store.close();
  });

  it('reads any stored lease map: a slot or the limit, never a StoreError, and no lease written lasts past leaseMs', async () => {
    const clock = new ManualClock();
    const { memory, store, open } = gatedStore(clock);
    open();
    const leaseMs = 65_000;
    const politeness = politenessOn(store, clock, { perHostConcurrency: 2, leaseMs });
    const expiry = fc.oneof(fc.double(), fc.integer(), fc.constantFrom(1e300, Number.MAX_SAFE_INTEGER, clock.now() + 1e12, clock.now() + 1, clock.now()), fc.string(), fc.constant(null));
    const stored = fc.oneof(fc.string(), fc.json(), fc.dictionary(fc.string({ maxLength: 8 }), expiry, { maxKeys: 4 }).map((map) => JSON.stringify(map)));
    const check = async (value: string): Promise<void> => {
      await memory.set('slots:host:192.0.2.1', value, 1_000);
      const slot = await politeness.acquireHost('192.0.2.1', performance.now() + 5_000);
      assert.ok(slot === 'limit' || typeof slot === 'object', `${value}: ${JSON.stringify(slot)}`);
      const written = await memory.get('slots:host:192.0.2.1');
      if (typeof slot === 'object') {
        assert.ok(written !== undefined && written.expiresAt <= clock.now() + leaseMs, `${value}: the record lasts until ${written?.expiresAt}`);
        for (const expiresAt of Object.values(JSON.parse(written.value) as Record<string, number>)) assert.ok(expiresAt <= clock.now() + leaseMs, `${value}: a lease until ${expiresAt}`);
        slot.release();
      }
      await politeness.settled();
    };
    // Regression: no TTL is that long, so every lease of the address was a StoreError.
    await check('{"a":1e300}');
    await fc.assert(fc.asyncProperty(stored, check), { numRuns: 300 });
    await memory.close();
  });

  it('reads a stored lease map of up to 131,072 characters, and none longer (another program\'s on a shared Redis)', async () => {
    const clock = new ManualClock();
    const { memory, store, open } = gatedStore(clock);
    open();
    const politeness = politenessOn(store, clock, { perHostConcurrency: 2 });
    const full = JSON.stringify({ a: clock.now() + 60_000, b: clock.now() + 60_000 });
    await fc.assert(
      fc.asyncProperty(paddedRecords(full, 131_072), async ({ text, readable }) => {
        await memory.set('slots:host:192.0.2.1', text, 60_000);
        const slot = await politeness.acquireHost('192.0.2.1', performance.now() + 5_000);
        // Read, its two leases hold both slots; not read, it holds none and the slot is given.
        assert.equal(slot === 'limit', readable, `a lease map of ${text.length} characters: ${JSON.stringify(slot)}`);
        if (typeof slot === 'object') slot.release();
        await politeness.settled();
      }),
      { numRuns: 100 },
    );
    await memory.close();
  });

  it('many concurrent callouts to one catch-all domain ask its exchanger once', async (t) => {
    const w = await make(mxZone({ 'catchall.test': '127.0.0.152' }), { '127.0.0.152': acceptAll() });
    const { engine, dialled } = recordingEngine(t, w, {});
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => engine.verify(`user${i}@catchall.test`)));
    assert.ok(results.every((r) => r.reason === 'catch-all'), 'results.every((r) => r.reason === \'catch-all\')');
    assert.equal(dialled.hosts.length, 1);
  });
});
