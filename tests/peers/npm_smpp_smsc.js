// An SMSC built on the npm `smpp` package (node-smpp 0.5.1), a peer nobody in this project wrote.
// Usage: node npm_smpp_smsc.js PORT SYSTEM_ID PASSWORD PLAN_JSON
// PLAN_JSON: {"messages": [{"params": {...}, "hex": {"short_message": "..."}, "repeat": bool}],
//             "window": 4, "cycles": ["unbind", "drop", ...], "cycle_every": 10, "healthy_ms": 1500}
// "params" go to node-smpp as they are (a string short_message is encoded by node-smpp itself, which labels
// GSM 03.38 as data_coding 0x01); "hex" fields become Buffers sent byte for byte. A message marked "repeat"
// is sent again after it was acknowledged (a carrier retransmission). Unacknowledged messages are resent
// on the next bind, as carriers do. Every `cycle_every` acknowledgements, once the bind is at least
// `healthy_ms` old, the SMSC ends the session: "unbind" (an SMSC unbind) or "drop" (the TCP connection torn
// down). Prints: READY port | BOUND n | ACK | STATUS s | CYCLE kind | REBIND kind gap_ms | DONE acked |
// ESME_UNBIND epoch_ms | CLOSED. Exits after the ESME unbinds once DONE, or on SIGTERM.
'use strict';
const path = require('path');
const fs = require('fs');
const smpp = require(path.join(process.env.NPM_SMPP_PREFIX, 'node_modules', 'smpp'));

const [port, systemId, password, planFile] = process.argv.slice(2);
const plan = JSON.parse(fs.readFileSync(planFile, 'utf8'));
const queue = plan.messages.map((m, i) => ({ ...m, idx: i, repeated: false }));
const windowSize = plan.window || 4;
const cycles = (plan.cycles || []).slice();
const cycleEvery = plan.cycle_every || 0;
const healthyMs = plan.healthy_ms || 0;

let current = null; // {session, boundAt, inflight: Map}
let acked = 0;
let nextCycleAt = cycleEvery;
let endedAt = null; // {kind, at}
let binds = 0;
let done = false;
const out = (line) => process.stdout.write(line + '\n');

function paramsOf(item) {
  const p = JSON.parse(JSON.stringify(item.params));
  for (const [k, v] of Object.entries(item.hex || {})) p[k] = Buffer.from(v, 'hex');
  return p;
}

function pump() {
  const c = current;
  if (!c || c.ending) return;
  if (cycles.length && cycleEvery && (acked >= nextCycleAt || (!queue.length && !c.inflight.size))) {
    if (Date.now() - c.boundAt >= healthyMs) return endSession(c, cycles.shift());
    setTimeout(pump, 50);
    return;
  }
  while (c.inflight.size < windowSize && queue.length) {
    const item = queue.shift();
    const ok = c.session.deliver_sm(paramsOf(item), (resp) => {
      if (!c.inflight.delete(item)) return; // the session already ended and requeued it
      if (resp.command_status === 0) {
        acked++;
        out('ACK');
        if (item.repeat && !item.repeated) queue.push({ ...item, repeated: true });
      } else {
        out('STATUS ' + resp.command_status);
        setTimeout(() => { queue.push(item); pump(); }, 200);
      }
      pump();
    });
    if (!ok) { queue.unshift(item); return; }
    c.inflight.set(item, true);
  }
  if (!queue.length && !c.inflight.size && !cycles.length && !done) {
    done = true;
    out('DONE ' + acked);
  }
}

function endSession(c, kind) {
  c.ending = true;
  nextCycleAt = acked + cycleEvery;
  out('CYCLE ' + kind);
  const finish = () => { endedAt = endedAt || { kind, at: Date.now() }; };
  if (kind === 'unbind') {
    c.session.unbind({}, () => { finish(); c.session.close(); });
  } else {
    finish();
    c.session.destroy();
  }
}

const server = smpp.createServer((session) => {
  const c = { session, boundAt: 0, inflight: new Map(), ending: false };
  const onBind = (pdu) => {
    const good = pdu.system_id === systemId && pdu.password === password;
    session.send(pdu.response({ command_status: good ? 0 : smpp.ESME_RBINDFAIL, system_id: 'NODESMSC' }));
    if (!good) return session.close();
    binds++;
    c.boundAt = Date.now();
    if (endedAt) {
      out(`REBIND ${endedAt.kind} ${c.boundAt - endedAt.at}`);
      endedAt = null;
    }
    out('BOUND ' + binds);
    current = c;
    pump();
  };
  session.on('bind_transceiver', onBind);
  session.on('bind_receiver', onBind);
  session.on('enquire_link', (pdu) => session.send(pdu.response()));
  session.on('unbind', (pdu) => {
    if (done) out('ESME_UNBIND ' + Date.now());
    session.send(pdu.response());
    c.ending = true;
    session.close();
  });
  session.on('error', () => {});
  session.on('close', () => {
    if (!c.ending && c === current) endedAt = endedAt || { kind: 'lost', at: Date.now() };
    if (c === current) current = null;
    // what was in flight was never answered: the carrier sends it again on the next bind
    for (const item of c.inflight.keys()) queue.unshift(item);
    c.inflight.clear();
    if (done && c.ending) {
      out('CLOSED');
      process.exit(0);
    }
  });
});
server.listen(Number(port), '127.0.0.1', () => out('READY ' + port));
process.on('SIGTERM', () => process.exit(0));
