/** What the server would refuse, checked while typing so the limit shows before sending. */

import { textProblem } from '@messenger/client';

const encoder = new TextEncoder();

export function utf8Bytes(text: string): number {
  return encoder.encode(text).length;
}

/** The size of the `message` command this body makes (what the server's limit counts). */
export function commandBytes(to: string, body: string): number {
  // a client id is 36 characters (a UUID); a tip adds well under a hundred more bytes
  const id = 'x'.repeat(36);
  return utf8Bytes(JSON.stringify({ type: 'message', id, to, body })) + 96;
}

const number = new Intl.NumberFormat('en');

/**
 * Why this body cannot be sent, in words for the user, or null when it can. Empty (or blank)
 * bodies are not refused here: the send button is just disabled for them.
 */
export function bodyProblem(to: string, body: string, maxBytes: number): string | null {
  const size = commandBytes(to, body);
  if (size > maxBytes) {
    return `Too long to send: ${number.format(size)} bytes; the server's limit is ${number.format(maxBytes)} bytes (about ${number.format(size - maxBytes)} too many).`;
  }
  const problem = textProblem(body, true);
  return problem === null ? null : `This text cannot be sent: ${problem}.`;
}
