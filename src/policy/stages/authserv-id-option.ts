/**
 * NAME
 *   stages/authserv-id-option - the authserv-id of a stage's Authentication-Results
 *
 * DESCRIPTION
 *   authservIdOption() is the schema of the `authservId` option of the spf and iprev stages,
 *   default this host's name: a MIME token (printable ASCII without white space or specials,
 *   checks/auth-results isToken), which the header writes as it is. The header formatting
 *   (checks/auth-results) replaces anything else with "?", so that DNS data can never inject a
 *   header line, and quotes any other value: "mx.bücher.example" went out as
 *   "mx.b?cher.example" and "mx example" quoted, fields that the site's own filters, which
 *   trust only its authserv-id (RFC 8601 §5), never recognised, and that neither stage joined.
 *   An internationalised name is written as its A-labels.
 */

import { hostname } from 'node:os';
import { z } from 'zod';
import { isToken } from '../../checks/auth-results.js';

export function authservIdOption() {
  return z
    .string()
    .refine(isToken, "expected this host's name as an RFC 2045 token: printable ASCII without spaces or any of ()<>@,;:\\\"/[]?=, such as mx.example.net (an internationalised name as its A-labels, xn--...)")
    .default(hostname());
}
