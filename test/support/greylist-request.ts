/**
 * NAME
 *   test/support/greylist-request - postgrey's settings and one triplet for checks/greylist tests
 *
 * DESCRIPTION
 *   POSTGREY: postgrey 1.37's defaults as GreylistSettings (delay 300 s, retry window 2 days,
 *   max-age 35 days, auto-allow after 5 passes; no domain auto-allow). triplet(): one request of
 *   a client on 192.0.2.0/24, with the fields given replaced.
 */

import type { GreylistRequest, GreylistSettings } from '../../src/checks/greylist/index.js';

const S = 1000;
const DAY = 86_400 * S;

export const POSTGREY: GreylistSettings = { delayMs: 300 * S, retryWindowMs: 2 * DAY, maxAgeMs: 35 * DAY, autoAllowClients: 5, domainAutoAllow: 0 };

export const triplet = (over: Partial<GreylistRequest> = {}): GreylistRequest => ({
  client: '192.0.2.0/24',
  autoAllowKey: '192.0.2.10',
  sender: 'bob@sender.example',
  recipient: 'alice@example.test',
  ...over,
});
