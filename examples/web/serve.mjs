#!/usr/bin/env node
// The example page's own tiny server, plain Node without dependencies:
//   - the static files of examples/web/ (and config.js, the page's settings);
//   - GET /api/hello, a pretend protected API: it verifies the ES256 access token against the
//     token service's JWKS with node:crypto and checks typ, iss, aud, exp and nbf. An expired
//     token is answered 401 with `WWW-Authenticate: Bearer error="invalid_token"` and
//     `Token-Expired: true`, which the page answers with a refresh and one retry. A DPoP-bound
//     token (`cnf.jkt`, RFC 9449 §7) is accepted only as `Authorization: DPoP` with a proof for
//     this request signed by the bound key (`ath`, `htm`, `htu`, `iat`, single-use `jti`).
//
// node examples/web/serve.mjs [--port 8080] [--host localhost] [--auth http://localhost:7071]
//                             [--issuer <iss>] [--audience <aud>]
// (or PORT, HOST, AUTH_URL, ISSUER, AUDIENCE in the environment). The defaults match the handler's
// --dev mode. --port 0 picks a free port; the URL is printed on start.
import { createServer } from 'node:http';
import { createHash, createPublicKey, verify } from 'node:crypto';
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
  constructor(description, { expired = false, bare = false, dpop = undefined } = {}) {
    super(description);
    this.expired = expired;
    this.bare = bare;
    this.dpop = dpop; // the DPoP challenge's error code, for DPoP-scheme refusals
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

// DPoP proofs seen (jkt + jti → when they may be forgotten), to refuse a replayed proof.
const seenProofs = new Map();
const PROOF_WINDOW_S = 60;
const MAX_SEEN_PROOFS = 10_000;

const b64url = (bytes) => Buffer.from(bytes).toString('base64url');

/** RFC 7638 thumbprint of an EC P-256 public JWK. */
const thumbprint = ({ crv, kty, x, y }) => b64url(createHash('sha256').update(JSON.stringify({ crv, kty, x, y })).digest());

/** Checks the request's DPoP proof for `token`, bound to `jkt` (RFC 9449 §4.3, §7.1). */
function verifyProof(req, token, jkt) {
  const proof = req.headers.dpop;
  if (typeof proof !== 'string') throw new Unauthorized('a DPoP proof is required', { dpop: 'invalid_dpop_proof' });
  const bad = (why) => new Unauthorized(why, { dpop: 'invalid_dpop_proof' });
  const parts = proof.split('.');
  if (parts.length !== 3) throw bad('malformed DPoP proof');
  let header;
  let claims;
  try {
    header = decodePart(parts[0]);
    claims = decodePart(parts[1]);
  } catch {
    throw bad('malformed DPoP proof');
  }
  const jwk = header.jwk ?? {};
  if (header.typ !== 'dpop+jwt' || header.alg !== 'ES256' || jwk.kty !== 'EC' || jwk.crv !== 'P-256' || 'd' in jwk) {
    throw bad('the proof must be an ES256 dpop+jwt with a public P-256 jwk');
  }
  if (thumbprint(jwk) !== jkt) throw bad('the proof key is not the key the token is bound to');
  const key = createPublicKey({ key: { kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y }, format: 'jwk' });
  if (!verify('sha256', Buffer.from(`${parts[0]}.${parts[1]}`), { key, dsaEncoding: 'ieee-p1363' }, Buffer.from(parts[2], 'base64url'))) {
    throw bad('bad proof signature');
  }
  // This server's public URL of the request, as the browser sent it (behind a proxy, use the
  // configured public URL instead of Host).
  const htu = `http://${req.headers.host}${new URL(req.url, 'http://x').pathname}`;
  const now = Math.floor(Date.now() / 1000);
  if (claims.htm !== req.method || claims.htu !== htu) throw bad('the proof is for another request');
  if (typeof claims.iat !== 'number' || Math.abs(now - claims.iat) > PROOF_WINDOW_S) throw bad('the proof is too old or too new');
  if (claims.ath !== b64url(createHash('sha256').update(token).digest())) throw bad('the proof is for another access token');
  for (const [id, until] of seenProofs) if (until <= now) seenProofs.delete(id); else break;
  const id = `${jkt}.${claims.jti}`;
  if (typeof claims.jti !== 'string' || seenProofs.has(id)) throw bad('the proof was used before');
  if (seenProofs.size >= MAX_SEEN_PROOFS) throw bad('too many proofs at once; retry');
  seenProofs.set(id, now + 2 * PROOF_WINDOW_S);
}

function decodePart(part) {
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
}

/** The verified claims of an RFC 9068 access token (Bearer, or DPoP with its proof), or Unauthorized. */
async function verifyAccessToken(req) {
  const authorization = req.headers.authorization;
  const match = /^(Bearer|DPoP) ([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)$/.exec(authorization ?? '');
  if (!authorization) throw new Unauthorized('no access token', { bare: true });
  if (!match) throw new Unauthorized('malformed access token');
  const [, scheme, headerPart, payloadPart, signaturePart] = match;
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
  const dpop = scheme === 'DPoP' ? 'invalid_token' : undefined;
  if (now >= claims.exp) throw new Unauthorized('the access token expired', { expired: true, dpop });
  const jkt = claims.cnf?.jkt;
  if (jkt && scheme !== 'DPoP') throw new Unauthorized('a DPoP-bound token needs the DPoP scheme', { dpop: 'invalid_token' });
  if (!jkt && scheme === 'DPoP') throw new Unauthorized('the token is not DPoP-bound', { dpop: 'invalid_token' });
  if (jkt) verifyProof(req, `${headerPart}.${payloadPart}.${signaturePart}`, jkt);
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
    const claims = await verifyAccessToken(req);
    send(res, 200, { message: `hello, ${claims.name ?? claims.sub}`, sub: claims.sub, sid: claims.sid, exp: claims.exp });
  } catch (error) {
    if (!(error instanceof Unauthorized)) {
      console.error(`serve.mjs: cannot verify tokens: ${error.message}`);
      send(res, 503, { error: 'temporarily_unavailable', error_description: 'the signing keys could not be fetched' }, { 'Retry-After': '1' });
      return;
    }
    const challenge = error.bare
      ? 'Bearer'
      : error.dpop
        ? `DPoP error="${error.dpop}", error_description="${error.message}", algs="ES256"`
        : `Bearer error="invalid_token", error_description="${error.message}"`;
    const code = error.bare ? 'unauthorized' : (error.dpop ?? 'invalid_token');
    send(res, 401, { error: code, error_description: error.message }, {
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
      const config = JSON.stringify({ authUrl, issuer: args.issuer, apiUrl: '/api/hello' });
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
      // data: images: the authenticator app's QR code (an SVG from the token service, shown as an
      // <img>, where it cannot run script).
      'Content-Security-Policy': `default-src 'self'; connect-src 'self' ${new URL(authUrl).origin}; img-src 'self' data:; frame-ancestors 'none'`,
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
