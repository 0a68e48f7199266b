// config/load: lists and mappings nested deeper than MAX_NESTING, refused before yaml composes them.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { ConfigError } from '../../src/core/errors.js';
import { loadConfig } from '../../src/config/load.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'callout-nesting-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

function refusal(path: string): string {
  try {
    loadConfig(path);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `a ConfigError for ${path}: ${String(err)}`);
    return err.message;
  }
  assert.fail(`${path} was read without an error`);
}

const tooDeep = (path: string, where: string) => `${path}: lists and mappings nested more than 64 levels deep (the one at ${where} is the 65th): no setting is nested that deep`;

describe('nesting of a configuration file', () => {
  it('5000 [ are refused as nested too deep, not as a stack exhausted', () => {
    const path = file('flow.yaml', `${'['.repeat(5000)}${']'.repeat(5000)}\n`);
    assert.equal(refusal(path), tooDeep(path, 'line 1, column 65'));
  });

  it('says where the first collection too deep begins, in block style too', () => {
    const block = Array.from({ length: 100 }, (_, i) => `${' '.repeat(i)}k${i}:`).join('\n');
    const path = file('block.yaml', `${block} 1\n`);
    assert.equal(refusal(path), tooDeep(path, 'line 65, column 65'));
    // A key is inside its mapping too: `? [[...]]` is no way around the bound.
    const key = file('key.yaml', `? ${'['.repeat(64)}${']'.repeat(64)}\n: 1\n`);
    assert.equal(refusal(key), tooDeep(key, 'line 1, column 66'));
  });

  it('64 levels reach the schema, which names the key', () => {
    const path = file('64.yaml', `callout: ${'['.repeat(63)}${']'.repeat(63)}\n`);
    assert.match(refusal(path), /: callout: got \[\[\[/);
  });

  it('the deepest settings there are (a ratelimit limit, 6 down) load', () => {
    const path = file('ratelimit.yaml', 'policy:\n  stages:\n    - name: ratelimit\n      limits:\n        - { per: client, count: messages, max: 5 }\n');
    const config = loadConfig(path);
    assert.equal(config.policy.stages.length, 1, 'the ratelimit stage is read');
  });

  it('a process that reads such a file again and again goes on (a daemon reloaded at each SIGHUP)', async () => {
    // yaml's recursion, caught at the stack's end, aborted Node at the second to fourth file:
    // "FATAL ERROR: RegExpCompiler Allocation failed - process out of memory".
    const path = file('again.yaml', `${'['.repeat(5000)}\n`);
    const script = `import { readConfigFile } from './src/config/load.ts';
for (let i = 0; i < 10; i++) { try { readConfigFile(${JSON.stringify(path)}); } catch { /* refused each time */ } }
console.log('still running');`;
    const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, timeout: 60_000 }, (error, out, err) => {
        resolve({ code: error ? (typeof error.code === 'number' ? error.code : null) : 0, stdout: out, stderr: err });
      });
    });
    assert.equal(code, 0, `the reading process ended on its own; stderr: ${stderr.slice(0, 300)}`);
    assert.equal(stdout, 'still running\n');
  });
});
