// callout.helo (and a stage's own helo) fuzzed: any text is taken exactly when it is a name
// callout may announce (config/fqdn isAnnounceable), and refused otherwise with one problem
// that names the key; a name the problem tells the administrator to write instead is taken.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isAnnounceable } from '../../src/config/fqdn.js';
import { validateConfig } from '../../src/config/schema.js';
import { ConfigError } from '../../src/core/errors.js';
import { elapsedMs } from '../support/fuzz.js';

/** The problem validateConfig has with helo, or undefined when it takes it. */
function heloProblem(helo: string): string | undefined {
  try {
    assert.equal(validateConfig({ callout: { helo } }).callout.helo, helo, 'a name taken is announced as written');
    return undefined;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return err.message;
  }
}

const label = fc.oneof(fc.constantFrom('mx', 'MX', 'example', 'org', 'localhost', 'localdomain', 'local', 'xn--bcher-kva', 'bücher', '1', '-a', 'a-', 'a_b', '', 'l'.repeat(63), 'l'.repeat(64)), fc.domain().map((d) => d.split('.')[0]!));
const name = fc.oneof(
  fc.array(label, { minLength: 1, maxLength: 6 }).chain((labels) => fc.constantFrom('', '.', '..').map((end) => labels.join('.') + end)),
  fc.domain(),
  fc.string({ maxLength: 30 }),
);

describe('callout.helo fuzzed', () => {
  it('takes exactly the names callout may announce, and names the key and one problem for any other text', () => {
    fc.assert(
      fc.property(name, (helo) => {
        const problem = heloProblem(helo);
        assert.equal(problem === undefined, isAnnounceable(helo), `${JSON.stringify(helo)}: ${problem}`);
        if (problem === undefined) return;
        assert.ok(problem.startsWith('configuration: callout.helo: got '), problem);
        // "expected the name without its final dot, NAME": that NAME is one the schema takes.
        const instead = /expected the name without its final dot, (\S+):/.exec(problem)?.[1];
        if (instead !== undefined) assert.equal(heloProblem(instead), undefined, `${JSON.stringify(helo)}: told to write ${instead}`);
      }),
      { numRuns: 1000 },
    );
  });

  it('refuses a name of a megabyte in linear time, whatever its shape, quoting its start only', () => {
    for (const shape of ['a.', 'a', '.', 'a-', 'local.', '.localhost']) {
      const helo = shape.repeat(Math.ceil(1_000_000 / shape.length));
      let problem: string | undefined;
      const ms = elapsedMs(() => (problem = heloProblem(helo)));
      // The name is quoted by its start only: the message is a line of a log or a terminal.
      assert.ok(problem !== undefined && problem.length < 400, `${problem?.length} characters of problem`);
      assert.ok(ms < 200, `${ms.toFixed(0)} ms for ${JSON.stringify(shape)} repeated`);
    }
  });
});
