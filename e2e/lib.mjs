// Shared helpers of the end-to-end tests (e2e/page.mjs, e2e/editor.mjs, e2e/bench.mjs): a
// headless Chromium (playwright-core driving Debian's /usr/bin/chromium) with a fresh profile,
// named checks with pass/fail and durations, waits that fail fast on any page or console error.

import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const APP_URL = process.env.APP_URL ?? 'http://127.0.0.1:8091/';
export const SHOTS = process.env.E2E_ARTIFACTS ?? 'artifacts/e2e';
// SwiftShader runs WebGPU at about 1 GFLOP/s: loading takes seconds, each token of the 30-layer
// model a few seconds more. Bounded, but generous.
export const LOAD_TIMEOUT_MS = 180_000;
export const GENERATE_TIMEOUT_MS = 240_000;
export const BASE_ARGS = [
  '--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
];
// Chromium's own console noise when WebGPU finds no adapter (the case check 4 provokes).
export const EXPECTED_WITHOUT_WEBGPU = [/No available adapters/i];

fs.mkdirSync(SHOTS, { recursive: true });
export const results = [];

/// Runs one named check, recording pass/fail and its duration.
export async function check(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    results.push({ name, ok: true, secs: (Date.now() - t0) / 1000 });
    console.log(`PASS ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  } catch (e) {
    results.push({ name, ok: false, secs: (Date.now() - t0) / 1000, error: e });
    console.log(`FAIL ${name}: ${e?.stack ?? e}`);
  }
}

/// A fresh browser profile and one page; page errors and console errors are collected, and any
/// wait done through `until` fails as soon as one arrives.
export async function withPage({ webgpu, allowConsole = [], routes = {}, initScript = null, query = '', viewport = { width: 1100, height: 900 }, appUrl = APP_URL }, fn) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'nse-e2e-'));
  const args = webgpu ? [...BASE_ARGS, '--enable-unsafe-webgpu'] : BASE_ARGS;
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium', headless: true, args,
    viewport,
  });
  const problems = [];
  let fail;
  const failed = new Promise((_, reject) => { fail = reject; });
  failed.catch(() => {});
  const report = (msg) => { problems.push(msg); fail(new Error(msg)); };
  try {
    // Records every text the progress label shows (window.__nseProgress), to check byte progress.
    // Records every main-thread task over 50 ms (window.__nseLongTasks: [{start, duration}]), to
    // check that the page never freezes while its engine works in the worker.
    await ctx.addInitScript(() => {
      window.__nseLongTasks = [];
      try {
        new PerformanceObserver((list) => {
          for (const e of list.getEntries()) window.__nseLongTasks.push({ start: e.startTime, duration: e.duration });
        }).observe({ type: 'longtask', buffered: true });
      } catch { /* no Long Tasks API: the checks that need it fail on an empty record */ }
      window.__nseProgress = [];
      document.addEventListener('DOMContentLoaded', () => {
        const label = document.querySelector('[data-testid="progress-label"]');
        if (!label) return; // another page (examples/embed)
        new MutationObserver(() => window.__nseProgress.push(label.textContent))
          .observe(label, { childList: true, characterData: true, subtree: true });
      });
    });
    if (initScript) await ctx.addInitScript(initScript);
    for (const [pattern, handler] of Object.entries(routes)) await ctx.route(pattern, handler);
    const page = ctx.pages()[0] ?? await ctx.newPage();
    page.on('pageerror', (e) => report(`page error: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() !== 'error') return;
      if (allowConsole.some((re) => re.test(m.text()))) return;
      report(`console error: ${m.text()}`);
    });
    const until = (what, pred, arg, timeout) => Promise.race([
      failed,
      page.waitForFunction(pred, arg, { timeout, polling: 250 }).catch((e) => {
        throw new Error(`timed out after ${timeout / 1000} s waiting for ${what}: ${e.message.split('\n')[0]}`);
      }),
    ]);
    await page.goto(appUrl + query);
    await fn(page, until);
    if (problems.length) throw new Error(problems.join('; '));
  } finally {
    await ctx.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

export const tid = (id) => `[data-testid="${id}"]`;

export async function waitForModel(page, until, backend) {
  await until(`model-status ready on ${backend}`, ([sel, be]) => {
    const el = document.querySelector(sel);
    return el && el.dataset.state === 'ready' && el.dataset.backend === be;
  }, [tid('model-status'), backend], LOAD_TIMEOUT_MS);
}

/// The longest main-thread task (ms) recorded since the last call, and forgets them.
export async function longestTask(page) {
  return page.evaluate(() => {
    const longest = Math.max(0, ...window.__nseLongTasks.map((t) => t.duration));
    window.__nseLongTasks = [];
    return longest;
  });
}

/// The longest main-thread tasks (ms) before and after the page's `nse-engine-started` mark (its
/// own boot: first layout, module evaluation, wasm compile; then the engine's work, shown from
/// the worker), and forgets them. `boot` is 0 when there is no mark.
export async function longestTasksAroundBoot(page) {
  return page.evaluate(() => {
    const mark = performance.getEntriesByName('nse-engine-started', 'mark')[0];
    const at = mark ? mark.startTime : 0;
    const longest = (ts) => Math.max(0, ...ts.map((t) => t.duration));
    const tasks = window.__nseLongTasks;
    window.__nseLongTasks = [];
    return {
      marked: Boolean(mark),
      boot: longest(tasks.filter((t) => t.start < at)),
      engine: longest(tasks.filter((t) => t.start >= at)),
    };
  });
}

/// The longest main-thread task the page may have while its engine works (issue 11).
export const LONG_TASK_LIMIT_MS = 100;
/// The longest the page's own boot may take in one task (layout of the whole page, evaluating the
/// script, finishing the wasm compile): a page that shows nothing for a quarter of a second is
/// broken, while ~60 ms on an idle two-core machine and ~120 ms on a busy one are not.
export const BOOT_TASK_LIMIT_MS = 250;

export function expect(cond, msg) {
  if (!cond) throw new Error(msg);
}

export const t0 = Date.now();

/// A browser session; a failure outside any check (launch, navigation, a late page error) is
/// recorded as a failed check of its own.
export async function session(name, options, fn) {
  try {
    await withPage(options, fn);
  } catch (e) {
    results.push({ name, ok: false, error: e });
    console.log(`FAIL ${name}: ${e?.stack ?? e}`);
  }
}

/// Prints the pass/fail summary and exits non-zero on any failure.
export function finish(what) {
  const failed = results.filter((r) => !r.ok);
  console.log(`\n${what}: ${results.length - failed.length} passed, ${failed.length} failed ` +
    `(${((Date.now() - t0) / 1000).toFixed(1)} s); screenshots in ${SHOTS}/`);
  for (const r of failed) console.log(`  failed: ${r.name}`);
  process.exit(failed.length ? 1 : 0);
}

/// The manifest of a patch (format 2: NSEPATCH, u32 version, u64 manifest length, manifest
/// JSON, blob, sha256 of everything before it).
export function manifestOf(bytes) {
  expect(bytes.subarray(0, 8).toString() === 'NSEPATCH', 'the export is not an nse patch');
  expect(bytes.readUInt32LE(8) === 2, `patch format ${bytes.readUInt32LE(8)}`);
  const len = Number(bytes.readBigUInt64LE(12));
  return { manifest: JSON.parse(bytes.subarray(20, 20 + len).toString()), len };
}

/// A patch with another base model: the manifest's model_sha256 replaced, the blob unchanged,
/// the checksum made valid again (so that the refusal comes from the model check).
export function forOtherModel(bytes) {
  const { manifest, len } = manifestOf(bytes);
  manifest.model_sha256 = 'f'.repeat(64);
  manifest.model_name = 'another-model.gguf';
  const json = Buffer.from(JSON.stringify(manifest));
  const head = Buffer.alloc(20);
  bytes.copy(head, 0, 0, 12);
  head.writeBigUInt64LE(BigInt(json.length), 12);
  const body = Buffer.concat([head, json, bytes.subarray(20 + len, bytes.length - 32)]);
  return Buffer.concat([body, crypto.createHash('sha256').update(body).digest()]);
}

// The page for the benchmark scripts: APP_URL when set, else dist/ served on 127.0.0.1 at
// $BENCH_PORT (default `port`) by a server the caller kills when done.
export async function servedPage(port) {
  if (process.env.APP_URL) return { url: process.env.APP_URL, server: null };
  const p = process.env.BENCH_PORT ?? port;
  if (!fs.existsSync('dist/index.html')) throw new Error('no dist/: build the page first (trunk build --release)');
  const server = spawn('python3', ['-m', 'http.server', p, '--bind', '127.0.0.1', '--directory', 'dist'], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 1000));
  return { url: `http://127.0.0.1:${p}/`, server };
}
