/**
 * NAME
 *   test/e2e/srs.e2e - callout's SRS against Debian's real postsrsd 1.x, over the wire
 *
 * DESCRIPTION
 *   postsrsd runs in the foreground on loopback with a known secret, once in real time and once
 *   under faketime at 2020-01-01 00:01 UTC (the instant of the upstream test vectors). callout's
 *   tcp_table and socketmap services run in process with the same secret and domain. For the same
 *   requests on the same day the forward answers must be byte-identical, and each side must
 *   reverse what the other forwarded. Expiry and the base64url trap (postsrsd 1.x refuses hashes
 *   written with - and _) are checked against the real program too.
 */

import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { systemClock } from '../../src/core/clock.js';
import { ManualClock } from '../support/manual-time.js';
import { srsMaps } from '../../src/rewrite/maps.js';
import { SocketmapServer } from '../../src/rewrite/socketmap.js';
import { Srs, srsTimestamp } from '../../src/rewrite/srs.js';
import { TcpTableServer } from '../../src/rewrite/tcp-table.js';
import { SocketmapClient, TcpTableClient } from '../support/lookup-clients.js';
import { postsrsdUnavailable, startPostsrsd, type Postsrsd } from '../support/postsrsd.js';
import { requirePeer } from '../support/peers.js';

const SECRET = 'tops3cr3t';
const DOMAIN = 'example.com';
const T0 = new Date('2020-01-01T00:01:00Z');
const DAY = 86_400_000;

const SENDERS = [
  'alice@example.org',
  'Bob.Smith+tag@Sub.Example.NET',
  'sp ace@otherdomain.com',
  "o'brien=x@example.ie",
  'SRS0=opaque+string@otherdomain.com',
  'SRS0=vmyz=2W=otherdomain.com=test@forwarder.example',
  'SRS1=abcd=hop.example==HHHH=2W=orig.example=user@forwarder.example',
  'srs0-x=y=z@mixed.example',
];

const skip = requirePeer(postsrsdUnavailable(true));

describe('SRS interoperability with postsrsd 1.x', { skip }, () => {
  let live: Postsrsd;
  let frozen: Postsrsd;
  const servers: Array<{ close(): Promise<void> }> = [];
  const clients: Array<{ close(): void }> = [];
  let ours: { forward: { host: string; port: number }; reverse: { host: string; port: number }; socketmap: { host: string; port: number } };

  before(async () => {
    [live, frozen] = await Promise.all([
      startPostsrsd({ secrets: [SECRET], domain: DOMAIN, forwardPort: 25411, reversePort: 25412 }),
      startPostsrsd({ secrets: [SECRET], domain: DOMAIN, forwardPort: 25413, reversePort: 25414, at: T0 }),
    ]);
    const maps = srsMaps(new Srs({ domain: DOMAIN, secrets: [SECRET] }), systemClock);
    const forward = new TcpTableServer(maps.forward);
    const reverse = new TcpTableServer(maps.reverse);
    const socketmap = new SocketmapServer(maps);
    servers.push(forward, reverse, socketmap);
    const bind = async (s: { listen: TcpTableServer['listen'] }) => (await s.listen({ kind: 'tcp', host: '127.0.0.1', port: 0 })) as { host: string; port: number };
    ours = { forward: await bind(forward), reverse: await bind(reverse), socketmap: await bind(socketmap) };
  });

  after(async () => {
    for (const c of clients) c.close();
    await Promise.all(servers.map((s) => s.close()));
    await Promise.all([live?.stop(), frozen?.stop()]);
  });

  async function tcp(target: { host: string; port: number }): Promise<TcpTableClient> {
    const client = await TcpTableClient.connect(target);
    clients.push(client);
    return client;
  }

  it('refuses to start where a leftover holds the ports, instead of testing the leftover', async () => {
    const leftover = net.createServer();
    await new Promise<void>((resolve) => leftover.listen(0, '127.0.0.1', resolve));
    const port = (leftover.address() as net.AddressInfo).port;
    const leftoverReverse = net.createServer();
    await new Promise<void>((resolve) => leftoverReverse.listen(0, '127.0.0.1', resolve));
    try {
      const reversePort = (leftoverReverse.address() as net.AddressInfo).port;
      await assert.rejects(startPostsrsd({ secrets: [SECRET], domain: DOMAIN, forwardPort: port, reversePort }), /127\.0\.0\.1:\d+ is already in use; a leftover postsrsd\?/);
    } finally {
      await Promise.all([leftover, leftoverReverse].map((server) => new Promise((resolve) => server.close(resolve))));
    }
  });

  it('forward answers are byte-identical for the same day (real time)', async () => {
    const [theirs, mine] = await Promise.all([tcp(live.forward), tcp(ours.forward)]);
    for (const sender of SENDERS) {
      const dayBefore = srsTimestamp(Date.now());
      const [a, b] = await Promise.all([theirs.query(sender), mine.query(sender)]);
      if (srsTimestamp(Date.now()) !== dayBefore) continue; // midnight passed between the two
      assert.equal(b, a, `forward ${sender}`);
    }
  });

  it('each side reverses what the other forwarded, through tcp_table and socketmap', async () => {
    const [theirForward, theirReverse, myForward, myReverse] = await Promise.all([tcp(live.forward), tcp(live.reverse), tcp(ours.forward), tcp(ours.reverse)]);
    const socketmap = await SocketmapClient.connect(ours.socketmap);
    clients.push(socketmap);
    for (const sender of ['alice@example.org', 'sp ace@otherdomain.com', 'SRS0=opaque+string@otherdomain.com']) {
      const byThem = await theirForward.query(sender);
      const byUs = await myForward.query(sender);
      assert.match(byThem, /^200 /);
      assert.match(byUs, /^200 /);
      const encoded = sender.replace(/ /g, '%20');
      const expected = sender.startsWith('SRS0') ? `200 ${sender}` : `200 ${encoded}`;
      assert.equal(await myReverse.query(decodeURIComponent(byThem.slice(4))), expected, `we reverse postsrsd's ${byThem}`);
      assert.equal(await theirReverse.query(decodeURIComponent(byUs.slice(4))), expected, `postsrsd reverses our ${byUs}`);
      assert.equal(await socketmap.query('reverse', decodeURIComponent(byThem.slice(4))), `OK ${sender}`);
      assert.equal(await socketmap.query('forward', sender), `OK ${decodeURIComponent(byThem.slice(4))}`);
    }
  });

  it("leaves a sender with two '@' alone, where postsrsd writes an address that does not reverse", async () => {
    const [theirForward, theirReverse, myForward] = await Promise.all([tcp(live.forward), tcp(live.reverse), tcp(ours.forward)]);
    const byThem = await theirForward.query('a@b@otherdomain.com');
    assert.match(byThem, /^200 SRS0=/);
    // It splits at the first '@': b@otherdomain.com is taken for the domain, and its reverse fails.
    assert.equal(await theirReverse.query(decodeURIComponent(byThem.slice(4))), '500 No user in SRS0 address.');
    assert.match(await myForward.query('a@b@otherdomain.com'), /^500 /);
  });

  it('under faketime at 2020-01-01 postsrsd gives the upstream vectors, and so do we', async () => {
    const theirs = await tcp(frozen.forward);
    const srs = new Srs({ domain: DOMAIN, secrets: [SECRET] });
    for (const sender of SENDERS) {
      const reply = await theirs.query(sender);
      const mine = srs.forward(sender, T0.getTime());
      if (mine.ok) assert.equal(reply, `200 ${mine.address.replace(/ /g, '%20')}`, sender);
      else assert.match(reply, /^500 /, `${sender}: we refuse (${mine.message}), postsrsd too`);
    }
    assert.equal(await theirs.query('test@otherdomain.com'), '200 SRS0=vmyz=2W=otherdomain.com=test@example.com');
    assert.deepEqual(srs.forward('test@otherdomain.com', T0.getTime()), { ok: true, scheme: 'SRS0', address: 'SRS0=vmyz=2W=otherdomain.com=test@example.com' });
  });

  it('both refuse an address 22 days old and accept one 21 days old', async () => {
    const theirs = await tcp(frozen.reverse);
    const srs = new Srs({ domain: DOMAIN, secrets: [SECRET] });
    const clock = new ManualClock(T0.getTime());
    for (const [days, accepted] of [[21, true], [22, false]] as const) {
      const made = srs.forward('old@example.org', T0.getTime() - days * DAY);
      assert.ok(made.ok, 'made.ok');
      if (!made.ok) continue;
      const reply = await theirs.query(made.address);
      assert.equal(reply.startsWith('200 '), accepted, `postsrsd, ${days} days: ${reply}`);
      assert.equal(srsMaps(srs, clock).reverse(made.address).kind === 'found', accepted, `callout, ${days} days`);
    }
  });

  it('the base64url trap: postsrsd 1.x refuses - and _ in hashes, which callout accepts', async () => {
    const theirs = await tcp(frozen.reverse);
    const standard = new Srs({ domain: DOMAIN, secrets: [SECRET] });
    const url = new Srs({ domain: DOMAIN, secrets: [SECRET], alphabet: 'base64url' });
    let found = false;
    for (let i = 0; i < 200 && !found; i++) {
      const made = url.forward(`user${i}@example.org`, T0.getTime());
      if (!made.ok || !/^SRS0=[^=]*[-_]/.test(made.address)) continue;
      found = true;
      assert.match(await theirs.query(made.address), /^500 /);
      assert.equal(standard.reverse(made.address, T0.getTime()).ok, true);
    }
    assert.ok(found, 'no base64url hash with - or _ among 200 senders');
  });
});
