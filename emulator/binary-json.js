"use strict";

/*
 * Decoder for Cosmos binary JSON request bodies (what azure_data_cosmos sends
 * for item writes while its binary encoding is on, the SDK default). A buffer
 * starts with the preamble 0x80; each value starts with a type-marker byte.
 * Covers every marker the Rust SDK's encoder emits (literal ints, int64/uint64/
 * double, length-prefixed strings, null/bool, arrays/objects with length+count)
 * and the other self-contained forms; dictionary-based strings (system/user
 * strings) and packed/compressed strings are rejected with a clear error.
 */

const PREAMBLE = 0x80;

class BinaryJsonError extends Error {
  constructor(message) {
    super(`cosmos binary JSON: ${message}`);
    this.badRequest = true;
  }
}

const isBinaryJson = buf => Buffer.isBuffer(buf) && buf.length > 0 && buf[0] === PREAMBLE;

function decodeBinaryJson(buf) {
  if (!isBinaryJson(buf)) throw new BinaryJsonError("missing 0x80 preamble");
  let pos = 1;

  const need = n => {
    if (pos + n > buf.length) throw new BinaryJsonError(`truncated at byte ${pos}`);
  };
  const u8 = () => {
    need(1);
    const v = buf.readUInt8(pos);
    pos += 1;
    return v;
  };
  const u16 = () => {
    need(2);
    const v = buf.readUInt16LE(pos);
    pos += 2;
    return v;
  };
  const u32 = () => {
    need(4);
    const v = buf.readUInt32LE(pos);
    pos += 4;
    return v;
  };
  const str = len => {
    need(len);
    const s = buf.toString("utf8", pos, pos + len);
    pos += len;
    return s;
  };
  const int64 = () => {
    need(8);
    const v = buf.readBigInt64LE(pos);
    pos += 8;
    return Number(v);
  };
  const uint64 = () => {
    need(8);
    const v = buf.readBigUInt64LE(pos);
    pos += 8;
    return Number(v);
  };

  function readString(marker) {
    if (marker >= 0x80 && marker < 0xc0) return str(marker & 0x7f);
    if (marker === 0xc0) return str(u8());
    if (marker === 0xc1) return str(u16());
    if (marker === 0xc2) return str(u32());
    throw new BinaryJsonError(
      `unsupported string marker 0x${marker.toString(16)} at byte ${pos - 1} (dictionary/packed strings are not supported)`
    );
  }

  function readItems(end, count, isObject) {
    const out = isObject ? {} : [];
    let n = 0;
    while (end !== null ? pos < end : n < count) {
      if (isObject) {
        const key = readString(u8());
        out[key] = readValue();
      } else {
        out.push(readValue());
      }
      n += 1;
    }
    if (end !== null && pos !== end) throw new BinaryJsonError("container length mismatch");
    if (count !== null && n !== count) throw new BinaryJsonError("container count mismatch");
    return out;
  }

  function readContainer(marker, isObject) {
    const base = isObject ? 0xe8 : 0xe0;
    switch (marker - base) {
      case 0:
        return isObject ? {} : [];
      case 1:
        return readItems(null, 1, isObject);
      case 2: {
        const len = u8();
        return readItems(pos + len, null, isObject);
      }
      case 3: {
        const len = u16();
        return readItems(pos + len, null, isObject);
      }
      case 4: {
        const len = u32();
        return readItems(pos + len, null, isObject);
      }
      case 5: {
        const len = u8();
        const count = u8();
        return readItems(pos + len, count, isObject);
      }
      case 6: {
        const len = u16();
        const count = u16();
        return readItems(pos + len, count, isObject);
      }
      case 7: {
        const len = u32();
        const count = u32();
        return readItems(pos + len, count, isObject);
      }
      default:
        throw new BinaryJsonError(`bad container marker 0x${marker.toString(16)}`);
    }
  }

  function readValue() {
    const m = u8();
    if (m < 0x20) return m; // literal small int
    if (m >= 0x80 && m <= 0xc2) return readString(m);
    if (m >= 0xe0 && m <= 0xe7) return readContainer(m, false);
    if (m >= 0xe8 && m <= 0xef) return readContainer(m, true);
    switch (m) {
      case 0xc7: // NUMBER_UINT64
        return uint64();
      case 0xc8: // NUMBER_UINT8
      case 0xd7: // UINT8
        return u8();
      case 0xc9: // NUMBER_INT16
      case 0xd9: // INT16
        need(2);
        pos += 2;
        return buf.readInt16LE(pos - 2);
      case 0xca: // NUMBER_INT32
      case 0xda: // INT32
        need(4);
        pos += 4;
        return buf.readInt32LE(pos - 4);
      case 0xcb: // NUMBER_INT64
      case 0xdb: // INT64
        return int64();
      case 0xcc: // NUMBER_DOUBLE
      case 0xce: // FLOAT64
        need(8);
        pos += 8;
        return buf.readDoubleLE(pos - 8);
      case 0xcd: // FLOAT32
        need(4);
        pos += 4;
        return buf.readFloatLE(pos - 4);
      case 0xd0:
        return null;
      case 0xd1:
        return false;
      case 0xd2:
        return true;
      case 0xd8: // INT8
        need(1);
        pos += 1;
        return buf.readInt8(pos - 1);
      case 0xdc: // UINT32
        return u32();
      default:
        throw new BinaryJsonError(`unsupported marker 0x${m.toString(16)} at byte ${pos - 1}`);
    }
  }

  const value = readValue();
  if (pos !== buf.length) throw new BinaryJsonError(`trailing bytes after value (at ${pos} of ${buf.length})`);
  return value;
}

module.exports = { decodeBinaryJson, isBinaryJson, BinaryJsonError };
