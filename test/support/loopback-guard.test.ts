// The loopback guard that scripts/run-tests.mjs loads into every test process.
import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, it } from 'node:test';

function connectError(host: string, port: number): Promise<NodeJS.ErrnoException | undefined> {
  return new Promise((resolve) => {
    const socket = net.connect(port, host);
    socket.once('connect', () => {
      socket.destroy();
      resolve(undefined);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err));
  });
}

describe('the loopback guard', () => {
  it('is loaded (npm test runs every file through scripts/run-tests.mjs)', () => {
    // Checked first: without the guard, the next test would try the address for real.
    assert.equal(net.Socket.prototype.connect.name, 'guardedConnect');
  });

  it('refuses a connection off this machine before it is made, and lets loopback through', async () => {
    assert.equal(net.Socket.prototype.connect.name, 'guardedConnect');
    const off = await connectError('192.0.2.1', 25);
    assert.equal(off?.code, 'ENETUNREACH');
    assert.match(off?.message ?? '', /^test loopback guard: 192\.0\.2\.1 is not on this machine/);
    const mapped = await connectError('::ffff:198.51.100.7', 25);
    assert.match(mapped?.message ?? '', /test loopback guard: ::ffff:198\.51\.100\.7/);
    const linkLocal = await connectError('fe80::1%lo', 25);
    assert.match(linkLocal?.message ?? '', /test loopback guard: fe80::1%lo/);
    const server = net.createServer((socket) => socket.end());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const port = (server.address() as net.AddressInfo).port;
      assert.equal(await connectError('127.0.0.1', port), undefined);
      // Other spellings of a loopback address are this machine too.
      assert.equal(await connectError('::ffff:7f00:1', port), undefined);
    } finally {
      server.close();
    }
  });

  it('lets ::1 through however it is written (0::1, with a zone) when the machine has it', async (t) => {
    const server = net.createServer((socket) => socket.end());
    const noIpv6 = await new Promise<Error | undefined>((resolve) => {
      server.once('error', resolve);
      server.listen(0, '::1', () => resolve(undefined));
    });
    if (noIpv6) {
      t.skip(`no IPv6 loopback: ${String(noIpv6)}`);
      return;
    }
    try {
      const port = (server.address() as net.AddressInfo).port;
      for (const host of ['::1', '0::1', '::1%lo']) assert.equal((await connectError(host, port))?.message, undefined, host);
    } finally {
      server.close();
    }
  });
});
