// Pillow's anti-aliased bilinear resize (Image.resize(size, Image.BILINEAR)), ported operation for
// operation from src/libImaging/Resample.c so that the browser gets the pixels u2bench predict gets:
// the triangle filter with its support scaled by the downscale factor, coefficients in float64
// normalised to sum 1, then (8-bit images) turned into fixed point with PRECISION_BITS = 22 and
// accumulated from a half-unit bias, clipped as Pillow's clip8 does; float32 images accumulate in
// float64 and store float32. Two passes, horizontal (on only the rows the vertical pass reads) then
// vertical, or the other way round where Pillow 13 does (verticalFirst); a pass whose size does not
// change is skipped, as in ImagingResampleInner.

const PRECISION_BITS = 32 - 8 - 2;
const HALF = 1 << (PRECISION_BITS - 1);

function bilinear(x) {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

// precompute_coeffs(inSize, 0, inSize, outSize, BILINEAR): bounds [xmin, count] per output, float64 weights.
export function coefficients(inSize, outSize) {
  const scale = inSize / outSize;
  const filterscale = scale < 1.0 ? 1.0 : scale;
  const support = 1.0 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const kk = new Float64Array(outSize * ksize);
  const bounds = new Int32Array(outSize * 2);
  const inv = 1.0 / filterscale;
  for (let xx = 0; xx < outSize; xx++) {
    const center = 0 + (xx + 0.5) * scale;
    let ww = 0.0;
    let xmin = Math.trunc(center - support + 0.5);  // C's (int) cast truncates toward zero
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    const base = xx * ksize;
    for (let x = 0; x < xmax; x++) {
      const w = bilinear((x + xmin - center + 0.5) * inv);
      kk[base + x] = w;
      ww += w;
    }
    if (ww !== 0.0) for (let x = 0; x < xmax; x++) kk[base + x] /= ww;
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

// normalize_coeffs_8bpc: round half away from zero to fixed point.
export function fixedPoint(kk) {
  const out = new Int32Array(kk.length);
  const one = 1 << PRECISION_BITS;
  for (let i = 0; i < kk.length; i++) {
    out[i] = kk[i] < 0 ? Math.trunc(-0.5 + kk[i] * one) : Math.trunc(0.5 + kk[i] * one);
  }
  return out;
}

function clip8(ss) {
  const v = ss >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

// Which pass runs first. Pillow 13 runs the vertical pass first when the height shrinks by more than
// twice as many pixels as the width (ImagingResampleInner's horizontal_first); earlier releases always
// run the horizontal pass first. u2deploy.json says which the exporting machine's Pillow does.
export function verticalFirst(order, width, height, outW, outH) {
  return order === 'pillow13' && height - outH > 0 && height - outH > (width - outW) * 2;
}

// Two passes over an image of `channels` planes whose pixels are `stride` values apart, each pass
// skipped when its size does not change. `pass(src, ...)` functions are the 8-bit or float32 kernels.
function resize(src, width, height, stride, channels, outW, outH, order, kernels) {
  const needH = outW !== width, needV = outH !== height;
  if (!needH && !needV) return kernels.copy(src, width * height, stride, channels);
  const vert = coefficients(height, outH);
  if (verticalFirst(order, width, height, outW, outH)) {
    const tmp = needV ? kernels.vertical(src, width, stride, channels, outH, vert, 0) : src;
    const step = needV ? channels : stride;
    return needH ? kernels.horizontal(tmp, width, 0, outH, step, channels, outW) : tmp;
  }
  if (!needH) return kernels.vertical(src, width, stride, channels, outH, vert, 0);
  const first = vert.bounds[0];
  const rows = vert.bounds[outH * 2 - 2] + vert.bounds[outH * 2 - 1] - first;
  const tmp = kernels.horizontal(src, width, first, rows, stride, channels, outW);
  return needV ? kernels.vertical(tmp, outW, channels, channels, outH, vert, first) : tmp;
}

// Rows [first, first + rows) of `src` (width pixels each) resized to outW.
function horizontal8(src, width, first, rows, stride, channels, outW) {
  const { ksize, bounds, kk } = coefficients(width, outW);
  const k = fixedPoint(kk);
  const out = new Uint8Array(outW * rows * channels);
  for (let yy = 0; yy < rows; yy++) {
    const line = (yy + first) * width * stride;
    for (let xx = 0; xx < outW; xx++) {
      const xmin = bounds[xx * 2], xmax = bounds[xx * 2 + 1], kb = xx * ksize;
      for (let c = 0; c < channels; c++) {
        let ss = HALF;
        for (let x = 0; x < xmax; x++) ss += src[line + (x + xmin) * stride + c] * k[kb + x];
        out[(yy * outW + xx) * channels + c] = clip8(ss);
      }
    }
  }
  return out;
}

// `src` (width pixels a row, its first row being source row `first`) resized to outH rows.
function vertical8(src, width, stride, channels, outH, vert, first) {
  const k = fixedPoint(vert.kk);
  const out = new Uint8Array(width * outH * channels);
  for (let yy = 0; yy < outH; yy++) {
    const ymin = vert.bounds[yy * 2] - first, ymax = vert.bounds[yy * 2 + 1], kb = yy * vert.ksize;
    for (let xx = 0; xx < width; xx++) {
      for (let c = 0; c < channels; c++) {
        let ss = HALF;
        for (let y = 0; y < ymax; y++) ss += src[((y + ymin) * width + xx) * stride + c] * k[kb + y];
        out[(yy * width + xx) * channels + c] = clip8(ss);
      }
    }
  }
  return out;
}

function copy8(src, n, stride, channels) {
  const out = new Uint8Array(n * channels);
  for (let i = 0; i < n; i++) for (let c = 0; c < channels; c++) out[i * channels + c] = src[i * stride + c];
  return out;
}

// Float32 (mode "F"): float64 sums of float32 pixels, stored as float32; one plane.
function horizontalF(src, width, first, rows, stride, channels, outW) {
  const { ksize, bounds, kk } = coefficients(width, outW);
  const out = new Float32Array(outW * rows);
  for (let yy = 0; yy < rows; yy++) {
    const line = (yy + first) * width;
    for (let xx = 0; xx < outW; xx++) {
      const xmin = bounds[xx * 2], xmax = bounds[xx * 2 + 1], kb = xx * ksize;
      let ss = 0.0;
      for (let x = 0; x < xmax; x++) ss += src[line + x + xmin] * kk[kb + x];
      out[yy * outW + xx] = ss;
    }
  }
  return out;
}

function verticalF(src, width, stride, channels, outH, vert, first) {
  const out = new Float32Array(width * outH);
  for (let yy = 0; yy < outH; yy++) {
    const ymin = vert.bounds[yy * 2] - first, ymax = vert.bounds[yy * 2 + 1], kb = yy * vert.ksize;
    for (let xx = 0; xx < width; xx++) {
      let ss = 0.0;
      for (let y = 0; y < ymax; y++) ss += src[(y + ymin) * width + xx] * vert.kk[kb + y];
      out[yy * width + xx] = ss;
    }
  }
  return out;
}

const UINT8 = { horizontal: horizontal8, vertical: vertical8, copy: copy8 };
const FLOAT32 = { horizontal: horizontalF, vertical: verticalF, copy: (src) => Float32Array.from(src) };

// An 8-bit image, `channels` planes (1 or 3) read from pixels `stride` bytes apart (4 for canvas RGBA),
// resized to outW × outH; returns outW × outH × channels interleaved.
export function resizeUint8(src, width, height, stride, channels, outW, outH, order) {
  return resize(src, width, height, stride, channels, outW, outH, order, UINT8);
}

// A float32 plane (mode "F") resized to outW × outH.
export function resizeFloat32(src, width, height, outW, outH, order) {
  return resize(src, width, height, 1, 1, outW, outH, order, FLOAT32);
}

// Pillow's f2l (Image.convert("L") of a mode "F" image): clamp, then truncate.
export function floatToGray(v) {
  if (v <= 0.0) return 0;
  if (v >= 255.0) return 255;
  return Math.trunc(v);
}
