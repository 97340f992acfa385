// Drives headless Chromium through the DevTools protocol over a pipe
// (--remote-debugging-pipe: no port, no WebSocket client needed), for
// tests/dashboard.rs. It runs the steps given as JSON in argv[2] and
// prints one JSON object: each step's value, and every console error and
// uncaught exception of the page.
//
// Steps:
//   {"goto": url}                      navigate and wait for the load event
//   {"wait": js, "timeout": ms}        poll a JS expression until truthy; its value
//   {"eval": js}                       a JS expression's value (promises awaited)
//   {"type": selector, "text": s}      focus an element and type text into it
//   {"click": selector}                a mouse click at the element's centre
//   {"screenshot": path}               a PNG of the page
//
// Environment: CHROMIUM (default: chromium).

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const steps = JSON.parse(process.argv[2]);
const profile = mkdtempSync(join(tmpdir(), "eddy-chromium-"));
const browser = spawn(process.env.CHROMIUM || "chromium", [
  "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
  "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
  "--window-size=1400,1000", `--user-data-dir=${profile}`, "about:blank",
], { stdio: ["ignore", "ignore", "pipe", "pipe", "pipe"] });
let browserLog = "";
browser.stderr.on("data", (d) => { browserLog = (browserLog + d).slice(-4000); });

// The protocol: JSON messages, each ended by a NUL byte.
const pending = new Map();
const listeners = [];
let nextId = 1;
let buffer = Buffer.alloc(0);
browser.stdio[4].on("data", (chunk) => {
  buffer = Buffer.concat([buffer, chunk]);
  let end;
  while ((end = buffer.indexOf(0)) >= 0) {
    const message = JSON.parse(buffer.subarray(0, end).toString("utf8"));
    buffer = buffer.subarray(end + 1);
    if (message.id !== undefined && pending.has(message.id)) {
      const { resolve, reject } = pending.get(message.id);
      pending.delete(message.id);
      if (message.error) reject(new Error(JSON.stringify(message.error)));
      else resolve(message.result);
    } else {
      for (const l of listeners) l(message);
    }
  }
});

function send(method, params, sessionId) {
  const id = nextId++;
  const message = { id, method, params: params || {} };
  if (sessionId) message.sessionId = sessionId;
  browser.stdio[3].write(JSON.stringify(message) + "\0");
  return new Promise((resolve, reject) => pending.set(id, { resolve, reject }));
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const errors = [];
const results = [];

async function evaluate(session, expression) {
  const r = await send("Runtime.evaluate", { expression, returnByValue: true, awaitPromise: true }, session);
  if (r.exceptionDetails) throw new Error(`${expression}: ${r.exceptionDetails.exception?.description || r.exceptionDetails.text}`);
  return r.result.value;
}

async function run() {
  const { targetId } = await send("Target.createTarget", { url: "about:blank" });
  const { sessionId: s } = await send("Target.attachToTarget", { targetId, flatten: true });
  listeners.push((m) => {
    if (m.sessionId !== s) return;
    if (m.method === "Runtime.exceptionThrown") errors.push(m.params.exceptionDetails.exception?.description || m.params.exceptionDetails.text);
    if (m.method === "Runtime.consoleAPICalled" && m.params.type === "error") errors.push(m.params.args.map((a) => a.value ?? a.description).join(" "));
  });
  await send("Page.enable", {}, s);
  await send("Runtime.enable", {}, s);
  await send("Emulation.setDeviceMetricsOverride", { width: 1400, height: 1000, deviceScaleFactor: 1, mobile: false }, s);
  for (const step of steps) {
    if (step.goto) {
      const loaded = new Promise((resolve) => listeners.push((m) => { if (m.sessionId === s && m.method === "Page.loadEventFired") resolve(); }));
      await send("Page.navigate", { url: step.goto }, s);
      await loaded;
      results.push(null);
    } else if (step.wait) {
      const until = Date.now() + (step.timeout || 30000);
      let value;
      for (;;) {
        value = await evaluate(s, step.wait).catch(() => undefined);
        if (value) break;
        if (Date.now() > until) throw new Error(`timed out waiting for: ${step.wait}`);
        await sleep(100);
      }
      results.push(value);
    } else if (step.eval) {
      results.push(await evaluate(s, step.eval));
    } else if (step.type) {
      await evaluate(s, `document.querySelector(${JSON.stringify(step.type)}).focus()`);
      await send("Input.insertText", { text: step.text }, s);
      results.push(null);
    } else if (step.click) {
      const box = await evaluate(s, `(() => { const r = document.querySelector(${JSON.stringify(step.click)}).getBoundingClientRect(); return { x: r.x + r.width / 2, y: r.y + r.height / 2 }; })()`);
      for (const type of ["mousePressed", "mouseReleased"]) {
        await send("Input.dispatchMouseEvent", { type, x: box.x, y: box.y, button: "left", clickCount: 1 }, s);
      }
      results.push(null);
    } else if (step.screenshot) {
      const { data } = await send("Page.captureScreenshot", { format: "png", captureBeyondViewport: true }, s);
      writeFileSync(step.screenshot, Buffer.from(data, "base64"));
      results.push(step.screenshot);
    } else {
      throw new Error("an unknown step: " + JSON.stringify(step));
    }
  }
}

let failure = null;
const watchdog = setTimeout(() => { failure = "the browser did not answer in 120 s"; finish(); }, 120000);
browser.on("exit", (code) => { if (!failure && results.length < steps.length) { failure = `chromium exited (${code}): ${browserLog}`; finish(); } });

function finish() {
  clearTimeout(watchdog);
  process.stdout.write(JSON.stringify({ results, errors, failure }) + "\n");
  browser.kill("SIGKILL");
  try { rmSync(profile, { recursive: true, force: true }); } catch { /* best effort */ }
  process.exit(failure ? 1 : 0);
}

run().then(finish, (e) => { failure = String(e.stack || e); finish(); });
