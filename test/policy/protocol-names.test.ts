// PolicyRequestDecoder looks for each attribute name where the connection's last request had it:
// whatever the order, and names near Postfix's, every request decodes to exactly its attributes.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { POLICY_ATTRIBUTE_NAMES, PolicyRequestDecoder } from '../../src/policy/protocol.js';

/** Postfix's names, and names one character off them: longer, shorter, or another last letter. */
const nearNames = POLICY_ATTRIBUTE_NAMES.flatMap((name) => [name, `${name}x`, name.slice(0, -1), `${name.slice(0, -1)}_`]);

function encode(attributes: Array<[string, string]>): Buffer {
  return Buffer.from(`${attributes.map(([name, value]) => `${name}=${value}\n`).join('')}\n`, 'utf8');
}

describe('PolicyRequestDecoder attribute names', () => {
  it('decodes requests whose names change order, or are near Postfix\'s, on one connection', () => {
    const attribute = fc.tuple(fc.constantFrom(...nearNames), fc.string({ maxLength: 12 }).filter((v) => !/[\0\r\n]/.test(v)));
    const request = fc.uniqueArray(attribute, { maxLength: 12, selector: ([name]) => name }).map((attributes): Array<[string, string]> => [['request', 'smtpd_access_policy'], ...attributes.filter(([name]) => name !== 'request')]);
    fc.assert(
      fc.property(fc.array(request, { minLength: 1, maxLength: 6 }), (requests) => {
        const decoder = new PolicyRequestDecoder();
        for (const attributes of requests) {
          assert.deepEqual(decoder.push(encode(attributes)), [{ kind: 'request', attributes: Object.fromEntries(attributes) }]);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('takes a repeated Postfix sequence with one name replaced by one of the same length', () => {
    const decoder = new PolicyRequestDecoder();
    const postfix: Array<[string, string]> = [['request', 'smtpd_access_policy'], ['sender', 'bob@example.org'], ['recipient', 'alice@example.test']];
    assert.deepEqual(decoder.push(encode(postfix)), [{ kind: 'request', attributes: Object.fromEntries(postfix) }]);
    const swapped: Array<[string, string]> = [['request', 'smtpd_access_policy'], ['sendex', 'a'], ['recipienx', 'b']];
    assert.deepEqual(decoder.push(encode(swapped)), [{ kind: 'request', attributes: { request: 'smtpd_access_policy', sendex: 'a', recipienx: 'b' } }]);
    assert.deepEqual(decoder.push(encode(postfix)), [{ kind: 'request', attributes: Object.fromEntries(postfix) }], 'and back');
  });
});
