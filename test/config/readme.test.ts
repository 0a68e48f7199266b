// The README's configuration, read as an administrator reads it: its YAML examples pass what
// `callout config check` checks, and its reference (the table under "Configuration reference"
// and the option tables of the stages) names every key the schema takes, and only those, with
// the schema's defaults and ranges. Each was written by hand beside the schema, and drifted.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { parse } from 'yaml';
import { parseDuration } from '../../src/config/duration.js';
import { readConfigFile } from '../../src/config/load.js';
import { configSchema, schemaKeys, validateConfig } from '../../src/config/schema.js';
import { ConfigError } from '../../src/core/errors.js';
import { checkServeConfiguration } from '../../src/policy/daemon.js';
import { STAGE_DEFINITIONS } from '../../src/policy/stages/index.js';
import { STAGE_REQUIRED, leaves, setting } from '../support/config-keys.js';
import { captureLog } from '../support/log-capture.js';

const README = readFileSync(new URL('../../README.md', import.meta.url), 'utf8').split('\n');
const dir = mkdtempSync(join(tmpdir(), 'callout-readme-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Each line of the README, and whether it lies in a fenced block (where `#` starts no heading). */
const FENCED = (() => {
  let inside = false;
  return README.map((line) => {
    if (line.startsWith('```')) inside = !inside;
    return inside || line.startsWith('```');
  });
})();

/** The lines from a heading (its text as written) to the next heading of its level or above. */
function section(heading: string): string[] {
  const start = README.findIndex((line, i) => !FENCED[i] && line === heading);
  assert.ok(start >= 0, `the README has the heading ${heading}`);
  const level = /^#+/.exec(heading)![0].length;
  const end = README.findIndex((line, i) => i > start && !FENCED[i] && /^#+ /.test(line) && /^#+/.exec(line)![0].length <= level);
  return README.slice(start, end < 0 ? undefined : end);
}

/** The cells of a table row; `\|` is a pipe inside a cell. */
const cells = (row: string) => row.replace(/^\|/, '').replace(/\|$/, '').split(/(?<!\\)\|/).map((cell) => cell.trim().replace(/\\\|/g, '|'));

/** The body rows of the first table in `lines` whose header row starts with `header`. */
function table(lines: string[], header: string): string[][] {
  const start = lines.findIndex((line) => line.startsWith(header));
  assert.ok(start >= 0, `a table headed ${header}`);
  const rows: string[][] = [];
  for (const line of lines.slice(start + 2)) {
    if (!line.startsWith('|')) break;
    rows.push(cells(line));
  }
  return rows;
}

/** Text with its parentheses (outside code spans) left out: they explain, they are not the value. */
function withoutAsides(text: string): string {
  let out = '';
  let depth = 0;
  let code = false;
  for (const ch of text) {
    if (ch === '`' && depth === 0) code = !code;
    if (!code && ch === '(') depth++;
    if (depth === 0) out += ch;
    if (!code && ch === ')' && depth > 0) depth--;
  }
  return out.replace(/\s+/g, ' ').trim();
}

/** Parts of a cell separated by `,` or `/` outside code spans. */
function parts(text: string): string[] {
  const found: string[] = [];
  let current = '';
  let code = false;
  for (const ch of text) {
    if (ch === '`') code = !code;
    if (!code && (ch === ',' || ch === '/')) {
      found.push(current.trim());
      current = '';
    } else current += ch;
  }
  return [...found, current.trim()].filter((part) => part !== '');
}

/**
 * The keys a key cell names: `callout.timeouts.connect` / `greeting` are two keys of one
 * mapping; `actions.<result>` is every key of `actions` (of `within`, the keys it could mean).
 */
function keysOf(cell: string, within: string[]): string[] {
  const names = [...withoutAsides(cell).matchAll(/`([^`]+)`/g)].map((m) => m[1]!);
  assert.ok(names.length > 0, `a key in the cell ${cell}`);
  const parent = names[0]!.slice(0, names[0]!.lastIndexOf('.') + 1);
  return names.flatMap((name, i) => {
    const full = i > 0 && !name.includes('.') ? parent + name : name;
    const wildcard = /^(.*\.)<\w+>$/.exec(full);
    return wildcard ? within.filter((key) => key.startsWith(wildcard[1]!)) : [full];
  });
}

type Documented = { value: string } | 'none' | 'words';

/** One documented default: a value (in a code span, or a bare number or boolean), none, or words. */
function documented(part: string): Documented {
  const code = /^`([^`]*)`$/.exec(part);
  if (code) return { value: code[1]! };
  if (/^(?:true|false|\d+)$/.test(part)) return { value: part };
  return /^none\b/.test(part) ? 'none' : 'words';
}

/** The defaults of a default cell, one per key of its row (one for all when it gives one). */
function defaultsOf(cell: string, count: number): Documented[] {
  if (count === 1) return [documented(withoutAsides(cell))];
  const found = parts(withoutAsides(cell)).map(documented);
  if (found.length === 1) return Array<Documented>(count).fill(found[0]!);
  assert.equal(found.length, count, `one default per key in the cell ${cell}`);
  return found;
}

/** The defaults of keys written as one (`actions.<result>`): "fail `reject`, all others `continue`". */
function byName(cell: string, keys: string[]): Documented[] {
  const named = new Map<string, Documented>();
  for (const part of parts(withoutAsides(cell))) {
    const read = /^(all(?: others)?|\w+) (`[^`]*`)$/.exec(part);
    assert.ok(read, `a default for each key in the cell ${cell}`);
    named.set(read[1]!.startsWith('all') ? '*' : read[1]!, documented(read[2]!));
  }
  return keys.map((key) => named.get(key.slice(key.lastIndexOf('.') + 1)) ?? named.get('*') ?? 'words');
}

/** Whether a value of the schema is the one a README writes. Durations compare by length. */
function sameValue(actual: unknown, written: string): boolean {
  if (/^\d+(?:ms|s|m|h|d|w)$/.test(written)) {
    const want = parseDuration(written);
    const got = typeof actual === 'number' ? { ok: true, ms: actual } : typeof actual === 'string' ? parseDuration(actual) : { ok: false };
    return want.ok && got.ok && 'ms' in got && got.ms === want.ms;
  }
  if (/^[[{]|^""$/.test(written)) return isDeepStrictEqual(actual, parse(written));
  return String(actual) === written;
}

function at(root: unknown, key: string): unknown {
  return key.split('.').reduce<unknown>((node, part) => (node !== null && typeof node === 'object' ? (node as Record<string, unknown>)[part] : undefined), root);
}

/** Whether `keys` (documented) covers `key` (of the schema): itself, or a mapping around it. */
const covers = (keys: string[], key: string) => keys.some((doc) => doc === key || key.startsWith(`${doc}.`));

/**
 * Defaults the README gives in words, since no value can be written: this host's name, an
 * option's own value (spf's receiver is its authservId), a code made of another option's class.
 */
const DERIVED = new Set(['callout.helo', 'spf.authservId', 'spf.receiver', 'iprev.authservId', 'sender-callout.receiver', 'tarpit.hardEnhanced', 'greylist.purgeInterval']);
// policy.idlePollMicros: 200, 0 on a one-CPU machine (the README says both).
if (availableParallelism() === 1) DERIVED.add('policy.idlePollMicros');

function stage(name: string) {
  const definition = STAGE_DEFINITIONS.find((d) => d.name === name);
  assert.ok(definition, `a stage named ${name}`);
  return { keys: schemaKeys(definition.options), defaults: definition.options.parse(STAGE_REQUIRED[name] ?? {}) as unknown };
}

/**
 * Compares a reference table with a schema: every key it names is one the schema takes, with
 * its default, and every key the schema takes is in it (or a mapping around it). Stage names
 * prefix the keys in messages.
 */
function checkReference(rows: string[][], keys: string[], defaults: unknown, prefix: string): void {
  const named: string[] = [];
  for (const [keyCell, defaultCell] of rows) {
    const rowKeys = keysOf(keyCell!, keys);
    named.push(...rowKeys);
    const written = keyCell!.includes('<') ? byName(defaultCell!, rowKeys) : defaultsOf(defaultCell!, rowKeys.length);
    rowKeys.forEach((key, i) => {
      assert.ok(keys.includes(key), `${prefix}${key}, in the README, is a key the schema takes`);
      if (DERIVED.has(prefix + key)) return;
      const doc = written[i]!;
      const actual = at(defaults, key);
      if (prefix + key === 'policy.stages') {
        // Names in words: allowlist, postmaster, ...
        assert.deepEqual(withoutAsides(defaultCell!).split(', '), (actual as { name: string }[]).map((entry) => entry.name), 'the default stages');
        return;
      }
      assert.notEqual(doc, 'words', `the README gives ${prefix}${key} a default in words (${defaultCell}); write the value, as config print prints it (${JSON.stringify(actual)})`);
      if (doc === 'none') assert.ok(actual === undefined || isDeepStrictEqual(actual, []), `${prefix}${key}: the README says none, the schema's default is ${JSON.stringify(actual)}`);
      else if (doc !== 'words') assert.ok(sameValue(actual, doc.value), `${prefix}${key}: the README's default is ${doc.value}, the schema's ${JSON.stringify(actual)}`);
    });
  }
  for (const key of leaves(keys)) assert.ok(covers(named, key), `${prefix}${key}, a key the schema takes, is in the README's table`);
}

/** The YAML examples: the README's yaml blocks, and the one-line file of "Running under systemd". */
function examples(): { line: number; text: string }[] {
  const found: { line: number; text: string }[] = [];
  README.forEach((line, i) => {
    if (line !== '```yaml') return;
    const end = README.indexOf('```', i + 1);
    found.push({ line: i + 1, text: README.slice(i + 1, end).join('\n') });
  });
  README.forEach((line, i) => {
    const printf = /^printf '([^']*)' > \/etc\/callout\/callout\.yaml$/.exec(line);
    if (printf) found.push({ line: i + 1, text: printf[1]!.replace(/\\n/g, '\n') });
  });
  return found;
}

describe('the README\'s YAML examples', () => {
  it('pass what config check checks: the schema, and the stages as serve builds them, warning of nothing', async () => {
    const found = examples();
    assert.ok(found.length >= 6, `found ${found.length} examples`);
    // The BATV example names /etc/callout/batv.key1, a file that holds its secret: one is made
    // here, as an administrator makes it (the example is whole but for that file).
    const secretFile = join(dir, 'batv.key1');
    writeFileSync(secretFile, 'a secret of the readme\n', { mode: 0o600 });
    for (const { line, text } of found) {
      const path = join(dir, `line-${line}.yaml`);
      writeFileSync(path, text.replaceAll('/etc/callout/batv.key1', secretFile));
      const { log, lines } = captureLog();
      try {
        await checkServeConfiguration(validateConfig(readConfigFile(path), path), log);
      } catch (err) {
        assert.fail(`the README's example at line ${line}: ${err instanceof ConfigError ? err.message : String(err)}`);
      }
      // Whether callouts are on depends on this host's name, not on the example.
      const warnings = lines.filter((entry) => !String(entry.msg).startsWith('callouts are off'));
      assert.deepEqual(warnings, [], `the README's example at line ${line} draws no warning`);
    }
  });

  it('include the call-forward stage of the stage table, after postmaster', async () => {
    const cell = README.find((line) => line.startsWith('| `recipient-callforward` |'));
    const example = /Example: `(\{ name: recipient-callforward[^`]*\})`/.exec(cell ?? '');
    assert.ok(example, 'the recipient-callforward row gives an example');
    // Made whole: a call-forward needs callout.helo where the host name is not fully qualified.
    const config = validateConfig({ callout: { helo: 'mx1.example.org' }, policy: { stages: [{ name: 'postmaster' }, parse(example[1]!)] } });
    await checkServeConfiguration(config, captureLog().log);
  });

  it('give the defaults where the README says they do (the batv stage\'s window, code, enhanced and texts)', () => {
    const batv = examples().find(({ text }) => text.includes('name: batv'));
    assert.ok(batv, 'a batv example');
    const entry = (parse(batv.text) as { policy: { stages: Record<string, unknown>[] } }).policy.stages.find((s) => s.name === 'batv')!;
    const { defaults } = stage('batv');
    for (const key of ['window', 'code', 'enhanced', 'invalidText', 'expiredText', 'unsignedText']) {
      assert.equal(String(entry[key]), String(at(defaults, key)), `batv ${key} in the example is its default`);
    }
  });
});

describe('the messages the README quotes', () => {
  it('are config check\'s own: a bad value and an unknown key, a decision deadline too long', () => {
    const sample = README.find((line) => line.startsWith('callout: CONFIG_INVALID: bad.yaml: '));
    assert.ok(sample, 'the sample output of config check');
    assert.throws(() => validateConfig({ callout: { tls: 'maybe', prot: 25 } }, 'bad.yaml'), (err: unknown) => err instanceof ConfigError && `callout: ${err.code}: ${err.message}` === sample, sample);
    const deadline = /`(policy\.decisionTimeout: got "120s", expected at most 99s) \(…\)`/.exec(section('## Configuration reference').join(' '));
    assert.ok(deadline, 'the refused decision deadline in the reference');
    assert.throws(() => validateConfig({ policy: { decisionTimeout: '120s' } }), (err: unknown) => err instanceof ConfigError && err.message.startsWith(`configuration: ${deadline[1]!} (`), deadline[1]);
  });
});

describe('the configuration reference', () => {
  const reference = section('## Configuration reference');

  it('lists every key of the schema, and only those, with its default', () => {
    checkReference(table(reference, '| key |'), schemaKeys(configSchema), validateConfig({}), '');
  });

  it('gives the ranges of the whole numbers the schema takes', () => {
    const text = reference.join(' ');
    const sentence = /Whole numbers have these ranges: (.*?) In the stages/.exec(text);
    assert.ok(sentence, 'the sentence of ranges');
    let parent = '';
    const ranges = [...sentence[1]!.matchAll(/`([\w.]+)` (\d+)-(\d+)/g)];
    assert.ok(ranges.length >= 10, `${ranges.length} ranges read`);
    for (const [, written, min, max] of ranges) {
      const key = written!.includes('.') ? written! : parent + written!;
      parent = key.slice(0, key.lastIndexOf('.') + 1);
      for (const ok of [Number(min), Number(max)]) assert.equal(at(validateConfig(setting(key, ok)), key), ok, `${key} takes ${ok}`);
      for (const bad of [Number(min) - 1, Number(max) + 1]) {
        assert.throws(() => validateConfig(setting(key, bad)), (err: unknown) => err instanceof ConfigError && err.message.startsWith(`configuration: ${key}: got ${bad}, expected`), `${key} refuses ${bad}`);
      }
    }
  });

  it('gives the ranges of the stages\' whole numbers: every option of that name, in every stage that has one, takes them', () => {
    const text = reference.join(' ');
    const sentence = /In the stages: (.*?) \| key \|/.exec(text);
    assert.ok(sentence, 'the sentence of the stages\' ranges');
    const ranges = [...sentence[1]!.matchAll(/((?:`[\w.]+`(?:,? and |, )?)+) (\d+)-(\d+)/g)];
    assert.ok(ranges.length >= 4, `${ranges.length} ranges read`);
    for (const [, names, min, max] of ranges) {
      for (const [, name] of names!.matchAll(/`([\w.]+)`/g)) {
        const holders = STAGE_DEFINITIONS.flatMap((definition) => leaves(schemaKeys(definition.options)).filter((key) => key === name || key.endsWith(`.${name!}`)).map((key) => ({ stage: definition.name, key })));
        assert.ok(holders.length > 0, `a stage has an option ${name}`);
        for (const { stage: stageName, key } of holders) {
          const entry = (value: number) => ({ policy: { stages: [{ name: 'postmaster' }, { name: stageName, ...STAGE_REQUIRED[stageName], ...setting(key, value) }] } });
          for (const ok of [Number(min), Number(max)]) assert.equal(at(validateConfig(entry(ok)).policy.stages[1], key), ok, `${stageName} ${key} takes ${ok}`);
          for (const bad of [Number(min) - 1, Number(max) + 1]) {
            assert.throws(() => validateConfig(entry(bad)), (err: unknown) => err instanceof ConfigError && err.message.startsWith(`configuration: policy.stages.1.${key} (${stageName}): got ${bad}, expected`), `${stageName} ${key} refuses ${bad}`);
          }
        }
      }
    }
  });

  it('names every duration that arms a timer, and only those (at most 2147483s)', () => {
    const text = reference.join(' ');
    const list = /Those that arm a timer \(([^)]*)\)/.exec(text);
    assert.ok(list, 'the list of timer durations');
    const named = [...list[1]!.matchAll(/`([^`]+)`/g)].flatMap((m) => (m[1]!.endsWith('.*') ? leaves(schemaKeys(configSchema)).filter((key) => key.startsWith(m[1]!.slice(0, -1))) : [m[1]!]));
    // A duration is kept in milliseconds: the keys that read "1s" as 1000.
    const durations = leaves(schemaKeys(configSchema)).filter((key) => {
      try {
        return at(validateConfig(setting(key, '1s')), key) === 1000;
      } catch {
        return false;
      }
    });
    // dns.minTtl is bounded by dns.maxTtl too, a bound of another kind: that one is lifted.
    const timers = durations.filter((key) => {
      try {
        validateConfig(key === 'dns.minTtl' ? { dns: { minTtl: '2147484s', maxTtl: '1000d' } } : setting(key, '2147484s'));
        return false;
      } catch {
        return true;
      }
    });
    assert.deepEqual(timers.sort(), named.sort());
  });
});

describe('the stages\' option tables', () => {
  const serve = section('### `callout serve` — the Postfix policy service');
  const auth = section('#### Policy stages `spf` and `iprev`');
  const tables: [string, string[][]][] = [
    ['sender-callout', table(serve, '| key | default | meaning |')],
    ['spf', table(auth, '| option (spf) |')],
    ['iprev', table(auth, '| option (iprev) |')],
    ['greylist', table(section('#### Greylisting (`greylist`)'), '| option |')],
    ['tarpit', table(section('#### Tarpitting (`tarpit`)'), '| option |')],
  ];
  for (const [name, rows] of tables) {
    it(`${name}: every option, and only those, with its default`, () => {
      const { keys, defaults } = stage(name);
      checkReference(rows, keys, defaults, `${name}.`);
    });
  }

  it('the stages without a table: every option is named in the stage\'s section', () => {
    const sections: Record<string, string[]> = {
      allowlist: serve,
      postmaster: serve,
      'sender-syntax': serve,
      'recipient-callforward': serve,
      batv: section('#### Refusing backscatter at RCPT: the `batv` policy stage'),
      ratelimit: section('#### Rate limits (`ratelimit`)'),
    };
    for (const [name, lines] of Object.entries(sections)) {
      const text = lines.join('\n');
      for (const key of leaves(stage(name).keys)) {
        const last = key.slice(key.lastIndexOf('.') + 1);
        assert.ok([`\`${key}\``, `\`${last}\``, `${last}:`].some((form) => text.includes(form)), `${name}'s option ${key} is named in its section of the README`);
      }
    }
  });
});
