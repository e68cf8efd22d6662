#!/usr/bin/env node
/* eslint-disable no-underscore-dangle, no-console */
"use strict";

/*
 * Local Cosmos DB (SQL API) test peer for the Rust SDK (azure_data_cosmos 1.0.0).
 *
 * Starts @vercel/cosmosdb-server 1.0.1 and fixes, at load time, what breaks the
 * Rust SDK (see README.md beside this file). Nothing in node_modules is edited:
 * the package's modules are required and their exports / prototypes are
 * replaced before its route table is built, so a fresh `npm ci` is enough.
 *
 *   node emulator/start.js [--port N] [--host H] [--http] [--exit-with-stdin] [--verbose]
 *
 * Prints one JSON line on stdout once listening:
 *   {"event":"listening","port":N,"endpoint":"http://127.0.0.1:N/"}
 */

const fs = require("fs");
const net = require("net");
const http = require("http");
const http2 = require("http2");
const path = require("path");
const { randomUUID } = require("crypto");

const PKG = "@vercel/cosmosdb-server";
const pkgRoot = path.dirname(require.resolve(`${PKG}/package.json`));
const lib = name => require(`${PKG}/lib/${name}`);

const EXPECTED_VERSION = "1.0.1";
const pkgVersion = require(`${PKG}/package.json`).version;
if (pkgVersion !== EXPECTED_VERSION) {
  // The patches below replace handlers of this exact release.
  console.error(
    `cosmos-emulator: expected ${PKG}@${EXPECTED_VERSION}, found ${pkgVersion}; patches may not apply`
  );
}

// ---------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------

function parseArgs(argv) {
  const args = {
    port: 8081,
    host: "127.0.0.1",
    http: false,
    verbose: !!process.env.COSMOS_EMULATOR_VERBOSE
  };
  for (let i = 0; i < argv.length; i += 1) {
    const a = argv[i];
    if (a === "--port" || a === "-p") {
      args.port = parseInt(argv[(i += 1)], 10);
    } else if (a.startsWith("--port=")) {
      args.port = parseInt(a.slice(7), 10);
    } else if (a === "--host") {
      args.host = argv[(i += 1)];
    } else if (a.startsWith("--host=")) {
      args.host = a.slice(7);
    } else if (a === "--http") {
      args.http = true;
    } else if (a === "--https") {
      args.http = false;
    } else if (a === "--exit-with-stdin") {
      args.exitWithStdin = true;
    } else if (a === "--verbose" || a === "-v") {
      args.verbose = true;
    } else if (a === "--help" || a === "-h") {
      console.log(
        "usage: node start.js [--port N (0 = free port, default 8081)] [--host H (default 127.0.0.1)] [--http] [--exit-with-stdin] [--verbose]"
      );
      process.exit(0);
    } else {
      console.error(`cosmos-emulator: unknown argument ${a}`);
      process.exit(2);
    }
  }
  if (!Number.isInteger(args.port) || args.port < 0 || args.port > 65535) {
    console.error("cosmos-emulator: --port needs an integer 0..65535");
    process.exit(2);
  }
  return args;
}

const args = parseArgs(process.argv.slice(2));
const log = (...m) => {
  if (args.verbose) console.error("[cosmos-emulator]", ...m);
};

// ---------------------------------------------------------------------------
// Clock (TTL), stats, faults
// ---------------------------------------------------------------------------

let clockOffsetMs = 0;
const nowMs = () => Date.now() + clockOffsetMs;

const KINDS = [
  "read",
  "replace",
  "create",
  "upsert",
  "delete",
  "query",
  "batch",
  "metadata",
  "other"
];
const DOCUMENT_KINDS = [
  "read",
  "replace",
  "create",
  "upsert",
  "delete",
  "query",
  "batch"
];
const newStats = () => ({
  requests: 0,
  byKind: Object.fromEntries(KINDS.map(k => [k, 0])),
  // faults injected, by label: "429", "503", …, "delay", "reset", "apply-then-drop", "outage"
  faults: {}
});
let stats = newStats();
let faults = []; // [{action, status, retryAfterMs, substatus, delayMs, remaining, kinds:Set, containers:Set|null}]
// Whole-server outage: until this time every data-plane request is dropped without an answer
// (its connection destroyed; the controls keep working). 0 = none.
let outageUntilMs = 0;
// Seeded random faults (POST /__emulator/chaos), or null.
let chaos = null;

// ---------------------------------------------------------------------------
// Package modules and load-time patches
// ---------------------------------------------------------------------------

// dependencies of the package, resolved from it (not from this folder)
const fromPkg = name => require(require.resolve(name, { paths: [pkgRoot] }));
const Account = lib("account").default;
const Databases = lib("account/databases").default;
const Documents = lib("account/documents").default;
const Collections = lib("account/collections").default;
const getValue = lib("utils/get-value").default;
const jsonModule = lib("json");
const { decodeBinaryJson, isBinaryJson } = require("./binary-json");

// ---------------------------------------------------------------------------------------------
// Resource ids: Cosmos writes them in base64 with '-' in place of '/', and the Rust SDK splits a
// container's _rid on that basis. The package uses plain base64, so every database or container
// whose id happens to contain '/' broke container resolution (500/20020 "failed to extract database
// RID"). Encode and decode all '/' and '-' as Cosmos does.
{
  const ResourceId = lib("account/resource-id").default;
  ResourceId.toBase64String = buffer => buffer.toString("base64").replace(/\//g, "-");
  ResourceId.fromBase64String = s => Buffer.from(String(s).replace(/-/g, "/"), "base64");
}
const rawBody = fromPkg("raw-body");
// Request bodies: text JSON, or Cosmos binary JSON (the Rust SDK's default for
// item writes). Every package handler reads bodies through lib/json.
jsonModule.default = async req => {
  const body = await rawBody(req);
  if (isBinaryJson(body)) {
    const value = decodeBinaryJson(body);
    log(`  decoded ${body.length}-byte Cosmos binary JSON body`);
    return value;
  }
  return JSON.parse(body.toString());
};
const json = jsonModule.default;
const trueHeader = lib("true-header").default;
const getPartitionFromHeader = lib("utils/get-partition-from-header").default;
const { parsePartitionKey } = lib("utils/get-partition-from-header");
const documentOperations = lib("handler/_document-operations");
const readItems = lib("handler/_read-items").default;
const { BulkOperationType } = lib("types");
const cosmosQuery = fromPkg("@zeit/cosmosdb-query").default;

// --- documents: ETag / _ts on every write, TTL -----------------------------

// precise write time of each stored document body (for TTL); _ts is seconds only
const writtenAtMs = new WeakMap();

const origSet = Documents.prototype._set;
Documents.prototype._set = function _set(data) {
  const t = nowMs();
  // Real Cosmos ETags are quoted strings; a new one on every write.
  data._etag = `"${randomUUID()}"`;
  // _ts follows the emulator clock, so advance-clock also ages new writes.
  data._ts = Math.floor(t / 1000);
  writtenAtMs.set(data, t);
  return origSet.call(this, data);
};

/** Effective TTL (seconds) of a document, or null when it never expires. */
function effectiveTtl(documents, data) {
  const collection = documents._parent.read();
  if (!collection) return null;
  const containerTtl = collection.defaultTtl;
  // TTL is off for the container: item ttl values are ignored (as in Cosmos).
  if (containerTtl === undefined || containerTtl === null) return null;
  const itemTtl = data.ttl;
  const ttl =
    itemTtl !== undefined && itemTtl !== null ? Number(itemTtl) : Number(containerTtl);
  if (!Number.isFinite(ttl) || ttl <= 0) return null; // -1 (or junk) = never
  return ttl;
}

function isExpired(documents, data) {
  if (!data) return false;
  const ttl = effectiveTtl(documents, data);
  if (ttl === null) return false;
  const written = writtenAtMs.has(data) ? writtenAtMs.get(data) : data._ts * 1000;
  return nowMs() >= written + ttl * 1000;
}

/** Removes one stored document (by its _rid) and the index entries pointing to it. */
function purge(documents, data) {
  const partition = documents._getPartition(data);
  documents._uniqueKeyPaths.forEach(keyPath => {
    const value = getValue(keyPath.slice(1).split("/"), data);
    const key = documents._getId(keyPath, value, partition);
    if (documents._index.get(key) === data._rid) documents._index.delete(key);
  });
  documents._data.delete(data._rid);
}

// Point look-ups (read/replace/delete/upsert/create-conflict/patch) never see
// an expired document; it is removed on the spot.
const origItem = Documents.prototype._item;
Documents.prototype._item = function _item(keyPath, value, partition) {
  const item = origItem.call(this, keyPath, value, partition);
  const data = item.read();
  if (data && isExpired(this, data)) {
    purge(this, data);
    return this._newItem();
  }
  return item;
};

/** Live (non-expired) documents, optionally limited to one logical partition. */
function liveDocuments(documents, partitionFilter) {
  const out = [];
  for (const item of [...documents._data.values()]) {
    const data = item.read();
    if (!data) continue;
    if (isExpired(documents, data)) {
      purge(documents, data);
      continue;
    }
    if (partitionFilter && !partitionFilter(data)) continue;
    out.push(data);
  }
  return out;
}

Documents.prototype.query = function query(params, options) {
  if (!this._parent.read()) return null;
  const { maxItemCount, continuation, partitionFilter } = options || {};
  const collection = this._parent.read();
  const compositeIndexes =
    (collection.indexingPolicy ? collection.indexingPolicy.compositeIndexes : null) || [];
  const q = this._getQuery(params.query);
  try {
    return q.exec(liveDocuments(this, partitionFilter), {
      parameters: params.parameters,
      udf: this._userDefinedFunctions(),
      maxItemCount,
      continuation,
      compositeIndexes
    });
  } catch (err) {
    err.badRequest = true;
    throw err;
  }
};

Documents.prototype.read = function read({ maxItemCount, continuation, partitionFilter } = {}) {
  if (!this._parent.read()) return null;
  return this._getQuery("SELECT * FROM c").exec(liveDocuments(this, partitionFilter), {
    maxItemCount,
    continuation
  });
};

// Replacing a container (e.g. to change defaultTtl) must keep its documents;
// the package re-creates the Collection object and so dropped them.
const origCollectionsReplace = Collections.prototype.replace;
Collections.prototype.replace = function replace(data, original) {
  const before = this._item("/id", original.id, original.id);
  const result = origCollectionsReplace.call(this, data, original);
  const after = this._item("/id", result.id, result.id);
  if (before && after && before !== after && before.documents) {
    ["documents", "partitionKeyRanges", "userDefinedFunctions"].forEach(k => {
      after[k] = before[k];
      after[k]._parent = after;
    });
  }
  return result;
};

function forEachCollection(fn) {
  if (!account) return;
  for (const dbItem of account.databases._data.values()) {
    if (!dbItem.collections) continue;
    for (const collItem of dbItem.collections._data.values()) {
      if (collItem.documents && collItem.read()) fn(collItem);
    }
  }
}

function sweepExpired() {
  let removed = 0;
  forEachCollection(coll => {
    const docs = coll.documents;
    for (const item of [...docs._data.values()]) {
      const data = item.read();
      if (data && isExpired(docs, data)) {
        purge(docs, data);
        removed += 1;
      }
    }
  });
  return removed;
}

// --- partition helpers ------------------------------------------------------

/** Parsed x-ms-documentdb-partitionkey header: array of components, or null. */
function partitionKeyHeader(req) {
  const raw = getPartitionFromHeader(req);
  if (raw === undefined || raw === null || raw === "") return null;
  let parsed;
  try {
    parsed = JSON.parse(raw);
  } catch (e) {
    const err = new Error(`invalid x-ms-documentdb-partitionkey header: ${raw}`);
    err.badRequest = true;
    throw err;
  }
  return Array.isArray(parsed) ? parsed : [parsed];
}

function partitionPaths(collectionData) {
  const paths = ((collectionData || {}).partitionKey || {}).paths || [];
  return paths.map(p => p.slice(1).split("/"));
}

const isNoneComponent = v =>
  v === undefined || (v !== null && typeof v === "object" && Object.keys(v).length === 0);

function samePkValue(docValue, headerValue) {
  if (isNoneComponent(headerValue)) return docValue === undefined;
  return docValue === headerValue;
}

/** Predicate: does a document belong to the logical partition in the header? */
function partitionFilterFor(collectionData, components) {
  const paths = partitionPaths(collectionData);
  if (!components || !paths.length) return null;
  if (components.length === 1 && isNoneComponent(components[0]) && paths.length === 1) {
    return doc => getValue(paths[0], doc) === undefined;
  }
  const n = Math.min(paths.length, components.length); // prefix for hierarchical keys
  return doc => {
    for (let i = 0; i < n; i += 1) {
      if (!samePkValue(getValue(paths[i], doc), components[i])) return false;
    }
    return true;
  };
}

// --- handlers ----------------------------------------------------------------

const NOT_FOUND = {
  code: "NotFound",
  message: "Entity with the specified id does not exist in the system.,"
};
const PRECONDITION_FAILED = {
  code: "PreconditionFailed",
  message: "Operation cannot be performed because one of the specified precondition is not met."
};

function collectionOr404(account_, res, dbId, collId) {
  const collection = account_.database(dbId).collection(collId);
  if (!collection.read()) {
    res.statusCode = 404;
    return null;
  }
  return collection;
}

// (3) GET a document: 404 (not a TypeError/500) when it does not exist; the
// document must be in the partition named by the header; If-None-Match -> 304.
async function readDocumentHandler(account_, req, res, { dbId, collId, docId }) {
  const collection = collectionOr404(account_, res, dbId, collId);
  if (!collection) return { ...NOT_FOUND };
  const rawPk = getPartitionFromHeader(req);
  const components = partitionKeyHeader(req);
  const paths = partitionPaths(collection.read());
  if (paths.length && (!components || components.length < paths.length)) {
    res.statusCode = 400;
    return {
      code: "BadRequest",
      message:
        "The partition key supplied in x-ms-partitionkey header has fewer components than defined in the collection"
    };
  }
  const data = collection.document(docId, parsePartitionKey(rawPk || "[{}]", docId)).read();
  const filter = partitionFilterFor(collection.read(), components);
  if (!data || (filter && !filter(data))) {
    res.statusCode = 404;
    return { ...NOT_FOUND };
  }
  const ifNoneMatch = req.headers["if-none-match"];
  if (ifNoneMatch && (ifNoneMatch === "*" || ifNoneMatch === data._etag)) {
    res.statusCode = 304;
    return undefined;
  }
  res.statusCode = 200;
  return data;
}

// (3) PUT / DELETE of a missing document -> 404 with a Cosmos error body.
async function replaceDocumentHandler(account_, req, res, { dbId, collId, docId }) {
  const body = await json(req);
  const collection = collectionOr404(account_, res, dbId, collId);
  if (!collection) return { ...NOT_FOUND };
  if (!body || typeof body !== "object" || body.id !== docId) {
    res.statusCode = 400;
    return {
      code: "BadRequest",
      message: "The id in the request body does not match the id in the URL (or is missing)."
    };
  }
  const partitionKey = getPartitionFromHeader(req);
  const data = collection.document(docId, parsePartitionKey(partitionKey || "[{}]", docId)).read();
  if (!data) {
    res.statusCode = 404;
    return { ...NOT_FOUND };
  }
  const result = documentOperations.replaceOperation(collection, {
    partitionKey: partitionKey || "[{}]",
    ifMatch: req.headers["if-match"],
    resourceBody: body
  });
  res.statusCode = result.statusCode;
  return result.statusCode === 404 ? { ...NOT_FOUND } : result.body;
}

async function deleteDocumentHandler(account_, req, res, { dbId, collId, docId }) {
  const collection = collectionOr404(account_, res, dbId, collId);
  if (!collection) return { ...NOT_FOUND };
  const result = documentOperations.deleteOperation(collection, {
    partitionKey: getPartitionFromHeader(req) || "[{}]",
    ifMatch: req.headers["if-match"],
    id: docId
  });
  res.statusCode = result.statusCode;
  if (result.statusCode === 404) return { ...NOT_FOUND };
  return result.statusCode === 204 ? undefined : result.body;
}

async function createDocumentHandler(account_, req, res, { dbId, collId }) {
  const body = await json(req);
  const collection = collectionOr404(account_, res, dbId, collId);
  if (!collection) return { ...NOT_FOUND };
  const result = documentOperations.createOperation(collection, { resourceBody: body });
  res.statusCode = result.statusCode;
  return result.body;
}

async function upsertDocumentHandler(account_, req, res, { dbId, collId }) {
  const body = await json(req);
  const collection = collectionOr404(account_, res, dbId, collId);
  if (!collection) return { ...NOT_FOUND };
  const result = documentOperations.upsertOperation(collection, {
    partitionKey: getPartitionFromHeader(req) || "[{}]",
    ifMatch: req.headers["if-match"],
    resourceBody: body
  });
  res.statusCode = result.statusCode;
  return result.body;
}

// (1) partition key range ids must be strings ("0"), as in Cosmos.
async function readPartitionKeyRangesHandler(account_, req, res, { dbId, collId }) {
  const collection = account_.database(dbId).collection(collId);
  const coll = collection.read();
  if (!coll) {
    res.statusCode = 404;
    return { ...NOT_FOUND };
  }
  // Incremental (change-feed style) refresh: nothing ever changes here.
  if (req.headers["a-im"] && req.headers["if-none-match"]) {
    res.statusCode = 304;
    return undefined;
  }
  const ranges = [...collection.partitionKeyRanges._data.values()]
    .map(i => i.read())
    .filter(Boolean)
    .map(r => ({
      ...r,
      id: String(r.id),
      parents: (r.parents || []).map(String),
      _lsn: 1
    }));
  res.statusCode = 200;
  res.setHeader("etag", '"1"');
  res.setHeader("x-ms-item-count", String(ranges.length));
  return { _rid: coll._rid, PartitionKeyRanges: ranges, _count: ranges.length };
}

// (5) queries are scoped to the partition in the header, whatever the SQL says;
// (6) query-plan requests get a pass-through plan covering the whole key space.
async function queryDocumentsHandler(account_, req, res, { dbId, collId }) {
  if (trueHeader(req, "x-ms-cosmos-is-query-plan-request")) {
    return queryPlanHandler(account_, req, res, { dbId, collId });
  }
  return readItems(req, res, "Documents", async ({ continuation, maxItemCount }) => {
    const body = await json(req);
    if (!body || !body.query) {
      res.statusCode = 400;
      return { code: "BadRequest", message: "missing query" };
    }
    const collection = account_.database(dbId).collection(collId);
    const coll = collection.read();
    if (!coll) {
      res.statusCode = 404;
      return { ...NOT_FOUND };
    }
    const partitionFilter = partitionFilterFor(coll, partitionKeyHeader(req));
    try {
      return collection.documents.query(body, { continuation, maxItemCount, partitionFilter });
    } catch (err) {
      if (err.badRequest) {
        res.statusCode = 400;
        return { code: "BadRequest", message: err.message };
      }
      throw err;
    }
  });
}

async function readDocumentsHandler(account_, req, res, { dbId, collId }) {
  return readItems(req, res, "Documents", async ({ continuation, maxItemCount }) => {
    const collection = account_.database(dbId).collection(collId);
    const coll = collection.read();
    if (!coll) return null;
    const partitionFilter = partitionFilterFor(coll, partitionKeyHeader(req));
    return collection.documents.read({ continuation, maxItemCount, partitionFilter });
  });
}

// The emulator has exactly one physical partition, so the server can run any
// query it understands in full: the plan tells the SDK to send the query
// unchanged to the single range and to do no client-side aggregation/merging.
async function queryPlanHandler(account_, req, res, { dbId, collId }) {
  const body = await json(req);
  const coll = account_.database(dbId).collection(collId).read();
  if (!coll) {
    res.statusCode = 404;
    return { ...NOT_FOUND };
  }
  if (!body || !body.query) {
    res.statusCode = 400;
    return { code: "BadRequest", message: "missing query" };
  }
  try {
    cosmosQuery(body.query); // syntax check, as the gateway does
  } catch (err) {
    res.statusCode = 400;
    return { code: "BadRequest", message: err.message };
  }
  res.statusCode = 200;
  return {
    partitionedQueryExecutionInfoVersion: 2,
    queryInfo: {
      distinctType: "None",
      top: null,
      offset: null,
      limit: null,
      orderBy: [],
      orderByExpressions: [],
      groupByExpressions: [],
      groupByAliases: [],
      aggregates: [],
      groupByAliasToAggregateType: {},
      rewrittenQuery: "",
      hasSelectValue: false,
      hasNonStreamingOrderBy: false
    },
    queryRanges: [{ min: "", max: "FF", isMinInclusive: true, isMaxInclusive: false }]
  };
}

// (4) transactional batch: the partition key comes from the request header and
// the batch is atomic (all-or-nothing, 207 + 424 for the others on failure).
async function batchHandler(account_, req, res, { dbId, collId }) {
  const body = await json(req);
  const collection = account_.database(dbId).collection(collId);
  const coll = collection.read();
  if (!coll) {
    res.statusCode = 404;
    return { ...NOT_FOUND };
  }
  if (!Array.isArray(body)) {
    res.statusCode = 400;
    return { code: "BadRequest", message: "Invalid request body" };
  }
  if (body.length === 0 || body.length > 100) {
    res.statusCode = 400;
    return {
      code: "BadRequest",
      message: "Batch request has more operations than what is supported (or none)."
    };
  }
  const headerPk = getPartitionFromHeader(req);
  const components = partitionKeyHeader(req);
  const inPartition = partitionFilterFor(coll, components);
  const atomic = !req.headers["x-ms-cosmos-batch-atomic"] || trueHeader(req, "x-ms-cosmos-batch-atomic");
  const continueOnError =
    !atomic && trueHeader(req, "x-ms-cosmos-batch-continue-on-error");

  const docs = collection.documents;
  const snapshot = {
    data: new Map(docs._data),
    index: new Map(docs._index),
    ridCount: docs._ridCount
  };

  const results = [];
  let failedAt = -1;
  for (let i = 0; i < body.length; i += 1) {
    const op = body[i] || {};
    if (failedAt >= 0 && !continueOnError) {
      results.push({ statusCode: 424, requestCharge: 0 });
      continue;
    }
    // The Rust SDK sends the partition key only in the request header; other
    // SDKs may repeat it per operation (as a JSON string).
    let opPk = headerPk || "[{}]";
    if (op.partitionKey !== undefined && op.partitionKey !== null) {
      opPk = typeof op.partitionKey === "string" ? op.partitionKey : JSON.stringify(op.partitionKey);
    }
    const input = { ...op, partitionKey: opPk };
    let result;
    if (
      op.resourceBody &&
      inPartition &&
      [BulkOperationType.Create, BulkOperationType.Upsert, BulkOperationType.Replace].includes(
        op.operationType
      ) &&
      !inPartition(op.resourceBody)
    ) {
      result = {
        statusCode: 400,
        body: {
          code: "BadRequest",
          message: "PartitionKey extracted from document doesn't match the one specified in the header."
        }
      };
    } else if (op.operationType === BulkOperationType.Replace && op.id && op.resourceBody && op.resourceBody.id !== op.id) {
      result = { statusCode: 400, body: { code: "BadRequest", message: "id mismatch" } };
    } else {
      switch (op.operationType) {
        case BulkOperationType.Create:
          result = documentOperations.createOperation(collection, input);
          break;
        case BulkOperationType.Upsert:
          result = documentOperations.upsertOperation(collection, input);
          break;
        case BulkOperationType.Read:
          result = documentOperations.readOperation(collection, input);
          if (
            result.statusCode === 200 &&
            input.ifNoneMatch &&
            (input.ifNoneMatch === "*" || input.ifNoneMatch === result.body._etag)
          ) {
            result = { statusCode: 304, body: undefined };
          } else if (result.statusCode === 200 && input.ifMatch && input.ifMatch !== result.body._etag) {
            result = { statusCode: 412, body: PRECONDITION_FAILED };
          }
          break;
        case BulkOperationType.Delete:
          result = documentOperations.deleteOperation(collection, input);
          break;
        case BulkOperationType.Replace:
          result = documentOperations.replaceOperation(collection, input);
          break;
        default:
          // Patch and unknown types are not supported here.
          result = {
            statusCode: 400,
            body: { code: "BadRequest", message: `Operation type '${op.operationType}' is not supported in Batch.` }
          };
      }
    }
    if (result.statusCode >= 400) {
      if (failedAt < 0) failedAt = i;
      results.push({
        statusCode: result.statusCode,
        substatusCode: 0,
        requestCharge: 0
      });
    } else {
      const minimal =
        /return=minimal/i.test(req.headers.prefer || "") && op.operationType !== BulkOperationType.Read;
      results.push({
        statusCode: result.statusCode,
        requestCharge: 1,
        eTag: result.body ? result.body._etag : undefined,
        resourceBody: minimal ? undefined : result.body
      });
    }
  }

  if (failedAt >= 0 && atomic) {
    // roll back every write made by this batch
    docs._data = snapshot.data;
    docs._index = snapshot.index;
    docs._ridCount = snapshot.ridCount;
    // results before the failure did not happen either
    for (let i = 0; i < failedAt; i += 1) {
      results[i] = { statusCode: 424, requestCharge: 0 };
    }
    res.statusCode = 207;
    res.setHeader("x-ms-substatus", "0");
    return results;
  }
  res.statusCode = failedAt >= 0 ? 207 : 200;
  return results;
}

// (2) account metadata: advertise the scheme/host/port actually served.
let advertisedEndpoint = null;
async function readMetaHandler(account_) {
  const data = account_.read();
  const locations = [{ name: "South Central US", databaseAccountEndpoint: advertisedEndpoint }];
  return { ...data, writableLocations: locations, readableLocations: locations };
}

// Install the replacements into the package's handler modules *before* its
// route table (lib/routes.js) is loaded, so the table picks them up.
const replacements = {
  "handler/read-document": readDocumentHandler,
  "handler/replace-document": replaceDocumentHandler,
  "handler/delete-document": deleteDocumentHandler,
  "handler/create-document": createDocumentHandler,
  "handler/upsert-document": upsertDocumentHandler,
  "handler/read-partition-key-ranges": readPartitionKeyRangesHandler,
  "handler/query-documents": queryDocumentsHandler,
  "handler/read-documents": readDocumentsHandler,
  "handler/batch-documents": batchHandler,
  "handler/read-meta": readMetaHandler
};
const routesPath = require.resolve(`${PKG}/lib/routes`);
if (require.cache[routesPath]) {
  throw new Error("lib/routes was loaded before the handler patches were installed");
}
Object.entries(replacements).forEach(([name, fn]) => {
  const mod = lib(name);
  mod.default = fn;
});
const route = lib("routes").default;

// ---------------------------------------------------------------------------
// Request classification (stats / faults)
// ---------------------------------------------------------------------------

function normalizePath(url) {
  let pathname = (url || "/").split("?")[0];
  while (pathname.startsWith("//")) pathname = pathname.slice(1);
  while (pathname.length > 1 && pathname.endsWith("/")) pathname = pathname.slice(0, -1);
  return pathname;
}

function classify(req) {
  const parts = normalizePath(req.url).split("/").filter(Boolean);
  const m = req.method;
  const isQuery =
    m === "POST" &&
    (trueHeader(req, "x-ms-documentdb-isquery") ||
      (req.headers["content-type"] || "").startsWith("application/query+json"));
  if (parts.length === 0) return m === "GET" ? "metadata" : "other";
  if (parts[0] !== "dbs") return "other";
  // /dbs, /dbs/x, /dbs/x/colls, /dbs/x/colls/y, /dbs/x/colls/y/pkranges
  if (parts.length <= 4) return m === "GET" || isQuery ? "metadata" : "other";
  if (parts[4] === "pkranges") return m === "GET" ? "metadata" : "other";
  if (parts[4] !== "docs") return "other";
  if (parts.length === 5) {
    if (m === "GET") return "query"; // read feed
    if (m !== "POST") return "other";
    if (trueHeader(req, "x-ms-cosmos-is-query-plan-request")) return "metadata";
    if (isQuery) return "query";
    if (trueHeader(req, "x-ms-cosmos-is-batch-request")) return "batch";
    if (trueHeader(req, "x-ms-documentdb-is-upsert")) return "upsert";
    return "create";
  }
  if (parts.length === 6) {
    if (m === "GET") return "read";
    if (m === "PUT") return "replace";
    if (m === "DELETE") return "delete";
  }
  return "other";
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

let account = null;

function send(req, res, statusCode, body, headers = {}) {
  res.statusCode = statusCode;
  Object.entries(headers).forEach(([k, v]) => res.setHeader(k, v));
  commonHeaders(req, res);
  if (statusCode === 204 || statusCode === 304 || body === undefined) {
    res.end();
  } else {
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify(body));
  }
}

function commonHeaders(req, res) {
  res.setHeader("x-ms-activity-id", randomUUID());
  if (!res.hasHeader("x-ms-request-charge")) res.setHeader("x-ms-request-charge", "1");
  res.setHeader("x-ms-gatewayversion", "2.0.0");
  res.setHeader("date", new Date().toUTCString());
}

function drain(req) {
  return new Promise(resolve => {
    req.on("end", resolve);
    req.on("error", resolve);
    req.on("close", resolve);
    req.resume();
  });
}

async function readJsonBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const text = Buffer.concat(chunks).toString();
  return text ? JSON.parse(text) : {};
}

const FAULT_BODIES = {
  408: { code: "RequestTimeout", message: "Request timed out (injected by the test emulator)." },
  429: {
    code: "TooManyRequests",
    message:
      "Message: {\"Errors\":[\"Request rate is large. More Request Units may be needed, so no changes were made. Please retry this request later.\"]} (injected by the test emulator)"
  },
  449: { code: "RetryWith", message: "Retry the request (injected by the test emulator)." },
  500: { code: "InternalServerError", message: "Injected internal error." },
  503: { code: "ServiceUnavailable", message: "Service is currently unavailable (injected by the test emulator)." }
};
const DEFAULT_SUBSTATUS = { 429: "3200", 503: "21008", 408: "0", 410: "0" };
const ACTIONS = ["status", "delay", "reset", "apply-then-drop"];

/** Container id of a data-plane request (`/dbs/D/colls/C/...`), or null. */
function containerOf(req) {
  const parts = normalizePath(req.url).split("/").filter(Boolean);
  return parts[0] === "dbs" && parts[2] === "colls" && parts[3] ? decodeURIComponent(parts[3]) : null;
}

/** 32-bit seeded PRNG (mulberry32): the same seed gives the same sequence of draws. */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Checks kinds/containers filters; returns [kindsSet, containersSet|null]. */
function parseFilters(body) {
  const kinds = Array.isArray(body.kinds) && body.kinds.length ? body.kinds : DOCUMENT_KINDS;
  const unknown = kinds.filter(k => !KINDS.includes(k));
  if (unknown.length) throw new Error(`unknown kinds ${unknown.join(",")}; known: ${KINDS.join(",")}`);
  const containers = Array.isArray(body.containers) && body.containers.length ? new Set(body.containers.map(String)) : null;
  return [new Set(kinds), containers];
}

/**
 * One fault (without count/filters): {action, status, substatus, retryAfterMs, delayMs, connection}.
 * `delayMs` may be N or [min, max] (drawn per request). Throws on a bad spec.
 */
function parseFault(body) {
  const status = body.status === undefined || body.status === null ? null : Number(body.status);
  const delay = body.delayMs === undefined ? 0 : body.delayMs;
  const delays = Array.isArray(delay) ? delay.map(Number) : [Number(delay), Number(delay)];
  const action = body.action || (status !== null ? "status" : delays[1] > 0 ? "delay" : null);
  if (!ACTIONS.includes(action)) {
    throw new Error(`need status, delayMs or action (one of ${ACTIONS.join(", ")})`);
  }
  if (action === "status" && status === null) throw new Error("action status needs a status");
  if (status !== null && !(status >= 400 && status <= 599)) throw new Error("status must be 400..599");
  if (delays.length !== 2 || !(delays[0] >= 0) || !(delays[1] >= delays[0])) {
    throw new Error("delayMs must be N >= 0 or [min, max] with 0 <= min <= max");
  }
  return {
    action,
    status: action === "status" ? status : null,
    substatus:
      body.substatus !== undefined ? String(body.substatus) : (action === "status" && DEFAULT_SUBSTATUS[status]) || null,
    retryAfterMs:
      body.retryAfterMs !== undefined ? Number(body.retryAfterMs) : action === "status" && status === 429 ? 10 : null,
    delayMs: delays,
    connection: !!body.connection
  };
}

const showFault = f => ({
  ...f,
  delayMs: f.delayMs[0] === f.delayMs[1] ? f.delayMs[0] : f.delayMs,
  ...(f.kinds ? { kinds: [...f.kinds] } : {}),
  ...(f.containers !== undefined ? { containers: f.containers ? [...f.containers] : null } : {})
});

// The default mix of POST /__emulator/chaos: every kind of fault, equally likely.
const DEFAULT_CHAOS_FAULTS = [
  { status: 429, retryAfterMs: 5 },
  { status: 503, retryAfterMs: 5 },
  { status: 408, retryAfterMs: 5 },
  { status: 449, retryAfterMs: 5 },
  { action: "delay", delayMs: [50, 400] },
  { action: "reset" },
  { action: "apply-then-drop" }
];

function chaosState() {
  if (!chaos) return { active: false };
  return {
    active: true,
    seed: chaos.seed,
    rate: chaos.rate,
    draws: chaos.draws,
    kinds: [...chaos.kinds],
    containers: chaos.containers ? [...chaos.containers] : null,
    faults: chaos.faults.map(f => ({ ...showFault(f), weight: f.weight }))
  };
}

async function controlHandler(req, res, pathname) {
  const m = req.method;
  const sub = pathname.slice("/__emulator".length) || "/";
  const ok = body => send(req, res, 200, body);
  try {
    if (sub === "/stats" && m === "GET") return ok(stats);
    if (sub === "/reset-stats" && m === "POST") {
      await drain(req);
      stats = newStats();
      return ok(stats);
    }
    if (sub === "/clock" && m === "GET") {
      return ok({ nowMs: nowMs(), nowSeconds: Math.floor(nowMs() / 1000), offsetSeconds: clockOffsetMs / 1000 });
    }
    if (sub === "/advance-clock" && m === "POST") {
      const body = await readJsonBody(req);
      const seconds = Number(body.seconds);
      if (!Number.isFinite(seconds) || seconds < 0) {
        return send(req, res, 400, { message: "seconds must be a number >= 0" });
      }
      clockOffsetMs += seconds * 1000;
      const removed = sweepExpired();
      return ok({ offsetSeconds: clockOffsetMs / 1000, nowSeconds: Math.floor(nowMs() / 1000), removed });
    }
    if (sub === "/sweep" && m === "POST") {
      await drain(req);
      return ok({ removed: sweepExpired() });
    }
    if (sub === "/faults" && m === "GET") {
      return ok({ faults: faults.map(showFault) });
    }
    if ((sub === "/faults" && m === "DELETE") || (sub === "/faults/clear" && m === "POST")) {
      await drain(req);
      faults = [];
      return ok({ faults: [] });
    }
    if (sub === "/faults" && m === "POST") {
      const body = await readJsonBody(req);
      const count = body.count === undefined ? 1 : Number(body.count);
      if (!(count >= 1)) return send(req, res, 400, { message: "count must be >= 1" });
      const [kinds, containers] = parseFilters(body);
      const rule = { ...parseFault(body), remaining: count, kinds, containers };
      faults.push(rule);
      return ok({ added: showFault(rule), pending: faults.length });
    }
    if (sub === "/chaos" && m === "GET") return ok(chaosState());
    if ((sub === "/chaos" && m === "DELETE") || (sub === "/chaos/stop" && m === "POST")) {
      await drain(req);
      const last = chaosState();
      chaos = null;
      return ok(last);
    }
    if (sub === "/chaos" && m === "POST") {
      const body = await readJsonBody(req);
      const seed = Number(body.seed);
      const rate = body.rate === undefined ? 0.1 : Number(body.rate);
      if (!Number.isInteger(seed)) return send(req, res, 400, { message: "seed must be an integer" });
      if (!(rate >= 0 && rate <= 1)) return send(req, res, 400, { message: "rate must be 0..1" });
      const [kinds, containers] = parseFilters(body);
      const specs = Array.isArray(body.faults) && body.faults.length ? body.faults : DEFAULT_CHAOS_FAULTS;
      const list = specs.map(spec => {
        const weight = spec.weight === undefined ? 1 : Number(spec.weight);
        if (!(weight > 0)) throw new Error("weight must be > 0");
        return { ...parseFault(spec), weight };
      });
      chaos = { seed, rate, kinds, containers, faults: list, random: prng(seed), draws: 0 };
      return ok(chaosState());
    }
    if (sub === "/outage" && m === "POST") {
      const body = await readJsonBody(req);
      const seconds = Number(body.seconds);
      if (!(seconds > 0)) return send(req, res, 400, { message: "seconds must be > 0" });
      outageUntilMs = Date.now() + seconds * 1000;
      return ok({ outageUntilMs });
    }
    if (sub === "/outage" && m === "GET") return ok({ down: Date.now() < outageUntilMs, outageUntilMs });
    if (sub === "/outage" && m === "DELETE") {
      await drain(req);
      outageUntilMs = 0;
      return ok({ down: false });
    }
    if (sub === "/reset" && m === "POST") {
      await drain(req);
      account.databases = new Databases(account, ["/id"]);
      faults = [];
      chaos = null;
      outageUntilMs = 0;
      stats = newStats();
      clockOffsetMs = 0;
      return ok({ reset: true });
    }
    return send(req, res, 404, { message: `unknown control ${m} ${pathname}` });
  } catch (err) {
    return send(req, res, 400, { message: err.message });
  }
}

/** The fault for this request: a queued rule first, else a seeded random draw, else null. */
function takeFault(kind, container) {
  const matches = f => f.kinds.has(kind) && (!f.containers || (container !== null && f.containers.has(container)));
  const rule = faults.find(f => f.remaining > 0 && matches(f));
  if (rule) {
    rule.remaining -= 1;
    faults = faults.filter(f => f.remaining > 0);
    return rule;
  }
  if (!chaos || !matches(chaos)) return null;
  chaos.draws += 1;
  if (chaos.random() >= chaos.rate) return null;
  const total = chaos.faults.reduce((n, f) => n + f.weight, 0);
  let pick = chaos.random() * total;
  const chosen = chaos.faults.find(f => (pick -= f.weight) < 0) || chaos.faults[chaos.faults.length - 1];
  const [lo, hi] = chosen.delayMs;
  return { ...chosen, delayMs: [lo + Math.floor(chaos.random() * (hi - lo + 1)), 0] };
}

/** Ends a request without an answer: HTTP/1.1 destroys the socket; HTTP/2 resets the stream (or the whole connection). */
function dropRequest(req, res, wholeConnection) {
  if (req.httpVersionMajor === 2 && req.stream) {
    if (wholeConnection && req.stream.session) req.stream.session.destroy();
    else req.stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
  } else {
    (req.socket || res.socket).destroy();
  }
}

const faultLabel = f => (f.action === "status" ? String(f.status) : f.action);

async function handleRequest(req, res) {
  const pathname = normalizePath(req.url);
  if (pathname === "/__emulator" || pathname.startsWith("/__emulator/")) {
    return controlHandler(req, res, pathname);
  }

  const kind = classify(req);
  stats.requests += 1;
  stats.byKind[kind] += 1;

  if (Date.now() < outageUntilMs) {
    stats.faults.outage = (stats.faults.outage || 0) + 1;
    log(req.method, req.url, kind, "-> dropped (outage)");
    return dropRequest(req, res, true);
  }

  const fault = takeFault(kind, containerOf(req));
  if (fault) {
    const label = faultLabel(fault);
    stats.faults[label] = (stats.faults[label] || 0) + 1;
    const delayMs = fault.delayMs[0];
    if (delayMs) await new Promise(r => setTimeout(r, delayMs));
    if (fault.action === "status") {
      await drain(req);
      const headers = {};
      if (fault.substatus !== null) headers["x-ms-substatus"] = fault.substatus;
      if (fault.retryAfterMs !== null) headers["x-ms-retry-after-ms"] = String(fault.retryAfterMs);
      log(req.method, req.url, kind, "-> injected", fault.status);
      const body = FAULT_BODIES[fault.status] || { code: "InjectedFault", message: `Injected ${fault.status}` };
      return send(req, res, fault.status, body, headers);
    }
    if (fault.action === "reset") {
      log(req.method, req.url, kind, "-> injected reset");
      return dropRequest(req, res, fault.connection);
    }
    if (res.destroyed || (req.socket && req.socket.destroyed)) return undefined; // client gave up
  }
  const dropAfterApply = fault && fault.action === "apply-then-drop";

  const matched = route(req);
  let body;
  if (!matched) {
    await drain(req);
    res.statusCode = 400;
    body = { code: "BadRequest", message: `no route for ${req.method} ${pathname}` };
  } else {
    const [params, handler] = matched;
    try {
      body = await handler(account, req, res, params);
    } catch (err) {
      // The connection went away while the body was read (an injected reset or outage took down
      // the HTTP/2 connection this request shared): nobody is left to answer.
      if (err && err.type === "request.aborted") return undefined;
      if (err instanceof SyntaxError || err.badRequest) {
        res.statusCode = 400;
        body = { code: "BadRequest", message: err.message };
      } else {
        console.error("[cosmos-emulator] handler error:", err);
        res.statusCode = 500;
        body = { code: "InternalServerError", message: err.message };
      }
    }
  }
  if (res.statusCode >= 400 && body && typeof body === "object" && !Array.isArray(body)) {
    if (!body.message) body.message = "";
    if (!body.code) body.code = codeFor(res.statusCode);
  }
  if (body && body._etag) res.setHeader("etag", body._etag);
  if (res.statusCode >= 400 && !res.hasHeader("x-ms-substatus")) res.setHeader("x-ms-substatus", "0");
  // Prefer: return=minimal (the SDK's default for writes): no body on success
  const prefer = req.headers.prefer || "";
  if (
    /return=minimal/i.test(prefer) &&
    res.statusCode < 300 &&
    ["create", "replace", "upsert"].includes(kind)
  ) {
    body = "";
  }
  if (dropAfterApply) {
    log(`HTTP/${req.httpVersion}`, req.method, req.url, kind, "->", res.statusCode, "applied, then dropped (injected)");
    return dropRequest(req, res, fault.connection);
  }
  log(`HTTP/${req.httpVersion}`, req.method, req.url, kind, "->", res.statusCode);
  if (args.verbose && process.env.COSMOS_EMULATOR_VERBOSE === "2") {
    log("  req headers", JSON.stringify(req.headers));
    log("  res body", JSON.stringify(body));
  }
  res.setHeader("content-location", `${scheme}://${req.headers.host || req.headers[":authority"] || ""}${req.url}`);
  if (body === "" || res.statusCode === 204 || res.statusCode === 304 || body === undefined) {
    commonHeaders(req, res);
    if (res.statusCode !== 204 && res.statusCode !== 304) res.setHeader("content-length", "0");
    return res.end();
  }
  return send(req, res, res.statusCode, body);
}

function codeFor(status) {
  return (
    {
      400: "BadRequest",
      401: "Unauthorized",
      403: "Forbidden",
      404: "NotFound",
      409: "Conflict",
      412: "PreconditionFailed",
      413: "RequestEntityTooLarge",
      424: "FailedDependency",
      429: "TooManyRequests",
      500: "InternalServerError",
      503: "ServiceUnavailable"
    }[status] || "Error"
  );
}

function onRequest(req, res) {
  handleRequest(req, res).catch(err => {
    console.error("[cosmos-emulator] request failed:", err);
    if (!res.headersSent) {
      try {
        res.statusCode = 500;
        res.end(JSON.stringify({ code: "InternalServerError", message: err.message }));
      } catch (e) {
        /* ignore */
      }
    } else if (!res.writableEnded) {
      res.end();
    }
  });
}

const scheme = args.http ? "http" : "https";
let server;
const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

if (args.http) {
  // Plain HTTP: HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on one port.
  // The Rust SDK first probes with HTTP/2 prior knowledge; answering it keeps
  // the client on its default settings.
  const h1 = http.createServer({ keepAliveTimeout: 600000, headersTimeout: 610000, requestTimeout: 0 }, onRequest);
  const h2 = http2.createServer({}, onRequest);
  h2.on("sessionError", e => log("h2 session error", e.message));
  server = net.createServer(socket => {
    socket.on("error", () => {});
    socket.once("data", first => {
      socket.pause();
      socket.unshift(first);
      const n = Math.min(first.length, H2_PREFACE.length);
      const isH2 = first.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
      (isH2 ? h2 : h1).emit("connection", socket);
      process.nextTick(() => socket.resume());
    });
  });
} else {
  // HTTPS with the package's bundled (expired, self-signed) certificate;
  // ALPN offers h2 and http/1.1.
  server = http2.createSecureServer(
    {
      cert: fs.readFileSync(path.join(pkgRoot, "cert.pem")),
      key: fs.readFileSync(path.join(pkgRoot, "key.pem")),
      allowHTTP1: true,
      minVersion: "TLSv1.2"
    },
    onRequest
  );
  server.on("sessionError", e => log("h2 session error", e.message));
  server.on("tlsClientError", e => log("tls client error", e.message));
}

server.on("error", err => {
  console.error(`[cosmos-emulator] server error: ${err.message}`);
  process.exit(1);
});

server.listen(args.port, args.host, () => {
  const { address, port } = server.address();
  const host = address === "0.0.0.0" || address === "::" ? "127.0.0.1" : address.includes(":") ? `[${address}]` : address;
  advertisedEndpoint = `${scheme}://${host}:${port}/`;
  account = new Account(host, port);
  const line = { event: "listening", port, endpoint: advertisedEndpoint };
  process.stdout.write(`${JSON.stringify(line)}\n`);
});

const sweeper = setInterval(sweepExpired, 1000);
sweeper.unref();

function shutdown(signal) {
  log(`received ${signal}, exiting`);
  clearInterval(sweeper);
  try {
    server.close();
  } catch (e) {
    /* ignore */
  }
  process.exit(0);
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
if (args.exitWithStdin) {
  // for test harnesses: exit when the parent closes our stdin (or dies)
  process.stdin.on("end", () => shutdown("stdin EOF"));
  process.stdin.on("error", () => shutdown("stdin error"));
  process.stdin.resume();
}
process.on("SIGINT", () => shutdown("SIGINT"));
