/**
 * NAME
 *   config/networks - a list of IP addresses and networks in the configuration
 *
 * DESCRIPTION
 *   networkList() is the schema of every such list: callout.allowTargets, the allowlist
 *   stage's `clients`, the tarpit and ratelimit stages' `exemptClients`. Each entry is read as
 *   AddressSet.parse reads it (core/ip parseNetwork: an address, a CIDR without host bits after
 *   its prefix, IPv6 bracketed or not), so what the schema takes the stage can build. Checked
 *   here, entry by entry, a bad one is named by its index with the schema's other problems, and
 *   every bad one in one run: refused when the stage was built, only the first was named, only
 *   once the rest of the configuration was right, and without its index.
 *
 * ERRORS
 *   An entry that is no address is refused with examples of what is, e.g.
 *   `policy.stages.1.clients.2 (allowlist): got "x", expected an IPv4 or IPv6 address or
 *   network (192.0.2.0/24, 2001:db8::/32)`; one that is nearly right with what is wrong with it
 *   (host bits set after the prefix, naming the network meant; an octet with a leading zero; a
 *   prefix length out of range): core/ip networkExpected, which the postgrey whitelist files'
 *   problems share.
 */

import { z } from 'zod';
import { networkExpected, parseNetwork } from '../core/ip.js';

export function networkList() {
  return z
    .array(
      z.string().superRefine((entry, ctx) => {
        const parsed = parseNetwork(entry);
        if (!parsed.ok) ctx.addIssue({ code: 'custom', message: networkExpected(parsed) });
      }),
    )
    .default([]);
}
