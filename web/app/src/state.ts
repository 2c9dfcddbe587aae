/**
 * What the app shows, kept apart from the DOM so it can be tested: each conversation's lines
 * (stored messages merged by server id, and this device's outgoing ones by client id), unread
 * counts, how far the peer has read ("seen"), typing, presence and blocks.
 */

import type { Message, OutgoingMessage } from '@messenger/client';

export type LineStatus = 'received' | 'pending' | 'accepted' | 'sent' | 'failed';

export interface Line {
  /** `id:{server id}` once stored, else `client:{client id}`. */
  key: string;
  id: number | null;
  clientId: string;
  mine: boolean;
  body: string;
  sentAt: string | null;
  status: LineStatus;
  /** Why it failed (or why it waits to be resent). */
  error: string | null;
  tip: { amount: number; currency: string | null; status: string | null } | null;
  /** A declined tip: where to fix the payment method. */
  billingUrl: string | null;
}

export class Conversation {
  readonly peer: string;
  /** Oldest first. Stored lines in id order, then the ones not stored yet in the order sent. */
  lines: Line[] = [];
  unread = 0;
  /**
   * The newest id `unread` accounts for: the server's count (the conversation list) covers every
   * message up to its last one, so a caught-up message at or below it is not counted again.
   */
  countedThrough = 0;
  /** The peer has read this user's messages up to this id. */
  seenUpTo = 0;
  /** Paging back: the `before` of the next older page; null when there is none. */
  nextBefore: number | null = null;
  historyLoaded = false;
  typingUntil = 0;
  online = false;
  blocked: boolean | null = null;
  /** The newest activity, for ordering the list (a server id, or a large number for local sends). */
  lastActivity = 0;
  lastText = '';

  constructor(peer: string) {
    this.peer = peer;
  }

  /** Adds stored messages (a history page, a live or caught-up message); each id once. */
  addStored(messages: readonly Message[], me: string): Line[] {
    const added: Line[] = [];
    for (const m of messages) {
      const mine = m.from === me;
      const known = this.lines.findIndex((l) => l.id === m.id || (mine && l.mine && l.id === null && l.clientId === m.client_id));
      const line: Line = {
        key: `id:${m.id}`,
        id: m.id,
        clientId: m.client_id,
        mine,
        body: m.body,
        sentAt: m.sent_at,
        status: mine ? 'sent' : 'received',
        error: null,
        tip: m.tip,
        billingUrl: null,
      };
      if (known >= 0) {
        const old = this.lines[known] as Line;
        this.lines[known] = { ...line, billingUrl: old.billingUrl };
      } else {
        this.lines.push(line);
        added.push(line);
      }
      if (m.id >= this.lastActivity) {
        this.lastActivity = m.id;
        this.lastText = m.body;
      }
    }
    this.#sort();
    return added;
  }

  /** The server's unread count, as of its newest message `lastId` (the conversation list). */
  setUnread(count: number, lastId: number): void {
    this.unread = count;
    this.countedThrough = Math.max(this.countedThrough, lastId);
  }

  /**
   * Whether a message just received (live or caught up) is a new unread one: from the peer, not
   * read, and newer than what the unread count already holds (each id counts once).
   */
  isNewUnread(m: Message, me: string): boolean {
    const fresh = m.from !== me && m.read_at === null && m.id > this.countedThrough;
    this.countedThrough = Math.max(this.countedThrough, m.id);
    return fresh;
  }

  /** The lines shown: a blocked peer's messages are hidden (they come back on unblocking). */
  visibleLines(): Line[] {
    return this.blocked ? this.lines.filter((l) => l.mine) : this.lines;
  }

  /** A message this device sent changed state (pending, accepted, sent, failed). */
  addOutgoing(o: OutgoingMessage): void {
    const index = this.lines.findIndex((l) => l.mine && (l.clientId === o.clientId || (o.id !== null && l.id === o.id)));
    const line: Line = {
      key: o.id !== null ? `id:${o.id}` : `client:${o.clientId}`,
      id: o.id,
      clientId: o.clientId,
      mine: true,
      body: o.body,
      sentAt: o.sentAt,
      status: o.status,
      error: o.error ? describeError(o.error.code, o.error.detail, o.error.retryAfter) : null,
      tip: o.tip ? { amount: o.tip.amount, currency: o.tip.currency, status: o.tipStatus } : null,
      billingUrl: o.billingUrl,
    };
    if (index >= 0) this.lines[index] = line;
    else this.lines.push(line);
    this.lastActivity = Math.max(this.lastActivity, o.id ?? Number.MAX_SAFE_INTEGER);
    this.lastText = o.body;
    this.#sort();
  }

  /** Drops a failed message the user discarded. */
  discard(clientId: string): void {
    this.lines = this.lines.filter((l) => !(l.id === null && l.clientId === clientId));
  }

  /** The newest stored id from the peer (what marking read goes up to). */
  newestFromPeer(): number | null {
    for (let i = this.lines.length - 1; i >= 0; i--) {
      const line = this.lines[i] as Line;
      if (!line.mine && line.id !== null) return line.id;
    }
    return null;
  }

  /** The key of the last of this user's messages the peer has read: where "Seen" shows. */
  seenKey(): string | null {
    let key: string | null = null;
    for (const line of this.lines) if (line.mine && line.id !== null && line.id <= this.seenUpTo) key = line.key;
    return key;
  }

  isTyping(now: number): boolean {
    return now < this.typingUntil;
  }

  #sort(): void {
    // stored lines by id; lines not stored yet keep their place at the end
    const stored = this.lines.filter((l) => l.id !== null).sort((a, b) => (a.id as number) - (b.id as number));
    const local = this.lines.filter((l) => l.id === null);
    this.lines = [...stored, ...local];
  }
}

const CODES: Record<string, string> = {
  rate_limited: 'Sending too fast',
  blocked: 'You cannot message this user',
  unknown_recipient: 'No such user',
  payload_too_large: 'Too long',
  invalid_payload: 'Not accepted',
  tip_failed: 'Tip declined',
  timeout: 'No answer from the server',
  service_unavailable: 'Server busy',
};

/** An error code and detail in words for the user. */
export function describeError(code: string, detail: string, retryAfter: number | null = null): string {
  const head = CODES[code] ?? 'Not sent';
  // a declined charge's reason is billing's code (insufficient_funds): in words
  if (code === 'tip_failed') detail = detail.replaceAll('_', ' ');
  const wait = retryAfter !== null ? ` (retrying in ${Math.ceil(retryAfter)} s)` : '';
  return detail ? `${head}: ${detail}${wait}` : `${head}${wait}`;
}

export class ChatState {
  readonly conversations = new Map<string, Conversation>();

  get(peer: string): Conversation {
    let c = this.conversations.get(peer);
    if (!c) this.conversations.set(peer, (c = new Conversation(peer)));
    return c;
  }

  /** Newest activity first. */
  ordered(): Conversation[] {
    return [...this.conversations.values()].sort((a, b) => b.lastActivity - a.lastActivity || a.peer.localeCompare(b.peer));
  }
}

/** A tip's amount in minor units as text: `5.00 USD`. */
export function formatAmount(amount: number, currency: string | null): string {
  return `${(amount / 100).toFixed(2)}${currency ? ` ${currency}` : ''}`;
}

/** "5" or "5.5" or "5.50" (major units) to minor units, or null when it is not an amount. */
export function parseAmount(text: string): number | null {
  const match = /^\s*(\d{1,9})(?:[.,](\d{1,2}))?\s*$/.exec(text);
  if (!match) return null;
  return Number(match[1]) * 100 + Number((match[2] ?? '').padEnd(2, '0'));
}
