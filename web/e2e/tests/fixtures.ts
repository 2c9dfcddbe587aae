/**
 * Fixtures of the browser suite: the stack of the project (one per worker, started by
 * tests/browser/stack.py), people (each a browser context of their own, signed in through the
 * app), the REST API for what a test sets up, and what a failure leaves behind (a screenshot of
 * every page, the tails of the stack's logs).
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { test as base, expect, type Browser, type BrowserContext, type Locator, type Page, type TestInfo } from '@playwright/test';

export { expect };

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const PYTHON = process.env.MESSENGER_E2E_PYTHON ?? join(ROOT, '.venv', 'bin', 'python');
const STARTUP_MS = 180_000;

export type StackKind = 'serve' | 'mosquitto';

export interface StackOptions {
  stackKind: StackKind;
}

interface Ready {
  stack: StackKind;
  app: string;
  control: string;
  billing_url: string;
  admin_key: string;
  workdir: string;
  logs: string[];
}

/** A running stack: where the app is, and the server's stop and start for restart scenarios. */
export class Stack {
  readonly #proc: ChildProcessWithoutNullStreams;
  readonly ready: Ready;
  /** The last 20,000 characters the stack process wrote to stderr, from its start. */
  readonly #stderr: { text: string };

  private constructor(proc: ChildProcessWithoutNullStreams, ready: Ready, stderr: { text: string }) {
    this.#proc = proc;
    this.ready = ready;
    this.#stderr = stderr;
  }

  static async start(kind: StackKind): Promise<Stack> {
    const proc = spawn(PYTHON, ['-m', 'tests.browser.stack', kind], { cwd: ROOT, env: process.env });
    const stderr = { text: '' };
    proc.stderr.on('data', (chunk: Buffer) => {
      stderr.text = (stderr.text + chunk.toString()).slice(-20_000);
    });
    const lines = createInterface({ input: proc.stdout });
    const ready = await new Promise<Ready>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the ${kind} stack did not start in ${STARTUP_MS / 1000} s:\n${stderr.text}`)), STARTUP_MS);
      proc.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`the ${kind} stack exited with ${code} before it was ready:\n${stderr.text}`));
      });
      proc.on('error', (error) => {
        clearTimeout(timer);
        reject(new Error(`could not run ${PYTHON} (make .venv/.installed first): ${error.message}`));
      });
      lines.once('line', (line) => {
        clearTimeout(timer);
        resolve(JSON.parse(line) as Ready);
      });
    });
    return new Stack(proc, ready, stderr);
  }

  get app(): string {
    return this.ready.app;
  }

  /** Stops the server (messenger serve; Mosquitto and the API of the topology), gracefully. */
  async stopServer(): Promise<void> {
    await this.#control('stop');
  }

  /** Starts it again on the same ports, with the same data; returns once it answers. */
  async startServer(): Promise<void> {
    await this.#control('start');
  }

  async #control(action: 'stop' | 'start'): Promise<void> {
    const response = await fetch(`${this.ready.control}/${action}`, { method: 'POST' });
    if (!response.ok) throw new Error(`${action} the server: ${response.status} ${await response.text()}`);
  }

  /** A development token (the stacks run on the development secret), as the sign-in page gets one. */
  async token(user: string, role: 'member' | 'creator' = 'member'): Promise<string> {
    const response = await fetch(`${this.app}/v1/dev/token`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ user_id: user, role }),
    });
    expect(response.status, 'POST /v1/dev/token').toBe(200);
    return ((await response.json()) as { token: string }).token;
  }

  /** A REST call as `token`; fails the test on an unexpected status. */
  async api<T = unknown>(token: string, method: string, path: string, body?: unknown, expected = [200, 201, 202, 204]): Promise<T> {
    const headers: Record<string, string> = { Authorization: `Bearer ${token}`, Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (method === 'POST' && path === '/v1/messages') headers['Idempotency-Key'] = crypto.randomUUID();
    const response = await fetch(`${this.app}${path}`, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
    const text = await response.text();
    expect(expected, `${method} ${path} answered ${response.status}: ${text}`).toContain(response.status);
    return (text ? JSON.parse(text) : null) as T;
  }

  /** Revokes every token of `user` issued until now (an operator's POST /v1/admin/revocations). */
  async revoke(user: string): Promise<void> {
    const response = await fetch(`${this.app}/v1/admin/revocations`, {
      method: 'POST',
      headers: { 'X-Admin-Key': this.ready.admin_key, 'Content-Type': 'application/json' },
      body: JSON.stringify({ user, reason: 'browser test' }),
    });
    expect(response.status, `revoke ${user}: ${await response.text()}`).toBe(201);
  }

  /** The last lines of every log of the stack (attached to a failed test). */
  logTails(lines = 60): string {
    const parts = this.ready.logs.map((path) => {
      let text = '';
      try {
        text = readFileSync(path, 'utf8');
      } catch {
        text = '(no log)';
      }
      return `==> ${path} <==\n${text.split('\n').slice(-lines).join('\n')}`;
    });
    return [...parts, `==> stack stderr <==\n${this.#stderr.text}`].join('\n\n');
  }

  async close(): Promise<void> {
    if (this.#proc.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => this.#proc.once('exit', () => resolve()));
    this.#proc.stdin.end();
    const timer = setTimeout(() => this.#proc.kill('SIGKILL'), 60_000);
    await exited;
    clearTimeout(timer);
  }
}

/** One person of a scenario: a browser context of their own, and its page. */
export interface Person {
  id: string;
  role: 'member' | 'creator';
  context: BrowserContext;
  page: Page;
}

export class People {
  readonly #browser: Browser;
  readonly #stack: Stack;
  readonly #tag: string;
  readonly all: Person[] = [];
  /** What the pages wrote to the console as errors, and uncaught exceptions. */
  readonly consoleErrors: string[] = [];
  readonly #allowed: RegExp[] = [];

  constructor(browser: Browser, stack: Stack, tag: string) {
    this.#browser = browser;
    this.#stack = stack;
    this.#tag = tag;
  }

  /** A user id of this test alone (the stack's database outlives a test and a run). */
  id(name: string): string {
    // the screenshots for docs/ are taken on a fresh `messenger serve`: plain names read better there
    return process.env.MESSENGER_E2E_SCREENSHOTS ? name : `${name}-${this.#tag}`;
  }

  /** Console errors matching `pattern` are expected in this test (a server that is away, say). */
  allowConsoleErrors(pattern: RegExp): void {
    this.#allowed.push(pattern);
  }

  /** The console errors no test allowed. */
  unexpectedConsoleErrors(): string[] {
    return this.consoleErrors.filter((text) => !this.#allowed.some((p) => p.test(text)));
  }

  /** A person with a browser context of their own, on the app's sign-in page. */
  async visit(name: string, role: 'member' | 'creator' = 'member', path = '/'): Promise<Person> {
    const context = await this.#browser.newContext();
    const watch = (page: Page): void => {
      page.on('console', (msg) => {
        if (msg.type() === 'error') this.consoleErrors.push(`${this.id(name)}: ${msg.text()} (${msg.location().url})`);
      });
      page.on('pageerror', (error) => this.consoleErrors.push(`${this.id(name)}: uncaught ${error.message}`));
    };
    context.on('page', watch);
    const page = await context.newPage();
    const person: Person = { id: this.id(name), role, context, page };
    this.all.push(person);
    await page.goto(new URL(path, this.#stack.app).href);
    return person;
  }

  /** A new person signed in through the development sign-in form of the app. */
  async signIn(name: string, role: 'member' | 'creator' = 'member'): Promise<Person> {
    const person = await this.visit(name, role);
    const page = person.page;
    await page.getByLabel('User id').fill(person.id);
    await page.getByLabel('Role').selectOption(role);
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
    await expect(page.getByText(`Signed in as ${person.id}`)).toBeVisible();
    return person;
  }

  async closeAll(): Promise<void> {
    await Promise.all(this.all.map((p) => p.context.close().catch(() => undefined)));
  }
}

// --- the app, as a person uses it

export function messageBox(page: Page): Locator {
  return page.getByRole('textbox', { name: 'Message', exact: true });
}

/** The connection's status line ("Reconnecting… Next try in 3 s. [Retry now]"; empty when online). */
export function connection(page: Page): Locator {
  return page.getByRole('status', { includeHidden: true }).and(page.locator('.connection'));
}

export function messages(page: Page): Locator {
  return page.getByRole('log', { name: 'Messages' });
}

/** The message lines whose text has `text`. */
export function line(page: Page, text: string): Locator {
  return messages(page).locator('li.line').filter({ hasText: text });
}

export async function openConversation(page: Page, peer: string): Promise<void> {
  await page.getByLabel('Start a conversation with').fill(peer);
  await page.getByRole('button', { name: 'Open', exact: true }).click();
  await expect(page.getByRole('heading', { name: peer, exact: true })).toBeVisible();
}

/** Types `text` into the message box (a key at a time, as a person does) and sends it with Enter. */
export async function send(page: Page, text: string, { typed = false } = {}): Promise<void> {
  const box = messageBox(page);
  if (typed) await box.pressSequentially(text, { delay: 5 });
  else await box.fill(text);
  await box.press('Enter');
}

/** Back to the conversation list where it is not beside the conversation (a phone-sized screen). */
export async function showConversations(page: Page): Promise<void> {
  const back = page.getByRole('button', { name: 'Back to conversations' });
  if (await back.isVisible()) await back.click();
}

/** The conversation list's entry for `peer` (its button). */
export function conversationItem(page: Page, peer: string): Locator {
  return page.getByRole('navigation', { name: 'Conversations' }).getByRole('button').filter({ hasText: peer });
}

/** Where docs/screenshots come from: `make e2e-screenshots` sets MESSENGER_E2E_SCREENSHOTS. */
export async function docScreenshot(page: Page, name: string, testInfo: TestInfo): Promise<void> {
  const dir = process.env.MESSENGER_E2E_SCREENSHOTS;
  if (!dir || testInfo.project.name !== 'serve') return;
  mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: join(dir, `${name}.png`) });
}

interface TestFixtures {
  people: People;
}

interface WorkerFixtures {
  stack: Stack;
}

export const test = base.extend<TestFixtures, WorkerFixtures & StackOptions>({
  stackKind: ['serve', { option: true, scope: 'worker' }],
  stack: [
    async ({ stackKind }, use) => {
      const stack = await Stack.start(stackKind);
      await use(stack);
      await stack.close();
    },
    { scope: 'worker', timeout: STARTUP_MS + 60_000 },
  ],
  people: async ({ browser, stack }, use, testInfo) => {
    const people = new People(browser, stack, `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`);
    await use(people);
    if (testInfo.status !== testInfo.expectedStatus) {
      for (const person of people.all) {
        if (person.page.isClosed()) continue;
        const path = testInfo.outputPath(`${person.id}.png`);
        mkdirSync(dirname(path), { recursive: true });
        await person.page.screenshot({ path, fullPage: true }).catch(() => undefined);
        await testInfo.attach(`page of ${person.id}`, { path, contentType: 'image/png' }).catch(() => undefined);
      }
      await testInfo.attach('stack logs', { body: stack.logTails(), contentType: 'text/plain' });
    }
    await people.closeAll();
    if (testInfo.status === testInfo.expectedStatus) {
      // the app writes no errors to the console on its way (a 404 it expects included)
      expect(people.unexpectedConsoleErrors(), 'console errors').toEqual([]);
    }
  },
});
