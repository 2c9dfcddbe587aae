/** The app's building blocks that hold no connection: a message line and the composer. */

import { h, safeHref } from './dom.js';
import { bodyProblem } from './limits.js';
import { formatAmount, type Line } from './state.js';

const time = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });

function when(iso: string | null): string {
  if (iso === null) return '';
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? '' : time.format(date);
}

const STATUS_TEXT: Record<Line['status'], string> = {
  received: '',
  pending: 'Sending…',
  accepted: 'Sending…',
  sent: 'Sent',
  failed: 'Failed',
};

export interface LineActions {
  retry(clientId: string): void;
  discard(clientId: string): void;
}

/**
 * One message. The body is text (a text node): markup in it is shown, never parsed. A declined
 * tip links to where to fix the payment method (http(s) links only).
 */
export function messageLine(line: Line, peer: string, seen: boolean, actions: LineActions): HTMLLIElement {
  const status = line.mine ? (seen ? 'Seen' : STATUS_TEXT[line.status]) : '';
  const tip = line.tip
    ? h('p', { class: 'tip' }, `Tip ${formatAmount(line.tip.amount, line.tip.currency)}`, line.tip.status ? ` (${line.tip.status})` : '')
    : null;
  const billing = safeHref(line.billingUrl);
  const failed =
    line.status === 'failed'
      ? h(
          'div',
          { class: 'failed', role: 'alert' },
          h('span', {}, line.error ?? 'Not sent'),
          billing ? h('a', { href: billing, target: '_blank', rel: 'noopener noreferrer' }, 'Fix your payment method') : null,
          h('button', { type: 'button', onclick: () => actions.retry(line.clientId) }, 'Retry'),
          h('button', { type: 'button', onclick: () => actions.discard(line.clientId) }, 'Discard'),
        )
      : null;
  const waiting = line.status !== 'failed' && line.error ? h('p', { class: 'note' }, line.error) : null;
  return h(
    'li',
    {
      class: `line ${line.mine ? 'mine' : 'theirs'} ${line.status}`,
      'data-key': line.key,
      'aria-label': `${line.mine ? 'You' : peer}${line.sentAt ? ` at ${when(line.sentAt)}` : ''}${status ? `, ${status}` : ''}`,
    },
    tip,
    line.body ? h('p', { class: 'body' }, line.body) : null,
    h('p', { class: 'meta' }, h('time', line.sentAt ? { datetime: line.sentAt } : {}, when(line.sentAt)), status ? h('span', { class: 'status' }, status) : null),
    waiting,
    failed,
  );
}

export interface ComposerOptions {
  /** The recipient (the limit counts the whole command, recipient included). */
  to: () => string;
  maxBytes: () => number;
  label?: string;
  send(body: string): void;
  /** Called on input (for the typing indicator). */
  typing?(): void;
}

/**
 * The message box: a textbox named "Message"; Enter sends, Shift+Enter is a new line. While the
 * text is over the server's limit, the limit shows under it and nothing is sent.
 */
export class Composer {
  readonly element: HTMLFormElement;
  readonly textarea: HTMLTextAreaElement;
  readonly button: HTMLButtonElement;
  readonly problem: HTMLParagraphElement;
  readonly #o: ComposerOptions;

  constructor(options: ComposerOptions) {
    this.#o = options;
    const id = `composer-${Math.random().toString(36).slice(2, 8)}`;
    this.textarea = h('textarea', {
      id,
      rows: 2,
      'aria-label': options.label ?? 'Message',
      'aria-describedby': `${id}-problem`,
      placeholder: 'Write a message',
      autocomplete: 'off',
      onkeydown: (e: KeyboardEvent) => this.#keydown(e),
      oninput: () => {
        this.check();
        if (this.textarea.value) this.#o.typing?.();
      },
    });
    this.button = h('button', { type: 'submit', disabled: true }, 'Send');
    this.problem = h('p', { id: `${id}-problem`, class: 'problem', 'aria-live': 'polite' });
    this.element = h(
      'form',
      { class: 'composer', onsubmit: (e: SubmitEvent) => (e.preventDefault(), this.submit()) },
      this.textarea,
      this.button,
      this.problem,
    );
  }

  /** Shows the limit when the text is over it; returns whether the text can be sent. */
  check(): boolean {
    const body = this.textarea.value;
    const problem = body === '' ? null : bodyProblem(this.#o.to(), body, this.#o.maxBytes());
    this.problem.textContent = problem ?? '';
    this.textarea.setAttribute('aria-invalid', problem ? 'true' : 'false');
    const ok = problem === null && body.trim() !== '';
    this.button.disabled = !ok;
    return ok;
  }

  submit(): boolean {
    if (!this.check()) return false;
    const body = this.textarea.value;
    this.textarea.value = '';
    this.check();
    this.#o.send(body);
    return true;
  }

  #keydown(e: KeyboardEvent): void {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      this.submit();
    }
  }
}
