/**
 * NAME
 *   core/ids - ids no other maker gives, in this process or another sharing a store
 *
 * DESCRIPTION
 *   uniqueIdSource() returns a maker of ids: a random UUID of the maker, then a count. The
 *   UUID tells the makers of every process on a store (two daemons on one Redis) apart, the
 *   count the ids of one maker, without asking the random source again for each. Used for the
 *   per-host leases of verify/politeness and the lock tokens of verify/cache, which a process
 *   gives back only while they still hold its own id.
 */

import { randomUUID } from 'node:crypto';

export function uniqueIdSource(): () => string {
  const owner = randomUUID();
  let count = 0;
  return () => `${owner}:${++count}`;
}
