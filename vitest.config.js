import { defineConfig } from "vitest/config";

export default defineConfig({
  // JSX in the hook test without a React plugin: automatic runtime (react/jsx-runtime).
  oxc: { jsx: { runtime: "automatic" } },
  test: {
    restoreMocks: true,
    testTimeout: 10000,
    projects: [
      {
        extends: true,
        // The client needs no browser globals (the WebSocket is injected): plain Node.
        test: { name: "client", include: ["tests/js/**/*.test.js"], environment: "node" },
      },
      {
        extends: true,
        test: { name: "hook", include: ["tests/js/**/*.test.jsx"], environment: "jsdom" },
      },
    ],
  },
});
