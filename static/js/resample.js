// Resizing exactly as the server does: Pillow's Image.resize(size, BILINEAR, reducing_gap=3.0),
// written from the description of its algorithm. The browser's own canvas scaling uses other
// filters, and a model sees the difference; these steps give the server's pixels, byte for byte.
//
// 1. Reduce: when the image is at least 3 times the target size (reducing_gap), first average
//    blocks of k×k pixels, k = floor(scale / 3), so that the filter below has less to do.
// 2. Resample: a triangle (bilinear) filter whose support widens with the downscale factor, so
//    that every source pixel counts (antialiasing); a horizontal pass, rounded to 8 bits, then a
//    vertical pass. Weights are normalised, then held in fixed point with 22 fraction bits.
//
// Pixels are Uint8Array of RGB, row after row (3 bytes per pixel).

const CHANNELS = 3;
const REDUCING_GAP = 3.0;
const PRECISION_BITS = 32 - 8 - 2;
const ONE = 2 ** PRECISION_BITS;
const ROUNDING = 2 ** (PRECISION_BITS - 1);

/** Resize RGB pixels (width × height) to outWidth × outHeight as the server does. */
export function resizeLikeServer(pixels, width, height, outWidth, outHeight) {
  if (width === outWidth && height === outHeight) return { pixels, width, height };
  let box = [0, 0, width, height];
  const factorX = Math.trunc(width / outWidth / REDUCING_GAP) || 1;
  const factorY = Math.trunc(height / outHeight / REDUCING_GAP) || 1;
  if (factorX > 1 || factorY > 1) {
    ({ pixels, width, height } = reduce(pixels, width, height, factorX, factorY));
    box = [0, 0, box[2] / factorX, box[3] / factorY];
  }
  const horizontal = axisWeights(width, box[0], box[2], outWidth);
  const vertical = axisWeights(height, box[1], box[3], outHeight);
  const wide = resamplePass(pixels, width, height, horizontal, true);
  return { pixels: resamplePass(wide, outWidth, height, vertical, false), width: outWidth, height: outHeight };
}

/** Average factorX × factorY blocks; the last row and column of blocks may be partial. */
export function reduce(pixels, width, height, factorX, factorY) {
  const outWidth = Math.ceil(width / factorX);
  const outHeight = Math.ceil(height / factorY);
  const out = new Uint8Array(outWidth * outHeight * CHANNELS);
  for (let oy = 0; oy < outHeight; oy++) {
    const y0 = oy * factorY;
    const rows = Math.min(factorY, height - y0);
    for (let ox = 0; ox < outWidth; ox++) {
      const x0 = ox * factorX;
      const columns = Math.min(factorX, width - x0);
      const count = rows * columns;
      // The average is (sum + count/2) / count, computed as a multiplication by a 24-bit
      // reciprocal that is worked out in single precision, then truncated.
      const multiplier = Math.trunc(Math.fround(2 ** 32 / Math.fround(256 * count)));
      const amend = Math.trunc(count / 2);
      for (let c = 0; c < CHANNELS; c++) {
        let sum = 0;
        for (let y = y0; y < y0 + rows; y++) {
          for (let x = x0; x < x0 + columns; x++) sum += pixels[(y * width + x) * CHANNELS + c];
        }
        out[(oy * outWidth + ox) * CHANNELS + c] = Math.floor(((sum + amend) * multiplier) / 2 ** 24);
      }
    }
  }
  return { pixels: out, width: outWidth, height: outHeight };
}

function triangle(x) {
  const distance = Math.abs(x);
  return distance < 1 ? 1 - distance : 0;
}

/** For each output sample along one axis: the first source index and fixed-point weights. */
export function axisWeights(inSize, start, end, outSize) {
  const scale = (end - start) / outSize;
  const filterScale = Math.max(scale, 1); // only a downscale widens the filter
  const support = 1.0 * filterScale; // the triangle reaches 1 pixel either side
  const inverse = 1 / filterScale;
  const samples = [];
  for (let i = 0; i < outSize; i++) {
    const center = start + (i + 0.5) * scale;
    const first = Math.max(0, Math.trunc(center - support + 0.5));
    const last = Math.min(inSize, Math.trunc(center + support + 0.5));
    const raw = [];
    let total = 0;
    for (let x = first; x < last; x++) {
      const weight = triangle((x - center + 0.5) * inverse);
      raw.push(weight);
      total += weight;
    }
    const weights = raw.map((weight) => {
      const normal = total === 0 ? weight : weight / total;
      return normal < 0 ? Math.trunc(-0.5 + normal * ONE) : Math.trunc(0.5 + normal * ONE);
    });
    samples.push({ first, weights });
  }
  return samples;
}

/** One pass along rows (horizontal) or columns, rounding each result to 8 bits. */
function resamplePass(pixels, width, height, samples, horizontal) {
  const outWidth = horizontal ? samples.length : width;
  const outHeight = horizontal ? height : samples.length;
  const out = new Uint8Array(outWidth * outHeight * CHANNELS);
  for (let y = 0; y < outHeight; y++) {
    for (let x = 0; x < outWidth; x++) {
      const { first, weights } = samples[horizontal ? x : y];
      for (let c = 0; c < CHANNELS; c++) {
        let sum = ROUNDING;
        for (let k = 0; k < weights.length; k++) {
          const source = horizontal ? (y * width + first + k) : ((first + k) * width + x);
          sum += pixels[source * CHANNELS + c] * weights[k];
        }
        out[(y * outWidth + x) * CHANNELS + c] = Math.min(255, Math.max(0, Math.floor(sum / ONE)));
      }
    }
  }
  return out;
}
