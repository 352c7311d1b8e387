// Whether an app returned a promise (or any thenable, as `await` treats it).

export function isThenable<T = unknown>(value: unknown): value is PromiseLike<T> {
  return value !== null && value !== undefined && typeof (value as PromiseLike<T>).then === 'function';
}
