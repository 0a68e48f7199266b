/**
 * NAME
 *   test/support/policy-client - a Postfix-like policy client for tests and benchmarks
 *
 * DESCRIPTION
 *   Sends SMTPD_POLICY_README requests over one TCP or UNIX connection, one at a time as
 *   Postfix's smtpd does, and resolves each with the `action=` value. `postfixRequest()` builds
 *   the attribute set Postfix 3.7 sends at RCPT, from test/policy/fixtures/postfix-3.7-rcpt.txt.
 */

import { readFileSync } from 'node:fs';
import net from 'node:net';

const FIXTURE = new URL('../policy/fixtures/postfix-3.7-rcpt.txt', import.meta.url);

export function postfixRequest(overrides: Record<string, string> = {}): Record<string, string> {
  const base: Record<string, string> = {};
  for (const line of readFileSync(FIXTURE, 'utf8').split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) base[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return { ...base, ...overrides };
}

export function encodeRequest(attributes: Record<string, string>): string {
  return Object.entries(attributes).map(([k, v]) => `${k}=${v}\n`).join('') + '\n';
}

export class PolicyClient {
  private buffer = '';
  private waiting: Array<{ resolve: (action: string) => void; reject: (err: Error) => void }> = [];
  private closed = false;

  private constructor(private readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      let end: number;
      while ((end = this.buffer.indexOf('\n\n')) >= 0) {
        const reply = this.buffer.slice(0, end);
        this.buffer = this.buffer.slice(end + 2);
        const action = /^action=(.*)$/m.exec(reply)?.[1] ?? '';
        this.waiting.shift()?.resolve(action);
      }
    });
    const fail = (err: Error) => {
      this.closed = true;
      for (const w of this.waiting.splice(0)) w.reject(err);
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('connection closed without a reply')));
  }

  /** `address` is HOST:PORT or a UNIX socket path. */
  static connect(address: string): Promise<PolicyClient> {
    return new Promise((resolve, reject) => {
      const options = address.startsWith('/')
        ? { path: address }
        : { host: address.slice(0, address.lastIndexOf(':')).replace(/^\[|\]$/g, ''), port: Number(address.slice(address.lastIndexOf(':') + 1)) };
      const socket = net.connect(options, () => resolve(new PolicyClient(socket)));
      socket.once('error', reject);
    });
  }

  request(attributes: Record<string, string>): Promise<string> {
    return this.requestEncoded(encodeRequest(attributes));
  }

  /**
   * A request already encoded (encodeRequest), as a benchmark prepares them before it starts the
   * clock, or as bytes, for what Postfix passes on that is not UTF-8.
   */
  requestEncoded(request: string | Uint8Array): Promise<string> {
    if (this.closed) return Promise.reject(new Error('connection closed'));
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.socket.write(request);
    });
  }

  get isClosed(): boolean {
    return this.closed;
  }

  close(): void {
    this.socket.destroy();
  }
}
