// Server-sent events over fetch: EventSource cannot send an Authorization header, and the API's
// streams (task progress, pulls, chat answers) all need one.
import { createParser, type EventSourceMessage } from "eventsource-parser";
import { send, type RequestOptions } from "./client";

export interface StreamEvent {
  event: string;
  data: string;
}

/** Reads the stream at `path` until it ends, calling `onEvent` for each event; throws ApiError
 * when the request is refused, and resolves when the server closes the stream. */
export async function streamEvents(
  method: string,
  path: string,
  onEvent: (event: StreamEvent) => void,
  options: RequestOptions = {},
): Promise<void> {
  const response = await send(method, path, {
    ...options,
    headers: { ...options.headers, Accept: "text/event-stream" },
  });
  if (!response.body) return;
  const parser = createParser({
    onEvent(message: EventSourceMessage) {
      onEvent({ event: message.event ?? "message", data: message.data });
    },
  });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      parser.feed(value);
    }
  } finally {
    reader.releaseLock();
  }
}
