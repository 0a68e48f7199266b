/**
 * NAME
 *   store/redis-url - the Redis URL as the store takes it: checked, and shown without its password
 *
 * DESCRIPTION
 *   checkRedisUrl() refuses what ioredis would misread without a word: a database that is not a
 *   number, a path that is not one, a scheme in capitals (TLS off), a bad % escape in the
 *   password, URL parameters that would set driver options, `tls=false` (TLS on) and a family
 *   that is not 4 or 6, white space before the URL or after a socket path, and what it would
 *   read one way of two: a database in both the path and db=, a user part and username= or
 *   password=, a parameter given twice, each only when the two differ (`redis://h/0?db=0` names
 *   one database). White space after a redis:// or rediss:// URL (a quoted value, a YAML block
 *   scalar's line break) is no part of it: the driver dropped it, and it is dropped here for the
 *   connection and wherever the URL is shown. The configuration schema runs
 *   it, so `callout config check` and every command name the key; RedisStore.open runs it again
 *   with the options it sets itself. maskPassword() is the URL as logs and errors show it.
 *   Apart from the store, so that the schema does not load the driver.
 *
 * ERRORS
 *   ConfigError naming the URL, its password masked.
 */

import { ConfigError } from '../core/errors.js';
import { HIDDEN_SECRET, shownJson } from '../core/text.js';

/** How a URL is shown that may hold a password where it cannot be told apart. */
const UNPARSABLE = '(unparsable redis URL)';

/** A URL cut at its query, which is parsed here once for the mask and every check. */
interface QueryCut {
  base: string;
  parameters: URLSearchParams;
}

function cutQuery(url: string): QueryCut {
  const query = url.indexOf('?');
  return { base: query === -1 ? url : url.slice(0, query), parameters: new URLSearchParams(query === -1 ? '' : url.slice(query + 1)) };
}

const REDIS_SCHEME = /^rediss?:\/\//i;

/**
 * A redis:// or rediss:// URL without the white space after it: new URL(), and so the driver,
 * dropped a space or line break there (`url: "redis://10.0.0.5/0 "`, a block scalar's last line
 * break), and refusing it stopped working installations at an upgrade. Anything else is kept as
 * written: the driver keeps white space in a socket path, and before a scheme it is no URL.
 */
function withoutTrailingSpace(url: string): string {
  return REDIS_SCHEME.test(url) ? url.trimEnd() : url;
}

/**
 * The URL as it may appear in logs: any password replaced by ***. White space around it that is
 * refused is kept, as new URL() would drop it: a message quoting the URL must show what was written.
 */
export function maskPassword(written: string): string {
  const url = withoutTrailingSpace(written);
  const start = url.length - url.trimStart().length;
  const end = url.trimEnd().length;
  if (start >= end) return url;
  return url.slice(0, start) + masked(cutQuery(url.slice(start, end))) + url.slice(end);
}

function masked({ base, parameters }: QueryCut): string {
  // Each password parameter masked in one pass: URLSearchParams.set() removes duplicates one
  // splice at a time, quadratic in a query of many (2.6 s for 80,000).
  const entries = [...parameters].map(([name, value]): [string, string] => [name, name === 'password' ? HIDDEN_SECRET : value]);
  const search = entries.length > 0 ? `?${new URLSearchParams(entries).toString()}` : '';
  if (base.startsWith('/')) return base + search;
  try {
    const parsed = new URL(base);
    // A URL without an authority (`redis:/:pw@host`, `redis:user:pw@host`, a slash short) has no
    // user part for WHATWG, but the administrator wrote a password there all the same.
    if (parsed.host === '' && base.includes('@')) return UNPARSABLE;
    if (parsed.password !== '') parsed.password = HIDDEN_SECRET;
    return parsed.toString().replace(/\/$/, '') + search;
  } catch {
    // Only a user part (before an @) can hold a password here: without one the URL is shown, so
    // that "redis://10.0.0.5:63790/0" is not refused as "(unparsable redis URL)", naming nothing.
    return base.includes('@') ? UNPARSABLE : base + search;
  }
}

/**
 * url as the driver is given it: the scheme in lower case, as ioredis turns TLS on only for a
 * literal `rediss://` and would send the password in clear to a `REDISS://` it parses all the same.
 */
export function checkRedisUrl(written: string, storeOptions: object = {}): string {
  const url = withoutTrailingSpace(written);
  // The driver keeps white space in a socket path ("connect ENOENT /run/redis.sock ", the space
  // unseen), and a space before redis:// failed the scheme check, which quoted the URL without it.
  const before = url.slice(0, url.length - url.trimStart().length);
  const after = url.slice(url.trimEnd().length);
  if (url.trim() !== '' && (before !== '' || after !== '')) {
    const where = [before !== '' ? 'before' : '', after !== '' ? 'after' : ''].filter((side) => side !== '').join(' and ');
    const spaces = [before, after].filter((space) => space !== '').map((space) => shownJson(space)).join(', ');
    throw new ConfigError(`redis store: the URL ${shownJson(maskPassword(url.trim()))} has white space ${where} it (${spaces}): remove it`);
  }
  const cut = cutQuery(url);
  const { parameters } = cut;
  const shown = masked(cut);
  // ioredis takes a database that is not a number ("/abc", "?db=1x") as database 0 (or 1).
  const database = parameters.get('db');
  if (database !== null && !/^\d+$/.test(database)) {
    throw new ConfigError(`redis store: database (db=) must be a number, got ${JSON.stringify(database)} in ${shown}`);
  }
  const maskedPassword = `redis store: the password in ${shown} is ${HIDDEN_SECRET}, as config print hides it: put the real password back`;
  // Before a socket path returns: config print masks its password parameter alike.
  if (parameters.getAll('password').includes(HIDDEN_SECRET)) throw new ConfigError(maskedPassword);
  if (url.startsWith('/')) {
    // ioredis takes a socket path's parameters as driver options too.
    checkUrlParameters(parameters, shown, storeOptions);
    return url;
  }
  if (!REDIS_SCHEME.test(url)) {
    throw new ConfigError(`redis store: URL must be redis://, rediss:// or a unix socket path, got ${shown}`);
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (err) {
    throw new ConfigError(`redis store: unusable URL ${shown}: not a URL (a port above 65535, a space or an IPv6 address without brackets?)`, { cause: err });
  }
  try {
    // As ioredis decodes them, which otherwise throws a bare "URI malformed" from the constructor.
    decodeURIComponent(parsed.username);
    decodeURIComponent(parsed.password);
  } catch (err) {
    throw new ConfigError(`redis store: unusable URL ${shown}: a % in the user name or password is not followed by two hex digits`, { cause: err });
  }
  if (decodeURIComponent(parsed.password) === HIDDEN_SECRET) throw new ConfigError(maskedPassword);
  const path = parsed.pathname;
  if (!/^\/?\d*$/.test(path)) {
    throw new ConfigError(`redis store: the URL's path must be a database number, got ${JSON.stringify(path)} in ${shown}`);
  }
  // ioredis takes the path's database, and the user part's name and password (an empty one for
  // the part left out), and drops the parameters without a word: refused where that changes what
  // it connects to, read as it reads them (parseInt; decodeURIComponent and URLSearchParams).
  if (path.length > 1 && database !== null && parseInt(path.slice(1), 10) !== parseInt(database, 10)) {
    throw new ConfigError(`redis store: the database is given twice, as the path ${path} and as db=${database}, in ${shown}: give it once (the driver would take the path's and ignore db=)`);
  }
  if (parsed.username !== '' || parsed.password !== '') {
    const userPart = { username: decodeURIComponent(parsed.username), password: decodeURIComponent(parsed.password) };
    const credential = (['username', 'password'] as const).find((name) => parameters.getAll(name).some((value) => value !== userPart[name]));
    if (credential !== undefined) {
      throw new ConfigError(`redis store: the URL has a user part (before the @) and a different ${credential}=, in ${shown}: give the user name and password in one of them (the driver would take the user part's and ignore ${credential}=)`);
    }
  }
  checkUrlParameters(parameters, shown, storeOptions);
  return url.replace(/^rediss?:/i, (scheme) => scheme.toLowerCase());
}

/** The URL parameters that name where and as whom to connect, and nothing of how the store works. */
const URL_PARAMETERS = new Set(['username', 'password', 'db', 'family', 'tls']);

/**
 * Refuses a URL parameter that names any other driver option: ioredis takes every parameter as
 * an option, winning over the options given with it, as strings ("false" counts as true). So
 * `?enableOfflineQueue=false` would queue commands during an outage, `?commandTimeout=5000` would
 * take every deadline away, `?stringNumbers=true` made each expiresAt a string, and ioredis's own
 * `?keyPrefix=` left scan finding nothing.
 */
function checkUrlParameters(parameters: URLSearchParams, shown: string, options: object): void {
  const firstValues = new Map<string, string>();
  for (const [name, value] of parameters) {
    if (Object.hasOwn(options, name)) {
      throw new ConfigError(`redis store: URL parameter ${name} is set by the store, not the URL: ${shown}`);
    }
    if (!URL_PARAMETERS.has(name)) {
      throw new ConfigError(`redis store: URL parameter ${name} is not one of ${[...URL_PARAMETERS].join(', ')}: ${shown}`);
    }
    // The driver takes the last of a parameter given twice, and the database check reads the first (db=1&db=x passed).
    const first = firstValues.get(name);
    if (first === undefined) firstValues.set(name, value);
    else if (first !== value) throw new ConfigError(`redis store: URL parameter ${name} is given twice, with different values: ${shown}`);
  }
  // ioredis takes any tls value but an empty one as the name of a TLS profile, and turns TLS on:
  // `?tls=false` made every connection a TLS handshake that a plain Redis never answers, and the
  // store said only "no answer within 2000 ms".
  for (const tls of parameters.getAll('tls')) {
    if (/^(false|no|off|0)$/i.test(tls)) {
      throw new ConfigError(`redis store: URL parameter tls=${tls} turns TLS on (the driver reads any tls value as a TLS profile): leave tls out for no TLS, or write rediss:// for TLS: ${shown}`);
    }
  }
  // Node connects with family 0, 4 or 6; any other number was taken, and a host name then failed every lookup.
  for (const family of parameters.getAll('family')) {
    if (!/^[046]$/.test(family)) {
      throw new ConfigError(`redis store: URL parameter family must be 4 or 6 (or 0 for either), got ${JSON.stringify(family)}: ${shown}`);
    }
  }
}
