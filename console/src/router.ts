// Pages are loaded when first visited, so the first page's script stays small. A page that
// needs a role the session lacks is not offered (the server would refuse its calls anyway).
import { createRouter, createWebHistory, type RouteRecordRaw } from "vue-router";
import type { Role } from "./api/types";
import { hasRole, sessionState } from "./session";

declare module "vue-router" {
  interface RouteMeta {
    public?: boolean;
    role?: Role;
    title: string; // a message key
  }
}

export const routes: RouteRecordRaw[] = [
  { path: "/", redirect: "/documents" },
  { path: "/signin", name: "signin", component: () => import("./pages/SignIn.vue"), meta: { public: true, title: "nav.signIn" } },
  { path: "/documents", name: "documents", component: () => import("./pages/DocumentsPage.vue"), meta: { title: "nav.documents" } },
  { path: "/documents/:id", name: "document", component: () => import("./pages/DocumentPage.vue"), meta: { title: "nav.document" } },
  { path: "/chat", name: "chat", component: () => import("./pages/ChatPage.vue"), meta: { title: "nav.chat" } },
  { path: "/models", name: "models", component: () => import("./pages/ModelsPage.vue"), meta: { title: "nav.models" } },
  { path: "/usage", name: "usage", component: () => import("./pages/UsagePage.vue"), meta: { role: "admin", title: "nav.usage" } },
  { path: "/audit", name: "audit", component: () => import("./pages/AuditPage.vue"), meta: { role: "admin", title: "nav.audit" } },
  { path: "/health", name: "health", component: () => import("./pages/HealthPage.vue"), meta: { title: "nav.health" } },
  { path: "/:rest(.*)*", name: "missing", component: () => import("./pages/NotFound.vue"), meta: { public: true, title: "nav.notFound" } },
];

export function createConsoleRouter() {
  const router = createRouter({ history: createWebHistory(), routes });
  router.beforeEach((to) => {
    if (to.meta.public) return true;
    if (sessionState.session === null) return { name: "signin", query: { next: to.fullPath } };
    if (to.meta.role && !hasRole(to.meta.role)) return { name: "documents" };
    return true;
  });
  return router;
}
