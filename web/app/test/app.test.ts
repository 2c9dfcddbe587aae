/**
 * The app as a whole on in-memory fakes (the library's FakeConnector and fakeFetch): deep-link
 * sign-in, a live message rendered as text with its unread count, "reconnecting", and the way back
 * to sign-in when the token is refused.
 */

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { MessengerClient } from '@messenger/client';

import { FakeConnector, fakeFetch, json, makeToken, wireMessage, type SeenRequest } from '../../lib/test/fakes.js';
import { ChatApp, SESSION_ENDED } from '../src/app.js';
import type { AppConfig } from '../src/config.js';
import { checkToken } from '../src/session.js';

const config: AppConfig = {
  apiUrl: 'http://127.0.0.1:8080',
  mqttUrl: 'ws://127.0.0.1:8083/mqtt',
  loginUrl: 'https://login.example/login',
  devTokens: false,
  maxBodyBytes: 65536,
  tipMinAmount: 100,
  tipMaxAmount: 200000,
  tipCurrencies: ['USD'],
};

let revoked = false;
let creator = false;
const devRequests: { user_id: string; role: string }[] = [];

function api(request: SeenRequest): Response {
  if (revoked) return json(401, { code: 'invalid_token', detail: 'token revoked', login_url: 'https://login.example/login' });
  const path = request.url.pathname;
  if (path === '/v1/lists') return json(409, { code: 'lists_external', detail: 'lists are managed by the list service' });
  if (path === '/v1/mass-messages') return json(200, { mass_messages: [], next_before: null });
  if (path === '/v1/me') return json(200, { user: 'bob', role: creator ? 'creator' : 'member', display_name: null, created_at: null, token: { jti: null, issued_at: null, expires_at: null } });
  if (path === '/v1/conversations') return json(200, { conversations: [], next_before: null });
  if (path === '/v1/presence/query') return json(200, { presence: [] });
  if (path === '/v1/messages') return json(200, { messages: [], next_before: null, next_after: null });
  if (path === '/v1/blocks') return json(200, { blocks: [], next_after: null });
  if (path === '/v1/messages/read') return json(200, { read: [] });
  if (path === '/v1/dev/token') {
    const body = request.body as { user_id: string; role: string };
    devRequests.push(body);
    return json(200, { token: makeToken(body.user_id, Math.floor(Date.now() / 1000) + 3600), expires_in: 3600 });
  }
  return json(404, { code: 'not_found', detail: path });
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 0));
async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await tick();
}

describe('the app', () => {
  let root: HTMLElement;
  let connector: FakeConnector;
  let app: ChatApp;

  beforeEach(() => {
    revoked = false;
    creator = false;
    root = document.createElement('div');
    document.body.replaceChildren(root);
    localStorage.clear();
    connector = new FakeConnector();
    const fetch = fakeFetch(api);
    app = new ChatApp({
      config,
      root,
      window,
      storage: localStorage,
      fetch: fetch as unknown as typeof globalThis.fetch,
      makeClient: (options) => new MessengerClient({ ...options, connector, fetch, device: 'tab-1', random: () => 0.5 }),
    });
  });

  afterEach(async () => {
    await app.signOut(false);
    window.history.replaceState(null, '', '/');
  });

  it('signs in from /#token=, removes the token from the address, and shows live messages as text', async () => {
    const token = makeToken('bob', Math.floor(Date.now() / 1000) + 3600);
    window.history.replaceState(null, '', `/c/alice#token=${token}`);

    await app.start();
    await settle();

    expect(window.location.href).not.toContain('token');
    expect(window.location.pathname).toBe('/c/alice');
    expect(localStorage.getItem('messenger:token')).toBe(token);
    expect(root.querySelector('h2')?.textContent).toBe('alice');
    expect(root.querySelector('textarea[aria-label="Message"]')).not.toBeNull();

    connector.last.deliver('users/bob/messages', wireMessage(9, { from: 'carol', body: '<img src=x onerror=alert(1)>' }));
    connector.last.deliver('users/bob/messages', wireMessage(10, { from: 'alice', body: 'hello <b>bob</b>' }));
    await settle();

    const carol = [...root.querySelectorAll('.conversations button')].find((b) => b.textContent?.includes('carol'));
    expect(carol?.querySelector('.badge')?.textContent).toBe('1 unread'); // "1" and a hidden " unread"
    expect(root.querySelector('.log img, .log b')).toBeNull();
    expect([...root.querySelectorAll('.log .body')].map((b) => b.textContent)).toEqual(['hello <b>bob</b>']);

    connector.last.drop();
    await settle();
    expect(root.querySelector('[role=status]')?.textContent).toMatch(/Reconnecting/);
  });

  it("lets a creator write to a list by id when the product's list service keeps the lists", async () => {
    creator = true;
    await app.signIn(makeToken('bob', Math.floor(Date.now() / 1000) + 3600));
    await settle();
    [...root.querySelectorAll('button')].find((b) => b.textContent === 'Lists')?.click();
    await settle();
    const input = root.querySelector<HTMLInputElement>('input#list-choice');
    expect(input).not.toBeNull();
    expect(root.querySelector('label[for=list-choice]')?.textContent).toBe('List id');
    input!.value = 'vip-42';
    const box = root.querySelector<HTMLTextAreaElement>('textarea[aria-label="Message to list"]')!;
    box.value = 'new post';
    box.dispatchEvent(new Event('input'));
    box.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter' }));
    await settle();
    expect(connector.last.commands().at(-1)).toMatchObject({ type: 'message', list: 'vip-42', body: 'new post' });
  });

  it('goes back to sign-in with a clear message when the token is refused', async () => {
    localStorage.setItem('messenger:token', makeToken('bob', Math.floor(Date.now() / 1000) + 3600));
    await app.start();
    await settle();
    expect(root.querySelector('.conversations')).not.toBeNull();

    revoked = true; // the token was revoked: the API answers 401 even to a fresh copy
    app.openConversation('alice');
    await settle();

    expect(root.querySelector('.conversations')).toBeNull();
    expect(root.querySelector('[role=alert]')?.textContent).toBe(SESSION_ENDED);
    expect(localStorage.getItem('messenger:token')).toBeNull();
    expect(connector.last.ended).toBe(true);
  });

  it('sends an expired stored token to sign-in, saying why', async () => {
    localStorage.setItem('messenger:token', makeToken('bob', Math.floor(Date.now() / 1000) - 10));
    await app.start();
    expect(root.querySelector('[role=alert]')?.textContent).toBe(SESSION_ENDED);
    expect(root.querySelector('a.button')?.getAttribute('href')).toBe('https://login.example/login?next=http%3A%2F%2Flocalhost%3A3000%2F');
    expect(localStorage.getItem('messenger:token')).toBeNull();
  });

  it('in development, renews an expired stored token for the same user and role', async () => {
    const dev = new ChatApp({
      config: { ...config, devTokens: true },
      root,
      window,
      storage: localStorage,
      fetch: fakeFetch(api) as unknown as typeof globalThis.fetch,
      makeClient: (options) => new MessengerClient({ ...options, connector, fetch: fakeFetch(api), device: 'tab-2' }),
    });
    localStorage.setItem('messenger:dev-role', 'creator');
    localStorage.setItem('messenger:token', makeToken('bob', Math.floor(Date.now() / 1000) - 10));
    devRequests.length = 0;

    await dev.start();
    await settle();

    expect(devRequests).toEqual([{ user_id: 'bob', role: 'creator' }]);
    expect(root.querySelector('.conversations')).not.toBeNull();
    expect(checkToken(localStorage.getItem('messenger:token') ?? '', Date.now()).ok).toBe(true); // the new one
    await dev.signOut(false);
  });

  it('refuses a token with less than a minute left, saying so', async () => {
    await app.signIn(makeToken('bob', Math.floor(Date.now() / 1000) + 30));
    expect(root.querySelector('[role=alert]')?.textContent).toMatch(/expired/);
    expect(connector.connects).toHaveLength(0);
  });
});
