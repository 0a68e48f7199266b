// Outside values in the errors of the built CLI: cut, then quoted as JSON with C1 and bidi controls
// written as \uXXXX (core/text shownJson), wherever the refusal is worded (core/ip, dns/node-resolver,
// config/schema, core/listen, cli/options readMessageInput), never reaching the terminal raw.
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { AddressSet } from '../../src/core/ip.js';
import { callout } from '../support/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'callout-outside-values-'));
after(() => rmSync(dir, { recursive: true, force: true }));

// U+009B is a terminal's CSI (ESC [); U+202E reverses the text after it.
const CSI = '\u009b';
const RLO = '\u202e';

/** The error line of stderr (greylist warns of its missing stage first), after the exit status is checked. */
async function refusal(args: string[], code: number): Promise<string> {
  const run = await callout(args);
  assert.equal(run.code, code, `callout ${args.join(' ')} exits ${code}; stderr: ${run.stderr}`);
  const line = run.stderr.split('\n').find((l) => /^callout: [A-Z_]+: /.test(l));
  assert.ok(line !== undefined, `callout ${args.join(' ')} prints an error; stderr: ${run.stderr}`);
  assert.ok(!/[\x80-\x9f\u202e]/.test(run.stderr), `no C1 or bidi control reaches the terminal raw: ${JSON.stringify(run.stderr)}`);
  return line;
}

describe('outside values in refusals', () => {
  it('core/ip: a prefix length or a network of a command argument', async () => {
    assert.equal(
      await refusal(['greylist', 'list', '--data-dir', dir, '--client', `10.0.0.1/${CSI}`], 64),
      'callout: USAGE: client: got "10.0.0.1/\\u009b": prefix length must be 0 to 32: "\\u009b"',
    );
  });

  it('core/ip: an entry of a list a stage builds its set from, cut', () => {
    const parsed = AddressSet.parse(['192.0.2.0/24', `${CSI}${'x'.repeat(1000)}`]);
    assert.ok(!parsed.ok, 'the entry is refused');
    assert.equal(parsed.reason, `"\\u009b${'x'.repeat(79)}...": longer than 64 characters`);
  });

  it('dns/node-resolver: a --dns-server', async () => {
    assert.equal(
      await refusal(['spf', '--dns-server', `${CSI}1`, '--ip', '127.0.0.1', '--sender', 'a@example.test'], 64),
      'callout: USAGE: spf: --dns-server: dns server "\\u009b1": expected an IP address, optionally with :port',
    );
  });

  it('config/schema and core/listen: every value and unknown key `config check` quotes, ordinary ones as before', async () => {
    const file = join(dir, 'controls.yaml');
    writeFileSync(
      file,
      [
        `dataDir: ${dir}`,
        'callout:',
        '  tls: "\\x9b31m"',
        '  helo: ["a\\x9b"]',
        '  port: "25"',
        '  "a\\x9bb": 1',
        '  allowTargets: ["10.0.0.1/\\x9b", "1\\u202e.2.3.4", "10.0.0.1/33"]',
        'policy:',
        '  listen: "[\\x9b]:25"',
        '  stages:',
        '    - name: "grey\\x9b"',
        'metrics:',
        '  listen: "a\\x9b b:25"',
        '',
      ].join('\n'),
    );
    chmodSync(file, 0o600);
    const line = await refusal(['config', 'check', file], 78);
    const problems = line.slice(`callout: CONFIG_INVALID: ${file}: `.length).split('; ');
    assert.deepEqual(problems.sort(), [
      'callout."a\\u009bb": unknown key, expected one of helo, sender, fallbackSender, port, tls, timeouts, randomProbe, randomLocalPart, postmasterProbe, vrfy, noDetails, maxMxHosts, ipv6, allowTargets, sourceAddress, pipelining, connectionCache',
      'callout.allowTargets.0: got "10.0.0.1/\\u009b", expected an IPv4 or IPv6 address or network (prefix length must be 0 to 32: "\\u009b")',
      'callout.allowTargets.1: got "1\\u202e.2.3.4", expected an IPv4 or IPv6 address or network (192.0.2.0/24, 2001:db8::/32)',
      'callout.allowTargets.2: got "10.0.0.1/33", expected an IPv4 or IPv6 address or network (prefix length must be 0 to 32: "33")',
      'callout.helo: got ["a\\u009b"], expected text',
      'callout.port: got "25", expected a number',
      'callout.tls: got "\\u009b31m", expected one of off, opportunistic, required',
      'metrics.listen: got "a\\u009b b:25", expected HOST:PORT, [IPv6]:PORT or an absolute UNIX socket path ("a\\u009b b" is not a host name or an IP address)',
      'policy.listen: got "[\\u009b]:25", expected HOST:PORT, [IPv6]:PORT or an absolute UNIX socket path ("\\u009b" is not an IPv6 address)',
      'policy.stages.0.name: got "grey\\u009b", expected one of allowlist, postmaster, sender-syntax, spf, iprev, sender-callout, recipient-callforward, greylist, tarpit, batv, ratelimit',
    ]);
  });

  it('core/listen: a listener flag of rewrite serve', async () => {
    const secrets = join(dir, 'srs-secrets');
    writeFileSync(secrets, 'secret1\n', { mode: 0o600 });
    const serve = (listen: string) => refusal(['rewrite', 'serve', '--socketmap', listen, '--srs-secret-file', secrets, '--srs-domain', 'srs.test'], 64);
    assert.deepEqual(await Promise.all([serve(`[${CSI}]:25`), serve(`127.0.0.1:2${CSI}5`), serve(`${RLO}x`)]), [
      'callout: USAGE: --socketmap: got "[\\u009b]:25", expected HOST:PORT, [IPv6]:PORT or an absolute UNIX socket path ("\\u009b" is not an IPv6 address)',
      'callout: USAGE: --socketmap: got "127.0.0.1:2\\u009b5", expected HOST:PORT, [IPv6]:PORT or an absolute UNIX socket path (the port "2\\u009b5" is not a number)',
      'callout: USAGE: --socketmap: got "\\u202ex", expected HOST:PORT, [IPv6]:PORT or an absolute UNIX socket path (no port)',
    ]);
  });

  it('cli/options readMessageInput: the message file of senderid', async () => {
    const missing = join(dir, `${CSI}31m.eml`);
    assert.equal(
      await refusal(['senderid', '--ip', '127.0.0.1', '--message', missing], 64),
      `callout: USAGE: senderid: --message "${join(dir, '\\u009b31m.eml')}": cannot read: no such file (ENOENT)`,
    );
  });
});
