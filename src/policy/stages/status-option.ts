/**
 * NAME
 *   stages/status-option - an enhanced status code in a stage's options
 *
 * DESCRIPTION
 *   enhancedStatusOption(classes) is the schema of an option such as `enhanced` or
 *   `rejectEnhanced`: an RFC 3463 code class.subject.detail whose class is one of `classes`
 *   ('4', '5' or '45'). One definition for every stage, so that a bad value is refused with
 *   what is expected, where zod said "Invalid string: must match pattern /^5\.\d{1,3}\.\d{1,3}$/".
 *
 *   enhancedInCodeClass(codeKey, enhancedKey) refines the options of a stage whose reply code
 *   may be 4xx or 5xx (tarpit's hardCode): its enhanced code must be of the code's class (RFC
 *   3463 §2). policy/actions would send another class in the code's, so `421` with `5.7.0`
 *   went out as `421 4.7.0` without a word; it is refused, naming both keys.
 */

import { z } from 'zod';

export function enhancedStatusOption(classes: '4' | '5' | '45') {
  const pattern = new RegExp(`^[${classes}]\\.\\d{1,3}\\.\\d{1,3}$`);
  return z.string().regex(pattern, `expected an enhanced status code of class ${[...classes].join(' or ')}, such as ${classes[0]}.7.1 (RFC 3463: class.subject.detail, each of 1 to 3 digits)`);
}

/** A superRefine of an options object (see DESCRIPTION), run also when another option is wrong. */
export function enhancedInCodeClass<K extends string, E extends string>(codeKey: K, enhancedKey: E) {
  return (o: { [key in K | E]?: unknown }, ctx: z.RefinementCtx): void => {
    const code = o[codeKey];
    const enhanced = o[enhancedKey];
    // A malformed value is refused by its own key's schema alone.
    if (typeof code !== 'number' || !/^[45]\d\d$/.test(String(code)) || typeof enhanced !== 'string' || !/^[45]\.\d{1,3}\.\d{1,3}$/.test(enhanced)) return;
    const klass = String(code).charAt(0);
    if (enhanced.charAt(0) === klass) return;
    ctx.addIssue({ code: 'custom', path: [enhancedKey], message: `expected an enhanced status code of class ${klass}, as ${codeKey} (${code}) is (RFC 3463 §2), such as ${klass}.7.0` });
  };
}
