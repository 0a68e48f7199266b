/**
 * NAME
 *   policy/pipeline - run the configured stages for one policy request and decide
 *
 * DESCRIPTION
 *   Stages run in the configured order, each only in its protocol states. A stage's Decision is
 *   applied according to its mode:
 *     enforce  reject, defer and accept end the pipeline with that action; defer-if-permit is
 *              Postfix's DEFER_IF_PERMIT: the later stages run, and their reject or defer wins
 *     warn     a would-be reject or defer is logged (Postfix WARN) or noted in a header, and the
 *              pipeline goes on, so an administrator can watch before enforcing
 *     off      the stage does not run
 *   When no stage ends the request, the answer is DUNNO, or PREPEND of a header a stage asked
 *   for. Postfix takes one action per reply, so headers are queued per message (the `instance`
 *   attribute) and given out one per reply, each once per message however many recipients
 *   it has; warn mode's X-Callout-Warning (warnAction PREPEND) likewise, each text once.
 *   Headers are taken and given only at RCPT and DATA: Postfix ignores PREPEND at
 *   END-OF-MESSAGE (smtpd_check.c: "action PREPEND must be used before
 *   smtpd_end_of_data_restrictions") and, with smtpd_delay_reject=no, at CONNECT, EHLO and
 *   HELO; at MAIL the instance still names the previous message (smtpd.c sets it after
 *   smtpd_check_mail). There warn mode answers WARN.
 *   Faults (a store outage, a bug in a stage) are answered in one place, by `policy.faultAction`:
 *   fail open (skip the stage) or defer; they never become a rejection, and a stage in warn
 *   mode that faults only warns. Each is in its
 *   decision's log line; its own error line is written once a minute per stage and error, with
 *   the number of repeats left out (an outage fails every request alike). A stage still
 *   unanswered half a second past the deadline is such a fault; the stages after it that have to
 *   be waited for are then not waited for (the decision line lists them as not waited for, and
 *   no error line blames them), while those that answer at once still count, and one that
 *   throws as it is asked is a fault like any.
 *   Every decision is explained by one log line: the request, each stage's result and reason,
 *   and the action.
 */

import { systemTimers, type Clock, type TimerHandle, type Timers } from '../core/clock.js';
import { CalloutError, ConfigError, describeError } from '../core/errors.js';
import { RepeatCollapser } from '../core/log.js';
import { BoundedMemo, ownCopy } from '../core/memo.js';
import { MAX_HEADER_LINE } from '../core/text.js';
import { parseForwardPath, parseReversePath } from '../address/index.js';
import type { Config, StageEntry } from '../config/schema.js';
import { stageKey } from '../config/stage-key.js';
import { actionFor, replyTextLimit, safeHeader, safeText } from './actions.js';
import { bareAddress, isProtocolState } from './protocol.js';
import { STAGE_DEFINITIONS } from './stages/index.js';
import type { Decision, PolicyAttributes, ProtocolState, Stage, StageContext, StageDefinition, StageDeps, StageLogger, StageMode, StageVerdict } from './types.js';

export interface ConfiguredStage {
  stage: Stage;
  mode: StageMode;
  states: ReadonlySet<ProtocolState>;
  /** Action text for an `accept` decision of this stage (allow-lists answer DUNNO by default). */
  acceptAction: string;
}

export interface PipelineOptions {
  /**
   * The per-message header memory of the pipeline this one replaces (a reload): a message whose
   * recipients span the reload is still given each header once.
   */
  messages?: MessageMemories;
  decisionTimeoutMs: number;
  faultAction: 'DUNNO' | 'DEFER';
  warnAction: 'WARN' | 'PREPEND';
  clock: Clock;
  /**
   * The monotonic clock the deadline, its timer and durations go by (default systemTimers); the
   * stages are given them as StageContext.timers, to wait on.
   */
  timers?: Timers;
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
/**
 * Header lines given to one message (exported for tests). Warning texts name the recipient, so
 * without a bound a message with Postfix's 1000 recipients got 1000 X-Callout-Warning fields
 * (about 100 KB: past header_size_limit, 102400, where cleanup drops the message's own header
 * fields), and each remembered message held all of them.
 */
export const MESSAGE_HEADER_LIMIT = 20;
/** A fault repeated within this is counted, not logged again (its decision lines still list it). */
const FAULT_LOG_WINDOW_MS = 60_000;
/** The answer to a stage's fault with policy.faultAction DEFER. */
const FAULT_ACTION = '451 4.3.0 Temporary policy failure, please try again later';
/**
 * StageContext.timeLeft of a request that came at `since` (timers.now()). On the monotonic
 * clock: as a time of the injected clock, a wall clock stepped back while a stage ran (NTP, a
 * restored virtual machine) held the answer for as long as the step, one stepped forward left
 * the stages after it no time, and under policy.acceptTestTime a request's policy_test_time
 * did the same to the requests in flight.
 */
function decisionTimeLeft(decisionTimeoutMs: number, timers: Timers, since: number): () => number {
  const deadline = since + decisionTimeoutMs;
  // Whole milliseconds: the bounds it gives are named in reasons and log lines.
  return () => Math.max(0, Math.floor(deadline - timers.now()));
}

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

/** Headers queued and given, per message (Postfix's `instance`). */
export type MessageMemories = Map<string, MessageMemory>;

export class Pipeline {
  /** Per message; handed to the pipeline that replaces this one at a reload. */
  readonly messages: MessageMemories;
  // As Postfix received them: no RFC 5321 size limits (SRS and BATV senders exceed 64 octets).
  private readonly senders = new BoundedMemo((text) => parseReversePath(text, RECEIVED_PATHS), PARSE_MEMORY_LIMIT);
  private readonly recipients = new BoundedMemo((text) => parseForwardPath(text, RECEIVED_PATHS), PARSE_MEMORY_LIMIT);
  /** The stages that watch outcomes (Stage.observe); most pipelines have none. */
  private readonly observers: ConfiguredStage[];
  /** One line per minute for each repeated fault (core/log RepeatCollapser); every decision line still lists its faults. */
  private readonly faultLines = new RepeatCollapser(FAULT_LOG_WINDOW_MS);
  private readonly timers: Timers;

  constructor(
    readonly stages: ConfiguredStage[],
    private readonly options: PipelineOptions,
  ) {
    this.observers = stages.filter((configured) => configured.stage.observe !== undefined);
    this.messages = options.messages ?? new Map();
    this.timers = options.timers ?? systemTimers;
  }

  /**
   * The outcome of one request. Synchronous while every stage answers at once (a cached
   * verdict, an allow-list): no promise, no timer, no turn of the event loop. From the first
   * stage that has to be waited for on, the rest runs asynchronously under the deadline.
   */
  decide(attributes: PolicyAttributes): PipelineOutcome | Promise<PipelineOutcome> {
    const run = new PipelineRun((earlier, since) => this.context(attributes, earlier, since), this.options, this.timers, this.faultLines);
    for (let index = this.nextStage(run, 0); index !== undefined; index = this.nextStage(run, index + 1)) {
      const configured = this.stages[index]!;
      let stop: boolean;
      try {
        const answer = configured.stage.evaluate(run.ctx);
        if (answer instanceof Promise) return this.decideLater(run, index, answer);
        stop = this.apply(run, configured, answer);
      } catch (err) {
        stop = run.fault(configured, err);
      }
      if (stop) break;
    }
    return this.finish(run);
  }

  /** decide() from stage `index` on, whose answer is `pending`: each wait bounded by the deadline. */
  private async decideLater(run: PipelineRun, index: number, pending: Promise<StageVerdict>): Promise<PipelineOutcome> {
    let answer: StageVerdict | Promise<StageVerdict> = pending;
    /** What the stage threw as it was asked: its fault, deadline or not, as in decide(). */
    let thrown: { err: unknown } | undefined;
    try {
      for (;;) {
        const configured = this.stages[index]!;
        let stop: boolean;
        if (thrown) {
          // Made a rejected promise, past the deadline it was one more not waited for: the
          // stage's bug, or its store's outage, was neither logged nor answered by faultAction.
          stop = run.fault(configured, thrown.err);
        } else if (answer instanceof Promise && run.expired) {
          // An earlier stage used the deadline up: this one was given no time, so it is not
          // waited for, and its own error line no longer blames it for the one before it (its
          // decision line still says it was skipped). An answer it gives at once still counts;
          // the work it started goes on (a callout's verdict warms the cache for the retry).
          answer.catch(() => undefined);
          run.faults.push(`${configured.stage.name}: not waited for: no time left after the decision deadline`);
          stop = false;
        } else {
          try {
            const verdict = answer instanceof Promise ? await Promise.race([answer, run.lateness()]) : answer;
            stop = this.apply(run, configured, verdict);
          } catch (err) {
            stop = run.fault(configured, err);
          }
        }
        if (stop) break;
        const next = this.nextStage(run, index + 1);
        if (next === undefined) break;
        index = next;
        thrown = undefined;
        try {
          answer = this.stages[index]!.stage.evaluate(run.ctx);
        } catch (err) {
          thrown = { err };
        }
      }
    } finally {
      run.stopTimer();
    }
    return this.finish(run);
  }

  /** The index of the first stage from `from` on that runs for this request. */
  private nextStage(run: PipelineRun, from: number): number | undefined {
    for (let index = from; index < this.stages.length; index++) {
      const configured = this.stages[index]!;
      if (configured.mode !== 'off' && configured.states.has(run.ctx.state)) return index;
    }
    return undefined;
  }

  /**
   * Takes in one stage's verdict; true when it ends the pipeline. A verdict that cannot be
   * applied (a stage's bug) throws before anything of it is recorded, and is a fault like any.
   */
  private apply(run: PipelineRun, configured: ConfiguredStage, verdict: StageVerdict): boolean {
    const name = configured.stage.name;
    const decision = (verdict as Partial<StageVerdict> | undefined)?.decision;
    if (!decision || !DECISION_KINDS.has(decision.kind)) throw new CalloutError('INTERNAL', `stage ${name} answered without a decision it can take`);
    const action = decision.kind === 'continue' || decision.kind === 'prepend' ? undefined : actionFor(decision, configured.acceptAction, replyTextLimit(quotedName(run.ctx)));
    run.verdicts.push(verdict);
    run.earlier.set(name, verdict);
    if (HEADER_STATES.has(run.ctx.state)) {
      for (const header of verdict.headers ?? []) this.queueHeader(run.ctx.instance, name, header);
      if (decision.kind === 'prepend') this.queueHeader(run.ctx.instance, name, decision.header);
    }
    if (action === undefined) return false;
    if (configured.mode === 'warn') {
      if (decision.kind !== 'accept') run.warnings.push(`${name} would answer ${action}`);
      return false;
    }
    if (decision.kind === 'defer-if-permit') {
      // Postfix's DEFER_IF_PERMIT (access(5)): the stages after it still run, a reject or defer
      // of theirs wins, and anything else (an accept included) ends in the first such answer.
      // Ended here, an undeliverable sender behind an SPF softfail answered defer-if-permit was
      // deferred on every retry instead of refused, and greylisting never saw a message whose
      // callout was still in progress.
      run.deferIfPermit ??= { action, stage: name };
      return false;
    }
    run.final = decision.kind === 'accept' && run.deferIfPermit ? run.deferIfPermit : { action, stage: name };
    return true;
  }

  /** The action, once the stages that observe outcomes (the tarpit's delay) have seen it. */
  private finish(run: PipelineRun): PipelineOutcome | Promise<PipelineOutcome> {
    run.final ??= run.deferIfPermit;
    const action = run.final?.action ?? this.continueAction(run.ctx, run.warnings);
    if (this.observers.length === 0) return run.outcome(action);
    return this.observe(run.ctx, action, run.final?.stage).then(() => run.outcome(action));
  }

  async close(): Promise<void> {
    await Promise.all(this.stages.map((s) => s.stage.close?.()));
  }

  /** Stage.abandon of every stage: how much they gave up. */
  async abandon(): Promise<number> {
    const given = await Promise.all(this.stages.map((s) => s.stage.abandon?.() ?? 0));
    return given.reduce((sum, n) => sum + n, 0);
  }

  /**
   * Shows the answer to the stages that observe outcomes (Stage.observe); their faults never
   * change it. The answer waits for them (the tarpit's delay is such a wait) only until the
   * grace after the deadline, as stages are waited for: a store that is slow to count (a
   * SQLite lock held by another process, a Redis timeout) must not hold the answer past
   * Postfix's policy timeout. An observer still running then goes on without the answer, and
   * the observers after it are shown the answer without being waited for.
   */
  private async observe(ctx: StageContext, action: string, decidedBy: string | undefined): Promise<void> {
    let timer: TimerHandle | undefined;
    let late: Promise<'late'> | undefined;
    let waiting = true;
    try {
      for (const { stage, mode, states } of this.observers) {
        if (!stage.observe || mode === 'off' || !states.has(ctx.state)) continue;
        const watching = Promise.resolve()
          .then(() => stage.observe!(ctx, { action, ...(decidedBy ? { decidedBy } : {}), mode }))
          .catch((err: unknown) => {
            const message = describeError(err);
            const repeats = this.faultLines.admit(`observe\0${stage.name}\0${message}`, this.options.clock.now());
            if (repeats) this.options.log.error({ stage: stage.name, err: message, ...repeats }, 'stage observer fault');
          });
        if (!waiting) continue;
        late ??= new Promise<'late'>((resolve) => {
          timer = this.timers.setTimeout(() => resolve('late'), ctx.timeLeft() + STAGE_GRACE_MS);
        });
        if ((await Promise.race([watching, late])) === 'late') {
          this.options.log.error({ stage: stage.name, deadlineMs: this.options.decisionTimeoutMs }, 'stage observer late: answered without waiting for it');
          waiting = false;
        }
      }
    } finally {
      this.timers.clearTimeout(timer);
    }
  }

  /**
   * What every stage may read, parsed once; a stage that needs more reads ctx.attributes. Parsed
   * before the stages run, into plain data properties: parsed when first read (getters made for
   * each request) cost the default stages, which all read the sender, a sixth more CPU a
   * decision and twice the p99 (bench/policy), more than the parse saved a greylisting service.
   */
  private context(attributes: PolicyAttributes, earlier: ReadonlyMap<string, StageVerdict>, since: number): StageContext {
    const senderText = attributes.sender ?? '';
    const recipientText = attributes.recipient ?? '';
    const sender = this.senders.get(senderText);
    const recipient = recipientText ? this.recipients.get(recipientText) : undefined;
    return {
      attributes,
      state: protocolState(attributes.protocol_state),
      clientAddress: bareAddress(attributes.client_address ?? ''),
      clientName: attributes.client_name || 'unknown',
      heloName: attributes.helo_name ?? '',
      senderText,
      ...(sender.ok ? { sender: sender.value } : { senderError: sender.error.message }),
      recipientText,
      ...(recipient?.ok && recipient.value.kind === 'mailbox' ? { recipient: recipient.value.mailbox } : {}),
      instance: attributes.instance ?? '',
      timeLeft: decisionTimeLeft(this.options.decisionTimeoutMs, this.timers, since),
      timers: this.timers,
      clock: this.options.clock,
      earlier,
    };
  }

  private continueAction({ state, instance }: StageContext, warnings: string[]): string {
    const warning = warnings.length > 0 ? safeText(warnings.join('; ')) : undefined;
    if (!HEADER_STATES.has(state)) return warning === undefined ? 'DUNNO' : `WARN ${warning}`;
    let warnByHeader = warning !== undefined && this.options.warnAction === 'PREPEND';
    if (warnByHeader) {
      const line = `X-Callout-Warning: ${warning}`;
      // Without an instance there is no message to remember it for: give it at once.
      if (!instance) return `PREPEND ${line}`;
      // A message that has had its share of header lines gets the warning in Postfix's log.
      warnByHeader = this.queueLine(instance, `warning\0${line}`, line);
    }
    const memory = instance ? this.messages.get(instance) : undefined;
    if (memory) memory.touched = this.options.clock.now();
    const header = memory?.pending.shift();
    if (header) return `PREPEND ${header}`;
    return warning === undefined || warnByHeader ? 'DUNNO' : `WARN ${warning}`;
  }

  /** Headers are keyed by stage and field name, so each is given once per message. */
  private queueHeader(instance: string, stage: string, header: string): void {
    const line = safeHeader(header);
    if (!line) return;
    const key = `${stage}:${line.slice(0, line.indexOf(':')).toLowerCase()}`;
    if (!this.joinResults(instance, key, line)) this.queueLine(instance, key, line);
  }

  /**
   * Joins an Authentication-Results field to the one of the same authserv-id still waiting for
   * the message (RFC 8601 §2.2: one field holds the results of several methods), as long as the
   * line stays within MAX_HEADER_LINE. Postfix takes one header per reply and a one-recipient
   * message has one or two replies, so a second stage's field (iprev after spf) waiting for a
   * reply of its own never arrived. True when joined.
   */
  private joinResults(instance: string, key: string, line: string): boolean {
    const memory = instance ? this.messages.get(instance) : undefined;
    const head = RESULTS_HEAD.exec(line)?.[0];
    if (!memory || !head || memory.given.has(key)) return false;
    const results = line.slice(head.length).trim();
    const index = memory.pending.findIndex((pending) => pending.startsWith(head) && pending.slice(head.length).trim() !== 'none');
    if (results === 'none' || index < 0) return false;
    const joined = `${memory.pending[index]}; ${results}`;
    if (joined.length > MAX_HEADER_LINE) return false;
    memory.pending[index] = joined;
    memory.given.add(key);
    return true;
  }

  /**
   * Queues a header line for the message unless one with the same key was queued for it; false
   * when the message has had MESSAGE_HEADER_LIMIT lines already and this one is not among them.
   */
  private queueLine(instance: string, key: string, line: string): boolean {
    const memory = this.memoryFor(instance);
    if (!memory || memory.given.has(key)) return true;
    if (memory.given.size >= MESSAGE_HEADER_LIMIT) return false;
    memory.given.add(key);
    memory.pending.push(line);
    return true;
  }

  private memoryFor(instance: string): MessageMemory | undefined {
    if (!instance) return undefined;
    const now = this.options.clock.now();
    let memory = this.messages.get(instance);
    if (!memory) {
      if (this.messages.size >= MESSAGE_MEMORY_LIMIT) this.forgetOldMessages(now);
      memory = { pending: [], given: new Set(), touched: now };
      // The instance is a slice of the request's chunk, which it would keep for as long.
      this.messages.set(ownCopy(instance), memory);
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

// Postfix's policy protocol sends addresses in its internal form, quotes removed (smtpd.c
// extract_addr): `<"john doe"@example.org>` arrives as `john doe@example.org`.
const RECEIVED_PATHS = { tolerant: true, sizeLimits: false, internalForm: true } as const;

/** "Authentication-Results: authserv-id;" (an id without quotes, whose first ';' ends it). */
const RESULTS_HEAD = /^Authentication-Results:\s*[^;"]+;/i;

/** Where Postfix takes PREPEND into the message the request's instance names. */
const HEADER_STATES: ReadonlySet<ProtocolState> = new Set<ProtocolState>(['RCPT', 'DATA']);

const DECISION_KINDS: ReadonlySet<string> = new Set<Decision['kind']>(['continue', 'accept', 'reject', 'defer', 'defer-if-permit', 'prepend']);

/** What Postfix quotes before a restriction's reply text in this state (smtpd_check.c reply_name). */
function quotedName(ctx: StageContext): string {
  switch (ctx.state) {
    case 'CONNECT':
      return `${ctx.clientName}[${ctx.clientAddress}]`;
    case 'EHLO':
    case 'HELO':
      return ctx.heloName;
    case 'MAIL':
      return ctx.senderText;
    default:
      return ctx.recipientText || ctx.senderText;
  }
}

/** A request without a known state is treated as RCPT, where Postfix sends nearly all of them. */
function protocolState(text: string | undefined): ProtocolState {
  if (text === undefined) return 'RCPT';
  if (isProtocolState(text)) return text;
  const upper = text.toUpperCase();
  return isProtocolState(upper) ? upper : 'RCPT';
}

/** One request on its way through the stages. */
class PipelineRun {
  /** When the request came, on the monotonic clock (its deadline and duration are measured from it). */
  readonly started: number;
  readonly verdicts: StageVerdict[] = [];
  readonly warnings: string[] = [];
  readonly faults: string[] = [];
  /** Verdicts of the stages that ran, by stage name (what ctx.earlier shows the next stages). */
  readonly earlier = new Map<string, StageVerdict>();
  readonly ctx: StageContext;
  final: { action: string; stage: string } | undefined;
  /** The first enforced DEFER_IF_PERMIT: the answer unless a later stage rejects or defers. */
  deferIfPermit: { action: string; stage: string } | undefined;
  private timer: TimerHandle | undefined;
  /** The deadline and its grace have passed: no stage is waited for any more. */
  expired = false;
  private late: Promise<never> | undefined;

  constructor(
    context: (earlier: ReadonlyMap<string, StageVerdict>, since: number) => StageContext,
    private readonly options: PipelineOptions,
    private readonly timers: Timers,
    private readonly faultLines: RepeatCollapser,
  ) {
    this.started = timers.now();
    this.ctx = context(this.earlier, this.started);
  }

  /**
   * Rejects shortly after the deadline: a stage that has not answered by then is a fault, so
   * Postfix always hears from us before its own policy timeout. One timer per request, made
   * when a stage first has to be waited for.
   */
  lateness(): Promise<never> {
    if (!this.late) {
      this.late = new Promise<never>((_, reject) => {
        this.timer = this.timers.setTimeout(
          () => {
            this.expired = true;
            reject(new CalloutError('INTERNAL', `no answer within the decision deadline (${this.options.decisionTimeoutMs} ms)`));
          },
          this.ctx.timeLeft() + STAGE_GRACE_MS,
        );
      });
      this.late.catch(() => undefined);
    }
    return this.late;
  }

  stopTimer(): void {
    this.timers.clearTimeout(this.timer);
  }

  outcome(action: string): PipelineOutcome {
    return {
      action,
      decidedBy: this.final?.stage,
      verdicts: this.verdicts,
      warnings: this.warnings,
      faults: this.faults,
      durationMs: Math.round(this.timers.now() - this.started),
    };
  }

  /** A stage's fault, answered by policy.faultAction; true when it ends the pipeline. */
  fault(configured: ConfiguredStage, err: unknown): boolean {
    const name = configured.stage.name;
    const message = describeError(err);
    this.faults.push(`${name}: ${message}`);
    const repeats = this.faultLines.admit(`evaluate\0${name}\0${message}`, this.options.clock.now());
    if (repeats) this.options.log.error({ stage: name, err: message, ...repeats }, 'stage fault');
    if (this.options.faultAction !== 'DEFER') return false;
    // A stage in warn mode is being watched, not trusted: its outage must not defer mail either.
    if (configured.mode === 'warn') {
      this.warnings.push(`${name} would answer ${FAULT_ACTION}`);
      return false;
    }
    this.final = { action: FAULT_ACTION, stage: name };
    return true;
  }
}

/**
 * Builds the configured stages from a configuration validateConfig produced; timers are the
 * pipeline's (PipelineOptions.timers), which its stages wait on through StageContext.timers.
 */
export function buildPipeline(config: Config, deps: StageDeps, messages?: MessageMemories, timers?: Timers): Pipeline {
  const stages = config.policy.stages.map((entry, index) => configureStage(entry, index, deps));
  return new Pipeline(stages, {
    ...(messages ? { messages } : {}),
    decisionTimeoutMs: config.policy.decisionTimeout,
    faultAction: config.policy.faultAction,
    warnAction: config.policy.warnAction,
    clock: deps.clock,
    timers,
    log: deps.log,
  });
}

/**
 * A stage's own message under the entry's key, as validateConfig names the schema's problems
 * (config/stage-key): with two stages of a name, or none named in the message, the
 * administrator could not tell which entry. A message that starts with an option's key, the
 * stage's name before it or not ("allowlist.clientNames: ...", "text: ..."), is that option's;
 * several problems, each after "; " and its stage-named key (the greylist's unreadable files),
 * are keyed each.
 */
function stageKeyed(message: string, definition: StageDefinition, index: number): string {
  const { name } = definition;
  const keyed = (problem: string) => {
    const named = problem.startsWith(`${name}.`);
    const own = named ? problem.slice(name.length + 1) : problem;
    const key = /^[\w-]+(?:\.[\w-]+)*(?=: )/.exec(own)?.[0];
    if (key !== undefined && (named || Object.hasOwn(definition.options.shape, key.split('.')[0]!))) return `${stageKey(index, name, key)}${own.slice(key.length)}`;
    return `${stageKey(index, name)}: ${problem}`;
  };
  return message
    .split(`; ${name}.`)
    .map((problem, i) => keyed(i === 0 ? problem : `${name}.${problem}`))
    .join('; ');
}

function configureStage(entry: StageEntry, index: number, deps: StageDeps): ConfiguredStage {
  const definition = STAGE_DEFINITIONS.find((d) => d.name === entry.name);
  // validateConfig refuses such a name; a Config built without it still gets a coded error
  // naming its key, not an uncoded fault.
  if (!definition) throw new ConfigError(`policy.stages.${index}.name: got ${JSON.stringify(entry.name)}, expected one of ${STAGE_DEFINITIONS.map((d) => d.name).join(', ')}`);
  // validateConfig parsed the options already; parsing them again would, for one, read
  // durations it had turned into milliseconds as seconds.
  const { name: _name, mode, states, ...parsed } = entry;
  let stage: Stage;
  try {
    stage = definition.create(parsed, { ...deps, mode });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    throw new ConfigError(stageKeyed(err.message, definition, index), { cause: err });
  }
  // A stage knows where it has what it needs (a recipient only from RCPT on, for one).
  const impossible = (states ?? []).filter((state) => !stage.states.has(state));
  if (impossible.length > 0) {
    throw new ConfigError(`${stageKey(index, entry.name, 'states')}: got ${impossible.join(', ')}: this stage runs only in ${[...stage.states].join(', ')}`);
  }
  return {
    stage,
    mode,
    states: new Set(states ?? definition.defaultStates),
    acceptAction: typeof parsed.acceptAction === 'string' ? parsed.acceptAction : 'DUNNO',
  };
}
