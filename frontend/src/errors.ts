/** Every failure a person can meet, as a title and a plain next step (never a stack trace). */

export type ErrorKind =
  | 'mic-denied'
  | 'mic-missing'
  | 'token-refused'
  | 'token-unreachable'
  | 'livekit-unreachable'
  | 'agent-timeout'
  | 'disconnected'
  | 'unexpected';

export class CallError extends Error {
  constructor(
    readonly kind: ErrorKind,
    readonly title: string,
    readonly detail: string,
  ) {
    super(`${title} ${detail}`);
    this.name = 'CallError';
  }
}

/** One short line from anything thrown, for the detail text (no stack, bounded length). */
export function reason(err: unknown): string {
  const text = err instanceof Error ? err.message : typeof err === 'string' ? err : '';
  const line = (text.split('\n')[0] ?? '').trim();
  return line.length > 160 ? `${line.slice(0, 157)}…` : line;
}

/** Anything thrown, as something the page can show. */
export function toCallError(err: unknown): CallError {
  if (err instanceof CallError) return err;
  const why = reason(err);
  return new CallError(
    'unexpected',
    'Something went wrong.',
    `${why ? `${why}. ` : ''}End the call and try again; reload the page if it persists.`,
  );
}
