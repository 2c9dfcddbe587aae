/**
 * The library's two doors to the network, as interfaces: an MQTT connection ({@link MqttConnector},
 * one {@link MqttLink} per CONNECT) and `fetch`. The real ones are mqtt.js over WebSocket and the
 * browser's `fetch`; tests pass in-memory fakes. Nothing else in the library imports mqtt.js.
 */

import mqtt from 'mqtt';

export interface LinkOptions {
  /** `ws://host:8083/mqtt` (embedded broker) or a `wss://` URL behind a proxy. */
  url: string;
  /** `{user id}/{device}`. */
  clientId: string;
  /** The user id. */
  username: string;
  /** The bearer token (a JWT). */
  password: string;
  /** The Last Will: `offline` on the client's own presence topic, retained, QoS 1. */
  will: { topic: string; payload: string };
  keepaliveS: number;
  connectTimeoutMs: number;
}

export interface LinkHandlers {
  message(topic: string, payload: Uint8Array): void;
  /** The connection is gone (not called after the link's own {@link MqttLink.end}). */
  close(error?: Error): void;
}

/** One live MQTT 3.1.1 connection, clean session. */
export interface MqttLink {
  /** Subscribes with QoS 1; rejects if the broker refuses any filter (SUBACK 0x80). */
  subscribe(filters: string[]): Promise<void>;
  unsubscribe(filters: string[]): Promise<void>;
  /** Publishes with QoS 1; resolves on PUBACK (which only means the broker has it). */
  publish(topic: string, payload: string, retain?: boolean): Promise<void>;
  /** A clean DISCONNECT: the broker discards the Last Will. */
  end(): Promise<void>;
}

export interface MqttConnector {
  /** Resolves once the broker accepted the CONNECT; rejects with {@link ConnectRefused} or a network error. */
  connect(options: LinkOptions, handlers: LinkHandlers): Promise<MqttLink>;
}

/** The broker answered the CONNECT with a refusal; 5 = not authorized (bad, expired or revoked token). */
export class ConnectRefused extends Error {
  override name = 'ConnectRefused';
  constructor(readonly returnCode: number) {
    super(`the broker refused the connection (return code ${returnCode})`);
  }

  get notAuthorized(): boolean {
    return this.returnCode === 4 || this.returnCode === 5;
  }
}

export type Fetch = (input: string, init?: RequestInit) => Promise<Response>;

/** The real connector: mqtt.js, with its own reconnect turned off (the library reconnects). */
export function mqttjsConnector(): MqttConnector {
  return {
    connect(options, handlers) {
      return new Promise<MqttLink>((resolve, reject) => {
        const client = mqtt.connect(options.url, {
          clientId: options.clientId,
          username: options.username,
          password: options.password,
          protocolVersion: 4, // the embedded amqtt broker speaks MQTT 3.1.1 only
          clean: true,
          reconnectPeriod: 0,
          resubscribe: false,
          keepalive: options.keepaliveS,
          connectTimeout: options.connectTimeoutMs,
          will: { topic: options.will.topic, payload: options.will.payload, qos: 1, retain: true },
        });
        let open = false;
        let ended = false;
        const link: MqttLink = {
          async subscribe(filters) {
            if (filters.length > 0) await client.subscribeAsync(filters, { qos: 1 });
          },
          async unsubscribe(filters) {
            if (filters.length > 0) await client.unsubscribeAsync(filters);
          },
          async publish(topic, payload, retain = false) {
            await client.publishAsync(topic, payload, { qos: 1, retain });
          },
          async end() {
            ended = true;
            await client.endAsync();
          },
        };
        client.on('connect', () => {
          open = true;
          resolve(link);
        });
        client.on('message', (topic, payload) => handlers.message(topic, payload));
        client.on('error', (error) => {
          if (open) return; // 'close' follows
          const code = (error as { code?: unknown }).code;
          client.end(true);
          reject(typeof code === 'number' && code > 0 && code < 128 ? new ConnectRefused(code) : error);
        });
        client.on('close', () => {
          if (!open) {
            client.end(true);
            reject(new Error('the connection closed before the broker answered'));
          } else if (!ended) {
            open = false;
            client.end(true);
            handlers.close();
          }
        });
      });
    },
  };
}

export const defaultFetch: Fetch = (input, init) => globalThis.fetch(input, init);
