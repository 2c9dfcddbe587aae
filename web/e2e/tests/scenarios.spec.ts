/**
 * The six scenarios of the chat app, each with two or more people in browser contexts of their
 * own, against the project's stack (serve or mosquitto).
 */
import { connection, conversationItem, docScreenshot, expect, line, messageBox, messages, openConversation, send, showConversations, test } from './fixtures.js';

test('a live conversation both ways, with typing and read receipts', async ({ people }, testInfo) => {
  const ann = await people.signIn('ann');
  const bob = await people.signIn('bob');
  await openConversation(ann.page, bob.id);
  await openConversation(bob.page, ann.id);
  // both are signed in: each sees the other online
  await expect(ann.page.locator('.conv-head .presence')).toHaveText('online');
  await expect(bob.page.locator('.conv-head .presence')).toHaveText('online');

  await messageBox(ann.page).pressSequentially('Hi Bob, are you there?', { delay: 20 });
  await expect(bob.page.getByText(`${ann.id} is typing…`)).toBeVisible();
  await messageBox(ann.page).press('Enter');
  await expect(line(bob.page, 'Hi Bob, are you there?')).toHaveCount(1);
  // Bob has the conversation open: Ann's message shows as seen
  await expect(line(ann.page, 'Hi Bob, are you there?')).toContainText('Seen');
  await expect(bob.page.getByText(`${ann.id} is typing…`)).toBeHidden();

  // Bob starts his answer; a message from Ann arrives while he types: his draft and focus stay
  await messageBox(bob.page).pressSequentially('Yes! ', { delay: 20 });
  await expect(ann.page.getByText(`${bob.id} is typing…`)).toBeVisible();
  await send(ann.page, 'Hope you are well.');
  await expect(line(bob.page, 'Hope you are well.')).toHaveCount(1);
  await bob.page.keyboard.type('Hello Ann.', { delay: 20 });
  await expect(messageBox(bob.page)).toHaveValue('Yes! Hello Ann.');
  await bob.page.keyboard.press('Enter');
  await expect(line(ann.page, 'Yes! Hello Ann.')).toHaveCount(1);
  await expect(line(bob.page, 'Yes! Hello Ann.')).toContainText('Seen');
  await send(ann.page, 'Shift+Enter makes a new line:');
  await messageBox(ann.page).pressSequentially('one');
  await messageBox(ann.page).press('Shift+Enter');
  await messageBox(ann.page).pressSequentially('two');
  await messageBox(ann.page).press('Enter');
  await expect(line(bob.page, 'one\ntwo')).toHaveCount(1);

  // every message once on both sides, in order
  for (const page of [ann.page, bob.page]) {
    await expect(messages(page).locator('li.line .body')).toHaveText([
      'Hi Bob, are you there?',
      'Hope you are well.',
      'Yes! Hello Ann.',
      'Shift+Enter makes a new line:',
      'one\ntwo',
    ]);
  }
  await docScreenshot(ann.page, 'conversation', testInfo);
});

test('a message sent while the recipient is away shows in their history and unread count', async ({ people, stack }) => {
  const ann = await people.signIn('ann');
  const bob = await people.signIn('bob');
  await bob.page.close(); // Bob closes his tab
  await openConversation(ann.page, bob.id);
  await expect(ann.page.locator('.conv-head .presence')).toHaveText('offline');
  await send(ann.page, 'First, while you were away');
  await send(ann.page, 'Second, while you were away');
  await expect(line(ann.page, 'Second, while you were away')).toContainText('Sent');

  // Bob opens the app again: the same browser, still signed in
  bob.page = await bob.context.newPage();
  await bob.page.goto(stack.app);
  const item = conversationItem(bob.page, ann.id);
  await expect(item).toContainText('2 unread');
  await expect(item).toContainText('Second, while you were away');
  await item.click();
  await expect(messages(bob.page).locator('li.line .body')).toHaveText(['First, while you were away', 'Second, while you were away']);
  await showConversations(bob.page);
  await expect(item).not.toContainText('unread');
  await expect(line(ann.page, 'Second, while you were away')).toContainText('Seen');
});

test('after a server restart both apps reconnect and show every message exactly once', async ({ people, stack }) => {
  test.setTimeout(150_000);
  const ann = await people.signIn('ann');
  const bob = await people.signIn('bob');
  await openConversation(ann.page, bob.id);
  await openConversation(bob.page, ann.id);
  await send(ann.page, 'Before the restart');
  await expect(line(bob.page, 'Before the restart')).toHaveCount(1);

  // while the server is away, the browser says so in the console (the app shows it on the page)
  people.allowConsoleErrors(/WebSocket connection to .* failed|ERR_CONNECTION_REFUSED/);
  await stack.stopServer();
  for (const page of [ann.page, bob.page]) {
    await expect(connection(page)).toContainText('Reconnecting…');
  }
  // written while the server is away: pending, sent once it is back
  await send(ann.page, 'Ann, while the server was down');
  await send(bob.page, 'Bob, while the server was down');
  await expect(line(ann.page, 'Ann, while the server was down')).toContainText('Sending…');

  await stack.startServer();
  // and one from Bob's other device, over REST, as soon as the server is back
  const bobsPhone = await stack.token(bob.id);
  await stack.api(bobsPhone, 'POST', '/v1/messages', { to: ann.id, body: "From Bob's phone" });

  const all = ['Before the restart', 'Ann, while the server was down', 'Bob, while the server was down', "From Bob's phone"];
  for (const page of [ann.page, bob.page]) {
    // the app says when it tries next; a person in a hurry presses Retry now
    await connection(page).getByRole('button', { name: 'Retry now' }).click({ timeout: 2_000 }).catch(() => undefined);
    await expect(connection(page)).not.toContainText('Reconnecting', { timeout: 60_000 });
  }
  await expect(line(ann.page, "From Bob's phone")).toHaveCount(1);
  await expect(line(bob.page, 'Ann, while the server was down')).toHaveCount(1);
  await expect(line(ann.page, 'Bob, while the server was down')).toHaveCount(1);
  await expect(line(ann.page, 'Ann, while the server was down')).toContainText(/Sent|Seen/);
  for (const page of [ann.page, bob.page]) {
    for (const text of all.filter((t) => page === ann.page || t !== "From Bob's phone")) {
      await expect(line(page, text), text).toHaveCount(1);
    }
  }
  // and from the server's history, after a reload: each exactly once
  for (const page of [ann.page, bob.page]) {
    await page.reload();
    const bodies = messages(page).locator('li.line .body');
    await expect(bodies).toHaveCount(all.length);
    for (const text of all) await expect(line(page, text), text).toHaveCount(1);
  }
});

test("a block makes the blocked user's messages vanish for the blocker", async ({ people }) => {
  const ann = await people.signIn('ann');
  const bob = await people.signIn('bob');
  await openConversation(ann.page, bob.id);
  await openConversation(bob.page, ann.id);
  await send(bob.page, 'Before the block');
  await expect(line(ann.page, 'Before the block')).toHaveCount(1);

  await ann.page.getByRole('button', { name: 'Block', exact: true }).click();
  await expect(ann.page.getByText(`You blocked ${bob.id}`)).toBeVisible();
  await expect(line(ann.page, 'Before the block')).toHaveCount(0);

  await send(bob.page, 'After the block');
  await expect(line(bob.page, 'After the block')).toContainText('Sent');
  // a message Ann sends after it arrives is a marker that Bob's would have come first
  await send(ann.page, 'Ann writes after blocking');
  await expect(line(bob.page, 'Ann writes after blocking')).toHaveCount(1);
  await expect(line(ann.page, 'After the block')).toHaveCount(0);
  await ann.page.reload();
  await expect(line(ann.page, 'Ann writes after blocking')).toHaveCount(1);
  await expect(line(ann.page, 'After the block')).toHaveCount(0);
  await expect(line(ann.page, 'Before the block')).toHaveCount(0);
  await showConversations(ann.page);
  await expect(conversationItem(ann.page, bob.id)).toContainText('Blocked');
  await expect(conversationItem(ann.page, bob.id)).not.toContainText('unread');
  await conversationItem(ann.page, bob.id).click();

  // unblocking shows what came before the block again; what was sent during it never arrives
  await ann.page.getByRole('button', { name: 'Unblock', exact: true }).click();
  await expect(line(ann.page, 'Before the block')).toHaveCount(1);
  await expect(line(ann.page, 'After the block')).toHaveCount(0);
});

test('a tip with no balance shows the failure and the link to fix the payment method', async ({ people, stack }, testInfo) => {
  const ann = await people.signIn('ann');
  const cleo = await people.signIn('cleo', 'creator');
  await openConversation(ann.page, cleo.id);
  await openConversation(cleo.page, ann.id);
  await ann.page.getByText('Send a tip').click();
  await ann.page.getByLabel('Tip amount').fill('5');
  await ann.page.getByLabel('Tip message (optional)').fill('For the stream');
  await ann.page.getByRole('button', { name: 'Send tip' }).click();

  const tip = line(ann.page, 'For the stream');
  await expect(tip).toContainText('Tip');
  await expect(tip.getByRole('alert')).toContainText(/insufficient|declined|failed/i);
  await expect(tip.getByRole('link', { name: 'Fix your payment method' })).toHaveAttribute('href', stack.ready.billing_url);
  await docScreenshot(ann.page, 'tip-declined', testInfo);
  // nothing reached the creator
  await send(ann.page, 'Sorry, my card');
  await expect(line(cleo.page, 'Sorry, my card')).toHaveCount(1);
  await expect(line(cleo.page, 'For the stream')).toHaveCount(0);
});

test("a creator's list message reaches the list's members", async ({ people, stack }, testInfo) => {
  const cleo = await people.signIn('cleo', 'creator');
  const ann = await people.signIn('ann');
  const bob = await people.signIn('bob');
  const dan = await people.signIn('dan'); // not on the list
  const token = await stack.token(cleo.id, 'creator');
  const list = await stack.api<{ id: string }>(token, 'POST', '/v1/lists', { name: 'Fans' });
  await stack.api(token, 'POST', `/v1/lists/${list.id}/members`, { members: [ann.id, bob.id] });

  await cleo.page.getByRole('button', { name: 'Lists' }).click();
  await cleo.page.getByLabel('List', { exact: true }).selectOption(list.id);
  const box = cleo.page.getByRole('textbox', { name: 'Message to list' });
  await box.fill('New video is up, fans first!');
  await box.press('Enter');
  await expect(cleo.page.locator('li.mass').filter({ hasText: 'New video is up' })).toContainText('sent: 2 of 2 processed, 2 delivered');
  await docScreenshot(cleo.page, 'list-message', testInfo);

  for (const member of [ann, bob]) {
    const item = conversationItem(member.page, cleo.id);
    await expect(item).toContainText('1 unread');
    await item.click();
    await expect(line(member.page, 'New video is up, fans first!')).toHaveCount(1);
  }
  // Dan is not on the list; a message of his own is the marker that the list message is done
  await stack.api(token, 'POST', '/v1/messages', { to: dan.id, body: 'Hi Dan' });
  await expect(conversationItem(dan.page, cleo.id)).toContainText('Hi Dan');
  await conversationItem(dan.page, cleo.id).click();
  await expect(messages(dan.page).locator('li.line .body')).toHaveText(['Hi Dan']);
});
