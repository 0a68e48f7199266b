/**
 * NAME
 *   address - parsing and normalisation of mail addresses (RFC 5321 paths, RFC 5322 headers)
 *
 * DESCRIPTION
 *   Pure functions without I/O. Every parser returns a ParseResult; a syntax error is a value
 *   carrying an AddressSyntaxError with a stable `rule` and the `position` it was found at.
 */

export { AddressSyntaxError, type AddressSyntaxRule, type ParseFailure, type ParseResult } from './errors.js';
export {
  ADDRESS_LIMITS,
  formatMailbox,
  isPostmaster,
  normaliseDomain,
  type AddressLiteral,
  type Mailbox,
  type NormalisedDomain,
} from './mailbox.js';
export {
  parseForwardPath,
  parseMailbox,
  parseReversePath,
  type ForwardPath,
  type MailboxOptions,
  type PathOptions,
  type ReversePath,
} from './smtp-path.js';
export { asciiLower, isDigestedKeyPart, keyPart, mailboxKey } from './key.js';
export { HEADER_LIMITS, parseAddressList, parseHeaderMailbox, type HeaderAddress, type HeaderOptions } from './header.js';
