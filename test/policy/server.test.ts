import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { lstatSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sleep, type TimerHandle, type Timers } from '../../src/core/clock.js';
import { ManualTimers } from '../support/manual-time.js';
import { CalloutError, ConfigError } from '../../src/core/errors.js';
import { PolicyServer, parseListenAddress, type ConnectionInfo, type PolicyHandler, type PolicyServerLimits } from '../../src/policy/server.js';
import { turnsUntil, until } from '../support/wait.js';

const FIXTURE = readFileSync(new URL('./fixtures/postfix-3.7-rcpt.txt', import.meta.url));

interface LogEntry {
  level: 'info' | 'warn' | 'error';
  fields: Record<string, unknown>;
  message: string;
}

function recordingLog(): { log: { info: Logger; warn: Logger; error: Logger }; entries: LogEntry[] } {
  const entries: LogEntry[] = [];
  const at =
    (level: LogEntry['level']): Logger =>
    (fields, message) =>
      entries.push({ level, fields, message });
  return { log: { info: at('info'), warn: at('warn'), error: at('error') }, entries };
}
type Logger = (fields: Record<string, unknown>, message: string) => void;

const servers: Array<{ server: PolicyServer; timers: Timers | undefined }> = [];
after(async () => {
  await Promise.all(
    servers.map(async ({ server, timers }) => {
      const closing = server.close({ drainMs: 0 });
      // The drain bound of a server on ManualTimers passes only when moved (a request a failed test left running).
      if (timers instanceof ManualTimers) await timers.advance(1);
      await closing;
    }),
  );
});

async function startServer(
  handler: PolicyHandler,
  options: { listen?: string; limits?: PolicyServerLimits; socketMode?: number; timers?: Timers } = {},
): Promise<{ server: PolicyServer; address: string; entries: LogEntry[] }> {
  const { log, entries } = recordingLog();
  const server = new PolicyServer({ listen: options.listen ?? '127.0.0.1:0', handler, limits: options.limits, socketMode: options.socketMode, timers: options.timers, log });
  servers.push({ server, timers: options.timers });
  const { address } = await server.listen();
  return { server, address, entries };
}

/** A policy client that collects what the server sends and notices when it closes. */
class Client {
  readonly socket: net.Socket;
  private received = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  private ended = false;
  readonly closed: Promise<void>;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.received = Buffer.concat([this.received, chunk]);
      this.wake();
    });
    socket.on('error', () => {});
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        this.ended = true;
        this.wake();
        resolve();
      }),
    );
  }

  static connect(address: string): Promise<Client> {
    return new Promise((resolve, reject) => {
      const unix = address.startsWith('/');
      const target = unix ? { path: address } : parseTcp(address);
      const socket = net.connect(target, () => resolve(new Client(socket)));
      socket.once('error', reject);
    });
  }

  send(text: string | Buffer): void {
    this.socket.write(text);
  }

  request(attributes: Record<string, string>): void {
    this.send(encodeRequest(attributes));
  }

  /** The next reply's action text, or 'closed' when the server closes first. */
  async reply(): Promise<string> {
    while (true) {
      const end = this.received.indexOf('\n\n');
      if (end !== -1) {
        const block = this.received.subarray(0, end).toString('utf8');
        this.received = this.received.subarray(end + 2);
        assert.match(block, /^action=[^\n]*$/);
        return block.slice('action='.length);
      }
      if (this.ended) return 'closed';
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  /** Everything received once the server has closed the connection. */
  async untilClosed(): Promise<string> {
    await this.closed;
    return this.received.toString('utf8');
  }

  close(): void {
    this.socket.destroy();
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }
}

function parseTcp(address: string): { host: string; port: number } {
  const parsed = parseListenAddress(address);
  assert.ok(parsed.ok && parsed.value.kind === 'tcp', 'parsed.ok && parsed.value.kind === \'tcp\'');
  return { host: parsed.value.host, port: parsed.value.port };
}

function encodeRequest(attributes: Record<string, string>): string {
  return Object.entries({ request: 'smtpd_access_policy', ...attributes })
    .map(([name, value]) => `${name}=${value}\n`)
    .join('') + '\n';
}

/**
 * ManualTimers that count the refreshes of their timers: the server refreshes a connection's idle
 * timer at every chunk it reads, so a test sees when the octets it sent have come.
 */
class RefreshCountingTimers extends ManualTimers {
  refreshes = 0;
  override setTimeout(fire: () => void, ms: number): TimerHandle {
    const handle = super.setTimeout(fire, ms);
    const refresh = handle.refresh;
    // The handle itself, refresh counted: clearTimeout and refresh must still find it.
    return Object.assign(handle, {
      refresh: () => {
        this.refreshes++;
        return refresh();
      },
    });
  }
}

function deferred<T>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

describe('parseListenAddress', () => {
  const good: [string, unknown][] = [
    ['127.0.0.1:10040', { kind: 'tcp', host: '127.0.0.1', port: 10040 }],
    ['localhost:0', { kind: 'tcp', host: 'localhost', port: 0 }],
    ['[::1]:10040', { kind: 'tcp', host: '::1', port: 10040 }],
    ['/run/callout/policy.sock', { kind: 'unix', path: '/run/callout/policy.sock' }],
  ];
  for (const [text, want] of good) {
    it(`reads ${text}`, () => assert.deepEqual(parseListenAddress(text), { ok: true, value: want }));
  }
  for (const text of ['10040', ':10040', '::1:10040', '[::1]', '[127.0.0.1]:25', 'host:65536', 'host:port', 'relative/path', 'a b:25', '']) {
    it(`refuses ${JSON.stringify(text)}`, () => {
      const parsed = parseListenAddress(text);
      assert.equal(parsed.ok, false);
      assert.throws(() => new PolicyServer({ listen: text, handler: async () => 'DUNNO', log: recordingLog().log }), ConfigError);
    });
  }
});

describe('PolicyServer over TCP', () => {
  it('answers a request and reports the bound port', async () => {
    const seen: { attributes: Record<string, string>; conn: ConnectionInfo }[] = [];
    const { server, address } = await startServer(async (attributes, conn) => {
      seen.push({ attributes, conn });
      return 'DUNNO';
    });
    assert.match(address, /^127\.0\.0\.1:[1-9][0-9]*$/);
    assert.equal(server.address, address);
    const client = await Client.connect(address);
    client.request({ protocol_state: 'RCPT', sender: 'a@b.example' });
    assert.equal(await client.reply(), 'DUNNO');
    assert.equal(server.connections, 1);
    assert.deepEqual(seen[0]?.attributes, { request: 'smtpd_access_policy', protocol_state: 'RCPT', sender: 'a@b.example' });
    assert.equal(seen[0]?.conn.requests, 1);
    assert.match(seen[0]?.conn.remote ?? '', /^127\.0\.0\.1:[0-9]+$/);
    client.close();
    assert.ok(await until(() => server.connections === 0), 'the connection is gone');
  });

  it('answers several requests on one connection, in order', async () => {
    const seen: ConnectionInfo[] = [];
    const { address } = await startServer(async (attributes, conn) => {
      seen.push(conn);
      return `550 5.1.0 rejected ${attributes['instance']}`;
    });
    const client = await Client.connect(address);
    for (const instance of ['1', '2', '3']) {
      client.request({ instance });
      assert.equal(await client.reply(), `550 5.1.0 rejected ${instance}`);
    }
    assert.deepEqual(
      seen.map((conn) => conn.requests),
      [1, 2, 3],
    );
    assert.equal(new Set(seen.map((conn) => conn.id)).size, 1);
    client.close();
  });

  it('handles pipelined requests one at a time and answers them in order', async () => {
    let running = 0;
    let mostRunning = 0;
    const { address } = await startServer(async (attributes) => {
      running += 1;
      mostRunning = Math.max(mostRunning, running);
      // The first request is the slowest: answers must still come in request order.
      await new Promise((resolve) => setTimeout(resolve, 30 - 10 * Number(attributes['instance'])));
      running -= 1;
      return `DUNNO ${attributes['instance']}`;
    });
    const client = await Client.connect(address);
    client.send(encodeRequest({ instance: '0' }) + encodeRequest({ instance: '1' }) + encodeRequest({ instance: '2' }));
    assert.deepEqual([await client.reply(), await client.reply(), await client.reply()], ['DUNNO 0', 'DUNNO 1', 'DUNNO 2']);
    assert.equal(mostRunning, 1);
    client.close();
  });

  it('answers pipelined requests in order when some answers come at once and others later', async () => {
    const { address } = await startServer((attributes) => {
      const instance = Number(attributes['instance']);
      if (instance % 2 === 0) return `DUNNO ${instance} at once`;
      return new Promise((resolve) => setTimeout(() => resolve(`DUNNO ${instance} later`), 5));
    });
    const client = await Client.connect(address);
    client.send([0, 1, 2, 3, 4].map((i) => encodeRequest({ instance: String(i) })).join(''));
    const replies = [];
    for (let i = 0; i < 5; i++) replies.push(await client.reply());
    assert.deepEqual(replies, ['DUNNO 0 at once', 'DUNNO 1 later', 'DUNNO 2 at once', 'DUNNO 3 later', 'DUNNO 4 at once']);
    client.close();
  });

  it('serves a client that pipelines thousands of requests before it reads any answer, answered at once or later', async () => {
    for (const handler of [(attributes: Record<string, string>) => `DUNNO ${attributes['instance']}`, async (attributes: Record<string, string>) => `DUNNO ${attributes['instance']}`]) {
      const { address } = await startServer(handler);
      const client = await Client.connect(address);
      const count = 5_000;
      client.send(Array.from({ length: count }, (_, i) => encodeRequest({ instance: String(i) })).join(''));
      // Reading only now, once the server has answered what it could into the socket buffers.
      await new Promise((resolve) => setTimeout(resolve, 200));
      for (let i = 0; i < count; i++) assert.equal(await client.reply(), `DUNNO ${i}`);
      client.close();
    }
  });

  it('stops reading from a client that pipelines without reading its answers, and from one that pipelines while a request runs', async () => {
    // Unread answers stay within the socket buffers: the server handles no more requests than fit.
    let handled = 0;
    const unread = await startServer(() => {
      handled += 1;
      return `DUNNO ${'x'.repeat(50_000)}`;
    });
    const reader = await Client.connect(unread.address);
    reader.socket.pause();
    const count = 1_000;
    reader.send(encodeRequest({ padding: 'p'.repeat(1_000) }).repeat(count));
    assert.ok(await until(() => handled > 0), 'await until(() => handled > 0)');
    let seen = -1;
    assert.ok(await until(() => (seen === handled ? true : ((seen = handled), false)), 10_000, 200), 'handling stops');
    assert.ok(handled < count, `${handled} of ${count} requests handled for a client that reads nothing`);
    reader.close();
    // While a request runs, what the client sends next stays unread (in its own send buffer, past the kernel's).
    const release = deferred<string>();
    const busy = await startServer((attributes) => (attributes['instance'] === 'first' ? release.promise : 'OK'), { limits: { maxLineLength: 70_000, maxRequestSize: 70_000 } });
    const client = await Client.connect(busy.address);
    client.request({ instance: 'first' });
    const more = 600;
    client.send(encodeRequest({ padding: 'p'.repeat(64_000) }).repeat(more));
    assert.equal(await until(() => client.socket.writableLength === 0, 1_000), false, 'the server stopped reading');
    release.resolve('DUNNO');
    assert.equal(await client.reply(), 'DUNNO');
    for (let i = 0; i < more; i++) assert.equal(await client.reply(), 'OK');
    client.close();
  });

  it('answers a client that half-closes after writing', async () => {
    const { address } = await startServer(async () => 'OK');
    const client = await Client.connect(address);
    client.socket.end(encodeRequest({ instance: '1' }) + encodeRequest({ instance: '2' }));
    assert.equal(await client.untilClosed(), 'action=OK\n\naction=OK\n\n');
  });

  it('logs a client that ends the connection in the middle of a request (no empty line after it), and answers the whole ones before it', async () => {
    const { address, entries } = await startServer(async () => 'OK');
    const whole = await Client.connect(address);
    whole.socket.end(encodeRequest({ instance: '1' }));
    assert.equal(await whole.untilClosed(), 'action=OK\n\n');
    const partial = 'request=smtpd_access_policy\nsender=a@b.example\n';
    const cut = await Client.connect(address);
    cut.socket.end(encodeRequest({ instance: '2' }) + partial);
    assert.equal(await cut.untilClosed(), 'action=OK\n\n');
    assert.deepEqual(
      entries.filter((e) => e.fields.connection !== undefined).map((e) => [e.level, e.message, e.fields.unfinishedBytes]),
      [['info', 'policy client ended the connection in the middle of a request (one ends with an empty line); dropped without a reply', Buffer.byteLength(partial)]],
    );
  });

  it('names the remote end of a connection reset before it was accepted "unknown", not "unknown:undefined"', async () => {
    const { address, entries } = await startServer(async () => 'OK');
    const { port } = parseTcp(address);
    // spawnSync holds this process's event loop: the client connects, writes and resets before the server accepts.
    const client = `const s = require('net').connect(${port}, '127.0.0.1', () => { s.write('request=smtpd_access_policy\\n'); setTimeout(() => s.resetAndDestroy(), 50); });`;
    assert.equal(spawnSync(process.execPath, ['-e', client]).status, 0);
    await until(() => entries.some((e) => e.fields.connection !== undefined));
    assert.deepEqual(entries.filter((e) => e.fields.connection !== undefined).map((e) => e.fields.remote), ['unknown']);
  });

  it('answers the realistic Postfix 3.7 RCPT request', async () => {
    let attributes: Record<string, string> = {};
    const { address } = await startServer(async (received) => {
      attributes = received;
      return 'DEFER_IF_PERMIT Greylisted, try again later';
    });
    const client = await Client.connect(address);
    client.send(FIXTURE);
    assert.equal(await client.reply(), 'DEFER_IF_PERMIT Greylisted, try again later');
    assert.equal(Object.keys(attributes).length, 29);
    assert.equal(attributes['client_address'], '192.0.2.10');
    assert.equal(attributes['recipient'], 'alice@example.test');
    client.close();
  });

  it('closes a connection with a malformed request without a reply, and keeps serving others', async () => {
    const { address, entries } = await startServer(async () => 'DUNNO');
    const other = await Client.connect(address);
    const broken = await Client.connect(address);
    broken.send(`${encodeRequest({ instance: '1' })}request=smtpd_access_policy\nclient_address=192.0.2.7\nno equals sign\n\n`);
    assert.equal(await broken.untilClosed(), 'action=DUNNO\n\n', 'the good request before the broken one is answered');
    const warning = entries.find((entry) => entry.level === 'warn');
    assert.equal(warning?.fields['reason'], 'malformed-line');
    assert.equal(warning?.fields['client'], '192.0.2.7');
    assert.match(String(warning?.fields['remote']), /^127\.0\.0\.1:/);
    other.request({ instance: '2' });
    assert.equal(await other.reply(), 'DUNNO');
    const later = await Client.connect(address);
    later.request({ instance: '3' });
    assert.equal(await later.reply(), 'DUNNO');
    other.close();
    later.close();
  });

  it('lets go of a closed connection at once even when the client never closes its side', async () => {
    const { server, address } = await startServer(async () => 'DUNNO', { limits: { idleTimeoutMs: 60_000 } });
    const { host, port } = parseTcp(address);
    const halfOpen = net.connect({ host, port, allowHalfOpen: true });
    halfOpen.on('error', () => {});
    halfOpen.on('data', () => {});
    await new Promise((resolve) => halfOpen.once('connect', resolve));
    halfOpen.write('no equals sign\n\n');
    assert.ok(await until(() => server.connections === 0, 5_000), 'the slot is free well within the idle timeout');
    halfOpen.destroy();
  });

  it('closes on a wrong request type and on an over-long line', async () => {
    const { address, entries } = await startServer(async () => 'DUNNO', { limits: { maxLineLength: 64 } });
    const wrongType = await Client.connect(address);
    wrongType.send('request=something_else\n\n');
    assert.equal(await wrongType.untilClosed(), '');
    const longLine = await Client.connect(address);
    longLine.send(`request=smtpd_access_policy\nsender=${'x'.repeat(100)}`);
    assert.equal(await longLine.untilClosed(), '');
    assert.deepEqual(
      entries.filter((entry) => entry.level === 'warn').map((entry) => entry.fields['reason']),
      ['bad-request-type', 'line-too-long'],
    );
    // The other decoder limits are passed through too: short lines adding up to too large a request.
    const small = await startServer(async () => 'DUNNO', { limits: { maxRequestSize: 200 } });
    const tooLarge = await Client.connect(small.address);
    tooLarge.send(`request=smtpd_access_policy\n${'a=b\n'.repeat(60)}\n`);
    assert.equal(await tooLarge.untilClosed(), '');
    assert.deepEqual(small.entries.filter((entry) => entry.level === 'warn').map((entry) => entry.fields['reason']), ['request-too-large']);
  });

  it('closes without a reply when the handler throws, and logs the client', async () => {
    const { address, entries } = await startServer(async (attributes) => {
      if (attributes['instance'] === 'boom') throw new CalloutError('STORE_UNAVAILABLE', 'database is locked');
      return 'DUNNO';
    });
    const client = await Client.connect(address);
    client.request({ instance: 'ok' });
    assert.equal(await client.reply(), 'DUNNO');
    client.request({ instance: 'boom', client_address: '198.51.100.4' });
    assert.equal(await client.reply(), 'closed');
    const logged = entries.find((entry) => entry.level === 'error');
    assert.equal(logged?.fields['client'], '198.51.100.4');
    assert.equal(logged?.fields['error'], 'STORE_UNAVAILABLE: database is locked');
    const next = await Client.connect(address);
    next.request({ instance: 'ok' });
    assert.equal(await next.reply(), 'DUNNO');
    next.close();
  });

  it('closes the connection, and keeps the process, when even logging a failed answer fails', async () => {
    const throwing = () => {
      throw new Error('log sink gone');
    };
    const server = new PolicyServer({
      listen: '127.0.0.1:0',
      handler: async () => Promise.reject(Object.create(null) as unknown),
      log: { info: () => undefined, warn: () => undefined, error: throwing },
    });
    servers.push({ server, timers: undefined });
    const { address } = await server.listen();
    const client = await Client.connect(address);
    client.request({ instance: 'x' });
    assert.equal(await client.reply(), 'closed');
  });

  it('closes without a reply when the handler throws synchronously or returns an action that cannot be sent', async () => {
    const handler = ((attributes: Record<string, string>) => {
      if (attributes['instance'] === 'sync') throw new Error('not async');
      return Promise.resolve('REJECT first line\naction=OK');
    }) as PolicyHandler;
    const { address, entries } = await startServer(handler);
    for (const instance of ['sync', 'newline']) {
      const client = await Client.connect(address);
      client.request({ instance });
      assert.equal(await client.untilClosed(), '');
    }
    assert.equal(entries.filter((entry) => entry.level === 'error').length, 2);
  });

  it('closes without a reply when the handler does not answer in time', async () => {
    const never = deferred<string>();
    const asked = deferred<void>();
    const timers = new ManualTimers();
    const { address, entries } = await startServer(() => {
      asked.resolve();
      return never.promise;
    }, { limits: { requestTimeoutMs: 150 }, timers });
    const client = await Client.connect(address);
    client.request({ instance: 'slow', client_address: '203.0.113.9' });
    await asked.promise;
    await timers.advance(149);
    assert.equal(entries.find((entry) => entry.level === 'warn'), undefined, 'still waited for 1 ms before the timeout');
    await timers.advance(1);
    assert.equal(await client.untilClosed(), '');
    const logged = entries.find((entry) => entry.level === 'warn');
    assert.equal(logged?.fields['timeoutMs'], 150);
    assert.equal(logged?.fields['client'], '203.0.113.9');
    // A late answer to a closed connection goes nowhere and breaks nothing.
    never.resolve('DUNNO');
  });

  it('answers a client that half-closes while its request is still being handled, then closes', async () => {
    const { address } = await startServer((attributes) => new Promise((resolve) => setTimeout(() => resolve(`OK ${attributes['instance']}`), 200)));
    const client = await Client.connect(address);
    client.socket.end(encodeRequest({ instance: '1' }) + encodeRequest({ instance: '2' }));
    // Well within the default idle timeout: the end of the client's requests ends the connection.
    let received: string | undefined;
    void client.untilClosed().then((text) => (received = text));
    assert.ok(await until(() => received !== undefined, 5_000), 'the connection is still open');
    assert.equal(received, 'action=OK 1\n\naction=OK 2\n\n');
  });

  it('keeps a connection idle between requests for longer than requestTimeoutMs, and one whose request outlasts idleTimeoutMs', async () => {
    // The request timeout bounds a request being handled, not the wait for the next one (smtpd_policy_service_max_idle does).
    const timers = new ManualTimers();
    const { address } = await startServer(async () => 'DUNNO', { limits: { requestTimeoutMs: 300, idleTimeoutMs: 10_000 }, timers });
    const client = await Client.connect(address);
    client.request({ instance: '1' });
    assert.equal(await client.reply(), 'DUNNO');
    await timers.advance(800);
    client.request({ instance: '2' });
    assert.equal(await client.reply(), 'DUNNO', 'idle for longer than requestTimeoutMs');
    client.close();
    // While a request runs, the request timer is the one that counts.
    const busyTimers = new ManualTimers();
    const asked = deferred<void>();
    const busy = await startServer(async () => {
      asked.resolve();
      await sleep(1_500, busyTimers);
      return 'OK';
    }, { limits: { idleTimeoutMs: 500, requestTimeoutMs: 10_000 }, timers: busyTimers });
    const patient = await Client.connect(busy.address);
    patient.request({});
    await asked.promise;
    await busyTimers.advance(1_500);
    assert.equal(await patient.reply(), 'OK', 'a request handled for longer than idleTimeoutMs is answered');
    patient.close();
  });

  it('closes an idle connection, including one that stalls mid-request', async () => {
    const timers = new ManualTimers();
    const { address, entries } = await startServer(async () => 'DUNNO', { limits: { idleTimeoutMs: 1000 }, timers });
    const idle = await Client.connect(address);
    idle.request({ instance: '1' });
    assert.equal(await idle.reply(), 'DUNNO');
    const stalled = await Client.connect(address);
    stalled.send('request=smtpd_access_policy\nsender=');
    // Each connection's idle and request timers, and the stalled request's arrival timer.
    await turnsUntil(() => timers.waiting === 5, 'the server has the stalled request\'s first octets');
    await timers.advance(999);
    assert.equal(entries.filter((entry) => entry.message === 'closing idle policy connection').length, 0, 'idle 1 ms short of the timeout');
    await timers.advance(1);
    assert.equal(await idle.untilClosed(), '');
    assert.equal(await stalled.untilClosed(), '');
    assert.equal(entries.filter((entry) => entry.message === 'closing idle policy connection').length, 2);
    assert.deepEqual(entries.filter((entry) => entry.message === 'closing idle policy connection').map((entry) => entry.fields.unfinishedBytes), [undefined, 35]);
  });

  it('closes a connection whose request trickles in for longer than the arrival bound, and serves a whole one after a partial one', async () => {
    const arrivalTimeoutMs = 1000;
    const timers = new RefreshCountingTimers();
    const { server, address, entries } = await startServer(async () => 'DUNNO', { limits: { idleTimeoutMs: 10_000, arrivalTimeoutMs }, timers });
    const notComplete = () => entries.filter((entry) => entry.message === 'policy request not complete in time; closing the connection without a reply');
    const trickling = await Client.connect(address);
    const text = encodeRequest({ instance: 'slow' });
    let sent = 0;
    // An octet every 100 ms keeps the idle timer going; the request would take seconds to arrive.
    // Each is read by the server (its idle timer refreshed) before the timers move on.
    trickling.send(text[sent++]!);
    await turnsUntil(() => timers.waiting === 3, 'the arrival timer of the first octet');
    for (let ms = 100; ms < arrivalTimeoutMs; ms += 100) {
      await timers.advance(100);
      trickling.send(text[sent++]!);
      await turnsUntil(() => timers.refreshes === sent, `the server has octet ${sent}`);
    }
    await timers.advance(99);
    assert.equal(notComplete().length, 0, 'still waited for 1 ms before the bound');
    await timers.advance(1);
    assert.equal(await trickling.untilClosed(), '', 'closed without a reply');
    const closed = notComplete()[0];
    assert.ok(closed, JSON.stringify(entries));
    assert.equal(closed.fields.arrivalTimeoutMs, arrivalTimeoutMs);
    assert.ok((closed.fields.unfinishedBytes as number) > 0 && sent < text.length, '(closed.fields.unfinishedBytes as number) > 0 && sent < text.length');
    assert.equal(closed.fields.unfinishedBytes, sent, 'every octet sent came, each within the bound');
    await turnsUntil(() => server.connections === 0 && timers.waiting === 0, 'the trickling connection\'s end');
    // A request in two parts, within the bound, is answered; the bound starts again for the next.
    const split = await Client.connect(address);
    const whole = encodeRequest({ instance: 'split' });
    split.send(whole.slice(0, 20));
    await turnsUntil(() => timers.waiting === 3, 'the arrival timer of the first part');
    await timers.advance(100);
    split.send(whole.slice(20));
    assert.equal(await split.reply(), 'DUNNO');
    // Idle until the bound has passed since the first part came: a wait left running from it would close the connection now.
    await timers.advance(arrivalTimeoutMs + 100);
    split.request({ instance: 'later' });
    assert.equal(await split.reply(), 'DUNNO', 'an idle connection between requests is not held to the arrival bound');
    // A later request that stalls is held to the bound again (closed long before the idle timeout).
    split.send(whole.slice(0, 20));
    await turnsUntil(() => timers.waiting === 3, 'the arrival timer of the stalled request');
    await timers.advance(arrivalTimeoutMs - 1);
    assert.equal(notComplete().length, 1, 'still waited for 1 ms before the bound');
    await timers.advance(1);
    assert.equal(await split.untilClosed(), '');
    assert.equal(notComplete().length, 2, JSON.stringify(entries));
  });

  /**
   * A request answered after firstMs, sent with the start of a second that ends 400 ms after that
   * answer (arrival bound 1000 ms): the second is answered OK, its wait counted from the answer.
   */
  async function pipelinedAfter(firstMs: number): Promise<void> {
    const timers = new ManualTimers();
    const { address } = await startServer((attributes) => (attributes.instance === 'first' ? sleep(firstMs, timers).then(() => 'DUNNO') : 'OK'), { limits: { arrivalTimeoutMs: 1000 }, timers });
    const client = await Client.connect(address);
    const second = encodeRequest({ instance: 'second' });
    client.send(encodeRequest({ instance: 'first' }) + second.slice(0, 20));
    // The idle, request and arrival timers, and the first answer's wait.
    await turnsUntil(() => timers.waiting === 4, 'the first request and the start of the second');
    await timers.advance(firstMs);
    assert.equal(await client.reply(), 'DUNNO', 'the first request is answered');
    await timers.advance(400);
    client.send(second.slice(20));
    assert.equal(await client.reply(), 'OK', `the ${firstMs} ms of the first answer were not the client's`);
    client.close();
  }

  it('starts the arrival wait of a pipelined request again once the one before it is answered', async () => {
    // 700 ms, then 400: 1100 ms after the second began, past the bound, but within it counted from the answer.
    await pipelinedAfter(700);
  });

  it('does not end a pipelined request begun with one whose answer takes longer than the arrival bound', async () => {
    // The arrival timer fires while the first request is handled: that time is ours, not the client's.
    await pipelinedAfter(1500);
  });

  it('drops a connection it is closing when the client never reads the answers queued before the end', async () => {
    // Answers large enough that the socket buffers cannot take them all: the end stays queued.
    // The requests must come within the idle timeout of the connection being taken, or it is
    // closed as idle with nothing queued (another case): a second, for a loaded machine.
    const action = `DUNNO ${'x'.repeat(100_000)}`;
    const { server, address, entries } = await startServer(async () => action, { limits: { idleTimeoutMs: 1000 } });
    const requests = encodeRequest({}).repeat(200);
    const halfClosed = await Client.connect(address);
    halfClosed.socket.pause();
    halfClosed.socket.end(requests);
    const silent = await Client.connect(address);
    silent.socket.pause();
    silent.send(requests);
    assert.ok(await until(() => server.connections === 0), 'both connections are dropped');
    assert.equal(entries.filter((entry) => entry.message === 'policy client does not read its answers; dropping the connection').length, 2, JSON.stringify(entries));
    halfClosed.close();
    silent.close();
  });

  it('closes connections over maxConnections at once and logs once per burst', async () => {
    const { server, address, entries } = await startServer(async () => 'DUNNO', { limits: { maxConnections: 2 } });
    const first = await Client.connect(address);
    const second = await Client.connect(address);
    for (const client of [first, second]) {
      client.request({});
      assert.equal(await client.reply(), 'DUNNO');
    }
    for (let i = 0; i < 3; i += 1) {
      const refused = await Client.connect(address);
      refused.request({});
      assert.equal(await refused.untilClosed(), '');
    }
    assert.equal(server.connections, 2);
    assert.equal(entries.filter((entry) => entry.level === 'warn').length, 1);
    first.close();
    assert.ok(await until(() => server.connections === 1), 'a connection slot is free');
    const third = await Client.connect(address);
    third.request({});
    assert.equal(await third.reply(), 'DUNNO');
    assert.ok(entries.some((entry) => entry.message === 'accepting policy connections again' && entry.fields['refused'] === 3), 'entries.some((entry) => entry.message === \'accepting policy connections again\' && entry.fields[\'r...');
    // A new burst is logged again, once.
    for (let i = 0; i < 2; i += 1) {
      const refused = await Client.connect(address);
      assert.equal(await refused.untilClosed(), '');
    }
    assert.equal(entries.filter((entry) => entry.level === 'warn').length, 2);
    assert.equal(entries.filter((entry) => entry.message === 'accepting policy connections again').length, 1);
    second.close();
    third.close();
  });

  it('takes no more connections than the open-files limit leaves room for, and says so', async () => {
    // Out of descriptors, libuv closed the connections it could not accept without a word to Node.
    const { server, address, entries } = await startServer(async () => 'DUNNO', { limits: { maxConnections: 1000, openFilesLimit: 4 } });
    const capped = entries.find((entry) => entry.level === 'warn' && entry.message.startsWith('policy.maxConnections is more than the open-files limit'));
    assert.deepEqual(capped && [capped.fields['maxConnections'], capped.fields['openFilesLimit'], capped.fields['acceptedConnections']], [1000, 4, 2], JSON.stringify(entries));
    const clients = [await Client.connect(address), await Client.connect(address)];
    for (const client of clients) {
      client.request({});
      assert.equal(await client.reply(), 'DUNNO');
    }
    const refused = await Client.connect(address);
    refused.request({});
    assert.equal(await refused.untilClosed(), '');
    assert.equal(server.connections, 2);
    assert.ok(entries.some((entry) => entry.message === 'too many policy connections; closing new ones at once' && entry.fields['maxConnections'] === 2), 'entries.some((entry) => entry.message === \'too many policy connections; closing new ones at once\'...');
    for (const client of clients) client.close();
    // Half the descriptors are kept for the rest, but at most 256; with room to spare nothing is capped or logged.
    const large = await startServer(async () => 'DUNNO', { limits: { maxConnections: 5_000, openFilesLimit: 2_000 } });
    assert.deepEqual(large.entries.find((entry) => entry.message.startsWith('policy.maxConnections is more'))?.fields['acceptedConnections'], 1_744);
    const roomy = await startServer(async () => 'DUNNO', { limits: { maxConnections: 100, openFilesLimit: 2_000 } });
    assert.equal(roomy.entries.filter((entry) => entry.level === 'warn').length, 0);
  });

  it('close() lets a request being handled finish, then closes everything', async () => {
    const started = deferred<void>();
    const release = deferred<string>();
    const { server, address, entries } = await startServer(async (attributes) => {
      if (attributes['instance'] !== 'slow') return 'DUNNO';
      started.resolve();
      return release.promise;
    });
    const idle = await Client.connect(address);
    idle.request({ instance: 'fast' });
    assert.equal(await idle.reply(), 'DUNNO');
    const busy = await Client.connect(address);
    busy.request({ instance: 'slow' });
    await started.promise;
    const closing = server.close({ drainMs: 10_000 });
    assert.equal(await idle.untilClosed(), '');
    await assert.rejects(Client.connect(address), { code: 'ECONNREFUSED' }, 'the listener is closed at once');
    release.resolve('OK drained');
    assert.equal(await busy.untilClosed(), 'action=OK drained\n\n');
    await closing;
    assert.equal(server.connections, 0);
    // The connection closed once its answer was out, not when drainMs ran out.
    assert.equal(entries.filter((entry) => entry.message === 'policy requests still running at shutdown; closing their connections').length, 0);
  });

  it('close() gives up on requests still running after drainMs', async () => {
    const started = deferred<void>();
    const timers = new ManualTimers();
    const { server, address, entries } = await startServer(async () => {
      started.resolve();
      return new Promise<string>(() => {});
    }, { timers });
    const client = await Client.connect(address);
    client.request({});
    await started.promise;
    const givenUp = () => entries.filter((entry) => entry.level === 'warn' && entry.fields['drainMs'] === 100);
    const closing = server.close({ drainMs: 100 });
    await timers.advance(99);
    assert.equal(givenUp().length, 0, 'the request is waited for until drainMs');
    await timers.advance(1);
    assert.equal(givenUp().length, 1);
    await closing;
    assert.equal(await client.untilClosed(), '');
  });

  it('listens on IPv6 loopback when the machine has it', async (t) => {
    // Whether the machine has ::1 is asked of node:net, so a fault of PolicyServer fails the test instead of skipping it.
    const probe = net.createServer();
    const noIpv6 = await new Promise<Error | undefined>((resolve) => {
      probe.once('error', resolve);
      probe.listen(0, '::1', () => probe.close(() => resolve(undefined)));
    });
    if (noIpv6) {
      t.skip(`no IPv6 loopback: ${String(noIpv6)}`);
      return;
    }
    const started = await startServer(async () => 'DUNNO', { listen: '[::1]:0' });
    assert.match(started.address, /^\[::1\]:[0-9]+$/);
    const client = await Client.connect(started.address);
    client.request({});
    assert.equal(await client.reply(), 'DUNNO');
    client.close();
  });

  it('refuses an address that is in use, and a second listen()', async () => {
    const { server, address } = await startServer(async () => 'DUNNO');
    const second = new PolicyServer({ listen: address, handler: async () => 'DUNNO', log: recordingLog().log });
    await assert.rejects(second.listen(), ConfigError);
    await assert.rejects(server.listen(), (err: unknown) => err instanceof CalloutError && err.code === 'INTERNAL');
  });
});

describe('PolicyServer timeouts at their defaults (README, smtpd_policy_service_*), on ManualTimers', () => {
  it('closes a request left unfinished 10 s after its first octets, not 1 ms before', async () => {
    const timers = new ManualTimers();
    const { server, address, entries } = await startServer(async () => 'DUNNO', { timers });
    const client = await Client.connect(address);
    client.send('request=smtpd_access_policy\nsender=');
    // The connection's idle and request timers, and the arrival timer the first octets set.
    await turnsUntil(() => timers.waiting === 3, 'the server has the first octets');
    const notComplete = () => entries.filter((entry) => entry.message === 'policy request not complete in time; closing the connection without a reply');
    await timers.advance(9_999);
    assert.deepEqual([notComplete().length, server.connections], [0, 1], 'still open 1 ms before the arrival timeout');
    await timers.advance(1);
    assert.deepEqual(notComplete().map((entry) => [entry.level, entry.fields.arrivalTimeoutMs, entry.fields.unfinishedBytes]), [['warn', 10_000, 35]]);
    assert.equal(await client.untilClosed(), '', 'closed without a reply');
  });

  it('closes, without a reply, a connection whose handler has not answered 100 s after the request, not 1 ms before', async () => {
    const timers = new ManualTimers();
    const asked = deferred<void>();
    const { server, address, entries } = await startServer(() => {
      asked.resolve();
      return new Promise<string>(() => undefined);
    }, { timers });
    const client = await Client.connect(address);
    client.request({ instance: 'never', client_address: '203.0.113.9' });
    await asked.promise;
    const late = () => entries.filter((entry) => entry.message === 'policy handler did not answer in time; closing the connection without a reply');
    await timers.advance(99_999);
    assert.deepEqual([late().length, server.connections], [0, 1], 'still waited for 1 ms before the request timeout');
    await timers.advance(1);
    assert.deepEqual(late().map((entry) => [entry.level, entry.fields.timeoutMs, entry.fields.client]), [['warn', 100_000, '203.0.113.9']]);
    assert.equal(await client.untilClosed(), '');
  });

  it('closes a connection idle for 300 s after its last answer, not 1 ms before', async () => {
    const timers = new ManualTimers();
    const { server, address, entries } = await startServer(async () => 'DUNNO', { timers });
    const client = await Client.connect(address);
    client.request({});
    assert.equal(await client.reply(), 'DUNNO');
    const idle = () => entries.filter((entry) => entry.message === 'closing idle policy connection');
    // Idle for longer than the request timeout (100 s): that one bounds a request being handled.
    await timers.advance(299_999);
    assert.deepEqual([idle().length, server.connections], [0, 1], 'still open 1 ms before the idle timeout');
    await timers.advance(1);
    assert.deepEqual(idle().map((entry) => [entry.level, entry.fields.idleTimeoutMs]), [['info', 300_000]]);
    assert.equal(await client.untilClosed(), '');
  });
});

describe('PolicyServer over a UNIX socket', () => {
  const dir = mkdtempSync(join(tmpdir(), 'callout-policy-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('answers requests, sets the socket mode and removes the socket on close', async () => {
    const path = join(dir, 'policy.sock');
    const seen: ConnectionInfo[] = [];
    const { server, address } = await startServer(
      async (_attributes, conn) => {
        seen.push(conn);
        return 'DUNNO';
      },
      { listen: path },
    );
    assert.equal(address, path);
    assert.ok(lstatSync(path).isSocket(), 'lstatSync(path).isSocket()');
    assert.equal(lstatSync(path).mode & 0o777, 0o660);
    const client = await Client.connect(path);
    client.send(FIXTURE);
    client.request({ instance: '2' });
    assert.deepEqual([await client.reply(), await client.reply()], ['DUNNO', 'DUNNO']);
    assert.equal(seen[0]?.remote, `unix:${path}`);
    client.close();
    await server.close();
    assert.equal(existsSync(path), false);
  });

  it('honours socketMode', async () => {
    const path = join(dir, 'mode.sock');
    const { server } = await startServer(async () => 'DUNNO', { listen: path, socketMode: 0o600 });
    assert.equal(lstatSync(path).mode & 0o777, 0o600);
    await server.close();
  });

  it('warns when socketMode lets every local user connect, and not for the default', async () => {
    const open = join(dir, 'open.sock');
    const { server, entries } = await startServer(async () => 'DUNNO', { listen: open, socketMode: 0o666 });
    assert.equal(lstatSync(open).mode & 0o777, 0o666);
    const warned = entries.filter((entry) => entry.level === 'warn');
    assert.equal(warned.length, 1, JSON.stringify(entries));
    assert.deepEqual(warned[0]?.fields, { listen: open, socketMode: '0666' });
    assert.match(warned[0]?.message ?? '', /^policy socket is writable by all users: any local user can have callout probe addresses/);
    await server.close();
    const { server: closed, entries: quiet } = await startServer(async () => 'DUNNO', { listen: join(dir, 'closed.sock') });
    assert.deepEqual(quiet.filter((entry) => entry.level === 'warn'), []);
    await closed.close();
  });

  it('replaces a stale socket left by a process that died', async () => {
    const path = join(dir, 'stale.sock');
    const child = spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => process.exit(0))`]);
    assert.equal(child.status, 0);
    assert.ok(lstatSync(path).isSocket(), 'the dead process left its socket behind');
    const { server } = await startServer(async () => 'DUNNO', { listen: path });
    const client = await Client.connect(path);
    client.request({});
    assert.equal(await client.reply(), 'DUNNO');
    client.close();
    await server.close();
  });

  it('refuses a path that is not a socket, and leaves it alone', async () => {
    const path = join(dir, 'regular-file');
    writeFileSync(path, 'keep me');
    const server = new PolicyServer({ listen: path, handler: async () => 'DUNNO', log: recordingLog().log });
    await assert.rejects(server.listen(), /not a socket/);
    await server.close();
    assert.equal(readFileSync(path, 'utf8'), 'keep me');
  });

  it('refuses a socket another server is listening on', async () => {
    const path = join(dir, 'live.sock');
    const { server: live } = await startServer(async () => 'DUNNO', { listen: path });
    const second = new PolicyServer({ listen: path, handler: async () => 'DUNNO', log: recordingLog().log });
    await assert.rejects(second.listen(), /another server is listening/);
    await second.close();
    const client = await Client.connect(path);
    client.request({});
    assert.equal(await client.reply(), 'DUNNO');
    client.close();
    await live.close();
  });

  it('refuses, and leaves alone, the socket of a live server too busy to take a connection', async () => {
    const path = join(dir, 'busy.sock');
    // A server with a backlog of one that stops itself once it listens: the connections below
    // fill its backlog, and the next connect fails with EAGAIN, not ECONNREFUSED.
    const busy = spawn(process.execPath, ['-e', `require('net').createServer().listen({ path: ${JSON.stringify(path)}, backlog: 1 }, () => process.kill(process.pid, 'SIGSTOP'))`]);
    const held: net.Socket[] = [];
    try {
      // Stopped (state T in /proc), so it listens and accepts nothing more.
      const stopped = (): boolean => busy.pid !== undefined && /\) T /.test(readFileSync(`/proc/${busy.pid}/stat`, 'utf8'));
      assert.ok(await until(stopped), 'the busy server listens and has stopped');
      while (true) {
        const outcome = await new Promise<string>((resolve) => {
          const socket = net.connect(path);
          socket.once('connect', () => resolve('connected'));
          socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? String(err)));
          held.push(socket);
        });
        if (outcome !== 'connected') {
          assert.equal(outcome, 'EAGAIN');
          break;
        }
        assert.ok(held.length < 10, 'the backlog fills');
      }
      const server = new PolicyServer({ listen: path, handler: async () => 'DUNNO', log: recordingLog().log });
      await assert.rejects(server.listen(), (err: unknown) => err instanceof ConfigError && /cannot tell whether the server there is gone .*EAGAIN/.test(err.message));
      await server.close();
      assert.ok(lstatSync(path).isSocket(), 'the busy server keeps its socket');
    } finally {
      for (const socket of held) socket.destroy();
      busy.kill('SIGKILL');
    }
  });
});
