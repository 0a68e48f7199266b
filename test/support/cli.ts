/**
 * NAME
 *   test/support/cli - a callout command run as an administrator runs it, in a child process
 *
 * DESCRIPTION
 *   callout(args) runs `node --import tsx src/cli/main.ts ARGS` from the repository root (ROOT),
 *   with this process's environment, and resolves with its exit status and what it wrote: the
 *   status a script sees, -1 when it ended by a signal (the 30 s timeout among them). It never
 *   rejects: a test asserts the status it expects, with stderr in the message. Its standard input
 *   is a pipe nobody writes to: a command that reads it (--message -) waits for the timeout.
 */

import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface CalloutRun {
  code: number;
  stdout: string;
  stderr: string;
}

export function callout(args: readonly string[]): Promise<CalloutRun> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { cwd: ROOT, timeout: 30_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : -1) : 0, stdout, stderr });
    });
  });
}
