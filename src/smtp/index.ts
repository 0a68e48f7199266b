/**
 * NAME
 *   smtp - the SMTP layer of callout: reply codec, command lines and the client session
 *
 * DESCRIPTION
 *   Re-exports the public API of src/smtp so that other layers import from one place.
 */

export type { Dialer, DialOptions, EnhancedStatus, SmtpReply, TranscriptEntry } from './types.js';
export {
  DEFAULT_MAX_REPLY_LINES,
  DEFAULT_MAX_REPLY_LINE_LENGTH,
  ReplyDecoder,
  formatEnhanced,
  formatReply,
  isPositive,
  parseEhloKeywords,
  parseEnhancedStatus,
  replyText,
  type DecodeErrorReason,
  type DecodeEvent,
  type ReplyDecoderLimits,
} from './reply.js';
export { MAX_COMMAND_LINE_OCTETS, formatCommand, mailFromCommand, rcptToCommand, type CommandLine } from './command.js';
export {
  MAX_UNSOLICITED_REPLIES,
  SmtpClientSession,
  SmtpSessionMisuseError,
  netDialer,
  type ClientStage,
  type OpenResult,
  type SessionState,
  type SmtpClientOptions,
  type SmtpTimeouts,
  type StepFailure,
  type StepResult,
  type TlsPolicy,
} from './client.js';
