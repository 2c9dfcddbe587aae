/**
 * Catch-up: what the client has seen, and how it asks for what it missed (docs/protocol.md,
 * "Delivery semantics").
 *
 * The watermark `lastId` is the server id up to which the client holds every message to it. On
 * every new link the client sends `sync` with `after: lastId`; the server pushes the messages
 * after it, in id order, a page at a time, each page ended by a `synced` event (`more: true`: ask
 * again after its `last_id`). Live messages keep arriving meanwhile on the same topic. So:
 *
 * - every message is deduplicated by server id (catch-ups repeat messages; resends publish the
 *   stored message again), and a new one is handed to the UI at once, live or fetched;
 * - the watermark moves only over ranges known to be complete: a finished page of a catch-up, and,
 *   once caught up, each live message. A live message that arrives during a catch-up does not move
 *   it (the range below it may still be missing), so a link lost in the middle resumes from the
 *   last complete page: no gap.
 *
 * Every device of a user receives every catch-up (the server's own, when a device comes online,
 * too). Each `sync` carries a new `id` and its `synced` names it (`client_id`): the client hands
 * this class only the answers to its own request. From a server that names none, a `synced` is
 * taken as the answer only if it can be (`last_id >= after`). This class holds no timers and does
 * no I/O: the client sends, times out and retries.
 */

import type { Message, SyncedEvent } from './protocol.js';

export interface SyncRequest {
  /** Messages with a larger id; null on a client that has seen nothing yet (its unread ones). */
  after: number | null;
}

export type SyncStep =
  /** Not the answer to this client's request (another device's or the server's own catch-up). */
  | { kind: 'ignored' }
  /** A full page came; ask for the next one after `after`. */
  | { kind: 'next'; after: number }
  /** Caught up: live from now on. */
  | { kind: 'done'; lastId: number | null };

/** The server ids seen lately: a bounded set, the oldest entries dropped first. */
export class RecentIds {
  readonly #ids = new Set<number>();

  constructor(readonly limit = 10_000) {}

  has(id: number): boolean {
    return this.#ids.has(id);
  }

  /** Adds `id`; false when it was already there. */
  add(id: number): boolean {
    if (this.#ids.has(id)) return false;
    this.#ids.add(id);
    if (this.#ids.size > this.limit) {
      const oldest = this.#ids.values().next().value as number;
      this.#ids.delete(oldest);
    }
    return true;
  }

  get size(): number {
    return this.#ids.size;
  }
}

export type CatchUpMode = 'behind' | 'syncing' | 'live';

export class CatchUp {
  #lastId: number | null;
  #mode: CatchUpMode = 'behind';
  #pending: SyncRequest | null = null;
  #maxSeen: number | null = null;
  readonly #recent: RecentIds;

  /** `lastId`: the watermark stored by an earlier session (null: none). */
  constructor(lastId: number | null = null, recentLimit = 10_000) {
    this.#lastId = lastId;
    this.#recent = new RecentIds(recentLimit);
  }

  /** Every message to this client up to this id has been received. */
  get lastId(): number | null {
    return this.#lastId;
  }

  /** `behind` (no link, or not caught up yet), `syncing`, or `live`. */
  get mode(): CatchUpMode {
    return this.#mode;
  }

  /** The request waiting for its `synced`, to resend after a timeout or `rate_limited`. */
  get pending(): SyncRequest | null {
    return this.#pending;
  }

  /** A new link is subscribed: the request to send. */
  begin(): SyncRequest {
    this.#mode = 'syncing';
    this.#pending = { after: this.#lastId };
    return this.#pending;
  }

  /** The link is gone: until the next catch-up ends, live messages no longer move the watermark. */
  interrupt(): void {
    this.#mode = 'behind';
    this.#pending = null;
  }

  /** A message on the user's topic, live or fetched: true when it is new (hand it to the UI). */
  receive(message: Message): boolean {
    const fresh = this.#recent.add(message.id);
    if (this.#maxSeen === null || message.id > this.#maxSeen) this.#maxSeen = message.id;
    if (this.#mode === 'live') this.#advance(message.id);
    return fresh;
  }

  /** Whether this id was seen lately (a message fetched over REST can be checked against it). */
  seen(id: number): boolean {
    return this.#recent.has(id);
  }

  /** A `synced` event: the next step if it answers this client's request. */
  synced(event: SyncedEvent): SyncStep {
    const pending = this.#pending;
    if (this.#mode !== 'syncing' || pending === null) return { kind: 'ignored' };
    const { last_id: lastId, more } = event;
    // Ours says last_id = the last id pushed (> after), or `after` itself when nothing was.
    if (pending.after !== null && (lastId === null || lastId < pending.after)) return { kind: 'ignored' };
    if (more) {
      if (lastId === null) return { kind: 'ignored' };
      this.#advance(lastId); // that page, (after, last_id], has been pushed whole
      this.#pending = { after: lastId };
      return { kind: 'next', after: lastId };
    }
    // Everything stored before the last page was read has been pushed; what came after it came
    // live, on the subscription made before the first request.
    this.#mode = 'live';
    this.#pending = null;
    if (lastId !== null) this.#advance(lastId);
    if (this.#maxSeen !== null) this.#advance(this.#maxSeen);
    return { kind: 'done', lastId: this.#lastId };
  }

  #advance(id: number): void {
    if (this.#lastId === null || id > this.#lastId) this.#lastId = id;
  }
}

/**
 * Merges messages into a list sorted by id, without duplicates: a later copy of an id replaces
 * the earlier one (it may carry `read_at`). For the UI's conversation view, which mixes pages of
 * history fetched over REST with live messages.
 */
export function mergeById<T extends { id: number }>(sorted: readonly T[], incoming: readonly T[]): T[] {
  const byId = new Map<number, T>();
  for (const item of sorted) byId.set(item.id, item);
  for (const item of incoming) byId.set(item.id, item);
  return [...byId.values()].sort((a, b) => a.id - b.id);
}
