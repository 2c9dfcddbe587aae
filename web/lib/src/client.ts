/**
 * The client: one user's live connection to Messenger, with typed events for a UI.
 *
 *     const client = new MessengerClient({ mqttUrl, apiUrl, getToken });
 *     client.on('message', (m) => ...);
 *     await client.connect();
 *     client.send('bob', 'hi');
 *
 * It wires the parts together: {@link Connection} (MQTT link, token refresh, reconnects),
 * {@link CatchUp} (the watermark and `sync` after every reconnect), {@link Outbox} (client ids,
 * answers, resends), {@link PresenceBook}, {@link ReadMarks} and the REST API ({@link MessengerApi}).
 */

import { MessengerApi } from './api.js';
import type { Backoff } from './backoff.js';
import { CatchUp } from './catchup.js';
import { Connection, type ConnectionStatus } from './connection.js';
import { Emitter, type Listener } from './events.js';
import { Outbox, randomId, type OutgoingMessage } from './outbox.js';
import { PresenceBook, type PresenceChange } from './presence.js';
import {
  decodeJson,
  encodeCommand,
  isDevice,
  parseEvent,
  parseMessage,
  topics,
  type AckEvent,
  type ErrorEvent,
  type Message,
  type ReadEvent,
  type Command,
  type TipDraft,
  type TipFailedEvent,
  type TypingEvent,
} from './protocol.js';
import { ReadMarks } from './reads.js';
import { RestClient, type ApiError } from './rest.js';
import { TokenKeeper } from './token.js';
import { defaultFetch, mqttjsConnector, type Fetch, type MqttConnector, type MqttLink } from './transport.js';

/** Where the watermark (the last server id the client has everything up to) survives a reload. */
export interface CursorStore {
  load(user: string): number | null | Promise<number | null>;
  save(user: string, lastId: number): void | Promise<void>;
}

/** Keeps the watermark in memory only: a reload catches up on unread messages. */
export function memoryStore(): CursorStore {
  const ids = new Map<string, number>();
  return { load: (user) => ids.get(user) ?? null, save: (user, id) => void ids.set(user, id) };
}

/** Keeps the watermark in `localStorage` (or another `Storage`), under `{prefix}{user}`. */
export function storageStore(storage: Storage, prefix = 'messenger:last-id:'): CursorStore {
  return {
    load(user) {
      const value = Number(storage.getItem(prefix + user));
      return Number.isSafeInteger(value) && value > 0 ? value : null;
    },
    save(user, id) {
      storage.setItem(prefix + user, String(id));
    },
  };
}

export interface ClientOptions {
  /** MQTT over WebSocket: `ws://127.0.0.1:8083/mqtt` with `messenger serve`. */
  mqttUrl: string;
  /** The REST API's base URL: `http://127.0.0.1:8080` with `messenger serve`. */
  apiUrl: string;
  /** A current token (a JWT for the user); called again before it expires and after a refusal. */
  getToken(): Promise<string>;
  /** This connection's device name (client id `{uid}/{device}`); one per tab. Default `web-` + random. */
  device?: string;
  /** Where the catch-up watermark is kept. Default: memory. */
  store?: CursorStore;
  /** Publish this device's presence (and leave a Last Will). Default true. */
  announcePresence?: boolean;
  /** Transport doors (tests pass fakes). Default mqtt.js and `fetch`. */
  connector?: MqttConnector;
  fetch?: Fetch;
  random?: () => number;
  /** Reconnect backoff. Default 1 s doubling to 30 s, full jitter. */
  backoff?: Backoff;
  /** Replace the token this long before it expires. Default 60 s. */
  refreshMarginMs?: number;
  /** Reconnect with each new token (the connection is authorized by a live token). Default true. */
  reconnectOnRefresh?: boolean;
  /** Resend a message with no answer after this (doubling). Default 10 s. */
  ackTimeoutMs?: number;
  /** Give a message up (status `failed`, code `timeout`) after this many unanswered sends. Default 5. */
  maxUnanswered?: number;
  /** Resend a `sync` with no `synced` after this. Default 15 s. */
  syncTimeoutMs?: number;
  /** At most one `typing` per peer this often. Default 3 s. */
  typingIntervalMs?: number;
  /** REST request timeout. Default 15 s. */
  requestTimeoutMs?: number;
}

export interface CatchUpState {
  /** `syncing` while a catch-up runs after a (re)connect, `live` once it is done. */
  state: 'syncing' | 'live';
  lastId: number | null;
}

/** The events a UI listens to, with their payload types. */
export interface ClientEvents {
  /** The connection's state: connecting, online, waiting (with the delay), stopped. */
  status: ConnectionStatus;
  /** A new message to this user, live or caught up; each server id once. Order by `id`. */
  message: Message;
  /** A message this client sent changed state (pending, accepted, sent, failed). */
  outgoing: OutgoingMessage;
  /** Every `ack`, including those for messages another device of this user sent. */
  ack: AckEvent;
  /** Someone read this user's messages up to `up_to`. */
  read: ReadEvent;
  typing: TypingEvent;
  presence: PresenceChange;
  /** A tip's charge was declined: show `billing_url`. */
  tipFailed: TipFailedEvent;
  /** An `error` event that is not about a message of this client (another device's, say). */
  serverError: ErrorEvent;
  catchUp: CatchUpState;
  /** The token was refused, or `getToken` failed; `loginUrl` when the API named its login page. */
  authError: { error: Error; loginUrl: string | null };
  /** A payload from the server that does not match the protocol (it was dropped). */
  invalid: { topic: string; error: Error };
}

export class MessengerClient {
  /** The REST API, with this client's token. */
  readonly api: MessengerApi;
  readonly device: string;
  readonly #events = new Emitter<ClientEvents>();
  readonly #tokens: TokenKeeper;
  readonly #connection: Connection;
  readonly #outbox: Outbox;
  readonly #presence = new PresenceBook();
  readonly #reads: ReadMarks;
  readonly #store: CursorStore;
  readonly #announce: boolean;
  readonly #syncTimeoutMs: number;
  readonly #typingIntervalMs: number;
  #catchUp = new CatchUp();
  #user: string | null = null;
  #started = false;
  /** While the first connection is being made: what {@link connect} returned. */
  #firstOnline: Promise<void> | null = null;
  #savedId: number | null = null;
  #status: ConnectionStatus = { state: 'stopped', attempt: 0, reason: 'stop' };
  #syncTimer: ReturnType<typeof setTimeout> | null = null;
  /** The `id` of the last `sync` sent: its `synced` (and its `rate_limited`) name it. */
  #syncId: string | null = null;
  readonly #typingSent = new Map<string, number>();

  constructor(options: ClientOptions) {
    this.device = options.device ?? `web-${randomId().slice(0, 12)}`;
    if (!isDevice(this.device)) throw new Error(`device: ${this.device} is not a valid device name`);
    this.#store = options.store ?? memoryStore();
    this.#announce = options.announcePresence ?? true;
    this.#syncTimeoutMs = options.syncTimeoutMs ?? 15_000;
    this.#typingIntervalMs = options.typingIntervalMs ?? 3_000;
    const random = options.random ?? Math.random;
    this.#tokens = new TokenKeeper(options.getToken, {
      ...(options.refreshMarginMs !== undefined ? { refreshMarginMs: options.refreshMarginMs } : {}),
    });
    const rest = new RestClient({
      baseUrl: options.apiUrl,
      fetch: options.fetch ?? defaultFetch,
      tokens: this.#tokens,
      onUnauthorized: (error: ApiError) => this.#events.emit('authError', { error, loginUrl: error.loginUrl }),
      ...(options.requestTimeoutMs !== undefined ? { timeoutMs: options.requestTimeoutMs } : {}),
    });
    this.api = new MessengerApi(rest);
    this.#reads = new ReadMarks(this.api, { random });
    this.#outbox = new Outbox({
      publish: (payload) => this.#connection.publish(topics.inbound(this.#user as string), payload),
      isOnline: () => this.#connection.link !== null,
      onChange: (message) => this.#events.emit('outgoing', message),
      random,
      ...(options.ackTimeoutMs !== undefined ? { ackTimeoutMs: options.ackTimeoutMs } : {}),
      ...(options.maxUnanswered !== undefined ? { maxUnanswered: options.maxUnanswered } : {}),
    });
    this.#connection = new Connection({
      url: options.mqttUrl,
      connector: options.connector ?? mqttjsConnector(),
      tokens: this.#tokens,
      device: this.device,
      random,
      ...(options.backoff !== undefined ? { backoff: options.backoff } : {}),
      ...(options.reconnectOnRefresh !== undefined ? { reconnectOnRefresh: options.reconnectOnRefresh } : {}),
      subscriptions: (user) => [topics.messages(user), topics.events(user), ...this.#presence.filters()],
      onReady: (link, user) => this.#ready(link, user),
      onLost: () => this.#lost(),
      onMessage: (topic, payload) => this.#received(topic, payload),
      onStatus: (status) => {
        this.#status = status;
        this.#events.emit('status', status);
      },
      onAuthError: (error) => this.#events.emit('authError', { error, loginUrl: null }),
    });
  }

  on<K extends keyof ClientEvents>(name: K, listener: Listener<ClientEvents[K]>): () => void {
    return this.#events.on(name, listener);
  }

  once<K extends keyof ClientEvents>(name: K, listener: Listener<ClientEvents[K]>): () => void {
    return this.#events.once(name, listener);
  }

  off<K extends keyof ClientEvents>(name: K, listener: Listener<ClientEvents[K]>): void {
    this.#events.off(name, listener);
  }

  /** The user id (the token's `sub`), once connected. */
  get user(): string | null {
    return this.#user;
  }

  get status(): ConnectionStatus {
    return this.#status;
  }

  /** The catch-up watermark: every message to this user up to this id has been received. */
  get lastId(): number | null {
    return this.#catchUp.lastId;
  }

  /**
   * Gets a token, loads the watermark and connects; resolves once the broker has accepted the
   * connection and it is ready (subscribed, caught up, presence said, the outbox flushed): the
   * user is then known to the server. Until then a lost or refused connection is retried with
   * backoff (`status` events say so, `waiting` with the next try). Rejects, and stops, if
   * `getToken` fails or the broker refuses the token (`authError` is emitted too), or when
   * {@link close} is called first. Calling it again while connected resolves at once.
   */
  async connect(): Promise<void> {
    if (this.#started) return this.#firstOnline ?? undefined;
    this.#started = true;
    try {
      await this.#tokens.fresh();
    } catch (error) {
      this.#started = false;
      throw error;
    }
    const user = this.#tokens.user as string;
    if (this.#user !== user) {
      this.#user = user;
      this.#savedId = await this.#store.load(user);
      this.#catchUp = new CatchUp(this.#savedId);
    }
    const online = new Promise<void>((resolve, reject) => {
      const offs = [
        this.#events.on('status', (status) => {
          if (status.state === 'online') done(null);
          else if (status.state === 'stopped') done(new Error('the client was closed before it connected'));
        }),
        this.#events.on('authError', ({ error }) => done(error)),
      ];
      const done = (error: Error | null): void => {
        for (const off of offs) off();
        this.#firstOnline = null;
        if (error === null) resolve();
        else {
          reject(error);
          if (this.#started) void this.close();
        }
      };
    });
    this.#firstOnline = online;
    this.#connection.start();
    return online;
  }

  /** Says offline on this device's presence topic, then disconnects. Pending messages stay listed. */
  async close(): Promise<void> {
    this.#started = false;
    this.#clearSyncTimer();
    this.#outbox.dispose();
    await this.#connection.stop(async (link) => {
      if (this.#announce && this.#user) {
        // Empty and retained: offline, and the broker forgets this device's state.
        await link.publish(topics.presence(this.#user, this.device), '', true);
      }
    });
  }

  /** Connect now instead of waiting out the backoff (the browser is back online). */
  reconnectNow(): void {
    this.#connection.reconnectNow();
  }

  /** Sends a message; follow it with `outgoing` events (same `clientId`). */
  send(to: string, body: string, options: { clientId?: string } = {}): OutgoingMessage {
    return this.#outbox.send({ to, body, ...options });
  }

  /** Tips a creator, with an optional message. A declined charge: `failed` with `billingUrl`. */
  sendTip(to: string, tip: TipDraft, body = '', options: { clientId?: string } = {}): OutgoingMessage {
    return this.#outbox.send({ to, body, tip, ...options });
  }

  /** A creator's message to one of their lists (`accepted` when queued, `sent` when fanned out). */
  sendToList(list: string, body: string, options: { clientId?: string } = {}): OutgoingMessage {
    return this.#outbox.send({ list, body, ...options });
  }

  /** Sends a failed message again: same client id (a declined tip: a new one). */
  retry(clientId: string): OutgoingMessage {
    return this.#outbox.retry(clientId);
  }

  /** Forgets a failed message. */
  discard(clientId: string): boolean {
    return this.#outbox.discard(clientId);
  }

  /** Messages sent and not yet `sent`: pending, accepted, failed. */
  outgoing(): OutgoingMessage[] {
    return this.#outbox.list();
  }

  /** Tells `to` this user is typing; at most once per `typingIntervalMs` per peer. False if skipped. */
  typing(to: string): boolean {
    const now = Date.now();
    const last = this.#typingSent.get(to);
    if (this.#connection.link === null || (last !== undefined && now - last < this.#typingIntervalMs)) return false;
    this.#typingSent.set(to, now);
    this.#command({ type: 'typing', to });
    return true;
  }

  /** Marks read every message to this user up to `upTo` (from `peer` only, if given). */
  markRead(upTo: number, peer?: string): Promise<void> {
    return this.#reads.mark(upTo, peer);
  }

  /** Follows `user`'s presence (`presence` events). */
  watchPresence(user: string): void {
    if (this.#presence.watch(user)) this.#connection.link?.subscribe([this.#presence.filter(user)]).catch(() => undefined);
  }

  unwatchPresence(user: string): void {
    if (this.#presence.unwatch(user)) {
      this.#connection.link?.unsubscribe([this.#presence.filter(user)]).catch(() => undefined);
    }
  }

  isOnline(user: string): boolean {
    return this.#presence.isOnline(user);
  }

  // --- wiring

  async #ready(link: MqttLink, user: string): Promise<void> {
    this.#presence.reset();
    // Subscribed: ask for what was missed first, then announce presence (which makes the server
    // push unread messages too: they are deduplicated), then resend what waits.
    this.#sync(this.#catchUp.begin());
    this.#events.emit('catchUp', { state: 'syncing', lastId: this.#catchUp.lastId });
    if (this.#announce) await link.publish(topics.presence(user, this.device), 'online', true);
    this.#outbox.online();
  }

  #lost(): void {
    this.#clearSyncTimer();
    this.#catchUp.interrupt();
    this.#outbox.offline();
  }

  #received(topic: string, payload: Uint8Array): void {
    const user = this.#user;
    if (user === null) return;
    try {
      if (topic === topics.messages(user)) this.#onMessage(parseMessage(decodeJson(payload)));
      else if (topic === topics.events(user)) this.#onEvent(parseEvent(decodeJson(payload)));
      else {
        const change = this.#presence.update(topic, payload);
        if (change) this.#events.emit('presence', change);
      }
    } catch (e) {
      this.#events.emit('invalid', { topic, error: e instanceof Error ? e : new Error(String(e)) });
    }
  }

  #onMessage(message: Message): void {
    const fresh = this.#catchUp.receive(message);
    this.#saveLastId();
    if (fresh) this.#events.emit('message', message);
  }

  #onEvent(event: ReturnType<typeof parseEvent>): void {
    switch (event.type) {
      case 'ack':
        this.#outbox.ack(event);
        this.#events.emit('ack', event);
        break;
      case 'error':
        if (this.#outbox.error(event)) break;
        if (event.client_id !== null && event.client_id === this.#syncId && event.code === 'rate_limited' && this.#catchUp.pending) {
          // our sync (every device of the user gets every error): ask again when allowed
          this.#armSync(Math.ceil((event.retry_after ?? 1) * 1000));
        }
        this.#events.emit('serverError', event);
        break;
      case 'tip_failed':
        this.#outbox.tipFailed(event);
        this.#events.emit('tipFailed', event);
        break;
      case 'read':
        this.#events.emit('read', event);
        break;
      case 'typing':
        this.#events.emit('typing', event);
        break;
      case 'synced': {
        // the answer to this device's own sync only (a server before request ids: CatchUp judges)
        if (event.client_id !== undefined && event.client_id !== this.#syncId) break;
        const step = this.#catchUp.synced(event);
        if (step.kind === 'next') this.#sync({ after: step.after });
        else if (step.kind === 'done') {
          this.#clearSyncTimer();
          this.#events.emit('catchUp', { state: 'live', lastId: step.lastId });
        }
        this.#saveLastId();
        break;
      }
    }
  }

  #sync(request: { after: number | null }): void {
    // a new id per request: a late answer to an earlier one (resent after a timeout) is not taken
    this.#syncId = `sync-${randomId().slice(0, 16)}`;
    const id = this.#syncId;
    const command: Command = request.after === null ? { type: 'sync', id } : { type: 'sync', after: request.after, id };
    this.#command(command);
    this.#armSync(this.#syncTimeoutMs);
  }

  /** Sends the pending `sync` again after `ms` unless its `synced` comes first. */
  #armSync(ms: number): void {
    this.#clearSyncTimer();
    this.#syncTimer = setTimeout(() => {
      this.#syncTimer = null;
      const pending = this.#catchUp.pending;
      if (pending && this.#connection.link) this.#sync(pending);
    }, ms);
  }

  #clearSyncTimer(): void {
    if (this.#syncTimer !== null) clearTimeout(this.#syncTimer);
    this.#syncTimer = null;
  }

  #command(command: Command): void {
    if (this.#user === null) return;
    this.#connection.publish(topics.inbound(this.#user), encodeCommand(command)).catch(() => undefined);
  }

  #saveLastId(): void {
    const lastId = this.#catchUp.lastId;
    if (lastId === null || lastId === this.#savedId || this.#user === null) return;
    this.#savedId = lastId;
    Promise.resolve(this.#store.save(this.#user, lastId)).catch(() => undefined);
  }
}
