/**
 * NAME
 *   test/support/postfix - real, self-contained Postfix instances on loopback for end-to-end tests
 *
 * DESCRIPTION
 *   startPostfix(options) writes a complete Postfix configuration into a fresh temporary
 *   directory (DIR/etc, DIR/queue, DIR/data, DIR/maillog), starts it with `postfix -c DIR/etc
 *   start` and resolves once the SMTP port answers with a 220 greeting. The instance behaves like
 *   a remote MX: it accepts mail only for its virtual domains (real users from a texthash map,
 *   or a catch-all `@domain` entry; postmaster is always a user), rejects unknown users at RCPT
 *   with `550 5.1.1 ... User unknown in virtual mailbox table`, refuses relaying, can refuse the
 *   null sender at MAIL (`smtpd_delay_reject = no`, so the sender check is not postponed to RCPT)
 *   and can consult a policy service after reject_unauth_destination. Accepted mail goes to
 *   `discard:`, and everything outbound to `error:`, so nothing ever leaves the machine.
 *
 *   Several instances run at once because each has its own queue_directory (and so its own
 *   process_id_directory and public/private sockets), data_directory (master.lock) and
 *   maillog_file, and binds only the HOST:PORT of its one smtpd line in master.cf.
 *   `inet_interfaces` stays 127.0.0.1 because Postfix refuses an address that is not configured
 *   on an interface, while Linux answers on all of 127.0.0.0/8.
 *
 *   stop() stops one instance and waits until none of its processes is left; stopAllPostfix()
 *   stops every instance this process started (for `after` hooks), and an exit hook
 *   (test/support/exit-hooks, which SIGTERM and SIGINT run too) kills whatever is still running,
 *   so a crashed or timed-out test run does not leave a master holding its port.
 *   postfixProcesses(dir) lists an instance's live processes: Postfix's argv never names its
 *   configuration, so `pgrep -f DIR` finds nothing; every Postfix process instead has its queue
 *   directory as working directory and MAIL_CONFIG in its environment.
 *
 * LIMITS
 *   Needs root, the postfix package (user postfix, groups postfix and postdrop) and Linux /proc.
 *   Loopback IPv4 only. The first start of a fresh queue takes a few seconds (Postfix creates the
 *   queue tree). Zombies count as gone: this machine's init reaps orphans only now and then.
 *
 * ERRORS
 *   Throws Error (a test fault, not a callout outcome) naming what is missing or what failed,
 *   with the tail of the instance's maillog.
 */

import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { onExit } from './exit-hooks.js';

export interface PostfixInstanceOptions {
  /** Short label used in the temporary directory name and in errors. */
  name: string;
  /** Loopback address the smtpd listens on, e.g. 127.0.0.20. */
  host: string;
  port: number;
  myhostname: string;
  /** Virtual mailbox domains: their users (postmaster is added), or 'catch-all' for any user. */
  domains: Record<string, string[] | 'catch-all'>;
  /** Reject MAIL FROM:<> with 550 5.7.1. */
  refuseNullSender?: boolean;
  /** A Postfix policy endpoint such as 'inet:127.0.0.1:10040', asked at RCPT. */
  policyService?: string;
  /** main.cf settings that override the defaults written here. */
  extraMain?: Record<string, string>;
}

export interface PostfixInstance {
  dir: string;
  host: string;
  port: number;
  /** The instance's log so far (kept after stop, when the directory is gone). */
  maillog(): string;
  stop(): Promise<void>;
}

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

const INSTALL_HINT = 'run .ci/run as root to install postfix, swaks and redis-server';
const GREETING_WAIT_MS = 20_000;
const STOP_WAIT_MS = 10_000;
const KILL_WAIT_MS = 3_000;
const POLL_MS = 100;
const MAILLOG_TAIL_LINES = 30;
/** What run() reports when the command does not exist, as a shell would. */
const COMMAND_NOT_FOUND = 127;

const running = new Set<RunningInstance>();

interface RunningInstance {
  stop(): Promise<void>;
  /** For the exit hook, where nothing asynchronous runs any more. */
  stopSync(): void;
}

/** Starts a Postfix instance and resolves when its SMTP port greets with 220. */
export async function startPostfix(options: PostfixInstanceOptions): Promise<PostfixInstance> {
  validateOptions(options);
  await checkPrerequisites();
  await assertPortFree(options);

  const dir = mkdtempSync(join(tmpdir(), `callout-postfix-${options.name}-`));
  // Postfix daemons reach data_directory by absolute path after dropping root, so the path
  // must be traversable for the postfix user; mkdtemp makes it 0700.
  chmodSync(dir, 0o755);
  const configDir = join(dir, 'etc');
  mkdirSync(configDir, { mode: 0o755 });
  // Postfix creates the queue tree below queue_directory, but not queue_directory itself.
  mkdirSync(join(dir, 'queue'), { mode: 0o755 });
  writeConfiguration(dir, options);

  const maillogPath = join(dir, 'maillog');
  let finalMaillog: string | undefined;
  const maillog = (): string => finalMaillog ?? readIfExists(maillogPath);
  const describe = `Postfix instance "${options.name}" (${options.host}:${options.port}, ${dir})`;

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      await run('postfix', ['-c', configDir, 'stop']);
      const left = await waitForNoProcesses(dir, STOP_WAIT_MS);
      if (left.length > 0) {
        killAll(left);
        const survivors = await waitForNoProcesses(dir, KILL_WAIT_MS);
        if (survivors.length > 0) {
          throw new Error(`${describe}: processes ${survivors.join(', ')} survived SIGKILL`);
        }
      }
      running.delete(entry);
      finalMaillog = readIfExists(maillogPath);
      rmSync(dir, { recursive: true, force: true });
    })();
    return stopping;
  };
  const entry: RunningInstance = { stop, stopSync: () => killInstanceSync(dir) };
  running.add(entry);

  const started = await run('postfix', ['-c', configDir, 'start']);
  if (started.code !== 0) {
    const log = tail(maillog());
    const check = await explainCheckFailure(configDir);
    await stop().catch(() => undefined);
    throw new Error(`${describe}: "postfix start" exited ${started.code}: ${started.stdout}${started.stderr}\npostfix check: ${check}\nmaillog:\n${log}`);
  }
  const greeted = await waitForGreeting(options.host, options.port, GREETING_WAIT_MS);
  if (!greeted.ok) {
    const log = tail(maillog());
    await stop().catch(() => undefined);
    throw new Error(`${describe}: no 220 greeting within ${GREETING_WAIT_MS} ms (${greeted.reason})\nmaillog:\n${log}`);
  }
  return { dir, host: options.host, port: options.port, maillog, stop };
}

/** Stops every instance this process started; for test teardown. */
export async function stopAllPostfix(): Promise<void> {
  const instances = [...running];
  const results = await Promise.allSettled(instances.map((instance) => instance.stop()));
  const failures = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failures.length > 0) throw new Error(failures.map((f) => String(f.reason)).join('\n'));
}

/** Live (non-zombie) processes belonging to the instance in `dir`. */
export function postfixProcesses(dir: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    if (belongsTo(name, dir)) pids.push(Number(name));
  }
  return pids;
}

/**
 * The environment swaks runs in: perl loads test/support/perl/CalloutNoHostLookup.pm, so that
 * swaks does not look the machine's name up in DNS (see there).
 */
export function swaksEnvironment(): NodeJS.ProcessEnv {
  const prepend = (value: string, existing: string | undefined, separator: string): string => (existing ? `${value}${separator}${existing}` : value);
  return {
    ...process.env,
    PERL5LIB: prepend(fileURLToPath(new URL('./perl', import.meta.url)), process.env.PERL5LIB, ':'),
    PERL5OPT: prepend('-MCalloutNoHostLookup', process.env.PERL5OPT, ' '),
  };
}

/** Runs swaks with stdin on /dev/null (swaks prompts for anything it is missing). */
export async function swaks(args: string[]): Promise<CommandResult> {
  const result = await run('swaks', args, 60_000, swaksEnvironment());
  if (result.code === COMMAND_NOT_FOUND) throw new Error(`swaks is not installed (${INSTALL_HINT})`);
  return result;
}

const MAILLOG_WAIT_MS = 10_000;

/** Postfix logs after swaks has its reply: polls the instance's maillog for pattern; the text it matched. */
export async function waitForMaillog(instance: PostfixInstance, pattern: RegExp): Promise<string> {
  const deadline = Date.now() + MAILLOG_WAIT_MS;
  for (;;) {
    const found = pattern.exec(instance.maillog());
    if (found) return found[0];
    if (Date.now() > deadline) throw new Error(`maillog has no ${pattern} within ${MAILLOG_WAIT_MS} ms:\n${instance.maillog()}`);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

/** swaks's exit codes: all recipients accepted, none accepted. */
export const SWAKS_OK = 0;
export const SWAKS_NO_RCPT = 24;

/** The replies to the RCPT TO commands of a swaks transcript (`<-` accepted, `<**` refused), in order, without the arrows. */
export function rcptReplies(transcript: string): string[] {
  const lines = transcript.split('\n');
  const replies: string[] = [];
  lines.forEach((line, index) => {
    if (!/^\s*-> RCPT TO:/.test(line)) return;
    const reply = lines.slice(index + 1).find((l) => /^\s*<(\*\*)?-?\s+\d{3}[ -]/.test(l));
    if (reply) replies.push(reply.replace(/^\s*<(\*\*)?-?\s+/, '').trim());
  });
  return replies;
}

/**
 * One message to one recipient through swaks, as a client at 127.0.0.1 says HELO
 * client.sender.test; with data it is sent whole (a Subject header), else swaks quits after RCPT.
 */
export async function sendMail(receiver: PostfixInstance, from: string, to: string, options: { data?: boolean } = {}): Promise<{ code: number; rcpt: string; transcript: string }> {
  const result = await swaks([
    '--server', `${receiver.host}:${receiver.port}`,
    '--helo', 'client.sender.test',
    '--from', from,
    '--to', to,
    '--timeout', '30',
    ...(options.data ? ['--header', 'Subject: callout e2e'] : ['--quit-after', 'RCPT']),
  ]);
  const transcript = result.stdout + result.stderr;
  const [rcpt] = rcptReplies(transcript);
  if (rcpt === undefined) throw new Error(`no reply to RCPT in:\n${transcript}`);
  return { code: result.code, rcpt, transcript };
}

function validateOptions(options: PostfixInstanceOptions): void {
  const fault = (what: string): never => {
    throw new Error(`startPostfix(${JSON.stringify(options.name)}): ${what}`);
  };
  if (!/^[A-Za-z0-9_-]{1,40}$/.test(options.name)) fault('name must be 1-40 letters, digits, - or _');
  if (!net.isIPv4(options.host) || !options.host.startsWith('127.')) fault(`host ${options.host} is not in 127.0.0.0/8`);
  if (!Number.isInteger(options.port) || options.port < 1 || options.port > 65535) fault(`port ${options.port} is invalid`);
  if (!isHostname(options.myhostname)) fault(`myhostname ${options.myhostname} is not a hostname`);
  const domains = Object.entries(options.domains);
  if (domains.length === 0) fault('at least one domain is needed');
  for (const [domain, users] of domains) {
    if (!isHostname(domain)) fault(`domain ${domain} is not a domain name`);
    if (users === 'catch-all') continue;
    for (const user of users) if (!/^[^\s@<>]+$/.test(user)) fault(`user ${JSON.stringify(user)} is not a plain local part`);
  }
  for (const [key, value] of Object.entries(options.extraMain ?? {})) {
    if (!/^[a-z0-9_]+$/.test(key) || /[\r\n]/.test(value)) fault(`extraMain ${key} is not a one-line main.cf setting`);
  }
}

function isHostname(name: string): boolean {
  return /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$/.test(name);
}

async function checkPrerequisites(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error(`Postfix test instances need root (${INSTALL_HINT})`);
  const version = await run('postconf', ['-d', '-h', 'mail_version']);
  if (version.code === COMMAND_NOT_FOUND) throw new Error(`postfix is not installed (${INSTALL_HINT})`);
  if (version.code !== 0) throw new Error(`postfix is broken: postconf says ${version.stderr.trim()} (${INSTALL_HINT})`);
  const missing: string[] = [];
  if ((await run('getent', ['passwd', 'postfix'])).code !== 0) missing.push('user postfix');
  for (const group of ['postfix', 'postdrop']) {
    if ((await run('getent', ['group', group])).code !== 0) missing.push(`group ${group}`);
  }
  if (missing.length > 0) throw new Error(`postfix ${version.stdout.trim()} is present but ${missing.join(', ')} missing (${INSTALL_HINT})`);
}

/** A leftover instance on the same address would greet in place of the new one. */
async function assertPortFree(options: PostfixInstanceOptions): Promise<void> {
  const probe = await readFirstLine(options.host, options.port, 2_000);
  if (probe.kind !== 'refused') {
    throw new Error(`startPostfix(${options.name}): ${options.host}:${options.port} is already in use (${probe.kind === 'line' ? probe.line : probe.reason}); a leftover instance?`);
  }
}

function writeConfiguration(dir: string, options: PostfixInstanceOptions): void {
  const configDir = join(dir, 'etc');
  const mailboxMap = join(configDir, 'virtual_mailbox');
  const senderAccess = join(configDir, 'sender_access');
  const outboundRefused = 'error:5.7.1 outbound mail is disabled in tests';
  const main: Record<string, string> = {
    compatibility_level: '3.6',
    queue_directory: join(dir, 'queue'),
    data_directory: join(dir, 'data'),
    process_id_directory: 'pid',
    maillog_file: join(dir, 'maillog'),
    maillog_file_prefixes: dir,
    myhostname: options.myhostname,
    mydestination: '',
    inet_interfaces: '127.0.0.1',
    inet_protocols: 'ipv4',
    mynetworks: '127.0.0.0/8',
    relayhost: '',
    // The default alias_maps names nis:, which warns on every smtpd start.
    alias_maps: '',
    alias_database: '',
    smtpd_peername_lookup: 'no',
    smtp_dns_support_level: 'disabled',
    default_transport: outboundRefused,
    relay_transport: outboundRefused,
    local_transport: 'discard:',
    virtual_transport: 'discard:',
    virtual_mailbox_domains: Object.keys(options.domains).join(', '),
    virtual_mailbox_maps: `texthash:${mailboxMap}`,
    smtpd_delay_reject: 'no',
    smtpd_relay_restrictions: 'reject_unauth_destination',
    smtpd_recipient_restrictions: ['reject_unauth_destination', ...(options.policyService ? [`check_policy_service ${options.policyService}`] : [])].join(', '),
    smtpd_sender_restrictions: options.refuseNullSender ? `check_sender_access texthash:${senderAccess}` : '',
    ...options.extraMain,
  };
  writeFileSync(join(configDir, 'main.cf'), Object.entries(main).map(([k, v]) => `${k} = ${v}`.trimEnd() + '\n').join(''));
  writeFileSync(join(configDir, 'master.cf'), masterCf(options));
  writeFileSync(mailboxMap, mailboxEntries(options.domains).map((line) => line + '\n').join(''));
  if (options.refuseNullSender) writeFileSync(senderAccess, '<> 550 5.7.1 null sender refused\n');
}

function mailboxEntries(domains: PostfixInstanceOptions['domains']): string[] {
  const entries: string[] = [];
  for (const [domain, users] of Object.entries(domains)) {
    if (users === 'catch-all') {
      entries.push(`@${domain} ${domain}/`);
      continue;
    }
    const withPostmaster = new Set([...users, 'postmaster']);
    for (const user of withPostmaster) entries.push(`${user}@${domain} ${domain}/${user}/`);
  }
  return entries;
}

/** Only the services a receiving MX needs, all without chroot; no default `smtp inet` on :25. */
function masterCf(options: PostfixInstanceOptions): string {
  const services = [
    `${options.host}:${options.port} inet n - n - - smtpd`,
    'pickup unix n - n 60 1 pickup',
    'cleanup unix n - n - 0 cleanup',
    'qmgr unix n - n 300 1 qmgr',
    'rewrite unix - - n - - trivial-rewrite',
    'bounce unix - - n - 0 bounce',
    'defer unix - - n - 0 bounce',
    'trace unix - - n - 0 bounce',
    'verify unix - - n - 1 verify',
    'flush unix n - n 1000? 0 flush',
    'proxymap unix - - n - - proxymap',
    'proxywrite unix - - n - 1 proxymap',
    'smtp unix - - n - - smtp',
    'relay unix - - n - - smtp',
    'showq unix n - n - - showq',
    'error unix - - n - - error',
    'retry unix - - n - - error',
    'discard unix - - n - - discard',
    'local unix - n n - - local',
    'virtual unix - n n - - virtual',
    'lmtp unix - - n - - lmtp',
    'anvil unix - - n - 1 anvil',
    'scache unix - - n - 1 scache',
    // No syslog here: postlogd writes maillog_file.
    'postlog unix-dgram n - n - 1 postlogd',
  ];
  return services.map((line) => line + '\n').join('');
}

/**
 * Postfix prints why `check` or `start` failed only when stderr is a terminal, and some faults
 * (an unknown mail_owner) come before any logging, so the check is rerun under script(1).
 */
async function explainCheckFailure(configDir: string): Promise<string> {
  const quoted = `'${configDir.replaceAll("'", `'\\''`)}'`;
  const check = await run('script', ['-qec', `postfix -c ${quoted} check`, '/dev/null']);
  return (check.stdout + check.stderr).replaceAll('\r', '').trim() || `no output (exit ${check.code})`;
}

type FirstLine = { kind: 'line'; line: string } | { kind: 'refused' } | { kind: 'failed'; reason: string };

/** Connects, reads the first reply line, says QUIT. */
function readFirstLine(host: string, port: number, timeoutMs: number): Promise<FirstLine> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    let buffered = '';
    let settled = false;
    const finish = (result: FirstLine): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.removeAllListeners('data');
      if (result.kind === 'line' && !socket.destroyed) socket.end('QUIT\r\n');
      else socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => finish({ kind: 'failed', reason: `no reply within ${timeoutMs} ms` }), timeoutMs);
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      buffered += chunk;
      const end = buffered.indexOf('\n');
      if (end >= 0) finish({ kind: 'line', line: buffered.slice(0, end).trimEnd() });
      else if (buffered.length > 4096) finish({ kind: 'failed', reason: 'over-long first line' });
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      finish(err.code === 'ECONNREFUSED' ? { kind: 'refused' } : { kind: 'failed', reason: err.message });
    });
    socket.on('close', () => finish({ kind: 'failed', reason: `connection closed after ${JSON.stringify(buffered)}` }));
  });
}

async function waitForGreeting(host: string, port: number, waitMs: number): Promise<{ ok: true } | { ok: false; reason: string }> {
  const deadline = Date.now() + waitMs;
  let last = 'nothing tried';
  while (Date.now() < deadline) {
    const probe = await readFirstLine(host, port, Math.max(POLL_MS, deadline - Date.now()));
    if (probe.kind === 'line' && /^220[ -]/.test(probe.line)) return { ok: true };
    last = probe.kind === 'line' ? `greeting ${probe.line}` : probe.kind === 'refused' ? 'connection refused' : probe.reason;
    await sleep(POLL_MS);
  }
  return { ok: false, reason: `last attempt: ${last}` };
}

function belongsTo(pid: string, dir: string): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // The state follows the parenthesised command name, which may itself contain ') '.
    if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z') return false;
    const cwd = readlinkSync(`/proc/${pid}/cwd`);
    if (cwd === dir || cwd.startsWith(dir + '/')) return true;
    return readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').includes(`MAIL_CONFIG=${join(dir, 'etc')}`);
  } catch {
    return false; // exited meanwhile, or a kernel thread without cwd
  }
}

async function waitForNoProcesses(dir: string, waitMs: number): Promise<number[]> {
  const deadline = Date.now() + waitMs;
  let left = postfixProcesses(dir);
  while (left.length > 0 && Date.now() < deadline) {
    await sleep(POLL_MS);
    left = postfixProcesses(dir);
  }
  return left;
}

function killAll(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

function killInstanceSync(dir: string): void {
  spawnSync('postfix', ['-c', join(dir, 'etc'), 'stop'], { stdio: 'ignore', timeout: 5_000 });
  killAll(postfixProcesses(dir));
  rmSync(dir, { recursive: true, force: true });
}

onExit(() => {
  for (const instance of running) instance.stopSync();
});

function run(command: string, args: string[], timeoutMs = 30_000, env: NodeJS.ProcessEnv = process.env): Promise<CommandResult> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs, env });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', (err: NodeJS.ErrnoException) => {
      resolve({ code: err.code === 'ENOENT' ? COMMAND_NOT_FOUND : 1, stdout, stderr: stderr + err.message });
    });
    child.on('close', (code, signal) => {
      resolve({ code: code ?? 128, stdout, stderr: signal ? `${stderr}killed by ${signal}\n` : stderr });
    });
  });
}

function readIfExists(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

function tail(text: string): string {
  return text.trimEnd().split('\n').slice(-MAILLOG_TAIL_LINES).join('\n');
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
