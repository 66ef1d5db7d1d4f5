// The `fast` pre- and post-processing of u2deploy.data.preprocess / postprocess, in the browser:
// the same Pillow resize (./pillow.mjs), the same float32 arithmetic (Math.fround at every step numpy
// rounds), so that a mask here equals u2bench predict's for the same decoded pixels.

import { floatToGray, resizeFloat32, resizeUint8 } from './pillow.mjs';

const f32 = Math.fround;

// preprocess.fast_one: resize the 8-bit image, divide by its maximum and normalise through one
// 256-entry float32 table per channel. `rgba`: width × height pixels, 4 bytes each (canvas order);
// `gray`: the file is grayscale, so channel 0 (its one channel) and its mean/std feed all three planes;
// `order`: Pillow's pass order (pillow.mjs, verticalFirst).
export function preprocess(rgba, width, height, gray, size, mean, std, order) {
  const [h, w] = size;
  const channels = gray ? 1 : 3;
  const small = resizeUint8(rgba, width, height, 4, channels, w, h, order);
  let peak = 0;
  for (let i = 0; i < small.length; i++) if (small[i] > peak) peak = small[i];
  const divisor = f32(peak || 1);
  const n = h * w;
  const out = new Float32Array(3 * n);
  const table = new Float32Array(256);
  for (let c = 0; c < 3; c++) {
    const k = gray ? 0 : c;
    const m = f32(mean[k]), s = f32(std[k]);
    for (let i = 0; i < 256; i++) table[i] = f32(f32(f32(i / divisor) - m) / s);
    const plane = out.subarray(c * n, (c + 1) * n);
    for (let i = 0; i < n; i++) plane[i] = table[small[i * channels + k]];
  }
  return out;
}

// postprocess.fast_one: min-max normalise the map, scale to 0-255 plus 0.5 (float32), resize it in
// float32 with the same filter to the image's size, and convert as Pillow's "F" → "L" does (truncating
// the +0.5-offset value, i.e. rounding). A constant map becomes all zeros.
export function postprocess(map, h, w, outH, outW, order) {
  let lo = Infinity, hi = -Infinity;
  for (let i = 0; i < map.length; i++) {
    const v = map[i];
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  const span = f32(hi - lo);
  const scaled = new Float32Array(h * w);
  for (let i = 0; i < scaled.length; i++) {
    const unit = span > 0 ? f32(f32(map[i] - lo) / span) : 0;
    scaled[i] = f32(f32(unit * 255) + 0.5);
  }
  const big = outH === h && outW === w ? scaled : resizeFloat32(scaled, w, h, outW, outH, order);
  const mask = new Uint8ClampedArray(outW * outH);
  for (let i = 0; i < mask.length; i++) mask[i] = floatToGray(big[i]);
  return mask;
}

// What the file's header says, before decoding: its size (to refuse a decompression bomb first) and
// whether Pillow would read it as one gray channel (a 1-component JPEG, a gray PNG). null when unknown.
export function sniff(bytes) {
  const b = bytes, n = b.length;
  const be16 = (i) => (b[i] << 8) | b[i + 1];
  const be32 = (i) => ((b[i] << 24) >>> 0) + (b[i + 1] << 16) + (b[i + 2] << 8) + b[i + 3];
  const le16 = (i) => b[i] | (b[i + 1] << 8);
  const le24 = (i) => b[i] | (b[i + 1] << 8) | (b[i + 2] << 16);
  const ascii = (i, len) => String.fromCharCode(...b.subarray(i, i + len));
  if (n >= 26 && be32(0) === 0x89504e47 && be32(4) === 0x0d0a1a0a && ascii(12, 4) === 'IHDR') {
    const colorType = b[25];
    return { type: 'png', width: be32(16), height: be32(20), gray: colorType === 0 || colorType === 4,
             bitDepth: b[24] };
  }
  if (n >= 4 && b[0] === 0xff && b[1] === 0xd8) {
    let i = 2;
    while (i + 9 < n) {
      if (b[i] !== 0xff) return null;
      const marker = b[i + 1];
      if (marker === 0xff) { i += 1; continue; }
      if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) { i += 2; continue; }
      const isSof = marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;
      if (isSof) {
        return { type: 'jpeg', height: be16(i + 5), width: be16(i + 7), gray: b[i + 9] === 1, bitDepth: b[i + 4] };
      }
      i += 2 + be16(i + 2);
    }
    return null;
  }
  if (n >= 10 && ascii(0, 4) === 'GIF8') return { type: 'gif', width: le16(6), height: le16(8), gray: false };
  if (n >= 26 && b[0] === 0x42 && b[1] === 0x4d) {
    const dv = new DataView(b.buffer, b.byteOffset, n);
    return { type: 'bmp', width: Math.abs(dv.getInt32(18, true)), height: Math.abs(dv.getInt32(22, true)), gray: false };
  }
  if (n >= 30 && ascii(0, 4) === 'RIFF' && ascii(8, 4) === 'WEBP') {
    const chunk = ascii(12, 4);
    if (chunk === 'VP8X') return { type: 'webp', width: le24(24) + 1, height: le24(27) + 1, gray: false };
    if (chunk === 'VP8L') {
      const bits = b[21] | (b[22] << 8) | (b[23] << 16) | (b[24] << 24);
      return { type: 'webp', width: (bits & 0x3fff) + 1, height: ((bits >>> 14) & 0x3fff) + 1, gray: false };
    }
    if (chunk === 'VP8 ') return { type: 'webp', width: le16(26) & 0x3fff, height: le16(28) & 0x3fff, gray: false };
  }
  return null;
}

// A PNG of 8-bit gray (channels 1), RGB (3) or RGBA (4) pixels, exactly as given: the canvas would
// premultiply a cut-out's colours by its alpha. zlib through the browser's CompressionStream.
export async function encodePNG(pixels, width, height, channels) {
  const colorType = { 1: 0, 3: 2, 4: 6 }[channels];
  const row = width * channels;
  const raw = new Uint8Array((row + 1) * height);
  for (let y = 0; y < height; y++) raw.set(pixels.subarray(y * row, (y + 1) * row), y * (row + 1) + 1);
  const zipped = new Uint8Array(await new Response(
    new Blob([raw]).stream().pipeThrough(new CompressionStream('deflate'))).arrayBuffer());
  const ihdr = new Uint8Array(13);
  const dv = new DataView(ihdr.buffer);
  dv.setUint32(0, width);
  dv.setUint32(4, height);
  ihdr.set([8, colorType, 0, 0, 0], 8);
  const parts = [new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
                 ...chunk('IHDR', ihdr), ...chunk('IDAT', zipped), ...chunk('IEND', new Uint8Array(0))];
  return new Blob(parts, { type: 'image/png' });
}

let crcTable = null;

function crc32(bytes) {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = crcTable[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const head = new Uint8Array(8);
  new DataView(head.buffer).setUint32(0, data.length);
  head.set([...type].map((ch) => ch.charCodeAt(0)), 4);
  const tail = new Uint8Array(4);
  const typed = new Uint8Array(4 + data.length);
  typed.set(head.subarray(4), 0);
  typed.set(data, 4);
  new DataView(tail.buffer).setUint32(0, crc32(typed));
  return [head, data, tail];
}
