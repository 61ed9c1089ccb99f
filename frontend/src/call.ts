/** One call to the agent: microphone, token, LiveKit room, agent, transcripts, chat. */

import {
  ConnectionState,
  DisconnectReason,
  LocalAudioTrack,
  MediaDeviceFailure,
  ParticipantKind,
  Room,
  RoomEvent,
  Track,
  createLocalAudioTrack,
  type Participant,
  type RemoteParticipant,
  type RemoteTrack,
  type RemoteTrackPublication,
  type TextStreamReader,
} from 'livekit-client';

import { CallError, reason } from './errors';
import { ATTR_INTERPRETER, ATTR_SEGMENT_LANGUAGE, INTERPRETER_TRACK_PREFIX, RPC_SET_LANGUAGE, parsePair } from './language';
import { ListenerClock, type TurnStages } from './latency';
import { fetchToken } from './token';

// Topics and attributes of LiveKit Agents (livekit-agents room I/O).
const TOPIC_TRANSCRIPTION = 'lk.transcription';
const TOPIC_CHAT = 'lk.chat';
const ATTR_AGENT_STATE = 'lk.agent.state';
const ATTR_SEGMENT_ID = 'lk.segment_id';
const ATTR_FINAL = 'lk.transcription_final';
const ATTR_TRACK_ID = 'lk.transcribed_track_id';
// Parley's own topics (agent/metrics.py): our listener figure out, the agent's stages in.
const TOPIC_LISTENER = 'parley.listener';
const TOPIC_TURN = 'parley.turn';

/** Whose words a line holds: this page's person, the agent, or another person in the room. */
export type Role = 'agent' | 'user' | 'other';

export interface CallHooks {
  status(text: string): void;
  agentState(state: string): void;
  /** `language`: the segment's language code (interpreter mode), else undefined. */
  /** `speaker`: a label for lines that are not the agent's own reply (another person, or the
   *  interpreter's translation of their words). */
  transcript(id: string, role: Role, text: string, final: boolean, language?: string, speaker?: string): void;
  /** The agent's language pair when it is an interpreter, null when it is not. */
  interpreter(pair: string[] | null): void;
  /** The agent was told the person's language `code` (`error` null), or telling it failed
   * and `inEffect` ("" = Auto) still holds. */
  languageSent(code: string, inEffect: string, error: string | null): void;
  audioBlocked(blocked: boolean): void;
  /** This page heard the agent's reply `ms` after the person stopped speaking. */
  turnHeard(seq: number, ms: number): void;
  /** The agent's own stages of a reply (seq: our turn number, -1 for a typed turn). */
  turnStages(stages: TurnStages): void;
  /** The call is over: `error` is null when the person ended it. */
  ended(error: CallError | null): void;
}

export interface CallOptions {
  tokenUrl: string;
  apiKey?: string;
  tokenTimeoutMs: number;
  connectTimeoutMs: number;
  agentTimeoutMs: number;
  /** The person's language ("" = Auto), sent to the agent once it shows it is an interpreter. */
  language: string;
}

export class Call {
  private readonly room = new Room({ adaptiveStream: false, dynacast: false });
  private mic?: LocalAudioTrack;
  private agent?: RemoteParticipant;
  private agentArrived?: () => void;
  private finished = false;
  private connected = false; // failures before this are reported by start(), not as a disconnect
  private readonly audioElements: HTMLMediaElement[] = [];
  private readonly clock: ListenerClock;
  // Interpreter mode: the agent's pair, the person's choice, and what the agent confirmed
  // (nothing told = "" = Auto). Updates go to the agent by RPC one at a time; one waiting
  // behind the one in flight sends whatever the choice is by then.
  private pair: string[] | null = null;
  private language: string;
  private sentLanguage = '';
  private languageQueue: Promise<void> = Promise.resolve();
  private languageWaiting = false;

  constructor(
    private readonly opts: CallOptions,
    private readonly hooks: CallHooks,
  ) {
    this.clock = new ListenerClock({ measured: (seq, ms) => this.onHeard(seq, ms) });
    this.language = opts.language;
  }

  private onHeard(seq: number, ms: number): void {
    this.hooks.turnHeard(seq, ms);
    const agent = this.agent?.identity;
    if (!agent || this.finished) return;
    const body = JSON.stringify({ seq, listener_latency_ms: ms });
    void this.room.localParticipant
      .sendText(body, { topic: TOPIC_LISTENER, destinationIdentities: [agent] })
      .catch((err) => console.warn('listener latency not sent', err));
  }

  /** Resolves once the agent is in the room; throws CallError (after cleaning up) otherwise. */
  async start(): Promise<void> {
    try {
      await this.openMicrophone();
      this.ensureActive();
      this.hooks.status('Getting a room token…');
      const grant = await fetchToken({ url: this.opts.tokenUrl, apiKey: this.opts.apiKey, timeoutMs: this.opts.tokenTimeoutMs });
      this.ensureActive();
      this.wire();
      this.hooks.status('Connecting to LiveKit…');
      await this.connect(grant.server_url, grant.token);
      this.ensureActive();
      this.applyLanguage(); // an interpreter seen while connecting is told now
      await this.room.localParticipant.publishTrack(this.mic!, { source: Track.Source.Microphone });
      this.clock.watchMic(this.mic!.mediaStreamTrack);
      this.hooks.status('Waiting for the agent to join…');
      await this.waitForAgent();
      this.ensureActive();
      this.hooks.status('Connected. Say hello, or type a message.');
    } catch (err) {
      await this.cleanup();
      throw err;
    }
  }

  /** Hung up while still starting: stop here (start() cleans up; nobody shows this error). */
  private ensureActive(): void {
    if (this.finished) throw new CallError('disconnected', 'The call was ended.', '');
  }

  /** The person hangs up. */
  async end(): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    await this.cleanup();
    this.hooks.ended(null);
  }

  async setMuted(muted: boolean): Promise<void> {
    if (!this.mic) return;
    if (muted) await this.mic.mute();
    else await this.mic.unmute();
  }

  async sendChat(text: string): Promise<void> {
    await this.room.localParticipant.sendText(text, { topic: TOPIC_CHAT });
  }

  async enableAudio(): Promise<void> {
    await this.room.startAudio();
  }

  /** The person picked the language they speak ("" = Auto: the agent detects it). */
  setLanguage(code: string): void {
    this.language = code;
    this.applyLanguage();
  }

  private applyLanguage(): void {
    if (this.languageWaiting) return; // the send already queued reads the latest choice
    this.languageWaiting = true;
    this.languageQueue = this.languageQueue.then(() => {
      this.languageWaiting = false;
      return this.sendLanguage();
    });
  }

  /** Tells the interpreter agent (RPC `parley.set_language`) the person's language when it
   * differs from what the agent last confirmed. */
  private async sendLanguage(): Promise<void> {
    const agent = this.agent;
    if (!this.connected || this.finished || !agent || !this.pair) return;
    // A choice outside this agent's pair (remembered from another call) means Auto here.
    const want = this.pair.includes(this.language) ? this.language : '';
    if (want === this.sentLanguage) return;
    try {
      await this.room.localParticipant.performRpc({
        destinationIdentity: agent.identity,
        method: RPC_SET_LANGUAGE,
        payload: want,
      });
      this.sentLanguage = want;
      if (!this.finished) this.hooks.languageSent(want, want, null);
    } catch (err) {
      // RpcError: the agent's own reason (unknown code), or LiveKit's (timeout, agent gone,
      // a worker without the method).
      const why = reason(err) || 'no answer from the agent';
      if (!this.finished) this.hooks.languageSent(want, this.sentLanguage, why);
    }
  }

  private onInterpreter(p: RemoteParticipant): void {
    const pair = parsePair(p.attributes[ATTR_INTERPRETER]);
    this.pair = pair;
    this.hooks.interpreter(pair);
    this.applyLanguage();
  }

  /** The agent's translation of our own words, meant for the other people in the room. */
  private isOwnTranslation(pub: RemoteTrackPublication, p: RemoteParticipant): boolean {
    return (
      p.kind === ParticipantKind.AGENT &&
      pub.kind === Track.Kind.Audio &&
      pub.trackName === `${INTERPRETER_TRACK_PREFIX}${this.room.localParticipant.identity}`
    );
  }

  /** Someone besides us and agents is in the room: they, not we, hear our words translated. */
  private othersPresent(): boolean {
    return [...this.room.remoteParticipants.values()].some((p) => p.kind !== ParticipantKind.AGENT);
  }

  private play(track: RemoteTrack, pub: RemoteTrackPublication, p: RemoteParticipant): void {
    const el = track.attach();
    el.hidden = true;
    el.dataset.trackName = pub.trackName; // which one plays (interpreter mode; tests)
    document.body.appendChild(el);
    this.audioElements.push(el);
    if (p.kind === ParticipantKind.AGENT) this.clock.watchAgent(track.mediaStreamTrack);
  }

  /** Someone joined or left: play our own translation only while we are alone with the agent. */
  private routeTranslations(): void {
    const silence = this.othersPresent();
    for (const p of this.room.remoteParticipants.values()) {
      for (const pub of p.audioTrackPublications.values()) {
        if (!this.isOwnTranslation(pub, p)) continue;
        pub.setEnabled(!silence);
        const track = pub.track;
        if (!track) continue;
        if (silence) this.stopPlaying(track);
        else if (track.attachedElements.length === 0) this.play(track, pub, p);
      }
    }
  }

  private stopPlaying(track: RemoteTrack): void {
    for (const el of track.detach()) {
      el.remove();
      const i = this.audioElements.indexOf(el);
      if (i >= 0) this.audioElements.splice(i, 1);
    }
  }

  private async openMicrophone(): Promise<void> {
    this.hooks.status('Asking for the microphone…');
    try {
      this.mic = await createLocalAudioTrack({ echoCancellation: true, noiseSuppression: true, autoGainControl: true });
    } catch (err) {
      const failure = MediaDeviceFailure.getFailure(err);
      if (failure === MediaDeviceFailure.PermissionDenied) {
        throw new CallError(
          'mic-denied',
          'Microphone access was denied.',
          'Parley needs your microphone to hear you. Allow it for this site (the icon in the address bar), then press “Start call” again.',
        );
      }
      if (failure === MediaDeviceFailure.NotFound) {
        throw new CallError('mic-missing', 'No microphone was found.', 'Connect a microphone, then press “Start call” again.');
      }
      if (failure === MediaDeviceFailure.DeviceInUse) {
        throw new CallError('mic-missing', 'The microphone is busy.', 'Close other apps using it, then press “Start call” again.');
      }
      throw new CallError('mic-missing', 'The microphone could not be opened.', `${reason(err) || 'Unknown error'}. Try again.`);
    }
  }

  private async connect(url: string, token: string): Promise<void> {
    const timeoutMs = this.opts.connectTimeoutMs;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no connection within ${Math.round(timeoutMs / 1000)} s`)), timeoutMs);
    });
    try {
      await Promise.race([this.room.connect(url, token), timeout]);
      this.connected = true;
    } catch (err) {
      throw new CallError(
        'livekit-unreachable',
        'Could not connect to the call server.',
        `LiveKit at ${url} did not accept the connection (${reason(err) || 'network error'}). Check that the LiveKit server is running and reachable, then try again.`,
      );
    } finally {
      clearTimeout(timer);
    }
  }

  private waitForAgent(): Promise<void> {
    const present = [...this.room.remoteParticipants.values()].find((p) => p.kind === ParticipantKind.AGENT);
    if (present) {
      this.onAgent(present);
      return Promise.resolve();
    }
    const seconds = Math.round(this.opts.agentTimeoutMs / 1000);
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.agentArrived = undefined;
        reject(
          new CallError(
            'agent-timeout',
            'The agent did not join.',
            `No agent answered within ${seconds} s; the Parley worker may be stopped or busy. Try again in a moment.`,
          ),
        );
      }, this.opts.agentTimeoutMs);
      this.agentArrived = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  private onAgent(p: RemoteParticipant): void {
    if (this.agent) return;
    this.agent = p;
    this.hooks.agentState(p.attributes[ATTR_AGENT_STATE] ?? 'initializing');
    this.onInterpreter(p);
    this.agentArrived?.();
    this.agentArrived = undefined;
  }

  private wire(): void {
    const room = this.room;
    room
      .on(RoomEvent.ParticipantConnected, (p: RemoteParticipant) => {
        if (p.kind === ParticipantKind.AGENT) this.onAgent(p);
        this.routeTranslations();
      })
      .on(RoomEvent.ParticipantAttributesChanged, (changed: Record<string, string>, p: Participant) => {
        if (p !== this.agent) return;
        if (ATTR_AGENT_STATE in changed) this.hooks.agentState(changed[ATTR_AGENT_STATE]);
        if (ATTR_INTERPRETER in changed) this.onInterpreter(this.agent);
      })
      .on(RoomEvent.ParticipantDisconnected, (p: RemoteParticipant) => {
        if (p === this.agent && !this.finished) {
          this.fail(new CallError('disconnected', 'The agent left the call.', 'Press “Start call” to talk again.'));
          return;
        }
        this.routeTranslations();
      })
      .on(RoomEvent.TrackSubscribed, (track: RemoteTrack, pub: RemoteTrackPublication, p: RemoteParticipant) => {
        if (track.kind !== Track.Kind.Audio) return;
        if (this.isOwnTranslation(pub, p) && this.othersPresent()) {
          pub.setEnabled(false); // not played here; routeTranslations() turns it on when alone
          return;
        }
        this.play(track, pub, p);
      })
      .on(RoomEvent.TrackUnsubscribed, (track: RemoteTrack) => this.stopPlaying(track))
      .on(RoomEvent.AudioPlaybackStatusChanged, () => this.hooks.audioBlocked(!room.canPlaybackAudio))
      .on(RoomEvent.Reconnecting, () => this.hooks.status('Connection lost, reconnecting…'))
      .on(RoomEvent.Reconnected, () => this.hooks.status('Reconnected.'))
      .on(RoomEvent.Disconnected, (why?: DisconnectReason) => {
        if (!this.connected || this.finished || why === DisconnectReason.CLIENT_INITIATED) return;
        this.fail(new CallError('disconnected', 'The call was disconnected.', `${describeDisconnect(why)} Press “Start call” to try again.`));
      });
    room.registerTextStreamHandler(TOPIC_TRANSCRIPTION, (reader, from) => {
      void this.readTranscript(reader, from.identity).catch((err) => console.warn('transcript stream failed', err));
    });
    room.registerTextStreamHandler(TOPIC_TURN, (reader) => {
      void reader
        .readAll()
        .then((text) => this.hooks.turnStages(JSON.parse(text) as TurnStages))
        .catch((err) => console.warn('turn stages unreadable', err));
    });
  }

  private async readTranscript(reader: TextStreamReader, sender: string): Promise<void> {
    const attrs = reader.info.attributes ?? {};
    const id = attrs[ATTR_SEGMENT_ID] ?? reader.info.id;
    const trackId = attrs[ATTR_TRACK_ID];
    const mine =
      sender === this.room.localParticipant.identity ||
      (trackId !== undefined && trackId === this.mic?.sid);
    const about = mine ? undefined : this.speakerOf(trackId);
    const role: Role = mine ? 'user' : about?.person ? 'other' : 'agent';
    const speaker = about?.label;
    const language = attrs[ATTR_SEGMENT_LANGUAGE] || undefined; // interpreter mode only
    // Agent segments grow chunk by chunk in one stream; user segments arrive as whole
    // texts, one stream per update, the last one marked final.
    let text = '';
    for await (const chunk of reader) {
      text += chunk;
      this.hooks.transcript(id, role, text, false, language, speaker);
    }
    // Read the attributes again: the closing trailer of a stream may add the final flag.
    const last = reader.info.attributes ?? attrs;
    const final = role === 'agent' || last[ATTR_FINAL] === 'true';
    this.hooks.transcript(id, role, text, final, last[ATTR_SEGMENT_LANGUAGE] || language, speaker);
  }

  /** Whose speech a transcript segment not of this page's microphone is: another person's
   *  (their microphone's track), or the interpreter's translation of another person's words
   *  (its track `interpreter:<their identity>`). Undefined: the agent's own reply. */
  private speakerOf(trackId: string | undefined): { label: string; person: boolean } | undefined {
    if (!trackId) return undefined;
    for (const p of this.room.remoteParticipants.values()) {
      const pub = p.trackPublications.get(trackId);
      if (!pub) continue;
      if (p.kind !== ParticipantKind.AGENT) return { label: p.name || p.identity, person: true };
      const name = pub.trackName ?? '';
      const of = name.startsWith(INTERPRETER_TRACK_PREFIX) ? name.slice(INTERPRETER_TRACK_PREFIX.length) : '';
      if (!of || of === this.room.localParticipant.identity) return undefined;
      const person = this.room.remoteParticipants.get(of);
      return { label: `${person?.name || of}, translated`, person: false };
    }
    return undefined;
  }

  private fail(err: CallError): void {
    if (this.finished) return;
    this.finished = true;
    void this.cleanup().finally(() => this.hooks.ended(err));
  }

  private async cleanup(): Promise<void> {
    this.agentArrived = undefined;
    this.room.unregisterTextStreamHandler(TOPIC_TRANSCRIPTION);
    this.room.unregisterTextStreamHandler(TOPIC_TURN);
    this.clock.close();
    try {
      if (this.room.state !== ConnectionState.Disconnected) await this.room.disconnect();
    } catch (err) {
      console.warn('disconnect failed', err);
    }
    this.mic?.stop();
    this.audioElements.forEach((el) => el.remove());
    this.audioElements.length = 0;
  }
}

function describeDisconnect(why?: DisconnectReason): string {
  switch (why) {
    case DisconnectReason.DUPLICATE_IDENTITY:
      return 'The same identity joined from somewhere else.';
    case DisconnectReason.SERVER_SHUTDOWN:
      return 'The call server shut down.';
    case DisconnectReason.PARTICIPANT_REMOVED:
      return 'You were removed from the call.';
    case DisconnectReason.ROOM_DELETED:
      return 'The call was closed by the server.';
    case DisconnectReason.JOIN_FAILURE:
      return 'Joining the call failed.';
    default:
      return 'The connection to the call server was lost.';
  }
}
