// Every string the console shows lives in locales/<lang>.json; the choice is remembered.
import { createI18n } from "vue-i18n";
import en from "./locales/en.json";
import zh from "./locales/zh.json";

export type Locale = "en" | "zh";
export const LOCALES: Locale[] = ["en", "zh"];
const STORAGE_KEY = "kubemate.locale";

function initialLocale(): Locale {
  const saved = localStorage.getItem(STORAGE_KEY);
  if (saved === "en" || saved === "zh") return saved;
  return navigator.language.toLowerCase().startsWith("zh") ? "zh" : "en";
}

export function createConsoleI18n(locale: Locale = initialLocale()) {
  return createI18n({
    legacy: false,
    locale,
    fallbackLocale: "en",
    messages: { en, zh },
    missingWarn: false,
    fallbackWarn: false,
  });
}

export function rememberLocale(locale: Locale): void {
  localStorage.setItem(STORAGE_KEY, locale);
  document.documentElement.lang = locale === "zh" ? "zh-CN" : "en";
}
