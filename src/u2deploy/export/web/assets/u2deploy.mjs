// removeBackground(input, options?) on the user's own device: decode, the `fast` preprocessing,
// U²-Net in onnxruntime-web (WASM, or WebGPU where the site was exported with --webgpu), and the mask
// at the image's own size. Everything about the artifact (input size, mean/std, precision, file
// names, limits) is read from ./u2deploy.json, which `u2export web` wrote beside the model.

import { encodePNG, postprocess, preprocess, sniff } from './processing.mjs';

const here = new URL('./', import.meta.url);
const sessions = new Map();
let sitePromise = null;

export class ImageError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ImageError';
  }
}

// The site's description (u2deploy.json), fetched once.
export function site() {
  sitePromise ??= fetch(new URL('u2deploy.json', here)).then((r) => {
    if (!r.ok) throw new Error(`u2deploy.json: HTTP ${r.status} (is the site served whole?)`);
    return r.json();
  });
  return sitePromise;
}

// The backends this site can run: 'wasm' always, 'webgpu' when exported with --webgpu and the browser has it.
export async function backends() {
  const s = await site();
  const out = ['wasm'];
  if (s.webgpu && typeof navigator !== 'undefined' && navigator.gpu && await navigator.gpu.requestAdapter()) {
    out.push('webgpu');
  }
  return out;
}

function defaultThreads() {
  if (!globalThis.crossOriginIsolated) return 1;  // threads need SharedArrayBuffer, i.e. COOP/COEP headers
  return Math.max(1, Math.min(navigator.hardwareConcurrency || 1, 8));
}

// The onnxruntime-web session for (backend, threads), created on first use; `sessionMs` is its cost.
export async function load(options = {}) {
  const s = await site();
  const backend = options.backend ?? 'wasm';
  if (backend !== 'wasm' && backend !== 'webgpu') throw new Error(`backend ${backend}: expected 'wasm' or 'webgpu'`);
  if (backend === 'webgpu' && !s.webgpu) {
    throw new Error("backend 'webgpu': this site was exported without --webgpu (u2export web ... --webgpu)");
  }
  const threads = options.threads ?? defaultThreads();
  const key = `${backend}/${threads}`;
  if (!sessions.has(key)) {
    sessions.set(key, createSession(s, backend, threads).catch((err) => {
      sessions.delete(key);
      throw err;
    }));
  }
  return sessions.get(key);
}

let runtimeThreads = null;  // onnxruntime-web starts its WASM threads once per page

async function createSession(s, backend, threads) {
  if (runtimeThreads !== null && runtimeThreads !== threads) {
    throw new Error(`threads ${threads}: this page's runtime already runs ${runtimeThreads} (reload it to change)`);
  }
  runtimeThreads = threads;
  const started = performance.now();
  const runtime = s.runtime[backend];
  const ort = await import(new URL(runtime.module, here).href);
  ort.env.wasm.wasmPaths = new URL(runtime.folder, here).href;
  ort.env.wasm.numThreads = threads;
  const model = backend === 'webgpu' ? s.webgpu : s.model;
  const session = await ort.InferenceSession.create(new URL(model.file, here).href, {
    executionProviders: [backend],
    graphOptimizationLevel: 'all',
    freeDimensionOverrides: model.free_dimensions,
  });
  return { ort, session, backend, threads, model, sessionMs: performance.now() - started };
}

// Decoded pixels, as Pillow would see them: no colour management, EXIF orientation applied
// (ImageOps.exif_transpose), a one-channel file kept gray. Refuses what read_image refuses.
export async function decode(input) {
  const s = await site();
  let name = 'image', blob = null;
  if (typeof input === 'string' || input instanceof URL) {
    name = String(input);
    let r;
    try {
      r = await fetch(input);
    } catch (err) {
      throw new ImageError(`${name}: cannot fetch it (${err.message})`);
    }
    if (!r.ok) throw new ImageError(`${name}: HTTP ${r.status}`);
    blob = await r.blob();
  } else if (typeof Blob !== 'undefined' && input instanceof Blob) {
    name = input.name || 'image';
    blob = input;
  } else if (typeof HTMLImageElement !== 'undefined' && input instanceof HTMLImageElement) {
    name = input.currentSrc || input.src || 'image';
    if (name !== 'image') blob = await (await fetch(name)).blob();  // the file's bytes, not the page's render
  } else if (typeof ImageBitmap === 'undefined' || !(input instanceof ImageBitmap)) {
    throw new ImageError('input: expected a URL, a Blob or File, an ImageBitmap or an HTMLImageElement');
  }
  let header = null, bitmap = input;
  if (blob) {
    if (blob.size === 0) throw new ImageError(`${name}: empty file`);
    header = sniff(new Uint8Array(await blob.slice(0, 1 << 20).arrayBuffer()));  // EXIF/ICC come before a JPEG's SOF
    if (header) checkSize(name, header.width, header.height, s.limits);
    try {
      bitmap = await createImageBitmap(blob, {
        colorSpaceConversion: 'none', imageOrientation: 'from-image', premultiplyAlpha: 'none',
      });
    } catch {
      throw new ImageError(`${name}: not a readable image (the browser cannot decode it)`);
    }
  } else if (input instanceof HTMLImageElement) {
    bitmap = await createImageBitmap(input, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  }
  const { width, height } = bitmap;
  checkSize(name, width, height, s.limits);
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext('2d', { willReadFrequently: true, colorSpace: 'srgb' });
  ctx.drawImage(bitmap, 0, 0);
  if (bitmap !== input) bitmap.close();
  const rgba = ctx.getImageData(0, 0, width, height).data;
  return { name, width, height, rgba, gray: Boolean(header && header.gray) };
}

function checkSize(name, width, height, limits) {
  if (width * height > limits.max_pixels) {
    throw new ImageError(`${name}: ${width}×${height} pixels is over the ${limits.max_pixels.toLocaleString('en')} ` +
                         'limit (a decompression bomb?)');
  }
  if (width < limits.min_side || height < limits.min_side) {
    throw new ImageError(`${name}: ${width}×${height} pixels is too small (each side at least ${limits.min_side})`);
  }
}

// The network's map for one decoded image (the `fast` preprocessing, one session.run).
async function saliency(image, options) {
  const s = await site();
  const [h, w] = s.spec.input_size;
  const t0 = performance.now();
  const x = preprocess(image.rgba, image.width, image.height, image.gray, [h, w], s.spec.mean, s.spec.std,
                     s.resize_order);
  const t1 = performance.now();
  const y = await infer(x, [1, 3, h, w], options);
  return { map: y.data, h, w, order: s.resize_order, preprocessMs: t1 - t0, modelMs: performance.now() - t1 };
}

async function maskOf(input, options) {
  const run = await load(options);
  const sessionMs = run.reported ? 0 : run.sessionMs;  // reported by the first call that used the session
  run.reported = true;
  const t0 = performance.now();
  const image = await decode(input);
  const t1 = performance.now();
  const m = await saliency(image, options);
  const t2 = performance.now();
  const mask = postprocess(m.map, m.h, m.w, image.height, image.width, m.order);
  const t3 = performance.now();
  return {
    image, width: image.width, height: image.height, mask, backend: run.backend, threads: run.threads,
    ms: t3 - t0,  // decode → mask; the first call's session creation is in timings.session
    timings: { session: sessionMs, decode: t1 - t0, preprocess: m.preprocessMs,
               model: m.modelMs, postprocess: t3 - t2 },
  };
}

// The mask (0-255, width × height) of `input`: a URL, Blob/File, ImageBitmap or HTMLImageElement.
// options: backend 'wasm' (default) or 'webgpu'; threads (WASM threads; default: the cores, 1 when the
// page is not cross-origin isolated).
export async function removeBackground(input, options = {}) {
  const { image, ...result } = await maskOf(input, options);
  return result;
}

// The cut-out: the image's RGB with the mask as alpha, as ImageData, and png() for a PNG Blob of it.
export async function cutout(input, options = {}) {
  const { image, ...result } = await maskOf(input, options);
  const rgba = new Uint8ClampedArray(image.rgba);
  for (let i = 0; i < result.mask.length; i++) rgba[i * 4 + 3] = result.mask[i];
  const imageData = new ImageData(rgba, image.width, image.height);
  return { ...result, imageData, png: () => encodePNG(rgba, image.width, image.height, 4) };
}

// The model alone on a given N×3×H×W tensor (the site runs N = 1): what the browser runner calls.
async function infer(x, dims, options = {}) {
  const run = await load(options);
  const outputs = await run.session.run({ [run.model.input]: new run.ort.Tensor('float32', x, dims) },
                                        [run.model.output]);
  const y = outputs[run.model.output];
  const result = { data: y.data, dims: y.dims };
  y.dispose?.();
  return result;
}

function toBase64(array) {
  const bytes = new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
  let text = '';
  for (let i = 0; i < bytes.length; i += 32768) text += String.fromCharCode(...bytes.subarray(i, i + 32768));
  return btoa(text);
}

function fromBase64(text, Type = Uint8Array) {
  const bytes = Uint8Array.from(atob(text), (ch) => ch.charCodeAt(0));
  return new Type(bytes.buffer);
}

// For tests and tools: the steps on their own, the model on a tensor, and base64 for crossing into Python.
export const internals = { preprocess, postprocess, sniff, encodePNG, decode, infer, toBase64, fromBase64 };
