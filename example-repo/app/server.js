'use strict';
// The sample app hoist deploys: a plain HTTP server with no dependencies.
//
//   GET /healthz  200 "ok" (the health gate in apps/*.yaml polls it)
//   GET /         "<APP_NAME> <release>", e.g. "web 1.0.0"
//   GET /env      the shared .env file of the current directory, or nothing
//
// The release name comes from a RELEASE file next to this script (written by
// the build), falling back to package.json's version.

const cluster = require('node:cluster');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');

const port = Number(process.env.PORT || 3000);
const appName = process.env.APP_NAME || 'app';

function releaseName() {
  try {
    const name = fs.readFileSync(path.join(__dirname, 'RELEASE'), 'utf8').trim();
    if (name) return name;
  } catch (_) {
    // No RELEASE file: use the package version.
  }
  try {
    return require('./package.json').version || 'unknown';
  } catch (_) {
    return 'unknown';
  }
}

const release = releaseName();

// Set once pm2 asks this process to stop (see stop() below).
let stopping = false;

const server = http.createServer((req, res) => {
  // While stopping, every answer asks the client to close its connection.
  if (stopping) res.setHeader('connection', 'close');
  const url = new URL(req.url, 'http://localhost');
  const reply = (status, body) => {
    res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' });
    res.end(body);
  };
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    return reply(405, 'method not allowed\n');
  }
  switch (url.pathname) {
    case '/healthz':
      return reply(200, 'ok');
    case '/':
      return reply(200, `${appName} ${release}`);
    case '/env': {
      // Read on every request: the file is shared and may change between deploys.
      let env = '';
      try {
        env = fs.readFileSync(path.join(process.cwd(), '.env'), 'utf8');
      } catch (_) {
        // No shared .env yet.
      }
      return reply(200, env);
    }
    default:
      return reply(404, 'not found\n');
  }
});

server.on('error', (err) => {
  // Most often the port is taken: say so and let pm2 restart the process.
  console.error(`${appName} ${release} cannot serve on 127.0.0.1:${port}: ${err.message}`);
  process.exit(1);
});

server.listen(port, '127.0.0.1', () => {
  console.log(`${appName} ${release} listening on 127.0.0.1:${port}`);
  // pm2 waits for this when the process runs with wait_ready.
  if (typeof process.send === 'function') process.send('ready');
});

// A graceful stop that loses no request, also on keep-alive connections.
// Closing an idle keep-alive connection from this side races with a request
// the client may be sending on it at that moment, and the client sees a reset
// (docs/benchmarks.md: wrk saw such resets during `pm2 reload` under load). So for a grace
// period the process keeps answering, each answer with `Connection: close`,
// which lets busy clients close their connections themselves and reconnect to
// a process that stays; only then does it stop listening and close the
// connections left idle. pm2's default kill_timeout (1.6 s) leaves time for it.
// Only a cluster worker has siblings to take its clients over; a process on
// its own (pm2 fork mode) stops at once, so its successor can have the port.
const GRACE_MS = cluster.isWorker ? 1000 : 0;
function stop(signal) {
  if (stopping) return;
  stopping = true;
  console.log(`${appName} ${release} got ${signal}, closing`);
  setTimeout(() => {
    server.close(() => process.exit(0));
    // Idle keep-alive connections would hold close() open.
    if (typeof server.closeIdleConnections === 'function') server.closeIdleConnections();
  }, GRACE_MS);
  setTimeout(() => process.exit(0), GRACE_MS + 5000).unref();
}
process.on('SIGINT', () => stop('SIGINT'));
process.on('SIGTERM', () => stop('SIGTERM'));
// pm2 sends this message instead of SIGINT to cluster workers on Windows and
// with shutdown_with_message; handling it costs nothing.
process.on('message', (msg) => {
  if (msg === 'shutdown') stop('shutdown');
});
