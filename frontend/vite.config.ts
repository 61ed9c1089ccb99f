import { defineConfig } from 'vite';

// The token service serves dist/ at /, and /api/token from the same origin.
// `npx vite` during development proxies the API to a locally running parley-tokens.
export default defineConfig({
  build: {
    target: 'es2020',
    sourcemap: false,
    chunkSizeWarningLimit: 1024,
  },
  server: {
    host: '127.0.0.1',
    proxy: { '/api': 'http://127.0.0.1:8080' },
  },
});
