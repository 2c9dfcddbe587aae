/**
 * The REST API's endpoints (docs/api.md) as typed methods, each answer checked before it is
 * returned. Field names are the API's. Paging is by keyset: pass a page's `next_before` or
 * `next_after` back as `before` or `after`.
 */

import { parseMessage, parseMessages, type Message } from './protocol.js';
import { ApiError, type RestClient } from './rest.js';
import {
  ProtocolError,
  array,
  bool,
  isUserId,
  int,
  nullableInt,
  nullableServerId,
  nullableStr,
  nullableTimestamp,
  object,
  oneOf,
  printableId,
  serverId,
  str,
  timestamp,
  userId,
  type Json,
} from './validate.js';

export interface MessagePage {
  messages: Message[];
  next_before: number | null;
  next_after: number | null;
}

export interface Conversation {
  peer: string;
  last_message: Message;
  /** Unread messages from the peer. */
  unread: number;
}

export interface ConversationPage {
  conversations: Conversation[];
  next_before: number | null;
}

export interface ReadMark {
  from: string;
  up_to: number;
}

export interface Block {
  user: string;
  created_at: string;
}

export interface BlockPage {
  blocks: Block[];
  next_after: string | null;
}

export interface DevicePresence {
  device: string;
  node: string;
  since: string;
}

export interface Presence {
  user: string;
  online: boolean;
  devices: DevicePresence[];
  since: string | null;
  last_seen: string | null;
}

export interface MemberList {
  id: string;
  name: string;
  owner: string;
  members: number;
  created_at: string;
}

export interface ListPage {
  lists: MemberList[];
  next_after: string | null;
}

export interface MemberPage {
  members: string[];
  next_after: string | null;
}

export interface MembersAdded {
  added: number;
  members: number;
}

export type MassMessageStatus = 'queued' | 'sending' | 'sent' | 'failed' | 'canceled';

export interface MassMessage {
  id: number;
  client_id: string;
  list: string;
  body: string;
  status: MassMessageStatus;
  recipients: number | null;
  processed: number;
  stored: number;
  skipped: number;
  progress: number | null;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
}

export interface MassMessagePage {
  mass_messages: MassMessage[];
  next_before: number | null;
}

export interface Tip {
  id: number;
  client_id: string;
  from: string;
  to: string;
  amount: number;
  currency: string;
  body: string;
  status: 'pending' | 'succeeded' | 'failed';
  reason: string | null;
  message_id: number | null;
  /** Where to fix billing, for a failed tip. */
  billing_url: string | null;
  created_at: string;
  settled_at: string | null;
}

export interface TipPage {
  tips: Tip[];
  next_before: number | null;
}

export interface Me {
  user: string;
  role: string;
  display_name: string | null;
  created_at: string | null;
  token: { jti: string | null; issued_at: string | null; expires_at: string | null };
}

export interface Paging {
  limit?: number;
}

const enc = encodeURIComponent;

export class MessengerApi {
  constructor(readonly rest: RestClient) {}

  // --- messages

  /** One conversation: newest first (`before`), or oldest first from `after`. */
  history(peer: string, page: Paging & { before?: number; after?: number } = {}): Promise<MessagePage> {
    return this.rest.request('GET', '/v1/messages', { query: { with: peer, ...page }, parse: parseMessagePage });
  }

  /** The caller's unread messages, oldest first. */
  unread(page: Paging & { after?: number } = {}): Promise<MessagePage> {
    return this.rest.request('GET', '/v1/messages/unread', { query: { ...page }, parse: parseMessagePage });
  }

  /** Marks read every unread message up to `up_to` (from `with` only, if given), or exactly `ids`. */
  markRead(mark: { up_to: number; with?: string } | { ids: number[]; with?: string }): Promise<ReadMark[]> {
    return this.rest.request('POST', '/v1/messages/read', {
      body: mark,
      parse: (data) => {
        const o = object(data, 'read');
        return array(o, 'read', 'read', (v, w) => {
          const r = object(v, w);
          return { from: userId(r, 'from', w), up_to: int(r, 'up_to', w) };
        });
      },
    });
  }

  /** Sends over HTTP (no live connection needed); `client_id` makes a retry safe. */
  sendMessage(message: { to: string; body: string; client_id: string }): Promise<Message> {
    return this.rest.request('POST', '/v1/messages', { body: message, parse: (d) => parseMessage(d) });
  }

  /** A creator's message to one of their lists: queued, fanned out in the background. */
  sendToList(message: { list: string; body: string; client_id: string }): Promise<MassMessage> {
    return this.rest.request('POST', '/v1/messages', { body: message, parse: (d) => parseMassMessage(d) });
  }

  conversations(page: Paging & { before?: number } = {}): Promise<ConversationPage> {
    return this.rest.request('GET', '/v1/conversations', {
      query: { ...page },
      parse: (data) => {
        const o = object(data, 'conversations');
        return {
          conversations: array(o, 'conversations', 'conversations', (v, w) => {
            const c = object(v, w);
            return {
              peer: userId(c, 'peer', w),
              last_message: parseMessage(c['last_message'], `${w}.last_message`),
              unread: int(c, 'unread', w),
            };
          }),
          next_before: nullableServerId(o, 'next_before', 'conversations'),
        };
      },
    });
  }

  // --- blocks

  blocks(page: Paging & { after?: string } = {}): Promise<BlockPage> {
    return this.rest.request('GET', '/v1/blocks', {
      query: { ...page },
      parse: (data) => {
        const o = object(data, 'blocks');
        return {
          blocks: array(o, 'blocks', 'blocks', (v, w) => parseBlock(v, w)),
          next_after: nullableStr(o, 'next_after', 'blocks'),
        };
      },
    });
  }

  /** The block of `user`, or null when the caller has not blocked them. */
  async getBlock(user: string): Promise<Block | null> {
    try {
      return await this.rest.request('GET', `/v1/blocks/${enc(user)}`, { parse: (d) => parseBlock(d) });
    } catch (error) {
      if (error instanceof ApiError && error.code === 'not_blocked') return null;
      throw error;
    }
  }

  /** Blocks `user` (idempotent): their messages are stored but never delivered to the caller. */
  block(user: string): Promise<Block> {
    return this.rest.request('PUT', `/v1/blocks/${enc(user)}`, { parse: (d) => parseBlock(d) });
  }

  /** Unblocks `user` (idempotent). */
  unblock(user: string): Promise<void> {
    return this.rest.request('DELETE', `/v1/blocks/${enc(user)}`, { parse: () => undefined });
  }

  // --- presence

  /** A user's presence; a block either way answers like a user never seen. */
  presence(user: string): Promise<Presence> {
    return this.rest.request('GET', `/v1/presence/${enc(user)}`, { parse: (d) => parsePresenceInfo(d) });
  }

  /** Up to 100 users at once, in the order asked. */
  queryPresence(users: string[]): Promise<Presence[]> {
    return this.rest.request('POST', '/v1/presence/query', {
      body: { users },
      parse: (data) => array(object(data, 'presence'), 'presence', 'presence', (v, w) => parsePresenceInfo(v, w)),
    });
  }

  me(): Promise<Me> {
    return this.rest.request('GET', '/v1/me', {
      parse: (data) => {
        const o = object(data, 'me');
        const t = object(o['token'], 'me.token');
        return {
          user: userId(o, 'user', 'me'),
          role: str(o, 'role', 'me'),
          display_name: nullableStr(o, 'display_name', 'me'),
          created_at: nullableTimestamp(o, 'created_at', 'me'),
          token: {
            jti: nullableStr(t, 'jti', 'me.token'),
            issued_at: nullableTimestamp(t, 'issued_at', 'me.token'),
            expires_at: nullableTimestamp(t, 'expires_at', 'me.token'),
          },
        };
      },
    });
  }

  // --- lists (creators)

  lists(page: Paging & { after?: string } = {}): Promise<ListPage> {
    return this.rest.request('GET', '/v1/lists', {
      query: { ...page },
      parse: (data) => {
        const o = object(data, 'lists');
        return {
          lists: array(o, 'lists', 'lists', (v, w) => parseList(v, w)),
          next_after: nullableStr(o, 'next_after', 'lists'),
        };
      },
    });
  }

  createList(name: string): Promise<MemberList> {
    return this.rest.request('POST', '/v1/lists', { body: { name }, parse: (d) => parseList(d) });
  }

  getList(id: string): Promise<MemberList> {
    return this.rest.request('GET', `/v1/lists/${enc(id)}`, { parse: (d) => parseList(d) });
  }

  deleteList(id: string): Promise<void> {
    return this.rest.request('DELETE', `/v1/lists/${enc(id)}`, { parse: () => undefined });
  }

  members(id: string, page: Paging & { after?: string } = {}): Promise<MemberPage> {
    return this.rest.request('GET', `/v1/lists/${enc(id)}/members`, {
      query: { ...page },
      parse: (data) => {
        const o = object(data, 'members');
        return {
          members: array(o, 'members', 'members', (v, w) => {
            if (!isUserId(v)) throw new ProtocolError(`${w}: expected a user id`);
            return v;
          }),
          next_after: nullableStr(o, 'next_after', 'members'),
        };
      },
    });
  }

  addMembers(id: string, members: string[]): Promise<MembersAdded> {
    return this.rest.request('POST', `/v1/lists/${enc(id)}/members`, {
      body: { members },
      parse: (data) => {
        const o = object(data, 'members');
        return { added: int(o, 'added', 'members'), members: int(o, 'members', 'members') };
      },
    });
  }

  removeMember(id: string, member: string): Promise<void> {
    return this.rest.request('DELETE', `/v1/lists/${enc(id)}/members/${enc(member)}`, { parse: () => undefined });
  }

  // --- mass messages (creators)

  massMessages(page: Paging & { before?: number } = {}): Promise<MassMessagePage> {
    return this.rest.request('GET', '/v1/mass-messages', {
      query: { ...page },
      parse: (data) => {
        const o = object(data, 'mass_messages');
        return {
          mass_messages: array(o, 'mass_messages', 'mass_messages', (v, w) => parseMassMessage(v, w)),
          next_before: nullableServerId(o, 'next_before', 'mass_messages'),
        };
      },
    });
  }

  massMessage(id: number): Promise<MassMessage> {
    return this.rest.request('GET', `/v1/mass-messages/${id}`, { parse: (d) => parseMassMessage(d) });
  }

  cancelMassMessage(id: number): Promise<MassMessage> {
    return this.rest.request('POST', `/v1/mass-messages/${id}/cancel`, { parse: (d) => parseMassMessage(d) });
  }

  // --- tips

  /**
   * Tips a creator over HTTP; charged at most once per `client_id`. A declined charge throws
   * {@link ApiError} `tip_failed` (402) whose `billingUrl` is where to fix the payment method.
   */
  tip(tip: { to: string; amount: number; currency: string; body?: string; client_id: string }): Promise<Tip> {
    return this.rest.request('POST', '/v1/tips', { body: tip, parse: (d) => parseTip(d) });
  }

  tipsSent(page: Paging & { before?: number } = {}): Promise<TipPage> {
    return this.rest.request('GET', '/v1/tips/sent', { query: { ...page }, parse: parseTipPage });
  }

  tipsReceived(page: Paging & { before?: number } = {}): Promise<TipPage> {
    return this.rest.request('GET', '/v1/tips/received', { query: { ...page }, parse: parseTipPage });
  }
}

// --- parsers

export function parseMessagePage(data: unknown): MessagePage {
  const o = object(data, 'messages');
  return {
    messages: parseMessages(o, 'messages', 'messages'),
    next_before: nullableServerId(o, 'next_before', 'messages'),
    next_after: nullableInt(o, 'next_after', 'messages'),
  };
}

function parseBlock(value: unknown, what = 'block'): Block {
  const o = object(value, what);
  return { user: userId(o, 'user', what), created_at: timestamp(o, 'created_at', what) };
}

function parsePresenceInfo(value: unknown, what = 'presence'): Presence {
  const o = object(value, what);
  return {
    user: userId(o, 'user', what),
    online: bool(o, 'online', what),
    devices: array(o, 'devices', what, (v, w) => {
      const d = object(v, w);
      return { device: str(d, 'device', w), node: str(d, 'node', w), since: timestamp(d, 'since', w) };
    }),
    since: nullableTimestamp(o, 'since', what),
    last_seen: nullableTimestamp(o, 'last_seen', what),
  };
}

function parseList(value: unknown, what = 'list'): MemberList {
  const o = object(value, what);
  return {
    id: printableId(o, 'id', what),
    name: str(o, 'name', what),
    owner: userId(o, 'owner', what),
    members: int(o, 'members', what),
    created_at: timestamp(o, 'created_at', what),
  };
}

function parseMassMessage(value: unknown, what = 'mass message'): MassMessage {
  const o: Json = object(value, what);
  const progress = o['progress'];
  if (progress !== null && (typeof progress !== 'number' || !(progress >= 0 && progress <= 1))) {
    throw new ProtocolError(`${what}.progress: expected a number in [0, 1] or null`);
  }
  return {
    id: serverId(o, 'id', what),
    client_id: printableId(o, 'client_id', what),
    list: printableId(o, 'list', what),
    body: str(o, 'body', what),
    status: oneOf(o, 'status', what, ['queued', 'sending', 'sent', 'failed', 'canceled'] as const),
    recipients: nullableInt(o, 'recipients', what),
    processed: int(o, 'processed', what),
    stored: int(o, 'stored', what),
    skipped: int(o, 'skipped', what),
    progress,
    created_at: timestamp(o, 'created_at', what),
    started_at: nullableTimestamp(o, 'started_at', what),
    finished_at: nullableTimestamp(o, 'finished_at', what),
  };
}

function parseTip(value: unknown, what = 'tip'): Tip {
  const o = object(value, what);
  return {
    id: serverId(o, 'id', what),
    client_id: printableId(o, 'client_id', what),
    from: userId(o, 'from', what),
    to: userId(o, 'to', what),
    amount: int(o, 'amount', what, 1),
    currency: str(o, 'currency', what),
    body: str(o, 'body', what),
    status: oneOf(o, 'status', what, ['pending', 'succeeded', 'failed'] as const),
    reason: nullableStr(o, 'reason', what),
    message_id: nullableServerId(o, 'message_id', what),
    billing_url: nullableStr(o, 'billing_url', what),
    created_at: timestamp(o, 'created_at', what),
    settled_at: nullableTimestamp(o, 'settled_at', what),
  };
}

function parseTipPage(data: unknown): TipPage {
  const o = object(data, 'tips');
  return {
    tips: array(o, 'tips', 'tips', (v, w) => parseTip(v, w)),
    next_before: nullableServerId(o, 'next_before', 'tips'),
  };
}
