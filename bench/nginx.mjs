// The nginx peer's configuration (`return 200` hello world, the 4 KiB JSON
// as a file), for bench/run.mjs and bench/instructions.mjs.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { HELLO, JSON_4K } from './apps/payloads.js';

/** Writes nginx.conf (and the JSON file) into `dir`; returns its path.
 * `single`: one process, no master (what a tool attached to it measures).
 * `tls`: `{ cert, key }` to serve TLS 1.3 with AES-128-GCM only. */
export function nginxConfig(dir, port, workers, single = false, tls = null) {
  const conf = join(dir, 'nginx.conf');
  // 4 KiB is over nginx's limit for a `return` string: served as a file.
  writeFileSync(join(dir, 'json'), JSON_4K);
  writeFileSync(
    conf,
    `worker_processes ${workers};
${single ? 'master_process off;\n' : ''}daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path ${dir};
  server {
    listen 127.0.0.1:${port} reuseport${tls ? ' ssl' : ''};${
      tls
        ? `
    ssl_certificate ${tls.cert};
    ssl_certificate_key ${tls.key};
    ssl_protocols TLSv1.3;
    ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;`
        : ''
    }
    location = / { default_type text/plain; return 200 '${HELLO}'; }
    location = /json { default_type application/json; alias ${dir}/json; }
  }
}
`,
  );
  return conf;
}
