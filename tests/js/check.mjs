// Drives the hub with an official client, unmodified, as an app would use it.
// Usage: node check.mjs '<json config>'; prints one JSON object per line for
// everything it observes, and takes JSON commands on stdin (one per line).
// tests/test_realtime_js.py and tests/test_clients_js.py are the other side.
//
// config.style picks the client:
//   realtime-js            new RealtimeClient(url, {params: {apikey}}), then setAuth(token)
//   supabase               createClient(url, apikey), then supabase.realtime.setAuth(token)
//   supabase-access-token  createClient(url, apikey, {accessToken: async () => token})
//   phoenix                new Socket(url, {params: {apikey}}), token in each join's access_token
// config.url is the realtime endpoint (ws://host/realtime/v1), or the project URL (http://host) for supabase*.
import { RealtimeClient } from '@supabase/realtime-js'
import { createClient } from '@supabase/supabase-js'
import { Socket, Presence } from 'phoenix'
import WebSocket from 'ws'
import readline from 'node:readline'

const config = JSON.parse(process.argv[2])
const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const style = config.style || 'realtime-js'
let token = config.token // the user's JWT, as the app holds it
const heartbeatIntervalMs = config.heartbeatMs || 5000
const sayStatus = (topic) => (status, err) =>
  say({ type: 'status', topic, status, error: err ? String(err.message || err) : null })

// ---- @supabase/realtime-js, alone or inside supabase-js ------------------------
function supabaseStyle() {
  const options = {
    transport: WebSocket,
    heartbeatIntervalMs,
    heartbeatCallback: (status) => say({ type: 'heartbeat', status }),
    ...(config.vsn ? { vsn: config.vsn } : {}),
  }
  let realtime, channelOf, refresh
  if (style === 'realtime-js') {
    realtime = new RealtimeClient(config.url, { params: { apikey: config.apikey }, ...options })
    channelOf = (name, opts) => realtime.channel(name, opts)
    refresh = (t) => realtime.setAuth(t)
  } else if (style === 'supabase') {
    const supabase = createClient(config.url, config.apikey, { realtime: options, auth: { persistSession: false } })
    realtime = supabase.realtime
    channelOf = (name, opts) => supabase.channel(name, opts)
    refresh = (t) => supabase.realtime.setAuth(t)
  } else if (style === 'supabase-access-token') {
    const supabase = createClient(config.url, config.apikey, { accessToken: async () => token, realtime: options })
    realtime = supabase.realtime
    channelOf = (name, opts) => supabase.channel(name, opts)
    refresh = async (t) => { token = t; await supabase.realtime.setAuth() } // the callback is the source of truth
  } else {
    throw new Error(`unknown style ${style}`)
  }
  if (token && style !== 'supabase-access-token') refresh(token)
  return {
    join(spec) {
      const channel = channelOf(spec.topic, {
        config: { broadcast: { self: !!spec.self, ack: !!spec.ack }, presence: { key: spec.presenceKey || '' } },
      })
      for (const event of spec.broadcasts || []) {
        channel.on('broadcast', { event }, (message) => say({ type: 'broadcast', topic: spec.topic, message }))
      }
      for (const binding of spec.postgres || []) {
        channel.on('postgres_changes', binding, (change) => say({ type: 'postgres_changes', topic: spec.topic, change }))
      }
      if (spec.presence) {
        channel.on('presence', { event: 'sync' }, () =>
          say({ type: 'presence', topic: spec.topic, state: channel.presenceState() }))
        channel.on('presence', { event: 'join' }, ({ key }) => say({ type: 'presence_join', topic: spec.topic, key }))
      }
      channel.on('system', {}, (payload) => say({ type: 'system', topic: spec.topic, payload }))
      channel.subscribe(sayStatus(spec.topic))
      return {
        send: (event, payload) => channel.send({ type: 'broadcast', event, payload }),
        track: (meta) => channel.track(meta),
        leave: () => realtime.removeChannel(channel),
        state: () => ({ state: channel.state, tokenIsApikey: realtime.accessTokenValue === config.apikey }),
      }
    },
    refresh,
    quit: async () => { await realtime.removeAllChannels(); realtime.disconnect() },
  }
}

// ---- the phoenix client: Supabase's wire format written by the app ------------
function phoenixStyle() {
  const params = { apikey: config.apikey, ...(config.vsnParam ? { vsn: config.vsnParam } : {}) }
  const socket = new Socket(config.url, { params, transport: WebSocket, heartbeatIntervalMs })
  socket.connect()
  const joined = []
  const reply = (push) => new Promise((resolve) =>
    push.receive('ok', () => resolve('ok')).receive('error', (r) => resolve(r.reason || 'error'))
      .receive('timeout', () => resolve('timed out')))
  return {
    join(spec) {
      const joinConfig = {
        broadcast: { self: !!spec.self, ack: !!spec.ack },
        presence: { key: spec.presenceKey || '', enabled: !!spec.presence },
        postgres_changes: spec.postgres || [],
        private: false,
      }
      // A function, so a rejoin after a reconnect sends the current token.
      const channel = socket.channel(`realtime:${spec.topic}`, () => ({ config: joinConfig, access_token: token }))
      channel.on('broadcast', (message) => say({ type: 'broadcast', topic: spec.topic, message }))
      channel.on('postgres_changes', ({ data }) => say({
        type: 'postgres_changes', topic: spec.topic,
        change: { eventType: data.type, schema: data.schema, table: data.table, new: data.record, old: data.old_record },
      }))
      channel.on('system', (payload) => say({ type: 'system', topic: spec.topic, payload }))
      if (spec.presence) {
        const presence = new Presence(channel)
        presence.onSync(() => say({
          type: 'presence', topic: spec.topic,
          state: Object.fromEntries(presence.list((key, { metas }) => [key, metas])),
        }))
        presence.onJoin((key, current) => { if (!current) say({ type: 'presence_join', topic: spec.topic, key }) })
      }
      const status = sayStatus(spec.topic)
      channel.onError((reason) => status('CHANNEL_ERROR', reason && reason.reason))
      channel.onClose(() => status('CLOSED'))
      channel.join()
        .receive('ok', () => status('SUBSCRIBED'))
        .receive('error', (r) => status('CHANNEL_ERROR', r.reason || JSON.stringify(r)))
        .receive('timeout', () => status('TIMED_OUT'))
      joined.push(channel)
      return {
        send: async (event, payload) => {
          const push = channel.push('broadcast', { type: 'broadcast', event, payload })
          return spec.ack ? reply(push) : 'ok' // the server replies only when asked to ack
        },
        track: (meta) => reply(channel.push('presence', { type: 'presence', event: 'track', payload: meta })),
        leave: () => reply(channel.leave()),
        state: () => ({ state: channel.state, tokenIsApikey: token === config.apikey }),
      }
    },
    async refresh(t) {
      token = t
      return Promise.all(joined.filter((c) => c.isJoined()).map((c) => reply(c.push('access_token', { access_token: t }))))
    },
    quit: async () => { socket.disconnect() },
  }
}

const client = style === 'phoenix' ? phoenixStyle() : supabaseStyle()
const channels = {}
for (const spec of config.channels || []) channels[spec.topic] = client.join(spec)

const rl = readline.createInterface({ input: process.stdin })
rl.on('line', async (line) => {
  const cmd = JSON.parse(line)
  try {
    let result = null
    if (cmd.cmd === 'join') {
      channels[cmd.spec.topic] = client.join(cmd.spec)
    } else if (cmd.cmd === 'refresh') {
      result = await client.refresh(cmd.token)
    } else if (cmd.cmd === 'send') {
      result = await channels[cmd.topic].send(cmd.event, cmd.payload)
    } else if (cmd.cmd === 'track') {
      result = await channels[cmd.topic].track(cmd.meta)
    } else if (cmd.cmd === 'leave') {
      result = await channels[cmd.topic].leave()
      delete channels[cmd.topic]
    } else if (cmd.cmd === 'state') {
      result = channels[cmd.topic].state()
    } else if (cmd.cmd === 'quit') {
      await client.quit()
      process.exit(0)
    }
    say({ type: 'done', cmd: cmd.cmd, topic: cmd.topic, result })
  } catch (e) {
    say({ type: 'error', cmd: cmd.cmd, error: String(e && e.message || e) })
  }
})
say({ type: 'started' })
