// The front desk's actions: find a patient, book on their behalf (holding the slot while the form is
// open), open an appointment to confirm, cancel with a reason or move it, and the patient panel.
import { $, api, cfg, el, showError, when } from './util.js'

// A search box whose results are buttons: server-side search, debounced; `pick(patient)` on choice.
export function patientPicker (input, list, pick) {
  let timer = null
  let asked = 0
  const run = async () => {
    const q = input.value.trim()
    const mine = ++asked
    if (!q) { list.replaceChildren(); list.hidden = list.classList.contains('results') && !list.classList.contains('inline-results'); return }
    const found = await api(`/api/patients?${new URLSearchParams({ q, limit: '8' })}`)
    if (mine !== asked) return // a newer search is under way
    list.replaceChildren(...found.data.map((p) => el('li', {}, el('button.result', {
      type: 'button', dataset: { id: p.id },
      onclick: () => { pick(p); list.replaceChildren(); if (!list.classList.contains('inline-results')) list.hidden = true },
    }, el('strong', {}, p.full_name || '(no name)'), ` ${[p.phone, p.email].filter(Boolean).join(' · ')}`))))
    if (!found.data.length) list.append(el('li.muted', {}, 'No patient matches.'))
    if (found.pagination.hasMore) list.append(el('li.muted', {}, `${found.pagination.total - found.data.length} more: type more of the name.`))
    list.hidden = false
  }
  input.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(run, 200) })
  input.addEventListener('keydown', (e) => {
    if (e.key === 'ArrowDown') { const first = list.querySelector('button'); if (first) { e.preventDefault(); first.focus() } }
  })
  list.addEventListener('keydown', (e) => {
    const buttons = [...list.querySelectorAll('button')]
    const i = buttons.indexOf(document.activeElement)
    if (e.key === 'ArrowDown' && i < buttons.length - 1) { e.preventDefault(); buttons[i + 1].focus() }
    if (e.key === 'ArrowUp') { e.preventDefault(); (i > 0 ? buttons[i - 1] : input).focus() }
  })
}

export class Desk {
  constructor (book, notice) {
    this.book = book
    this.notice = notice // (err | null) shows the API's message in the page banner
    this.dialog = $('#book-dialog')
    this.form = $('#book-form')
    this.hold = null
    this.patient = null
    this.booked = false
    patientPicker($('#book-search'), $('#book-results'), (p) => this.choose(p))
    $('#create-patient').onclick = () => this.createPatient()
    $('#book-cancel').onclick = () => this.dialog.close()
    $('#book-type').onchange = () => { if (this.patient) this.choose(this.patient) }
    this.form.addEventListener('submit', (e) => { e.preventDefault(); this.submit() })
    this.dialog.addEventListener('close', () => this.abandon())
    // A tab closed with the form open still lets go of its hold (the hold's expiry is the backstop).
    addEventListener('pagehide', () => this.abandon(true))
    this.apptDialog = $('#appt-dialog')
    $('#appt-close').onclick = () => this.apptDialog.close()
    this.loadTypes()
  }

  async loadTypes () {
    const types = await api('/api/appointment-types')
    $('#book-type').replaceChildren(...types.map((t) => el('option', { value: t.name }, `${t.name.replace('_', ' ')} (${t.duration_minutes} min)`)))
  }

  // ---- booking on a patient's behalf -------------------------------------------------
  open (column, iso) {
    this.column = column
    this.start = iso
    this.hold = null
    this.patient = null
    this.booked = false
    this.form.reset()
    $('#book-results').replaceChildren()
    $('#book-dialog-title').textContent = `Book with ${column.dentist.name}`
    $('#book-when').textContent = when(iso, this.book.data.timezone)
    $('#book-patient').textContent = 'No patient chosen yet.'
    $('#book-hold').textContent = ''
    showError($('#book-error'), null)
    this.dialog.showModal()
    $('#book-search').focus()
  }

  async choose (patient) {
    this.patient = patient
    $('#book-patient').textContent = `Patient: ${patient.full_name}${patient.phone ? ` · ${patient.phone}` : ''}`
    showError($('#book-error'), null)
    await this.release()
    try {
      this.hold = await api(`/api/availability/${this.column.dentist.dentist_id}/reservations`, {
        method: 'POST', body: JSON.stringify({ slot_time: this.start, patient_id: patient.id, appointment_type: $('#book-type').value }),
      })
      this.showHold()
      $('#book-submit').focus()
    } catch (err) {
      showError($('#book-error'), err) // e.g. another desk or the chatbot took this time
    }
  }

  showHold () {
    clearInterval(this.holdTimer)
    const paint = () => {
      if (!this.hold) return
      const left = Math.max(0, Math.round((Date.parse(this.hold.expires_at) - Date.now()) / 1000))
      $('#book-hold').textContent = `The slot is held for this patient for ${Math.floor(left / 60)}:${String(left % 60).padStart(2, '0')}.`
    }
    paint()
    this.holdTimer = setInterval(paint, 1000)
  }

  async createPatient () {
    const f = this.form.elements
    try {
      const p = await api('/api/patients', {
        method: 'POST',
        body: JSON.stringify({ full_name: f.full_name.value, phone: f.phone.value || null, email: f.email.value || null }),
      })
      $('#new-patient').open = false
      await this.choose(p)
    } catch (err) {
      showError($('#book-error'), err)
    }
  }

  async submit () {
    if (!this.patient) { showError($('#book-error'), new Error('Choose or create the patient first')); return }
    try {
      await api('/api/appointments', {
        method: 'POST',
        body: JSON.stringify({
          dentist_id: this.column.dentist.dentist_id, appointment_date: this.start, appointment_type: $('#book-type').value,
          patient_id: this.patient.id, reservation_id: this.hold ? this.hold.id : null, notes: this.form.elements.notes.value || null,
        }),
      })
      this.booked = true
      this.hold = null
      this.dialog.close()
      this.book.load()
    } catch (err) {
      showError($('#book-error'), err)
    }
  }

  async release (keepalive = false) {
    clearInterval(this.holdTimer)
    const hold = this.hold
    this.hold = null
    if (hold) {
      await api(`/api/reservations/${hold.id}`, { method: 'DELETE', keepalive }).catch(() => {})
    }
  }

  abandon (keepalive = false) {
    if (!this.booked) this.release(keepalive)
  }

  // ---- an appointment -------------------------------------------------------------------
  openAppointment (a, column) {
    this.current = a
    const tz = this.book.data.timezone
    $('#appt-title').textContent = a.patient_name || 'Appointment'
    const facts = $('#appt-facts')
    facts.replaceChildren()
    const rows = [['Dentist', column.dentist.name], ['When', when(a.start, tz)], ['Type', a.appointment_type],
      ['Status', a.status.replace('_', '-')], ['Phone', a.patient_phone], ['Patient notes', a.patient_notes], ['Clinic notes', a.notes]]
    for (const [k, v] of rows) if (v) facts.append(el('dt', {}, k), el('dd', {}, v))
    const actions = $('#appt-actions')
    actions.replaceChildren(el('button.quiet', { type: 'button', onclick: () => { this.apptDialog.close(); openPatient(a.patient_id) } }, 'Patient'))
    const change = (label, body) => actions.append(el('button', { type: 'button', onclick: () => this.change(a, body) }, label))
    if (a.status === 'pending') change('Confirm', { status: 'confirmed' })
    if (a.status === 'confirmed') { change('Complete', { status: 'completed' }); change('No-show', { status: 'no_show' }) }
    if (a.status === 'pending' || a.status === 'confirmed') {
      actions.append(el('button', { type: 'button', onclick: () => this.startMove(a) }, 'Move…'))
      actions.append(el('button.danger', { type: 'button', onclick: () => this.cancel(a) }, 'Cancel appointment'))
    }
    showError($('#appt-error'), null)
    $('#cancel-reason').value = ''
    this.apptDialog.showModal()
  }

  async change (a, body) {
    try {
      await api(`/api/appointments/${a.id}`, { method: 'PUT', body: JSON.stringify(body) })
      this.apptDialog.close()
      this.book.load()
    } catch (err) {
      showError($('#appt-error'), err)
    }
  }

  async cancel (a) {
    const reason = $('#cancel-reason').value.trim()
    if (!reason) { showError($('#appt-error'), new Error('Give a reason for cancelling')); $('#cancel-reason').focus(); return }
    try {
      await api(`/api/appointments/${a.id}`, { method: 'DELETE', body: JSON.stringify({ reason }) })
      this.apptDialog.close()
      this.book.load()
    } catch (err) {
      showError($('#appt-error'), err)
    }
  }

  // Moving without a mouse: the free slots become "move here" buttons until one is chosen or Escape.
  startMove (a) {
    this.apptDialog.close()
    this.book.moving = a
    const banner = $('#moving')
    banner.textContent = `Moving ${a.patient_name || 'the appointment'}: choose a free slot of the same dentist, or press Escape.`
    banner.hidden = false
    this.book.render()
    const first = document.querySelector(`.col[data-dentist="${a.dentist_id}"] .free`)
    if (first) first.focus()
  }

  stopMove () {
    this.book.moving = null
    $('#moving').hidden = true
    this.book.render()
  }

  async move (a, column, iso) {
    if (column.dentist.dentist_id !== a.dentist_id) {
      this.notice(new Error('An appointment moves within its dentist\'s column; cancel and book to change dentist'))
      return
    }
    const moving = this.book.moving
    try {
      await api(`/api/appointments/${a.id}`, { method: 'PUT', body: JSON.stringify({ appointment_date: iso }) })
      this.notice(null)
    } catch (err) {
      this.notice(err) // another desk took that time, or the hours do not allow it
    }
    if (moving) this.stopMove()
    this.book.load()
  }
}

// ---- the patient panel ------------------------------------------------------------------
export async function openPatient (id) {
  const panel = $('#patient-panel')
  const p = await api(`/api/patients/${id}`)
  const list = (items, empty) => items.length
    ? el('ul.visits', {}, ...items.map((a) => el('li', { dataset: { id: a.id, status: a.status } },
      `${when(a.appointment_date, cfg.timezone)} · ${a.appointment_type} · ${a.dentist_name} · ${a.status.replace('_', '-')}`)))
    : el('p.muted', {}, empty)
  const docs = p.documents.length
    ? el('ul', {}, ...p.documents.map((d) => el('li', {}, el('button.link', { type: 'button', onclick: () => download(d) }, d.file_name), ` (${Math.ceil(d.file_size / 1024)} KiB)`)))
    : el('p.muted', {}, 'No documents.')
  $('#panel-title').textContent = p.full_name || 'Patient'
  $('#panel-body').replaceChildren(
    el('dl', {}, ...[['Phone', p.phone], ['Email', p.email], ['Born', p.date_of_birth]].filter(([, v]) => v).flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)])),
    el('h3', {}, 'Upcoming'), list(p.upcoming, 'Nothing booked.'),
    el('h3', {}, 'Past'), list(p.past, 'No earlier visits.'),
    el('h3', {}, 'Documents'), docs)
  panel.hidden = false
  panel.dataset.patient = id
  $('#panel-close').focus()
}

async function download (doc) {
  const response = await fetch(doc.file_url, { headers: { Authorization: `Bearer ${cfg.token}` } })
  const url = URL.createObjectURL(await response.blob())
  el('a', { href: url, download: doc.file_name }).click()
  setTimeout(() => URL.revokeObjectURL(url), 10000)
}
