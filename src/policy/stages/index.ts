/**
 * NAME
 *   policy/stages - the registry of pipeline stages
 *
 * DESCRIPTION
 *   Every stage a configuration may name. Adding a stage is one module exporting a
 *   StageDefinition and one line here.
 */

import type { StageDefinition } from '../types.js';
import { allowlistStage } from './allowlist.js';
import { batvStage } from './batv.js';
import { greylistStage } from './greylist.js';
import { iprevStage } from './iprev.js';
import { postmasterStage } from './postmaster.js';
import { ratelimitStage } from './ratelimit.js';
import { recipientCallforwardStage } from './recipient-callforward.js';
import { senderCalloutStage } from './sender-callout.js';
import { senderSyntaxStage } from './sender-syntax.js';
import { spfStage } from './spf.js';
import { tarpitStage } from './tarpit.js';

export const STAGE_DEFINITIONS: StageDefinition[] = [
  allowlistStage as StageDefinition,
  postmasterStage as StageDefinition,
  senderSyntaxStage as StageDefinition,
  spfStage as StageDefinition,
  iprevStage as StageDefinition,
  senderCalloutStage as StageDefinition,
  recipientCallforwardStage as StageDefinition,
  greylistStage as StageDefinition,
  tarpitStage as StageDefinition,
  batvStage as StageDefinition,
  ratelimitStage as StageDefinition,
];
