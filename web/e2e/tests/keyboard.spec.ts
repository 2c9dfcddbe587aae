/**
 * The app with the keyboard alone, and the names a screen reader reads: every control has one.
 */
import { expect, line, messageBox, test, type Person } from './fixtures.js';
import type { Page } from '@playwright/test';

/** Presses Tab until `target` has the focus (at most `max` times); fails if it never does. */
async function tabTo(page: Page, target: ReturnType<Page['getByRole']>, max = 15): Promise<void> {
  for (let i = 0; i < max; i++) {
    if (await target.evaluate((el) => el === document.activeElement)) return;
    await page.keyboard.press('Tab');
  }
  await expect(target).toBeFocused();
}

/** Every button, link and form field on the page has an accessible name (not just a look). */
async function unnamedControls(person: Person): Promise<string[]> {
  const page = person.page;
  const unnamed: string[] = [];
  for (const role of ['button', 'link', 'textbox', 'combobox', 'checkbox'] as const) {
    for (const control of await page.getByRole(role).all()) {
      const name = await control.evaluate((el) => {
        const labelled = (el as HTMLInputElement).labels?.[0]?.textContent ?? '';
        return (el.getAttribute('aria-label') ?? labelled ?? '').trim() || (el.textContent ?? '').trim() || (el.getAttribute('title') ?? '').trim();
      });
      if (!name) unnamed.push(`${role}: ${await control.evaluate((el) => el.outerHTML.slice(0, 120))}`);
    }
  }
  return unnamed;
}

test('signing in, opening a conversation and sending, with the keyboard alone', async ({ people }) => {
  const bob = await people.signIn('bob');
  const ann = await people.visit('ann');
  const page = ann.page;
  // the sign-in form has the focus on its user id
  await expect(page.getByLabel('User id')).toBeFocused();
  await page.keyboard.type(ann.id);
  await page.keyboard.press('Enter');
  await expect(page.getByText(`Signed in as ${ann.id}`)).toBeVisible();

  await tabTo(page, page.getByRole('textbox', { name: 'Start a conversation with' }));
  await page.keyboard.type(bob.id);
  await page.keyboard.press('Enter');
  await expect(page.getByRole('heading', { name: bob.id, exact: true })).toBeVisible();
  // the message box has the focus once the conversation is open
  await expect(messageBox(page)).toBeFocused();
  await page.keyboard.type('Typed, never clicked');
  await page.keyboard.press('Enter');
  await expect(line(page, 'Typed, never clicked')).toContainText(/Sent|Seen/);

  // Bob answers; Ann opens the tip form and backs out, all from the keyboard
  await bob.page.goto(`${new URL(bob.page.url()).origin}/c/${ann.id}`);
  await expect(line(bob.page, 'Typed, never clicked')).toHaveCount(1);
  await tabTo(page, page.getByText('Send a tip'));
  await page.keyboard.press('Enter');
  await expect(page.getByLabel('Tip amount')).toBeVisible();

  for (const person of [ann, bob]) expect(await unnamedControls(person), `${person.id}'s page`).toEqual([]);
});
