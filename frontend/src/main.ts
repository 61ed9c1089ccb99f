/**
 * Parley web client. Options (for operators and tests), all optional:
 *   ?agentTimeout=20   seconds to wait for the agent to join
 *   ?tokenUrl=/api/token  where to ask for a room token
 *   #key=<key>         bearer key for the token service (kept in the fragment so it
 *                      never reaches a server log)
 * Interpreter mode (an agent with the `parley.interpreter` attribute) adds the "I speak:"
 * toggle; the choice and the last pair are remembered in localStorage (language.ts).
 */

import './style.css';

import { Call } from './call';
import { CallError, toCallError } from './errors';
import { languageName, storeLanguage, storePair, storedLanguage, storedPair } from './language';
import { Ui } from './ui';

function options() {
  const q = new URLSearchParams(location.search);
  const h = new URLSearchParams(location.hash.slice(1));
  const seconds = (name: string, fallback: number) => {
    const v = Number(q.get(name));
    return Number.isFinite(v) && v > 0 ? v * 1000 : fallback * 1000;
  };
  return {
    tokenUrl: q.get('tokenUrl') || '/api/token',
    apiKey: h.get('key') || undefined,
    tokenTimeoutMs: 10_000,
    connectTimeoutMs: seconds('connectTimeout', 20),
    agentTimeoutMs: seconds('agentTimeout', 20),
  };
}

const ui = new Ui();
let call: Call | null = null;
let muted = false;
// The last interpreter's pair: the toggle is shown (and usable) before the next call.
let pair = storedPair();
let language = storedLanguage();

function report(err: unknown): void {
  const e = toCallError(err);
  if (!(err instanceof CallError)) console.error(err); // details for developers, not the page
  ui.showError(e);
}

async function startCall(): Promise<void> {
  ui.clearError();
  ui.clearTranscript();
  ui.clearLatency();
  ui.setLanguageNote(null);
  muted = false;
  ui.setPhase('starting');
  ui.setAgentState('connecting');
  const current = new Call({ ...options(), language }, {
    status: (text) => ui.setStatus(text),
    agentState: (state) => ui.setAgentState(state),
    transcript: (id, role, text, final, lang, speaker) => ui.upsertLine(id, role, text, final, undefined, lang, speaker),
    interpreter: (agentPair) => {
      if (call !== current) return;
      pair = agentPair;
      storePair(agentPair);
      if (agentPair) ui.showLanguages(agentPair, language);
      else ui.hideLanguages();
    },
    languageSent: (code, inEffect, error) => {
      if (call !== current) return;
      if (!error) {
        ui.setLanguageNote(null);
        return;
      }
      // Show what the agent still uses; picking the choice again retries.
      ui.selectLanguage(inEffect);
      const name = (c: string) => (c ? languageName(c) : 'Auto');
      ui.setLanguageNote(
        `“${name(code)}” did not reach the agent (${error}); it still uses ${name(inEffect)}. Pick it again to retry.`,
      );
    },
    turnHeard: (seq, ms) => ui.turnHeard(seq, ms),
    turnStages: (stages) => ui.turnStages(stages),
    audioBlocked: (blocked) => {
      ui.enableAudio.hidden = !blocked;
      if (blocked) ui.setStatus('Your browser blocked audio playback: press “Enable audio” to hear the agent.');
    },
    ended: (error) => {
      if (call !== current) return;
      call = null;
      ui.setPhase('idle');
      ui.setAgentState('idle');
      ui.setLanguageNote(null);
      if (error) {
        ui.showError(error);
        ui.setStatus('Call ended.');
      } else {
        ui.setStatus('Call ended. Press “Start call” to talk again.');
      }
    },
  });
  call = current;
  try {
    await current.start();
    if (call === current) ui.setPhase('live');
  } catch (err) {
    if (call !== current) return; // ended by the person while starting
    call = null;
    ui.setPhase('idle');
    ui.setAgentState('idle');
    ui.setStatus('Call not started.');
    report(err);
  }
}

ui.start.addEventListener('click', () => void startCall());

ui.end.addEventListener('click', () => {
  const current = call;
  if (!current) return;
  ui.setStatus('Ending the call…');
  void current.end().catch(report);
});

ui.mute.addEventListener('click', () => {
  if (!call) return;
  muted = !muted;
  ui.setMuted(muted);
  void call.setMuted(muted).catch(report);
});

ui.onLanguage((code) => {
  language = code;
  storeLanguage(code);
  ui.setLanguageNote(null);
  call?.setLanguage(code);
});

ui.enableAudio.addEventListener('click', () => {
  void call?.enableAudio().then(() => {
    ui.enableAudio.hidden = true;
    ui.setStatus('Audio enabled.');
  }, report);
});

ui.chat.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const text = ui.chatInput.value.trim();
  if (!text || !call) return;
  ui.chatInput.value = '';
  ui.addChat(text);
  call.sendChat(text).catch((err) => {
    console.error(err);
    ui.showError(new CallError('disconnected', 'Your message was not sent.', 'Check the connection and try again.'));
  });
});

window.addEventListener('beforeunload', () => void call?.end());
// Last line of defence: nothing unexpected reaches the person as a stack trace.
window.addEventListener('unhandledrejection', (ev) => {
  ev.preventDefault();
  report(ev.reason);
});
window.addEventListener('error', (ev) => {
  console.error(ev.error ?? ev.message);
});

ui.setPhase('idle');
ui.setAgentState('idle');
if (pair) ui.showLanguages(pair, language);
