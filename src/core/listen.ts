/**
 * NAME
 *   core/listen - listen addresses as administrators write them
 *
 * DESCRIPTION
 *   `127.0.0.1:10040`, `[::1]:10040`, `localhost:10040`, or an absolute UNIX socket path
 *   (`/var/spool/postfix/private/callout`), the forms Postfix's own endpoints use.
 *
 * LIMITS
 *   A socket path of at most 107 octets (Linux's sun_path), without NUL; a port up to 65535.
 */

import net from 'node:net';
import { abbreviate } from './errors.js';

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
  if (!match) return { ok: false, reason: `"${abbreviate(text, 60)}" is not host:port, [ipv6]:port or an absolute socket path` };
  const [, bracketed, plain, portText] = match;
  const port = Number(portText);
  if (port > 65535) return { ok: false, reason: `port ${port} is out of range` };
  if (bracketed !== undefined && !net.isIPv6(bracketed)) return { ok: false, reason: `"${bracketed}" is not an IPv6 address` };
  return { ok: true, value: { kind: 'tcp', host: bracketed ?? plain ?? '', port } };
}

