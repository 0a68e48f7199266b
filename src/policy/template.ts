/**
 * NAME
 *   policy/template - the configured texts of answers and headers, with their placeholders filled
 *
 * SYNOPSIS
 *   const text = compileTemplate(opts.rejectText, { '{sender}': 'sender', '{reason}': 'reason' });
 *   text.fill({ sender, reason });
 *
 * DESCRIPTION
 *   compileTemplate(text, placeholders) splits a configured text once, when the stage is made,
 *   at the placeholders it names (`{reason}`, and aliases such as postgrey's `%s`), the longest
 *   first where two start at one place; fill(values) joins the pieces with the values in one
 *   pass. A value goes in as it is. The chained String.replaceAll this replaces read `$&`, `$'`
 *   and "$`" in a value as references to the text around the match, so a sender of "a$`b" put
 *   the reply's own text inside it, and a value holding a later placeholder (a sender with
 *   `{reason}` in its local part) had that filled in as well; both are the client's input.
 *   uses(key) tells whether the text has a placeholder for key, so that a value that costs
 *   something (a date) is only worked out for a text that shows it.
 */

export interface Template<K extends string> {
  fill(values: Readonly<Record<K, string>>): string;
  uses(key: K): boolean;
}

export function compileTemplate<K extends string>(text: string, placeholders: Readonly<Record<string, K>>): Template<K> {
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
