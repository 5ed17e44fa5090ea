// The page's pictures for the docs, against a running stack (scripts/screenshot.sh
// starts one): the sign-in form, the forgot-password form, then the signed-in
// view of the demo user (who signs in with a second factor: one of its
// recovery codes), then its passkeys after adding one (Chromium's virtual
// authenticator; the second recovery code proves the factor).
// Usage: node scripts/screenshot.mjs BASE_URL USERNAME PASSWORD OUT_DIR [RECOVERY_CODE [SECOND_RECOVERY_CODE]]
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "@playwright/test";

const [baseUrl, username, password, out, recoveryCode, secondRecoveryCode] = process.argv.slice(2);
if (out === undefined) throw new Error("usage: screenshot.mjs BASE_URL USERNAME PASSWORD OUT_DIR");
const executablePath =
  process.env.CHROMIUM_PATH ?? ["/usr/lib/chromium/chromium", "/usr/bin/chromium"].find((p) => existsSync(p));
if (executablePath === undefined) throw new Error("Chromium is not installed: run scripts/tools.sh");

mkdirSync(out, { recursive: true });
const browser = await chromium.launch({ executablePath });
try {
  const page = await browser.newPage({ viewport: { width: 640, height: 480 }, colorScheme: "light" });
  await page.goto(baseUrl);
  await page.getByRole("button", { name: "Log in" }).waitFor();
  await page.getByRole("button", { name: "Forgot password?" }).click();
  await page.getByLabel("Username or email").fill(username);
  await page.screenshot({ path: join(out, "page-forgot-password.png") });
  await page.getByRole("button", { name: "Back to log in" }).click();
  await page.getByLabel("Username").fill(username);
  await page.screenshot({ path: join(out, "page-sign-in.png") });
  await page.getByLabel("Password", { exact: true }).fill(password);
  await page.getByRole("button", { name: "Log in" }).click();
  const secondStep = page.getByRole("heading", { name: "Second step" });
  const signedIn = page.getByRole("heading", { name: /^Hello, / });
  await secondStep.or(signedIn).waitFor();
  if (await secondStep.isVisible()) {
    if (recoveryCode === undefined) throw new Error("the user has a second factor: give a recovery code");
    await page.getByRole("button", { name: "Use a recovery code instead" }).click();
    await page.getByLabel("Recovery code").fill(recoveryCode);
    await page.getByRole("button", { name: "Continue" }).click();
  }
  await signedIn.waitFor();
  await page.screenshot({ path: join(out, "page-signed-in.png"), fullPage: true });
  // A passkey added, as a laptop's fingerprint reader would make it.
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("WebAuthn.enable", { enableUI: false });
  await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: { protocol: "ctap2", ctap2Version: "ctap2_1", transport: "internal", hasResidentKey: true, hasUserVerification: true, isUserVerified: true },
  });
  const passkeys = page.getByRole("region", { name: "Passkeys" });
  await passkeys.getByLabel("Name for the new passkey").fill("This laptop");
  await passkeys.getByLabel("Password (to add a passkey)").fill(password);
  if (secondRecoveryCode !== undefined) {
    await passkeys.getByRole("button", { name: "Use a recovery code instead" }).click();
    await passkeys.getByLabel("Recovery code").fill(secondRecoveryCode);
  }
  await passkeys.getByRole("button", { name: "Add a passkey" }).click();
  await passkeys.getByRole("listitem", { name: "Passkey This laptop" }).waitFor();
  await passkeys.screenshot({ path: join(out, "page-passkeys.png") });
  const names = ["page-sign-in.png", "page-forgot-password.png", "page-signed-in.png", "page-passkeys.png"];
  console.log(`screenshots: ${names.map((name) => join(out, name)).join(", ")}`);
} finally {
  await browser.close();
}
