/**
 * NAME
 *   policy/template - the configured texts of answers and headers, with their placeholders filled
 *
 * SYNOPSIS
 *   const text = compileTemplate(opts.rejectText, { '{sender}': 'sender', '{reason}': 'reason' }, 'rejectText');
 *   text.fill({ sender, reason });
 *
 * DESCRIPTION
 *   compileTemplate(text, placeholders, option) splits a configured text once, when the stage
 *   is made, at the placeholders it names (`{reason}`, and aliases such as postgrey's `%s`), the
 *   longest first where two start at one place; fill(values) joins the pieces with the values
 *   in one pass. A value goes in as it is. The chained String.replaceAll this replaces read `$&`, `$'`
 *   and "$`" in a value as references to the text around the match, so a sender of "a$`b" put
 *   the reply's own text inside it, and a value holding a later placeholder (a sender with
 *   `{reason}` in its local part) had that filled in as well; both are the client's input.
 *   uses(key) tells whether the text has a placeholder for key, so that a value that costs
 *   something (a date) is only worked out for a text that shows it.
 *
 *   A `{word}` (letters, digits, `_`, `-`) that is none of the text's placeholders throws
 *   ConfigError naming the option and what the text takes: `{reson}` for `{reason}`, or another
 *   text's placeholder, went out to SMTP clients as it was written. There is no escape for a
 *   literal `{word}`; other braces (`{`, `{}`, `{a b}`) and postgrey's `%` aliases are text.
 */

import { ConfigError } from '../core/errors.js';

export interface Template<K extends string> {
  fill(values: Readonly<Record<K, string>>): string;
  uses(key: K): boolean;
}

/** `{word}` left in a literal piece: a placeholder the text does not take (a typo, or another text's). */
const UNKNOWN_PLACEHOLDER = /\{[A-Za-z0-9_-]+\}/g;

export function compileTemplate<K extends string>(text: string, placeholders: Readonly<Record<string, K>>, option: string): Template<K> {
  const tokens = Object.keys(placeholders).sort((a, b) => b.length - a.length);
  // literals[i] comes before keys[i]; the last literal ends the text.
  const literals: string[] = [];
  const keys: K[] = [];
  let literalStart = 0;
  for (let at = 0; at < text.length; ) {
    const token = tokens.find((candidate) => text.startsWith(candidate, at));
    if (token === undefined) {
      at += 1;
      continue;
    }
    literals.push(text.slice(literalStart, at));
    keys.push(placeholders[token]!);
    at += token.length;
    literalStart = at;
  }
  literals.push(text.slice(literalStart));
  const unknown = [...new Set(literals.flatMap((literal) => literal.match(UNKNOWN_PLACEHOLDER) ?? []))];
  if (unknown.length > 0) {
    const taken = Object.keys(placeholders);
    throw new ConfigError(
      `${option}: unknown placeholder${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')}; ${taken.length > 0 ? `this text takes ${taken.join(', ')}` : 'this text takes no placeholders'}`,
    );
  }
  const used = new Set(keys);
  return {
    fill(values) {
      let out = literals[0]!;
      for (let i = 0; i < keys.length; i++) out += values[keys[i]!] + literals[i + 1]!;
      return out;
    },
    uses: (key) => used.has(key),
  };
}
