/**
 * NAME
 *   core/listen - listen addresses as administrators write them
 *
 * DESCRIPTION
 *   `127.0.0.1:10040`, `[::1]:10040`, `localhost:10040`, or an absolute UNIX socket path
 *   (`/var/spool/postfix/private/callout`), the forms Postfix's own endpoints use.
 */

import { ConfigError } from './errors.js';

export type ListenTarget = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };

export function listenTarget(text: string): ListenTarget {
  if (text.startsWith('/')) return { kind: 'unix', path: text };
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:\s[\]]+)):(\d{1,5})$/.exec(text);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) throw new ConfigError(`listen address ${JSON.stringify(text)}: expected HOST:PORT, [IPv6]:PORT or an absolute UNIX socket path`);
  return { kind: 'tcp', host: (match[1] ?? match[2])!, port };
}
