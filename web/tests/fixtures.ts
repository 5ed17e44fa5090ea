// What every browser test shares: a person's actions on the page (inputs found
// by their label, buttons by their name), a fresh user each, and a watch on
// the console: a Content-Security-Policy or Trusted Types violation fails the
// test that caused it.

import { createHmac, randomBytes } from "node:crypto";
import { appendFileSync } from "node:fs";
import AxeBuilder from "@axe-core/playwright";
import { test as base, expect, type BrowserContext, type Page } from "@playwright/test";

export interface Person {
  username: string;
  password: string;
  name: string;
}

export const REFRESH_COOKIE = "__Host-refresh_token";

export function newPerson(): Person {
  const id = randomBytes(5).toString("hex");
  const person = { username: `ada-${id}`, password: `analytical engine ${id}`, name: `Ada ${id}` };
  noteSecret(person.password);
  return person;
}

/**
 * Notes a secret the tests used or received (a password, a cookie's token) in
 * TEST_SECRETS_FILE, which make test sets: its last stage checks that none
 * is in the watch's logs.
 */
export function noteSecret(secret: string): void {
  const file = process.env.TEST_SECRETS_FILE;
  if (file && secret.length >= 8) appendFileSync(file, `${secret}\n`);
}

/** A console line of a CSP or Trusted Types violation (ours, or Chromium's own). */
export function isViolation(text: string): boolean {
  return /^policy violation:|Content Security Policy|Trusted ?(Type|HTML|Script)/i.test(text);
}

/**
 * Every console message and uncaught error of every page of the test's
 * context, checked at its end. Each document reports its own policy
 * violations on the console (securitypolicyviolation covers both CSP and
 * Trusted Types), from a script the browser runs before the page's.
 */
export const test = base.extend<{ consoleMessages: string[] }>({
  consoleMessages: [
    async ({ context }, provide) => {
      const messages: string[] = [];
      await context.addInitScript(() => {
        document.addEventListener("securitypolicyviolation", (event) => {
          console.error(`policy violation: ${event.violatedDirective} ${event.blockedURI}`);
        });
      });
      const watch = (page: Page) => {
        page.on("console", (message) => messages.push(message.text()));
        page.on("pageerror", (error) => messages.push(`uncaught: ${error.message}`));
      };
      // Every token the API hands the page (access tokens in bodies, refresh
      // tokens and device proofs in cookies) is a secret.
      context.on("response", (response) => {
        for (const cookie of (response.headers()["set-cookie"] ?? "").split("\n")) {
          noteSecret(cookie.split(";")[0]?.split("=").slice(1).join("=") ?? "");
        }
        if (response.headers()["content-type"]?.startsWith("application/json")) {
          response
            .json()
            .then((body: Record<string, unknown>) => {
              for (const field of ["access_token", "refresh_token", "device", "mfa_token", "secret"]) {
                if (typeof body[field] === "string") noteSecret(body[field]);
              }
              const codes = body.recovery_codes;
              if (Array.isArray(codes)) {
                for (const code of codes) if (typeof code === "string") noteSecret(code);
              }
            })
            .catch(() => undefined);
        }
      });
      context.pages().forEach(watch);
      context.on("page", watch);
      await provide(messages);
      const problems = messages.filter((text) => isViolation(text) || text.startsWith("uncaught:"));
      expect(problems, "no policy violation or uncaught error in any page").toEqual([]);
    },
    { auto: true },
  ],
});
export { expect };

/** Registers `person` through the page at `url` (the watch's own, unless told). */
export async function register(page: Page, person: Person, url = "/"): Promise<void> {
  await page.goto(url);
  await page.getByRole("button", { name: "Create an account" }).click();
  await page.getByLabel("Username").fill(person.username);
  await page.getByLabel("Password", { exact: true }).fill(person.password);
  await page.getByLabel("Name", { exact: true }).fill(person.name);
  await page.getByRole("button", { name: "Register" }).click();
  await expectSignedIn(page, person);
}

export async function logIn(page: Page, person: Person, password = person.password): Promise<void> {
  await page.getByLabel("Username").fill(person.username);
  await page.getByLabel("Password", { exact: true }).fill(password);
  await page.getByRole("button", { name: "Log in" }).click();
}

export async function expectSignedIn(page: Page, person: Person): Promise<void> {
  await expect(page.getByRole("heading", { name: `Hello, ${person.name}` })).toBeVisible();
}

export async function expectSignedOut(page: Page): Promise<void> {
  await expect(page.getByRole("button", { name: "Log in" })).toBeVisible();
  await expect(page.getByRole("button", { name: "Log out" })).toHaveCount(0);
}

/** The refresh cookie as the browser holds it (only a test can read it). */
export async function refreshCookie(context: BrowserContext) {
  return (await context.cookies()).find((cookie) => cookie.name === REFRESH_COOKIE);
}

/** Counts the page's requests to a route of the API, by method and path. */
export function countRequests(page: Page, method: string, path: string): { count: number } {
  const counter = { count: 0 };
  page.on("request", (request) => {
    if (request.method() === method && new URL(request.url()).pathname === path) counter.count++;
  });
  return counter;
}

/** A message in moto's mailbox (the local SES that make test runs). */
export interface Mail {
  subject: string;
  /** What moto keeps of a message with both parts: its HTML. */
  body: string;
}

/** An address no other test mails: moto's mailbox is shared. */
export function newAddress(): string {
  return `ada-${randomBytes(6).toString("hex")}@example.com`;
}

/** The newest message to `to` with `subject`, waited for (the table's stream hands it on a moment later). */
export async function mailFor(to: string, subject: string): Promise<Mail> {
  const moto = process.env.KMS_TEST_ENDPOINT;
  if (moto === undefined) throw new Error("KMS_TEST_ENDPOINT is not set: run the browser tests through `make test`");
  for (let i = 0; i < 300; i++) {
    const data = (await (await fetch(`${moto}/moto-api/data.json`)).json()) as {
      ses?: { Message?: { subject: string; body: string; destinations: { ToAddresses?: string[] } }[] };
    };
    const found = (data.ses?.Message ?? [])
      .filter((m) => m.subject === subject && (m.destinations.ToAddresses ?? []).includes(to))
      .pop();
    if (found !== undefined) return { subject: found.subject, body: found.body };
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`no ${JSON.stringify(subject)} for the test's address within a minute`);
}

/** The link a message carries (its secret noted, for the logs' scan). */
export function linkIn(mail: Mail): string {
  const href = /href="([^"]+)"/.exec(mail.body)?.[1];
  if (href === undefined) throw new Error(`no link in ${mail.subject}`);
  noteSecret(href.split("=").pop() ?? "");
  return href.replace(/&amp;/g, "&");
}

/** The code a message carries, as a person copies it (with its space). */
export function codeIn(mail: Mail): string {
  const code = /<code>(\d{4} \d{4})<\/code>/.exec(mail.body)?.[1];
  if (code === undefined) throw new Error(`no code in ${mail.subject}`);
  return code;
}

/** No serious or critical finding of axe on the page as it is now (`view` names it). */
export async function axeClean(page: Page, view: string): Promise<void> {
  const results = await new AxeBuilder({ page }).analyze();
  const serious = results.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  expect(serious.map((v) => `${v.id}: ${v.help}`), view).toEqual([]);
}

export const STEP_SECONDS = 30;

/** RFC 6238's code of a base32 key at `at` (ms): what an authenticator app shows. */
export function totp(key: string, at = Date.now()): string {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = "";
  for (const c of key.replace(/=+$/, "")) bits += alphabet.indexOf(c).toString(2).padStart(5, "0");
  const bytes = Buffer.from(bits.match(/.{8}/g)?.map((b) => Number.parseInt(b, 2)) ?? []);
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(at / 1000 / STEP_SECONDS)));
  const mac = createHmac("sha1", bytes).update(counter).digest();
  const offset = (mac[mac.length - 1] ?? 0) & 0x0f;
  return String((mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000).padStart(6, "0");
}

/** The code of a step no code of this key was used in yet: waits for the next step after `spent` (ms). */
export async function freshCode(key: string, spent: number): Promise<{ code: string; at: number }> {
  const step = (ms: number) => Math.floor(ms / 1000 / STEP_SECONDS);
  while (step(Date.now()) <= step(spent)) await new Promise((resolve) => setTimeout(resolve, 500));
  const at = Date.now();
  return { code: totp(key, at), at };
}

/** Sets up the second factor from the signed-in page: its key and recovery codes, and when its code was used. */
export async function enrol(page: Page, password: string): Promise<{ key: string; recovery: string[]; spent: number }> {
  const section = page.getByRole("region", { name: "Second factor" });
  await section.getByLabel("Password (to change the second factor)").fill(password);
  await section.getByRole("button", { name: "Set up a second factor" }).click();
  await expect(section.getByRole("img", { name: "QR code for your authenticator app" })).toBeVisible();
  const key = (await section.locator("code.secret").textContent()) ?? "";
  expect(key).toMatch(/^[A-Z2-7]{32}$/);
  noteSecret(key);
  await axeClean(page, "setting up a second factor");
  const spent = Date.now();
  await section.getByLabel("Code from your authenticator app").fill(totp(key, spent));
  await section.getByRole("button", { name: "Turn on" }).click();
  const list = section.getByRole("list", { name: "Recovery codes" });
  await expect(list.getByRole("listitem")).toHaveCount(10);
  const recovery = (await list.getByRole("listitem").allTextContents()).map((c) => c.trim());
  recovery.forEach(noteSecret);
  await expect(section.getByRole("status")).toHaveText("Second factor on: every sign-in now asks for a code.");
  await section.getByRole("button", { name: "I have saved them" }).click();
  await expect(section.getByRole("button", { name: "Remove the second factor" })).toBeVisible();
  return { key, recovery, spent };
}
