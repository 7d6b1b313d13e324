// Builds the dashboard into the Python package, where the gateway serves it at /ui/
// (python/ensemble/server/ui.py). The output is committed: `make ui-check` rebuilds and compares.
import { defineConfig } from "vite";

export default defineConfig({
  base: "/ui/",
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  build: {
    outDir: "../python/ensemble/ui",
    emptyOutDir: true,
    assetsInlineLimit: 0, // no data: URLs: the page's CSP allows images from 'self' only
    modulePreload: { polyfill: false }, // one chunk, and every browser the page supports has it
    target: "es2022",
    reportCompressedSize: false,
  },
});
