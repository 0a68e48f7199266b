// describeError on whatever a catch block may hold: it runs inside catch blocks and log calls, so it must never throw.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CalloutError, ConfigError, ListenUnavailableError, StoreError, UsageError, abbreviate, describeError, describeFileError } from '../../src/core/errors.js';

describe('describeError', () => {
  it('gives the code and message of a CalloutError, the message of an Error, the text of anything else', () => {
    assert.equal(describeError(new CalloutError('STORE_UNAVAILABLE', 'database is locked')), 'STORE_UNAVAILABLE: database is locked');
    assert.equal(describeError(new TypeError('bad')), 'bad');
    assert.equal(describeError('a string'), 'a string');
    assert.equal(describeError(null), 'null');
    assert.equal(describeError(undefined), 'undefined');
    assert.equal(describeError(Object.create(null)), '[object Object]');
    assert.equal(describeError(Object.assign(new Error('x'), { message: { a: 1 } })), '[object Object]');
    const cyclic = new Error('outer', { cause: undefined as unknown });
    (cyclic as { cause?: unknown }).cause = cyclic;
    assert.equal(describeError(cyclic), 'outer');
  });

  it('never throws, whatever the value does when it is looked at', () => {
    const { proxy: revoked, revoke } = Proxy.revocable({}, {});
    revoke();
    const badMessage = new Error('m');
    Object.defineProperty(badMessage, 'message', {
      get() {
        throw new Error('getter');
      },
    });
    const badCallout = new CalloutError('INTERNAL', 'm');
    Object.defineProperty(badCallout, 'message', {
      get() {
        throw new Error('getter');
      },
    });
    const hostile = [
      revoked,
      new Proxy({}, { getPrototypeOf: () => { throw new Error('trap'); } }),
      { toString: () => { throw new Error('toString'); }, get [Symbol.toStringTag]() { throw new Error('tag'); } },
      badMessage,
      badCallout,
    ];
    for (const value of hostile) {
      const text = describeError(value);
      assert.equal(typeof text, 'string');
      assert.notEqual(text, '');
    }
  });
});

describe('describeFileError', () => {
  const errno = (code: string, number: number): NodeJS.ErrnoException => Object.assign(new Error(`${code}: system words, open '/x'`), { code, errno: number });

  it('says in words why a file could not be used, the code kept for searching, and who was refused a permission', () => {
    assert.equal(describeFileError(errno('ENOENT', -2)), 'no such file (ENOENT)');
    assert.equal(describeFileError(errno('EISDIR', -21)), 'is a directory (EISDIR)');
    assert.equal(describeFileError(errno('EACCES', -13)), `permission denied, running as uid ${process.geteuid?.()} (EACCES)`);
    assert.equal(describeFileError(errno('EPERM', -1)), `operation not permitted, running as uid ${process.geteuid?.()} (EPERM)`);
    assert.equal(describeFileError(errno('EIO', -5)), 'input/output error (a failing disk or a lost network file system) (EIO)');
    assert.equal(describeFileError(errno('ENOTDIR', -20)), 'a part of the path is not a directory (ENOTDIR)');
    assert.equal(describeFileError(errno('ENXIO', -6)), 'no device or reader there (a socket, or a device not present) (ENXIO)');
  });

  it("gives the system's words for a code it has none of its own for, and describes a value without a code as describeError does", () => {
    assert.equal(describeFileError(errno('EOPNOTSUPP', -95)), 'operation not supported on socket (EOPNOTSUPP)');
    assert.equal(describeFileError(Object.assign(new Error('x'), { code: 'ERR_INVALID_ARG_TYPE' })), 'x');
    assert.equal(describeFileError(new ConfigError('bad')), 'CONFIG_INVALID: bad');
    assert.equal(describeFileError(null), 'null');
    const { proxy: revoked, revoke } = Proxy.revocable({}, {});
    revoke();
    assert.equal(typeof describeFileError(revoked), 'string');
  });
});

describe('error codes', () => {
  it('gives each error class its stable code, which exit statuses and logs rely on', () => {
    assert.equal(new ConfigError('x').code, 'CONFIG_INVALID');
    assert.equal(new UsageError('x').code, 'USAGE');
    assert.equal(new ListenUnavailableError('x').code, 'LISTEN_UNAVAILABLE');
    assert.equal(new StoreError('x').code, 'STORE_UNAVAILABLE');
    assert.equal(new StoreError('x').name, 'StoreError');
  });

  it('keeps the cause it is given, for the log line that follows the chain', () => {
    const cause = new Error('ENOSPC');
    assert.equal(new CalloutError('INTERNAL', 'x', { cause }).cause, cause);
    assert.equal(new ConfigError('x', { cause }).cause, cause);
    assert.equal(new StoreError('x', { cause }).cause, cause);
  });
});

describe('abbreviate', () => {
  it('cuts a text longer than the limit after the limit, and leaves one of the limit whole', () => {
    assert.equal(abbreviate('abcdef', 3), 'abc...');
    assert.equal(abbreviate('abc', 3), 'abc', 'a text of the limit is not cut');
    assert.equal(abbreviate('ab', 3), 'ab');
  });
});
