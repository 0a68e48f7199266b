/**
 * NAME
 *   core/memo - a bounded memo of a pure function of a string
 *
 * DESCRIPTION
 *   BoundedMemo(fn, limit) answers fn(text) from the last `limit` texts it saw, so that the
 *   same input is worked out once while it recurs: the senders and recipients of policy
 *   requests (a message's recipients share a sender, a site has few users), the addresses the
 *   engine is asked about, the cached records it decodes. At thousands of decisions a second,
 *   parsing and decoding again were a fifth of the cost of an answer. The oldest text is
 *   forgotten first (Map order is insertion order), which is all a cache of recurring inputs
 *   needs. fn must be pure and its results must never be changed by those who get them: the
 *   same object goes to every caller.
 *
 * LIMITS
 *   limit entries (at least 1).
 */

export class BoundedMemo<T> {
  private readonly results = new Map<string, T>();
  private readonly limit: number;

  constructor(
    private readonly fn: (text: string) => T,
    limit: number,
  ) {
    this.limit = Math.max(1, Math.floor(limit));
  }

  get(text: string): T {
    const known = this.results.get(text);
    if (known !== undefined || this.results.has(text)) return known as T;
    const result = this.fn(text);
    if (this.results.size >= this.limit) this.results.delete(this.results.keys().next().value as string);
    this.results.set(text, result);
    return result;
  }

  get size(): number {
    return this.results.size;
  }
}
