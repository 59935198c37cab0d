/**
 * A cookie-keeping HTTP client: what a browser does with Set-Cookie, enough to drive
 * session tests (name=value pairs, deletion by past expiry; no domain/path matching,
 * every request goes to 127.0.0.1).
 */
export interface Reply<T = Record<string, unknown>> {
  status: number;
  body: T;
  setCookies: string[];
  headers: Headers;
}

export class Browser {
  readonly cookies = new Map<string, string>();

  constructor(readonly base: string) {}

  cookieHeader(): string {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  async request<T = Record<string, unknown>>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}, base = this.base): Promise<Reply<T>> {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: {
        ...(this.cookies.size > 0 ? { cookie: this.cookieHeader() } : {}),
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const setCookies = res.headers.getSetCookie();
    for (const line of setCookies) {
      const [pair, ...attrs] = line.split(';').map((p) => p.trim());
      const eq = pair!.indexOf('=');
      const name = pair!.slice(0, eq);
      const value = pair!.slice(eq + 1);
      const expires = attrs.find((a) => a.toLowerCase().startsWith('expires='));
      const maxAge = attrs.find((a) => a.toLowerCase().startsWith('max-age='));
      const gone = (expires && new Date(expires.slice(8)).getTime() < Date.now()) || maxAge?.slice(8) === '0' || value === '';
      if (gone) this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      // not JSON
    }
    return { status: res.status, body: parsed as T, setCookies, headers: res.headers };
  }

  get<T = Record<string, unknown>>(path: string, headers?: Record<string, string>) {
    return this.request<T>('GET', path, undefined, headers);
  }

  post<T = Record<string, unknown>>(path: string, body: unknown = {}, headers?: Record<string, string>) {
    return this.request<T>('POST', path, body, headers);
  }

  /** A second browser with this one's cookies (the same user, replaying a cookie). */
  clone(base = this.base): Browser {
    const b = new Browser(base);
    for (const [k, v] of this.cookies) b.cookies.set(k, v);
    return b;
  }
}
