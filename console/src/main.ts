import { createApp } from "vue";
import App from "./App.vue";
import { createConsoleI18n, rememberLocale, type Locale } from "./i18n";
import { createConsoleRouter } from "./router";
import { onSessionEnd } from "./session";
import "./styles.css";

const i18n = createConsoleI18n();
const router = createConsoleRouter();
// A refused or expired credential brings the user back to sign-in, which says why.
onSessionEnd(() => {
  const current = router.currentRoute.value;
  if (!current.meta.public) void router.push({ name: "signin", query: { next: current.fullPath } });
});
rememberLocale(i18n.global.locale.value as Locale);
createApp(App).use(i18n).use(router).mount("#app");
