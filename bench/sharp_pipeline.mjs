// sharp's bare pipeline on one photo, warm, in one Node process: what the Lambda design's
// resize function does per image (decode, auto-orient, resize, encode each output), with
// the same outputs as a minilab recipe. Prints one JSON line: CPU milliseconds per image
// (user + system, all of libvips' threads) and wall milliseconds per image.
//   node bench/sharp_pipeline.mjs PHOTO RECIPE ROUNDS   (RECIPE: large or web)
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(process.env.SHARP_DIR + "/");
const sharp = require("sharp");

const [photo, recipe, rounds] = [process.argv[2], process.argv[3], Number(process.argv[4] || 20)];
const source = readFileSync(photo);
// minilab's built-in recipes (core/src/recipe.rs): fit within, never enlarged, q80.
const outputs = {
  large: [{ size: 1024, format: "jpeg" }],
  web: [
    { size: 1024, format: "jpeg" },
    { size: 1024, format: "webp" },
    { size: 256, format: "jpeg" },
    { size: 256, format: "webp" },
  ],
}[recipe];

async function once() {
  for (const { size, format } of outputs) {
    await sharp(source)
      .rotate()
      .resize(size, size, { fit: "inside", withoutEnlargement: true })
      .toColourspace("srgb")
      [format]({ quality: 80 })
      .toBuffer();
  }
}

sharp.concurrency(1); // one image at a time on one core, as a 1,769 MB Lambda has
for (let i = 0; i < 3; i++) await once(); // warm
const cpu = process.cpuUsage();
const started = process.hrtime.bigint();
for (let i = 0; i < rounds; i++) await once();
const used = process.cpuUsage(cpu);
const wall = Number(process.hrtime.bigint() - started) / 1e6;
console.log(
  JSON.stringify({
    sharp: sharp.versions.sharp,
    vips: sharp.versions.vips,
    cpu_ms: (used.user + used.system) / 1000 / rounds,
    wall_ms: wall / rounds,
  }),
);
