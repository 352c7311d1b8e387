// Types for writing apps against rwsgi's native interface.
export type { Environ, StartResponse, WsgiApp } from './apps/wsgi.js';
export type { Config } from './config.js';
