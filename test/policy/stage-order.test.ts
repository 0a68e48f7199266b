// Options that read an earlier stage's verdict, warned of where no such stage runs before them.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { validateConfig } from '../../src/config/schema.js';
import { earlierReadGaps } from '../../src/policy/stage-order.js';

const gaps = (stages: unknown[]) => earlierReadGaps(validateConfig({ policy: { stages } }).policy.stages);
const SPF_LISTED = { name: 'greylist', skip: { spfPassDomains: ['example.org'] } };

describe('earlierReadGaps', () => {
  it('names sender-callout skipOnSpfPass (on by default) before the spf stage it reads', () => {
    assert.deepEqual(gaps([{ name: 'allowlist' }, { name: 'sender-callout' }, { name: 'spf' }]), [
      'policy.stages.1.skipOnSpfPass: reads the verdict of an earlier spf stage, but policy.stages.2 (spf) runs after it: no callout is skipped for an SPF pass',
    ]);
    assert.deepEqual(gaps([{ name: 'spf' }, { name: 'sender-callout' }]), [], 'spf first: the skip works');
    assert.deepEqual(gaps([{ name: 'sender-callout', skipOnSpfPass: false }, { name: 'spf' }]), [], 'turned off, it reads nothing');
    assert.deepEqual(gaps([{ name: 'sender-callout', mode: 'off' }, { name: 'spf' }]), [], 'a stage that never runs');
  });

  it('says nothing of a default skipOnSpfPass without an spf stage: the default pipeline is such a one', () => {
    assert.deepEqual(earlierReadGaps(validateConfig({}).policy.stages), []);
    assert.deepEqual(gaps([{ name: 'sender-callout' }, { name: 'spf', mode: 'off' }]), []);
  });

  it('names greylist skip.spfPassDomains with no spf stage, one after it, or one in other states', () => {
    const line = (why: string, at = 0) => `policy.stages.${at}.skip.spfPassDomains: reads the verdict of an earlier spf stage, but ${why}: greylisting is never skipped for these domains`;
    assert.deepEqual(gaps([SPF_LISTED]), [line('no spf stage runs')]);
    assert.deepEqual(gaps([SPF_LISTED, { name: 'spf', mode: 'off' }]), [line('no spf stage runs')]);
    assert.deepEqual(gaps([SPF_LISTED, { name: 'spf' }]), [line('policy.stages.1 (spf) runs after it')]);
    assert.deepEqual(gaps([{ name: 'spf', states: ['MAIL'] }, SPF_LISTED]), [line('policy.stages.0 (spf) runs only in MAIL, this stage in RCPT', 1)]);
    assert.deepEqual(gaps([{ name: 'spf', mode: 'warn' }, SPF_LISTED]), [], 'a watched spf stage still leaves its verdict');
    assert.deepEqual(gaps([{ name: 'greylist' }]), [], 'an empty list reads nothing');
  });

  it('does not count greylist fcrdns-domain: without an earlier iprev stage it looks the names up itself', () => {
    assert.deepEqual(gaps([{ name: 'greylist', clientIdentity: 'fcrdns-domain', skip: { fcrdnsProviders: ['example.net'] } }, { name: 'iprev' }]), []);
  });
});
