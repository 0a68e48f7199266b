/**
 * NAME
 *   bench/servers-client - starts bench/servers in a child process and talks to it
 *
 * DESCRIPTION
 *   startServerProcess() forks the server process with this process's exec arguments (so tsx
 *   loads it too), waits for its 'ready' message and returns the DNS address and SMTP port it
 *   serves, a cpu() probe for the CPU time the servers used, and stop().
 *
 * ERRORS
 *   Rejects when the child reports a failure, exits before it is ready, or is not ready in 30 s.
 */

import { fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import type { ControlMessage, ServerMessage } from './servers.js';

export interface ServerProcess {
  dns: string;
  port: number;
  pid: number;
  /** CPU time (user + system, microseconds) used by the server process so far, and its SMTP connections. */
  cpu(): Promise<{ micros: number; connections: number }>;
  stop(): Promise<void>;
}

const READY_WAIT_MS = 30_000;

export async function startServerProcess(): Promise<ServerProcess> {
  const child: ChildProcess = fork(new URL('./servers.ts', import.meta.url), [], { execArgv: process.execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const control = (message: ControlMessage): void => {
    child.send(message);
  };
  const ready = await new Promise<{ dns: string; port: number }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('server process not ready after 30 s')), READY_WAIT_MS);
    child.once('exit', (code) => reject(new Error(`server process exited with ${code} before it was ready`)));
    child.on('message', function onReady(message: ServerMessage) {
      if (message.kind === 'ready') resolve({ dns: message.dns, port: message.port });
      else if (message.kind === 'failed') reject(new Error(`server process: ${message.error}`));
      else return;
      clearTimeout(timer);
      child.off('message', onReady);
    });
  }).catch((err: unknown) => {
    child.kill();
    throw err;
  });
  return {
    ...ready,
    pid: child.pid ?? -1,
    cpu: () =>
      new Promise((resolve) => {
        child.on('message', function onCpu(message: ServerMessage) {
          if (message.kind !== 'cpu') return;
          child.off('message', onCpu);
          resolve({ micros: message.micros, connections: message.connections });
        });
        control({ kind: 'cpu' });
      }),
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        control({ kind: 'stop' });
      }),
  };
}
