// Regular expressions of whitelist_clients and whitelist_recipients are matched against names and
// recipients the sending client chooses: one that backtracks without bound held the whole policy
// service (/^(a|a)*@x$/: 3 s on 30 characters, doubling with each more).
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import { backtrackingProblem, parseClientWhitelist, parseRecipientWhitelist, readWhitelistFiles, WHITELIST_LIMITS } from '../../../src/checks/greylist/whitelist.js';
import { elapsedMs } from '../../support/fuzz.js';

const dir = mkdtempSync(join(tmpdir(), 'callout-whitelist-backtracking-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const shipped = (name: string) => new URL(`../../fixtures/postgrey/${name}`, import.meta.url).pathname;

describe('whitelist regular expressions that backtrack without bound', () => {
  it('loads postgrey\'s shipped lists without a problem (Debian\'s copies, and the installed ones where postgrey is)', () => {
    const clients = [shipped('whitelist_clients'), ...(existsSync('/etc/postgrey/whitelist_clients') ? ['/etc/postgrey/whitelist_clients'] : [])];
    const recipients = [shipped('whitelist_recipients'), ...(existsSync('/etc/postgrey/whitelist_recipients') ? ['/etc/postgrey/whitelist_recipients'] : [])];
    const clientFiles = readWhitelistFiles(clients);
    const recipientFiles = readWhitelistFiles(recipients);
    assert.deepEqual([...clientFiles.problems, ...recipientFiles.problems], []);
    assert.deepEqual(parseClientWhitelist(clientFiles.sources).problems, []);
    assert.deepEqual(parseRecipientWhitelist(recipientFiles.sources).problems, []);
    assert.equal(parseClientWhitelist(clientFiles.sources).whitelist.match('smtp12.orange.fr', '192.0.2.1'), '/^smtp\\d+\\.orange\\.fr$/', 'its regular expressions still match');
  });

  it('refuses them in a site\'s file, naming the file, the line and what to write, and a hostile recipient is answered at once', () => {
    const file = join(dir, 'whitelist_recipients');
    writeFileSync(
      file,
      [
        '# a site\'s list',
        '/^(a|a)*@x\\.example$/',
        '/^(\\w+\\.?)*@x\\.example$/',
        '/^(.*a){12}$/',
        '/.*a.*a.*a@x/',
        '/^(\\w+\\.)*\\w+@list\\.example$/',
        '/^[a-z]+-[0-9]+-[0-9]+-[0-9]+@dyn\\.example$/',
        '/^(?:\\d{1,3}\\.){3}\\d{1,3}@x\\.example$/',
        '/^.*-owner@.*$/',
        '',
      ].join('\n'),
    );
    const read = readWhitelistFiles([file]);
    const { whitelist, problems } = parseRecipientWhitelist(read.sources);
    assert.deepEqual(
      problems.map((p) => `${p.source}:${p.line}: ${p.message}`),
      [
        `${file}:2: regular expression /^(a|a)*@x\\.example$/ can take time exponential in the length of a name or address: alternatives are repeated without bound (as (a|ab)* does; here ^(a|a)*...): write a character class, (a|b)* as [ab]*, or repeat them at most 3 times`,
        `${file}:3: regular expression /^(\\w+\\.?)*@x\\.example$/ can take time exponential in the length of a name or address: a group repeated more than once holds a quantifier (as (a+)+ does; here ^(\\w+\\.?)*...): write the repetition once, (a+)+ as a+, or end the group with a character nothing else in it matches, as in (\\w+\\.)*`,
        `${file}:4: regular expression /^(.*a){12}$/ can take time growing as the length of a name or address to the power 12: a group repeated more than once holds a quantifier (as (a+)+ does; here ^(.*a){12}...): write the repetition once, (a+)+ as a+, or end the group with a character nothing else in it matches, as in (\\w+\\.)*`,
        `${file}:5: regular expression /.*a.*a.*a@x/ can take time growing as the length of a name or address to the power 4: 3 parts of varying length (such as .*, \\w+ and -?) are not followed by a character they cannot match, which would end them, and an expression that does not start with ^ is tried at every position; at most 2 are taken`,
      ],
    );
    // The delimited forms are linear and kept.
    assert.equal(whitelist.size, 4);
    assert.equal(whitelist.match('a.b.c@list.example'), '/^(\\w+\\.)*\\w+@list\\.example$/');
    assert.equal(whitelist.match('host-1-2-3@dyn.example'), '/^[a-z]+-[0-9]+-[0-9]+-[0-9]+@dyn\\.example$/');
    assert.equal(whitelist.match('192.0.2.1@x.example'), '/^(?:\\d{1,3}\\.){3}\\d{1,3}@x\\.example$/');
    assert.equal(whitelist.match('list-owner@lists.example'), '/^.*-owner@.*$/');
    // What the refused ones would have been given: hours each.
    let answer: string | undefined = 'not asked';
    const ms = elapsedMs(() => (answer = whitelist.match(`${'a'.repeat(40)}@x.example!`)));
    assert.equal(answer, undefined);
    assert.ok(ms < 100, `a hostile recipient took ${ms.toFixed(0)} ms`);
  });

  it('tries no regular expression on a subject longer than a name or an address can be, where even the ones kept grow as its square', () => {
    const { whitelist, problems } = parseRecipientWhitelist([{ source: 'f', text: '/^.*a.*a@x$/\n/^a+@example\\.org$/\n' }]);
    assert.deepEqual(problems, []);
    const longest = `${'a'.repeat(WHITELIST_LIMITS.regexSubject - '@example.org'.length)}@example.org`;
    assert.equal(whitelist.match(longest), '/^a+@example\\.org$/', 'a subject at the limit is matched');
    assert.equal(whitelist.match(`a${longest}`), undefined, 'one over it is not');
    const ms = elapsedMs(() => whitelist.match(`${'a'.repeat(20_000)}@y`));
    assert.ok(ms < 200, `a 20000-character recipient took ${ms.toFixed(0)} ms`);
    const clients = parseClientWhitelist([{ source: 'f', text: '/^.*a.*a\\.x$/\n' }]).whitelist;
    const clientMs = elapsedMs(() => clients.match(`${'a'.repeat(20_000)}.y`, '192.0.2.1'));
    assert.ok(clientMs < 200, `a 20000-character client name took ${clientMs.toFixed(0)} ms`);
  });

  it('what it lets through matches a hostile subject at the length limit in milliseconds', () => {
    const atom = fc.constantFrom('a', 'b', '\\w', '.', '[ab]', '\\.', '-', '[^x]', '\\d', '[a-z]', '[._-]', '[.a]', '[-b]');
    const quantifier = fc.constantFrom('', '', '*', '+', '?', '{2}', '{1,3}', '{2,}', '*?');
    const sequence = (inner: fc.Arbitrary<string>) => fc.array(fc.tuple(inner, quantifier).map(([a, q]) => a + q), { minLength: 1, maxLength: 4 }).map((parts) => parts.join(''));
    const group = (inner: fc.Arbitrary<string>) => fc.tuple(sequence(inner), fc.option(sequence(inner))).map(([a, b]) => `(?:${a}${b === null ? '' : `|${b}`})`);
    const level2 = sequence(fc.oneof(atom, group(atom)));
    const level1 = sequence(fc.oneof(atom, group(atom), group(level2)));
    const subjects = ['a', 'a.', 'ab', 'a-', '1', 'aab', 'a_', 'a.b-'].map((unit) => unit.repeat(Math.ceil(WHITELIST_LIMITS.regexSubject / unit.length)).slice(0, WHITELIST_LIMITS.regexSubject - 1) + '!');
    fc.assert(
      fc.property(fc.boolean(), level1, fc.constantFrom('@x$', 'y'), (anchor, body, end) => {
        const source = `${anchor ? '^' : ''}${body}${end}`;
        // A quantifier after an optional group's own one (a?*) is no regular expression; entries are compiled first.
        const re = (() => {
          try {
            return new RegExp(source, 'i');
          } catch {
            return undefined;
          }
        })();
        fc.pre(re !== undefined && backtrackingProblem(source) === undefined);
        for (const subject of subjects) {
          const ms = elapsedMs(() => re!.test(subject));
          assert.ok(ms < 100, `/${source}/ took ${ms.toFixed(0)} ms on ${JSON.stringify(subject.slice(0, 6))}...`);
        }
      }),
      { numRuns: 400 },
    );
  });
});

/** A subject of the length limit that each repetition of `unit` takes some way into, then fails on. */
const hostile = (unit: string) => unit.repeat(Math.ceil(WHITELIST_LIMITS.regexSubject / unit.length)).slice(0, WHITELIST_LIMITS.regexSubject - 1) + '!';

/** Site entries that match a name or an address in time linear in it: each must be kept. */
const FAST_SITE_ENTRIES: readonly { regex: string; matches: string; hostile: readonly string[] }[] = [
  { regex: '^[a-z0-9]+([._-][a-z0-9]+)*@example\\.com$', matches: 'jo.ann_b-c@example.com', hostile: ['a', 'a.', 'a-a_'] },
  { regex: '^(([a-z0-9-]+)\\.)+example\\.com$', matches: 'mx-1.mail.example.com', hostile: ['a.', 'a-', 'ab.'] },
  { regex: '^([a-z0-9]+(-[a-z0-9]+)*\\.)+example\\.com$', matches: 'mx-1-b.mail.example.com', hostile: ['a-', 'a.', 'a-a.'] },
  { regex: '^([a-z0-9]+([-_][a-z0-9]+)*\\.)+example\\.(com|net)$', matches: 'smtp_out-2.eu.example.net', hostile: ['a-', 'a_a.', 'a.'] },
  { regex: '^mail[0-9]*([.-][a-z0-9]+)*\\.example\\.org$', matches: 'mail12-out.fra.example.org', hostile: ['a.', 'mail1-', '-a'] },
  { regex: '^([a-z0-9-]+\\.)*mx\\.example\\.net$', matches: 'a.b.mx.example.net', hostile: ['a.', 'mx.', 'a-'] },
  { regex: '^[a-z0-9]+([.+_-][a-z0-9]+)*@([a-z0-9]+\\.)+example\\.com$', matches: 'post+ext@lists.eu.example.com', hostile: ['a.', 'a+', 'a@a.'] },
  { regex: '^([a-z0-9]+[._-])*postmaster@example\\.org$', matches: 'dept-postmaster@example.org', hostile: ['a.', 'a_', 'a-b'] },
  { regex: '^[a-z0-9._%+-]+@([a-z0-9-]+\\.)+example\\.com$', matches: 'a.b%c@x.example.com', hostile: ['a.', 'a@a.', 'a-'] },
  { regex: '^(bounce|noreply)([-+][a-z0-9]+)*@example\\.com$', matches: 'bounce-123-abc@example.com', hostile: ['bounce-', 'noreply+a', '-a'] },
  { regex: '^[a-z]+-[0-9]+(-[0-9]+)*\\.dyn\\.example\\.net$', matches: 'host-1-2-3.dyn.example.net', hostile: ['a-', 'a-1-', '1-'] },
  { regex: '^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\\.)+example\\.com$', matches: 'a1.b-2.example.com', hostile: ['a.', 'a-', 'ab-.'] },
  { regex: '^out[0-9]*\\.([a-z]{2,}\\.)*example\\.com$', matches: 'out3.eu.west.example.com', hostile: ['ab.', 'out1.', 'a.'] },
  { regex: '^[a-z0-9]+(\\.[a-z0-9]+)*\\+[a-z0-9]+@example\\.com$', matches: 'a.b+list@example.com', hostile: ['a.', 'a+', 'a.a+'] },
  { regex: '^(srs0|srs1)[=+-]([^@]+)@example\\.com$', matches: 'srs0=abc=de=x.org=u@example.com', hostile: ['srs0=', 'a=', '='] },
];

describe('whitelist regular expressions that match in linear time', () => {
  it('keeps the usual address and host-name patterns (a class or a nested group between repetitions) and matches them at once on a hostile subject', () => {
    const { problems } = parseRecipientWhitelist([{ source: 'f', text: FAST_SITE_ENTRIES.map(({ regex }) => `/${regex}/`).join('\n') }]);
    assert.deepEqual(problems.map((p) => p.message), [], 'no entry of a site\'s usual patterns is refused');
    for (const { regex, matches, hostile: units } of FAST_SITE_ENTRIES) {
      const { whitelist } = parseRecipientWhitelist([{ source: 'f', text: `/${regex}/` }]);
      assert.equal(whitelist.match(matches), `/${regex}/`, `/${regex}/ is kept and matches ${matches}`);
      const re = new RegExp(regex, 'i');
      for (const unit of units) {
        const subject = hostile(unit);
        const ms = elapsedMs(() => re.test(subject));
        assert.ok(ms < 5, `/${regex}/ took ${ms.toFixed(2)} ms on ${JSON.stringify(subject.slice(0, 8))}... (320 characters)`);
      }
    }
  });

  it('still refuses the shapes that backtrack exponentially, a nested group\'s alternatives included', () => {
    for (const source of ['(a+)+', '(a|a)*', '^([a-z0-9]+[._-]?)+@x', '(\\w+\\.?)*', '^((a|a)\\.)*@x$', '^(([a-z]+)[.a])+@x$', '^([a-z]+([.-][a-z]+)?)+@x$', '^[a-z]*(-b)?[a-z]*(-c)?[a-z]*@x$', '^(?:[a-z]?a*?\\.)+y', '^(?:[._-]a*[a-z]*)*@x$']) {
      assert.ok(backtrackingProblem(source) !== undefined, `/${source}/ is refused`);
    }
  });
  it('keeps the delimited shapes it generates (a literal or a class of them between repetitions, a nested group inside) and each is fast', () => {
    const literal = (ch: string) => (ch === '-' || ch === '_' ? ch : `\\${ch}`);
    // A class of literals, `-` last so that it makes no range.
    const separator = (chars: string[]) => (chars.length === 1 ? literal(chars[0]!) : `[${chars.filter((ch) => ch !== '-').map(literal).join('')}${chars.includes('-') ? '-' : ''}]`);
    const word = fc.constantFrom('[a-z0-9]+', '[a-z]+', '\\d+', '[a-z0-9]{1,8}', 'x[0-9]*');
    const shape = fc
      .tuple(fc.shuffledSubarray(['.', '-', '_', '+'], { minLength: 2 }), fc.integer({ min: 1, max: 3 }), word, word, fc.constantFrom('*', '+', '{2,}'), fc.boolean())
      .map(([chars, split, w1, w2, times, form]) => {
        const [outer, inner] = [separator(chars.slice(0, Math.min(split, chars.length - 1))), separator(chars.slice(Math.min(split, chars.length - 1)))];
        return form ? `^${w1}(?:${outer}${w2}(?:${inner}${w1})*)${times}@x\\.example$` : `^(?:${w1}(?:${inner}${w2})*${outer})${times}example\\.com$`;
      });
    const units = ['a', 'a.', 'a-', 'a_', 'a+', '1', 'a-a.', 'a.a-'];
    fc.assert(
      fc.property(shape, (source) => {
        assert.equal(backtrackingProblem(source), undefined, `/${source}/ is kept`);
        const re = new RegExp(source, 'i');
        for (const unit of units) {
          const ms = elapsedMs(() => re.test(hostile(unit)));
          assert.ok(ms < 5, `/${source}/ took ${ms.toFixed(2)} ms on ${JSON.stringify(hostile(unit).slice(0, 8))}...`);
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('whitelist regular expressions that do not compile', () => {
  it('are reported as such, not as slow ones', () => {
    const { problems } = parseRecipientWhitelist([{ source: 'f', text: '/^[a@x/\n/^(a|a)*@x(/\n' }]);
    assert.deepEqual(
      problems.map((p) => p.message),
      ['got "/^[a@x/", expected a regular expression (Unterminated character class)', 'got "/^(a|a)*@x(/", expected a regular expression (Unterminated group)'],
    );
  });
});
