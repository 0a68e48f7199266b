#!/usr/bin/env node
/**
 * NAME
 *   callout - command-line entry point
 *
 * SYNOPSIS
 *   callout verify [options] ADDRESS...      verify addresses by SMTP callout
 *   callout config check FILE                validate a configuration file
 *   callout config print [--config FILE]     show the effective configuration with defaults
 *
 * DESCRIPTION
 *   Every engine option given as a flag overrides the same key of the configuration file; both
 *   pass through one schema (config/schema), so errors read the same wherever a value came from.
 *   Errors are one line on stderr, never a stack trace.
 *
 * EXIT STATUS
 *   As each command documents; 64 for usage errors, 78 for configuration errors, 70 for
 *   internal errors.
 */

import { Command, CommanderError, Option } from 'commander';
import { stringify } from 'yaml';
import { CalloutError, describeError } from '../core/errors.js';
import { loadConfig, readConfigFile } from '../config/load.js';
import type { RawConfig } from '../config/load.js';
import { validateConfig } from '../config/schema.js';
import { formatDuration } from '../config/duration.js';
import { runVerify } from './verify.js';

const collect = (value: string, previous: string[]) => [...previous, value];

interface EngineFlags {
  config?: string;
  dnsServer: string[];
  helo?: string;
  sender?: string;
  timeout?: string;
  allowTarget: string[];
  port?: string;
  cache?: string;
}

function addEngineOptions(command: Command): Command {
  return command
    .option('-c, --config <file>', 'configuration file (YAML)')
    .option('--dns-server <host[:port]>', 'DNS server to query (repeatable; default: the system resolver)', collect, [])
    .option('--helo <name>', 'EHLO name: this host\'s fully qualified name')
    .option('--sender <address>', 'MAIL FROM for probes (default: the null sender <>)')
    .option('--timeout <seconds>', 'overall time limit of one verification')
    .option('--allow-target <cidr>', 'allow probing exchangers in this private/loopback range (repeatable)', collect, [])
    .option('--port <n>', 'SMTP port of the exchangers (default 25)')
    .option('--cache <file>', 'SQLite file for the verification cache (default: in memory)');
}

/** Flags in the nested shape of the configuration file, so the schema validates both alike. */
function engineOverrides(flags: EngineFlags): RawConfig {
  const callout: RawConfig = {};
  if (flags.helo !== undefined) callout.helo = flags.helo;
  if (flags.sender !== undefined) callout.sender = flags.sender === '<>' ? '' : flags.sender;
  if (flags.allowTarget.length > 0) callout.allowTargets = flags.allowTarget;
  if (flags.port !== undefined) callout.port = numberFlag('--port', flags.port);
  if (flags.timeout !== undefined) callout.timeouts = { overall: numberFlag('--timeout', flags.timeout) };
  const overrides: RawConfig = { callout };
  if (flags.dnsServer.length > 0) overrides.dns = { servers: flags.dnsServer };
  if (flags.cache !== undefined) overrides.store = { kind: 'sqlite', path: flags.cache };
  return overrides;
}

function numberFlag(name: string, value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new CalloutError('USAGE', `${name}: got "${value}", expected a number`);
  return n;
}

export function buildProgram(): Command {
  const program = new Command('callout')
    .description('Sender address verification by SMTP callout, and the checks around it')
    .version('0.1.0')
    .exitOverride()
    .configureOutput({ outputError: (text, write) => write(text) });

  addEngineOptions(
    program
      .command('verify')
      .description('verify addresses by SMTP callout and print one verdict per address')
      .argument('[addresses...]', 'addresses to verify')
      .option('--json', 'print JSON Lines: one object per address with the evidence')
      .option('--file <list>', 'verify the addresses in a file (one per line, or CSV)')
      .addOption(new Option('--concurrency <n>', 'domains verified at once').default('8')),
  ).action(async (addresses: string[], flags: EngineFlags & { json?: boolean; file?: string; concurrency: string }) => {
    const config = loadConfig(flags.config, engineOverrides(flags));
    process.exitCode = await runVerify(addresses, {
      json: flags.json === true,
      ...(flags.file ? { file: flags.file } : {}),
      concurrency: Math.max(1, numberFlag('--concurrency', flags.concurrency)),
    }, config);
  });

  const config = program.command('config').description('check or show the configuration');
  config
    .command('check')
    .description('validate a configuration file; prints "ok" or every problem')
    .argument('<file>')
    .action((file: string) => {
      validateConfig(readConfigFile(file), file);
      process.stdout.write(`${file}: ok\n`);
    });
  addEngineOptions(
    config.command('print').description('print the effective configuration (file, flags and defaults) as YAML'),
  ).action((flags: EngineFlags) => {
    const effective = loadConfig(flags.config, engineOverrides(flags));
    process.stdout.write(stringify(JSON.parse(JSON.stringify(effective, durationsAsText))));
  });
  return program;
}

/** Durations are stored in milliseconds; show them as written in the file. */
function durationsAsText(this: unknown, key: string, value: unknown): unknown {
  const durationKeys = /^(timeout|minTtl|maxTtl|negativeTtl|connect|greeting|command|rcpt|tls|overall|address\w*|domain\w*|tempfail|greylistRetry)$/;
  return typeof value === 'number' && durationKeys.test(key) ? formatDuration(value) : value;
}

export function exitCodeFor(err: unknown): number {
  if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 64;
  if (err instanceof CalloutError) return err.code === 'USAGE' ? 64 : err.code === 'CONFIG_INVALID' ? 78 : 70;
  return 70;
}

async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = exitCodeFor(err);
      return;
    }
    process.stderr.write(`callout: ${describeError(err)}\n`);
    process.exitCode = exitCodeFor(err);
  }
}

await main(process.argv);
