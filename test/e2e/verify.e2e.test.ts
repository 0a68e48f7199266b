/**
 * NAME
 *   test/e2e/verify.e2e - `callout verify` against real Postfix exchangers on loopback
 *
 * DESCRIPTION
 *   The in-process DNS server publishes MX records pointing at two Postfix instances: one with
 *   real users (unknown users get Postfix's own 550 5.1.1), one a catch-all. The CLI is run as
 *   a child process, exactly as an administrator would, and its JSON Lines are checked.
 */

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startDnsServer } from '../support/dns-server.js';
import type { DnsTestServer } from '../support/dns-server.js';
import { startPostfix, stopAllPostfix } from '../support/postfix.js';

const PORT = 25260;
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

let dns: DnsTestServer;

before(async () => {
  dns = await startDnsServer({
    'real.test': { MX: [{ priority: 10, exchange: 'mx.real.test' }] },
    'mx.real.test': { A: ['127.0.0.30'] },
    'catch.test': { MX: [{ priority: 10, exchange: 'mx.catch.test' }] },
    'mx.catch.test': { A: ['127.0.0.31'] },
  });
  await Promise.all([
    startPostfix({ name: 'verify-real', host: '127.0.0.30', port: PORT, myhostname: 'mx.real.test', domains: { 'real.test': ['alice', 'bob'] } }),
    startPostfix({ name: 'verify-catch', host: '127.0.0.31', port: PORT, myhostname: 'mx.catch.test', domains: { 'catch.test': 'catch-all' } }),
  ]);
});

after(async () => {
  await stopAllPostfix();
  await dns?.close();
});

function verify(addresses: string[]): Promise<{ code: number; lines: Array<Record<string, unknown>>; stderr: string }> {
  const args = [
    '--import', 'tsx', 'src/cli/main.ts', 'verify', '--json',
    '--dns-server', dns.address, '--allow-target', '127.0.0.0/8', '--port', String(PORT), '--helo', 'verifier.callout.test',
    ...addresses,
  ];
  return new Promise((resolve) => {
    execFile(process.execPath, args, { cwd: ROOT, timeout: 60_000 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
      resolve({ code, lines: stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>), stderr });
    });
  });
}

describe('callout verify against real Postfix', () => {
  it('an existing user is deliverable, a missing one undeliverable with Postfix\'s 550, postmaster deliverable', async () => {
    const { code, lines, stderr } = await verify(['alice@real.test', 'nobody@real.test', 'postmaster@real.test']);
    assert.equal(lines.length, 3, stderr);
    const [alice, nobody, postmaster] = lines;
    assert.equal(alice!.verdict, 'deliverable');
    assert.equal(alice!.catchAll, 'refused');
    assert.equal(nobody!.verdict, 'undeliverable');
    const reply = nobody!.reply as { code: number; enhanced: string; text: string };
    assert.equal(reply.code, 550);
    assert.equal(reply.enhanced, '5.1.1');
    assert.match(reply.text, /User unknown in virtual mailbox table/);
    assert.equal(postmaster!.verdict, 'deliverable');
    assert.equal(code, 1, 'exit status 1: one address is undeliverable');
  });

  it('a catch-all domain is risky', async () => {
    const { code, lines } = await verify(['anything@catch.test']);
    assert.equal(lines[0]!.verdict, 'risky');
    assert.equal(lines[0]!.reason, 'catch-all');
    assert.equal(code, 2);
  });
});
