// A server that leaves RSET, or the MAIL FROM after it, unanswered, or answers it with what is
// no SMTP reply, is not asked again on a new connection for that callout (README, "callout
// verify": such a server is not asked again on a new connection), as after an RCPT that got no
// reply: one connection, not three, and what is left stays unknown. Only a server that closed
// the connection is asked on a new one. Counted at the loopback server, as the exchanger's
// operator would count them.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { pathOf, pipelining, rejectSecondRcpt, usersOnly, type SmtpScript, type StepHandler } from '../support/smtp-server.js';
import { mxZone, worldMaker } from './fixture.js';

const make = worldMaker();

/** A command timeout short enough for a test, long enough for a loaded machine to get past EHLO. */
const COMMAND = 1_000;
const timeouts = { connect: '5s', greeting: '5s', command: `${COMMAND}ms`, rcpt: '5s', tls: '5s', overall: '30s' };

/** The server stops answering: it reads nothing more on this connection (a tarpit). */
const stall: StepHandler = () => ({ delayMs: 3_600_000, silent: true });
const garbage: StepHandler = () => 'hello there';
/** MAIL commands after the first on a connection get this; the first is taken. */
const laterMail = (handler: StepHandler): StepHandler => (arg, session) =>
  session.commands.filter((c) => /^MAIL /i.test(c)).length > 1 ? handler(arg, session) : '250 2.1.0 Ok';

const servers: Array<{ what: string; script: Partial<SmtpScript>; reason: string; failed: RegExp }> = [
  { what: 'an RSET never answered', script: { rset: stall }, reason: 'timeout', failed: new RegExp(`timed out at rset after ${COMMAND} ms`) },
  { what: 'an RSET answered with what is no SMTP reply', script: { rset: garbage }, reason: 'protocol-error', failed: /protocol error at rset: .*hello there/ },
  { what: 'a MAIL FROM after RSET never answered', script: { mail: laterMail(stall) }, reason: 'timeout', failed: new RegExp(`timed out at mail after ${COMMAND} ms`) },
];

/** Only alice exists; the second RCPT of a transaction gets 452, as Outlook's servers do. */
const oneRecipientPerTransaction: StepHandler = (arg, session) =>
  session.rcptInTransaction >= 2 ? rejectSecondRcpt().rcpt!(arg, session) : usersOnly(['alice']).rcpt!(arg, session);

const rcptsTo = (commands: string[]): string[] => commands.filter((c) => c.startsWith('RCPT ')).map((c) => pathOf(c.slice(5)));

describe('a server that stalls or garbles RSET, or the MAIL after it, is asked on one connection only', () => {
  servers.forEach(({ what, script, reason, failed }, i) => {
    it(`${what} after the random probe: one connection, unknown (${reason}), the domain left alone for cache.tempfail, then answered without RSET`, async () => {
      const ip = `127.0.0.${170 + i}`;
      const w = await make(mxZone({ 'stall.test': ip }), { [ip]: { ...usersOnly(['alice']), ...script } });
      const engine = w.engine({ callout: { timeouts } });
      const first = await engine.verify('alice@stall.test');
      assert.deepEqual([first.verdict, first.reason], ['unknown', reason], first.description);
      assert.match(first.description, failed, 'the verdict says which step failed and how');
      assert.equal(w.connections(ip), 1, `a new connection after ${what}: ${JSON.stringify(first.attempts.map((a) => a.outcome))}`);
      const commands = w.commands(ip);
      assert.deepEqual(rcptsTo(commands).map((p) => p.replace(/^callout-[a-z0-9]+@/, 'R@')), ['R@stall.test'], `only the random local part was asked: ${commands.join(' | ')}`);
      assert.ok(!commands.includes('QUIT'), `closed without QUIT: ${commands.join(' | ')}`);
      assert.equal(first.catchAll, 'refused', 'the refusal of the random local part is learnt all the same');

      const second = await engine.verify('bob@stall.test');
      assert.deepEqual([second.verdict, second.reason, second.source], ['unknown', reason, 'domain-cache'], second.description);
      assert.equal(w.connections(ip), 1, 'the next sender of the domain is answered from the domain record');

      w.clock.advance(w.config().cache.tempfail + 1);
      const later = await engine.verify('alice@stall.test');
      assert.deepEqual([later.verdict, later.reason], ['deliverable', 'accepted'], later.description);
      assert.equal(w.connections(ip), 2, 'after cache.tempfail one new connection');
      const laterCommands = w.smtp.get(ip)!.sessions[1]!.commands;
      assert.deepEqual(rcptsTo(laterCommands), ['alice@stall.test'], `no random probe, so no RSET before the answer: ${laterCommands.join(' | ')}`);
    });

    it(`${what} after a 452 "too many recipients": one connection, the address answered kept, the others unknown (${reason})`, async () => {
      const ip = `127.0.0.${175 + i}`;
      const w = await make(mxZone({ 'outlook.test': ip }), { [ip]: { rcpt: oneRecipientPerTransaction, ...script } });
      const results = await w.engine({ callout: { randomProbe: false, timeouts } }).verifyMany(['alice@outlook.test', 'bob@outlook.test', 'carol@outlook.test']);
      assert.deepEqual(results.map((r) => [r.verdict, r.reason]), [['deliverable', 'accepted'], ['unknown', reason], ['unknown', reason]], results.map((r) => r.description).join('; '));
      assert.match(results[1]!.description, failed);
      assert.equal(w.connections(ip), 1, `a new connection after ${what}: ${JSON.stringify(results[0]!.attempts.map((a) => a.outcome))}`);
      assert.deepEqual(rcptsTo(w.commands(ip)), ['alice@outlook.test', 'bob@outlook.test'], w.commands(ip).join(' | '));
    });
  });

  it('an RSET answered 502 after each 452: each connection answers one address, and those left when the reconnects run out say so, not "no exchanger could be tried"', async () => {
    const ip = '127.0.0.178';
    const w = await make(mxZone({ 'norset.test': ip }), { [ip]: { rcpt: oneRecipientPerTransaction, rset: () => '502 5.5.2 Error: command not recognized' } });
    const addresses = ['alice', 'bob', 'carol', 'dave', 'erin'].map((user) => `${user}@norset.test`);
    const results = await w.engine({ callout: { randomProbe: false } }).verifyMany(addresses);
    assert.equal(w.connections(ip), 3, 'a new connection needs no RSET: the reply was an SMTP reply, and each connection answered one more address');
    assert.deepEqual(results.slice(0, 3).map((r) => r.verdict), ['deliverable', 'undeliverable', 'undeliverable'], results.map((r) => r.description).join('; '));
    for (const r of results.slice(3)) {
      assert.deepEqual([r.verdict, r.reason, r.reply?.stage, r.reply?.code], ['unknown', 'protocol-error', 'rset', 502], r.description);
      assert.match(r.description, /answered RSET with 502 5\.5\.2 Error: command not recognized, where RFC 5321 §4\.1\.1\.5 asks for 250$/);
    }
  });
});

describe('with PIPELINING, a reply that is no SMTP reply read with the one before it', () => {
  // The garbage closes the session before its step is awaited: that step must read as the
  // protocol error it was (smtp/client), not as a hang-up of the server's, which reconnects.
  it('at RCPT: one connection, unknown (protocol-error)', async () => {
    const ip = '127.0.0.210';
    const w = await make(mxZone({ 'a.test': ip }), { [ip]: { ...pipelining(), rcpt: (arg) => (pathOf(arg).startsWith('callout-') ? '550 5.1.1 no' : 'hello there') } });
    const r = await w.engine().verify('alice@a.test');
    assert.deepEqual([r.verdict, r.reason], ['unknown', 'protocol-error'], r.description);
    assert.equal(w.connections(ip), 1, JSON.stringify(r.attempts.map((a) => a.outcome)));
  });

  it('at RSET: one connection, unknown (protocol-error)', async () => {
    const ip = '127.0.0.211';
    const w = await make(mxZone({ 'a.test': ip }), { [ip]: { ...pipelining(), ...usersOnly(['alice']), rset: () => 'hello there' } });
    const r = await w.engine().verify('alice@a.test');
    assert.deepEqual([r.verdict, r.reason], ['unknown', 'protocol-error'], r.description);
    assert.equal(w.connections(ip), 1, JSON.stringify(r.attempts.map((a) => a.outcome)));
  });
});

describe('with PIPELINING, an RCPT that times out while a step reads the replies before its own', () => {
  // After bob's 452 the dialogue asks for RSET, whose turn comes only once carol's pipelined RCPT
  // is answered: the timeout that closes the session there must read as a timeout at RSET too,
  // not as a hang-up of the server's, which reconnected to a tarpit (and carol read
  // "protocol-error: connection failed at rset").
  it('at RCPT: one connection, the address answered kept, the stalled one unknown (timeout)', async () => {
    const ip = '127.0.0.212';
    const rcpt: StepHandler = (arg, session) => {
      const local = pathOf(arg).split('@')[0];
      return local === 'carol' ? stall(arg, session) : local === 'bob' ? '452 4.5.3 Error: too many recipients' : '250 2.1.5 Ok';
    };
    const w = await make(mxZone({ 'tarpit.test': ip }), { [ip]: { ...pipelining(), rcpt } });
    const results = await w.engine({ callout: { randomProbe: false, timeouts: { ...timeouts, rcpt: `${COMMAND}ms` } } }).verifyMany(['alice@tarpit.test', 'bob@tarpit.test', 'carol@tarpit.test']);
    assert.equal(w.connections(ip), 1, `a new connection after a timeout: ${JSON.stringify(results[0]!.attempts.map((a) => a.outcome))}`);
    assert.deepEqual(results.map((r) => r.verdict), ['deliverable', 'unknown', 'unknown'], results.map((r) => r.description).join('; '));
    assert.equal(results[2]!.reason, 'timeout', results[2]!.description);
    assert.match(results[2]!.description, new RegExp(`timed out at rcpt after ${COMMAND} ms`), 'the step whose reply never came is named');
    assert.deepEqual(rcptsTo(w.commands(ip)), ['alice@tarpit.test', 'bob@tarpit.test', 'carol@tarpit.test'], w.commands(ip).join(' | '));
  });
});
