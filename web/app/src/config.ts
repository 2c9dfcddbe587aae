/** The app's settings, from the API's public `GET /v1/config` (never baked into the build). */

export interface AppConfig {
  /** The API's base URL (the page's origin unless the server names another). */
  apiUrl: string;
  /** MQTT over WebSocket; null when the server knows of none. */
  mqttUrl: string | null;
  loginUrl: string;
  /** The sign-in page may ask for development tokens (development only). */
  devTokens: boolean;
  /** Largest command the server takes, in UTF-8 bytes (a message and its envelope). */
  maxBodyBytes: number;
  tipMinAmount: number;
  tipMaxAmount: number;
  tipCurrencies: string[];
}

export interface PageLocation {
  protocol: string;
  hostname: string;
  origin: string;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

function field<T>(o: Record<string, unknown>, key: string, check: (v: unknown) => v is T): T {
  const v = o[key];
  if (!check(v)) throw new ConfigError(`config: ${key} is missing or invalid`);
  return v;
}

const isString = (v: unknown): v is string => typeof v === 'string';
const isNullableString = (v: unknown): v is string | null => v === null || typeof v === 'string';
const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v > 0;
const isNullableInt = (v: unknown): v is number | null => v === null || isInt(v);
const isBool = (v: unknown): v is boolean => typeof v === 'boolean';
const isStrings = (v: unknown): v is string[] => Array.isArray(v) && v.every(isString);
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Checks the answer of `/v1/config` and resolves it against the page: with no configured broker URL
 * and `mqtt_ws_port` (`messenger serve`), the broker is on that port of the page's own host (what
 * the user typed in the address bar, not a header the server saw).
 */
export function parseConfig(data: unknown, page: PageLocation): AppConfig {
  if (!isObject(data)) throw new ConfigError('config: not an object');
  const limits = field(data, 'limits', isObject);
  const mqttUrl = field(data, 'mqtt_url', isNullableString);
  const port = field(data, 'mqtt_ws_port', isNullableInt);
  const scheme = page.protocol === 'https:' ? 'wss' : 'ws';
  return {
    apiUrl: (field(data, 'api_url', isNullableString) ?? page.origin).replace(/\/+$/, ''),
    mqttUrl: mqttUrl ?? (port !== null ? `${scheme}://${page.hostname}:${port}/mqtt` : null),
    loginUrl: field(data, 'login_url', isString),
    devTokens: field(data, 'dev_tokens', isBool),
    maxBodyBytes: field(limits, 'max_body_bytes', isInt),
    tipMinAmount: field(limits, 'tip_min_amount', isInt),
    tipMaxAmount: field(limits, 'tip_max_amount', isInt),
    tipCurrencies: field(limits, 'tip_currencies', isStrings),
  };
}

export async function loadConfig(page: PageLocation, fetchFn: typeof fetch = fetch): Promise<AppConfig> {
  const response = await fetchFn(`${page.origin}/v1/config`, { headers: { Accept: 'application/json' } });
  if (!response.ok) throw new ConfigError(`GET /v1/config answered ${response.status}`);
  return parseConfig(await response.json(), page);
}
