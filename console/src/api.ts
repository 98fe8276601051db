// The REST API as the console uses it: the token entered once (kept in this
// browser tab's session), JSON calls whose refusals become ApiError with the
// API's own words, and the live event stream read with fetch (EventSource
// cannot send an Authorization header).

export const PREFIX = "/api/distributed";

export class ApiError extends Error {
  constructor(
    public status: number,
    public title: string,
    public detail: string,
  ) {
    super(detail ? `${status} ${title}: ${detail}` : `${status} ${title}`);
  }
}

export const session = {
  get token(): string {
    return sessionStorage.getItem("dagwright.token") ?? "";
  },
  set token(value: string) {
    sessionStorage.setItem("dagwright.token", value);
  },
  get namespace(): string {
    return sessionStorage.getItem("dagwright.namespace") ?? "";
  },
  set namespace(value: string) {
    sessionStorage.setItem("dagwright.namespace", value);
  },
  clear(): void {
    sessionStorage.removeItem("dagwright.token");
  },
};

function headers(): Record<string, string> {
  return { Authorization: `Bearer ${session.token}`, Accept: "application/json" };
}

async function problem(response: Response): Promise<ApiError> {
  let title = response.statusText;
  let detail = "";
  try {
    const body = (await response.json()) as Record<string, unknown>;
    if (typeof body["title"] === "string") title = body["title"];
    const raw = body["detail"] ?? body["problems"] ?? "";
    detail = Array.isArray(raw) ? raw.join("; ") : typeof raw === "string" ? raw : JSON.stringify(raw);
  } catch {
    // not JSON: the status line says it
  }
  return new ApiError(response.status, title, detail);
}

export function url(path: string, query: Record<string, string | number | undefined> = {}): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== "") params.set(key, String(value));
  }
  const text = params.toString();
  return `${PREFIX}${path}${text ? `?${text}` : ""}`;
}

export async function call<T>(
  method: string,
  path: string,
  query: Record<string, string | number | undefined> = {},
  body?: unknown,
): Promise<T> {
  const init: RequestInit = { method, headers: headers() };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    (init.headers as Record<string, string>)["Content-Type"] = "application/json";
  }
  const response = await fetch(url(path, query), init);
  if (!response.ok) throw await problem(response);
  if (response.status === 204) return undefined as T;
  return (await response.json()) as T;
}

export const get = <T>(path: string, query: Record<string, string | number | undefined> = {}) =>
  call<T>("GET", path, query);

/** Read a streamed text response (a log) chunk by chunk until `signal` aborts. */
export async function readText(
  path: string,
  query: Record<string, string | number | undefined>,
  onChunk: (text: string, source: string) => void,
  signal: AbortSignal,
): Promise<void> {
  const response = await fetch(url(path, query), { headers: headers(), signal });
  if (!response.ok) throw await problem(response);
  const source = response.headers.get("X-Dagwright-Log") ?? "";
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    onChunk(decoder.decode(value, { stream: true }), source);
  }
}

export type LiveHandler = (event: string, data: unknown) => void;

/** The server-sent events of /live, reconnecting after a drop (each
 * reconnect starts with a resync, since events may have been missed). */
export function live(
  query: Record<string, string | undefined>,
  handler: LiveHandler,
): { close(): void } {
  const controller = new AbortController();
  let stopped = false;
  const run = async (): Promise<void> => {
    let first = true;
    while (!stopped) {
      try {
        const response = await fetch(url("/live", query), {
          headers: { ...headers(), Accept: "text/event-stream" },
          signal: controller.signal,
        });
        if (!response.ok) {
          handler("error", await problem(response));
          return;
        }
        if (!first) handler("resync", {});
        first = false;
        const reader = response.body!.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let end: number;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            let name = "message";
            let data = "";
            for (const line of block.split("\n")) {
              if (line.startsWith("event: ")) name = line.slice(7);
              else if (line.startsWith("data: ")) data += line.slice(6);
            }
            if (data) handler(name, JSON.parse(data));
          }
        }
      } catch {
        if (stopped) return;
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  };
  void run();
  return {
    close() {
      stopped = true;
      controller.abort();
    },
  };
}
