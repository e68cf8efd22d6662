// Starts what the browser test needs: the handler (ES256, short access tokens, CORS for the page's
// origin), examples/web/serve.mjs (the page and its protected API), two attacker sites, and
// Debian's Chromium through playwright-core. Everything listens on loopback only.
import { spawn, execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const root = resolve(here, '..', '..');
export const HANDLER = process.env.HANDLER ?? join(root, 'target', 'debug', 'handler');
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const ISSUER = 'https://auth.browser-test.invalid';
export const AUDIENCE = 'browser-test-api';
export const ACCESS_LIFETIME_MS = 6000;
export const REUSE_GRACE_MS = 1500;
export const USERS = {
  alice: 'alice-browser-test-password',
  bob: 'bob-browser-test-password',
  // The passkey and TOTP tests' users: each test enrols factors, so each has a user of its own.
  carol: 'carol-browser-test-password',
  dave: 'dave-browser-test-password',
  erin: 'erin-browser-test-password',
  frank: 'frank-browser-test-password',
  grace: 'grace-browser-test-password',
};
export const RP_ID = 'localhost';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createNetServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

function listen(server, host) {
  return new Promise((resolveListen, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolveListen(server.address().port));
  });
}

// Whatever happens to the test process, the servers it started end with it.
const children = new Set();
process.on('exit', () => {
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
});

/** A child process whose output is kept (and shown when the test fails to start it). */
function start(command, args, env) {
  const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  child.output = '';
  child.stdout.on('data', (chunk) => (child.output += chunk));
  child.stderr.on('data', (chunk) => (child.output += chunk));
  child.exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
  return child;
}

async function waitFor(what, check, child, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${what} exited (${child.exitCode}):\n${child.output}`);
    const value = await check().catch(() => null);
    if (value) return value;
    await sleep(50);
  }
  throw new Error(`${what} did not come up within ${timeoutMs} ms:\n${child.output}`);
}

// The attacker's pages: an empty page to run script in, and an auto-submitting form POST.
function attackerSite() {
  return createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    let html = '<!doctype html><title>not the app</title><p>another site</p>';
    if (url.pathname === '/form') {
      const action = url.searchParams.get('action').replace(/"/g, '&quot;');
      html = `<!doctype html><title>form</title><form method="POST" action="${action}"></form><script>document.forms[0].submit()</script>`;
    }
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(html);
  });
}

export async function startAll() {
  const dir = mkdtempSync(join(tmpdir(), 'browser-test-'));
  const key = execFileSync(HANDLER, ['keys', 'generate', '--algorithm', 'ES256'], { encoding: 'utf8' });
  const authPort = await freePort();
  const authUrl = `http://localhost:${authPort}`;

  const page = start(process.execPath, [join(root, 'examples', 'web', 'serve.mjs'), '--port', '0', '--host', 'localhost',
    '--auth', authUrl, '--issuer', ISSUER, '--audience', AUDIENCE], {});
  const pageUrl = await waitFor('serve.mjs', async () => /web example: (http:\/\/localhost:\d+)\//.exec(page.output)?.[1], page);

  const env = {
    FUNCTIONS_CUSTOMHANDLER_PORT: String(authPort),
    JwtRefreshToken__Embedded__Path: join(dir, 'store'),
    JwtRefreshToken__Descriptor__Issuer: ISSUER,
    JwtRefreshToken__Descriptor__Audience: AUDIENCE,
    JwtRefreshToken__Descriptor__Algorithm: 'ES256',
    JwtRefreshToken__Descriptor__AlgorithmKey: key,
    JwtRefreshToken__Expires__CreateExpiresInMs: String(ACCESS_LIFETIME_MS),
    JwtRefreshToken__Rotation__ReuseGraceMs: String(REUSE_GRACE_MS),
    JwtRefreshToken__Rotation__Secret: execFileSync(HANDLER, ['keys', 'generate', '--algorithm', 'HS256'], { encoding: 'utf8' }).trim(),
    JwtRefreshToken__Cors__AllowedOrigins: pageUrl,
    // One test runs the page's clock a minute behind (a laptop waking up): its DPoP proofs' iat
    // is then 60 s off, so the window is wider than the default 60 s here.
    JwtRefreshToken__Dpop__ProofMaxAgeMs: '120000',
    // Passkeys: the relying party is localhost and only the page's origin may use it (the
    // same-site page on another port shares the RP id but is not an allowed origin).
    JwtRefreshToken__Passkeys__RpId: RP_ID,
    JwtRefreshToken__Passkeys__Origins: pageUrl,
    RUST_LOG: 'info',
  };
  for (const [name, password] of Object.entries(USERS)) {
    execFileSync(HANDLER, ['user', 'add', name, '--create', '--password-stdin'], { input: `${password}\n`, env: { ...process.env, ...env } });
  }
  const handler = start(HANDLER, [], env);
  await waitFor('handler', async () => (await fetch(`http://127.0.0.1:${authPort}/`)).ok, handler);

  const crossSite = attackerSite(); // 127.0.0.1: another site than localhost
  const sameSite = attackerSite(); // localhost on another port: same site, another origin, not allowed
  const crossSiteUrl = `http://127.0.0.1:${await listen(crossSite, '127.0.0.1')}`;
  const sameSiteUrl = `http://localhost:${await listen(sameSite, 'localhost')}`;

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });

  return {
    authUrl, pageUrl, crossSiteUrl, sameSiteUrl, browser,
    async stop() {
      await browser.close().catch(() => {});
      for (const child of [handler, page]) {
        if (child.exitCode === null) child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await child.exited;
        clearTimeout(timer);
      }
      await Promise.all([crossSite, sameSite].map((s) => new Promise((r) => s.close(r))));
      rmSync(dir, { recursive: true, force: true });
    },
    /** The handler's `request` log lines so far (function, method, status, outcome, reason). */
    requests: () =>
      handler.output
        .split('\n')
        .filter((line) => line.startsWith('{') && line.includes('"message":"request"'))
        .map((line) => JSON.parse(line)),
    output: () => `--- handler ---\n${handler.output}\n--- serve.mjs ---\n${page.output}`,
  };
}
