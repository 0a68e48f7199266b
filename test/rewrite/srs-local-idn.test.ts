import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { Command } from 'commander';
import { registerRewriteCommands } from '../../src/cli/rewrite.js';
import { SocketmapClient } from '../support/lookup-clients.js';

const dir = mkdtempSync(join(tmpdir(), 'callout-srs-local-idn-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const secretFile = join(dir, 'srs.secret');
writeFileSync(secretFile, 'tops3cr3t\n');
chmodSync(secretFile, 0o600);

/** `callout rewrite serve ARGS` on a loopback socketmap, queried by `use`, then stopped. */
async function serving(args: string[], use: (client: SocketmapClient) => Promise<void>): Promise<void> {
  const program = new Command('callout').exitOverride().configureOutput({ writeErr: () => undefined, writeOut: () => undefined });
  const out = new PassThrough();
  let text = '';
  let listening: (port: number) => void = () => undefined;
  const up = new Promise<number>((resolve) => (listening = resolve));
  out.on('data', (chunk: Buffer) => {
    text += chunk.toString();
    const port = / listening on 127\.0\.0\.1:(\d+)\n/.exec(text)?.[1];
    if (port !== undefined) listening(Number(port));
  });
  const stop = new AbortController();
  const log = { info: () => undefined, warn: () => undefined };
  registerRewriteCommands(program, { out, stdin: Readable.from(['']), stop: stop.signal, log });
  const served = program.parseAsync(['node', 'callout', 'rewrite', 'serve', '--socketmap', '127.0.0.1:0', '--srs-secret-file', secretFile, ...args]);
  try {
    const port = await Promise.race([up, served.then(() => assert.fail(`rewrite serve ended before listening: ${JSON.stringify(text)}`))]);
    const client = await SocketmapClient.connect({ host: '127.0.0.1', port });
    try {
      await use(client);
    } finally {
      client.close();
    }
  } finally {
    stop.abort();
    await served;
    process.exitCode = 0;
  }
}

const LOCAL = 'NOTFOUND Need not rewrite local domain.';

describe('rewrite serve: SRS local domains in U-labels and A-labels', () => {
  it('leaves a local domain\'s senders alone in either form, however the local domain is written (regression: xn--bcher-kva.example was rewritten under bücher.example)', async () => {
    await serving(['--srs-domain', 'fwd.example', '--srs-local-domain', 'bücher.example', '--srs-local-domain', '.xn--mnchen-3ya.example'], async (client) => {
      for (const sender of ['info@bücher.example', 'info@xn--bcher-kva.example', 'info@XN--BCHER-KVA.example', 'info@mx.münchen.example', 'info@mx.xn--mnchen-3ya.example']) {
        assert.equal(await client.query('forward', sender), LOCAL, `${sender} is in a local domain`);
      }
      // Foreign senders, a subdomain of an exact entry and the parent of a '.domain' one are still rewritten.
      for (const sender of ['info@xn--bcher-kva.example.net', 'info@mx.xn--bcher-kva.example', 'info@xn--mnchen-3ya.example', 'info@buecher.example']) {
        assert.match(await client.query('forward', sender), /^OK SRS0=[^@]+@fwd\.example$/, `${sender} is foreign`);
      }
    });
  });

  it('takes its SRS domain, always local, in either form too', async () => {
    await serving(['--srs-domain', 'srs.bücher.example'], async (client) => {
      assert.match(await client.query('forward', 'alice@example.org'), /^OK SRS0=[^@]+@srs\.bücher\.example$/, 'a foreign sender is rewritten into the SRS domain');
      for (const sender of ['postmaster@srs.bücher.example', 'postmaster@srs.xn--bcher-kva.example']) {
        assert.equal(await client.query('forward', sender), LOCAL, `${sender} is in the SRS domain`);
      }
    });
  });
});
