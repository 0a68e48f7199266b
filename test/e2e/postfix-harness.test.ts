/**
 * NAME
 *   test/e2e/postfix-harness - proves the real-Postfix harness behaves like the remote MXes we probe
 *
 * DESCRIPTION
 *   Starts three Postfix instances at once on distinct loopback addresses (same port, so the
 *   master.cf bindings really are separate): real users, a catch-all domain, and one that
 *   refuses the null sender. Drives them with swaks and with a raw socket, then checks that
 *   stopping leaves no Postfix process behind. Nothing is skipped: without Postfix installed the
 *   suite fails and says to run .ci/run.
 */

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { postfixProcesses, startPostfix, stopAllPostfix, swaks, swaksEnvironment, waitForMaillog } from '../support/postfix.js';
import type { PostfixInstance, PostfixInstanceOptions } from '../support/postfix.js';

const PORT = 25250;
const REAL: PostfixInstanceOptions = {
  name: 'real',
  host: '127.0.0.20',
  port: PORT,
  myhostname: 'mx.real.test',
  domains: { 'real.test': ['alice', 'bob'] },
};
const CATCH_ALL: PostfixInstanceOptions = {
  name: 'catch-all',
  host: '127.0.0.21',
  port: PORT,
  myhostname: 'mx.catch-all.test',
  domains: { 'catch-all.test': 'catch-all' },
};
const NO_NULL_SENDER: PostfixInstanceOptions = {
  name: 'no-null-sender',
  host: '127.0.0.22',
  port: PORT,
  myhostname: 'mx.no-null.test',
  domains: { 'no-null.test': ['carol'] },
  refuseNullSender: true,
};

// swaks exit codes: 0 all accepted, 23 MAIL rejected, 24 no RCPT accepted.
const SWAKS_OK = 0;
const SWAKS_MAIL_REJECTED = 23;
const SWAKS_NO_RCPT = 24;

function probe(instance: PostfixInstance, from: string, to: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return swaks(['--server', `${instance.host}:${instance.port}`, '--helo', 'client.test', '--from', from, '--to', to, '--quit-after', 'RCPT', '--timeout', '10']);
}

/** Sends each command and collects each complete (possibly multiline) reply, greeting first. */
function rawDialog(host: string, port: number, commands: string[]): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    const replies: string[] = [];
    let current: string[] = [];
    let buffered = '';
    socket.setEncoding('latin1');
    socket.setTimeout(10_000, () => socket.destroy(new Error(`no reply after ${JSON.stringify(replies)}`)));
    socket.on('data', (chunk: string) => {
      buffered += chunk;
      let end: number;
      while ((end = buffered.indexOf('\r\n')) >= 0) {
        const line = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        current.push(line);
        if (line[3] !== ' ' && line.length > 3) continue;
        replies.push(current.join('\n'));
        current = [];
        const next = commands[replies.length - 1];
        if (next === undefined) socket.end();
        else socket.write(next + '\r\n');
      }
    });
    socket.on('error', reject);
    socket.on('close', () => resolve(replies));
  });
}

describe('Postfix harness (real Postfix on loopback)', () => {
  let real: PostfixInstance;
  let catchAll: PostfixInstance;
  let noNullSender: PostfixInstance;

  before(async () => {
    [real, catchAll, noNullSender] = await Promise.all([startPostfix(REAL), startPostfix(CATCH_ALL), startPostfix(NO_NULL_SENDER)]);
  });

  after(async () => {
    await stopAllPostfix();
  });

  it('runs swaks where perl\'s gethostbyname finds nothing, so swaks sends no DNS query for the machine\'s name', () => {
    const lookup = spawnSync('perl', ['-e', 'print defined(scalar gethostbyname("localhost")) ? "looked up" : "nothing"'], { env: swaksEnvironment(), encoding: 'utf8' });
    assert.equal(lookup.stdout, 'nothing', lookup.stderr);
  });

  it('runs the instances side by side, each with its own processes', async () => {
    const dirs = new Set([real.dir, catchAll.dir, noNullSender.dir]);
    assert.equal(dirs.size, 3);
    for (const instance of [real, catchAll, noNullSender]) {
      assert.ok(postfixProcesses(instance.dir).length > 0, `no process found for ${instance.dir}`);
      // postlogd writes the maillog on its own schedule: the line may follow the 220 greeting.
      assert.match(await waitForMaillog(instance, /daemon started -- version/), /daemon started/);
    }
  });

  it('accepts a real user and postmaster, rejects an unknown user with 550 5.1.1', async () => {
    const alice = await probe(real, 'sender@example.org', 'alice@real.test');
    assert.equal(alice.code, SWAKS_OK, alice.stdout);
    assert.match(alice.stdout, /<- {2}250 2\.1\.5 Ok/);

    const postmaster = await probe(real, 'sender@example.org', 'postmaster@real.test');
    assert.equal(postmaster.code, SWAKS_OK, postmaster.stdout);

    const nobody = await probe(real, 'sender@example.org', 'nobody@real.test');
    assert.equal(nobody.code, SWAKS_NO_RCPT, nobody.stdout);
    assert.match(nobody.stdout, /550 5\.1\.1 <nobody@real\.test>: Recipient address rejected: User unknown in virtual mailbox table/);
  });

  it('answers a callout-style dialog on a raw socket: null sender, then RCPT', async () => {
    const replies = await rawDialog(real.host, real.port, ['EHLO client.test', 'MAIL FROM:<>', 'RCPT TO:<bob@real.test>', 'RCPT TO:<nobody@real.test>', 'QUIT']);
    assert.equal(replies.length, 6, JSON.stringify(replies));
    assert.match(replies[0] ?? '', /^220 mx\.real\.test ESMTP/);
    assert.match(replies[1] ?? '', /^250-mx\.real\.test\n(250-.*\n)*250 /);
    assert.match(replies[2] ?? '', /^250 2\.1\.0 /);
    assert.match(replies[3] ?? '', /^250 2\.1\.5 /);
    assert.match(replies[4] ?? '', /^550 5\.1\.1 <nobody@real\.test>: .*User unknown in virtual mailbox table/);
    assert.match(replies[5] ?? '', /^221 /);
  });

  it('refuses to relay for a domain it does not serve', async () => {
    const replies = await rawDialog(real.host, real.port, ['HELO client.test', 'MAIL FROM:<sender@example.org>', 'RCPT TO:<alice@catch-all.test>', 'QUIT']);
    assert.match(replies[3] ?? '', /^554 5\.7\.1 .*Relay access denied/);
  });

  it('accepts any user of a catch-all domain', async () => {
    for (const user of ['anything', 'no-such-user', 'postmaster']) {
      const result = await probe(catchAll, '<>', `${user}@catch-all.test`);
      assert.equal(result.code, SWAKS_OK, result.stdout);
      assert.match(result.stdout, /250 2\.1\.5 Ok/);
    }
  });

  it('refuses the null sender at MAIL but accepts a non-null sender', async () => {
    const nullSender = await probe(noNullSender, '<>', 'carol@no-null.test');
    assert.equal(nullSender.code, SWAKS_MAIL_REJECTED, nullSender.stdout);
    assert.match(nullSender.stdout, /<\*\* 550 5\.7\.1 <>: Sender address rejected/);

    const someone = await probe(noNullSender, 'sender@example.org', 'carol@no-null.test');
    assert.equal(someone.code, SWAKS_OK, someone.stdout);
  });

  it('stops every instance and leaves no Postfix process behind', async () => {
    const instances = [real, catchAll, noNullSender];
    await stopAllPostfix();
    for (const instance of instances) {
      assert.deepEqual(postfixProcesses(instance.dir), [], `processes left for ${instance.dir}`);
      assert.equal(existsSync(instance.dir), false, `${instance.dir} removed`);
      // The log outlives the directory. Not "stopping the Postfix mail system": postfix-script
      // sends that line to postlogd just before master's SIGTERM, which can end postlogd first.
      assert.match(instance.maillog(), /postfix\/master\[\d+\]: daemon started/);
      const replies = await rawDialog(instance.host, instance.port, []).catch((err: NodeJS.ErrnoException) => err.code);
      assert.equal(replies, 'ECONNREFUSED');
    }
  });
});
