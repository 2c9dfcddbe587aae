import { describe, expect, it } from 'vitest';

import { PresenceBook } from '../src/presence.js';

describe('PresenceBook', () => {
  it('is online while any device is, and reports each device change once', () => {
    const book = new PresenceBook();
    expect(book.watch('bob')).toBe(true);
    expect(book.watch('bob')).toBe(false);
    expect(book.filters()).toEqual(['presence/bob/+']);
    expect(book.update('presence/bob/phone', 'online')).toEqual({ user: 'bob', online: true, device: 'phone', deviceOnline: true, devices: ['phone'] });
    expect(book.update('presence/bob/phone', '{"status":"online"}')).toBeNull(); // no change
    expect(book.update('presence/bob/laptop', 'online')?.devices).toEqual(['phone', 'laptop']);
    expect(book.update('presence/bob/phone', '')).toMatchObject({ online: true, devices: ['laptop'] });
    expect(book.update('presence/bob/laptop', 'offline')).toMatchObject({ online: false, devices: [] });
    expect(book.isOnline('bob')).toBe(false);
  });

  it('ignores users not watched (the embedded broker may replay them) and payloads that are no state', () => {
    const book = new PresenceBook();
    book.watch('bob');
    expect(book.update('presence/carol/phone', 'online')).toBeNull();
    expect(book.update('presence/bob/phone', 'away')).toBeNull();
    expect(book.update('users/bob/events', 'online')).toBeNull();
    expect(book.isOnline('bob')).toBe(false);
  });

  it('starts over on reset, and forgets an unwatched user', () => {
    const book = new PresenceBook();
    book.watch('bob');
    book.update('presence/bob/phone', 'online');
    book.reset();
    expect(book.isOnline('bob')).toBe(false);
    expect(book.update('presence/bob/phone', 'online')).not.toBeNull(); // the replay counts again
    expect(book.unwatch('bob')).toBe(true);
    expect(book.filters()).toEqual([]);
    expect(() => book.watch('bob/x')).toThrow(/not a user id/);
  });
});
