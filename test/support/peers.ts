/**
 * NAME
 *   test/support/peers - when an end-to-end test may skip for want of a peer program
 *
 * DESCRIPTION
 *   requirePeer(reason) passes a skip reason through (postgrey, postsrsd or Exim missing on a
 *   developer's machine), unless CALLOUT_E2E_REQUIRE_PEERS=1, which .ci/run sets because it
 *   installs every peer: there a missing peer is a failure, so an interoperability test cannot
 *   vanish from a green run.
 */

export function requirePeer(reason: string | undefined): string | undefined {
  if (reason === undefined || process.env.CALLOUT_E2E_REQUIRE_PEERS !== '1') return reason;
  throw new Error(`${reason} (CALLOUT_E2E_REQUIRE_PEERS=1: .ci/run installs every peer, so a missing one fails the run)`);
}
