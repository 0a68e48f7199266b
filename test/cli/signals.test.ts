// SIGUSR1 is logged and ignored: without a listener Node opens its inspector on it.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ignoreInspectorSignal } from '../../src/cli/signals.js';

describe('ignoreInspectorSignal', () => {
  it('logs the message at warn on each SIGUSR1, and its remover takes the listener away again', () => {
    const warnings: string[] = [];
    const before = process.listenerCount('SIGUSR1');
    const remove = ignoreInspectorSignal({ warn: (_fields, message) => void warnings.push(message) }, 'SIGUSR1 ignored');
    assert.equal(process.listenerCount('SIGUSR1'), before + 1, 'a listener while installed');
    process.emit('SIGUSR1', 'SIGUSR1');
    assert.deepEqual(warnings, ['SIGUSR1 ignored']);
    remove();
    assert.equal(process.listenerCount('SIGUSR1'), before, 'no listener of its own once removed');
  });
});
