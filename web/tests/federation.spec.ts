// Signing in with another identity provider, in a real browser: the page,
// the watch's federation function and the local provider (tools/idp, a
// certified oidc-provider) that `make test` runs. What a person does.

import { randomBytes } from "node:crypto";
import type { Browser, Page } from "@playwright/test";
import { expect, expectSignedIn, expectSignedOut, newPerson, register, test } from "./fixtures";

const PROVIDER = "Local IdP";

function newLogin(prefix: string): string {
  return `${prefix}-${randomBytes(4).toString("hex")}`;
}

/**
 * `begin` sends the browser to the provider; the person's part there is its
 * development login form (any login and password) and its consent, where it
 * asks for them (a provider that remembers the person sends the browser
 * straight back), until it sends the browser to our callback.
 */
async function throughProvider(page: Page, login: string, begin: () => Promise<void>): Promise<void> {
  const ours = new URL(page.url()).origin;
  // An object: the loop reads what the callback's request set meanwhile.
  const seen = { returned: false };
  const returned = () => seen.returned;
  const back = page
    .waitForRequest((r) => r.isNavigationRequest() && /^\/oidc\/[a-z0-9-]+\/callback$/.test(new URL(r.url()).pathname))
    .then(() => {
      seen.returned = true;
    });
  await begin();
  const loginBox = page.getByPlaceholder("Enter any login");
  const consent = page.getByRole("button", { name: "Continue" });
  for (let step = 0; step < 6 && !returned(); step++) {
    await Promise.race([back, loginBox.or(consent).waitFor().catch(() => undefined)]);
    if (returned()) break;
    const before = page.url();
    if (await loginBox.isVisible()) {
      await loginBox.fill(login);
      await page.getByPlaceholder("and password").fill("any password at all");
      await page.getByRole("button", { name: "Sign-in" }).click();
    } else if (await consent.isVisible()) {
      await consent.click();
    }
    await Promise.race([
      back,
      page.waitForURL((url) => url.href !== before, { waitUntil: "commit" }).catch(() => undefined),
    ]);
  }
  await back;
  // Back on the page itself (the callback's 303 leads there), loaded anew.
  await page.waitForURL((url) => !url.pathname.startsWith("/oidc/") && url.origin === ours);
  await page.waitForLoadState("load");
}

async function signInWithProvider(page: Page, login: string): Promise<void> {
  await throughProvider(page, login, () => page.getByRole("button", { name: `Sign in with ${PROVIDER}` }).click());
}

/** The page's list of the account's sessions. */
function sessions(page: Page) {
  return page.getByRole("region", { name: "Your sessions" }).getByRole("listitem");
}

async function newPage(browser: Browser): Promise<Page> {
  const context = await browser.newContext();
  return context.newPage();
}

test("a person signs up with the provider, signs out, and signs in again to the same account", async ({ page, browser }) => {
  const login = newLogin("Grace");
  await page.goto("/");
  await signInWithProvider(page, login);
  // The provider's name for the person; no password on this account.
  await expect(page.getByRole("heading", { name: `Hello, ${login}` })).toBeVisible();
  await expect(page.getByText("This account has no password: it signs in with a provider.")).toBeVisible();
  await expect(page.getByText(/Signed in with a provider on/)).toBeVisible();
  // Nothing of the round trip is left in the address bar.
  expect(new URL(page.url()).hash).toBe("");

  // Another browser signs in with the same identity: the same account (its
  // list holds the first browser's session too).
  const other = await newPage(browser);
  await other.goto("/");
  await signInWithProvider(other, login);
  await expect(other.getByRole("heading", { name: `Hello, ${login}` })).toBeVisible();
  await expect(sessions(other)).toHaveCount(2);

  // Signed out, then in again: the same account still.
  await other.getByRole("button", { name: "Log out", exact: true }).click();
  await expectSignedOut(other);
  await signInWithProvider(other, login);
  await expect(other.getByRole("heading", { name: `Hello, ${login}` })).toBeVisible();
  await expect(sessions(other)).toHaveCount(2);
  await other.context().close();
});

test("a password account connects the provider, signs in with it, then disconnects it", async ({ page }) => {
  const person = newPerson();
  const login = newLogin("Pat");
  await register(page, person);
  const methods = page.getByRole("region", { name: "Sign-in methods" });
  await expect(methods.getByText("This account has a password.")).toBeVisible();
  await methods.getByLabel("Password (to connect or disconnect a provider)").fill(person.password);
  await throughProvider(page, login, () => methods.getByRole("button", { name: `Connect ${PROVIDER}` }).click());
  await expectSignedIn(page, person);
  await expect(methods.getByText(`Connected: you can now sign in with ${PROVIDER}.`)).toBeVisible();
  await expect(methods.getByRole("listitem").filter({ hasText: PROVIDER })).toBeVisible();

  // The provider now signs in to this account.
  await page.getByRole("button", { name: "Log out", exact: true }).click();
  await expectSignedOut(page);
  await signInWithProvider(page, login);
  await expectSignedIn(page, person);

  // Disconnected (with the password): gone from the list.
  await methods.getByLabel("Password (to connect or disconnect a provider)").fill(person.password);
  await methods.getByRole("button", { name: `Disconnect ${PROVIDER}` }).click();
  await expect(methods.getByText(`Disconnected ${PROVIDER}.`)).toBeVisible();
  await expect(methods.getByRole("listitem")).toHaveCount(0);
  await expect(methods.getByRole("button", { name: `Connect ${PROVIDER}` })).toBeVisible();
});

test("a person who cancels at the provider lands back on the page, told so, and signed out", async ({ page }) => {
  await page.goto("/");
  const ours = new URL(page.url()).origin;
  await page.getByRole("button", { name: `Sign in with ${PROVIDER}` }).click();
  // "commit": the provider's page imports a web font, which never loads here.
  await page.waitForURL((url) => url.origin !== ours, { waitUntil: "commit" });
  await page.getByRole("link", { name: "[ Cancel ]" }).click();
  await page.waitForURL((url) => url.origin === ours);
  await expect(page.getByText("The sign-in was cancelled at the provider.")).toBeVisible();
  await expectSignedOut(page);
  expect(new URL(page.url()).hash).toBe("");
});
