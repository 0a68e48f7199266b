/**
 * NAME
 *   cli/program - the commands of `callout`, which cli/main runs
 *
 * DESCRIPTION
 *   The program cli/main documents (SYNOPSIS, EXIT STATUS): apart from the entry point, so that
 *   cli/main can take SIGHUP before Node loads all of this (cli/signals holdStartupReloads).
 *   `callout serve` takes the SIGHUPs held while the process started (cli/serve); every other
 *   command releases them as its action begins, and the program as it ends when no action ran
 *   (--help, --version, a usage error): one held ends the process as the signal's default
 *   action would have.
 */

import { Command, CommanderError, Help, Option } from 'commander';
import { availableParallelism, hostname } from 'node:os';
import { Document, isMap, isScalar } from 'yaml';
import { ConfigError, describeError } from '../core/errors.js';
import { coalescingDestination, createLogger } from '../core/log.js';
import { loadConfig, mergeConfig, readConfigFile, setIn } from '../config/load.js';
import type { RawConfig } from '../config/load.js';
import { validateConfig } from '../config/schema.js';
import type { Config } from '../config/schema.js';
import { hostHelo } from '../config/fqdn.js';
import { formatDuration } from '../config/duration.js';
import { hideSecrets } from '../config/secrets.js';
import { exitCodeFor } from './exit-status.js';
import { runVerify } from './verify.js';
import { SERVICE_CACHE_DEFAULT, addEngineOptions, engineOverrides, flagOf, numberFlag } from './options.js';
import type { EngineFlags } from './options.js';
import { checkServeConfiguration } from '../policy/daemon.js';
import { registerServeCommand } from './serve.js';
import { releaseStartupReloads, takeStartupReloads, takesReloads } from './signals.js';
import { registerGreylistCommands } from './greylist.js';
import { CALLOUT_VERSION } from '../core/version.js';
import { registerRewriteCommands } from './rewrite.js';
import { registerSenderIdCommand, registerSpfCommand } from './spf.js';

function buildProgram(): Command {
  const program = new Command('callout')
    .description('Sender address verification by SMTP callout, and the checks around it')
    .version(CALLOUT_VERSION)
    .exitOverride()
    .configureOutput({ outputError: (text, write) => write(text) })
    .configureHelp({ optionDescription: withoutEmptyListDefault });

  addEngineOptions(
    program
      .command('verify')
      .description('verify addresses by SMTP callout and print one verdict per address')
      .argument('[addresses...]', 'addresses to verify')
      .option('--json', 'print JSON Lines: one object per address with the evidence')
      .option('--file <list>', 'verify the addresses in a file (one per line, or CSV)')
      .addOption(new Option('--concurrency <n>', 'domains verified at once (limits.listConcurrency, default 8)')),
    'in memory, or the configuration file\'s store',
  ).action(async (addresses: string[], flags: EngineFlags & { json?: boolean; file?: string; concurrency?: string }) => {
    const overrides = engineOverrides(flags);
    if (flags.concurrency !== undefined) overrides.limits = { listConcurrency: numberFlag('--concurrency', flags.concurrency) };
    // A one-off run keeps its cache in memory unless --cache or the file says otherwise.
    const config = loadConfig(flags.config, overrides, { store: { kind: 'memory' } }, { flagOf });
    process.exitCode = await runVerify(addresses, {
      json: flags.json === true,
      ...(flags.file !== undefined ? { file: flags.file } : {}),
      concurrency: config.limits.listConcurrency,
    }, config);
  });

  registerServeCommand(program);
  registerSpfCommand(program);
  registerSenderIdCommand(program);
  registerGreylistCommands(program);
  registerRewriteCommands(program);

  const config = program.command('config').description('check or show the configuration');
  config
    .command('check')
    .description('validate a configuration file as `callout serve -c FILE` would start with it; prints "ok" or the problems')
    .argument('<file>')
    .action(async (file: string) => {
      const settings = readConfigFile(file);
      const config = validateConfig(settings, file);
      // serve starts on such a file (the defaults), but a reload refuses it (an editor mid-write).
      if (Object.keys(settings).length === 0) process.stderr.write(`${file}: holds no settings: serve starts with the defaults, and a reload (SIGHUP) refuses it\n`);
      try {
        // Its warnings (callouts off for want of a host name, an obsolete key) go to stderr, as serve logs them.
        await checkServeConfiguration(config, createLogger('warn', coalescingDestination(2)));
      } catch (err) {
        throw err instanceof ConfigError ? new ConfigError(`${file}: ${err.message}`, { cause: err }) : err;
      }
      process.stdout.write(`${file}: ok\n`);
    });
  addEngineOptions(
    config.command('print').description('print the effective configuration (file, flags and defaults) as YAML, the defaults that depend on this host as comments'),
    SERVICE_CACHE_DEFAULT,
  ).action((flags: EngineFlags) => {
    const overrides = engineOverrides(flags);
    const effective = loadConfig(flags.config, overrides, {}, { flagOf });
    // Read once more for the keys it sets itself: loadConfig gives only the result with the defaults.
    const given = mergeConfig(flags.config ? readConfigFile(flags.config) : {}, overrides);
    process.stdout.write(printedConfig(effective, given));
  });
  return program;
}

/**
 * A flag's help, inherited by every subcommand, without the empty list a repeatable flag starts
 * from: commander wrote "(default: [])" after the flag's own words, which say what its absence
 * means ("default: the system resolver").
 */
function withoutEmptyListDefault(this: Help, option: Option): string {
  const empty = Array.isArray(option.defaultValue) && option.defaultValue.length === 0;
  return Help.prototype.optionDescription.call(this, empty ? Object.assign(Object.create(option) as Option, { defaultValue: undefined }) : option);
}

/** The stage option whose default is this host's name (stages/authserv-id-option). */
const HOST_NAMED_STAGE_OPTION = 'authservId';

/**
 * The effective configuration as YAML, except that a default which depends on the host
 * (callout.helo and a stage's authservId, its name; policy.idlePollMicros, its CPUs) is a
 * comment, unless the file or a flag sets it: printed as a value, a file printed on one host
 * and copied to the others gave each of them the first one's name as its EHLO name and
 * authserv-id. Read back on this host, the file still gives the same configuration.
 */
function printedConfig(effective: Config, given: RawConfig): string {
  const doc = new Document(JSON.parse(JSON.stringify(effective, printable)));
  const asDefault = (key: string, shown: string, why: string) => {
    if (setIn(given, key)) return;
    const path = key.split('.');
    const name = path.at(-1)!;
    const map = doc.getIn(path.slice(0, -1), true);
    if (!isMap(map)) return;
    // Where the key stands (a default left unset, such as callout.helo, stands first).
    const at = Math.max(0, map.items.findIndex((pair) => isScalar(pair.key) && pair.key.value === name));
    map.delete(name);
    const line = ` ${name}: ${shown} (default on this host: ${why})`;
    const next = map.items[at]?.key;
    if (isScalar(next)) next.commentBefore = [line, next.commentBefore].filter(Boolean).join('\n');
    else map.comment = [map.comment, line].filter(Boolean).join('\n');
  };
  const helo = hostHelo();
  asDefault('callout.helo', helo ?? 'none', helo ? 'its name' : `its name, ${hostname()}, is not fully qualified, so callouts are off`);
  const cpus = availableParallelism();
  asDefault('policy.idlePollMicros', String(effective.policy.idlePollMicros), `it has ${cpus} CPU${cpus === 1 ? '' : 's'}`);
  effective.policy.stages.forEach((stage, index) => {
    const value = stage[HOST_NAMED_STAGE_OPTION];
    if (typeof value === 'string') asDefault(`policy.stages.${index}.${HOST_NAMED_STAGE_OPTION}`, value, 'its name');
  });
  return doc.toString();
}

/**
 * Secrets as `***`: the output is pasted into tickets and mails, and an operator allowed to run
 * the command need not be one allowed to read the secrets (a BATV stage's `secret`, a password in
 * `store.url`). Durations are stored in milliseconds; they are shown as written in the file.
 */
function printable(this: unknown, key: string, value: unknown): unknown {
  const shown = hideSecrets(key, value);
  if (shown !== value) return shown;
  const durationKeys = /(?:^(?:connect|greeting|command|rcpt|tls|overall|tempfail)|[Tt]imeout|[Tt]tl|Positive|Negative|Refresh|Retry|[Dd]elay|[Ww]indow|[Aa]ge|Time|Interval|[Ss]leep)$/;
  return typeof value === 'number' && durationKeys.test(key) ? formatDuration(value) : value;
}

/** 128 + SIGPIPE: the status a shell sees from a C tool whose reader went away. */
const EXIT_BROKEN_PIPE = 141;

export async function main(argv: string[]): Promise<void> {
  // A reader that stops early (`callout verify --file LIST | head`) closes the pipe, and the next
  // write fails with EPIPE on stdout, where nothing listened: Node printed a stack trace. End as
  // a tool stopped by SIGPIPE does, quietly; any other failure of stdout (EIO) in one line.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') process.stderr.write(`callout: standard output: ${describeError(err)}\n`);
    process.exit(err.code === 'EPIPE' ? EXIT_BROKEN_PIPE : exitCodeFor(err));
  });
  const program = buildProgram();
  let running: Command | undefined;
  program.hook('preAction', (_program, command) => {
    running = command;
    if (!takesReloads(command)) releaseStartupReloads();
  });
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = exitCodeFor(err);
      return;
    }
    process.stderr.write(`callout: ${describeError(err)}\n`);
    process.exitCode = exitCodeFor(err);
  } finally {
    // Still held: no action ran (--help, a usage error), or one that takes SIGHUP failed before
    // it took them (serve on a bad configuration), whose exit status they must not replace.
    if (running !== undefined) takeStartupReloads();
    else releaseStartupReloads();
  }
}
