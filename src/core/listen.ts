/**
 * NAME
 *   core/listen - listen addresses as administrators write them
 *
 * DESCRIPTION
 *   `127.0.0.1:10040`, `[::1]:10040`, `localhost:10040`, or an absolute UNIX socket path
 *   (`/var/spool/postfix/private/callout`), the forms Postfix's own endpoints use.
 */

import net from 'node:net';

export type ListenAddress = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };
const HOST_PORT = /^(?:\[([^\]]+)\]|([^:[\]\s]+)):([0-9]{1,5})$/;

export function parseListenAddress(text: string): { ok: true; value: ListenAddress } | { ok: false; reason: string } {
  if (text.startsWith('/')) return { ok: true, value: { kind: 'unix', path: text } };
  const match = HOST_PORT.exec(text);
  if (!match) return { ok: false, reason: `"${text}" is not host:port, [ipv6]:port or an absolute socket path` };
  const [, bracketed, plain, portText] = match;
  const port = Number(portText);
  if (port > 65535) return { ok: false, reason: `port ${port} is out of range` };
  if (bracketed !== undefined && !net.isIPv6(bracketed)) return { ok: false, reason: `"${bracketed}" is not an IPv6 address` };
  return { ok: true, value: { kind: 'tcp', host: bracketed ?? plain ?? '', port } };
}

