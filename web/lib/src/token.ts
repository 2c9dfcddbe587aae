/**
 * Bearer tokens: what the library reads from them (`sub`, `exp`) and when to ask for the next
 * one. The library never verifies a signature (the server does); it reads the claims only to
 * know who it connects as and when the token runs out.
 */

import { isUserId } from './validate.js';

export class TokenError extends Error {
  override name = 'TokenError';
}

export interface TokenClaims {
  /** The user id. */
  sub: string;
  /** Expiry, in milliseconds since the epoch. */
  expiresAt: number;
}

/** The `sub` and `exp` of a JWT (`exp` is required by the server, so by this too). */
export function readClaims(token: string): TokenClaims {
  const parts = token.split('.');
  if (parts.length !== 3 || !parts[1]) throw new TokenError('not a JWT');
  let claims: unknown;
  try {
    const base64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const binary = atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, '='));
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    claims = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    throw new TokenError('the JWT payload is not base64url JSON');
  }
  if (typeof claims !== 'object' || claims === null) throw new TokenError('the JWT payload is not an object');
  const { sub, exp } = claims as { sub?: unknown; exp?: unknown };
  if (!isUserId(sub)) throw new TokenError('the token has no valid sub (user id)');
  if (typeof exp !== 'number' || !Number.isFinite(exp)) throw new TokenError('the token has no exp');
  return { sub, expiresAt: exp * 1000 };
}

/**
 * Milliseconds from `now` until the token should be replaced: `marginMs` before it expires, or
 * half its remaining life when that is shorter (a 60 s token is not refreshed at once), and never
 * sooner than `minDelayMs` (a token source that keeps handing out nearly expired tokens must not
 * spin the refresh loop).
 */
export function refreshDelay(expiresAt: number, now: number, marginMs: number, minDelayMs = 1_000): number {
  const left = expiresAt - now;
  const margin = Math.min(marginMs, left / 2);
  return Math.max(minDelayMs, Math.floor(left - margin));
}

/**
 * Holds the current token and asks `getToken` for a new one. Concurrent requests (a REST 401
 * and the refresh timer at once) share one call. Every token must name the same user. Each
 * token gets its refresh time when it arrives ({@link refreshDelay} with `refreshMarginMs`).
 */
export class TokenKeeper {
  readonly #getToken: () => Promise<string>;
  readonly #marginMs: number;
  readonly #now: () => number;
  #token: string | null = null;
  #claims: TokenClaims | null = null;
  #refreshAt = 0;
  #user: string | null;
  #inFlight: Promise<string> | null = null;

  constructor(
    getToken: () => Promise<string>,
    options: { refreshMarginMs?: number; now?: () => number; user?: string } = {},
  ) {
    this.#getToken = getToken;
    this.#marginMs = options.refreshMarginMs ?? 60_000;
    this.#now = options.now ?? Date.now;
    this.#user = options.user ?? null;
  }

  get token(): string | null {
    return this.#token;
  }

  get claims(): TokenClaims | null {
    return this.#claims;
  }

  /** The user id, known after the first token. */
  get user(): string | null {
    return this.#user;
  }

  /** When the current token should be replaced (ms since the epoch); 0 without one. */
  get refreshAt(): number {
    return this.#refreshAt;
  }

  /** The current token until its refresh is due, else a fresh one: what a CONNECT uses. */
  async current(): Promise<string> {
    if (this.#token !== null && this.#now() < this.#refreshAt) return this.#token;
    return this.fresh();
  }

  /** The current token if it is good for at least `minValidityMs` more, else a fresh one. */
  async valid(minValidityMs: number): Promise<string> {
    if (this.#token !== null && this.#claims !== null && this.#claims.expiresAt - this.#now() >= minValidityMs) {
      return this.#token;
    }
    return this.fresh();
  }

  /** A new token from `getToken`, checked (a JWT with `exp`, for the same user). */
  fresh(): Promise<string> {
    this.#inFlight ??= this.#fetch().finally(() => {
      this.#inFlight = null;
    });
    return this.#inFlight;
  }

  /** Forget the current token (the broker or the API refused it). */
  invalidate(): void {
    this.#token = null;
    this.#claims = null;
    this.#refreshAt = 0;
  }

  async #fetch(): Promise<string> {
    const token = await this.#getToken();
    if (typeof token !== 'string') throw new TokenError('getToken() did not return a string');
    const claims = readClaims(token);
    if (this.#user !== null && claims.sub !== this.#user) {
      throw new TokenError(`the token is for ${claims.sub}, not ${this.#user}`);
    }
    const now = this.#now();
    this.#user = claims.sub;
    this.#token = token;
    this.#claims = claims;
    this.#refreshAt = now + refreshDelay(claims.expiresAt, now, this.#marginMs);
    return token;
  }
}
