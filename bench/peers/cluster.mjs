// node:cluster scaffolding shared by the Node peers: $WORKERS forks, each
// running `serve(port)`; SIGTERM takes them all down.
import cluster from 'node:cluster';

export async function runCluster(serve) {
  const workers = Number(process.env.WORKERS ?? 2);
  const port = Number(process.env.PORT ?? 8001);
  if (cluster.isPrimary) {
    for (let i = 0; i < workers; i++) cluster.fork();
    process.on('SIGTERM', () => {
      for (const w of Object.values(cluster.workers)) w.kill();
      process.exit(0);
    });
  } else {
    await serve(port);
  }
}
