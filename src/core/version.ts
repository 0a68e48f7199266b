/**
 * NAME
 *   core/version - this release's version, for `callout --version` and texts that name it
 *
 * DESCRIPTION
 *   The version of package.json, kept here so that no module reads package.json at run time
 *   (its place relative to dist/ differs between a checkout and an installed package); a unit
 *   test holds the two equal.
 */

export const CALLOUT_VERSION = '0.1.0';
