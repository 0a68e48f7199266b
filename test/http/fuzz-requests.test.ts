// The metrics listener asked anything a client on its socket could send, over a real socket:
// any method, any request target (a query, a fragment, percent-escapes, an absolute URI, '*'),
// odd header lines, too long a head. Each request gets an answer of its own (the page, 404,
// 405, or Node's 4xx for what is no HTTP), never a 500, and the listener goes on serving.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import type { Server } from 'node:http';
import fc from 'fast-check';
import { closeMetricsServer, startMetricsServer } from '../../src/http/metrics.js';
import { captureLog } from '../support/log-capture.js';

const source = { metricsText: async () => 'callout_up 1\n', contentType: 'text/plain; version=0.0.4', healthy: async () => true };
const { lines: logs, log } = captureLog();
let server: Server;
let port: number;

before(async () => {
  const started = await startMetricsServer('127.0.0.1:0', source, { log });
  server = started.server;
  port = Number(started.address.slice(started.address.lastIndexOf(':') + 1));
});
after(() => closeMetricsServer(server));

/** What the listener sends back to `head` on a connection of its own, until it closes it. */
async function exchange(head: string): Promise<string> {
  const socket = net.connect(port, '127.0.0.1');
  let received = '';
  socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
  socket.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.end(head, 'latin1');
  await closed;
  return received;
}

const method = fc.oneof({ weight: 6, arbitrary: fc.constantFrom('GET', 'GET', 'GET', 'HEAD', 'POST', 'OPTIONS', 'PUT', 'DELETE', 'TRACE', 'CONNECT', 'PATCH') }, fc.constantFrom('get', 'BREW', ''), fc.stringMatching(/^[A-Z]{1,8}$/));
const target = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom('/metrics', '/health', '/metrics?', '/health?x=1#y', '/metrics#', '//metrics', '/Metrics', '/health/', '/%2e%2e/health', '/%zz', '*', 'http://127.0.0.1/metrics', '/metrics?%00', '/\u00e9', '/'.repeat(9000)) },
  { weight: 3, arbitrary: fc.string({ maxLength: 30 }).map((path) => `/${path.replace(/ /g, '')}`) },
  fc.string({ unit: 'binary-ascii', maxLength: 30 }).map((path) => `/${path}`),
);
const headerLine = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('Connection: close', 'Accept: text/plain', 'Transfer-Encoding: chunked', 'Content-Length: 5', 'Content-Length: -1', 'Expect: 100-continue', ' folded', 'X: \u00ff', 'NoColon', `X: ${'y'.repeat(20_000)}`, 'Accept: */*', 'User-Agent: Prometheus/2.45', 'X-Forwarded-For: 192.0.2.1') },
  fc.string({ unit: 'binary-ascii', maxLength: 20 }),
);

describe('metrics listener fuzzed', () => {
  it('answers any request head with a status of its own, never a 500, and keeps answering', async () => {
    await fc.assert(
      fc.asyncProperty(method, target, fc.array(headerLine, { maxLength: 4 }), fc.constantFrom('HTTP/1.1', 'HTTP/1.1', 'HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', ''), async (m, t, headers, version) => {
        const head = `${m} ${t} ${version}\r\n${['Host: 127.0.0.1', ...headers, 'Connection: close'].map((line) => `${line}\r\n`).join('')}\r\n`;
        const answer = await exchange(head);
        const status = /^HTTP\/1\.1 (\d{3}) /.exec(answer)?.[1];
        // Node closes some heads it cannot read without a word (a version it does not speak).
        if (status === undefined) assert.equal(answer, '', `${JSON.stringify(head.slice(0, 80))}: ${JSON.stringify(answer.slice(0, 80))}`);
        else assert.ok(!status.startsWith('5') || status === '505', `${status} for ${JSON.stringify(head.slice(0, 80))}`);
      }),
      { numRuns: 300 },
    );
    assert.match(await exchange('GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 200 /);
    assert.deepEqual(logs.filter((line) => /metrics (request|listener) failed/.test(String(line.msg))), [], 'a request that failed');
  });
});
