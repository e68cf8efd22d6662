// End-to-end test of examples/web against the handler, in headless Chromium.
//
// The page is served from http://localhost:<A> (serve.mjs), the handler runs on
// http://localhost:<B> with AllowedOrigins = the page's origin. Attackers: a cross-site page on
// http://127.0.0.1:<C> and a same-site page on http://localhost:<D> that is not allowed.
//
// Every test ends by checking that no refresh token was readable by script: not in
// document.cookie, localStorage, sessionStorage, nor in any response body the pages received.
//
// Second factors: passkeys through Chromium's DevTools virtual authenticator (one per tab, CTAP2,
// resident keys, user verification), TOTP with codes computed here (RFC 6238).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { startAll, USERS, ACCESS_LIFETIME_MS, REUSE_GRACE_MS, ISSUER, RP_ID } from './harness.mjs';

const REFRESH_COOKIE = '__Host-refresh_token';
const XSRF_COOKIE = 'XSRF-TOKEN';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let env;
const LIMIT = { timeout: 90_000 };

before(async () => {
  env = await startAll();
});

after(async () => {
  if (env) await env.stop();
});

// ---- recording what the browser sees ----------------------------------------------------------

/** A browser context (one cookie jar: one "device") whose responses are all recorded. */
async function device() {
  const context = await env.browser.newContext();
  const seen = { responses: [], bodies: [], refreshTokens: new Set(), pending: [] };
  context.on('response', (response) => {
    const entry = { url: response.url(), method: response.request().method(), status: response.status(), response };
    seen.responses.push(entry);
    seen.pending.push(
      (async () => {
        for (const value of await response.headerValues('set-cookie').catch(() => [])) {
          for (const line of value.split('\n')) {
            const match = new RegExp(`^${REFRESH_COOKIE}=([^;]*)`).exec(line.trim());
            if (match && match[1]) seen.refreshTokens.add(match[1]);
          }
        }
        // A body the page never consumed (nor cancelled) never finishes loading: the page did not
        // see it, so it is not waited for.
        const body = await Promise.race([response.body().catch(() => null), sleep(3000).then(() => null)]);
        if (body) seen.bodies.push({ url: entry.url, text: body.toString('utf8') });
      })(),
    );
  });
  return { context, seen };
}

async function refreshCookie(dev) {
  const cookies = await dev.context.cookies(env.authUrl);
  const cookie = cookies.find((c) => c.name === REFRESH_COOKIE);
  if (cookie) dev.seen.refreshTokens.add(cookie.value);
  return cookie ? cookie.value : null;
}

async function xsrfCookie(dev) {
  const cookies = await dev.context.cookies(env.authUrl);
  return cookies.find((c) => c.name === XSRF_COOKIE)?.value ?? null;
}

/** The refresh token never reached script: checked in every open page and every response body. */
async function assertNoLeak(dev) {
  await refreshCookie(dev);
  await Promise.all(dev.seen.pending);
  const tokens = [...dev.seen.refreshTokens];
  assert.ok(tokens.length > 0, 'the test saw no refresh token at all (nothing to check)');
  assert.ok(dev.seen.bodies.length > 0, 'no response body was recorded');
  for (const { url, text } of dev.seen.bodies) {
    for (const token of tokens) assert.ok(!text.includes(token), `a refresh token is in the body of ${url}`);
    assert.ok(!/"refresh_token"/.test(text), `a refresh_token field is in the body of ${url}`);
  }
  for (const page of dev.context.pages()) {
    const visible = await page.evaluate(() => ({
      cookie: document.cookie,
      local: JSON.stringify(Object.entries(localStorage)),
      session: JSON.stringify(Object.entries(sessionStorage)),
    }));
    assert.ok(!visible.cookie.includes(REFRESH_COOKIE), `${REFRESH_COOKIE} is readable from document.cookie`);
    for (const token of tokens) {
      for (const [where, text] of Object.entries(visible)) assert.ok(!text.includes(token), `a refresh token is in ${where}`);
    }
    assert.ok(!/eyJ[\w-]+\.[\w-]+\.[\w-]+/.test(visible.local + visible.session + visible.cookie), 'an access token is in storage');
  }
}

/** The handler's log lines of POST /api/<route> after `mark`, once `count` of them are there. */
async function servedSince(mark, route, count) {
  const deadline = Date.now() + 5000;
  for (;;) {
    const lines = env.requests().slice(mark).filter((l) => l.function === route && l.method === 'POST');
    if (lines.length >= count || Date.now() > deadline) {
      assert.equal(lines.length, count, `the service saw ${lines.length} POST /api/${route}, expected ${count}: ${JSON.stringify(lines)}`);
      return lines;
    }
    await sleep(50);
  }
}

function responsesTo(dev, path, method = 'POST') {
  return dev.seen.responses.filter((r) => new URL(r.url).pathname === path && r.method === method);
}

// ---- driving the page ----------------------------------------------------------------------------

async function openApp(dev, { autorefresh = false } = {}) {
  const page = await dev.context.newPage();
  await page.goto(`${env.pageUrl}/?autorefresh=${autorefresh ? 1 : 0}`);
  await page.waitForSelector('body[data-ready="true"]');
  return page;
}

async function loginWithForm(page, username) {
  await page.fill('input[name=username]', username);
  await page.fill('input[name=password]', USERS[username]);
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url() === `${env.authUrl}/api/token` && r.request().method() === 'POST', { timeout: 10_000 }),
    page.click('#login-button'),
  ]);
  await page.waitForSelector('#status[data-state="in"]');
  return response;
}

const accessToken = (page) => page.evaluate(() => window.app.accessToken);
const claimsOf = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'));

async function callApi(page) {
  return page.evaluate(async () => {
    const response = await window.app.fetch('/api/hello');
    return { status: response.status, body: await response.json() };
  });
}

/** A cookie refresh sent by hand from `page`, bypassing the client: what an attacker's script can do. */
function rawCookieRequest(page, url, { xsrf, mode = 'cors' } = {}) {
  return page.evaluate(
    async ({ url, xsrf, mode }) => {
      try {
        const response = await fetch(url, {
          method: 'POST',
          credentials: 'include',
          mode,
          headers: xsrf ? { 'X-XSRF-TOKEN': xsrf } : {},
        });
        return { status: response.status, type: response.type, text: mode === 'no-cors' ? '' : await response.text() };
      } catch (error) {
        return { error: error.name };
      }
    },
    { url, xsrf, mode },
  );
}

/** Auto-submitted cross-origin form POST from `page`'s site; the status the service answered. */
async function formPost(page, attackerUrl, target) {
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url() === target && r.request().method() === 'POST'),
    page.goto(`${attackerUrl}/form?action=${encodeURIComponent(target)}`),
  ]);
  return { status: response.status(), text: (await response.body().catch(() => Buffer.from(''))).toString('utf8') };
}

/**
 * Nothing rotated or ended: the victim's cookie is the one it had, and after the reuse grace (so
 * that a rotation by the attacker would now make this token a reuse that ends the session) the
 * victim still refreshes, rotating that very token, and calls the API.
 */
async function assertVictimIntact(victim, page, before) {
  assert.equal(await refreshCookie(victim), before.refresh, 'the victim\'s refresh cookie changed');
  assert.equal(await xsrfCookie(victim), before.xsrf, 'the victim\'s XSRF cookie changed');
  await sleep(REUSE_GRACE_MS + 300);
  const old = await accessToken(page);
  const fresh = await page.evaluate((stale) => window.app.refresh(stale), old);
  assert.notEqual(fresh, old);
  const rotated = await refreshCookie(victim);
  assert.ok(rotated && rotated !== before.refresh, 'the victim\'s refresh did not rotate its cookie');
  assert.equal((await callApi(page)).status, 200);
}

async function victimState(victim) {
  return { refresh: await refreshCookie(victim), xsrf: await xsrfCookie(victim) };
}

const altered = (value) => `${value.slice(0, -1)}${value.endsWith('A') ? 'B' : 'A'}`;

function assertAccessDenied(result, what) {
  assert.equal(result.status, 403, `${what}: expected 403, got ${JSON.stringify(result)}`);
  assert.equal(JSON.parse(result.text).error, 'access_denied', `${what}: ${result.text}`);
}

// ---- the flow ------------------------------------------------------------------------------------

test('login sets the HttpOnly cookie, hands the page only the access token; the API answers', LIMIT, async () => {
  const dev = await device();
  const page = await openApp(dev);
  assert.equal(await page.getAttribute('#status', 'data-state'), 'out');
  const response = await loginWithForm(page, 'alice');

  assert.equal(response.status(), 200);
  const body = await response.json();
  assert.equal(body.token_type, 'DPoP', 'the example binds its tokens to its DPoP key');
  assert.ok(response.request().headers().dpop, 'the login carried a DPoP proof');
  assert.equal(typeof body.access_token, 'string');
  assert.equal(body.expires_in, ACCESS_LIFETIME_MS / 1000);
  assert.equal(typeof body.refresh_expires_in, 'number');
  assert.ok(!('refresh_token' in body), 'cookie transport must not put the refresh token in the body');
  assert.equal(response.request().headers()['x-token-transport'], 'cookie');

  const cookies = (await response.headerValues('set-cookie')).flatMap((v) => v.split('\n'));
  const refreshLine = cookies.find((c) => c.startsWith(`${REFRESH_COOKIE}=`));
  const xsrfLine = cookies.find((c) => c.startsWith(`${XSRF_COOKIE}=`));
  assert.ok(refreshLine, `no ${REFRESH_COOKIE} in ${JSON.stringify(cookies)}`);
  for (const attribute of [/;\s*HttpOnly/i, /;\s*Secure/i, /;\s*SameSite=Strict/i, /;\s*Path=\//i, /;\s*Max-Age=\d+/i]) {
    assert.match(refreshLine, attribute);
  }
  assert.ok(xsrfLine && !/HttpOnly/i.test(xsrfLine), 'XSRF-TOKEN must be readable by script');
  const xsrf = await response.headerValue('x-xsrf-token');
  assert.ok(xsrf, 'no X-XSRF-TOKEN response header (is it exposed by CORS?)');
  assert.equal(await xsrfCookie(dev), xsrf);
  assert.equal(await page.evaluate(() => document.cookie), `${XSRF_COOKIE}=${xsrf}`);

  assert.equal(claimsOf(await accessToken(page)).name, 'alice');
  await page.click('#call-api');
  await page.waitForFunction(() => document.getElementById('api-result').textContent.startsWith('200'));
  assert.match(await page.textContent('#api-result'), /hello, alice/);
  await assertNoLeak(dev);
  await dev.context.close();
});

test('silent refresh before the access token expires rotates the cookie, keeps the XSRF value', LIMIT, async () => {
  const dev = await device();
  const page = await openApp(dev, { autorefresh: true });
  await loginWithForm(page, 'alice');
  const first = await accessToken(page);
  const exp = claimsOf(first).exp * 1000;
  const before = await victimState(dev);

  const refresh = await page.waitForResponse(
    (r) => r.url() === `${env.authUrl}/api/refresh` && r.request().method() === 'POST',
    { timeout: ACCESS_LIFETIME_MS + 5000 },
  );
  const at = Date.now();
  assert.equal(refresh.status(), 200);
  assert.ok(at < exp, `the refresh came ${at - exp} ms after the token expired`);
  await page.waitForFunction((old) => window.app.accessToken !== old, first);
  assert.notEqual(await refreshCookie(dev), before.refresh, 'the refresh cookie did not rotate');
  assert.equal(await xsrfCookie(dev), before.xsrf, 'the XSRF value is bound to the session and must not change');
  assert.equal(await refresh.headerValue('x-xsrf-token'), before.xsrf);
  assert.equal((await callApi(page)).status, 200);
  await assertNoLeak(dev);
  await dev.context.close();
});

test('an access token the API finds expired: 401 Token-Expired, one refresh, one retry', LIMIT, async () => {
  const dev = await device();
  const page = await dev.context.newPage();
  // The page's clock runs a minute behind (a laptop that woke up, a skewed clock), so the client
  // believes its token good and sends it: the API, on the real clock, answers 401 Token-Expired.
  await page.clock.install();
  await page.goto(`${env.pageUrl}/?autorefresh=0`);
  await page.waitForSelector('body[data-ready="true"]');
  await loginWithForm(page, 'alice');
  const first = await accessToken(page);
  await page.clock.setSystemTime(Date.now() - 60_000);
  await sleep(Math.max(0, claimsOf(first).exp * 1000 - Date.now()) + 300);
  const seenBefore = dev.seen.responses.length;

  const result = await callApi(page);
  assert.equal(result.status, 200, JSON.stringify(result));
  assert.equal(result.body.message, 'hello, alice');
  const sequence = dev.seen.responses.slice(seenBefore).filter((r) => r.method !== 'OPTIONS' && new URL(r.url).pathname.startsWith('/api/'));
  const path = (r) => new URL(r.url).pathname;
  assert.deepEqual(sequence.map((r) => `${r.method} ${path(r)} ${r.status}`), [
    'GET /api/hello 401',
    'POST /api/refresh 200',
    'GET /api/hello 200',
  ]);
  const rejected = sequence[0].response;
  assert.equal(await rejected.headerValue('token-expired'), 'true');
  assert.match(await rejected.headerValue('www-authenticate'), /^DPoP error="invalid_token"/);
  assert.notEqual(await accessToken(page), first);
  await assertNoLeak(dev);
  await dev.context.close();
});

test('two tabs refreshing at once: one refresh goes out, both tabs get its token (Web Locks + BroadcastChannel)', LIMIT, async () => {
  const dev = await device();
  const tab1 = await openApp(dev);
  const tab2 = await openApp(dev);
  await loginWithForm(tab1, 'alice');
  // tab2 was open before the login: it gets the access token over the BroadcastChannel.
  await tab2.waitForFunction(() => window.app.loggedIn);
  const first = await accessToken(tab1);
  assert.equal(await accessToken(tab2), first);
  const before = await victimState(dev);
  const refreshesBefore = responsesTo(dev, '/api/refresh').length;

  // Both tabs decide at the same instant that `first` is no good any more.
  const at = Date.now() + 300;
  const [a, b] = await Promise.all(
    [tab1, tab2].map((tab) =>
      tab.evaluate(
        ({ at, stale }) => new Promise((resolve, reject) =>
          setTimeout(() => window.app.refresh(stale).then(resolve, reject), Math.max(0, at - Date.now()))),
        { at, stale: first },
      ),
    ),
  );
  assert.notEqual(a, first);
  assert.equal(a, b, 'the two tabs ended with different access tokens');
  const refreshes = responsesTo(dev, '/api/refresh').slice(refreshesBefore);
  assert.deepEqual(refreshes.map((r) => r.status), [200], 'exactly one refresh request, answered 200');
  const successor = await refreshCookie(dev);
  assert.notEqual(successor, before.refresh);

  // The session goes on from that one successor, from either tab.
  const next = await tab2.evaluate((stale) => window.app.refresh(stale), b);
  assert.notEqual(next, b);
  await tab1.waitForFunction((token) => window.app.accessToken === token, next);
  assert.notEqual(await refreshCookie(dev), successor);
  assert.equal((await callApi(tab1)).status, 200);
  assert.equal((await callApi(tab2)).status, 200);
  await assertNoLeak(dev);
  await dev.context.close();
});

test('two tabs refreshing at once without coordination: the service issues one successor', LIMIT, async () => {
  const dev = await device();
  const tab1 = await openApp(dev);
  const tab2 = await openApp(dev);
  await loginWithForm(tab1, 'alice');
  const before = await victimState(dev);
  const refreshesBefore = responsesTo(dev, '/api/refresh').length;

  // Raw cookie refreshes from both tabs at the same instant, past the Web Locks of the client.
  const at = Date.now() + 300;
  const results = await Promise.all(
    [tab1, tab2].map((tab) =>
      tab.evaluate(
        async ({ at, url, xsrf }) => {
          const proof = await window.app.dpopProof('POST', url);
          return new Promise((resolve) => setTimeout(() => {
          fetch(url, { method: 'POST', credentials: 'include', headers: { 'X-XSRF-TOKEN': xsrf, DPoP: proof } })
            .then(async (response) => resolve({ status: response.status, text: await response.text() }))
            .catch((error) => resolve({ error: String(error) }));
        }, Math.max(0, at - Date.now())));
        },
        { at, url: `${env.authUrl}/api/refresh`, xsrf: before.xsrf },
      ),
    ),
  );
  assert.deepEqual(results.map((r) => r.status), [200, 200], JSON.stringify(results));
  for (const { text } of results) assert.ok(!('refresh_token' in JSON.parse(text)));
  const refreshes = responsesTo(dev, '/api/refresh').slice(refreshesBefore);
  assert.equal(refreshes.length, 2);
  const successors = await Promise.all(
    refreshes.map(async (r) => {
      const lines = (await r.response.headerValues('set-cookie')).flatMap((v) => v.split('\n'));
      return new RegExp(`^${REFRESH_COOKIE}=([^;]+)`).exec(lines.find((l) => l.startsWith(`${REFRESH_COOKIE}=`)) ?? '')?.[1];
    }),
  );
  assert.ok(successors[0], 'the refresh did not set a new refresh cookie');
  assert.equal(successors[0], successors[1], 'two different successors: the session forked');
  assert.notEqual(successors[0], before.refresh);
  assert.equal(await refreshCookie(dev), successors[0]);

  // A further refresh (after the grace, so that a fork would now be a reuse) works.
  await sleep(REUSE_GRACE_MS + 300);
  const stale = await accessToken(tab1);
  const next = await tab1.evaluate((token) => window.app.refresh(token), stale);
  assert.notEqual(next, stale);
  assert.equal((await callApi(tab2)).status, 200);
  await assertNoLeak(dev);
  await dev.context.close();
});

test('a reload and a new tab resume the session through the cookie', LIMIT, async () => {
  const dev = await device();
  const page = await openApp(dev);
  await loginWithForm(page, 'alice');
  const first = await accessToken(page);
  await page.reload();
  await page.waitForSelector('body[data-ready="true"]');
  assert.equal(await page.getAttribute('#status', 'data-state'), 'in');
  const resumed = await accessToken(page);
  assert.ok(resumed && resumed !== first, 'the reloaded page has no new access token');
  assert.equal(claimsOf(resumed).sid, claimsOf(first).sid, 'a reload must continue the same session');
  assert.equal((await callApi(page)).status, 200);

  const other = await openApp(dev);
  assert.equal(await other.getAttribute('#status', 'data-state'), 'in');
  assert.equal(claimsOf(await accessToken(other)).sid, claimsOf(first).sid);
  assert.equal((await callApi(other)).status, 200);
  await assertNoLeak(dev);
  await dev.context.close();
});

test('log out ends the session, clears both cookies, and logs out the other tabs', LIMIT, async () => {
  const dev = await device();
  const page = await openApp(dev);
  const other = await openApp(dev);
  await loginWithForm(page, 'alice');
  await other.waitForFunction(() => window.app.loggedIn);
  const token = await refreshCookie(dev);
  const [revoke] = await Promise.all([
    page.waitForResponse((r) => r.url() === `${env.authUrl}/api/revoke` && r.request().method() === 'POST'),
    page.click('#logout'),
  ]);
  assert.equal(revoke.status(), 200);
  const cleared = (await revoke.headerValues('set-cookie')).flatMap((v) => v.split('\n'));
  for (const name of [REFRESH_COOKIE, XSRF_COOKIE]) {
    assert.ok(cleared.some((c) => c.startsWith(`${name}=`) && /Max-Age=0/i.test(c)), `${name} not cleared: ${JSON.stringify(cleared)}`);
  }
  await page.waitForSelector('#status[data-state="out"]');
  await other.waitForSelector('#status[data-state="out"]');
  assert.equal(await refreshCookie(dev), null);
  assert.equal(await xsrfCookie(dev), null);
  assert.equal(await page.evaluate(() => localStorage.length), 0);

  // The ended session's token is refused even when presented directly.
  const replay = await fetch(`${env.authUrl.replace('localhost', '127.0.0.1')}/api/refresh`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ refresh_token: token }),
  });
  assert.equal(replay.status, 400);
  assert.equal((await replay.json()).error, 'invalid_grant');

  await page.reload();
  await page.waitForSelector('body[data-ready="true"]');
  assert.equal(await page.getAttribute('#status', 'data-state'), 'out');
  await assertNoLeak(dev);
  await dev.context.close();
});

test('log out everywhere (Bearer, scope=global) ends the sessions on every device', LIMIT, async () => {
  const laptop = await device();
  const phone = await device();
  const laptopPage = await openApp(laptop);
  const phonePage = await openApp(phone);
  await loginWithForm(laptopPage, 'alice');
  await loginWithForm(phonePage, 'alice');
  assert.notEqual(claimsOf(await accessToken(laptopPage)).sid, claimsOf(await accessToken(phonePage)).sid);

  const [revoke] = await Promise.all([
    laptopPage.waitForResponse((r) => r.url() === `${env.authUrl}/api/revoke` && r.request().headers().authorization),
    laptopPage.click('#logout-everywhere'),
  ]);
  assert.equal(revoke.status(), 200);
  assert.match(revoke.request().headers().authorization, /^DPoP ey/);
  assert.deepEqual(JSON.parse(revoke.request().postData()), { scope: 'global' });
  await laptopPage.waitForSelector('#status[data-state="out"]');

  // The phone's session ended too: its next refresh fails and the page shows it logged out.
  const outcome = await phonePage.evaluate(() => window.app.refresh().then(() => 'refreshed', (e) => e.name));
  assert.equal(outcome, 'LoggedOutError');
  await phonePage.waitForSelector('#status[data-state="out"]');
  const phoneRefresh = responsesTo(phone, '/api/refresh').at(-1);
  assert.equal(phoneRefresh.status, 400);
  await laptopPage.reload();
  await laptopPage.waitForSelector('body[data-ready="true"]');
  assert.equal(await laptopPage.getAttribute('#status', 'data-state'), 'out');
  await assertNoLeak(laptop);
  await assertNoLeak(phone);
  await laptop.context.close();
  await phone.context.close();
});

// ---- attacks: each must fail and change nothing ----------------------------------------------------

async function victim() {
  const dev = await device();
  const page = await openApp(dev);
  await loginWithForm(page, 'alice');
  return { dev, page, before: await victimState(dev) };
}

for (const [label, site] of [
  ['a cross-site page (127.0.0.1)', 'crossSiteUrl'],
  ['a same-site page on an origin that is not allowed (localhost, other port)', 'sameSiteUrl'],
]) {
  test(`${label} cannot refresh or revoke with the victim's cookies`, LIMIT, async () => {
    const { dev, page, before } = await victim();
    const evil = await dev.context.newPage(); // the victim's browser, another tab
    await evil.goto(`${env[site]}/`);
    // What the attacker can see: on the same host (cookies ignore ports) XSRF-TOKEN is readable.
    const stolen = await evil.evaluate(() => /(?:^|;\s*)XSRF-TOKEN=([^;]*)/.exec(document.cookie)?.[1] ?? null);
    if (site === 'sameSiteUrl') assert.equal(stolen, before.xsrf, 'expected the same-site page to read XSRF-TOKEN');
    else assert.equal(stolen, null);

    for (const route of ['refresh', 'revoke']) {
      const url = `${env.authUrl}/api/${route}`;
      const mark = env.requests().length;
      // 1. fetch with the cookies, no header: a simple request, it reaches the service.
      const plain = await rawCookieRequest(evil, url);
      assert.equal(plain.error, 'TypeError', `the page could read the answer: ${JSON.stringify(plain)}`);
      // 2. no-cors: the same request, answer opaque.
      const opaque = await rawCookieRequest(evil, url, { mode: 'no-cors' });
      assert.equal(opaque.type, 'opaque');
      // 3. with the XSRF value (read from document.cookie, or a guess): the preflight is refused,
      //    so the browser never sends the request.
      const preflighted = await rawCookieRequest(evil, url, { xsrf: stolen ?? before.xsrf });
      assert.equal(preflighted.error, 'TypeError');
      // 4. an auto-submitted HTML form (top-level navigation POST).
      const form = await formPost(evil, env[site], url);
      if (site === 'sameSiteUrl') assertAccessDenied(form, `form ${route} from ${env[site]}`);
      else assert.ok(form.status >= 400 && form.status < 500, `form ${route} answered ${form.status}`);
      // What the service answered (its request log): 1, 2 and 4 arrived, 3 never got past the preflight.
      const served = await servedSince(mark, route, 3);
      for (const line of served) {
        if (site === 'sameSiteUrl') assert.deepEqual([line.status, line.outcome], [403, 'access_denied'], JSON.stringify(line));
        else assert.ok(line.status >= 400 && line.status < 500, JSON.stringify(line));
      }
      await evil.goto(`${env[site]}/`);
    }
    await evil.close();
    await assertVictimIntact(dev, page, before);
    await assertNoLeak(dev);
    await dev.context.close();
  });
}

test('a valid XSRF value of another session is refused, and so is a request without one', LIMIT, async () => {
  const { dev, page, before } = await victim();
  const other = await device();
  const otherPage = await openApp(other);
  const login = await loginWithForm(otherPage, 'bob');
  const foreign = await login.headerValue('x-xsrf-token');
  assert.ok(foreign && foreign !== before.xsrf, 'two sessions must have different XSRF values');

  for (const route of ['refresh', 'revoke']) {
    const url = `${env.authUrl}/api/${route}`;
    // From the allowed origin itself, with the victim's cookies.
    assertAccessDenied(await rawCookieRequest(page, url, { xsrf: foreign }), `${route} with another session's XSRF value`);
    assertAccessDenied(await rawCookieRequest(page, url), `${route} without X-XSRF-TOKEN`);
    assertAccessDenied(await rawCookieRequest(page, url, { xsrf: altered(before.xsrf) }), `${route} with an altered XSRF value`);
  }
  await assertVictimIntact(dev, page, before);
  // The other session is untouched as well.
  assert.equal((await callApi(otherPage)).status, 200);
  await assertNoLeak(dev);
  await assertNoLeak(other);
  await other.context.close();
  await dev.context.close();
});

test('the service itself refuses a cookie request with the right XSRF value from a disallowed or missing Origin', LIMIT, async () => {
  // What no browser sends (CORS stops it first), but a proxy, a non-browser client or a browser
  // bug could: the Origin check stands on its own.
  const { dev, page, before } = await victim();
  const cookie = `${REFRESH_COOKIE}=${before.refresh}; ${XSRF_COOKIE}=${before.xsrf}`;
  const direct = env.authUrl.replace('localhost', '127.0.0.1');
  for (const route of ['refresh', 'revoke']) {
    for (const origin of [env.sameSiteUrl, env.crossSiteUrl, 'null', undefined]) {
      const headers = { Cookie: cookie, 'X-XSRF-TOKEN': before.xsrf };
      if (origin) headers.Origin = origin;
      const response = await fetch(`${direct}/api/${route}`, { method: 'POST', headers });
      const text = await response.text();
      assertAccessDenied({ status: response.status, text }, `${route} with Origin ${origin ?? '(none)'}`);
      assert.equal(response.headers.get('set-cookie'), null);
      assert.ok(!text.includes(before.refresh));
    }
  }
  await assertVictimIntact(dev, page, before);
  await assertNoLeak(dev);
  await dev.context.close();
});

test('CORS: the allowed origin gets credentials and the exposed headers, others get no CORS headers', LIMIT, async () => {
  const direct = env.authUrl.replace('localhost', '127.0.0.1');
  const preflight = (origin) =>
    fetch(`${direct}/api/refresh`, {
      method: 'OPTIONS',
      headers: { Origin: origin, 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'x-xsrf-token' },
    });
  const allowed = await preflight(env.pageUrl);
  assert.equal(allowed.status, 204);
  assert.equal(allowed.headers.get('access-control-allow-origin'), env.pageUrl);
  assert.equal(allowed.headers.get('access-control-allow-credentials'), 'true');
  assert.match(allowed.headers.get('access-control-allow-headers') ?? '', /X-XSRF-TOKEN/i);
  assert.match(allowed.headers.get('access-control-allow-headers') ?? '', /X-Token-Transport/i);
  assert.match(allowed.headers.get('vary') ?? '', /Origin/i);
  for (const origin of [env.sameSiteUrl, env.crossSiteUrl]) {
    const refused = await preflight(origin);
    assert.equal(refused.headers.get('access-control-allow-origin'), null, `${origin} got CORS headers`);
    assert.equal(refused.headers.get('access-control-allow-credentials'), null);
  }
  const actual = await fetch(`${direct}/api/jwks`, { headers: { Origin: env.pageUrl } });
  const exposed = (actual.headers.get('access-control-expose-headers') ?? '').toLowerCase();
  for (const name of ['x-xsrf-token', 'token-expired', 'www-authenticate', 'retry-after']) assert.ok(exposed.includes(name), `${name} not exposed`);
});

test('DPoP: the key is non-extractable in IndexedDB; a copied cookie and XSRF value cannot refresh without it', LIMIT, async () => {
  const dev = await device();
  const page = await openApp(dev);
  await loginWithForm(page, 'alice');
  const jkt = claimsOf(await accessToken(page)).cnf?.jkt;
  assert.ok(jkt, 'the access token is bound to a key (cnf.jkt)');
  // The private key lives in IndexedDB and cannot be exported by any script of the page.
  const key = await page.evaluate(async () => {
    const { dpopKeyPair } = await import('./token-client.js');
    const pair = await dpopKeyPair();
    const exported = await crypto.subtle.exportKey('jwk', pair.privateKey).then(() => 'exported', (e) => e.name);
    return { extractable: pair.privateKey.extractable, algorithm: pair.privateKey.algorithm.namedCurve, exported };
  });
  assert.deepEqual(key, { extractable: false, algorithm: 'P-256', exported: 'InvalidAccessError' });

  // A thief with the cookie and the XSRF value (exfiltrated), sending them with the allowed Origin
  // from outside the browser: without the key, and then with a key of its own.
  const stolen = await victimState(dev);
  const url = `${env.authUrl}/api/refresh`;
  const steal = async (proof) => {
    const headers = { Cookie: `${REFRESH_COOKIE}=${stolen.refresh}`, 'X-XSRF-TOKEN': stolen.xsrf, Origin: env.pageUrl };
    if (proof) headers.DPoP = proof;
    const r = await fetch(url, { method: 'POST', headers });
    return { status: r.status, body: await r.json(), cookies: r.headers.getSetCookie() };
  };
  const bare = await steal(null);
  assert.equal(bare.status, 400, JSON.stringify(bare));
  assert.equal(bare.body.error, 'invalid_dpop_proof');
  assert.deepEqual(bare.cookies, [], 'a refused proof clears no cookie');
  const own = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']);
  const { kty, crv, x, y } = await crypto.subtle.exportKey('jwk', own.publicKey);
  const enc = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const input = `${enc({ typ: 'dpop+jwt', alg: 'ES256', jwk: { kty, crv, x, y } })}.${enc({
    jti: crypto.randomUUID(), htm: 'POST', htu: `${ISSUER}/api/refresh`, iat: Math.floor(Date.now() / 1000) })}`;
  const signature = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, own.privateKey, Buffer.from(input));
  const withOwnKey = await steal(`${input}.${Buffer.from(signature).toString('base64url')}`);
  assert.equal(withOwnKey.status, 400, JSON.stringify(withOwnKey));
  assert.equal(withOwnKey.body.error, 'invalid_dpop_proof');
  assert.match(withOwnKey.body.error_description, /not the key this session is bound to/);

  // The real page still refreshes (nothing was rotated or ended), and a reload keeps the key.
  assert.equal(await refreshCookie(dev), stolen.refresh, 'the refused attempts rotated nothing');
  const stale = await accessToken(page);
  const next = await page.evaluate((token) => window.app.refresh(token), stale);
  assert.notEqual(next, stale);
  await page.reload();
  await page.waitForSelector('body[data-ready="true"]');
  assert.equal(await page.getAttribute('#status', 'data-state'), 'in');
  assert.equal(claimsOf(await accessToken(page)).cnf.jkt, jkt, 'the same key after a reload');
  assert.equal((await callApi(page)).status, 200);
  await assertNoLeak(dev);
  await dev.context.close();
});

// ---- second factors: passkeys and an authenticator app ----------------------------------------------

/** A virtual authenticator in `page`'s tab (it stays with the tab across navigations). */
async function virtualAuthenticator(dev, page) {
  const cdp = await dev.context.newCDPSession(page);
  await cdp.send('WebAuthn.enable', { enableUI: false });
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      transport: 'internal',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  return { credentials: async () => (await cdp.send('WebAuthn.getCredentials', { authenticatorId })).credentials };
}

const serviceResponse = (page, route, method = 'POST') =>
  page.waitForResponse((r) => r.url() === `${env.authUrl}/api/${route}` && r.request().method() === method, { timeout: 10_000 });

/**
 * Clicks `selector` and waits for the service's answer to `route`, or for the page to show an
 * error in `errorSelector` (then fails with it, at once rather than at a timeout).
 */
async function clickUntilAnswer(page, selector, route, errorSelector) {
  const answered = serviceResponse(page, route);
  const failed = page.waitForSelector(`${errorSelector}:not(:empty)`, { timeout: 10_000 }).then(() => page.textContent(errorSelector));
  answered.catch(() => {});
  failed.catch(() => {});
  await page.click(selector);
  const first = await Promise.race([answered, failed]);
  if (typeof first === 'string') assert.fail(`the page showed an error instead of POST /api/${route}: ${first}`);
  return first;
}

/** Submits the login form; the service's answer (200, or 401 mfa_required), whatever follows. */
async function submitLogin(page, username) {
  await page.fill('#login input[name=username]', username);
  await page.fill('#login input[name=password]', USERS[username]);
  const [response] = await Promise.all([serviceResponse(page, 'token'), page.click('#login-button')]);
  return response;
}

async function logout(page) {
  await page.click('#logout');
  await page.waitForSelector('#status[data-state="out"]');
}

/** Opens the "Second factors and passkeys" section and waits for its state. */
async function openSecurity(page) {
  await page.click('#security summary');
  await page.waitForSelector('#factors[data-totp]');
}

/** Adds a passkey through the page (the virtual authenticator answers); the finish answer. */
async function addPasskey(page, name) {
  const count = Number(await page.getAttribute('#factors', 'data-passkeys'));
  await page.fill('#passkey-add input[name=name]', name);
  const finish = await clickUntilAnswer(page, '#passkey-register', 'passkeys/register/finish', '#security-result');
  assert.equal(finish.status(), 201, await finish.text());
  await page.waitForSelector(`#factors[data-passkeys="${count + 1}"]`);
  return finish.json();
}

/** A signed-in `username` with a passkey on this tab's virtual authenticator. */
async function withPasskey(username) {
  const dev = await device();
  const page = await openApp(dev);
  const authenticator = await virtualAuthenticator(dev, page);
  await loginWithForm(page, username);
  await openSecurity(page);
  const registered = await addPasskey(page, `${username}'s test key`);
  return { dev, page, authenticator, registered };
}

/** Clicks a passkey button; the service's answer to login/finish once the page is signed in. */
async function passkeyButton(page, selector) {
  const errors = selector === '#mfa-passkey' ? '#mfa-error' : '#login-error';
  const finish = await clickUntilAnswer(page, selector, 'passkeys/login/finish', errors);
  assert.equal(finish.status(), 200, await finish.text());
  await page.waitForSelector('#status[data-state="in"]');
  return finish;
}

// RFC 4226 / RFC 6238 (SHA-1), for the authenticator app the test plays.
function base32(text) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of text.replace(/=+$/, '').toUpperCase()) bits += alphabet.indexOf(c).toString(2).padStart(5, '0');
  return Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
}

function hotp(key, counter, digits = 6) {
  const message = Buffer.alloc(8);
  message.writeBigUInt64BE(BigInt(counter));
  const mac = createHmac('sha1', key).update(message).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  const value = (mac.readUInt32BE(offset) & 0x7fffffff) % 10 ** digits;
  return String(value).padStart(digits, '0');
}

const TOTP_STEP_S = 30;
const totpStep = () => Math.floor(Date.now() / 1000 / TOTP_STEP_S);

test('RFC 6238 appendix B: the test\'s TOTP generator (SHA-1, T = 59 s)', () => {
  const seed = Buffer.from('12345678901234567890');
  assert.equal(hotp(seed, Math.floor(59 / TOTP_STEP_S), 8), '94287082');
  assert.equal(hotp(seed, Math.floor(1111111109 / TOTP_STEP_S), 8), '07081804');
  assert.equal(hotp(seed, Math.floor(59 / TOTP_STEP_S)), '287082', 'six digits: the last six');
  assert.deepEqual(base32('GEZDGNBVGY3TQOJQ'), Buffer.from('1234567890'));
});

test('passkeys: a signed-in user registers one; the authenticator holds one resident credential', LIMIT, async () => {
  const dev = await device();
  const page = await openApp(dev);
  const authenticator = await virtualAuthenticator(dev, page);
  await loginWithForm(page, 'carol');
  const sub = claimsOf(await accessToken(page)).sub;
  await openSecurity(page);
  assert.equal(await page.getAttribute('#factors', 'data-passkeys'), '0');

  const [start, registered] = await Promise.all([serviceResponse(page, 'passkeys/register/start'), addPasskey(page, 'test laptop')]);
  // The creation options: this RP, this user, a discoverable credential with user verification.
  const { options } = await start.json();
  assert.equal(options.publicKey.rp.id, RP_ID);
  assert.equal(options.publicKey.user.name, 'carol');
  assert.equal(options.publicKey.authenticatorSelection.residentKey, 'required');
  assert.equal(options.publicKey.authenticatorSelection.userVerification, 'required');
  assert.match(start.request().headers().authorization, /^DPoP ey/, 'register/start carries the DPoP-bound access token');

  const { passkey, recovery_codes: codes } = registered;
  assert.equal(passkey.name, 'test laptop');
  assert.equal(passkey.last_used_at, null);
  assert.equal(codes.length, 10, 'the first second factor comes with ten recovery codes');
  assert.deepEqual(await page.$$eval('#recovery-codes li', (items) => items.map((i) => i.textContent)), codes);
  assert.match(await page.textContent('#passkeys'), /test laptop/);

  const credentials = await authenticator.credentials();
  assert.equal(credentials.length, 1, JSON.stringify(credentials));
  const [credential] = credentials;
  assert.equal(credential.isResidentCredential, true);
  assert.equal(credential.rpId, RP_ID);
  assert.equal(Buffer.from(credential.credentialId, 'base64').toString('base64url'), passkey.id);
  // The user handle is the account's id (a UUID), not its name.
  assert.equal(Buffer.from(credential.userHandle, 'base64').toString('hex'), sub.replace(/-/g, ''));
  const listed = await page.evaluate(() => window.app.passkeys());
  assert.deepEqual(listed.map((p) => p.id), [passkey.id]);
  const state = await page.evaluate(() => window.app.factors());
  assert.equal(state.recovery_codes_left, 10);
  await assertNoLeak(dev);
  await dev.context.close();
});

test('passkeys: after logging out, "Sign in with a passkey" signs in without a password', LIMIT, async () => {
  const { dev, page, registered } = await withPasskey('dave');
  const passwordSession = claimsOf(await accessToken(page)).sid;
  await logout(page);
  assert.equal(await page.inputValue('#login input[name=password]'), '');

  const finish = await passkeyButton(page, '#passkey-login');
  const request = finish.request();
  assert.equal(request.headers()['x-token-transport'], 'cookie');
  assert.ok(request.headers().dpop, 'the passkey sign-in carried a DPoP proof');
  assert.ok(!('mfa_token' in JSON.parse(request.postData())));
  const body = await finish.json();
  assert.equal(body.token_type, 'DPoP');
  assert.ok(!('refresh_token' in body));
  assert.ok(await refreshCookie(dev), 'the passkey sign-in set the refresh cookie');

  const claims = claimsOf(await accessToken(page));
  assert.equal(claims.name, 'dave');
  assert.ok(claims.cnf?.jkt, 'the tokens are bound to the DPoP key');
  assert.notEqual(claims.sid, passwordSession);
  assert.ok(claims.amr.includes('mfa'), `amr ${claims.amr}`);
  assert.ok(claims.amr.includes('hwk') || claims.amr.includes('swk'), `amr ${claims.amr}`);
  assert.ok(!claims.amr.includes('pwd'), `amr ${claims.amr}`);
  const result = await callApi(page);
  assert.equal(result.status, 200);
  assert.equal(result.body.message, 'hello, dave');
  const [used] = await page.evaluate(() => window.app.passkeys());
  assert.equal(used.id, registered.passkey.id);
  assert.ok(used.last_used_at, 'the sign-in was recorded');
  // A reload resumes the passkey's session through the cookie, like a password login's.
  await page.reload();
  await page.waitForSelector('body[data-ready="true"]');
  assert.equal(await page.getAttribute('#status', 'data-state'), 'in');
  assert.equal(claimsOf(await accessToken(page)).sid, claims.sid);
  await assertNoLeak(dev);
  await dev.context.close();
});

test('passkeys: as the second factor, the password login answers mfa_required and the passkey completes it', LIMIT, async () => {
  const { dev, page } = await withPasskey('erin');
  await logout(page);

  const first = await submitLogin(page, 'erin');
  assert.equal(first.status(), 401);
  const required = await first.json();
  assert.equal(required.error, 'mfa_required');
  assert.equal(typeof required.mfa_token, 'string');
  assert.ok(required.factors.includes('webauthn'), JSON.stringify(required.factors));
  assert.ok(!('access_token' in required));
  assert.equal(await refreshCookie(dev), null, 'no session before the second step');
  await page.waitForSelector('#status[data-state="mfa"]');
  assert.equal(await page.isVisible('#mfa-passkey'), true);
  // The mfa_token stays in memory: not in storage, not in the page's DOM.
  const visible = await page.evaluate(() => JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage), document.body.innerHTML]));
  assert.ok(!visible.includes(required.mfa_token), 'the mfa_token is readable in storage or the DOM');

  const [start, finish] = await Promise.all([serviceResponse(page, 'passkeys/login/start'), passkeyButton(page, '#mfa-passkey')]);
  assert.deepEqual(JSON.parse(start.request().postData()), { mfa_token: required.mfa_token });
  const allowed = (await start.json()).options.publicKey.allowCredentials;
  assert.equal(allowed.length, 1, 'a second factor names the user\'s passkeys');
  assert.equal(JSON.parse(finish.request().postData()).mfa_token, required.mfa_token);
  const claims = claimsOf(await accessToken(page));
  assert.equal(claims.name, 'erin');
  for (const method of ['pwd', 'mfa']) assert.ok(claims.amr.includes(method), `amr ${claims.amr}`);
  assert.ok(claims.amr.includes('hwk') || claims.amr.includes('swk'), `amr ${claims.amr}`);
  assert.equal((await callApi(page)).status, 200);

  // The mfa_token was used up with the passkey: another good assertion with it is refused.
  const post = async (route, body) => {
    const r = await fetch(`${env.authUrl}/api/passkeys/${route}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    return { status: r.status, body: await r.json() };
  };
  const restart = await post('login/start', { mfa_token: required.mfa_token });
  assert.equal(restart.status, 200, JSON.stringify(restart));
  const credential = await page.evaluate(
    async (options) => (await import('./token-client.js')).getAssertion(options),
    restart.body.options,
  );
  const again = await post('login/finish', { ceremony: restart.body.ceremony, credential, mfa_token: required.mfa_token });
  assert.equal(again.status, 400, JSON.stringify(again));
  assert.equal(again.body.error, 'invalid_grant');
  assert.match(again.body.error_description, /used before/);
  await assertNoLeak(dev);
  await dev.context.close();
});

test('passkeys: an assertion made on another origin (same RP id, not allowed) is refused', LIMIT, async () => {
  const { dev, page, registered } = await withPasskey('frank');
  await logout(page);
  // The options come from the service (read here: CORS would not let that page read them).
  const start = await fetch(`${env.authUrl}/api/passkeys/login/start`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: '{}',
  });
  assert.equal(start.status, 200);
  const { options, ceremony } = await start.json();

  // The same tab (and authenticator) on http://localhost:<other port>: WebAuthn lets it use the
  // RP id localhost, so the authenticator signs — for that origin.
  await page.goto(`${env.sameSiteUrl}/`);
  const credential = await page.evaluate(async (publicKey) => {
    const bytes = (text) => Uint8Array.from(atob(text.replace(/-/g, '+').replace(/_/g, '/')), (c) => c.charCodeAt(0));
    const b64url = (buffer) => btoa(String.fromCharCode(...new Uint8Array(buffer))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
    const got = await navigator.credentials.get({
      publicKey: { ...publicKey, challenge: bytes(publicKey.challenge), allowCredentials: [] },
    });
    const r = got.response;
    return {
      id: got.id,
      rawId: b64url(got.rawId),
      type: got.type,
      response: {
        clientDataJSON: b64url(r.clientDataJSON),
        authenticatorData: b64url(r.authenticatorData),
        signature: b64url(r.signature),
        userHandle: r.userHandle ? b64url(r.userHandle) : null,
      },
      extensions: {},
    };
  }, options.publicKey);
  assert.equal(credential.id, registered.passkey.id);
  const clientData = JSON.parse(Buffer.from(credential.response.clientDataJSON, 'base64url').toString('utf8'));
  assert.equal(clientData.type, 'webauthn.get');
  assert.equal(clientData.origin, env.sameSiteUrl);

  const mark = env.requests().length;
  const finish = await fetch(`${env.authUrl}/api/passkeys/login/finish`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ ceremony, credential }),
  });
  const refused = await finish.json();
  assert.equal(finish.status, 400, JSON.stringify(refused));
  assert.equal(refused.error, 'invalid_grant');
  assert.ok(!('access_token' in refused) && !('refresh_token' in refused));
  assert.deepEqual(finish.headers.getSetCookie(), []);
  const [line] = await servedSince(mark, 'passkeys', 1);
  assert.deepEqual([line.status, line.outcome, line.reason], [400, 'invalid_grant', 'passkey_refused'], JSON.stringify(line));

  // The passkey itself is fine: on the app's origin it signs in.
  await page.goto(`${env.pageUrl}/?autorefresh=0`);
  await page.waitForSelector('body[data-ready="true"]');
  await passkeyButton(page, '#passkey-login');
  assert.equal(claimsOf(await accessToken(page)).name, 'frank');
  await assertNoLeak(dev);
  await dev.context.close();
});

test('TOTP: enrol through the page (QR code, secret, code), then log in with mfa_required → code, and with a recovery code', LIMIT, async () => {
  const dev = await device();
  const page = await openApp(dev);
  await loginWithForm(page, 'grace');
  await openSecurity(page);
  assert.equal(await page.getAttribute('#factors', 'data-totp'), 'off');

  const [enrol] = await Promise.all([serviceResponse(page, 'mfa/totp'), page.click('#totp-start')]);
  assert.equal(enrol.status(), 201);
  await page.waitForSelector('#totp-enrol:not([hidden])');
  const secret = await page.textContent('#totp-secret');
  assert.equal(secret, (await enrol.json()).secret);
  // The QR code is the service's SVG, shown as an image (the page's CSP allows data: images).
  await page.waitForFunction(() => document.getElementById('totp-qr').complete);
  const qr = await page.$eval('#totp-qr', (img) => ({ src: img.src, width: img.naturalWidth }));
  assert.match(qr.src, /^data:image\/svg\+xml/);
  assert.ok(qr.width > 0, 'the QR code did not render');

  const key = base32(secret);
  const confirmStep = totpStep();
  await page.fill('#totp-enrol input[name=code]', hotp(key, confirmStep));
  const verify = await clickUntilAnswer(page, '#totp-confirm', 'mfa/totp/verify', '#security-result');
  assert.equal(verify.status(), 200, await verify.text());
  await page.waitForSelector('#factors[data-totp="on"]');
  const codes = await page.$$eval('#recovery-codes li', (items) => items.map((i) => i.textContent));
  assert.deepEqual(codes, (await verify.json()).recovery_codes);
  assert.equal(codes.length, 10);
  assert.equal(await page.textContent('#totp-secret'), '', 'the secret is not shown after the confirmation');
  await logout(page);

  // The password alone no longer signs in.
  const first = await submitLogin(page, 'grace');
  assert.equal(first.status(), 401);
  const required = await first.json();
  assert.equal(required.error, 'mfa_required');
  assert.ok(required.factors.includes('totp'), JSON.stringify(required.factors));
  await page.waitForSelector('#status[data-state="mfa"]');
  assert.equal(await page.isVisible('#mfa-passkey'), false, 'no passkey to offer');

  // A wrong code is refused and can be corrected with the same mfa_token; a code of the next step
  // (the confirmation used this one, and each step is accepted once) signs in.
  const valid = [-1, 0, 1, 2].map((d) => hotp(key, confirmStep + d));
  const wrong = ['000000', '111111', '222222'].find((c) => !valid.includes(c));
  await page.fill('#mfa input[name=code]', wrong);
  const [refused] = await Promise.all([serviceResponse(page, 'token'), page.click('#mfa-button')]);
  assert.equal(refused.status(), 400);
  assert.equal((await refused.json()).error, 'invalid_grant');
  await page.waitForFunction(() => document.getElementById('mfa-error').textContent !== '');
  assert.equal(await page.getAttribute('#status', 'data-state'), 'mfa');

  await page.fill('#mfa input[name=code]', hotp(key, confirmStep + 1));
  const [second] = await Promise.all([serviceResponse(page, 'token'), page.click('#mfa-button')]);
  assert.equal(second.status(), 200, await second.text());
  const sent = JSON.parse(second.request().postData());
  assert.equal(sent.grant_type, 'urn:ietf:params:oauth:grant-type:mfa-otp');
  assert.equal(sent.mfa_token, required.mfa_token);
  assert.equal(second.request().headers()['x-token-transport'], 'cookie');
  await page.waitForSelector('#status[data-state="in"]');
  assert.deepEqual(claimsOf(await accessToken(page)).amr.slice().sort(), ['mfa', 'otp', 'pwd']);
  assert.equal((await callApi(page)).status, 200);

  // A recovery code instead of a code: once.
  await logout(page);
  assert.equal((await submitLogin(page, 'grace')).status(), 401);
  await page.waitForSelector('#status[data-state="mfa"]');
  await page.fill('#mfa input[name=code]', codes[0].toUpperCase());
  const [recovered] = await Promise.all([serviceResponse(page, 'token'), page.click('#mfa-button')]);
  assert.equal(recovered.status(), 200, await recovered.text());
  assert.ok('recovery_code' in JSON.parse(recovered.request().postData()));
  await page.waitForSelector('#status[data-state="in"]');
  assert.deepEqual(claimsOf(await accessToken(page)).amr.slice().sort(), ['mfa', 'pwd']);
  assert.equal((await page.evaluate(() => window.app.factors())).recovery_codes_left, 9);
  await assertNoLeak(dev);
  await dev.context.close();
});
