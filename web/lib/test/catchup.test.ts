import { describe, expect, it } from 'vitest';

import { CatchUp, RecentIds, mergeById } from '../src/catchup.js';
import { parseMessage, type Message } from '../src/protocol.js';
import { wireMessage } from './fakes.js';

const msg = (id: number): Message => parseMessage(wireMessage(id));
const synced = (last_id: number | null, more = false) => ({ type: 'synced' as const, last_id, more });

/** Feeds ids to `receive` and returns those handed on as new. */
function feed(c: CatchUp, ids: number[]): number[] {
  return ids.filter((id) => c.receive(msg(id)));
}

describe('CatchUp', () => {
  it('asks for what came after the stored watermark, or for unread messages without one', () => {
    expect(new CatchUp(120).begin()).toEqual({ after: 120 });
    expect(new CatchUp().begin()).toEqual({ after: null });
  });

  it('hands each server id on once, whatever the order and however often it comes', () => {
    const c = new CatchUp(100);
    c.begin();
    expect(feed(c, [103, 101, 102, 101, 103, 104])).toEqual([103, 101, 102, 104]);
  });

  it('merges overlapping pages and live messages without duplicates', () => {
    const c = new CatchUp(100);
    c.begin();
    const live = feed(c, [160]); // live, during the catch-up
    const page1 = feed(c, [101, 120, 150]);
    expect(c.synced(synced(150, true))).toEqual({ kind: 'next', after: 150 });
    const page2 = feed(c, [120, 150, 155, 160, 170]); // a repeated boundary and the live one again
    expect(c.synced(synced(170, false))).toEqual({ kind: 'done', lastId: 170 });
    expect([...live, ...page1, ...page2]).toEqual([160, 101, 120, 150, 155, 170]);
  });

  it('does not move the watermark over a gap: a live message during the catch-up waits for it', () => {
    const c = new CatchUp(100);
    c.begin();
    feed(c, [205]); // live; 101..204 may still be missing
    expect(c.lastId).toBe(100);
    c.interrupt(); // the link drops before the catch-up ends
    expect(c.begin()).toEqual({ after: 100 }); // so the next one starts from 100, not 205
    feed(c, [150]);
    expect(c.synced(synced(150, false))).toEqual({ kind: 'done', lastId: 205 });
  });

  it('moves the watermark page by page, so a link lost mid-way resumes after the last full page', () => {
    const c = new CatchUp(0);
    c.begin();
    feed(c, [1, 2, 3]);
    c.synced(synced(3, true));
    expect(c.lastId).toBe(3);
    feed(c, [4, 5]); // the second page, cut short
    c.interrupt();
    expect(c.lastId).toBe(3);
    expect(c.begin()).toEqual({ after: 3 });
  });

  it('once caught up, follows live messages; after a loss, stops until the next catch-up ends', () => {
    const c = new CatchUp(10);
    c.begin();
    c.synced(synced(10, false));
    expect(c.mode).toBe('live');
    feed(c, [11, 12]);
    expect(c.lastId).toBe(12);
    c.interrupt();
    feed(c, [20]); // late, from a link already gone: not proof that 13..19 arrived
    expect(c.lastId).toBe(12);
  });

  it("ignores a synced that cannot answer this client's request (another device's, the server's own)", () => {
    const c = new CatchUp(100);
    expect(c.synced(synced(150))).toEqual({ kind: 'ignored' }); // nothing asked yet
    c.begin();
    expect(c.synced(synced(50, true))).toEqual({ kind: 'ignored' }); // last_id below our after
    expect(c.synced(synced(null, false))).toEqual({ kind: 'ignored' }); // an unread catch-up of nothing
    expect(c.pending).toEqual({ after: 100 });
    expect(c.synced(synced(100, false))).toEqual({ kind: 'done', lastId: 100 }); // ours: nothing after 100
    expect(c.pending).toBeNull();
    expect(c.synced(synced(300, true))).toEqual({ kind: 'ignored' }); // not syncing any more
    expect(c.lastId).toBe(100);
  });

  it('a client without a watermark takes the last unread id as its first', () => {
    const c = new CatchUp(null);
    c.begin();
    feed(c, [7, 9]);
    expect(c.synced(synced(9, false))).toEqual({ kind: 'done', lastId: 9 });
    const empty = new CatchUp(null);
    empty.begin();
    expect(empty.synced(synced(null, false))).toEqual({ kind: 'done', lastId: null });
  });
});

describe('RecentIds', () => {
  it('is bounded: the oldest ids are dropped first', () => {
    const ids = new RecentIds(3);
    expect([1, 2, 3, 1].map((id) => ids.add(id))).toEqual([true, true, true, false]);
    ids.add(4);
    expect(ids.size).toBe(3);
    expect(ids.has(1)).toBe(false);
    expect(ids.has(4)).toBe(true);
  });
});

describe('mergeById', () => {
  it('sorts by id, drops duplicates, and lets the later copy win', () => {
    const history = [msg(5), msg(3)];
    const read = { ...msg(5), read_at: '2026-11-23T11:00:00Z' };
    const merged = mergeById(history, [msg(4), read, msg(3)]);
    expect(merged.map((m) => m.id)).toEqual([3, 4, 5]);
    expect(merged[2]?.read_at).toBe('2026-11-23T11:00:00Z');
  });
});
