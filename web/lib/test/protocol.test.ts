import { describe, expect, it } from 'vitest';

import {
  InvalidCommand,
  MAX_COMMAND_BYTES,
  ProtocolError,
  decodeJson,
  encodeCommand,
  parseEvent,
  parseMessage,
  parsePresence,
  parsePresenceTopic,
  textProblem,
} from '../src/protocol.js';
import { wireMessage } from './fakes.js';

describe('parseMessage', () => {
  it('accepts the documented payload, and a REST message without type', () => {
    const wire = wireMessage(12346, { tip: { amount: 500, currency: 'USD', status: 'succeeded' }, list: 'l-1' });
    expect(parseMessage(wire)).toEqual({
      id: 12346,
      client_id: 'c-12346',
      from: 'alice',
      to: 'bob',
      body: 'message 12346',
      sent_at: '2026-11-23T10:00:00.000000Z',
      read_at: null,
      tip: { amount: 500, currency: 'USD', status: 'succeeded' },
      list: 'l-1',
    });
    const { type: _type, ...rest } = wireMessage(1, { sent_at: '2026-11-23T10:00:00Z', read_at: '2026-11-23T10:00:01+00:00' });
    expect(parseMessage(rest).read_at).toBe('2026-11-23T10:00:01+00:00');
  });

  it('ignores unknown fields (the server may add some)', () => {
    expect(parseMessage(wireMessage(1, { edited: true })).id).toBe(1);
  });

  it.each([
    ['not an object', '"hi"'],
    ['an array', []],
    ['null', null],
    ['another type', wireMessage(1, { type: 'ack' })],
    ['no id', wireMessage(1, { id: undefined })],
    ['id as a string', wireMessage(1, { id: '1' })],
    ['fractional id', wireMessage(1, { id: 1.5 })],
    ['id 0', wireMessage(1, { id: 0 })],
    ['id beyond 2^53 (not exact in JS)', wireMessage(1, { id: 2 ** 53 + 2 })],
    ['from not a user id', wireMessage(1, { from: 'alice/x' })],
    ['to missing', wireMessage(1, { to: undefined })],
    ['client_id with a space', wireMessage(1, { client_id: 'a b' })],
    ['client_id longer than 64', wireMessage(1, { client_id: 'x'.repeat(65) })],
    ['body not a string', wireMessage(1, { body: 5 })],
    ['sent_at not a time', wireMessage(1, { sent_at: 'yesterday' })],
    ['sent_at null', wireMessage(1, { sent_at: null })],
    ['read_at a number', wireMessage(1, { read_at: 5 })],
    ['tip without amount', wireMessage(1, { tip: { currency: 'USD' } })],
    ['tip amount negative', wireMessage(1, { tip: { amount: -5, currency: 'USD', status: null } })],
    ['list as a number', wireMessage(1, { list: 5 })],
  ])('refuses %s', (_name, payload) => {
    expect(() => parseMessage(payload)).toThrow(ProtocolError);
  });
});

describe('parseEvent', () => {
  it('parses each documented event', () => {
    expect(
      parseEvent({ type: 'ack', client_id: 'c1', id: 7, status: 'sent', duplicate: true, sent_at: '2026-11-23T10:00:00.000000Z' }),
    ).toEqual({ type: 'ack', client_id: 'c1', id: 7, status: 'sent', duplicate: true, sent_at: '2026-11-23T10:00:00.000000Z', mass_message: null, tip: null });
    expect(parseEvent({ type: 'ack', client_id: 'm', id: null, mass_message: 42, status: 'queued', duplicate: false })).toMatchObject({
      status: 'queued',
      id: null,
      mass_message: 42,
    });
    expect(
      parseEvent({ type: 'ack', client_id: 't', id: null, status: 'pending', duplicate: false, sent_at: null, tip: { amount: 500, currency: 'USD', status: 'pending' } }),
    ).toMatchObject({ status: 'pending', tip: { status: 'pending' } });
    expect(parseEvent({ type: 'error', client_id: null, code: 'rate_limited', detail: 'slow down', retry_after: 0.109 })).toEqual({
      type: 'error',
      client_id: null,
      code: 'rate_limited',
      detail: 'slow down',
      retry_after: 0.109,
      limit: null,
    });
    expect(
      parseEvent({ type: 'tip_failed', client_id: 't', billing_url: 'https://x/billing', reason: 'insufficient_funds', tip: { amount: 500, currency: 'USD', status: 'failed' } }),
    ).toMatchObject({ billing_url: 'https://x/billing', reason: 'insufficient_funds' });
    expect(parseEvent({ type: 'read', by: 'bob', up_to: 12 })).toEqual({ type: 'read', by: 'bob', up_to: 12 });
    expect(parseEvent({ type: 'typing', from: 'alice' })).toEqual({ type: 'typing', from: 'alice' });
    expect(parseEvent({ type: 'synced', last_id: null, more: false })).toEqual({ type: 'synced', last_id: null, more: false });
    expect(parseEvent({ type: 'synced', last_id: 7, more: false, client_id: 'sync-1' })).toEqual({ type: 'synced', last_id: 7, more: false, client_id: 'sync-1' });
    expect(parseEvent({ type: 'error', client_id: 's-2', code: 'rate_limited', detail: 'x', retry_after: 1, limit: 'sync' })).toMatchObject({ client_id: 's-2', limit: 'sync' });
  });

  it.each([
    ['an unknown type', { type: 'deleted', id: 1 }],
    ['no type', { client_id: 'c' }],
    ['ack with an unknown status', { type: 'ack', client_id: 'c', id: 1, status: 'delivered', duplicate: false }],
    ['ack without client_id', { type: 'ack', id: 1, status: 'sent', duplicate: false }],
    ['ack with duplicate as a string', { type: 'ack', client_id: 'c', id: 1, status: 'sent', duplicate: 'no' }],
    ['error without code', { type: 'error', client_id: null, detail: 'x' }],
    ['error with a negative retry_after', { type: 'error', client_id: 'c', code: 'rate_limited', detail: 'x', retry_after: -1 }],
    ['tip_failed without billing_url', { type: 'tip_failed', client_id: 'c', reason: null, tip: { amount: 1, currency: 'USD', status: 'failed' } }],
    ['read with up_to as a string', { type: 'read', by: 'bob', up_to: '12' }],
    ['typing from a bad user id', { type: 'typing', from: '' }],
    ['synced without more', { type: 'synced', last_id: 5 }],
    ['synced with a negative last_id', { type: 'synced', last_id: -1, more: false }],
  ])('refuses %s', (_name, payload) => {
    expect(() => parseEvent(payload)).toThrow(ProtocolError);
  });
});

describe('decodeJson', () => {
  it('refuses bytes that are not UTF-8, and text that is not JSON', () => {
    expect(() => decodeJson(new Uint8Array([0x7b, 0xff, 0x7d]))).toThrow(/not UTF-8/);
    expect(() => decodeJson('{"type":')).toThrow(/not JSON/);
    expect(decodeJson(new TextEncoder().encode('{"a":"👋"}'))).toEqual({ a: '👋' });
  });
});

describe('presence', () => {
  it.each([
    ['online', true],
    ['  OFFLINE\n', false],
    ['', false],
    ['{"status": "Online"}', true],
    ['{"status": "offline"}', false],
    ['away', null],
    ['{"status": 1}', null],
    ['{broken', null],
  ])('%j -> %s', (payload, state) => {
    expect(parsePresence(payload)).toBe(state);
  });

  it('splits presence topics and refuses others', () => {
    expect(parsePresenceTopic('presence/alice/phone-1')).toEqual({ user: 'alice', device: 'phone-1' });
    expect(parsePresenceTopic('presence/alice/+')).toBeNull();
    expect(parsePresenceTopic('presence/alice')).toBeNull();
    expect(parsePresenceTopic('users/alice/events')).toBeNull();
    expect(parsePresenceTopic('presence/alice/a/b')).toBeNull();
  });
});

describe('textProblem (the server text rule)', () => {
  it('keeps emoji, surrogate pairs, RTL marks, and line feed / CR / tab in a body', () => {
    expect(textProblem('hi 👋 \u200f\u200d\r\n\tok')).toBeNull();
  });
  it('refuses lone surrogates, high or low', () => {
    expect(textProblem('a\ud800b')).toMatch(/lone surrogate U\+D800 at character 1/);
    expect(textProblem('ab\udc00')).toMatch(/U\+DC00 at character 2/);
  });
  it('refuses control characters, and in one line also line feed', () => {
    expect(textProblem('ab\u0000')).toMatch(/U\+0000 at character 2/);
    expect(textProblem('\u0085')).toMatch(/U\+0085/);
    expect(textProblem('a\nb', false)).toMatch(/U\+000A/);
  });
});

describe('encodeCommand', () => {
  it('puts id before body, so the server finds it even in an oversized command', () => {
    const text = encodeCommand({ type: 'message', id: 'c1', to: 'bob', body: 'hi', tip: { amount: 500, currency: 'USD' } });
    expect(text.indexOf('"id"')).toBeLessThan(text.indexOf('"body"'));
    expect(JSON.parse(text)).toEqual({ type: 'message', id: 'c1', to: 'bob', body: 'hi', tip: { amount: 500, currency: 'USD' } });
  });

  it('counts the limit in UTF-8 bytes', () => {
    const overhead = encodeCommand({ type: 'message', id: 'c1', to: 'bob', body: '' }).length;
    const fits = 'x'.repeat(MAX_COMMAND_BYTES - overhead);
    expect(() => encodeCommand({ type: 'message', id: 'c1', to: 'bob', body: fits })).not.toThrow();
    // 2-byte characters, one more than fits
    const over = 'é'.repeat(Math.ceil((MAX_COMMAND_BYTES - overhead) / 2) + 1);
    expect(() => encodeCommand({ type: 'message', id: 'c1', to: 'bob', body: over })).toThrow(
      expect.objectContaining({ code: 'payload_too_large' }),
    );
  });

  it.each([
    ['a bad recipient', { type: 'message', id: 'c1', to: 'bob/x', body: 'hi' }],
    ['an id with a space', { type: 'message', id: 'c 1', to: 'bob', body: 'hi' }],
    ['a control character in the body', { type: 'message', id: 'c1', to: 'bob', body: 'a\u0007' }],
    ['a tip in a fraction of a cent', { type: 'message', id: 'c1', to: 'bob', body: '', tip: { amount: 1.5, currency: 'USD' } }],
    ['a tip in a lowercase currency', { type: 'message', id: 'c1', to: 'bob', body: '', tip: { amount: 1, currency: 'usd' } }],
    ['a negative read mark', { type: 'read', up_to: -1 }],
    ['typing to nobody', { type: 'typing', to: '' }],
    ['sync after a fraction', { type: 'sync', after: 1.5 }],
  ] as const)('refuses %s', (_name, command) => {
    expect(() => encodeCommand(command as never)).toThrow(InvalidCommand);
  });
});
