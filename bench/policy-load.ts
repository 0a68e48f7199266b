/**
 * NAME
 *   bench/policy-load - the Postfix side of bench/policy: policy connections driven from a child process
 *
 * DESCRIPTION
 *   Forked by bench/policy with an IPC channel, so that the load it makes never shares a thread
 *   with the service it measures (callout's daemon runs in the parent). It keeps a pool of
 *   connections to one service, each asking one request at a time as Postfix's smtpd does, and
 *   answers each command with one message:
 *     { kind: 'setup', port, messages, judge }             -> { kind: 'ready' }
 *     { kind: 'run', connections, maxOps, maxMs, judged,
 *       firstInstance }                                    -> { kind: 'cell', cell }
 *     { kind: 'close' }                                     closes the pool and exits
 *   A run opens connections until the pool has `connections` (each asked one request, so that
 *   a service spawning a process per connection has it ready), then runs bench/measure's
 *   runCell over them on the message stream from its start; the i-th request of a run is a new
 *   message, its instance numbered firstInstance + i (the caller keeps the numbers distinct
 *   across runs), since services remember what they answered per instance. Answers are labelled 'right' or
 *   what was answered instead ('callout' judge: DUNNO for an existing sender, 550 5.7.1 for a
 *   missing one), or by the kind of answer ('kind' judge, and every run that is not `judged`).
 *   Any fault is reported as { kind: 'error', message } and the process exits.
 */

import net from 'node:net';
import { runCell } from './measure.js';
import type { CellResult } from './measure.js';

/** A request with its `instance` value cut out, so that every request is a new message. */
export interface LoadMessage {
  beforeInstance: string;
  afterInstance: string;
  exists: boolean;
}

/** Postfix gives every message its own instance; the stream's messages recur, their instances do not. */
function encoded(message: LoadMessage, index: number): string {
  return `${message.beforeInstance}${index.toString(16)}.6b12d2cd.260c3.0${message.afterInstance}`;
}

export type LoadJudge = 'callout' | 'kind';

export type LoadCommand =
  | { kind: 'setup'; port: number; messages: LoadMessage[]; judge: LoadJudge }
  | { kind: 'run'; connections: number; maxOps: number; maxMs: number; judged: boolean; firstInstance: number }
  | { kind: 'close' };

export type LoadReply = { kind: 'ready' } | { kind: 'cell'; cell: CellResult } | { kind: 'error'; message: string };

/** The first words of an action, enough to tell its kind: "DUNNO", "prepend Received-SPF: Pass". */
export function actionKind(action: string): string {
  return action.split(' ').slice(0, 3).join(' ').replace(/[;,(]+$/, '');
}

function judgeCallout(action: string, message: LoadMessage): string {
  const right = message.exists ? action === 'DUNNO' : /^550 5\.7\.1 Sender address rejected: /.test(action);
  return right ? 'right' : `${actionKind(action)} for ${message.exists ? 'an existing' : 'a missing'} sender`;
}

/** One Postfix-like policy connection: one request at a time, pre-encoded. */
class PolicyConnection {
  private buffer = '';
  private waiting: { resolve: (action: string) => void; reject: (err: Error) => void } | undefined;

  private constructor(private readonly socket: net.Socket) {
    socket.setNoDelay(true);
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      const end = this.buffer.indexOf('\n\n');
      if (end < 0) return;
      const reply = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      const waiting = this.waiting;
      this.waiting = undefined;
      waiting?.resolve(/^action=(.*)$/m.exec(reply)?.[1] ?? `no action in ${JSON.stringify(reply.slice(0, 60))}`);
    });
    const fail = (err: Error): void => {
      const waiting = this.waiting;
      this.waiting = undefined;
      waiting?.reject(err);
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('connection closed without a reply')));
  }

  static open(port: number): Promise<PolicyConnection> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port }, () => {
        socket.off('error', reject);
        resolve(new PolicyConnection(socket));
      });
      socket.once('error', reject);
    });
  }

  ask(request: string): Promise<string> {
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
      this.socket.write(request);
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

interface Setup {
  port: number;
  messages: LoadMessage[];
  judge: LoadJudge;
}

const pool: PolicyConnection[] = [];
/** Instances of the one request each new connection asks, far above those of the runs. */
const OPENING_INSTANCES = 2 ** 40;

async function grow(setup: Setup, count: number): Promise<void> {
  const opened = await Promise.all(
    Array.from({ length: Math.max(0, count - pool.length) }, async (_, k) => {
      const connection = await PolicyConnection.open(setup.port);
      await connection.ask(encoded(setup.messages[k % setup.messages.length]!, OPENING_INSTANCES + pool.length + k));
      return connection;
    }),
  );
  pool.push(...opened);
}

async function run(setup: Setup, command: Extract<LoadCommand, { kind: 'run' }>): Promise<CellResult> {
  await grow(setup, command.connections);
  const free = pool.slice(0, command.connections);
  const label = command.judged && setup.judge === 'callout' ? judgeCallout : actionKind;
  return runCell({ concurrency: command.connections, maxOps: command.maxOps, maxMs: command.maxMs }, async (index) => {
    const connection = free.pop()!;
    const message = setup.messages[index % setup.messages.length]!;
    try {
      return label(await connection.ask(encoded(message, command.firstInstance + index)), message);
    } finally {
      free.push(connection);
    }
  });
}

function reply(message: LoadReply): void {
  process.send?.(message);
}

if (process.send) {
  let setup: Setup | undefined;
  process.on('message', (command: LoadCommand) => {
    const handle = async (): Promise<void> => {
      switch (command.kind) {
        case 'setup':
          setup = { port: command.port, messages: command.messages, judge: command.judge };
          reply({ kind: 'ready' });
          return;
        case 'run':
          if (!setup) throw new Error('run before setup');
          reply({ kind: 'cell', cell: await run(setup, command) });
          return;
        case 'close':
          for (const connection of pool) connection.close();
          process.disconnect();
          return;
      }
    };
    handle().catch((err: unknown) => {
      reply({ kind: 'error', message: err instanceof Error ? err.message : String(err) });
      process.exit(1);
    });
  });
}
