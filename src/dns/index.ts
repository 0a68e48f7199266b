/**
 * NAME
 *   dns - lookups as values: the resolver interface, node:dns behind it, a cache, MX resolution
 *
 * DESCRIPTION
 *   The one import point of the DNS layer for the rest of callout.
 */

export type { DnsAnswer, DnsRecordType, MxHost, MxRecord, MxResolution, Resolver } from './types.js';
export { reverseName } from './reverse.js';
export { createNodeResolver, parseDnsServer, type NodeResolver, type NodeResolverOptions } from './node-resolver.js';
export { CachingResolver, type CacheStats, type CachingResolverOptions } from './cache.js';
export { resolveMailHosts, type MailHostOptions } from './mx.js';
