/**
 * NAME
 *   test/support/log-capture - a daemon's JSON log lines, collected for assertions
 *
 * DESCRIPTION
 *   captureLog(into) gives a Logger (core/log, level info) whose lines are parsed and pushed
 *   onto `into` (a new array unless given, so several daemons can share one), as tests read
 *   the decision lines a daemon writes. A line split across writes is kept until it ends.
 */

import { Writable } from 'node:stream';
import { createLogger } from '../../src/core/log.js';

export type LogLine = Record<string, unknown>;

export function captureLog(into: LogLine[] = []): { log: ReturnType<typeof createLogger>; lines: LogLine[] } {
  let pending = '';
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      const lines = (pending + chunk.toString()).split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines.filter(Boolean)) into.push(JSON.parse(line) as LogLine);
      done();
    },
  });
  return { log: createLogger('info', sink), lines: into };
}
