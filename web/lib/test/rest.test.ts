import { afterEach, describe, expect, it, vi } from 'vitest';

import { MessengerApi } from '../src/api.js';
import { ApiError, NetworkError, RestClient } from '../src/rest.js';
import { TokenKeeper } from '../src/token.js';
import { ProtocolError } from '../src/validate.js';
import { fakeFetch, json, makeToken, wireMessage, type SeenRequest } from './fakes.js';

const FAR = 4_000_000_000;

function api(respond: (r: SeenRequest) => Response | Promise<Response>, tokens = [makeToken('alice', FAR)]) {
  const fetch = fakeFetch(respond);
  const queue = [...tokens];
  const getToken = vi.fn(async () => (queue.length > 1 ? (queue.shift() as string) : (queue[0] as string)));
  const unauthorized: ApiError[] = [];
  const rest = new RestClient({
    baseUrl: 'http://127.0.0.1:8080/',
    fetch,
    tokens: new TokenKeeper(getToken),
    onUnauthorized: (e) => unauthorized.push(e),
    timeoutMs: 5_000,
  });
  return { api: new MessengerApi(rest), fetch, getToken, unauthorized };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('RestClient', () => {
  it('sends the bearer token, the query and a JSON body', async () => {
    const t = api((r) =>
      r.url.pathname === '/v1/messages/read'
        ? json(200, { read: [{ from: 'alice', up_to: 2 }] })
        : json(200, { messages: [wireMessage(3)], next_before: 2, next_after: null }),
    );
    const page = await t.api.history('bob', { limit: 2, before: 9 });
    expect(page).toMatchObject({ next_before: 2, next_after: null, messages: [{ id: 3, from: 'alice' }] });
    const [get] = t.fetch.requests;
    expect(get?.url.toString()).toBe('http://127.0.0.1:8080/v1/messages?with=bob&limit=2&before=9');
    expect(get?.headers['authorization']).toBe(`Bearer ${makeToken('alice', FAR)}`);
    expect(await t.api.markRead({ up_to: 2, with: 'alice' })).toEqual([{ from: 'alice', up_to: 2 }]);
    expect(t.fetch.requests[1]).toMatchObject({ method: 'POST', body: { up_to: 2, with: 'alice' } });
    expect(t.fetch.requests[1]?.headers['content-type']).toBe('application/json');
  });

  it('escapes path segments', async () => {
    const t = api((r) =>
      r.url.pathname.startsWith('/v1/blocks/')
        ? json(200, { user: 'a.b', created_at: '2026-11-24T02:36:10.282152Z' })
        : json(200, { id: 'x/../y?', name: 'VIP', owner: 'alice', members: 0, created_at: '2026-11-24T02:36:10Z' }),
    );
    await t.api.block('a.b');
    expect(await t.api.getList('x/../y?')).toMatchObject({ id: 'x/../y?', name: 'VIP' });
    expect(t.fetch.requests.map((r) => r.url.pathname)).toEqual(['/v1/blocks/a.b', '/v1/lists/x%2F..%2Fy%3F']);
  });

  it('after a 401, retries once with a fresh token', async () => {
    const stale = makeToken('alice', FAR - 1);
    const fresh = makeToken('alice', FAR);
    const t = api((r) => (r.headers['authorization'] === `Bearer ${fresh}` ? json(200, { blocks: [], next_after: null }) : json(401, { code: 'unauthorized', detail: 'invalid token: revoked', login_url: 'https://x/login' })), [stale, fresh]);
    expect(await t.api.blocks()).toEqual({ blocks: [], next_after: null });
    expect(t.fetch.requests).toHaveLength(2);
    expect(t.getToken).toHaveBeenCalledTimes(2);
    expect(t.unauthorized).toEqual([]);
  });

  it('a second 401 is an ApiError with the login page, reported once', async () => {
    const t = api(() => json(401, { code: 'unauthorized', detail: 'invalid token: expired', login_url: 'https://x/login' }, { 'www-authenticate': 'Bearer' }));
    const error = await t.api.me().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect(error).toMatchObject({ status: 401, code: 'unauthorized', message: 'invalid token: expired', loginUrl: 'https://x/login' });
    expect(t.fetch.requests).toHaveLength(2);
    expect(t.unauthorized).toHaveLength(1);
  });

  it('maps 429 to rate_limited with retry_after from the body, else from Retry-After', async () => {
    const bodies = [
      json(429, { code: 'rate_limited', detail: 'too many messages; retry in 0.011s', retry_after: 0.011 }, { 'retry-after': '1' }),
      json(429, { code: 'rate_limited', detail: 'too many requests' }, { 'retry-after': '3' }),
    ];
    const t = api(() => bodies.shift() as Response);
    await expect(t.api.sendMessage({ to: 'bob', body: 'hi', client_id: 'k1' })).rejects.toMatchObject({ status: 429, code: 'rate_limited', retryAfter: 0.011 });
    await expect(t.api.sendMessage({ to: 'bob', body: 'hi', client_id: 'k1' })).rejects.toMatchObject({ retryAfter: 3 });
  });

  it('keeps a plain-text error as the detail (code http_error)', async () => {
    const t = api(() => new Response('Service Unavailable', { status: 503, headers: { 'retry-after': '5' } }));
    await expect(t.api.unread()).rejects.toMatchObject({ status: 503, code: 'http_error', message: 'Service Unavailable', retryAfter: 5, body: null });
  });

  it('a declined tip is a 402 tip_failed with the billing link', async () => {
    const t = api(() => json(402, { code: 'tip_failed', detail: 'insufficient_funds', billing_url: 'https://x/billing', tip: { id: 1 } }));
    await expect(t.api.tip({ to: 'cre', amount: 500, currency: 'USD', client_id: 'tip-1' })).rejects.toMatchObject({ code: 'tip_failed', billingUrl: 'https://x/billing' });
  });

  it('network failures and timeouts are NetworkError', async () => {
    const down = api(() => Promise.reject(new TypeError('Failed to fetch')));
    await expect(down.api.me()).rejects.toBeInstanceOf(NetworkError);

    vi.useFakeTimers();
    // a server that never answers: only the abort signal ends the request
    const slow = api(
      (r) =>
        new Promise<Response>((_resolve, reject) => {
          r.signal?.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')));
        }),
    );
    const pending = slow.api.me().catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(4_999);
    expect(slow.fetch.requests[0]?.signal?.aborted).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    const error = await pending;
    expect(error).toBeInstanceOf(NetworkError);
    expect((error as Error).message).toMatch(/no answer in 5000 ms/);
  });

  it('refuses answers that do not match the API', async () => {
    const answers = [
      new Response('<html>', { status: 200 }),
      json(200, { messages: [wireMessage(1, { id: 'one' })], next_before: null }),
      json(200, { user: 'bob', online: 'yes', devices: [], since: null, last_seen: null }),
    ];
    const t = api(() => answers.shift() as Response);
    await expect(t.api.me()).rejects.toThrow(ProtocolError);
    await expect(t.api.unread()).rejects.toThrow(/messages\.messages\[0\]\.id/);
    await expect(t.api.presence('bob')).rejects.toThrow(/online/);
  });

  it('getBlock answers null for not_blocked, and throws other errors', async () => {
    const answers = [json(404, { code: 'not_blocked', detail: 'x' }), json(404, { code: 'not_found', detail: 'x' })];
    const t = api(() => answers.shift() as Response);
    expect(await t.api.getBlock('bob')).toBeNull();
    await expect(t.api.getBlock('bob')).rejects.toMatchObject({ code: 'not_found' });
  });

  it('DELETE answers 204 with no body', async () => {
    const t = api(() => new Response(null, { status: 204 }));
    await expect(t.api.unblock('bob')).resolves.toBeUndefined();
    expect(t.fetch.requests[0]?.method).toBe('DELETE');
  });
});
