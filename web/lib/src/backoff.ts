/** Exponential backoff with "full jitter", for reconnects and for resends after a transient error. */

export interface Backoff {
  /** The cap of the first retry's delay. */
  baseMs: number;
  /** The largest cap: no delay exceeds it. */
  maxMs: number;
}

export const DEFAULT_BACKOFF: Backoff = { baseMs: 1_000, maxMs: 30_000 };

/**
 * A delay drawn uniformly from [0, min(maxMs, baseMs * 2^attempt)): clients that lost the broker
 * together do not come back together, and the expected wait still doubles per failure.
 * `random` returns a number in [0, 1), as `Math.random` does.
 */
export function backoffDelay(attempt: number, backoff: Backoff, random: () => number): number {
  const cap = Math.min(backoff.maxMs, backoff.baseMs * 2 ** Math.min(Math.max(attempt, 0), 30));
  const r = Math.min(Math.max(random(), 0), 1 - Number.EPSILON);
  return Math.floor(r * cap);
}
