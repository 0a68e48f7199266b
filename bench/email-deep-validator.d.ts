/**
 * NAME
 *   bench/email-deep-validator.d.ts - types for the email-deep-validator peer (it ships none)
 *
 * DESCRIPTION
 *   Only what the benchmark calls, as read from lib/index.js of version 3.3.0: verify() resolves
 *   validDomain/validMailbox as true, false or null (could not tell).
 */

declare module 'email-deep-validator' {
  export interface EmailDeepValidatorOptions {
    timeout?: number;
    verifyDomain?: boolean;
    verifyMailbox?: boolean;
  }
  export interface EmailDeepValidatorResult {
    wellFormed: boolean;
    validDomain: boolean | null;
    validMailbox: boolean | null;
  }
  export default class EmailValidator {
    constructor(options?: EmailDeepValidatorOptions);
    verify(address: string): Promise<EmailDeepValidatorResult>;
  }
}
