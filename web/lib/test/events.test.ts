import { describe, expect, it } from 'vitest';

import { Emitter } from '../src/events.js';

interface Events {
  ping: number;
  pong: string;
}

describe('Emitter', () => {
  it('calls the listeners of one event, in order, until removed', () => {
    const e = new Emitter<Events>();
    const seen: string[] = [];
    const off = e.on('ping', (n) => seen.push(`a${n}`));
    e.on('ping', (n) => seen.push(`b${n}`));
    e.on('pong', (s) => seen.push(s));
    e.emit('ping', 1);
    off();
    e.emit('ping', 2);
    expect(seen).toEqual(['a1', 'b1', 'b2']);
    expect(e.listenerCount('ping')).toBe(1);
  });

  it('once() fires a single time', () => {
    const e = new Emitter<Events>();
    const seen: number[] = [];
    e.once('ping', (n) => seen.push(n));
    e.emit('ping', 1);
    e.emit('ping', 2);
    expect(seen).toEqual([1]);
  });

  it('a throwing listener neither stops the others nor reaches the emitter', () => {
    const errors: unknown[] = [];
    const e = new Emitter<Events>((error) => errors.push(error));
    const seen: number[] = [];
    e.on('ping', () => {
      throw new Error('UI bug');
    });
    e.on('ping', (n) => seen.push(n));
    expect(() => e.emit('ping', 1)).not.toThrow();
    expect(seen).toEqual([1]);
    expect(errors).toEqual([new Error('UI bug')]);
  });

  it('a listener removed during emit does not break the loop', () => {
    const e = new Emitter<Events>();
    const seen: string[] = [];
    const offB = e.on('ping', () => seen.push('b'));
    e.on('ping', () => {
      seen.push('c');
      offB();
    });
    e.emit('ping', 1);
    e.emit('ping', 2);
    expect(seen).toEqual(['b', 'c', 'c']);
  });
});
