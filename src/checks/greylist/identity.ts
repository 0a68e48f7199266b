/**
 * NAME
 *   greylist/identity - who the client is, for the greylist key
 *
 * DESCRIPTION
 *   postgrey keys a triplet by the client's network (/24, /64), which delays a sender pool
 *   (Microsoft 365, Amazon SES, Google, Mimecast) for hours: each retry comes from another
 *   address. The alternative identity is the organisational domain of the client's
 *   forward-confirmed reverse-DNS name (RFC 8601 §3 iprev: the PTR name resolves back to the
 *   address), e.g. outlook.com for mail-db5eur01.outbound.protection.outlook.com. Only a
 *   confirmed name may be used: anyone who controls a reverse zone can write any PTR name.
 *
 *   A confirmed name is still refused as an identity when it looks like an access-network
 *   name (it embeds the address, or labels such as dyn, dsl, pool, dhcp): every host of a
 *   provider's customer range would then share one identity, and one retrying bot would open
 *   the greylist for all of them.
 *   The organisational domain is the registrable domain under the Public Suffix List (tldts),
 *   its private section included: under a suffix such as cloudapp.net or members.linode.com
 *   each customer's name is its own organisation, not the hoster's.
 *   A client may have several confirmed names, of one organisation or of several (a host
 *   named by its operator and by a customer it sends for). confirmedOrganisation takes, among
 *   those that do not look dynamic, the smallest organisational domain in code-point order, so
 *   that the identity does not depend on the order of the PTR answer: resolvers rotate it, and
 *   keyed by the first confirmed name, a retry could find itself a new triplet, deferred again.
 *   Confirming the names is checks/iprev's job.
 */

import { getDomain } from 'tldts';
import { clientAddress } from '../client-ip.js';
import { compareKeys } from '../../store/semantics.js';
const ACCESS_LABEL = /(?:^|[.-])(?:dyn|dynamic|dhcp|pool|dsl|adsl|xdsl|vdsl|cable|ppp|pppoe|dialup|dial|broadband|bb|client|clients|cust|customer|home|user|users|residential|res|nat|wifi|wireless|mobile|dip)(?:[.-]|\d|$)/;

/** Whether a host name embeds its address or names an access network (see DESCRIPTION). */
export function looksDynamic(name: string, address: string): boolean {
  const lower = name.toLowerCase();
  const host = lower.split('.').slice(0, -2).join('.');
  if (ACCESS_LABEL.test(host)) return true;
  // An IPv4-mapped address (::ffff:a.b.c.d) is the IPv4 host it names, as it is for the
  // network identity: read as IPv6, a name embedding a.b.c.d went unnoticed.
  const client = clientAddress(address);
  if (!client || client.family !== 4) {
    if (/[0-9a-f]{4}[.-][0-9a-f]{1,4}[.-][0-9a-f]{1,4}/.test(host)) return true;
    if (!client) return false;
    // The interface identifier (the low 64 bits) as hex digits, in order or nibble-reversed as
    // in ip6.arpa (5.0.0.0...): the forms of names an ISP generates for each of its hosts.
    const iid = (client.host.network & 0xffffffffffffffffn).toString(16).padStart(16, '0');
    const hexDigits = host.replace(/[^0-9a-f]+/g, '');
    return hexDigits.includes(iid) || hexDigits.includes([...iid].reverse().join(''));
  }
  const bits = client.host.network;
  const octets = client.text.split('.');
  // Digit groups without their leading zeros: host-089-123-045-067 embeds 89.123.45.67.
  const digits = host.replace(/[^0-9]+/g, '.').replace(/(^|\.)0+(?=\d)/g, '$1');
  const forward = octets.join('.');
  const reverse = [...octets].reverse().join('.');
  const hex = Number(bits).toString(16).padStart(8, '0');
  return digits.includes(forward) || digits.includes(reverse) || host.includes(hex) || host.includes(String(Number(bits)));
}

/** The registrable domain of a host name, or undefined (a bare public suffix, an IP literal). */
export function organisationalDomain(name: string): string | undefined {
  return getDomain(name.toLowerCase().replace(/\.$/, ''), { allowPrivateDomains: true }) ?? undefined;
}

/**
 * The organisation that a client's forward-confirmed names (checks/iprev confirmedNames) make
 * its identity, whatever their order, or undefined when none will do (see DESCRIPTION).
 */
export function confirmedOrganisation(names: readonly string[], address: string): string | undefined {
  let chosen: string | undefined;
  for (const name of names) {
    const organisation = looksDynamic(name, address) ? undefined : organisationalDomain(name);
    if (organisation !== undefined && (chosen === undefined || compareKeys(organisation, chosen) < 0)) chosen = organisation;
  }
  return chosen;
}
