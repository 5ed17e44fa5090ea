// The page's pictures for the docs, against a running stack (scripts/screenshot.sh
// starts one): the sign-in form, the forgot-password form, then the signed-in
// view of the demo user (who signs in with a second factor: one of its
// recovery codes).
// Usage: node scripts/screenshot.mjs BASE_URL USERNAME PASSWORD OUT_DIR [RECOVERY_CODE]
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "@playwright/test";

const [baseUrl, username, password, out, recoveryCode] = process.argv.slice(2);
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
  const names = ["page-sign-in.png", "page-forgot-password.png", "page-signed-in.png"];
  console.log(`screenshots: ${names.map((name) => join(out, name)).join(", ")}`);
} finally {
  await browser.close();
}
