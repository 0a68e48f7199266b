import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseAddressList, parseHeaderMailbox, type AddressSyntaxRule } from '../../src/address/index.js';
import { assertParsed, assertSyntaxError } from './support.js';

/** What a test compares: display name, group and canonical address of each mailbox. */
interface Want {
  name?: string;
  group?: string;
  address: string;
}

function summary(input: string): Want[] {
  return assertParsed(parseAddressList(input), input).map(({ displayName, group, mailbox }) => ({
    ...(displayName === undefined ? {} : { name: displayName }),
    ...(group === undefined ? {} : { group }),
    address: mailbox.address,
  }));
}

describe('parseAddressList: RFC 5322 §3.4 forms', () => {
  const cases: { input: string; want: Want[] }[] = [
    { input: 'user@example.com', want: [{ address: 'user@example.com' }] },
    { input: 'John Doe <john@example.com>', want: [{ name: 'John Doe', address: 'john@example.com' }] },
    { input: '<john@example.com>', want: [{ address: 'john@example.com' }] },
    { input: '"Doe, John" <john@example.com>', want: [{ name: 'Doe, John', address: 'john@example.com' }] },
    { input: '"John \\"JD\\" Doe" <j@example.com>', want: [{ name: 'John "JD" Doe', address: 'j@example.com' }] },
    {
      input: 'a@example.com, "B" <b@example.com>,c@example.com',
      want: [{ address: 'a@example.com' }, { name: 'B', address: 'b@example.com' }, { address: 'c@example.com' }],
    },
    {
      input: '=?utf-8?q?J=C3=B6rg?= <j@example.com>',
      want: [{ name: '=?utf-8?q?J=C3=B6rg?=', address: 'j@example.com' }],
    },
    { input: 'Jörg Müller <jörg@bücher.example>', want: [{ name: 'Jörg Müller', address: 'jörg@xn--bcher-kva.example' }] },
    { input: '"john doe"@example.com', want: [{ address: '"john doe"@example.com' }] },
    { input: '"a\\"b"@example.com', want: [{ address: '"a\\"b"@example.com' }] },
    { input: 'User@[192.0.2.1]', want: [{ address: 'User@[192.0.2.1]' }] },
    { input: 'u@[ IPv6:2001:DB8::1 ]', want: [{ address: 'u@[IPv6:2001:db8::1]' }] },
    { input: 'John\r\n Doe <john@example.com>', want: [{ name: 'John Doe', address: 'john@example.com' }] },
    { input: '"folded\r\n quote"@example.com', want: [{ address: '"folded quote"@example.com' }] },
  ];
  for (const { input, want } of cases) {
    it(JSON.stringify(input), () => assert.deepEqual(summary(input), want));
  }
});

describe('parseAddressList: comments (CFWS)', () => {
  const cases: { input: string; want: Want[] }[] = [
    { input: '(c) john (x) . (y) doe (z) @ (w) example (v) . com (u)', want: [{ address: 'john.doe@example.com' }] },
    { input: 'John (the man) Doe <john@example.com> (work)', want: [{ name: 'John Doe', address: 'john@example.com' }] },
    { input: '<(before) john@example.com (after)>', want: [{ address: 'john@example.com' }] },
    { input: 'john@example.com (outer (inner (innermost)) outer)', want: [{ address: 'john@example.com' }] },
    { input: 'john@example.com (a \\) quoted \\( paren)', want: [{ address: 'john@example.com' }] },
    { input: 'john@example.com (Jörg)', want: [{ address: 'john@example.com' }] },
    { input: 'Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>', want: [{ name: 'Pete', address: 'pete@silly.test' }] },
    { input: 'A <a@[192.0.2.1] (literal)>', want: [{ name: 'A', address: 'a@[192.0.2.1]' }] },
  ];
  for (const { input, want } of cases) {
    it(JSON.stringify(input), () => assert.deepEqual(summary(input), want));
  }

  it('allows comments nested 100 deep and refuses 101', () => {
    const nested = (depth: number) => `a@example.com ${'('.repeat(depth)}${')'.repeat(depth)}`;
    assert.deepEqual(summary(nested(100)), [{ address: 'a@example.com' }]);
    assertSyntaxError(parseAddressList(nested(101)), 'depth 101', 'comment-too-deep', 114);
  });
});

describe('parseAddressList: groups (flattened)', () => {
  const cases: { input: string; want: Want[] }[] = [
    { input: 'undisclosed-recipients:;', want: [] },
    { input: 'undisclosed-recipients: ;', want: [] },
    { input: 'Empty (none) : (nobody) ; (really)', want: [] },
    {
      input: 'A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;',
      want: [
        { name: 'Ed Jones', group: 'A Group', address: 'c@a.test' },
        { group: 'A Group', address: 'joe@where.test' },
        { name: 'John', group: 'A Group', address: 'jdoe@one.test' },
      ],
    },
    {
      input: 'team: a@x.org, b@x.org; , outside@y.org',
      want: [{ group: 'team', address: 'a@x.org' }, { group: 'team', address: 'b@x.org' }, { address: 'outside@y.org' }],
    },
    { input: '"Quoted Group": , a@x.org ,, ;', want: [{ group: 'Quoted Group', address: 'a@x.org' }] },
  ];
  for (const { input, want } of cases) {
    it(JSON.stringify(input), () => assert.deepEqual(summary(input), want));
  }
});

describe('parseAddressList: obsolete syntax (RFC 5322 §4.4)', () => {
  const cases: { input: string; want: Want[] }[] = [
    { input: 'john . doe @ example . com', want: [{ address: 'john.doe@example.com' }] },
    { input: '"john".doe@example.com', want: [{ address: 'john.doe@example.com' }] },
    { input: '"john"."doe x"@example.com', want: [{ address: '"john.doe x"@example.com' }] },
    { input: 'John Q. Public <jqp@example.com>', want: [{ name: 'John Q. Public', address: 'jqp@example.com' }] },
    { input: 'Mr.Smith <smith@example.com>', want: [{ name: 'Mr.Smith', address: 'smith@example.com' }] },
    { input: '<@a.example,@b.example:user@c.example>', want: [{ address: 'user@c.example' }] },
    { input: 'Joe <,@a.example, ,@b.example : joe@c.example>', want: [{ name: 'Joe', address: 'joe@c.example' }] },
    { input: ', a@x.org ,, b@x.org ,', want: [{ address: 'a@x.org' }, { address: 'b@x.org' }] },
  ];
  for (const { input, want } of cases) {
    it(JSON.stringify(input), () => assert.deepEqual(summary(input), want));
  }
});

describe('parseAddressList: syntax errors', () => {
  const cases: { input: string; rule: AddressSyntaxRule; position: number }[] = [
    { input: '', rule: 'no-address', position: 0 },
    { input: ' , (c) ,', rule: 'no-address', position: 8 },
    { input: 'John Doe', rule: 'missing-at', position: 8 },
    { input: 'John Doe, a@x.org', rule: 'missing-at', position: 8 },
    { input: 'john doe@example.com', rule: 'bad-local-part', position: 5 },
    { input: '.john@example.com', rule: 'empty-atom', position: 0 },
    { input: 'john..doe@example.com', rule: 'empty-atom', position: 5 },
    { input: 'john.@example.com', rule: 'empty-atom', position: 4 },
    { input: '@example.com', rule: 'empty-local-part', position: 0 },
    { input: 'John <>', rule: 'empty-local-part', position: 6 },
    { input: 'John <john>', rule: 'missing-at', position: 10 },
    { input: 'John <john@example.com', rule: 'missing-angle-bracket', position: 22 },
    { input: 'John <john@example.com x>', rule: 'bad-character', position: 23 },
    { input: '<@a.example user@c.example>', rule: 'bad-source-route', position: 12 },
    { input: 'a@example.com b@example.com', rule: 'bad-character', position: 14 },
    { input: 'a@example.com;', rule: 'bad-character', position: 13 },
    { input: 'a@', rule: 'empty-domain', position: 2 },
    { input: 'a@x..org', rule: 'empty-domain-label', position: 4 },
    { input: 'a@x_y.org', rule: 'bad-character', position: 3 },
    { input: 'a@[300.0.0.1]', rule: 'bad-address-literal', position: 2 },
    { input: 'a@[192.0.2.1', rule: 'bad-address-literal', position: 2 },
    { input: 'a@x.org (unclosed', rule: 'unbalanced-comment', position: 8 },
    { input: 'a@x.org (a (b)', rule: 'unbalanced-comment', position: 8 },
    { input: 'a@x.org (a \\', rule: 'unbalanced-comment', position: 8 },
    { input: 'a@x.org (\u0001)', rule: 'bad-character', position: 9 },
    // ctext, qtext and quoted-pair end at %d126: DEL is refused where it stands (obs-qp is not accepted).
    { input: 'a@x.org (\u007f)', rule: 'bad-character', position: 9 },
    { input: 'a@x.org (\\\u007f)', rule: 'bad-quoted-pair', position: 9 },
    { input: '"a\\\u007f"@x.org', rule: 'bad-quoted-pair', position: 2 },
    { input: 'Bob "\u007f" <b@x.org>', rule: 'bad-character', position: 5 },
    { input: '"unclosed@x.org', rule: 'unbalanced-quote', position: 0 },
    { input: '"a\\\u0001"@x.org', rule: 'bad-quoted-pair', position: 2 },
    { input: '"a\tb"@x.org', rule: 'bad-character', position: 0 },
    { input: 'g: a@x.org', rule: 'unterminated-group', position: 1 },
    { input: 'g: h: a@x.org;;', rule: 'group-not-allowed', position: 4 },
    { input: ': a@x.org;', rule: 'empty-group-name', position: 0 },
    { input: 'g: a@x.org b@x.org;', rule: 'bad-character', position: 11 },
    { input: '>', rule: 'bad-character', position: 0 },
    { input: 'a@x.org\r\n', rule: 'bad-character', position: 7 },
    { input: 'Bob <b\ufffd@x.org>', rule: 'not-utf8', position: 5 },
    { input: '"b \ufffd"@x.org', rule: 'not-utf8', position: 0 },
    { input: 'b@x\ufffd.org', rule: 'not-utf8', position: 3 },
  ];
  for (const { input, rule, position } of cases) {
    it(`${JSON.stringify(input)} -> ${rule} at ${position}`, () => {
      assertSyntaxError(parseAddressList(input), input, rule, position);
    });
  }

  it('without utf8, refuses non-ASCII anywhere, even in a display name', () => {
    assertSyntaxError(parseAddressList('Jörg <j@x.org>', { utf8: false }), 'name', 'non-ascii', 1);
    assert.equal(assertParsed(parseAddressList('Jorg <j@x.org>', { utf8: false }), 'ascii').length, 1);
  });

  it('caps the input length', () => {
    const long = `${'a'.repeat(70000)}@x.org`;
    assertSyntaxError(parseAddressList(long), 'long', 'input-too-long', 65536);
  });

  it('checks the mailbox limits of RFC 5321', () => {
    assertSyntaxError(parseAddressList(`Long <${'a'.repeat(65)}@x.org>`), '65', 'local-part-too-long', 6);
  });

  it('with sizeLimits: false, accepts longer local parts and paths but not longer domains', () => {
    const local = 'a'.repeat(300);
    const [list] = assertParsed(parseAddressList(`Long <${local}@x.org>`, { sizeLimits: false }), 'list');
    assert.equal(list?.mailbox.localPart, local);
    assert.equal(assertParsed(parseHeaderMailbox(`${local}@x.org`, { sizeLimits: false }), 'mailbox').mailbox.localPart, local);
    const domain = Array<string>(5).fill('b'.repeat(60)).join('.');
    assertSyntaxError(parseAddressList(`a@${domain}`, { sizeLimits: false }), 'domain 304', 'domain-too-long', 2);
  });

  it('with groups: false, reads a mailbox-list, in which any group is an error', () => {
    assert.equal(assertParsed(parseAddressList('a@x.org, B <b@x.org>', { groups: false }), 'list').length, 2);
    const cases: [string, number][] = [
      ['g: a@x.org;', 1],
      ['undisclosed-recipients:;', 22],
      ['a@x.org, g:;', 10],
    ];
    for (const [input, position] of cases) {
      assertSyntaxError(parseAddressList(input, { groups: false }), input, 'group-not-allowed', position);
    }
  });
});

describe('parseHeaderMailbox', () => {
  it('parses one mailbox with a display name', () => {
    const got = assertParsed(parseHeaderMailbox(' "Jane Roe" <JANE@Example.ORG> (author)'), 'mailbox');
    assert.equal(got.displayName, 'Jane Roe');
    assert.equal(got.mailbox.localPart, 'JANE');
    assert.equal(got.mailbox.asciiDomain, 'example.org');
    assert.equal(got.group, undefined);
  });

  it('parses a bare addr-spec without a display name', () => {
    const got = assertParsed(parseHeaderMailbox('jane@example.org'), 'addr-spec');
    assert.equal(got.displayName, undefined);
    assert.equal(got.mailbox.address, 'jane@example.org');
  });

  const errors: { input: string; rule: AddressSyntaxRule; position: number }[] = [
    { input: '', rule: 'no-address', position: 0 },
    { input: 'a@x.org, b@x.org', rule: 'trailing-characters', position: 7 },
    { input: 'a@x.org b', rule: 'trailing-characters', position: 8 },
    { input: 'undisclosed-recipients:;', rule: 'group-not-allowed', position: 22 },
  ];
  for (const { input, rule, position } of errors) {
    it(`${JSON.stringify(input)} -> ${rule} at ${position}`, () => {
      assertSyntaxError(parseHeaderMailbox(input), input, rule, position);
    });
  }
});
