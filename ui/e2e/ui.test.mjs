// End-to-end test of mlwatch's web UI in a real browser (Debian's
// chromium driven by playwright-core), against a running demo stack:
//
//   node ui.test.mjs http://127.0.0.1:PORT/ui/ SCREENSHOT_DIR
//
// Opens the models overview, waits for the model with an active
// FeatureDrift alert, opens its drift page and checks that the drifted
// feature shows its reference and current distributions, then opens the
// incident timeline and checks that the incident shows the page, the
// remediation record and the resolve, in time order after the firing.
// Screenshots of every step go to SCREENSHOT_DIR. scripts/ui-test.sh
// starts the stack and runs this.
import { chromium } from 'playwright-core';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [url, shots = 'ui-screenshots'] = process.argv.slice(2);
if (!url) {
  console.error('usage: node ui.test.mjs UI_URL [SCREENSHOT_DIR]');
  process.exit(2);
}
const WAIT_ALERT_MS = Number(process.env.MLWATCH_UI_WAIT_ALERT_SECS || 420) * 1000;
const WAIT_RESOLVE_MS = Number(process.env.MLWATCH_UI_WAIT_RESOLVE_SECS || 240) * 1000;
mkdirSync(shots, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), 'mlwatch-ui-chromium-'));
const step = (s) => console.log(`ui-test ${new Date().toISOString().slice(11, 19)} ${s}`);

const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1360, height: 900 },
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
let failed = false;
const page = context.pages()[0] || (await context.newPage());
const errors = [];
page.on('pageerror', (e) => errors.push(String(e)));
// A 404 the page expects (a model without labels has no accuracy) is
// logged by the browser as a failed resource; only script errors count.
page.on('console', (m) => m.type() === 'error' && !/Failed to load resource/.test(m.text()) && errors.push(m.text()));

async function until(what, timeoutMs, probe, everyMs = 2000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe().catch(() => null);
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await page.waitForTimeout(everyMs);
  }
}

try {
  step(`overview ${url}`);
  await page.goto(url);
  await page.waitForSelector('table#models tbody tr', { timeout: 60_000 });
  await page.screenshot({ path: join(shots, '1-overview.png'), fullPage: true });

  // The overview refreshes itself; wait for a model with an active drift alert.
  const model = await until('a model with an active FeatureDrift alert on the overview', WAIT_ALERT_MS, async () => {
    const row = page.locator('table#models tbody tr[data-alerts*="FeatureDrift"]').first();
    return (await row.count()) ? row.getAttribute('data-model') : null;
  });
  step(`model with the active alert: ${model}`);
  await page.screenshot({ path: join(shots, '2-overview-alert.png'), fullPage: true });

  // Model page, then its drift page, through the links a person clicks.
  await page.locator(`table#models tbody tr[data-model="${model}"][data-alerts*="FeatureDrift"] a.model-link`).click();
  await page.waitForSelector('body[data-loaded="model"] svg.chart');
  await page.screenshot({ path: join(shots, '3-model.png'), fullPage: true });
  await page.getByRole('link', { name: 'Drift', exact: true }).click();
  const card = page.locator('.card.feature[data-firing="true"]').first();
  await card.waitFor({ timeout: 30_000 });
  const feature = await card.getAttribute('data-feature');
  const bars = async (series) => card.locator(`svg.dist g[data-series="${series}"] rect`).count();
  const [ref, cur] = [await bars('reference'), await bars('current')];
  step(`drifted feature ${feature}: ${ref} reference bins, ${cur} current bins`);
  if (ref < 2 || cur !== ref) throw new Error(`feature ${feature}: expected two distributions on the same bins, got ${ref} and ${cur}`);
  const evidence = await card.locator('dl.evidence').innerText();
  if (!/CUSUM/.test(evidence) || !/persistence/.test(evidence)) throw new Error(`no decision evidence shown: ${evidence}`);
  await card.scrollIntoViewIfNeeded();
  await page.screenshot({ path: join(shots, '4-drift.png'), fullPage: true });

  // Incident timeline: fired, then page and action, then resolved.
  await page.getByRole('link', { name: 'Incidents', exact: true }).first().click();
  await page.waitForSelector('body[data-loaded="incidents"]');
  const incident = page.locator(`.card.incident[data-type="FeatureDrift"][data-model="${model}"]`).first();
  const kinds = await until('the drift incident to show page, action and resolve', WAIT_RESOLVE_MS, async () => {
    await page.reload();
    await incident.waitFor({ timeout: 10_000 });
    const k = await incident.locator('ol.timeline li').evaluateAll((lis) => lis.map((li) => li.dataset.kind));
    return k.includes('page') && k.includes('action') && k.includes('resolved') ? k : null;
  }, 5000);
  step(`timeline: ${kinds.join(' → ')}`);
  const first = (k) => kinds.indexOf(k);
  const last = (k) => kinds.lastIndexOf(k);
  // A remediation is verified once the alert resolved, so only the first
  // page and the first action must precede the resolve.
  if (!(first('fired') < first('page') && first('fired') < first('action') && first('page') < last('resolved') && first('action') < last('resolved'))) {
    throw new Error(`timeline out of order: ${kinds.join(', ')}`);
  }
  const times = await incident.locator('ol.timeline li time').allInnerTexts();
  if ([...times].sort().join() !== times.join()) throw new Error(`timeline times not in order: ${times.join(', ')}`);
  await incident.scrollIntoViewIfNeeded();
  await page.screenshot({ path: join(shots, '5-incidents.png'), fullPage: true });
  if (errors.length) throw new Error(`errors in the page: ${errors.join('; ')}`);
  step(`passed; screenshots in ${shots}`);
} catch (e) {
  failed = true;
  console.error(`ui-test FAILED: ${e.message}`);
  await page.screenshot({ path: join(shots, 'failure.png'), fullPage: true }).catch(() => {});
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
