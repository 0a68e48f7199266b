/**
 * NAME
 *   core/memo - a bounded memo of a pure function of a string
 *
 * DESCRIPTION
 *   BoundedMemo(fn, limit) answers fn(text) from the texts it saw lately, so that the same
 *   input is worked out once while it recurs: the senders and recipients of policy requests (a
 *   message's recipients share a sender, a site has few users), the addresses the engine is
 *   asked about, the cached records it decodes. At thousands of decisions a second, parsing and
 *   decoding again were a fifth of the cost of an answer.
 *
 *   Two generations stand in for least-recently-used order: new results go into the current
 *   one; when it holds `limit` texts it becomes the previous one and the one before is dropped
 *   whole; a text found in the previous generation moves to the current one. Recently used
 *   texts therefore stay, and a stream of texts that never recur (a working set larger than the
 *   memo) costs an insertion each, never a deletion: an earlier memo that evicted its oldest
 *   entry per miss made every such answer slower than no memo at all.
 *
 *   fn must be pure and its results must never be changed by those who get them: the same
 *   object goes to every caller.
 *
 * LIMITS
 *   Between limit and 2 × limit texts (limit at least 1).
 */

export class BoundedMemo<T> {
  private current = new Map<string, T>();
  private previous = new Map<string, T>();
  private readonly limit: number;

  constructor(
    private readonly fn: (text: string) => T,
    limit: number,
  ) {
    this.limit = Math.max(1, Math.floor(limit));
  }

  get(text: string): T {
    const known = this.current.get(text);
    if (known !== undefined || this.current.has(text)) return known as T;
    const earlier = this.previous.get(text);
    const result = earlier !== undefined || this.previous.has(text) ? (earlier as T) : this.fn(text);
    this.remember(text, result);
    return result;
  }

  /** Texts remembered now. */
  get size(): number {
    return this.current.size + this.previous.size;
  }

  private remember(text: string, result: T): void {
    if (this.current.size >= this.limit) {
      this.previous = this.current;
      this.current = new Map();
    }
    this.current.set(text, result);
  }
}
