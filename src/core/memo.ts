/**
 * NAME
 *   core/memo - bounded maps of recently used strings, and a memo of a pure function over them
 *
 * DESCRIPTION
 *   RecentMap(limit) keeps the values of the keys used lately. BoundedMemo(fn, limit) answers
 *   fn(text) from the texts it saw lately, so that the same input is worked out once while it
 *   recurs: the senders and recipients of policy requests (a message's recipients share a
 *   sender, a site has few users), the cached records the engine decodes. At thousands of decisions a second, parsing and decoding again were a fifth of
 *   the cost of an answer. The SQLite store keeps the rows it read in a RecentMap.
 *
 *   Two generations stand in for least-recently-used order: new entries go into the current
 *   one; when it holds `limit` keys it becomes the previous one and the one before is dropped
 *   whole; a key found in the previous generation moves to the current one. Recently used keys
 *   therefore stay, and a stream of keys that never recur (a working set larger than the map)
 *   costs an insertion each, never a deletion: an earlier memo that evicted its oldest entry
 *   per miss made every such answer slower than no memo at all.
 *
 *   fn must be pure and its results must never be changed by those who get them: the same
 *   object goes to every caller.
 *
 *   A key is kept as a copy of its own, and fn works on that copy. A policy request's
 *   attributes are slices of the string of the whole chunk it came in, and V8 keeps a slice's
 *   whole parent alive: kept as they came, the senders and recipients remembered held about
 *   25,000 whole requests (17 MB of a 54 MB heap after 700,000 requests of always-new clients),
 *   and a client that sends large requests (32 KiB each, in up to 64 KiB chunks) would have
 *   made each key cost that much. ownCopy() gives other long-lived keys (the DNS cache's) the
 *   same.
 *
 * LIMITS
 *   Between limit and 2 × limit keys (limit at least 1), each holding its own characters only.
 */

/**
 * What a RecentMap stores for an undefined value, so that one get() per generation tells a key
 * stored with undefined from a key not stored: get() and then has() on a miss was four hash
 * lookups in the SQLite store's row memory, on every read.
 */
const UNDEFINED = Symbol('undefined');

export class RecentMap<T> {
  private current = new Map<string, T | typeof UNDEFINED>();
  private previous = new Map<string, T | typeof UNDEFINED>();
  private readonly limit: number;

  constructor(limit: number) {
    this.limit = Math.max(1, Math.floor(limit));
  }

  /** The value of key, or `missing` when it is not remembered (values may be undefined). */
  get<M>(key: string, missing: M): T | M {
    const known = this.current.get(key);
    if (known !== undefined) return known === UNDEFINED ? (undefined as T) : known;
    const earlier = this.previous.get(key);
    if (earlier === undefined) return missing;
    this.previous.delete(key);
    this.insert(key, earlier);
    return earlier === UNDEFINED ? (undefined as T) : earlier;
  }

  set(key: string, value: T): void {
    const stored = value === undefined ? UNDEFINED : value;
    if (this.current.has(key)) this.current.set(key, stored);
    else this.insert(key, stored);
  }

  /** Changes the value of a key it remembers; one it does not remember stays out. */
  update(key: string, value: T): void {
    const stored = value === undefined ? UNDEFINED : value;
    if (this.current.has(key)) this.current.set(key, stored);
    else if (this.previous.has(key)) this.previous.set(key, stored);
  }

  delete(key: string): void {
    this.current.delete(key);
    this.previous.delete(key);
  }

  clear(): void {
    this.current.clear();
    this.previous.clear();
  }

  /** Keys remembered now. */
  get size(): number {
    return this.current.size + this.previous.size;
  }

  /** A key not in the current generation. */
  private insert(key: string, stored: T | typeof UNDEFINED): void {
    if (this.current.size >= this.limit) {
      this.previous = this.current;
      this.current = new Map();
    }
    this.current.set(ownCopy(key), stored);
  }
}

/**
 * The characters of text in a string that holds nothing else, for a key kept long: the
 * concatenation is flattened into a new string by the slice, which therefore refers to that
 * string, never to the string text was sliced or concatenated from.
 */
export function ownCopy(text: string): string {
  return ` ${text}`.slice(1);
}

const NOT_SEEN = Symbol('not seen');

export class BoundedMemo<T> {
  private readonly recent: RecentMap<T>;

  constructor(
    private readonly fn: (text: string) => T,
    limit: number,
  ) {
    this.recent = new RecentMap(limit);
  }

  get(text: string): T {
    const known = this.recent.get(text, NOT_SEEN);
    if (known !== NOT_SEEN) return known;
    const own = ownCopy(text);
    const result = this.fn(own);
    this.recent.set(own, result);
    return result;
  }

  /** Texts remembered now. */
  get size(): number {
    return this.recent.size;
  }
}
