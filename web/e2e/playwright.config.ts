/**
 * The chat app end to end: Debian's Chromium (never a downloaded browser build) driven by
 * Playwright against a real stack per project, started by tests/browser/stack.py:
 *
 * - `serve`: `messenger serve` on its embedded defaults (the embedded broker's WebSocket listener);
 * - `mosquitto`: the production topology (Mosquitto's WebSocket listener with the plugin, the API,
 *   two handlers, a worker and the presence bridge, on MariaDB and Redis).
 *
 *     make e2e                  # both stacks, as .ci/run does
 *     make e2e-full             # and a phone-sized screen on both
 *     make e2e ARGS='--project serve -g block'
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { defineConfig, devices } from '@playwright/test';

import type { StackOptions } from './tests/fixtures.js';

const chromium = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
if (!existsSync(chromium)) {
  throw new Error(`No Chromium at ${chromium}: install Debian's (apt-get install chromium) or set CHROMIUM_PATH.`);
}

const full = process.env.MESSENGER_E2E_FULL === '1';
const desktop = { ...devices['Desktop Chrome'], viewport: { width: 1100, height: 760 } };
// a phone-sized screen in Chromium (the device profiles name other browsers' engines)
const phone = { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true };

export default defineConfig<StackOptions>({
  testDir: './tests',
  outputDir: fileURLToPath(new URL('../../var/e2e/results', import.meta.url)),
  // one stack per project and worker: the tests of a project share it, in order
  workers: 1,
  fullyParallel: false,
  forbidOnly: !!process.env.CI,
  retries: 0,
  timeout: 90_000,
  expect: { timeout: 15_000 },
  reporter: [['list']],
  use: {
    screenshot: 'only-on-failure',
    trace: 'retain-on-failure',
    launchOptions: {
      executablePath: chromium,
      // as root in a container; and no calls home (this machine's network is closed)
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    },
  },
  projects: [
    { name: 'serve', use: { ...desktop, stackKind: 'serve' } },
    { name: 'mosquitto', use: { ...desktop, stackKind: 'mosquitto' } },
    ...(full
      ? [
          { name: 'serve-phone', use: { ...phone, stackKind: 'serve' as const } },
          { name: 'mosquitto-phone', use: { ...phone, stackKind: 'mosquitto' as const } },
        ]
      : []),
  ],
});
