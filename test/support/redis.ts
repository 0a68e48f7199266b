/**
 * NAME
 *   test/support/redis - throwaway redis-server instances on loopback for the Redis store tests
 *
 * DESCRIPTION
 *   startRedis() runs Debian's redis-server in the foreground on 127.0.0.1 (a free port unless
 *   one is given) and on a unix socket, both in a fresh temporary directory, with persistence
 *   off (`--save ''`, `--appendonly no`), and resolves once the server answers PING. kill()
 *   SIGKILLs the server to simulate an outage; restart() starts it again on the same port and
 *   socket (empty, as nothing was saved); pause() and resume() SIGSTOP and SIGCONT it to
 *   simulate a hung server; stop() ends it and removes the directory. An exit hook
 *   (test/support/exit-hooks, run on SIGTERM and SIGINT too) kills every server still running
 *   and removes its directory, so a crashed or timed-out test run leaves none behind.
 *
 * LIMITS
 *   Loopback IPv4 only. A free port is picked by binding port 0 and closing it, so another
 *   process may take it before redis-server does; a start that loses that race is retried on a
 *   new port.
 *
 * ERRORS
 *   Throws Error (a test fault) when redis-server is missing (run .ci/run, which installs it), or
 *   when the server exits or stays silent during start, with the tail of its output.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { onExit } from './exit-hooks.js';
import { freePort } from './ports.js';

export interface RedisInstance {
  /** redis://127.0.0.1:PORT/0 */
  url: string;
  port: number;
  /** The unix socket the server also listens on, usable as a store URL. */
  socketPath: string;
  /** Ends the server and removes its directory. */
  stop(): Promise<void>;
  /** SIGKILLs the server at once, as an outage would. */
  kill(): void;
  /** Starts the server again on the same port and socket, with no data. */
  restart(): Promise<void>;
  /** SIGSTOPs the server and returns once it has stopped: connections stay open but nothing is answered, as with a hung host. */
  pause(): void;
  /** SIGCONTs a paused server. */
  resume(): void;
}

const REDIS_SERVER = '/usr/bin/redis-server';
const START_TIMEOUT_MS = 10_000;
const START_ATTEMPTS = 3;
const OUTPUT_TAIL = 2000;

/** Servers still running, with their directories. */
const running = new Map<ChildProcess, string>();

onExit(() => {
  for (const [child, dir] of running) {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});


/** Whether a PING on port is answered with +PONG. */
function answersPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let reply = '';
    const finish = (answered: boolean): void => {
      socket.destroy();
      resolve(answered);
    };
    socket.setTimeout(500, () => finish(false));
    socket.once('error', () => finish(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.on('data', (data) => {
      reply += data.toString('latin1');
      if (reply.includes('\r\n')) finish(reply.startsWith('+PONG'));
    });
  });
}

interface Server {
  child: ChildProcess;
  exited: Promise<void>;
}

/** Spawns redis-server and waits for PING; rejects with its output if it exits or stays silent. */
async function launch(dir: string, port: number, socketPath: string): Promise<Server> {
  const child = spawn(
    REDIS_SERVER,
    [
      '--bind', '127.0.0.1',
      '--port', String(port),
      '--unixsocket', socketPath,
      '--unixsocketperm', '700',
      '--save', '',
      '--appendonly', 'no',
      '--dir', dir,
      '--daemonize', 'no',
      '--logfile', '',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  running.set(child, dir);
  let output = '';
  const collect = (data: Buffer): void => {
    output = (output + data.toString()).slice(-OUTPUT_TAIL);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  let hasExited = false;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => {
      hasExited = true;
      running.delete(child);
      resolve();
    });
  });

  const deadline = Date.now() + START_TIMEOUT_MS;
  while (!hasExited && Date.now() < deadline) {
    if (await answersPing(port)) return { child, exited };
    await sleep(50);
  }
  child.kill('SIGKILL');
  await exited;
  const why = hasExited ? 'exited during start' : `did not answer PING within ${START_TIMEOUT_MS} ms`;
  throw new Error(`redis-server on 127.0.0.1:${port} ${why}:\n${output}`);
}

export async function startRedis(options: { port?: number } = {}): Promise<RedisInstance> {
  try {
    accessSync(REDIS_SERVER, constants.X_OK);
  } catch {
    throw new Error(`${REDIS_SERVER} is missing: run .ci/run, which installs the redis-server package`);
  }
  const dir = mkdtempSync(join(tmpdir(), 'callout-redis-'));
  const socketPath = join(dir, 'redis.sock');
  let port = options.port ?? 0;
  let server: Server | undefined;
  for (let attempt = 1; server === undefined; attempt += 1) {
    if (options.port === undefined) port = await freePort();
    try {
      server = await launch(dir, port, socketPath);
    } catch (err) {
      if (attempt >= START_ATTEMPTS || options.port !== undefined) {
        rmSync(dir, { recursive: true, force: true });
        throw err;
      }
    }
  }

  let current: Server | undefined = server;
  const end = async (): Promise<void> => {
    const ending = current;
    current = undefined;
    if (ending === undefined) return;
    ending.child.kill('SIGKILL');
    await ending.exited;
  };
  return {
    url: `redis://127.0.0.1:${port}/0`,
    port,
    socketPath,
    async stop() {
      await end();
      rmSync(dir, { recursive: true, force: true });
    },
    kill() {
      current?.child.kill('SIGKILL');
    },
    async restart() {
      await end();
      current = await launch(dir, port, socketPath);
    },
    pause() {
      const pid = current?.child.pid;
      if (pid === undefined) return;
      process.kill(pid, 'SIGSTOP');
      // kill() only queues the signal: a command sent in the same instant could still be answered.
      const deadline = Date.now() + 2000;
      while (Date.now() < deadline && !/^\d+ \(.*\) T /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))) {
        // The stop lands within microseconds; a loaded machine may take a scheduler tick.
      }
    },
    resume() {
      current?.child.kill('SIGCONT');
    },
  };
}
