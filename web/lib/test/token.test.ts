import { describe, expect, it, vi } from 'vitest';

import { TokenError, TokenKeeper, readClaims, refreshDelay } from '../src/token.js';
import { makeToken } from './fakes.js';

describe('readClaims', () => {
  it('reads sub and exp (in ms), from base64url with - and _', () => {
    // "???" and ">>>" encode to "Pz8/" and "Pj4+": base64url turns them into "_" and "-"
    const token = makeToken('alice', 1_900_000_000, { note: '???>>>' });
    expect(token.split('.')[1]).toMatch(/[-_]/);
    expect(readClaims(token)).toEqual({ sub: 'alice', expiresAt: 1_900_000_000_000 });
  });

  it.each([
    ['not a JWT', 'abc'],
    ['two parts', 'a.b'],
    ['payload not base64 JSON', 'a.!!!.c'],
    ['no exp', makeToken('alice', undefined as unknown as number)],
    ['exp not a number', makeToken('alice', '123' as unknown as number)],
    ['sub not a user id', makeToken('alice/x', 1_900_000_000)],
    ['sub ".."', makeToken('..', 1_900_000_000)],
  ])('refuses %s', (_name, token) => {
    expect(() => readClaims(token)).toThrow(TokenError);
  });
});

describe('refreshDelay', () => {
  const now = 1_000_000;
  it('replaces the token marginMs before it expires', () => {
    expect(refreshDelay(now + 3_600_000, now, 60_000)).toBe(3_540_000);
  });
  it('at half its remaining life when that is shorter than the margin', () => {
    expect(refreshDelay(now + 60_000, now, 60_000)).toBe(30_000);
  });
  it('never sooner than minDelayMs, even for an expired token', () => {
    expect(refreshDelay(now - 10_000, now, 60_000)).toBe(1_000);
    expect(refreshDelay(now + 500, now, 60_000, 2_000)).toBe(2_000);
  });
});

describe('TokenKeeper', () => {
  it('shares one getToken call between concurrent requests', async () => {
    const getToken = vi.fn(async () => makeToken('alice', 2_000_000_000));
    const keeper = new TokenKeeper(getToken);
    const [a, b] = await Promise.all([keeper.fresh(), keeper.fresh()]);
    expect(a).toBe(b);
    expect(getToken).toHaveBeenCalledTimes(1);
    expect(keeper.user).toBe('alice');
  });

  it('valid(): reuses the current token while it is good long enough, then asks again', async () => {
    let now = 0;
    let n = 0;
    const getToken = vi.fn(async () => makeToken('alice', 1_000 + n++));
    const keeper = new TokenKeeper(getToken, { now: () => now });
    await keeper.fresh(); // exp 1000 s
    now = 900_000; // 100 s left
    await keeper.valid(60_000);
    expect(getToken).toHaveBeenCalledTimes(1);
    now = 950_000; // 50 s left
    await keeper.valid(60_000);
    expect(getToken).toHaveBeenCalledTimes(2);
    keeper.invalidate();
    await keeper.valid(0);
    expect(getToken).toHaveBeenCalledTimes(3);
  });

  it('current(): the token until its refresh is due (margin, or half its life), then a new one', async () => {
    let now = 0;
    const getToken = vi.fn(async () => makeToken('alice', Math.floor(now / 1000) + 6)); // 6 s tokens
    const keeper = new TokenKeeper(getToken, { now: () => now, refreshMarginMs: 60_000 });
    await keeper.current();
    expect(keeper.refreshAt).toBe(3_000); // half of 6 s: the margin does not fit
    now = 2_999;
    await keeper.current();
    expect(getToken).toHaveBeenCalledTimes(1);
    now = 3_000;
    await keeper.current();
    expect(getToken).toHaveBeenCalledTimes(2);
    expect(keeper.refreshAt).toBe(6_000);
  });

  it('refuses a token for another user', async () => {
    const tokens = [makeToken('alice', 2_000_000_000), makeToken('mallory', 2_000_000_000)];
    const keeper = new TokenKeeper(async () => tokens.shift() as string);
    await keeper.fresh();
    await expect(keeper.fresh()).rejects.toThrow(/mallory, not alice/);
    expect(keeper.claims?.sub).toBe('alice');
  });
});
