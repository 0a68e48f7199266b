/**
 * NAME
 *   test/support/exit-hooks - cleanup that runs however a test process ends
 *
 * DESCRIPTION
 *   onExit(hook) runs hook (synchronous work only) when the process exits. A test file that
 *   outlives the runner's --test-timeout is ended with SIGTERM (Ctrl-C sends SIGINT, a closed
 *   terminal SIGHUP), and a signal's default action ends Node without its 'exit' event: the
 *   Postfix masters, redis-servers, postsrsd and `callout serve` children that the support
 *   modules started would stay behind, holding the fixed ports the next run needs. So the first
 *   onExit also makes those signals exit through process.exit (status 128 + the signal's
 *   number), which runs the hooks.
 */

import { constants } from 'node:os';

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
let signalsHandled = false;

export function onExit(hook: () => void): void {
  process.on('exit', hook);
  if (signalsHandled) return;
  signalsHandled = true;
  for (const signal of SIGNALS) process.once(signal, () => process.exit(128 + constants.signals[signal]));
}
