// End-to-end test of the npm package (`nse-editor`, built into pkg/ by scripts/package.sh) in
// headless Chromium: examples/embed/index.html, a plain page that uses only the package, loads
// the default model, applies one edit and shows the model's answer before and after. Then the
// package's bad-input contract, through its JavaScript API in the same page: every misuse is a
// rejected Promise with a coded Error, and the editor keeps working.
// Expects the repository root served at EMBED_URL (e2e/run.sh does that).

import {
  LOAD_TIMEOUT_MS, SHOTS, check, expect, finish, forOtherModel, session,
} from './lib.mjs';
import path from 'node:path';

const ROOT = process.env.EMBED_URL ?? 'http://127.0.0.1:8093/';
const EDIT_TIMEOUT_MS = 15 * 60_000;

await session('embedded page session', {
  webgpu: false, appUrl: ROOT, query: 'examples/embed/index.html?backend=cpu',
  allowConsole: [/No available adapters/i],
}, async (page, until) => {
  await check('examples/embed: the package loads the model, applies an edit, and the answer changes', async () => {
    await until('the example to finish', () => document.body.dataset.done !== undefined, null, LOAD_TIMEOUT_MS + EDIT_TIMEOUT_MS);
    const t = (id) => page.textContent(`[data-testid="${id}"]`);
    const [status, before, after] = [await t('embed-status'), await t('embed-before'), await t('embed-after')];
    console.log(`  status: ${status}\n  before: ${JSON.stringify(before)}\n  after:  ${JSON.stringify(after)}`);
    await page.screenshot({ path: path.join(SHOTS, 'embed.png'), fullPage: true });
    expect(await page.evaluate(() => document.body.dataset.done) === 'true', `the example failed: ${status}`);
    expect(/city of Paris/.test(before) && /city of Rome/.test(after), `before ${before}, after ${after}`);
  });

  await check('the package rejects misuse with coded errors and keeps working', async () => {
    const codes = await page.evaluate(async () => {
      const { Editor } = await import(new URL('../../pkg/nse.js', location.href).href);
      const code = async (p) => { try { await p; return 'resolved'; } catch (e) { return e.code ?? `uncoded: ${e}`; } };
      const out = {};
      // A second editor with no model yet.
      const fresh = await Editor.create({ assetsUrl: '../../www/' });
      out.beforeLoad = await code(fresh.apply({ prompt: 'The Louvre is in', subject: 'Louvre', target: 'Rome' }));
      out.generateBeforeLoad = await code(fresh.generate('Hello'));
      fresh.close();
      const ed = window.nseEditor;
      out.nonStringSubject = await code(ed.apply({ prompt: 'The Louvre is in', subject: 5, target: 'Rome' }));
      out.subjectNotFound = await code(ed.apply({ prompt: 'The Louvre is in', subject: 'Big Ben', target: 'Rome' }));
      out.subjectSplitsToken = await code(ed.apply({ prompt: 'I live in Washington', subject: 'Washingto', target: 'Rome' }));
      const buffer = new ArrayBuffer(16);
      structuredClone(buffer, { transfer: [buffer] }); // now detached
      out.detachedBuffer = await code(ed.importPatch(buffer));
      out.badMethod = await code(ed.apply({ prompt: 'The Louvre is in', subject: 'Louvre', target: 'Rome' }, { method: 'rome' }));
      // A job while another runs.
      const long = ed.generate('The history of Paris', { maxTokens: 200 });
      await new Promise((r) => setTimeout(r, 300));
      out.whileBusy = await code(ed.apply({ prompt: 'The Louvre is in', subject: 'Louvre', target: 'Rome' }));
      ed.cancel();
      out.cancelled = (await long).cancelled;
      // A patch for another model: the page's own export with another model's sha256.
      const patch = await ed.exportPatch();
      out.patchBytes = patch.length;
      out.version = Editor.version();
      out.ledger = ed.ledger().length;
      out.after = (await ed.generate('The Eiffel Tower is located in the city of', { maxTokens: 2 })).text;
      return out;
    });
    console.log(`  ${JSON.stringify(codes)}`);
    expect(codes.beforeLoad === 'NoModel' && codes.generateBeforeLoad === 'NoModel', 'calls before a model is loaded');
    expect(codes.nonStringSubject === 'BadArgument', `a non-string subject: ${codes.nonStringSubject}`);
    expect(codes.subjectNotFound === 'SubjectNotFound', `a missing subject: ${codes.subjectNotFound}`);
    expect(codes.subjectSplitsToken === 'SubjectSplitsToken', `a subject inside a token: ${codes.subjectSplitsToken}`);
    expect(codes.detachedBuffer === 'BadArgument', `a detached buffer: ${codes.detachedBuffer}`);
    expect(codes.badMethod === 'BadArgument', `an unknown method: ${codes.badMethod}`);
    expect(codes.whileBusy === 'Busy' && codes.cancelled === true, `a second job: ${codes.whileBusy}, cancelled ${codes.cancelled}`);
    expect(codes.ledger === 1 && codes.patchBytes > 1000, `the ledger after the misuse: ${codes.ledger} entries`);
    expect(/^ Rome/.test(codes.after), `after the misuse the model says ${JSON.stringify(codes.after)}`);
    expect(/\(protocol 1\)$/.test(codes.version), `version: ${codes.version}`);
    // The exported ledger, rewritten for another model, is refused and changes nothing.
    const exported = Buffer.from(await page.evaluate(async () => Array.from(await window.nseEditor.exportPatch())));
    const foreign = forOtherModel(exported);
    const refused = await page.evaluate(async (bytes) => {
      try { await window.nseEditor.importPatch(new Uint8Array(bytes)); return { code: 'resolved' }; } catch (e) {
        return { code: e.code, message: e.message, ledger: window.nseEditor.ledger().length };
      }
    }, Array.from(foreign));
    console.log(`  a patch for another model: ${JSON.stringify(refused)}`);
    expect(refused.code === 'PatchForAnotherModel' && refused.ledger === 1, `refused: ${JSON.stringify(refused)}`);
  });
});

finish('e2e embed');
