// Tuning with evidence, shared by the worker's and the coordinator's dashboards (put
// into each page's one inline script when it is served): label recorded streams as a
// true crisis or benign (`POST /v1/signals/labels`), dry-run a proposed policy or rule
// patch over the recorded signals (`POST /v1/policy/dry-run`) and apply it on that
// dry-run (`PUT /v1/policy` or `PATCH /v1/policy/rules/{name}` with `?dry_run=ID`).
// Everything is built with DOM calls (no HTML strings): names and notes are text.
var FirebreakTune = (function () {
  'use strict';

  function el(tag, attrs, text) {
    var n = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { n.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) n.textContent = String(text);
    return n;
  }
  function clear(n) { while (n.firstChild) n.removeChild(n.firstChild); }
  function pad(n) { return n < 10 ? '0' + n : String(n); }
  // Local time, as the inputs take it.
  function fmt(ms) {
    var d = new Date(ms);
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' +
      pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
  }
  // "YYYY-MM-DD HH:MM:SS" (local) or any ISO time: Unix ms, or null.
  function parseTime(s) {
    var t = String(s || '').trim();
    if (!t) return null;
    var ms = Date.parse(/^\d{4}-\d{2}-\d{2} /.test(t) ? t.replace(' ', 'T') : t);
    return isNaN(ms) ? null : ms;
  }
  // The rule names of a policy's TOML (`name = "..."` after each `[[rule]]`).
  function ruleNames(toml) {
    var out = [];
    String(toml || '').split('[[rule]]').slice(1).forEach(function (block) {
      var m = /^\s*name\s*=\s*"([^"]*)"/m.exec(block);
      if (m) out.push(m[1]);
    });
    return out;
  }

  function mount(root, opts) {
    function call(method, path, body, type) {
      var headers = { 'Accept': 'application/json' };
      var token = opts.token();
      if (token) headers['Authorization'] = 'Bearer ' + token;
      var init = { method: method, headers: headers, cache: 'no-store', credentials: 'same-origin' };
      if (body !== undefined) {
        headers['Content-Type'] = type || 'application/json';
        init.body = type ? body : JSON.stringify(body);
      }
      return fetch(path, init).then(function (res) {
        return res.text().then(function (text) {
          var data = null;
          try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
          var message = '';
          if (!res.ok) {
            message = data && typeof data.error === 'string' ? data.error : (res.statusText || String(res.status));
            if (data && Array.isArray(data.errors)) {
              message += ': ' + data.errors.map(function (i) { return i.path + ' ' + i.message; }).join('; ');
            }
          }
          return { ok: res.ok, status: res.status, data: data, message: message };
        });
      }, function (err) {
        return { ok: false, status: 0, data: null, message: String(err && err.message ? err.message : err) };
      });
    }
    function failure(r, what) {
      if (r.status === 403) return what + ': forbidden (403), this token lacks the scope' + (r.message ? ' (' + r.message + ')' : '') + '.';
      return what + ' failed (' + r.status + ')' + (r.message ? ': ' + r.message : '') + '.';
    }

    clear(root);
    root.appendChild(el('h2', { id: 'tune-h' }, 'Tune the policy'));
    root.appendChild(el('p', { class: 'tune-help' },
      'Try a change on the recorded signals before it ships: what it would add or remove, per stream.'));

    // ---------- labels ----------
    var labelsList = null;
    function loadLabels() {
      if (!labelsList) return Promise.resolve();
      return call('GET', 'v1/signals/labels').then(function (r) {
        clear(labelsList);
        if (!r.ok) { labelsList.appendChild(el('li', {}, failure(r, 'Loading labels'))); return; }
        var list = (r.data && r.data.labels) || [];
        list.slice(-20).reverse().forEach(function (l) {
          var li = el('li', { 'data-stream': l.stream, 'data-verdict': l.verdict });
          li.appendChild(el('strong', {}, l.verdict));
          li.appendChild(document.createTextNode(' ' + l.stream + ' ' + fmt(l.start_ms) + ' to ' + fmt(l.end_ms) +
            (l.note ? ': ' + l.note : '') + ' (by ' + l.by + ')'));
          labelsList.appendChild(li);
        });
        if (!list.length) labelsList.appendChild(el('li', { class: 'tune-empty' }, 'No labels yet.'));
      });
    }
    var labelForm = null;
    if (opts.labels) {
      root.appendChild(el('h3', {}, 'Label a recorded stream'));
      var lf = el('form', { id: 'label-form', autocomplete: 'off' });
      var stream = el('input', { id: 'label-stream', placeholder: 'stream id', required: '', list: 'label-streams' });
      var known = el('datalist', { id: 'label-streams' });
      var verdict = el('select', { id: 'label-verdict' });
      verdict.appendChild(el('option', { value: 'crisis' }, 'true crisis'));
      verdict.appendChild(el('option', { value: 'benign' }, 'benign'));
      var now = Date.now();
      var from = el('input', { id: 'label-from', value: fmt(now - 3600000), title: 'from (local time)' });
      var to = el('input', { id: 'label-to', value: fmt(now + 60000), title: 'to (local time)' });
      var note = el('input', { id: 'label-note', placeholder: 'note', maxlength: '2000' });
      var add = el('button', { id: 'label-add', type: 'submit' }, 'Add label');
      var said = el('p', { id: 'label-status', class: 'tune-status', role: 'status' });
      [['stream', stream], ['verdict', verdict], ['from', from], ['to', to], ['note', note]].forEach(function (p) {
        var lab = el('label', {}, p[0] + ' ');
        lab.appendChild(p[1]);
        lf.appendChild(lab);
      });
      lf.appendChild(known);
      lf.appendChild(add);
      root.appendChild(lf);
      root.appendChild(said);
      labelsList = el('ul', { id: 'labels-list' });
      root.appendChild(labelsList);
      stream.addEventListener('focus', function () {
        clear(known);
        (opts.streams ? opts.streams() : []).forEach(function (id) { known.appendChild(el('option', { value: id })); });
      });
      lf.addEventListener('submit', function (ev) {
        ev.preventDefault();
        var a = parseTime(from.value), b = parseTime(to.value);
        if (a === null || b === null || b <= a) {
          said.textContent = 'From and to must be times (YYYY-MM-DD HH:MM:SS), from before to.';
          return;
        }
        add.disabled = true;
        var body = { stream: stream.value.trim(), verdict: verdict.value, start_ms: a, end_ms: b };
        if (note.value.trim()) body.note = note.value.trim();
        call('POST', 'v1/signals/labels', body).then(function (r) {
          add.disabled = false;
          said.textContent = r.ok ? 'Labelled ' + body.stream + ' ' + body.verdict + '.' : failure(r, 'Labelling');
          if (r.ok) loadLabels();
        });
      });
      labelForm = { stream: stream, from: from, to: to };
    }

    // ---------- dry-run ----------
    root.appendChild(el('h3', {}, 'Dry-run a change'));
    var df = el('form', { id: 'dryrun-form', autocomplete: 'off' });
    var mode = el('select', { id: 'dryrun-mode' });
    mode.appendChild(el('option', { value: 'rule' }, 'patch a rule'));
    mode.appendChild(el('option', { value: 'toml' }, 'whole policy (TOML)'));
    var rule = el('select', { id: 'dryrun-rule' });
    var patch = el('input', { id: 'dryrun-patch', placeholder: '{"enter": 0.8, "k": 3}', spellcheck: 'false' });
    var toml = el('textarea', { id: 'dryrun-toml', rows: '8', spellcheck: 'false', hidden: '' });
    var hours = el('input', { id: 'dryrun-hours', type: 'number', min: '0.1', max: '168', step: 'any', value: '24' });
    var run = el('button', { id: 'dryrun-run', type: 'submit' }, 'Dry-run');
    var ruleRow = el('span', { id: 'dryrun-rule-row' });
    var l1 = el('label', {}, 'rule '); l1.appendChild(rule); ruleRow.appendChild(l1);
    var l2 = el('label', {}, 'patch '); l2.appendChild(patch); ruleRow.appendChild(l2);
    var l0 = el('label', {}, 'change '); l0.appendChild(mode); df.appendChild(l0);
    df.appendChild(ruleRow);
    df.appendChild(toml);
    var l3 = el('label', {}, 'hours of signals '); l3.appendChild(hours); df.appendChild(l3);
    df.appendChild(run);
    root.appendChild(df);
    var result = el('div', { id: 'dryrun-result', 'aria-live': 'polite' });
    root.appendChild(result);

    var activeToml = '';
    function loadPolicy() {
      return call('GET', 'v1/policy').then(function (r) {
        if (!r.ok || !r.data) return;
        activeToml = String(r.data.toml || '');
        var keep = rule.value;
        clear(rule);
        ruleNames(activeToml).forEach(function (n) { rule.appendChild(el('option', { value: n }, n)); });
        if (keep) rule.value = keep;
        if (!toml.value) toml.value = activeToml;
      });
    }
    mode.addEventListener('change', function () {
      var whole = mode.value === 'toml';
      toml.hidden = !whole;
      ruleRow.hidden = whole;
      if (whole && !toml.value) toml.value = activeToml;
    });

    function renderDryRun(d, applyWith) {
      clear(result);
      result.setAttribute('data-id', d.id);
      var sum = el('p', { id: 'dryrun-summary' });
      var added = 0, removed = 0;
      (d.streams || []).forEach(function (s) { added += s.added.length; removed += s.removed.length; });
      sum.textContent = 'Active policy: ' + d.active_escalations + ' escalations; proposed: ' +
        d.proposed_escalations + ' (' + added + ' added, ' + removed + ' removed) over ' + d.frames +
        ' frames from ' + fmt(d.from_ms) + ' to ' + fmt(d.to_ms) + '.';
      sum.setAttribute('data-added', String(added));
      sum.setAttribute('data-removed', String(removed));
      result.appendChild(sum);
      if (d.log_errors) result.appendChild(el('p', { class: 'tune-status' }, d.log_errors + ' damaged log blocks skipped.'));
      if ((d.streams || []).length) {
        var t = el('table', { id: 'dryrun-streams' });
        var head = el('tr');
        ['Stream', 'Escalations', 'Added', 'Removed'].forEach(function (h) { head.appendChild(el('th', {}, h)); });
        var thead = el('thead'); thead.appendChild(head); t.appendChild(thead);
        var tb = el('tbody');
        d.streams.forEach(function (s) {
          var tr = el('tr', { 'data-stream': s.stream, 'data-added': String(s.added.length), 'data-removed': String(s.removed.length) });
          tr.appendChild(el('td', { title: s.tenant }, s.stream));
          tr.appendChild(el('td', {}, s.active + ' \u2192 ' + s.proposed));
          [['added', s.added], ['removed', s.removed]].forEach(function (p) {
            var td = el('td', { class: p[0] });
            p[1].forEach(function (e) {
              td.appendChild(el('span', { class: 'tier-chip', 'data-tier': e.tier }, e.tier + ' ' + fmt(e.wall_ms).slice(11)));
            });
            tr.appendChild(td);
          });
          tb.appendChild(tr);
        });
        t.appendChild(tb);
        result.appendChild(t);
      } else {
        result.appendChild(el('p', { class: 'tune-empty' }, 'No stream would escalate differently.'));
      }
      var apply = el('button', { id: 'dryrun-apply', type: 'button' }, 'Apply this change (admin)');
      var applied = el('p', { id: 'dryrun-applied', class: 'tune-status', role: 'status' });
      apply.addEventListener('click', function () {
        apply.disabled = true;
        var q = '?dry_run=' + encodeURIComponent(d.id);
        var p = applyWith.toml !== undefined
          ? call('PUT', 'v1/policy' + q, applyWith.toml, 'application/toml')
          : call('PATCH', 'v1/policy/rules/' + encodeURIComponent(applyWith.rule) + q, applyWith.patch);
        p.then(function (r) {
          apply.disabled = r.ok;
          applied.setAttribute('data-ok', r.ok ? 'true' : 'false');
          applied.textContent = r.ok ? 'Applied: version ' + r.data.version + ', recorded with dry-run ' + d.id + '.'
            : failure(r, 'Applying');
          if (r.ok) loadPolicy();
        });
      });
      result.appendChild(apply);
      result.appendChild(applied);
    }

    df.addEventListener('submit', function (ev) {
      ev.preventDefault();
      var body = { hours: Number(hours.value) || 24 };
      var applyWith = {};
      if (mode.value === 'toml') {
        body.toml = toml.value;
        applyWith.toml = toml.value;
      } else {
        var p;
        try { p = JSON.parse(patch.value || '{}'); } catch (e) { p = null; }
        if (!p || typeof p !== 'object' || Array.isArray(p)) {
          clear(result);
          result.appendChild(el('p', { class: 'tune-status' }, 'The patch must be a JSON object, e.g. {"enter": 0.8}.'));
          return;
        }
        body.rule = rule.value;
        body.patch = p;
        applyWith.rule = rule.value;
        applyWith.patch = p;
      }
      run.disabled = true;
      clear(result);
      result.removeAttribute('data-id');
      result.appendChild(el('p', { class: 'tune-status' }, 'Replaying\u2026'));
      call('POST', 'v1/policy/dry-run', body).then(function (r) {
        run.disabled = false;
        if (r.ok && r.data) renderDryRun(r.data, applyWith);
        else { clear(result); result.appendChild(el('p', { class: 'tune-status' }, failure(r, 'The dry-run'))); }
      });
    });

    return {
      refresh: function () { return Promise.all([loadPolicy(), loadLabels()]); },
      // Prefills the label form (a stream and a time range, Unix ms).
      labelRange: function (id, fromMs, toMs) {
        if (!labelForm) return;
        labelForm.stream.value = id;
        labelForm.from.value = fmt(fromMs);
        labelForm.to.value = fmt(toMs);
        labelForm.stream.scrollIntoView({ block: 'nearest' });
      }
    };
  }

  return { mount: mount, parseTime: parseTime, ruleNames: ruleNames };
})();
