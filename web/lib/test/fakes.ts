/**
 * In-memory stand-ins for the network: an MQTT connector whose links record what the library
 * publishes and let a test deliver what the server would, and a `fetch` answered by a function.
 */

import type { Fetch, LinkHandlers, LinkOptions, MqttConnector, MqttLink } from '../src/transport.js';

const encoder = new TextEncoder();

export interface Published {
  topic: string;
  payload: string;
  retain: boolean;
}

export class FakeLink implements MqttLink {
  readonly subscribed: string[] = [];
  readonly unsubscribed: string[] = [];
  readonly published: Published[] = [];
  ended = false;
  /** Filters the broker refuses (SUBACK 0x80). */
  refuse = new Set<string>();

  constructor(
    readonly options: LinkOptions,
    readonly handlers: LinkHandlers,
  ) {}

  async subscribe(filters: string[]): Promise<void> {
    const refused = filters.filter((f) => this.refuse.has(f));
    if (refused.length > 0) throw new Error(`Subscribe error: ${refused.join(', ')}`);
    this.subscribed.push(...filters);
  }

  async unsubscribe(filters: string[]): Promise<void> {
    this.unsubscribed.push(...filters);
  }

  async publish(topic: string, payload: string, retain = false): Promise<void> {
    if (this.ended) throw new Error('link ended');
    this.published.push({ topic, payload, retain });
  }

  async end(): Promise<void> {
    this.ended = true;
  }

  /** The server publishes on a topic this client subscribed to. */
  deliver(topic: string, payload: unknown): void {
    const text = typeof payload === 'string' ? payload : JSON.stringify(payload);
    this.handlers.message(topic, encoder.encode(text));
  }

  /** The connection breaks (no DISCONNECT). */
  drop(error = new Error('connection lost')): void {
    this.handlers.close(error);
  }

  /** The JSON commands published on `inbound/...`, in order. */
  commands(): Record<string, unknown>[] {
    return this.published
      .filter((p) => p.topic.startsWith('inbound/'))
      .map((p) => JSON.parse(p.payload) as Record<string, unknown>);
  }
}

/** Accepts every CONNECT unless `outcomes` says otherwise (an Error rejects that attempt). */
export class FakeConnector implements MqttConnector {
  readonly connects: LinkOptions[] = [];
  readonly links: FakeLink[] = [];
  readonly outcomes: (Error | 'accept')[] = [];
  refuse = new Set<string>();

  async connect(options: LinkOptions, handlers: LinkHandlers): Promise<MqttLink> {
    this.connects.push(options);
    const outcome = this.outcomes.shift() ?? 'accept';
    if (outcome instanceof Error) throw outcome;
    const link = new FakeLink(options, handlers);
    link.refuse = this.refuse;
    this.links.push(link);
    return link;
  }

  get last(): FakeLink {
    const link = this.links.at(-1);
    if (!link) throw new Error('no link yet');
    return link;
  }
}

/** A JWT with this `sub` and `exp` (seconds); the signature is not checked by the library. */
export function makeToken(sub: string, exp: number, extra: Record<string, unknown> = {}): string {
  const b64 = (value: unknown): string =>
    btoa(JSON.stringify(value)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  return `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, exp, ...extra })}.c2lnbmF0dXJl`;
}

export interface SeenRequest {
  method: string;
  url: URL;
  headers: Record<string, string>;
  body: unknown;
  signal: AbortSignal | null;
}

/** A `fetch` that records each request and answers with `respond`. */
export function fakeFetch(respond: (request: SeenRequest) => Response | Promise<Response>): Fetch & { requests: SeenRequest[] } {
  const requests: SeenRequest[] = [];
  const fetch = async (input: string, init?: RequestInit): Promise<Response> => {
    const headers = Object.fromEntries(new Headers(init?.headers).entries());
    const request: SeenRequest = {
      method: init?.method ?? 'GET',
      url: new URL(input),
      headers,
      body: typeof init?.body === 'string' ? (JSON.parse(init.body) as unknown) : undefined,
      signal: init?.signal ?? null,
    };
    requests.push(request);
    return respond(request);
  };
  return Object.assign(fetch, { requests });
}

export function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });
}

/** A stored message as the server delivers it. */
export function wireMessage(id: number, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    type: 'message',
    id,
    client_id: `c-${id}`,
    from: 'alice',
    to: 'bob',
    body: `message ${id}`,
    sent_at: '2026-11-23T10:00:00.000000Z',
    read_at: null,
    tip: null,
    list: null,
    ...overrides,
  };
}
