// Listen addresses as administrators write them: limits, and any input fuzzed; binding to them.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { ConfigError, ListenUnavailableError } from '../../src/core/errors.js';
import { exitCodeFor } from '../../src/cli/exit-status.js';
import { DEFAULT_SOCKET_MODE, SOCKET_MODE_TEXT, boundAddress, formatListenAddress, listenOn, listenRefusal, openToAllUsers, parseListenAddress, reachableFromNetwork, remoteEnd, removeIfSocket, removeStaleSocket, sameListener, type ListenAddress } from '../../src/core/listen.js';
import { elapsedMs } from '../support/fuzz.js';

describe('listen addresses', () => {
  it('refuses a UNIX socket path longer than a socket address holds, or with a NUL', () => {
    assert.equal(parseListenAddress(`/${'a'.repeat(106)}`).ok, true);
    const long = parseListenAddress(`/${'a'.repeat(107)}`);
    assert.deepEqual(long, { ok: false, reason: 'socket path is 108 octets, more than the 107 a UNIX socket address holds' });
    assert.deepEqual(parseListenAddress('/run/call\0out'), { ok: false, reason: 'socket path contains a NUL character' });
    // Octets, not characters: 54 characters of two octets each are 108 octets with the slash.
    assert.deepEqual(parseListenAddress(`/${'é'.repeat(54)}`), { ok: false, reason: 'socket path is 109 octets, more than the 107 a UNIX socket address holds' });
    assert.equal(parseListenAddress(`/${'é'.repeat(53)}`).ok, true, '107 octets are taken');
  });

  it('never throws; what it accepts is a port up to 65535 or a short absolute path', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 200 }), fc.stringMatching(/^(\[[0-9a-f:]{0,20}\]|[a-z0-9.]{0,10}):[0-9]{0,6}$/)), (text) => {
        const parsed = parseListenAddress(text);
        if (!parsed.ok) {
          assert.ok(parsed.reason.length <= 200, parsed.reason);
          return;
        }
        if (parsed.value.kind === 'tcp') assert.ok(Number.isInteger(parsed.value.port) && parsed.value.port <= 65535, 'Number.isInteger(parsed.value.port) && parsed.value.port <= 65535');
        else assert.ok(parsed.value.path.startsWith('/') && Buffer.byteLength(parsed.value.path) <= 107 && !parsed.value.path.includes('\0'), 'parsed.value.path.startsWith(\'/\') && Buffer.byteLength(parsed.value.path) <= 107 && !parsed.value...');
      }),
      { numRuns: 2000 },
    );
  });
});

describe('listen hosts', () => {
  it('refuses a mistyped IPv4 address instead of asking the resolver for it as a name', () => {
    assert.deepEqual(parseListenAddress('999.1.1.1:1234'), { ok: false, reason: '"999.1.1.1" is not an IPv4 address' });
    assert.deepEqual(parseListenAddress('127.0.0:10040'), { ok: false, reason: '"127.0.0" is not an IPv4 address' });
    assert.deepEqual(parseListenAddress('127.0.0.1:10040'), { ok: true, value: { kind: 'tcp', host: '127.0.0.1', port: 10040 } });
    assert.deepEqual(parseListenAddress('localhost:10040'), { ok: true, value: { kind: 'tcp', host: 'localhost', port: 10040 } });
  });
});

describe('refused listen addresses', () => {
  // The reason follows the quoted value and the forms (listenExpected): it said the forms again, the value quoted once more.
  it('say what is wrong, not the forms again, and give an IPv6 address with a port its brackets', () => {
    const reason = (text: string) => {
      const parsed = parseListenAddress(text);
      return parsed.ok ? 'accepted' : parsed.reason;
    };
    assert.equal(reason('127.0.0.1'), 'no port');
    assert.equal(reason('h'.repeat(61)), 'no port');
    assert.equal(reason('localhost:'), 'no port');
    assert.equal(reason('[::1]'), 'no port');
    assert.equal(reason('::1:10040'), 'an IPv6 address with a port is written in brackets: [::1]:10040');
    assert.equal(reason('2001:db8::1'), 'no port: an IPv6 address with a port is written [2001:db8::1]:PORT');
    assert.equal(reason('run/callout.sock'), 'a socket path must be absolute, starting with /');
    assert.equal(reason(':10040'), 'no host before the port');
    assert.equal(reason('localhost:smtp'), 'the port "smtp" is not a number');
    assert.equal(reason('a b:25'), '"a b" is not a host name or an IP address');
    assert.equal(listenRefusal('127.0.0.1', reason('127.0.0.1')), 'got "127.0.0.1", expected HOST:PORT, [IPv6]:PORT or an absolute UNIX socket path (no port)');
    assert.equal(listenRefusal('h'.repeat(61), 'no port'), `got "${'h'.repeat(60)}...", expected HOST:PORT, [IPv6]:PORT or an absolute UNIX socket path (no port)`);
  });
});

describe('reachableFromNetwork', () => {
  it('holds for every TCP address but loopback, so that a listener open to the network is warned about', () => {
    const tcp = (host: string): ListenAddress => ({ kind: 'tcp', host, port: 10040 });
    for (const host of ['0.0.0.0', '::', '192.0.2.7', '10.0.0.5', '2001:db8::1', 'fe80::1']) assert.equal(reachableFromNetwork(tcp(host)), true, host);
    for (const host of ['127.0.0.1', '127.1.2.3', '::1', '::ffff:127.0.0.1']) assert.equal(reachableFromNetwork(tcp(host)), false, host);
    assert.equal(reachableFromNetwork({ kind: 'unix', path: '/var/spool/postfix/callout/policy' }), false);
  });
});

describe('listenOn', () => {
  const scratch = mkdtempSync(join(tmpdir(), 'callout-listen-'));
  after(() => rmSync(scratch, { recursive: true, force: true }));

  async function refusal(address: ListenAddress, label: string): Promise<string> {
    const server = net.createServer();
    try {
      await listenOn(server, address, label);
    } catch (err) {
      assert.ok(err instanceof ConfigError, String(err));
      return err.message;
    } finally {
      server.close();
    }
    assert.fail(`listened on ${label}`);
  }

  it('says what is wrong with a socket path: a missing directory, something that is not a socket', async () => {
    assert.match(await refusal({ kind: 'unix', path: join(scratch, 'missing', 'x.sock') }, 'x.sock'), /^cannot listen on x\.sock: .*\(the directory .*missing does not exist\)$/);
    assert.match(await refusal({ kind: 'unix', path: scratch }, 'the dir'), /^cannot listen on the dir: .*\(.* exists and is not a socket\)$/);
  });

  it('an address on no interface yet (at boot) is temporary, exit 75, so that systemd tries again', async () => {
    // 192.0.2.1 (TEST-NET-1) is on no interface here: bind fails with EADDRNOTAVAIL, nothing is sent.
    const server = net.createServer();
    try {
      await assert.rejects(listenOn(server, { kind: 'tcp', host: '192.0.2.1', port: 0 }, '192.0.2.1:0'), (err: unknown) => {
        assert.ok(err instanceof ListenUnavailableError, String(err));
        assert.match(err.message, /^cannot listen on 192\.0\.2\.1:0: .*EADDRNOTAVAIL.*\(not there yet: /);
        assert.equal(exitCodeFor(err), 75);
        return true;
      });
    } finally {
      server.close();
    }
  });

  it('names a port that is taken, and listens where it is free', async () => {
    const holder = net.createServer();
    await listenOn(holder, { kind: 'tcp', host: '127.0.0.1', port: 0 }, 'any port');
    const { port } = holder.address() as net.AddressInfo;
    try {
      assert.match(await refusal({ kind: 'tcp', host: '127.0.0.1', port }, `127.0.0.1:${port}`), new RegExp(`^cannot listen on 127\\.0\\.0\\.1:${port}: .*EADDRINUSE.*\\(another process, or another listener of this one, has the port\\)$`));
    } finally {
      holder.close();
    }
  });
});

describe('listen addresses in linear time', () => {
  it('refuses long crafted texts without a quadratic scan', () => {
    for (const text of [':'.repeat(100_000), `[${':'.repeat(100_000)}]:25`, `${'1.'.repeat(100_000)}:25`, `/${'a/'.repeat(100_000)}`, `127.0.0.1:${'9'.repeat(100_000)}`]) {
      // Generous bound against a quadratic scan, not a speed claim.
      assert.ok(elapsedMs(() => parseListenAddress(text)) < 200, text.slice(0, 10));
      assert.equal(parseListenAddress(text).ok, false);
    }
  });
});

const scratch = mkdtempSync(join(tmpdir(), 'callout-listen-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

describe('removeStaleSocket', () => {
  it('refuses with a configuration error, naming the path, a stale socket it cannot remove', async (t) => {
    const directory = join(scratch, 'locked');
    mkdirSync(directory);
    const path = join(directory, 'policy.sock');
    // A listener that exits without closing leaves its socket file behind.
    assert.equal(spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => process.exit(0))`]).status, 0);
    // An immutable directory: no unlink there, even for root (as a directory of another user is for callout).
    if (spawnSync('chattr', ['+i', directory]).status !== 0) {
      t.skip('chattr +i is not available here (needs root and a file system with the attribute)');
      return;
    }
    try {
      const refused = await removeStaleSocket(path).then(
        () => undefined,
        (err: unknown) => err,
      );
      assert.ok(refused instanceof ConfigError, String(refused));
      assert.equal(exitCodeFor(refused), 78);
      assert.match(refused.message, new RegExp(`cannot listen on ${path}: cannot remove the socket an earlier run left there: .*(EPERM|EACCES)`));
      assert.ok(lstatSync(path).isSocket(), 'lstatSync(path).isSocket()');
    } finally {
      spawnSync('chattr', ['-i', directory]);
    }
  });

  it('leaves a path that is not a socket, and a socket a live server has, in place', async () => {
    const file = join(scratch, 'not-a-socket');
    writeFileSync(file, 'keep me');
    await assert.rejects(removeStaleSocket(file), (err: unknown) => err instanceof ConfigError && /it exists and is not a socket/.test(err.message));
    assert.equal(readFileSync(file, 'utf8'), 'keep me');
    const path = join(scratch, 'live.sock');
    const server = net.createServer();
    await listenOn(server, { kind: 'unix', path }, 'live.sock');
    try {
      await assert.rejects(removeStaleSocket(path), (err: unknown) => err instanceof ConfigError && /another server is listening there/.test(err.message));
      assert.ok(lstatSync(path).isSocket(), 'lstatSync(path).isSocket()');
    } finally {
      server.close();
    }
  });

  it('leaves a socket whose live server is stopped (its backlog full, EAGAIN) in place', async () => {
    const path = join(scratch, 'stopped.sock');
    // A server that stops itself once it listens, with room for one waiting connection.
    const child = spawn(process.execPath, ['-e', `require('net').createServer().listen({ path: ${JSON.stringify(path)}, backlog: 1 }, () => { process.stdout.write('up'); process.kill(process.pid, 'SIGSTOP'); })`], { stdio: ['ignore', 'pipe', 'inherit'] });
    const clients: net.Socket[] = [];
    try {
      await once(child.stdout, 'data');
      let full = false;
      while (!full && clients.length < 20) {
        const client = net.connect(path);
        clients.push(client);
        full = await new Promise<boolean>((resolve) => {
          client.once('connect', () => resolve(false));
          client.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'EAGAIN'));
        });
      }
      assert.ok(full, 'the backlog filled up');
      await assert.rejects(removeStaleSocket(path), (err: unknown) => err instanceof ConfigError && /cannot tell whether the server there is gone/.test(err.message));
      assert.ok(lstatSync(path).isSocket(), 'lstatSync(path).isSocket()');
    } finally {
      for (const client of clients) client.destroy();
      child.kill('SIGKILL');
    }
  });
});

describe('listen address limits and forms', () => {
  it('accepts port 65535 and refuses 65536; writes an IPv6 host in brackets', () => {
    assert.deepEqual(parseListenAddress('127.0.0.1:65535'), { ok: true, value: { kind: 'tcp', host: '127.0.0.1', port: 65535 } });
    assert.deepEqual(parseListenAddress('127.0.0.1:65536'), { ok: false, reason: 'port 65536 is out of range' });
    assert.deepEqual(parseListenAddress('127.0.0.1:123456'), { ok: false, reason: 'port 123456 is out of range' });
    assert.deepEqual(parseListenAddress('127.0.0.1:010040'), { ok: false, reason: 'port 010040 has more than five digits: write it without its leading zeros, 10040' }, 'a port in range with a zero too many is not said to be out of range');
    assert.deepEqual(parseListenAddress(`127.0.0.1:${'0'.repeat(10_000)}25`), { ok: false, reason: `port ${'0'.repeat(20)}... has more than five digits: write it without its leading zeros, 25` }, 'quoted by its start');
    assert.equal(formatListenAddress({ kind: 'tcp', host: '::1', port: 10040 }), '[::1]:10040');
    assert.equal(formatListenAddress({ kind: 'tcp', host: '127.0.0.1', port: 10040 }), '127.0.0.1:10040');
  });

  it('socket modes: 0660 by default, octal of three or four digits, o+w alone opens the socket to every user', () => {
    assert.equal(DEFAULT_SOCKET_MODE, 0o660);
    for (const text of ['660', '0660', '0777']) assert.ok(SOCKET_MODE_TEXT.test(text), text);
    for (const text of ['6', '66', '0880', '06600']) assert.ok(!SOCKET_MODE_TEXT.test(text), text);
    assert.equal(openToAllUsers(0o660), false);
    assert.equal(openToAllUsers(0o664), false, 'o+r alone does not let others connect');
    assert.equal(openToAllUsers(0o662), true);
    assert.equal(openToAllUsers(0o670), false, 'g+w is the group Postfix connects as');
  });
});

describe('listeners compared and named', () => {
  const tcp = (host: string, port: number): ListenAddress => ({ kind: 'tcp', host, port });

  it('0.0.0.0 takes the port of every IPv4 address, whichever of the two is written first', () => {
    assert.equal(sameListener(tcp('0.0.0.0', 10040), tcp('127.0.0.1', 10040)), true, 'the wildcard first');
    assert.equal(sameListener(tcp('127.0.0.1', 10040), tcp('0.0.0.0', 10040)), true, 'the wildcard second');
    assert.equal(sameListener(tcp('::1', 10040), tcp('0.0.0.0', 10040)), false, 'an IPv6 address is not under the IPv4 wildcard');
  });

  it('names a client by address and port, an IPv6 address in brackets, a UNIX socket by its path, and a client gone before it was accepted as unknown', () => {
    assert.equal(remoteEnd({ remoteAddress: '192.0.2.1', remotePort: 4711 }), '192.0.2.1:4711');
    assert.equal(remoteEnd({ remoteAddress: '2001:db8::1', remotePort: 4711 }), '[2001:db8::1]:4711');
    assert.equal(remoteEnd({ remoteAddress: undefined, remotePort: undefined }), 'unknown');
    assert.equal(remoteEnd({ remoteAddress: undefined, remotePort: undefined }, '/run/callout.sock'), 'unix:/run/callout.sock');
  });

  it('says where a server is bound, a UNIX socket by its path, and nothing before it listens', async () => {
    const server = net.createServer();
    assert.equal(boundAddress(server), undefined, 'not listening yet');
    const path = join(scratch, 'bound.sock');
    await listenOn(server, { kind: 'unix', path }, 'bound.sock');
    try {
      assert.deepEqual(boundAddress(server), { kind: 'unix', path });
    } finally {
      server.close();
    }
  });

  it('removes a leftover socket, but never a file of another kind at its path', async () => {
    const path = join(scratch, 'not-a-socket');
    writeFileSync(path, 'data');
    await removeIfSocket(path);
    assert.equal(readFileSync(path, 'utf8'), 'data', 'a regular file stays');
    await removeIfSocket(join(scratch, 'nothing-here'));
    await removeStaleSocket(join(scratch, 'nothing-here'));
    assert.equal(readFileSync(path, 'utf8'), 'data');
  });
});

describe('listenOn socket modes and temporary failures', () => {
  it('leaves no error listener of its own on a server once it listens: a later error is the caller\'s to hear', async () => {
    const server = net.createServer();
    await listenOn(server, { kind: 'tcp', host: '127.0.0.1', port: 0 }, 'any port');
    try {
      assert.equal(server.listenerCount('error'), 0, 'listenOn\'s own handler is gone');
    } finally {
      server.close();
    }
  });

  it('closes the server when the socket cannot be given its mode, so that nothing listens with the umask\'s', async () => {
    let closed = false;
    // Bound, as far as listenOn can tell, at a path with no socket: chmod fails.
    const server = new (class extends net.Server {
      override listen(...args: unknown[]): this {
        process.nextTick(args.at(-1) as () => void);
        return this;
      }
      override close(): this {
        closed = true;
        return this;
      }
    })();
    const path = join(scratch, 'missing', 'policy.sock');
    await assert.rejects(listenOn(server, { kind: 'unix', path }, 'policy.sock', 0o660), (err: unknown) => {
      assert.ok(err instanceof ConfigError, String(err));
      assert.match(err.message, /^cannot listen on policy\.sock: cannot give the socket mode 0660: /);
      return true;
    });
    assert.equal(closed, true, 'the server was closed');
  });

  it('gives a UNIX socket the mode asked for, whatever the umask', async () => {
    const path = join(scratch, 'policy.sock');
    const server = net.createServer();
    const umask = process.umask(0o022);
    try {
      await listenOn(server, { kind: 'unix', path }, 'policy.sock', DEFAULT_SOCKET_MODE);
    } finally {
      process.umask(umask);
    }
    try {
      assert.equal(lstatSync(path).mode & 0o777, 0o660);
    } finally {
      server.close();
    }
  });

  /** The resolver's answer, without asking one: a server whose bind fails as listen() reports a getaddrinfo error. */
  const unresolvable = (code: string) =>
    new (class extends net.Server {
      override listen(): this {
        process.nextTick(() => this.emit('error', Object.assign(new Error(`getaddrinfo ${code} policy.example`), { code })));
        return this;
      }
    })();

  it('a name that cannot be resolved for now (EAI_AGAIN) is temporary, exit 75', async () => {
    await assert.rejects(listenOn(unresolvable('EAI_AGAIN'), { kind: 'tcp', host: 'policy.example', port: 10040 }, 'policy.example:10040'), (err: unknown) => {
      assert.ok(err instanceof ListenUnavailableError, String(err));
      assert.equal(exitCodeFor(err), 75);
      return true;
    });
  });
  it('a name that has no address (ENOTFOUND) is a configuration error that says what to give instead', async () => {
    await assert.rejects(listenOn(unresolvable('ENOTFOUND'), { kind: 'tcp', host: 'policy.example', port: 10040 }, 'policy.example:10040'), (err: unknown) => {
      assert.ok(err instanceof ConfigError, String(err));
      assert.equal(err.message, 'cannot listen on policy.example:10040: getaddrinfo ENOTFOUND policy.example (the host name has no address: give an IP address, or a name in /etc/hosts)');
      return true;
    });
  });
});
