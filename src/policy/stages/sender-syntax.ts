/**
 * NAME
 *   stages/sender-syntax - refuse envelope senders that are not RFC 5321 paths
 *
 * DESCRIPTION
 *   A sender that does not parse cannot receive bounces and cannot be verified; the reply says
 *   which rule it broke and where (501 5.7.1: RFC 3463's X.1.7 "bad sender's mailbox address
 *   syntax" would be rewritten by Postfix into X.1.3, a recipient code, because it reports a
 *   policy answer in smtpd_recipient_restrictions as recipient status).
 *   The null sender is valid (bounces, RFC 5321 §4.5.5).
 */

import { z } from 'zod';
import type { StageDefinition, StageVerdict } from '../types.js';
import { compileTemplate } from '../template.js';
import { enhancedStatusOption } from './status-option.js';

const options = z
  .object({
    // A sender that does not parse will not parse on a retry either: permanent codes only.
    code: z.number().int().min(500).max(599).default(501),
    enhanced: enhancedStatusOption('5').default('5.7.1'),
    text: z.string().default('Bad sender address syntax'),
  })
  .strict();

export const senderSyntaxStage: StageDefinition<z.output<typeof options>> = {
  name: 'sender-syntax',
  defaultStates: ['MAIL', 'RCPT'],
  options,
  create(opts) {
    const text = compileTemplate(opts.text, {}, 'text').fill({});
    const parses: StageVerdict = { stage: 'sender-syntax', result: 'valid', reason: 'sender parses', decision: { kind: 'continue' } };
    const nullSender: StageVerdict = { ...parses, reason: 'null sender' };
    return {
      name: 'sender-syntax',
      states: new Set(['MAIL', 'RCPT']),
      evaluate(ctx) {
        if (ctx.sender) return ctx.senderText ? parses : nullSender;
        const reason = `<${ctx.senderText}>: ${ctx.senderError ?? 'does not parse'}`;
        return {
          stage: 'sender-syntax',
          result: 'invalid',
          reason,
          decision: { kind: 'reject', code: opts.code, enhanced: opts.enhanced, text: `${text}: ${reason}` },
        };
      },
    };
  },
};
