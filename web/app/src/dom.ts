/**
 * The app's one render helper: `h('button', { onclick: send, 'aria-label': 'Send' }, 'Send')`.
 *
 * Children that are strings become text nodes, and attributes are set with `setAttribute`: no
 * markup is ever parsed from data, so a message body like `<img src=x onerror=...>` stays text.
 * (There is deliberately no `innerHTML` anywhere in the app.)
 */

export type Child = Node | string | number | null | undefined | false;
export type AttrValue = string | number | boolean | null | undefined;
export type Attrs = Record<string, AttrValue | ((event: never) => void)>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (typeof value === 'function') {
      el.addEventListener(name.replace(/^on/, ''), value as EventListener);
    } else if (name === 'value' && (el instanceof HTMLInputElement || el instanceof HTMLTextAreaElement)) {
      el.value = String(value ?? '');
    } else if (value === true) {
      el.setAttribute(name, '');
    } else if (value !== false && value !== null && value !== undefined) {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

/** Appends children (text as text nodes); skips null, undefined and false. */
export function append(parent: Node, children: (Child | Child[])[]): void {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    parent.appendChild(typeof child === 'string' || typeof child === 'number' ? document.createTextNode(String(child)) : child);
  }
}

/**
 * Makes `children` the children of `parent`, in order. A node that is already a child stays where
 * it is as long as the order allows: the composer is never taken out of the page by a render, so
 * it keeps the focus (and a phone its keyboard) while messages come in, and the log its scroll.
 */
export function replace(parent: Node, ...children: (Child | Child[])[]): void {
  const wanted: Node[] = [];
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    wanted.push(typeof child === 'string' || typeof child === 'number' ? document.createTextNode(String(child)) : child);
  }
  const keep = new Set(wanted);
  let index = 0;
  for (const node of wanted) {
    let current: ChildNode | null = parent.childNodes[index] ?? null;
    while (current !== null && current !== node && !keep.has(current)) {
      parent.removeChild(current);
      current = parent.childNodes[index] ?? null;
    }
    if (current !== node) parent.insertBefore(node, current);
    index++;
  }
  while (parent.childNodes.length > wanted.length) parent.removeChild(parent.lastChild as ChildNode);
}

/** An http(s) URL as given, or null: only those become links (never `javascript:`). */
export function safeHref(url: string | null | undefined, base?: string): string | null {
  if (!url) return null;
  try {
    const parsed = new URL(url, base);
    return parsed.protocol === 'https:' || parsed.protocol === 'http:' ? parsed.href : null;
  } catch {
    return null;
  }
}
