// Types for writing apps against rwsgi's native interface.
export type { Chunk, Environ, StartResponse, WsgiApp, WsgiApp as App, WsgiBody, WsgiInput } from './apps/wsgi.js';
export type { Config } from './config.js';
