// `callout verify --timeout`: the overall limit bounds the whole verification, DNS included.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
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
});
