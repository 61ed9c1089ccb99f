/**
 * Interpreter mode: the agent says which language pair it interprets (its attribute
 * `parley.interpreter`, e.g. "en,es"), the page tells it which one the person speaks with the
 * RPC `parley.set_language` (payload: a code of the pair, "" = let the agent detect it). The
 * choice, and the last pair seen, are remembered in localStorage so the toggle is there before
 * the next call.
 */

export const ATTR_INTERPRETER = 'parley.interpreter';
/** The agent's RPC method: payload a code or "" (Auto); answer `{"language": code}`. */
export const RPC_SET_LANGUAGE = 'parley.set_language';
/** Transcript stream attribute: the language of that segment's text. */
export const ATTR_SEGMENT_LANGUAGE = 'language';
/** The agent's audio track that speaks one speaker's words translated. */
export const INTERPRETER_TRACK_PREFIX = 'interpreter:';

const STORE_LANGUAGE = 'parley.language';
const STORE_PAIR = 'parley.interpreter';

/** Each language by its own name; an unknown code is shown as itself. */
const NAMES: Record<string, string> = {
  en: 'English',
  es: 'Español',
  fr: 'Français',
  de: 'Deutsch',
  it: 'Italiano',
  pt: 'Português',
};

export function languageName(code: string): string {
  return NAMES[code.toLowerCase()] ?? code;
}

/** "en,es" → ["en", "es"]; null when the attribute is absent or names no language. */
export function parsePair(value: string | undefined): string[] | null {
  if (!value) return null;
  const codes = value
    .split(',')
    .map((c) => c.trim().toLowerCase())
    .filter((c, i, all) => c && /^[a-z0-9-]{1,16}$/.test(c) && all.indexOf(c) === i);
  return codes.length ? codes : null;
}

function read(key: string): string | null {
  try {
    return localStorage.getItem(key);
  } catch {
    return null; // storage off (privacy settings): nothing is remembered
  }
}

function write(key: string, value: string | null): void {
  try {
    if (value === null) localStorage.removeItem(key);
    else localStorage.setItem(key, value);
  } catch {
    // storage off or full: the choice still holds for this page
  }
}

/** The remembered choice: a language code, or "" for Auto. */
export function storedLanguage(): string {
  return read(STORE_LANGUAGE) ?? '';
}

export function storeLanguage(code: string): void {
  write(STORE_LANGUAGE, code);
}

/** The pair of the last interpreter this page talked to (null: the last agent was not one). */
export function storedPair(): string[] | null {
  return parsePair(read(STORE_PAIR) ?? undefined);
}

export function storePair(pair: string[] | null): void {
  write(STORE_PAIR, pair ? pair.join(',') : null);
}
