// The sign-in page in a real browser against the real stack (the watch that
// `make test` runs): what a person does, and what must hold meanwhile.

import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import AxeBuilder from "@axe-core/playwright";
import type { Route } from "@playwright/test";
import {
  countRequests,
  expect,
  expectSignedIn,
  expectSignedOut,
  logIn,
  newPerson,
  refreshCookie,
  register,
  test,
} from "./fixtures";

test("a person registers, sees their name, reloads and is still signed in, and no script can read a token", async ({
  page,
  context,
}) => {
  const person = newPerson();
  await register(page, person);

  const cookie = await refreshCookie(context);
  expect(cookie, "the refresh cookie is set").toBeDefined();
  expect(cookie).toMatchObject({ httpOnly: true, secure: true, sameSite: "Strict", path: "/" });
  // __Host-: no Domain attribute, so the cookie is the host's alone.
  expect(cookie?.domain).toBe(new URL(page.url()).hostname);
  const days = ((cookie?.expires ?? 0) * 1000 - Date.now()) / 86_400_000;
  expect(days, "Max-Age from the refresh token's expiry (30 days)").toBeGreaterThan(29);
  expect(days).toBeLessThanOrEqual(30);

  const reachable = await page.evaluate(() => ({
    cookie: document.cookie,
    local: Object.entries(localStorage),
    session: Object.entries(sessionStorage),
    url: location.href,
  }));
  expect(reachable.cookie, "document.cookie").toBe("");
  expect(reachable.local, "localStorage").toEqual([]);
  expect(reachable.session, "sessionStorage").toEqual([]);
  expect(reachable.url).toBe(new URL("/", page.url()).href);

  const refreshes = countRequests(page, "POST", "/refresh");
  await page.reload();
  await expectSignedIn(page, person);
  expect(refreshes.count, "the session came back through the cookie").toBe(1);
  const rotated = await refreshCookie(context);
  expect(rotated?.value, "each refresh rotates the cookie").not.toBe(cookie?.value);
});

test("the page is served with a strict policy; only its content-hashed assets are cached", async ({ page }) => {
  const assets: { url: string; cache: string | undefined; nosniff: string | undefined }[] = [];
  page.on("response", (response) => {
    if (new URL(response.url()).pathname.startsWith("/assets/")) {
      const headers = response.headers();
      assets.push({ url: response.url(), cache: headers["cache-control"], nosniff: headers["x-content-type-options"] });
    }
  });
  const document = await page.goto("/");
  await expectSignedOut(page);
  const headers = document?.headers() ?? {};
  expect(headers["content-type"]).toBe("text/html; charset=utf-8");
  expect(headers["cache-control"]).toBe("no-store");
  expect(headers["x-content-type-options"]).toBe("nosniff");
  expect(headers["referrer-policy"]).toBe("no-referrer");
  const csp = headers["content-security-policy"] ?? "";
  for (const directive of ["default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"]) {
    expect(csp).toContain(directive);
  }
  expect(csp).not.toContain("unsafe");
  const html = (await document?.text()) ?? "";
  expect(html, "no inline script").not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);

  // The script, the stylesheet and the icon: hashed names, cached for a year.
  expect(assets.length).toBeGreaterThanOrEqual(3);
  for (const asset of assets) {
    expect(asset.url).toMatch(/\/assets\/[\w.-]+-[\w-]{8}\.\w+$/);
    expect(asset.cache).toBe("public, max-age=31536000, immutable");
    expect(asset.nosniff).toBe("nosniff");
  }
});

test("two tabs refreshing at once both stay signed in", async ({ page, context }) => {
  const person = newPerson();
  await register(page, person);
  const other = await context.newPage();
  await other.goto("/");
  await expectSignedIn(other, person);

  const statuses: number[] = [];
  context.on("response", (response) => {
    if (new URL(response.url()).pathname === "/refresh") statuses.push(response.status());
  });
  await Promise.all([page.reload(), other.reload()]);
  await expectSignedIn(page, person);
  await expectSignedIn(other, person);
  // One refresh at a time across tabs (Web Locks): each sends the cookie the
  // previous one set, so neither loses.
  expect(statuses).toEqual([200, 200]);
});

test("two tabs that refresh with the same cookie both stay signed in", async ({ page, context }) => {
  // Without Web Locks (an older browser), two tabs can send the same cookie
  // at once. Here both refreshes are held until both are on their way: one
  // rotates the token, the other gets refresh_token_superseded (or, when
  // neither won, conflict), and the auth module retries once, with the
  // cookie the winner set.
  await context.addInitScript(() => {
    Object.defineProperty(Navigator.prototype, "locks", { get: () => undefined });
  });
  const person = newPerson();
  await register(page, person);
  const other = await context.newPage();
  await other.goto("/");
  await expectSignedIn(other, person);

  let held = 0;
  let release!: () => void;
  const bothSent = new Promise<void>((resolve) => (release = resolve));
  const hold = async (route: Route) => {
    if (held < 2) {
      if (++held === 2) release();
      await bothSent;
    }
    await route.continue();
  };
  await page.route("**/refresh", hold);
  await other.route("**/refresh", hold);
  const answers: string[] = [];
  context.on("response", async (response) => {
    if (new URL(response.url()).pathname !== "/refresh") return;
    const body = (await response.json()) as { error?: string };
    answers.push(`${response.status()} ${body.error ?? "ok"}`);
  });

  await Promise.all([page.reload(), other.reload()]);
  await expectSignedIn(page, person);
  await expectSignedIn(other, person);
  expect(answers).toHaveLength(3);
  expect(answers.filter((a) => a === "200 ok")).toHaveLength(2);
  expect(answers.find((a) => a !== "200 ok")).toMatch(/^(401 refresh_token_superseded|409 conflict)$/);
});

test("logging out in one tab signs out every tab; logging out everywhere ends other browsers' sessions", async ({
  page,
  context,
  browser,
}) => {
  const person = newPerson();
  await register(page, person);
  const other = await context.newPage();
  await other.goto("/");
  await expectSignedIn(other, person);

  await page.getByRole("button", { name: "Log out", exact: true }).click();
  await expectSignedOut(page);
  await expectSignedOut(other);
  await expect(other.getByText("You logged out in another tab.")).toBeVisible();
  expect(await refreshCookie(context), "logout clears the cookie").toBeUndefined();

  // Two browsers (two cookie jars), one person: "everywhere" ends both.
  await logIn(page, person);
  await expectSignedIn(page, person);
  const laptop = await browser.newContext();
  const elsewhere = await laptop.newPage();
  await elsewhere.goto("/");
  await logIn(elsewhere, person);
  await expectSignedIn(elsewhere, person);

  await page.getByRole("button", { name: "Log out everywhere" }).click();
  await expectSignedOut(page);
  await elsewhere.reload();
  await expectSignedOut(elsewhere);
  expect(await refreshCookie(laptop), "the dead session's cookie is cleared").toBeUndefined();
  await laptop.close();
});

test("changing the password keeps this tab signed in; the old password stops working", async ({ page, context }) => {
  const person = newPerson();
  await register(page, person);
  const before = await refreshCookie(context);

  // A wrong current password is the API's answer, shown as is, and never
  // sets off a refresh and a retry.
  const refreshes = countRequests(page, "POST", "/refresh");
  const attempts = countRequests(page, "POST", "/password");
  await page.getByLabel("Current password").fill("not my password at all");
  await page.getByLabel("New password").fill(`${person.password} v2`);
  await page.getByRole("button", { name: "Change password" }).click();
  await expect(page.getByRole("alert").filter({ hasText: "Login Failed" })).toBeVisible();
  expect(refreshes.count).toBe(0);
  expect(attempts.count).toBe(1);

  await page.getByLabel("Current password").fill(person.password);
  await page.getByRole("button", { name: "Change password" }).click();
  await expect(page.getByRole("status").filter({ hasText: "Password changed" })).toBeVisible();
  const after = await refreshCookie(context);
  expect(after?.value, "a new session, in a new cookie").not.toBe(before?.value);
  await page.reload();
  await expectSignedIn(page, person);

  await page.getByRole("button", { name: "Log out", exact: true }).click();
  await logIn(page, person);
  await expect(page.getByRole("alert").filter({ hasText: "Login Failed" })).toBeVisible();
  await logIn(page, person, `${person.password} v2`);
  await expectSignedIn(page, person);
});

test("a lockout shows the API's message and the wait from Retry-After", async ({ page }) => {
  const person = newPerson();
  await register(page, person);
  await page.getByRole("button", { name: "Log out", exact: true }).click();
  // Five wrong guesses, then the lock (1 s, then doubling): keep guessing
  // until the API says so, however slow this machine is.
  const alert = page.getByRole("alert").filter({ hasText: /\S/ });
  let answer = "";
  for (let attempt = 1; attempt <= 12 && !answer.startsWith("too many"); attempt++) {
    await logIn(page, person, `wrong guess ${attempt}`);
    answer = (await alert.textContent()) ?? "";
    if (attempt <= 5) expect(answer).toBe("Login Failed");
  }
  expect(answer).toMatch(/^too many attempts; try again later \(wait \d+ (s|min)\)$/);
  await expectSignedOut(page);
});

test("an API call refused for its access token is retried once after a refresh", async ({ page }) => {
  const person = newPerson();
  await register(page, person);
  // The first /get_name after the reload answers as the API does for an
  // expired token; the page must refresh and ask again, once.
  let refused = false;
  await page.route("**/get_name", async (route) => {
    if (refused) return route.continue();
    refused = true;
    await route.fulfill({
      status: 401,
      contentType: "application/json",
      headers: { "www-authenticate": 'Bearer realm="auth", error="invalid_token"' },
      body: JSON.stringify({ error: "invalid_token", message: "the access token has expired" }),
    });
  });
  const names = countRequests(page, "GET", "/get_name");
  const refreshes = countRequests(page, "POST", "/refresh");
  await page.reload();
  await expectSignedIn(page, person);
  expect(names.count).toBe(2);
  expect(refreshes.count, "one at load, one after the refusal").toBe(2);
});

test("the access token is refreshed ahead of its expiry", async ({ page }) => {
  await page.clock.install();
  const person = newPerson();
  await register(page, person);
  const refreshed = page.waitForResponse((r) => new URL(r.url()).pathname === "/refresh");
  // Access tokens live 15 minutes; the page refreshes a minute before.
  await page.clock.fastForward("14:05");
  expect((await refreshed).status()).toBe(200);
  await page.clock.fastForward("14:05");
  await page.getByRole("button", { name: "Log out", exact: true }).click();
  await expectSignedOut(page);
});

test("works from the keyboard alone", async ({ page, request }) => {
  const person = newPerson();
  const created = await request.post("/register", { data: person });
  expect(created.status()).toBe(201);
  await page.goto("/");
  await expectSignedOut(page);
  await page.keyboard.press("Tab");
  await expect(page.getByLabel("Username")).toBeFocused();
  await page.keyboard.type(person.username);
  await page.keyboard.press("Tab");
  await expect(page.getByLabel("Password")).toBeFocused();
  await page.keyboard.type(person.password);
  await page.keyboard.press("Enter");
  await expectSignedIn(page, person);

  const logOut = page.getByRole("button", { name: "Log out", exact: true });
  for (let presses = 0; presses < 10 && !(await logOut.evaluate((el) => el === document.activeElement)); presses++) {
    await page.keyboard.press("Tab");
  }
  await expect(logOut).toBeFocused();
  await page.keyboard.press("Enter");
  await expectSignedOut(page);
});

test("axe finds no serious or critical violation on any view", async ({ page }) => {
  const check = async (view: string) => {
    const results = await new AxeBuilder({ page }).analyze();
    const serious = results.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
    expect(serious.map((v) => `${v.id}: ${v.help}`), view).toEqual([]);
  };
  await page.goto("/");
  await expectSignedOut(page);
  await check("log in");
  await page.getByRole("button", { name: "Create an account" }).click();
  await check("register");
  const person = newPerson();
  await page.getByLabel("Username").fill(person.username);
  await page.getByLabel("Password", { exact: true }).fill(person.password);
  await page.getByLabel("Name", { exact: true }).fill(person.name);
  await page.getByRole("button", { name: "Register" }).click();
  await expectSignedIn(page, person);
  await check("signed in");
});

test("a page on another origin of the same site cannot log in, refresh or log out with the cookie", async ({
  page,
  context,
}) => {
  const person = newPerson();
  await register(page, person);
  const cookie = await refreshCookie(context);

  // Another port of the same host: same site, so SameSite=Strict lets the
  // cookie go. What stops it is the API: JSON only (a preflight it does not
  // grant) and its Origin check.
  const server: Server = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "text/html" }).end("<!doctype html><title>elsewhere</title>");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    const { port } = server.address() as AddressInfo;
    const attacker = await context.newPage();
    const answers: string[] = [];
    attacker.on("response", (response) => {
      const url = new URL(response.url());
      if (url.port !== String(port)) answers.push(`${url.pathname} ${response.status()}`);
    });
    await attacker.goto(`http://127.0.0.1:${port}/`);
    const api = new URL("/", page.url()).origin;
    const outcomes = await attacker.evaluate(
      async ({ api, login }) => {
        const outcomes: string[] = [];
        const attempts: [string, string][] = [
          ["/refresh", "{}"],
          ["/logout", "{}"],
          ["/login", login],
        ];
        for (const [path, body] of attempts) {
          try {
            const response = await fetch(api + path, {
              method: "POST",
              credentials: "include",
              headers: { "Content-Type": "application/json" },
              body,
            });
            outcomes.push(`${path} read ${response.status}`);
          } catch {
            outcomes.push(`${path} blocked`);
          }
          // Simple requests: no preflight, the cookie goes, the answer is opaque.
          const simple: RequestInit[] = [
            { headers: { "Content-Type": "text/plain" }, body },
            { body: new Blob([body]) },
            { headers: { "Content-Type": "application/x-www-form-urlencoded" }, body },
          ];
          for (const init of simple) {
            await fetch(api + path, { method: "POST", mode: "no-cors", credentials: "include", ...init });
          }
        }
        return outcomes;
      },
      {
        api,
        login: JSON.stringify({
          username: person.username,
          password: person.password,
          refresh_token_delivery: "cookie",
        }),
      },
    );
    expect(outcomes).toEqual(["/refresh blocked", "/logout blocked", "/login blocked"]);
    expect(answers).toHaveLength(9);
    for (const answer of answers) expect(answer).toMatch(/ (403|415)$/);
    expect((await refreshCookie(context))?.value, "the cookie was neither used nor replaced").toBe(cookie?.value);
    await page.reload();
    await expectSignedIn(page, person);
  } finally {
    server.close();
  }
});
