/**
 * NAME
 *   test/support/ports - free TCP ports on loopback, for servers that must be told a port
 *
 * DESCRIPTION
 *   Binds port 0 on 127.0.0.1, reads the port the kernel chose and releases it; with a count,
 *   all are held at once so they are distinct. A port can be taken by someone else between
 *   release and use: callers that start a server on it retry on EADDRINUSE.
 */

import net from 'node:net';

export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<net.Server>((resolve, reject) => {
          const server = net.createServer();
          server.once('error', reject);
          server.listen(0, '127.0.0.1', () => resolve(server));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  return ports;
}

export async function freePort(): Promise<number> {
  const [port] = await freePorts(1);
  return port!;
}
