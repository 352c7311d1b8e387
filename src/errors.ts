// Errors a user can meet before serving starts, with stable codes and the
// exit status gunicorn users expect: 3 for configuration and bind errors,
// 4 for an app that fails to load.

export const EXIT_CONFIG = 3;
export const EXIT_APP_LOAD = 4;

export type ErrorCode =
  | 'RWSGI_ERR_USAGE'
  | 'RWSGI_ERR_CONFIG'
  | 'RWSGI_ERR_BIND'
  | 'RWSGI_ERR_NATIVE'
  | 'RWSGI_ERR_APP_NOT_FOUND'
  | 'RWSGI_ERR_APP_LOAD'
  | 'RWSGI_ERR_APP_EXPORT';

export class RwsgiError extends Error {
  readonly code: ErrorCode;
  readonly exitCode: number;

  constructor(code: ErrorCode, message: string, exitCode = EXIT_CONFIG) {
    super(message);
    this.name = 'RwsgiError';
    this.code = code;
    this.exitCode = exitCode;
  }
}
