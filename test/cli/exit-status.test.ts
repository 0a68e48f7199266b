// Exit statuses after sysexits(3): each failure its own, so that scripts and pipe(8) can tell them apart.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CommanderError } from 'commander';
import { exitCodeFor } from '../../src/cli/exit-status.js';
import { CalloutError, ConfigError, ListenUnavailableError, StoreDamagedError, StoreError, UsageError } from '../../src/core/errors.js';

describe('exitCodeFor', () => {
  it('gives 64 to a usage error, 78 to a configuration or a damaged store, 75 to what may be there later, 70 to anything else', () => {
    assert.equal(exitCodeFor(new UsageError('x')), 64);
    assert.equal(exitCodeFor(new ConfigError('x')), 78);
    assert.equal(exitCodeFor(new StoreError('x')), 75);
    // A StoreError, answered as a fault by the daemon; but waiting does not mend a damaged file.
    assert.equal(exitCodeFor(new StoreDamagedError('x')), 78);
    assert.equal(exitCodeFor(new ListenUnavailableError('x')), 75);
    assert.equal(exitCodeFor(new CalloutError('INTERNAL', 'x')), 70);
    assert.equal(exitCodeFor(new CalloutError('DNS_PERMANENT', 'x')), 70);
    assert.equal(exitCodeFor(new TypeError('x')), 70);
  });

  it('gives 0 to what commander ends with success (--help, --version) and 64 to the mistakes it finds', () => {
    assert.equal(exitCodeFor(new CommanderError(0, 'commander.helpDisplayed', '(outputHelp)')), 0);
    assert.equal(exitCodeFor(new CommanderError(1, 'commander.unknownOption', "error: unknown option '--x'")), 64);
  });
});
