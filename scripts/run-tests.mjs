// Runs every *.test.ts below the given folders with Node's test runner (through tsx),
// because Node 20's --test takes no glob patterns. test/e2e is left out unless named.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const roots = process.argv.slice(2);
const includeE2e = roots.some((r) => r.replace(/\/$/, '').endsWith('e2e'));
const files = [];
function walk(dir) {
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) {
      if (name === 'e2e' && !includeE2e) continue;
      walk(path);
    } else if (name.endsWith('.test.ts')) files.push(path);
  }
}
for (const root of roots) walk(root);
if (files.length === 0) {
  console.error(`no test files under ${roots.join(' ')}`);
  process.exit(1);
}
const result = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=2', ...files], { stdio: 'inherit' });
process.exit(result.status ?? 1);
