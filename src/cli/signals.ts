/**
 * NAME
 *   cli/signals - what the long-running commands do with SIGUSR1
 *
 * DESCRIPTION
 *   ignoreInspectorSignal(log, message) logs `message` at warn on each SIGUSR1 and does nothing
 *   else, for `callout serve` (its workers too) and `callout rewrite serve`. Without a listener
 *   Node answers SIGUSR1, which administrators send daemons to reopen their logs, by opening its
 *   inspector on 127.0.0.1:9229: a debugger without authentication, with which any local user
 *   could run code as the service (its store, its secrets). It returns the function that removes
 *   the listener, for a command that stops without its process ending (rewrite serve in tests).
 */

export function ignoreInspectorSignal(log: { warn(fields: Record<string, unknown>, message: string): void }, message: string): () => void {
  const ignored = () => log.warn({}, message);
  process.on('SIGUSR1', ignored);
  return () => void process.off('SIGUSR1', ignored);
}
