/**
 * The chat app: sign-in, the conversation list, a conversation, and (for creators) messages to
 * lists. Plain DOM through {@link h}; all data shown as text. One {@link MessengerClient} per
 * signed-in session.
 */

import {
  ApiError,
  MessengerClient,
  storageStore,
  type ConnectionStatus,
  type MassMessage,
  type MemberList,
  type OutgoingMessage,
} from '@messenger/client';

import type { AppConfig } from './config.js';
import { h, replace, safeHref } from './dom.js';
import { TokenStore, checkToken, devToken, isUserId, pathOfPeer, peerOfPath, takeDeepLinkToken } from './session.js';
import { ChatState, describeError, formatAmount, parseAmount, type Conversation } from './state.js';
import { Composer, messageLine } from './views.js';

export interface AppEnv {
  config: AppConfig;
  root: HTMLElement;
  window: Window;
  storage: Storage | null;
  fetch: typeof fetch;
  /** Builds the client (tests pass one on fakes). */
  makeClient?(options: ConstructorParameters<typeof MessengerClient>[0]): MessengerClient;
}

const PAGE = 30;
const TYPING_SHOWN_MS = 5_000;
const DEV_ROLE_KEY = 'messenger:dev-role';
/** A token with less life than this is not used (the library replaces tokens a minute early). */
const TOKEN_MARGIN_MS = 60_000;

/**
 * The login page with `next=` this page (the address as the browser has it, never a header the
 * server saw), like the API's own login redirect; the login service comes back with `#token=`.
 */
export function loginLink(loginUrl: string, here: string): string | null {
  const href = safeHref(loginUrl);
  if (href === null) return null;
  const url = new URL(href);
  const back = new URL(here);
  back.hash = '';
  url.searchParams.set('next', back.href);
  return url.href;
}

export const SESSION_ENDED = 'Your session has ended (the token expired or was revoked). Sign in again.';

export class ChatApp {
  readonly #env: AppEnv;
  readonly #tokens: TokenStore;
  #token: string | null = null;
  #client: MessengerClient | null = null;
  #me = '';
  #role = 'member';
  #state = new ChatState();
  #peer: string | null = null;
  #view: 'chat' | 'lists' = 'chat';
  #status: ConnectionStatus | null = null;
  #loadingOlder = false;
  #renderQueued = false;
  #typingTimer: ReturnType<typeof setTimeout> | null = null;
  #offs: (() => void)[] = [];
  // long-lived elements (the composer keeps what is being typed across renders)
  #statusBar = h('div', { class: 'connection', role: 'status', 'aria-live': 'polite' });
  #list = h('ul', { class: 'conversations' });
  #conv = h('section', { class: 'conversation', 'aria-label': 'Conversation' });
  #log = h('ol', { class: 'log', role: 'log', 'aria-live': 'polite', 'aria-label': 'Messages', tabindex: 0 });
  #typing = h('p', { class: 'typing', 'aria-live': 'polite' });
  #composer: Composer;
  #listsPanel = h('section', { class: 'lists', 'aria-label': 'Messages to lists' });
  #main = h('div', { class: 'main' });
  #lists: MemberList[] = [];
  #blocked = new Set<string>();
  /** Lists are kept by the product's list service: a list is named by its id. */
  #listsExternal = false;
  #blocksLoaded = false;
  #mass = new Map<number, MassMessage>();
  #massTimers = new Map<number, ReturnType<typeof setTimeout>>();

  constructor(env: AppEnv) {
    this.#env = env;
    this.#tokens = new TokenStore(env.storage);
    this.#composer = new Composer({
      to: () => this.#peer ?? '',
      maxBytes: () => env.config.maxBodyBytes,
      send: (body) => this.#send(body),
      typing: () => {
        if (this.#peer) this.#client?.typing(this.#peer);
      },
    });
    this.#log.addEventListener('scroll', () => {
      if (this.#log.scrollTop < 40) void this.#loadOlder();
    });
    env.window.addEventListener('popstate', () => this.#route());
    env.window.addEventListener('focus', () => this.#markRead());
  }

  /** Signs in from the address (`#token=`), else the stored token, else shows the sign-in page. */
  async start(): Promise<void> {
    const location = this.#env.window.location;
    const link = takeDeepLinkToken(location.href);
    if (link.token !== null) {
      // out of the address bar (and the history entry) before anything else happens
      this.#env.window.history.replaceState(null, '', link.cleanUrl);
      await this.signIn(link.token);
      return;
    }
    const stored = this.#tokens.load();
    if (stored !== null) {
      await this.signIn(stored, true);
      return;
    }
    this.showSignIn();
  }

  get client(): MessengerClient | null {
    return this.#client;
  }

  // --- signing in and out

  showSignIn(message: string | null = null): void {
    const config = this.#env.config;
    const error = h('p', { class: 'error', role: 'alert' }, message ?? '');
    const login = loginLink(config.loginUrl, this.#env.window.location.href);
    const tokenInput = h('textarea', { id: 'signin-token', rows: 3, autocomplete: 'off', spellcheck: 'false' });
    const tokenForm = h(
      'form',
      {
        class: 'card',
        onsubmit: (e: SubmitEvent) => {
          e.preventDefault();
          void this.signIn(tokenInput.value.trim());
        },
      },
      h('label', { for: 'signin-token' }, 'Token'),
      tokenInput,
      h('button', { type: 'submit' }, 'Sign in with token'),
    );
    let devForm: HTMLFormElement | null = null;
    if (config.devTokens) {
      const user = h('input', { id: 'signin-user', autocomplete: 'username', required: true, maxlength: 64 });
      const role = h('select', { id: 'signin-role' }, h('option', { value: 'member' }, 'Member'), h('option', { value: 'creator' }, 'Creator'));
      devForm = h(
        'form',
        {
          class: 'card',
          onsubmit: (e: SubmitEvent) => {
            e.preventDefault();
            const id = user.value.trim();
            if (!isUserId(id)) {
              error.textContent = 'A user id is 1-64 letters, digits, "_", "." or "-".';
              return;
            }
            const r = role.value === 'creator' ? 'creator' : 'member';
            devToken(config.apiUrl, id, r, this.#env.fetch).then(
              (token) => {
                this.#env.storage?.setItem(DEV_ROLE_KEY, r);
                return this.signIn(token);
              },
              (err: unknown) => {
                error.textContent = `No development token: ${err instanceof Error ? err.message : String(err)}`;
              },
            );
          },
        },
        h('h2', {}, 'Development sign-in'),
        h('p', { class: 'note' }, 'This server uses the development secret: any user id can sign in.'),
        h('label', { for: 'signin-user' }, 'User id'),
        user,
        h('label', { for: 'signin-role' }, 'Role'),
        role,
        h('button', { type: 'submit' }, 'Sign in'),
      );
    }
    replace(
      this.#env.root,
      h(
        'main',
        { class: 'signin' },
        h('h1', {}, 'Messenger'),
        error,
        devForm,
        login ? h('p', {}, h('a', { href: login, class: 'button' }, 'Sign in with your account')) : null,
        tokenForm,
      ),
    );
    (devForm?.querySelector('input') ?? tokenInput).focus();
  }

  /** Starts a session with `token`; on a bad or expired token, back to sign-in with why. */
  async signIn(token: string, fromStorage = false): Promise<void> {
    await this.signOut(false);
    this.#me = '';
    this.#role = 'member';
    this.#view = 'chat';
    const check = checkToken(token, Date.now(), TOKEN_MARGIN_MS);
    if (!check.ok) {
      const renewed = fromStorage ? await this.#renewDevToken(token) : null;
      if (renewed === null) {
        this.#tokens.clear();
        this.showSignIn(fromStorage ? SESSION_ENDED : check.reason);
        return;
      }
      token = renewed;
    }
    this.#token = token;
    this.#tokens.save(token);
    const config = this.#env.config;
    if (config.mqttUrl === null) {
      this.showSignIn('This server names no broker WebSocket URL (MESSENGER_PUBLIC_WS_URL), so the app cannot connect.');
      return;
    }
    const options = {
      mqttUrl: config.mqttUrl,
      apiUrl: config.apiUrl,
      getToken: () => this.#currentToken(),
      ...(this.#env.storage ? { store: storageStore(this.#env.storage) } : {}),
    };
    const client = this.#env.makeClient ? this.#env.makeClient(options) : new MessengerClient(options);
    this.#client = client;
    this.#state = new ChatState();
    this.#blocked = new Set();
    this.#blocksLoaded = false;
    this.#wire(client);
    this.#renderShell();
    try {
      await client.connect();
      const me = await client.api.me();
      this.#me = me.user;
      this.#role = me.role;
      this.#renderShell();
      await this.#loadConversations();
      this.#route();
    } catch (error) {
      if (this.#client !== client) return;
      if (error instanceof ApiError && error.status === 401) return; // authError handles it
      if (error instanceof Error && error.message === SESSION_ENDED) {
        await this.signOut(true, SESSION_ENDED);
        return;
      }
      this.#statusBar.textContent = `Could not load: ${error instanceof Error ? error.message : String(error)}`;
    }
  }

  async signOut(show = true, message: string | null = null): Promise<void> {
    const client = this.#client;
    this.#client = null;
    for (const off of this.#offs.splice(0)) off();
    for (const timer of this.#massTimers.values()) clearTimeout(timer);
    this.#massTimers.clear();
    if (client) await client.close().catch(() => undefined);
    if (show) {
      this.#tokens.clear();
      this.#token = null;
      this.showSignIn(message);
    }
  }

  /**
   * The token for the library, which asks again a minute before it expires: in development a new
   * one; a login service's token cannot be renewed here, so its session ends then (sign in again).
   */
  async #currentToken(): Promise<string> {
    const token = this.#token;
    if (token !== null && checkToken(token, Date.now(), TOKEN_MARGIN_MS).ok) return token;
    const renewed = token !== null ? await this.#renewDevToken(token) : null;
    if (renewed !== null) {
      this.#token = renewed;
      this.#tokens.save(renewed);
      return renewed;
    }
    throw new Error(SESSION_ENDED);
  }

  /** In development, a new token for the same user (a login service's tokens come from it). */
  async #renewDevToken(old: string): Promise<string | null> {
    const config = this.#env.config;
    if (!config.devTokens) return null;
    const claims = checkToken(old, 0);
    if (!claims.ok) return null;
    const role = this.#env.storage?.getItem(DEV_ROLE_KEY) === 'creator' ? 'creator' : 'member';
    try {
      return await devToken(config.apiUrl, claims.user, role, this.#env.fetch);
    } catch {
      return null;
    }
  }

  // --- events

  #wire(client: MessengerClient): void {
    const on = this.#offs;
    on.push(
      client.on('status', (status) => {
        this.#status = status;
        this.#renderStatus();
      }),
      client.on('authError', () => void this.signOut(true, SESSION_ENDED)),
      client.on('message', (m) => {
        const peer = m.from === this.#me ? m.to : m.from;
        const c = this.#conversation(peer);
        const added = c.addStored([m], this.#me);
        if (added.length && c.isNewUnread(m, this.#me)) {
          if (this.#isOpen(peer)) this.#markRead();
          else c.unread += 1;
        }
        c.typingUntil = m.from === peer ? 0 : c.typingUntil;
        this.#ensureWatched(peer);
        this.#render();
      }),
      client.on('outgoing', (o) => this.#outgoing(o)),
      client.on('read', (r) => {
        const c = this.#conversation(r.by);
        c.seenUpTo = Math.max(c.seenUpTo, r.up_to);
        this.#render();
      }),
      client.on('typing', (t) => {
        this.#conversation(t.from).typingUntil = Date.now() + TYPING_SHOWN_MS;
        this.#render();
        if (this.#typingTimer !== null) clearTimeout(this.#typingTimer);
        this.#typingTimer = setTimeout(() => this.#render(), TYPING_SHOWN_MS + 50);
      }),
      client.on('presence', (p) => {
        this.#conversation(p.user).online = p.online;
        this.#render();
      }),
      client.on('catchUp', () => this.#renderStatus()),
    );
  }

  #outgoing(o: OutgoingMessage): void {
    if (o.to !== null) {
      this.#conversation(o.to).addOutgoing(o);
      this.#render();
    } else if (o.massMessage !== null) {
      void this.#watchMass(o.massMessage);
    } else if (o.status === 'failed') {
      this.#renderListsNote(describeError(o.error?.code ?? 'failed', o.error?.detail ?? ''));
    }
  }

  #ensureWatched(peer: string): void {
    this.#client?.watchPresence(peer);
  }

  // --- data

  async #loadConversations(): Promise<void> {
    const client = this.#client;
    if (!client) return;
    const [page] = await Promise.all([client.api.conversations({ limit: 50 }), this.#loadBlocks(client)]);
    for (const item of page.conversations) {
      const c = this.#conversation(item.peer);
      c.addStored([item.last_message], this.#me);
      c.setUnread(item.unread, item.last_message.id);
      this.#ensureWatched(item.peer);
    }
    const peers = page.conversations.map((c) => c.peer).slice(0, 100);
    if (peers.length) {
      const presence = await client.api.queryPresence(peers).catch(() => []);
      for (const p of presence) this.#conversation(p.user).online = p.online || client.isOnline(p.user);
    }
    this.#render();
  }

  /** The conversation with `peer` (new ones learn whether the peer is blocked). */
  #conversation(peer: string): Conversation {
    const c = this.#state.get(peer);
    if (c.blocked === null && this.#blocksLoaded) c.blocked = this.#blocked.has(peer);
    return c;
  }

  /** Whom this user blocked (one list, kept up to date by Block/Unblock here). */
  async #loadBlocks(client: MessengerClient): Promise<void> {
    const blocked = new Set<string>();
    let after: string | undefined;
    do {
      const page = await client.api.blocks({ limit: 500, ...(after !== undefined ? { after } : {}) });
      for (const b of page.blocks) blocked.add(b.user);
      after = page.next_after ?? undefined;
    } while (after !== undefined);
    this.#blocked = blocked;
    this.#blocksLoaded = true;
    for (const c of this.#state.conversations.values()) c.blocked = blocked.has(c.peer);
  }

  async #openHistory(c: Conversation): Promise<void> {
    const client = this.#client;
    if (!client || c.historyLoaded) return;
    c.historyLoaded = true;
    try {
      const page = await client.api.history(c.peer, { limit: PAGE });
      c.addStored(page.messages, this.#me);
      c.nextBefore = page.next_before;
      this.#render(true);
      this.#markRead();
    } catch (error) {
      c.historyLoaded = false;
      this.#typing.textContent = `Could not load the history: ${error instanceof Error ? error.message : String(error)}`;
    }
  }

  async #loadOlder(): Promise<void> {
    const client = this.#client;
    const c = this.#peer ? this.#conversation(this.#peer) : null;
    if (!client || !c || c.nextBefore === null || this.#loadingOlder) return;
    this.#loadingOlder = true;
    const fromBottom = this.#log.scrollHeight - this.#log.scrollTop;
    try {
      const page = await client.api.history(c.peer, { before: c.nextBefore, limit: PAGE });
      c.addStored(page.messages, this.#me);
      c.nextBefore = page.next_before;
      this.#renderConversation();
      this.#log.scrollTop = this.#log.scrollHeight - fromBottom; // keep what was on screen in place
    } finally {
      this.#loadingOlder = false;
    }
  }

  #markRead(): void {
    const client = this.#client;
    if (!client || this.#peer === null || this.#view !== 'chat') return;
    if (this.#env.window.document.visibilityState === 'hidden') return;
    const c = this.#conversation(this.#peer);
    const upTo = c.newestFromPeer();
    if (upTo === null || c.unread === 0) {
      c.unread = 0;
      if (upTo !== null) client.markRead(upTo, c.peer).catch(() => undefined);
      return;
    }
    c.unread = 0;
    client.markRead(upTo, c.peer).catch(() => undefined);
    this.#render();
  }

  #send(body: string): void {
    if (!this.#client || this.#peer === null) return;
    this.#client.send(this.#peer, body);
    this.#log.scrollTop = this.#log.scrollHeight;
  }

  async #toggleBlock(c: Conversation): Promise<void> {
    const client = this.#client;
    if (!client) return;
    try {
      if (c.blocked) await client.api.unblock(c.peer);
      else await client.api.block(c.peer);
      c.blocked = !c.blocked;
      if (c.blocked) this.#blocked.add(c.peer);
      else this.#blocked.delete(c.peer);
    } catch (error) {
      this.#typing.textContent = `Could not change the block: ${error instanceof Error ? error.message : String(error)}`;
    }
    this.#render();
  }

  // --- navigation

  openConversation(peer: string, push = true): void {
    if (!isUserId(peer) || peer === this.#me) return;
    this.#view = 'chat';
    this.#peer = peer;
    if (push && this.#env.window.location.pathname !== pathOfPeer(peer)) {
      this.#env.window.history.pushState(null, '', pathOfPeer(peer));
    }
    const c = this.#conversation(peer);
    this.#ensureWatched(peer);
    this.#composer.check();
    this.#render(true);
    void this.#openHistory(c);
    this.#markRead();
    // once rendered (the render is queued first): a box not yet in the page cannot take the focus
    queueMicrotask(() => this.#composer.textarea.focus());
  }

  #closeConversation(): void {
    this.#peer = null;
    this.#view = 'chat';
    if (this.#env.window.location.pathname !== '/') this.#env.window.history.pushState(null, '', '/');
    this.#render();
  }

  #route(): void {
    if (!this.#client) return;
    const peer = peerOfPath(this.#env.window.location.pathname);
    if (peer !== null) this.openConversation(peer, false);
    else {
      this.#peer = null;
      this.#render();
    }
  }

  #isOpen(peer: string): boolean {
    return this.#view === 'chat' && this.#peer === peer && this.#env.window.document.visibilityState !== 'hidden';
  }

  // --- rendering

  #renderShell(): void {
    const startInput = h('input', { id: 'start-peer', autocomplete: 'off', maxlength: 64, placeholder: 'user id' });
    const startError = h('p', { class: 'error', 'aria-live': 'polite' });
    const start = h(
      'form',
      {
        class: 'start',
        onsubmit: (e: SubmitEvent) => {
          e.preventDefault();
          const peer = startInput.value.trim();
          if (!isUserId(peer) || peer === this.#me) {
            startError.textContent = peer === this.#me ? 'That is you.' : 'A user id is 1-64 letters, digits, "_", "." or "-".';
            return;
          }
          startError.textContent = '';
          startInput.value = '';
          this.openConversation(peer);
        },
      },
      h('label', { for: 'start-peer' }, 'Start a conversation with'),
      h('div', { class: 'row' }, startInput, h('button', { type: 'submit' }, 'Open')),
      startError,
    );
    const creator = this.#role === 'creator';
    replace(
      this.#env.root,
      h(
        'header',
        { class: 'bar' },
        h('h1', {}, 'Messenger'),
        h('span', { class: 'who' }, this.#me ? `Signed in as ${this.#me}` : 'Signing in…'),
        creator ? h('button', { type: 'button', onclick: () => this.#showLists() }, 'Lists') : null,
        h('button', { type: 'button', onclick: () => void this.signOut(true) }, 'Sign out'),
      ),
      this.#statusBar,
      h('div', {}, this.#main),
    );
    replace(this.#main, h('nav', { class: 'side', 'aria-label': 'Conversations' }, start, this.#list), this.#conv, this.#listsPanel);
    this.#renderStatus();
    this.#render();
  }

  #renderStatus(): void {
    const s = this.#status;
    const bar = this.#statusBar;
    replace(bar);
    bar.className = 'connection';
    if (!s || s.state === 'online') return;
    if (s.state === 'stopped') return;
    const again = s.reason === 'lost' || s.reason === 'failed' || s.attempt > 0;
    bar.className = 'connection warn';
    const wait = s.state === 'waiting' && s.delayMs !== undefined ? ` Next try in ${Math.ceil(s.delayMs / 1000)} s.` : '';
    bar.append(again ? `Reconnecting…${wait}` : 'Connecting…');
    if (again) bar.append(' ', h('button', { type: 'button', onclick: () => this.#client?.reconnectNow() }, 'Retry now'));
  }

  /** Renders on the next microtask (many events in a row render once); `toBottom` scrolls the log down. */
  #render(toBottom = false): void {
    if (toBottom) this.#stickToBottom = true;
    if (this.#renderQueued) return;
    this.#renderQueued = true;
    queueMicrotask(() => {
      this.#renderQueued = false;
      this.#renderList();
      this.#renderConversation();
    });
  }

  #stickToBottom = false;

  #renderList(): void {
    const items = this.#state.ordered().map((c) =>
      h(
        'li',
        {},
        h(
          'button',
          {
            type: 'button',
            class: `item${c.peer === this.#peer ? ' current' : ''}`,
            'aria-current': c.peer === this.#peer ? 'true' : false,
            onclick: () => this.openConversation(c.peer),
          },
          h('span', { class: `dot ${c.online ? 'online' : 'offline'}`, 'aria-hidden': 'true' }),
          h('span', { class: 'peer' }, c.peer),
          h('span', { class: 'visually-hidden' }, c.online ? ', online' : ', offline'),
          c.unread > 0 && !c.blocked ? h('span', { class: 'badge' }, String(c.unread), h('span', { class: 'visually-hidden' }, ' unread')) : null,
          h('span', { class: 'preview' }, c.blocked ? 'Blocked' : c.lastText.slice(0, 80)),
        ),
      ),
    );
    replace(this.#list, items.length ? items : [h('li', { class: 'empty' }, 'No conversations yet.')]);
  }

  #renderConversation(): void {
    this.#main.classList.toggle('has-peer', this.#peer !== null && this.#view === 'chat');
    this.#main.classList.toggle('has-lists', this.#view === 'lists');
    this.#conv.hidden = this.#view !== 'chat';
    this.#listsPanel.hidden = this.#view !== 'lists';
    if (this.#view !== 'chat') return;
    if (this.#peer === null) {
      replace(this.#conv, h('p', { class: 'placeholder' }, 'Choose a conversation, or start one with a user id.'));
      return;
    }
    const c = this.#conversation(this.#peer);
    const atBottom = this.#stickToBottom || this.#log.scrollHeight - this.#log.scrollTop - this.#log.clientHeight < 60;
    this.#stickToBottom = false;
    this.#conv.setAttribute('aria-label', `Conversation with ${c.peer}`);
    const seen = c.seenKey();
    const actions = {
      retry: (id: string) => this.#client?.retry(id),
      discard: (id: string) => {
        this.#client?.discard(id);
        c.discard(id);
        this.#render();
      },
    };
    const older =
      c.nextBefore !== null
        ? h('li', { class: 'older' }, h('button', { type: 'button', onclick: () => void this.#loadOlder() }, 'Load older messages'))
        : c.historyLoaded
          ? h('li', { class: 'older note' }, 'Beginning of the conversation')
          : null;
    replace(this.#log, older, c.visibleLines().map((line) => messageLine(line, c.peer, line.key === seen, actions)));
    this.#typing.textContent = c.isTyping(Date.now()) ? `${c.peer} is typing…` : '';
    const header = h(
      'header',
      { class: 'conv-head' },
      h('button', { type: 'button', class: 'back', 'aria-label': 'Back to conversations', onclick: () => this.#closeConversation() }, '←'),
      h('h2', {}, c.peer),
      h('span', { class: `presence ${c.online ? 'online' : ''}` }, c.online ? 'online' : 'offline'),
      c.blocked !== null
        ? h('button', { type: 'button', onclick: () => void this.#toggleBlock(c) }, c.blocked ? 'Unblock' : 'Block')
        : null,
    );
    const blockedNote = c.blocked ? h('p', { class: 'note' }, `You blocked ${c.peer}: their messages are hidden, and new ones are not delivered to you.`) : null;
    if (this.#tipBox?.peer !== c.peer) this.#tipBox = { peer: c.peer, element: this.#tipForm(c) };
    replace(this.#conv, header, blockedNote, this.#log, this.#typing, this.#tipBox.element, this.#composer.element);
    if (atBottom) this.#log.scrollTop = this.#log.scrollHeight;
  }

  #tipDetailsOpen = false;
  /** The tip form of the open conversation, kept across renders (what is typed in it stays). */
  #tipBox: { peer: string; element: HTMLElement } | null = null;

  #tipForm(c: Conversation): HTMLElement {
    const config = this.#env.config;
    const amount = h('input', { id: 'tip-amount', inputmode: 'decimal', autocomplete: 'off', placeholder: (config.tipMinAmount / 100).toFixed(2) });
    const currency = h('select', { id: 'tip-currency' }, config.tipCurrencies.map((cur) => h('option', { value: cur }, cur)));
    const note = h('input', { id: 'tip-note', autocomplete: 'off', maxlength: 500 });
    const problem = h('p', { class: 'problem', 'aria-live': 'polite' });
    const details = h(
      'details',
      { class: 'tipbox', open: this.#tipDetailsOpen, ontoggle: () => (this.#tipDetailsOpen = details.open) },
      h('summary', {}, 'Send a tip'),
      h(
        'form',
        {
          onsubmit: (e: SubmitEvent) => {
            e.preventDefault();
            const minor = parseAmount(amount.value);
            if (minor === null || minor < config.tipMinAmount || minor > config.tipMaxAmount) {
              problem.textContent = `A tip is between ${formatAmount(config.tipMinAmount, null)} and ${formatAmount(config.tipMaxAmount, null)}.`;
              return;
            }
            problem.textContent = '';
            this.#client?.sendTip(c.peer, { amount: minor, currency: currency.value }, note.value);
            amount.value = '';
            note.value = '';
          },
        },
        h('label', { for: 'tip-amount' }, 'Tip amount'),
        amount,
        h('label', { for: 'tip-currency' }, 'Currency'),
        currency,
        h('label', { for: 'tip-note' }, 'Tip message (optional)'),
        note,
        h('button', { type: 'submit' }, 'Send tip'),
        problem,
      ),
    );
    return details;
  }

  // --- creators: messages to lists

  async #showLists(): Promise<void> {
    this.#view = 'lists';
    this.#render();
    const client = this.#client;
    if (!client) return;
    try {
      const [lists, recent] = await Promise.all([
        // with the product's own list service (MESSENGER_LISTS_URL) the API keeps no lists: 409
        client.api.lists({ limit: 100 }).catch((error: unknown) => {
          if (error instanceof ApiError && error.code === 'lists_external') return null;
          throw error;
        }),
        client.api.massMessages({ limit: 10 }),
      ]);
      this.#listsExternal = lists === null;
      this.#lists = lists?.lists ?? [];
      for (const m of recent.mass_messages) {
        this.#mass.set(m.id, m);
        if (m.status === 'queued' || m.status === 'sending') void this.#watchMass(m.id);
      }
    } catch (error) {
      this.#renderListsNote(`Could not load your lists: ${error instanceof Error ? error.message : String(error)}`);
      return;
    }
    this.#renderListsForm();
  }

  #listsNote = h('p', { class: 'problem', role: 'alert' });

  #renderListsNote(text: string): void {
    this.#listsNote.textContent = text;
  }

  #massRows = h('ol', { class: 'mass-list', 'aria-live': 'polite' });

  /** The form to write to a list (built once per visit, so a progress update keeps the draft). */
  #renderListsForm(): void {
    const select = this.#listsExternal
      ? h('input', { id: 'list-choice', autocomplete: 'off', maxlength: 64, placeholder: 'list id' })
      : h('select', { id: 'list-choice' }, this.#lists.map((l) => h('option', { value: l.id }, `${l.name} (${l.members} members)`)));
    const composer = new Composer({
      to: () => select.value,
      maxBytes: () => this.#env.config.maxBodyBytes,
      label: 'Message to list',
      send: (body) => {
        const list = select.value.trim();
        if (!list) {
          this.#renderListsNote('Choose a list first.');
          return;
        }
        this.#client?.sendToList(list, body);
        this.#renderListsNote('');
      },
    });
    replace(
      this.#listsPanel,
      h(
        'header',
        { class: 'conv-head' },
        h('button', { type: 'button', class: 'back', 'aria-label': 'Back to conversations', onclick: () => this.#closeConversation() }, '←'),
        h('h2', {}, 'Message a list'),
      ),
      this.#listsExternal
        ? [h('label', { for: 'list-choice' }, 'List id'), h('p', { class: 'note' }, 'Your lists are kept by the list service: give the id of one.'), select, composer.element]
        : this.#lists.length
          ? [h('label', { for: 'list-choice' }, 'List'), select, composer.element]
          : h('p', { class: 'note' }, 'You have no lists yet (create them with the REST API: POST /v1/lists).'),
      this.#listsNote,
      h('h3', {}, 'Recent messages to lists'),
      this.#massRows,
    );
    this.#renderLists();
  }

  /** The progress of recent messages to lists. */
  #renderLists(): void {
    const rows = [...this.#mass.values()].sort((a, b) => b.id - a.id).map((m) => {
      const total = m.recipients ?? 0;
      return h(
        'li',
        { class: `mass ${m.status}` },
        h('p', { class: 'body' }, m.body.slice(0, 200)),
        h('p', { class: 'meta' }, `${m.status}: ${m.processed} of ${m.recipients ?? '?'} processed, ${m.stored} delivered, ${m.skipped} skipped`),
        total > 0 ? h('progress', { max: total, value: m.processed, 'aria-label': `Progress of message ${m.id}` }) : null,
      );
    });
    replace(this.#massRows, rows.length ? rows : h('li', { class: 'note' }, 'None yet.'));
  }

  async #watchMass(id: number): Promise<void> {
    const client = this.#client;
    if (!client || this.#massTimers.has(id)) return;
    const poll = async (): Promise<void> => {
      this.#massTimers.delete(id);
      if (this.#client !== client) return;
      try {
        const m = await client.api.massMessage(id);
        this.#mass.set(id, m);
        if (this.#view === 'lists') this.#renderLists();
        if (m.status === 'sent' || m.status === 'failed' || m.status === 'canceled') return;
      } catch {
        // try again on the next tick
      }
      this.#massTimers.set(id, setTimeout(() => void poll(), 2_000));
    };
    this.#massTimers.set(id, setTimeout(() => void poll(), 0));
  }
}
