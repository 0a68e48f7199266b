// Property tests of the postgrey whitelist readers beyond "never throws" (normalise.test.ts):
// what an entry lists is matched by it, the documented limits hold, and a line at the length
// limit is classified in linear time whatever its shape.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { parseClientWhitelist, parseRecipientWhitelist, WHITELIST_LIMITS } from '../../../src/checks/greylist/whitelist.js';
import { elapsedMs } from '../../support/fuzz.js';

const label = fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?$/);
const domain = fc.array(label, { minLength: 2, maxLength: 4 }).map((labels) => labels.join('.')).filter((d) => !/^[0-9.]+$/.test(d));

describe('whitelist_clients fuzzed', () => {
  it('an address, a network or a domain entry lets through what it lists', () => {
    fc.assert(
      fc.property(fc.ipV4(), fc.ipV6(), domain, label, fc.integer({ min: 8, max: 32 }), (v4, v6, name, sub, length) => {
        const { whitelist, problems } = parseClientWhitelist([{ source: 'f', text: `${v4}\n${v6}\n${name.toUpperCase()}.\n${v4}/${length}\n` }]);
        assert.deepEqual(problems, []);
        assert.ok(whitelist.match('unknown', v4), v4);
        assert.ok(whitelist.match('unknown', v6), v6);
        assert.equal(whitelist.match(`${sub}.${name}.`, '192.0.2.1'), name);
        assert.equal(whitelist.match(name.toUpperCase(), '192.0.2.1'), name);
        assert.equal(whitelist.match(`x${name}`, '192.0.2.1') === name, false);
      }),
      { numRuns: 300 },
    );
  });

  it('classifies a line at the length limit in linear time, whatever its shape', () => {
    // The colon test was /^.*:.*:.*(?:\/\d{1,3})?$/: a CR or U+2028 (where . stops) kept it from
    // matching and every .* backtracked, 0.6 s for a 4000-character line (quadratic).
    const half = WHITELIST_LIMITS.lineLength / 2 - 2;
    const lines = [`${'a:'.repeat(half)}\rb`, `${'a:'.repeat(half)}\u2028b`, `${'a'.repeat(half)}:${'b'.repeat(half)}\u2029`, `${': '.repeat(half)}x`, `/${'a'.repeat(WHITELIST_LIMITS.regexLength)}/`];
    const ms = elapsedMs(() => parseClientWhitelist([{ source: 'f', text: lines.join('\n') }]));
    assert.ok(ms < 200, `${ms.toFixed(0)} ms`);
    // 200 such lines, a small file: seconds before.
    const many = elapsedMs(() => parseClientWhitelist([{ source: 'f', text: `${lines[0]!}\n`.repeat(200) }]));
    assert.ok(many < 1000, `${many.toFixed(0)} ms`);
  });

  it('an entry with a CR or a line separator among two colons is reported, not taken as a name', () => {
    for (const entry of ['2001:db8::1\rx', '2001:db8::1\u2028x']) {
      const { whitelist, problems } = parseClientWhitelist([{ source: 'f', text: entry }]);
      assert.equal(whitelist.size, 0);
      assert.equal(problems.length, 1);
    }
  });

  it('keeps at most WHITELIST_LIMITS.entries entries', () => {
    const text = Array.from({ length: WHITELIST_LIMITS.entries + 5 }, (_, i) => `h${i}.example`).join('\n');
    const { whitelist, problems } = parseClientWhitelist([{ source: 'f', text }]);
    assert.equal(whitelist.size, WHITELIST_LIMITS.entries);
    assert.equal(problems.length, 1);
  });
});

describe('leading-dot entries fuzzed', () => {
  it('an entry with leading dots lists nothing and is reported, in either list, in linear time', () => {
    fc.assert(
      fc.property(domain, label, fc.integer({ min: 1, max: 3 }), (name, sub, dots) => {
        const entry = `${'.'.repeat(dots)}${name}`;
        const clients = parseClientWhitelist([{ source: 'f', text: entry }]);
        assert.equal(clients.whitelist.size, 0);
        assert.equal(clients.whitelist.match(`${sub}.${name}`, '192.0.2.1'), undefined);
        assert.equal(clients.problems.length, 1);
        assert.ok(clients.problems[0]!.message.includes(`write "${name}"`), clients.problems[0]!.message);
        const recipients = parseRecipientWhitelist([{ source: 'f', text: entry }]);
        assert.equal(recipients.whitelist.match(`u@${sub}.${name}`), undefined);
        assert.equal(recipients.problems.length, 1);
      }),
      { numRuns: 300 },
    );
    const dots = `${'.'.repeat(WHITELIST_LIMITS.lineLength - 1)}a\n`.repeat(200);
    const ms = elapsedMs(() => (parseClientWhitelist([{ source: 'f', text: dots }]), parseRecipientWhitelist([{ source: 'f', text: dots }])));
    assert.ok(ms < 500, `${ms.toFixed(0)} ms`);
  });
});

describe('whitelist_recipients fuzzed', () => {
  const local = fc.stringMatching(/^[a-z0-9][a-z0-9._-]{0,10}$/);
  it('user@domain, user@, @domain and domain entries let through what they list, extensions included', () => {
    fc.assert(
      fc.property(local, domain, label, local, (user, name, sub, extension) => {
        const lists = (entry: string, recipient: string) => parseRecipientWhitelist([{ source: 'f', text: entry }]).whitelist.match(recipient) !== undefined;
        assert.ok(lists(`${user}@${name}`, `${user.toUpperCase()}+${extension}@${name}`), 'lists(`${user}@${name}`, `${user.toUpperCase()}+${extension}@${name}`)');
        assert.ok(lists(`${user}@`, `${user}@${name}`), 'lists(`${user}@`, `${user}@${name}`)');
        assert.ok(lists(`@${name}`, `${user}@${name.toUpperCase()}`), 'lists(`@${name}`, `${user}@${name.toUpperCase()}`)');
        assert.equal(lists(`@${name}`, `${user}@${sub}.${name}`), false);
        assert.ok(lists(name, `${user}@${sub}.${name}`), 'lists(name, `${user}@${sub}.${name}`)');
        assert.equal(lists(`${user}@${name}`, `x${user}@${name}`), false);
      }),
      { numRuns: 300 },
    );
  });

  it('refuses lines and regular expressions over their limits, and times stay linear', () => {
    const text = [`/${'a'.repeat(WHITELIST_LIMITS.regexLength + 1)}/`, 'x'.repeat(WHITELIST_LIMITS.lineLength + 1), `${'@'.repeat(WHITELIST_LIMITS.lineLength)}`, `/${'b'.repeat(WHITELIST_LIMITS.regexLength)}/`].join('\n');
    let parsed: ReturnType<typeof parseRecipientWhitelist> | undefined;
    const ms = elapsedMs(() => (parsed = parseRecipientWhitelist([{ source: 'f', text }])));
    assert.ok(ms < 200, `${ms.toFixed(0)} ms`);
    assert.deepEqual(parsed!.problems.map((p) => p.line), [1, 2]);
    assert.equal(parsed!.whitelist.size, 2, 'a regular expression of the limit is kept');
  });
});
