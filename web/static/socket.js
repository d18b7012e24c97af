// The hub's own realtime socket: Phoenix frames, vsn 1.0.0 (JSON objects), rejoining every topic on reconnect.
import { cfg } from './util.js'

export class HubSocket {
  constructor (onStatus) { this.ref = 0; this.topics = new Map(); this.onStatus = onStatus; this.delay = 250 }
  connect () {
    const proto = location.protocol === 'https:' ? 'wss' : 'ws'
    this.ws = new WebSocket(`${proto}://${location.host}/realtime/v1/websocket?apikey=${encodeURIComponent(cfg.token)}&vsn=1.0.0`)
    this.ws.onopen = () => {
      this.delay = 250
      for (const [topic, entry] of this.topics) this.send(topic, 'phx_join', entry.payload, entry)
      this.beat = setInterval(() => this.send('phoenix', 'heartbeat', {}), 25000)
      this.onStatus('live')
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
