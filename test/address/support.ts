// Assertions shared by the address tests: a result is an error with a given rule and position,
// or a success whose value is returned for further checks.
import assert from 'node:assert/strict';
import { AddressSyntaxError, type AddressSyntaxRule, type ParseResult } from '../../src/address/index.js';

export function assertParsed<T>(result: ParseResult<T>, input: string): T {
  if (!result.ok) assert.fail(`${JSON.stringify(input)}: ${result.error.rule}: ${result.error.message}`);
  return result.value;
}

export function assertSyntaxError<T>(
  result: ParseResult<T>,
  input: string,
  rule: AddressSyntaxRule,
  position: number,
): void {
  if (result.ok) assert.fail(`${JSON.stringify(input)}: parsed, want ${rule} at ${position}`);
  assert.ok(result.error instanceof AddressSyntaxError, 'result.error instanceof AddressSyntaxError');
  assert.equal(result.error.code, 'ADDRESS_SYNTAX');
  assert.deepEqual(
    { rule: result.error.rule, position: result.error.position },
    { rule, position },
    `${JSON.stringify(input)}: ${result.error.message}`,
  );
}
