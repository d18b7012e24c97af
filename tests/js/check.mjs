// Drives the hub with the official @supabase/realtime-js client.
// Usage: node check.mjs '<json config>'; prints one JSON object per line for
// everything it observes, and takes JSON commands on stdin (one per line).
// tests/test_realtime_js.py is the other side.
import { RealtimeClient } from '@supabase/realtime-js'
import WebSocket from 'ws'
import readline from 'node:readline'

const config = JSON.parse(process.argv[2])
const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

const client = new RealtimeClient(config.url, {
  params: { apikey: config.apikey, ...(config.vsn ? { vsn: config.vsn } : {}) },
  transport: WebSocket,
  heartbeatIntervalMs: 5000,
  ...(config.vsn ? { vsn: config.vsn } : {}),
})
client.setAuth(config.token)

const channels = {}
for (const spec of config.channels) {
  const channel = client.channel(spec.topic, {
    config: { broadcast: { self: !!spec.self, ack: !!spec.ack }, presence: { key: spec.presenceKey || '' } },
  })
  for (const event of spec.broadcasts || []) {
    channel.on('broadcast', { event }, (message) => say({ type: 'broadcast', topic: spec.topic, message }))
  }
  for (const binding of spec.postgres || []) {
    channel.on('postgres_changes', binding, (change) => say({ type: 'postgres_changes', topic: spec.topic, change }))
  }
  if (spec.presence) {
    channel.on('presence', { event: 'sync' }, () => say({ type: 'presence', topic: spec.topic, state: channel.presenceState() }))
  }
  channel.subscribe((status, err) => say({ type: 'status', topic: spec.topic, status, error: err ? String(err.message || err) : null }))
  channels[spec.topic] = channel
}

const rl = readline.createInterface({ input: process.stdin })
rl.on('line', async (line) => {
  const cmd = JSON.parse(line)
  try {
    if (cmd.cmd === 'refresh') {
      await client.setAuth(cmd.token)
      say({ type: 'done', cmd: 'refresh' })
    } else if (cmd.cmd === 'send') {
      const result = await channels[cmd.topic].send({ type: 'broadcast', event: cmd.event, payload: cmd.payload })
      say({ type: 'done', cmd: 'send', result })
    } else if (cmd.cmd === 'track') {
      const result = await channels[cmd.topic].track(cmd.meta)
      say({ type: 'done', cmd: 'track', result })
    } else if (cmd.cmd === 'quit') {
      await client.removeAllChannels()
      client.disconnect()
      process.exit(0)
    }
  } catch (e) {
    say({ type: 'error', cmd: cmd.cmd, error: String(e && e.message || e) })
  }
})
say({ type: 'started' })
