// A request body as an async iterable of Uint8Array chunks, fed by the
// engine. Reading pauses at the socket when the app falls behind, and
// `Expect: 100-continue` is answered when the app starts reading.

const HIGH_WATER = 256 * 1024;

export interface BodySource {
  /** Stop (false) or resume (true) reading from the socket. */
  setReading(on: boolean): void;
  /** Send `100 Continue`. */
  sendContinue(): void;
}

export class RequestBody implements Body {
  private chunks: Uint8Array[] = [];
  private buffered = 0;
  private ended = false;
  private failure: Error | null = null;
  private discarding = false;
  private paused = false;
  private started = false;
  private wake: (() => void) | null = null;

  constructor(
    private readonly source: BodySource,
    private readonly expectContinue: boolean,
  ) {}

  push(chunk: Uint8Array): void {
    if (this.discarding) return;
    this.chunks.push(chunk);
    this.buffered += chunk.byteLength;
    if (this.buffered > HIGH_WATER && !this.paused) {
      this.paused = true;
      this.source.setReading(false);
    }
    this.notify();
  }

  end(): void {
    this.ended = true;
    this.notify();
  }

  /** The connection failed: a reader waiting for more gets this error. */
  fail(error: Error): void {
    if (this.ended) return;
    this.failure = error;
    this.notify();
  }

  /** The response is done: whatever is still unread is dropped. */
  discard(): void {
    this.discarding = true;
    this.chunks = [];
    this.buffered = 0;
    this.resumeSource();
  }

  private resumeSource(): void {
    if (this.paused) {
      this.paused = false;
      this.source.setReading(true);
    }
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array> {
    if (this.started) throw new Error('wsgi.input can be read only once');
    this.started = true;
    if (this.expectContinue && !this.ended) this.source.sendContinue();
    for (;;) {
      const chunk = this.chunks.shift();
      if (chunk !== undefined) {
        this.buffered -= chunk.byteLength;
        if (this.buffered <= HIGH_WATER / 2) this.resumeSource();
        yield chunk;
        continue;
      }
      if (this.failure) throw this.failure;
      if (this.ended) return;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
  }

  /** The whole body in one buffer. */
  async bytes(): Promise<Buffer> {
    const parts: Uint8Array[] = [];
    for await (const chunk of this) parts.push(chunk);
    return Buffer.concat(parts);
  }
}

/** What the app and the dispatcher use of a request body. */
export interface Body extends AsyncIterable<Uint8Array> {
  push(chunk: Uint8Array): void;
  end(): void;
  fail(error: Error): void;
  discard(): void;
  bytes(): Promise<Buffer>;
}

/** The body of every request that has none: stateless, so one serves all. */
export const EMPTY_BODY: Body = Object.freeze({
  push() {},
  end() {},
  fail() {},
  discard() {},
  bytes: async () => Buffer.alloc(0),
  async *[Symbol.asyncIterator]() {},
});
