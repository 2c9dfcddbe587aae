/**
 * Messenger's MQTT protocol, version 1 (docs/protocol.md): topics, the commands a client sends,
 * and parsers for what the server delivers. Field names are the wire's (`client_id`, `sent_at`),
 * so docs/protocol.md is the reference for every payload type here.
 */

import {
  ProtocolError,
  array,
  bool,
  int,
  isPrintableId,
  isUserId,
  nullableInt,
  nullablePrintableId,
  nullableServerId,
  nullableStr,
  nullableTimestamp,
  num,
  object,
  oneOf,
  printableId,
  serverId,
  str,
  timestamp,
  userId,
  type Json,
} from './validate.js';

export { ProtocolError } from './validate.js';

/** The largest command the handler reads: 64 KiB of UTF-8 JSON. */
export const MAX_COMMAND_BYTES = 65_536;

/**
 * A presence device name follows the user id rule; the library also uses it as the client id
 * suffix (`{uid}/{device}`), whose own rule (`[A-Za-z0-9_.:-]{1,128}`) it fits.
 */
export function isDevice(value: string): boolean {
  return isUserId(value);
}

export const topics = {
  inbound: (uid: string): string => `inbound/${uid}`,
  messages: (uid: string): string => `users/${uid}/messages`,
  events: (uid: string): string => `users/${uid}/events`,
  presence: (uid: string, device: string): string => `presence/${uid}/${device}`,
  /** Every device of one user: the filter a client may subscribe to. */
  presenceOf: (uid: string): string => `presence/${uid}/+`,
};

/** `presence/{uid}/{device}` split, or null for any other topic. */
export function parsePresenceTopic(topic: string): { user: string; device: string } | null {
  const parts = topic.split('/');
  if (parts.length !== 3 || parts[0] !== 'presence') return null;
  const [, user, device] = parts as [string, string, string];
  return isUserId(user) && isUserId(device) ? { user, device } : null;
}

// ---------------------------------------------------------------------------------------------
// What the server delivers

export interface MessageTip {
  amount: number;
  currency: string | null;
  status: string | null;
}

/** A stored message, as `users/{uid}/messages` and the REST API carry it. */
export interface Message {
  /** The server id: unique and increasing; order and deduplicate by it. */
  id: number;
  /** The sender's idempotency key. */
  client_id: string;
  from: string;
  to: string;
  body: string;
  sent_at: string;
  read_at: string | null;
  tip: MessageTip | null;
  /** The list id when this is a copy of a mass message. */
  list: string | null;
}

export interface TipState {
  amount: number;
  currency: string;
  status: string;
}

/** The handler processed a `message` command: stored (`sent`), queued (list) or charging (tip). */
export interface AckEvent {
  type: 'ack';
  client_id: string;
  /** The server id of the stored message; null for a queued mass message or a pending tip. */
  id: number | null;
  status: 'sent' | 'queued' | 'pending';
  duplicate: boolean;
  sent_at: string | null;
  mass_message: number | null;
  tip: TipState | null;
}

export interface ErrorEvent {
  type: 'error';
  /** The command's `id` (a `read` or `sync` without one: null), or null when it could not be read. */
  client_id: string | null;
  code: string;
  detail: string;
  /** Seconds to wait before resending, with `rate_limited`. */
  retry_after: number | null;
  /** With `rate_limited`: the bucket (`send`, `tip`, `charge_declined`, `read`, `sync`). */
  limit: string | null;
}

export interface TipFailedEvent {
  type: 'tip_failed';
  client_id: string;
  /** Where the member fixes their payment method. */
  billing_url: string;
  reason: string | null;
  tip: TipState;
}

export interface ReadEvent {
  type: 'read';
  by: string;
  up_to: number;
}

export interface TypingEvent {
  type: 'typing';
  from: string;
}

export interface SyncedEvent {
  type: 'synced';
  last_id: number | null;
  more: boolean;
  /**
   * The `id` of the `sync` it answers; null for the server's own catch-up (a device came online)
   * and a `sync` without one; undefined from a server that does not say (before request ids).
   */
  client_id?: string | null;
}

export type ServerEvent = AckEvent | ErrorEvent | TipFailedEvent | ReadEvent | TypingEvent | SyncedEvent;

const decoder = new TextDecoder('utf-8', { fatal: true });

/** UTF-8 JSON from the wire; throws {@link ProtocolError} for bad UTF-8 or bad JSON. */
export function decodeJson(payload: Uint8Array | string): unknown {
  let text: string;
  try {
    text = typeof payload === 'string' ? payload : decoder.decode(payload);
  } catch {
    throw new ProtocolError('payload is not UTF-8');
  }
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new ProtocolError('payload is not JSON');
  }
}

function parseMessageTip(value: unknown, what: string): MessageTip | null {
  if (value === null || value === undefined) return null;
  const o = object(value, what);
  return {
    amount: int(o, 'amount', what, 1),
    currency: nullableStr(o, 'currency', what),
    status: nullableStr(o, 'status', what),
  };
}

function parseTipState(value: unknown, what: string): TipState {
  const o = object(value, what);
  return { amount: int(o, 'amount', what, 1), currency: str(o, 'currency', what), status: str(o, 'status', what) };
}

/** A delivered or fetched message; `type` is optional so REST messages parse too. */
export function parseMessage(value: unknown, what = 'message'): Message {
  const o = object(value, what);
  if (o['type'] !== undefined && o['type'] !== 'message') {
    throw new ProtocolError(`${what}.type: expected "message"`);
  }
  return {
    id: serverId(o, 'id', what),
    client_id: printableId(o, 'client_id', what),
    from: userId(o, 'from', what),
    to: userId(o, 'to', what),
    body: str(o, 'body', what),
    sent_at: timestamp(o, 'sent_at', what),
    read_at: nullableTimestamp(o, 'read_at', what),
    tip: parseMessageTip(o['tip'], `${what}.tip`),
    list: nullablePrintableId(o, 'list', what),
  };
}

export function parseMessages(o: Json, key: string, what: string): Message[] {
  return array(o, key, what, (v, where) => parseMessage(v, where));
}

/** An event from `users/{uid}/events`. Unknown types are refused (the caller may skip them). */
export function parseEvent(value: unknown): ServerEvent {
  const o = object(value, 'event');
  const type = o['type'];
  const what = `event ${String(type)}`;
  switch (type) {
    case 'ack':
      return {
        type,
        client_id: printableId(o, 'client_id', what),
        id: nullableServerId(o, 'id', what),
        status: oneOf(o, 'status', what, ['sent', 'queued', 'pending'] as const),
        duplicate: o['duplicate'] === undefined ? false : bool(o, 'duplicate', what),
        sent_at: nullableTimestamp(o, 'sent_at', what),
        mass_message: nullableServerId(o, 'mass_message', what),
        tip: o['tip'] === null || o['tip'] === undefined ? null : parseTipState(o['tip'], `${what}.tip`),
      };
    case 'error': {
      const retryAfter = o['retry_after'];
      return {
        type,
        client_id: nullablePrintableId(o, 'client_id', what),
        code: str(o, 'code', what),
        detail: str(o, 'detail', what),
        retry_after: retryAfter === null || retryAfter === undefined ? null : num(o, 'retry_after', what),
        limit: nullableStr(o, 'limit', what),
      };
    }
    case 'tip_failed':
      return {
        type,
        client_id: printableId(o, 'client_id', what),
        billing_url: str(o, 'billing_url', what),
        reason: nullableStr(o, 'reason', what),
        tip: parseTipState(o['tip'], `${what}.tip`),
      };
    case 'read':
      return { type, by: userId(o, 'by', what), up_to: int(o, 'up_to', what) };
    case 'typing':
      return { type, from: userId(o, 'from', what) };
    case 'synced':
      return {
        type,
        last_id: nullableInt(o, 'last_id', what),
        more: bool(o, 'more', what),
        ...('client_id' in o ? { client_id: nullablePrintableId(o, 'client_id', what) } : {}),
      };
    default:
      throw new ProtocolError(`event: unknown type ${JSON.stringify(type)?.slice(0, 40)}`);
  }
}

/**
 * The online state a presence payload carries: `online`/`offline` as text (any case, spaces
 * ignored) or `{"status": ...}`; empty means offline. Null for anything else (ignore it).
 */
export function parsePresence(payload: Uint8Array | string): boolean | null {
  let text: string;
  try {
    text = (typeof payload === 'string' ? payload : decoder.decode(payload)).trim();
  } catch {
    return null;
  }
  if (text === '') return false;
  if (text.startsWith('{')) {
    try {
      const data = JSON.parse(text) as unknown;
      const status = typeof data === 'object' && data !== null ? (data as Json)['status'] : undefined;
      text = typeof status === 'string' ? status.trim() : '';
    } catch {
      return null;
    }
  }
  const state = text.toLowerCase();
  return state === 'online' ? true : state === 'offline' ? false : null;
}

// ---------------------------------------------------------------------------------------------
// What a client sends (on `inbound/{uid}`)

export interface TipDraft {
  /** Minor units: 500 = 5.00. */
  amount: number;
  /** ISO 4217, e.g. `USD`. */
  currency: string;
}

export type Command =
  | { type: 'message'; id: string; to: string; body: string; tip?: TipDraft }
  | { type: 'message'; id: string; list: string; body: string }
  | { type: 'read'; up_to: number; with?: string; id?: string }
  | { type: 'typing'; to: string }
  | { type: 'sync'; after?: number; id?: string };

// Lone surrogates: no UTF-8 form, refused by the server (a surrogate pair is one character).
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
// Control characters (C0, DEL, C1); a body keeps line feed, carriage return and tab.
const BODY_CONTROL = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]/;
const LINE_CONTROL = /[\x00-\x1f\x7f-\x9f]/;

/**
 * Why the server would refuse this text (docs/protocol.md, "Text"), or null when it is fine:
 * `multiline` for a message body, else one line (names).
 */
export function textProblem(value: string, multiline = true): string | null {
  const surrogate = LONE_SURROGATE.exec(value);
  if (surrogate) {
    const code = surrogate[0].charCodeAt(0).toString(16).toUpperCase();
    return `lone surrogate U+${code} at character ${surrogate.index} is not allowed`;
  }
  const control = (multiline ? BODY_CONTROL : LINE_CONTROL).exec(value);
  if (control) {
    const code = control[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, '0');
    return `control character U+${code} at character ${control.index} is not allowed`;
  }
  return null;
}

const encoder = new TextEncoder();

/** A local refusal of a command the server would refuse too, with the server's code. */
export class InvalidCommand extends Error {
  override name = 'InvalidCommand';
  constructor(
    readonly code: 'invalid_payload' | 'payload_too_large',
    detail: string,
  ) {
    super(detail);
  }
}

/** Checks a command against the protocol's rules and encodes it; throws {@link InvalidCommand}. */
export function encodeCommand(command: Command): string {
  if (command.type === 'message') {
    if (!isPrintableId(command.id)) throw new InvalidCommand('invalid_payload', 'id: 1-64 printable ASCII characters');
    if ('list' in command) {
      if (!isPrintableId(command.list)) throw new InvalidCommand('invalid_payload', 'list: not a list id');
    } else {
      if (!isUserId(command.to)) throw new InvalidCommand('invalid_payload', `to: not a user id`);
      if (command.tip !== undefined) {
        const { amount, currency } = command.tip;
        if (!Number.isSafeInteger(amount) || amount <= 0) {
          throw new InvalidCommand('invalid_payload', 'tip.amount: a positive integer (minor units)');
        }
        if (!/^[A-Z]{3}$/.test(currency)) throw new InvalidCommand('invalid_payload', 'tip.currency: e.g. USD');
      }
    }
    const problem = textProblem(command.body, true);
    if (problem !== null) throw new InvalidCommand('invalid_payload', `body: ${problem}`);
  } else if (command.type === 'typing') {
    if (!isUserId(command.to)) throw new InvalidCommand('invalid_payload', 'to: not a user id');
  } else if (command.type === 'read') {
    if (!Number.isSafeInteger(command.up_to) || command.up_to < 0) {
      throw new InvalidCommand('invalid_payload', 'up_to: an integer >= 0');
    }
    if (command.with !== undefined && !isUserId(command.with)) {
      throw new InvalidCommand('invalid_payload', 'with: not a user id');
    }
  } else if (command.after !== undefined && (!Number.isSafeInteger(command.after) || command.after < 0)) {
    throw new InvalidCommand('invalid_payload', 'after: an integer >= 0');
  }
  // `id` first: the server echoes it with payload_too_large only if it is in the first 1 KiB.
  const text = JSON.stringify(command);
  const size = encoder.encode(text).length;
  if (size > MAX_COMMAND_BYTES) {
    throw new InvalidCommand('payload_too_large', `the command is ${size} bytes; the limit is ${MAX_COMMAND_BYTES}`);
  }
  return text;
}
