/**
 * Bad input and faults, in the browser: markup in a message is text, an oversized message is
 * refused with the server's limit before it is sent, an expired or revoked token sends the person
 * to sign-in saying why, and a deep link's token leaves the address bar.
 */
import { expect, line, messageBox, messages, openConversation, send, test } from './fixtures.js';

declare global {
  interface Window {
    pwned?: number;
  }
}

test('markup in a message is shown as text, never run', async ({ people }) => {
  const ann = await people.signIn('ann');
  const bob = await people.signIn('bob');
  await openConversation(ann.page, bob.id);
  await openConversation(bob.page, ann.id);
  const attacks = ['<img src=x onerror="window.pwned=1">', '<script>window.pwned=2</script>', '<a href="javascript:window.pwned=3">click</a>'];
  for (const body of attacks) await send(bob.page, body);
  for (const body of attacks) await expect(messages(ann.page).locator('li.line .body').filter({ hasText: body })).toHaveText(body);
  await line(ann.page, 'click').click();
  expect(await ann.page.evaluate(() => window.pwned)).toBeUndefined();
  await expect(messages(ann.page).locator('img, script, a[href^="javascript:"]')).toHaveCount(0);
  // and after a reload, from the history
  await ann.page.reload();
  await expect(messages(ann.page).locator('li.line .body')).toHaveText(attacks);
  expect(await ann.page.evaluate(() => window.pwned)).toBeUndefined();
});

test("an oversized message shows the server's limit and is not sent", async ({ people, stack }) => {
  const ann = await people.signIn('ann');
  const bob = await people.signIn('bob');
  await openConversation(ann.page, bob.id);
  const config = (await (await fetch(`${stack.app}/v1/config`)).json()) as { limits: { max_body_bytes: number } };
  const box = messageBox(ann.page);
  await box.fill('x'.repeat(config.limits.max_body_bytes + 10));
  await expect(ann.page.getByText(/Too long to send: .* the server's limit is/)).toBeVisible();
  await expect(box).toHaveAttribute('aria-invalid', 'true');
  await expect(ann.page.getByRole('button', { name: 'Send', exact: true })).toBeDisabled();
  await box.press('Enter');
  await expect(messages(ann.page).locator('li.line')).toHaveCount(0);
  // shortened, it goes
  await box.fill('x'.repeat(1000));
  await expect(ann.page.getByText(/Too long to send/)).toBeHidden();
  await box.press('Enter');
  await openConversation(bob.page, ann.id);
  await expect(messages(bob.page).locator('li.line')).toHaveCount(1);
});

test('a deep link with an expired token goes to sign-in, saying so, and leaves the address bar', async ({ people }) => {
  const part = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const expired = `${part({ alg: 'HS256', typ: 'JWT' })}.${part({ sub: 'ann', role: 'member', iat: now - 7200, exp: now - 3600 })}.c2ln`;
  const ann = await people.visit('ann', 'member', `/#token=${expired}`);
  await expect(ann.page.getByRole('alert')).toContainText('This token has expired');
  expect(ann.page.url()).not.toContain(expired);
  await expect(ann.page.getByLabel('User id')).toBeVisible();
});

test('a revoked token ends the session: the app goes to sign-in and says why', async ({ people, stack }) => {
  const ann = await people.signIn('ann');
  const bob = await people.signIn('bob');
  await openConversation(ann.page, bob.id);
  await send(ann.page, 'Before the revocation');
  await expect(line(ann.page, 'Before the revocation')).toContainText(/Sent|Seen/);
  // the refused reconnect and REST calls are the point of this test
  people.allowConsoleErrors(/status of 401|WebSocket connection to .* failed/);
  await stack.revoke(ann.id);
  await expect(ann.page.getByRole('alert')).toContainText('Your session has ended', { timeout: 30_000 });
  await expect(ann.page.getByLabel('User id')).toBeVisible();
  // Bob is not affected
  await openConversation(bob.page, ann.id);
  await expect(line(bob.page, 'Before the revocation')).toHaveCount(1);
});
