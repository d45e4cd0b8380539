// The lab's built-in pod server: for each declared containerPort it answers with
// the pod's "<namespace>/<name>" — TCP: written on connect; UDP: sent in reply to any
// datagram. Run inside the pod's namespace by the lab (`ip netns exec`).
//   node server.js NAME tcp:80 udp:53 ...
import { createServer } from 'node:net';
import { createSocket } from 'node:dgram';

const [ident, ...ports] = process.argv.slice(2);
if (!ident || ports.length === 0) {
  process.stderr.write('usage: server.js NAMESPACE/NAME tcp:PORT|udp:PORT ...\n');
  process.exit(2);
}
for (const spec of ports) {
  const m = /^(tcp|udp|sctp):(\d+)$/i.exec(spec);
  if (!m) {
    process.stderr.write(`server: invalid port ${JSON.stringify(spec)}\n`);
    process.exit(2);
  }
  const port = Number(m[2]);
  if (m[1]!.toLowerCase() === 'udp') {
    const s = createSocket('udp4');
    s.on('message', (_msg, r) => s.send(`${ident}\n`, r.port, r.address));
    s.bind(port);
  } else if (m[1]!.toLowerCase() === 'tcp') {
    createServer((c) => {
      c.on('error', () => {});
      c.end(`${ident}\n`);
    }).listen(port);
  }
}
