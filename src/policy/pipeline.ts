/**
 * NAME
 *   policy/pipeline - run the configured stages for one policy request and decide
 *
 * DESCRIPTION
 *   Stages run in the configured order, each only in its protocol states. A stage's Decision is
 *   applied according to its mode:
 *     enforce  reject, defer and accept end the pipeline with that action
 *     warn     a would-be reject or defer is logged (Postfix WARN) or noted in a header, and the
 *              pipeline goes on, so an administrator can watch before enforcing
 *     off      the stage does not run
 *   When no stage ends the request, the answer is DUNNO, or PREPEND of a header a stage asked
 *   for. Postfix takes one action per reply, so headers are queued per message (the `instance`
 *   attribute) and given out one per reply, each once per message however many recipients
 *   it has.
 *   Faults (a store outage, a bug in a stage) are answered in one place, by `policy.faultAction`:
 *   fail open (skip the stage) or defer; they never become a rejection.
 *   Every decision is explained by one log line: the request, each stage's result and reason,
 *   and the action.
 */

import type { Clock } from '../core/clock.js';
import { CalloutError, ConfigError, describeError } from '../core/errors.js';
import { BoundedMemo } from '../core/memo.js';
import { parseForwardPath, parseReversePath } from '../address/index.js';
import type { Config, StageEntry } from '../config/schema.js';
import { actionFor, safeHeader, safeText } from './actions.js';
import { isProtocolState, policyRequestFields } from './protocol.js';
import { STAGE_DEFINITIONS } from './stages/index.js';
import type { PolicyAttributes, ProtocolState, Stage, StageContext, StageDeps, StageLogger, StageMode, StageVerdict } from './types.js';

export interface ConfiguredStage {
  stage: Stage;
  mode: StageMode;
  states: ReadonlySet<ProtocolState>;
  /** Action text for an `accept` decision of this stage (allow-lists answer DUNNO by default). */
  acceptAction: string;
}

export interface PipelineOptions {
  decisionTimeoutMs: number;
  faultAction: 'DUNNO' | 'DEFER';
  warnAction: 'WARN' | 'PREPEND';
  clock: Clock;
  log: StageLogger;
}

export interface PipelineOutcome {
  action: string;
  /** The stage whose decision became the action, if any. */
  decidedBy?: string;
  verdicts: StageVerdict[];
  warnings: string[];
  faults: string[];
  durationMs: number;
}

/** Messages whose headers are remembered at once (exported for tests). */
export const MESSAGE_MEMORY_LIMIT = 20_000;
/** How long past the deadline a stage may take before it counts as a fault. */
const STAGE_GRACE_MS = 500;
const MESSAGE_MEMORY_TTL_MS = 3_600_000;
/** Sender and recipient parses remembered (core/memo). */
const PARSE_MEMORY_LIMIT = 8_192;

interface MessageMemory {
  pending: string[];
  given: Set<string>;
  touched: number;
}

export class Pipeline {
  private readonly messages = new Map<string, MessageMemory>();
  private readonly senders = new BoundedMemo((text) => parseReversePath(text, { tolerant: true }), PARSE_MEMORY_LIMIT);
  private readonly recipients = new BoundedMemo((text) => parseForwardPath(text, { tolerant: true }), PARSE_MEMORY_LIMIT);
  /** The stages that watch outcomes (Stage.observe); most pipelines have none. */
  private readonly observers: ConfiguredStage[];

  constructor(
    readonly stages: ConfiguredStage[],
    private readonly options: PipelineOptions,
  ) {
    this.observers = stages.filter((configured) => configured.stage.observe !== undefined);
  }

  async decide(attributes: PolicyAttributes): Promise<PipelineOutcome> {
    const started = Date.now();
    // One context for every stage: `earlier` grows as they run.
    const earlier = new Map<string, StageVerdict>();
    const ctx = this.context(attributes, earlier);
    const verdicts: StageVerdict[] = [];
    const warnings: string[] = [];
    const faults: string[] = [];
    const memory = this.memoryFor(ctx.instance);
    let final: { action: string; stage: string } | undefined;
    // At most one timer per request, made when a stage first has to be waited for: a stage that
    // has not answered shortly after the deadline is a fault, so Postfix always hears from us
    // before its own policy timeout.
    let timer: NodeJS.Timeout | undefined;
    let late: Promise<never> | undefined;
    const lateness = (): Promise<never> => {
      late ??= new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new CalloutError('INTERNAL', `no answer within the decision deadline (${this.options.decisionTimeoutMs} ms)`)),
          Math.max(0, ctx.deadline - this.options.clock.now()) + STAGE_GRACE_MS,
        );
      });
      late.catch(() => undefined);
      return late;
    };

    for (const configured of this.stages) {
      if (configured.mode === 'off' || !configured.states.has(ctx.state)) continue;
      const name = configured.stage.name;
      let verdict: StageVerdict;
      try {
        const answer = configured.stage.evaluate(ctx);
        verdict = answer instanceof Promise ? await Promise.race([answer, lateness()]) : answer;
      } catch (err) {
        const fault = `${name}: ${describeError(err)}`;
        faults.push(fault);
        this.options.log.error({ stage: name, err: describeError(err) }, 'stage fault');
        if (this.options.faultAction === 'DEFER') {
          final = { action: '451 4.3.0 Temporary policy failure, please try again later', stage: name };
          break;
        }
        continue;
      }
      verdicts.push(verdict);
      earlier.set(name, verdict);
      for (const header of verdict.headers ?? []) this.queueHeader(memory, name, header);
      const decision = verdict.decision;
      if (decision.kind === 'continue') continue;
      if (decision.kind === 'prepend') {
        this.queueHeader(memory, name, decision.header);
        continue;
      }
      if (configured.mode === 'warn') {
        if (decision.kind !== 'accept') warnings.push(`${name} would answer ${actionFor(decision)}`);
        continue;
      }
      final = { action: actionFor(decision, configured.acceptAction), stage: name };
      break;
    }

    clearTimeout(timer);
    const action = final?.action ?? this.continueAction(memory, warnings);
    if (this.observers.length > 0) await this.observe(ctx, action, final?.stage);
    return {
      action,
      ...(final ? { decidedBy: final.stage } : {}),
      verdicts,
      warnings,
      faults,
      durationMs: Date.now() - started,
    };
  }

  async close(): Promise<void> {
    await Promise.all(this.stages.map((s) => s.stage.close?.()));
  }

  /** Shows the answer to the stages that observe outcomes (Stage.observe); their faults never change it. */
  private async observe(ctx: StageContext, action: string, decidedBy: string | undefined): Promise<void> {
    for (const { stage, mode, states } of this.observers) {
      if (!stage.observe || mode === 'off' || !states.has(ctx.state)) continue;
      try {
        await stage.observe(ctx, { action, ...(decidedBy ? { decidedBy } : {}), mode });
      } catch (err) {
        this.options.log.error({ stage: stage.name, err: describeError(err) }, 'stage observer fault');
      }
    }
  }

  private context(attributes: PolicyAttributes, earlier: ReadonlyMap<string, StageVerdict>): StageContext {
    const fields = policyRequestFields(attributes);
    // A request without a known state is treated as RCPT, where Postfix sends nearly all of them.
    const state: ProtocolState = isProtocolState(fields.protocolState) ? fields.protocolState : 'RCPT';
    const sender = this.senders.get(fields.sender);
    const recipient = fields.recipient ? this.recipients.get(fields.recipient) : undefined;
    return {
      attributes,
      state,
      clientAddress: fields.clientAddress,
      clientName: fields.clientName || 'unknown',
      heloName: fields.heloName,
      senderText: fields.sender,
      ...(sender.ok ? { sender: sender.value } : { senderError: sender.error.message }),
      recipientText: fields.recipient,
      ...(recipient?.ok && recipient.value.kind === 'mailbox' ? { recipient: recipient.value.mailbox } : {}),
      instance: fields.instance,
      deadline: this.options.clock.now() + this.options.decisionTimeoutMs,
      clock: this.options.clock,
      earlier,
    };
  }

  private continueAction(memory: MessageMemory | undefined, warnings: string[]): string {
    const header = memory?.pending.shift();
    if (header) return `PREPEND ${header}`;
    if (warnings.length === 0) return 'DUNNO';
    if (this.options.warnAction === 'PREPEND') return `PREPEND X-Callout-Warning: ${safeText(warnings.join('; '))}`;
    return `WARN ${safeText(warnings.join('; '))}`;
  }

  /** Headers are keyed by stage and field name, so each is given once per message. */
  private queueHeader(memory: MessageMemory | undefined, stage: string, header: string): void {
    const line = safeHeader(header);
    if (!memory || !line) return;
    const key = `${stage}:${line.slice(0, line.indexOf(':')).toLowerCase()}`;
    if (memory.given.has(key)) return;
    memory.given.add(key);
    memory.pending.push(line);
  }

  private memoryFor(instance: string): MessageMemory | undefined {
    if (!instance) return undefined;
    const now = Date.now();
    let memory = this.messages.get(instance);
    if (!memory) {
      if (this.messages.size >= MESSAGE_MEMORY_LIMIT) this.forgetOldMessages(now);
      memory = { pending: [], given: new Set(), touched: now };
      this.messages.set(instance, memory);
    }
    memory.touched = now;
    return memory;
  }

  /**
   * Forgets the oldest messages (Map order is insertion order) down to nine tenths of the limit
   * at once: evicting one at a time would walk the whole map for every new message once full.
   */
  private forgetOldMessages(now: number): void {
    const keep = MESSAGE_MEMORY_LIMIT * 0.9;
    for (const [instance, memory] of this.messages) {
      if (this.messages.size < keep && now - memory.touched <= MESSAGE_MEMORY_TTL_MS) break;
      this.messages.delete(instance);
    }
  }
}

/** Builds the configured stages from a configuration validateConfig produced. */
export function buildPipeline(config: Config, deps: StageDeps): Pipeline {
  const stages = config.policy.stages.map((entry) => configureStage(entry, deps));
  return new Pipeline(stages, {
    decisionTimeoutMs: config.policy.decisionTimeout,
    faultAction: config.policy.faultAction,
    warnAction: config.policy.warnAction,
    clock: deps.clock,
    log: deps.log,
  });
}

function configureStage(entry: StageEntry, deps: StageDeps): ConfiguredStage {
  const definition = STAGE_DEFINITIONS.find((d) => d.name === entry.name);
  if (!definition) throw new Error(`stage ${entry.name} is not registered`); // validateConfig already refused it
  // validateConfig parsed the options already; parsing them again would, for one, read
  // durations it had turned into milliseconds as seconds.
  const { name: _name, mode, states, ...parsed } = entry;
  const stage = definition.create(parsed, deps);
  // A stage knows where it has what it needs (a recipient only from RCPT on, for one).
  const impossible = (states ?? []).filter((state) => !stage.states.has(state));
  if (impossible.length > 0) {
    throw new ConfigError(`policy.stages ${entry.name}: states ${impossible.join(', ')}: this stage runs only in ${[...stage.states].join(', ')}`);
  }
  return {
    stage,
    mode,
    states: new Set(states ?? definition.defaultStates),
    acceptAction: typeof parsed.acceptAction === 'string' ? parsed.acceptAction : 'DUNNO',
  };
}

