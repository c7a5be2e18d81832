// A Node.js `tls` peer for swift-mtls's interop tests: an mTLS client or server, no dependencies.
//
//   node tls_peer.js client --port N --tls 1.2|1.3 --ca CA.pem [--cert C.pem --key C.key] [--name localhost]
//       connects to 127.0.0.1:N, sends GET /hello, prints "protocol: TLSv1.x" and the response;
//       exits 1 with "client failed: ..." on any error.
//   node tls_peer.js server --port 0 --tls 1.2|1.3 --cert S.pem --key S.key --ca CA.pem [--chunked]
//       prints "listening on 127.0.0.1:PORT", requires a client certificate from CA.pem, and answers
//       each request with "hello from node, CN=..." (one line per outcome), until it is killed. The
//       answer has a Content-Length, or with --chunked is sent chunked (what Node does by default
//       when a handler writes its head before its body).
//
// Both sides offer exactly one TLS version, so the version under test is forced from this side.
'use strict';

const fs = require('fs');
const https = require('https');
const tls = require('tls');
const { parseArgs } = require('util');

const role = process.argv[2];
const { values: options } = parseArgs({
  args: process.argv.slice(3),
  options: {
    port: { type: 'string', default: '0' },
    tls: { type: 'string', default: '1.3' },
    ca: { type: 'string' },
    cert: { type: 'string' },
    key: { type: 'string' },
    name: { type: 'string', default: 'localhost' },
    chunked: { type: 'boolean', default: false },
  },
});
const versions = { '1.2': 'TLSv1.2', '1.3': 'TLSv1.3' };
const version = versions[options.tls];
if ((role !== 'client' && role !== 'server') || !version || !options.ca) {
  console.error('usage: node tls_peer.js client|server --port N --tls 1.2|1.3 --ca CA.pem [--cert C --key K] [--name NAME]');
  process.exit(64);
}

const settings = { minVersion: version, maxVersion: version, ca: fs.readFileSync(options.ca) };
if (options.cert) {
  settings.cert = fs.readFileSync(options.cert);
  settings.key = fs.readFileSync(options.key);
}

if (role === 'client') {
  let response = '';
  let failed = false;
  const fail = (error) => {
    if (failed) return;
    failed = true;
    process.stdout.write(response);
    console.log(`client failed: ${error.message || error}`);
    process.exit(1);
  };
  const socket = tls.connect({ ...settings, host: '127.0.0.1', port: Number(options.port), servername: options.name }, () => {
    console.log(`protocol: ${socket.getProtocol()}`);
    socket.write(`GET /hello HTTP/1.1\r\nHost: ${options.name}\r\nConnection: close\r\n\r\n`);
  });
  socket.setTimeout(10000, () => fail(new Error('timed out')));
  socket.setEncoding('utf8');
  socket.on('data', (chunk) => { response += chunk; });
  socket.on('error', fail);
  socket.on('end', () => {
    if (response.length === 0) return fail(new Error('the server closed without answering'));
    console.log(response);
    process.exit(0);
  });
} else {
  const server = https.createServer({ ...settings, requestCert: true, rejectUnauthorized: true }, (request, reply) => {
    const subject = request.socket.getPeerCertificate().subject;
    const name = `CN=${subject.CN}`;
    const body = `hello from node, ${name}\n`;
    const head = { 'Content-Type': 'text/plain', Connection: 'close' };
    if (!options.chunked) head['Content-Length'] = Buffer.byteLength(body);
    reply.writeHead(200, head);
    reply.end(body);
    console.log(`answered ${request.socket.getProtocol()} request from ${name}`);
  });
  server.on('tlsClientError', (error) => console.log(`connection failed: ${error.message}`));
  server.listen(Number(options.port), '127.0.0.1', () => {
    console.log(`listening on 127.0.0.1:${server.address().port}`);
  });
}
