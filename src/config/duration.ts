/**
 * NAME
 *   config/duration - durations as administrators write them: "30s", "5m", "2h", "7d", "1w"
 *
 * DESCRIPTION
 *   The units and their meaning follow Postfix's time values (s, m, h, d, w); a bare number
 *   is seconds. Results are milliseconds. Fractions are allowed ("1.5h"), negative values are not.
 *
 * LIMITS
 *   At most Number.MAX_SAFE_INTEGER ms (285,000 years); the settings that set a timer have
 *   their own, smaller bound (config/schema).
 */

const UNIT_MS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};

/** The longest delay a Node.js timer takes; anything longer fires after 1 ms (with a warning). */
export const TIMER_MAX_MS = 2 ** 31 - 1;
/** TIMER_MAX_MS as a refusal says it, after the bound in whatever unit the setting takes. */
export const TIMER_MAX_TEXT = 'about 24 days';

/** What a duration setting takes, for a value of no accepted type (YAML's .nan, .inf, 1e309, true). */
export const DURATION_EXPECTED = 'expected a duration such as 30s, 5m, 2h, 7d, or a number of seconds';

/**
 * A refusal's reason says what was expected, not the value: every message that gives it has
 * quoted the value already ("cache.tempfail: got "5 min", expected a duration ..."), and the
 * reason that quoted it again read `got "5 min", "5 min" is not a duration`.
 */
export type DurationParse = { ok: true; ms: number } | { ok: false; reason: string };

const TOO_LONG = 'expected a shorter duration: callout keeps none longer than 285,000 years';

export function parseDuration(input: string | number): DurationParse {
  if (typeof input === 'number') {
    if (!Number.isFinite(input) || input < 0) return { ok: false, reason: 'expected a number of seconds, 0 or more' };
    const ms = Math.round(input * 1000) || 0; // -0 is 0
    if (!Number.isSafeInteger(ms)) return { ok: false, reason: TOO_LONG };
    return { ok: true, ms };
  }
  // Trimmed first: two runs of \s* side by side backtracked quadratically on "1", spaces, "x".
  const match = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?$/.exec(input.trim());
  if (!match) return { ok: false, reason: DURATION_EXPECTED };
  const unit = UNIT_MS[match[2] ?? 's'] ?? 1000;
  const ms = Math.round(Number(match[1]) * unit);
  // Digits enough make Infinity, and any timer or expiry past 2^53 ms is nonsense.
  if (!Number.isSafeInteger(ms)) return { ok: false, reason: TOO_LONG };
  return { ok: true, ms };
}

/** The shortest exact spelling of a duration, for `config print` and log lines. */
export function formatDuration(ms: number): string {
  for (const unit of ['w', 'd', 'h', 'm', 's'] as const) {
    const size = UNIT_MS[unit] ?? 1;
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
