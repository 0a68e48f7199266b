/**
 * NAME
 *   bench/etc-hosts - temporary /etc/hosts entries for the length of a benchmark run
 *
 * DESCRIPTION
 *   The peers connect to MX host *names*, which Node resolves with getaddrinfo, not with the
 *   DNS server the benchmark runs; so the exchanger names must be in /etc/hosts while the peers
 *   run. addHostsEntries() keeps a copy of the file, appends a block between marker lines and
 *   returns remove(), which takes the block out again. remove() also runs on exit, SIGINT,
 *   SIGTERM and SIGHUP, and a block left by a run that was killed hard is removed before a new one is
 *   added. The file is rewritten in place (never renamed over), because in containers
 *   /etc/hosts is often a bind mount that a rename would break.
 *
 * ERRORS
 *   Throws the fs error when /etc/hosts cannot be written (not root); the caller skips the peers.
 */

import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import os, { tmpdir } from 'node:os';
import { join } from 'node:path';

const HOSTS = '/etc/hosts';
const BEGIN = '# callout-bench begin (temporary; removed when the benchmark ends)';
const END = '# callout-bench end';
/** Signals whose default action ends the process without an 'exit' event: a closed terminal (SIGHUP) too. */
const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

function withoutBlock(text: string): string {
  const begin = text.indexOf(BEGIN);
  if (begin === -1) return text;
  const end = text.indexOf(END, begin);
  const after = end === -1 ? text.length : end + END.length + 1;
  return text.slice(0, begin) + text.slice(after);
}

export interface HostsEntries {
  backup: string;
  remove(): void;
}

export function addHostsEntries(lines: string[]): HostsEntries {
  const original = withoutBlock(readFileSync(HOSTS, 'utf8'));
  const backup = join(tmpdir(), 'callout-bench.hosts.bak');
  copyFileSync(HOSTS, backup);
  const separator = original.endsWith('\n') || original === '' ? '' : '\n';
  writeFileSync(HOSTS, `${original}${separator}${BEGIN}\n${lines.join('\n')}\n${END}\n`);
  let removed = false;
  const remove = (): void => {
    if (removed) return;
    removed = true;
    writeFileSync(HOSTS, withoutBlock(readFileSync(HOSTS, 'utf8')));
    process.off('exit', remove);
    for (const signal of SIGNALS) process.off(signal, onSignal);
  };
  const onSignal = (signal: NodeJS.Signals): void => {
    remove();
    process.exit(128 + os.constants.signals[signal]);
  };
  process.on('exit', remove);
  for (const signal of SIGNALS) process.on(signal, onSignal);
  return { backup, remove };
}
