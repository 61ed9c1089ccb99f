/** The page: plain DOM updates, no framework (see README, "Web frontend"). */

import type { CallError } from './errors';
import type { Role } from './call';

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
  private localLines = 0;

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

  /** Insert or update one segment of the conversation. */
  upsertLine(id: string, role: Role, text: string, final: boolean, via?: 'chat'): void {
    const clean = text.trim();
    let li = this.lines.get(id);
    if (!li) {
      if (!clean) return;
      li = document.createElement('li');
      li.className = `line ${role}`;
      li.dataset.role = role;
      const who = document.createElement('span');
      who.className = 'who';
      who.textContent = role === 'agent' ? 'Agent' : via === 'chat' ? 'You (typed)' : 'You';
      const body = document.createElement('span');
      body.className = 'text';
      li.append(who, body);
      this.transcript.append(li);
      this.lines.set(id, li);
      this.empty.hidden = true;
    }
    (li.querySelector('.text') as HTMLSpanElement).textContent = clean;
    li.dataset.final = String(final);
    const box = this.transcript.parentElement;
    if (box) box.scrollTop = box.scrollHeight;
  }

  /** A message the person typed (shown at once; the agent's answer arrives as a transcript). */
  addChat(text: string): void {
    this.upsertLine(`chat-${++this.localLines}`, 'user', text, true, 'chat');
  }
}
