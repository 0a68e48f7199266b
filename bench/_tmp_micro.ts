import { pino } from 'pino';
import { createLogger } from '../src/core/log.js';
import { PolicyRequestDecoder } from '../src/policy/protocol.js';
import { encodeRequest, postfixRequest } from '../test/support/policy-client.js';
import { buildPipeline } from '../src/policy/pipeline.js';
import { validateConfig } from '../src/config/schema.js';
import { openStore } from '../src/store/index.js';
import { systemClock } from '../src/core/clock.js';
import { CalloutEngine } from '../src/verify/engine.js';
import { createResolver } from '../src/cli/runtime.js';

const N = 300_000;
const buf = Buffer.from(encodeRequest(postfixRequest()));
const dec = new PolicyRequestDecoder({});
let t = performance.now();
for (let i = 0; i < N; i++) dec.push(buf);
console.log('decode µs', ((performance.now() - t) * 1000 / N).toFixed(2));

const log = createLogger('info', pino.destination({ dest: '/dev/null', sync: true }) as unknown as NodeJS.WritableStream);
const attrs = postfixRequest();
t = performance.now();
for (let i = 0; i < N; i++) log.info({ client: attrs.client_address, helo: attrs.helo_name, sender: attrs.sender, recipient: attrs.recipient, instance: attrs.instance, state: 'RCPT', action: 'DUNNO', decidedBy: null, stages: ['allowlist=none: x', 'postmaster=none: y', 'sender-syntax=ok: z', 'sender-callout=deliverable: accepted: mx [1.2.3.4] answered RCPT TO:<bob@x> with 250 2.1.5 Ok'], ms: 0 }, 'decision');
console.log('log µs', ((performance.now() - t) * 1000 / N).toFixed(2));

const config = validateConfig({ store: { kind: 'memory' }, callout: { helo: 'a.b.test', allowTargets: ['127.0.0.0/8'] }, dns: { servers: ['127.0.0.1:1'] } });
const store = await openStore({ kind: 'memory' }, systemClock);
const resolver = createResolver(config, systemClock);
const engine = new CalloutEngine(config, { resolver, store, clock: systemClock });
const pipeline = buildPipeline(config, { resolver, store, clock: systemClock, engine, log, metrics: undefined as never });
// null sender: no callout
const nullReq = postfixRequest({ sender: '' });
t = performance.now();
for (let i = 0; i < N; i++) await pipeline.decide(nullReq);
console.log('decide (null sender) µs', ((performance.now() - t) * 1000 / N).toFixed(2));
