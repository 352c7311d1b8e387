// deploy/kubernetes/rwsgi.yaml: parsed with PyYAML, its rwsgi arguments
// accepted by rwsgi itself, and the rollout's promises checked in numbers
// (no cluster here to apply it to).

import test from 'ava';
import { ROOT, python, rwsgi } from './helpers.mjs';

const MANIFEST = `${ROOT}/deploy/kubernetes/rwsgi.yaml`;

async function documents() {
  const out = await python(`import json, yaml\nprint(json.dumps(list(yaml.safe_load_all(open(${JSON.stringify(MANIFEST)})))))`, 0);
  return JSON.parse(out);
}

/** `--name=value` arguments as a map. */
const flags = (args) => Object.fromEntries(args.filter((a) => a.startsWith('--')).map((a) => a.slice(2).split('=')));

test('the Kubernetes example is valid YAML whose probes, grace period, rollout and CPU match its rwsgi flags', async (t) => {
  const docs = await documents();
  const deployment = docs.find((d) => d.kind === 'Deployment');
  const service = docs.find((d) => d.kind === 'Service');
  t.truthy(deployment && service);
  const pod = deployment.spec.template;
  const [container] = pod.spec.containers;
  const f = flags(container.args);

  // The flags are rwsgi's own: it resolves them (exit 0).
  const checked = await rwsgi(['serve', 'examples/hello.js', ...container.args.slice(1), '--print-config']);
  t.is(checked.code, 0, checked.out);

  const metricsPort = Number(f['metrics-bind'].split(':').at(-1));
  const port = (name) => container.ports.find((p) => p.name === name).containerPort;
  t.is(port('metrics'), metricsPort);
  t.is(port('http'), Number(f.bind.split(':').at(-1)));
  t.deepEqual(container.readinessProbe.httpGet, { path: '/ready', port: 'metrics' });
  t.deepEqual(container.livenessProbe.httpGet, { path: '/live', port: 'metrics' });
  t.true(pod.spec.terminationGracePeriodSeconds > Number(f['shutdown-delay']) + Number(f['graceful-timeout']));
  t.deepEqual(deployment.spec.strategy.rollingUpdate, { maxUnavailable: 0, maxSurge: 1 });
  t.is(Number(container.resources.requests.cpu), Number(f.workers));
  t.is(pod.metadata.annotations['prometheus.io/port'], String(metricsPort));
  t.is(pod.metadata.annotations['prometheus.io/path'], '/metrics');
  t.deepEqual(service.spec.selector, deployment.spec.selector.matchLabels);
  t.is(service.spec.ports[0].targetPort, 'http');
});
