// The portal in a real browser: Debian's Chromium driven by playwright-core
// against a real `charter serve` on SQLite and a real `charter instance`.
// Run by .ci/browser.sh (which installs Chromium and the npm packages);
// by hand: CHARTER_BIN=target/debug/charter node tests/browser/portal.mjs
//
// Scenario: sign in; create a product (after a refused form naming its
// field), an account and a license; issue a token and download
// license.jwt, verified with `charter token verify` against the issuer's
// JWKS; bind a push-enabled instance to the running `charter instance` and
// see its push state turn "delivered"; revoke behind the confirmation; see
// the events on the audit page; a Viewer session has no write controls and
// its forged POST gets 403; a cross-site POST is refused; every page passes
// an axe scan (no serious or critical violation) at 1280 px and 390 px.
// Screenshots of every page go to target/portal-screenshots/ (SCREENSHOTS).

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { AxeBuilder } from '@axe-core/playwright';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const BIN = path.resolve(ROOT, process.env.CHARTER_BIN ?? 'target/debug/charter');
const SHOTS = path.resolve(ROOT, process.env.SCREENSHOTS ?? 'target/portal-screenshots');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const ADMIN_PASSWORD = 'browser-test-password-1';
const INSTANCE_PASSWORD = 'instance-password-1';
const started = Date.now();

const work = mkdtempSync(path.join(os.tmpdir(), 'charter-portal-'));
rmSync(SHOTS, { recursive: true, force: true });
mkdirSync(SHOTS, { recursive: true });
const children = [];

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Spawns `charter <args>` and waits for its "listening" line. */
function charter(args, env) {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CHARTER_')));
  const child = spawn(BIN, args, { cwd: work, env: { ...clean, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(child);
  let log = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`charter ${args[0]} did not start:\n${log}`)), 60_000);
    child.stderr.on('data', (chunk) => {
      log += chunk;
      if (/listening.*addr=/.test(log)) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.on('exit', (code) => reject(new Error(`charter ${args[0]} exited with ${code}:\n${log}`)));
  });
}

function cleanup() {
  for (const c of children) c.kill('SIGKILL');
  rmSync(work, { recursive: true, force: true });
}
process.on('exit', cleanup);

const issuerPort = await freePort();
const instancePort = await freePort();
const base = `http://127.0.0.1:${issuerPort}`;
const instanceRoot = `http://127.0.0.1:${instancePort}/`;
await charter(
  ['serve', '--listen', `127.0.0.1:${issuerPort}`, '--public-url', `${base}/`,
    '--database-url', `sqlite://${work}/charter.db`, '--keys-dir', `${work}/keys`,
    '--push-allow-private', '--push-interval-secs', '2'],
  { CHARTER_ADMIN_PASSWORD: ADMIN_PASSWORD },
);
await charter(
  ['instance', '--listen', `127.0.0.1:${instancePort}`, '--issuer', base, '--root-url', instanceRoot,
    '--data', `${work}/instance`, '--dialects', 'grafana'],
  { CHARTER_INSTANCE_ADMIN_PASSWORD: INSTANCE_PASSWORD },
);

// A page on another site (localhost is another site than 127.0.0.1) with
// a form that posts to the portal without its CSRF token.
const evilPort = await freePort();
const evil = createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/html' });
  res.end(`<!doctype html><html lang="en"><title>evil</title><form method="post" action="${base}/portal/accounts">
    <input type="hidden" name="company" value="Evil Inc"><input type="hidden" name="slug" value="evil">
    <button type="submit">Win a prize</button></form></html>`);
}).listen(evilPort, 'localhost');

const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
const axeFailures = [];
const shots = [];

/** Screenshot and accessibility scan of the page as it is. */
async function check(page, name) {
  const file = path.join(SHOTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  shots.push(file);
  const result = await new AxeBuilder({ page }).analyze();
  for (const v of result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')) {
    axeFailures.push(`${name}: ${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
  }
}

/** No request leaves the issuer's origin. */
function sameOriginOnly(context) {
  const outside = [];
  context.on('request', (r) => {
    const u = new URL(r.url());
    const allowed = [base, `http://localhost:${evilPort}`];
    if (!allowed.includes(u.origin) && u.protocol !== 'data:' && u.protocol !== 'about:') outside.push(r.url());
  });
  return outside;
}

const admin = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
const outside = sameOriginOnly(admin);
const page = await admin.newPage();

// Sign in.
await page.goto(`${base}/`);
assert.match(page.url(), /\/portal\/login/);
await check(page, '01-login');
await page.getByLabel('User name').fill('admin');
await page.getByLabel('Password', { exact: true }).fill(ADMIN_PASSWORD);
await page.getByRole('button', { name: 'Sign in', exact: true }).click();
await page.getByRole('heading', { name: 'Dashboard' }).waitFor();
// Keyboard: the first Tab reaches the skip link.
await page.keyboard.press('Tab');
assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'Skip to content');

// A product: first refused (the error names the field), then created.
await page.goto(`${base}/portal/products/new`);
await page.getByLabel('Slug').fill('Grafana Enterprise');
await page.getByLabel('Name').fill('Grafana Enterprise');
await page.getByLabel('Features').fill('reporting, saml, white-labeling');
await page.getByRole('button', { name: 'Save product' }).click();
await page.getByRole('alert').getByText('slug').waitFor();
assert.equal(await page.getByLabel('Slug').getAttribute('aria-invalid'), 'true');
await check(page, '02-product-form-error');
await page.getByLabel('Slug').fill('grafana-enterprise');
await page.getByRole('button', { name: 'Save product' }).click();
await page.getByRole('cell', { name: 'grafana-enterprise', exact: true }).waitFor();
await check(page, '03-products');

// An account.
await page.goto(`${base}/portal/accounts/new`);
await page.getByLabel('Company').fill('Acme Corp');
await page.getByLabel('Slug').fill('acme');
await page.getByRole('button', { name: 'Save account' }).click();
await page.getByRole('cell', { name: 'acme', exact: true }).waitFor();
await check(page, '04-accounts');

// A license.
await page.goto(`${base}/portal/licenses/new`);
await page.getByLabel('Account').selectOption({ label: 'Acme Corp (acme)' });
await page.getByLabel('Grafana Enterprise (grafana-enterprise)').check();
await page.getByLabel('Expires').fill('2099-01-01');
await page.getByLabel('Max instances').fill('3');
await page.getByLabel('Included users', { exact: true }).fill('10');
await page.getByLabel('Features').fill('reporting, saml');
await page.getByLabel('Flags').fill('package=premium');
await check(page, '05-license-form');
await page.getByRole('button', { name: 'Save license' }).click();
await page.getByRole('heading', { name: /^License / }).waitFor();
const lid = page.url().split('/').pop();

// Issue a token and download it; verify it against the issuer's JWKS.
await page.locator('#f-instance').fill('https://grafana.acme.example/');
await page.getByRole('button', { name: 'Issue token' }).click();
await page.getByText(/Token .* issued/).waitFor();
const [download] = await Promise.all([
  page.waitForEvent('download'),
  page.getByRole('link', { name: 'Download license.jwt' }).click(),
]);
assert.equal(download.suggestedFilename(), 'license.jwt');
const jwt = path.join(work, 'license.jwt');
await download.saveAs(jwt);
execFileSync(BIN, ['token', 'verify', '--jwks', `${base}/.well-known/jwks.json`,
  '--instance', 'https://grafana.acme.example/', jwt], { stdio: 'inherit' });
// Two renewals with it, for the dashboard's chart.
let token = readFileSync(jwt, 'utf8').trim();
for (let i = 0; i < 2; i++) {
  const r = await fetch(`${base}/api/tokens/renew`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ usage: { users: 7 + i } }),
  });
  assert.equal(r.status, 200, 'renewal');
  token = (await r.json()).token;
}

// Bind the running instance with push, and see the push delivered.
await page.goto(`${base}/portal/licenses/${lid}`);
await page.locator('#f-url').fill(instanceRoot);
await page.locator('#f-dialect').selectOption('grafana');
await page.getByLabel('Push tokens to it').check();
await page.getByLabel('Push user name').fill('admin');
await page.getByLabel('Push password').fill(INSTANCE_PASSWORD);
await page.getByRole('button', { name: 'Bind instance' }).click();
const row = page.locator(`tr[data-instance="${instanceRoot}"]`);
await row.waitFor();
await row.getByRole('button', { name: `Push now to ${instanceRoot}` }).click();
const deadline = Date.now() + 30_000;
while (!(await page.locator(`tr[data-instance="${instanceRoot}"] .push-state`).innerText()).includes('delivered')) {
  assert.ok(Date.now() < deadline, 'the push state turns delivered');
  await page.waitForTimeout(500);
  await page.reload();
}
await check(page, '06-license-detail');

// A second license, inside its expiry warning window, for the dashboard.
const api = { authorization: `Basic ${Buffer.from(`admin:${ADMIN_PASSWORD}`).toString('base64')}`, 'content-type': 'application/json' };
const account = (await (await fetch(`${base}/api/accounts`, { headers: api })).json()).items[0].id;
const soon = new Date(Date.now() + 10 * 86_400_000).toISOString().replace(/\.\d+Z$/, 'Z');
const second = await fetch(`${base}/api/licenses`, {
  method: 'POST', headers: api,
  body: JSON.stringify({ account_id: account, products: ['grafana-enterprise'], expires_at: soon, included_users: 5 }),
});
assert.equal(second.status, 201, 'second license');
await page.goto(`${base}/portal/`);
assert.equal(await page.locator('#renewals-chart rect[data-count="2"]').count(), 1, 'today has 2 renewals');
assert.equal(await page.locator('#stat-active').innerText(), '2');
await page.getByText('expiring', { exact: true }).first().waitFor();
await check(page, '07-dashboard');

// Revoke, behind the confirmation.
await page.goto(`${base}/portal/licenses/${lid}`);
await page.getByRole('link', { name: 'Revoke' }).click();
await page.getByRole('heading', { name: `Revoke license ${lid}?` }).waitFor();
await page.getByText('Revocation is final.').waitFor();
await check(page, '08-revoke-confirmation');
await page.getByRole('button', { name: `Revoke license ${lid}` }).click();
await page.locator('h1 .badge-revoked').waitFor();

// The events on the audit page.
await page.goto(`${base}/portal/audit`);
for (const action of ['license.revoke', 'instance.push', 'instance.bind', 'token.issue', 'license.create', 'portal.login']) {
  await page.getByRole('cell', { name: action, exact: true }).first().waitFor();
}
await check(page, '09-audit');
await page.goto(`${base}/portal/audit?action=license.revoke`);
assert.equal(await page.locator('#audit-table tbody tr').count(), 1);

// Licenses list with a filter, keys, dashboard.
await page.goto(`${base}/portal/licenses?state=revoked`);
await page.getByRole('link', { name: lid }).waitFor();
await check(page, '10-licenses');
await page.goto(`${base}/portal/keys`);
await page.getByText('signs new tokens').waitFor();
await check(page, '11-keys');

// A Viewer service account and its token (shown once).
await page.goto(`${base}/portal/serviceaccounts`);
await page.getByLabel('Name', { exact: true }).fill('Read Only Bot');
await page.getByLabel('Role').selectOption('Viewer');
await page.getByRole('button', { name: 'Create service account' }).click();
await page.getByLabel('Token name').fill('browser-test');
await page.getByRole('button', { name: 'Create token' }).click();
const viewerToken = (await page.getByLabel('The new token').inputValue()).trim();
assert.match(viewerToken, /^chr_sa_/);
await check(page, '12-service-account');

// A cross-site POST (from a page on another site) is refused.
await page.goto(`http://localhost:${evilPort}/`);
const [evilAnswer] = await Promise.all([
  page.waitForResponse(`${base}/portal/accounts`),
  page.getByRole('button', { name: 'Win a prize' }).click(),
]);
assert.equal(evilAnswer.status(), 403, 'cross-site POST refused');
const accounts = await admin.request.get(`${base}/api/accounts`, {
  headers: { authorization: `Basic ${Buffer.from(`admin:${ADMIN_PASSWORD}`).toString('base64')}` },
});
assert.ok(!(await accounts.text()).includes('Evil Inc'), 'nothing was created');

// 404 page.
await page.goto(`${base}/portal/no-such-page`);
await page.getByRole('heading', { name: 'Page not found' }).waitFor();
await check(page, '13-not-found');

// A Viewer: no write controls; a forged POST gets 403.
const viewer = await browser.newContext({ viewport: { width: 1280, height: 900 } });
const vpage = await viewer.newPage();
await vpage.goto(`${base}/portal/login`);
await vpage.getByLabel('Service account token').fill(viewerToken);
await vpage.getByRole('button', { name: 'Sign in with token' }).click();
await vpage.getByRole('heading', { name: 'Dashboard' }).waitFor();
for (const p of ['/portal/', '/portal/licenses', `/portal/licenses/${lid}`, '/portal/accounts', '/portal/products']) {
  await vpage.goto(`${base}${p}`);
  assert.equal(await vpage.locator('form[method="post"]').count(), 1, `${p}: only the sign-out form`);
  for (const name of ['New license', 'New account', 'New product', 'Revoke', 'Suspend', 'Edit terms', 'Issue token']) {
    assert.equal(await vpage.getByText(name, { exact: true }).count(), 0, `${p} shows ${name}`);
  }
}
await vpage.goto(`${base}/portal/licenses`);
await check(vpage, '14-viewer-licenses');
const csrf = await vpage.locator('input[name="csrf"]').first().inputValue();
const forged = await viewer.request.post(`${base}/portal/accounts`, {
  form: { csrf, company: 'Forged', slug: 'forged' },
  headers: { origin: base },
  maxRedirects: 0,
});
assert.equal(forged.status(), 403, 'a Viewer\'s forged POST');
assert.match(await forged.text(), /Permissions needed/);

// 390 px: the pages fit (tables scroll in their own box) and pass axe.
const mobile = await browser.newContext({ viewport: { width: 390, height: 844 }, storageState: await admin.storageState() });
const mpage = await mobile.newPage();
for (const [p, name] of [['/portal/', '15-mobile-dashboard'], [`/portal/licenses/${lid}`, '16-mobile-license'], ['/portal/licenses', '17-mobile-licenses']]) {
  await mpage.goto(`${base}${p}`);
  const width = await mpage.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 391, `${p} is ${width}px wide at 390px`);
  await check(mpage, name);
}

// Sign out.
await page.goto(`${base}/portal/`);
await page.getByRole('button', { name: 'Sign out' }).click();
await page.getByRole('heading', { name: 'Sign in to Charter' }).waitFor();
await page.goto(`${base}/portal/licenses`);
assert.match(page.url(), /\/portal\/login/);

await browser.close();
evil.close();
assert.deepEqual(outside, [], 'no request outside the issuer');
assert.deepEqual(axeFailures, [], 'axe: serious or critical violations');
console.log(`portal browser test passed in ${((Date.now() - started) / 1000).toFixed(1)} s; ${shots.length} screenshots in ${SHOTS}`);
process.exit(0);
