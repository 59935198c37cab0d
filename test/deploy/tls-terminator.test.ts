import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startBalancerProcess, startRecordingBackend, type BalancerProcess, type RecordingBackend } from '../security/balancer-fixtures.js';
import { freePort, startProcessGroup, removeDir, ROOT, selfSignedCertificate, tempDir, waitFor } from '../helpers/processes.js';

/**
 * docs/deploy/production.md, "TLS in front of kiln balancer": its HAProxy and nginx
 * snippets, run by the real binaries in front of `kiln balancer --trust-proxy loopback`.
 * The balancer believes what the terminator sends, so whatever forwarding header a client
 * sends through the terminator must be replaced or dropped there.
 */
const FORGED = {
  'x-forwarded-for': '6.6.6.6',
  'x-forwarded-proto': 'http',
  'x-forwarded-host': 'evil.example',
  forwarded: 'for=6.6.6.6;host=evil.example;proto=http',
  'x-real-ip': '6.6.6.6',
};

/** The snippet of production.md's TLS section for `proxy` (# HAProxy or # nginx). */
function snippet(proxy: 'HAProxy' | 'nginx'): string {
  const doc = readFileSync(join(ROOT, 'docs', 'deploy', 'production.md'), 'utf8');
  const section = doc.slice(doc.indexOf('## TLS in front of `kiln balancer`'));
  const block = /```\n([\s\S]*?)```/.exec(section)![1]!;
  const [haproxy, nginx] = block.split('# nginx\n');
  return proxy === 'HAProxy' ? haproxy!.replace('# HAProxy\n', '') : nginx!;
}

function replaced(text: string, from: string, to: string): string {
  assert.ok(text.includes(from), `the snippet has ${from}`);
  return text.replaceAll(from, to);
}

const TERMINATORS = {
  HAProxy: (dir: string, port: number, lbPort: number, cert: { cert: string; key: string }) => {
    const pem = join(dir, 'site.pem');
    writeFileSync(pem, readFileSync(cert.cert, 'utf8') + readFileSync(cert.key, 'utf8'));
    let config = replaced(snippet('HAProxy'), 'bind :443 ssl crt /etc/ssl/site.pem', `bind 127.0.0.1:${port} ssl crt ${pem}`);
    config = replaced(config, '127.0.0.1:8080', `127.0.0.1:${lbPort}`);
    writeFileSync(join(dir, 'haproxy.cfg'), `defaults\n    mode http\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n${config}`);
    return ['/usr/sbin/haproxy', ['-db', '-f', join(dir, 'haproxy.cfg')]] as const;
  },
  nginx: (dir: string, port: number, lbPort: number, cert: { cert: string; key: string }) => {
    const location = replaced(snippet('nginx'), '127.0.0.1:8080', `127.0.0.1:${lbPort}`);
    for (const sub of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(dir, sub), { recursive: true });
    const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((kind, i) => `  ${kind}_temp_path ${dir}/${['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'][i]};`).join('\n');
    writeFileSync(
      join(dir, 'nginx.conf'),
      `user root;\nworker_processes 1;\ndaemon off;\npid ${dir}/nginx.pid;\nerror_log ${dir}/error.log warn;\nevents { worker_connections 64; }\nhttp {\n  access_log off;\n${temp}\n  server {\n    listen 127.0.0.1:${port} ssl;\n    ssl_certificate ${cert.cert};\n    ssl_certificate_key ${cert.key};\n${location}\n  }\n}\n`,
    );
    return ['/usr/sbin/nginx', ['-p', dir, '-c', join(dir, 'nginx.conf')]] as const;
  },
};

function httpsGet(port: number, path: string, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers: { host: 'shop.example', ...headers }, rejectUnauthorized: false, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode!));
    });
    req.on('error', reject);
    req.end();
  });
}

for (const [name, configure] of Object.entries(TERMINATORS)) {
  describe(`docs/deploy/production.md: ${name} terminating TLS in front of kiln balancer`, () => {
    let backend: RecordingBackend;
    let lb: BalancerProcess;
    let dir: string;
    let port: number;
    let stopProxy: () => Promise<void>;

    before(async () => {
      dir = tempDir(`kiln-tls-${name}-`);
      backend = await startRecordingBackend('app-1');
      lb = await startBalancerProcess([backend], ['--trust-proxy', 'loopback']);
      port = await freePort();
      const [bin, args] = configure(dir, port, lb.port, selfSignedCertificate(dir));
      const proxy = startProcessGroup(bin, args);
      stopProxy = proxy.stop;
      await waitFor(async () => (await httpsGet(port, '/ready', {}).then(() => true, () => false)) || (proxy.child.exitCode !== null && assert.fail(`${name} exited:\n${proxy.output()}`)), 10_000, `${name} listening`);
    });
    after(async () => {
      await stopProxy?.();
      await lb?.stop();
      await backend?.close();
      if (dir) removeDir(dir);
    });

    it('the app sees the HTTPS, the host and the address the terminator saw, none of what the client claimed', async () => {
      backend.seen.length = 0;
      assert.equal(await httpsGet(port, '/forged', FORGED), 200);
      const seen = backend.seen.find((s) => s.url === '/forged')!.headers;
      assert.equal(seen['x-forwarded-proto'], 'https');
      assert.equal(seen['x-forwarded-host'], 'shop.example');
      assert.equal(seen['x-forwarded-for'], '127.0.0.1, 127.0.0.1', 'the terminator set the client address, the balancer added the terminator');
      assert.equal(seen['forwarded'], undefined);
      assert.equal(seen['x-real-ip'], undefined);
    });
  });
}
