/**
 * NAME
 *   core/record - reading values that come from outside: JSON text, objects of named fields
 *
 * DESCRIPTION
 *   isRecord(value) is true for any object but null and arrays: a YAML mapping as the
 *   configuration file gives it, a message from another process as the IPC channel gives it.
 *   Its fields are then read one by one, each checked. The prototype is not looked at.
 *   parseJson(text) is JSON.parse that answers undefined for text that is no JSON: a stored
 *   record another program or version wrote, or a damaged one, reads as none, never as a fault.
 *   parseJsonWithin(text, maxLength) does the same for a stored record held to a length: one
 *   longer than any its decoder's writer writes (another program's on a shared Redis, which
 *   takes values of up to 512 MiB) reads as none without being parsed, or kept.
 *
 * LIMITS
 *   maxLength counts UTF-16 code units (String.length), each decoder's own (named at its constant).
 */

/** JSON.parse, or undefined for text that is no JSON. */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

/** parseJson(text), or undefined for text longer than maxLength, which is not parsed. */
export function parseJsonWithin(text: string, maxLength: number): unknown {
  return text.length > maxLength ? undefined : parseJson(text);
}

export const isRecord = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);
