import { existsSync } from "node:fs";
import { defineConfig } from "@playwright/test";

// The page against a running stack: `make test` starts one (its watch) and
// sets WATCH_URL. Debian's Chromium, never a browser download.
const baseURL = process.env.WATCH_URL;
if (baseURL === undefined) throw new Error("WATCH_URL is not set: run the browser tests through `make test`");

export default defineConfig({
  testDir: "tests",
  timeout: 60_000,
  expect: { timeout: 15_000 },
  workers: 2,
  retries: 0,
  forbidOnly: true,
  reporter: [["list"]],
  outputDir: "test-results",
  use: {
    baseURL,
    browserName: "chromium",
    launchOptions: { executablePath: chromium() },
    trace: "retain-on-failure",
  },
});

function chromium(): string {
  const path = process.env.CHROMIUM_PATH ?? ["/usr/lib/chromium/chromium", "/usr/bin/chromium"].find((p) => existsSync(p));
  if (path === undefined) throw new Error("Chromium is not installed: run scripts/tools.sh (apt-get install chromium)");
  return path;
}
