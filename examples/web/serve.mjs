#!/usr/bin/env node
// The example page's own tiny server, plain Node without dependencies:
//   - the static files of examples/web/ (and config.js, the page's settings);
//   - GET /api/hello, a pretend protected API: it verifies the ES256 access token against the
//     token service's JWKS with node:crypto and checks typ, iss, aud, exp and nbf. An expired
//     token is answered 401 with `WWW-Authenticate: Bearer error="invalid_token"` and
//     `Token-Expired: true`, which the page answers with a refresh and one retry.
//
// node examples/web/serve.mjs [--port 8080] [--host localhost] [--auth http://localhost:7071]
//                             [--issuer <iss>] [--audience <aud>]
// (or PORT, HOST, AUTH_URL, ISSUER, AUDIENCE in the environment). The defaults match the handler's
// --dev mode. --port 0 picks a free port; the URL is printed on start.
import { createServer } from 'node:http';
import { createPublicKey, verify } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: process.env.PORT ?? '8080' },
    host: { type: 'string', default: process.env.HOST ?? 'localhost' },
    auth: { type: 'string', default: process.env.AUTH_URL ?? 'http://localhost:7071' },
    issuer: { type: 'string', default: process.env.ISSUER ?? 'http://localhost:7071' },
    audience: { type: 'string', default: process.env.AUDIENCE ?? 'jwt-refresh-token-dev' },
  },
});
const authUrl = args.auth.replace(/\/+$/, '');
const root = dirname(fileURLToPath(import.meta.url));
const STATIC = {
  '/': ['index.html', 'text/html; charset=utf-8'],
  '/index.html': ['index.html', 'text/html; charset=utf-8'],
  '/app.js': ['app.js', 'text/javascript; charset=utf-8'],
  '/token-client.js': ['token-client.js', 'text/javascript; charset=utf-8'],
  '/app.css': ['app.css', 'text/css; charset=utf-8'],
};
// Unknown kids trigger a JWKS fetch at most this often (a forged kid must not flood the service).
const JWKS_REFETCH_MS = 5000;

class Unauthorized extends Error {
  constructor(description, { expired = false, bare = false } = {}) {
    super(description);
    this.expired = expired;
    this.bare = bare;
  }
}

let keys = new Map(); // kid -> KeyObject
let keysFetchedAt = 0;

async function keyFor(kid) {
  if (!keys.has(kid) && Date.now() - keysFetchedAt >= JWKS_REFETCH_MS) {
    keysFetchedAt = Date.now();
    const response = await fetch(`${authUrl}/api/jwks`);
    if (!response.ok) throw new Error(`JWKS answered ${response.status}`);
    const set = await response.json();
    const fresh = new Map();
    for (const jwk of set.keys ?? []) {
      if (jwk.kty === 'EC' && jwk.crv === 'P-256' && typeof jwk.kid === 'string') {
        fresh.set(jwk.kid, createPublicKey({ key: jwk, format: 'jwk' }));
      }
    }
    keys = fresh;
  }
  return keys.get(kid);
}

function decodePart(part) {
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
}

/** The verified claims of an RFC 9068 access token, or Unauthorized. */
async function verifyAccessToken(authorization) {
  const match = /^Bearer ([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)$/.exec(authorization ?? '');
  if (!authorization) throw new Unauthorized('no access token', { bare: true });
  if (!match) throw new Unauthorized('malformed access token');
  const [, headerPart, payloadPart, signaturePart] = match;
  let header;
  let claims;
  try {
    header = decodePart(headerPart);
    claims = decodePart(payloadPart);
  } catch {
    throw new Unauthorized('malformed access token');
  }
  if (header.alg !== 'ES256') throw new Unauthorized('only ES256 access tokens are accepted');
  if (!/^(application\/)?at\+jwt$/i.test(header.typ ?? '')) throw new Unauthorized('not an access token (typ)');
  const key = await keyFor(header.kid);
  if (!key) throw new Unauthorized('unknown signing key');
  const signed = Buffer.from(`${headerPart}.${payloadPart}`, 'ascii');
  const signature = Buffer.from(signaturePart, 'base64url');
  if (!verify('sha256', signed, { key, dsaEncoding: 'ieee-p1363' }, signature)) {
    throw new Unauthorized('bad signature');
  }
  // Only a token that verified may be told that it expired.
  const now = Math.floor(Date.now() / 1000);
  if (claims.iss !== args.issuer) throw new Unauthorized('wrong issuer');
  const audiences = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (!audiences.includes(args.audience)) throw new Unauthorized('wrong audience');
  if (typeof claims.exp !== 'number') throw new Unauthorized('no exp');
  if (typeof claims.nbf === 'number' && now < claims.nbf) throw new Unauthorized('not valid yet');
  if (now >= claims.exp) throw new Unauthorized('the access token expired', { expired: true });
  return claims;
}

function send(res, status, body, headers = {}) {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': typeof body === 'string' ? 'text/plain; charset=utf-8' : 'application/json',
    'Cache-Control': 'no-store',
    'Content-Length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

async function hello(req, res) {
  try {
    const claims = await verifyAccessToken(req.headers.authorization);
    send(res, 200, { message: `hello, ${claims.name ?? claims.sub}`, sub: claims.sub, sid: claims.sid, exp: claims.exp });
  } catch (error) {
    if (!(error instanceof Unauthorized)) {
      console.error(`serve.mjs: cannot verify tokens: ${error.message}`);
      send(res, 503, { error: 'temporarily_unavailable', error_description: 'the signing keys could not be fetched' }, { 'Retry-After': '1' });
      return;
    }
    const challenge = error.bare
      ? 'Bearer'
      : `Bearer error="invalid_token", error_description="${error.message}"`;
    send(res, 401, { error: error.bare ? 'unauthorized' : 'invalid_token', error_description: error.message }, {
      'WWW-Authenticate': challenge,
      ...(error.expired ? { 'Token-Expired': 'true' } : {}),
    });
  }
}

const server = createServer(async (req, res) => {
  const path = new URL(req.url, 'http://x').pathname;
  try {
    if (path === '/api/hello') {
      if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'method not allowed', { Allow: 'GET, HEAD' });
      return await hello(req, res);
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'method not allowed', { Allow: 'GET, HEAD' });
    if (path === '/config.js') {
      const config = JSON.stringify({ authUrl, apiUrl: '/api/hello' });
      return send(res, 200, `window.WEB_EXAMPLE_CONFIG = ${config};\n`, { 'Content-Type': 'text/javascript; charset=utf-8' });
    }
    const entry = STATIC[path];
    if (!entry) return send(res, 404, 'not found');
    const content = await readFile(join(root, entry[0]));
    res.writeHead(200, {
      'Content-Type': entry[1],
      'Content-Length': content.length,
      'Cache-Control': 'no-cache',
      'X-Content-Type-Options': 'nosniff',
      'Referrer-Policy': 'no-referrer',
      'Content-Security-Policy': `default-src 'self'; connect-src 'self' ${new URL(authUrl).origin}; frame-ancestors 'none'`,
    });
    res.end(req.method === 'HEAD' ? undefined : content);
  } catch (error) {
    console.error(`serve.mjs: ${req.method} ${path}: ${error.message}`);
    if (!res.headersSent) send(res, 500, 'internal error');
  }
});

server.listen(Number(args.port), args.host, () => {
  const { port } = server.address();
  console.log(`web example: http://${args.host}:${port}/ (token service ${authUrl}, issuer ${args.issuer}, audience ${args.audience})`);
});
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => server.close(() => process.exit(0)));
