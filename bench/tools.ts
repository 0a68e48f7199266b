/**
 * NAME
 *   bench/tools - the verifiers under comparison, each as "address -> answer"
 *
 * DESCRIPTION
 *   callout's CalloutEngine and the two npm peers answer in different shapes; each adapter maps
 *   its tool's answer onto world.Answer (accept, reject, risky, unknown, no-mail-domain) and
 *   keeps the tool's own words as the detail, so the correctness table shows what each said.
 *     - callout: built from validateConfig() with the limits raised so that they never refuse
 *       a benchmark callout (limitsForBench), on the real node:dns resolver behind
 *       CachingResolver, and a MemoryStore; a fresh engine has an empty store, and an empty DNS
 *       cache unless it is given a resolver to share.
 *     - deep-email-validator: validate() with its defaults (regex, typo, disposable, MX, SMTP).
 *     - email-deep-validator: new EmailValidator() with its defaults (10 s timeout).
 *   Both peers read MX records through node:dns (the caller points dns.setServers at the
 *   benchmark's DNS server) and connect to port 25 of the MX host name via getaddrinfo.
 */

import { readFileSync } from 'node:fs';
import { validate } from 'deep-email-validator';
import EmailValidator from 'email-deep-validator';
import { systemClock } from '../src/core/clock.js';
import { validateConfig } from '../src/config/schema.js';
import type { Config } from '../src/config/schema.js';
import { CachingResolver, createNodeResolver } from '../src/dns/index.js';
import type { Resolver } from '../src/dns/index.js';
import { MemoryStore } from '../src/store/memory.js';
import { CalloutEngine } from '../src/verify/engine.js';
import type { VerifyResult } from '../src/verify/types.js';
import type { Answer } from './world.js';

export interface Checked {
  answer: Answer;
  /** The tool's own words. */
  detail: string;
}

export interface Tool {
  name: string;
  check(address: string): Promise<Checked>;
}

/** Limits high enough that the limiter never answers "rate-limited" during a benchmark run. */
export const limitsForBench = { concurrency: 1024, perHostConcurrency: 1000, perDomainPerMinute: 100_000, perHostConnectionsPerMinute: 1_000_000 };

export function benchConfig(options: { port: number; randomProbe: boolean }): Config {
  return validateConfig({
    callout: { helo: 'bench.callout.test', port: options.port, allowTargets: ['127.0.0.0/8'], randomProbe: options.randomProbe },
    limits: limitsForBench,
  });
}

export function benchResolver(dnsServer: string): Resolver {
  return new CachingResolver(createNodeResolver({ servers: [dnsServer] }), { clock: systemClock });
}

/** An engine with an empty store and, unless one is given, an empty DNS cache. */
export function freshEngine(config: Config, dnsServer: string, resolver: Resolver = benchResolver(dnsServer)): CalloutEngine {
  return new CalloutEngine(config, { resolver, store: new MemoryStore() });
}

const ENGINE_ANSWERS: Record<VerifyResult['verdict'], Answer> = {
  deliverable: 'accept',
  undeliverable: 'reject',
  invalid: 'reject',
  risky: 'risky',
  unknown: 'unknown',
  'no-mail-domain': 'no-mail-domain',
};

export function engineAnswer(result: VerifyResult): Checked {
  return { answer: ENGINE_ANSWERS[result.verdict], detail: `${result.verdict} (${result.reason})` };
}

export function engineTool(engine: CalloutEngine): Tool {
  return { name: 'callout', check: async (address) => engineAnswer(await engine.verify(address)) };
}

export function deepEmailValidator(): Tool {
  return {
    name: 'deep-email-validator',
    check: async (email) => {
      const out = await validate({ email });
      if (out.valid) return { answer: 'accept', detail: 'valid' };
      const why = out.reason ? (out.validators[out.reason]?.reason ?? '') : '';
      return { answer: out.reason === 'mx' ? 'no-mail-domain' : 'reject', detail: `invalid (${out.reason ?? '?'}: ${why})` };
    },
  };
}

export function emailDeepValidator(): Tool {
  const validator = new EmailValidator();
  return {
    name: 'email-deep-validator',
    check: async (address) => {
      const out = await validator.verify(address);
      const detail = `validDomain ${String(out.validDomain)}, validMailbox ${String(out.validMailbox)}`;
      if (!out.wellFormed) return { answer: 'reject', detail: 'not well formed' };
      if (out.validDomain === false) return { answer: 'no-mail-domain', detail };
      if (out.validMailbox === true) return { answer: 'accept', detail };
      if (out.validMailbox === false) return { answer: 'reject', detail };
      return { answer: 'unknown', detail };
    },
  };
}

export const peers: Array<() => Tool> = [deepEmailValidator, emailDeepValidator];

/** The installed version of an npm package, from its package.json. */
export function installedVersion(name: string): string {
  const manifest = JSON.parse(readFileSync(new URL(`../node_modules/${name}/package.json`, import.meta.url), 'utf8')) as { version?: string };
  return manifest.version ?? '?';
}
