// Configuration files as anyone might write them: any text, any YAML, any value under any key,
// every stage with any options. Reading and validating either gives a configuration or a
// ConfigError that names the file; building the stages (`config check`) the same, never a crash.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { stringify } from 'yaml';
import { loadConfig, readConfigFile, type RawConfig } from '../../src/config/load.js';
import { validateConfig } from '../../src/config/schema.js';
import { ConfigError } from '../../src/core/errors.js';
import { createLogger } from '../../src/core/log.js';
import { checkServeConfiguration } from '../../src/policy/daemon.js';
import { STAGE_DEFINITIONS } from '../../src/policy/stages/index.js';
import { elapsedMs } from '../support/fuzz.js';

const dir = mkdtempSync(join(tmpdir(), 'callout-config-fuzz-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const path = join(dir, 'callout.yaml');
const silent = createLogger('silent');

/** Throws unless err is a ConfigError whose message starts with `source: `. */
function assertConfigError(err: unknown, source: string): void {
  if (!(err instanceof ConfigError)) throw err;
  assert.ok(err.message.startsWith(`${source}: `), err.message);
}

/** YAML built from pieces that trip parsers: anchors, aliases, merges, tags, flow and block mixes. */
const yamlPiece = fc.constantFrom(
  'a: &x [1, 2]\n', 'b: *x\n', '<<: *x\n', '<<: {store: {kind: memory}}\n', '*y\n', '&y\n', 'policy:\n', '  stages:\n',
  '    - name: greylist\n', '      delay: !!binary aGVsbG8=\n', '  - ', '? [a, b]\n: c\n', 'store: !!set {sqlite}\n',
  'dns: {servers: [::1, 127.0.0.1]\n', '---\n', '...\n', '%YAML 1.2\n', '!!map\n', '"\\u0000": 1\n', 'x: |\n  text\n',
  "'", '"', '#', ': ', '\t', '- - -\n', 'log: {level: .nan}\n', 'policy: {workers: 1e400}\n', '~\n', 'policy: {stages: &s [*s]}\n',
);

/** What a configuration might say instead of the right value: mostly of the right type, sometimes not. */
const odd = fc.record({
  text: fc.oneof(
    fc.string({ maxLength: 12 }),
    fc.constantFrom('', ' ', '*', '[', '(?<', '\\', '/x/', '0.0.0.0/0', '::/0', '999.1.1.1/33', '@', '.', '..', '{seconds}%s%r{reason}', 'x'.repeat(300), '5m', '0s', '-1', 'defer', 'reject', 'DUNNO', 'RCPT', 'MAIL'),
  ),
  number: fc.oneof(fc.integer(), fc.constantFrom(0, -1, 1e300, 0.5, 65536, 1, 5, 32, 64, 128, 450, 550)),
  list: fc.array(fc.oneof(fc.string({ maxLength: 8 }), fc.constantFrom('10.0.0.0/8', '/^a(b$/', 'example.org', '.example.org', '@example.org', '', '::1', 'postmaster', 'RCPT')), { maxLength: 3 }),
  anything: fc.jsonValue({ maxDepth: 1 }),
  wrongType: fc.integer({ min: 0, max: 9 }),
});
type Odd = typeof odd extends fc.Arbitrary<infer T> ? T : never;

/** The odd value for a key that now holds `current`: of its type, unless wrongType says otherwise. */
function oddFor(current: unknown, choice: Odd): unknown {
  if (choice.wrongType === 0) return choice.anything;
  if (typeof current === 'number') return choice.number;
  if (typeof current === 'boolean') return choice.wrongType % 2 === 0;
  if (Array.isArray(current)) return choice.list;
  return choice.text;
}

/** A stage's options as its schema fills them in, with what the required ones need. */
function stageBase(name: string): Record<string, unknown> {
  const required: Record<string, Record<string, unknown>> = {
    'recipient-callforward': { hosts: ['127.0.0.2'] },
    batv: { domains: ['example.org'], keys: [{ keynum: 0, secret: 'a secret of some length' }] },
    ratelimit: { limits: [{ name: 'messages', per: 'client', count: 'messages', max: 10, window: '1h' }] },
  };
  const definition = STAGE_DEFINITIONS.find((d) => d.name === name)!;
  const parsed = definition.options.safeParse(required[name] ?? {});
  assert.ok(parsed.success, `${name}: the base options no longer validate`);
  return JSON.parse(JSON.stringify(parsed.data)) as Record<string, unknown>;
}

/** Sets value at key, or `depth` levels down inside what key holds (a list's first entry, a mapping's first key). */
function setSomewhere(target: Record<string, unknown>, key: string, value: Odd, depth: number): void {
  const current = target[key];
  if (depth % 3 > 0 && current !== null && typeof current === 'object') {
    const inner = (Array.isArray(current) ? current[0] : current) as unknown;
    if (inner !== null && typeof inner === 'object' && !Array.isArray(inner)) {
      const innerKeys = Object.keys(inner);
      if (innerKeys.length > 0) {
        setSomewhere(inner as Record<string, unknown>, innerKeys[depth % innerKeys.length]!, value, depth - 1);
        return;
      }
    }
  }
  target[key] = oddFor(current, value);
}

describe('configuration files fuzzed', () => {
  it('any text reads as settings or is refused with a ConfigError naming the file', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 200 }), fc.array(yamlPiece, { maxLength: 12 }).map((pieces) => pieces.join(''))), (text) => {
        writeFileSync(path, text);
        try {
          const raw = readConfigFile(path);
          assert.ok(raw !== null && typeof raw === 'object' && !Array.isArray(raw), 'raw !== null && typeof raw === \'object\' && !Array.isArray(raw)');
          validateConfig(raw, path);
        } catch (err) {
          assertConfigError(err, path);
        }
      }),
      { numRuns: 500 },
    );
  });

  it('an alias bomb is refused as a configuration problem, not expanded', () => {
    const bomb = ['a: &a [x, x, x, x, x, x, x, x, x]'];
    for (const [name, previous] of [['b', 'a'], ['c', 'b'], ['d', 'c'], ['e', 'd'], ['f', 'e'], ['g', 'f'], ['h', 'g']]) {
      bomb.push(`${name}: &${name} [${Array(9).fill(`*${previous}`).join(', ')}]`);
    }
    writeFileSync(path, bomb.join('\n'));
    assert.throws(() => readConfigFile(path), (err: unknown) => err instanceof ConfigError && /callout\.yaml: .*alias/i.test(err.message));
  });

  it('takes an anchor and 99 aliases of it and refuses 100: the README\'s limit of 100 copies, not one more', () => {
    // yaml counts the anchor itself as the first copy, so 99 aliases make the 100 allowed.
    const aliases = (n: number) => `a: &a [x]\nb: [${Array(n).fill('*a').join(',')}]\n`;
    writeFileSync(path, aliases(99));
    assert.equal((readConfigFile(path).b as unknown[]).length, 99);
    writeFileSync(path, aliases(100));
    assert.throws(() => readConfigFile(path), (err: unknown) => err instanceof ConfigError && err.message.startsWith(`${path}: YAML aliases: `));
  });

  it('an alias to no anchor is refused with the file named', () => {
    writeFileSync(path, '<<: *nowhere\n');
    assert.throws(() => readConfigFile(path), (err: unknown) => err instanceof ConfigError && /callout\.yaml: .*alias/i.test(err.message));
  });

  it('an anchor that holds its own alias is refused with its path', () => {
    writeFileSync(path, 'policy: {stages: &s [*s]}\n');
    assert.throws(() => readConfigFile(path), (err: unknown) => err instanceof ConfigError && err.message === `${path}: policy.stages.0: refers to itself (a YAML alias inside its own anchor)`);
  });

  it('an anchor named by many aliases is checked once, not once per alias', () => {
    // Timed against the same list named by one alias, not against a fixed bound: the parse
    // alone varies with the machine (a 300,000-item list took 16 s on a loaded one). Walked per
    // alias, 99 aliases of a 30,000-item list took 7 times the CPU time of one; walked once, as
    // much. The first reads warm the parser up: cold, one alias took up to three times as long.
    const readMs = (aliases: number) => {
      writeFileSync(path, `a: &a [${Array(30_000).fill('x').join(',')}]\nb: [${Array(aliases).fill('*a').join(',')}]\n`);
      let read: RawConfig = {};
      const ms = elapsedMs(() => (read = readConfigFile(path)));
      // Timed only if read whole: a reader that dropped the aliases would be fast for nothing.
      const b = read.b as unknown[][] | undefined;
      assert.deepEqual([b?.length, b?.[aliases - 1]?.length], [aliases, 30_000], 'each alias reads as the whole list');
      return ms;
    };
    readMs(1);
    const once = readMs(1);
    const many = readMs(99);
    assert.ok(many < 3 * once, `99 aliases took ${Math.round(many)} ms, one ${Math.round(once)} ms`);
  });

  it('refuses a tag it cannot resolve (!ENV, !secret) with its line, instead of taking the text after it', () => {
    writeFileSync(path, 'store:\n  path: !ENV CALLOUT_DB\n');
    assert.throws(() => readConfigFile(path), (err: unknown) => err instanceof ConfigError && err.message === `${path}: YAML tag at line 2, column 9: Unresolved tag: !ENV, which no setting takes`);
    writeFileSync(path, 'store:\n  path: !!str callout.db\n');
    assert.deepEqual(readConfigFile(path), { store: { path: 'callout.db' } }, 'a tag of the core schema is read');
  });

  it('a file over 1 MiB, or one without end, is refused without being read whole', () => {
    writeFileSync(path, `# ${'x'.repeat(1024 * 1024)}\n`);
    assert.throws(() => readConfigFile(path), (err: unknown) => err instanceof ConfigError && err.message === `${path}: larger than 1 MiB: not a configuration file`);
    assert.throws(() => readConfigFile('/dev/zero'), (err: unknown) => err instanceof ConfigError && err.message === '/dev/zero: not a regular file (a character device)');
  });

  it('refuses a FIFO at once (with no writer, a start or a reload waited for ever), and a file any user may write', () => {
    const fifo = join(dir, 'config-fifo');
    assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
    assert.throws(() => loadConfig(fifo), (err: unknown) => err instanceof ConfigError && err.message === `${fifo}: not a regular file (a FIFO)`);
    const open = join(dir, 'open.yaml');
    writeFileSync(open, 'dataDir: /var/lib/callout\n');
    chmodSync(open, 0o646);
    assert.throws(() => loadConfig(open), (err: unknown) => err instanceof ConfigError && err.message === `${open}: writable by any user (mode 0646), so anyone on this host could change it: chmod o-w`);
    chmodSync(open, 0o664);
    assert.equal(readConfigFile(open).dataDir, '/var/lib/callout');
  });

  it('any value under any setting validates or is refused with a ConfigError naming the file', () => {
    const sections = ['dataDir', 'dns', 'callout', 'cache', 'limits', 'store', 'policy', 'metrics', 'log', 'unknown'];
    fc.assert(
      fc.property(fc.dictionary(fc.constantFrom(...sections), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 4 }), (settings) => {
        writeFileSync(path, stringify(settings));
        try {
          validateConfig(readConfigFile(path), path);
        } catch (err) {
          assertConfigError(err, path);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('every stage with some of its options changed to anything: refused by key, or built as serve builds it', async () => {
    let built = 0;
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...STAGE_DEFINITIONS.map((d) => d.name)), fc.array(fc.tuple(fc.nat(), odd), { minLength: 1, maxLength: 3 }), fc.nat(), async (name, changes, depth) => {
        const entry = { ...stageBase(name) };
        const keys = Object.keys(entry);
        for (const [pick, value] of changes) setSomewhere(entry, keys[pick % keys.length]!, value, depth);
        writeFileSync(path, stringify({ store: { kind: 'memory' }, dns: { servers: ['127.0.0.1'] }, callout: { helo: 'verifier.example.org' }, policy: { stages: [{ ...entry, name }] } }));
        let config;
        try {
          config = loadConfig(path);
        } catch (err) {
          assertConfigError(err, path);
          return;
        }
        try {
          await checkServeConfiguration(config, silent);
          built += 1;
        } catch (err) {
          // The stages' own refusals (a file they cannot read, a bad list entry) name the stage.
          if (!(err instanceof ConfigError)) throw err;
        }
      }),
      { numRuns: 600 },
    );
    // Most changes are refused by the schema; the property is only worth something if many are not.
    assert.ok(built >= 60, `only ${built} of 600 configurations got as far as building their stage`);
  });
});
