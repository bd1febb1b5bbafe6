// Kennel's web console (served by `kennelctl ui`). Plain JS and Chart.js, both from the
// kennelctl binary. The page polls the view on screen every POLL_MS (nothing while the tab is
// hidden) and updates it in place: tables rebuilt, charts' data replaced. Every text from the
// cluster goes in as textContent, never as HTML.
'use strict';

const POLL_MS = 2000;
const HISTORY = 150;  // Serving samples kept for the time charts (5 minutes at 2 s).
const COLORS = ['#2f5d8a', '#d1495b', '#00798c', '#edae49', '#66a182', '#8e6c8a', '#3d405b', '#e07a5f',
                '#81b29a', '#f2cc8f', '#6d597a', '#b56576'];

const view = document.getElementById('view');
const banner = document.getElementById('banner');
const state = {
  route: null,       // {name, id}
  mounted: null,     // The mounted view's update(data) and its API paths.
  charts: new Map(), // canvas id -> Chart
  timer: null,
  inFlight: false,
  lastOk: null,      // Date of the last answer that was not an outage.
  downSince: null,
  serving: [],       // [{t, nodes: {name: {load, stats}}}]
};

// ---------------------------------------------------------------- helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

const num = (v) => (v === undefined || v === null || v === '' ? 0 : Number(v));
const fixed = (v, d) => (Number.isFinite(num(v)) ? num(v).toFixed(d) : '-');
const pct = (v) => (v === undefined || v === null ? '-' : (100 * num(v)).toFixed(2) + '%');
const clock = (ms) => (num(ms) ? new Date(num(ms)).toLocaleTimeString() : '-');
const when = (ms) => (num(ms) ? new Date(num(ms)).toLocaleString() : '-');

function duration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return '-';
  if (seconds < 90) return seconds.toFixed(0) + ' s';
  if (seconds < 5400) return (seconds / 60).toFixed(1) + ' min';
  return (seconds / 3600).toFixed(1) + ' h';
}

function ago(ms) {
  if (!num(ms)) return '-';
  return duration((Date.now() - num(ms)) / 1000) + ' ago';
}

const ENDED = new Set(['SUCCEEDED', 'FAILED', 'CANCELLED']);

function stateCell(s) { return el('td', {class: 'state-' + s, text: s}); }

function table(headers, rows, numeric) {
  const numericSet = new Set(numeric || []);
  const head = el('tr', {}, headers.map((h, i) => el('th', {class: numericSet.has(i) ? 'num' : null, text: h})));
  const body = rows.map((r) => {
    const tr = el('tr', {class: r.rowClass || null});
    (r.cells || r).forEach((c, i) => {
      if (c instanceof HTMLTableCellElement) tr.append(c);
      else tr.append(el('td', {class: numericSet.has(i) ? 'num' : null}, c instanceof Node ? c : String(c)));
    });
    return tr;
  });
  return el('table', {}, el('thead', {}, head), el('tbody', {}, body));
}

function fill(id, ...children) {
  const node = document.getElementById(id);
  if (node) node.replaceChildren(...children.flat());
}

function facts(pairs) {
  return el('div', {class: 'facts'}, pairs.map(([k, v]) => el('div', {}, el('span', {text: k}), el('span', {text: v}))));
}

function chartBox(id, title, note) {
  return el('div', {class: 'chart'}, el('h3', {text: title}), note ? el('div', {class: 'note', text: note}) : null,
            el('div', {class: 'box'}, el('canvas', {id})));
}

// Creates the chart on first use, then replaces its data (no animation: it updates every poll).
function chart(id, type, labels, datasets, options) {
  const canvas = document.getElementById(id);
  if (!canvas) return;
  const colored = datasets.map((d, i) => Object.assign({
    borderColor: COLORS[i % COLORS.length], backgroundColor: COLORS[i % COLORS.length],
    borderWidth: 2, pointRadius: d.data.length > 60 ? 0 : 2, tension: 0, spanGaps: true,
  }, d));
  let c = state.charts.get(id);
  if (c && c.canvas !== canvas) { c.destroy(); c = null; }
  if (!c) {
    c = new Chart(canvas, {
      type, data: {labels, datasets: colored},
      options: Object.assign({animation: false, responsive: true, maintainAspectRatio: false,
                              interaction: {mode: 'nearest', intersect: false},
                              plugins: {legend: {labels: {boxWidth: 12}}}}, options || {}),
    });
    state.charts.set(id, c);
  } else {
    c.data.labels = labels;
    c.data.datasets = colored;
    c.update('none');
  }
  canvas.dataset.points = String(colored.reduce(
    (n, d) => n + d.data.filter((v) => v !== null && v !== undefined && !Number.isNaN(v)).length, 0));
}

function destroyCharts() {
  for (const c of state.charts.values()) c.destroy();
  state.charts.clear();
}

// ---------------------------------------------------------------- data

// {ok, body} or {ok: false, error: {code, message, peer}}; a console that does not answer is
// an error too.
async function getJson(path) {
  let response;
  try {
    response = await fetch(path, {cache: 'no-store'});
  } catch (e) {
    return {ok: false, error: {code: 'UNAVAILABLE', peer: 'console',
                               message: 'kennelctl ui is not answering (was it stopped?): ' + e.message}};
  }
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    // Not JSON: not an answer of this console's API.
  }
  if (response.ok && body) return {ok: true, body};
  return {ok: false, error: (body && body.error) ||
      {code: 'UNKNOWN', peer: 'console', message: path + ' answered HTTP ' + response.status + ' without a reason'}};
}

// What a view cannot change by waiting: said in place of the view. Any other failure (the
// coordinator down, restarting — its calls end CANCELLED as it stops —, slow, or failing) is
// taken as passing: a banner over the last data read, and the next poll tries again.
const VIEW_PROBLEMS = new Set(['PERMISSION_DENIED', 'UNAUTHENTICATED', 'NOT_FOUND', 'INVALID_ARGUMENT',
                               'FAILED_PRECONDITION']);
const OUTAGE = new Set(['UNAVAILABLE', 'DEADLINE_EXCEEDED', 'CANCELLED']);

function showBanner(error) {
  if (!state.downSince) state.downSince = new Date();
  const who = error.peer === 'console' ? 'The console' : 'The coordinator';
  const what = OUTAGE.has(error.code) ? ' is unreachable since ' + state.downSince.toLocaleTimeString() + ': '
                                      : ' is failing since ' + state.downSince.toLocaleTimeString() + ' (' + error.code + '): ';
  const kept = state.lastOk ? ' Showing what was read at ' + state.lastOk.toLocaleTimeString() + '.' : '';
  banner.textContent = who + what + error.message + '.' + kept + ' Retrying every ' + POLL_MS / 1000 + ' s.';
  banner.hidden = false;
}

function hideBanner() {
  state.downSince = null;
  banner.hidden = true;
  banner.textContent = '';
}

// A view-level problem (a role that may not read it, no such job): said in place of the view.
function showProblem(error) {
  const box = document.getElementById('problem');
  if (!box) return;
  box.className = error.code === 'PERMISSION_DENIED' || error.code === 'UNAUTHENTICATED' ? 'denied' : 'problem';
  const what = error.code === 'PERMISSION_DENIED'
    ? 'Your credentials may not read this view. '
    : error.code === 'UNAUTHENTICATED' ? 'The cluster did not accept your credentials. ' : '';
  box.textContent = what + error.code + ': ' + error.message;
  box.hidden = false;
  document.getElementById('content').hidden = true;
}

function clearProblem() {
  const box = document.getElementById('problem');
  if (box) box.hidden = true;
  const content = document.getElementById('content');
  if (content) content.hidden = false;
}

async function poll() {
  if (state.inFlight || !state.mounted || document.hidden) return;
  state.inFlight = true;
  const mounted = state.mounted;
  try {
    const results = await Promise.all(mounted.paths.map(getJson));
    if (mounted !== state.mounted) return;  // The route changed meanwhile.
    const failed = results.find((r) => !r.ok);
    if (failed && !VIEW_PROBLEMS.has(failed.error.code)) {
      showBanner(failed.error);  // Keep what is on screen.
      return;
    }
    hideBanner();
    if (failed) { showProblem(failed.error); return; }
    clearProblem();
    state.lastOk = new Date();
    document.getElementById('updated').textContent = 'updated ' + state.lastOk.toLocaleTimeString();
    const caller = results.map((r) => r.body.caller).find((c) => c);
    if (caller) document.getElementById('who').textContent = 'as ' + caller + ' ·';
    mounted.update(...results.map((r) => r.body));
  } catch (e) {
    console.warn('kennel console: could not show the view:', e);
  } finally {
    state.inFlight = false;
  }
}

// ---------------------------------------------------------------- views

function skeleton(title, ...sections) {
  view.replaceChildren(el('h1', {id: 'title', text: title}), el('div', {id: 'problem', hidden: true}),
                       el('div', {id: 'content'}, sections.flat()));
}

const section = (title, id) => [el('h2', {text: title}), el('div', {id})];

function mountCluster() {
  skeleton('Cluster', section('Nodes', 'nodes'), section('Jobs running', 'active'),
           section('Autoscaled models', 'autoscale'));
  return {paths: ['/api/cluster'], update(status) {
    const nodes = status.nodes || [];
    fill('nodes', nodes.length ? table(
      ['Node', 'Role', 'State', 'Heartbeat', 'Job / rank', 'Model', 'Device', 'Detail'],
      nodes.map((n) => [n.name, n.role, stateCell(n.state), ago(n.last_heartbeat_unix_ms),
                        n.job_id ? jobLink(n.job_id, n.job_id + ' / rank ' + n.rank) : '-',
                        n.model || n.desired_model || '-',
                        deviceText(n.resources), n.detail || ''])) : el('div', {class: 'empty', text: 'No nodes have registered.'}));
    const jobs = status.active_jobs || [];
    fill('active', jobs.length ? jobsTable(jobs) : el('div', {class: 'empty', text: 'No job is running.'}));
    fill('autoscale', autoscaleTable(status.autoscaling || []));
  }};
}

function deviceText(r) {
  if (!r) return '-';
  const gpus = num(r.gpus) ? ' x' + r.gpus : '';
  return (r.device || 'cpu') + gpus + (r.cpu_cores ? ', ' + r.cpu_cores + ' cores' : '') + (r.hostname ? ' @ ' + r.hostname : '');
}

function autoscaleTable(models) {
  if (!models.length) return el('div', {class: 'empty', text: 'No model is autoscaled.'});
  return table(['Model', 'Desired', 'Serving', 'Starting', 'Draining', 'Load', 'Last decision', 'Problem'],
               models.map((a) => [a.model, a.desired_nodes, a.serving_nodes, a.starting_nodes, a.draining_nodes,
                                  fixed(a.load, 2), a.last_decision || '-', a.problem || '']), [1, 2, 3, 4, 5]);
}

function jobLink(id, text) { return el('a', {href: '#/jobs/' + encodeURIComponent(id), text: text || id}); }
function tuningLink(id, text) { return el('a', {href: '#/tuning/' + encodeURIComponent(id), text: text || id}); }

function lastAccuracy(job) {
  const epochs = job.epochs || [];
  return epochs.length ? pct(epochs[epochs.length - 1].eval_accuracy) : '-';
}

function jobDuration(job) {
  const end = ENDED.has(job.state) ? num(job.updated_unix_ms) : Date.now();
  return duration((end - num(job.created_unix_ms)) / 1000);
}

function modelText(job) {
  const spec = job.spec || {};
  const arch = (spec.model && spec.model.architecture) || '';
  const made = job.model_name && num(job.model_version) ? job.model_name + ':' + job.model_version : '';
  return [arch, made].filter((s) => s).join(' → ') || '-';
}

function jobsTable(jobs) {
  return table(['Job', 'Name', 'State', 'Model', 'Epochs', 'Accuracy', 'Started', 'Duration'],
               jobs.map((j) => [jobLink(j.id), (j.spec && j.spec.name) || '', stateCell(j.state), modelText(j),
                                (j.epochs || []).length + ' / ' + num(j.spec && j.spec.training && j.spec.training.epochs),
                                lastAccuracy(j), when(j.created_unix_ms), jobDuration(j)]), [4, 5]);
}

function mountJobs() {
  skeleton('Jobs', section('Jobs, newest first', 'jobs'));
  return {paths: ['/api/jobs'], update(list) {
    const jobs = (list.jobs || []).slice().sort((a, b) => num(b.created_unix_ms) - num(a.created_unix_ms));
    fill('jobs', jobs.length ? jobsTable(jobs) : el('div', {class: 'empty', text: 'No jobs yet: kennelctl train submits one.'}));
  }};
}

function mountJob(id) {
  skeleton('Job ' + id, el('div', {id: 'summary'}),
           el('h2', {text: 'Per epoch'}),
           el('div', {class: 'charts'},
              chartBox('chart-loss', 'Loss', 'training (mean over the epoch) and evaluation'),
              chartBox('chart-accuracy', 'Evaluation accuracy'),
              chartBox('chart-throughput', 'Images per second (all ranks)'),
              chartBox('chart-timeline', 'Step timeline (rank 0, ms per step)', 'where a step spent its time, means over the epoch')),
           section('Ranks', 'ranks'), section('Memberships, recoveries and events', 'events'),
           section('Checkpoint', 'checkpoint'), el('h2', {text: 'Spec'}), el('div', {id: 'spec'}));
  return {paths: ['/api/jobs/' + encodeURIComponent(id)], update(job) {
    const t = (job.spec && job.spec.training) || {};
    const epochs = job.epochs || [];
    const last = job.last_step || {};
    fill('summary', facts([
      ['State', job.state], ['Name', (job.spec && job.spec.name) || ''], ['Model', modelText(job)],
      ['Epochs', epochs.length + ' of ' + num(t.epochs)],
      ['Step', num(last.steps_per_epoch) ? 'epoch ' + (num(last.epoch) + 1) + ', step ' + last.step + ' / ' + last.steps_per_epoch : '-'],
      ['Latest loss', last.loss !== undefined ? fixed(last.loss, 4) : '-'],
      ['Accuracy', lastAccuracy(job)], ['Started', when(job.created_unix_ms)], ['Duration', jobDuration(job)],
      ['World size', String(num(job.spec && job.spec.world_size))], ['Recoveries', String(num(job.recoveries))],
      ['Message', job.message || '-'],
    ]));
    const labels = epochs.map((e) => 'epoch ' + (num(e.epoch) + 1));
    chart('chart-loss', 'line', labels, [
      {label: 'train loss', data: epochs.map((e) => num(e.train_loss))},
      {label: 'eval loss', data: epochs.map((e) => num(e.eval_loss))}]);
    chart('chart-accuracy', 'line', labels, [{label: 'eval accuracy', data: epochs.map((e) => num(e.eval_accuracy))}],
          {scales: {y: {suggestedMin: 0, suggestedMax: 1}}});
    chart('chart-throughput', 'line', labels, [{label: 'images/s', data: epochs.map((e) => num(e.images_per_second))}],
          {scales: {y: {beginAtZero: true}}});
    const parts = [['data', 'data_ms'], ['broadcast', 'broadcast_ms'], ['forward', 'forward_ms'],
                   ['backward', 'backward_ms'], ['waiting (all-reduce)', 'sync_wait_ms'], ['optimizer', 'optimizer_ms']];
    chart('chart-timeline', 'bar', labels,
          parts.map(([label, key]) => ({label, data: epochs.map((e) => num(e.timeline && e.timeline[key]))})),
          {scales: {x: {stacked: true}, y: {stacked: true, title: {display: true, text: 'ms per step'}}}});
    const nodes = job.nodes || [];
    fill('ranks', nodes.length ? table(['Rank', 'Node'], nodes.map((n, r) => [r, n]))
                               : el('div', {class: 'empty', text: 'No trainers hold this job now.'}));
    const members = job.memberships || [];
    fill('events', members.length ? table(['Generation', 'Trainers', 'From epoch', 'From sample', 'Why'],
         members.map((m) => [m.generation, m.world_size, num(m.epoch) + 1, m.epoch_start_sample, m.reason || '-']), [0, 1, 2, 3])
         : el('div', {class: 'empty', text: 'The group has not formed yet.'}),
         job.message ? el('p', {class: 'note', text: 'Latest: ' + job.message}) : null);
    fill('checkpoint', num(job.checkpoint_global_step)
      ? facts([['Global step', String(job.checkpoint_global_step)], ['Epoch', String(num(job.checkpoint_epoch) + 1)],
               ['Samples of its epoch', String(job.checkpoint_epoch_samples)], ['Written', when(job.checkpoint_unix_ms)]])
      : el('div', {class: 'empty', text: 'No checkpoint yet.'}));
    fill('spec', specFacts(job.spec || {}), el('details', {}, el('summary', {text: 'the whole spec'}),
                                                el('pre', {text: JSON.stringify(job.spec, null, 2)})));
  }};
}

function specFacts(spec) {
  const t = spec.training || {};
  const d = spec.dataset || {};
  return facts([
    ['Architecture', (spec.model && spec.model.architecture) || '-'], ['Dataset', (d.format || '') + ' ' + (d.root || '')],
    ['Epochs', String(num(t.epochs))], ['Batch size per rank', String(num(t.batch_size))],
    ['Optimizer', t.optimizer || '-'], ['Learning rate', String(num(t.learning_rate))],
    ['Schedule', t.schedule || '-'], ['Gradients', t.gradient_compression || 'float32'],
    ['Backend', spec.backend || '-'], ['Seed', String(t.seed || 0)],
  ]);
}

function mountTunings() {
  skeleton('Tuning', section('Searches, newest first', 'tunings'));
  return {paths: ['/api/tunings'], update(list) {
    const tunings = (list.tunings || []).slice().sort((a, b) => num(b.created_unix_ms) - num(a.created_unix_ms));
    fill('tunings', tunings.length ? table(
      ['Search', 'Name', 'State', 'Strategy', 'Objective', 'Trials', 'Best trial', 'Best', 'Trial-epochs', 'Started', 'Duration'],
      tunings.map((t) => [tuningLink(t.id), t.spec.name, stateCell(t.state), t.spec.strategy, t.spec.objective,
                          (t.trials || []).length, t.best_trial || '-', t.best_trial ? fixed(t.best_objective, 4) : '-',
                          t.trial_epochs, when(t.created_unix_ms),
                          duration(((num(t.ended_unix_ms) || Date.now()) - num(t.created_unix_ms)) / 1000)]), [5, 6, 7, 8])
      : el('div', {class: 'empty', text: 'No searches yet: kennelctl tune starts one.'}));
  }};
}

const maximizing = (t) => t.spec.objective !== 'MINIMIZE_EVAL_LOSS';
const finalObjective = (trial) => (trial.objective && trial.objective.length ? num(trial.objective[trial.objective.length - 1]) : null);

function mountTuning(id) {
  skeleton('Search ' + id, el('div', {id: 'summary'}), section('Leaderboard', 'leaderboard'),
           el('div', {class: 'charts'},
              chartBox('chart-trials', 'Trials: objective per epoch'),
              chartBox('chart-parallel', 'Hyperparameters against the objective',
                       'each axis scaled to its range (low at the bottom; log-uniform ones in log scale); one line per trial')));
  return {paths: ['/api/tunings/' + encodeURIComponent(id)], update(t) {
    const trials = t.trials || [];
    const objectiveName = maximizing(t) ? 'eval accuracy' : 'eval loss';
    fill('summary', facts([
      ['State', t.state], ['Strategy', t.spec.strategy], ['Objective', t.spec.objective], ['Trials', String(trials.length)],
      ['Best', t.best_trial ? 'trial ' + t.best_trial + ': ' + fixed(t.best_objective, 4) : 'none yet'],
      ['Model', t.model_name ? t.model_name + ':' + t.model_version : '-'], ['Trial-epochs', String(t.trial_epochs)],
      ['Message', t.message || '-'],
    ]));
    const rungEpochs = [...new Set(trials.flatMap((tr) => (tr.rungs || []).map((r) => r.epochs)))].sort((a, b) => a - b);
    const sign = maximizing(t) ? -1 : 1;
    const ranked = trials.slice().sort((a, b) => {
      const fa = finalObjective(a), fb = finalObjective(b);
      if (fa === null || fb === null) return (fa === null) - (fb === null);
      return sign * (fa - fb);
    });
    fill('leaderboard', trials.length ? table(
      ['Trial', 'State', 'Hyperparameters'].concat(rungEpochs.map((e) => 'Rung ' + e + ' ep'), ['Epochs', objectiveName, 'Job']),
      ranked.map((tr) => {
        const rungs = new Map((tr.rungs || []).map((r) => [r.epochs, r]));
        const best = num(t.best_trial) === tr.number;
        return {rowClass: best ? 'best' : null, cells: [
          (best ? '★ ' : '') + tr.number, stateCell(tr.state),
          Object.entries(tr.params || {}).map(([k, v]) => k + '=' + v).join(', '),
          ...rungEpochs.map((e) => rungs.has(e) ? fixed(rungs.get(e).value, 4) + (rungs.get(e).promoted ? ' promoted' : ' stopped') : ''),
          (tr.objective || []).length, finalObjective(tr) === null ? '-' : fixed(finalObjective(tr), 4), jobLink(tr.job_id)]};
      })) : el('div', {class: 'empty', text: 'No trial has started.'}));
    const maxEpochs = Math.max(0, ...trials.map((tr) => (tr.objective || []).length));
    chart('chart-trials', 'line', Array.from({length: maxEpochs}, (_, i) => 'epoch ' + (i + 1)),
          trials.map((tr) => ({label: 'trial ' + tr.number, data: (tr.objective || []).map(num)})));
    parallelCoordinates(t, trials, objectiveName);
  }};
}

// Parallel coordinates on a line chart: one category per hyperparameter plus the objective,
// every value scaled to 0..1 over its own range (log-uniform ones in log scale, choices by
// their order); the tooltip shows the real value.
function parallelCoordinates(t, trials, objectiveName) {
  const dims = (t.spec.space || []).map((d) => d.field);
  const kinds = new Map((t.spec.space || []).map((d) => [d.field, d]));
  const axes = dims.map((field) => {
    const spec = kinds.get(field);
    const raw = trials.map((tr) => (tr.params || {})[field]);
    if (spec.kind === 'CHOICE') {
      const choices = spec.choices || [];
      return {field, raw, scaled: raw.map((v) => choices.length > 1 ? choices.indexOf(v) / (choices.length - 1) : 0.5)};
    }
    const log = spec.kind === 'LOG_UNIFORM';
    const f = (v) => (log ? Math.log(Number(v)) : Number(v));
    const lo = f(spec.min), hi = f(spec.max);
    return {field, raw, scaled: raw.map((v) => (v === undefined ? null : hi > lo ? (f(v) - lo) / (hi - lo) : 0.5))};
  });
  const finals = trials.map(finalObjective);
  const present = finals.filter((v) => v !== null);
  const lo = Math.min(...present), hi = Math.max(...present);
  axes.push({field: objectiveName, raw: finals.map((v) => (v === null ? '-' : v.toFixed(4))),
             scaled: finals.map((v) => (v === null ? null : hi > lo ? (v - lo) / (hi - lo) : 0.5))});
  const datasets = trials.map((tr, i) => ({
    label: 'trial ' + tr.number, data: axes.map((a) => a.scaled[i]), raw: axes.map((a) => a.raw[i]),
    borderWidth: num(t.best_trial) === tr.number ? 4 : 1.5, pointRadius: 3,
  }));
  chart('chart-parallel', 'line', axes.map((a) => a.field), datasets, {
    scales: {y: {min: 0, max: 1, ticks: {display: false}, grid: {color: '#eef2f6'}},
             x: {grid: {color: '#9aa8b6', lineWidth: 1.5}}},
    plugins: {tooltip: {callbacks: {label: (ctx) => ctx.dataset.label + ': ' + ctx.dataset.raw[ctx.dataIndex]}},
              legend: {labels: {boxWidth: 12}}},
  });
}

function mountModels() {
  skeleton('Models', section('Versions, newest first', 'models'), section('Inference nodes', 'deployments'),
           section('Autoscaled models', 'autoscale'));
  return {paths: ['/api/models'], update(m) {
    const nodes = m.inference_nodes || [];
    const versions = (m.models || []).slice().sort((a, b) => a.name.localeCompare(b.name) || num(b.version) - num(a.version));
    fill('models', versions.length ? table(['Model', 'Architecture', 'Test accuracy', 'Epochs', 'Lineage', 'Created', 'Deployed on'],
      versions.map((v) => {
        const key = v.name + ':' + v.version;
        const man = v.manifest || {};
        const metrics = man.metrics || {};
        const serving = nodes.filter((n) => n.model === key).map((n) => n.name + (n.serving ? '' : ' (not serving)'));
        const wanted = nodes.filter((n) => n.desired_model === key && n.model !== key).map((n) => n.name + ' (rolling out)');
        return [key, (man.model && man.model.architecture) || '-',
                metrics.test_accuracy ? pct(metrics.test_accuracy) : '-', num(metrics.epochs) || '-',
                lineage(man.lineage || {}, v.job_id), when(v.created_unix_ms),
                serving.concat(wanted).join(', ') || '-'];
      }), [2, 3]) : el('div', {class: 'empty', text: 'No models registered: a finished job or kennelctl import registers one.'}));
    fill('deployments', nodes.length ? table(['Node', 'State', 'Serving', 'Wanted'],
      nodes.map((n) => [n.name, stateCell(n.state), n.model || '-', n.desired_model || '-']))
      : el('div', {class: 'empty', text: 'No inference nodes.'}));
    fill('autoscale', autoscaleTable(m.autoscaling || []));
  }};
}

function lineage(l, jobId) {
  const parts = [];
  if (l.imported) parts.push('imported' + (l.init_weights ? ' from ' + l.init_weights : '') + (l.source_sha256 ? ' (sha256 ' + l.source_sha256.slice(0, 12) + ')' : ''));
  if (l.tuning_id) parts.push(el('span', {}, 'search ', tuningLink(l.tuning_id), ' trial ' + l.trial));
  if (jobId || l.job_id) parts.push(el('span', {}, 'job ', jobLink(jobId || l.job_id)));
  if (!l.imported && l.init_weights) parts.push('from weights ' + l.init_weights);
  if (l.dataset) parts.push('on ' + l.dataset);
  const span = el('span');
  parts.forEach((p, i) => span.append(i ? '; ' : '', p));
  return parts.length ? span : '-';
}

function mountServing() {
  state.serving = [];
  skeleton('Serving', el('div', {id: 'summary'}),
           el('div', {class: 'charts'},
              chartBox('chart-rps', 'Requests answered per second', 'each node and in total, from the nodes\' heartbeats'),
              chartBox('chart-latency', 'Latency (ms)', 'p50 and p99 of each node\'s last window'),
              chartBox('chart-batches', 'Batch sizes run', 'batches since the nodes started, by size'),
              el('div', {id: 'autoscale-box', hidden: true}, chartBox('chart-autoscale', 'Nodes: desired and serving', 'autoscaled models'))),
           section('Inference nodes', 'nodes'), section('Answers by code', 'codes'));
  return {paths: ['/api/serving'], update(s) {
    const nodes = s.nodes || [];
    const t = num(s.fetched_unix_ms) || Date.now();
    state.serving.push({t, nodes: Object.fromEntries(nodes.map((n) => [n.name, n])), autoscaling: s.autoscaling || []});
    if (state.serving.length > HISTORY) state.serving.shift();
    const hist = state.serving;
    const labels = hist.map((h) => new Date(h.t).toLocaleTimeString());
    const names = [...new Set(hist.flatMap((h) => Object.keys(h.nodes)))].sort();
    const loadOf = (h, name, key) => (h.nodes[name] && h.nodes[name].load ? num(h.nodes[name].load[key]) : null);
    const rps = names.map((name) => ({label: name, data: hist.map((h) => loadOf(h, name, 'completions_per_s'))}));
    rps.push({label: 'total', data: hist.map((h) => names.reduce((sum, name) => sum + (loadOf(h, name, 'completions_per_s') || 0), 0)),
              borderDash: [6, 3]});
    chart('chart-rps', 'line', labels, rps, {scales: {y: {beginAtZero: true}}});
    chart('chart-latency', 'line', labels, names.flatMap((name) => [
      {label: name + ' p50', data: hist.map((h) => loadOf(h, name, 'p50_ms'))},
      {label: name + ' p99', data: hist.map((h) => loadOf(h, name, 'p99_ms')), borderDash: [6, 3]}]),
      {scales: {y: {beginAtZero: true}}});
    const withStats = nodes.filter((n) => n.stats);
    const bounds = withStats.length ? withStats[0].stats.batch_size_bounds.map(num) : [];
    const batchLabels = bounds.map((b, i) => (i === 0 ? '1' : (bounds[i - 1] + 1 === b ? String(b) : (bounds[i - 1] + 1) + '-' + b)))
      .concat(bounds.length ? ['> ' + bounds[bounds.length - 1]] : []);
    chart('chart-batches', 'bar', batchLabels, withStats.map((n) => ({label: n.name, data: n.stats.batch_size_counts.map(num)})),
          {scales: {x: {stacked: true}, y: {stacked: true, beginAtZero: true, title: {display: true, text: 'batches'}}}});
    const models = [...new Set(hist.flatMap((h) => h.autoscaling.map((a) => a.model)))].sort();
    document.getElementById('autoscale-box').hidden = models.length === 0;
    chart('chart-autoscale', 'line', labels, models.flatMap((model) => {
      const of = (h, key) => { const a = h.autoscaling.find((x) => x.model === model); return a ? num(a[key]) : null; };
      return [{label: model + ' desired', data: hist.map((h) => of(h, 'desired_nodes')), borderDash: [6, 3]},
              {label: model + ' serving', data: hist.map((h) => of(h, 'serving_nodes'))}];
    }), {scales: {y: {beginAtZero: true, ticks: {precision: 0}}}});
    const total = (key) => nodes.reduce((sum, n) => sum + num(n.load && n.load[key]), 0);
    const answered = withStats.reduce((sum, n) => sum + Object.values(n.stats.requests_by_code).map(num).reduce((a, b) => a + b, 0), 0);
    const errors = withStats.reduce((sum, n) => sum + Object.entries(n.stats.requests_by_code)
      .filter(([code]) => code !== 'OK').map(([, v]) => num(v)).reduce((a, b) => a + b, 0), 0);
    fill('summary', facts([
      ['Serving nodes', nodes.filter((n) => n.serving).length + ' of ' + nodes.length],
      ['Requests/s (total)', fixed(total('completions_per_s'), 1)], ['Arrivals/s', fixed(total('arrivals_per_s'), 1)],
      ['Worst p99', fixed(Math.max(0, ...nodes.map((n) => num(n.load && n.load.p99_ms))), 2) + ' ms'],
      ['Answered since start', String(answered)], ['Errors since start', String(errors)],
    ]));
    fill('nodes', nodes.length ? table(['Node', 'State', 'Model', 'Req/s', 'p50 ms', 'p99 ms', 'In flight', 'Queued', 'Busy', 'Counters'],
      nodes.map((n) => {
        const l = n.load || {};
        return [n.name, stateCell(n.serving ? 'SERVING' : n.state), n.model || '-', fixed(l.completions_per_s, 1),
                fixed(l.p50_ms, 2), fixed(l.p99_ms, 2), num(l.in_flight), num(l.queued), pct(l.busy_fraction),
                n.stats_error ? n.stats_error.code + ': ' + n.stats_error.message : 'ok'];
      }), [3, 4, 5, 6, 7, 8]) : el('div', {class: 'empty', text: 'No inference nodes: kennelctl deploy or kennelctl autoscale starts serving.'}));
    const prev = hist.length > 1 ? hist[hist.length - 2] : null;
    const codes = [...new Set(withStats.flatMap((n) => Object.keys(n.stats.requests_by_code)))].sort();
    fill('codes', codes.length ? table(['Node', 'Code', 'Answers since start', 'Per second now'],
      withStats.flatMap((n) => codes.filter((c) => c in n.stats.requests_by_code).map((code) => {
        const now = num(n.stats.requests_by_code[code]);
        const before = prev && prev.nodes[n.name] && prev.nodes[n.name].stats ? num(prev.nodes[n.name].stats.requests_by_code[code]) : null;
        const rate = before === null ? '-' : fixed((now - before) / Math.max(0.001, (t - prev.t) / 1000), 1);
        return {rowClass: code === 'OK' ? null : 'error', cells: [n.name, code, now, rate]};
      })), [2, 3]) : el('div', {class: 'empty', text: 'No node has answered anything yet.'}));
  }};
}

// ---------------------------------------------------------------- routing

function parseRoute() {
  const parts = (location.hash || '#/cluster').slice(2).split('/');
  const name = ['cluster', 'jobs', 'tuning', 'models', 'serving'].includes(parts[0]) ? parts[0] : 'cluster';
  return {name, id: parts[1] ? decodeURIComponent(parts[1]) : ''};
}

function route() {
  state.route = parseRoute();
  destroyCharts();
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.view === state.route.name);
  const {name, id} = state.route;
  state.mounted = name === 'jobs' ? (id ? mountJob(id) : mountJobs())
    : name === 'tuning' ? (id ? mountTuning(id) : mountTunings())
    : name === 'models' ? mountModels()
    : name === 'serving' ? mountServing()
    : mountCluster();
  poll();
}

window.addEventListener('hashchange', route);
document.addEventListener('visibilitychange', () => { if (!document.hidden) poll(); });
state.timer = setInterval(poll, POLL_MS);
route();
