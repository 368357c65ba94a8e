// Follows ingestion tasks to COMPLETED or FAILED. Each followed task gets the task SSE stream
// (/v1/tasks/{id}/events) while fewer than `maxStreams` are open: a browser opens at most six
// HTTP/1.1 connections to one origin, and streams beyond a few would starve every other call.
// The rest are read from the task list every few seconds until a stream is free.
import { reactive } from "vue";
import { api, ApiError } from "../api/client";
import { streamEvents } from "../api/sse";
import { TERMINAL_STATES, type Task } from "../api/types";

export interface TrackerOptions {
  maxStreams?: number;
  pollMs?: number;
  reconnectMs?: number;
  onSettled?: (task: Task) => void;
}

export class TaskTracker {
  readonly tasks = reactive(new Map<string, Task>());
  private readonly streaming = new Set<string>();
  private readonly waiting: string[] = [];
  private readonly controller = new AbortController();
  private pollTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly maxStreams: number;
  private readonly pollMs: number;
  private readonly reconnectMs: number;
  private readonly onSettled: (task: Task) => void;

  constructor(options: TrackerOptions = {}) {
    this.maxStreams = options.maxStreams ?? 3;
    this.pollMs = options.pollMs ?? 3000;
    this.reconnectMs = options.reconnectMs ?? 1000;
    this.onSettled = options.onSettled ?? (() => {});
  }

  get(taskId: string): Task | undefined {
    return this.tasks.get(taskId);
  }

  /** Follow `taskId` (known so far as `initial`, if given) until it ends. */
  follow(taskId: string, initial?: Task): void {
    if (initial) this.tasks.set(taskId, initial);
    if (initial && TERMINAL_STATES.has(initial.state)) return;
    if (this.streaming.has(taskId) || this.waiting.includes(taskId)) return;
    this.waiting.push(taskId);
    this.pump();
  }

  stop(): void {
    this.controller.abort();
    clearTimeout(this.pollTimer);
  }

  private update(task: Task): void {
    const before = this.tasks.get(task.task_id);
    this.tasks.set(task.task_id, task);
    if (TERMINAL_STATES.has(task.state) && !(before && TERMINAL_STATES.has(before.state))) {
      this.onSettled(task);
    }
  }

  private pump(): void {
    while (this.streaming.size < this.maxStreams && this.waiting.length > 0) {
      const taskId = this.waiting.shift() as string;
      this.streaming.add(taskId);
      void this.stream(taskId);
    }
    if (this.waiting.length > 0 && this.pollTimer === undefined) {
      this.pollTimer = setTimeout(() => void this.poll(), this.pollMs);
    }
  }

  private async stream(taskId: string): Promise<void> {
    let failures = 0;
    try {
      // The server ends a stream after a while even when the task has not (clients reconnect).
      while (!this.controller.signal.aborted) {
        try {
          await streamEvents(
            "GET",
            `/v1/tasks/${encodeURIComponent(taskId)}/events`,
            (event) => {
              if (event.event === "task") this.update(JSON.parse(event.data) as Task);
              else if (event.event === "error") this.forget(taskId);
            },
            { signal: this.controller.signal },
          );
          failures = 0;
        } catch (error) {
          if (this.controller.signal.aborted) return;
          if (error instanceof ApiError && error.status === 404) {
            this.forget(taskId);
            return;
          }
          failures += 1;
          // A refused or broken stream is tried again, later each time (429 says when).
          const wait = error instanceof ApiError && error.retryAfterS !== null ? error.retryAfterS * 1000 : Math.min(30000, 1000 * 2 ** failures);
          await new Promise((resolve) => setTimeout(resolve, wait));
        }
        const task = this.tasks.get(taskId);
        if (!task || TERMINAL_STATES.has(task.state)) return;
        // Ended before the task did: reconnect, but never in a tight loop.
        await new Promise((resolve) => setTimeout(resolve, this.reconnectMs));
      }
    } finally {
      this.streaming.delete(taskId);
      this.pump();
    }
  }

  private forget(taskId: string): void {
    this.tasks.delete(taskId); // the document was deleted meanwhile
  }

  private async poll(): Promise<void> {
    this.pollTimer = undefined;
    if (this.controller.signal.aborted || this.waiting.length === 0) return;
    try {
      const recent = await api<Task[]>("GET", "/v1/tasks", { query: { limit: 1000 }, signal: this.controller.signal });
      const waiting = new Set(this.waiting);
      for (const task of recent) if (waiting.has(task.task_id)) this.update(task);
      for (let i = this.waiting.length - 1; i >= 0; i--) {
        const task = this.tasks.get(this.waiting[i]);
        if (task && TERMINAL_STATES.has(task.state)) this.waiting.splice(i, 1);
      }
    } catch {
      // The next poll tries again; the streams carry on meanwhile.
    }
    this.pump();
  }
}
