// Enhanced status codes in stage options: their own form, and their class against a reply code's.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { enhancedInCodeClass, enhancedStatusOption } from '../../../src/policy/stages/status-option.js';

describe('enhancedInCodeClass', () => {
  // The check alone, over keys that take any value: what each key's own schema refuses is not its business.
  const options = z.object({ code: z.unknown(), enhanced: z.unknown() }).superRefine(enhancedInCodeClass('code', 'enhanced'));
  const issues = (value: Record<string, unknown>) => options.safeParse(value).error?.issues.map((issue) => [issue.path.join('.'), issue.message]) ?? [];

  it('refuses an enhanced code of another class than the reply code, under the enhanced key', () => {
    assert.deepEqual(issues({ code: 421, enhanced: '5.7.0' }), [['enhanced', 'expected an enhanced status code of class 4, as code (421) is (RFC 3463 §2), such as 4.7.0']]);
    assert.deepEqual(issues({ code: 550, enhanced: '5.7.0' }), []);
  });

  it('leaves a malformed code or enhanced code to its own key: no second message about their classes', () => {
    for (const value of [{ code: 600, enhanced: '4.7.0' }, { code: 250, enhanced: '4.7.0' }, { code: '421', enhanced: '5.7.0' }, { code: 421, enhanced: '5.7' }, { code: 421, enhanced: 5 }]) {
      assert.deepEqual(issues(value), [], JSON.stringify(value));
    }
  });
});

describe('enhancedStatusOption', () => {
  it('takes the classes given, and says which it expects', () => {
    const either = enhancedStatusOption('45');
    assert.equal(either.safeParse('4.7.1').success && either.safeParse('5.7.1').success, true, '4.7.1 and 5.7.1 are taken');
    assert.equal(either.safeParse('2.0.0').error?.issues[0]?.message, 'expected an enhanced status code of class 4 or 5, such as 4.7.1 (RFC 3463: class.subject.detail, each of 1 to 3 digits)');
  });
});
