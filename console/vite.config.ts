// The console is served by the gateway at /, next to the API at /v1 (same origin, so the
// strict Content-Security-Policy can say connect-src 'self'). `npm run dev` proxies the API to a
// running `make up` stack.
import vue from "@vitejs/plugin-vue";
import { defineConfig } from "vitest/config";

const api = process.env.KUBEMATE_URL ?? "http://127.0.0.1:8000";

export default defineConfig({
  plugins: [vue()],
  define: {
    // vue-i18n's composition API only: drops the legacy API and devtools from the bundle.
    __VUE_I18N_FULL_INSTALL__: false,
    __VUE_I18N_LEGACY_API__: false,
    __INTLIFY_PROD_DEVTOOLS__: false,
    __VUE_OPTIONS_API__: false,
    __VUE_PROD_DEVTOOLS__: false,
    __VUE_PROD_HYDRATION_MISMATCH_DETAILS__: false,
  },
  build: {
    outDir: "dist",
    assetsDir: "assets",
    // No inline <script>, no data: module preloads: everything is a file the CSP allows.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    target: "es2022",
    sourcemap: false,
    // Which files each page loads: read by tests/budget.test.ts.
    manifest: true,
  },
  server: {
    proxy: {
      "/v1": api,
      "/readyz": api,
      "/metrics": api,
    },
  },
  test: {
    environment: "happy-dom",
    include: ["tests/**/*.test.ts"],
  },
});
