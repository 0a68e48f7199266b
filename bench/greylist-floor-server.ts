/**
 * NAME
 *   bench/greylist-floor-server - the least a greylisting policy server can do, for bench/greylist
 *
 * SYNOPSIS
 *   fork('bench/greylist-floor-server.ts', ['unread' | 'sqlite', PORT, DATABASE])
 *
 * DESCRIPTION
 *   Two servers that bound what the greylisting benchmark can show on this machine, over the
 *   Postfix policy protocol on 127.0.0.1:PORT, replayed the same trace as callout and postgrey:
 *     unread   answers action=DUNNO to every request (a request ends at an empty line)
 *              without reading it: the cost of the protocol, the loopback and Node's I/O;
 *     sqlite   the triplet rule alone, as postgrey has it (a triplet first seen is deferred;
 *              a retry at least 300 s later passes, and so does everything after), on a table
 *              like callout's SQLite store (WAL, synchronous=NORMAL, key/value/expires_at with
 *              the expiry index): the triplet's row is read for every request and written when
 *              it is new or passes, in one transaction per turn of the event loop, committed
 *              before the answers go out, since an acknowledged write must survive a crash of
 *              the process (as in callout, not a power loss: synchronous=NORMAL). No
 *              whitelists, auto-allow, retry window, sender normalisation, log or metrics; SQLite
 *              checkpoints inside its commits (callout's store does that in a thread).
 *   The time of a request is its policy_test_time attribute, as in callout and postgrey. The
 *   server sends 'ready' on the IPC channel once it listens, and exits when the channel closes.
 *
 *   Requests are split at the empty line and their three attributes found by indexOf, not
 *   decoded by src/policy/protocol: that decoder, its limits and its checks are part of what
 *   callout's rows measure.
 *
 * LIMITS
 *   Bench code: a request is trusted to be a well-formed policy request.
 */

import net from 'node:net';
import Database from 'better-sqlite3';

const DELAY_SECONDS = 300;
const MAX_AGE_SECONDS = 35 * 86_400;
const DUNNO = 'action=DUNNO\n\n';

/** Called with each complete request of a connection, in order. */
type OnRequest = (socket: net.Socket, request: string) => void;

/** One attribute of a request in its wire form ("name=value" lines), '' when absent. */
function attribute(request: string, name: string): string {
  const at = request.indexOf(`\n${name}=`);
  if (at === -1) return '';
  const end = request.indexOf('\n', at + 1);
  return request.slice(at + name.length + 2, end === -1 ? undefined : end);
}

/** Answers without reading: one DUNNO per request. */
const unread: OnRequest = (socket) => {
  socket.write(DUNNO);
};

interface Pending {
  socket: net.Socket;
  key: string;
  now: number;
}

/** The triplet rule on SQLite, one committed transaction per turn before its answers. */
function sqlite(path: string): OnRequest {
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.exec(
    'CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at INTEGER NOT NULL);' +
      'CREATE INDEX IF NOT EXISTS kv_expires_at ON kv (expires_at);',
  );
  const read = db.prepare<[string], { value: string }>('SELECT value FROM kv WHERE key = ?');
  const write = db.prepare<[string, string, number]>(
    'INSERT INTO kv (key, value, expires_at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at',
  );
  const decideAll = db.transaction((batch: readonly Pending[]): string[] =>
    batch.map(({ key, now }) => {
      const row = read.get(key);
      const comma = row ? row.value.indexOf(',') : -1;
      const first = row ? Number(row.value.slice(0, comma)) : now;
      const passedBefore = row !== undefined && Number(row.value.slice(comma + 1)) - first >= DELAY_SECONDS;
      const passes = passedBefore || now - first >= DELAY_SECONDS;
      if (!row || (passes && !passedBefore)) write.run(key, `${first},${now}`, now + MAX_AGE_SECONDS);
      return passes ? DUNNO : `action=DEFER_IF_PERMIT 4.2.0 Greylisted, retry in ${first + DELAY_SECONDS - now} s\n\n`;
    }),
  );
  let pending: Pending[] = [];
  const flush = (): void => {
    const batch = pending;
    pending = [];
    const answers = decideAll(batch);
    const out = new Map<net.Socket, string>();
    batch.forEach(({ socket }, i) => out.set(socket, (out.get(socket) ?? '') + answers[i]!));
    for (const [socket, text] of out) socket.write(text);
  };
  return (socket, request) => {
    const key = `${attribute(request, 'client_address')}/${attribute(request, 'sender')}/${attribute(request, 'recipient')}`;
    const now = Number(attribute(request, 'policy_test_time')) || Math.floor(Date.now() / 1000);
    if (pending.push({ socket, key, now }) === 1) setImmediate(flush);
  };
}

function listen(port: number, onRequest: OnRequest): void {
  const server = net.createServer((socket) => {
    socket.setNoDelay(true);
    socket.on('error', () => socket.destroy());
    let partial = '';
    socket.on('data', (chunk: Buffer) => {
      partial += chunk.toString('latin1');
      for (let end = partial.indexOf('\n\n'); end !== -1; end = partial.indexOf('\n\n')) {
        // A leading newline lets attribute() find the first line as it finds the others.
        onRequest(socket, `\n${partial.slice(0, end + 1)}`);
        partial = partial.slice(end + 2);
      }
    });
  });
  server.listen(port, '127.0.0.1', () => process.send?.('ready'));
}

const [mode, port, database] = process.argv.slice(2);
process.on('disconnect', () => process.exit(0));
if (mode === 'unread') listen(Number(port), unread);
else if (mode === 'sqlite' && database) listen(Number(port), sqlite(database));
else {
  process.stderr.write('usage: greylist-floor-server unread|sqlite PORT [DATABASE]\n');
  process.exit(2);
}
