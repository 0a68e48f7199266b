/**
 * NAME
 *   smtp/types - SMTP replies, transcripts and the dialer the client connects with
 *
 * DESCRIPTION
 *   A reply is the three-digit code (RFC 5321 §4.2), the RFC 3463 enhanced status code when the
 *   server gave one, and the text lines. A transcript records every line sent and received with
 *   its time offset, so a verdict can always show the evidence behind it.
 */

import type { Socket } from 'node:net';

export interface EnhancedStatus {
  klass: 2 | 4 | 5;
  subject: number;
  detail: number;
}

export interface SmtpReply {
  code: number;
  enhanced?: EnhancedStatus;
  /** Text of each line without the code, separator and enhanced code. */
  lines: string[];
}

export type TranscriptEntry =
  | { at: number; dir: 'sent'; line: string }
  | { at: number; dir: 'received'; line: string }
  | { at: number; dir: 'event'; line: string };

export interface DialOptions {
  host: string;
  port: number;
  timeoutMs: number;
  localAddress?: string;
}

/** Opens the TCP connection; injected so tests and benchmarks can count or redirect it. */
export type Dialer = (options: DialOptions) => Socket;
