/**
 * NAME
 *   test/support/daemon - a policy daemon in the test process, with one client connected to it
 *
 * DESCRIPTION
 *   startDaemonWithClient(options, cleanups) starts src/policy/daemon with the options given,
 *   connects one PolicyClient to its listener, and pushes onto `cleanups` what closes both, so a
 *   test file's after-each hook tears down whatever its cases started.
 */

import { Daemon, type DaemonOptions } from '../../src/policy/daemon.js';
import { PolicyClient } from './policy-client.js';

export async function startDaemonWithClient(
  options: DaemonOptions,
  cleanups: Array<() => Promise<void> | void>,
): Promise<{ daemon: Daemon; client: PolicyClient }> {
  const daemon = await Daemon.start(options);
  const client = await PolicyClient.connect(daemon.policyAddress);
  cleanups.push(async () => {
    client.close();
    await daemon.stop();
  });
  return { daemon, client };
}
