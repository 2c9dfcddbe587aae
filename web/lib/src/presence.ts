/**
 * Live presence of the users the client watches, from the retained `presence/{uid}/{device}`
 * topics (docs/protocol.md, "Presence"): a user is online while any of their devices is.
 *
 * The MQTT topics show anyone's presence, blocks or not; the REST lookup
 * (`MessengerApi.presence`) hides it across a block. After a reconnect the broker replays the
 * retained states, so the book starts over ({@link PresenceBook.reset}); a device whose retained
 * state was cleared while the client was away is not replayed: ask REST for a snapshot then.
 */

import { parsePresence, parsePresenceTopic, topics } from './protocol.js';
import { isUserId } from './validate.js';

export interface PresenceChange {
  user: string;
  /** Any device online. */
  online: boolean;
  /** The device whose state changed, and its state. */
  device: string;
  deviceOnline: boolean;
  /** The devices known online. */
  devices: string[];
}

export class PresenceBook {
  readonly #watched = new Set<string>();
  readonly #devices = new Map<string, Map<string, boolean>>();

  /** Starts watching `user`; true when it was not watched yet (subscribe to {@link filter}). */
  watch(user: string): boolean {
    if (!isUserId(user)) throw new Error(`not a user id: ${user}`);
    if (this.#watched.has(user)) return false;
    this.#watched.add(user);
    return true;
  }

  /** Stops watching `user`; true when it was watched (unsubscribe from {@link filter}). */
  unwatch(user: string): boolean {
    this.#devices.delete(user);
    return this.#watched.delete(user);
  }

  filter(user: string): string {
    return topics.presenceOf(user);
  }

  /** The topic filters for every watched user. */
  filters(): string[] {
    return [...this.#watched].map((u) => topics.presenceOf(u));
  }

  watched(): string[] {
    return [...this.#watched];
  }

  isOnline(user: string): boolean {
    return [...(this.#devices.get(user)?.values() ?? [])].some(Boolean);
  }

  /** A message on a presence topic: the change it makes, or null (not watched, not a state, no change). */
  update(topic: string, payload: Uint8Array | string): PresenceChange | null {
    const where = parsePresenceTopic(topic);
    if (!where || !this.#watched.has(where.user)) return null; // the embedded broker may replay others
    const state = parsePresence(payload);
    if (state === null) return null;
    let devices = this.#devices.get(where.user);
    if (!devices) this.#devices.set(where.user, (devices = new Map()));
    if (devices.get(where.device) === state) return null;
    devices.set(where.device, state);
    const online = [...devices].filter(([, on]) => on).map(([d]) => d);
    return { user: where.user, online: online.length > 0, device: where.device, deviceOnline: state, devices: online };
  }

  /** A new link: forget the device states; the broker replays the retained ones. */
  reset(): void {
    this.#devices.clear();
  }
}
