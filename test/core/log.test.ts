import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, fstatSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import fc from 'fast-check';
import { ATOMIC_WRITE_OCTETS, CoalescingDestination, RecoveryLine, RepeatCollapser, ResilientDestination, createLogger, logInfoJson } from '../../src/core/log.js';
import { heapAfterGc } from '../support/heap.js';

function recorder(): { writes: string[]; write(line: string): void } {
  const writes: string[] = [];
  return { writes, write: (line: string) => void writes.push(line) };
}

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('CoalescingDestination', () => {
  it('writes the lines of one event-loop turn in one write, at its end', async () => {
    const out = recorder();
    const destination = new CoalescingDestination(out);
    const log = createLogger('info', destination);
    log.info({ n: 1 }, 'one');
    log.info({ n: 2 }, 'two');
    assert.equal(out.writes.length, 0, 'nothing written before the turn ends');
    await nextTurn();
    assert.equal(out.writes.length, 1);
    const lines = out.writes[0]!.trimEnd().split('\n').map((line) => JSON.parse(line) as { n: number; msg: string; component: string });
    assert.deepEqual(lines.map((l) => [l.n, l.msg, l.component]), [[1, 'one', 'callout'], [2, 'two', 'callout']]);
    log.info({ n: 3 }, 'three');
    await nextTurn();
    assert.equal(out.writes.length, 2, 'a later turn gets a write of its own');
    assert.match(out.writes[1]!, /"n":3/);
    destination.close();
  });

  it('writes one line per event whatever the fields hold (CR, LF, NUL, escapes, C1 controls, line separators, bidi controls, lone surrogates), none raw', () => {
    fc.assert(
      fc.property(fc.string({ unit: fc.oneof(fc.constantFrom('\r', '\n', '\0', '\u001b', '\u009b', '\u0085', '\u2028', '\u2029', '\u202e', '\u2067', '\u200f', '\ud800', '"', '\\'), fc.string({ unit: 'binary', maxLength: 1 })) }), (text) => {
        const out = recorder();
        const destination = new CoalescingDestination(out);
        createLogger('info', destination).child({ helo: text }).info({ sender: text }, text);
        logInfoJson(createLogger('info', destination), JSON.stringify({ sender: text }), text);
        destination.close();
        // As the file gets it: UTF-8, where a lone surrogate is U+FFFD.
        const asWritten = (t: string): string => Buffer.from(t).toString('utf8');
        const lines = asWritten(out.writes.join('')).split('\n');
        assert.equal(lines.pop(), '');
        assert.equal(lines.length, 2);
        for (const line of lines) {
          // eslint-disable-next-line no-control-regex -- control characters are what it looks for
          assert.doesNotMatch(line, /[\u0000-\u001f\u0080-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/, 'DEL aside, which a terminal ignores');
          const parsed = JSON.parse(line) as { sender: string; msg: string };
          // JSON.stringify writes a lone surrogate as \ud800, pino as it is (U+FFFD once written).
          assert.equal(asWritten(parsed.sender), asWritten(text));
          assert.equal(asWritten(parsed.msg), asWritten(text));
        }
      }),
    );
  });

  it('flushSync and logger.flush() write what is pending at once', () => {
    const out = recorder();
    const destination = new CoalescingDestination(out);
    const log = createLogger('info', destination);
    log.warn('pending');
    log.flush();
    assert.equal(out.writes.length, 1);
    assert.match(out.writes[0]!, /"msg":"pending"/);
    destination.flushSync();
    assert.equal(out.writes.length, 1, 'nothing pending, nothing written');
    destination.close();
  });

  it('given a write limit (PIPE_BUF), writes at most that many octets at a time, each write ending at a line end, a longer line alone', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.constantFrom('a', 'é', '😀'), fc.nat(3000)), { maxLength: 40 }), (texts) => {
        const out = recorder();
        const destination = new CoalescingDestination(out, ATOMIC_WRITE_OCTETS);
        const lines = texts.map(([unit, count]) => `${unit.repeat(count)}\n`);
        for (const line of lines) destination.write(line);
        destination.close();
        assert.equal(out.writes.join(''), lines.join(''), 'every line, in order');
        for (const write of out.writes) {
          assert.ok(write.endsWith('\n'), 'write.endsWith(\'\\n\')');
          assert.ok(Buffer.byteLength(write) <= 4096 || write.indexOf('\n') === write.length - 1, `a write of ${Buffer.byteLength(write)} octets holds several lines`);
        }
      }),
    );
  });

  it('keeps whole the lines of policy workers, which share one stdout pipe', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'callout-log-'));
    try {
      const script = join(dir, 'writer.mts');
      // Two workers forked as `callout serve` forks them, each logging many lines per turn: a
      // turn's lines are far more than a pipe takes whole.
      writeFileSync(
        script,
        `import cluster from 'node:cluster';
         const { createLogger } = await import(${JSON.stringify(new URL('../../src/core/log.ts', import.meta.url).href)});
         if (cluster.isPrimary) {
           cluster.fork();
           cluster.fork();
         } else {
           const log = createLogger('info');
           const pad = 'x'.repeat(300);
           let turn = 0;
           const next = () => {
             for (let i = 0; i < 100; i++) log.info({ worker: cluster.worker.id, turn, i, pad }, 'line');
             if (++turn < 40) setImmediate(next);
             else setImmediate(() => process.exit(0));
           };
           next();
         }`,
      );
      const { NODE_TEST_CONTEXT: _, ...env } = process.env;
      // Through cat, so that stdout is a pipe (Node gives a child a socket for its stdout).
      const child = spawn('/bin/sh', ['-c', `"${process.execPath}" --import tsx "${script}" | cat`], { env, stdio: ['ignore', 'pipe', 'inherit'] });
      const chunks: Buffer[] = [];
      // A slow reader keeps the pipe full, so that writers wait in the middle of their writes.
      child.stdout.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        child.stdout.pause();
        setTimeout(() => child.stdout.resume(), 1);
      });
      const [code] = (await once(child, 'exit')) as [number | null];
      if (!child.stdout.readableEnded) await once(child.stdout, 'end');
      assert.equal(code, 0);
      const lines = Buffer.concat(chunks).toString('utf8').split('\n').slice(0, -1);
      const broken = lines.filter((line) => {
        try {
          JSON.parse(line);
          return false;
        } catch {
          return true;
        }
      });
      assert.deepEqual(broken.map((line) => line.slice(0, 60)), []);
      assert.equal(lines.length, 2 * 40 * 100);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('survives a log that cannot be written (stdout or a file on a full disk): the lines are dropped, the process goes on', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'callout-log-full-'));
    try {
      const script = join(dir, 'full.mts');
      // /dev/full answers every write with ENOSPC, as a full disk does.
      writeFileSync(
        script,
        `const { createLogger, coalescingDestination } = await import(${JSON.stringify(new URL('../../src/core/log.ts', import.meta.url).href)});
         const toStdout = createLogger('info');
         const toFile = createLogger('info', coalescingDestination('/dev/full'));
         let turn = 0;
         const next = () => {
           toStdout.info({ turn }, 'line');
           toFile.info({ turn }, 'line');
           if (++turn < 50) setImmediate(next);
           else setImmediate(() => { process.stderr.write('still running after ' + turn + ' turns\\n'); process.exit(0); });
         };
         next();`,
      );
      const { NODE_TEST_CONTEXT: _, ...env } = process.env;
      const child = spawn('/bin/sh', ['-c', `"${process.execPath}" --import tsx "${script}" > /dev/full`], { env, stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
      const [code] = (await once(child, 'exit')) as [number | null];
      assert.equal(code, 0, stderr);
      assert.match(stderr, /still running after 50 turns/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('goes on when a file whose write failed cannot be opened again, counts each lost batch once, and writes there once it can', () => {
    const dir = mkdtempSync(join(tmpdir(), 'callout-log-reopen-'));
    try {
      const path = join(dir, 'log');
      // Writes fail (ENOSPC, as on a full disk); then the path leads into a directory that is gone.
      symlinkSync('/dev/full', path);
      const destination = new ResilientDestination(path);
      unlinkSync(path);
      symlinkSync(join(dir, 'gone', 'log'), path);
      assert.doesNotThrow(() => destination.write('lost\n'));
      assert.doesNotThrow(() => destination.write('lost too\n'));
      assert.equal(destination.dropped, 2);
      mkdirSync(join(dir, 'gone'));
      destination.write('kept\n');
      assert.equal(readFileSync(join(dir, 'gone', 'log'), 'utf8'), 'kept\n');
      assert.equal(destination.dropped, 2);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('closes a file it opened itself after each failed write, and never a descriptor it was given', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'callout-log-close-'));
    const given = openSync('/dev/full', 'w');
    try {
      const path = join(dir, 'log');
      symlinkSync('/dev/full', path);
      const open = () => readdirSync('/proc/self/fd').length;
      const before = open();
      const file = new ResilientDestination(path);
      for (let i = 0; i < 10; i++) file.write('lost\n');
      const descriptor = new ResilientDestination(given);
      descriptor.write('lost\n');
      // The sink closes its file asynchronously, after a pending fsync.
      await sleep(100);
      assert.equal(file.dropped, 10);
      assert.equal(descriptor.dropped, 1);
      assert.ok(open() <= before + 1, `${open() - before} more descriptors open after 10 failed writes (one left at most: the sink now open)`);
      assert.doesNotThrow(() => fstatSync(given), 'the descriptor it was given is still open');
    } finally {
      closeSync(given);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('calls back logger.flush\'s callback once it has written', () => {
    const out = recorder();
    const destination = new CoalescingDestination(out);
    let called = 0;
    destination.write('{"a":1}\n');
    destination.flush(() => void called++);
    assert.equal(called, 1, 'the callback called');
    assert.deepEqual(out.writes, ['{"a":1}\n']);
    destination.close();
  });

  it('stops listening for the exit once closed', () => {
    const before = process.listenerCount('exit');
    const destination = new CoalescingDestination(recorder());
    assert.equal(process.listenerCount('exit'), before + 1);
    destination.close();
    assert.equal(process.listenerCount('exit'), before, 'its exit listener gone');
  });

  it('writes what is pending when the process exits', () => {
    const out = recorder();
    const destination = new CoalescingDestination(out);
    destination.write('{"last":true}\n');
    process.emit('exit', 0);
    assert.deepEqual(out.writes, ['{"last":true}\n']);
    destination.close();
  });
});

describe('logInfoJson', () => {
  const withoutTime = (line: string): string => line.replace(/,"time":"[^"]*"/, '');

  it('writes the very line logger.info(fields, msg) writes, bindings and escapes included', () => {
    fc.assert(
      fc.property(
        fc.dictionary(fc.string({ minLength: 1, maxLength: 8 }).filter((k) => k !== '__proto__'), fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.integer(), fc.constant(null), fc.array(fc.string(), { maxLength: 4 }))),
        fc.string(),
        (fields, msg) => {
          const pinoOut = recorder();
          const ourOut = recorder();
          const viaPino = createLogger('info', pinoOut).child({ worker: 3 });
          const ours = createLogger('info', ourOut).child({ worker: 3 });
          viaPino.info(fields, msg);
          logInfoJson(ours, JSON.stringify(fields), msg);
          assert.equal(withoutTime(ourOut.writes[0]!), withoutTime(pinoOut.writes[0]!));
        },
      ),
    );
  });

  it('leaves undefined members out, as pino does, and writes nothing below the logger level', () => {
    const out = recorder();
    logInfoJson(createLogger('info', out), JSON.stringify({ gone: undefined, kept: 'yes' }), 'm');
    assert.deepEqual(Object.keys(JSON.parse(out.writes[0]!) as object), ['level', 'time', 'component', 'kept', 'msg']);
    const quiet = recorder();
    logInfoJson(createLogger('warn', quiet), JSON.stringify({ kept: 'yes' }), 'm');
    const empty = recorder();
    logInfoJson(createLogger('info', empty), '{}', 'm');
    assert.deepEqual(Object.keys(JSON.parse(empty.writes[0]!) as object), ['level', 'time', 'component', 'msg']);
    assert.deepEqual(quiet.writes, []);
  });
});

describe('RepeatCollapser', () => {
  it('admits the first line of a key, counts its repeats within the window, and admits the next after it with the count', () => {
    const lines = new RepeatCollapser(1000, 2);
    assert.deepEqual(lines.admit('a', 0), {});
    assert.equal(lines.admit('a', 500), undefined);
    assert.equal(lines.admit('a', 999), undefined);
    assert.deepEqual(lines.admit('b', 999), {}, 'each key on its own');
    assert.deepEqual(lines.admit('a', 1000), { repeatsNotLogged: 2 });
    assert.deepEqual(lines.admit('a', 10), {}, 'a clock stepped back starts the window again');
    assert.deepEqual(lines.admit('c', 20), {}, 'past maxKeys the keys are forgotten, not grown');
    assert.deepEqual(lines.admit('a', 30), {});
  });

  it('remembers 1000 keys when not told otherwise', () => {
    const lines = new RepeatCollapser(1000);
    for (let i = 0; i < 1000; i++) lines.admit(`fault ${i}`, 0);
    assert.equal(lines.admit('fault 0', 1), undefined, 'the first of 1000 keys still collapsed');
  });

  it('keeps a key without the string it was sliced from (a fault\'s message may be a slice of a policy request)', () => {
    const lines = new RepeatCollapser(1000);
    const before = heapAfterGc();
    // Each key a slice of a 64 KiB string of its own, made in a frame that has returned before the heap is measured.
    for (let i = 0; i < 500; i++) lines.admit(`${'x'.repeat(65_536)}${i}-fault`.slice(65_530), 0);
    const grown = heapAfterGc() - before;
    // Held whole, the 500 parents would take 32 MiB.
    assert.ok(grown < 8 * 1024 * 1024, `${grown} octets held for 500 short keys`);
  });
});

describe('RecoveryLine', () => {
  it('gives a line at the first success after failures, with how long they went on and how many there were, and none before or after', () => {
    const line = new RecoveryLine(60_000);
    assert.equal(line.succeeded(0), undefined, 'nothing failed');
    line.failed(1_000);
    line.failed(2_000);
    line.failed(5_000);
    assert.deepEqual(line.succeeded(7_000), { failingForMs: 6_000, failures: 3 });
    assert.equal(line.succeeded(8_000), undefined, 'one line for the trouble');
    // A trouble told before anything failed (Redis's connection lost while no command ran).
    line.failed(100_000, 0);
    assert.deepEqual(line.succeeded(100_500), { failingForMs: 500, failures: 0 });
  });

  it('holds back the line of a trouble that comes back within the window, counting on, and gives it at the first success after the window, timed to the first success after the last failure', () => {
    const line = new RecoveryLine(60_000);
    line.failed(0);
    assert.deepEqual(line.succeeded(1_000), { failingForMs: 1_000, failures: 1 });
    line.failed(10_000);
    assert.equal(line.succeeded(12_000), undefined, 'within a minute of the last line');
    line.failed(20_000);
    line.failed(21_000);
    assert.equal(line.succeeded(25_000), undefined);
    assert.equal(line.succeeded(60_999), undefined);
    assert.deepEqual(line.succeeded(61_000), { failingForMs: 15_000, failures: 3 }, 'from the first failure since the last line to the first success after the last failure');
    line.failed(62_000);
    assert.deepEqual(line.succeeded(1_000), { failingForMs: 0, failures: 1 }, 'a clock stepped back ends the window, and no duration is negative');
  });
});

describe('CoalescingDestination write limit', () => {
  it('writes lines that fill the limit exactly together, in one write, and lines one octet over it apart', () => {
    const out = recorder();
    const destination = new CoalescingDestination(out, ATOMIC_WRITE_OCTETS);
    const half = `${'a'.repeat(ATOMIC_WRITE_OCTETS / 2 - 1)}\n`;
    destination.write(half);
    destination.write(half);
    destination.write('x\n');
    destination.close();
    assert.deepEqual(out.writes, [half + half, 'x\n']);
    const split = recorder();
    const over = new CoalescingDestination(split, ATOMIC_WRITE_OCTETS);
    const longer = `${'b'.repeat(ATOMIC_WRITE_OCTETS / 2)}\n`;
    over.write(half);
    over.write(longer);
    over.close();
    assert.deepEqual(split.writes, [half, longer], 'one octet over the limit: two writes');
  });
});
