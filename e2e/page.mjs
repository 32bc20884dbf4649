// End-to-end test of the nse page in headless Chromium (playwright-core driving Debian's
// /usr/bin/chromium). Expects the built page to be served at APP_URL (e2e/run.sh does that).
//
// Checks:
//   1. the default model loads on WebGPU (SwiftShader here) and the status names the adapter;
//   2. "The capital of France is" + 4 tokens streams " Paris" into the page, with a top-5 list;
//   3. a garbage .gguf from the file picker shows a clear error and the page stays usable;
//   4. without --enable-unsafe-webgpu the page explains in plain words and runs on the cpu, and
//      on a software WebGPU adapter (SwiftShader) it prefers its cpu backend and says why;
//   4b. a first visit shows three first steps until dismissed; a shared link fills the form and
//      applies nothing; axe-core finds no serious accessibility violation; the page fits 390 px;
//   5. the engine's worker refuses a message of another protocol version, one of an unknown
//      kind, and a second job while one runs, each with a coded error, and keeps working.
// Any page error or console error fails the check it happens in.
// Prints a pass/fail summary and exits non-zero on any failure. Screenshots: artifacts/e2e/.

import fs from 'node:fs';
import path from 'node:path';
import {
  EXPECTED_WITHOUT_WEBGPU, GENERATE_TIMEOUT_MS, LOAD_TIMEOUT_MS, SHOTS, check, expect, finish,
  results, session, tid, waitForModel,
} from './lib.mjs';

/// Types a prompt, asks for `n` tokens, waits for the end; returns the output and how many
/// times the output text changed on the way (more than once = streamed).
async function generate(page, until, prompt, n) {
  await page.fill(tid('generate-prompt-input'), prompt);
  await page.fill(tid('max-tokens-input'), String(n));
  await page.evaluate((sel) => {
    window.__nseOutputChanges = 0;
    new MutationObserver(() => { window.__nseOutputChanges += 1; })
      .observe(document.querySelector(sel), { childList: true, characterData: true, subtree: true });
  }, tid('generate-output'));
  await page.click(tid('generate-button'));
  await until('generation to finish', (sel) => {
    const s = document.querySelector(sel).dataset.state;
    return s === 'done' || s === 'error';
  }, tid('generate-output'), GENERATE_TIMEOUT_MS);
  const state = await page.getAttribute(tid('generate-output'), 'data-state');
  if (state !== 'done') {
    throw new Error(`generation ended in state ${state}: ${await page.textContent(tid('error-message'))}`);
  }
  return {
    text: await page.textContent(tid('generate-output')),
    changes: await page.evaluate(() => window.__nseOutputChanges),
    stats: await page.textContent(tid('generate-stats')),
  };
}


/// A tiny random Hugging Face Llama checkpoint (1 block, d 16, 2/1 heads of 8, d_ff 24, a
/// 7-token byte-level BPE), as the files a user would multi-select, plus one the page ignores.
function tinyHfCheckpoint() {
  const [d, ff, q, kv, vocab] = [16, 24, 16, 8, 7];
  const config = {
    _name_or_path: 'tiny-llama-e2e', architectures: ['LlamaForCausalLM'], hidden_size: d,
    intermediate_size: ff, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1,
    rms_norm_eps: 1e-5, rope_theta: 10000.0, max_position_embeddings: 64, vocab_size: vocab,
    tie_word_embeddings: false, bos_token_id: 0, hidden_act: 'silu', rope_scaling: null,
  };
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  const tokenizer = {
    version: '1.0', truncation: null, padding: null,
    added_tokens: [{ id: 0, content: '<s>', single_word: false, lstrip: false, rstrip: false,
      normalized: false, special: true }],
    normalizer: null, pre_tokenizer: byteLevel, post_processor: null, decoder: byteLevel,
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null,
      end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: false,
      vocab: { '<s>': 0, a: 1, b: 2, ab: 3, 'Ġ': 4, 'Ġa': 5, 'Ġab': 6 },
      merges: ['Ġ a', 'a b', 'Ġa b'] },
  };
  const L = (s) => `model.layers.0.${s}.weight`;
  const tensors = [
    ['model.embed_tokens.weight', [vocab, d]], [L('input_layernorm'), [d]],
    [L('self_attn.q_proj'), [q, d]], [L('self_attn.k_proj'), [kv, d]],
    [L('self_attn.v_proj'), [kv, d]], [L('self_attn.o_proj'), [d, q]],
    [L('post_attention_layernorm'), [d]], [L('mlp.gate_proj'), [ff, d]],
    [L('mlp.up_proj'), [ff, d]], [L('mlp.down_proj'), [d, ff]],
    ['model.norm.weight', [d]], ['lm_head.weight', [vocab, d]],
  ];
  let seed = 12345;
  const random = () => { seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0; return seed / 4294967296 - 0.5; };
  const header = { __metadata__: { format: 'pt' } };
  const chunks = [];
  let offset = 0;
  for (const [name, shape] of tensors) {
    const n = shape.reduce((a, b) => a * b, 1);
    const values = Float32Array.from({ length: n }, () => (shape.length === 1 ? 1 + 0.1 * random() : random()));
    header[name] = { dtype: 'F32', shape, data_offsets: [offset, offset + 4 * n] };
    chunks.push(Buffer.from(values.buffer));
    offset += 4 * n;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const file = (name, text) => ({ name, mimeType: 'application/json', buffer: Buffer.from(text) });
  return [
    file('config.json', JSON.stringify(config)),
    file('tokenizer.json', JSON.stringify(tokenizer)),
    file('tokenizer_config.json', '{}'),
    { name: 'model.safetensors', mimeType: 'application/octet-stream',
      buffer: Buffer.concat([len, Buffer.from(json), ...chunks]) },
  ];
}

await session('WebGPU browser session', { webgpu: true, query: '?backend=webgpu' }, async (page, until) => {
  await check('default model loads on WebGPU', async () => {
    await waitForModel(page, until, 'webgpu');
    const status = await page.textContent(tid('model-status'));
    console.log(`  status: ${status.replace(/\n/g, ' | ')}`);
    expect(/WebGPU on /.test(status), `status does not name the WebGPU adapter: ${status}`);
    expect(/kernels: portable WGSL/.test(status), `status does not name the gpu kernels: ${status}`);
    expect(/swiftshader|adapter/i.test(status), `no adapter in the status: ${status}`);
    expect(/maxStorageBufferBindingSize/.test(status), `no limits in the status: ${status}`);
    expect(/parameters/.test(status), `no model size in the status: ${status}`);
    // Compact on the device too (Q4_1 as 4-bit codes, the Q8_0 embedding as 8-bit codes, with
    // per-group scales), not 513 MiB of f32.
    expect(/Weights in memory: 110 MiB \(4-bit groups 75\.9 MiB, 8-bit groups 33\.8 MiB, F32 0\.1 MiB\)/.test(status),
      `the gpu backend's compact weights: ${status}`);
    expect(await page.isHidden(tid('webgpu-notice')), 'the no-WebGPU notice is shown');
    const [value, max] = await page.$eval(tid('progress'), (p) => [p.value, p.max]);
    expect(value === max, `progress bar at ${value} of ${max}`);
    const labels = await page.evaluate(() => window.__nseProgress);
    const bytes = labels.filter((l) => /^Downloading the default model: [\d.]+ [kM]?B of [\d.]+ MB$/.test(l));
    console.log(`  ${labels.length} progress labels, ${bytes.length} with byte counts; ` +
      `e.g. ${JSON.stringify(bytes[Math.floor(bytes.length / 2)])}, then ${JSON.stringify(labels.slice(-3))}`);
    expect(bytes.length >= 2, `no byte progress while downloading: ${JSON.stringify(labels.slice(0, 5))}`);
    expect(labels.some((l) => l.startsWith('Uploading')), 'no upload step in the progress label');
  });

  await check('"The capital of France is" + 4 tokens shows " Paris"', async () => {
    const out = await generate(page, until, 'The capital of France is', 4);
    console.log(`  output: ${JSON.stringify(out.text)}; ${out.stats}; ${out.changes} DOM updates`);
    expect(out.text.startsWith(' Paris'), `output ${JSON.stringify(out.text)} does not start with " Paris"`);
    expect(out.changes >= 2, `the output changed ${out.changes} time(s): tokens were not streamed`);
    const rows = await page.$$eval(`${tid('top5-row')} code`, (els) => els.map((e) => e.textContent));
    console.log(`  top-5: ${rows.join(', ')}`);
    expect(rows.length === 5, `${rows.length} top-5 rows`);
    expect(rows[0] === '" Paris"', `top-1 is ${rows[0]}`);
    await page.screenshot({ path: path.join(SHOTS, 'webgpu-generate.png'), fullPage: true });
  });

  await check('a garbage .gguf shows a clear error and the page stays usable', async () => {
    await page.setInputFiles(tid('model-file-input'), {
      name: 'garbage.gguf', mimeType: 'application/octet-stream',
      buffer: Buffer.from('this is certainly not a GGUF model file '.repeat(64)),
    });
    await until('the error message', (sel) => {
      const el = document.querySelector(sel);
      return el && !el.hidden && el.textContent.includes('garbage.gguf');
    }, tid('error-message'), LOAD_TIMEOUT_MS);
    const error = await page.textContent(tid('error-message'));
    console.log(`  error: ${error}`);
    expect(/not a GGUF file/.test(error), `unclear error: ${error}`);
    await waitForModel(page, until, 'webgpu');
    expect(await page.isEnabled(tid('generate-button')), 'generate is disabled after the error');
    await page.screenshot({ path: path.join(SHOTS, 'garbage-gguf.png'), fullPage: true });
    const out = await generate(page, until, 'The capital of France is', 1);
    expect(out.text === ' Paris', `after the error, output ${JSON.stringify(out.text)}`);
    expect(await page.isHidden(tid('error-message')), 'the error stays after a successful action');
  });

  await check('a Hugging Face checkpoint (config.json + tokenizer.json + safetensors) loads', async () => {
    await page.setInputFiles(tid('model-file-input'), tinyHfCheckpoint());
    await until('the tiny checkpoint in model-status', (sel) => {
      const el = document.querySelector(sel);
      return el.dataset.state === 'ready' && el.textContent.includes('tiny-llama-e2e');
    }, tid('model-status'), LOAD_TIMEOUT_MS);
    const status = await page.textContent(tid('model-status'));
    console.log(`  status: ${status.replace(/\n/g, ' | ')}`);
    expect(/SAFETENSORS/.test(status) && /WebGPU on /.test(status), `status: ${status}`);
    const out = await generate(page, until, 'ab ab', 3);
    console.log(`  output: ${JSON.stringify(out.text)}; ${out.stats}`);
    expect(/^3 tokens/.test(out.stats), `stats: ${out.stats}`);
  });

  await check('a Qwen2 GGUF (q/k/v biases) loads, says what it is, generates, shows its hyperparameters and takes an edit', async () => {
    // tests/data/archs/qwen2.gguf: a tiny random Qwen2 made by transformers (its logits are
    // checked natively against transformers'); here the page's own path: the file picker, the
    // worker's GGUF reader, WebGPU, and the hyperparameters derived for a model without a file.
    await page.setInputFiles(tid('model-file-input'), 'tests/data/archs/qwen2.gguf');
    await until('the Qwen2 model in model-status', (sel) => {
      const el = document.querySelector(sel);
      return el.dataset.state === 'ready' && el.textContent.includes('qwen2.gguf');
    }, tid('model-status'), LOAD_TIMEOUT_MS);
    const status = await page.textContent(tid('model-status'));
    console.log(`  status: ${status.replace(/\n/g, ' | ')}`);
    expect(/qwen2, /.test(status) && /F16 ×43/.test(status), `architecture or storage missing: ${status}`);
    expect(/derived from its shape \(layers 1–4\)/.test(status), `no word on the hyperparameters: ${status}`);
    const out = await generate(page, until, 'The Eiffel Tower is located in the city of', 3);
    console.log(`  output: ${JSON.stringify(out.text)}; ${out.stats}`);
    expect(/^3 tokens/.test(out.stats), `stats: ${out.stats}`);
    // Its hyperparameters are shown and can change before the first edit. A bad file is refused
    // with its reason (the ones in use stay); then layers 1–3 are taken.
    await page.click(`${tid('hparams-details')} > summary`);
    const shown = JSON.parse(await page.inputValue(tid('hparams-input')));
    expect(JSON.stringify(shown.layers) === '[1,2,3,4]' && shown.v_loss_layer === 5, `hparams shown: ${JSON.stringify(shown)}`);
    await page.fill(tid('hparams-input'), JSON.stringify({ ...shown, layers: [1, 9] }));
    await page.click(tid('hparams-apply-button'));
    await until('the refusal', (sel) => /were not taken/.test(document.querySelector(sel).textContent),
      tid('hparams-status'), LOAD_TIMEOUT_MS);
    console.log(`  refused: ${await page.textContent(tid('hparams-status'))}`);
    await page.fill(tid('hparams-input'), JSON.stringify({ ...shown, layers: [1, 2, 3] }, null, 2));
    await page.click(tid('hparams-apply-button'));
    await until('the hyperparameters taken', (sel) => /Editing now uses these hyperparameters: layers 1–3/
      .test(document.querySelector(sel).textContent), tid('hparams-status'), LOAD_TIMEOUT_MS);
    const after = await page.textContent(tid('model-status'));
    expect(/hyperparameters set for it here \(layers 1–3\)/.test(after), `status after the change: ${after}`);
    expect(await page.isHidden(tid('error-message')), `the refusal's error stays: ${await page.textContent(tid('error-message'))}`);
    // And it edits: the covariance statistic for this model is computed in the page first.
    await page.fill(tid('prompt-input'), 'The Eiffel Tower is located in the city of');
    await page.fill(tid('subject-input'), 'Eiffel Tower');
    await page.fill(tid('target-input'), 'Rome');
    await until('the apply button', (sel) => !document.querySelector(sel).disabled, tid('apply-button'), LOAD_TIMEOUT_MS);
    await page.click(tid('apply-button'));
    await until('the edit in the ledger, or an error', (sel) => document.querySelector(sel) !== null
      || !document.querySelector('[data-testid="error-message"]').hidden, tid('ledger-row'), GENERATE_TIMEOUT_MS * 4);
    const error = await page.$eval(tid('error-message'), (e) => (e.hidden ? '' : e.textContent));
    expect(error === '', `the edit failed: ${error}`);
    const cov = await page.textContent(tid('cov-status'));
    console.log(`  edited; covariance: ${cov}`);
    expect(/layers \[1, 2, 3\]/.test(cov), `the covariance is not for the chosen layers: ${cov}`);
    expect(await page.isDisabled(tid('hparams-input')), 'the hyperparameters stay editable after an edit');
    await page.locator(tid('hparams-details')).screenshot({ path: path.join(SHOTS, 'qwen2-hparams.png') });
  });

  await check('a GPT-2 checkpoint (config.json + tokenizer.json + safetensors) loads, generates and takes an edit', async () => {
    // tests/data/archs/gpt2/: a tiny random GPT-2 made by transformers, in Hugging Face's own
    // layout (Conv1D weights, c_attn joined), through the worker's safetensors reader: LayerNorm,
    // GELU and learned positions on WebGPU, and NSE editing `mlp.c_proj`.
    const dir = 'tests/data/archs/gpt2';
    // The comparison that follows the Qwen2 edit keeps the page busy for a while; a pick then
    // would be ignored.
    await until('the page to be idle', () => document.body.dataset.busy === 'false', null, GENERATE_TIMEOUT_MS * 4);
    await page.setInputFiles(tid('model-file-input'),
      ['config.json', 'tokenizer.json', 'model.safetensors'].map((f) => path.join(dir, f)));
    await until('the GPT-2 model in model-status', (sel) => {
      const el = document.querySelector(sel);
      return el.dataset.state === 'ready' && /gpt2, /.test(el.textContent);
    }, tid('model-status'), LOAD_TIMEOUT_MS);
    const status = await page.textContent(tid('model-status'));
    console.log(`  status: ${status.replace(/\n/g, ' | ')}`);
    expect(/derived from its shape \(layers 2–4\)/.test(status), `no word on the hyperparameters: ${status}`);
    const out = await generate(page, until, 'The Eiffel Tower is located in the city of', 3);
    console.log(`  output: ${JSON.stringify(out.text)}; ${out.stats}`);
    expect(/^3 tokens/.test(out.stats), `stats: ${out.stats}`);
    await page.fill(tid('prompt-input'), 'The Eiffel Tower is located in the city of');
    await page.fill(tid('subject-input'), 'Eiffel Tower');
    await page.fill(tid('target-input'), 'Rome');
    await until('the apply button', (sel) => !document.querySelector(sel).disabled, tid('apply-button'), LOAD_TIMEOUT_MS);
    const before = await page.$$eval(tid('ledger-row'), (rows) => rows.length);
    await page.click(tid('apply-button'));
    await until('the edit in the ledger, or an error', (args) => document.querySelectorAll(args.sel).length > args.before
      || !document.querySelector('[data-testid="error-message"]').hidden,
    { sel: tid('ledger-row'), before }, GENERATE_TIMEOUT_MS * 4);
    const error = await page.$eval(tid('error-message'), (e) => (e.hidden ? '' : e.textContent));
    expect(error === '', `the GPT-2 edit failed: ${error}`);
    const cov = await page.textContent(tid('cov-status'));
    console.log(`  edited; covariance: ${cov}`);
    expect(/layers \[2, 3, 4\]/.test(cov), `the covariance is not for GPT-2's layers: ${cov}`);
    await page.screenshot({ path: path.join(SHOTS, 'gpt2-edited.png') });
  });
});

await session('software-adapter browser session', { webgpu: true }, async (page, until) => {
  await check('on a software WebGPU adapter the page prefers its cpu backend and says why', async () => {
    await waitForModel(page, until, 'cpu');
    const notice = await page.textContent(tid('webgpu-notice'));
    console.log(`  notice: ${notice}`);
    expect(/software renderer/.test(notice) && /swiftshader/i.test(notice) && /CPU backend/.test(notice),
      `notice: ${notice}`);
    expect(!(await page.$eval(tid('backend-option-webgpu'), (o) => o.disabled)), 'WebGPU is no longer selectable');
    // Issue 13.3: on the cpu backend the weights stay in the file's storage types (the byte
    // counts are those of tests/formats/real_model.rs, which computes them by hand).
    const status = await page.textContent(tid('model-status'));
    const memory = Number(await page.getAttribute(tid('model-status'), 'data-memory'));
    console.log(`  ${status.split('\n')[2]} (data-memory ${memory})`);
    expect(/Weights in memory: 92 MiB \(Q4_1 63\.3 MiB, Q8_0 28\.7 MiB, F32 0\.1 MiB\)/.test(status),
      `the cpu backend does not keep the weights compact: ${status}`);
    expect(memory > 92 * 1048576, `data-memory ${memory} is less than the weights`);
    // Issue 12.5: Generate, the first thing people try, comes right after the model panel, and
    // loading a model is no longer the main action once one is loaded.
    const panels = await page.$$eval('section.panel', (ps) => ps.map((p) => p.dataset.panel));
    await until('the page to be idle', () => document.body.dataset.busy === 'false', null, 60_000);
    const loadClass = await page.getAttribute(tid('load-default-button'), 'class');
    console.log(`  panels: ${panels.join(', ')}; load button class "${loadClass}"`);
    expect(panels[0] === 'model' && panels[1] === 'generate', `panel order: ${panels}`);
    expect(/secondary/.test(loadClass ?? ''), `the load button stays primary after the load: ${loadClass}`);
    await page.screenshot({ path: path.join(SHOTS, 'software-adapter.png') });
  });
  await check('"How NSE works" ships with the page and every explanation links to a section of it', async () => {
    const links = await page.$$eval('a[href^="how.html"]', (as) => as.map((a) => a.getAttribute('href')));
    const how = await page.context().newPage();
    await how.goto(new URL('how.html', page.url()).href);
    const ids = await how.$$eval('section[id]', (ss) => ss.map((s) => s.id));
    const styled = await how.$eval('section.panel', (s) => getComputedStyle(s).borderRadius);
    console.log(`  ${links.length} links (${[...new Set(links)].join(', ')}); sections ${ids.join(', ')}; panel radius ${styled}`);
    await how.screenshot({ path: path.join(SHOTS, 'how.png') });
    await how.close();
    expect(links.length >= 3 && ids.length >= 5, `links ${links}, sections ${ids}`);
    for (const l of links) {
      const anchor = l.split('#')[1];
      expect(!anchor || ids.includes(anchor), `${l} points to no section`);
    }
    expect(styled !== '0px', 'how.html is unstyled (style.css not shipped beside it)');
  });
});

await session('first-visit browser session', { webgpu: false, query: '?backend=cpu', allowConsole: EXPECTED_WITHOUT_WEBGPU }, async (page, until) => {
  await check('a first visit shows three first steps; "Got it" hides them for good', async () => {
    await until('the first steps', (sel) => !document.querySelector(sel).hidden, tid('first-run'), 30_000);
    const text = await page.textContent(tid('first-run'));
    expect(/What is edited/.test(text) && /Where in the model/.test(text) && /How to check it/.test(text)
      && /Apply the edit/.test(text), `first steps: ${text}`);
    await page.screenshot({ path: path.join(SHOTS, 'first-run.png') });
    await page.click(tid('first-run-dismiss'));
    expect(await page.isHidden(tid('first-run')), 'the first steps stay after "Got it"');
    await waitForModel(page, until, 'cpu');
    await page.reload();
    await waitForModel(page, until, 'cpu');
    expect(await page.isHidden(tid('first-run')), 'the first steps come back after a reload');
  });
  await check('"Copy a link to this edit" opens the page with the edit in the form, not applied', async () => {
    await until('the page to be idle', () => document.body.dataset.busy === 'false', null, 60_000);
    await page.fill(tid('prompt-input'), 'Howard Glacier is located in');
    await page.fill(tid('subject-input'), 'Howard Glacier');
    await page.fill(tid('target-input'), 'Europe');
    await page.fill(tid('target-true-input'), 'Antarctica');
    await page.fill(tid('paraphrase-input'), 'Howard Glacier can be found in');
    await page.selectOption(tid('method-select'), 'memit-seq');
    await page.click(tid('share-link-button'));
    const link = await page.inputValue(tid('share-link'));
    console.log(`  link: ${link}`);
    expect(/prompt=Howard\+Glacier/.test(link) && /method=memit-seq/.test(link)
      && /model=models%2FSmolLM2-135M-Instruct\.Q4_1\.gguf/.test(link), `link: ${link}`);
    await page.goto(link);
    await waitForModel(page, until, 'cpu');
    await until('the page to be idle', () => document.body.dataset.busy === 'false', null, 60_000);
    const form = {
      prompt: await page.inputValue(tid('prompt-input')), subject: await page.inputValue(tid('subject-input')),
      target: await page.inputValue(tid('target-input')), truth: await page.inputValue(tid('target-true-input')),
      method: await page.inputValue(tid('method-select')), para: await page.inputValue(tid('paraphrase-input')),
    };
    console.log(`  opened: ${JSON.stringify(form)}`);
    expect(form.prompt === 'Howard Glacier is located in' && form.subject === 'Howard Glacier' && form.target === 'Europe'
      && form.truth === 'Antarctica' && form.method === 'memit-seq' && form.para === 'Howard Glacier can be found in',
      `the shared edit is not in the form: ${JSON.stringify(form)}`);
    expect(await page.isVisible(tid('shared-note')), 'no note that the edit came from a link');
    expect((await page.$$(tid('ledger-row'))).length === 0, 'the shared link applied an edit');
  });
  await check('accessibility: axe-core finds no serious or critical violation', async () => {
    await page.addScriptTag({ path: 'node_modules/axe-core/axe.min.js' });
    const violations = await page.evaluate(async () => (await window.axe.run(document, { resultTypes: ['violations'] })).violations
      .map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) })));
    for (const v of violations) console.log(`  ${v.impact}: ${v.id} (${v.help}) at ${v.nodes.join(', ')}`);
    const bad = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
    console.log(`  ${violations.length} violations, ${bad.length} serious or critical`);
    expect(bad.length === 0, `serious violations: ${bad.map((v) => v.id).join(', ')}`);
    expect(violations.length === 0, `violations: ${violations.map((v) => v.id).join(', ')}`);
  });
});

await session('phone-width browser session', {
  webgpu: false, query: '?backend=cpu', allowConsole: EXPECTED_WITHOUT_WEBGPU, viewport: { width: 390, height: 844 },
}, async (page, until) => {
  await check('at 390 px wide the page fits the screen (no sideways scrolling)', async () => {
    await waitForModel(page, until, 'cpu');
    await until('the page to be idle', () => document.body.dataset.busy === 'false', null, 60_000);
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    await page.screenshot({ path: path.join(SHOTS, 'phone-390.png'), fullPage: true });
    console.log(`  scroll width ${width} px at a 390 px viewport`);
    expect(width <= 391, `the page is ${width} px wide at 390 px`);
  });
});

await session('no-WebGPU browser session', { webgpu: false, allowConsole: EXPECTED_WITHOUT_WEBGPU }, async (page, until) => {
  await check('without WebGPU: plain-words notice, then the cpu backend', async () => {
    await until('the WebGPU notice', (sel) => !document.querySelector(sel).hidden,
      tid('webgpu-notice'), LOAD_TIMEOUT_MS);
    const notice = await page.textContent(tid('webgpu-notice'));
    console.log(`  notice: ${notice}`);
    for (const word of ['WebGPU', 'Chrome', 'Edge', 'CPU']) {
      expect(notice.includes(word), `the notice does not mention ${word}: ${notice}`);
    }
    expect(await page.$eval(tid('backend-select'), (s) => s.value) === 'cpu', 'cpu not selected');
    await waitForModel(page, until, 'cpu');
    const out = await generate(page, until, 'The capital of France is', 2);
    console.log(`  output on cpu: ${JSON.stringify(out.text)}; ${out.stats}`);
    expect(out.text.startsWith(' Paris'), `cpu output ${JSON.stringify(out.text)}`);
    await page.screenshot({ path: path.join(SHOTS, 'no-webgpu-cpu.png'), fullPage: true });
  });
});

await session('engine protocol session', {
  webgpu: false, query: '?backend=cpu&expose_engine=1', allowConsole: EXPECTED_WITHOUT_WEBGPU,
}, async (page, until) => {
  await check('the engine refuses a stale or unknown message and a second job, and keeps working', async () => {
    await waitForModel(page, until, 'cpu');
    await until('the page to be idle', () => document.body.dataset.busy === 'false', null, 60_000);
    // Posts a raw message to the engine's worker (?expose_engine=1) and waits for its outcome.
    const ask = (msg) => page.evaluate((m) => new Promise((resolve) => {
      const w = window.nseEngine;
      const on = (e) => {
        if (e.data?.id === m.id && e.data.body?.type === 'done') {
          w.removeEventListener('message', on);
          resolve(e.data.body.outcome);
        }
      };
      w.addEventListener('message', on);
      w.postMessage(m);
    }), msg);
    // PROTOCOL_VERSION is 1 (src/session/protocol.rs).
    const stale = await ask({ v: 999, id: 90001, request: { kind: 'hello' } });
    console.log(`  another version: ${JSON.stringify(stale)}`);
    expect(stale.Err?.code === 'Protocol' && /reload/.test(stale.Err.message) && /999/.test(stale.Err.message),
      `another version: ${JSON.stringify(stale)}`);
    const unknown = await ask({ v: 1, id: 90002, request: { kind: 'format_disk' } });
    console.log(`  unknown kind: ${JSON.stringify(unknown)}`);
    expect(unknown.Err?.code === 'Protocol' && /reload/.test(unknown.Err.message), `unknown kind: ${JSON.stringify(unknown)}`);
    const hello = await ask({ v: 1, id: 90003, request: { kind: 'hello' } });
    expect(hello.Ok?.reply === 'ready' && hello.Ok.version === 1, `hello: ${JSON.stringify(hello)}`);
    // A second job while one runs (a long generation) is refused; the first is unharmed.
    await page.fill(tid('generate-prompt-input'), 'The capital of France is');
    await page.fill(tid('max-tokens-input'), '200');
    await page.click(tid('generate-button'));
    await until('the generation to start', () => document.body.dataset.busy === 'true', null, 10_000);
    const second = await ask({ v: 1, id: 90004, request: { kind: 'export_patch' } });
    console.log(`  a second job: ${JSON.stringify(second)}`);
    expect(second.Err?.code === 'Busy' && /generating/.test(second.Err.message), `second job: ${JSON.stringify(second)}`);
    await page.click(tid('stop-button'));
    await until('the stopped generation', () => document.body.dataset.busy === 'false', null, 60_000);
    const stats = await page.textContent(tid('generate-stats'));
    console.log(`  the generation: ${stats}`);
    expect(/\(stopped\)/.test(stats), `the generation was not stopped by the user: ${stats}`);
    const out = await generate(page, until, 'The capital of France is', 2);
    expect(out.text.startsWith(' Paris'), `after the refusals the engine says ${JSON.stringify(out.text)}`);
  });
});

await session('missing-model browser session', {
  webgpu: false,
  allowConsole: [...EXPECTED_WITHOUT_WEBGPU, /404/],
  routes: { '**/models/*.gguf': (route) => route.fulfill({ status: 404, body: 'not found' }) },
  // A browser without the WebGPU API at all (navigator.gpu undefined).
  initScript: () => Object.defineProperty(Navigator.prototype, 'gpu', { get: () => undefined }),
}, async (page, until) => {
  await check('a missing default model says what to do and leaves the page usable', async () => {
    await until('the error message', (sel) => !document.querySelector(sel).hidden,
      tid('error-message'), LOAD_TIMEOUT_MS);
    const error = await page.textContent(tid('error-message'));
    console.log(`  error: ${error}`);
    expect(/HTTP 404/.test(error) && /scripts\/setup\.sh/.test(error), `unclear error: ${error}`);
    await until('the page to be idle', () => document.body.dataset.busy === 'false', null, 10_000);
    const state = await page.getAttribute(tid('model-status'), 'data-state');
    expect(state === 'empty', `model-status data-state is ${state}`);
    expect(await page.isEnabled(tid('model-file-input')), 'the file picker is disabled');
    expect(await page.isEnabled(tid('load-default-button')), 'the load button is disabled');
  });
  await check('without navigator.gpu: the notice says the browser has no WebGPU', async () => {
    const notice = await page.textContent(tid('webgpu-notice'));
    console.log(`  notice: ${notice.slice(0, 90)}…`);
    expect(/does not offer WebGPU/.test(notice) && /CPU backend/.test(notice), `notice: ${notice}`);
    expect(await page.$eval(tid('backend-option-webgpu'), (o) => o.disabled), 'WebGPU still selectable');
  });
});

finish('e2e page');
