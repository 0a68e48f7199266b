// The decision's log line written by hand (policy/daemon decisionJson) is JSON.stringify's, octet for octet.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { LOGGED_ATTRIBUTE_CHARS, LOGGED_REASON_CHARS, decisionJson } from '../../src/policy/daemon.js';
import type { PipelineOutcome } from '../../src/policy/pipeline.js';
import { abbreviate } from '../../src/core/errors.js';

/** The line as it was made before: JSON.stringify of the fields object. */
function stringified(attributes: Record<string, string>, outcome: PipelineOutcome): string {
  const attribute = (value: string | undefined) => value && abbreviate(value, LOGGED_ATTRIBUTE_CHARS);
  return JSON.stringify({
    client: attribute(attributes.client_address),
    helo: attribute(attributes.helo_name),
    sender: attribute(attributes.sender),
    recipient: attribute(attributes.recipient),
    instance: attribute(attributes.instance),
    state: attribute(attributes.protocol_state),
    action: outcome.action,
    decidedBy: outcome.decidedBy ?? null,
    stages: outcome.verdicts.map((v) => `${v.stage}=${v.result}: ${abbreviate(v.reason, LOGGED_REASON_CHARS)}`),
    warnings: outcome.warnings.length ? outcome.warnings : undefined,
    faults: outcome.faults.length ? outcome.faults.map((fault) => abbreviate(fault, LOGGED_REASON_CHARS)) : undefined,
    ms: outcome.durationMs,
  });
}

/** What JSON escapes or passes through unchanged at its edges: quotes, backslashes, controls, lone and paired surrogates, U+2028. */
const odd = fc.constantFrom('"', '\\', '\n', '\t', '\u0000', '\u001f', ' ', '\u007f', '\u0085', '\u2028', '\u2029', '\ud800', '\udbff', '\udc00', '\udfff', '\ud83d\ude00', 'é', '/', '<', 'a');
const text = fc.oneof(
  fc.string({ unit: fc.oneof(odd, fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c))), maxLength: 40 }),
  fc.string({ maxLength: 40 }),
  // Past the caps, so that a cut can fall between a surrogate pair.
  fc.string({ unit: fc.oneof(fc.constant('x'), odd), minLength: LOGGED_ATTRIBUTE_CHARS - 2, maxLength: LOGGED_REASON_CHARS + 4 }),
);
const ATTRIBUTES = ['client_address', 'helo_name', 'sender', 'recipient', 'instance', 'protocol_state', 'queue_id'] as const;

describe('decisionJson', () => {
  it('gives the fields JSON.stringify gives, for any attributes, verdicts, warnings, faults and duration', () => {
    const attributes = fc.record(Object.fromEntries(ATTRIBUTES.map((name) => [name, text])) as Record<(typeof ATTRIBUTES)[number], fc.Arbitrary<string>>, { requiredKeys: [] });
    const outcome = fc.record(
      {
        action: text,
        decidedBy: text,
        verdicts: fc.array(fc.record({ stage: text, result: text, reason: text }), { maxLength: 3 }),
        warnings: fc.array(text, { maxLength: 2 }),
        faults: fc.array(text, { maxLength: 2 }),
        durationMs: fc.oneof(fc.double(), fc.constantFrom(0, -0, 0.1 + 0.2, 1e21, 1e-7, 5e-324)),
      },
      { requiredKeys: ['action', 'verdicts', 'warnings', 'faults', 'durationMs'] },
    );
    fc.assert(
      fc.property(attributes, outcome, (a, o) => {
        const decided = o as PipelineOutcome;
        assert.equal(decisionJson(a, decided), stringified(a, decided));
      }),
      { numRuns: 2000 },
    );
  });

  it('writes a greylisting deferral as before', () => {
    const attributes = { client_address: '192.0.2.1', helo_name: 'mail.example.org', sender: 'a"b\\c@example.net', recipient: 'bob@example.com', instance: '', protocol_state: 'RCPT' };
    const outcome: PipelineOutcome = { action: 'DEFER_IF_PERMIT 4.7.1 Greylisted', decidedBy: 'greylist', verdicts: [{ stage: 'greylist', result: 'defer', reason: 'new\ttriplet \ud800' }] as PipelineOutcome['verdicts'], warnings: [], faults: [], durationMs: 0.25 };
    assert.equal(
      decisionJson(attributes, outcome),
      '{"client":"192.0.2.1","helo":"mail.example.org","sender":"a\\"b\\\\c@example.net","recipient":"bob@example.com","instance":"","state":"RCPT","action":"DEFER_IF_PERMIT 4.7.1 Greylisted","decidedBy":"greylist","stages":["greylist=defer: new\\ttriplet \\ud800"],"ms":0.25}',
    );
    assert.equal(decisionJson({}, { action: 'DUNNO', verdicts: [], warnings: ['w'], faults: ['f'], durationMs: Number.NaN }), '{"action":"DUNNO","decidedBy":null,"stages":[],"warnings":["w"],"faults":["f"],"ms":null}');
  });
});
