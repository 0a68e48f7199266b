/**
 * NAME
 *   address/errors - the syntax error of an address, and the result type of every address parser
 *
 * DESCRIPTION
 *   A malformed address is an expected outcome (it becomes the verdict `invalid`), so the parsers
 *   return it as a value. The error still extends CalloutError so that code which must throw
 *   (the CLI refusing an argument) keeps the stable code ADDRESS_SYNTAX.
 *   `rule` names the violated rule with a stable identifier that tests, logs and policy replies
 *   can rely on; `position` is the 0-based index into the parsed string, counted in UTF-16 code
 *   units like every JavaScript string index.
 */

import { CalloutError } from '../core/errors.js';

export type AddressSyntaxRule =
  | 'input-too-long'
  | 'empty-input'
  | 'non-ascii'
  | 'bad-character'
  | 'not-utf8'
  | 'missing-at'
  | 'empty-local-part'
  | 'empty-atom'
  | 'bad-local-part'
  | 'unbalanced-quote'
  | 'bad-quoted-pair'
  | 'local-part-too-long'
  | 'empty-domain'
  | 'empty-domain-label'
  | 'bad-domain-label'
  | 'bad-idn-label'
  | 'label-too-long'
  | 'domain-too-long'
  | 'bad-address-literal'
  | 'unsupported-address-literal'
  | 'path-too-long'
  | 'missing-angle-bracket'
  | 'null-forward-path'
  | 'bad-source-route'
  | 'trailing-characters'
  | 'unbalanced-comment'
  | 'comment-too-deep'
  | 'unterminated-group'
  | 'group-not-allowed'
  | 'empty-group-name'
  | 'no-address';

export class AddressSyntaxError extends CalloutError {
  readonly rule: AddressSyntaxRule;
  readonly position: number;
  constructor(rule: AddressSyntaxRule, position: number, description: string) {
    super('ADDRESS_SYNTAX', `${description} at ${position}`);
    this.rule = rule;
    this.position = position;
  }
}

export interface ParseFailure {
  ok: false;
  error: AddressSyntaxError;
}

export type ParseResult<T> = { ok: true; value: T } | ParseFailure;

export function success<T>(value: T): ParseResult<T> {
  return { ok: true, value };
}

export function failure(rule: AddressSyntaxRule, position: number, description: string): ParseFailure {
  return { ok: false, error: new AddressSyntaxError(rule, position, description) };
}
