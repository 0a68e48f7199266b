/**
 * NAME
 *   test/e2e/greylist-whitelist-postgrey.e2e - callout's whitelist decisions against postgrey's on its shipped lists
 *
 * DESCRIPTION
 *   Debian's postgrey 1.37 runs (bench/greylist's replayPostgrey, a private --dbdir) with the
 *   whitelist_clients and whitelist_recipients it ships (test/fixtures/postgrey, see SOURCE.md),
 *   and callout's greylist stage, in this process behind its policy listener, reads the same
 *   files. Both are asked about clients and recipients derived from every entry: for a name
 *   the name, a subdomain, its upper case and near misses; for a regular expression a name it
 *   matches (made from the expression) and variants around it; for an address or network its
 *   first, middle and last address and the neighbours outside; for a recipient entry the
 *   local part in other domains, with extensions and in other cases, and near misses. Every
 *   request carries a sender of its own, so each is a triplet seen for the first time: it is
 *   deferred unless whitelisted, and DUNNO against DEFER_IF_PERMIT says whether an entry
 *   matched. replayPostgrey also hands postgrey the benchmark's own small lists; callout gets
 *   their entries inline, so both read the same union.
 *
 * LIMITS
 *   Needs /usr/sbin/postgrey (Debian package postgrey); skipped without it unless
 *   CALLOUT_E2E_REQUIRE_PEERS=1. Derives samples only for the regular-expression constructs the
 *   shipped list uses (anchors, \d, \w, \., ., classes, groups with alternatives, *, +, ?).
 */

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { classify, postgreyAvailable, replayPostgrey, POSTGREY, WHITELIST_CLIENTS, WHITELIST_RECIPIENTS, type TraceEvent, type Verdict } from '../../bench/greylist.js';
import { formatIp, parseCidr } from '../../src/core/ip.js';
import { requirePeer } from '../support/peers.js';
import { postfixRequest } from '../support/policy-client.js';
import { startDaemonWithClient } from '../support/daemon.js';
import { captureLog } from '../support/log-capture.js';

const CLIENTS_FILE = new URL('../fixtures/postgrey/whitelist_clients', import.meta.url).pathname;
const RECIPIENTS_FILE = new URL('../fixtures/postgrey/whitelist_recipients', import.meta.url).pathname;

/** Outside every network of the lists (TEST-NET-1), so only the name or recipient decides. */
const PLAIN_ADDRESS = '192.0.2.77';
const PLAIN_RECIPIENT = 'alice@rcpt.example';

interface Case {
  clientAddress: string;
  clientName: string;
  recipient: string;
  /** What the entry it was derived from says, when the case is certain to be inside or outside it. */
  expected?: Verdict;
  from: string;
}

function entriesOf(text: string): string[] {
  return text
    .split('\n')
    .map((line) => line.replace(/#.*$/, '').trim())
    .filter((entry) => entry !== '');
}

/**
 * A name the regular expression matches: each atom once (a quantified one too), a group's first
 * alternative, a class's first member, `.` as a dot (the lists mean one, unescaped or not).
 */
function sampleOf(body: string): string {
  let i = 0;
  const sequence = (): string => {
    let out = '';
    while (i < body.length && body[i] !== '|' && body[i] !== ')') {
      const c = body[i]!;
      let atom: string;
      if (c === '^' || c === '$') {
        i += 1;
        continue;
      } else if (c === '\\') {
        const next = body[i + 1]!;
        atom = next === 'd' ? '1' : next === 'w' ? 'w' : next;
        i += 2;
      } else if (c === '[') {
        const end = body.indexOf(']', i + 1);
        atom = body[i + 1]!;
        i = end + 1;
      } else if (c === '(') {
        i += body.startsWith('(?:', i) ? 3 : 1;
        atom = sequence();
        while (body[i] === '|') {
          i += 1;
          sequence();
        }
        i += 1;
      } else {
        atom = c;
        i += 1;
      }
      // A quantifier keeps the atom once; `.*` stands for a label's worth of text.
      if (body[i] === '*' || body[i] === '+' || body[i] === '?') {
        if (c === '.' && body[i] === '*') atom = 'x1';
        i += 1;
        if (body[i] === '?') i += 1;
      }
      out += atom;
    }
    return out;
  };
  return sequence();
}

function clientCases(text: string): Case[] {
  const cases: Case[] = [];
  const name = (clientName: string, from: string, expected?: Verdict) => cases.push({ clientAddress: PLAIN_ADDRESS, clientName, recipient: PLAIN_RECIPIENT, expected, from });
  const address = (clientAddress: string, from: string, expected?: Verdict) => cases.push({ clientAddress, clientName: 'unknown', recipient: PLAIN_RECIPIENT, expected, from });
  for (const entry of entriesOf(text)) {
    const regex = /^\/(\S+)\/$/.exec(entry)?.[1];
    const network = regex === undefined && /^[\d.]+(?:\/\d+)?$|:.*:/.test(entry) ? parseCidr(/^\d+\.\d+\.\d+$/.test(entry) ? `${entry}.0/24` : entry) : undefined;
    if (regex !== undefined) {
      const sample = sampleOf(regex);
      assert.ok(new RegExp(regex, 'i').test(sample), `the sample ${sample} of ${entry} matches it`);
      name(sample, entry, 'pass');
      name(sample.toUpperCase(), entry, 'pass');
      name(`x${sample}`, entry);
      name(`${sample}.example`, entry);
      name(`${sample}x`, entry);
      name(sample.replace(/\./, '-'), entry);
    } else if (network) {
      assert.ok(network.ok, `${entry} is a network`);
      const { family, network: first, prefixLength } = network.value;
      const last = first + (1n << BigInt((family === 4 ? 32 : 128) - prefixLength)) - 1n;
      for (const bits of new Set([first, (first + last) / 2n, last])) address(formatIp({ family, bits }), entry, 'pass');
      address(formatIp({ family, bits: first - 1n }), entry);
      address(formatIp({ family, bits: last + 1n }), entry);
    } else {
      name(entry, entry, 'pass');
      name(`mx1.${entry}`, entry, 'pass');
      name(`a.b.${entry.toUpperCase()}`, entry, 'pass');
      name(`x${entry}`, entry, 'defer');
      name(`${entry}.example`, entry, 'defer');
      name(`${entry}x`, entry, 'defer');
      name(entry.slice(entry.indexOf('.') + 1), entry);
    }
  }
  return cases;
}

function recipientCases(text: string): Case[] {
  const cases: Case[] = [];
  const recipient = (to: string, from: string, expected?: Verdict) => cases.push({ clientAddress: PLAIN_ADDRESS, clientName: 'unknown', recipient: to, expected, from });
  for (const entry of entriesOf(text)) {
    assert.match(entry, /^[^@\s]+@$/, 'the shipped recipient list holds local parts only');
    const local = entry.slice(0, -1);
    for (const domain of ['example.org', 'sub.example.org', 'EXAMPLE.NET', 'xn--bcher-kva.example']) recipient(`${local}@${domain}`, entry, 'pass');
    recipient(`${local.toUpperCase()}@example.org`, entry, 'pass');
    recipient(`${local[0]!.toUpperCase()}${local.slice(1)}@example.org`, entry, 'pass');
    recipient(`${local}+tag@example.org`, entry, 'pass');
    recipient(`${local}+a+b@example.org`, entry, 'pass');
    recipient(`${local}++@example.org`, entry, 'pass');
    recipient(`${local}+@example.org`, entry);
    recipient(`${local}s@example.org`, entry, 'defer');
    recipient(`x${local}@example.org`, entry, 'defer');
    recipient(`${local}.x@example.org`, entry, 'defer');
    recipient(`${local}-x@example.org`, entry, 'defer');
    recipient(`bob@${local}.example`, entry, 'defer');
    // A recipient without a domain is no user@ entry's.
    recipient(local, entry, 'defer');
  }
  return cases;
}

const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** callout's verdicts: the greylist stage alone, reading the same files, over its policy listener. */
async function askCallout(cases: readonly Case[]): Promise<Verdict[]> {
  const { lines, log } = captureLog();
  const { client } = await startDaemonWithClient(
    {
      overrides: {
        store: { kind: 'memory' },
        dns: { servers: ['127.0.0.1:1'] },
        policy: {
          listen: '127.0.0.1:0',
          stages: [
            {
              name: 'greylist',
              whitelistClientFiles: [CLIENTS_FILE],
              whitelistRecipientFiles: [RECIPIENTS_FILE],
              // The benchmark's lists, which replayPostgrey also hands postgrey.
              whitelistClients: WHITELIST_CLIENTS.split('\n'),
              whitelistRecipients: WHITELIST_RECIPIENTS.split('\n'),
            },
          ],
        },
        metrics: { listen: '' },
      },
      log,
    },
    cleanups,
  );
  assert.deepEqual(lines.filter((l) => l.msg === 'greylist whitelist entry ignored'), [], 'every entry of the shipped lists is read');
  const verdicts: Verdict[] = [];
  for (const [index, c] of cases.entries()) {
    const action = await client.request(
      postfixRequest({ instance: `w${index}`, client_address: c.clientAddress, client_name: c.clientName, reverse_client_name: c.clientName, sender: `s${index}@sender.example`, recipient: c.recipient }),
    );
    verdicts.push(classify(action));
  }
  return verdicts;
}

describe('greylist whitelists compared with postgrey 1.37 on its shipped lists', () => {
  it('whitelists exactly the clients and recipients postgrey does', { skip: requirePeer(postgreyAvailable() ? undefined : `${POSTGREY} is missing (run .ci/run, which installs postgrey)`) ?? false }, async () => {
    const cases = [...clientCases(readFileSync(CLIENTS_FILE, 'utf8')), ...recipientCases(readFileSync(RECIPIENTS_FILE, 'utf8'))];
    const start = Date.UTC(2026, 2, 2, 8) / 1000;
    const trace: TraceEvent[] = cases.map((c, index) => ({ time: start + index, clientAddress: c.clientAddress, clientName: c.clientName, sender: `s${index}@sender.example`, recipient: c.recipient }));
    const postgrey = (await replayPostgrey(trace, 1, undefined, undefined, [`--whitelist-clients=${CLIENTS_FILE}`, `--whitelist-recipients=${RECIPIENTS_FILE}`])).actions.map(classify);
    const callout = await askCallout(cases);
    const show = (c: Case, index: number) => `${c.clientName}[${c.clientAddress}] to ${c.recipient} (from ${c.from}): postgrey ${postgrey[index]}, callout ${callout[index]}`;
    const differences = cases.flatMap((c, index) => (callout[index] === postgrey[index] ? [] : [show(c, index)]));
    assert.deepEqual(differences, [], `${differences.length} of ${cases.length} decisions differ`);
    // The derivation itself: inside an entry is whitelisted, a near miss is not.
    const unexpected = cases.flatMap((c, index) => (c.expected === undefined || c.expected === postgrey[index] ? [] : [show(c, index)]));
    assert.deepEqual(unexpected, []);
    const passed = postgrey.filter((v) => v === 'pass').length;
    assert.ok(passed > 400 && cases.length - passed > 300, `${passed} of ${cases.length} whitelisted`);
  });
});
