/**
 * NAME
 *   stages/postmaster - postmaster and abuse are always reachable
 *
 * DESCRIPTION
 *   RFC 5321 §4.5.1 requires every domain to accept mail for postmaster, and RFC 2142 names
 *   abuse as the role address for complaints. A sender that fails our checks must still be
 *   able to tell us so; a recipient in `localParts` ends the pipeline with DUNNO before any
 *   sender check, as Postfix sites do with a check_recipient_access table.
 *
 *   postmaster is always one of them: RFC 5321 requires it, so a site that lists its own role
 *   addresses (hostmaster, security) cannot drop it by accident.
 *
 * CONFIGURATION
 *   localParts (default postmaster, abuse; postmaster is added when missing), acceptAction (DUNNO)
 */

import { z } from 'zod';
import { asciiLower } from '../../address/index.js';
import type { StageDefinition, StageVerdict } from '../types.js';

const options = z
  .object({
    // A local part alone: an entry such as abuse@example.org would match no recipient, and
    // leave abuse@ unprotected without a word.
    localParts: z.array(z.string().trim().regex(/^[^\s@]+$/, 'expected a local part such as abuse, without @domain (a role is reachable at every domain)')).default(['postmaster', 'abuse']),
    acceptAction: z.enum(['DUNNO', 'OK']).default('DUNNO'),
  })
  .strict();

export const postmasterStage: StageDefinition<z.output<typeof options>> = {
  name: 'postmaster',
  defaultStates: ['RCPT'],
  options,
  create(opts) {
    const roles = new Set(['postmaster', ...opts.localParts.map((l) => asciiLower(l.trim()))]);
    const other: StageVerdict = { stage: 'postmaster', result: 'other', reason: 'not a role address', decision: { kind: 'continue' } };
    return {
      name: 'postmaster',
      states: new Set(['RCPT']),
      evaluate(ctx) {
        // A bare "<Postmaster>" (no domain) parses to no mailbox but is the same role.
        // A-Z folded only: Unicode case makes \u212Aontakt (a Kelvin sign) the role kontakt.
        const local = ctx.recipient ? asciiLower(ctx.recipient.localPart) : (/^<?postmaster>?$/i.test(ctx.recipientText) ? 'postmaster' : undefined);
        if (local !== undefined && roles.has(local)) {
          return { stage: 'postmaster', result: 'role', reason: `${ctx.recipientText} is a role address that must always be reachable (RFC 5321 §4.5.1, RFC 2142)`, decision: { kind: 'accept' } };
        }
        return other;
      },
    };
  },
};
