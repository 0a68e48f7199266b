/**
 * NAME
 *   checks/ratelimit - sliding-window counters for rate limits and the tarpit
 *
 * DESCRIPTION
 *   See window.ts; the `ratelimit` and `tarpit` policy stages are built on it.
 */

export { SlidingWindow, WINDOW_MIN_MS, type WindowSample } from './window.js';
