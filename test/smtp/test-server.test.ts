import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startSmtpServer } from '../support/smtp-server.js';

/** Sends raw bytes and collects what the server says until it closes the connection. */
function converse(port: number, host: string, payload: Buffer | string): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    let received = '';
    socket.on('data', (chunk) => {
      received += chunk.toString('latin1');
    });
    socket.on('error', () => {});
    socket.on('close', () => resolve(received));
    socket.on('connect', () => socket.write(payload));
  });
}

describe('test SMTP server', () => {
  it('survives binary garbage and an over-long line, and keeps serving', async (t) => {
    const server = await startSmtpServer();
    t.after(() => server.close());
    const garbage = Buffer.concat([Buffer.from([0, 255, 13, 10, 0x80, 0xfe, 10]), Buffer.alloc(5000, 0x41)]);
    const reply = await converse(server.port, server.host, garbage);
    assert.match(reply, /^220 /);
    assert.match(reply, /502 5\.5\.2/);
    assert.match(reply, /500 5\.5\.0 Error: line too long\r\n$/);
    const polite = await converse(server.port, server.host, 'EHLO x\r\nQUIT\r\n');
    assert.match(polite, /221 2\.0\.0 Bye\r\n$/);
    assert.equal(server.connectionCount, 2);
  });

  it('answers pipelined commands in order and survives a throwing handler', async (t) => {
    const server = await startSmtpServer({
      script: {
        vrfy: () => {
          throw new Error('script bug');
        },
      },
    });
    t.after(() => server.close());
    const reply = await converse(server.port, server.host, 'HELO x\r\nVRFY y\r\nNOOP\r\nQUIT\r\n');
    assert.deepEqual(reply.split('\r\n').slice(1, 5).map((line) => line.slice(0, 3)), ['250', '451', '502', '221']);
    assert.deepEqual(server.sessions[0]?.commands, ['HELO x', 'VRFY y', 'NOOP', 'QUIT']);
  });

  it('close() ends connections that are still open', async () => {
    const server = await startSmtpServer({ script: { greeting: () => ({ silent: true }) } });
    const closed = converse(server.port, server.host, '');
    while (server.connectionCount === 0) await new Promise((resolve) => setImmediate(resolve));
    await server.close();
    assert.equal(await closed, '');
  });
});
