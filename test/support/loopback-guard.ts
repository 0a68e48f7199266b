/**
 * NAME
 *   test/support/loopback-guard - no test connects to a host outside this machine
 *
 * DESCRIPTION
 *   Loaded into every test process by scripts/run-tests.mjs (`--import`). A TCP connection to
 *   an address outside 127.0.0.0/8 and ::1 (given as an address, or a name once it has been
 *   looked up) is refused before it is made: the socket is destroyed with an error naming the
 *   address, and the test that asked for it fails. The project's rule is that tests talk only
 *   to loopback; code under test that would go elsewhere (a refusal of private targets that
 *   regressed, say) then fails in the test instead of reaching the network. UNIX sockets are
 *   left alone. DNS questions are not TCP: the tests give the resolver the in-process server.
 */

import net from 'node:net';
import { hostKey } from '../../src/core/ip.js';

const LOOPBACK_V4 = /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/;

/**
 * Judged on the one text of the address (hostKey): ::1 written as 0::1, an IPv4-mapped loopback
 * in hex (::ffff:7f00:1) and a zone (::1%lo) were refused although they are this machine.
 */
function onThisMachine(address: string): boolean {
  const key = hostKey(address.replace(/%.*$/, ''));
  return LOOPBACK_V4.test(key) || key === '::1';
}

function refused(address: string): Error {
  return Object.assign(new Error(`test loopback guard: ${address} is not on this machine (tests talk only to 127.0.0.0/8 and ::1)`), { code: 'ENETUNREACH' });
}

/** The host a connect() call names, or undefined for a UNIX socket path. */
function hostOf(args: unknown[]): string | undefined {
  const [first, second] = args as [unknown, unknown];
  if (Array.isArray(first)) return hostOf(first);
  if (typeof first === 'object' && first !== null) {
    const options = first as { path?: unknown; host?: unknown };
    if (typeof options.path === 'string') return undefined;
    return typeof options.host === 'string' ? options.host : 'localhost';
  }
  if (typeof first === 'string' && !/^\d+$/.test(first)) return undefined;
  return typeof second === 'string' ? second : 'localhost';
}

const connect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function guardedConnect(this: net.Socket, ...args: unknown[]): net.Socket {
  const host = hostOf(args);
  if (host !== undefined && net.isIP(host) !== 0 && !onThisMachine(host)) {
    process.nextTick(() => this.destroy(refused(host)));
    return this;
  }
  if (host !== undefined && net.isIP(host) === 0 && host !== 'localhost') {
    this.once('lookup', (err: Error | null, address: string) => {
      if (!err && !onThisMachine(address)) this.destroy(refused(`${host} (${address})`));
    });
  }
  return (connect as (...a: unknown[]) => net.Socket).apply(this, args);
} as typeof net.Socket.prototype.connect;
