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
 */

/** JSON.parse, or undefined for text that is no JSON. */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

export const isRecord = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);
