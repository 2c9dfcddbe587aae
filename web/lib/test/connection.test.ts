import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { Connection, type ConnectionOptions, type ConnectionStatus } from '../src/connection.js';
import { TokenKeeper } from '../src/token.js';
import { ConnectRefused, type MqttLink } from '../src/transport.js';
import { FakeConnector, makeToken } from './fakes.js';

const T0 = Date.UTC(2026, 10, 23, 10, 0, 0);

interface Harness {
  connection: Connection;
  connector: FakeConnector;
  getToken: ReturnType<typeof vi.fn<() => Promise<string>>>;
  statuses: ConnectionStatus[];
  ready: MqttLink[];
  lost: number[];
  messages: string[];
  authErrors: Error[];
}

/** Tokens live `ttlS` seconds from the (fake) time they are issued. */
function harness(options: Partial<ConnectionOptions> & { ttlS?: number; refreshMarginMs?: number } = {}): Harness {
  const connector = new FakeConnector();
  const ttl = options.ttlS ?? 600;
  const getToken = vi.fn(async () => makeToken('alice', Math.floor(Date.now() / 1000) + ttl));
  const statuses: ConnectionStatus[] = [];
  const ready: MqttLink[] = [];
  const lost: number[] = [];
  const messages: string[] = [];
  const authErrors: Error[] = [];
  const connection = new Connection({
    url: 'ws://127.0.0.1:8083/mqtt',
    connector,
    tokens: new TokenKeeper(getToken, { refreshMarginMs: options.refreshMarginMs ?? 60_000 }),
    device: 'web-1',
    subscriptions: (user) => [`users/${user}/messages`, `users/${user}/events`],
    onReady: async (link) => {
      ready.push(link);
    },
    onLost: () => lost.push(Date.now()),
    onMessage: (topic) => messages.push(topic),
    onStatus: (s) => statuses.push(s),
    onAuthError: (e) => authErrors.push(e),
    random: () => 0.5,
    backoff: { baseMs: 1_000, maxMs: 8_000 },
    ...options,
  });
  return { connection, connector, getToken, statuses, ready, lost, messages, authErrors };
}

beforeEach(() => {
  vi.useFakeTimers();
  vi.setSystemTime(T0);
});
afterEach(() => {
  vi.useRealTimers();
});

const flush = () => vi.advanceTimersByTimeAsync(0);

describe('Connection', () => {
  it('connects as the token user with client id {uid}/{device} and a Last Will, then subscribes', async () => {
    const h = harness();
    h.connection.start();
    await flush();
    expect(h.connector.connects).toHaveLength(1);
    const options = h.connector.connects[0];
    const token = await h.getToken.mock.results[0]?.value;
    expect(options).toMatchObject({
      url: 'ws://127.0.0.1:8083/mqtt',
      clientId: 'alice/web-1',
      username: 'alice',
      password: token,
      will: { topic: 'presence/alice/web-1', payload: 'offline' },
    });
    expect(h.connector.last.subscribed).toEqual(['users/alice/messages', 'users/alice/events']);
    expect(h.ready).toEqual([h.connector.last]);
    expect(h.connection.link).toBe(h.connector.last);
    expect(h.statuses.map((s) => s.state)).toEqual(['connecting', 'online']);
  });

  it('reconnects with a fresh token before the current one expires, closing the old link cleanly', async () => {
    const h = harness({ ttlS: 600, refreshMarginMs: 60_000 });
    h.connection.start();
    await flush();
    const first = h.connector.last;
    await vi.advanceTimersByTimeAsync(539_999); // 1 ms before exp - 60 s
    expect(h.getToken).toHaveBeenCalledTimes(1);
    expect(h.connector.connects).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(h.getToken).toHaveBeenCalledTimes(2);
    const second = h.connector.last;
    expect(second).not.toBe(first);
    expect(first.ended).toBe(true);
    expect(second.options.password).toBe(await h.getToken.mock.results[1]?.value);
    expect(second.options.password).not.toBe(first.options.password);
    expect(second.options.clientId).toBe('alice/web-1');
    expect(h.statuses.at(-2)).toMatchObject({ state: 'connecting', reason: 'refresh', attempt: 0 });
    expect(h.connection.link).toBe(second);
    // and the next refresh is scheduled from the new token
    await vi.advanceTimersByTimeAsync(540_000);
    expect(h.connector.connects).toHaveLength(3);
  });

  it('with tokens shorter-lived than the margin, refreshes at half their life, one getToken each', async () => {
    const h = harness({ ttlS: 6, refreshMarginMs: 60_000 });
    h.connection.start();
    await flush();
    await vi.advanceTimersByTimeAsync(2_999);
    expect(h.connector.connects).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(h.connector.connects).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(3_000);
    expect(h.connector.connects).toHaveLength(3);
    expect(h.getToken).toHaveBeenCalledTimes(3);
  });

  it('keeps the link when getToken fails at refresh time, reports it and tries again', async () => {
    const h = harness({ ttlS: 600 });
    h.connection.start();
    await flush();
    h.getToken.mockRejectedValueOnce(new Error('login service down'));
    await vi.advanceTimersByTimeAsync(540_000);
    expect(h.authErrors.map((e) => e.message)).toEqual(['login service down']);
    expect(h.connection.link).toBe(h.connector.links[0]);
    expect(h.connector.links[0]?.ended).toBe(false);
    await vi.advanceTimersByTimeAsync(1_000); // max(1 s, backoff 500 ms)
    expect(h.connector.connects).toHaveLength(2);
  });

  it('only refreshes (no reconnect) with reconnectOnRefresh: false', async () => {
    const h = harness({ ttlS: 600, reconnectOnRefresh: false });
    h.connection.start();
    await flush();
    await vi.advanceTimersByTimeAsync(540_000);
    expect(h.getToken).toHaveBeenCalledTimes(2);
    expect(h.connector.connects).toHaveLength(1);
  });

  it('reconnects after a loss with exponential backoff and jitter', async () => {
    const h = harness();
    h.connection.start();
    await flush();
    h.connector.outcomes.push(new Error('ECONNREFUSED'), new Error('ECONNREFUSED'), new Error('ECONNREFUSED'));
    h.connector.last.drop();
    await flush();
    expect(h.lost).toHaveLength(1);
    expect(h.connection.link).toBeNull();
    // online for 0 ms < stableMs: counts as a failure from attempt 0; random 0.5 -> half the cap
    const waits = () => h.statuses.filter((s) => s.state === 'waiting').map((s) => s.delayMs);
    expect(waits()).toEqual([500]);
    await vi.advanceTimersByTimeAsync(499);
    expect(h.connector.connects).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(h.connector.connects).toHaveLength(2); // refused
    await vi.advanceTimersByTimeAsync(1_000);
    expect(h.connector.connects).toHaveLength(3); // refused
    await vi.advanceTimersByTimeAsync(2_000);
    expect(h.connector.connects).toHaveLength(4); // refused
    await vi.advanceTimersByTimeAsync(4_000);
    expect(h.connector.connects).toHaveLength(5); // accepted
    expect(waits()).toEqual([500, 1_000, 2_000, 4_000]);
    expect(h.statuses.at(-1)).toMatchObject({ state: 'online' });
    expect(h.statuses.filter((s) => s.state === 'waiting').at(-1)?.error?.message).toBe('ECONNREFUSED');
  });

  it('caps the delay at maxMs', async () => {
    const h = harness();
    for (let i = 0; i < 8; i++) h.connector.outcomes.push(new Error('down'));
    h.connection.start();
    await vi.advanceTimersByTimeAsync(120_000);
    const waits = h.statuses.filter((s) => s.state === 'waiting').map((s) => s.delayMs);
    expect(waits).toEqual([500, 1_000, 2_000, 4_000, 4_000, 4_000, 4_000, 4_000]);
  });

  it('resets the backoff only after a link that stayed up for stableMs', async () => {
    const h = harness({ stableMs: 10_000 });
    h.connection.start();
    await flush();
    h.connector.last.drop(); // at once: attempt 0 -> 500
    await vi.advanceTimersByTimeAsync(500);
    h.connector.last.drop(); // again at once: attempt 1 -> 1000
    await vi.advanceTimersByTimeAsync(1_000);
    await vi.advanceTimersByTimeAsync(10_000);
    h.connector.last.drop(); // after 10 s up: back to 500
    await flush();
    const waits = h.statuses.filter((s) => s.state === 'waiting').map((s) => s.delayMs);
    expect(waits).toEqual([500, 1_000, 500]);
  });

  it('asks for a new token after the broker refuses one (not authorized)', async () => {
    const h = harness();
    h.connector.outcomes.push(new ConnectRefused(5));
    h.connection.start();
    await flush();
    expect(h.authErrors).toHaveLength(1);
    expect(h.authErrors[0]).toBeInstanceOf(ConnectRefused);
    await vi.advanceTimersByTimeAsync(500);
    expect(h.getToken).toHaveBeenCalledTimes(2);
    expect(h.connector.connects[1]?.password).toBe(await h.getToken.mock.results[1]?.value);
    expect(h.connection.link).not.toBeNull();
  });

  it('reports a failing getToken as an auth error and keeps trying with backoff', async () => {
    const h = harness();
    h.getToken.mockRejectedValueOnce(new Error('login service down'));
    h.connection.start();
    await flush();
    expect(h.connector.connects).toHaveLength(0);
    expect(h.authErrors.map((e) => e.message)).toEqual(['getToken() failed: login service down']);
    expect(h.statuses.at(-1)).toMatchObject({ state: 'waiting', reason: 'failed', delayMs: 500 });
    await vi.advanceTimersByTimeAsync(500);
    expect(h.connector.connects).toHaveLength(1);
    expect(h.connection.link).not.toBeNull();
  });

  it('reuses a still-valid token after a network failure (no needless getToken)', async () => {
    const h = harness();
    h.connector.outcomes.push(new Error('ECONNRESET'));
    h.connection.start();
    await vi.advanceTimersByTimeAsync(500);
    expect(h.connector.connects).toHaveLength(2);
    expect(h.getToken).toHaveBeenCalledTimes(1);
  });

  it('drops a link whose subscription is refused, and retries', async () => {
    const h = harness();
    h.connector.refuse.add('users/alice/events');
    h.connection.start();
    await flush();
    expect(h.connector.links[0]?.ended).toBe(true);
    expect(h.ready).toEqual([]);
    expect(h.statuses.at(-1)).toMatchObject({ state: 'waiting', reason: 'failed' });
    h.connector.refuse.clear();
    await vi.advanceTimersByTimeAsync(500);
    expect(h.ready).toHaveLength(1);
  });

  it('stop() says goodbye on the live link, disconnects, and never reconnects', async () => {
    const h = harness();
    h.connection.start();
    await flush();
    const link = h.connector.last;
    await h.connection.stop(async (l) => {
      await l.publish('presence/alice/web-1', '', true);
    });
    expect(link.published).toEqual([{ topic: 'presence/alice/web-1', payload: '', retain: true }]);
    expect(link.ended).toBe(true);
    expect(h.statuses.at(-1)?.state).toBe('stopped');
    await vi.advanceTimersByTimeAsync(3_600_000);
    expect(h.connector.connects).toHaveLength(1);
    await expect(h.connection.publish('inbound/alice', '{}')).rejects.toThrow(/not connected/);
  });

  it('stop() during the backoff wait cancels the next attempt; start() resumes', async () => {
    const h = harness();
    h.connector.outcomes.push(new Error('down'));
    h.connection.start();
    await flush();
    await h.connection.stop();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(h.connector.connects).toHaveLength(1);
    h.connection.start();
    await flush();
    expect(h.connector.connects).toHaveLength(2);
    expect(h.connection.link).not.toBeNull();
  });

  it('reconnectNow() skips the wait', async () => {
    const h = harness({ backoff: { baseMs: 60_000, maxMs: 60_000 } });
    h.connector.outcomes.push(new Error('down'));
    h.connection.start();
    await flush();
    h.connection.reconnectNow();
    await flush();
    expect(h.connector.connects).toHaveLength(2);
  });

  it('drops messages that a replaced link delivers late', async () => {
    const h = harness();
    h.connection.start();
    await flush();
    const old = h.connector.last;
    old.drop();
    await vi.advanceTimersByTimeAsync(500);
    old.deliver('users/alice/messages', '{}');
    h.connector.last.deliver('users/alice/events', '{}');
    expect(h.messages).toEqual(['users/alice/events']);
  });
});
