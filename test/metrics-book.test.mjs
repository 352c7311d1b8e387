// The arbiter's metrics book on its own: counters summed over workers, a
// worker's report that arrives after its exit counted once, label escaping.

import test from 'ava';
import { render } from '../dist/arbiter/exposition.js';
import { MetricsBook } from '../dist/arbiter/metrics.js';

const EMPTY_VIEW = { slots: [], listeners: [], snapshot: { slots: [] } };

/** A worker's cumulative counters: `gets` GETs answered 200. */
const report = (gets) => ({
  requests: [0, gets, 0, 0, 0],
  durations: [gets],
  durationSum: gets / 1000,
  received: gets * 10,
  sent: gets * 20,
  rejected: [{ status: 400, count: 1 }],
});

const value = (text, sample) => Number(new RegExp(`^${sample.replace(/[{}]/g, '\\$&')} (\\S+)$`, 'm').exec(text)?.[1]);
const gets = (text) => value(text, 'rwsgi_requests_total{method="GET",code="2xx"}');

test('totals sum the workers, keep an exited worker\'s counts, and count a report read after its exit once', (t) => {
  const book = new MetricsBook();
  const [one, two, three] = [{}, {}, {}];
  book.heartbeat(one, report(10), 0);
  book.heartbeat(two, report(5), 0);
  t.is(gets(book.render(EMPTY_VIEW, 0)), 15);
  book.exited(one, 'crash', 100);
  // Its final report comes out of the pipe after the exit event.
  book.heartbeat(one, report(12), 150);
  t.is(gets(book.render(EMPTY_VIEW, 200)), 17);
  book.heartbeat(three, report(1), 10_000);
  const later = book.render(EMPTY_VIEW, 10_000);
  t.is(gets(later), 18);
  t.is(value(later, 'rwsgi_requests_rejected_total{code="400"}'), 3);
  t.is(value(later, 'rwsgi_request_duration_seconds_count'), 18);
  t.is(value(later, 'rwsgi_worker_restarts_total{reason="crash"}'), 1);
  t.is(value(later, 'rwsgi_worker_restarts_total{reason="reload"}'), 0);
});

test('the text format escapes label values and help text', (t) => {
  const text = render([
    { name: 'x_total', type: 'counter', help: 'a \\ and\na line', samples: [{ labels: { l: 'q"b\\s\nn' }, value: Infinity }] },
  ]);
  t.is(text, '# HELP x_total a \\\\ and\\na line\n# TYPE x_total counter\nx_total{l="q\\"b\\\\s\\nn"} +Inf\n');
});
