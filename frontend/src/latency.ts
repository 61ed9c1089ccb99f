/**
 * Latency at the listener's ear: from the end of the person's speech (this page's own
 * voice-activity measure on the microphone track) to the moment the agent's reply becomes
 * audible in the page (an analyser on the agent's remote audio track). Both are measured on
 * the same clock, in this page, so the figure includes everything the person waits for:
 * end-of-turn detection, STT, LLM, TTS, the network and the playout buffer.
 */

// RMS levels (full scale = 1.0). -40 dBFS: above room noise after the browser's noise
// suppression, below any speech.
const MIC_SPEECH_RMS = 0.01;
const AGENT_AUDIBLE_RMS = 0.01;
// Shorter bursts are clicks or breaths, not speech.
const MIN_SPEECH_MS = 150;
// The person must have been quiet this long before agent audio counts as the reply, and the
// agent quiet this long before its audio counts as a new reply (not the previous one going on).
const QUIET_BEFORE_REPLY_MS = 120;
const AGENT_GAP_MS = 250;
const POLL_MS = 10;

export interface LatencyHooks {
  /** A turn was heard: `ms` from the end of the person's speech to audible agent audio. */
  measured(seq: number, ms: number): void;
}

function rms(analyser: AnalyserNode, buf: Float32Array<ArrayBuffer>): number {
  analyser.getFloatTimeDomainData(buf);
  let sum = 0;
  for (let i = 0; i < buf.length; i++) sum += buf[i] * buf[i];
  return Math.sqrt(sum / buf.length);
}

export class ListenerClock {
  private readonly ctx: AudioContext;
  private mic?: AnalyserNode;
  private agent?: AnalyserNode;
  private readonly sources: MediaStreamAudioSourceNode[] = [];
  private timer?: ReturnType<typeof setInterval>;
  private readonly buf = new Float32Array(1024);
  // microphone: current burst and the last moment it was loud
  private speechStart = 0;
  private lastMicLoud = 0;
  private spoke = false; // a real utterance since the last measured reply
  // agent: the last moment it was audible
  private lastAgentLoud = 0;
  private seq = 0;

  /** Create it in the click that starts the call: browsers only start audio on a gesture. */
  constructor(private readonly hooks: LatencyHooks) {
    this.ctx = new AudioContext();
  }

  watchMic(track: MediaStreamTrack): void {
    this.mic = this.analyse(track);
    this.start();
  }

  watchAgent(track: MediaStreamTrack): void {
    this.agent = this.analyse(track);
    this.start();
  }

  close(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.sources.forEach((s) => s.disconnect());
    void this.ctx.close().catch(() => undefined);
  }

  private analyse(track: MediaStreamTrack): AnalyserNode {
    const source = this.ctx.createMediaStreamSource(new MediaStream([track]));
    const analyser = this.ctx.createAnalyser();
    analyser.fftSize = this.buf.length;
    source.connect(analyser); // not to the destination: the <audio> element plays it
    this.sources.push(source);
    void this.ctx.resume().catch(() => undefined);
    return analyser;
  }

  private start(): void {
    if (this.timer === undefined) this.timer = setInterval(() => this.tick(), POLL_MS);
  }

  private tick(): void {
    const now = performance.now();
    // While the agent is audible, sound on the microphone may be its own voice coming back
    // (speakers, imperfect echo cancellation): only the person's speech in the gaps counts.
    const agentQuiet = now - this.lastAgentLoud > AGENT_GAP_MS;
    if (this.mic && agentQuiet) {
      if (rms(this.mic, this.buf) > MIC_SPEECH_RMS) {
        if (now - this.lastMicLoud > QUIET_BEFORE_REPLY_MS) this.speechStart = now;
        this.lastMicLoud = now;
        if (now - this.speechStart >= MIN_SPEECH_MS) this.spoke = true;
      }
    }
    if (this.agent) {
      const audible = rms(this.agent, this.buf) > AGENT_AUDIBLE_RMS;
      if (audible) {
        const onset = now - this.lastAgentLoud > AGENT_GAP_MS;
        const quiet = now - this.lastMicLoud >= QUIET_BEFORE_REPLY_MS;
        if (onset && this.spoke && quiet && this.lastMicLoud > 0) {
          this.spoke = false;
          this.hooks.measured(++this.seq, Math.round(now - this.lastMicLoud));
        }
        this.lastAgentLoud = now;
      }
    }
  }
}

/** What the agent sends after each reply (topic parley.turn; agent/callstate.py). */
export interface TurnStages {
  seq: number;
  index: number;
  stages: Record<string, number | null>;
  e2e_ms: number | null;
  listener_latency_ms: number | null;
  over_budget: string | null;
  budget_ms: number;
}
