/**
 * NAME
 *   core/listen - listen addresses as administrators write them
 *
 * DESCRIPTION
 *   `127.0.0.1:10040`, `[::1]:10040`, `localhost:10040`, or an absolute UNIX socket path
 *   (`/var/spool/postfix/private/callout`), the forms Postfix's own endpoints use. listenOn()
 *   binds a server there, for every listener of the project (policy, metrics, rewrite maps),
 *   and gives a UNIX socket the mode it is asked for (DEFAULT_SOCKET_MODE, 0660, for the
 *   sockets Postfix connects to: owner and group, whatever the umask; connecting takes write
 *   permission, so openToAllUsers() says when any local user may).
 *   boundAddress() and formatListenAddress() say where it is bound. removeStaleSocket() clears a
 *   socket path an earlier run left, before binding it, but never one a live server still has.
 *   reachableFromNetwork() says whether a bound listener is open to other hosts. sameListener()
 *   says whether two addresses would take the same socket. remoteEnd() names a connection's client. listenExpected() and listenRefusal()
 *   word the refusal of an address, with what is wrong with it (no port, an IPv6 address not in
 *   brackets); the parts of it they quote are cut, then quoted with core/text's shownJson (in
 *   quotes written around them, a C1 control reached the terminal raw).
 *
 * LIMITS
 *   A socket path of at most 107 octets (Linux's sun_path), without NUL; a port up to 65535.
 *   Between bind and chmod a UNIX socket briefly has the mode the umask gives.
 */

import { existsSync, lstatSync } from 'node:fs';
import { chmod, lstat, rm, unlink } from 'node:fs/promises';
import net, { type Server } from 'node:net';
import { dirname, resolve } from 'node:path';
import { ConfigError, ListenUnavailableError, abbreviate, describeError } from './errors.js';
import { octalMode } from './files.js';
import { shownJson } from './text.js';
import { classifyAddress, hostKey } from './ip.js';

export type ListenAddress = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };
/** Linux's sun_path is 108 octets, one of them the terminating NUL. */
const MAX_SOCKET_PATH_OCTETS = 107;
const HOST_PORT = /^(?:\[([^\]]+)\]|([^:[\]\s]+)):([0-9]{1,5})$/;

export function parseListenAddress(text: string): { ok: true; value: ListenAddress } | { ok: false; reason: string } {
  if (text.startsWith('/')) {
    // sun_path holds 108 octets with the terminating NUL; bind() would refuse the rest less clearly.
    if (Buffer.byteLength(text) > MAX_SOCKET_PATH_OCTETS) return { ok: false, reason: `socket path is ${Buffer.byteLength(text)} octets, more than the ${MAX_SOCKET_PATH_OCTETS} a UNIX socket address holds` };
    if (text.includes('\0')) return { ok: false, reason: 'socket path contains a NUL character' };
    return { ok: true, value: { kind: 'unix', path: text } };
  }
  const match = HOST_PORT.exec(text);
  if (!match) return { ok: false, reason: notHostPort(text) };
  const [, bracketed, plain, portText] = match;
  const port = Number(portText);
  if (port > 65535) return { ok: false, reason: `port ${port} is out of range` };
  if (bracketed !== undefined && !net.isIPv6(bracketed)) return { ok: false, reason: `${shownJson(abbreviate(bracketed, 60))} is not an IPv6 address` };
  // A name made of digits and dots is a mistyped IPv4 address, which listen() would otherwise
  // hand to the resolver as a host name.
  if (plain !== undefined && /^[\d.]+$/.test(plain) && !net.isIPv4(plain)) return { ok: false, reason: `${shownJson(abbreviate(plain, 60))} is not an IPv4 address` };
  return { ok: true, value: { kind: 'tcp', host: bracketed ?? plain ?? '', port } };
}

/**
 * A refusal of a listen address, after the value it quotes ("got ..."): the forms it takes, and
 * what is wrong with this one (a reason of parseListenAddress).
 */
export function listenExpected(reason: string): string {
  return `expected HOST:PORT, [IPv6]:PORT or an absolute UNIX socket path (${reason})`;
}

/** The refusal of text for a listener, the value quoted (its start), where no schema quotes it. */
export function listenRefusal(text: string, reason: string): string {
  return `got ${shownJson(abbreviate(text, 60))}, ${listenExpected(reason)}`;
}

/**
 * What keeps text, no socket path, from HOST:PORT, without quoting it whole (the refusal has):
 * "not host:port" told the administrator who wrote 127.0.0.1 or ::1:10040 only the forms again.
 */
function notHostPort(text: string): string {
  if (!text.includes(':')) return text.includes('/') ? 'a socket path must be absolute, starting with /' : 'no port';
  if (text.endsWith(']')) return 'no port';
  const colon = text.lastIndexOf(':');
  const [host, port] = [text.slice(0, colon), text.slice(colon + 1)];
  // An IPv6 address has colons of its own, so its port follows it in brackets (Postfix's form too).
  if (net.isIPv6(host) && /^\d{1,5}$/.test(port)) return `an IPv6 address with a port is written in brackets: [${abbreviate(host, 60)}]:${port}`;
  if (net.isIPv6(text)) return `no port: an IPv6 address with a port is written [${abbreviate(text, 60)}]:PORT`;
  if (port === '') return 'no port';
  if (!/^\d+$/.test(port)) return `the port ${shownJson(abbreviate(port, 20))} is not a number`;
  // 010040 is port 10040 in range, written with a zero too many: "out of range" sent the reader
  // looking for a port above 65535.
  if (port.length > 5) return Number(port) <= 65535 ? `port ${abbreviate(port, 20)} has more than five digits: write it without its leading zeros, ${Number(port)}` : `port ${abbreviate(port, 20)} is out of range`;
  if (host === '') return 'no host before the port';
  return `${shownJson(abbreviate(host, 60))} is not a host name or an IP address`;
}

/**
 * Whether two listeners would bind the same socket, so that the second fails with EADDRINUSE:
 * the same socket path, or the same port (not 0, which is any free one) on the same address or
 * under a wildcard (0.0.0.0 takes every IPv4 address; ::, on which Node listens dual-stack,
 * every address). Host names are compared as written: they are not resolved here.
 */
export function sameListener(a: ListenAddress, b: ListenAddress): boolean {
  if (a.kind === 'unix' && b.kind === 'unix') return resolve(a.path) === resolve(b.path);
  if (a.kind !== 'tcp' || b.kind !== 'tcp' || a.port !== b.port || a.port === 0) return false;
  const [x, y] = [hostKey(a.host).toLowerCase(), hostKey(b.host).toLowerCase()];
  if (x === y || x === '::' || y === '::') return true;
  return (x === '0.0.0.0' && net.isIPv4(y)) || (y === '0.0.0.0' && net.isIPv4(x));
}

/**
 * The client end of an accepted connection as logs name it: `192.0.2.1:4711`, `[2001:db8::1]:4711`
 * (brackets, so the port is not read as part of the address), `unix:PATH` on the UNIX socket
 * `socketPath` (its clients have no address of their own), or `unknown` for a connection reset
 * before it was accepted, which has no peer left to name (`unknown:undefined` was logged).
 */
export function remoteEnd(socket: { remoteAddress?: string | undefined; remotePort?: number | undefined }, socketPath?: string): string {
  if (socketPath !== undefined) return `unix:${socketPath}`;
  const address = socket.remoteAddress;
  if (address === undefined) return 'unknown';
  return net.isIPv6(address) ? `[${address}]:${socket.remotePort}` : `${address}:${socket.remotePort}`;
}

/** Owner and group: Postfix connects as a member of the socket's group (postfix, from a set-group-ID directory). */
export const DEFAULT_SOCKET_MODE = 0o660;
/** A socket mode as the configuration and the flags write it: octal, "0660" or "660". */
export const SOCKET_MODE_TEXT = /^[0-7]{3,4}$/;

/** Connecting to a UNIX socket takes write permission on it: o+w lets every local user connect. */
export function openToAllUsers(socketMode: number): boolean {
  return (socketMode & 0o002) !== 0;
}

/** HOST:PORT, [IPv6]:PORT or the socket path: the form the configuration and the flags take. */
export function formatListenAddress(address: ListenAddress): string {
  if (address.kind === 'unix') return address.path;
  return `${address.host.includes(':') ? `[${address.host}]` : address.host}:${address.port}`;
}

/** Where a listening server is bound (its real port when 0 was asked for); undefined before it listens. */
export function boundAddress(server: Server): ListenAddress | undefined {
  const bound = server.address();
  if (bound === null) return undefined;
  return typeof bound === 'string' ? { kind: 'unix', path: bound } : { kind: 'tcp', host: bound.address, port: bound.port };
}

/**
 * Whether a bound listener takes connections from other hosts: a TCP address other than
 * loopback, 0.0.0.0 and :: (every interface) among them. None of the project's listeners asks
 * who connects (Postfix's own policy services, postgrey among them, default to loopback or a
 * UNIX socket), so each logs a warning at start when this holds.
 */
export function reachableFromNetwork(bound: ListenAddress): boolean {
  return bound.kind === 'tcp' && classifyAddress(bound.host) !== 'loopback';
}

/** The address is not on any interface yet; the name could not be resolved for now. */
const NOT_YET_THERE: ReadonlySet<string> = new Set(['EADDRNOTAVAIL', 'EAI_AGAIN']);

/**
 * Binds server to address. A failure is a ConfigError naming the address, with what the
 * system's error means there: a UNIX socket path whose directory is missing, or a path that is
 * something other than a socket (bind reports EACCES and EADDRINUSE for those). An address that
 * is not there yet (NOT_YET_THERE) is a ListenUnavailableError instead: at boot, before the
 * network is up, a configuration error would keep systemd from ever starting callout again.
 * A UNIX socket gets socketMode once bound, when one is given: left to the umask a socket was
 * 0755 under 022, which Postfix (user postfix) cannot connect to, or 0777 under 0.
 */
export function listenOn(server: Server, address: ListenAddress, label: string, socketMode?: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const fail = (err: NodeJS.ErrnoException): void => {
      let reason = err.message;
      try {
        reason = explainListenError(address, err);
      } catch {
        // The path changed while it was looked at: the system's words stand alone.
      }
      if (NOT_YET_THERE.has(err.code ?? '')) {
        reject(new ListenUnavailableError(`cannot listen on ${label}: ${reason} (not there yet: the interface or the name server may still be coming up)`, { cause: err }));
      } else {
        reject(new ConfigError(`cannot listen on ${label}: ${reason}`, { cause: err }));
      }
    };
    server.once('error', fail);
    const ready = (): void => {
      server.off('error', fail);
      if (address.kind === 'tcp' || socketMode === undefined) return resolve();
      chmod(address.path, socketMode).then(resolve, (err: unknown) => {
        server.close();
        reject(new ConfigError(`cannot listen on ${label}: cannot give the socket mode ${octalMode(socketMode)}: ${describeError(err)}`, { cause: err }));
      });
    };
    if (address.kind === 'unix') server.listen(address.path, ready);
    else server.listen({ host: address.host, port: address.port }, ready);
  });
}

function explainListenError(address: ListenAddress, err: NodeJS.ErrnoException): string {
  if (address.kind === 'unix') {
    const directory = dirname(address.path);
    if (!existsSync(directory)) return `${err.message} (the directory ${directory} does not exist)`;
    const stats = lstatSync(address.path, { throwIfNoEntry: false });
    if (stats && !stats.isSocket()) return `${err.message} (${address.path} exists and is not a socket)`;
  } else if (err.code === 'EADDRINUSE') {
    return `${err.message} (another process, or another listener of this one, has the port)`;
  } else if (err.code === 'ENOTFOUND') {
    // "getaddrinfo ENOTFOUND" alone named a library call, not what to change.
    return `${err.message} (the host name has no address: give an IP address, or a name in /etc/hosts)`;
  }
  return err.message;
}

/**
 * Clears a UNIX socket path left behind by an earlier run before binding it; refuses a path
 * that is not a socket or where a live server answers.
 */
export async function removeStaleSocket(path: string): Promise<void> {
  let stats;
  try {
    stats = await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new ConfigError(`cannot listen on ${path}: ${describeError(err)}`, { cause: err });
  }
  if (!stats.isSocket()) throw new ConfigError(`cannot listen on ${path}: it exists and is not a socket`);
  if (await socketAnswers(path)) throw new ConfigError(`cannot listen on ${path}: another server is listening there`);
  try {
    await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    // A directory this user may not write (a socket left by another user, a sticky /tmp): a
    // mistake in the setup, which restarting (exit 70 under Restart=on-failure) cannot mend.
    throw new ConfigError(`cannot listen on ${path}: cannot remove the socket an earlier run left there: ${describeError(err)}`, { cause: err });
  }
}

export async function removeIfSocket(path: string): Promise<void> {
  const stats = await lstat(path).catch(() => undefined);
  if (stats?.isSocket()) await rm(path, { force: true });
}

/**
 * Whether a server listens at path. Only a refused connection says none does: a live server
 * whose backlog is full (busy, or stopped) answers EAGAIN, and removing its socket would cut
 * it off from its clients for good, so any other error is a ConfigError.
 */
function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const probe = net.connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNREFUSED' || err.code === 'ENOENT') resolve(false);
      else reject(new ConfigError(`cannot listen on ${path}: cannot tell whether the server there is gone (connecting to it: ${describeError(err)}); remove the socket if no process has it`, { cause: err }));
    });
  });
}
