/** Boot: read the server's config, then sign in (deep link, stored token) or show the sign-in page. */

import './style.css';

import { ChatApp } from './app.js';
import { loadConfig } from './config.js';
import { h, replace } from './dom.js';

function storage(): Storage | null {
  try {
    return window.localStorage;
  } catch {
    return null;
  }
}

async function boot(root: HTMLElement): Promise<void> {
  let config;
  try {
    config = await loadConfig(window.location);
  } catch (error) {
    replace(
      root,
      h('main', { class: 'signin' }, h('h1', {}, 'Messenger'), h('p', { role: 'alert' }, `The server's configuration could not be read: ${error instanceof Error ? error.message : String(error)}`)),
    );
    return;
  }
  const app = new ChatApp({ config, root, window, storage: storage(), fetch: window.fetch.bind(window) });
  await app.start();
}

const root = document.getElementById('app');
if (root) void boot(root);
