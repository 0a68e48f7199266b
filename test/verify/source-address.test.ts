// callout.sourceAddress: the address callouts leave from, for connections of its own family.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mxZone, worldMaker } from './fixture.js';
import { usersOnly } from '../support/smtp-server.js';

const make = worldMaker();

describe('callout.sourceAddress', () => {
  it('binds an IPv4 connection to it', async () => {
    const w = await make(mxZone({ 'four.test': '127.0.0.2' }), { '127.0.0.2': usersOnly(['alice']) });
    const r = await w.engine({ callout: { sourceAddress: '127.0.0.3' } }).verify('alice@four.test');
    assert.equal(r.verdict, 'deliverable', r.description);
    assert.deepEqual(w.smtp.get('127.0.0.2')!.sessions.map((s) => s.remoteAddress), ['127.0.0.3']);
  });

  it('leaves a connection of the other family unbound, as Postfix smtp_bind_address does: bound, it failed with EINVAL', async () => {
    const w = await make({ 'dual.test': { MX: [{ priority: 10, exchange: 'mx.dual.test' }] }, 'mx.dual.test': { AAAA: ['::1'], A: ['127.0.0.2'] } }, { '::1': usersOnly(['alice']), '127.0.0.2': usersOnly(['alice']) });
    const r = await w.engine({ callout: { sourceAddress: '127.0.0.3' } }).verify('alice@dual.test');
    assert.equal(r.verdict, 'deliverable', r.description);
    // IPv6 first (RFC 8305), answered there: no failed attempt before the IPv4 address.
    assert.deepEqual(r.attempts.map((a) => `${a.address}: ${a.outcome}`), ['::1: answered']);
  });
});
