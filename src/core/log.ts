/**
 * NAME
 *   core/log - structured JSON logs (pino) for the daemons
 *
 * DESCRIPTION
 *   One JSON object per line on stdout, with a `component` field, so a decision can be found
 *   and explained from the log alone. Tests pass `silent`.
 */

import { pino } from 'pino';
import type { Logger } from 'pino';

export type { Logger };

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export function createLogger(level: LogLevel, destination?: NodeJS.WritableStream): Logger {
  const options = { level, base: { component: 'callout' }, timestamp: pino.stdTimeFunctions.isoTime };
  return destination ? pino(options, destination as unknown as pino.DestinationStream) : pino(options);
}
