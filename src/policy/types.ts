/**
 * NAME
 *   policy/types - requests, stages and decisions of the policy pipeline
 *
 * DESCRIPTION
 *   A Postfix policy request (SMTPD_POLICY_README) is a set of name=value attributes. The
 *   pipeline runs configured stages for the request's protocol state; each stage is one module
 *   (src/policy/stages/*, over src/checks/* and src/verify) that returns a StageVerdict: the
 *   check's own result in its own vocabulary (SPF's pass/fail/softfail..., the callout's
 *   deliverable/undeliverable...), a one-line reason, its evidence, and the Decision it asks for. Decisions are values; the
 *   pipeline alone turns them into Postfix actions, honouring each stage's mode (enforce, warn,
 *   off), and writes one log line explaining the outcome.
 *
 *   Adding a stage is one module exporting a StageDefinition, whose zod schema of its options
 *   config/schema checks the stage's policy.stages entries against, and one entry in the
 *   registry (src/policy/stages/index.ts); config/schema itself is not changed.
 */

import type { Clock, Timers } from '../core/clock.js';
import type { Mailbox, ReversePath } from '../address/index.js';

export type ProtocolState = 'CONNECT' | 'EHLO' | 'HELO' | 'MAIL' | 'RCPT' | 'DATA' | 'END-OF-MESSAGE' | 'VRFY' | 'ETRN';

/** Attributes as Postfix sent them; unknown ones are kept but never required. */
export type PolicyAttributes = Readonly<Record<string, string>>;

/** What every stage may read about the request, parsed once by the pipeline. */
export interface StageContext {
  readonly attributes: PolicyAttributes;
  readonly state: ProtocolState;
  /** Client IP address (no brackets), '' when Postfix did not send one. */
  readonly clientAddress: string;
  /** Verified client name, or 'unknown'. */
  readonly clientName: string;
  readonly heloName: string;
  /** The sender as sent ('' = null sender). */
  readonly senderText: string;
  /** The parsed sender; undefined when it does not parse (senderError says why). */
  readonly sender?: ReversePath;
  readonly senderError?: string;
  readonly recipientText: string;
  readonly recipient?: Mailbox;
  /** Postfix's per-message `instance` attribute; requests of one message share it. */
  readonly instance: string;
  /** Verdicts of the stages that already ran for this request, by stage name. */
  readonly earlier: ReadonlyMap<string, StageVerdict>;
  /**
   * Milliseconds left before the decision deadline (policy.decisionTimeout after the request
   * came, shorter than Postfix's policy timeout), never negative. On the monotonic clock, not
   * on `clock`: it bounds waits on real I/O, which a wall clock stepped (or moved by
   * policy_test_time) while they ran must not lengthen or cut short. A stage bounds what it
   * waits for by it, on `timers`, and reads no time of its own for that.
   */
  readonly timeLeft: () => number;
  /**
   * The monotonic clock and timers timeLeft counts down on, the pipeline's (systemTimers in
   * production, ManualTimers in tests): a stage waits on them (a tarpit delay, the bound on a
   * lookup or a callout), so that a wait and the deadline bounding it move together.
   */
  readonly timers: Timers;
  readonly clock: Clock;
}

export type Decision =
  /** DUNNO for this stage: go on with the next one. */
  | { kind: 'continue' }
  /** OK: accept and stop (allow-lists). */
  | { kind: 'accept'; text?: string }
  | { kind: 'reject'; code: number; enhanced: string; text: string }
  | { kind: 'defer'; code: number; enhanced: string; text: string }
  /**
   * DEFER_IF_PERMIT: defer unless a later restriction rejects or defers (greylisting,
   * verification in progress); the later stages run. `enhanced` goes before a text that does
   * not begin with a code of its own.
   */
  | { kind: 'defer-if-permit'; enhanced?: string; text: string }
  /** Go on, and add this header (once per message; RFC 5322 field `Name: value`). */
  | { kind: 'prepend'; header: string };

export interface StageVerdict {
  stage: string;
  /** The check's own result word, e.g. 'pass', 'fail', 'deliverable', 'listed'. */
  result: string;
  /** One line in plain words. */
  reason: string;
  decision: Decision;
  /** Anything the dashboard or API should show (JSON-serialisable). */
  evidence?: unknown;
  /** Headers this stage wants on the message whatever the decision (Authentication-Results ...). */
  headers?: string[];
}

export type StageMode = 'enforce' | 'warn' | 'off';

export interface Stage {
  readonly name: string;
  /** Protocol states the stage can run in; a configuration naming others is refused. */
  readonly states: ReadonlySet<ProtocolState>;
  /** A stage with nothing to wait for answers at once: the pipeline then spends no timer on it. */
  evaluate(ctx: StageContext): StageVerdict | Promise<StageVerdict>;
  /**
   * Called after every request in the stage's states once the answer is known, before it is
   * sent, whichever stage decided it (when an earlier stage ended the pipeline, this stage's
   * evaluate did not run). For stages that learn from outcomes they do not decide: the tarpit
   * counts rejected recipients and delays the answer. A fault is logged and changes nothing.
   */
  observe?(ctx: StageContext, outcome: ObservedOutcome): Promise<void>;
  /** Releases timers, connections (on reload and shutdown); the daemon waits for it within its drain time. */
  close?(): Promise<void>;
  /**
   * At shutdown, once close() has had its time: gives up the work the stage still runs (a
   * call-forward's callouts), releasing what it holds in the store (probe locks), and says how
   * much it gave up.
   */
  abandon?(): Promise<number>;
}

/** The pipeline's answer to one request, as Stage.observe sees it. */
export interface ObservedOutcome {
  /** The Postfix action sent (`DUNNO`, `550 5.1.1 ...`, `DEFER_IF_PERMIT ...`). */
  action: string;
  /** The stage whose decision became the action, if any. */
  decidedBy?: string;
  /** The observing stage's own mode. */
  mode: StageMode;
}

/** What a stage may use; the daemon builds it once and rebuilds it on reload. */
export interface StageDeps {
  resolver: import('../dns/types.js').Resolver;
  store: import('../store/types.js').Store;
  clock: Clock;
  /** The callout engine; absent when callouts are not configured (no callout.helo). */
  engine?: import('../verify/engine.js').CalloutEngine;
  /** The daemon's pino logger: a stage's line per request goes out through core/log logInfoJson. */
  log: import('../core/log.js').Logger;
  metrics?: StageMetrics;
  /**
   * The stage's own mode, given to the stage being made: one whose counters name an action
   * (ratelimit's `deferred`) counts what is done, not what a warn-mode decision would do.
   */
  mode?: StageMode;
}

/** Counters a stage may bump (wired to Prometheus by the daemon). */
export interface StageMetrics {
  increment(name: string, labels?: Record<string, string>): void;
}

export interface StageLogger {
  info(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
  error(fields: Record<string, unknown>, message: string): void;
}

/**
 * A stage module exports one of these. `options` is a zod object schema of the stage's own
 * settings (with defaults); the configuration schema composes them, so `policy.stages` entries
 * are validated like every other key.
 */
export interface StageDefinition<Options extends Record<string, unknown> = Record<string, unknown>> {
  name: string;
  /** Protocol states it may run in; the configuration may narrow them. */
  defaultStates: ProtocolState[];
  options: import('zod').ZodObject<import('zod').ZodRawShape, import('zod').core.$strict> | import('zod').ZodObject;
  create(options: Options, deps: StageDeps): Stage;
  /** What these options read of an earlier stage's verdict (ctx.earlier), for policy/stage-order. */
  earlierReads?(options: Options): EarlierRead[];
}

/**
 * An option that does its work only with the verdict of an earlier stage: `skipOnSpfPass`
 * reads `spf`. `effect` is what the option does not do without it ("no callout is skipped");
 * `whenAbsent` says whether a pipeline without that stage at all is worth a warning: not for
 * an option on by default, where such a pipeline is the ordinary one.
 */
export interface EarlierRead {
  option: string;
  stage: string;
  effect: string;
  whenAbsent: boolean;
}
