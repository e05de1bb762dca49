// The server's preprocessing, in the browser: decode the file to RGB at its natural size, resize
// to 224×224 exactly as Pillow does (resample.js), scale to [0, 1], lay out as 1×3×224×224.

import { resizeLikeServer } from "./resample.js";

export const INPUT_SIZE = 224;

export class UnreadableImage extends Error {}

/** The file's pixels as RGB bytes: decoded by the browser, EXIF orientation applied. */
export async function decodeToRgb(file) {
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
  const rgba = context.getImageData(0, 0, width, height).data;
  return { pixels: flattenOnWhite(rgba), width, height };
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
