// Passkeys on the page (issue 30), against the real stack, with Chromium's
// virtual authenticator (a CDP session: Playwright has no WebAuthn API of
// its own): add one, sign out, sign in through the username field's
// autofill (conditional mediation) and through the button, step up with it
// to remove it, delete an account with one, answer a password's second
// step with one, and remove one with the password and a code when the device
// that holds it is lost. The page is opened on http://localhost, the passkeys' site
// (WebAuthn needs a host name, not an address), which the test watch names
// as its relying party.

import type { CDPSession, Page } from "@playwright/test";
import {
  axeClean,
  countRequests,
  enrol,
  expect,
  expectSignedIn,
  expectSignedOut,
  logIn,
  newPerson,
  register,
  test,
  type Person,
} from "./fixtures";

/** The watch's page on the passkeys' site: localhost, not 127.0.0.1. */
function onSite(path: string): string {
  const url = new URL(path, process.env.WATCH_URL);
  url.hostname = "localhost";
  return url.href;
}

interface Authenticator {
  cdp: CDPSession;
  id: string;
}

/** A platform authenticator that keeps passkeys and verifies its user (a laptop's fingerprint reader). */
async function addAuthenticator(page: Page): Promise<Authenticator> {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("WebAuthn.enable", { enableUI: false });
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2",
      ctap2Version: "ctap2_1",
      transport: "internal",
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  return { cdp, id: authenticatorId };
}

async function credentials(authenticator: Authenticator) {
  const { credentials } = await authenticator.cdp.send("WebAuthn.getCredentials", {
    authenticatorId: authenticator.id,
  });
  return credentials;
}

async function registerOnSite(page: Page, person: Person): Promise<void> {
  await register(page, person, onSite("/"));
}

/**
 * A person registered on the site with a code factor, then a passkey named
 * `name`, the first added with the password and a recovery code. The
 * username field's autofill is off: no passkey signs in unasked.
 */
async function codeFactorAndPasskey(
  page: Page,
  person: Person,
  name: string,
): Promise<{ authenticator: Authenticator; recovery: string[] }> {
  await page.addInitScript(() => {
    PublicKeyCredential.isConditionalMediationAvailable = () => Promise.resolve(false);
  });
  const authenticator = await addAuthenticator(page);
  await registerOnSite(page, person);
  const { recovery } = await enrol(page, person.password);
  const section = page.getByRole("region", { name: "Passkeys" });
  await section.getByLabel("Name for the new passkey").fill(name);
  await section.getByLabel("Password (to add a passkey)").fill(person.password);
  await section.getByRole("button", { name: "Use a recovery code instead" }).click();
  await section.getByLabel("Recovery code").fill(recovery[0] ?? "");
  await section.getByRole("button", { name: "Add a passkey" }).click();
  await expect(section.getByRole("status")).toHaveText(`Passkey “${name}” added: use it at your next sign-in.`);
  return { authenticator, recovery };
}

async function addPasskey(page: Page, name: string, password: string | null): Promise<void> {
  const section = page.getByRole("region", { name: "Passkeys" });
  await section.getByLabel("Name for the new passkey").fill(name);
  if (password !== null) await section.getByLabel("Password (to add a passkey)").fill(password);
  await section.getByRole("button", { name: "Add a passkey" }).click();
  await expect(section.getByRole("status")).toHaveText(`Passkey “${name}” added: use it at your next sign-in.`);
}

test("a person adds a passkey, signs in with it from the autofill and the button, steps up with it, and removes it", async ({
  page,
}) => {
  test.setTimeout(120_000);
  const person = newPerson();
  const authenticator = await addAuthenticator(page);
  await registerOnSite(page, person);

  // Added with the password (the account had no passkey): the browser made
  // a discoverable credential, verified its user, for this site.
  await addPasskey(page, "Work laptop", person.password);
  const section = page.getByRole("region", { name: "Passkeys" });
  const item = section.getByRole("listitem", { name: "Passkey Work laptop" });
  await expect(item).toContainText("On one device only");
  await expect(item).toContainText("Not used yet.");
  const [made] = await credentials(authenticator);
  expect(made?.isResidentCredential).toBe(true);
  expect(made?.rpId).toBe("localhost");
  await axeClean(page, "signed in, with a passkey");

  // Renamed.
  await item.getByRole("button", { name: "Rename Work laptop" }).click();
  await page.getByRole("form", { name: "Rename “Work laptop”" }).getByLabel("New name").fill("Laptop");
  await page.getByRole("button", { name: "Save the name" }).click();
  await expect(section.getByRole("listitem", { name: "Passkey Laptop" })).toBeVisible();

  // Signed out, the username field's autofill offers the passkey; the
  // authenticator answers it (its user present and verified): signed in,
  // nothing typed.
  const signCount = made?.signCount ?? 0;
  await page.getByRole("button", { name: "Log out", exact: true }).click();
  // (Signed in again: a new session, one a passkey began.)
  const sessions = page.getByRole("region", { name: "Your sessions" });
  await expect(sessions.getByRole("listitem", { name: "This session" })).toContainText("Signed in with a passkey");
  await expectSignedIn(page, person);
  const [used] = await credentials(authenticator);
  expect(used?.signCount).toBeGreaterThan(signCount);
  await expect(section.getByRole("listitem", { name: "Passkey Laptop" })).toContainText("Last used");

  // A browser without the autofill: the button opens its own chooser.
  await page.addInitScript(() => {
    PublicKeyCredential.isConditionalMediationAvailable = () => Promise.resolve(false);
  });
  await page.reload();
  await expectSignedIn(page, person);
  await page.getByRole("button", { name: "Log out", exact: true }).click();
  await expect(page.getByRole("button", { name: "Log in" })).toBeVisible();
  await axeClean(page, "signed out, passkeys offered");
  // The username field asks the browser for this site's passkeys too.
  expect(await page.getByLabel("Username").getAttribute("autocomplete")).toBe("username webauthn");
  await page.getByRole("button", { name: "Sign in with a passkey" }).click();
  await expectSignedIn(page, person);

  // Removing it: the page proves a passkey first (a fresh proof and the
  // second factor at once), then removes it; it signs in no more.
  const verified = countRequests(page, "POST", "/account/passkeys/verify");
  await section.getByRole("button", { name: "Remove Laptop" }).click();
  await expect(section.getByRole("status")).toHaveText("Passkey “Laptop” removed: it signs in no more.");
  expect(verified.count).toBe(1);
  await expect(section.getByText("No passkeys yet.")).toBeVisible();
  await page.getByRole("button", { name: "Log out", exact: true }).click();
  await page.getByRole("button", { name: "Sign in with a passkey" }).click();
  await expect(page.getByRole("alert").first()).toHaveText(
    "the passkey was not accepted; try again, or sign in another way",
  );
  await expect(page.getByRole("button", { name: "Log in" })).toBeVisible();
});

test("deleting an account with a passkey asks for the passkey, and the passkey then signs in no more", async ({ page }) => {
  test.setTimeout(120_000);
  const person = newPerson();
  const authenticator = await addAuthenticator(page);
  await registerOnSite(page, person);
  await addPasskey(page, "Phone", person.password);
  // A second one needs the first one's proof (the account has a second factor now).
  const verified = countRequests(page, "POST", "/account/passkeys/verify");
  const section = page.getByRole("region", { name: "Passkeys" });
  await expect(section.getByText("You will confirm with one of your passkeys first.")).toBeVisible();
  await page.getByRole("button", { name: "Delete account…" }).click();
  const form = page.getByRole("form", { name: "Delete account" });
  await expect(form.getByText("You will confirm with one of your passkeys.")).toBeVisible();
  await form.getByLabel("Password", { exact: true }).fill(person.password);
  await form.getByRole("button", { name: "Delete my account" }).click();
  await expectSignedOut(page);
  expect(verified.count).toBe(1);
  // The authenticator still holds it; the autofill offers it, and the API refuses it.
  expect(await credentials(authenticator)).toHaveLength(1);
  await page.reload();
  await expect(page.getByRole("alert").first()).toHaveText(
    "the passkey was not accepted; try again, or sign in another way",
  );
  await expectSignedOut(page);
});

test("where passkeys cannot work (an IP address, not the site), the autofill asks once and stops", async ({ page }) => {
  const asked = countRequests(page, "POST", "/login/passkey/options");
  await addAuthenticator(page);
  // The watch's own address: 127.0.0.1, not the relying party's localhost.
  await page.goto("/");
  await expect(page.getByRole("button", { name: "Log in" })).toBeVisible();
  await expect.poll(() => asked.count).toBe(1);
  // Long enough for several of the page's retries, were it retrying.
  await page.waitForTimeout(7_000);
  expect(asked.count).toBe(1);
  // And says nothing of it: the form is as it would be without passkeys.
  for (const text of await page.locator('[role="alert"]').allTextContents()) expect(text).toBe("");
});

test("with a code factor and a passkey, the passkey answers the password's second step, and a code removes it when the device is lost", async ({ page }) => {
  test.setTimeout(120_000);
  const person = newPerson();
  const { authenticator, recovery } = await codeFactorAndPasskey(page, person, "Laptop");
  const section = page.getByRole("region", { name: "Passkeys" });

  await page.getByRole("button", { name: "Log out", exact: true }).click();
  await logIn(page, person);
  await expect(page.getByRole("heading", { name: "Second step" })).toBeVisible();
  await axeClean(page, "the second step, a passkey offered");
  await page.getByRole("button", { name: "Use a passkey instead" }).click();
  await expectSignedIn(page, person);
  const sessions = page.getByRole("region", { name: "Your sessions" });
  await expect(sessions.getByRole("listitem", { name: "This session" })).toContainText("Signed in with the password");

  // The laptop is lost: no authenticator answers. The passkey goes with the
  // password and a code, and no passkey is asked for.
  await authenticator.cdp.send("WebAuthn.removeVirtualAuthenticator", { authenticatorId: authenticator.id });
  const passkeyProofs = countRequests(page, "POST", "/account/passkeys/verify/options");
  const reauthentications = countRequests(page, "POST", "/reauthenticate");
  const codes = countRequests(page, "POST", "/account/second-factor/verify");
  await section.getByRole("button", { name: "Confirm with your password and a code instead" }).click();
  const group = section.getByRole("group", { name: "Confirm with your password and a code" });
  await group.getByLabel("Password (to add or remove a passkey)").fill(person.password);
  await group.getByRole("button", { name: "Use a recovery code instead" }).click();
  await group.getByLabel("Recovery code").fill(recovery[1] ?? "");
  await axeClean(page, "passkeys, confirmed with a code");
  await section.getByRole("button", { name: "Remove Laptop" }).click();
  await expect(section.getByRole("status")).toHaveText("Passkey “Laptop” removed: it signs in no more.");
  await expect(section.getByText("No passkeys yet.")).toBeVisible();
  expect([passkeyProofs.count, reauthentications.count, codes.count]).toEqual([0, 1, 1]);
});

test("with a code factor, an account whose passkeys' device is lost is deleted with the password and a code", async ({
  page,
}) => {
  test.setTimeout(120_000);
  const person = newPerson();
  const { authenticator, recovery } = await codeFactorAndPasskey(page, person, "Phone");
  await authenticator.cdp.send("WebAuthn.removeVirtualAuthenticator", { authenticatorId: authenticator.id });
  const passkeyProofs = countRequests(page, "POST", "/account/passkeys/verify/options");
  await page.getByRole("button", { name: "Delete account…" }).click();
  const form = page.getByRole("form", { name: "Delete account" });
  await form.getByRole("button", { name: "Confirm with a code instead" }).click();
  await form.getByLabel("Password", { exact: true }).fill(person.password);
  await form.getByRole("button", { name: "Use a recovery code instead" }).click();
  await form.getByLabel("Recovery code").fill(recovery[1] ?? "");
  await form.getByRole("button", { name: "Delete my account" }).click();
  await expectSignedOut(page);
  expect(passkeyProofs.count).toBe(0);
});
