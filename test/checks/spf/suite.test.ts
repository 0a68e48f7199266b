/**
 * The OpenSPF conformance suites (test/fixtures/spf, see SOURCE.md there) through an in-memory
 * resolver fed from each scenario's zone data. A case passes when the result is one of those
 * the case allows and, where the case names one, the explanation is exactly the expected text
 * (the default explanation is "DEFAULT", as in the reference driver).
 *
 * rfc4408 cases run too. Where RFC 7208 changed the answer, the 4408 case lists the 7208 answer
 * as an alternative, so every case passes; RFC7208_ANSWERS names each case that gets such a
 * non-preferred answer and why, and the test checks that no other case does.
 */

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { evaluateSpf } from '../../../src/checks/spf/index.js';
import { loadSpfSuite, SUITE_DEFAULT_EXPLANATION, SuiteResolver, type SuiteCase } from '../../support/spf-suite.js';

interface CaseRun {
  test: SuiteCase;
  result: string;
  explanation: string | undefined;
  passed: boolean;
}

async function runSuite(file: string): Promise<Array<{ scenario: string; runs: CaseRun[] }>> {
  const scenarios = loadSpfSuite(file);
  return Promise.all(
    scenarios.map(async (scenario) => {
      const resolver = new SuiteResolver(scenario.zone);
      const runs = await Promise.all(
        scenario.cases.map(async (test): Promise<CaseRun> => {
          const verdict = await evaluateSpf(
            { ip: test.host, mailFrom: test.mailfrom, helo: test.helo },
            { resolver, defaultExplanation: SUITE_DEFAULT_EXPLANATION },
          );
          const resultOk = (test.results as string[]).includes(verdict.result);
          const explanationOk = test.explanation === undefined || verdict.explanation === test.explanation;
          return { test, result: verdict.result, explanation: verdict.explanation, passed: resultOk && explanationOk };
        }),
      );
      return { scenario: scenario.description, runs };
    }),
  );
}

function describeFailure(run: CaseRun): string {
  const wanted = run.test.results.join('|') + (run.test.explanation === undefined ? '' : ` "${run.test.explanation}"`);
  return `${run.test.id} (${run.test.spec}): got ${run.result}${run.explanation === undefined ? '' : ` "${run.explanation}"`}, want ${wanted}`;
}

/** rfc4408 cases answered with a listed alternative that is RFC 7208's answer. */
const RFC7208_ANSWERS: Record<string, string> = {
  spfonly: 'RFC 7208 §3.1/§4.4 dropped the SPF RR type: only TXT is queried, and there is none',
  txttimeout: 'only TXT is queried (§4.4), and its timeout is temperror',
  spfoverride: 'type SPF records are no longer consulted; the TXT record (-all) decides',
  multitxt1: 'only TXT records count, and two v=spf1 TXT records are a permerror (§4.5)',
  multispf2: 'only TXT records count; the single TXT record (+all) decides',
  'invalid-domain-empty-label': 'RFC 7208 leaves an unusable target name undefined; its suite prefers "no match" (fail)',
  'invalid-domain-long': 'as invalid-domain-empty-label',
  'invalid-domain-long-via-macro': 'as invalid-domain-empty-label',
  'exists-dnserr': 'RFC 7208 §5 makes a DNS error during a mechanism temperror',
  'mx-limit': 'RFC 7208 §4.6.4 settled the MX limit as a permerror',
};

const rfc7208 = await runSuite('rfc7208-tests.yml');
const rfc4408 = await runSuite('rfc4408-tests.yml');

function summary(results: Array<{ runs: CaseRun[] }>): { passed: number; total: number } {
  const runs = results.flatMap((scenario) => scenario.runs);
  return { passed: runs.filter((run) => run.passed).length, total: runs.length };
}

const summary7208 = summary(rfc7208);
const summary4408 = summary(rfc4408);
const alternatives4408 = rfc4408.flatMap((scenario) => scenario.runs).filter((run) => run.passed && run.result !== run.test.results[0]);

describe('OpenSPF rfc7208 suite', () => {
  test(`rfc7208: ${summary7208.passed}/${summary7208.total} pass`, () => {
    assert.equal(summary7208.total, 203);
    assert.equal(summary7208.passed, summary7208.total);
  });
  for (const scenario of rfc7208) {
    test(scenario.scenario, () => {
      assert.deepEqual(scenario.runs.filter((run) => !run.passed).map(describeFailure), []);
    });
  }
  test('every rfc7208 case gets its preferred (first) result', () => {
    const notPreferred = rfc7208.flatMap((scenario) => scenario.runs).filter((run) => run.result !== run.test.results[0]);
    assert.deepEqual(notPreferred.map(describeFailure), []);
  });
});

describe('OpenSPF rfc4408 suite', () => {
  test(`rfc4408: ${summary4408.passed}/${summary4408.total} pass (${alternatives4408.length} with the answer RFC 7208 changed it to)`, () => {
    assert.equal(summary4408.total, 191);
    assert.equal(summary4408.passed, summary4408.total);
  });
  for (const scenario of rfc4408) {
    test(scenario.scenario, () => {
      assert.deepEqual(scenario.runs.filter((run) => !run.passed).map(describeFailure), []);
    });
  }
  test('non-preferred answers are exactly the cases RFC 7208 changed', () => {
    assert.deepEqual(alternatives4408.map((run) => run.test.id).sort(), Object.keys(RFC7208_ANSWERS).sort());
  });
});
