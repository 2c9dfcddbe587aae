/**
 * The outbox: messages this client sent, until the server has answered for each.
 *
 * A message gets its client id once and keeps it for every resend, so the server stores it once
 * and answers a resend with the same `ack` (`duplicate: true`) (docs/protocol.md, "Delivery
 * semantics"). The broker's PUBACK proves nothing; only the `ack` or `error` event does:
 *
 *     pending --ack sent--> sent            (stored; removed from the outbox)
 *     pending --ack queued / tip pending--> accepted --ack sent--> sent
 *     pending --error (final) / tip_failed--> failed --retry()--> pending (same id)
 *     pending --no answer--> resent with the same id, after a doubling wait; failed after `maxUnanswered`
 *     pending --rate_limited--> resent after its `retry_after`
 *     pending --service_unavailable / internal_error--> resent after a backoff
 *
 * While there is no link, pending messages wait and are sent when it is back; `accepted` ones are
 * sent again once per link too, since the event that settles them may have gone out while the
 * client was away (the server answers a repeat with the current outcome, and charges a tip once).
 *
 * Order: messages to one recipient (or one list) are stored in the order they were sent. With
 * several handlers two commands sent back to back may be stored in either order (docs/protocol.md,
 * "Ordering"), so each conversation has one message in flight at a time: the next is published
 * once the server has answered the one before (`ack`, or a final error), a rate-limited or
 * retried one keeping its place. Other conversations are not held up.
 */

import { DEFAULT_BACKOFF, backoffDelay, type Backoff } from './backoff.js';
import { InvalidCommand, encodeCommand, type AckEvent, type Command, type ErrorEvent, type TipDraft, type TipFailedEvent } from './protocol.js';

export type OutgoingStatus = 'pending' | 'accepted' | 'sent' | 'failed';

export interface OutgoingError {
  /** The server's error code, `tip_failed`, or `timeout` when the server never answered. */
  code: string;
  detail: string;
  /** With `rate_limited`: the seconds the server asked to wait. */
  retryAfter: number | null;
  /** Refused by the library before sending, or given up without an answer. */
  local: boolean;
}

/** A snapshot of one message this client sent; `outgoing` events carry a new one on each change. */
export interface OutgoingMessage {
  readonly clientId: string;
  readonly to: string | null;
  readonly list: string | null;
  readonly body: string;
  readonly tip: TipDraft | null;
  readonly status: OutgoingStatus;
  /** The server id once stored. */
  readonly id: number | null;
  readonly sentAt: string | null;
  /** The mass message id of a message to a list. */
  readonly massMessage: number | null;
  /** The server had it already: this answer is to a resend. */
  readonly duplicate: boolean;
  /** Transmissions so far (the first send and the resends). */
  readonly attempts: number;
  /** The last error: why it failed, or (still pending) why it waits to be resent. */
  readonly error: OutgoingError | null;
  /** A declined tip: where the member fixes their payment method. */
  readonly billingUrl: string | null;
  /** A tip's charge: `pending`, `succeeded` or `failed`. */
  readonly tipStatus: string | null;
}

export type Draft =
  | { to: string; body: string; tip?: TipDraft; clientId?: string }
  | { list: string; body: string; clientId?: string };

export interface OutboxOptions {
  /** Publishes a command on `inbound/{uid}` (QoS 1); rejects without a link. */
  publish(payload: string): Promise<void>;
  isOnline(): boolean;
  onChange(message: OutgoingMessage): void;
  newId?: () => string;
  /** Resend when no answer came within this; doubles with each resend (up to 16 times it). */
  ackTimeoutMs?: number;
  /** Give up (status `failed`, code `timeout`) after this many unanswered sends or transient errors. */
  maxUnanswered?: number;
  /** Waits after `service_unavailable` and `internal_error`. */
  backoff?: Backoff;
  random?: () => number;
}

interface Entry {
  message: Mutable<OutgoingMessage>;
  payload: string | null;
  ackTimer: ReturnType<typeof setTimeout> | null;
  retryTimer: ReturnType<typeof setTimeout> | null;
  unanswered: number;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** The error codes worth resending with the same id; every other error is final. */
const TRANSIENT = new Set(['service_unavailable', 'internal_error']);

export class Outbox {
  readonly #o: OutboxOptions;
  readonly #entries = new Map<string, Entry>();
  /** Per conversation (`to:{user}` or `list:{id}`): the client id of the message in flight. */
  readonly #inFlight = new Map<string, string>();
  readonly #ackTimeoutMs: number;
  readonly #maxUnanswered: number;
  readonly #backoff: Backoff;
  readonly #random: () => number;
  readonly #newId: () => string;

  constructor(options: OutboxOptions) {
    this.#o = options;
    this.#ackTimeoutMs = options.ackTimeoutMs ?? 10_000;
    this.#maxUnanswered = options.maxUnanswered ?? 5;
    this.#backoff = options.backoff ?? DEFAULT_BACKOFF;
    this.#random = options.random ?? Math.random;
    this.#newId = options.newId ?? randomId;
  }

  /** Sends a message (to a user, with or without a tip, or to a list); returns its first snapshot. */
  send(draft: Draft): OutgoingMessage {
    const clientId = draft.clientId ?? this.#newId();
    if (this.#entries.has(clientId)) throw new Error(`client id ${clientId} is already in the outbox`);
    const isList = 'list' in draft;
    const entry: Entry = {
      message: {
        clientId,
        to: isList ? null : draft.to,
        list: isList ? draft.list : null,
        body: draft.body,
        tip: !isList && draft.tip ? { ...draft.tip } : null,
        status: 'pending',
        id: null,
        sentAt: null,
        massMessage: null,
        duplicate: false,
        attempts: 0,
        error: null,
        billingUrl: null,
        tipStatus: null,
      },
      payload: null,
      ackTimer: null,
      retryTimer: null,
      unanswered: 0,
    };
    // `id` before `body`: the server finds it in the first 1 KiB even of an oversized command.
    const command: Command = isList
      ? { type: 'message', id: clientId, list: draft.list, body: draft.body }
      : { type: 'message', id: clientId, to: draft.to, body: draft.body, ...(draft.tip ? { tip: draft.tip } : {}) };
    this.#entries.set(clientId, entry);
    try {
      entry.payload = encodeCommand(command);
    } catch (e) {
      if (!(e instanceof InvalidCommand)) throw e;
      this.#fail(entry, { code: e.code, detail: e.message, retryAfter: null, local: true });
      return snapshot(entry);
    }
    this.#changed(entry);
    this.#transmit(entry);
    return snapshot(entry);
  }

  /**
   * Sends a failed message again with the same client id (safe: the server stores it once).
   * A declined tip is the exception: its id is settled as failed, so it goes again under a new one
   * (docs/protocol.md, `tip_failed`); the old entry is dropped. Returns the new snapshot.
   */
  retry(clientId: string): OutgoingMessage {
    const entry = this.#entries.get(clientId);
    if (!entry || entry.message.status !== 'failed') throw new Error(`no failed message ${clientId} to retry`);
    const m = entry.message;
    if (entry.payload === null) return snapshot(entry); // refused locally: it would be again
    if (m.error?.code === 'tip_failed') {
      this.#entries.delete(clientId);
      return this.send(m.to !== null ? { to: m.to, body: m.body, ...(m.tip ? { tip: m.tip } : {}) } : { list: m.list as string, body: m.body });
    }
    m.status = 'pending';
    m.error = null;
    entry.unanswered = 0;
    this.#changed(entry);
    this.#transmit(entry);
    return snapshot(entry);
  }

  /** Forgets a failed message. */
  discard(clientId: string): boolean {
    const entry = this.#entries.get(clientId);
    if (!entry || entry.message.status !== 'failed') return false;
    this.#entries.delete(clientId);
    return true;
  }

  /** The messages not sent yet: pending, accepted and failed, in the order they were sent. */
  list(): OutgoingMessage[] {
    return [...this.#entries.values()].map(snapshot);
  }

  get(clientId: string): OutgoingMessage | null {
    const entry = this.#entries.get(clientId);
    return entry ? snapshot(entry) : null;
  }

  /** A link is up (subscribed): send what waits, and ask again about what is accepted. */
  online(): void {
    for (const entry of this.#entries.values()) {
      const status = entry.message.status;
      if (status === 'pending' && entry.retryTimer === null) this.#transmit(entry);
      else if (status === 'accepted') this.#publish(entry);
    }
  }

  /** The link is gone: no answer can come, so stop the answer timers (not the `retry_after` waits). */
  offline(): void {
    for (const entry of this.#entries.values()) this.#clearAckTimer(entry);
  }

  /** An `ack` event; false when it is not for a message of this outbox (another device's). */
  ack(event: AckEvent): boolean {
    const entry = this.#entries.get(event.client_id);
    if (!entry || entry.payload === null) return false;
    const m = entry.message;
    m.duplicate = event.duplicate;
    m.error = null;
    if (event.tip) m.tipStatus = event.tip.status;
    if (event.mass_message !== null) m.massMessage = event.mass_message;
    if (event.status === 'sent') {
      m.status = 'sent';
      m.id = event.id;
      m.sentAt = event.sent_at;
      this.#clearTimers(entry);
      this.#entries.delete(m.clientId);
    } else {
      // queued (a list message) or pending (a tip being charged): the server settles it later
      m.status = 'accepted';
      this.#clearTimers(entry);
    }
    this.#changed(entry);
    this.#release(entry);
    return true;
  }

  /** An `error` event; false when it is not for a message of this outbox. */
  error(event: ErrorEvent): boolean {
    const entry = event.client_id === null ? undefined : this.#entries.get(event.client_id);
    if (!entry || entry.payload === null || entry.message.status === 'failed') return false;
    const error: OutgoingError = { code: event.code, detail: event.detail, retryAfter: event.retry_after, local: false };
    this.#clearTimers(entry);
    if (event.code === 'rate_limited') {
      // Not the server's fault nor a lost command: wait as asked, whatever it takes.
      entry.message.error = error;
      entry.message.status = 'pending';
      this.#changed(entry);
      this.#retryAfter(entry, Math.ceil((event.retry_after ?? 1) * 1000));
    } else if (TRANSIENT.has(event.code) && ++entry.unanswered < this.#maxUnanswered) {
      entry.message.error = error;
      entry.message.status = 'pending';
      this.#changed(entry);
      this.#retryAfter(entry, Math.max(250, backoffDelay(entry.unanswered, this.#backoff, this.#random)));
    } else {
      this.#fail(entry, error);
    }
    return true;
  }

  /** A `tip_failed` event: the charge was declined; nothing was delivered. */
  tipFailed(event: TipFailedEvent): boolean {
    const entry = this.#entries.get(event.client_id);
    if (!entry || entry.payload === null) return false;
    entry.message.billingUrl = event.billing_url;
    entry.message.tipStatus = event.tip.status;
    this.#clearTimers(entry);
    this.#fail(entry, { code: 'tip_failed', detail: event.reason ?? 'the charge was declined', retryAfter: null, local: false });
    return true;
  }

  /** Stops every timer (the client is closing); the entries stay readable. */
  dispose(): void {
    for (const entry of this.#entries.values()) this.#clearTimers(entry);
  }

  #transmit(entry: Entry): void {
    if (!this.#o.isOnline() || entry.message.status !== 'pending') return;
    const key = conversationKey(entry.message);
    const holder = this.#inFlight.get(key);
    if (holder !== undefined && holder !== entry.message.clientId) return; // after the one in flight
    this.#inFlight.set(key, entry.message.clientId);
    this.#publish(entry);
    this.#clearAckTimer(entry);
    const wait = this.#ackTimeoutMs * 2 ** Math.min(entry.unanswered, 4);
    entry.ackTimer = setTimeout(() => {
      entry.ackTimer = null;
      if (++entry.unanswered >= this.#maxUnanswered) {
        this.#fail(entry, { code: 'timeout', detail: 'the server did not answer; retry keeps the same id', retryAfter: null, local: true });
      } else {
        this.#transmit(entry);
      }
    }, wait);
  }

  #publish(entry: Entry): void {
    if (entry.payload === null) return;
    entry.message.attempts++;
    // A failed publish (the link just went) is covered by the answer timer and by online().
    this.#o.publish(entry.payload).catch(() => undefined);
  }

  #retryAfter(entry: Entry, ms: number): void {
    entry.retryTimer = setTimeout(() => {
      entry.retryTimer = null;
      this.#transmit(entry);
    }, ms);
  }

  #fail(entry: Entry, error: OutgoingError): void {
    this.#clearTimers(entry);
    entry.message.status = 'failed';
    entry.message.error = error;
    this.#changed(entry);
    this.#release(entry);
  }

  /** The server answered `entry` for good: the next waiting message of its conversation goes. */
  #release(entry: Entry): void {
    const key = conversationKey(entry.message);
    if (this.#inFlight.get(key) !== entry.message.clientId) return;
    this.#inFlight.delete(key);
    for (const next of this.#entries.values()) {
      if (next.message.status === 'pending' && next.retryTimer === null && conversationKey(next.message) === key) {
        this.#transmit(next);
        return;
      }
    }
  }

  #clearAckTimer(entry: Entry): void {
    if (entry.ackTimer !== null) clearTimeout(entry.ackTimer);
    entry.ackTimer = null;
  }

  #clearTimers(entry: Entry): void {
    this.#clearAckTimer(entry);
    if (entry.retryTimer !== null) clearTimeout(entry.retryTimer);
    entry.retryTimer = null;
  }

  #changed(entry: Entry): void {
    this.#o.onChange(snapshot(entry));
  }
}

function conversationKey(m: OutgoingMessage): string {
  return m.to !== null ? `to:${m.to}` : `list:${m.list ?? ''}`;
}

function snapshot(entry: Entry): OutgoingMessage {
  const m = entry.message;
  return { ...m, tip: m.tip ? { ...m.tip } : null, error: m.error ? { ...m.error } : null };
}

/** 32 hex digits from the platform's CSPRNG (works outside secure contexts, unlike randomUUID). */
export function randomId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}
