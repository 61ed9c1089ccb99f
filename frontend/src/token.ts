/** Asks Parley's token service for a room token (the LiveKit secret never reaches the browser). */

import { CallError, reason } from './errors';

export interface TokenGrant {
  server_url: string;
  room: string;
  identity: string;
  token: string;
  expires_at: string;
}

export interface TokenOptions {
  url: string;
  apiKey?: string;
  timeoutMs: number;
  body?: Record<string, string>;
}

export async function fetchToken(opts: TokenOptions): Promise<TokenGrant> {
  const headers: Record<string, string> = { 'Content-Type': 'application/json' };
  if (opts.apiKey) headers.Authorization = `Bearer ${opts.apiKey}`;
  let res: Response;
  try {
    res = await fetch(opts.url, {
      method: 'POST',
      headers,
      body: JSON.stringify(opts.body ?? {}),
      cache: 'no-store',
      signal: AbortSignal.timeout(opts.timeoutMs),
    });
  } catch (err) {
    const timedOut = err instanceof DOMException && err.name === 'TimeoutError';
    throw new CallError(
      'token-unreachable',
      'The token service is unreachable.',
      timedOut
        ? `No answer from ${opts.url} within ${Math.round(opts.timeoutMs / 1000)} s. Check that Parley is running, then try again.`
        : `Could not reach ${opts.url} (${reason(err) || 'network error'}). Check that Parley is running, then try again.`,
    );
  }
  if (!res.ok) {
    let message = '';
    try {
      const data: unknown = await res.json();
      if (data && typeof data === 'object' && typeof (data as { error?: unknown }).error === 'string') {
        message = (data as { error: string }).error;
      }
    } catch {
      // not JSON (e.g. a proxy's error page): the status says enough
    }
    const hint =
      res.status === 401
        ? ' This page needs an access key: open it with #key=<your key> at the end of the address.'
        : res.status === 429 || res.status === 503
          ? ' Wait a moment, then try again.'
          : '';
    throw new CallError(
      'token-refused',
      'The token service refused the request.',
      `HTTP ${res.status}${message ? `: ${reason(message)}` : ''}.${hint}`,
    );
  }
  let grant: TokenGrant;
  try {
    grant = (await res.json()) as TokenGrant;
  } catch {
    throw new CallError('token-refused', 'The token service sent an unreadable answer.', 'Try again.');
  }
  if (!grant || typeof grant.token !== 'string' || typeof grant.server_url !== 'string') {
    throw new CallError('token-refused', 'The token service sent an incomplete answer.', 'Try again.');
  }
  return grant;
}
