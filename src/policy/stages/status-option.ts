/**
 * NAME
 *   stages/status-option - an enhanced status code in a stage's options
 *
 * DESCRIPTION
 *   enhancedStatusOption(classes) is the schema of an option such as `enhanced` or
 *   `rejectEnhanced`: an RFC 3463 code class.subject.detail whose class is one of `classes`
 *   ('4', '5' or '45'). One definition for every stage, so that a bad value is refused with
 *   what is expected, where zod said "Invalid string: must match pattern /^5\.\d{1,3}\.\d{1,3}$/".
 */

import { z } from 'zod';

export function enhancedStatusOption(classes: '4' | '5' | '45') {
  const pattern = new RegExp(`^[${classes}]\\.\\d{1,3}\\.\\d{1,3}$`);
  return z.string().regex(pattern, `expected an enhanced status code of class ${[...classes].join(' or ')}, such as ${classes[0]}.7.1 (RFC 3463: class.subject.detail, each of 1 to 3 digits)`);
}
