import { describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import fc from 'fast-check';
import { MAX_UNSOLICITED_REPLIES, SmtpClientSession, SmtpSessionMisuseError, type SmtpClientOptions } from '../../src/smtp/client.js';
import type { Dialer } from '../../src/smtp/types.js';
import {
  acceptAll,
  dropAfter,
  dropAfterRset,
  greylistOnce,
  multilineReplies,
  oversizedLine,
  pipelining,
  refuseNullSender,
  rejectEhlo,
  rejectGreeting,
  rejectSecondRcpt,
  silentGreeting,
  startSmtpServer,
  startSmtpServers,
  testCertificate,
  usersOnly,
  type SmtpServerOptions,
  type SmtpTestServer,
} from '../support/smtp-server.js';
import { until } from '../support/wait.js';

const GENEROUS = { connectMs: 5000, greetingMs: 5000, commandMs: 5000, rcptMs: 5000, tlsMs: 5000 };

async function serve(t: TestContext, options: SmtpServerOptions = {}): Promise<SmtpTestServer> {
  const server = await startSmtpServer(options);
  t.after(() => server.close());
  return server;
}

function sessionFor(
  t: TestContext,
  target: { host: string; port: number },
  overrides: Partial<SmtpClientOptions> = {},
): SmtpClientSession {
  const session = new SmtpClientSession({
    host: target.host,
    port: target.port,
    heloName: 'callout.example',
    timeouts: GENEROUS,
    tls: 'off',
    ...overrides,
  });
  t.after(() => session.destroy());
  return session;
}

function sentLines(session: SmtpClientSession): string[] {
  return session.transcript.filter((entry) => entry.dir === 'sent').map((entry) => entry.line);
}

function events(session: SmtpClientSession): string[] {
  return session.transcript.filter((entry) => entry.dir === 'event').map((entry) => entry.line);
}

/** The commands the server got, once a QUIT written without waiting for its 221 has arrived (or after 10 s without it). */
async function commandsUpToQuit(server: SmtpTestServer): Promise<string[] | undefined> {
  await until(() => server.sessions[0]?.commands.at(-1) === 'QUIT');
  return server.sessions[0]?.commands;
}

async function unusedPort(host: string): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, host, resolve));
  const { port } = probe.address() as net.AddressInfo;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

/** A bare server that greets, then calls onLine with each command line: it may write anything, however cut. */
async function rawServer(t: TestContext, host: string, onLine: (line: string, socket: net.Socket) => void): Promise<{ host: string; port: number }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.write('220 mx.callout.test ESMTP\r\n');
    let buffered = '';
    socket.on('data', (chunk) => {
      buffered += chunk.toString('latin1');
      for (let lf = buffered.indexOf('\n'); lf !== -1; lf = buffered.indexOf('\n')) {
        onLine(buffered.slice(0, lf).replace(/\r$/, ''), socket);
        buffered = buffered.slice(lf + 1);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  // The sockets first: a client left open (a failed assertion) must not hold close() up.
  t.after(() => {
    for (const socket of sockets) socket.destroy();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { host, port: (server.address() as net.AddressInfo).port };
}

/**
 * A bare STARTTLS server on 127.0.0.1, closed after the test, for what test/support/smtp-server
 * does not script: it greets, offers STARTTLS, answers it with `ready` in one write, and hands the
 * server end of the TLS session (with `tlsOptions`, the test certificate by default) to `secured`.
 */
async function bareStartTls(
  t: TestContext,
  ready: string,
  tlsOptions: tls.TLSSocketOptions,
  secured: (secure: tls.TLSSocket, plain: net.Socket) => void,
): Promise<{ host: string; port: number }> {
  const secureContext = tls.createSecureContext(testCertificate());
  const server = net.createServer((plain) => {
    plain.on('error', () => undefined);
    plain.write('220 mx.callout.test ESMTP\r\n');
    const onLine = (chunk: Buffer): void => {
      if (!chunk.toString('latin1').startsWith('STARTTLS')) {
        plain.write('250-mx.callout.test\r\n250 STARTTLS\r\n');
        return;
      }
      plain.off('data', onLine);
      plain.write(ready);
      const secure = new tls.TLSSocket(plain, { isServer: true, secureContext, ...tlsOptions });
      secure.on('error', () => undefined);
      secured(secure, plain);
    };
    plain.on('data', onLine);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { host: '127.0.0.1', port: (server.address() as net.AddressInfo).port };
}

describe('SmtpClientSession dialogue', () => {
  it('runs the whole callout dialogue and records it', async (t) => {
    const server = await serve(t, { script: acceptAll() });
    const session = sessionFor(t, server);
    assert.equal(session.state, 'idle');
    assert.deepEqual(await session.open(), { kind: 'ready' });
    assert.equal(session.state, 'ready');
    assert.equal(session.remoteAddress, '127.0.0.2');
    assert.equal(session.tls, false);
    assert.equal(session.extensions.get('SIZE'), '10240000');
    assert.ok(session.extensions.has('8BITMIME'), 'session.extensions.has(\'8BITMIME\')');

    const mail = await session.mailFrom('');
    assert.deepEqual(mail, { kind: 'reply', reply: { code: 250, enhanced: { klass: 2, subject: 1, detail: 0 }, lines: ['Ok'] } });
    const rcpt = await session.rcptTo('anyone@example.test');
    assert.equal(rcpt.kind === 'reply' && rcpt.reply.code, 250);
    const rset = await session.rset();
    assert.equal(rset.kind === 'reply' && rset.reply.code, 250);
    await session.quit();
    assert.equal(session.state, 'closed');

    assert.deepEqual(sentLines(session), ['EHLO callout.example', 'MAIL FROM:<>', 'RCPT TO:<anyone@example.test>', 'RSET', 'QUIT']);
    assert.deepEqual(server.sessions[0]?.commands, sentLines(session));
    assert.match(session.transcript[0]?.line ?? '', new RegExp(`^connected to 127\\.0\\.0\\.2:${server.port} from 127\\.`));
    assert.deepEqual(session.transcript[1], { at: session.transcript[1]?.at, dir: 'received', line: '220 mx.callout.test ESMTP callout test server' });
    assert.ok(session.transcript.some((entry) => entry.dir === 'received' && entry.line === '221 2.0.0 Bye'), 'session.transcript.some((entry) => entry.dir === \'received\' && entry.line === \'221 2.0.0 Bye\')');
    const times = session.transcript.map((entry) => entry.at);
    assert.deepEqual(times, [...times].sort((a, b) => a - b));
    assert.deepEqual(await session.mailFrom(''), { kind: 'closed', stage: 'mail', detail: 'session already closed (session ended after QUIT)' });
  });

  it('reports 550 5.1.1 for an unknown user and 250 for a known one', async (t) => {
    const server = await serve(t, { script: usersOnly(['alice']) });
    const session = sessionFor(t, server);
    assert.equal((await session.open()).kind, 'ready');
    await session.mailFrom('');
    const unknown = await session.rcptTo('bob@example.test');
    assert.equal(unknown.kind, 'reply');
    if (unknown.kind !== 'reply') return;
    assert.equal(unknown.reply.code, 550);
    assert.deepEqual(unknown.reply.enhanced, { klass: 5, subject: 1, detail: 1 });
    const known = await session.rcptTo('Alice@example.test');
    assert.equal(known.kind === 'reply' && known.reply.code, 250);
    assert.equal(session.state, 'ready');
    await session.quit();
  });

  it('sees greylisting once per recipient, across connections', async (t) => {
    const server = await serve(t, { script: greylistOnce() });
    for (const want of [450, 250]) {
      const session = sessionFor(t, server);
      await session.open();
      await session.mailFrom('');
      const rcpt = await session.rcptTo('carol@example.test');
      assert.equal(rcpt.kind === 'reply' && rcpt.reply.code, want);
      await session.quit();
    }
    assert.equal(server.connectionCount, 2);
  });

  it('gets 550 5.7.1 for the null sender and 250 for a real one', async (t) => {
    const server = await serve(t, { script: refuseNullSender() });
    const session = sessionFor(t, server);
    await session.open();
    const nullSender = await session.mailFrom('');
    assert.equal(nullSender.kind === 'reply' && `${nullSender.reply.code} ${nullSender.reply.lines[0]}`, '550 Null sender refused');
    await session.rset();
    const realSender = await session.mailFrom('probe@callout.example');
    assert.equal(realSender.kind === 'reply' && realSender.reply.code, 250);
    await session.quit();
  });

  it('gets 452 for the second RCPT of a transaction', async (t) => {
    const server = await serve(t, { script: rejectSecondRcpt() });
    const session = sessionFor(t, server);
    await session.open();
    await session.mailFrom('');
    const codes: number[] = [];
    for (const address of ['x1@example.test', 'x2@example.test']) {
      const rcpt = await session.rcptTo(address);
      if (rcpt.kind === 'reply') codes.push(rcpt.reply.code);
    }
    await session.rset();
    await session.mailFrom('');
    const fresh = await session.rcptTo('x2@example.test');
    if (fresh.kind === 'reply') codes.push(fresh.reply.code);
    assert.deepEqual(codes, [250, 452, 250]);
    await session.quit();
  });

  it('answers VRFY and sends SMTPUTF8 only when the server offers it', async (t) => {
    const server = await serve(t);
    const session = sessionFor(t, server);
    await session.open();
    const vrfy = await session.vrfy('dave@example.test');
    assert.equal(vrfy.kind === 'reply' && vrfy.reply.code, 252);
    // RFC 5321 §4.1.1.6: VRFY takes the address as a string, without the angle brackets of a path.
    assert.equal(server.sessions[0]?.commands.at(-1), 'VRFY dave@example.test');
    await session.mailFrom('', { smtputf8: true });
    assert.equal(server.sessions[0]?.commands.at(-1), 'MAIL FROM:<> SMTPUTF8');
    await session.quit();
  });

  it('falls back to HELO when EHLO is refused with 500', async (t) => {
    const server = await serve(t, { script: rejectEhlo() });
    const session = sessionFor(t, server);
    assert.deepEqual(await session.open(), { kind: 'ready' });
    assert.equal(session.extensions.size, 0);
    await session.mailFrom('', { smtputf8: true });
    await session.quit();
    assert.deepEqual(server.sessions[0]?.commands, ['EHLO callout.example', 'HELO callout.example', 'MAIL FROM:<>', 'QUIT']);
    assert.ok(events(session).includes('SMTPUTF8 not advertised: MAIL sent without it'), 'events(session).includes(\'SMTPUTF8 not advertised: MAIL sent without it\')');
  });

  it('is rejected by a 5xx to the HELO it falls back to, and says QUIT', async (t) => {
    const server = await serve(t, { script: { ...rejectEhlo(), helo: () => '550 5.7.1 Go away' } });
    const session = sessionFor(t, server);
    const opened = await session.open();
    assert.equal(opened.kind === 'rejected' && `${opened.stage} ${opened.reply.code}`, 'helo 550');
    assert.equal(session.state, 'closed');
    assert.deepEqual(await commandsUpToQuit(server), ['EHLO callout.example', 'HELO callout.example', 'QUIT']);
  });

  it('is rejected by a 4xx to EHLO and does not try HELO: only a 5xx says EHLO is unknown', async (t) => {
    const server = await serve(t, { script: { ehlo: () => '450 4.7.1 Try again later', helo: () => '250 mx.callout.test' } });
    const session = sessionFor(t, server);
    const opened = await session.open();
    assert.equal(opened.kind === 'rejected' && `${opened.stage} ${opened.reply.code}`, 'ehlo 450');
    assert.equal(session.state, 'closed');
    assert.deepEqual(await commandsUpToQuit(server), ['EHLO callout.example', 'QUIT']);
  });

  it('reads multi-line greetings and replies', async (t) => {
    const server = await serve(t, { script: multilineReplies() });
    const session = sessionFor(t, server);
    assert.equal((await session.open()).kind, 'ready');
    assert.deepEqual(
      session.transcript.filter((entry) => entry.dir === 'received' && entry.line.startsWith('220')).map((entry) => entry.line),
      ['220-mx.callout.test ESMTP', '220-Unsolicited bulk mail is prohibited here.', '220 mx.callout.test ready'],
    );
    await session.mailFrom('');
    const rcpt = await session.rcptTo('erin@example.test');
    assert.deepEqual(rcpt, {
      kind: 'reply',
      reply: { code: 250, enhanced: { klass: 2, subject: 1, detail: 5 }, lines: ['Recipient', 'looks', 'fine'] },
    });
    await session.quit();
  });

  it('drops a repeated banner and replies stacked behind the answer, so replies never shift', async (t) => {
    const server = await serve(t, {
      script: {
        ...usersOnly(['alice']),
        greeting: () => '220 mx.callout.test ESMTP\r\n220 mx.callout.test ESMTP again',
        mail: () => '250 2.1.0 Ok\r\n250 2.1.0 stray',
      },
    });
    const session = sessionFor(t, server);
    assert.equal((await session.open()).kind, 'ready');
    assert.ok(session.extensions.has('SIZE'), 'session.extensions.has(\'SIZE\')');
    await session.mailFrom('');
    const rcpt = await session.rcptTo('bob@example.test');
    assert.equal(rcpt.kind === 'reply' && rcpt.reply.code, 550);
    assert.ok(events(session).includes('ignored unsolicited reply 250'), 'events(session).includes(\'ignored unsolicited reply 250\')');
    await session.quit();
  });

  it('fails a command rather than read its reply behind part of a line nobody asked for', async (t) => {
    // "250 " trails the reply to MAIL: the 550 to RCPT would complete it as "250 550 5.1.1 ...".
    const server = await rawServer(t, '127.0.0.5', (line, socket) => {
      socket.write(line.startsWith('EHLO') ? '250 mx.callout.test\r\n' : line.startsWith('MAIL') ? '250 2.1.0 Ok\r\n250 ' : '550 5.1.1 No such user\r\n');
    });
    const session = sessionFor(t, server);
    assert.deepEqual(await session.open(), { kind: 'ready' });
    const mail = await session.mailFrom('');
    assert.equal(mail.kind === 'reply' && mail.reply.code, 250);
    assert.deepEqual(await session.rcptTo('x@example.test'), { kind: 'error', stage: 'rcpt', detail: 'the server sent part of a line nobody asked for before RCPT' });
    assert.equal(session.state, 'closed');
    assert.deepEqual(sentLines(session), ['EHLO callout.example', 'MAIL FROM:<>']);
  });

  it('takes a single unasked octet as part of a line nobody asked for', async (t) => {
    const server = await rawServer(t, '127.0.0.5', (line, socket) => {
      socket.write(line.startsWith('EHLO') ? '250 mx.callout.test\r\n' : line.startsWith('MAIL') ? '250 2.1.0 Ok\r\n2' : '550 5.1.1 No such user\r\n');
    });
    const session = sessionFor(t, server);
    assert.deepEqual(await session.open(), { kind: 'ready' });
    await session.mailFrom('');
    assert.deepEqual(await session.rcptTo('x@example.test'), { kind: 'error', stage: 'rcpt', detail: 'the server sent part of a line nobody asked for before RCPT' });
    assert.deepEqual(sentLines(session), ['EHLO callout.example', 'MAIL FROM:<>']);
  });

  it('closes on a flood of unsolicited replies', async (t) => {
    const server = await serve(t, { script: { mail: () => ['250 Ok', ...Array.from({ length: 20 }, () => '250 again')].join('\r\n') } });
    const session = sessionFor(t, server);
    await session.open();
    const mail = await session.mailFrom('');
    assert.equal(mail.kind === 'reply' && mail.reply.code, 250);
    const rcpt = await session.rcptTo('x@example.test');
    // The protocol error that closed the session, not a hang-up of the server's (which a caller reconnects after).
    assert.equal(rcpt.kind, 'error');
    assert.ok(events(session).some((line) => line.includes('more than 10 unsolicited replies')), 'events(session).some((line) => line.includes(\'more than 10 unsolicited replies\'))');
  });

  it('bears exactly MAX_UNSOLICITED_REPLIES unsolicited replies', async (t) => {
    const server = await serve(t, { script: { mail: () => ['250 Ok', ...Array.from({ length: MAX_UNSOLICITED_REPLIES }, () => '250 again')].join('\r\n') } });
    const session = sessionFor(t, server);
    await session.open();
    await session.mailFrom('');
    const rcpt = await session.rcptTo('x@example.test');
    assert.equal(rcpt.kind === 'reply' && rcpt.reply.code, 250, events(session).join(' | '));
    assert.equal(events(session).filter((line) => line === 'ignored unsolicited reply 250').length, MAX_UNSOLICITED_REPLIES);
    await session.quit();
  });

  it('a refused RSET leaves the transaction open', async (t) => {
    const server = await serve(t, { script: { rset: () => '502 5.5.2 Error: command not recognized' } });
    const session = sessionFor(t, server);
    await session.open();
    await session.mailFrom('');
    assert.equal(session.inTransaction, true);
    const rset = await session.rset();
    assert.equal(rset.kind === 'reply' && rset.reply.code, 502);
    assert.equal(session.inTransaction, true, 'the server still holds the MAIL');
    await session.quit();
  });

  it('a refused MAIL leaves the state as it was: a nested MAIL refused keeps the transaction open (RFC 5321 §4.1.4)', async (t) => {
    let mails = 0;
    const server = await serve(t, { script: { mail: () => (++mails === 1 ? '250 2.1.0 Ok' : '503 5.5.1 Error: nested MAIL command') } });
    const session = sessionFor(t, server);
    await session.open();
    await session.mailFrom('');
    const nested = await session.mailFrom('');
    assert.equal(nested.kind === 'reply' && nested.reply.code, 503);
    assert.equal(session.inTransaction, true, 'the server still holds the first MAIL');
    await session.quit();
  });

  it('returns a 421 reply, then is closed', async (t) => {
    const server = await serve(t, { script: { rcpt: () => '421 4.7.0 mx.callout.test Error: too many errors' } });
    const session = sessionFor(t, server);
    await session.open();
    await session.mailFrom('');
    const rcpt = await session.rcptTo('x@example.test');
    assert.equal(rcpt.kind === 'reply' && rcpt.reply.code, 421);
    assert.equal(session.state, 'closed');
    assert.equal((await session.rset()).kind, 'closed');
  });
});

describe('SmtpClientSession failures', () => {
  it('reports an over-long reply line as a protocol error and closes cleanly', async (t) => {
    const server = await serve(t, { script: oversizedLine('ehlo') });
    const session = sessionFor(t, server);
    const opened = await session.open();
    assert.equal(opened.kind, 'error');
    assert.equal(opened.kind === 'error' && opened.stage, 'ehlo');
    assert.match(opened.kind === 'error' ? opened.detail : '', /^line-too-long/);
    assert.equal(session.state, 'closed');
    assert.ok(session.transcript.every((entry) => entry.line.length < 2048), 'session.transcript.every((entry) => entry.line.length < 2048)');
  });

  it('times out on a silent greeting (tarpit)', async (t) => {
    const server = await serve(t, { script: silentGreeting() });
    const session = sessionFor(t, server, { timeouts: { ...GENEROUS, greetingMs: 200 } });
    assert.deepEqual(await session.open(), { kind: 'timeout', stage: 'greeting', afterMs: 200 });
    assert.equal(session.state, 'closed');
    assert.ok(events(session).includes('timeout at greeting after 200 ms'), 'events(session).includes(\'timeout at greeting after 200 ms\')');
  });

  it('lets the deadline win over longer stage timeouts', async (t) => {
    const server = await serve(t, { script: silentGreeting() });
    // A second: the connection must be made within it (a loaded machine may take a while) for the greeting to be the stage that times out.
    const session = sessionFor(t, server, { timeouts: { ...GENEROUS, greetingMs: 30_000 }, deadline: performance.now() + 1000 });
    const opened = await session.open();
    assert.equal(opened.kind, 'timeout');
    assert.equal(opened.kind === 'timeout' && opened.stage, 'greeting');
    assert.ok(opened.kind === 'timeout' && opened.afterMs <= 1000, 'opened.kind === \'timeout\' && opened.afterMs <= 1000');
    assert.equal(opened.kind === 'timeout' && opened.cutShortMs! + opened.afterMs, 30_000, 'the deadline ended the wait, with the rest of the greeting timer left');
    assert.ok(events(session).some((line) => /^timeout at greeting after \d+ ms \(overall deadline\)$/.test(line)), 'events(session).some((line) => /^timeout at greeting after \\d+ ms \\(overall deadline\\)$/.test(line))');
  });

  it('times out at once when the deadline has passed', async (t) => {
    const server = await serve(t);
    const session = sessionFor(t, server, { deadline: performance.now() - 1 });
    assert.deepEqual(await session.open(), { kind: 'timeout', stage: 'connect', afterMs: 0, cutShortMs: GENEROUS.connectMs });
  });

  it('the deadline is on the monotonic clock: a wall clock stepped an hour ahead mid-dialogue (NTP, a resumed VM) ends no wait', async (t) => {
    const realNow = Date.now.bind(Date);
    // The step comes as the server greets: every wait from then on is measured across it.
    const server = await serve(t, { script: { greeting: () => {
      t.mock.method(Date, 'now', () => realNow() + 3_600_000);
      return '220 mx.callout.test ESMTP';
    } } });
    const session = sessionFor(t, server, { deadline: performance.now() + 5000 });
    assert.deepEqual(await session.open(), { kind: 'ready' }, events(session).join(' | '));
    assert.equal((await session.mailFrom('')).kind, 'reply');
  });

  it('is rejected by a 421 greeting and sends no QUIT', async (t) => {
    const server = await serve(t, { script: rejectGreeting(421) });
    const session = sessionFor(t, server);
    const opened = await session.open();
    assert.equal(opened.kind, 'rejected');
    assert.equal(opened.kind === 'rejected' && `${opened.stage} ${opened.reply.code}`, 'greeting 421');
    assert.equal(session.state, 'closed');
    assert.deepEqual(sentLines(session), []);
  });

  it('is rejected by a 554 greeting and says QUIT', async (t) => {
    const server = await serve(t, { script: rejectGreeting(554) });
    const session = sessionFor(t, server);
    const opened = await session.open();
    assert.equal(opened.kind === 'rejected' && `${opened.stage} ${opened.reply.code}`, 'greeting 554');
    assert.equal(session.state, 'closed');
    assert.deepEqual(await commandsUpToQuit(server), ['QUIT']);
  });

  it('does not wait for the reply to its QUIT after a refusal (Postfix smtp_skip_quit_response), so the next exchanger is asked at once', async (t) => {
    const server = await serve(t, { script: { ...rejectGreeting(554), quit: () => ({ silent: true, delayMs: 3000 }) } });
    const session = sessionFor(t, server);
    const started = Date.now();
    const opened = await session.open();
    assert.equal(opened.kind === 'rejected' && `${opened.stage} ${opened.reply.code}`, 'greeting 554');
    // Waiting for the 221 would take the command timeout (5 s); half of it leaves room for a loaded machine.
    assert.ok(Date.now() - started < GENEROUS.commandMs / 2, `open() took ${Date.now() - started} ms, waiting for a 221 that never came`);
    assert.equal(session.state, 'closed');
    assert.deepEqual(sentLines(session), ['QUIT']);
  });

  it('reports a connection dropped mid-dialogue, then answers closed at once', async (t) => {
    const server = await serve(t, { script: dropAfter('rcpt') });
    const session = sessionFor(t, server);
    await session.open();
    await session.mailFrom('');
    const rcpt = await session.rcptTo('x@example.test');
    assert.equal(rcpt.kind, 'closed');
    assert.equal(rcpt.kind === 'closed' && rcpt.stage, 'rcpt');
    assert.equal(session.state, 'closed');
    const after = await session.mailFrom('');
    assert.equal(after.kind === 'closed' && after.detail.startsWith('session already closed'), true);
    await session.quit();
  });

  it('notices a server that closes after answering RSET', async (t) => {
    const server = await serve(t, { script: { ...usersOnly([]), ...dropAfterRset() } });
    const session = sessionFor(t, server);
    await session.open();
    await session.mailFrom('');
    await session.rcptTo('random-1234@example.test');
    const rset = await session.rset();
    assert.equal(rset.kind === 'reply' && rset.reply.code, 250);
    const mail = await session.mailFrom('');
    assert.equal(mail.kind === 'closed' && mail.stage, 'mail');
  });

  it('reports a refused connection as closed at connect', async (t) => {
    const port = await unusedPort('127.0.0.2');
    const session = sessionFor(t, { host: '127.0.0.2', port });
    const opened = await session.open();
    assert.equal(opened.kind, 'closed');
    assert.equal(opened.kind === 'closed' && opened.stage, 'connect');
    assert.match(opened.kind === 'closed' ? opened.detail : '', /^ECONNREFUSED/);
  });

  it('times out at connect when the connection never completes', async (t) => {
    const neverConnects: Dialer = () => new net.Socket();
    const session = sessionFor(t, { host: '127.0.0.2', port: 25 }, { dialer: neverConnects, timeouts: { ...GENEROUS, connectMs: 100 } });
    assert.deepEqual(await session.open(), { kind: 'timeout', stage: 'connect', afterMs: 100 });
  });

  it('reports a dialer that throws as closed at connect', async (t) => {
    const broken: Dialer = () => {
      throw Object.assign(new Error('bad local address'), { code: 'EADDRNOTAVAIL' });
    };
    const session = sessionFor(t, { host: '127.0.0.2', port: 25 }, { dialer: broken });
    assert.deepEqual(await session.open(), { kind: 'closed', stage: 'connect', detail: 'EADDRNOTAVAIL: bad local address' });
  });

  it('uses the injected dialer', async (t) => {
    const server = await serve(t);
    const dialed: string[] = [];
    const counting: Dialer = (options) => {
      dialed.push(`${options.host}:${options.port}/${options.timeoutMs}`);
      return net.connect({ host: options.host, port: options.port });
    };
    const session = sessionFor(t, server, { dialer: counting });
    assert.equal((await session.open()).kind, 'ready');
    await session.quit();
    assert.deepEqual(dialed, [`127.0.0.2:${server.port}/5000`]);
  });

  it('refuses CR/LF in an address and sends nothing', async (t) => {
    const server = await serve(t);
    const session = sessionFor(t, server);
    await session.open();
    await session.mailFrom('');
    const rcpt = await session.rcptTo('x@example.test>\r\nDATA');
    assert.equal(rcpt.kind, 'error');
    assert.equal(rcpt.kind === 'error' && rcpt.stage, 'rcpt');
    assert.equal(session.state, 'closed');
    assert.deepEqual(server.sessions[0]?.commands, ['EHLO callout.example', 'MAIL FROM:<>']);
  });

  it('refuses a HELO name with CR/LF', async (t) => {
    const server = await serve(t);
    const session = sessionFor(t, server, { heloName: 'x\r\nMAIL FROM:<a@b>' });
    const opened = await session.open();
    assert.equal(opened.kind === 'error' && opened.stage, 'ehlo');
    assert.equal(session.state, 'closed');
    assert.deepEqual(sentLines(session), []);
  });

  it('throws on misuse: a command before open() or while another is outstanding', async (t) => {
    const server = await serve(t, { script: { mail: () => ({ reply: '250 Ok', delayMs: 50 }) } });
    const session = sessionFor(t, server);
    await assert.rejects(session.rcptTo('x@example.test'), SmtpSessionMisuseError);
    await session.open();
    const first = session.mailFrom('');
    await assert.rejects(session.rcptTo('x@example.test'), SmtpSessionMisuseError);
    assert.equal((await first).kind, 'reply');
    await session.quit();
  });

  it('destroy() answers an outstanding command with closed', async (t) => {
    const server = await serve(t, { script: { rcpt: () => ({ silent: true }) } });
    const session = sessionFor(t, server);
    await session.open();
    await session.mailFrom('');
    const pending = session.rcptTo('x@example.test');
    session.destroy();
    assert.deepEqual(await pending, { kind: 'closed', stage: 'rcpt', detail: 'session destroyed by caller' });
  });
});

describe('SmtpClientSession STARTTLS', () => {
  it('upgrades opportunistically and says EHLO again over TLS', async (t) => {
    const server = await serve(t, { tls: testCertificate() });
    const session = sessionFor(t, server, { tls: 'opportunistic' });
    assert.deepEqual(await session.open(), { kind: 'ready' });
    assert.equal(session.tls, true);
    assert.ok(!session.extensions.has('STARTTLS'), '!session.extensions.has(\'STARTTLS\')');
    assert.ok(events(session).some((line) => /^TLS established \(TLSv1\.[23], .+, certificate not verified: /.test(line)), 'events(session).some((line) => /^TLS established \\(TLSv1\\.[23], .+, certificate not verified: /.t...');
    await session.mailFrom('');
    const rcpt = await session.rcptTo('x@example.test');
    assert.equal(rcpt.kind === 'reply' && rcpt.reply.code, 250);
    await session.quit();
    assert.equal(server.sessions[0]?.tls, true);
    assert.deepEqual(server.sessions[0]?.commands, [
      'EHLO callout.example',
      'STARTTLS',
      'EHLO callout.example',
      'MAIL FROM:<>',
      'RCPT TO:<x@example.test>',
      'QUIT',
    ]);
  });

  it('names the server in SNI by a host name only, never by an address or an address literal (RFC 6066 §3)', async (t) => {
    const credentials = tls.createSecureContext(testCertificate());
    const named: string[] = [];
    // One that records the name each client hello asks for.
    const sni = {
      SNICallback: (name: string, done: (err: Error | null, context: tls.SecureContext) => void) => {
        named.push(name);
        done(null, credentials);
      },
    };
    const { port } = await bareStartTls(t, '220 2.0.0 Ready to start TLS\r\n', sni, (secure) => secure.on('data', () => secure.write('250 mx.callout.test\r\n')));
    for (const servername of [undefined, '127.0.0.1', '[127.0.0.1]', '[IPv6:::1]', 'mx.callout.test']) {
      const session = sessionFor(t, { host: '127.0.0.1', port }, { tls: 'required', ...(servername === undefined ? {} : { tlsOptions: { servername } }) });
      assert.deepEqual(await session.open(), { kind: 'ready' }, String(servername));
      assert.equal(session.tls, true);
      session.destroy();
    }
    assert.deepEqual(named, ['mx.callout.test']);
  });

  it('discards replies injected in clear behind the 220 to STARTTLS', async (t) => {
    const server = await serve(t, {
      tls: testCertificate(),
      script: { starttls: () => '220 2.0.0 Ready to start TLS\r\n250 injected in clear' },
    });
    const session = sessionFor(t, server, { tls: 'opportunistic' });
    assert.deepEqual(await session.open(), { kind: 'ready' });
    assert.equal(session.tls, true);
    assert.ok(events(session).includes('ignored unsolicited reply 250'), 'events(session).includes(\'ignored unsolicited reply 250\')');
    assert.ok(session.extensions.has('SMTPUTF8'), 'session.extensions.has(\'SMTPUTF8\')');
    await session.quit();
  });

  it('discards part of a line sent in clear behind the 220 to STARTTLS: it does not begin the first reply over TLS (RFC 3207 §4.2)', async (t) => {
    // One write, so that the unfinished "250-" line reaches the client with the 220.
    const { port } = await bareStartTls(t, '220 2.0.0 Ready to start TLS\r\n250-injected', {}, (secure) => secure.on('data', () => secure.write('250 mx.callout.test\r\n')));
    const session = sessionFor(t, { host: '127.0.0.1', port }, { tls: 'required', timeouts: { ...GENEROUS, commandMs: 1000 } });
    assert.deepEqual(await session.open(), { kind: 'ready' });
    assert.equal(session.tls, true);
    const received = session.transcript.filter((entry) => entry.dir === 'received').map((entry) => entry.line);
    assert.equal(received.at(-1), '250 mx.callout.test');
    session.destroy();
  });

  it('survives a deadline that ends as the TLS handshake completes: the EHLO over TLS times out (regression: SIGSEGV)', async (t) => {
    const server = await serve(t, { tls: testCertificate() });
    // The monotonic clock jumps past the deadline inside the client's secureConnect callback.
    const realNow = performance.now.bind(performance);
    const realConnect = tls.connect;
    let skipped = 0;
    performance.now = () => realNow() + skipped;
    (tls as { connect: unknown }).connect = (...args: Parameters<typeof tls.connect>): tls.TLSSocket =>
      realConnect(...args).on('secureConnect', () => {
        skipped = 60_000;
      });
    t.after(() => {
      performance.now = realNow;
      (tls as { connect: unknown }).connect = realConnect;
    });
    const session = sessionFor(t, server, { tls: 'required', deadline: performance.now() + 30_000 });
    assert.deepEqual(await session.open(), { kind: 'timeout', stage: 'ehlo', afterMs: 0, cutShortMs: GENEROUS.commandMs });
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(session.state, 'closed');
  });

  it('answers closed, never throws, when the server resets the connection just after the TLS handshake', async (t) => {
    // One that resets the connection in the turn after its handshake (TLS 1.2: no session ticket after it).
    const tls12 = { secureContext: tls.createSecureContext({ ...testCertificate(), maxVersion: 'TLSv1.2' }) };
    const { port } = await bareStartTls(t, '220 2.0.0 Ready to start TLS\r\n', tls12, (secure, plain) => secure.on('secure', () => setImmediate(() => plain.resetAndDestroy())));
    for (let i = 0; i < 20; i++) {
      const session = sessionFor(t, { host: '127.0.0.1', port }, { tls: 'required' });
      // getCipher() read after that turn was null, and open() threw a TypeError the engine took for an internal error.
      const result = await session.open();
      assert.equal(result.kind, 'closed', JSON.stringify(result));
      session.destroy();
    }
  });

  it('keeps no keyword of the EHLO in clear when EHLO over TLS is refused and HELO answers', async (t) => {
    const server = await serve(t, {
      tls: testCertificate(),
      script: { ehlo: (_arg, s) => (s.tls ? '500 5.5.1 Error: command not recognized' : '250-mx.callout.test\r\n250-PIPELINING\r\n250-SMTPUTF8\r\n250 STARTTLS') },
    });
    const session = sessionFor(t, server, { tls: 'opportunistic' });
    assert.deepEqual(await session.open(), { kind: 'ready' });
    assert.equal(session.tls, true);
    assert.equal(session.extensions.size, 0);
    assert.equal(session.pipeline([{ verb: 'MAIL', reversePath: '' }]), false);
    await session.mailFrom('', { smtputf8: true });
    await session.quit();
    assert.deepEqual(server.sessions[0]?.commands, ['EHLO callout.example', 'STARTTLS', 'EHLO callout.example', 'HELO callout.example', 'MAIL FROM:<>', 'QUIT']);
  });

  it('stays in clear with tls off even when STARTTLS is offered', async (t) => {
    const server = await serve(t, { tls: testCertificate() });
    const session = sessionFor(t, server, { tls: 'off' });
    await session.open();
    assert.equal(session.tls, false);
    assert.ok(session.extensions.has('STARTTLS'), 'session.extensions.has(\'STARTTLS\')');
    await session.quit();
    assert.deepEqual(server.sessions[0]?.commands, ['EHLO callout.example', 'QUIT']);
  });

  it('answers tls-unavailable when TLS is required and not offered', async (t) => {
    const server = await serve(t);
    const session = sessionFor(t, server, { tls: 'required' });
    assert.deepEqual(await session.open(), { kind: 'tls-unavailable', detail: 'STARTTLS not advertised' });
    assert.equal(session.state, 'closed');
    assert.deepEqual(await commandsUpToQuit(server), ['EHLO callout.example', 'QUIT']);
  });

  it('answers tls-unavailable when TLS is required and STARTTLS is refused', async (t) => {
    const server = await serve(t, { script: { ehlo: () => '250-mx.callout.test\r\n250 STARTTLS' } });
    const session = sessionFor(t, server, { tls: 'required' });
    const opened = await session.open();
    assert.equal(opened.kind, 'tls-unavailable');
    assert.match(opened.kind === 'tls-unavailable' ? opened.detail : '', /^STARTTLS refused: 454 4\.7\.0/);
  });

  it('carries on in clear when STARTTLS is refused and TLS is opportunistic', async (t) => {
    const server = await serve(t, { script: { ehlo: () => '250-mx.callout.test\r\n250 STARTTLS' } });
    const session = sessionFor(t, server, { tls: 'opportunistic' });
    assert.deepEqual(await session.open(), { kind: 'ready' });
    assert.equal(session.tls, false);
    await session.quit();
  });

  it('is rejected by a 421 to STARTTLS and says no QUIT, even when TLS is opportunistic (RFC 5321 §3.8)', async (t) => {
    const server = await serve(t, { script: { ehlo: () => '250-mx.callout.test\r\n250 STARTTLS', starttls: () => '421 4.3.2 Service shutting down' } });
    const session = sessionFor(t, server, { tls: 'opportunistic' });
    const opened = await session.open();
    assert.equal(opened.kind === 'rejected' && `${opened.stage} ${opened.reply.code}`, 'starttls 421');
    assert.equal(session.state, 'closed');
    assert.deepEqual(sentLines(session), ['EHLO callout.example', 'STARTTLS']);
  });

  it('answers tls-failed when the certificate must verify and does not', async (t) => {
    const server = await serve(t, { tls: testCertificate() });
    const session = sessionFor(t, server, {
      tls: 'required',
      tlsOptions: { rejectUnauthorized: true, servername: 'mx.callout.test' },
    });
    const opened = await session.open();
    assert.equal(opened.kind, 'tls-failed');
    assert.match(opened.kind === 'tls-failed' ? opened.detail : '', /self.signed/i);
    assert.equal(session.state, 'closed');
  });

  it('answers tls-failed when the server says 220 to STARTTLS but speaks no TLS', async (t) => {
    const server = await serve(t, {
      script: { ehlo: () => '250-mx.callout.test\r\n250 STARTTLS', starttls: () => '220 2.0.0 Ready to start TLS' },
    });
    const session = sessionFor(t, server, { tls: 'opportunistic' });
    const opened = await session.open();
    assert.equal(opened.kind, 'tls-failed');
    assert.equal(session.state, 'closed');
    assert.ok(events(session).some((line) => line.startsWith('TLS handshake failed: ')), 'events(session).some((line) => line.startsWith(\'TLS handshake failed: \'))');
  });

  it('times out a TLS handshake the server never completes', async (t) => {
    const server = await serve(t, {
      script: {
        ehlo: () => '250-mx.callout.test\r\n250 STARTTLS',
        starttls: () => '220 2.0.0 Ready to start TLS',
        unknown: () => ({ silent: true }),
      },
    });
    const session = sessionFor(t, server, { tls: 'opportunistic', timeouts: { ...GENEROUS, tlsMs: 200 } });
    const opened = await session.open();
    assert.deepEqual(opened, { kind: 'timeout', stage: 'starttls', afterMs: 200 });
  });
});

describe('startSmtpServers', () => {
  it('binds every host on one common port, each with its own script', async (t) => {
    const hosts = ['127.0.0.2', '127.0.0.3', '127.0.0.4'];
    const servers = await startSmtpServers(hosts, (host) => (host === '127.0.0.3' ? usersOnly(['alice']) : acceptAll()));
    t.after(() => Promise.all(servers.map((server) => server.close())));
    const ports = new Set(servers.map((server) => server.port));
    assert.equal(ports.size, 1);
    const codes: number[] = [];
    for (const server of servers) {
      const session = sessionFor(t, server);
      await session.open();
      await session.mailFrom('');
      const rcpt = await session.rcptTo('bob@example.test');
      if (rcpt.kind === 'reply') codes.push(rcpt.reply.code);
      await session.quit();
      assert.equal(server.connectionCount, 1);
      assert.equal(session.remoteAddress, server.host);
    }
    assert.deepEqual(codes, [250, 550, 250]);
  });
});

describe('SmtpClientSession against random server output', () => {
  it('always ends with a value and a closed or ready session', async (t) => {
    let script: Buffer[] = [];
    const sockets = new Set<net.Socket>();
    const chaos = net.createServer((socket) => {
      sockets.add(socket);
      const answers = [...script];
      const next = (): void => {
        const answer = answers.shift();
        if (answer) socket.write(answer);
      };
      socket.on('error', () => {});
      socket.on('close', () => sockets.delete(socket));
      socket.on('data', next);
      next();
    });
    await new Promise<void>((resolve) => chaos.listen(0, '127.0.0.2', resolve));
    t.after(() => {
      for (const socket of sockets) socket.destroy();
      return new Promise<void>((resolve) => chaos.close(() => resolve()));
    });
    const { port } = chaos.address() as net.AddressInfo;
    const reply = fc.oneof(
      fc.uint8Array({ maxLength: 64 }).map((bytes) => Buffer.from(bytes)),
      fc
        .tuple(fc.constantFrom('220', '250', '221', '421', '450', '550', '999', '25'), fc.constantFrom(' ', '-', ''), fc.string({ maxLength: 20 }), fc.constantFrom('\r\n', '\n', ''))
        .map(([code, sep, text, eol]) => Buffer.from(`${code}${sep}${text}${eol}`)),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(reply, { maxLength: 8 }), async (answers) => {
        script = answers;
        const session = new SmtpClientSession({
          host: '127.0.0.2',
          port,
          heloName: 'callout.example',
          timeouts: { connectMs: 2000, greetingMs: 150, commandMs: 150, rcptMs: 150, tlsMs: 150 },
          tls: 'opportunistic',
        });
        const opened = await session.open();
        assert.ok(['ready', 'rejected', 'timeout', 'closed', 'error', 'tls-failed', 'tls-unavailable'].includes(opened.kind), '[\'ready\', \'rejected\', \'timeout\', \'closed\', \'error\', \'tls-failed\', \'tls-unavailable\'].includes(ope...');
        if (opened.kind === 'ready') {
          assert.ok(['reply', 'timeout', 'closed', 'error'].includes((await session.mailFrom('')).kind), '[\'reply\', \'timeout\', \'closed\', \'error\'].includes((await session.mailFrom(\'\')).kind)');
          await session.quit();
        }
        session.destroy();
        assert.equal(session.state, 'closed');
      }),
      { numRuns: 25 },
    );
  });
});

describe('SmtpClientSession against part of a line nobody asked for', () => {
  it('never lets unasked bytes begin the reply to the next command, sent alone or pipelined', async (t) => {
    let fragment = '';
    // The fragment in the write of the EHLO reply, so that it is held before the next command is sent.
    const server = await rawServer(t, '127.0.0.6', (line, socket) => {
      const verb = line.split(' ', 1)[0]!.toUpperCase();
      if (verb === 'EHLO') socket.write(`250-mx.callout.test\r\n250 PIPELINING\r\n${fragment}`);
      else if (verb === 'QUIT') socket.end('221 2.0.0 Bye\r\n');
      else socket.write(verb === 'MAIL' ? '550 5.7.1 Sender refused\r\n' : '550 5.1.1 User unknown\r\n');
    });
    const bytes = fc.string({ unit: fc.constantFrom('2', '5', '0', '4', ' ', '-', 'a', '\r'), minLength: 1, maxLength: 8 });
    await fc.assert(
      fc.asyncProperty(bytes, fc.boolean(), async (unasked, pipelined) => {
        fragment = unasked;
        const session = sessionFor(t, server);
        assert.deepEqual(await session.open(), { kind: 'ready' });
        if (pipelined) session.pipeline([{ verb: 'MAIL', reversePath: '' }, { verb: 'RCPT', forwardPath: 'bob@example.test' }]);
        for (const step of [await session.mailFrom(''), await session.rcptTo('bob@example.test')]) {
          if (step.kind === 'reply') assert.equal(step.reply.code, 550, `${JSON.stringify(unasked)}: ${step.reply.code}`);
        }
        session.destroy();
      }),
      { numRuns: 40 },
    );
  });
});

describe('SmtpClientSession pipelining (RFC 2920)', () => {
  const group = [
    { verb: 'MAIL', reversePath: '' },
    { verb: 'RCPT', forwardPath: 'random@example.test' },
    { verb: 'RSET' },
    { verb: 'MAIL', reversePath: '' },
    { verb: 'RCPT', forwardPath: 'alice@example.test' },
  ] as const;

  it('sends nothing and answers false when PIPELINING is not advertised', async (t) => {
    const server = await serve(t, { script: usersOnly(['alice']) });
    const session = sessionFor(t, server);
    await session.open();
    assert.equal(session.pipeline([...group]), false);
    assert.deepEqual(sentLines(session), ['EHLO callout.example']);
    await session.quit();
  });

  it('sends nothing of a group and answers false when one of its lines is unsafe', async (t) => {
    const server = await serve(t, { script: { ...usersOnly(['alice']), ...pipelining() } });
    const session = sessionFor(t, server);
    await session.open();
    assert.equal(session.pipeline([{ verb: 'MAIL', reversePath: '' }, { verb: 'RCPT', forwardPath: 'x@example.test>\r\nDATA' }, { verb: 'RSET' }]), false);
    assert.deepEqual(sentLines(session), ['EHLO callout.example']);
    await session.quit();
    assert.deepEqual(server.sessions[0]?.commands, ['EHLO callout.example', 'QUIT']);
  });

  it('sends the group in one write; each call takes the reply to its own command', async (t) => {
    const server = await serve(t, { script: { ...usersOnly(['alice']), ...pipelining() } });
    const session = sessionFor(t, server);
    await session.open();
    assert.ok(session.extensions.has('PIPELINING'), 'session.extensions.has(\'PIPELINING\')');
    assert.equal(session.pipeline([...group, { verb: 'QUIT' }]), true);
    assert.equal((await session.mailFrom('')).kind, 'reply');
    await session.quit();
    assert.equal(session.state, 'closed');
    const transcript = session.transcript.filter((e) => e.dir !== 'event');
    const start = transcript.findIndex((e) => e.line === 'MAIL FROM:<>');
    assert.deepEqual(transcript.slice(start, start + 6).map((e) => e.dir), ['sent', 'sent', 'sent', 'sent', 'sent', 'sent'], 'the whole group before any reply');
    assert.deepEqual(server.sessions[0]?.commands.slice(1), ['MAIL FROM:<>', 'RCPT TO:<random@example.test>', 'RSET', 'MAIL FROM:<>', 'RCPT TO:<alice@example.test>', 'QUIT']);
  });

  it('replies in order, and keeps them when the server closes behind a pipelined QUIT', async (t) => {
    const server = await serve(t, { script: { ...usersOnly(['alice']), ...pipelining() } });
    const session = sessionFor(t, server);
    await session.open();
    session.pipeline([...group, { verb: 'QUIT' }]);
    // Every reply has come and the server has closed (after its 221) before any is taken.
    assert.ok(await until(() => session.state === 'closed'), 'the server closed behind the QUIT');
    const mail = await session.mailFrom('');
    const random = await session.rcptTo('random@example.test');
    const rset = await session.rset();
    const again = await session.mailFrom('');
    const alice = await session.rcptTo('alice@example.test');
    assert.deepEqual([mail, random, rset, again, alice].map((r) => (r.kind === 'reply' ? r.reply.code : r.kind)), [250, 550, 250, 250, 250]);
    assert.equal(session.inTransaction, true);
    await session.quit();
    assert.equal(session.state, 'closed');
    assert.deepEqual(session.replies.map((r) => `${r.stage} ${r.reply.code}`), ['mail 250', 'rcpt 550', 'rset 250', 'mail 250', 'rcpt 250', 'quit 221']);
  });

  it('leave() after a drain does not say a pipelined QUIT twice', async (t) => {
    const server = await serve(t, { script: { ...usersOnly(['alice']), ...pipelining(), quit: () => ({ silent: true }) } });
    const session = sessionFor(t, server);
    await session.open();
    session.pipeline([...group, { verb: 'QUIT' }]);
    await session.drain();
    assert.equal(session.state, 'ready');
    session.leave();
    assert.equal(session.state, 'closed');
    assert.deepEqual(sentLines(session).filter((line) => line === 'QUIT'), ['QUIT']);
  });

  it('a call that is not the next command of the group drops the rest of the group first', async (t) => {
    const server = await serve(t, { script: { ...usersOnly(['alice']), ...refuseNullSender(), ...pipelining() } });
    const session = sessionFor(t, server);
    await session.open();
    session.pipeline([...group]);
    const mail = await session.mailFrom('');
    assert.equal(mail.kind === 'reply' && mail.reply.code, 550);
    assert.equal(session.inTransaction, false);
    const fallback = await session.mailFrom('verify@example.test');
    assert.equal(fallback.kind === 'reply' && fallback.reply.code, 250, 'the reply to the new MAIL, not a leftover of the group');
    const alice = await session.rcptTo('alice@example.test');
    assert.equal(alice.kind === 'reply' && alice.reply.code, 250);
    assert.deepEqual(session.replies.map((r) => `${r.stage} ${r.reply.code}`), ['mail 550', 'rcpt 550', 'rset 250', 'mail 550', 'rcpt 250', 'mail 250', 'rcpt 250']);
    await session.quit();
  });

  it('a reply behind a 421 answers nothing: the rest of the group is closed (RFC 5321 §3.8)', async (t) => {
    const server = await serve(t, {
      script: { ...pipelining(), rcpt: (arg) => (arg.includes('random@') ? '421 4.7.0 mx.callout.test closing\r\n250 2.0.0 stray' : '250 2.1.5 Ok') },
    });
    const session = sessionFor(t, server);
    await session.open();
    session.pipeline([...group]);
    // Every reply has come and the server has closed before any is taken.
    assert.ok(await until(() => session.state === 'closed'), 'await until(() => session.state === \'closed\')');
    assert.equal((await session.mailFrom('')).kind, 'reply');
    const random = await session.rcptTo('random@example.test');
    assert.equal(random.kind === 'reply' && random.reply.code, 421);
    const rset = await session.rset();
    assert.equal(rset.kind, 'closed', 'the 250 behind the 421 is not the reply to RSET');
    assert.ok(events(session).includes('server closing: 421 4.7.0 mx.callout.test closing'), 'events(session).includes(\'server closing: 421 4.7.0 mx.callout.test closing\')');
  });

  it('QUIT may only end a group', async (t) => {
    const server = await serve(t, { script: pipelining() });
    const session = sessionFor(t, server);
    await session.open();
    assert.throws(() => session.pipeline([{ verb: 'QUIT' }, { verb: 'RSET' }]), SmtpSessionMisuseError);
    await session.quit();
  });

  it('a connection lost in the middle of a group answers closed for the rest', async (t) => {
    const server = await serve(t, { script: { ...pipelining(), rset: () => ({ drop: true }) } });
    const session = sessionFor(t, server);
    await session.open();
    session.pipeline([...group]);
    assert.equal((await session.mailFrom('')).kind, 'reply');
    assert.equal((await session.rcptTo('random@example.test')).kind, 'reply');
    assert.equal((await session.rset()).kind, 'closed');
    assert.equal((await session.mailFrom('')).kind, 'closed');
  });
});

/**
 * When a script's unasked words follow the last reply. Long enough that they never arrive in the
 * same read as that reply on a loaded machine (the session would drop them as unsolicited,
 * before park(), and the test would wait for a close that never comes).
 */
const UNASKED_AFTER_MS = 250;

describe('SmtpClientSession between callouts', () => {
  it('a parked session is closed by anything the server says, and an unasked 421 closes any session', async (t) => {
    const server = await serve(t, { script: { rset: () => ({ reply: '250 2.0.0 Ok', later: { afterMs: UNASKED_AFTER_MS, reply: '250 2.0.0 Unasked' } }) } });
    const session = sessionFor(t, server);
    await session.open();
    await session.rset();
    session.park();
    assert.equal(session.isParked, true);
    await until(() => session.state === 'closed');
    assert.equal(session.state, 'closed');
    assert.equal(session.isParked, false);
    assert.ok(events(session).some((line) => line.startsWith('server spoke while the session was idle: 250')), 'events(session).some((line) => line.startsWith(\'server spoke while the session was idle: 250\'))');

    const closing = await serve(t, { host: '127.0.0.3', script: { rset: () => ({ reply: '250 2.0.0 Ok', later: { afterMs: UNASKED_AFTER_MS, reply: '421 4.4.2 Timeout' } }) } });
    const other = sessionFor(t, closing);
    await other.open();
    await other.rset();
    await until(() => other.state === 'closed');
    assert.equal(other.state, 'closed');
    assert.ok(events(other).some((line) => line.startsWith('server closing: 421')), 'events(other).some((line) => line.startsWith(\'server closing: 421\'))');
  });

  it('a parked session is closed by a line that is no reply, and by part of a line, which would begin the next reply', async (t) => {
    const garbled = await serve(t, { host: '127.0.0.4', script: { rset: () => ({ reply: '250 2.0.0 Ok', later: { afterMs: UNASKED_AFTER_MS, reply: 'garbage' } }) } });
    const session = sessionFor(t, garbled);
    await session.open();
    await session.rset();
    session.park();
    await until(() => session.state === 'closed');
    assert.equal(session.state, 'closed');
    assert.ok(events(session).some((line) => line.startsWith('server spoke while the session was idle: malformed')), 'events(session).some((line) => line.startsWith(\'server spoke while the session was idle: malforme...');

    // "250 " with no line end yet: kept, it would turn the server's next reply (a 550, say) into a 250.
    const partial = await rawServer(t, '127.0.0.4', (_line, socket) => {
      socket.write('250 mx.callout.test\r\n');
      setTimeout(() => socket.write('250 '), UNASKED_AFTER_MS);
    });
    const other = sessionFor(t, partial);
    assert.deepEqual(await other.open(), { kind: 'ready' });
    other.park();
    await until(() => other.state === 'closed');
    assert.equal(other.state, 'closed');
    assert.ok(events(other).includes('server spoke while the session was idle: "250 "'), 'events(other).includes(\'server spoke while the session was idle: "250 "\')');

    // The same bytes in the write of the EHLO reply, so that they are held before park(): not parked for reuse either.
    const early = await rawServer(t, '127.0.0.5', (_line, socket) => socket.write('250 mx.callout.test\r\n250 '));
    const third = sessionFor(t, early);
    assert.deepEqual(await third.open(), { kind: 'ready' });
    third.park();
    assert.equal(third.state, 'closed');
    assert.ok(events(third).includes('server spoke while the session was idle: part of a line nobody asked for (4 octets)'), events(third).join(' | '));
  });

  it('resume() gives the next callout its own deadline', async (t) => {
    const server = await serve(t, { script: { mail: () => ({ silent: true }) } });
    const session = sessionFor(t, server);
    await session.open();
    session.park();
    session.resume(performance.now() + 100);
    const started = Date.now();
    const mail = await session.mailFrom('');
    assert.equal(mail.kind, 'timeout');
    assert.ok(Date.now() - started < GENEROUS.commandMs, 'the deadline, not the command timeout');
  });

  it('park() lifts the last callout\'s deadline: a parked session past it still says QUIT and hears the 221', async (t) => {
    const server = await serve(t);
    const session = sessionFor(t, server);
    assert.deepEqual(await session.open(), { kind: 'ready' });
    session.park();
    // A callout's deadline given once the session is open, so that a slow open on a loaded
    // machine cannot use it up before park() is to lift it.
    const deadline = performance.now() + 300;
    session.resume(deadline);
    session.park();
    assert.ok(await until(() => performance.now() > deadline + 10), 'await until(() => performance.now() > deadline + 10)');
    await session.quit();
    assert.deepEqual(session.replies.map((r) => `${r.stage} ${r.reply.code}`), ['quit 221'], events(session).join(' | '));
  });
});

describe('SmtpClientSession stage timeouts', () => {
  // Every other wait is long, so only the timer of the stage under test can end the dialogue.
  // Short, but not so short that a loaded machine misses it on the way (the EHLO before a silent MAIL).
  const SHORT_MS = 500;

  /** Dials like netDialer and keeps each socket, so a test can see it was closed. */
  function keepingDialer(): { dialer: Dialer; sockets: net.Socket[] } {
    const sockets: net.Socket[] = [];
    const dialer: Dialer = ({ host, port }) => {
      const socket = net.connect({ host, port });
      sockets.push(socket);
      return socket;
    };
    return { dialer, sockets };
  }

  function assertTimedOut(session: SmtpClientSession, sockets: net.Socket[], stage: string, startedAt: number): void {
    const elapsed = Date.now() - startedAt;
    // A timer may fire a millisecond early by Date.now(); the other timers are 5000 ms, and ending
    // well before them (with seconds to spare for a loaded machine) shows which timer ended it.
    assert.ok(elapsed >= SHORT_MS - 5 && elapsed < SHORT_MS + 3000, `ended after ${elapsed} ms`);
    assert.equal(session.state, 'closed');
    assert.ok(events(session).includes(`timeout at ${stage} after ${SHORT_MS} ms`), 'events(session).includes(`timeout at ${stage} after ${SHORT_MS} ms`)');
    assert.equal(sockets.length, 1);
    assert.ok(sockets[0]!.destroyed, 'the connection is closed');
  }

  it('a server silent after EHLO times out at ehlo after commandMs and closes the connection', async (t) => {
    const server = await serve(t, { host: '127.0.0.50', script: { ehlo: () => ({ silent: true }) } });
    const { dialer, sockets } = keepingDialer();
    const session = sessionFor(t, server, { dialer, timeouts: { ...GENEROUS, commandMs: SHORT_MS } });
    const started = Date.now();
    assert.deepEqual(await session.open(), { kind: 'timeout', stage: 'ehlo', afterMs: SHORT_MS });
    assertTimedOut(session, sockets, 'ehlo', started);
    assert.deepEqual(sentLines(session), ['EHLO callout.example'], 'no QUIT into a stalled dialogue');
  });

  it('a server silent after MAIL times out at mail after commandMs, not rcptMs', async (t) => {
    const server = await serve(t, { host: '127.0.0.51', script: { mail: () => ({ silent: true }) } });
    const { dialer, sockets } = keepingDialer();
    const session = sessionFor(t, server, { dialer, timeouts: { ...GENEROUS, commandMs: SHORT_MS } });
    assert.equal((await session.open()).kind, 'ready');
    const started = Date.now();
    assert.deepEqual(await session.mailFrom(''), { kind: 'timeout', stage: 'mail', afterMs: SHORT_MS });
    assertTimedOut(session, sockets, 'mail', started);
    // Not 'closed', a hang-up of the server's, which a caller reconnects after.
    assert.deepEqual(await session.rcptTo('x@example.test'), { kind: 'timeout', stage: 'rcpt', afterMs: SHORT_MS, timedOutAt: 'mail' }, 'every later call answers the timeout that closed the session');
  });

  it('a server silent after RCPT times out at rcpt after rcptMs, not commandMs', async (t) => {
    const server = await serve(t, { host: '127.0.0.52', script: { rcpt: () => ({ silent: true }) } });
    const { dialer, sockets } = keepingDialer();
    const session = sessionFor(t, server, { dialer, timeouts: { ...GENEROUS, rcptMs: SHORT_MS } });
    await session.open();
    await session.mailFrom('');
    const started = Date.now();
    assert.deepEqual(await session.rcptTo('x@example.test'), { kind: 'timeout', stage: 'rcpt', afterMs: SHORT_MS });
    assertTimedOut(session, sockets, 'rcpt', started);
  });

  it('a pipelined RCPT waits rcptMs for its reply, taken by the caller or dropped by a drain', async (t) => {
    const server = await serve(t, { host: '127.0.0.53', script: { ...pipelining(), rcpt: () => ({ silent: true }) } });
    const group = [{ verb: 'MAIL', reversePath: '' }, { verb: 'RCPT', forwardPath: 'x@example.test' }] as const;

    const taken = keepingDialer();
    const session = sessionFor(t, server, { dialer: taken.dialer, timeouts: { ...GENEROUS, rcptMs: SHORT_MS } });
    await session.open();
    assert.equal(session.pipeline([...group]), true);
    assert.equal((await session.mailFrom('')).kind, 'reply');
    const started = Date.now();
    assert.deepEqual(await session.rcptTo('x@example.test'), { kind: 'timeout', stage: 'rcpt', afterMs: SHORT_MS });
    assertTimedOut(session, taken.sockets, 'rcpt', started);

    const dropped = keepingDialer();
    const draining = sessionFor(t, server, { dialer: dropped.dialer, timeouts: { ...GENEROUS, rcptMs: SHORT_MS } });
    await draining.open();
    assert.equal(draining.pipeline([...group]), true);
    assert.equal((await draining.mailFrom('')).kind, 'reply');
    const drainStarted = Date.now();
    await draining.drain();
    assertTimedOut(draining, dropped.sockets, 'rcpt', drainStarted);
  });

  it('a pipelined RCPT that times out while a later step reads its reply: that step answers the timeout, naming the stage and its wait', async (t) => {
    const server = await serve(t, { host: '127.0.0.56', script: { ...pipelining(), rcpt: (arg) => (arg.includes('carol@') ? { silent: true } : '250 2.1.5 Ok') } });
    const group = [{ verb: 'MAIL', reversePath: '' }, { verb: 'RCPT', forwardPath: 'bob@example.test' }, { verb: 'RCPT', forwardPath: 'carol@example.test' }] as const;
    const { dialer, sockets } = keepingDialer();
    const session = sessionFor(t, server, { dialer, timeouts: { ...GENEROUS, rcptMs: SHORT_MS } });
    await session.open();
    assert.equal(session.pipeline([...group]), true);
    assert.equal((await session.mailFrom('')).kind, 'reply');
    assert.equal((await session.rcptTo('bob@example.test')).kind, 'reply');
    const started = Date.now();
    // RSET is not the next command of the group: carol's reply is read (and stalls) first.
    const rset = await session.rset();
    assert.deepEqual(rset, { kind: 'timeout', stage: 'rset', afterMs: SHORT_MS, timedOutAt: 'rcpt' }, 'a timeout, not a hang-up of the server\'s, which a caller reconnects after');
    assertTimedOut(session, sockets, 'rcpt', started);
    assert.ok(!sentLines(session).includes('RSET'), `RSET never sent into the stalled dialogue: ${sentLines(session).join(' | ')}`);

    // Cut short by the overall deadline, the later step says so as the wait did.
    const cut = sessionFor(t, server, { timeouts: { ...GENEROUS, rcptMs: 30_000 }, deadline: performance.now() + 2000 });
    await cut.open();
    assert.equal(cut.pipeline([...group]), true);
    await cut.mailFrom('');
    await cut.rcptTo('bob@example.test');
    const late = await cut.rset();
    assert.ok(late.kind === 'timeout' && late.timedOutAt === 'rcpt' && late.cutShortMs !== undefined && late.cutShortMs + late.afterMs === 30_000, `the deadline ended carol's wait, with the rest of the RCPT timer left: ${JSON.stringify(late)}`);
  });

  it('each stage waits out its own timer: a slow MAIL within commandMs and a slow RCPT within rcptMs are answered', async (t) => {
    const slow = { delayMs: 2 * SHORT_MS };
    const slowMail = await serve(t, { host: '127.0.0.54', script: { mail: () => ({ ...slow, reply: '250 2.1.0 Ok' }) } });
    const mailSession = sessionFor(t, slowMail, { timeouts: { ...GENEROUS, rcptMs: SHORT_MS } });
    await mailSession.open();
    const mail = await mailSession.mailFrom('');
    assert.equal(mail.kind === 'reply' && mail.reply.code, 250, 'a short rcptMs does not cut MAIL short');
    await mailSession.quit();

    const slowRcpt = await serve(t, { host: '127.0.0.55', script: { rcpt: () => ({ ...slow, reply: '250 2.1.5 Ok' }) } });
    const rcptSession = sessionFor(t, slowRcpt, { timeouts: { ...GENEROUS, commandMs: SHORT_MS } });
    await rcptSession.open();
    await rcptSession.mailFrom('');
    const rcpt = await rcptSession.rcptTo('x@example.test');
    assert.equal(rcpt.kind === 'reply' && rcpt.reply.code, 250, 'a short commandMs does not cut RCPT short');
    await rcptSession.quit();
  });
});
