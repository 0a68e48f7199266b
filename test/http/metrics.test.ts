// The metrics listener's own limits, over real sockets: a few connections at a time, each with
// a short time to send its request, so that it can never take the descriptors the policy
// listener needs.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startMetricsServer } from '../../src/http/metrics.js';

const source = { metricsText: async () => 'callout_up 1\n', contentType: 'text/plain; version=0.0.4', healthy: async () => true };

/** Connects and sends an unfinished request head; resolves with the socket and a promise of its end (with what it was sent). */
async function unfinished(address: string): Promise<{ socket: net.Socket; ended: Promise<string> }> {
  const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
  const socket = net.connect(port, host);
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  let received = '';
  socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
  const ended = new Promise<string>((resolve) => socket.once('close', () => resolve(received)));
  socket.on('error', () => undefined);
  socket.write('GET /health HTTP/1.1\r\nHost: x\r\n');
  return { socket, ended };
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([promise, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what} not within ${ms} ms`)), ms).unref())]);
}

describe('metrics listener limits', () => {
  it('closes connections over its limit at once, and requests that do not arrive in time', async () => {
    const { server, address } = await startMetricsServer('127.0.0.1:0', source, { maxConnections: 3, requestTimeoutMs: 300 });
    try {
      const held = await Promise.all([unfinished(address), unfinished(address), unfinished(address)]);
      const extra = await unfinished(address);
      // Closed unanswered at once: the request timeout would have answered it 408 first.
      assert.equal(await within(extra.ended, 1000, 'the connection over the limit closed'), '');
      const answers = await within(Promise.all(held.map((h) => h.ended)), 3000, 'the unfinished requests closed');
      for (const answer of answers) assert.match(answer, /^HTTP\/1\.1 408 /);
      const response = await fetch(`http://${address}/metrics?name[]=callout_up`);
      assert.equal(response.status, 200, 'a query string is ignored');
      assert.equal(await response.text(), 'callout_up 1\n');
      const missing = await fetch(`http://${address}/nothing`);
      assert.equal(missing.status, 404);
      assert.match(await missing.text(), /\/metrics and \/health/);
      const posted = await fetch(`http://${address}/metrics`, { method: 'POST', body: 'x' });
      assert.equal(posted.status, 405);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
