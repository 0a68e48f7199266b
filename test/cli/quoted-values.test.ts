// A value from the command line quoted in a usage error, as the built CLI prints it on standard error.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { callout } from '../support/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'callout-quoted-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** The usage error's line of stderr (greylist warns of its missing stage first). */
async function usage(args: string[]): Promise<string> {
  const { code, stderr } = await callout(args);
  assert.equal(code, 64, `callout ${args.join(' ')} exits 64; stderr: ${stderr}`);
  const line = stderr.split('\n').find((l) => l.startsWith('callout: USAGE: '));
  assert.ok(line !== undefined, `callout ${args.join(' ')} prints a usage error; stderr: ${stderr}`);
  return line;
}

// U+009B is a terminal's CSI (ESC [), U+202E reverses the text after it: JSON.stringify leaves both raw.
const CSI = '\u009b';
const RLO = '\u202e';

describe('values quoted in usage errors', () => {
  it('a value holding double quotes is quoted once, with its quotes escaped', async () => {
    assert.equal(await usage(['greylist', 'list', '--data-dir', dir, '--limit', '"5"']), 'callout: USAGE: --limit: got "\\"5\\"", expected a whole number 1 or more');
    assert.equal(await usage(['batv', 'sign', '--secret-file', 'a', '--secret-file', 'say "b"', 'x@example.test']), 'callout: USAGE: --secret-file given twice ("a", then "say \\"b\\""): it takes one value');
    assert.equal(await usage(['senderid', '--ip', '127.0.0.1', '--message', '/dev/null', '--scope', '"pra"']), 'callout: USAGE: senderid: --scope must be pra or mfrom, got "\\"pra\\""');
  });

  it('C1 and bidi controls are written as \\uXXXX, never raw on the terminal', async () => {
    const runs = await Promise.all([
      usage(['serve', '--workers', `${CSI}31m`]),
      usage(['greylist', 'list', '--data-dir', dir, '--kind', `${CSI}31m`]),
      usage(['greylist', 'drop', '--data-dir', dir, `${CSI}31m`]),
      usage(['greylist', 'allow', '--data-dir', dir, '192.0.2.1', 'a@example.test', `b\u0001${RLO}`]),
      usage(['spf', '--ip', `${CSI}31m`, '--sender', 'a@example.test']),
      usage(['spf', '--ip', '127.0.0.1', '--identity', RLO]),
      usage(['senderid', '--ip', `${CSI}31m`, '--message', '/dev/null']),
    ]);
    assert.deepEqual(runs, [
      'callout: USAGE: --workers: got "\\u009b31m", expected a number',
      'callout: USAGE: --kind: got "\\u009b31m", expected one of triplet, client, domain',
      'callout: USAGE: client: got "\\u009b31m", expected an IP address, a network such as 192.0.2.0/24, or domain:NAME',
      'callout: USAGE: RECIPIENT: got "b\\u0001\\u202e", expected an address',
      'callout: USAGE: spf: --ip "\\u009b31m" is not an IP address',
      'callout: USAGE: spf: --identity must be mailfrom or helo, got "\\u202e"',
      'callout: USAGE: senderid: --ip "\\u009b31m" is not an IP address',
    ]);
  });

  it('a long value is cut before it is quoted, so the quote stays closed', async () => {
    assert.equal(await usage(['greylist', 'list', '--data-dir', dir, '--limit', '9'.repeat(100_000)]), `callout: USAGE: --limit: got "${'9'.repeat(40)}...", expected a whole number 1 or more`);
  });
});
