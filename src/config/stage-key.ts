/**
 * NAME
 *   config/stage-key - how a problem names a policy stage's entry and option
 *
 * DESCRIPTION
 *   One format for every problem with a stage's entry, whether the schema found it (config/schema,
 *   a value of the wrong type or range) or the stage when it was built (policy/pipeline, a file it
 *   could not read, an unknown placeholder): the full dotted key, then the stage's name, e.g.
 *   `policy.stages.1.delay (greylist): got ...` and `policy.stages.1.text (greylist): unknown
 *   placeholder ...`; `policy.stages.1 (greylist): ...` for a problem of no one option. There
 *   were two (`policy.stages.1.delay: ...` and `policy.stages.1 (greylist): text: ...`), and
 *   `config check` printed both side by side.
 */

/** The key of stage entry `index` (its option `key`, dotted, if any) with the stage's name. */
export function stageKey(index: number, name: string, key = ''): string {
  return `policy.stages.${index}${key === '' ? '' : `.${key}`} (${name})`;
}
