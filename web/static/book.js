// The appointment book: columns (dentists on a day, or one dentist's days) on a vertical time axis.
// Everything is placed by its distance in real time from the start of the clinic's local day, so a
// daylight-saving day is 23 or 25 hours tall and its axis labels repeat or skip an hour, as a clock does.
import { api, cfg, el, timeIn, dayIn, when } from './util.js'

const PX_PER_MIN = 1.2 // an hour is 72 px
const px = (ms) => `${(ms / 60000) * PX_PER_MIN}px`

// "5 h behind": how a dentist's clock differs from the clinic's at an instant.
function offsetFrom (clinicTz, tz, iso) {
  const wall = (zone) => Date.parse(new Date(iso).toLocaleString('en-US', { timeZone: zone }))
  const hours = (wall(tz) - wall(clinicTz)) / 3600000
  return hours === 0 ? 'same time' : `${Math.abs(hours)} h ${hours < 0 ? 'behind' : 'ahead'}`
}

export class Book {
  // hooks: {slot(column, iso), appointment(appt, column), move(appt, column, iso), changed()}
  constructor (root, hooks) {
    this.root = root
    this.hooks = hooks
    this.moving = null // the appointment being moved by pick-a-slot, if any
    setInterval(() => this.tick(), 1000)
  }

  async load () {
    const params = new URLSearchParams({ date: cfg.day, view: cfg.view })
    if (cfg.view === 'week') params.set('dentist_id', cfg.dentist)
    this.data = await api(`/api/admin/book?${params}`)
    cfg.timezone = this.data.timezone // the clinic's: every time the console shows is in it
    this.render()
    return this.data
  }

  // Day view: one column per dentist. Week view: one column per day of the one dentist.
  columns () {
    const { days, dentists } = this.data
    if (this.data.view === 'week') return days.map((day) => ({ day, dentist: dentists[0], label: dayIn(this.data.timezone).format(new Date(day.start)) }))
    return dentists.map((dentist) => ({ day: days[0], dentist, label: dentist.name }))
  }

  render () {
    const focused = document.activeElement && document.activeElement.dataset.key
    const tz = this.data.timezone
    const columns = this.columns()
    const tallest = Math.max(...columns.map((c) => Date.parse(c.day.end) - Date.parse(c.day.start)))
    const grid = el('div.grid-book', { style: { gridTemplateColumns: `4.5rem repeat(${columns.length}, minmax(9rem, 1fr))` } })
    grid.append(el('div.corner', {}, el('span.tz', { title: 'The clinic\'s time zone' }, tz)))
    for (const c of columns) grid.append(this.header(c))
    grid.append(this.axis(columns[0].day, tallest))
    for (const c of columns) grid.append(this.column(c, tallest))
    this.root.replaceChildren(grid)
    if (!this.scrolled) this.scrollToDay(columns)
    if (focused) {
      const again = this.root.querySelector(`[data-key="${CSS.escape(focused)}"]`)
      if (again) again.focus()
    }
    this.tick()
  }

  // Once: bring the working day into view (the earliest start of work, or now if that is later on today).
  scrollToDay (columns) {
    this.scrolled = true
    const start = Date.parse(columns[0].day.start)
    const starts = columns.flatMap((c) => c.dentist.working.map((w) => Date.parse(w.start) - Date.parse(c.day.start)))
    let offset = starts.length ? Math.min(...starts) : 8 * 3600000
    const now = Date.now() - start
    if (this.data.view === 'day' && now > offset && now < Date.parse(columns[0].day.end) - start) offset = Math.max(offset, now - 3600000)
    this.root.scrollTop = Math.max(0, (offset / 60000) * PX_PER_MIN - 30)
  }

  header (c) {
    const tz = this.data.timezone
    const notes = c.dentist.notes.filter((n) => n.date === c.day.date)
    return el('div.col-head', { role: 'heading', 'aria-level': '2', dataset: { dentist: c.dentist.dentist_id, date: c.day.date } },
      el('strong', {}, c.label),
      c.dentist.timezone !== tz ? el('span.badge', { title: 'This dentist works in another time zone' }, `${c.dentist.timezone} · ${offsetFrom(tz, c.dentist.timezone, c.day.start)}`) : null,
      ...notes.map((n) => el(`span.badge.${n.kind}`, {}, n.text)))
  }

  axis (day, tallest) {
    const tz = this.data.timezone
    const axis = el('div.axis', { style: { height: px(tallest) }, 'aria-hidden': 'true' })
    const start = Date.parse(day.start)
    const hours = Math.round((Date.parse(day.end) - start) / 3600000)
    for (let h = 0; h < hours; h++) {
      const at = new Date(start + h * 3600000)
      axis.append(el('div.hour', { style: { top: px(h * 3600000) }, dataset: { at: at.toISOString() } }, timeIn(tz).format(at)))
    }
    return axis
  }

  column (c, tallest) {
    const start = Date.parse(c.day.start)
    const end = Date.parse(c.day.end)
    const top = (iso) => px(Date.parse(iso) - start)
    const span = (a, b) => px(Math.min(Date.parse(b), end) - Math.max(Date.parse(a), start))
    const col = el('div.col', {
      style: { height: px(tallest) },
      dataset: { dentist: c.dentist.dentist_id, date: c.day.date, hours: String(Math.round((end - start) / 3600000)) },
    })
    for (let h = 1; (h * 3600000) < end - start; h++) col.append(el('div.line', { style: { top: px(h * 3600000) } }))
    for (const w of c.dentist.working) {
      if (Date.parse(w.end) <= start || Date.parse(w.start) >= end) continue
      col.append(el('div.work', { style: { top: px(Math.max(Date.parse(w.start), start) - start), height: span(w.start, w.end) } }))
    }
    const slotMs = c.dentist.slot_minutes * 60000
    for (const iso of c.dentist.free) {
      const t = Date.parse(iso)
      if (t < start || t >= end) continue
      const label = `${this.moving ? 'Move here' : 'Book'}: ${c.dentist.name}, ${when(iso, this.data.timezone)}`
      col.append(el('button.free', {
        type: 'button', 'aria-label': label, title: label,
        style: { top: px(t - start), height: px(slotMs) },
        dataset: { start: iso, key: `free:${c.dentist.dentist_id}:${iso}` },
        onclick: () => this.moving ? this.hooks.move(this.moving, c, iso) : this.hooks.slot(c, iso),
        ondragover: (e) => { if (this.dragged) { e.preventDefault(); e.currentTarget.classList.add('drop') } },
        ondragleave: (e) => e.currentTarget.classList.remove('drop'),
        ondrop: (e) => { e.preventDefault(); if (this.dragged) this.hooks.move(this.dragged, c, iso) },
      }, el('span', {}, timeIn(this.data.timezone).format(new Date(t)))))
    }
    for (const h of c.dentist.holds) {
      if (Date.parse(h.end) <= start || Date.parse(h.start) >= end) continue
      const what = h.waitlist_offer ? 'Waitlist offer' : 'Held'
      col.append(el(`div.hold${h.waitlist_offer ? '.offer' : ''}`, {
        style: { top: top(h.start), height: span(h.start, h.end) },
        dataset: { id: h.id, expires: h.expires_at },
        title: `${what} for ${h.patient_name || 'a patient'} until ${timeIn(this.data.timezone).format(new Date(h.expires_at))}`,
      }, el('span', {}, `${what} · ${h.patient_name || 'patient'}`), el('span.countdown', { 'aria-label': 'time left on the hold' })))
    }
    for (const a of c.dentist.appointments) {
      if (Date.parse(a.end) <= start || Date.parse(a.start) >= end) continue
      const buffered = new Date(Date.parse(a.end) + a.buffer_minutes * 60000).toISOString()
      const name = a.patient_name || 'Unnamed patient'
      const block = el(`button.appt.${a.status}`, {
        type: 'button', draggable: 'true',
        style: { top: top(a.start), height: span(a.start, a.end) },
        'aria-label': `${name}, ${a.appointment_type}, ${when(a.start, this.data.timezone)}, ${a.status.replace('_', '-')}`,
        dataset: { id: a.id, status: a.status, start: a.start, key: `appt:${a.id}` },
        onclick: () => this.hooks.appointment(a, c),
        ondragstart: (e) => { this.dragged = a; e.dataTransfer.setData('text/plain', a.id); e.dataTransfer.effectAllowed = 'move' },
        ondragend: () => { this.dragged = null },
      }, el('strong', {}, name), el('span', {}, ` ${a.appointment_type} · ${timeIn(this.data.timezone).format(new Date(a.start))}`))
      col.append(block)
      if (a.buffer_minutes) col.append(el('div.buffer', { style: { top: top(a.end), height: span(a.end, buffered) }, 'aria-hidden': 'true' }))
    }
    const now = Date.now()
    if (now >= start && now < end) col.append(el('div.now', { style: { top: px(now - start) }, 'aria-hidden': 'true' }))
    return col
  }

  // Once a second: hold countdowns; a hold that ran out leaves the book at once (the hub's event follows).
  tick () {
    let expired = false
    for (const hold of this.root.querySelectorAll('.hold')) {
      const left = Math.round((Date.parse(hold.dataset.expires) - Date.now()) / 1000)
      if (left <= 0) { hold.remove(); expired = true; continue }
      hold.querySelector('.countdown').textContent = ` ${Math.floor(left / 60)}:${String(left % 60).padStart(2, '0')}`
    }
    if (expired) this.hooks.changed()
    const line = this.root.querySelector('.now')
    if (line && this.data) {
      const col = line.parentElement
      const day = this.columns().find((c) => c.day.date === col.dataset.date) || this.columns()[0]
      line.style.top = px(Date.now() - Date.parse(day.day.start))
    }
  }
}
