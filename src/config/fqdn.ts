/**
 * NAME
 *   config/fqdn - the host name callout announces in EHLO
 *
 * DESCRIPTION
 *   RFC 5321 §4.1.1.1: EHLO names the client's host by its fully qualified domain name (or an
 *   address literal, which callout never sends: a receiving MX that checks the name would
 *   distrust it). FQDN_PATTERN is the form callout.helo, a stage's own helo and the host name
 *   it falls back to must have: dot-separated LDH labels of 1 to 63 octets, 253 in all, the
 *   last one starting with a letter (so that an address is not taken for a name).
 *   isAnnounceable(name) adds that the name must not be one that only this machine or its
 *   network can resolve: localhost and names under .localhost (RFC 6761), .localdomain (the
 *   name many installers leave, "localhost.localdomain") and .local (mDNS, RFC 6762). Sent to
 *   another site's MX such a name identifies nobody, and callouts are to identify themselves
 *   honestly. hostHelo() is the name callout.helo falls back to: the host's own, when it is
 *   announceable.
 */

import { isAscii } from 'node:buffer';
import { hostname } from 'node:os';
import { z } from 'zod';

export const FQDN_PATTERN = /^(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

const LOCAL_ONLY_NAME = /(?:^|\.)(?:localhost|localdomain|local)$/i;

export function isAnnounceable(name: string): boolean {
  return FQDN_PATTERN.test(name) && !LOCAL_ONLY_NAME.test(name);
}

/** callout.helo when it is not set: this host's name, or none (and no callouts). */
export function hostHelo(): string | undefined {
  const name = hostname();
  return isAnnounceable(name) ? name : undefined;
}

/**
 * What is wrong with a name as callout.helo, one problem in words that say what to write, or
 * undefined. A name as a zone file or dig writes it (a final dot) and a Unicode name were
 * refused as "expected a fully qualified domain name", which each of them is; `localhost` was
 * refused twice, once as no FQDN and once as a local-only name.
 */
function heloProblem(name: string): string | undefined {
  // With its final dot too: `mx.local.` was told to drop the dot, and then that it is local-only.
  if (LOCAL_ONLY_NAME.test(name.replace(/\.$/, ''))) return 'names no host outside this machine or its network (localhost, .localdomain, .local): give the name other sites know this host by, such as mx.example.org';
  if (FQDN_PATTERN.test(name)) return undefined;
  if (name.endsWith('.') && FQDN_PATTERN.test(name.slice(0, -1))) return `expected the name without its final dot, ${name.slice(0, -1)}: EHLO sends the name as written`;
  if (!isAscii(Buffer.from(name))) return 'expected the name in A-labels (xn--...), as EHLO sends it: an EHLO name is ASCII (RFC 5321 §4.1.1.1)';
  return 'expected a fully qualified domain name such as mx.example.org (RFC 5321 §4.1.1.1: EHLO names our host)';
}

export const fqdn = z.string().superRefine((name, ctx) => {
  const problem = heloProblem(name);
  if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
});
