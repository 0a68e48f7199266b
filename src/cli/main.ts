#!/usr/bin/env node
/**
 * NAME
 *   callout - command-line entry point
 *
 * SYNOPSIS
 *   callout verify [options] ADDRESS...      verify addresses by SMTP callout
 *   callout config check FILE                validate a configuration file
 *   callout config print [--config FILE]     show the effective configuration with defaults
 *                                            (secrets as ***, defaults that depend on the
 *                                            host as comments)
 *   callout serve | spf | senderid | greylist | batv | srs | verp | bounce | rewrite
 *                                            registered by cli/serve, cli/spf, cli/greylist
 *                                            and cli/rewrite, whose headers document them
 *
 * DESCRIPTION
 *   Every engine option given as a flag overrides the same key of the configuration file; both
 *   pass through one schema (config/schema), so errors read the same wherever a value came from.
 *   Errors are one line on stderr, never a stack trace.
 *
 *   The commands themselves are cli/program's, loaded after this module has taken SIGHUP
 *   (cli/signals holdStartupReloads): Node takes a few hundred milliseconds to load them, and
 *   a SIGHUP in that time (`kill -HUP` right after `callout serve` was started by hand or by an
 *   init without Type=notify) ended the process. Only Node's own start, some 50 ms, comes
 *   before the handler; a module imported statically here would be loaded before it too.
 *
 * EXIT STATUS
 *   As each command documents; 64 for usage errors, 78 for configuration errors, 75 for a
 *   store or listen address that is not available now (cli/exit-status), 70 for internal
 *   errors, 141 when the reader of standard output went away (as SIGPIPE would).
 */

import { holdStartupReloads } from './signals.js';

holdStartupReloads();
const { main } = await import('./program.js');
await main(process.argv);
