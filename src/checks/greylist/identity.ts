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
 *   Confirming the name is checks/iprev's job.
 */

import { getDomain } from 'tldts';
import { parseIp } from '../../core/ip.js';
const ACCESS_LABEL = /(?:^|[.-])(?:dyn|dynamic|dhcp|pool|dsl|adsl|xdsl|vdsl|cable|ppp|pppoe|dialup|dial|broadband|bb|client|clients|cust|customer|home|user|users|residential|res|nat|wifi|wireless|mobile|dip)(?:[.-]|\d|$)/;

/** Whether a host name embeds its address or names an access network (see DESCRIPTION). */
export function looksDynamic(name: string, address: string): boolean {
  const lower = name.toLowerCase();
  const host = lower.split('.').slice(0, -2).join('.');
  if (ACCESS_LABEL.test(host)) return true;
  const parsed = parseIp(address);
  if (!parsed || parsed.family !== 4) return /[0-9a-f]{4}[.-][0-9a-f]{1,4}[.-][0-9a-f]{1,4}/.test(host);
  const octets = address.split('.');
  // Digit groups without their leading zeros: host-089-123-045-067 embeds 89.123.45.67.
  const digits = host.replace(/[^0-9]+/g, '.').replace(/(^|\.)0+(?=\d)/g, '$1');
  const forward = octets.join('.');
  const reverse = [...octets].reverse().join('.');
  const hex = Number(parsed.bits).toString(16).padStart(8, '0');
  return digits.includes(forward) || digits.includes(reverse) || host.includes(hex) || host.includes(String(Number(parsed.bits)));
}

/** The registrable domain of a host name, or undefined (a bare public suffix, an IP literal). */
export function organisationalDomain(name: string): string | undefined {
  return getDomain(name.toLowerCase().replace(/\.$/, ''), { allowPrivateDomains: true }) ?? undefined;
}
