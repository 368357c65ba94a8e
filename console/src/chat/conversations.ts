// The conversations started in this tab. The API keeps each conversation (with a TTL) but has no
// endpoint that lists them, so their ids and first questions are remembered here, in
// sessionStorage like the credential, per tenant and user.
import { ref, watch } from "vue";

export interface ConversationRef {
  id: string;
  title: string;
  updatedAt: number;
}

const PREFIX = "kubemate.conversations";

export function useConversationList(owner: string) {
  const key = `${PREFIX}:${owner}`;
  const list = ref<ConversationRef[]>(read(key));
  watch(list, (value) => sessionStorage.setItem(key, JSON.stringify(value)), { deep: true });

  function remember(id: string, question: string): void {
    const existing = list.value.find((c) => c.id === id);
    if (existing) {
      existing.updatedAt = Date.now();
    } else {
      list.value.unshift({ id, title: question.slice(0, 80), updatedAt: Date.now() });
    }
    list.value.sort((a, b) => b.updatedAt - a.updatedAt);
  }

  function forget(id: string): void {
    list.value = list.value.filter((c) => c.id !== id);
  }

  return { list, remember, forget };
}

function read(key: string): ConversationRef[] {
  try {
    const parsed = JSON.parse(sessionStorage.getItem(key) ?? "[]") as unknown;
    return Array.isArray(parsed) ? (parsed as ConversationRef[]) : [];
  } catch {
    return [];
  }
}
