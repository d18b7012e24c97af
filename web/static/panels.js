// Admin panels: the waitlist (who waits, and what they are offered) and outgoing webhooks
// (endpoints, the secret shown once, the delivery log with replay).
import { $, api, cfg, el, showError, when } from './util.js'

export async function renderWaitlist () {
  const body = $('#waitlist tbody')
  if (!body) return
  const entries = (await api('/api/waitlist')).filter((e) => e.status === 'waiting')
  body.replaceChildren(...entries.map((e) => el('tr', { dataset: { id: e.id } },
    el('td', {}, e.patient_name || e.patient_id.slice(0, 8)),
    el('td', {}, e.appointment_type.replace('_', ' ')),
    el('td', {}, `${e.earliest_date} – ${e.latest_date}`),
    el('td', {}, e.offer ? `${when(e.offer.slot_time, cfg.timezone)} (until ${when(e.offer.expires_at, cfg.timezone)})` : 'waiting'))))
  if (!entries.length) body.append(el('tr', {}, el('td', { colspan: '4' }, 'Nobody is waiting.')))
}

export function setUpWebhooks () {
  const form = $('#webhook-form')
  if (!form) return
  $('#webhook-events').replaceChildren(...cfg.webhookEvents.map((name) =>
    el('label.inline', {}, el('input', { type: 'checkbox', name: 'events', value: name, checked: true }), ` ${name}`)))
  form.addEventListener('submit', async (event) => {
    event.preventDefault()
    const events = [...form.querySelectorAll('input[name=events]:checked')].map((i) => i.value)
    try {
      const created = await api('/api/webhooks', {
        method: 'POST', body: JSON.stringify({ url: form.elements.url.value, description: form.elements.description.value, events }),
      })
      showError($('#webhook-error'), null)
      const shown = $('#webhook-secret')
      shown.hidden = false
      shown.textContent = `Signing secret (shown once, copy it now): ${created.secret}`
      form.reset()
      renderWebhooks()
    } catch (err) {
      showError($('#webhook-error'), err)
    }
  })
  renderWebhooks()
}

async function renderWebhooks () {
  const endpoints = await api('/api/webhooks')
  $('#webhooks').replaceChildren(...endpoints.map((w) => el('li', { dataset: { id: w.id } },
    el('strong', {}, w.url), ` ${w.enabled ? 'enabled' : `disabled${w.disabled_reason ? `: ${w.disabled_reason}` : ''}`}`,
    w.consecutive_failures ? ` · ${w.consecutive_failures} failed in a row` : '', ' ',
    el('button.small.quiet', { type: 'button', onclick: () => renderDeliveries(w) }, 'Deliveries'),
    el('button.small.quiet', { type: 'button', onclick: () => toggle(w) }, w.enabled ? 'Disable' : 'Enable'),
    el('button.small.danger', { type: 'button', onclick: () => remove(w) }, 'Delete'))))
  if (!endpoints.length) $('#webhooks').append(el('li.muted', {}, 'No endpoints yet.'))
}

async function toggle (w) {
  await api(`/api/webhooks/${w.id}`, { method: 'PATCH', body: JSON.stringify({ enabled: !w.enabled }) }).catch((err) => showError($('#webhook-error'), err))
  renderWebhooks()
}

async function remove (w) {
  await api(`/api/webhooks/${w.id}`, { method: 'DELETE' }).catch((err) => showError($('#webhook-error'), err))
  renderWebhooks()
}

async function renderDeliveries (w) {
  $('#deliveries-of').textContent = `to ${w.url}`
  const page = await api(`/api/webhooks/${w.id}/deliveries?limit=20`)
  $('#deliveries tbody').replaceChildren(...page.data.map((d) => el('tr', { dataset: { id: String(d.id), status: d.status } },
    el('td', {}, d.type), el('td', {}, d.status), el('td', {}, String(d.attempts)),
    el('td', {}, d.last_status_code ? `${d.last_status_code} · ${d.last_latency_ms} ms` : '–'),
    el('td', {}, el('button.small.quiet', {
      type: 'button',
      onclick: async () => { await api(`/api/webhooks/${w.id}/deliveries/${d.id}/replay`, { method: 'POST' }); renderDeliveries(w) },
    }, 'Replay')))))
}
