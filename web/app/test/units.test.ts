import { describe, expect, it, vi } from 'vitest';

import { makeToken } from '../../lib/test/fakes.js';
import { parseConfig } from '../src/config.js';
import { h, replace, safeHref } from '../src/dom.js';
import { bodyProblem } from '../src/limits.js';
import { checkToken, peerOfPath, takeDeepLinkToken } from '../src/session.js';
import { Conversation, parseAmount, type Line } from '../src/state.js';
import { Composer, messageLine } from '../src/views.js';

const XSS = '<img src=x onerror="window.pwned=1">';
const noActions = { retry: () => undefined, discard: () => undefined };

function line(overrides: Partial<Line> = {}): Line {
  return {
    key: 'id:1',
    id: 1,
    clientId: 'c-1',
    mine: false,
    body: 'hi',
    sentAt: '2026-11-23T10:00:00Z',
    status: 'received',
    error: null,
    tip: null,
    billingUrl: null,
    ...overrides,
  };
}

describe('deep links', () => {
  it('takes the token out of the address and keeps the rest', () => {
    expect(takeDeepLinkToken('https://chat.example/c/bob?x=1#token=abc.def.ghi')).toEqual({
      token: 'abc.def.ghi',
      cleanUrl: '/c/bob?x=1',
    });
    expect(takeDeepLinkToken('https://chat.example/#token=t&tab=2').cleanUrl).toBe('/#tab=2');
    expect(takeDeepLinkToken('https://chat.example/c/bob')).toEqual({ token: null, cleanUrl: 'https://chat.example/c/bob' });
  });

  it('reads a conversation from /c/{user_id} and nothing else', () => {
    expect(peerOfPath('/c/bob')).toBe('bob');
    expect(peerOfPath('/c/a.b-c_d/')).toBe('a.b-c_d');
    expect(peerOfPath('/c/%62ob')).toBe('bob');
    for (const path of ['/', '/c/', '/c/..', '/c/a%20b', '/c/bob/x', '/c/%E0%A4%A', '/x/bob']) expect(peerOfPath(path)).toBeNull();
  });

  it('refuses an expired or malformed token with a reason', () => {
    const now = Date.now();
    expect(checkToken(makeToken('bob', now / 1000 + 600), now)).toMatchObject({ ok: true, user: 'bob' });
    expect(checkToken(makeToken('bob', now / 1000 - 1), now)).toMatchObject({ ok: false, reason: expect.stringMatching(/expired/) });
    expect(checkToken('nonsense', now)).toMatchObject({ ok: false });
  });
});

describe('config', () => {
  const base = {
    api_url: null,
    mqtt_url: null,
    mqtt_ws_port: 8083,
    login_url: 'https://login.example/',
    dev_tokens: true,
    limits: { max_body_bytes: 65536, tip_min_amount: 100, tip_max_amount: 200000, tip_currencies: ['EUR', 'USD'] },
  };

  it("puts serve's broker on the page's own host", () => {
    const page = { protocol: 'http:', hostname: '127.0.0.1', origin: 'http://127.0.0.1:8080' };
    expect(parseConfig(base, page)).toMatchObject({ mqttUrl: 'ws://127.0.0.1:8083/mqtt', apiUrl: 'http://127.0.0.1:8080', maxBodyBytes: 65536 });
    const https = { protocol: 'https:', hostname: 'chat.example', origin: 'https://chat.example' };
    expect(parseConfig(base, https).mqttUrl).toBe('wss://chat.example:8083/mqtt');
    expect(parseConfig({ ...base, mqtt_url: 'wss://mq.example/mqtt', mqtt_ws_port: null }, https).mqttUrl).toBe('wss://mq.example/mqtt');
    expect(parseConfig({ ...base, mqtt_ws_port: null }, https).mqttUrl).toBeNull();
  });

  it('refuses an answer that does not fit', () => {
    const page = { protocol: 'http:', hostname: 'h', origin: 'http://h' };
    expect(() => parseConfig({ ...base, limits: {} }, page)).toThrow(/max_body_bytes/);
    expect(() => parseConfig([], page)).toThrow();
  });
});

describe('rendering', () => {
  it('shows markup in a message as text, never as elements', () => {
    const el = messageLine(line({ body: XSS }), 'alice', false, noActions);
    expect(el.querySelector('img')).toBeNull();
    expect(el.querySelector('.body')?.textContent).toBe(XSS);
    expect((window as unknown as { pwned?: number }).pwned).toBeUndefined();
    const tag = h('p', { title: XSS }, XSS, 5);
    expect(tag.children).toHaveLength(0);
    expect(tag.textContent).toBe(`${XSS}5`);
  });

  it('links a declined tip to billing, but only over http(s)', () => {
    const failed = line({ mine: true, status: 'failed', error: 'Tip declined', billingUrl: 'https://billing.example/fix', tip: { amount: 500, currency: 'USD', status: 'failed' } });
    const el = messageLine(failed, 'alice', false, noActions);
    expect(el.querySelector('a')?.getAttribute('href')).toBe('https://billing.example/fix');
    expect(el.textContent).toContain('Tip 5.00 USD');
    expect(messageLine({ ...failed, billingUrl: 'javascript:alert(1)' }, 'alice', false, noActions).querySelector('a')).toBeNull();
    expect(safeHref('javascript:alert(1)')).toBeNull();
  });

  it('marks pending, failed and seen', () => {
    expect(messageLine(line({ mine: true, id: null, status: 'pending' }), 'a', false, noActions).textContent).toContain('Sending…');
    expect(messageLine(line({ mine: true, status: 'sent' }), 'a', true, noActions).textContent).toContain('Seen');
    const retry = vi.fn();
    const failed = messageLine(line({ mine: true, id: null, status: 'failed', error: 'No such user' }), 'a', false, { retry, discard: () => undefined });
    expect(failed.querySelector('[role=alert]')?.textContent).toContain('No such user');
    [...failed.querySelectorAll('button')].find((b) => b.textContent === 'Retry')?.click();
    expect(retry).toHaveBeenCalledWith('c-1');
  });
});

describe('the composer', () => {
  function composer(max = 65536) {
    const sent: string[] = [];
    const c = new Composer({ to: () => 'bob', maxBytes: () => max, send: (b) => sent.push(b) });
    document.body.append(c.element);
    const type = (text: string) => {
      c.textarea.value = text;
      c.textarea.dispatchEvent(new Event('input'));
    };
    const key = (init: KeyboardEventInit) => c.textarea.dispatchEvent(new KeyboardEvent('keydown', { bubbles: true, cancelable: true, ...init }));
    return { c, sent, type, key };
  }

  it('is a textbox named "Message"; Enter sends, Shift+Enter does not', () => {
    const { c, sent, type, key } = composer();
    expect(c.textarea.getAttribute('aria-label')).toBe('Message');
    type('hello\nthere');
    key({ key: 'Enter', shiftKey: true });
    expect(sent).toEqual([]);
    key({ key: 'Enter' });
    expect(sent).toEqual(['hello\nthere']);
    expect(c.textarea.value).toBe('');
    key({ key: 'Enter' }); // nothing to send
    expect(sent).toHaveLength(1);
  });

  it("shows the server's limit before sending and sends nothing over it", () => {
    const { c, sent, type, key } = composer(1000);
    type('é'.repeat(600)); // 1200 bytes in UTF-8
    expect(c.problem.textContent).toMatch(/limit is 1,000 bytes/);
    expect(c.button.disabled).toBe(true);
    expect(c.textarea.getAttribute('aria-invalid')).toBe('true');
    key({ key: 'Enter' });
    expect(sent).toEqual([]);
    type('é'.repeat(100));
    expect(c.problem.textContent).toBe('');
    expect(c.button.disabled).toBe(false);
  });

  it('refuses text the server refuses', () => {
    expect(bodyProblem('bob', 'a\u0000b', 65536)).toMatch(/control character U\+0000/);
    expect(bodyProblem('bob', 'fine\n\ttext', 65536)).toBeNull();
  });
});

describe('replace', () => {
  it('puts the children in order, leaving the ones already there in place (the composer keeps the focus)', () => {
    const parent = h('section');
    document.body.append(parent);
    const log = h('ol');
    const box = h('textarea');
    replace(parent, h('header', {}, 'one'), log, box);
    box.focus();
    const removed: Node[] = [];
    new MutationObserver((records) => records.forEach((r) => removed.push(...r.removedNodes))).observe(parent, { childList: true });
    replace(parent, h('header', {}, 'two'), h('p', {}, 'note'), log, box);
    expect([...parent.children].map((e) => e.tagName)).toEqual(['HEADER', 'P', 'OL', 'TEXTAREA']);
    expect(parent.firstElementChild?.textContent).toBe('two');
    expect(document.activeElement).toBe(box);
    replace(parent, 'text', box);
    expect(parent.textContent).toBe('text');
    expect([...parent.childNodes].at(-1)).toBe(box);
    replace(parent, box, log); // a new order moves what it must
    expect([...parent.childNodes]).toEqual([box, log]);
    return Promise.resolve().then(() => {
      expect(removed).not.toContain(box);
      parent.remove();
    });
  });
});

describe('a conversation', () => {
  const msg = (id: number, from: string, extra: Record<string, unknown> = {}) => ({
    id,
    client_id: `c-${id}`,
    from,
    to: from === 'me' ? 'bob' : 'me',
    body: `m${id}`,
    sent_at: '2026-11-23T10:00:00Z',
    read_at: null,
    tip: null,
    list: null,
    ...extra,
  });

  it('merges pages and live messages by id, and a sent message with its stored copy', () => {
    const c = new Conversation('bob');
    c.addStored([msg(5, 'bob'), msg(3, 'me')], 'me');
    c.addOutgoing({ clientId: 'mine-1', to: 'bob', list: null, body: 'new', tip: null, status: 'pending', id: null, sentAt: null, massMessage: null, duplicate: false, attempts: 1, error: null, billingUrl: null, tipStatus: null });
    expect(c.addStored([msg(5, 'bob'), msg(1, 'bob')], 'me').map((l) => l.id)).toEqual([1]);
    expect(c.lines.map((l) => l.key)).toEqual(['id:1', 'id:3', 'id:5', 'client:mine-1']);
    c.addStored([msg(7, 'me', { client_id: 'mine-1', body: 'new' })], 'me');
    expect(c.lines.map((l) => l.key)).toEqual(['id:1', 'id:3', 'id:5', 'id:7']);
    expect(c.newestFromPeer()).toBe(5);
    c.seenUpTo = 6;
    expect(c.seenKey()).toBe('id:3');
  });

  it('counts a caught-up message as unread only when the server count does not hold it yet', () => {
    const c = new Conversation('bob');
    // the conversation list: 2 unread, the newest is 11 (so 10 and 11 are in the count)
    c.setUnread(2, 11);
    expect(c.isNewUnread(msg(10, 'bob'), 'me')).toBe(false); // the catch-up brings them again
    expect(c.isNewUnread(msg(11, 'bob'), 'me')).toBe(false);
    expect(c.isNewUnread(msg(12, 'bob'), 'me')).toBe(true);
    expect(c.isNewUnread(msg(12, 'bob'), 'me')).toBe(false); // each id once
    expect(c.isNewUnread(msg(13, 'me'), 'me')).toBe(false);
    expect(c.isNewUnread(msg(14, 'bob', { read_at: '2026-11-23T10:01:00Z' }), 'me')).toBe(false);
    // the list loaded after the catch-up: its count wins
    c.setUnread(5, 14);
    expect(c.unread).toBe(5);
    expect(c.isNewUnread(msg(14, 'bob'), 'me')).toBe(false);
  });

  it("hides a blocked peer's messages and shows them again on unblocking", () => {
    const c = new Conversation('bob');
    c.addStored([msg(1, 'bob'), msg(2, 'me'), msg(3, 'bob')], 'me');
    c.blocked = true;
    expect(c.visibleLines().map((l) => l.id)).toEqual([2]);
    c.blocked = false;
    expect(c.visibleLines().map((l) => l.id)).toEqual([1, 2, 3]);
  });

  it('reads tip amounts', () => {
    expect(parseAmount('5')).toBe(500);
    expect(parseAmount('5,5')).toBe(550);
    expect(parseAmount('0.07')).toBe(7);
    expect(parseAmount('-1')).toBeNull();
    expect(parseAmount('1.234')).toBeNull();
  });
});
