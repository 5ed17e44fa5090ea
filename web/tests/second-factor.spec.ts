// The second factor on the page (issue 29), against the real stack: set it up
// by reading the key from the page (as a phone scans the QR code), sign out,
// sign in with a code computed here from that key, with a recovery code (not
// twice), delete an account that has one, remove it; axe on each new view.

import type { Page } from "@playwright/test";
import {
  STEP_SECONDS,
  axeClean,
  enrol,
  expect,
  expectSignedIn,
  expectSignedOut,
  freshCode,
  logIn,
  newPerson,
  register,
  test,
  totp,
} from "./fixtures";

async function secondStep(page: Page, proof: { code: string } | { recovery: string }): Promise<void> {
  await expect(page.getByRole("heading", { name: "Second step" })).toBeVisible();
  if ("code" in proof) {
    await page.getByLabel("Code from your authenticator app").fill(proof.code);
  } else {
    await page.getByRole("button", { name: "Use a recovery code instead" }).click();
    await page.getByLabel("Recovery code").fill(proof.recovery);
  }
  await page.getByRole("button", { name: "Continue" }).click();
}

test("a person sets up a second factor, signs in with a code and with a recovery code, and removes it", async ({
  page,
}) => {
  test.setTimeout(180_000);
  const person = newPerson();
  await register(page, person);
  const { key, recovery, spent } = await enrol(page, person.password);

  // Signed out, the password alone no longer signs in: it asks for a code.
  await page.getByRole("button", { name: "Log out", exact: true }).click();
  await expectSignedOut(page);
  await logIn(page, person);
  await axeClean(page, "the second step");
  await secondStep(page, { recovery: recovery[0] ?? "" });
  await expectSignedIn(page, person);

  // A recovery code signs in once.
  await page.getByRole("button", { name: "Log out", exact: true }).click();
  await logIn(page, person);
  await secondStep(page, { recovery: recovery[0] ?? "" });
  await expect(page.getByRole("alert").first()).toContainText(/code/i);
  await expect(page.getByRole("button", { name: "Log out", exact: true })).toHaveCount(0);
  // A wrong code: refused; then the app's code of the moment signs in.
  await page.getByRole("button", { name: "Use a code from the app" }).click();
  await page.getByLabel("Code from your authenticator app").fill(totp(key, spent + 10 * STEP_SECONDS * 1000));
  await page.getByRole("button", { name: "Continue" }).click();
  await expect(page.getByRole("alert").first()).toContainText(/code/i);
  const fresh = await freshCode(key, spent);
  await page.getByLabel("Code from your authenticator app").fill(fresh.code);
  await page.getByRole("button", { name: "Continue" }).click();
  await expectSignedIn(page, person);

  // Removing it takes the password and a proof of the factor.
  const section = page.getByRole("region", { name: "Second factor" });
  await axeClean(page, "signed in with a second factor");
  await section.getByLabel("Password (to change the second factor)").fill(person.password);
  await section.getByRole("button", { name: "Use a recovery code instead" }).click();
  await section.getByLabel("Recovery code").fill(recovery[1] ?? "");
  await section.getByRole("button", { name: "Remove the second factor" }).click();
  await expect(section.getByRole("status")).toHaveText("Second factor removed: the password alone signs in again.");
  await expect(section.getByRole("button", { name: "Set up a second factor" })).toBeVisible();
  await page.getByRole("button", { name: "Log out", exact: true }).click();
  await logIn(page, person);
  await expectSignedIn(page, person);
});

test("deleting an account with a second factor asks for a code, and a provider's second step leaves no token in the address", async ({
  page,
}) => {
  test.setTimeout(120_000);
  const person = newPerson();
  await register(page, person);
  const { recovery } = await enrol(page, person.password);
  await page.getByRole("button", { name: "Delete account…" }).click();
  const form = page.getByRole("form", { name: "Delete account" });
  await form.getByLabel("Password", { exact: true }).fill(person.password);
  // The code is asked for (the form is not sent without one); a wrong
  // one is refused, and the account stays.
  const code = form.getByLabel("Code from your authenticator app");
  expect(await code.evaluate((input: HTMLInputElement) => input.required)).toBe(true);
  await code.fill("000000");
  await form.getByRole("button", { name: "Delete my account" }).click();
  await expect(form.getByRole("alert")).not.toHaveText("");
  await expectSignedIn(page, person);
  await form.getByRole("button", { name: "Use a recovery code instead" }).click();
  await form.getByLabel("Recovery code").fill(recovery[0] ?? "");
  await form.getByRole("button", { name: "Delete my account" }).click();
  await expectSignedOut(page);
  await expect(page.getByText("Your account has been deleted.")).toBeVisible();

  // The page a provider's sign-in comes back to, for an account with a
  // second factor: the step's token is taken out of the address at once.
  const token = "A".repeat(43);
  await page.goto("about:blank");
  await page.goto(`/#mfa_required=${token}`);
  await expect(page.getByRole("heading", { name: "Second step" })).toBeVisible();
  expect(new URL(page.url()).hash).toBe("");
  await page.getByLabel("Code from your authenticator app").fill("123456");
  await page.getByRole("button", { name: "Continue" }).click();
  await expect(page.getByRole("alert").first()).not.toHaveText("");
  // A token of another shape: out of the address all the same.
  await page.goto("about:blank");
  await page.goto("/#mfa_required=short");
  await expect(page.getByRole("button", { name: "Log in" })).toBeVisible();
  expect(new URL(page.url()).hash).toBe("");
});
