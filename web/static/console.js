// The console: the appointment book, live over the hub's own socket, and the clinic's panels.
// No build step, no CDN: ES modules the browser loads as they are.
import { $, api, cfg, el, showError } from './util.js'
import { HubSocket } from './socket.js'
import { Book } from './book.js'
import { Desk, openPatient, patientPicker } from './desk.js'
import { renderWaitlist, setUpWebhooks } from './panels.js'

const WEEKDAYS = ['monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday']
const notice = (err) => showError($('#notice'), err)

let pending = null
function refresh () {
  clearTimeout(pending)
  pending = setTimeout(() => { book.load().catch(notice); renderEvents(); renderWaitlist() }, 30)
}

const book = new Book($('#book'), {
  slot: (column, iso) => desk.open(column, iso),
  appointment: (a, column) => desk.openAppointment(a, column),
  move: (a, column, iso) => desk.move(a, column, iso),
  changed: refresh,
})
const desk = new Desk(book, notice)

addEventListener('keydown', (e) => { if (e.key === 'Escape' && book.moving) desk.stopMove() })
patientPicker($('#patient-search'), $('#patient-results'), (p) => openPatient(p.id))
$('#panel-close').onclick = () => { $('#patient-panel').hidden = true; $('#patient-search').focus() }

// ---- the availability editor -------------------------------------------------------
const editing = () => $('#hours-dentist').value

async function loadHours () {
  const hours = await api(`/api/availability/${editing()}`)
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
    const saved = await api(`/api/availability/${editing()}${form.elements.force.checked ? '?force=true' : ''}`,
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
    list.append(el('li', {}, `${c.day} ${c.reason} `, el('button.small', {
      type: 'button', onclick: async () => { await api(`/api/clinic/closures/${c.day}`, { method: 'DELETE' }); loadClosures(); refresh() },
    }, 'Reopen')))
  }
}

// ---- clients, events, health ------------------------------------------------------------
const present = new Map()
function renderPresence () {
  const list = $('#presence')
  // key, user_id and role are the hub's (from the token); `client` is whatever the client said
  list.replaceChildren(...[...present].map(([key, metas]) =>
    el('li', {}, `${metas[0].role || 'anon'} · ${metas[0].client || 'client'} · ${key.slice(0, 12)}`)))
  if (!present.size) list.append(el('li', {}, 'none'))
}

async function renderEvents () {
  const rows = await api('/api/admin/events')
  $('#events tbody').replaceChildren(...rows.slice(0, 20).map((e) => el('tr', {},
    ...[e.version, `${e.table_name} ${e.event_type}`, e.broadcast_latency_ms == null ? '–' : `${e.broadcast_latency_ms} ms`,
      new Date(e.created_at).toLocaleTimeString()].map((text) => el('td', {}, String(text))))))
}

// A few of this process's Prometheus figures (hidden when METRICS_TOKEN protects them).
const FIGURES = [['sockets', /^hub_realtime_connections (\S+)/m], ['messages sent', /^hub_realtime_messages_sent_total (\S+)/m],
  ['bookings made', /^hub_booking_appointments_total\{change="created"\} (\S+)/m], ['actors', /^hub_actor_active (\S+)/m]]

async function renderHealth () {
  const health = await (await fetch('/health')).json()
  const dl = $('#health')
  dl.replaceChildren()
  const add = (name, text, ok) => dl.append(el('dt', {}, name), el(`dd${ok === undefined ? '' : ok ? '.ok' : '.error'}`, {}, text))
  for (const [name, check] of Object.entries(health.checks)) add(name, `${check.status} · ${check.latency_ms} ms`, check.status === 'ok')
  const metrics = await fetch('/metrics')
  if (!metrics.ok) return
  const text = await metrics.text()
  for (const [name, pattern] of FIGURES) {
    const found = text.match(pattern)
    if (found) add(name, Number(found[1]).toLocaleString())
  }
}

// ---- live: every change on the shown dentists' channels reloads the book --------------------
if (cfg.dentist) {
  $('#hours').addEventListener('submit', saveHours)
  $('#hours-dentist').addEventListener('change', loadHours)
  const closure = $('#closure')
  if (closure) {
    closure.addEventListener('submit', async (event) => {
      event.preventDefault()
      await api(`/api/clinic/closures/${closure.elements.day.value}`, { method: 'PUT', body: JSON.stringify({ reason: closure.elements.reason.value }) })
      closure.reset(); loadClosures(); refresh()
    })
  }
  const socket = new HubSocket((status) => {
    $('#live').textContent = status
    $('#offline').hidden = status === 'live'
    if (status === 'live') refresh() // catch up on whatever changed while the socket was down
  })
  socket.connect()
  book.load().then((data) => {
    for (const d of data.dentists) {
      const changed = (msg) => { if (msg.event === 'broadcast') refresh() }
      socket.join(`availability:dentist_id=${d.dentist_id}`, { config: {} }, changed)
      socket.join(`appointments:dentist_id=${d.dentist_id}`, { config: {} }, changed)
    }
  }).catch(notice)
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
  loadHours(); loadClosures(); renderEvents(); renderHealth(); setUpWebhooks()
  setInterval(renderHealth, 10000)
}
