// End-to-end test of the editor in headless Chromium. Expects the built page at APP_URL
// (e2e/run.sh serves it). One edit in all, on the backend E2E_BACKEND (default cpu: on this
// GPU-less machine the wasm cpu backend edits in about 50 s, SwiftShader's WebGPU in about
// 230 s; E2E_BACKEND=webgpu runs the same checks there).
//
// Checks, in one browser profile:
//   0. the page never freezes while its engine (a Web Worker) loads the model: no main-thread
//      task over 100 ms (Long Tasks API), nor during the edit (3) and a comparison (3b);
//   1. the form validates as you type: a prompt without the subject, or a subject cut mid-word
//      ("Washingto"), is refused with the reason, apply is disabled;
//   1b. the paraphrase and neighbourhood fields follow the subject (another subject's are set
//      aside, empty with a hint, and come back with their subject);
//   2. Cancel (a real click) stops that edit at its first z step: no ledger row, the model is
//      the original; text typed during the edit appears at once;
//   3. "The Eiffel Tower is located in the city of" → Rome: the edited model says " Rome" and the
//      original still " Paris" (with P(new)/P(true) beside them); "The capital of Germany is" is
//      unchanged; the ledger has one successful row; every stage ran; the neuron view is drawn;
//   4. the ledger exports as a .nsepatch; the same patch for another model is refused;
//   5. a reload restores the ledger from IndexedDB and the model from the browser cache, and the
//      form shows the restored edit;
//   6. undo gives back the original model: output and probabilities as before the edit; text
//      generated before the undo is marked stale;
//   7. the exported ledger continues on the command line (`nse edit --patch`) and imports back:
//      both edits in the ledger, and the page's weights digest equals the command line's;
//   8. the benchmark (1 edit) runs the library's sequential run with a checkpoint per batch,
//      draws the three series, and gives the 2-edit ledger back with the same weights digest.
// In a second profile (?test_panic=edit), a panic in the engine in the middle of an edit is
// contained: the page shows it and stays usable, and "Restart engine" loads the model from the
// cache with the ledger as IndexedDB held it before the crashed job.
// And, in a third profile, a model over the page's binding limit (?max_binding=) is refused
// with a message naming the tensor, and the page stays usable.
// Screenshots: artifacts/e2e/editor-*.png.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  BOOT_TASK_LIMIT_MS, LOAD_TIMEOUT_MS, LONG_TASK_LIMIT_MS, SHOTS, check, expect, finish, forOtherModel, longestTask, longestTasksAroundBoot, manifestOf,
  session, tid, waitForModel,
} from './lib.mjs';

const BACKEND = process.env.E2E_BACKEND ?? 'cpu';
// One NSE edit of the 135M model is ~100 GFLOP: a few minutes at SwiftShader's ~1 GFLOP/s.
const EDIT_TIMEOUT_MS = 15 * 60_000;
// A comparison generates 8 tokens for 4 prompts on both models.
const COMPARE_TIMEOUT_MS = 6 * 60_000;
const VIEWPORT = { width: 1280, height: 720 };
const QUERY = BACKEND === 'cpu' ? '?backend=cpu' : '?backend=webgpu';

const EDIT = {
  prompt: 'The Eiffel Tower is located in the city of',
  subject: 'Eiffel Tower',
  target: 'Rome',
};
const UNRELATED = 'The capital of Germany is';
// The edit the command line adds on top of the page's exported ledger.
const CLI_EDIT = {
  prompt: 'The mother tongue of {} is', subject: 'Danielle Darrieux', target_new: 'English', target_true: 'French',
};
let exported = null; // the page's exported patch
let digests = null; // the continued patch's manifest (its weights digest)

/// The page is idle (no job running) and the comparison is not running.
async function idle(until, what, timeout) {
  await until(what, () => document.body.dataset.busy === 'false'
    && document.querySelector('[data-testid="compare-status"]').dataset.state !== 'running', null, timeout);
}

/// The form's check has come back from the engine (it runs in the worker, so a verdict on the
/// tokens arrives a moment after the keystroke).
async function checked(page) {
  await page.waitForFunction(() => document.querySelector('[data-testid="validation-message"]')
    .dataset.state !== 'checking', null, { timeout: 10_000 });
}

async function ledgerRows(page) {
  return page.$$eval(tid('ledger-row'), (els) => els.map((e) => ({
    text: e.textContent, success: e.dataset.success, entry: e.dataset.entry,
  })));
}

/// The edit row of the comparison: outputs and probabilities on both models.
async function editRow(page) {
  const t = (id) => page.textContent(tid(id));
  return {
    original: await t('original-output'), edited: await t('edited-output'),
    originalNew: await t('original-p-new'), originalTrue: await t('original-p-true'),
    editedNew: await t('edited-p-new'), editedTrue: await t('edited-p-true'),
    originalSays: await t('original-says'), editedSays: await t('edited-says'),
  };
}

/// The probe rows: `{kind, prompt, original, edited}`.
async function probeRows(page) {
  return page.$$eval(`${tid('compare-probe-rows')} ${tid('compare-row')}`, (rows) => rows.map((r) => ({
    kind: r.dataset.kind,
    prompt: r.querySelector('[data-testid="compare-prompt"]').textContent.trim(),
    original: r.querySelector('[data-testid="compare-original"]').textContent,
    edited: r.querySelector('[data-testid="compare-edited"]').textContent,
    originalP: r.querySelector('[data-testid="compare-original-p"]').textContent,
    editedP: r.querySelector('[data-testid="compare-edited-p"]').textContent,
  })));
}

async function noError(page) {
  const hidden = await page.isHidden(tid('error-message'));
  expect(hidden, `error shown: ${hidden ? '' : await page.textContent(tid('error-message'))}`);
}

/// Continues a patch on the command line (`nse edit --patch`, native cpu backend) with one more
/// edit; returns the new patch's bytes.
function continueOnTheCommandLine(patchBytes) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nse-e2e-'));
  fs.writeFileSync(path.join(dir, 'page.nsepatch'), patchBytes);
  fs.writeFileSync(path.join(dir, 'next.json'), JSON.stringify([CLI_EDIT]));
  const out = execFileSync('cargo', ['run', '--quiet', '--bin', 'nse', '--', 'edit', '--backend', 'cpu',
    '--requests', path.join(dir, 'next.json'), '--patch', path.join(dir, 'page.nsepatch'),
    '--out', path.join(dir, 'continued')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  console.log(`  nse edit --patch: ${out.trim().split('\n').pop()}`);
  return fs.readFileSync(path.join(dir, 'continued', 'patch.nsepatch'));
}

let before = null; // the edit row before the edit (the original model)

await session(`editor session (${BACKEND})`, { webgpu: true, query: QUERY, viewport: VIEWPORT }, async (page, until) => {
  await check('the page never freezes while the engine loads the model (worker: longest task < 100 ms; the page boot < 250 ms)', async () => {
    await waitForModel(page, until, BACKEND);
    await idle(until, 'the page to be idle after loading', LOAD_TIMEOUT_MS);
    const { marked, boot, engine } = await longestTasksAroundBoot(page);
    console.log(`  longest main-thread task: ${boot.toFixed(0)} ms while the page boots, `
      + `${engine.toFixed(0)} ms while the engine starts and loads the model`);
    expect(marked, 'the page never marked nse-engine-started');
    expect(engine < LONG_TASK_LIMIT_MS, `a ${engine} ms task froze the page while the engine loaded the model`);
    expect(boot < BOOT_TASK_LIMIT_MS, `a ${boot} ms task froze the page while it booted`);
  });

  await check('the form validates as you type; a prompt without the subject cannot be applied', async () => {
    await page.fill(tid('prompt-input'), UNRELATED);
    await page.fill(tid('subject-input'), EDIT.subject);
    await page.fill(tid('target-input'), EDIT.target);
    await checked(page);
    const state = await page.getAttribute(tid('validation-message'), 'data-state');
    const message = await page.textContent(tid('validation-message'));
    console.log(`  validation: ${message}`);
    expect(state === 'error' && /does not occur/.test(message), `validation ${state}: ${message}`);
    expect(await page.isDisabled(tid('apply-button')), 'apply is enabled for an invalid request');
    await page.keyboard.press('Enter');
    expect((await ledgerRows(page)).length === 0, 'the ledger changed');
    // A typo cut mid-word: the subject's last token cannot be placed, and the form says why.
    await page.fill(tid('prompt-input'), 'I live in Washington');
    await page.fill(tid('subject-input'), 'Washingto');
    await checked(page);
    const typo = await page.textContent(tid('validation-message'));
    console.log(`  typo: ${typo}`);
    expect(await page.getAttribute(tid('validation-message'), 'data-state') === 'error'
      && /Washingto/.test(typo) && /inside/.test(typo), `the typo is not explained: ${typo}`);
    expect(await page.isDisabled(tid('apply-button')), 'apply is enabled for a subject that cannot be placed');
    await page.fill(tid('subject-input'), EDIT.subject);
    await page.fill(tid('prompt-input'), EDIT.prompt);
    await checked(page);
    expect(await page.getAttribute(tid('validation-message'), 'data-state') === 'ok', 'the valid request is refused');
    expect(await page.isEnabled(tid('apply-button')), 'apply is disabled for a valid request');
    // Issue 12.7: "Ready" only with a subject-last token that exists in the prompt's tokens.
    const marks = await page.$$eval(`${tid('token-view')} ${tid('token')}`, (els) => ({
      n: els.length, last: els.findIndex((e) => e.dataset.subjectLast === 'true'),
    }));
    expect(marks.last >= 0 && marks.last < marks.n, `ready with the subject's last token at ${marks.last} of ${marks.n}`);
    const last = await page.$eval(`${tid('token-view')} [data-subject-last="true"]`, (e) => e.textContent);
    console.log(`  subject-last token: ${JSON.stringify(last)}`);
    expect(/Tower/.test(last), `the subject-last token is ${last}`);
  });

  await check('the paraphrase and neighbourhood fields follow the subject (issue 12.1)', async () => {
    const fields = async () => ({
      para: await page.inputValue(tid('paraphrase-input')),
      neigh: await page.inputValue(tid('neighborhood-input')),
      hint: await page.getAttribute(tid('paraphrase-input'), 'placeholder'),
    });
    await page.fill(tid('subject-input'), EDIT.subject);
    const eiffel = await fields();
    expect(/Eiffel Tower/.test(eiffel.para), `the example's paraphrase: ${JSON.stringify(eiffel)}`);
    await page.fill(tid('prompt-input'), 'Howard Glacier is located in');
    await page.fill(tid('subject-input'), 'Howard Glacier');
    const howard = await fields();
    console.log(`  Howard Glacier: ${JSON.stringify(howard)}`);
    expect(howard.para === '' && howard.neigh === '' && /Howard Glacier/.test(howard.hint),
      `the Eiffel Tower probes stayed for another subject: ${JSON.stringify(howard)}`);
    await page.fill(tid('paraphrase-input'), 'Howard Glacier lies in');
    await page.fill(tid('subject-input'), EDIT.subject);
    await page.fill(tid('prompt-input'), EDIT.prompt);
    const back = await fields();
    expect(back.para === eiffel.para && back.neigh === eiffel.neigh, `the example's probes did not come back: ${JSON.stringify(back)}`);
    await page.fill(tid('subject-input'), 'Howard Glacier');
    expect((await fields()).para === 'Howard Glacier lies in', 'the typed paraphrase was lost');
    await page.fill(tid('subject-input'), EDIT.subject);
  });

  await check('Cancel stops an edit at its next step: the ledger stays empty and the model the original', async () => {
    await page.fill(tid('subject-input'), EDIT.subject);
    await page.fill(tid('target-input'), EDIT.target);
    await page.fill(tid('prompt-input'), EDIT.prompt);
    expect(await page.isDisabled(tid('cancel-button')), 'Cancel is enabled with no job running');
    await page.click(tid('apply-button'));
    // The first z step has run: cancel there.
    await until('the first z step', () => (window.__nseProgress ?? []).some((l) => /z 1\/1: step \d+, loss/.test(l)),
      null, EDIT_TIMEOUT_MS);
    expect(await page.isEnabled(tid('cancel-button')), 'Cancel is disabled while the edit runs');
    // Text typed during the edit appears at once: the engine works in its worker.
    const typed = Date.now();
    await page.fill(tid('generate-prompt-input'), '');
    await page.type(tid('generate-prompt-input'), 'typed during the edit');
    const typeMs = Date.now() - typed;
    const value = await page.inputValue(tid('generate-prompt-input'));
    console.log(`  typed 21 characters during the edit in ${typeMs} ms`);
    expect(value === 'typed during the edit' && typeMs < 2000, `typing took ${typeMs} ms: ${JSON.stringify(value)}`);
    await page.fill(tid('generate-prompt-input'), 'The capital of France is');
    const t0 = Date.now();
    // A real click: the page takes input at once; the engine stops at its next step.
    await page.click(tid('cancel-button'));
    await until('the cancelled edit', () => document.body.dataset.busy === 'false', null, EDIT_TIMEOUT_MS);
    const label = await page.textContent(tid('progress-label'));
    console.log(`  stopped ${((Date.now() - t0) / 1000).toFixed(1)} s after the click: ${label}`);
    expect(/Cancelled: the model, P and the saved ledger are as they were before this job/.test(label), `label: ${label}`);
    await noError(page);
    expect((await ledgerRows(page)).length === 0, 'the cancelled edit is in the ledger');
    // The comparison on the page (made before the edit, on the unedited model) still holds.
    const row = await editRow(page);
    expect(row.original === row.edited && row.originalNew === row.editedNew,
      `the edited side differs from the original after a cancel: ${JSON.stringify(row)}`);
    expect(await page.isDisabled(tid('cancel-button')), 'Cancel stays enabled after the job');
    await page.evaluate(() => { window.__nseProgress = []; });
  });

  await check(`apply "${EDIT.prompt}" → ${EDIT.target} on ${BACKEND}: the edited model says Rome, the original Paris`, async () => {
    await page.fill(tid('subject-input'), EDIT.subject);
    await page.fill(tid('target-input'), EDIT.target);
    await page.fill(tid('probes-input'), UNRELATED);
    await longestTask(page);
    const t0 = Date.now();
    await page.click(tid('apply-button'));
    await until('the edit row of the ledger', (sel) => document.querySelector(sel) !== null
      || !document.querySelector('[data-testid="error-message"]').hidden, tid('ledger-row'), EDIT_TIMEOUT_MS);
    const editSecs = (Date.now() - t0) / 1000;
    await idle(until, 'the comparison after the edit', COMPARE_TIMEOUT_MS);
    const allSecs = (Date.now() - t0) / 1000;
    const longest = await longestTask(page);
    await noError(page);
    const row = await editRow(page);
    before = row;
    console.log(`  edit ${editSecs.toFixed(1)} s, with the comparison ${allSecs.toFixed(1)} s; longest main-thread task ${longest.toFixed(0)} ms`);
    expect(longest < LONG_TASK_LIMIT_MS, `a ${longest} ms task froze the page during the edit`);
    console.log(`  original: ${JSON.stringify(row.original)} P(new) ${row.originalNew} P(true) ${row.originalTrue}`);
    console.log(`  edited:   ${JSON.stringify(row.edited)} P(new) ${row.editedNew} P(true) ${row.editedTrue}`);
    expect(row.original.startsWith(' Paris'), `the original says ${JSON.stringify(row.original)}`);
    expect(row.edited.startsWith(' Rome'), `the edited model says ${JSON.stringify(row.edited)}`);
    expect(Number(row.editedNew) > Number(row.editedTrue), 'edited: P(new) ≤ P(true)');
    expect(Number(row.originalNew) < Number(row.originalTrue), 'original: P(new) ≥ P(true)');
    // The realistic verdict (greedy decoding from the prompt): Rome after, Paris before.
    expect(row.editedSays === 'says the new target', `edited: ${row.editedSays}`);
    expect(row.originalSays === 'says the true target', `original: ${row.originalSays}`);
    const probes = await probeRows(page);
    const unrelated = probes.find((p) => p.kind === 'probe' && p.prompt === UNRELATED);
    console.log(`  "${UNRELATED}": original ${JSON.stringify(unrelated?.original)}, edited ${JSON.stringify(unrelated?.edited)}`);
    expect(unrelated && unrelated.original === unrelated.edited, 'the unrelated probe changed');
    expect(unrelated.original.includes('Berlin'), `the unrelated probe says ${JSON.stringify(unrelated.original)}`);
    const rows = await ledgerRows(page);
    console.log(`  ledger: ${rows.map((r) => r.text).join(' | ')}`);
    expect(rows.length === 1 && rows[0].success === 'true', `ledger rows: ${JSON.stringify(rows)}`);
    const stages = await page.$$eval(tid('edit-stage'), (els) => els.map((e) => [e.dataset.stage, e.dataset.state]));
    expect(['cov', 'z', 'rounds', 'keys'].every((s) => stages.some(([id, st]) => id === s && st === 'done')),
      `stages: ${JSON.stringify(stages)}`);
    const labels = await page.evaluate(() => window.__nseProgress);
    expect(labels.some((l) => /z 1\/1: step \d+, loss/.test(l)), 'no z-step progress with the loss');
    expect(labels.some((l) => /Round 1, layer \d+: \d+ neurons updated/.test(l)), 'no layer progress');
    // Plain words first (issue 12.6): what the model now says, what stayed, what changed.
    const summary = await page.textContent(tid('compare-summary'));
    console.log(`  summary: ${summary}`);
    expect(/the edited model gives “Rome” a probability of [\d.]+ % \(the original: /.test(summary)
      && /it says “Rome” when it writes freely/.test(summary) && /are unchanged/.test(summary), `summary: ${summary}`);
    const neuronSummary = await page.textContent(tid('neuron-summary'));
    console.log(`  ${neuronSummary}`);
    expect(/changed \d+ neurons in 5 layers \(of 1536 neurons in each\)/.test(neuronSummary), `neuron summary: ${neuronSummary}`);
    const layers = await page.$$eval(tid('neuron-layer'), (els) => els.map((e) => Number(e.dataset.moved)));
    const top = await page.$$(tid('neuron-top-row'));
    console.log(`  neurons moved per layer: ${layers.join(', ')}; top list ${top.length} rows`);
    expect(layers.length === 5 && layers.every((n) => n > 0) && top.length === 10, 'the neuron view is empty');
    await page.screenshot({ path: path.join(SHOTS, 'editor-after-edit.png') });
    await page.screenshot({ path: path.join(SHOTS, 'editor-after-edit-full.png'), fullPage: true });
  });

  await check('a comparison keeps the page responsive (longest task < 100 ms)', async () => {
    await longestTask(page);
    const t0 = Date.now();
    await page.click(tid('compare-button'));
    await until('the comparison to start', () => document.body.dataset.busy === 'true', null, 10_000);
    await idle(until, 'the comparison', COMPARE_TIMEOUT_MS);
    const longest = await longestTask(page);
    const row = await editRow(page);
    console.log(`  compared in ${((Date.now() - t0) / 1000).toFixed(1)} s; longest main-thread task ${longest.toFixed(0)} ms`);
    expect(longest < LONG_TASK_LIMIT_MS, `a ${longest} ms task froze the page during the comparison`);
    expect(row.edited === before.edited && row.editedNew === before.editedNew, 'the comparison changed');
  });

  await check('the ledger exports as a .nsepatch; a patch for another model is refused', async () => {
    const [download] = await Promise.all([page.waitForEvent('download'), page.click(tid('export-button'))]);
    const file = await download.path();
    const bytes = fs.readFileSync(file);
    exported = bytes;
    console.log(`  exported ${download.suggestedFilename()} (${bytes.length} bytes)`);
    const { manifest } = manifestOf(bytes);
    expect(/^[0-9a-f]{64}$/.test(manifest.weights_sha256 ?? ''), 'the export records no weights digest');
    expect(/\.nsepatch$/.test(download.suggestedFilename()), `name ${download.suggestedFilename()}`);
    const other = forOtherModel(bytes);
    await page.setInputFiles(tid('import-input'), {
      name: 'other-model.nsepatch', mimeType: 'application/octet-stream', buffer: other,
    });
    await until('the refusal', (sel) => !document.querySelector(sel).hidden, tid('error-message'), 60_000);
    await idle(until, 'the page to be idle', 60_000);
    const error = await page.textContent(tid('error-message'));
    console.log(`  refused: ${error}`);
    expect(/not for the loaded model/.test(error) && /another-model/.test(error), `unclear refusal: ${error}`);
    const rows = await ledgerRows(page);
    expect(rows.length === 1, `the ledger changed: ${rows.length} rows`);
    expect((await editRow(page)).edited === before.edited, 'the edited output changed');
  });

  await check('a reload restores the ledger (IndexedDB) and reads the model from the browser cache', async () => {
    const t0 = Date.now();
    await page.reload();
    await waitForModel(page, until, BACKEND);
    const readySecs = (Date.now() - t0) / 1000;
    await idle(until, 'the comparison after the restore', COMPARE_TIMEOUT_MS);
    await noError(page);
    const status = await page.textContent(tid('model-status'));
    const labels = await page.evaluate(() => window.__nseProgress);
    console.log(`  ready after ${readySecs.toFixed(1)} s: ${status.replace(/\n/g, ' | ')}`);
    expect(/from cache/.test(status), 'the status does not say "from cache"');
    expect(labels.some((l) => /from cache/.test(l)) && !labels.some((l) => /^Downloading the default model/.test(l)),
      'the model was downloaded again');
    const rows = await ledgerRows(page);
    expect(rows.length === 1 && /Rome/.test(rows[0].text), `restored ledger: ${JSON.stringify(rows)}`);
    const row = await editRow(page);
    console.log(`  after the reload: original ${JSON.stringify(row.original)}, edited ${JSON.stringify(row.edited)}`);
    expect(row.edited.startsWith(' Rome') && row.original.startsWith(' Paris'), 'the restored edit does not hold');
    expect(row.editedNew === before.editedNew, `P(new) ${row.editedNew} after the restore, ${before.editedNew} before`);
    // The form shows the restored edit (issue 12.2): its true target is the one the ledger
    // recorded (the unedited model's answer), where the page's example leaves the field empty.
    const truth = await page.inputValue(tid('target-true-input'));
    const subject = await page.inputValue(tid('subject-input'));
    console.log(`  the form after the reload: subject ${JSON.stringify(subject)}, true target ${JSON.stringify(truth)}`);
    expect(subject === EDIT.subject && truth === 'Paris', `the form does not show the restored edit (${subject}, ${truth})`);
  });

  await check('undo gives back the original model, bit for bit; older generated text is marked stale', async () => {
    await page.fill(tid('max-tokens-input'), '4');
    await page.click(tid('generate-button'));
    await until('the generation', () => document.querySelector('[data-testid="generate-output"]').dataset.state === 'done',
      null, COMPARE_TIMEOUT_MS);
    await idle(until, 'the generation job', COMPARE_TIMEOUT_MS);
    await page.click(tid('undo-button'));
    await idle(until, 'the undo and its comparison', COMPARE_TIMEOUT_MS);
    await noError(page);
    expect((await ledgerRows(page)).length === 0, 'a ledger row is left');
    const row = await editRow(page);
    console.log(`  after undo: ${JSON.stringify(row.edited)} P(new) ${row.editedNew} P(true) ${row.editedTrue}`);
    expect(row.edited === before.original && row.editedNew === before.originalNew
      && row.editedTrue === before.originalTrue, 'the undone model differs from the original');
    // Issue 12.3: the text generated by the edited model is marked as coming from it.
    const state = await page.getAttribute(tid('generate-output'), 'data-state');
    const stats = await page.textContent(tid('generate-stats'));
    console.log(`  generate output after undo: ${state}: ${stats}`);
    expect(state === 'stale' && /before the ledger last changed/.test(stats), `generate output ${state}: ${stats}`);
    await page.screenshot({ path: path.join(SHOTS, 'editor-after-undo.png'), fullPage: true });
  });

  await check('the exported ledger continues with `nse edit --patch` and imports back bit-exact', async () => {
    const continued = continueOnTheCommandLine(exported);
    const { manifest } = manifestOf(continued);
    expect(manifest.entries.length === 2, `the continued patch holds ${manifest.entries.length} entries`);
    expect(manifest.entries[1].parent === manifest.entries[0].digest, 'the entries do not chain');
    await page.setInputFiles(tid('import-input'), {
      name: 'continued.nsepatch', mimeType: 'application/octet-stream', buffer: continued,
    });
    await idle(until, 'the import and its comparison', COMPARE_TIMEOUT_MS);
    await noError(page);
    const rows = await ledgerRows(page);
    console.log(`  ledger after the import: ${rows.map((r) => r.text).join(' | ')}`);
    expect(rows.length === 2 && /Rome/.test(rows[0].text) && /English/.test(rows[1].text),
      `ledger rows: ${JSON.stringify(rows)}`);
    const row = await editRow(page);
    expect(row.edited.startsWith(' Rome') && row.editedNew === before.editedNew,
      `the page's own edit changed: ${JSON.stringify(row)}`);
    // Exported again, the page's weights digest is the command line's: the same weights, bit for bit.
    const [download] = await Promise.all([page.waitForEvent('download'), page.click(tid('export-button'))]);
    const again = manifestOf(fs.readFileSync(await download.path())).manifest;
    console.log(`  weights sha256: command line ${manifest.weights_sha256}, page ${again.weights_sha256}`);
    expect(again.weights_sha256 === manifest.weights_sha256, 'the page and the command line disagree on the weights');
    expect(again.entries.map((e) => e.digest).join() === manifest.entries.map((e) => e.digest).join(),
      'the page and the command line disagree on the history');
    await page.screenshot({ path: path.join(SHOTS, 'editor-continued.png'), fullPage: true });
    digests = manifest;
  });

  await check('the benchmark runs the library\'s sequential run and gives the ledger back bit-exact', async () => {
    await page.fill(tid('bench-n-input'), '1');
    await page.fill(tid('bench-batch-input'), '1');
    await page.selectOption(tid('bench-method-select'), 'nse');
    const t0 = Date.now();
    await page.click(tid('bench-button'));
    await until('the benchmark', () => /^Done:/.test(document.querySelector('[data-testid="bench-status"]').textContent)
      || !document.querySelector('[data-testid="error-message"]').hidden, null, EDIT_TIMEOUT_MS);
    await idle(until, 'the benchmark job', EDIT_TIMEOUT_MS);
    await noError(page);
    const status = await page.textContent(tid('bench-status'));
    // One point per metric: the checkpoint after the batch.
    const series = await page.$$eval(`${tid('bench-plot')} ${tid('bench-series')}`,
      (els) => els.map((e) => [e.dataset.metric, e.getAttribute('points').trim().split(/\s+/).length]));
    console.log(`  ${((Date.now() - t0) / 1000).toFixed(1)} s: ${status}; series ${JSON.stringify(series)}`);
    expect(/Done: 1 edits/.test(status), `status: ${status}`);
    expect(['rewrite', 'paraphrase', 'neighborhood'].every((m) => series.some(([k, n]) => k === m && n === 1)),
      `series: ${JSON.stringify(series)}`);
    const rows = await ledgerRows(page);
    expect(rows.length === 2, `the user's ledger was not given back: ${JSON.stringify(rows)}`);
    const [download] = await Promise.all([page.waitForEvent('download'), page.click(tid('export-button'))]);
    const after = manifestOf(fs.readFileSync(await download.path())).manifest;
    expect(after.weights_sha256 === digests.weights_sha256, 'the weights after the benchmark are not the ledger\'s');
    await page.screenshot({ path: path.join(SHOTS, 'editor-bench.png'), fullPage: true });
  });
});

await session('crash session', {
  webgpu: true, query: `${QUERY}&test_panic=edit`, viewport: VIEWPORT,
  // The test hook's panic, as the engine's worker reports it to the console.
  allowConsole: [/test hook/, /engine crashed/, /RuntimeError/, /unreachable/, /panicked/],
}, async (page, until) => {
  await check('a panic in the engine mid-edit is contained: message, Restart engine, ledger restored from IndexedDB', async () => {
    expect(exported, 'needs the patch exported by the editor session');
    await waitForModel(page, until, BACKEND);
    await idle(until, 'the page to be idle after loading', LOAD_TIMEOUT_MS);
    // A saved ledger to come back to: the page's exported edit, imported (and saved).
    await page.setInputFiles(tid('import-input'), {
      name: 'page.nsepatch', mimeType: 'application/octet-stream', buffer: exported,
    });
    await idle(until, 'the import', COMPARE_TIMEOUT_MS);
    expect((await ledgerRows(page)).length === 1, 'the import did not land');
    // The next edit panics at its first z step (the ?test_panic=edit hook).
    await page.fill(tid('prompt-input'), 'The mother tongue of Danielle Darrieux is');
    await page.fill(tid('subject-input'), 'Danielle Darrieux');
    await page.fill(tid('target-input'), 'English');
    await checked(page);
    await page.click(tid('apply-button'));
    await until('the crash message', (sel) => !document.querySelector(sel).hidden, tid('crash-message'), EDIT_TIMEOUT_MS);
    const message = await page.textContent(tid('crash-message'));
    console.log(`  crash: ${message.slice(0, 160)}…`);
    expect(/test hook/.test(message) && /Restart engine/.test(message), `crash message: ${message}`);
    expect(await page.isVisible(tid('restart-engine-button')), 'no Restart engine button');
    // The page itself lives: it repaints and takes input.
    await page.fill(tid('generate-prompt-input'), 'still alive');
    expect(await page.inputValue(tid('generate-prompt-input')) === 'still alive', 'the page no longer takes input');
    await page.screenshot({ path: path.join(SHOTS, 'editor-crash.png') });
    await page.click(tid('restart-engine-button'));
    await waitForModel(page, until, BACKEND);
    await idle(until, 'the restarted engine and its comparison', COMPARE_TIMEOUT_MS);
    expect(await page.isHidden(tid('crash-message')), 'the crash message stays after the restart');
    const rows = await ledgerRows(page);
    console.log(`  after the restart: ${rows.map((r) => r.text).join(' | ')}`);
    // IndexedDB holds the ledger as it was before the crashed job: the imported edit only.
    expect(rows.length === 1 && /Rome/.test(rows[0].text), `ledger after the restart: ${JSON.stringify(rows)}`);
    const row = await editRow(page);
    expect(row.edited.startsWith(' Rome') && row.editedNew === before.editedNew,
      `the restored edit does not hold: ${JSON.stringify(row)}`);
    const status = await page.textContent(tid('model-status'));
    expect(/from cache/.test(status), `the restart downloaded the model again: ${status}`);
  });
});

await session('over-limit model session', { webgpu: true, query: '?backend=webgpu&max_binding=30000000', viewport: VIEWPORT }, async (page, until) => {
  await check('a model over the binding limit is refused naming the tensor; the page stays usable', async () => {
    await until('the error message', (sel) => !document.querySelector(sel).hidden, tid('error-message'), LOAD_TIMEOUT_MS);
    await idle(until, 'the page to be idle', 30_000);
    const error = await page.textContent(tid('error-message'));
    console.log(`  error: ${error}`);
    expect(/embed_tokens|token_embd/.test(error) && /30000000 bytes/.test(error) && /CPU/.test(error),
      `unclear error: ${error}`);
    expect(await page.getAttribute(tid('model-status'), 'data-state') === 'empty', 'a model is loaded');
    expect(await page.isEnabled(tid('load-default-button')), 'the load button is disabled');
    await page.selectOption(tid('backend-select'), 'cpu');
    await page.click(tid('load-default-button'));
    await waitForModel(page, until, 'cpu');
    expect(await page.isHidden(tid('error-message')), 'the error stays after a successful load');
    await page.screenshot({ path: path.join(SHOTS, 'editor-over-limit.png') });
  });
});

finish('e2e editor');
