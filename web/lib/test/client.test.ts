import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { MessengerClient, memoryStore, type ClientEvents, type ClientOptions, type CursorStore } from '../src/client.js';
import { ConnectRefused } from '../src/transport.js';
import { FakeConnector, fakeFetch, json, makeToken, wireMessage } from './fakes.js';

const MESSAGES = 'users/bob/messages';
const EVENTS = 'users/bob/events';

function setup(options: Partial<ClientOptions> & { lastId?: number } = {}) {
  const connector = new FakeConnector();
  const store: CursorStore & { saved: number[] } = Object.assign(
    (() => {
      const mem = memoryStore();
      if (options.lastId !== undefined) void mem.save('bob', options.lastId);
      return mem;
    })(),
    { saved: [] as number[] },
  );
  const save = store.save.bind(store);
  store.save = (user, id) => {
    store.saved.push(id);
    return save(user, id);
  };
  const fetch = fakeFetch(() => json(200, { read: [] }));
  const client = new MessengerClient({
    mqttUrl: 'ws://127.0.0.1:8083/mqtt',
    apiUrl: 'http://127.0.0.1:8080',
    getToken: async () => makeToken('bob', Math.floor(Date.now() / 1000) + 3_600),
    device: 'tab-1',
    store,
    connector,
    fetch,
    random: () => 0.5,
    ...options,
  });
  const seen: { [K in keyof ClientEvents]?: ClientEvents[K][] } = {};
  const record = <K extends keyof ClientEvents>(name: K) => {
    const list: ClientEvents[K][] = [];
    seen[name] = list as never;
    client.on(name, (payload) => list.push(payload));
    return list;
  };
  return { client, connector, store, fetch, record };
}

const flush = () => vi.advanceTimersByTimeAsync(0);

/** The id of the last sync the client sent on `link`. */
function syncId(link: { commands(): Record<string, unknown>[] }): string {
  const sync = [...link.commands()].reverse().find((c) => c['type'] === 'sync');
  return String(sync?.['id']);
}

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('MessengerClient', () => {
  it('subscribes, then asks for what it missed, then announces presence', async () => {
    const t = setup({ lastId: 120 });
    const catchUps = t.record('catchUp');
    await t.client.connect();
    await flush();
    const link = t.connector.last;
    expect(t.client.user).toBe('bob');
    expect(link.subscribed).toEqual([MESSAGES, EVENTS]);
    expect(link.published).toEqual([
      { topic: 'inbound/bob', payload: expect.stringMatching(/^\{"type":"sync","after":120,"id":"sync-[0-9a-f]{16}"\}$/), retain: false },
      { topic: 'presence/bob/tab-1', payload: 'online', retain: true },
    ]);
    expect(catchUps).toEqual([{ state: 'syncing', lastId: 120 }]);
  });

  it('hands each new message on once, pages through the catch-up, and stores the watermark', async () => {
    const t = setup({ lastId: 100 });
    const messages = t.record('message');
    const catchUps = t.record('catchUp');
    await t.client.connect();
    await flush();
    const link = t.connector.last;
    link.deliver(MESSAGES, wireMessage(300)); // live, during the catch-up
    link.deliver(MESSAGES, wireMessage(101));
    link.deliver(MESSAGES, wireMessage(150));
    // another device's catch-up ends (every device of the user gets it): not this one's
    link.deliver(EVENTS, { type: 'synced', last_id: 150, more: false, client_id: 'sync-of-the-phone' });
    link.deliver(EVENTS, { type: 'synced', last_id: 150, more: false, client_id: null }); // the server's own
    expect(catchUps.at(-1)).toEqual({ state: 'syncing', lastId: 100 });
    link.deliver(EVENTS, { type: 'synced', last_id: 150, more: true, client_id: syncId(link) });
    expect(link.commands().at(-1)).toEqual({ type: 'sync', after: 150, id: expect.stringMatching(/^sync-/) });
    link.deliver(MESSAGES, wireMessage(150)); // the boundary again
    link.deliver(MESSAGES, wireMessage(300));
    link.deliver(EVENTS, { type: 'synced', last_id: 300, more: false, client_id: syncId(link) });
    expect(messages.map((m) => m.id)).toEqual([300, 101, 150]);
    expect(catchUps.at(-1)).toEqual({ state: 'live', lastId: 300 });
    expect(t.store.saved).toEqual([150, 300]);
    link.deliver(MESSAGES, wireMessage(301)); // live now: the watermark follows
    expect(t.client.lastId).toBe(301);
  });

  it('after a lost link, catches up from the watermark and resends what was not acknowledged', async () => {
    const t = setup({ lastId: 10 });
    const outgoing = t.record('outgoing');
    await t.client.connect();
    await flush();
    const first = t.connector.last;
    first.deliver(EVENTS, { type: 'synced', last_id: 10, more: false });
    first.deliver(MESSAGES, wireMessage(11));
    const sent = t.client.send('alice', 'are you there?');
    first.drop();
    await vi.advanceTimersByTimeAsync(500);
    const second = t.connector.last;
    expect(second).not.toBe(first);
    expect(second.commands()).toEqual([
      { type: 'sync', after: 11, id: expect.stringMatching(/^sync-/) },
      { type: 'message', id: sent.clientId, to: 'alice', body: 'are you there?' },
    ]);
    second.deliver(EVENTS, { type: 'ack', client_id: sent.clientId, id: 12, status: 'sent', duplicate: true, sent_at: '2026-11-23T10:00:00.000000Z' });
    expect(outgoing.map((m) => m.status)).toEqual(['pending', 'sent']);
    expect(t.client.outgoing()).toEqual([]);
  });

  it('resends the sync after retry_after when the catch-up is rate limited, and after a silent timeout', async () => {
    const t = setup({ lastId: 5, syncTimeoutMs: 15_000 });
    const serverErrors = t.record('serverError');
    await t.client.connect();
    await flush();
    const link = t.connector.last;
    const refused = { type: 'error', code: 'rate_limited', detail: 'too many catch-up requests', retry_after: 2, limit: 'sync' };
    link.deliver(EVENTS, { ...refused, client_id: 'sync-of-the-phone' }); // another device's: not ours
    await vi.advanceTimersByTimeAsync(2_000);
    expect(link.commands()).toHaveLength(1);
    link.deliver(EVENTS, { ...refused, client_id: syncId(link) });
    expect(serverErrors).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(1_999);
    expect(link.commands()).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    const sync = { type: 'sync', after: 5, id: expect.stringMatching(/^sync-/) };
    expect(link.commands()).toEqual([sync, sync]);
    const [first, second] = link.commands().map((c) => c['id']);
    expect(second).not.toBe(first); // a new id per request: a late answer to the first is not taken
    await vi.advanceTimersByTimeAsync(15_000); // no synced: ask again
    expect(link.commands()).toHaveLength(3);
    link.deliver(EVENTS, { type: 'synced', last_id: 5, more: false, client_id: first });
    await vi.advanceTimersByTimeAsync(15_000);
    expect(link.commands()).toHaveLength(4); // that was the answer to an old request
    link.deliver(EVENTS, { type: 'synced', last_id: 5, more: false, client_id: syncId(link) });
    await vi.advanceTimersByTimeAsync(60_000);
    expect(link.commands()).toHaveLength(4);
  });

  it('routes events: tip_failed with its billing link, read, typing, acks of other devices', async () => {
    const t = setup();
    const tipFailed = t.record('tipFailed');
    const reads = t.record('read');
    const typing = t.record('typing');
    const acks = t.record('ack');
    const outgoing = t.record('outgoing');
    await t.client.connect();
    await flush();
    const link = t.connector.last;
    const tip = t.client.sendTip('creator1', { amount: 500, currency: 'USD' }, 'thanks!');
    link.deliver(EVENTS, { type: 'tip_failed', client_id: tip.clientId, billing_url: 'https://example.com/billing', reason: 'insufficient_funds', tip: { amount: 500, currency: 'USD', status: 'failed' } });
    link.deliver(EVENTS, { type: 'read', by: 'alice', up_to: 7 });
    link.deliver(EVENTS, { type: 'typing', from: 'alice' });
    link.deliver(EVENTS, { type: 'ack', client_id: 'from-my-phone', id: 9, status: 'sent', duplicate: false, sent_at: '2026-11-23T10:00:00.000000Z' });
    expect(tipFailed[0]?.billing_url).toBe('https://example.com/billing');
    expect(outgoing.at(-1)).toMatchObject({ clientId: tip.clientId, status: 'failed', billingUrl: 'https://example.com/billing' });
    expect(reads).toEqual([{ type: 'read', by: 'alice', up_to: 7 }]);
    expect(typing).toEqual([{ type: 'typing', from: 'alice' }]);
    expect(acks.map((a) => a.client_id)).toEqual(['from-my-phone']);
  });

  it('drops malformed payloads with an invalid event and keeps going', async () => {
    const t = setup();
    const invalid = t.record('invalid');
    const messages = t.record('message');
    await t.client.connect();
    await flush();
    const link = t.connector.last;
    link.deliver(MESSAGES, '{not json');
    link.deliver(MESSAGES, wireMessage(1, { id: -1 }));
    link.deliver(EVENTS, { type: 'from_the_future' });
    link.deliver(MESSAGES, wireMessage(2));
    expect(invalid.map((i) => i.topic)).toEqual([MESSAGES, MESSAGES, EVENTS]);
    expect(messages.map((m) => m.id)).toEqual([2]);
  });

  it('sends typing at most once per interval per peer', async () => {
    const t = setup({ typingIntervalMs: 3_000 });
    expect(t.client.typing('alice')).toBe(false); // not connected
    await t.client.connect();
    await flush();
    expect([t.client.typing('alice'), t.client.typing('alice'), t.client.typing('carol')]).toEqual([true, false, true]);
    await vi.advanceTimersByTimeAsync(3_000);
    expect(t.client.typing('alice')).toBe(true);
    expect(t.connector.last.commands().filter((c) => c['type'] === 'typing')).toEqual([
      { type: 'typing', to: 'alice' },
      { type: 'typing', to: 'carol' },
      { type: 'typing', to: 'alice' },
    ]);
  });

  it('watches presence over the retained topics, and subscribes again after a reconnect', async () => {
    const t = setup();
    const presence = t.record('presence');
    await t.client.connect();
    await flush();
    t.client.watchPresence('alice');
    await flush();
    expect(t.connector.last.subscribed).toContain('presence/alice/+');
    t.connector.last.deliver('presence/alice/phone', 'online');
    expect(presence.at(-1)).toMatchObject({ user: 'alice', online: true });
    expect(t.client.isOnline('alice')).toBe(true);
    t.connector.last.drop();
    await vi.advanceTimersByTimeAsync(500);
    expect(t.connector.last.subscribed).toEqual([MESSAGES, EVENTS, 'presence/alice/+']);
    expect(t.client.isOnline('alice')).toBe(false); // until the broker replays the retained state
  });

  it('marks read over REST', async () => {
    const t = setup();
    await t.client.connect();
    await t.client.markRead(42, 'alice');
    expect(t.fetch.requests.map((r) => [r.method, r.url.pathname, r.body])).toEqual([['POST', '/v1/messages/read', { up_to: 42, with: 'alice' }]]);
  });

  it('close() says offline with an empty retained presence, then disconnects', async () => {
    const t = setup();
    const statuses = t.record('status');
    await t.client.connect();
    await flush();
    const link = t.connector.last;
    await t.client.close();
    expect(link.published.at(-1)).toEqual({ topic: 'presence/bob/tab-1', payload: '', retain: true });
    expect(link.ended).toBe(true);
    expect(statuses.at(-1)?.state).toBe('stopped');
    await vi.advanceTimersByTimeAsync(60_000);
    expect(t.connector.connects).toHaveLength(1);
  });

  it('connect() rejects when there is no usable token, and reports nothing was started', async () => {
    const t = setup({ getToken: async () => 'not-a-jwt' });
    await expect(t.client.connect()).rejects.toThrow(/not a JWT/);
    expect(t.connector.connects).toHaveLength(0);
  });

  it('connect() resolves once the broker accepted the connection, retrying meanwhile', async () => {
    const t = setup();
    t.connector.outcomes.push(new Error('ECONNREFUSED'), new Error('ECONNREFUSED'));
    const statuses = t.record('status');
    let connected = false;
    const connecting = t.client.connect().then(() => (connected = true));
    await flush();
    expect(connected).toBe(false);
    expect(statuses.map((s) => s.state)).toContain('waiting');
    await vi.advanceTimersByTimeAsync(10_000);
    await connecting;
    expect(t.connector.connects).toHaveLength(3);
    expect(t.client.status.state).toBe('online');
    await t.client.connect(); // again: at once
  });

  it('connect() rejects and stops when the broker refuses the token', async () => {
    const t = setup();
    t.connector.outcomes.push(new ConnectRefused(5));
    const authErrors = t.record('authError');
    const connecting = t.client.connect();
    const outcome = expect(connecting).rejects.toBeInstanceOf(ConnectRefused);
    await flush();
    await outcome;
    expect(authErrors).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(t.connector.connects).toHaveLength(1); // stopped: no retries behind the caller's back
    expect(t.client.status.state).toBe('stopped');
  });

  it('connect() rejects when close() comes first', async () => {
    const t = setup();
    t.connector.outcomes.push(new Error('ECONNREFUSED'));
    const connecting = t.client.connect();
    const outcome = expect(connecting).rejects.toThrow('closed before it connected');
    await flush();
    await t.client.close();
    await outcome;
  });

  it('refuses a device name that is not a valid presence level', () => {
    expect(() => setup({ device: 'tab/1' })).toThrow(/device/);
  });
});
