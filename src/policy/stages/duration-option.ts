/**
 * NAME
 *   stages/duration-option - a duration in a stage's options, as the configuration writes them
 *
 * DESCRIPTION
 *   "30s", "5m", "2h", "7d" or a number of seconds (config/duration), validated with the
 *   configuration and kept as a text with its unit, not in milliseconds: stage options are parsed
 *   twice (validateConfig, then buildPipeline), and a value already turned into milliseconds
 *   would be read as seconds the second time. The stage converts with durationMs() when it is created. (The configuration
 *   schema's own duration helper cannot be imported here: the schema imports the registry.)
 *
 *   checkedDuration() parses a value as found, for a stage's checks across its options (a sleep
 *   above its maximum, durations that must agree), which run even when a value is wrong.
 *
 * ERRORS
 *   durationMs() throws ConfigError for a value the option schema would have refused.
 */

import { z } from 'zod';
import { DURATION_EXPECTED, formatDuration, parseDuration, type DurationParse } from '../../config/duration.js';
import { ConfigError } from '../../core/errors.js';
import { isRecord } from '../../core/record.js';

export type DurationText = string | number;

/**
 * The longest duration a stage takes: far past any greylist age or rate window, and far below
 * where twice it (a row's lifetime) stops being an exact integer of milliseconds, as which a
 * store keeps expiry times: past that every request of the stage failed.
 */
const LONGEST_MS = 3650 * 86_400_000;

/**
 * A duration option; minMs refuses shorter ones (a window of 0 would divide by zero), and none
 * may be longer than LONGEST_MS (ten years). The value
 * comes out in one written form with its unit ("5m" for 300 or "300s"), which reads the same
 * however often it is parsed, and which `callout config print` can print as it is: a bare
 * number there would be taken for milliseconds, as the schema's own durations are kept.
 */
export function durationOption(fallback: string, minMs = 0) {
  return z
    // zod's number refuses Infinity and NaN, and the union then said only "Invalid input".
    .union([z.string(), z.number()], { error: DURATION_EXPECTED })
    .default(fallback)
    .superRefine((value, ctx) => {
      const parsed = parseDuration(value);
      if (!parsed.ok) ctx.addIssue({ code: 'custom', message: parsed.reason });
      else if (parsed.ms < minMs) ctx.addIssue({ code: 'custom', message: `expected at least ${formatDuration(minMs)}` });
      else if (parsed.ms > LONGEST_MS) ctx.addIssue({ code: 'custom', message: `expected at most ${formatDuration(LONGEST_MS)}` });
    })
    .transform((value): DurationText => {
      const parsed = parseDuration(value);
      return parsed.ok ? formatDuration(parsed.ms) : value;
    });
}

/**
 * The options of a stage's checks across its options (superRefine): they run even when another
 * option is wrong, so that one start reports every problem, but not on what is no object at all,
 * whose fields they would read.
 */
export const ACROSS_OPTIONS = { when: (payload: { value: unknown }) => isRecord(payload.value) };

/**
 * A duration option as a check across keys (a superRefine run `when` another option is wrong)
 * finds it: anything, when that option is the wrong one.
 */
export function checkedDuration(value: unknown): DurationParse {
  return typeof value === 'string' || typeof value === 'number' ? parseDuration(value) : { ok: false, reason: 'not a duration' };
}

export function durationMs(value: DurationText): number {
  const parsed = parseDuration(value);
  if (!parsed.ok) throw new ConfigError(`got ${JSON.stringify(value)}, ${parsed.reason}`);
  return parsed.ms;
}
