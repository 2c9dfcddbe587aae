/**
 * Read marks, sent over REST (`POST /v1/messages/read`): its answer says what was marked, and a
 * refusal comes back to this request (429 with `retry_after`), where over MQTT a `rate_limited`
 * error for a `read` carries no id to match it with. The senders get their `read` events either
 * way. Marks are coalesced per conversation: while one request is out, later marks only raise
 * the `up_to` of the next one, so scrolling through a conversation sends a few requests, not one
 * per message.
 */

import { backoffDelay, type Backoff, DEFAULT_BACKOFF } from './backoff.js';
import type { MessengerApi, ReadMark } from './api.js';
import { ApiError, NetworkError } from './rest.js';

export interface ReadMarksOptions {
  /** Attempts per request on network errors and 5xx answers (429 waits do not count). */
  maxAttempts?: number;
  backoff?: Backoff;
  random?: () => number;
}

interface Lane {
  wanted: number;
  done: number;
  running: Promise<void> | null;
}

export class ReadMarks {
  readonly #api: MessengerApi;
  readonly #lanes = new Map<string, Lane>();
  readonly #maxAttempts: number;
  readonly #backoff: Backoff;
  readonly #random: () => number;

  constructor(api: MessengerApi, options: ReadMarksOptions = {}) {
    this.#api = api;
    this.#maxAttempts = options.maxAttempts ?? 5;
    this.#backoff = options.backoff ?? DEFAULT_BACKOFF;
    this.#random = options.random ?? Math.random;
  }

  /**
   * Marks read every unread message to the caller with id <= `upTo` (from `peer` only, if given).
   * Resolves once a request covering `upTo` succeeded; rejects with the {@link ApiError} or
   * {@link NetworkError} that stopped it.
   */
  mark(upTo: number, peer?: string): Promise<void> {
    if (!Number.isSafeInteger(upTo) || upTo < 0) return Promise.reject(new RangeError('upTo: an integer >= 0'));
    const key = peer ?? '';
    let lane = this.#lanes.get(key);
    if (!lane) this.#lanes.set(key, (lane = { wanted: -1, done: -1, running: null }));
    if (upTo <= lane.done) return Promise.resolve();
    lane.wanted = Math.max(lane.wanted, upTo);
    const running = (lane.running ??= this.#drain(lane, peer));
    return running;
  }

  async #drain(lane: Lane, peer: string | undefined): Promise<void> {
    try {
      while (lane.wanted > lane.done) {
        const upTo = lane.wanted;
        await this.#send(upTo, peer);
        lane.done = Math.max(lane.done, upTo);
      }
    } catch (error) {
      lane.wanted = lane.done; // a later mark() starts again
      throw error;
    } finally {
      lane.running = null;
    }
  }

  async #send(upTo: number, peer: string | undefined): Promise<ReadMark[]> {
    let failures = 0;
    for (;;) {
      try {
        return await this.#api.markRead(peer === undefined ? { up_to: upTo } : { up_to: upTo, with: peer });
      } catch (error) {
        let wait: number;
        if (error instanceof ApiError && error.status === 429) {
          wait = Math.ceil((error.retryAfter ?? 1) * 1000);
        } else if ((error instanceof NetworkError || (error instanceof ApiError && error.status >= 500)) && ++failures < this.#maxAttempts) {
          wait = error instanceof ApiError && error.retryAfter !== null
            ? error.retryAfter * 1000
            : Math.max(250, backoffDelay(failures, this.#backoff, this.#random));
        } else {
          throw error;
        }
        await new Promise((resolve) => setTimeout(resolve, wait));
      }
    }
  }
}
