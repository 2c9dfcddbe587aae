/**
 * Signing in: the token (from a deep link, the sign-in form or a development token), where it is
 * kept, and the address bar's routes.
 */

import { TokenError, readClaims } from '@messenger/client';

/** User ids: `[A-Za-z0-9_.-]{1,64}`, neither `.` nor `..` (docs/protocol.md, "Connecting"). */
export function isUserId(value: string): boolean {
  return /^[A-Za-z0-9_.-]{1,64}$/.test(value) && value !== '.' && value !== '..';
}

const TOKEN_KEY = 'messenger:token';

/**
 * `/#token=JWT` (a login service sends the browser back like this): the token, and the address
 * without it, to put in the address bar at once so that the token stays out of the history,
 * bookmarks and screenshots. Other fragment parameters are kept.
 */
export function takeDeepLinkToken(href: string): { token: string | null; cleanUrl: string } {
  const url = new URL(href);
  const fragment = new URLSearchParams(url.hash.replace(/^#/, ''));
  const token = fragment.get('token');
  if (token === null) return { token: null, cleanUrl: href };
  fragment.delete('token');
  const rest = fragment.toString();
  url.hash = rest ? `#${rest}` : '';
  return { token: token.trim() || null, cleanUrl: url.pathname + url.search + url.hash };
}

/** The conversation an address opens: `/c/{user_id}`, else null. */
export function peerOfPath(pathname: string): string | null {
  const match = /^\/c\/([^/]+)\/?$/.exec(pathname);
  if (!match?.[1]) return null;
  let peer: string;
  try {
    peer = decodeURIComponent(match[1]);
  } catch {
    return null;
  }
  return isUserId(peer) ? peer : null;
}

export function pathOfPeer(peer: string | null): string {
  return peer === null ? '/' : `/c/${encodeURIComponent(peer)}`;
}

export type TokenCheck = { ok: true; user: string; expiresAt: number } | { ok: false; reason: string };

/** Whether a token can be used: a JWT with a user and at least `marginMs` of life left. */
export function checkToken(token: string, now: number, marginMs = 5_000): TokenCheck {
  try {
    const claims = readClaims(token);
    if (claims.expiresAt - now < marginMs) return { ok: false, reason: 'This token has expired (or expires within a minute). Sign in again.' };
    return { ok: true, user: claims.sub, expiresAt: claims.expiresAt };
  } catch (error) {
    const detail = error instanceof TokenError ? error.message : String(error);
    return { ok: false, reason: `This is not a usable token (${detail}).` };
  }
}

/** Where the token survives a reload (localStorage; signing out removes it). */
export class TokenStore {
  constructor(private readonly storage: Storage | null) {}

  load(): string | null {
    try {
      return this.storage?.getItem(TOKEN_KEY) ?? null;
    } catch {
      return null;
    }
  }

  save(token: string): void {
    try {
      this.storage?.setItem(TOKEN_KEY, token);
    } catch {
      // private mode: the token lives in memory for this page only
    }
  }

  clear(): void {
    try {
      this.storage?.removeItem(TOKEN_KEY);
    } catch {
      // nothing stored
    }
  }
}

/** Asks the API for a development token (`POST /v1/dev/token`; 404 outside development). */
export async function devToken(apiUrl: string, user: string, role: 'member' | 'creator', fetchFn: typeof fetch = fetch): Promise<string> {
  const response = await fetchFn(`${apiUrl}/v1/dev/token`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify({ user_id: user, role }),
  });
  const data: unknown = await response.json().catch(() => null);
  if (!response.ok) {
    const detail = typeof data === 'object' && data !== null && 'detail' in data ? String((data as { detail: unknown }).detail) : '';
    throw new Error(response.status === 404 ? 'Development tokens are off on this server.' : detail || `HTTP ${response.status}`);
  }
  const token = typeof data === 'object' && data !== null ? (data as { token?: unknown }).token : undefined;
  if (typeof token !== 'string') throw new Error('The server sent no token.');
  return token;
}
