import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startApp, type AppProcess } from '../helpers/apps.js';
import { Browser } from '../helpers/browser.js';
import { freePort, startProcessGroup, ROOT, removeDir, startKilnServer, tempDir, waitFor, type ServerProcess } from '../helpers/processes.js';

/**
 * docs/deploy/ configurations, run by the real binaries (Debian's haproxy and nginx,
 * installed by .ci/run): the same failover test as with kiln balancer.
 */
interface Cart {
  node: string;
  items: { sku: string; qty: number }[];
}

/** The doc's config with its example ports replaced by this run's. */
function render(file: string, lbPort: number, apps: AppProcess[]): string {
  let text = readFileSync(join(ROOT, 'docs', 'deploy', file), 'utf8').replaceAll('127.0.0.1:8080', `127.0.0.1:${lbPort}`);
  apps.forEach((a, i) => (text = text.replaceAll(`127.0.0.1:${3001 + i}`, `127.0.0.1:${a.port}`)));
  return text;
}

const PROXIES = {
  haproxy: (dir: string, lbPort: number, apps: AppProcess[]) => {
    const config = join(dir, 'haproxy.cfg');
    writeFileSync(config, render('haproxy.cfg', lbPort, apps));
    return ['/usr/sbin/haproxy', ['-db', '-f', config]] as const;
  },
  nginx: (dir: string, lbPort: number, apps: AppProcess[]) => {
    writeFileSync(join(dir, 'kiln.conf'), render('nginx-kiln.conf', lbPort, apps));
    for (const sub of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(dir, sub), { recursive: true });
    writeFileSync(
      join(dir, 'nginx.conf'),
      `user root;\nworker_processes 1;\ndaemon off;\npid ${dir}/nginx.pid;\nerror_log ${dir}/error.log warn;\nevents { worker_connections 1024; }\nhttp {\n  access_log off;\n  client_body_temp_path ${dir}/body;\n  proxy_temp_path ${dir}/proxy;\n  fastcgi_temp_path ${dir}/fastcgi;\n  uwsgi_temp_path ${dir}/uwsgi;\n  scgi_temp_path ${dir}/scgi;\n  include ${dir}/kiln.conf;\n}\n`,
    );
    return ['/usr/sbin/nginx', ['-p', dir, '-c', join(dir, 'nginx.conf')]] as const;
  },
};

for (const [name, configure] of Object.entries(PROXIES)) {
  describe(`docs/deploy with ${name}`, () => {
    let server: ServerProcess;
    let apps: AppProcess[];
    let dir: string;
    let url: string;
    let stopProxy: () => Promise<void>;

    before(async () => {
      server = await startKilnServer();
      apps = await Promise.all([1, 2, 3].map((i) => startApp('../../../examples/shop/server', { PORT: '0', NODE_NAME: `app-${i}`, KILN_ENGINE: server.url, KILN_TOKEN: server.token, SESSION_SECRET: 'deploy-secret' })));
      dir = tempDir(`kiln-${name}-`);
      const lbPort = await freePort();
      const [bin, args] = configure(dir, lbPort, apps);
      const proxy = startProcessGroup(bin, args);
      stopProxy = proxy.stop;
      url = `http://127.0.0.1:${lbPort}`;
      await waitFor(async () => (await fetch(`${url}/healthz`).then((r) => r.ok).catch(() => false)) || (proxy.child.exitCode !== null && assert.fail(`${name} exited:\n${proxy.output()}`)), 10_000, `${name} listening`);
    });
    after(async () => {
      await stopProxy?.();
      await Promise.all((apps ?? []).map((a) => a.kill()));
      await server?.kill();
      if (dir) removeDir(dir);
    });

    it('keeps a session on its node, and after SIGKILL of that node serves it from another with the whole cart', async () => {
      const b = new Browser(url);
      const nodes = new Set<string>();
      for (const sku of ['teapot', 'mug', 'mug']) nodes.add((await b.post<Cart>('/api/cart', { sku, qty: 1 })).body.node);
      await b.post('/api/login', { user: 'kim' });
      for (let i = 0; i < 3; i++) nodes.add((await b.get<Cart>('/api/cart')).body.node);
      assert.equal(nodes.size, 1, `affinity: one node served the session (${[...nodes].join(', ')})`);
      const served = [...nodes][0]!;
      const victim = apps.find((_, i) => `app-${i + 1}` === served)!;
      await victim.kill();
      const after = await b.get<Cart>('/api/cart');
      assert.equal(after.status, 200, 'no error to the client');
      assert.notEqual(after.body.node, served);
      assert.deepEqual(after.body.items, [{ sku: 'teapot', qty: 1 }, { sku: 'mug', qty: 2 }]);
      const session = await b.get<{ data: { user: string } }>('/api/session');
      assert.equal(session.body.data.user, 'kim', 'still logged in');
    });

    it('spreads new sessions over the live nodes', async () => {
      const seen = new Set<string>();
      for (let i = 0; i < 8; i++) seen.add((await new Browser(url).post<Cart>('/api/cart', { sku: 'x', qty: 1 })).body.node);
      assert.ok(seen.size >= 2, `new sessions went to ${[...seen].join(', ')}`);
    });
  });
}
