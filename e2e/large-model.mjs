// A model of Llama-3.2-1B's shape in the page, on the cpu backend (issue 13): load it from the
// file picker, generate, compute its covariance statistic in the page, take one NSE edit, and
// report the engine's WebAssembly memory (which never shrinks: its peak) and the times.
//
//   python3 scripts/make-large-gguf.py models/SmolLM2-135M-Instruct.Q4_1.gguf /tmp/large.gguf
//   LARGE_GGUF=/tmp/large.gguf node e2e/large-model.mjs   (dist/ served, as for e2e/bench.mjs)
//
// Not part of CI: about half an hour on two cores. Writes artifacts/bench/large-model.json and
// artifacts/e2e/large-model-*.png. LARGE_COV_TOKENS (default 512) is the covariance budget typed
// into the page; LARGE_LAYERS (e.g. "5,6") replaces the derived edited layers when set.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BASE_ARGS, servedPage } from './lib.mjs';

const GGUF = process.env.LARGE_GGUF;
if (!GGUF || !fs.existsSync(GGUF)) throw new Error('set LARGE_GGUF to the file scripts/make-large-gguf.py wrote');
const COV_TOKENS = process.env.LARGE_COV_TOKENS ?? '512';
const LAYERS = process.env.LARGE_LAYERS ? process.env.LARGE_LAYERS.split(',').map(Number) : null;
const OUT = 'artifacts/bench/large-model.json';
const SHOTS = 'artifacts/e2e';
const tid = (id) => `[data-testid="${id}"]`;
const HOUR = 3_600_000;

const { url, server } = await servedPage('8097');

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'nse-large-'));
const ctx = await chromium.launchPersistentContext(profile, {
  executablePath: '/usr/bin/chromium', headless: true, args: BASE_ARGS, viewport: { width: 1280, height: 900 },
});
const page = ctx.pages()[0] ?? await ctx.newPage();
const log = (s) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${s}`);
page.on('pageerror', (e) => log(`page error: ${e.message}`));
page.on('console', (m) => { if (m.type() === 'error') log(`console: ${m.text()}`); });
const wait = (pred, arg, timeout) => page.waitForFunction(pred, arg, { timeout, polling: 500 });
const memory = async () => Number(await page.getAttribute(tid('model-status'), 'data-memory')) / 1048576;
const errorText = async () => (await page.isHidden(tid('error-message'))) ? null : page.textContent(tid('error-message'));
const result = { gguf: path.basename(GGUF), gguf_bytes: fs.statSync(GGUF).size, cov_tokens: Number(COV_TOKENS) };
try {
  await page.goto(`${url}?backend=cpu`);
  await wait(() => document.querySelector('[data-testid="model-file-input"]') && !document.querySelector('[data-testid="model-file-input"]').disabled, null, 600_000);
  await wait(() => document.body.dataset.busy === 'false', null, 600_000);

  let t = Date.now();
  log(`loading ${GGUF}`);
  await page.setInputFiles(tid('model-file-input'), GGUF);
  await wait((name) => {
    const s = document.querySelector('[data-testid="model-status"]');
    return (s.dataset.state === 'ready' && s.textContent.includes(name)) || s.dataset.state === 'error';
  }, path.basename(GGUF), HOUR);
  result.load_s = (Date.now() - t) / 1000;
  result.status = await page.textContent(tid('model-status'));
  result.memory_after_load_mib = await memory();
  log(`loaded in ${result.load_s} s, ${result.memory_after_load_mib.toFixed(0)} MiB: ${result.status}`);
  await page.screenshot({ path: path.join(SHOTS, 'large-model-loaded.png'), fullPage: true });
  if (await errorText()) throw new Error(`load: ${await errorText()}`);

  await page.fill(tid('generate-prompt-input'), 'The capital of France is');
  await page.fill(tid('max-tokens-input'), '8');
  t = Date.now();
  await page.click(tid('generate-button'));
  await wait(() => ['done', 'error'].includes(document.querySelector('[data-testid="generate-output"]').dataset.state), null, HOUR);
  result.generate_s = (Date.now() - t) / 1000;
  result.generate_stats = await page.textContent(tid('generate-stats'));
  result.generated = await page.textContent(tid('generate-output'));
  log(`generated: ${JSON.stringify(result.generated)} (${result.generate_stats})`);
  await wait(() => document.body.dataset.busy === 'false', null, HOUR);

  // The covariance and hyperparameter settings are in folded <details>.
  await page.evaluate(() => document.querySelectorAll('details').forEach((d) => { d.open = true; }));
  await page.fill(tid('cov-budget-input'), COV_TOKENS);
  await page.dispatchEvent(tid('cov-budget-input'), 'change');
  if (LAYERS) {
    const hp = JSON.parse(await page.inputValue(tid('hparams-input')));
    hp.layers = LAYERS;
    await page.fill(tid('hparams-input'), JSON.stringify(hp, null, 2));
    await page.click(tid('hparams-apply-button'));
    log(`hyperparameters: ${await page.textContent(tid('hparams-status'))}`);
  }
  result.hparams = JSON.parse(await page.inputValue(tid('hparams-input')));
  await page.fill(tid('prompt-input'), 'The Eiffel Tower is located in the city of');
  await page.fill(tid('subject-input'), 'Eiffel Tower');
  await page.fill(tid('target-input'), 'Rome');
  await page.fill(tid('target-true-input'), 'Paris');
  t = Date.now();
  let last = '';
  const ticker = setInterval(async () => {
    try {
      const label = await page.textContent(tid('progress-label'));
      if (label !== last) { last = label; log(`  ${label} (${(await memory()).toFixed(0)} MiB)`); }
    } catch { /* page busy */ }
  }, 20_000);
  await page.click(tid('apply-button'), { timeout: 600_000 });
  await wait(() => document.querySelector('[data-testid="ledger-row"]')
    || !document.querySelector('[data-testid="error-message"]').hidden, null, 2 * HOUR);
  clearInterval(ticker);
  result.edit_s = (Date.now() - t) / 1000;
  result.error = await errorText();
  result.ledger = result.error ? null : await page.textContent(tid('ledger-details'));
  result.memory_after_edit_mib = await memory();
  log(`edit: ${result.edit_s} s, ${result.memory_after_edit_mib.toFixed(0)} MiB; ${result.error ?? result.ledger}`);
  await wait(() => document.body.dataset.busy === 'false', null, HOUR);
  result.compare = await page.textContent(tid('compare-table')).catch(() => null);
  // The status line's engine memory once the job has ended (the engine's peak so far).
  result.memory_end_mib = await memory();
  result.status_end = await page.textContent(tid('model-status'));
  log(`engine memory at the end: ${result.memory_end_mib.toFixed(0)} MiB`);
  await page.screenshot({ path: path.join(SHOTS, 'large-model-edited.png'), fullPage: true });
} finally {
  result.date = new Date().toISOString();
  fs.mkdirSync(path.dirname(OUT), { recursive: true });
  fs.writeFileSync(OUT, JSON.stringify(result, null, 1));
  log(`wrote ${OUT}`);
  await ctx.close();
  fs.rmSync(profile, { recursive: true, force: true });
  server?.kill();
}
if (result.error || !result.ledger) process.exit(1);
