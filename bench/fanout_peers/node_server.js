// A socket.io server for bench/fanout.py: every client joins room "r";
// POST /publish?n=N&size=S emits N messages of S bytes to the room.
const http = require('node:http')
const { Server } = require('socket.io')
const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x')
  if (url.pathname === '/publish') {
    const n = Number(url.searchParams.get('n')); const size = Number(url.searchParams.get('size'))
    const payload = { pad: 'x'.repeat(size) }
    let i = 0
    const burst = () => { for (let k = 0; k < 20 && i < n; k++, i++) io.to('r').emit('msg', payload); if (i < n) setImmediate(burst); else res.end('ok') }
    burst()
  } else if (url.pathname === '/rss') {
    res.end(String(process.memoryUsage().rss))
  } else { res.statusCode = 404; res.end() }
})
const io = new Server(server, { transports: ['websocket'], perMessageDeflate: false, pingInterval: 60000, pingTimeout: 60000 })
io.on('connection', (socket) => socket.join('r'))
server.listen(Number(process.argv[2]), '127.0.0.1', () => console.log('ready'))
