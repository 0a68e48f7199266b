import { fork } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { encodeRequest, postfixRequest } from '../test/support/policy-client.js';
const reply = Buffer.from('action=DUNNO\n\n');
const server = net.createServer((s) => { s.setNoDelay(true); let pending = ''; s.on('data', (c: Buffer) => { pending += c.toString('latin1'); let i; while ((i = pending.indexOf('\n\n')) >= 0) { pending = pending.slice(i + 2); s.write(reply); } }); });
await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
const port = (server.address() as net.AddressInfo).port;
const child = fork(fileURLToPath(new URL('./policy-load.ts', import.meta.url)), [], { execArgv: ['--import', 'tsx'] });
const ask = (m: unknown) => new Promise<any>((res) => { child.once('message', res); child.send(m as never); });
await ask({ kind: 'setup', port, messages: [{ encoded: encodeRequest(postfixRequest()), exists: true }], judge: 'kind' });
for (const c of [1, 32, 256]) {
  await ask({ kind: 'run', connections: c, maxOps: c, maxMs: 10000, judged: false });
  const before = process.cpuUsage();
  const r = await ask({ kind: 'run', connections: c, maxOps: 2_000_000, maxMs: 3000, judged: false });
  const u = process.cpuUsage(before);
  console.log(c, Math.round(r.cell.opsPerSecond), 'ops/s', 'server µs/op', (((u.user + u.system) / r.cell.ops)).toFixed(1), 'server user/sys', (u.user / r.cell.ops).toFixed(1), (u.system / r.cell.ops).toFixed(1), 'load cores', r.cell.cpuCores.toFixed(2), 'machine', r.cell.machineCores.toFixed(2), 'p99', r.cell.p99Ms.toFixed(2));
}
child.send({ kind: 'close' }); server.close(); setTimeout(() => process.exit(0), 500);
