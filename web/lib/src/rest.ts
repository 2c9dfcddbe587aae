/**
 * `fetch` for the REST API (docs/api.md): the bearer token on every request, one retry with a
 * fresh token after a 401, errors as {@link ApiError} with the server's stable `code` (and
 * `retry_after` for 429 and 503), network failures and timeouts as {@link NetworkError}.
 */

import type { TokenKeeper } from './token.js';
import type { Fetch } from './transport.js';
import { ProtocolError, type Json } from './validate.js';

/** An answer with an error status. `code` is the server's (docs/api.md, "Errors"), or `http_error`. */
export class ApiError extends Error {
  override name = 'ApiError';
  constructor(
    readonly status: number,
    readonly code: string,
    detail: string,
    /** The whole error body, for fields such as `errors`, `tip`. */
    readonly body: Json | null,
    /** Seconds to wait before retrying (429, 503), from `retry_after` or the `Retry-After` header. */
    readonly retryAfter: number | null,
  ) {
    super(detail);
  }

  /** The login page (401). */
  get loginUrl(): string | null {
    const v = this.body?.['login_url'];
    return typeof v === 'string' ? v : null;
  }

  /** Where to fix billing (402 `tip_failed`). */
  get billingUrl(): string | null {
    const v = this.body?.['billing_url'];
    return typeof v === 'string' ? v : null;
  }
}

/** No answer: the network failed, or the request timed out. Safe to retry with the same key. */
export class NetworkError extends Error {
  override name = 'NetworkError';
}

export type Query = Record<string, string | number | null | undefined>;

export interface RequestOptions<T> {
  query?: Query;
  /** Sent as JSON. */
  body?: unknown;
  /** Turns the JSON answer (undefined for 204) into `T`; throws {@link ProtocolError} if it does not fit. */
  parse(data: unknown): T;
}

export interface RestOptions {
  /** `http://127.0.0.1:8080` (the API's base URL, without `/v1`). */
  baseUrl: string;
  fetch: Fetch;
  tokens: TokenKeeper;
  /** The server refused even a fresh token: sign in again (`error.loginUrl`). */
  onUnauthorized?(error: ApiError): void;
  timeoutMs?: number;
}

export class RestClient {
  readonly #o: RestOptions;
  readonly #base: string;

  constructor(options: RestOptions) {
    this.#o = options;
    this.#base = options.baseUrl.replace(/\/+$/, '');
  }

  async request<T>(method: string, path: string, options: RequestOptions<T>): Promise<T> {
    const tokens = this.#o.tokens;
    const token = await tokens.valid(5_000);
    let response = await this.#send(method, path, options, token);
    if (response.status === 401) {
      // Expired or revoked since we got it: one more try with a new token.
      const refused = await toError(response);
      tokens.invalidate();
      let fresh: string;
      try {
        fresh = await tokens.fresh();
      } catch {
        this.#o.onUnauthorized?.(refused);
        throw refused;
      }
      response = await this.#send(method, path, options, fresh);
      if (response.status === 401) {
        const error = await toError(response);
        this.#o.onUnauthorized?.(error);
        throw error;
      }
    }
    if (!response.ok) throw await toError(response);
    const text = await response.text();
    if (response.status === 204 || text === '') return options.parse(undefined);
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch {
      throw new ProtocolError(`${method} ${path}: the answer is not JSON`);
    }
    return options.parse(data);
  }

  async #send(method: string, path: string, options: RequestOptions<unknown>, token: string): Promise<Response> {
    const url = new URL(this.#base + path);
    for (const [key, value] of Object.entries(options.query ?? {})) {
      if (value !== undefined && value !== null) url.searchParams.set(key, String(value));
    }
    const headers: Record<string, string> = { Authorization: `Bearer ${token}`, Accept: 'application/json' };
    if (options.body !== undefined) headers['Content-Type'] = 'application/json';
    const controller = new AbortController();
    const timeoutMs = this.#o.timeoutMs ?? 15_000;
    const timer = setTimeout(() => controller.abort(), timeoutMs);
    try {
      return await this.#o.fetch(url.toString(), {
        method,
        headers,
        signal: controller.signal,
        ...(options.body !== undefined ? { body: JSON.stringify(options.body) } : {}),
      });
    } catch (error) {
      const timedOut = controller.signal.aborted;
      throw new NetworkError(timedOut ? `${method} ${path}: no answer in ${timeoutMs} ms` : `${method} ${path}: ${String(error)}`, {
        cause: error,
      });
    } finally {
      clearTimeout(timer);
    }
  }
}

async function toError(response: Response): Promise<ApiError> {
  let text = '';
  try {
    text = await response.text();
  } catch {
    // the body is lost; the status still says what happened
  }
  let body: Json | null = null;
  try {
    const data: unknown = JSON.parse(text);
    if (typeof data === 'object' && data !== null && !Array.isArray(data)) body = data as Json;
  } catch {
    // a plain-text error (a proxy, the server's connection limit): keep the text as the detail
  }
  const code = typeof body?.['code'] === 'string' ? body['code'] : 'http_error';
  const detail = typeof body?.['detail'] === 'string' ? body['detail'] : text.slice(0, 200) || `HTTP ${response.status}`;
  return new ApiError(response.status, code, detail, body, retryAfterOf(response, body));
}

function retryAfterOf(response: Response, body: Json | null): number | null {
  const fromBody = body?.['retry_after'];
  if (typeof fromBody === 'number' && Number.isFinite(fromBody) && fromBody >= 0) return fromBody;
  const header = response.headers.get('Retry-After');
  if (header !== null && /^\d+$/.test(header.trim())) return Number(header.trim());
  return null;
}
