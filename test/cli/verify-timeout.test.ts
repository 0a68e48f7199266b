// `callout verify --timeout`: the overall limit bounds the whole verification, DNS included, and the process.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { runVerify } from '../../src/cli/verify.js';
import { validateConfig } from '../../src/config/schema.js';
import { startDnsServer, type DnsTestServer } from '../support/dns-server.js';

describe('callout verify against a name server that never answers', () => {
  let dns: DnsTestServer;
  before(async () => {
    dns = await startDnsServer({ 'silent.test': { drop: true } });
  });
  after(() => dns.close());

  it('answers unknown dns-tempfail within --timeout, not after the resolver\'s own 15 s, and exits 2', async () => {
    // dns.timeout and dns.tries at their defaults (5 s, 2): c-ares alone gives up after 15 s.
    const config = validateConfig({
      dns: { servers: [dns.address] },
      store: { kind: 'memory' },
      callout: { helo: 'verifier.callout.test', timeouts: { overall: '500ms' } },
    });
    const out = new PassThrough();
    let printed = '';
    out.on('data', (chunk: Buffer) => (printed += chunk.toString()));
    const started = Date.now();
    const status = await runVerify(['alice@silent.test'], { json: false, concurrency: 1 }, config, out);
    const elapsed = Date.now() - started;
    assert.equal(status, 2);
    assert.match(printed, /^alice@silent\.test: unknown \(dns-tempfail\) - DNS lookup for silent\.test failed temporarily: no answer within the overall deadline of 500 ms \(callout\.timeouts\.overall\)/);
    // Room for a loaded machine; 15 s without the deadline.
    assert.ok(elapsed < 3000, `answered after ${elapsed} ms`);
  });

  it('exits once the verdict is printed: the lookup still running is given up, not waited out through its 15 s of retries', async () => {
    const args = ['--import', 'tsx', 'src/cli/main.ts', 'verify', '--helo', 'verifier.callout.test', '--dns-server', dns.address, '--timeout', '1', 'alice@silent.test'];
    const child = spawn(process.execPath, args, { cwd: join(import.meta.dirname, '../..'), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let printedAt = 0;
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      printedAt ||= Date.now();
    });
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    const lingered = Date.now() - printedAt;
    assert.equal(code, 2, stderr);
    assert.match(stdout, /^alice@silent\.test: unknown \(dns-tempfail\)/);
    // 14 s before the lookups were given up; room here for a loaded machine.
    assert.ok(lingered < 5000, `exited ${lingered} ms after its verdict`);
  });
});
