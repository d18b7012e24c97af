// The console's live part: REST for data, our realtime socket for changes.
// No build step, no CDN: one ES module the browser loads as it is.
const cfg = JSON.parse(document.getElementById('config').textContent)
const $ = (sel) => document.querySelector(sel)
const WEEKDAYS = ['monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday']

async function api (path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { Authorization: `Bearer ${cfg.token}`, 'Content-Type': 'application/json', ...(options.headers || {}) },
  })
  const body = response.status === 204 ? null : await response.json()
  if (!response.ok) throw Object.assign(new Error(body.error.message), { body: body.error, status: response.status })
  return body
}

function showError (el, err) {
  el.hidden = !err
  if (!err) return
  const details = err.body && err.body.details
  const listed = details && details.appointments
    ? ': ' + details.appointments.map((a) => new Date(a.appointment_date).toLocaleString()).join(', ')
    : details && details.field ? ` (${details.field})` : ''
  el.textContent = `${err.message}${listed}`
}

// ---- the socket: Phoenix frames, vsn 1.0.0 (JSON objects) -------------------
class HubSocket {
  constructor (onStatus) { this.ref = 0; this.topics = new Map(); this.onStatus = onStatus; this.delay = 250 }
  connect () {
    const proto = location.protocol === 'https:' ? 'wss' : 'ws'
    this.ws = new WebSocket(`${proto}://${location.host}/realtime/v1/websocket?apikey=${encodeURIComponent(cfg.token)}&vsn=1.0.0`)
    this.ws.onopen = () => {
      this.delay = 250
      this.onStatus('live')
      for (const [topic, entry] of this.topics) this.send(topic, 'phx_join', entry.payload, entry)
      this.beat = setInterval(() => this.send('phoenix', 'heartbeat', {}), 25000)
    }
    this.ws.onmessage = (e) => {
      const msg = JSON.parse(e.data)
      const entry = this.topics.get(msg.topic)
      if (entry) entry.handler(msg)
    }
    this.ws.onclose = (e) => {
      clearInterval(this.beat)
      this.onStatus(`reconnecting (${e.code})`)
      setTimeout(() => this.connect(), this.delay)
      this.delay = Math.min(this.delay * 2, 5000)
    }
  }
  send (topic, event, payload, entry) {
    const ref = String(++this.ref)
    if (entry) entry.joinRef = ref
    if (this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ topic, event, payload, ref, join_ref: entry ? ref : (this.topics.get(topic) || {}).joinRef || null }))
    }
  }
  join (topic, payload, handler) {
    const entry = { payload, handler }
    this.topics.set(topic, entry)
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.send(topic, 'phx_join', payload, entry)
  }
}

// ---- the board ------------------------------------------------------------------
function days () {
  const first = new Date(`${cfg.day}T00:00:00Z`)
  const count = cfg.view === 'week' ? 7 : 1
  return Array.from({ length: count }, (_, i) => new Date(first.getTime() + i * 86400000).toISOString().slice(0, 10))
}

// What each status allows (the hub's transition table decides; this only hides dead buttons).
const ACTIONS = {
  pending: [['Confirm', { status: 'confirmed' }], ['Cancel', null], ['Reschedule', 'move']],
  confirmed: [['Complete', { status: 'completed' }], ['No-show', { status: 'no_show' }], ['Cancel', null], ['Reschedule', 'move']],
}

const fmt = (iso) => new Date(iso).toLocaleString([], { weekday: 'short', hour: '2-digit', minute: '2-digit' })

async function renderBoard () {
  const span = days()
  const [slots, page] = await Promise.all([
    api(`/api/availability/${cfg.dentist}/slots?from=${span[0]}&to=${span[span.length - 1]}`),
    api(`/api/appointments?dentist_id=${cfg.dentist}&date_from=${span[0]}&date_to=${span[span.length - 1]}&limit=100`),
  ])
  const board = $('#board')
  board.replaceChildren()
  if (!slots.length) board.textContent = 'Closed.'
  for (const slot of slots) {
    const cell = document.createElement('span')
    cell.className = `slot ${slot.status}`
    cell.dataset.start = slot.start
    cell.dataset.status = slot.status
    cell.textContent = fmt(slot.start)
    cell.title = slot.status
    board.append(cell)
  }
  const body = $('#appointments tbody')
  body.replaceChildren()
  for (const a of page.data) {
    const row = document.createElement('tr')
    row.dataset.id = a.id
    row.dataset.status = a.status
    for (const text of [fmt(a.appointment_date), a.appointment_type, a.patient_id.slice(0, 8), a.status]) {
      const td = document.createElement('td'); td.textContent = text; row.append(td)
    }
    const actions = document.createElement('td')
    for (const [label, change] of ACTIONS[a.status] || []) {
      const button = document.createElement('button')
      button.type = 'button'
      button.textContent = label
      button.className = 'small'
      button.onclick = () => act(a, change)
      actions.append(button)
    }
    row.append(actions)
    body.append(row)
  }
}

async function act (appointment, change) {
  try {
    if (change === null) {
      await api(`/api/appointments/${appointment.id}`, { method: 'DELETE', body: JSON.stringify({ reason: 'cancelled from the console' }) })
    } else if (change === 'move') {
      const when = prompt('New start (e.g. 2026-12-01T10:30:00Z)', appointment.appointment_date)
      if (!when) return
      await api(`/api/appointments/${appointment.id}`, { method: 'PUT', body: JSON.stringify({ appointment_date: when }) })
    } else {
      await api(`/api/appointments/${appointment.id}`, { method: 'PUT', body: JSON.stringify(change) })
    }
    showError($('#action-error'), null)
  } catch (err) {
    showError($('#action-error'), err)
  }
  refresh()
}

// ---- the availability editor -------------------------------------------------------
async function loadHours () {
  const hours = await api(`/api/availability/${cfg.dentist}`)
  const form = $('#hours')
  for (const day of WEEKDAYS) form.elements[day].value = hours[day] || ''
  form.elements.timezone.value = hours.timezone
  form.elements.slot_minutes.value = hours.slot_minutes
  form.elements.overrides.value = Object.entries(hours.overrides).map(([d, h]) => `${d} ${h || 'closed'}`).join('\n')
}

async function saveHours (event) {
  event.preventDefault()
  const form = event.target
  const body = { timezone: form.elements.timezone.value, slot_minutes: Number(form.elements.slot_minutes.value), overrides: {} }
  for (const day of WEEKDAYS) if (form.elements[day].value.trim()) body[day] = form.elements[day].value.trim()
  for (const line of form.elements.overrides.value.split('\n').map((l) => l.trim()).filter(Boolean)) {
    const [day, hours] = line.split(/\s+/, 2)
    body.overrides[day] = !hours || hours === 'closed' ? '' : hours
  }
  try {
    const saved = await api(`/api/availability/${cfg.dentist}${form.elements.force.checked ? '?force=true' : ''}`,
      { method: 'PUT', body: JSON.stringify(body) })
    showError($('#hours-error'), null)
    const ok = $('#hours-ok')
    ok.hidden = false
    ok.textContent = saved.conflicts.length ? `Saved; ${saved.conflicts.length} appointments now fall outside the hours.` : 'Saved.'
  } catch (err) {
    $('#hours-ok').hidden = true
    showError($('#hours-error'), err)
  }
}

async function loadClosures () {
  const list = $('#closures')
  if (!list) return
  list.replaceChildren()
  for (const c of await api('/api/clinic/closures')) {
    const li = document.createElement('li')
    li.textContent = `${c.day} ${c.reason} `
    const remove = document.createElement('button')
    remove.type = 'button'; remove.className = 'small'; remove.textContent = 'Reopen'
    remove.onclick = async () => { await api(`/api/clinic/closures/${c.day}`, { method: 'DELETE' }); loadClosures(); refresh() }
    li.append(remove)
    list.append(li)
  }
}

// ---- clients, events, health ------------------------------------------------------------
const present = new Map()
function renderPresence () {
  const list = $('#presence')
  list.replaceChildren()
  for (const [key, metas] of present) {
    const li = document.createElement('li')
    // key, user_id and role are the hub's (from the token); `client` is whatever the client said
    li.textContent = `${metas[0].role || 'anon'} · ${metas[0].client || 'client'} · ${key.slice(0, 12)}`
    list.append(li)
  }
  if (!present.size) list.innerHTML = '<li>none</li>'
}

async function renderEvents () {
  const body = $('#events tbody')
  const rows = await api('/api/admin/events')
  body.replaceChildren()
  for (const e of rows.slice(0, 20)) {
    const tr = document.createElement('tr')
    for (const text of [e.version, `${e.table_name} ${e.event_type}`, e.broadcast_latency_ms == null ? '–' : `${e.broadcast_latency_ms} ms`, new Date(e.created_at).toLocaleTimeString()]) {
      const td = document.createElement('td'); td.textContent = text; tr.append(td)
    }
    body.append(tr)
  }
}

// A few of this process's Prometheus figures (hidden when METRICS_TOKEN protects them).
const FIGURES = [['sockets', /^hub_realtime_connections (\S+)/m], ['messages sent', /^hub_realtime_messages_sent_total (\S+)/m],
  ['bookings made', /^hub_booking_appointments_total\{change="created"\} (\S+)/m], ['actors', /^hub_actor_active (\S+)/m]]

async function renderHealth () {
  const health = await (await fetch('/health')).json()
  const dl = $('#health')
  dl.replaceChildren()
  const add = (name, text, ok) => {
    const dt = document.createElement('dt'); dt.textContent = name
    const dd = document.createElement('dd'); dd.textContent = text
    if (ok !== undefined) dd.className = ok ? 'ok' : 'error'
    dl.append(dt, dd)
  }
  for (const [name, check] of Object.entries(health.checks)) add(name, `${check.status} · ${check.latency_ms} ms`, check.status === 'ok')
  const metrics = await fetch('/metrics')
  if (!metrics.ok) return
  const text = await metrics.text()
  for (const [name, pattern] of FIGURES) {
    const found = text.match(pattern)
    if (found) add(name, Number(found[1]).toLocaleString())
  }
}

let pending = null
function refresh () {
  clearTimeout(pending)
  pending = setTimeout(() => { renderBoard(); renderEvents() }, 30)
}

if (cfg.dentist) {
  $('#hours').addEventListener('submit', saveHours)
  const closure = $('#closure')
  if (closure) {
    closure.addEventListener('submit', async (event) => {
      event.preventDefault()
      await api(`/api/clinic/closures/${closure.elements.day.value}`, { method: 'PUT', body: JSON.stringify({ reason: closure.elements.reason.value }) })
      closure.reset(); loadClosures(); refresh()
    })
  }
  const socket = new HubSocket((status) => { $('#live').textContent = status; if (status === 'live') refresh() })
  socket.connect()
  socket.join(`availability:dentist_id=${cfg.dentist}`, { config: {} }, (msg) => {
    if (msg.event === 'broadcast') {
      if (msg.payload.event === 'schedule_updated') loadHours()
      refresh()
    }
  })
  socket.join(`appointments:dentist_id=${cfg.dentist}`, { config: {} }, (msg) => { if (msg.event === 'broadcast') refresh() })
  socket.join('presence:clinic', { config: {} }, (msg) => {
    if (msg.event === 'phx_reply' && msg.payload.status === 'ok' && msg.ref === socket.topics.get('presence:clinic').joinRef) {
      socket.send('presence:clinic', 'presence', { type: 'presence', event: 'track', payload: { client: 'admin-console' } })
    } else if (msg.event === 'presence_state') {
      present.clear()
      for (const [key, value] of Object.entries(msg.payload)) present.set(key, value.metas)
      renderPresence()
    } else if (msg.event === 'presence_diff') {
      for (const key of Object.keys(msg.payload.leaves)) present.delete(key)
      for (const [key, value] of Object.entries(msg.payload.joins)) present.set(key, value.metas)
      renderPresence()
    }
  })
  loadHours(); loadClosures(); renderBoard(); renderEvents(); renderHealth()
  setInterval(renderHealth, 10000)
}
