// `callout senderid --message FILE` as the CLI runs it: a message near the 64 MiB it takes is
// checked without its body decoded.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { startDnsServer, type DnsTestServer } from '../support/dns-server.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'callout-senderid-'));
let dns: DnsTestServer;
before(async () => {
  dns = await startDnsServer({ 'pra.test': { TXT: ['v=spf1 ip4:127.0.0.1 -all'] } });
});
after(async () => {
  await dns.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('callout senderid --message', () => {
  it('checks a 60 MiB message within 48 MB of heap: only its header block is decoded', async () => {
    // The whole message decoded was a 60 MB string: "FATAL ERROR: Reached heap limit", exit 134.
    const message = join(dir, 'big.eml');
    writeFileSync(message, Buffer.concat([Buffer.from('From: someone@pra.test\r\nSubject: big\r\n\r\n'), Buffer.alloc(60 * 1024 * 1024, 'body line\r\n')]));
    const run = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, ['--max-old-space-size=48', '--import', 'tsx', 'src/cli/main.ts', 'senderid', '--ip', '127.0.0.1', '--message', message, '--dns-server', dns.address], { cwd: ROOT, timeout: 60_000 }, (error, stdout, stderr) => {
        resolve({ code: error ? (typeof error.code === 'number' ? error.code : null) : 0, stdout, stderr });
      });
    });
    assert.equal(run.code, 0, `senderid passed; stderr: ${run.stderr.slice(0, 300)}`);
    assert.match(run.stdout, /^pra: someone@pra\.test \(from the from field\)\nresult: pass\n/);
  });
});
