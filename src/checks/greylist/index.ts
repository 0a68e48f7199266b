/**
 * NAME
 *   checks/greylist - greylisting: triplets, sender normalisation, whitelists, client identity
 *
 * DESCRIPTION
 *   The pieces the `greylist` policy stage (src/policy/stages/greylist.ts) and the
 *   `callout greylist` command are built from; see each module's header.
 */

export { Greylist, MAX_DOMAIN_AUTO_ALLOW, type DeferReason, type DroppedClient, type GreylistEntry, type GreylistEntryKind, type GreylistOutcome, type ListOptions, type GreylistRequest, type GreylistSettings } from './greylist.js';
export { normaliseSender, senderDomain, srsOriginal, type NormaliseOptions } from './normalise.js';
export {
  ClientWhitelist,
  RecipientWhitelist,
  WHITELIST_LIMITS,
  domainUnder,
  parseClientWhitelist,
  parseRecipientWhitelist,
  readWhitelistFiles,
  type WhitelistProblem,
  type WhitelistSource,
} from './whitelist.js';
export { confirmedOrganisation, looksDynamic, organisationalDomain } from './identity.js';
