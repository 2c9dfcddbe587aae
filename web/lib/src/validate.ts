/**
 * Readers for untrusted JSON: every payload from the broker or the REST API goes through these
 * before the library or its consumer touches it. Each reader throws {@link ProtocolError} naming
 * the field, so a malformed payload is refused whole instead of leaking `undefined` into the UI.
 *
 * Unknown fields are ignored (the server may add fields; a client that refused them would break
 * on every server upgrade); known fields must have their documented type.
 */

/** A payload that does not match docs/protocol.md or docs/api.md. */
export class ProtocolError extends Error {
  override name = 'ProtocolError';
}

export type Json = Record<string, unknown>;

/** User ids: `[A-Za-z0-9_.-]{1,64}`, neither `.` nor `..` (docs/protocol.md, "Connecting"). */
const USER_ID = /^[A-Za-z0-9_.-]{1,64}$/;
/** Client message ids and list ids: 1-64 printable ASCII characters, no space. */
const PRINTABLE_ID = /^[\x21-\x7e]{1,64}$/;
/** The server's times: ISO 8601, UTC (`Z`) or with an offset, optional fraction. */
const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;

export function isUserId(value: unknown): value is string {
  return typeof value === 'string' && USER_ID.test(value) && value !== '.' && value !== '..';
}

export function isPrintableId(value: unknown): value is string {
  return typeof value === 'string' && PRINTABLE_ID.test(value);
}

/** Server ids (message, mass message, tip): integers >= 1 that a JS number holds exactly. */
export function isServerId(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 1;
}

export function object(value: unknown, what: string): Json {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ProtocolError(`${what}: expected a JSON object`);
  }
  return value as Json;
}

function fail(what: string, key: string, expected: string, value: unknown): never {
  const shown = value === undefined ? 'missing' : JSON.stringify(value)?.slice(0, 40);
  throw new ProtocolError(`${what}.${key}: expected ${expected}, got ${shown}`);
}

export function str(o: Json, key: string, what: string): string {
  const v = o[key];
  return typeof v === 'string' ? v : fail(what, key, 'a string', v);
}

export function nullableStr(o: Json, key: string, what: string): string | null {
  const v = o[key];
  if (v === null || v === undefined) return null;
  return typeof v === 'string' ? v : fail(what, key, 'a string or null', v);
}

export function bool(o: Json, key: string, what: string): boolean {
  const v = o[key];
  return typeof v === 'boolean' ? v : fail(what, key, 'a boolean', v);
}

/** An integer >= `min` that a JS number holds exactly. */
export function int(o: Json, key: string, what: string, min = 0): number {
  const v = o[key];
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= min
    ? v
    : fail(what, key, `an integer >= ${min}`, v);
}

export function nullableInt(o: Json, key: string, what: string, min = 0): number | null {
  const v = o[key];
  return v === null || v === undefined ? null : int(o, key, what, min);
}

export function num(o: Json, key: string, what: string): number {
  const v = o[key];
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : fail(what, key, 'a number >= 0', v);
}

export function serverId(o: Json, key: string, what: string): number {
  const v = o[key];
  return isServerId(v) ? v : fail(what, key, 'a server id (integer >= 1)', v);
}

export function nullableServerId(o: Json, key: string, what: string): number | null {
  const v = o[key];
  return v === null || v === undefined ? null : serverId(o, key, what);
}

export function userId(o: Json, key: string, what: string): string {
  const v = o[key];
  return isUserId(v) ? v : fail(what, key, 'a user id', v);
}

export function printableId(o: Json, key: string, what: string): string {
  const v = o[key];
  return isPrintableId(v) ? v : fail(what, key, 'an id of 1-64 printable ASCII characters', v);
}

export function nullablePrintableId(o: Json, key: string, what: string): string | null {
  const v = o[key];
  return v === null || v === undefined ? null : printableId(o, key, what);
}

export function timestamp(o: Json, key: string, what: string): string {
  const v = o[key];
  return typeof v === 'string' && TIMESTAMP.test(v) && !Number.isNaN(Date.parse(v))
    ? v
    : fail(what, key, 'an ISO 8601 time', v);
}

export function nullableTimestamp(o: Json, key: string, what: string): string | null {
  const v = o[key];
  return v === null || v === undefined ? null : timestamp(o, key, what);
}

export function oneOf<T extends string>(o: Json, key: string, what: string, values: readonly T[]): T {
  const v = o[key];
  return typeof v === 'string' && (values as readonly string[]).includes(v)
    ? (v as T)
    : fail(what, key, `one of ${values.join(', ')}`, v);
}

export function array<T>(o: Json, key: string, what: string, item: (v: unknown, where: string) => T): T[] {
  const v = o[key];
  if (!Array.isArray(v)) fail(what, key, 'an array', v);
  return v.map((x, i) => item(x, `${what}.${key}[${i}]`));
}
