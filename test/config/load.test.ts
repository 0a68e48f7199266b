// "Flags override the file": a flag that conflicts with the configuration file wins, key by key,
// in mergeConfig, in loadConfig, in `callout config print` and in `callout serve` (also across a reload).
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { parse } from 'yaml';
import { loadConfig, mergeConfig } from '../../src/config/load.js';
import { ABSOLUTE_PATH_EXPECTED } from '../../src/config/paths.js';
import { ConfigError, UsageError } from '../../src/core/errors.js';
import { createLogger } from '../../src/core/log.js';
import { Daemon } from '../../src/policy/daemon.js';
import { ROOT, callout } from '../support/cli.js';
import { freePorts } from '../support/ports.js';
import { startServeProcess } from '../support/serve-process.js';

const dir = mkdtempSync(join(tmpdir(), 'callout-load-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

/** Every engine flag's key, set in the file to something the flags then contradict. */
const ENGINE_FILE = [
  'callout:',
  '  helo: file.example.org',
  '  sender: file-probe@example.org',
  '  port: 2525',
  '  allowTargets: [10.0.0.0/8, 192.168.0.0/16]',
  '  timeouts:',
  '    connect: 3s',
  '    overall: 30s',
  'dns:',
  '  servers: [192.0.2.53, 192.0.2.54]',
  '  tries: 3',
  'store:',
  '  kind: redis',
  '  url: redis://10.0.0.5:6379/0',
  '',
].join('\n');

describe('mergeConfig', () => {
  it('lets the override win key by key, keeps the file\'s other keys, replaces arrays whole', () => {
    const merged = mergeConfig(
      { callout: { helo: 'file.example.org', port: 2525, timeouts: { connect: '3s', overall: '30s' } }, dns: { servers: ['192.0.2.53', '192.0.2.54'] } },
      { callout: { helo: 'flag.example.org', timeouts: { overall: 7 } }, dns: { servers: ['127.0.0.1:5353'] } },
    );
    assert.deepEqual(merged, {
      callout: { helo: 'flag.example.org', port: 2525, timeouts: { connect: '3s', overall: 7 } },
      dns: { servers: ['127.0.0.1:5353'] },
    });
  });

  it('an absent flag (undefined) leaves the file\'s value', () => {
    assert.deepEqual(mergeConfig({ callout: { helo: 'file.example.org' } }, { callout: { helo: undefined } }), { callout: { helo: 'file.example.org' } });
  });
});

describe('loadConfig', () => {
  it('validates the file with the overrides on top: the override wins a conflict', () => {
    const path = file('engine.yaml', ENGINE_FILE);
    const config = loadConfig(path, { callout: { helo: 'flag.example.org', port: 2526, timeouts: { overall: 7 } }, dns: { servers: ['127.0.0.1:5353'] } });
    assert.equal(config.callout.helo, 'flag.example.org');
    assert.equal(config.callout.port, 2526);
    assert.equal(config.callout.timeouts.overall, 7000, 'the flag\'s seconds');
    assert.equal(config.callout.timeouts.connect, 3000, 'the file\'s key the flag did not set');
    assert.deepEqual(config.dns.servers, ['127.0.0.1:5353']);
    assert.equal(config.dns.tries, 3);
  });

  it('blames a bad flag on the command line (a usage error, 64), and a bad key on the file (78)', () => {
    const path = file('engine.yaml', ENGINE_FILE);
    assert.throws(() => loadConfig(path, { limits: { listConcurrency: 0 } }), (err: unknown) => err instanceof UsageError && err.message.startsWith('command line: limits.listConcurrency: got 0'));
    const bad = file('bad.yaml', 'limits:\n  listConcurrency: 0\n');
    assert.throws(() => loadConfig(bad, { callout: { port: 2526 } }), (err: unknown) => err instanceof ConfigError && err.message.startsWith(`${bad}: limits.listConcurrency: got 0`));
    assert.throws(() => loadConfig(undefined, { callout: { port: 0 } }), (err: unknown) => err instanceof UsageError && err.message.startsWith('command line: callout.port: got 0'), 'no file at all');
  });

  it('refuses a top-level __proto__ key as unknown, as it does one further down', () => {
    for (const text of ['__proto__:\n  dataDir: /elsewhere\n', 'callout:\n  __proto__:\n    port: 26\n']) {
      const path = file('proto.yaml', text);
      assert.throws(() => loadConfig(path), (err: unknown) => err instanceof ConfigError && /: (callout\.)?__proto__: unknown key, expected one of [^;]+$/.test(err.message), text);
    }
  });

  it('refuses a !!binary value in one short line naming its key, not an unknown key per octet', () => {
    const path = file('binary.yaml', `dns: !!binary ${Buffer.alloc(100_000, 7).toString('base64')}\n`);
    assert.throws(
      () => loadConfig(path),
      (err: unknown) => err instanceof ConfigError && err.message === `${path}: dns: a !!binary value, which no setting takes`,
    );
  });

  it('says what a file that is no mapping holds instead (it said only "expected a mapping of settings")', () => {
    const list = file('list.yaml', '- callout\n- helo: mx.example.org\n');
    assert.throws(() => loadConfig(list), (err: unknown) => err instanceof ConfigError && err.message === `${list}: got ["callout",{"helo":"mx.example.org"}] at the top level, expected a mapping of settings (key: value lines)`);
    const word = file('word.yaml', `${'x'.repeat(500)}\n`);
    assert.throws(() => loadConfig(word), (err: unknown) => err instanceof ConfigError && err.message === `${word}: got "${'x'.repeat(100)}..." at the top level, expected a mapping of settings (key: value lines)`);
  });

  it('names a file of .inf or .nan by its value, not as null (JSON has no Infinity)', () => {
    for (const [text, shown] of [['.inf', 'Infinity'], ['-.inf', '-Infinity'], ['.nan', 'NaN']] as const) {
      const path = file('number.yaml', `${text}\n`);
      assert.throws(() => loadConfig(path), (err: unknown) => err instanceof ConfigError && err.message === `${path}: got ${shown} at the top level, expected a mapping of settings (key: value lines)`, text);
    }
  });

  it('names by its flag a problem only the file and the flags together make (--workers 4 over a file of store.kind memory)', () => {
    const path = file('memory.yaml', 'store:\n  kind: memory\n');
    const flagOf = (key: string) => `--flag (${key})`;
    assert.throws(
      () => loadConfig(path, { policy: { workers: 4 } }, {}, { flagOf }),
      (err: unknown) => err instanceof ConfigError && err.message === `${path}: --flag (policy.workers): got 4, expected 1 with store.kind memory (workers share their state through the store: use sqlite or redis)`,
    );
    // The file's own key, where no flag set it, keeps its name.
    const workers = file('workers.yaml', 'store:\n  kind: memory\npolicy:\n  workers: 4\n');
    assert.throws(() => loadConfig(workers, { callout: { port: 2526 } }, {}, { flagOf }), (err: unknown) => err instanceof ConfigError && err.message.startsWith(`${workers}: policy.workers: got 4,`));
  });

  it('refuses a relative dataDir in a file, which the daemon and `callout greylist` would each take from their own directory', () => {
    const path = file('relative-data.yaml', 'dataDir: var/callout\n');
    assert.throws(
      () => loadConfig(path),
      (err: unknown) => err instanceof ConfigError && err.message === `${path}: dataDir: got "var/callout", ${ABSOLUTE_PATH_EXPECTED}`,
    );
    assert.equal(loadConfig(file('absolute-data.yaml', `dataDir: ${dir}\n`)).dataDir, dir);
    // A flag is the shell's, as --cache is: the command that reads it runs where it was typed.
    assert.equal(loadConfig(file('no-data.yaml', 'log:\n  level: warn\n'), { dataDir: 'here' }).dataDir, 'here');
  });

  it('refuses a file with no settings when asked to (a reload of a file still being written), and reads it as the defaults otherwise', () => {
    for (const text of ['', '# only a comment\n']) {
      const path = file('empty.yaml', text);
      assert.throws(() => loadConfig(path, {}, {}, { refuseEmpty: true }), (err: unknown) => err instanceof ConfigError && err.message.startsWith(`${path}: holds no settings`), JSON.stringify(text));
      assert.equal(loadConfig(path).policy.stages.length, 4, JSON.stringify(text));
    }
  });

  it('puts the file over the command\'s own baseline, and the flags over both', () => {
    const path = file('sqlite-store.yaml', 'store:\n  kind: sqlite\n');
    assert.equal(loadConfig(path, {}, { store: { kind: 'memory' } }).store.kind, 'sqlite', 'the file over the baseline');
    assert.equal(loadConfig(file('no-store.yaml', 'log:\n  level: warn\n'), {}, { store: { kind: 'memory' } }).store.kind, 'memory', 'the baseline where the file says nothing');
    assert.equal(loadConfig(path, { store: { kind: 'redis' } }, { store: { kind: 'memory' } }).store.kind, 'redis', 'the flag over both');
  });

  it('refuses a key given twice in one mapping, with its line (the second one was taken without a word)', () => {
    const path = file('twice.yaml', 'callout:\n  port: 25\n  port: 26\n');
    assert.throws(() => loadConfig(path), (err: unknown) => err instanceof ConfigError && err.message === `${path}: YAML syntax error at line 3, column 3: Map keys must be unique`);
  });

  it('says a syntax error in one short line, its position once, without yaml\'s excerpt of the file', () => {
    const path = file('unclosed.yaml', `callout:\n  helo: "${'x'.repeat(500)}\n  port: 25\n`);
    assert.throws(
      () => loadConfig(path),
      (err: unknown) => err instanceof ConfigError && err.message === `${path}: YAML syntax error at line 4, column 1: Missing closing "quote`,
    );
    // yaml's own message of an indentation error is longer than the line the message gives it.
    const indented = file('indented.yaml', `callout: {port: 1, helo: ${'y'.repeat(400)}\nlog: x\n`);
    assert.throws(() => loadConfig(indented), (err: unknown) => {
      assert.ok(err instanceof ConfigError, 'a ConfigError');
      assert.doesNotMatch(err.message, /\n/, 'one line');
      assert.equal(err.message.match(/at line \d+, column \d+/g)?.length, 1, `the position once: ${err.message}`);
      assert.ok(err.message.length <= `${indented}: YAML syntax error at line 2, column 1: `.length + 200, `yaml's text cut at 200 characters: ${err.message.length}`);
      return true;
    });
  });

  it('writes nothing of yaml\'s own to the process (a mapping as a key is the schema\'s to refuse, by its path)', (t) => {
    const emitted = t.mock.method(process, 'emitWarning', () => undefined);
    const path = file('collection-key.yaml', '? [a, b]\n: 1\n');
    assert.throws(() => loadConfig(path), (err: unknown) => err instanceof ConfigError && err.message.startsWith(`${path}: [ a, b ]: unknown key`));
    assert.equal(emitted.mock.callCount(), 0, 'no process warning from yaml');
  });

  it('says what a dataDir must be: an empty one is no directory, and a long relative one is quoted by its start', () => {
    const empty = file('empty-data.yaml', 'dataDir: ""\n');
    assert.throws(() => loadConfig(empty), (err: unknown) => err instanceof ConfigError && err.message === `${empty}: dataDir: got "", expected a directory`);
    const long = file('long-data.yaml', `dataDir: ${'d'.repeat(5000)}\n`);
    assert.throws(() => loadConfig(long), (err: unknown) => err instanceof ConfigError && err.message.startsWith(`${long}: dataDir: got "${'d'.repeat(100)}...", expected an absolute path`));
  });

  it('says a second YAML document is one too many, not which function of the yaml library to call', () => {
    for (const [text, line] of [['callout:\n  port: 2525\n---\nlog:\n  level: debug\n', 3], ['callout:\n  port: 2525\n...\nlog:\n  level: debug\n', 4]] as const) {
      const path = file('two-documents.yaml', text);
      assert.throws(
        () => loadConfig(path),
        (err: unknown) => err instanceof ConfigError && err.message === `${path}: YAML syntax error at line ${line}, column 1: a second document begins here (after "---" or "..."), and a configuration file holds one`,
        text,
      );
    }
  });
});

interface Printed {
  callout: { helo: string; sender: string; port: number; allowTargets: string[]; timeouts: { connect: string; overall: string } };
  dns: { servers: string[]; tries: number };
  store: { kind: string; path: string };
}

describe('callout config print --config FILE with conflicting flags', () => {
  it('prints every engine flag\'s value over the file\'s, and the file\'s other keys', async () => {
    const path = file('print.yaml', ENGINE_FILE);
    const cache = join(dir, 'flag-cache.sqlite');
    const { code, stdout, stderr } = await callout([
      'config', 'print', '--config', path,
      '--helo', 'flag.example.org',
      '--sender', '<>',
      '--port', '2526',
      '--allow-target', '127.0.0.0/8',
      '--timeout', '7',
      '--dns-server', '127.0.0.1:5353',
      '--cache', cache,
    ]);
    assert.equal(code, 0, stderr);
    const printed = parse(stdout) as Printed;
    assert.equal(printed.callout.helo, 'flag.example.org');
    assert.equal(printed.callout.sender, '', '--sender <> is the null sender');
    assert.equal(printed.callout.port, 2526);
    assert.deepEqual(printed.callout.allowTargets, ['127.0.0.0/8']);
    assert.equal(printed.callout.timeouts.overall, '7s');
    assert.equal(printed.callout.timeouts.connect, '3s');
    assert.deepEqual(printed.dns.servers, ['127.0.0.1:5353']);
    assert.equal(printed.dns.tries, 3);
    assert.equal(printed.store.kind, 'sqlite', '--cache over the file\'s Redis store');
    assert.equal(printed.store.path, cache);
  });

  it('takes a relative --cache FILE from the current directory, not the data directory', async () => {
    const { code, stdout, stderr } = await callout(['config', 'print', '--cache', 'relative-cache.sqlite']);
    assert.equal(code, 0, stderr);
    assert.equal((parse(stdout) as Printed).store.path, join(ROOT, 'relative-cache.sqlite'));
  });

  it('without flags prints the file\'s values (the flags above really changed something)', async () => {
    const { code, stdout, stderr } = await callout(['config', 'print', '--config', file('plain.yaml', ENGINE_FILE)]);
    assert.equal(code, 0, stderr);
    const printed = parse(stdout) as Printed;
    assert.equal(printed.callout.helo, 'file.example.org');
    assert.equal(printed.callout.port, 2525);
    assert.equal(printed.callout.timeouts.overall, '30s');
    assert.deepEqual(printed.dns.servers, ['192.0.2.53', '192.0.2.54']);
    assert.equal(printed.store.kind, 'redis');
  });
});

describe('callout serve --config FILE with conflicting flags', () => {
  it('listens where --listen says, keeps its store under --data-dir and serves no metrics with --metrics ""', async () => {
    const [filePort, flagPort, fileMetrics] = await freePorts(3);
    const fileData = join(dir, 'file-data');
    const flagData = join(dir, 'flag-data');
    const path = file('serve.yaml', [
      `dataDir: ${fileData}`,
      'callout:',
      '  helo: file.example.org',
      'policy:',
      `  listen: 127.0.0.1:${filePort}`,
      'metrics:',
      `  listen: 127.0.0.1:${fileMetrics}`,
      '',
    ].join('\n'));
    const serve = await startServeProcess(['--config', path, '--listen', `127.0.0.1:${flagPort}`, '--data-dir', flagData, '--metrics', '', '--helo', 'flag.example.org']);
    try {
      assert.equal(serve.policyAddress, `127.0.0.1:${flagPort}`);
      assert.equal(serve.metricsAddress, 'off');
      assert.ok(existsSync(join(flagData, 'callout.sqlite')), 'the store is under --data-dir');
      assert.ok(!existsSync(fileData), 'nothing under the file\'s dataDir');
    } finally {
      assert.equal((await serve.stop()).code, 0, serve.stderr());
    }
  });

  it('keeps the flags over the file when reload() (what SIGHUP runs) re-reads it', async () => {
    const path = file('reload.yaml', 'callout:\n  helo: file.example.org\n  port: 2525\n');
    const daemon = await Daemon.start({
      configPath: path,
      overrides: { callout: { helo: 'flag.example.org' }, dataDir: join(dir, 'reload-data'), policy: { listen: '127.0.0.1:0' }, metrics: { listen: '' } },
      log: createLogger('info', new Writable({ write: (_chunk, _enc, done) => done() })),
    });
    try {
      assert.equal(daemon.config.callout.helo, 'flag.example.org');
      writeFileSync(path, 'callout:\n  helo: edited.example.org\n  port: 2600\n');
      assert.equal(await daemon.reload(), true);
      assert.equal(daemon.config.callout.helo, 'flag.example.org', 'the flag still wins after the reload');
      assert.equal(daemon.config.callout.port, 2600, 'the edited file\'s other keys are taken');
    } finally {
      await daemon.stop();
    }
  });
});
