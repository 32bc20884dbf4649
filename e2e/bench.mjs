// Benchmark of the page in headless Chromium against the native command line, on this machine.
//
//   node e2e/bench.mjs            (builds nothing: serve or build dist/ first, e.g. bash e2e/run.sh)
//
// For each backend in BENCH_BACKENDS (default "cpu,webgpu") and each engine placement in
// BENCH_ENGINES (default "worker,main": the engine in its Web Worker, as the page runs it, and on
// the page's own thread with ?engine=main, the same code and messages without the thread), in a
// fresh browser profile:
//   - page load → model ready (seconds from navigation until model-status is ready),
//   - decode tokens/s (the generate panel, 32 greedy tokens after "The capital of France is"),
//   - first edit (seconds from the click on Apply to the ledger row: the unedited model's answer,
//     the shipped covariance, z, rounds, past keys), and the batch alone as the ledger reports it,
//   - the longest main-thread task during the edit (Long Tasks API) and the time from the click
//     to the first progress label,
//   - the engine's WebAssembly memory after the edit (it never shrinks: the engine's peak).
// Then the native numbers of the same run: `nse bench forward --backend cpu` (decode tokens/s,
// peak memory) and `nse edit` of the same request on the cpu backend with the same covariance
// statistic.
// Writes artifacts/bench/web.json and prints a table with the ratios (page / native).
//
// APP_URL: a served page (default: this script serves dist/ on 127.0.0.1:$BENCH_PORT, 8095).
// NSE_BIN: the native binary (default: target/release/nse, else target/debug/nse).

import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BASE_ARGS, servedPage } from './lib.mjs';

const BACKENDS = (process.env.BENCH_BACKENDS ?? 'cpu,webgpu').split(',').map((s) => s.trim()).filter(Boolean);
const ENGINES = (process.env.BENCH_ENGINES ?? 'worker,main').split(',').map((s) => s.trim()).filter(Boolean);
const DECODE_TOKENS = 32;
const REQUEST = { prompt: 'The Eiffel Tower is located in the city of', subject: 'Eiffel Tower', target_new: 'Rome' };
const OUT = 'artifacts/bench/web.json';
const tid = (id) => `[data-testid="${id}"]`;

const { url, server } = await servedPage('8095');

async function pageRun(backend, engine) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'nse-bench-'));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium', headless: true, args: [...BASE_ARGS, '--enable-unsafe-webgpu'],
    viewport: { width: 1280, height: 720 },
  });
  const page = ctx.pages()[0] ?? await ctx.newPage();
  page.on('pageerror', (e) => console.log(`  page error: ${e.message}`));
  // Main-thread tasks over 50 ms, the click on Apply and the first progress label after it.
  await page.addInitScript(() => {
    window.__long = [];
    new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__long.push(e.duration); })
      .observe({ type: 'longtask', buffered: true });
    window.__clickAt = null;
    window.__firstProgress = null;
    document.addEventListener('click', (e) => {
      if (e.target.closest?.('[data-testid="apply-button"]')) { window.__clickAt = performance.now(); window.__firstProgress = null; }
    }, true);
    document.addEventListener('DOMContentLoaded', () => {
      const label = document.querySelector('[data-testid="progress-label"]');
      new MutationObserver(() => {
        if (window.__clickAt !== null && window.__firstProgress === null) window.__firstProgress = performance.now() - window.__clickAt;
      }).observe(label, { childList: true, characterData: true, subtree: true });
    });
  });
  const wait = (pred, arg, timeout) => page.waitForFunction(pred, arg, { timeout, polling: 100 });
  try {
    const t0 = Date.now();
    const query = [`backend=${backend}`, engine === 'main' ? 'engine=main' : ''].filter(Boolean).join('&');
    await page.goto(url + (query ? `?${query}` : ''));
    await wait((be) => {
      const s = document.querySelector('[data-testid="model-status"]');
      return s.dataset.state === 'ready' && s.dataset.backend === be;
    }, backend, 600_000);
    const load = (Date.now() - t0) / 1000;
    const device = (await page.textContent(tid('model-status'))).split('\n')[1];
    await wait(() => document.body.dataset.busy === 'false', null, 600_000);

    await page.fill(tid('generate-prompt-input'), 'The capital of France is');
    await page.fill(tid('max-tokens-input'), String(DECODE_TOKENS));
    await page.click(tid('generate-button'));
    await wait(() => ['done', 'error'].includes(document.querySelector('[data-testid="generate-output"]').dataset.state), null, 900_000);
    const stats = await page.textContent(tid('generate-stats'));
    const decode = Number((/\(([\d.]+) tokens\/s\)/.exec(stats) ?? [])[1]);

    await page.fill(tid('prompt-input'), REQUEST.prompt);
    await page.fill(tid('subject-input'), REQUEST.subject);
    await page.fill(tid('target-input'), REQUEST.target_new);
    await page.evaluate(() => { window.__long = []; });
    const t1 = Date.now();
    await page.click(tid('apply-button'), { timeout: 600_000 });
    await wait(() => document.querySelector('[data-testid="ledger-row"]')
      || !document.querySelector('[data-testid="error-message"]').hidden, null, 1_800_000);
    const edit = (Date.now() - t1) / 1000;
    const details = await page.textContent(tid('ledger-details'));
    const batch = Number((/· ([\d.]+) s$/.exec(details.trim()) ?? [])[1]);
    await wait(() => document.body.dataset.busy === 'false', null, 900_000);
    const compare = (Date.now() - t1) / 1000 - edit;
    const longest = await page.evaluate(() => Math.max(0, ...window.__long));
    // The engine's WebAssembly memory after the edit: it never shrinks, so this is its peak.
    const memory = Number(await page.getAttribute(tid('model-status'), 'data-memory')) / 1048576;
    const firstProgress = await page.evaluate(() => window.__firstProgress);
    const row = { backend, engine, device, load_to_ready_s: load, decode_tokens_per_s: decode, decode_stats: stats,
      first_edit_s: edit, edit_batch_s: batch, compare_after_edit_s: compare,
      longest_main_thread_task_ms: longest, click_to_first_progress_ms: firstProgress,
      engine_memory_mib: memory,
      edited_output: await page.textContent(tid('edited-output')) };
    console.log(`  ${backend}, engine ${engine}: ready ${load.toFixed(1)} s, decode ${decode.toFixed(2)} tokens/s, ` +
      `first edit ${edit.toFixed(1)} s (batch ${batch} s), comparison ${compare.toFixed(1)} s, ` +
      `longest main-thread task ${longest.toFixed(0)} ms, click → first progress ${firstProgress?.toFixed(0)} ms`);
    return row;
  } finally {
    await ctx.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

function nativeRun() {
  const bin = process.env.NSE_BIN ?? ['target/release/nse', 'target/debug/nse'].find((p) => fs.existsSync(p));
  if (!bin) return { skipped: 'no native binary: build it with cargo build --release --bin nse' };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nse-bench-native-'));
  const fwd = path.join(dir, 'forward.json');
  execFileSync(bin, ['bench', 'forward', '--backend', 'cpu', '--decode-tokens', String(DECODE_TOKENS), '--out', fwd],
    { stdio: ['ignore', 'ignore', 'pipe'] });
  const forward = JSON.parse(fs.readFileSync(fwd, 'utf8'));
  const requests = path.join(dir, 'request.json');
  fs.writeFileSync(requests, JSON.stringify([REQUEST]));
  const t0 = Date.now();
  execFileSync(bin, ['edit', '--requests', requests, '--method', 'nse', '--batch', '1', '--out', path.join(dir, 'edit'),
    '--cov-dir', 'www/models/cov', '--backend', 'cpu'], { stdio: ['ignore', 'ignore', 'pipe'] });
  const wall = (Date.now() - t0) / 1000;
  const report = JSON.parse(fs.readFileSync(path.join(dir, 'edit', 'report.json'), 'utf8'));
  fs.rmSync(dir, { recursive: true, force: true });
  const row = { binary: bin, backend: 'cpu', threads: os.cpus().length,
    decode_tokens_per_s: forward.results.decode_tokens_per_s, load_seconds: forward.results.load_seconds,
    peak_rss_mib: forward.results.peak_rss_mib,
    edit_s: report.seconds, edit_wall_s: wall };
  console.log(`  native (${bin}, cpu, ${row.threads} cores): decode ${row.decode_tokens_per_s.toFixed(2)} tokens/s, ` +
    `edit ${row.edit_s.toFixed(1)} s (${wall.toFixed(1)} s with loading)`);
  return row;
}

try {
  console.log(`nse web benchmark: ${url}`);
  const runs = {};
  for (const backend of BACKENDS) {
    for (const engine of ENGINES) runs[`${backend}/${engine}`] = await pageRun(backend, engine);
  }
  // The page as users get it: the engine in its worker (or the first placement measured).
  const page = {};
  for (const backend of BACKENDS) page[backend] = runs[`${backend}/worker`] ?? runs[`${backend}/${ENGINES[0]}`];
  const native = nativeRun();
  const ratios = {};
  for (const [backend, r] of Object.entries(page)) {
    const main = runs[`${backend}/main`];
    const worker = runs[`${backend}/worker`];
    ratios[backend] = {
      ...(native.skipped ? {} : {
        decode_tokens_per_s_page_over_native: r.decode_tokens_per_s / native.decode_tokens_per_s,
        first_edit_page_over_native: r.first_edit_s / native.edit_s,
        edit_batch_page_over_native: r.edit_batch_s / native.edit_s,
      }),
      ...(main && worker ? { first_edit_worker_over_main_thread: worker.first_edit_s / main.first_edit_s } : {}),
    };
  }
  const out = { bench: 'web', date: new Date().toISOString(), machine: `${os.cpus().length} cores, ${os.cpus()[0]?.model}`,
    browser: 'headless Chromium (/usr/bin/chromium), --enable-unsafe-webgpu', request: REQUEST,
    decode_tokens: DECODE_TOKENS, page, runs, native, ratios };
  fs.mkdirSync(path.dirname(OUT), { recursive: true });
  fs.writeFileSync(OUT, JSON.stringify(out, null, 2));
  const keys = Object.keys(runs);
  console.log('\nmetric                            ' + keys.map((k) => k.padStart(16)).join('') + '      native');
  const line = (name, f, n) => console.log(name.padEnd(34) + keys.map((k) => f(runs[k]).padStart(16)).join('') + n.padStart(12));
  line('page load → model ready (s)', (r) => r.load_to_ready_s.toFixed(1), native.load_seconds?.toFixed(1) ?? '–');
  line('decode tokens/s', (r) => r.decode_tokens_per_s.toFixed(2), native.decode_tokens_per_s?.toFixed(2) ?? '–');
  line('first edit, click → ledger (s)', (r) => r.first_edit_s.toFixed(1), native.edit_s?.toFixed(1) ?? '–');
  line('edit batch alone (s)', (r) => String(r.edit_batch_s), native.edit_s?.toFixed(1) ?? '–');
  line('longest main-thread task (ms)', (r) => r.longest_main_thread_task_ms.toFixed(0), '–');
  line('engine memory after the edit (MiB)', (r) => r.engine_memory_mib?.toFixed(0) ?? '–', native.peak_rss_mib?.toFixed(0) ?? '–');
  line('click → first progress (ms)', (r) => r.click_to_first_progress_ms?.toFixed(0) ?? '–', '–');
  for (const [b, r] of Object.entries(ratios)) {
    if (r.decode_tokens_per_s_page_over_native !== undefined) {
      console.log(`ratio page/native on ${b}: decode ${r.decode_tokens_per_s_page_over_native.toFixed(3)}×, ` +
        `first edit ${r.first_edit_page_over_native.toFixed(2)}× the time`);
    }
    if (r.first_edit_worker_over_main_thread !== undefined) {
      console.log(`engine in the worker against on the main thread on ${b}: first edit ` +
        `${r.first_edit_worker_over_main_thread.toFixed(3)}× the time (goal ≤ 1.10)`);
    }
  }
  console.log(`wrote ${OUT}`);
} finally {
  server?.kill();
}
