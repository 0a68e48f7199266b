/**
 * NAME
 *   test/verify/fixture - a world of loopback DNS and SMTP servers for engine tests
 *
 * DESCRIPTION
 *   world() starts the in-process DNS server with the zone given and SMTP test servers on
 *   127.0.0.x (all on one port, as the engine uses one port for every exchanger), and builds
 *   engines over the real node:dns resolver with a ManualClock, so tests move time (and, given
 *   ManualTimers, the monotonic time of deadlines and lock waits).
 */

import { after } from 'node:test';
import { type Timers } from '../../src/core/clock.js';
import { ManualClock } from '../support/manual-time.js';
import { validateConfig } from '../../src/config/schema.js';
import type { Config } from '../../src/config/schema.js';
import { createNodeResolver } from '../../src/dns/node-resolver.js';
import { CachingResolver } from '../../src/dns/cache.js';
import { MemoryStore } from '../../src/store/memory.js';
import type { Store } from '../../src/store/types.js';
import type { Logger } from '../../src/core/log.js';
import { CalloutEngine } from '../../src/verify/engine.js';
import { startDnsServer } from '../support/dns-server.js';
import type { DnsTestServer, Zone } from '../support/dns-server.js';
import { startSmtpServers } from '../support/smtp-server.js';
import type { SmtpScript, SmtpTestServer } from '../support/smtp-server.js';

export interface World {
  dns: DnsTestServer;
  smtp: Map<string, SmtpTestServer>;
  port: number;
  clock: ManualClock;
  /** timers: the engine's monotonic clock (ManualTimers to move deadlines and lock waits); real ones without. */
  engine(overrides?: Record<string, unknown>, store?: Store, log?: Logger, timers?: Timers): CalloutEngine;
  config(overrides?: Record<string, unknown>): Config;
  connections(host: string): number;
  commands(host: string): string[];
  close(): Promise<void>;
}

export async function world(zone: Zone, servers: Record<string, Partial<SmtpScript>>): Promise<World> {
  const dns = await startDnsServer(zone);
  const hosts = Object.keys(servers);
  const started = hosts.length > 0 ? await startSmtpServers(hosts, (host) => servers[host] ?? {}) : [];
  const smtp = new Map(started.map((s) => [s.host, s]));
  const port = started[0]?.port ?? 1;
  const clock = new ManualClock();
  const engines: CalloutEngine[] = [];
  const stores: Store[] = [];
  const config = (overrides: Record<string, unknown> = {}) => {
    const { callout = {}, dns: dnsSettings = {}, ...rest } = overrides as { callout?: Record<string, unknown>; dns?: Record<string, unknown> };
    return validateConfig({
      ...rest,
      // The DNS server in this process answers at once, but a loaded machine may not run it at
      // once: 2 s, as the dns tests give, before a lookup counts as failed (the schema's 5 s
      // default would slow every test of a lookup failing).
      dns: { timeout: '2s', ...dnsSettings },
      callout: {
        helo: 'verifier.callout.test',
        port,
        allowTargets: ['127.0.0.0/8', '::1/128'],
        timeouts: { connect: '2s', greeting: '2s', command: '2s', rcpt: '2s', tls: '2s', overall: '10s' },
        ...callout,
      },
    });
  };
  return {
    dns,
    smtp,
    port,
    clock,
    config,
    engine(overrides = {}, store, log, timers) {
      const s = store ?? new MemoryStore({ clock });
      stores.push(s);
      const built = config(overrides);
      const resolver = new CachingResolver(createNodeResolver({ servers: [dns.address], timeoutMs: built.dns.timeout, tries: 1 }), { clock });
      const engine = new CalloutEngine(built, { resolver, store: s, clock, random: () => 0, ...(log ? { log } : {}), ...(timers ? { timers } : {}) });
      engines.push(engine);
      return engine;
    },
    connections: (host) => smtp.get(host)?.connectionCount ?? 0,
    commands: (host) => (smtp.get(host)?.sessions ?? []).flatMap((s) => s.commands),
    async close() {
      await Promise.all(engines.map((e) => e.idle()));
      await Promise.all(stores.map((s) => s.close().catch(() => undefined)));
      await Promise.all(started.map((s) => s.close()));
      await dns.close();
    },
  };
}

/** world() for one test file: every world it makes is closed once the file's tests are done. */
export function worldMaker(): typeof world {
  const worlds: World[] = [];
  after(async () => {
    await Promise.all(worlds.map((w) => w.close()));
  });
  return async (...args) => {
    const w = await world(...args);
    worlds.push(w);
    return w;
  };
}

/** A zone where each domain's single MX is mx.DOMAIN at the address given. */
export function mxZone(domains: Record<string, string | string[]>): Zone {
  const zone: Zone = {};
  for (const [domain, addresses] of Object.entries(domains)) {
    const list = Array.isArray(addresses) ? addresses : [addresses];
    zone[domain] = { MX: list.map((_, i) => ({ priority: 10 * (i + 1), exchange: `mx${i + 1}.${domain}` })) };
    list.forEach((address, i) => {
      zone[`mx${i + 1}.${domain}`] = address.includes(':') ? { AAAA: [address] } : { A: [address] };
    });
  }
  return zone;
}
