/** The page: plain DOM updates, no framework (see README, "Web frontend"). */

import type { CallError } from './errors';
import type { Role } from './call';
import { languageName } from './language';
import type { TurnStages } from './latency';

/** One row of the latency waterfall: what the page heard, and what the agent reported. */
interface TurnRow {
  seq: number;
  heardMs: number | null;
  stages?: TurnStages;
}

// Bars in the order a reply goes through them; start offsets follow the pipeline: STT runs
// while the end of the turn is being decided, the LLM starts once it is, TTS on its first
// sentence, and the network and playout take what is left until the page hears audio.
const BARS: { key: string; css: string; label: string }[] = [
  { key: 'end_of_utterance', css: 'eou', label: 'end of turn' },
  { key: 'stt', css: 'stt', label: 'speech to text' },
  { key: 'llm_ttft', css: 'llm', label: 'first token' },
  { key: 'tts_ttfb', css: 'tts', label: 'first audio' },
  { key: 'network', css: 'net', label: 'network + playout' },
];

function $<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} missing from index.html`);
  return el as T;
}

const STATE_LABELS: Record<string, string> = {
  idle: 'Not connected',
  connecting: 'Connecting…',
  initializing: 'Agent is getting ready…',
  listening: 'Listening',
  thinking: 'Thinking…',
  speaking: 'Speaking',
};

export class Ui {
  readonly start = $<HTMLButtonElement>('start');
  readonly mute = $<HTMLButtonElement>('mute');
  readonly end = $<HTMLButtonElement>('end');
  readonly enableAudio = $<HTMLButtonElement>('enable-audio');
  readonly chat = $<HTMLFormElement>('chat');
  readonly chatInput = $<HTMLInputElement>('chat-input');
  private readonly send = $<HTMLButtonElement>('send');
  private readonly orb = $<HTMLDivElement>('orb');
  private readonly stateLabel = $<HTMLParagraphElement>('agent-state');
  private readonly statusLine = $<HTMLParagraphElement>('status');
  private readonly errorBox = $<HTMLDivElement>('error');
  private readonly errorTitle = $<HTMLElement>('error-title');
  private readonly errorDetail = $<HTMLParagraphElement>('error-detail');
  private readonly transcript = $<HTMLOListElement>('transcript');
  private readonly empty = $<HTMLParagraphElement>('transcript-empty');
  private readonly lines = new Map<string, HTMLLIElement>();
  private readonly latency = $<HTMLElement>('latency');
  private readonly waterfall = $<HTMLOListElement>('waterfall');
  private readonly rows = new Map<number, TurnRow>();
  private typedRows = 0;
  private localLines = 0;
  private readonly language = $<HTMLFieldSetElement>('language');
  private readonly languageOptions = $<HTMLDivElement>('language-options');
  private readonly languageNote = $<HTMLParagraphElement>('language-note');
  private languagePair = '';

  setStatus(text: string): void {
    this.statusLine.textContent = text;
  }

  setAgentState(state: string): void {
    this.orb.dataset.state = state;
    this.stateLabel.dataset.state = state;
    this.stateLabel.textContent = STATE_LABELS[state] ?? state;
  }

  /** idle: nothing running; starting: call being set up; live: in a call. */
  setPhase(phase: 'idle' | 'starting' | 'live'): void {
    document.body.dataset.phase = phase;
    this.start.disabled = phase !== 'idle';
    this.start.textContent = phase === 'starting' ? 'Starting…' : 'Start call';
    this.end.disabled = phase === 'idle';
    this.mute.disabled = phase !== 'live';
    this.chatInput.disabled = phase !== 'live';
    this.send.disabled = phase !== 'live';
    if (phase !== 'live') this.setMuted(false);
    if (phase === 'idle') this.enableAudio.hidden = true;
  }

  setMuted(muted: boolean): void {
    this.mute.setAttribute('aria-pressed', String(muted));
    this.mute.textContent = muted ? 'Unmute' : 'Mute';
    this.orb.classList.toggle('muted', muted);
  }

  showError(err: CallError): void {
    this.errorBox.dataset.kind = err.kind;
    this.errorTitle.textContent = err.title;
    this.errorDetail.textContent = err.detail;
    this.errorBox.hidden = false;
  }

  clearError(): void {
    this.errorBox.hidden = true;
    delete this.errorBox.dataset.kind;
  }

  clearTranscript(): void {
    this.transcript.replaceChildren();
    this.lines.clear();
    this.empty.hidden = false;
  }

  /** The "I speak:" toggle: one choice per language of the interpreter's pair, plus Auto. */
  showLanguages(pair: string[], chosen: string): void {
    const key = pair.join(',');
    if (key !== this.languagePair) {
      this.languagePair = key;
      const choices = [...pair.map((code) => ({ code, label: languageName(code) })), { code: '', label: 'Auto' }];
      this.languageOptions.replaceChildren(
        ...choices.map(({ code, label }) => {
          const option = document.createElement('label');
          const input = document.createElement('input');
          input.type = 'radio';
          input.name = 'language';
          input.value = code;
          const text = document.createElement('span');
          text.textContent = label;
          if (code) text.lang = code;
          else text.title = 'Detect the language I speak';
          option.append(input, text);
          return option;
        }),
      );
    }
    this.selectLanguage(pair.includes(chosen) ? chosen : '');
    this.language.hidden = false;
  }

  hideLanguages(): void {
    this.language.hidden = true;
    this.setLanguageNote(null);
  }

  selectLanguage(code: string): void {
    for (const input of this.languageOptions.querySelectorAll<HTMLInputElement>('input[name="language"]')) {
      input.checked = input.value === code;
    }
  }

  /** `handler` gets the chosen code ("" = Auto) each time the person picks one. */
  onLanguage(handler: (code: string) => void): void {
    this.languageOptions.addEventListener('change', (ev) => {
      const input = ev.target as HTMLInputElement;
      if (input.name === 'language' && input.checked) handler(input.value);
    });
  }

  /** A line under the toggle when the choice did not reach the agent; null clears it. */
  setLanguageNote(text: string | null): void {
    this.languageNote.textContent = text ?? '';
    this.languageNote.hidden = text === null;
  }

  /** Insert or update one segment of the conversation (`language`: interpreter mode's badge). */
  upsertLine(id: string, role: Role, text: string, final: boolean, via?: 'chat', language?: string,
             speaker?: string): void {
    const clean = text.trim();
    let li = this.lines.get(id);
    if (!li) {
      if (!clean) return;
      li = document.createElement('li');
      li.className = `line ${role}`;
      li.dataset.role = role;
      const who = document.createElement('span');
      who.className = 'who';
      // Another person's lines always come with their name (`speaker`).
      who.textContent = speaker ?? (role === 'agent' ? 'Agent' : via === 'chat' ? 'You (typed)' : 'You');
      const body = document.createElement('span');
      body.className = 'text';
      li.append(who, body);
      this.transcript.append(li);
      this.lines.set(id, li);
      this.empty.hidden = true;
    }
    const body = li.querySelector('.text') as HTMLSpanElement;
    body.textContent = clean;
    li.dataset.final = String(final);
    if (language && li.dataset.language !== language) this.setLineLanguage(li, body, language);
    const box = this.transcript.parentElement;
    if (box) box.scrollTop = box.scrollHeight;
  }

  private setLineLanguage(li: HTMLLIElement, body: HTMLSpanElement, code: string): void {
    li.dataset.language = code;
    body.lang = code;
    const who = li.querySelector('.who') as HTMLSpanElement;
    let badge = who.querySelector<HTMLSpanElement>('.lang');
    if (!badge) {
      badge = document.createElement('span');
      badge.className = 'lang';
      badge.dataset.testid = 'language-badge';
      who.append(badge);
    }
    badge.textContent = code.toUpperCase();
    badge.title = languageName(code);
  }

  clearLatency(): void {
    this.rows.clear();
    this.waterfall.replaceChildren();
    this.latency.hidden = true;
  }

  /** The page heard the reply to spoken turn `seq` after `ms`. */
  turnHeard(seq: number, ms: number): void {
    const row = this.rows.get(seq) ?? { seq, heardMs: null };
    row.heardMs = ms;
    this.rows.set(seq, row);
    this.renderLatency();
  }

  /** The agent's stages for a turn (seq -1: a typed turn, nothing heard to match). */
  turnStages(stages: TurnStages): void {
    const seq = stages.seq >= 0 ? stages.seq : -1000 - ++this.typedRows;
    const row = this.rows.get(seq) ?? { seq, heardMs: stages.listener_latency_ms ?? null };
    row.stages = stages;
    this.rows.set(seq, row);
    this.renderLatency();
  }

  private renderLatency(): void {
    const rows = [...this.rows.values()];
    const budget = rows.find((r) => r.stages)?.stages?.budget_ms ?? 1500;
    const scale = Math.max(budget, ...rows.map((r) => Math.max(r.heardMs ?? 0, r.stages?.e2e_ms ?? 0))) * 1.05;
    const pct = (ms: number) => `${((100 * ms) / scale).toFixed(2)}%`;
    const items = rows.map((row, i) => {
      const li = document.createElement('li');
      li.className = 'turn';
      li.dataset.seq = String(row.seq);
      if (row.heardMs !== null) li.dataset.heardMs = String(row.heardMs);
      const head = document.createElement('div');
      head.className = 'turn-head';
      const title = document.createElement('span');
      title.textContent = row.seq >= 0 ? `Turn ${i + 1}` : `Turn ${i + 1} (typed)`;
      const heard = document.createElement('span');
      heard.className = 'heard';
      heard.textContent = row.heardMs !== null ? `heard after ${row.heardMs} ms` : 'not measured (typed)';
      if (row.stages?.over_budget) {
        heard.textContent += ` · over budget (${row.stages.over_budget})`;
        li.classList.add('over');
      }
      head.append(title, heard);
      const bars = document.createElement('div');
      bars.className = 'bars';
      const marker = document.createElement('span');
      marker.className = 'budget';
      marker.style.left = pct(budget);
      marker.title = `budget ${budget} ms`;
      bars.append(marker);
      const s = row.stages?.stages ?? {};
      const eou = s.end_of_utterance ?? 0;
      const llm = s.llm_ttft ?? 0;
      const starts: Record<string, number> = {
        end_of_utterance: 0,
        stt: 0,
        llm_ttft: eou,
        tts_ttfb: eou + llm,
        network: row.stages?.e2e_ms ?? 0,
      };
      const legend: string[] = [];
      for (const bar of BARS) {
        const ms = s[bar.key];
        if (ms === null || ms === undefined) continue;
        const el = document.createElement('span');
        el.className = `bar ${bar.css}`;
        el.style.left = pct(starts[bar.key]);
        el.style.width = pct(Math.max(ms, scale / 200));
        el.title = `${bar.label} ${Math.round(ms)} ms`;
        bars.append(el);
        legend.push(`${bar.label} ${Math.round(ms)}`);
      }
      if (row.heardMs !== null) {
        const heardAt = document.createElement('span');
        heardAt.className = 'heard-at';
        heardAt.style.left = pct(row.heardMs);
        heardAt.title = `heard at ${row.heardMs} ms`;
        bars.append(heardAt);
      }
      const detail = document.createElement('p');
      detail.className = 'turn-detail';
      detail.textContent = row.stages
        ? `${legend.join(' · ')} ms; agent e2e ${row.stages.e2e_ms ?? '?'} ms`
        : 'waiting for the agent’s figures…';
      li.append(head, bars, detail);
      return li;
    });
    this.waterfall.replaceChildren(...items);
    this.latency.hidden = rows.length === 0;
  }

  /** A message the person typed (shown at once; the agent's answer arrives as a transcript). */
  addChat(text: string): void {
    this.upsertLine(`chat-${++this.localLines}`, 'user', text, true, 'chat');
  }
}
