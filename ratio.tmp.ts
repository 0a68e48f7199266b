import { createRequire } from 'node:module';
import { evaluateSpf } from './src/checks/spf/index.js';
import { loadSpfSuite, SuiteResolver, SUITE_DEFAULT_EXPLANATION } from './test/support/spf-suite.js';
const require = createRequire(import.meta.url);
const { spf } = require('mailauth/lib/spf');
const sc = loadSpfSuite('rfc7208-tests.yml').map((s) => { const r = new SuiteResolver(s.zone); return { s, r, m: async (name: string, type: any) => { const a: any = r.answer(name, type); if (a.kind === 'records') return type === 'TXT' ? a.records.map((t: string) => [t]) : a.records; const code = a.kind === 'nxdomain' ? 'ENOTFOUND' : a.kind === 'nodata' ? 'ENODATA' : 'ETIMEOUT'; throw Object.assign(new Error(code), { code }); } }; });
async function ours(ms: number) { let n = 0; const t0 = performance.now(); while (performance.now() - t0 < ms) for (const { s, r } of sc) for (const c of s.cases) { await evaluateSpf({ ip: c.host, mailFrom: c.mailfrom, helo: c.helo }, { resolver: r, defaultExplanation: SUITE_DEFAULT_EXPLANATION }); n++; } return n / (performance.now() - t0) * 1000; }
async function theirs(ms: number) { let n = 0; const t0 = performance.now(); while (performance.now() - t0 < ms) for (const { s, m } of sc) for (const c of s.cases) { await spf({ sender: c.mailfrom, ip: c.host, helo: c.helo, mta: 'x', resolver: m }); n++; } return n / (performance.now() - t0) * 1000; }
await ours(500); await theirs(500);
let a = 0, b = 0;
for (let i = 0; i < 5; i++) { a += await ours(300); b += await theirs(300); }
console.log('ours', Math.round(a / 5), 'mailauth', Math.round(b / 5), 'ratio', (a / b).toFixed(2));
