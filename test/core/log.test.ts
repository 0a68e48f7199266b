import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CoalescingDestination, createLogger } from '../../src/core/log.js';

function recorder(): { writes: string[]; write(line: string): void } {
  const writes: string[] = [];
  return { writes, write: (line: string) => void writes.push(line) };
}

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('CoalescingDestination', () => {
  it('writes the lines of one event-loop turn in one write, at its end', async () => {
    const out = recorder();
    const destination = new CoalescingDestination(out);
    const log = createLogger('info', destination);
    log.info({ n: 1 }, 'one');
    log.info({ n: 2 }, 'two');
    assert.equal(out.writes.length, 0, 'nothing written before the turn ends');
    await nextTurn();
    assert.equal(out.writes.length, 1);
    const lines = out.writes[0]!.trimEnd().split('\n').map((line) => JSON.parse(line) as { n: number; msg: string; component: string });
    assert.deepEqual(lines.map((l) => [l.n, l.msg, l.component]), [[1, 'one', 'callout'], [2, 'two', 'callout']]);
    log.info({ n: 3 }, 'three');
    await nextTurn();
    assert.equal(out.writes.length, 2, 'a later turn gets a write of its own');
    assert.match(out.writes[1]!, /"n":3/);
    destination.close();
  });

  it('flushSync and logger.flush() write what is pending at once', () => {
    const out = recorder();
    const destination = new CoalescingDestination(out);
    const log = createLogger('info', destination);
    log.warn('pending');
    log.flush();
    assert.equal(out.writes.length, 1);
    assert.match(out.writes[0]!, /"msg":"pending"/);
    destination.flushSync();
    assert.equal(out.writes.length, 1, 'nothing pending, nothing written');
    destination.close();
  });

  it('writes what is pending when the process exits', () => {
    const out = recorder();
    const destination = new CoalescingDestination(out);
    destination.write('{"last":true}\n');
    process.emit('exit', 0);
    assert.deepEqual(out.writes, ['{"last":true}\n']);
    destination.close();
  });
});
