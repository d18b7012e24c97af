// Shared by the console's modules: the API with the page's token, error text, element building.
export const cfg = JSON.parse(document.getElementById('config').textContent)
export const $ = (sel) => document.querySelector(sel)

// The token lives only in this page's memory (handed over in the page, kept for page loads in an
// HttpOnly cookie): never in localStorage, never in a URL after sign-in.
export async function api (path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { Authorization: `Bearer ${cfg.token}`, 'Content-Type': 'application/json', ...(options.headers || {}) },
  })
  const body = response.status === 204 ? null : await response.json()
  if (!response.ok) throw Object.assign(new Error(body.error.message), { body: body.error, status: response.status })
  return body
}

export function showError (target, err) {
  target.hidden = !err
  if (!err) return
  const details = err.body && err.body.details
  const listed = details && details.appointments
    ? ': ' + details.appointments.map((a) => new Date(a.appointment_date).toLocaleString()).join(', ')
    : details && details.field ? ` (${details.field})` : ''
  target.textContent = `${err.message}${listed}`
}

// el('button.small', {type: 'button', onclick}, 'text', child...) -> an element
export function el (spec, props = {}, ...children) {
  const [tag, ...classes] = spec.split('.')
  const node = document.createElement(tag)
  if (classes.length) node.className = classes.join(' ')
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue
    if (key === 'dataset') Object.assign(node.dataset, value)
    else if (key === 'style') Object.assign(node.style, value)
    else if (key.startsWith('on') || key in node) node[key] = value
    else node.setAttribute(key, value)
  }
  node.append(...children.filter((c) => c !== null && c !== undefined))
  return node
}

export const timeIn = (tz) => new Intl.DateTimeFormat('en-GB', { hour: '2-digit', minute: '2-digit', hourCycle: 'h23', timeZone: tz })
export const dayIn = (tz) => new Intl.DateTimeFormat('en-GB', { weekday: 'short', day: 'numeric', month: 'short', timeZone: tz })
export const when = (iso, tz) => `${dayIn(tz).format(new Date(iso))} ${timeIn(tz).format(new Date(iso))}`
