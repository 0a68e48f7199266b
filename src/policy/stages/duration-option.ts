/**
 * NAME
 *   stages/duration-option - a duration in a stage's options, as the configuration writes them
 *
 * DESCRIPTION
 *   "30s", "5m", "2h", "7d" or a number of seconds (config/duration), validated with the
 *   configuration but kept as written: stage options are parsed twice (validateConfig, then
 *   buildPipeline), and a value already turned into milliseconds would be read as seconds the
 *   second time. The stage converts with durationMs() when it is created. (The configuration
 *   schema's own duration helper cannot be imported here: the schema imports the registry.)
 *
 * ERRORS
 *   durationMs() throws ConfigError for a value the option schema would have refused.
 */

import { z } from 'zod';
import { parseDuration } from '../../config/duration.js';
import { ConfigError } from '../../core/errors.js';

export type DurationText = string | number;

/** A duration option; minMs refuses shorter ones (a window of 0 would divide by zero). */
export function durationOption(fallback: string, minMs = 0) {
  return z
    .union([z.string(), z.number()])
    .default(fallback)
    .superRefine((value, ctx) => {
      const parsed = parseDuration(value);
      if (!parsed.ok) ctx.addIssue({ code: 'custom', message: parsed.reason });
      else if (parsed.ms < minMs) ctx.addIssue({ code: 'custom', message: `expected at least ${minMs} ms` });
    });
}

export function durationMs(value: DurationText): number {
  const parsed = parseDuration(value);
  if (!parsed.ok) throw new ConfigError(parsed.reason);
  return parsed.ms;
}
