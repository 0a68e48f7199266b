/**
 * NAME
 *   bench/instant-smtp - a minimal SMTP server that answers at once, for throughput runs
 *
 * DESCRIPTION
 *   Real SMTP over TCP (RFC 5321): a 220 greeting, EHLO/HELO, MAIL, RCPT answered 250 for the
 *   benchmark's users (world.isBenchUser) and 550 5.1.1 for everyone else, RSET, NOOP, QUIT with
 *   221 and a close. Each reply is written in one segment the moment its line arrives, in order,
 *   so a pipelining client is served correctly too. It keeps no per-session state beyond the
 *   partial line, and runs nothing per command but a verb match: the scriptable test server
 *   (test/support/smtp-server) chains a promise per line, which is right for tests and too slow
 *   to stand in for a remote MTA under load.
 *
 * LIMITS
 *   A line longer than 4096 octets is answered 500 and the connection closed. Only loopback
 *   addresses are accepted as listen hosts.
 */

import net from 'node:net';
import { isBenchUser } from './world.js';

const MAX_LINE = 4096;
const NAME = 'mx.bench.test';
const GREETING = `220 ${NAME} ESMTP instant\r\n`;
const EHLO_REPLY = `250-${NAME}\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n`;

export interface InstantSmtpServer {
  host: string;
  port: number;
  /** Connections accepted since start. */
  readonly connections: number;
  close(): Promise<void>;
}

function pathOf(argument: string): string {
  const open = argument.indexOf('<');
  const close = argument.indexOf('>', open + 1);
  return open === -1 || close === -1 ? argument.trim() : argument.slice(open + 1, close);
}

function replyTo(line: string): { reply: string; close: boolean } {
  const verb = line.slice(0, 4).toUpperCase();
  switch (verb) {
    case 'EHLO':
      return { reply: EHLO_REPLY, close: false };
    case 'HELO':
      return { reply: `250 ${NAME}\r\n`, close: false };
    case 'MAIL':
      return { reply: '250 2.1.0 Ok\r\n', close: false };
    case 'RCPT': {
      const path = pathOf(line.slice(line.indexOf(':') + 1));
      const localPart = path.slice(0, path.lastIndexOf('@'));
      return isBenchUser(localPart)
        ? { reply: '250 2.1.5 Ok\r\n', close: false }
        : { reply: `550 5.1.1 <${path}>: Recipient address rejected: User unknown\r\n`, close: false };
    }
    case 'RSET':
    case 'NOOP':
      return { reply: '250 2.0.0 Ok\r\n', close: false };
    case 'QUIT':
      return { reply: '221 2.0.0 Bye\r\n', close: true };
    case 'DATA':
      return { reply: '554 5.5.1 No DATA here\r\n', close: false };
    default:
      return { reply: '502 5.5.2 Command not recognized\r\n', close: false };
  }
}

function serve(socket: net.Socket): void {
  socket.setNoDelay(true);
  socket.on('error', () => socket.destroy());
  let partial = '';
  socket.on('data', (chunk: Buffer) => {
    partial += chunk.toString('latin1');
    let out = '';
    let lf: number;
    let closing = false;
    while (!closing && (lf = partial.indexOf('\n')) !== -1) {
      const line = partial.slice(0, lf).replace(/\r$/, '');
      partial = partial.slice(lf + 1);
      const answer = replyTo(line);
      out += answer.reply;
      closing = answer.close;
    }
    if (!closing && partial.length > MAX_LINE) {
      out += '500 5.5.0 Line too long\r\n';
      closing = true;
    }
    if (closing) socket.end(out);
    else if (out) socket.write(out);
  });
  socket.write(GREETING);
}

export async function startInstantSmtp(host: string, port: number): Promise<InstantSmtpServer> {
  if (!host.startsWith('127.')) throw new Error(`instant SMTP server: ${host} is not a loopback address`);
  let connections = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    serve(socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port, exclusive: true, backlog: 4096 }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    host,
    port: (server.address() as net.AddressInfo).port,
    get connections() {
      return connections;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
