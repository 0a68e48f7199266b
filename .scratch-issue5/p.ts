import { readFileSync, readdirSync } from 'node:fs';
import { parseBounce } from '../src/bounce/index.js';
for (const f of readdirSync('test/fixtures/bounce').filter((f) => f.endsWith('.eml'))) {
  const r = parseBounce(readFileSync(`test/fixtures/bounce/${f}`));
  if (!r.ok) { console.log(f, 'NOT', r.reason); continue; }
  console.log(f, r.report.format, r.report.reportingMta ?? '', JSON.stringify(r.report.original ?? {}));
  for (const x of r.report.recipients) console.log('   ', x.address, x.action, x.status, x.permanence, x.hard ? 'HARD' : '', x.smtpCode ?? '', '|', x.diagnostic?.slice(0, 80));
}
