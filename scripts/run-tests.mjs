// Runs every *.test.ts below the given folders with Node's test runner (through tsx),
// because Node 20's --test takes no glob patterns. test/e2e is left out unless named.
// The TAP stream passes through unchanged; at the end the failed tests are printed again with
// their diagnostics, because a CI log is often read from its tail and a failure among
// thousands of passing lines is otherwise lost.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawn } from 'node:child_process';

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

// Collects each "not ok" line with the YAML block that follows it (up to its "..." line).
const failures = [];
let current = null;
let pending = '';
function scan(line) {
  if (current !== null) {
    current.push(line);
    if (/^\s*\.\.\.\s*$/.test(line)) current = null;
    return;
  }
  if (/^\s*not ok \d+/.test(line)) {
    current = [line];
    failures.push(current);
  }
}

// A test file that hangs (an await that never settles in a teardown) fails after this instead
// of holding a CI run for ever. Node applies it to each file's run as a whole, as to each test:
// the slowest file, end-to-end ones included, takes well under that (its longest test, 35 s).
const TEST_TIMEOUT_MS = 600_000;
// The loopback guard refuses, in every test process, a connection to a host off this machine.
const guard = new URL('../test/support/loopback-guard.ts', import.meta.url).pathname;
// The runner and every file's process in a process group of their own, so that all can be
// killed: a file blocked in synchronous work never runs its SIGTERM handler
// (test/support/exit-hooks), so it outlives its --test-timeout and the runner waits on it for
// ever. Past RUN_LIMIT_MS the whole group gets SIGKILL and the run fails, saying why.
const RUN_LIMIT_MS = 3 * TEST_TIMEOUT_MS;
const child = spawn(process.execPath, ['--import', 'tsx', '--import', guard, '--test', '--test-concurrency=2', `--test-timeout=${TEST_TIMEOUT_MS}`, ...files], {
  stdio: ['inherit', 'pipe', 'inherit'],
  detached: true,
});
const killGroup = (signal) => {
  try {
    process.kill(-child.pid, signal);
  } catch {
    // Already gone.
  }
};
let overran = false;
const limit = setTimeout(() => {
  overran = true;
  killGroup('SIGKILL');
}, RUN_LIMIT_MS);
// Outside the terminal's process group now: a Ctrl-C or a CI's stop reaches the tests through us.
// A file blocked in synchronous work ignores it (as above): node --test then exits and leaves the
// file spinning, and a runner that waits on its tests would wait up to RUN_LIMIT_MS. So a second
// signal, STOP_GRACE_MS after the first, or the runner's end after one gets the group SIGKILL.
const STOP_GRACE_MS = 5_000;
let stopping = false;
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    if (stopping) return killGroup('SIGKILL');
    stopping = true;
    killGroup(signal);
    setTimeout(() => killGroup('SIGKILL'), STOP_GRACE_MS).unref();
  });
}
child.stdout.on('data', (chunk) => {
  process.stdout.write(chunk);
  pending += chunk.toString('utf8');
  const lines = pending.split('\n');
  pending = lines.pop() ?? '';
  for (const line of lines) scan(line);
});
child.on('close', (code, signal) => {
  clearTimeout(limit);
  if (stopping) killGroup('SIGKILL');
  if (pending !== '') scan(pending);
  if (overran) process.stdout.write(`\n# ==== the test run passed ${RUN_LIMIT_MS / 60_000} minutes and was killed: a test file blocked in synchronous work outlives its timeout (it cannot run its SIGTERM handler) ====\n`);
  if (failures.length > 0) {
    process.stdout.write(`\n# ==== ${failures.length} failed (suites count with their tests) ====\n`);
    for (const block of failures) process.stdout.write(`${block.join('\n')}\n`);
  }
  process.exit(code ?? (signal === null ? 1 : 128));
});
