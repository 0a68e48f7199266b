/**
 * NAME
 *   test/support/heap - the heap in use after a full collection, for tests of what is retained
 *
 * DESCRIPTION
 *   heapAfterGc() exposes V8's gc at run time (as --expose-gc would) and collects before it
 *   reads process.memoryUsage().heapUsed. Measure around work done in a function that has
 *   returned: V8 keeps what a running frame's registers still hold (a finished loop's array).
 */

import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

export function heapAfterGc(): number {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
  return process.memoryUsage().heapUsed;
}
