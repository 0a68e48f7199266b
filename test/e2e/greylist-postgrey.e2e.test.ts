// callout's greylist stage and Debian's postgrey give the same accept/defer decisions on one trace.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { classify, compare, generateTrace, postgreyAvailable, replayCallout, replayPostgrey, POSTGREY } from '../../bench/greylist.js';
import { requirePeer } from '../support/peers.js';

describe('greylisting compared with postgrey 1.37', () => {
  it('decides every request of a generated trace as postgrey does', { skip: requirePeer(postgreyAvailable() ? undefined : `${POSTGREY} is missing (run .ci/run, which installs postgrey)`) ?? false }, async () => {
    const trace = generateTrace({ messages: 300, seed: 7 });
    const [callout, postgrey] = [await replayCallout(trace, { from: 'source' }), await replayPostgrey(trace)];
    const comparison = compare(trace, callout.actions.map(classify), postgrey.actions.map(classify));
    assert.deepEqual(comparison.differences.slice(0, 5), [], `${comparison.differences.length} of ${comparison.events} decisions differ`);
    // The trace exercises both outcomes, or the comparison would prove nothing.
    assert.ok(comparison.deferred.postgrey > trace.length / 10, `postgrey deferred ${comparison.deferred.postgrey}`);
    assert.ok(comparison.deferred.postgrey < trace.length * 0.9, 'comparison.deferred.postgrey < trace.length * 0.9');
  });
});
