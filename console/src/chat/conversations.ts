// The signed-in user's stored conversations, from GET /v1/chat/conversations (the server keeps
// each with a TTL and lists only the caller's own), the most recently continued first.
import { ref } from "vue";
import { api } from "../api/client";
import type { ConversationItem } from "../api/types";

export interface ConversationRef {
  id: string;
  title: string;
  turns: number;
  updatedAt: string;
}

const LIMIT = 50;

export function useConversationList() {
  const list = ref<ConversationRef[]>([]);
  const loaded = ref(false);

  async function refresh(signal?: AbortSignal): Promise<void> {
    const items = await api<ConversationItem[]>("GET", "/v1/chat/conversations", { query: { limit: LIMIT }, signal });
    list.value = items.map((item) => ({ id: item.conversation_id, title: item.title, turns: item.turns, updatedAt: item.updated_at }));
    loaded.value = true;
  }

  /** A conversation an answer just started or continued: first in the list at once, before
   * the next refresh confirms it. */
  function remember(id: string, question: string): void {
    const existing = list.value.find((c) => c.id === id);
    const rest = list.value.filter((c) => c.id !== id);
    const now = new Date().toISOString();
    list.value = [
      existing ? { ...existing, turns: existing.turns + 1, updatedAt: now } : { id, title: question.slice(0, 120), turns: 1, updatedAt: now },
      ...rest,
    ];
  }

  function forget(id: string): void {
    list.value = list.value.filter((c) => c.id !== id);
  }

  return { list, loaded, refresh, remember, forget };
}
