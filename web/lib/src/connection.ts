/**
 * One logical MQTT connection that stays up: connect with a token, subscribe, hand the link to
 * the client, replace the token before it expires, reconnect after a loss with exponential
 * backoff and full jitter. Each CONNECT is a new {@link MqttLink} with the current token as its
 * password, under the same client id `{uid}/{device}`.
 */

import { DEFAULT_BACKOFF, backoffDelay, type Backoff } from './backoff.js';
import { topics } from './protocol.js';
import { TokenError, type TokenKeeper } from './token.js';
import { ConnectRefused, type MqttConnector, type MqttLink } from './transport.js';

export type ConnectionState = 'connecting' | 'online' | 'waiting' | 'stopped';

export interface ConnectionStatus {
  state: ConnectionState;
  /** Failed attempts in a row so far. */
  attempt: number;
  /** Why this state: the first connect, a token refresh, a lost link, a failed attempt. */
  reason: 'start' | 'refresh' | 'lost' | 'failed' | 'stop';
  /** With `waiting`: milliseconds until the next attempt. */
  delayMs?: number;
  /** What ended the last link or failed the last attempt. */
  error?: Error;
}

export interface ConnectionOptions {
  url: string;
  connector: MqttConnector;
  tokens: TokenKeeper;
  /** The client id suffix and presence device name. */
  device: string;
  /** Topic filters to subscribe on every link, the user's own two first. */
  subscriptions(user: string): string[];
  /** The link is subscribed: catch up, announce presence, flush the outbox. A throw drops the link. */
  onReady(link: MqttLink, user: string): Promise<void>;
  /** The link is gone (lost, replaced or stopped). */
  onLost(): void;
  onMessage(topic: string, payload: Uint8Array): void;
  onStatus(status: ConnectionStatus): void;
  /** The broker refused the token, or `getToken` failed. The connection keeps retrying. */
  onAuthError(error: Error): void;
  backoff?: Backoff;
  random?: () => number;
  now?: () => number;
  /** Reconnect with the new token (the default); else only REST uses it until the next reconnect. */
  reconnectOnRefresh?: boolean;
  /** A link that lived this long resets the backoff; one that died sooner counts as a failure. */
  stableMs?: number;
  keepaliveS?: number;
  connectTimeoutMs?: number;
}

type Ending = { kind: 'lost'; error: Error } | { kind: 'refresh' } | { kind: 'stop' };

export class NotConnected extends Error {
  override name = 'NotConnected';
  constructor() {
    super('not connected to the broker');
  }
}

export class Connection {
  readonly #o: Required<Omit<ConnectionOptions, 'backoff' | 'random' | 'now'>>;
  readonly #backoff: Backoff;
  readonly #random: () => number;
  readonly #now: () => number;
  #link: MqttLink | null = null;
  #generation = 0;
  #stopped = true;
  #runs = 0;
  /** Ends the current link's life (stop). */
  #endLink: ((ending: Ending) => void) | null = null;
  /** Cuts the backoff wait short. */
  #wakeWait: (() => void) | null = null;
  #refreshTimer: ReturnType<typeof setTimeout> | null = null;
  #refreshFailures = 0;

  constructor(options: ConnectionOptions) {
    this.#o = {
      ...options,
      reconnectOnRefresh: options.reconnectOnRefresh ?? true,
      stableMs: options.stableMs ?? 10_000,
      keepaliveS: options.keepaliveS ?? 30,
      connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
    };
    this.#backoff = options.backoff ?? DEFAULT_BACKOFF;
    this.#random = options.random ?? Math.random;
    this.#now = options.now ?? Date.now;
  }

  /** The subscribed link, or null while connecting or waiting. */
  get link(): MqttLink | null {
    return this.#link;
  }

  /** Connects, and keeps connecting until {@link stop}. */
  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    void this.#run(++this.#runs);
  }

  /** Ends the connection: `beforeEnd` runs on the live link first (say offline), then DISCONNECT. */
  async stop(beforeEnd?: (link: MqttLink) => Promise<void>): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#clearRefresh();
    const link = this.#link;
    this.#link = null;
    this.#generation++;
    if (link) {
      try {
        await beforeEnd?.(link);
      } catch {
        // best effort: the Last Will covers a goodbye that did not go out
      }
      await link.end().catch(() => undefined);
      this.#o.onLost();
    }
    this.#endLink?.({ kind: 'stop' });
    this.#wakeWait?.();
    this.#o.onStatus({ state: 'stopped', attempt: 0, reason: 'stop' });
  }

  /** Skip the backoff wait (the browser says it is online again, the tab became visible). */
  reconnectNow(): void {
    this.#wakeWait?.();
  }

  /** Publishes on the current link; rejects with {@link NotConnected} when there is none. */
  publish(topic: string, payload: string, retain = false): Promise<void> {
    const link = this.#link;
    return link ? link.publish(topic, payload, retain) : Promise.reject(new NotConnected());
  }

  async #run(run: number): Promise<void> {
    let attempt = 0;
    let reason: ConnectionStatus['reason'] = 'start';
    let error: Error | undefined;
    while (!this.#stopped && run === this.#runs) {
      this.#o.onStatus({ state: 'connecting', attempt, reason, ...(error ? { error } : {}) });
      const outcome = await this.#attempt(reason);
      if (this.#stopped || run !== this.#runs) return;
      if (outcome.kind === 'refresh') {
        attempt = 0;
        reason = 'refresh';
        error = undefined;
        continue; // straight to the next CONNECT, no backoff
      }
      error = outcome.error;
      if (outcome.kind === 'lost' && outcome.onlineMs >= this.#o.stableMs) attempt = 0;
      reason = outcome.kind;
      const delayMs = backoffDelay(attempt, this.#backoff, this.#random);
      attempt++;
      this.#o.onStatus({ state: 'waiting', attempt, reason, delayMs, error });
      await this.#wait(delayMs);
    }
  }

  /** One CONNECT and, if it succeeds, the life of that link. */
  async #attempt(reason: ConnectionStatus['reason']): Promise<
    { kind: 'refresh' } | { kind: 'lost'; error: Error; onlineMs: number } | { kind: 'failed'; error: Error }
  > {
    const generation = ++this.#generation;
    let ended!: (ending: Ending) => void;
    const ending = new Promise<Ending>((resolve) => (ended = resolve));
    let link: MqttLink | null = null;
    try {
      const tokens = this.#o.tokens;
      let token: string;
      try {
        token = await tokens.current();
      } catch (e) {
        if (e instanceof TokenError) throw e;
        throw new TokenError(`getToken() failed: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
      }
      const user = tokens.user as string;
      link = await this.#o.connector.connect(
        {
          url: this.#o.url,
          clientId: `${user}/${this.#o.device}`,
          username: user,
          password: token,
          will: { topic: topics.presence(user, this.#o.device), payload: 'offline' },
          keepaliveS: this.#o.keepaliveS,
          connectTimeoutMs: this.#o.connectTimeoutMs,
        },
        {
          message: (topic, payload) => {
            if (generation === this.#generation) this.#o.onMessage(topic, payload);
          },
          close: (error) => ended({ kind: 'lost', error: error ?? new Error('the connection was lost') }),
        },
      );
      if (this.#stopped || generation !== this.#generation) {
        await link.end().catch(() => undefined);
        return { kind: 'failed', error: new Error('stopped') };
      }
      this.#endLink = ended;
      const ready = (async () => {
        await link.subscribe(this.#o.subscriptions(user));
        this.#link = link;
        await this.#o.onReady(link, user);
      })();
      const first = await Promise.race([ready.then(() => null), ending]);
      if (first !== null) throw first.kind === 'lost' ? first.error : new Error('stopped');
    } catch (e) {
      const error = e instanceof Error ? e : new Error(String(e));
      if ((error instanceof ConnectRefused && error.notAuthorized) || error instanceof TokenError) {
        this.#o.tokens.invalidate();
        this.#o.onAuthError(error);
      }
      if (link) {
        if (this.#link === link) {
          this.#link = null;
          this.#o.onLost();
        }
        await link.end().catch(() => undefined);
      }
      this.#endLink = null;
      return { kind: 'failed', error };
    }

    const onlineSince = this.#now();
    this.#refreshFailures = 0;
    this.#scheduleRefresh(generation, ended);
    this.#o.onStatus({ state: 'online', attempt: 0, reason });
    const end = await ending;
    this.#clearRefresh();
    this.#endLink = null;
    if (end.kind === 'stop') return { kind: 'failed', error: new Error('stopped') };
    if (this.#link === link) {
      this.#link = null;
      this.#generation++; // late messages of the old link are dropped
      if (end.kind === 'refresh') await link.end().catch(() => undefined);
      this.#o.onLost();
    }
    return end.kind === 'refresh' ? end : { kind: 'lost', error: end.error, onlineMs: this.#now() - onlineSince };
  }

  #scheduleRefresh(generation: number, ended: (ending: Ending) => void): void {
    const refreshAt = this.#o.tokens.refreshAt;
    if (refreshAt === 0) return;
    const delay = Math.max(1_000, refreshAt - this.#now());
    this.#refreshTimer = setTimeout(() => this.#refresh(generation, ended), delay);
  }

  #refresh(generation: number, ended: (ending: Ending) => void): void {
    this.#refreshTimer = null;
    this.#o.tokens.fresh().then(
      () => {
        if (generation !== this.#generation) return; // that link is gone
        this.#refreshFailures = 0;
        if (this.#o.reconnectOnRefresh) ended({ kind: 'refresh' });
        else this.#scheduleRefresh(generation, ended);
      },
      (error: unknown) => {
        if (generation !== this.#generation) return;
        this.#o.onAuthError(error instanceof Error ? error : new Error(String(error)));
        // The link outlives the token (the broker checks it at CONNECT only): keep it, try again.
        const retry = Math.max(1_000, backoffDelay(this.#refreshFailures++, this.#backoff, this.#random));
        this.#refreshTimer = setTimeout(() => this.#refresh(generation, ended), retry);
      },
    );
  }

  #clearRefresh(): void {
    if (this.#refreshTimer !== null) clearTimeout(this.#refreshTimer);
    this.#refreshTimer = null;
  }

  #wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#wakeWait = null;
        resolve();
      }, ms);
      this.#wakeWait = () => {
        clearTimeout(timer);
        this.#wakeWait = null;
        resolve();
      };
    });
  }
}
