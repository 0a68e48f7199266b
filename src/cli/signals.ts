/**
 * NAME
 *   cli/signals - what the long-running commands do with SIGUSR1, and SIGHUP while starting
 *
 * DESCRIPTION
 *   ignoreInspectorSignal(log, message) logs `message` at warn on each SIGUSR1 and does nothing
 *   else, for `callout serve` (its workers too) and `callout rewrite serve`. Without a listener
 *   Node answers SIGUSR1, which administrators send daemons to reopen their logs, by opening its
 *   inspector on 127.0.0.1:9229: a debugger without authentication, with which any local user
 *   could run code as the service (its store, its secrets). It returns the function that removes
 *   the listener, for a command that stops without its process ending (rewrite serve in tests).
 *
 *   holdStartupReloads(), the first thing cli/main does, counts the SIGHUPs that come while
 *   Node loads the commands, whose default action would end the process before any command
 *   could take them. The command that handles SIGHUP takes them with takeStartupReloads()
 *   once its own listener is in place (`callout serve`: they came before it read its
 *   configuration, so its start is their reload; `callout rewrite serve`: before it read its
 *   secret files); such commands are marked with reloadingCommand(). releaseStartupReloads()
 *   gives them back to every other command: the listener goes, and one that came is sent again,
 *   ending the process as it would have.
 */

export function ignoreInspectorSignal(log: { warn(fields: Record<string, unknown>, message: string): void }, message: string): () => void {
  const ignored = () => log.warn({}, message);
  process.on('SIGUSR1', ignored);
  return () => void process.off('SIGUSR1', ignored);
}

/** The SIGHUPs held since holdStartupReloads, until they are taken or released. */
let startup: { held: number; listener: () => void } | undefined;

export function holdStartupReloads(): void {
  const hold = { held: 0, listener: () => void (hold.held += 1) };
  startup = hold;
  process.on('SIGHUP', hold.listener);
}

/** Ends the hold: how many SIGHUPs came during it (0 when nothing was held). */
export function takeStartupReloads(): number {
  if (!startup) return 0;
  process.off('SIGHUP', startup.listener);
  const { held } = startup;
  startup = undefined;
  return held;
}

/** Ends the hold for a command that takes no SIGHUP: one that came ends the process now, by the signal. */
export function releaseStartupReloads(): void {
  if (takeStartupReloads() > 0) process.kill(process.pid, 'SIGHUP');
}

/** The commands that take SIGHUP themselves (reloadingCommand), whose held SIGHUPs are never sent again. */
const reloading = new WeakSet<object>();

/**
 * Marks a command whose action takes SIGHUP (`serve` reloads, `rewrite serve` reads its secret
 * files again) and takes the held ones with takeStartupReloads once its listener is in place: one
 * sent again would end the very service it was meant to reload, and one held while such a
 * command fails to start (a bad configuration, exit 78) must not turn its exit status into a
 * death by SIGHUP, which systemd counts as clean.
 */
export function reloadingCommand<T extends object>(command: T): T {
  reloading.add(command);
  return command;
}

export function takesReloads(command: object): boolean {
  return reloading.has(command);
}
