// The server's preprocessing, in the browser: decode the file to RGB at its natural size, resize
// to 224×224 exactly as Pillow does (resample.js), scale to [0, 1], lay out as 1×3×224×224.
// Browsers do not read TIFF, the data set's own format: the vendored decoder does (tiff, from
// npm: static/vendor/tiff/), for the common forms; any other goes to the server.

import { resizeLikeServer } from "./resample.js";

export const INPUT_SIZE = 224;
const TIFF_DECODER = new URL("../vendor/tiff/tiff.min.mjs", import.meta.url).href;
const MAX_PIXELS = 50_000_000; // the server's default MAX_IMAGE_PIXELS

export class UnreadableImage extends Error {}

/** The file's pixels as RGB bytes at its natural size. */
export async function decodeToRgb(file) {
  const { rgba, width, height } = (await isTiff(file)) ? await decodeTiff(file) : await decodeByBrowser(file);
  return { pixels: flattenOnWhite(rgba), width, height };
}

/** A URL this browser can show for the file: the file itself, or a PNG copy of a TIFF. */
export async function previewUrl(file) {
  if (!(await isTiff(file))) return URL.createObjectURL(file);
  try {
    const { rgba, width, height } = await decodeTiff(file);
    const canvas = new OffscreenCanvas(width, height);
    canvas.getContext("2d").putImageData(new ImageData(new Uint8ClampedArray(rgba.buffer), width, height), 0, 0);
    return URL.createObjectURL(await canvas.convertToBlob({ type: "image/png" }));
  } catch {
    return URL.createObjectURL(file); // the page says it has no preview
  }
}

async function isTiff(file) {
  const head = new Uint8Array(await file.slice(0, 4).arrayBuffer());
  return [[0x49, 0x49, 42, 0], [0x4d, 0x4d, 0, 42]].some((magic) => magic.every((byte, i) => head[i] === byte));
}

/** A TIFF's first image as RGBA: 8-bit RGB, RGB with alpha, grey or a palette, as Pillow reads them. */
async function decodeTiff(file) {
  const { decode } = await import(TIFF_DECODER);
  let image;
  try {
    [image] = decode(await file.arrayBuffer(), { pages: [0] });
  } catch {
    throw new UnreadableImage(file.name); // a compression the decoder lacks (JPEG, PackBits...)
  }
  const { width, height, data, samplesPerPixel: channels, type } = image;
  const grey = type === 0 || type === 1;
  // Other forms (16-bit, CMYK, premultiplied alpha, a turned image) are left to the server.
  if (image.bitsPerSample !== 8 || image.associatedAlpha || image.planarConfiguration !== 1
      || (image.orientation ?? 1) !== 1 || width * height > MAX_PIXELS || !(grey || type === 2 || type === 3)) {
    throw new UnreadableImage(file.name);
  }
  const colours = type === 2 ? 3 : 1;
  const alpha = image.alpha && channels > colours;
  const palette = type === 3 ? image.palette : null; // 16-bit entries; Pillow keeps the high byte
  const rgba = new Uint8Array(width * height * 4);
  for (let i = 0, j = 0; j < rgba.length; i += channels, j += 4) {
    if (type === 2) {
      rgba[j] = data[i];
      rgba[j + 1] = data[i + 1];
      rgba[j + 2] = data[i + 2];
    } else if (palette) {
      const [r, g, b] = palette[data[i]];
      rgba[j] = r >> 8;
      rgba[j + 1] = g >> 8;
      rgba[j + 2] = b >> 8;
    } else {
      rgba[j] = rgba[j + 1] = rgba[j + 2] = type === 0 ? 255 - data[i] : data[i]; // 0: white is zero
    }
    rgba[j + 3] = alpha ? data[i + colours] : 255;
  }
  return { rgba, width, height };
}

/** Decoded by the browser, EXIF orientation applied. */
async function decodeByBrowser(file) {
  let bitmap;
  try {
    // No colour management and no premultiplied alpha: the raw decoded values, as Pillow
    // reads them. EXIF orientation is applied, as the server does (ImageOps.exif_transpose).
    bitmap = await createImageBitmap(file, {
      imageOrientation: "from-image",
      premultiplyAlpha: "none",
      colorSpaceConversion: "none",
    });
  } catch {
    throw new UnreadableImage(file.name);
  }
  const { width, height } = bitmap;
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0); // at natural size: no scaling, so no canvas filtering
  bitmap.close();
  return { rgba: context.getImageData(0, 0, width, height).data, width, height };
}

/** RGBA to RGB over a white page, as the server shows transparent pixels. */
export function flattenOnWhite(rgba) {
  const rgb = new Uint8Array((rgba.length / 4) * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    const alpha = rgba[i + 3];
    for (let c = 0; c < 3; c++) {
      rgb[j + c] = alpha === 255 ? rgba[i + c] : Math.round((rgba[i + c] * alpha + 255 * (255 - alpha)) / 255);
    }
  }
  return rgb;
}

/** RGB bytes of any size to the model's input: Float32Array 1×3×224×224 in [0, 1]. */
export function toModelInput({ pixels, width, height }) {
  const resized = resizeLikeServer(pixels, width, height, INPUT_SIZE, INPUT_SIZE).pixels;
  const plane = INPUT_SIZE * INPUT_SIZE;
  const input = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) input[c * plane + i] = resized[i * 3 + c] / 255;
  }
  return input;
}
