import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The page is served by the web function at the API's own origin (`/` and
// `/assets/*`), under a Content-Security-Policy with no inline script or style:
// every script and stylesheet is a content-hashed file under /assets/, and no
// asset is inlined as a data: URL.
export default defineConfig({
  plugins: [react()],
  build: {
    assetsDir: "assets",
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
    target: "es2022",
  },
});
