/**
 * NAME
 *   bench/servers - the benchmark's DNS and SMTP servers, run as a child process
 *
 * DESCRIPTION
 *   The remote side of every callout (the in-process test DNS server with world.benchZone() on
 *   127.0.0.1, and one instant SMTP server on each of the 250 exchanger addresses) runs in its own
 *   process, so that the measured process spends its CPU on the verifier alone, as a verifier
 *   in production does. Started with child_process.fork by bench/servers-client; it talks over
 *   the IPC channel:
 *     child -> parent  { kind: 'ready', dns, port } | { kind: 'failed', error }
 *     parent -> child  { kind: 'cpu' }   answered { kind: 'cpu', micros, connections }
 *     parent -> child  { kind: 'stop' }  closes everything and exits
 *   The child also exits when the channel closes, so it never outlives the benchmark.
 *
 * LIMITS
 *   SMTP listens on port 25 (the peers connect nowhere else); when that cannot be bound (not
 *   root, port taken) every host shares another free port and the parent skips the peers.
 */

import { startDnsServer } from '../test/support/dns-server.js';
import { startInstantSmtp } from './instant-smtp.js';
import type { InstantSmtpServer } from './instant-smtp.js';
import { SMTP_PORT, benchZone, throughputHosts } from './world.js';

export type ServerMessage =
  | { kind: 'ready'; dns: string; port: number }
  | { kind: 'failed'; error: string }
  | { kind: 'cpu'; micros: number; connections: number };

export type ControlMessage = { kind: 'cpu' } | { kind: 'stop' };

async function startAll(port: number): Promise<InstantSmtpServer[]> {
  const started: InstantSmtpServer[] = [];
  try {
    for (const host of throughputHosts) {
      const server = await startInstantSmtp(host, port === 0 && started[0] ? started[0].port : port);
      started.push(server);
    }
    return started;
  } catch (err) {
    await Promise.all(started.map((s) => s.close()));
    throw err;
  }
}

async function main(): Promise<void> {
  const send = (message: ServerMessage): void => {
    process.send?.(message);
  };
  const dns = await startDnsServer(benchZone());
  let smtp: InstantSmtpServer[];
  try {
    smtp = await startAll(SMTP_PORT);
  } catch {
    smtp = await startAll(0);
  }
  const stop = async (): Promise<void> => {
    await Promise.all(smtp.map((s) => s.close()));
    await dns.close();
    process.exit(0);
  };
  process.on('disconnect', () => void stop());
  // The test DNS server records every query for assertions; nobody reads them here.
  setInterval(() => dns.queries.splice(0), 1000).unref();
  process.on('message', (message: ControlMessage) => {
    if (message.kind === 'stop') void stop();
    if (message.kind === 'cpu') {
      const usage = process.cpuUsage();
      send({ kind: 'cpu', micros: usage.user + usage.system, connections: smtp.reduce((sum, s) => sum + s.connections, 0) });
    }
  });
  send({ kind: 'ready', dns: dns.address, port: smtp[0]!.port });
}

main().catch((err: unknown) => {
  process.send?.({ kind: 'failed', error: String(err) } satisfies ServerMessage);
  process.exit(1);
});
