/**
 * NAME
 *   core/record - whether a value read from outside is an object of named fields
 *
 * DESCRIPTION
 *   isRecord(value) is true for any object but null and arrays: a YAML mapping as the
 *   configuration file gives it, a message from another process as the IPC channel gives it.
 *   Its fields are then read one by one, each checked. The prototype is not looked at.
 */

export const isRecord = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);
