/**
 * @messenger/client: a browser client for Messenger (MQTT over WebSocket with mqtt.js, and the
 * REST API with fetch), without any UI dependency. Start with {@link MessengerClient}.
 */

export { MessengerClient, memoryStore, storageStore } from './client.js';
export type { CatchUpState, ClientEvents, ClientOptions, CursorStore } from './client.js';
export * from './api.js';
export { DEFAULT_BACKOFF, backoffDelay, type Backoff } from './backoff.js';
export { CatchUp, RecentIds, mergeById, type CatchUpMode, type SyncRequest, type SyncStep } from './catchup.js';
export { Connection, NotConnected, type ConnectionOptions, type ConnectionState, type ConnectionStatus } from './connection.js';
export { Emitter, type Listener } from './events.js';
export { Outbox, randomId, type Draft, type OutgoingError, type OutgoingMessage, type OutgoingStatus } from './outbox.js';
export { PresenceBook, type PresenceChange } from './presence.js';
export * from './protocol.js';
export { ReadMarks } from './reads.js';
export { ApiError, NetworkError, RestClient, type Query, type RequestOptions, type RestOptions } from './rest.js';
export { TokenError, TokenKeeper, readClaims, refreshDelay, type TokenClaims } from './token.js';
export {
  ConnectRefused,
  mqttjsConnector,
  type Fetch,
  type LinkHandlers,
  type LinkOptions,
  type MqttConnector,
  type MqttLink,
} from './transport.js';
