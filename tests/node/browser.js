// The demo page in a real browser for tests/test_demo_page.py: Debian's chromium driven by
// playwright-core. Two pages, each on its own worker, chat in a room; then redis-cli publishes
// a ch:* message to the room, which both pages must show.
//
// Usage: node browser.js URL_A URL_B REDIS_CLI REDIS_URL SCREENSHOT
// stdout: one JSON object {"a": [lines of page A's log], "b": [...]}; exit 1 on failure.
"use strict";
const { execFileSync } = require("child_process");
const { chromium } = require("playwright-core");

const [urlA, urlB, redisCli, redisUrl, screenshot] = process.argv.slice(2);
const TIMEOUT = 15000;

async function open(browser, url, nick) {
  const page = await browser.newPage({ viewport: { width: 820, height: 720 } });
  page.setDefaultTimeout(TIMEOUT);
  await page.goto(url);
  await page.waitForFunction(() => window.socket && window.socket.connected);
  await page.fill("#nick", nick);
  await page.click("#nick-form button");
  await page.fill("#room", "lobby");
  await page.click("#room-form button");
  await page.waitForFunction(() => document.getElementById("rooms").textContent === "lobby");
  return page;
}

const lines = (page) => page.$$eval("#log li", (items) => items.map((li) => li.textContent));
const shows = (page, text) =>
  page.waitForFunction(
    (t) => [...document.querySelectorAll("#log li")].some((li) => li.textContent === t),
    text,
  );

async function say(page, text) {
  await page.fill("#text", text);
  await page.click("#say-form button");
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox"],
  });
  try {
    const a = await open(browser, urlA, "alice");
    const b = await open(browser, urlB, "bob");
    await say(a, "hello from alice");
    await shows(b, "[lobby] alice: hello from alice");
    await say(b, "hi alice");
    await shows(a, "[lobby] bob: hi alice");
    const body = JSON.stringify({ to: "lobby", data: { from: "backend", text: "from redis-cli" } });
    execFileSync(redisCli, ["-u", redisUrl, "PUBLISH", "ch:message", body]);
    await shows(a, "backend: from redis-cli");
    await shows(b, "backend: from redis-cli");
    await a.screenshot({ path: screenshot });
    process.stdout.write(JSON.stringify({ a: await lines(a), b: await lines(b) }) + "\n");
  } finally {
    await browser.close();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
