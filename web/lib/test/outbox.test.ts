import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { Outbox, type OutboxOptions, type OutgoingMessage } from '../src/outbox.js';
import type { AckEvent, ErrorEvent } from '../src/protocol.js';

interface Harness {
  outbox: Outbox;
  sent: Record<string, unknown>[];
  changes: OutgoingMessage[];
  online: { value: boolean };
}

function harness(options: Partial<OutboxOptions> = {}): Harness {
  const sent: Record<string, unknown>[] = [];
  const changes: OutgoingMessage[] = [];
  const online = { value: true };
  let n = 0;
  const outbox = new Outbox({
    publish: async (payload) => {
      if (!online.value) throw new Error('offline');
      sent.push(JSON.parse(payload) as Record<string, unknown>);
    },
    isOnline: () => online.value,
    onChange: (m) => changes.push(m),
    newId: () => `c${++n}`,
    ackTimeoutMs: 1_000,
    maxUnanswered: 3,
    random: () => 0.5,
    ...options,
  });
  return { outbox, sent, changes, online };
}

const ack = (client_id: string, extra: Partial<AckEvent> = {}): AckEvent => ({
  type: 'ack',
  client_id,
  id: 77,
  status: 'sent',
  duplicate: false,
  sent_at: '2026-11-23T10:00:00.000000Z',
  mass_message: null,
  tip: null,
  ...extra,
});
const error = (client_id: string | null, code: string, retry_after: number | null = null): ErrorEvent => ({
  type: 'error',
  client_id,
  code,
  detail: code,
  retry_after,
  limit: code === 'rate_limited' ? 'send' : null,
});

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('Outbox', () => {
  it('sends with a client id, pending until the ack, then sent with the server id', () => {
    const h = harness();
    const first = h.outbox.send({ to: 'bob', body: 'hi' });
    expect(first).toMatchObject({ clientId: 'c1', status: 'pending', attempts: 1 });
    expect(h.sent).toEqual([{ type: 'message', id: 'c1', to: 'bob', body: 'hi' }]);
    expect(h.outbox.ack(ack('c1', { duplicate: true }))).toBe(true);
    expect(h.changes.at(-1)).toMatchObject({ clientId: 'c1', status: 'sent', id: 77, duplicate: true });
    expect(h.outbox.list()).toEqual([]); // done: no longer in the outbox
    vi.advanceTimersByTime(60_000);
    expect(h.sent).toHaveLength(1); // and never resent
  });

  it('resends with the same id when no answer comes, waiting longer each time, then fails', () => {
    const h = harness();
    h.outbox.send({ to: 'bob', body: 'hi' });
    vi.advanceTimersByTime(999);
    expect(h.sent).toHaveLength(1);
    vi.advanceTimersByTime(1); // 1 s
    expect(h.sent.map((c) => c['id'])).toEqual(['c1', 'c1']);
    vi.advanceTimersByTime(1_999);
    expect(h.sent).toHaveLength(2);
    vi.advanceTimersByTime(1); // 2 s more
    expect(h.sent).toHaveLength(3);
    vi.advanceTimersByTime(4_000); // third wait unanswered: give up
    expect(h.sent).toHaveLength(3);
    expect(h.outbox.get('c1')).toMatchObject({ status: 'failed', error: { code: 'timeout', local: true } });
    // A late ack still wins: the server had it.
    h.outbox.ack(ack('c1'));
    expect(h.changes.at(-1)).toMatchObject({ status: 'sent', id: 77 });
  });

  it('fails on a final error and retries with the same id on request', () => {
    const h = harness();
    h.outbox.send({ to: 'bobb', body: 'hi' });
    h.outbox.error(error('c1', 'unknown_recipient'));
    expect(h.outbox.get('c1')).toMatchObject({ status: 'failed', error: { code: 'unknown_recipient', local: false } });
    vi.advanceTimersByTime(60_000);
    expect(h.sent).toHaveLength(1); // a final error is not resent by itself
    const again = h.outbox.retry('c1');
    expect(again).toMatchObject({ clientId: 'c1', status: 'pending', error: null, attempts: 2 });
    expect(h.sent.map((c) => c['id'])).toEqual(['c1', 'c1']);
  });

  it('waits out rate_limited for exactly retry_after, then resends the same id', () => {
    const h = harness();
    h.outbox.send({ to: 'bob', body: 'hi' });
    h.outbox.error(error('c1', 'rate_limited', 2.5));
    expect(h.outbox.get('c1')).toMatchObject({ status: 'pending', error: { code: 'rate_limited', retryAfter: 2.5 } });
    vi.advanceTimersByTime(2_499);
    expect(h.sent).toHaveLength(1);
    vi.advanceTimersByTime(1);
    expect(h.sent.map((c) => c['id'])).toEqual(['c1', 'c1']);
    // rate limits do not count towards giving up
    for (let i = 0; i < 5; i++) {
      h.outbox.error(error('c1', 'rate_limited', 0.1));
      vi.advanceTimersByTime(100);
    }
    expect(h.outbox.get('c1')?.status).toBe('pending');
    expect(h.sent).toHaveLength(7);
  });

  it('resends after service_unavailable with a backoff, and gives up after maxUnanswered', () => {
    const h = harness();
    h.outbox.send({ list: 'vip', body: 'post' });
    h.outbox.error(error('c1', 'service_unavailable'));
    expect(h.outbox.get('c1')?.status).toBe('pending');
    vi.advanceTimersByTime(1_000); // backoffDelay(1) with random 0.5: 1000 ms
    expect(h.sent).toHaveLength(2);
    h.outbox.error(error('c1', 'internal_error'));
    vi.advanceTimersByTime(2_000);
    expect(h.sent).toHaveLength(3);
    h.outbox.error(error('c1', 'service_unavailable'));
    expect(h.outbox.get('c1')).toMatchObject({ status: 'failed', error: { code: 'service_unavailable' } });
  });

  it('holds messages while offline and sends them when the link is back, without timing out', () => {
    const h = harness();
    h.online.value = false;
    h.outbox.send({ to: 'bob', body: 'one' });
    h.outbox.send({ to: 'bob', body: 'two' });
    vi.advanceTimersByTime(600_000);
    expect(h.sent).toEqual([]);
    expect(h.outbox.list().map((m) => m.status)).toEqual(['pending', 'pending']);
    h.online.value = true;
    h.outbox.online();
    expect(h.sent.map((c) => c['body'])).toEqual(['one']); // one in flight per conversation
    h.outbox.ack(ack('c1'));
    expect(h.sent.map((c) => c['body'])).toEqual(['one', 'two']);
  });

  it('keeps a conversation in order: the next message goes once the server answered the one before', () => {
    const h = harness();
    h.outbox.send({ to: 'bob', body: 'b1' }); // c1
    h.outbox.send({ to: 'bob', body: 'b2' }); // c2
    h.outbox.send({ to: 'carol', body: 'c1' }); // c3: another conversation is not held up
    h.outbox.send({ to: 'bob', body: 'b3' }); // c4
    expect(h.sent.map((c) => c['body'])).toEqual(['b1', 'c1']);
    expect(h.outbox.list().map((m) => m.status)).toEqual(['pending', 'pending', 'pending', 'pending']);
    h.outbox.ack(ack('c3'));
    // rate limited: b1 keeps its place, nothing overtakes it
    h.outbox.error(error('c1', 'rate_limited', 1));
    vi.advanceTimersByTime(999);
    expect(h.sent.map((c) => c['body'])).toEqual(['b1', 'c1']);
    vi.advanceTimersByTime(1);
    expect(h.sent.map((c) => c['body'])).toEqual(['b1', 'c1', 'b1']);
    h.outbox.ack(ack('c1'));
    expect(h.sent.map((c) => c['body'])).toEqual(['b1', 'c1', 'b1', 'b2']);
    // a final error lets the next one go; the failed one can be retried (after it)
    h.outbox.error(error('c2', 'payload_too_large'));
    expect(h.sent.map((c) => c['body'])).toEqual(['b1', 'c1', 'b1', 'b2', 'b3']);
    h.outbox.retry('c2');
    expect(h.sent).toHaveLength(5);
    h.outbox.ack(ack('c4'));
    expect(h.sent.map((c) => c['body']).at(-1)).toBe('b2');
    // an unanswered message keeps its place through its resends
    h.outbox.send({ to: 'bob', body: 'b4' });
    vi.advanceTimersByTime(1_000);
    expect(h.sent.map((c) => c['body']).slice(5)).toEqual(['b2', 'b2']);
    h.outbox.ack(ack('c2'));
    expect(h.sent.map((c) => c['body']).at(-1)).toBe('b4');
  });

  it('stops waiting for answers when the link drops (time offline is no silence), and resends on the next one', () => {
    const h = harness(); // maxUnanswered 3
    h.outbox.send({ to: 'bob', body: 'hi' });
    for (let i = 0; i < 4; i++) {
      h.online.value = false;
      h.outbox.offline();
      vi.advanceTimersByTime(60_000);
      h.online.value = true;
      h.outbox.online();
    }
    expect(h.outbox.get('c1')).toMatchObject({ status: 'pending', error: null });
    expect(h.sent.map((c) => c['id'])).toEqual(['c1', 'c1', 'c1', 'c1', 'c1']);
  });

  it('keeps a rate_limited wait across a reconnect instead of resending early', () => {
    const h = harness();
    h.outbox.send({ to: 'bob', body: 'hi' });
    h.outbox.error(error('c1', 'rate_limited', 5));
    h.outbox.offline();
    h.outbox.online();
    expect(h.sent).toHaveLength(1);
    vi.advanceTimersByTime(5_000);
    expect(h.sent).toHaveLength(2);
  });

  it('a list message is accepted when queued, asked about again on a new link, sent when fanned out', () => {
    const h = harness();
    h.outbox.send({ list: 'vip', body: 'post' });
    h.outbox.ack(ack('c1', { id: null, status: 'queued', mass_message: 42, sent_at: null }));
    expect(h.outbox.get('c1')).toMatchObject({ status: 'accepted', massMessage: 42 });
    vi.advanceTimersByTime(600_000);
    expect(h.sent).toHaveLength(1); // no resends while the fan-out runs
    h.outbox.offline();
    h.outbox.online(); // the final ack may have gone out while we were away
    expect(h.sent).toHaveLength(2);
    h.outbox.ack(ack('c1', { id: null, status: 'sent', mass_message: 42, duplicate: true }));
    expect(h.changes.at(-1)).toMatchObject({ status: 'sent', massMessage: 42 });
  });

  it('a declined tip fails with the billing link; retrying it takes a new id', () => {
    const h = harness();
    h.outbox.send({ to: 'creator1', body: 'thanks', tip: { amount: 500, currency: 'USD' } });
    expect(h.sent[0]).toEqual({ type: 'message', id: 'c1', to: 'creator1', body: 'thanks', tip: { amount: 500, currency: 'USD' } });
    h.outbox.ack(ack('c1', { id: null, status: 'pending', sent_at: null, tip: { amount: 500, currency: 'USD', status: 'pending' } }));
    expect(h.outbox.get('c1')).toMatchObject({ status: 'accepted', tipStatus: 'pending' });
    h.outbox.tipFailed({
      type: 'tip_failed',
      client_id: 'c1',
      billing_url: 'https://example.com/settings/billing',
      reason: 'insufficient_funds',
      tip: { amount: 500, currency: 'USD', status: 'failed' },
    });
    expect(h.outbox.get('c1')).toMatchObject({
      status: 'failed',
      billingUrl: 'https://example.com/settings/billing',
      tipStatus: 'failed',
      error: { code: 'tip_failed', detail: 'insufficient_funds' },
    });
    const again = h.outbox.retry('c1');
    expect(again.clientId).toBe('c2');
    expect(h.sent.at(-1)).toMatchObject({ id: 'c2', tip: { amount: 500, currency: 'USD' } });
    expect(h.outbox.get('c1')).toBeNull();
  });

  it('refuses locally what the server would refuse, without sending', () => {
    const h = harness();
    const bad = h.outbox.send({ to: 'bob', body: 'bell \u0007' });
    expect(bad).toMatchObject({ status: 'failed', error: { code: 'invalid_payload', local: true } });
    const big = h.outbox.send({ to: 'bob', body: 'x'.repeat(70_000) });
    expect(big).toMatchObject({ status: 'failed', error: { code: 'payload_too_large' } });
    expect(h.outbox.retry(bad.clientId).status).toBe('failed');
    expect(h.sent).toEqual([]);
    expect(h.outbox.discard(bad.clientId)).toBe(true);
    expect(h.outbox.list().map((m) => m.clientId)).toEqual([big.clientId]);
  });

  it("leaves other devices' answers alone, and refuses a reused client id", () => {
    const h = harness();
    h.outbox.send({ to: 'bob', body: 'hi', clientId: 'mine' });
    expect(h.outbox.ack(ack('theirs'))).toBe(false);
    expect(h.outbox.error(error('theirs', 'unknown_recipient'))).toBe(false);
    expect(h.outbox.error(error(null, 'rate_limited', 1))).toBe(false);
    expect(h.outbox.get('mine')?.status).toBe('pending');
    expect(() => h.outbox.send({ to: 'bob', body: 'again', clientId: 'mine' })).toThrow(/already/);
  });

  it('hands out snapshots: changing one does not change the outbox', () => {
    const h = harness();
    const m = h.outbox.send({ to: 'bob', body: 'hi' }) as { status: string };
    m.status = 'sent';
    expect(h.outbox.get('c1')?.status).toBe('pending');
  });
});
