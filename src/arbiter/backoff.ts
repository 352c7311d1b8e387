// Respawn delays for workers that keep crashing: 0.1 s doubling to 30 s,
// back to the start once a worker has stayed up for a healthy minute.

export class Backoff {
  private failures = 0;

  constructor(
    private readonly baseMs = 100,
    private readonly maxMs = 30_000,
    private readonly healthyMs = 60_000,
  ) {}

  /** Records an exit after `livedMs` of service; returns the delay before the next spawn. */
  failed(livedMs: number): number {
    if (livedMs >= this.healthyMs) this.failures = 0;
    this.failures++;
    return Math.min(this.baseMs * 2 ** (this.failures - 1), this.maxMs);
  }

  get step(): number {
    return this.failures;
  }
}
