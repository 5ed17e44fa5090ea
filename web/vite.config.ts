import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { brotliCompressSync, constants, gzipSync } from "node:zlib";
import { defineConfig, type Plugin } from "vite";
import react from "@vitejs/plugin-react";

/**
 * Brotli and gzip copies of every text asset worth compressing, beside it
 * (`x.js.br`, `x.js.gz`): API Gateway does not compress, so the web function
 * serves the copy the browser accepts (the script: ~230 KB, ~60 KB as br).
 */
function precompress(): Plugin {
  let outDir = "dist";
  return {
    name: "precompress",
    apply: "build",
    configResolved(config) {
      outDir = config.build.outDir;
    },
    closeBundle() {
      const assets = join(outDir, "assets");
      for (const name of readdirSync(assets)) {
        if (!/\.(js|css|svg|json)$/.test(name)) continue;
        const body = readFileSync(join(assets, name));
        if (body.length < 1024) continue;
        writeFileSync(
          join(assets, `${name}.br`),
          brotliCompressSync(body, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } }),
        );
        writeFileSync(join(assets, `${name}.gz`), gzipSync(body, { level: 9 }));
      }
    },
  };
}

// The page is served by the web function at the API's own origin (`/` and
// `/assets/*`), under a Content-Security-Policy with no inline script or style:
// every script and stylesheet is a content-hashed file under /assets/, and no
// asset is inlined as a data: URL.
export default defineConfig({
  plugins: [react(), precompress()],
  build: {
    assetsDir: "assets",
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
    target: "es2022",
  },
});
