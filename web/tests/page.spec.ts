// The sign-in page in a real browser against the real stack (the watch that
// `make test` runs): what a person does, and what must hold meanwhile.

import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import AxeBuilder from "@axe-core/playwright";
import type { Route } from "@playwright/test";
import {
  codeIn,
  countRequests,
  expect,
  expectSignedIn,
  isViolation,
  expectSignedOut,
  linkIn,
  logIn,
  mailFor,
  newAddress,
  newPerson,
  noteSecret,
  type Person,
  refreshCookie,
  register,
  test,
} from "./fixtures";

test("a person registers, sees their name, reloads and is still signed in, and no script can read a token", async ({
  page,
  context,
  consoleMessages,
}) => {
  const person = newPerson();
  const urls: string[] = [];
  page.on("request", (request) => urls.push(request.url()));
  const login = page.waitForResponse((r) => new URL(r.url()).pathname === "/login");
  await register(page, person);
  const answer = (await (await login).json()) as { access_token?: string; refresh_token?: string };
  const accessToken = answer.access_token ?? "";
  expect(accessToken).toMatch(/^eyJ/);
  expect(answer.refresh_token, "with cookie delivery the body has no refresh token").toBeUndefined();

  const cookie = await refreshCookie(context);
  expect(cookie, "the refresh cookie is set").toBeDefined();
  expect(cookie).toMatchObject({ httpOnly: true, secure: true, sameSite: "Strict", path: "/" });
  // __Host-: no Domain attribute, so the cookie is the host's alone.
  expect(cookie?.domain).toBe(new URL(page.url()).hostname);
  const days = ((cookie?.expires ?? 0) * 1000 - Date.now()) / 86_400_000;
  expect(days, "Max-Age from the refresh token's expiry (30 days)").toBeGreaterThan(29);
  expect(days).toBeLessThanOrEqual(30);

  // The device proof of this sign-in: a __Host- cookie no script can read either.
  const device = (await context.cookies()).find((c) => c.name === "__Host-device");
  expect(device, "the device cookie is set").toBeDefined();
  expect(device).toMatchObject({ httpOnly: true, secure: true, sameSite: "Strict", path: "/" });
  expect(device?.domain).toBe(new URL(page.url()).hostname);
  const deviceDays = ((device?.expires ?? 0) * 1000 - Date.now()) / 86_400_000;
  expect(deviceDays, "Max-Age of the device proof (90 days)").toBeGreaterThan(89);
  expect(deviceDays).toBeLessThanOrEqual(90);

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
  for (const secret of [accessToken, cookie?.value ?? "", rotated?.value ?? ""]) {
    expect(urls.filter((url) => url.includes(secret)), "no token in a URL").toEqual([]);
    expect(consoleMessages.filter((text) => text.includes(secret)), "no token on the console").toEqual([]);
  }
});

test("the console watch catches policy violations (so its silence means something)", async ({
  page,
  consoleMessages,
}) => {
  await page.goto("/");
  await expectSignedOut(page);
  const blocked = await page.evaluate(() => {
    const outcomes: string[] = [];
    try {
      document.body.insertAdjacentHTML("beforeend", "<b>injected</b>");
      outcomes.push("innerHTML ran");
    } catch {
      outcomes.push("innerHTML blocked");
    }
    const image = document.createElement("img");
    image.src = "https://elsewhere.example/pixel.png";
    document.body.append(image);
    return outcomes;
  });
  expect(blocked).toEqual(["innerHTML blocked"]);
  await expect.poll(() => consoleMessages.filter(isViolation).join("\n")).toMatch(/require-trusted-types-for/);
  await expect.poll(() => consoleMessages.filter(isViolation).join("\n")).toMatch(/img-src/);
  // Seen: now clear them, or this test's own end check would fail.
  consoleMessages.length = 0;
});

test("the page is served with a strict policy; only its content-hashed assets are cached", async ({ page }) => {
  const assets: { url: string; cache: string | undefined; nosniff: string | undefined; encoding: string | undefined }[] = [];
  page.on("response", (response) => {
    if (new URL(response.url()).pathname.startsWith("/assets/")) {
      const headers = response.headers();
      assets.push({
        url: response.url(),
        cache: headers["cache-control"],
        nosniff: headers["x-content-type-options"],
        encoding: headers["content-encoding"],
      });
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
  // The icon may still be on its way when the page is ready: wait for it.
  await expect.poll(() => assets.length).toBeGreaterThanOrEqual(3);
  for (const asset of assets) {
    expect(asset.url).toMatch(/\/assets\/[\w.-]+-[\w-]{8}\.\w+$/);
    expect(asset.cache).toBe("public, max-age=31536000, immutable");
    expect(asset.nosniff).toBe("nosniff");
  }
  // API Gateway compresses nothing: the script comes precompressed.
  expect(assets.find((asset) => asset.url.endsWith(".js"))?.encoding).toBe("br");
});

test("two tabs refreshing at once both stay signed in: one refresh at a time", async ({ page, context }) => {
  const person = newPerson();
  await register(page, person);
  const other = await context.newPage();
  await other.goto("/");
  await expectSignedIn(other, person);

  // The first tab's refresh is held on its way: the second tab's must wait
  // for it (the Web Lock), and then send the cookie the first one got.
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let held = false;
  await page.route("**/refresh", async (route) => {
    held = true;
    await released;
    await route.continue();
  });
  const otherRefreshes = countRequests(other, "POST", "/refresh");
  const statuses: number[] = [];
  context.on("response", (response) => {
    if (new URL(response.url()).pathname === "/refresh") statuses.push(response.status());
  });

  const first = page.reload();
  await expect.poll(() => held).toBe(true);
  const second = other.reload();
  // The other tab has asked for the session's Web Lock and waits for it
  // (asked while it reloads: its old document may be gone, so ask again).
  await expect
    .poll(() =>
      other
        .evaluate(async () =>
          ((await navigator.locks.query()).pending ?? []).filter((lock) => lock.name?.endsWith(":session")).length,
        )
        .catch(() => 0),
    )
    .toBe(1);
  expect(otherRefreshes.count, "the other tab waits for the lock").toBe(0);
  release();
  await Promise.all([first, second]);
  await expectSignedIn(page, person);
  await expectSignedIn(other, person);
  expect(otherRefreshes.count).toBe(1);
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
  request,
}) => {
  const person = newPerson();
  await register(page, person);
  const other = await context.newPage();
  await other.goto("/");
  await expectSignedIn(other, person);
  const ended = await refreshCookie(context);

  await page.getByRole("button", { name: "Log out", exact: true }).click();
  await expectSignedOut(page);
  await expectSignedOut(other);
  await expect(other.getByText("You logged out in another tab.")).toBeVisible();
  expect(await refreshCookie(context), "logout clears the cookie").toBeUndefined();
  // And the API ended the session: its last refresh token is dead.
  const replay = await request.post("/refresh", { data: { refresh_token: ended?.value } });
  expect(replay.status()).toBe(401);
  expect(((await replay.json()) as { error: string }).error).toBe("invalid_grant");

  // A login in one tab signs in the others (they follow the cookie).
  await logIn(page, person);
  await expectSignedIn(page, person);
  await expectSignedIn(other, person);

  // Two browsers (two cookie jars), one person: "everywhere" ends both.
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

test("the sessions list shows where and when each session began, and ends another browser's", async ({
  page,
  context,
  browser,
}) => {
  const person = newPerson();
  await register(page, person);
  const mine = page.getByRole("listitem", { name: "This session" });
  await expect(mine).toContainText("This device");
  await expect(mine).toContainText("Signed in with the password");
  await expect(page.getByRole("listitem")).toHaveCount(1);

  // A second browser (its own cookie jar), one person.
  const laptop = await browser.newContext({ userAgent: "Laptop Browser/1.0" });
  const elsewhere = await laptop.newPage();
  await elsewhere.goto("/");
  await logIn(elsewhere, person);
  await expectSignedIn(elsewhere, person);

  await page.getByRole("button", { name: "Refresh the list" }).click();
  await expect(page.getByRole("listitem")).toHaveCount(2);
  const theirs = page.getByRole("listitem").filter({ hasText: "Laptop Browser/1.0" });
  await expect(theirs).toContainText("Signed in with the password");
  await expect(theirs).toContainText("Last used");
  await theirs.getByRole("button", { name: /^End session from / }).click();
  await expect(page.getByRole("status").filter({ hasText: "That session has ended." })).toBeVisible();
  await expect(page.getByRole("listitem")).toHaveCount(1);
  await expect(mine).toBeVisible();
  // This browser's own session has no end button: "Log out" ends it.
  await expect(mine.getByRole("button")).toHaveCount(0);

  // The other browser's session is over: its next refresh finds it ended.
  await elsewhere.reload();
  await expectSignedOut(elsewhere);
  expect(await refreshCookie(laptop), "the dead session's cookie is cleared").toBeUndefined();
  await laptop.close();
  // And this one goes on.
  await page.reload();
  await expectSignedIn(page, person);
  expect(await refreshCookie(context)).toBeDefined();
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

test("deleting the account takes the password, signs out every tab and frees the username", async ({
  page,
  context,
  request,
}) => {
  const person = newPerson();
  await register(page, person);
  const other = await context.newPage();
  await other.goto("/");
  await expectSignedIn(other, person);
  const before = await refreshCookie(context);

  await page.getByRole("button", { name: "Delete account…" }).click();
  // Changing one's mind puts the button back.
  await page.getByRole("button", { name: "Keep my account" }).click();
  await page.getByRole("button", { name: "Delete account…" }).click();
  // A wrong password deletes nothing: the API's answer, shown as is.
  await page.getByLabel("Password", { exact: true }).fill("not my password at all");
  await page.getByRole("button", { name: "Delete my account" }).click();
  await expect(page.getByRole("alert").filter({ hasText: "Login Failed" })).toBeVisible();
  await expectSignedIn(page, person);

  await page.getByLabel("Password", { exact: true }).fill(person.password);
  await page.getByRole("button", { name: "Delete my account" }).click();
  await expectSignedOut(page);
  await expect(page.getByText("Your account has been deleted.")).toBeVisible();
  await expectSignedOut(other);
  expect(await refreshCookie(context), "the API cleared the cookie").toBeUndefined();
  const replay = await request.post("/refresh", { data: { refresh_token: before?.value } });
  expect(replay.status()).toBe(401);

  await logIn(page, person);
  await expect(page.getByRole("alert").filter({ hasText: "Login Failed" })).toBeVisible();
  // The username is free again: someone new may take it.
  await register(page, { ...person, name: "Someone New", password: `${person.password} new` });
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

test("an API call refused for its access token is retried once after a refresh, and only then", async ({ page }) => {
  const person = newPerson();
  await register(page, person);
  const refuse = (error: string) =>
    JSON.stringify({ error, message: error === "invalid_token" ? "the access token has expired" : "refused" });

  // Refused once as the API refuses an expired token: a refresh, a retry, the name.
  let refusals = 1;
  await page.route("**/get_name", async (route) => {
    if (refusals === 0) return route.continue();
    refusals--;
    await route.fulfill({ status: 401, contentType: "application/json", body: refuse("invalid_token") });
  });
  let names = countRequests(page, "GET", "/get_name");
  let refreshes = countRequests(page, "POST", "/refresh");
  await page.reload();
  await expectSignedIn(page, person);
  expect(names.count).toBe(2);
  expect(refreshes.count, "one at load, one after the refusal").toBe(2);

  // Refused every time: one retry, then the API's answer is shown.
  refusals = Infinity;
  names = countRequests(page, "GET", "/get_name");
  refreshes = countRequests(page, "POST", "/refresh");
  await page.reload();
  await expect(page.getByRole("alert").filter({ hasText: "the access token has expired" })).toBeVisible();
  expect(names.count, "retried once, not more").toBe(2);
  expect(refreshes.count).toBe(2);

  // Refused for another reason: no refresh, no retry.
  await page.unrouteAll();
  await page.route("**/get_name", (route) =>
    route.fulfill({ status: 401, contentType: "application/json", body: refuse("missing_token") }),
  );
  names = countRequests(page, "GET", "/get_name");
  refreshes = countRequests(page, "POST", "/refresh");
  await page.reload();
  await expect(page.getByRole("alert").filter({ hasText: "refused" })).toBeVisible();
  expect(names.count).toBe(1);
  expect(refreshes.count, "the refresh at load only").toBe(1);
});

test("the access token is refreshed ahead of its expiry", async ({ page }) => {
  await page.clock.install();
  const person = newPerson();
  await register(page, person);
  const refreshes = countRequests(page, "POST", "/refresh");
  const nextRefresh = () => page.waitForResponse((r) => new URL(r.url()).pathname === "/refresh");
  // Access tokens live 15 minutes; the page refreshes a minute before, not sooner.
  await page.clock.fastForward("13:50");
  expect(refreshes.count, "no refresh before a minute ahead of expiry").toBe(0);
  let refreshed = nextRefresh();
  await page.clock.fastForward("00:15");
  expect((await refreshed).status()).toBe(200);
  // And again for the refreshed token, 14 minutes on.
  refreshed = nextRefresh();
  await page.clock.fastForward("14:05");
  expect((await refreshed).status()).toBe(200);
  expect(refreshes.count).toBe(2);
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
  await expect(page.getByRole("listitem", { name: "This session" })).toBeVisible();
  await check("signed in");
  await page.getByRole("button", { name: "Delete account…" }).click();
  await check("delete account");
});

/** A page's origin elsewhere on the same site: another port of the API's host. */
async function elsewhere(): Promise<{ origin: string; close: () => void }> {
  const server: Server = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "text/html" }).end("<!doctype html><title>elsewhere</title>");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return { origin: `http://127.0.0.1:${port}`, close: () => server.close() };
}

/** What a page elsewhere tries with the victim's cookie: each path and its JSON body. */
function cookieRequests(person: Person): [string, string][] {
  const login = JSON.stringify({ username: person.username, password: person.password, refresh_token_delivery: "cookie" });
  return [
    ["/refresh", "{}"],
    ["/logout", "{}"],
    ["/login", login],
  ];
}

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
  const site = await elsewhere();
  try {
    const attacker = await context.newPage();
    const answers: string[] = [];
    attacker.on("response", (response) => {
      const url = new URL(response.url());
      if (url.origin !== site.origin) answers.push(`${url.pathname} ${response.status()}`);
    });
    await attacker.goto(`${site.origin}/`);
    const api = new URL("/", page.url()).origin;
    const outcomes = await attacker.evaluate(
      async ({ api, attempts }) => {
        const outcomes: string[] = [];
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
      { api, attempts: cookieRequests(person) },
    );
    expect(outcomes).toEqual(["/refresh blocked", "/logout blocked", "/login blocked"]);
    // The simple requests reach the API: JSON only stops /login and
    // /refresh (415) before anything else; /logout, which takes a bodiless
    // request, stops them at its Origin check for the cookie (403).
    const thrice = (answer: string): string[] => [answer, answer, answer];
    expect(answers.sort()).toEqual([...thrice("/login 415"), ...thrice("/logout 403"), ...thrice("/refresh 415")]);
    expect((await refreshCookie(context))?.value, "the cookie was neither used nor replaced").toBe(cookie?.value);
    await page.reload();
    await expectSignedIn(page, person);
  } finally {
    site.close();
  }
});

test("with the browser's own CORS switched off, the Origin check alone refuses JSON that carries the cookie", async ({
  page,
  context,
  playwright,
  launchOptions,
}) => {
  const person = newPerson();
  await register(page, person);
  const cookie = await refreshCookie(context);
  const api = new URL("/", page.url()).origin;

  // A browser that enforces no same-origin policy (what a browser bug or a
  // hostile extension could make of one), holding the victim's cookies, on
  // another origin of the same site: its JSON requests go out without a
  // preflight, cookie and all. Only the API's Origin check stands.
  const site = await elsewhere();
  const unsafe = await playwright.chromium.launch({
    ...launchOptions,
    args: [...(launchOptions.args ?? []), "--disable-web-security"],
  });
  try {
    const jar = await unsafe.newContext();
    await jar.addCookies(await context.cookies());
    const attacker = await jar.newPage();
    await attacker.goto(`${site.origin}/`);
    const outcomes = await attacker.evaluate(
      async ({ api, attempts }) => {
        const outcomes: string[] = [];
        for (const [path, body] of attempts) {
          const response = await fetch(api + path, {
            method: "POST",
            credentials: "include",
            headers: { "Content-Type": "application/json" },
            body,
          });
          const answer = (await response.json()) as { error?: string };
          outcomes.push(`${path} ${response.status} ${answer.error ?? "-"}`);
        }
        return outcomes;
      },
      { api, attempts: cookieRequests(person) },
    );
    // Read, so no CORS stood in the way; 403 for the Origin, where a request
    // without the cookie would have met 400 (refresh: no token) or 401
    // (logout: no bearer).
    expect(outcomes).toEqual([
      "/refresh 403 origin_not_allowed",
      "/logout 403 origin_not_allowed",
      "/login 403 origin_not_allowed",
    ]);
    // The control: the same browser without the cookie meets the other answers.
    await jar.clearCookies();
    const without = await attacker.evaluate(async (api) => {
      const response = await fetch(api + "/refresh", {
        method: "POST",
        credentials: "include",
        headers: { "Content-Type": "application/json" },
        body: "{}",
      });
      return `${response.status} ${((await response.json()) as { error?: string }).error ?? "-"}`;
    }, api);
    expect(without).toBe("400 invalid_request");
  } finally {
    await unsafe.close();
    site.close();
  }
  expect((await refreshCookie(context))?.value, "the cookie was neither used nor replaced").toBe(cookie?.value);
  await page.reload();
  await expectSignedIn(page, person);
});

test("a person who forgot their password resets it from the mailed link, in another browser, and signs in with the new one", async ({
  page,
  browser,
}) => {
  const person = newPerson();
  const address = newAddress();
  // Registers with an address, and verifies it from the mailed link.
  await page.goto("/");
  await page.getByRole("button", { name: "Create an account" }).click();
  await page.getByLabel("Username").fill(person.username);
  await page.getByLabel("Password", { exact: true }).fill(person.password);
  await page.getByLabel("Name", { exact: true }).fill(person.name);
  await page.getByLabel("Email (optional", { exact: false }).fill(address);
  await page.getByRole("button", { name: "Register" }).click();
  await expectSignedIn(page, person);
  const verification = await mailFor(address, "Verify your email address");
  const verifyLink = linkIn(verification);
  expect(new URL(verifyLink).origin, "the link leads to the page's own origin").toBe(new URL(page.url()).origin);
  await page.goto(verifyLink);
  await expect(page, "the secret leaves the address bar").not.toHaveURL(/#verify=/);
  await page.getByRole("button", { name: "Confirm this address" }).click();
  await expect(page.getByRole("status")).toContainText(`${address} is verified`);
  await page.getByRole("button", { name: "Continue" }).click();
  await expect(page.getByText(`Verified: ${address}`)).toBeVisible();
  await page.getByRole("button", { name: "Log out", exact: true }).click();
  await expectSignedOut(page);

  // Forgot password: the same answer whoever is named.
  await page.getByRole("button", { name: "Forgot password?" }).click();
  await page.getByLabel("Username or email").fill(address);
  await page.getByRole("button", { name: "Send reset email" }).click();
  await expect(page.getByText("If an account matches")).toBeVisible();
  const reset = await mailFor(address, "Reset your password");
  expect(reset.body).not.toContain(person.password);
  const resetLink = linkIn(reset);

  // The link opened in another browser: opening it uses nothing up; the form does.
  const other = await browser.newContext();
  const elsewhere = await other.newPage();
  // (The auth module's own session check, POST /refresh, may go out: it uses nothing of the link.)
  let posts = 0;
  elsewhere.on("request", (request) => {
    if (request.method() === "POST" && new URL(request.url()).pathname.startsWith("/password/reset")) posts++;
  });
  await elsewhere.goto(resetLink);
  await expect(elsewhere.getByRole("heading", { name: "Choose a new password" })).toBeVisible();
  await expect(elsewhere, "the secret leaves the address bar").not.toHaveURL(/#reset=/);
  expect(posts, "opening the link posts nothing to the reset routes").toBe(0);
  const newPassword = `${person.password} reset`;
  noteSecret(newPassword);
  await elsewhere.getByLabel("New password", { exact: true }).fill(newPassword);
  await elsewhere.getByRole("button", { name: "Set new password" }).click();
  await expect(elsewhere.getByRole("status")).toContainText("Your password is reset");
  await other.close();

  // Back in the first browser: the old password is refused, the new one
  // signs in, and the owner is told.
  await page.getByRole("button", { name: "Back to log in" }).click();
  await logIn(page, person);
  await expect(page.getByRole("alert")).toContainText("Login Failed");
  await logIn(page, person, newPassword);
  await expectSignedIn(page, person);
  await mailFor(address, "Your password was reset");
});

test("the mailed code resets a password typed in by hand, and a wrong one is refused", async ({ page }) => {
  const person = newPerson();
  const address = newAddress();
  await register(page, person);
  await page.getByLabel("New email address").fill(address);
  await page.getByLabel("Password (to change the address)").fill(person.password);
  await page.getByRole("button", { name: "Save address" }).click();
  await expect(page.getByText(`Waiting for verification: ${address}`)).toBeVisible();
  const verification = await mailFor(address, "Verify your email address");
  await page.getByLabel("Code from the email", { exact: true }).fill(codeIn(verification));
  await page.getByRole("button", { name: "Verify" }).click();
  await expect(page.getByText(`Verified: ${address}`)).toBeVisible();
  await page.getByRole("button", { name: "Log out", exact: true }).click();

  await page.getByRole("button", { name: "Forgot password?" }).click();
  await page.getByLabel("Username or email").fill(person.username);
  await page.getByRole("button", { name: "Send reset email" }).click();
  const reset = await mailFor(address, "Reset your password");
  const code = codeIn(reset);
  const newPassword = `${person.password} by code`;
  noteSecret(newPassword);
  const wrong = code.startsWith("0") ? `1${code.slice(1)}` : `0${code.slice(1)}`;
  await page.getByLabel("Code from the email", { exact: true }).fill(wrong);
  await page.getByLabel("New password", { exact: true }).fill(newPassword);
  await page.getByRole("button", { name: "Set new password" }).click();
  await expect(page.getByRole("alert")).toContainText("the link or code is wrong");
  await page.getByLabel("Code from the email", { exact: true }).fill(code);
  await page.getByRole("button", { name: "Set new password" }).click();
  await expect(page.getByRole("status")).toContainText("Your password is reset");
  await page.getByRole("button", { name: "Back to log in" }).click();
  await logIn(page, person, newPassword);
  await expectSignedIn(page, person);
});
