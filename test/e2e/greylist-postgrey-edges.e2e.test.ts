// callout's greylist stage and postgrey 1.37 on a trace built to hit the edges of the rules (delay,
// retry window, max-age, client auto-allow, IPv6 and IPv4-mapped clients, sender and recipient
// forms, client whitelists), compared request by request: pass or defer, and the seconds the
// retry text names. The differences that the README documents are listed here, each with why.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { classify, postgreyAvailable, replayCallout, replayPostgrey, POSTGREY, type TraceEvent } from '../../bench/greylist.js';
import { requirePeer } from '../support/peers.js';

const DAY = 86_400;
const MAX_AGE = 35 * DAY;
const WINDOW = 2 * DAY;
const START = Date.UTC(2026, 5, 1, 8) / 1000;

interface Probe extends TraceEvent {
  /** scenario/step: what the request probes. */
  label: string;
}

const probes: Probe[] = [];
/** Adds a request `at` seconds after START. */
function probe(label: string, at: number, clientAddress: string, sender: string, recipient: string, clientName = 'unknown'): void {
  probes.push({ label, time: START + at, clientAddress, clientName, sender, recipient });
}

// Delay: a retry 299, 300 and 301 s after first sight; early retries name the seconds missing.
probe('delay-1/first', 0, '10.50.1.10', 'a@s.example', 'r@d.example');
probe('delay-1/at+1', 1, '10.50.1.10', 'a@s.example', 'r@d.example');
probe('delay-1/at+299', 299, '10.50.1.10', 'a@s.example', 'r@d.example');
probe('delay-1/at+300', 300, '10.50.1.10', 'a@s.example', 'r@d.example');
probe('delay/first', 0, '10.50.2.10', 'a@s.example', 'r@d.example');
probe('delay/at+300', 300, '10.50.2.10', 'a@s.example', 'r@d.example');
probe('delay+1/first', 0, '10.50.3.10', 'a@s.example', 'r@d.example');
probe('delay+1/at+301', 301, '10.50.3.10', 'a@s.example', 'r@d.example');
// Retry window: measured from first sight, a retry later than it starts the triplet again.
probe('window-1/first', 0, '10.51.1.10', 'a@s.example', 'r@d.example');
probe('window-1/at', WINDOW - 1, '10.51.1.10', 'a@s.example', 'r@d.example');
probe('window/first', 0, '10.51.2.10', 'a@s.example', 'r@d.example');
probe('window/at', WINDOW, '10.51.2.10', 'a@s.example', 'r@d.example');
probe('window+1/first', 0, '10.51.3.10', 'a@s.example', 'r@d.example');
probe('window+1/at', WINDOW + 1, '10.51.3.10', 'a@s.example', 'r@d.example');
probe('window+1/restart+299', WINDOW + 300, '10.51.3.10', 'a@s.example', 'r@d.example');
probe('window+1/restart+300', WINDOW + 301, '10.51.3.10', 'a@s.example', 'r@d.example');
// An early retry does not move the window: 2 d + 1 s after first sight, 2 d - 99 s after the last.
probe('window-from-first/first', 0, '10.51.4.10', 'a@s.example', 'r@d.example');
probe('window-from-first/early', 100, '10.51.4.10', 'a@s.example', 'r@d.example');
probe('window-from-first/at', WINDOW + 1, '10.51.4.10', 'a@s.example', 'r@d.example');
// A never-passed triplet seen again long after (callout has forgotten it after two windows).
probe('unpassed-forgotten/first', 0, '10.51.5.10', 'a@s.example', 'r@d.example');
probe('unpassed-forgotten/at', 2 * WINDOW + 10, '10.51.5.10', 'a@s.example', 'r@d.example');
probe('unpassed-forgotten/at+300', 2 * WINDOW + 310, '10.51.5.10', 'a@s.example', 'r@d.example');
// Max-age since last seen (the pass at 300 s is the last write on both sides).
for (const [name, gap, net] of [['max-age-1', MAX_AGE - 1, 1], ['max-age', MAX_AGE, 2], ['max-age+1', MAX_AGE + 1, 3]] as const) {
  probe(`${name}/first`, 0, `10.52.${net}.10`, 'a@s.example', 'r@d.example');
  probe(`${name}/pass`, 300, `10.52.${net}.10`, 'a@s.example', 'r@d.example');
  probe(`${name}/again`, 300 + gap, `10.52.${net}.10`, 'a@s.example', 'r@d.example');
}
// Repeat mail within the hour: postgrey writes its last-seen time, callout does not.
probe('max-age-repeat/first', 0, '10.52.4.10', 'a@s.example', 'r@d.example');
probe('max-age-repeat/pass', 300, '10.52.4.10', 'a@s.example', 'r@d.example');
probe('max-age-repeat/repeat', 2100, '10.52.4.10', 'a@s.example', 'r@d.example');
probe('max-age-repeat/again', 300 + MAX_AGE + 60, '10.52.4.10', 'a@s.example', 'r@d.example');

// Client auto-allow: first passes of distinct triplets, counted at most once an hour per address.
{
  const client = '10.60.1.10';
  for (let r = 1; r <= 7; r += 1) probe(`awl/first-r${r}`, 0, client, 'a@s.example', `r${r}@d.example`);
  const passes = [300, 300 + 3599, 300 + 3600, 300 + 7200, 300 + 10_800, 300 + 14_400];
  passes.forEach((at, i) => probe(`awl/pass-r${i + 1}`, at, client, 'a@s.example', `r${i + 1}@d.example`));
  const allowed = 300 + 14_400;
  probe('awl/new-triplet-after-5', allowed + 1, client, 'b@s.example', 'new@d.example');
  probe('awl/early-r7-after-5', allowed + 2, client, 'a@s.example', 'r7@d.example');
  probe('awl/neighbour-new-triplet', allowed + 3, '10.60.1.11', 'c@s.example', 'new@d.example');
  probe('awl/neighbour-known-triplet', allowed + 4, '10.60.1.11', 'a@s.example', 'r1@d.example');
  // The auto-allow's last-seen time is the 5th pass; used a day before max-age (which refreshes
  // it on both sides: more than an hour since), then not for max-age and a second.
  probe('awl/before-max-age', allowed + MAX_AGE - DAY, client, 'd@s.example', 'late@d.example');
  probe('awl/after-max-age', allowed + 2 * MAX_AGE - DAY + 1, client, 'e@s.example', 'later@d.example');
}
// The same triplet passing again and again counts once.
{
  const client = '10.60.2.10';
  probe('awl-one-triplet/first', 0, client, 'a@s.example', 'r@d.example');
  for (let k = 0; k < 6; k += 1) probe(`awl-one-triplet/pass${k + 1}`, 300 + k * 4000, client, 'a@s.example', 'r@d.example');
  probe('awl-one-triplet/new', 300 + 6 * 4000, client, 'b@s.example', 'r@d.example');
}
// A pass from another address of the network counts for that address.
{
  for (let r = 1; r <= 5; r += 1) {
    probe(`awl-other-address/first-r${r}`, (r - 1) * 3600, '10.60.3.10', 'a@s.example', `r${r}@d.example`);
    probe(`awl-other-address/pass-r${r}`, (r - 1) * 3600 + 300, '10.60.3.11', 'a@s.example', `r${r}@d.example`);
  }
  probe('awl-other-address/new-from-11', 5 * 3600, '10.60.3.11', 'b@s.example', 'new@d.example');
  probe('awl-other-address/new-from-10', 5 * 3600 + 1, '10.60.3.10', 'b@s.example', 'new@d.example');
}

// IPv6: the /64 is the triplet's client, the address (in any spelling) the auto-allow's.
probe('v6-64/first', 0, '2001:db8:a:1::10', 'a@s.example', 'r@d.example');
probe('v6-64/same-64', 300, '2001:db8:a:1:ffff::20', 'a@s.example', 'r@d.example');
probe('v6-64/other-64', 301, '2001:db8:a:2::10', 'a@s.example', 'r@d.example');
probe('v6-spelling/first', 0, '2001:db8:a:3::10', 'a@s.example', 'r@d.example');
probe('v6-spelling/long-form', 300, '2001:0DB8:000A:0003:0000:0000:0000:0010', 'a@s.example', 'r@d.example');
for (let r = 1; r <= 5; r += 1) {
  probe(`v6-awl/first-r${r}`, (r - 1) * 3600, '2001:db8:b:1::10', 'a@s.example', `r${r}@d.example`);
  probe(`v6-awl/pass-r${r}`, (r - 1) * 3600 + 300, '2001:db8:b:1::10', 'a@s.example', `r${r}@d.example`);
}
probe('v6-awl/new-long-form', 5 * 3600, '2001:DB8:B:1:0:0:0:10', 'b@s.example', 'new@d.example');
probe('v6-awl/new-neighbour', 5 * 3600 + 1, '2001:db8:b:1::11', 'b@s.example', 'new@d.example');
// IPv4-mapped (Postfix sends the IPv4 form; another client of the protocol may not).
probe('v4-mapped/first', 0, '::ffff:10.70.1.10', 'a@s.example', 'r@d.example');
probe('v4-mapped/same-as-v4', 300, '10.70.1.10', 'a@s.example', 'r@d.example');
probe('v4-mapped/other-24', 301, '::ffff:10.70.99.10', 'a@s.example', 'r@d.example');
probe('v4-mapped/whitelisted-network', 302, '::ffff:203.0.113.9', 'a@s.example', 'r@d.example');

// Senders and recipients: a retry of each form after the delay, written differently.
const retried: Array<[string, string, string, string?, string?]> = [
  ['null-sender', '', ''],
  ['sender-case', 'Alice@Example.COM', 'alice@example.com'],
  ['plus-ext', 'bob+one@s.example', 'bob+two@s.example'],
  ['batv', 'prvs=0123abcdef=bob@s.example', 'prvs=1123bcdef0=bob@s.example'],
  ['batv-swapped', 'prvs=bob=0123abcdef@s.example', 'prvs=bob=1123bcdef0@s.example'],
  ['batv-upper', 'PRVS=0123ABCDEF=bob@s.example', 'PRVS=1123BCDEF0=bob@s.example'],
  ['batv-upper-tag', 'prvs=0123ABCDEF=bob@s.example', 'prvs=1123BCDEF0=bob@s.example'],
  ['batv-eq-local', 'prvs=0123abcdef=list-bounces+bob=x.org@s.example', 'prvs=1123bcdef0=list-bounces+bob=x.org@s.example'],
  ['srs0', 'SRS0=HHH1=TT=orig.example=alice@fwd.example', 'SRS0=HHH2=TU=orig.example=alice@fwd.example'],
  ['numbers', 'bounce-123@s.example', 'bounce-456@s.example'],
  ['numbers-alone', '123@s.example', '456@s.example'],
  ['numbers-underscore', 'user_123@s.example', 'user_456@s.example'],
  ['numbers-glued', 'a1b@s.example', 'a2b@s.example'],
  ['numbers-arabic-indic', 'news-٢٠٢٤@s.example', 'news-٢٠٢٥@s.example'],
  ['numbers-after-umlaut', 'ö1@s.example', 'ö2@s.example'],
  ['idn-domain', 'bob@bücher.example', 'bob@xn--bcher-kva.example'],
  ['two-ats', 'a@b-1@s.example', 'a@b-2@s.example'],
  ['no-domain', 'MAILER-DAEMON', 'mailer-daemon'],
  ['no-domain-number', 'bounce-1', 'bounce-2'],
  ['recipient-case', 'a@s.example', 'a@s.example', 'User@RCPT.Example', 'user@rcpt.example'],
  ['recipient-plus', 'a@s.example', 'a@s.example', 'bob+a@d.example', 'bob+b@d.example'],
];
retried.forEach(([name, first, retry, rcptFirst = 'r@d.example', rcptRetry = rcptFirst], i) => {
  const client = `10.80.${i + 1}.10`;
  probe(`${name}/first`, 0, client, first, rcptFirst);
  probe(`${name}/retry`, 300, client, retry, rcptRetry);
});

// Client whitelists (bench/greylist WHITELIST_CLIENTS) by name, regular expression and network; recipients.
const listed: Array<[string, string, string, string?]> = [
  ['wl-name', '10.90.1.10', 'lists.whitelisted.example'],
  ['wl-subdomain', '10.90.2.10', 'a.lists.whitelisted.example'],
  ['wl-name-case', '10.90.3.10', 'LISTS.Whitelisted.Example'],
  ['wl-near-miss', '10.90.4.10', 'xlists.whitelisted.example'],
  ['wl-regex', '10.90.5.10', 'mx12.bulk.example'],
  ['wl-regex-case', '10.90.6.10', 'MX12.BULK.EXAMPLE'],
  ['wl-regex-miss', '10.90.7.10', 'mx12.bulk.example.org'],
  ['wl-network-unknown', '203.0.113.77', 'unknown'],
  ['wl-network-named', '203.0.113.78', 'host.other.example'],
  ['wl-unknown', '10.90.8.10', 'unknown'],
  ['wl-recipient', '10.90.9.10', 'unknown', 'postmaster@d.example'],
  ['wl-recipient-case-ext', '10.90.10.10', 'unknown', 'PostMaster+x@d.example'],
  ['wl-recipient-miss', '10.90.11.10', 'unknown', 'xpostmaster@d.example'],
];
for (const [name, address, clientName, recipient = 'r@d.example'] of listed) probe(`${name}/first`, 0, address, 'a@s.example', recipient, clientName);

/**
 * The probes where callout decides otherwise than postgrey, as the README documents (section
 * "Greylisting"), and why. Any other difference fails the test, and so does one of these
 * that no longer differs (the list must stay true).
 */
const DOCUMENTED: Record<string, string> = {
  // postgrey forgets entries only in its maintenance, on the wall clock between 2 and 7 a.m. at
  // most once a day (never during a replay); callout's expire maxAge after their last write.
  'max-age+1/again': 'expiry by max-age at once, not by nightly maintenance',
  'max-age/again': 'expiry by max-age at once, not by nightly maintenance (postgrey keeps what is exactly max-age old)',
  'max-age-repeat/again': "a passed triplet's last-seen time is written at most once an hour",
  'awl/after-max-age': 'the client auto-allow expires maxAge after it was last written, not by nightly maintenance',
  // Sender keys (README "Sender normalisation").
  'batv-upper/retry': 'an upper-case PRVS= tag is taken as a tag',
  'batv-eq-local/retry': 'the local part after a tag may contain =',
  'srs0/retry': 'SRS addresses become the original sender',
  'numbers-arabic-indic/retry': 'digit runs of any script that stand alone become #',
  'numbers-after-umlaut/retry': 'letters outside ASCII are word characters: ö1 keeps its 1',
  'idn-domain/retry': 'the domain is keyed as its A-label',
  // A sender with two @ (a quoted local part, "a@b-1"@s.example): its domain is after the last
  // one, and its local part's number stands alone; postgrey splits at the first @ and keeps it.
  'two-ats/retry': 'the local part ends at the last @',
  // IPv4-mapped clients: postgrey keys them as IPv6 (all in ::/64) and matches no IPv4 network.
  'v4-mapped/same-as-v4': 'an IPv4-mapped client is its IPv4 address',
  'v4-mapped/other-24': 'an IPv4-mapped client is its IPv4 address',
};

function seconds(action: string): number | undefined {
  const match = /try again in (\d+) seconds/.exec(action);
  return match ? Number(match[1]) : undefined;
}

describe('greylisting compared with postgrey 1.37 at the edges of its rules', () => {
  it('decides every edge as postgrey does, but for the documented differences', { skip: requirePeer(postgreyAvailable() ? undefined : `${POSTGREY} is missing (run .ci/run, which installs postgrey)`) ?? false }, async () => {
    // Stable: requests of one scenario at one time keep their order.
    const trace = [...probes].sort((a, b) => a.time - b.time);
    const [callout, postgrey] = [
      await replayCallout(trace, { from: 'source' }),
      await replayPostgrey(trace, 1, undefined, undefined, ['--greylist-text=Greylisted, please try again in %s seconds']),
    ];
    const differing: Record<string, string> = {};
    const [ourVerdicts, theirVerdicts] = [callout.actions.map(classify), postgrey.actions.map(classify)];
    for (const [index, event] of trace.entries()) {
      const ours = callout.actions[index] ?? '';
      const theirs = postgrey.actions[index] ?? '';
      const [a, b] = [seconds(ours), seconds(theirs)];
      const same = ourVerdicts[index] === theirVerdicts[index] && (a === undefined || b === undefined || Math.abs(a - b) <= 1);
      if (!same) differing[event.label] = `callout ${JSON.stringify(ours)}, postgrey ${JSON.stringify(theirs)}`;
    }
    assert.deepEqual(
      Object.keys(differing).filter((label) => !(label in DOCUMENTED)).map((label) => `${label}: ${differing[label]}`),
      [],
      'undocumented differences',
    );
    assert.deepEqual(
      Object.keys(DOCUMENTED).filter((label) => !(label in differing)),
      [],
      'documented differences that no longer differ',
    );
    // Deferrals name seconds on both sides (the comparison of the seconds is not vacuous).
    const named = trace.filter((_, i) => seconds(callout.actions[i] ?? '') !== undefined && seconds(postgrey.actions[i] ?? '') !== undefined);
    assert.ok(named.length > 40, `${named.length} deferrals compared`);
  });
});
