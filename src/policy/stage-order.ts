/**
 * NAME
 *   policy/stage-order - options that read an earlier stage's verdict, where none comes first
 *
 * SYNOPSIS
 *   for (const line of earlierReadGaps(config.policy.stages)) log.warn({}, line);
 *
 * DESCRIPTION
 *   Some options work on what an earlier stage of the same request found (ctx.earlier):
 *   sender-callout's skipOnSpfPass and greylist's skip.spfPassDomains read the `spf` verdict.
 *   With that stage after them, off, or run in none of their protocol states, the option can
 *   never take effect, and nothing said so: the callouts and the greylisting it was to spare
 *   went on. earlierReadGaps() gives one line per such option, naming its key, the stage it
 *   reads and why it gets nothing, for the daemon to warn of at start and reload and for
 *   `callout config check` to print (policy/daemon buildGeneration); a warning, not a refusal,
 *   since the pipeline still answers as configured.
 *
 *   Each stage declares its reads (StageDefinition.earlierReads), for the options as parsed, so
 *   a read turned off is no read. A pipeline without the stage at all is warned of only where
 *   the read says so (EarlierRead.whenAbsent): skipOnSpfPass is on by default, and a pipeline
 *   without spf (the default one) is an ordinary one, while a non-empty skip.spfPassDomains
 *   was written for an spf stage. greylist's use of an earlier iprev stage's confirmed names
 *   is no such read: without one it looks the names up itself.
 */

import type { StageEntry } from '../config/schema.js';
import { STAGE_DEFINITIONS } from './stages/index.js';
import type { ProtocolState } from './types.js';

export function earlierReadGaps(stages: readonly StageEntry[]): string[] {
  const statesOf = (entry: StageEntry): ProtocolState[] => entry.states ?? STAGE_DEFINITIONS.find((d) => d.name === entry.name)?.defaultStates ?? [];
  const lines: string[] = [];
  stages.forEach((entry, index) => {
    const definition = STAGE_DEFINITIONS.find((d) => d.name === entry.name);
    if (entry.mode === 'off' || !definition?.earlierReads) return;
    const { name: _name, mode: _mode, states: _states, ...options } = entry;
    const own = statesOf(entry);
    for (const read of definition.earlierReads(options)) {
      const running = stages.map((other, at) => ({ other, at })).filter(({ other }) => other.name === read.stage && other.mode !== 'off');
      const sharesAState = (other: StageEntry) => statesOf(other).some((state) => own.includes(state));
      if (running.some(({ other, at }) => at < index && sharesAState(other))) continue;
      if (running.length === 0 && !read.whenAbsent) continue;
      const why =
        running.length === 0
          ? [`no ${read.stage} stage runs`]
          : running.map(({ other, at }) =>
              at > index ? `policy.stages.${at} (${read.stage}) runs after it` : `policy.stages.${at} (${read.stage}) runs only in ${statesOf(other).join(', ')}, this stage in ${own.join(', ')}`,
            );
      lines.push(`policy.stages.${index}.${read.option}: reads the verdict of an earlier ${read.stage} stage, but ${why.join('; ')}: ${read.effect}`);
    }
  });
  return lines;
}
