/**
 * NAME
 *   test/support/smtp-server - scriptable SMTP servers on loopback for callout tests
 *
 * DESCRIPTION
 *   startSmtpServer listens on 127.0.0.x (raw node:net, so a script can misbehave in ways a
 *   real server library would not allow) and answers each command through a script: one handler
 *   per step, returning the reply text (may hold "\r\n" for a multi-line reply; CRLF is added at
 *   the end) or an action { reply, delayMs, drop, silent, later }. drop closes the connection, after
 *   writing the reply when there is one; silent never answers; later, afterMs behind the reply,
 *   writes a reply nobody asked for and/or drops the connection (an idle timeout). A 421 or the
 *   reply to QUIT closes the connection after it is written, as RFC 5321 §3.8 asks of a real server.
 *   Pipelined commands (RFC 2920) are answered one by one, in order.
 *
 *   startSmtpServers binds several hosts on one common port, because the callout engine uses one
 *   port for every MX host. Presets (acceptAll, usersOnly, greylistOnce, ...) return partial
 *   scripts that compose by spreading: { ...refuseNullSender(), ...usersOnly(['alice']) }.
 *
 *   With tls { key, cert } the server advertises STARTTLS and upgrades in place with
 *   tls.TLSSocket; plaintext pipelined behind STARTTLS is discarded, and the session's
 *   transaction state is reset (RFC 3207 §4.2). testCertificate() loads the committed
 *   self-signed certificate for mx.callout.test (fixtures/README.md says how it was made).
 *
 * LIMITS
 *   Command lines longer than 4096 octets get 500 and the connection is closed. A handler that
 *   throws is answered 451; the server never crashes on what a client sends. close() destroys
 *   every socket.
 */

import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';

export type ScriptStep =
  | 'greeting'
  | 'ehlo'
  | 'helo'
  | 'starttls'
  | 'mail'
  | 'rcpt'
  | 'rset'
  | 'vrfy'
  | 'data'
  | 'quit'
  | 'unknown';

export type Action =
  | string
  | { reply?: string; delayMs?: number; drop?: boolean; silent?: boolean; later?: { afterMs: number; reply?: string; drop?: boolean } };

export interface TestSession {
  /** Every command line received, without CRLF. */
  commands: string[];
  tls: boolean;
  remoteAddress: string;
  /** Whether this server can do STARTTLS (it was given a certificate). */
  tlsAvailable: boolean;
  /** RCPT commands since the last MAIL, RSET, EHLO or HELO, counting the current one. */
  rcptInTransaction: number;
}

export type StepHandler = (arg: string, session: TestSession) => Action;
export type SmtpScript = Record<ScriptStep, StepHandler>;

export interface SmtpTestServer {
  host: string;
  port: number;
  close(): Promise<void>;
  sessions: TestSession[];
  readonly connectionCount: number;
}

export interface SmtpServerOptions {
  host?: string;
  port?: number;
  script?: Partial<SmtpScript>;
  tls?: { key: string; cert: string };
}

const SERVER_NAME = 'mx.callout.test';
const MAX_COMMAND_LINE = 4096;

/** The committed self-signed certificate and key for mx.callout.test. */
export function testCertificate(): { key: string; cert: string } {
  const fixture = (name: string): string => readFileSync(new URL(`./fixtures/${name}`, import.meta.url), 'utf8');
  return { key: fixture('test-key.pem'), cert: fixture('test-cert.pem') };
}

/** The path inside <...> of a MAIL or RCPT argument: "FROM:<a@b> SIZE=1" → "a@b". */
export function pathOf(arg: string): string {
  return /<([^>]*)>/.exec(arg)?.[1] ?? arg.replace(/^(FROM|TO):/i, '').trim();
}

function localPartOf(path: string): string {
  const at = path.lastIndexOf('@');
  return (at === -1 ? path : path.slice(0, at)).toLowerCase();
}

export const defaultScript: SmtpScript = {
  greeting: () => `220 ${SERVER_NAME} ESMTP callout test server`,
  ehlo: (arg, session) =>
    [
      `250-${SERVER_NAME} Hello ${arg}`,
      '250-SIZE 10240000',
      '250-8BITMIME',
      '250-ENHANCEDSTATUSCODES',
      ...(session.tlsAvailable && !session.tls ? ['250-STARTTLS'] : []),
      '250 SMTPUTF8',
    ].join('\r\n'),
  helo: () => `250 ${SERVER_NAME}`,
  starttls: (_arg, session) =>
    session.tlsAvailable && !session.tls ? '220 2.0.0 Ready to start TLS' : '454 4.7.0 TLS not available',
  mail: () => '250 2.1.0 Ok',
  rcpt: () => '250 2.1.5 Ok',
  rset: () => '250 2.0.0 Ok',
  vrfy: () => '252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery',
  data: () => '554 5.5.1 Error: this test server takes no DATA',
  quit: () => '221 2.0.0 Bye',
  unknown: () => '502 5.5.2 Error: command not recognized',
};

const VERBS: Record<string, ScriptStep> = {
  EHLO: 'ehlo',
  HELO: 'helo',
  STARTTLS: 'starttls',
  MAIL: 'mail',
  RCPT: 'rcpt',
  RSET: 'rset',
  VRFY: 'vrfy',
  DATA: 'data',
  QUIT: 'quit',
};

export async function startSmtpServer(options: SmtpServerOptions = {}): Promise<SmtpTestServer> {
  const host = options.host ?? '127.0.0.2';
  const script: SmtpScript = { ...defaultScript, ...options.script };
  const sessions: TestSession[] = [];
  const sockets = new Set<net.Socket>();
  const secureContext = options.tls ? tls.createSecureContext(options.tls) : undefined;
  let connectionCount = 0;

  const server = net.createServer((socket) => {
    connectionCount += 1;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    const session: TestSession = {
      commands: [],
      tls: false,
      remoteAddress: socket.remoteAddress ?? '',
      tlsAvailable: secureContext !== undefined,
      rcptInTransaction: 0,
    };
    sessions.push(session);
    serveConnection(socket, session, script, secureContext, sockets);
  });
  server.on('error', () => {});

  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  const address = server.address() as net.AddressInfo;

  return {
    host,
    port: address.port,
    sessions,
    get connectionCount() {
      return connectionCount;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/**
 * One server per host, all on the same port. The port is picked by the first bind; if another
 * host cannot bind it (already used there), everything is closed and another port is tried.
 */
export async function startSmtpServers(
  hosts: string[],
  scriptFor: (host: string) => Partial<SmtpScript>,
  tlsCredentials?: { key: string; cert: string },
): Promise<SmtpTestServer[]> {
  const [first, ...rest] = hosts;
  if (first === undefined) return [];
  for (let attempt = 0; attempt < 20; attempt += 1) {
    const lead = await startSmtpServer({ host: first, script: scriptFor(first), tls: tlsCredentials });
    const started = [lead];
    try {
      for (const host of rest) {
        started.push(await startSmtpServer({ host, port: lead.port, script: scriptFor(host), tls: tlsCredentials }));
      }
      return started;
    } catch (err) {
      await Promise.all(started.map((server) => server.close()));
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    }
  }
  throw new Error(`no common free port for ${hosts.join(', ')}`);
}

function serveConnection(
  plain: net.Socket,
  session: TestSession,
  script: SmtpScript,
  secureContext: tls.SecureContext | undefined,
  sockets: Set<net.Socket>,
): void {
  let stream: net.Socket = plain;
  let buffered = '';
  let closed = false;
  /** Bumped by the TLS upgrade so that lines read in clear before it are dropped. */
  let generation = 0;
  let queue = Promise.resolve();

  const shut = (graceful: boolean): void => {
    if (closed) return;
    closed = true;
    if (graceful) stream.end();
    else stream.destroy();
  };
  plain.on('error', () => shut(false));
  plain.on('close', () => {
    closed = true;
  });

  const perform = async (action: Action): Promise<string | undefined> => {
    const { reply, delayMs, drop, silent, later } = typeof action === 'string' ? { reply: action } : action;
    if (delayMs) await new Promise((resolve) => setTimeout(resolve, delayMs).unref());
    if (closed || silent) return undefined;
    if (reply !== undefined) stream.write(`${reply}\r\n`);
    if (drop) shut(reply !== undefined);
    else if (reply?.startsWith('421')) shut(true);
    if (later) {
      setTimeout(() => {
        if (closed) return;
        if (later.reply !== undefined) stream.write(`${later.reply}\r\n`);
        if (later.drop || later.reply?.startsWith('421')) shut(true);
      }, later.afterMs).unref();
    }
    return reply;
  };

  const run = (handler: StepHandler, arg: string): Promise<string | undefined> => {
    let action: Action;
    try {
      action = handler(arg, session);
    } catch {
      action = '451 4.3.0 test server script failed';
    }
    return perform(action);
  };

  const upgrade = (context: tls.SecureContext): void => {
    generation += 1;
    buffered = '';
    plain.removeListener('data', onData);
    const secure = new tls.TLSSocket(plain, { isServer: true, secureContext: context });
    sockets.add(secure);
    secure.on('secure', () => {
      session.tls = true;
    });
    secure.on('data', onData);
    secure.on('error', () => shut(false));
    secure.on('close', () => sockets.delete(secure));
    stream = secure;
  };

  const handle = async (line: string): Promise<void> => {
    session.commands.push(line);
    const space = line.indexOf(' ');
    const verb = (space === -1 ? line : line.slice(0, space)).toUpperCase();
    const arg = space === -1 ? '' : line.slice(space + 1);
    const step = VERBS[verb] ?? 'unknown';
    if (step === 'ehlo' || step === 'helo' || step === 'mail' || step === 'rset') session.rcptInTransaction = 0;
    if (step === 'rcpt') session.rcptInTransaction += 1;
    const reply = await run(script[step], arg);
    if (step === 'quit' && !closed) shut(true);
    if (step === 'starttls' && reply?.startsWith('2') && secureContext && !session.tls && !closed) {
      upgrade(secureContext);
    }
  };

  function onData(chunk: Buffer): void {
    buffered += chunk.toString('latin1');
    let lf: number;
    while ((lf = buffered.indexOf('\n')) !== -1) {
      const line = buffered.slice(0, lf).replace(/\r$/, '');
      buffered = buffered.slice(lf + 1);
      const lineGeneration = generation;
      queue = queue.then(() => (closed || lineGeneration !== generation ? undefined : handle(line)));
    }
    if (buffered.length > MAX_COMMAND_LINE) {
      buffered = '';
      queue = queue.then(() => perform({ reply: '500 5.5.0 Error: line too long', drop: true })).then(() => {});
    }
  }

  plain.on('data', onData);
  queue = queue.then(() => run(script.greeting, '')).then(() => {});
}

/* Presets: each returns the steps it changes, so they compose by spreading. */

/** Every recipient is accepted: a catch-all domain. */
export function acceptAll(): Partial<SmtpScript> {
  return { rcpt: () => '250 2.1.5 Ok' };
}

/** Only these local parts exist (case-insensitive); others get 550 5.1.1. */
export function usersOnly(localParts: string[]): Partial<SmtpScript> {
  const known = new Set(localParts.map((part) => part.toLowerCase()));
  return {
    rcpt: (arg) => {
      const path = pathOf(arg);
      return known.has(localPartOf(path))
        ? '250 2.1.5 Ok'
        : `550 5.1.1 <${path}>: Recipient address rejected: User unknown in local recipient table`;
    },
  };
}

/** The first RCPT for each recipient (across sessions) gets 450 4.7.1, later ones 250. */
export function greylistOnce(): Partial<SmtpScript> {
  const seen = new Set<string>();
  return {
    rcpt: (arg) => {
      const path = pathOf(arg).toLowerCase();
      if (seen.has(path)) return '250 2.1.5 Ok';
      seen.add(path);
      return `450 4.7.1 <${path}>: Recipient address rejected: Greylisted, try again later`;
    },
  };
}

/** MAIL FROM:<> is refused with 550 5.7.1; a non-null sender is accepted. */
export function refuseNullSender(): Partial<SmtpScript> {
  return {
    mail: (arg) => (pathOf(arg) === '' ? '550 5.7.1 Null sender refused' : '250 2.1.0 Ok'),
  };
}

export function rejectGreeting(code: 421 | 554 = 554): Partial<SmtpScript> {
  const reply =
    code === 421 ? `421 4.3.2 ${SERVER_NAME} Service not available, closing channel` : '554 5.7.1 No SMTP service here';
  return {
    greeting: () => reply,
    // After a 554 greeting a server answers 503 to everything but QUIT (RFC 5321 §3.1).
    ...(code === 554
      ? {
          ehlo: () => '503 5.5.1 Bad sequence of commands',
          helo: () => '503 5.5.1 Bad sequence of commands',
        }
      : {}),
  };
}

/** The server accepts the connection and never says a word: a tarpit. */
export function silentGreeting(): Partial<SmtpScript> {
  return { greeting: () => ({ silent: true }) };
}

/** The connection is closed, without a reply, when this step's command arrives ('greeting': at once). */
export function dropAfter(step: ScriptStep): Partial<SmtpScript> {
  return { [step]: () => ({ drop: true }) };
}

export function multilineReplies(): Partial<SmtpScript> {
  return {
    greeting: () =>
      [`220-${SERVER_NAME} ESMTP`, '220-Unsolicited bulk mail is prohibited here.', `220 ${SERVER_NAME} ready`].join('\r\n'),
    mail: () => ['250-2.1.0 Sender', '250 2.1.0 Ok'].join('\r\n'),
    rcpt: () => ['250-2.1.5 Recipient', '250-2.1.5 looks', '250 2.1.5 fine'].join('\r\n'),
  };
}

/** One reply line of 100 kB at this step (default EHLO). */
export function oversizedLine(step: ScriptStep = 'ehlo'): Partial<SmtpScript> {
  return { [step]: () => `250-${'x'.repeat(100_000)}\r\n250 OK` };
}

/** EHLO is not understood (500), so the client must fall back to HELO. */
export function rejectEhlo(): Partial<SmtpScript> {
  return { ehlo: () => '500 5.5.1 Error: command not recognized' };
}

/** EHLO advertises PIPELINING (RFC 2920) besides the default extensions. */
export function pipelining(): Partial<SmtpScript> {
  return {
    ehlo: (arg, session) => {
      const reply = defaultScript.ehlo(arg, session);
      return typeof reply === 'string' ? reply.replace(/\r\n250 /, '\r\n250-PIPELINING\r\n250 ') : reply;
    },
  };
}

/** MAIL commands after the first n on a connection get this reply: a server that tires of a reused connection. */
export function refuseMailAfter(n: number, reply = '421 4.7.0 mx.callout.test Error: too many transactions'): Partial<SmtpScript> {
  return {
    mail: (_arg, session) => (session.commands.filter((c) => /^MAIL /i.test(c)).length > n ? reply : '250 2.1.0 Ok'),
  };
}

/** RSET is answered, then the connection is closed, as ovh.net does after a refused RCPT. */
export function dropAfterRset(): Partial<SmtpScript> {
  return { rset: () => ({ reply: '250 2.0.0 Ok', drop: true }) };
}

/** The second RCPT of a transaction gets 452, as Outlook's servers do. */
export function rejectSecondRcpt(): Partial<SmtpScript> {
  return {
    rcpt: (_arg, session) =>
      session.rcptInTransaction >= 2 ? '452 4.5.3 Error: too many recipients' : '250 2.1.5 Ok',
  };
}
