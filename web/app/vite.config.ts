import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

// The library is compiled from its sources (no `npm run build` of lib/ needed first); the build
// goes to dist/, which the API serves at / (MESSENGER_WEB_DIR). No inline script or style in the
// output: the page's Content-Security-Policy allows only its own files.
export default defineConfig({
  resolve: {
    alias: { '@messenger/client': fileURLToPath(new URL('../lib/src/index.ts', import.meta.url)) },
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    assetsInlineLimit: 0,
    sourcemap: false,
  },
  server: {
    // `npm run dev` next to `messenger serve`: the API's paths go to it
    proxy: Object.fromEntries(['/v1', '/docs', '/openapi.json'].map((p) => [p, 'http://127.0.0.1:8080'])),
  },
  test: {
    environment: 'happy-dom',
    include: ['test/**/*.test.ts'],
  },
});
