// "No system is probed twice for the same answer": an exchanger that tells nothing useful (it
// closes the channel with a 421 at RCPT, hangs up on MAIL FROM, answers what is no SMTP reply)
// is remembered on its domain for cache.tempfail, as one that says 421 at the greeting is, so
// the next sender of that domain is answered without a connection. Counted at the loopback
// server, as the exchanger's operator would count them.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { dropAfter, usersOnly } from '../support/smtp-server.js';
import type { SmtpScript } from '../support/smtp-server.js';
import { mxZone, worldMaker } from './fixture.js';

const make = worldMaker();

const cases: Array<{ what: string; script: Partial<SmtpScript>; reason: string }> = [
  { what: 'a 421 at RCPT', script: { rcpt: () => '421 4.7.0 mx.callout.test Error: too many connections, closing' }, reason: 'tempfail-at-rcpt' },
  { what: 'a connection dropped at MAIL FROM', script: dropAfter('mail'), reason: 'protocol-error' },
  { what: 'a reply that is no SMTP reply at RCPT', script: { ...usersOnly(['alice']), rcpt: () => 'hello there' }, reason: 'protocol-error' },
];

describe('an exchanger that tells nothing useful is not asked again for the next address of its domain', () => {
  cases.forEach(({ what, script, reason }, i) => {
    it(`${what}: one connection for two senders within cache.tempfail, a new one after it`, async () => {
      const ip = `127.0.0.${160 + i}`;
      const w = await make(mxZone({ 'useless.test': ip }), { [ip]: script });
      const engine = w.engine();
      const first = await engine.verify('alice@useless.test');
      assert.deepEqual([first.verdict, first.reason], ['unknown', reason], first.description);
      assert.equal(w.connections(ip), 1, `one callout, one connection to a server that gave ${what}: ${JSON.stringify(first.attempts.map((a) => a.outcome))}`);
      const second = await engine.verify('bob@useless.test');
      assert.deepEqual([second.verdict, second.reason, second.source], ['unknown', reason, 'domain-cache'], second.description);
      assert.equal(w.connections(ip), 1, `the next sender of the domain was asked again after ${what}`);
      assert.doesNotMatch(second.description, /alice@/, 'the domain record names not the first sender');
      w.clock.advance(w.config().cache.tempfail + 1);
      await engine.verify('carol@useless.test');
      assert.equal(w.connections(ip), 2, 'remembered for cache.tempfail only: after it the domain is asked again');
    });
  });
});
