import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { MessengerApi } from '../src/api.js';
import { ReadMarks } from '../src/reads.js';
import { RestClient } from '../src/rest.js';
import { TokenKeeper } from '../src/token.js';
import { fakeFetch, json, makeToken, type SeenRequest } from './fakes.js';

function marks(respond: (r: SeenRequest) => Response | Promise<Response>) {
  const fetch = fakeFetch(respond);
  const rest = new RestClient({ baseUrl: 'http://api', fetch, tokens: new TokenKeeper(async () => makeToken('bob', 4_000_000_000)) });
  return { reads: new ReadMarks(new MessengerApi(rest), { random: () => 0.5, maxAttempts: 3 }), fetch };
}

const ok = (r: SeenRequest) => json(200, { read: [{ from: 'alice', up_to: (r.body as { up_to: number }).up_to }] });

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('ReadMarks', () => {
  it('coalesces marks made while a request is out into one next request', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const t = marks(async (r) => {
      if (t.fetch.requests.length === 1) await gate;
      return ok(r);
    });
    const first = t.reads.mark(5, 'alice');
    await vi.advanceTimersByTimeAsync(0);
    const later = [t.reads.mark(7, 'alice'), t.reads.mark(9, 'alice'), t.reads.mark(6, 'alice')];
    release();
    await Promise.all([first, ...later]);
    expect(t.fetch.requests.map((r) => r.body)).toEqual([
      { up_to: 5, with: 'alice' },
      { up_to: 9, with: 'alice' },
    ]);
    await t.reads.mark(8, 'alice'); // already covered
    expect(t.fetch.requests).toHaveLength(2);
    await t.reads.mark(8); // another lane: every sender
    expect(t.fetch.requests.at(-1)?.body).toEqual({ up_to: 8 });
  });

  it('waits out a 429 for retry_after, then sends again', async () => {
    const answers = [json(429, { code: 'rate_limited', detail: 'too many read marks', retry_after: 1.5 })];
    const t = marks((r) => answers.shift() ?? ok(r));
    const done = t.reads.mark(3);
    await vi.advanceTimersByTimeAsync(1_499);
    expect(t.fetch.requests).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    await done;
    expect(t.fetch.requests).toHaveLength(2);
  });

  it('retries network errors a few times, then rejects; a later mark starts again', async () => {
    const t = marks(() => Promise.reject(new TypeError('Failed to fetch')));
    const done = t.reads.mark(3).catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(await done).toMatchObject({ name: 'NetworkError' });
    expect(t.fetch.requests).toHaveLength(3);
    const again = t.reads.mark(3).catch(() => undefined);
    await vi.advanceTimersByTimeAsync(60_000);
    await again;
    expect(t.fetch.requests).toHaveLength(6);
  });

  it('does not retry a refusal such as 422', async () => {
    const t = marks(() => json(422, { code: 'invalid_request', detail: 'bad' }));
    await expect(t.reads.mark(3, 'alice')).rejects.toMatchObject({ code: 'invalid_request' });
    expect(t.fetch.requests).toHaveLength(1);
    await expect(t.reads.mark(-1)).rejects.toBeInstanceOf(RangeError);
  });
});
