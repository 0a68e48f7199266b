// A key given twice in one mapping of the configuration file, fuzzed against yaml's own check
// (uniqueKeys), which the reader no longer runs: it compared each key with every one before
// it, and a file of many keys took seconds to read, inside the daemon at a reload.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { parseDocument } from 'yaml';
import { readConfigFile } from '../../src/config/load.js';
import { ConfigError } from '../../src/core/errors.js';
import { elapsedMs } from '../support/fuzz.js';

const dir = mkdtempSync(join(tmpdir(), 'callout-config-keys-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const path = join(dir, 'callout.yaml');

/** The message readConfigFile gives the text, or undefined when it reads it. */
function refusal(text: string): string | undefined {
  writeFileSync(path, text);
  try {
    readConfigFile(path);
    return undefined;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return err.message;
  }
}

describe('keys given twice in one mapping', () => {
  it('are refused where yaml\'s own check refuses them, at the repeated key, and only there', () => {
    const key = fc.constantFrom('a', 'b', '"a"', "'b'", '1', '01', 'true', '~', 'null', '? a', '[a]', '{a: 1}', '&k a', '*k', '!!str 1');
    const value = fc.constantFrom('1', 'x', '[1, a: 2]', '{a: 1, b: 2}', '{a: 1, a: 2}', '', '~');
    const mapping = fc.array(fc.tuple(key, value, fc.boolean()), { minLength: 1, maxLength: 6 }).map((pairs) =>
      pairs.map(([k, v, nested], i) => (nested ? `m${i}:\n  ${k}: ${v}\n  ${k === 'a' ? 'b' : 'a'}: 2\n` : `${k}: ${v}\n`)).join(''),
    );
    fc.assert(
      fc.property(mapping, (text) => {
        const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true, logLevel: 'error' });
        const message = refusal(text);
        const [first] = doc.errors;
        if (first?.code === 'DUPLICATE_KEY') {
          const where = new RegExp(`^${path}: YAML syntax error at line (\\d+), column (\\d+): Map keys must be unique$`).exec(message ?? '');
          assert.ok(where, `${JSON.stringify(text)}: ${message}`);
          const at = (line: number, col: number) => text.split('\n').slice(0, line - 1).join('\n').length + (line > 1 ? 1 : 0) + col - 1;
          const offset = at(Number(where[1]), Number(where[2]));
          // yaml puts the error where the key's properties may begin: after an empty value, at
          // the end of the line before. The key itself starts at the first character after it.
          const { line, col } = first.linePos![0];
          assert.equal(offset, at(line, col) + (/^\s*/.exec(text.slice(at(line, col)))?.[0].length ?? 0), `${JSON.stringify(text)}: ${message}`);
        } else {
          assert.ok(!message?.includes('Map keys must be unique'), `${JSON.stringify(text)}: ${message}`);
        }
      }),
      { numRuns: 500 },
    );
  });

  it('are found among many keys in linear time: a mapping of 40,000 keys reads about as fast as a list of as many items', () => {
    // Timed against the list, not against a fixed bound: yaml's parse alone varies with the
    // machine. Compared with every key before it, each key made the mapping take 15 times the list.
    const n = 40_000;
    const keys = Array.from({ length: n }, (_, i) => `k${i}: v`).join('\n');
    const list = `l:\n${Array.from({ length: n }, (_, i) => `- k${i}`).join('\n')}`;
    const read = (text: string) => {
      writeFileSync(path, text);
      return elapsedMs(() => readConfigFile(path));
    };
    read(list);
    const listMs = read(list);
    const keysMs = read(keys);
    assert.ok(keysMs < 4 * listMs + 100, `${keysMs.toFixed(0)} ms for ${n} keys, ${listMs.toFixed(0)} ms for as many items`);
    assert.equal(refusal(`${keys}\nk0: again\n`), `${path}: YAML syntax error at line ${n + 1}, column 1: Map keys must be unique`);
  });
});
