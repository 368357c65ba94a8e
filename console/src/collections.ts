// The knowledge collections the API knows: each is listed by GET /v1/models as kb-<name>.
import { ref } from "vue";
import { api } from "./api/client";
import type { ModelList } from "./api/types";

const names = ref<string[]>([]);
let loading: Promise<void> | null = null;

export function useCollections() {
  if (loading === null) {
    loading = api<ModelList>("GET", "/v1/models")
      .then((list) => {
        names.value = list.data.filter((m) => m.role === "knowledge" && m.collection).map((m) => m.collection as string);
      })
      .catch(() => {
        loading = null; // tried again by the next page that asks
        names.value = ["default"];
      });
  }
  return names;
}
