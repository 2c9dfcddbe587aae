import { describe, expect, it } from 'vitest';

import { backoffDelay } from '../src/backoff.js';

const backoff = { baseMs: 1_000, maxMs: 30_000 };

describe('backoffDelay (full jitter)', () => {
  it('draws from [0, base * 2^attempt), capped at maxMs', () => {
    const caps = [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000];
    caps.forEach((cap, attempt) => {
      expect(backoffDelay(attempt, backoff, () => 0)).toBe(0);
      expect(backoffDelay(attempt, backoff, () => 0.5)).toBe(cap / 2);
      const top = backoffDelay(attempt, backoff, () => 0.999999);
      expect(top).toBeLessThan(cap);
      expect(top).toBeGreaterThanOrEqual(cap - 1);
    });
  });

  it('stays below the cap even for a random source that returns 1 or more, and at 0 below 0', () => {
    expect(backoffDelay(2, backoff, () => 1)).toBeLessThan(4_000);
    expect(backoffDelay(2, backoff, () => 7)).toBeLessThan(4_000);
    expect(backoffDelay(2, backoff, () => -1)).toBe(0);
  });

  it('does not overflow for huge attempt counts', () => {
    expect(backoffDelay(10_000, backoff, () => 0.5)).toBe(15_000);
  });

  it('spreads clients out: Math.random gives many different delays within the bound', () => {
    const delays = Array.from({ length: 500 }, () => backoffDelay(3, backoff, Math.random));
    expect(Math.min(...delays)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...delays)).toBeLessThan(8_000);
    expect(new Set(delays).size).toBeGreaterThan(100);
  });
});
