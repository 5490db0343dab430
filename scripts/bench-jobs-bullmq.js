// BullMQ side of scripts/bench-jobs.sh (the anchor surge worker is compared
// with): a no-op processor on Debian's redis-server and nodejs.
//   node bench-jobs-bullmq.js fill PORT N            add N jobs (addBulk, 1000 a call)
//   node bench-jobs-bullmq.js drain PORT N CONC      run them; prints "jobs_s RSS_KB CPU_US"
//                                                    (CPU_US: this process's user+system
//                                                    time during the drain)
//   node bench-jobs-bullmq.js latency PORT N CONC    run N jobs as they come; prints
//                                                    "p50_ms p99_ms RSS_KB" (start - add time)
//   node bench-jobs-bullmq.js produce PORT RATE N    add N jobs at RATE/s (a batch every 10 ms)
'use strict';
const fs = require('fs');
const { Queue, Worker } = require('bullmq');

const [mode, port, a, b] = process.argv.slice(2);
const connection = { host: '127.0.0.1', port: Number(port), maxRetriesPerRequest: null };
const NAME = 'bench';

function peakRssKb() {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) : 0;
}

async function fill(n) {
  const q = new Queue(NAME, { connection });
  for (let i = 0; i < n; i += 1000) {
    const k = Math.min(1000, n - i);
    await q.addBulk(Array.from({ length: k }, () => ({ name: 'noop', data: {} })));
  }
  await q.close();
}

function runWorker(n, conc, onJob) {
  return new Promise((resolve) => {
    let done = 0;
    const t0 = process.hrtime.bigint();
    const w = new Worker(NAME, async (job) => { onJob(job); }, { connection, concurrency: conc });
    w.on('completed', () => {
      if (++done === n) {
        const s = Number(process.hrtime.bigint() - t0) / 1e9;
        w.close().then(() => resolve(s));
      }
    });
  });
}

async function produce(rate, n) {
  const q = new Queue(NAME, { connection });
  const per = Math.max(1, Math.round(rate / 100));
  const t0 = Date.now();
  for (let i = 0; i < n; i += per) {
    const due = t0 + (i / rate) * 1000;
    const wait = due - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const k = Math.min(per, n - i);
    const now = Date.now();
    await q.addBulk(Array.from({ length: k }, () => ({ name: 'noop', data: { t: now } })));
  }
  await q.close();
  process.stdout.write(`${(n / ((Date.now() - t0) / 1000)).toFixed(0)}\n`);
}

function pct(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function main() {
  if (mode === 'fill') return fill(Number(a));
  if (mode === 'produce') return produce(Number(a), Number(b));
  if (mode === 'drain') {
    const cpu0 = process.cpuUsage();
    const s = await runWorker(Number(a), Number(b), () => {});
    const cpu = process.cpuUsage(cpu0);
    process.stdout.write(`${(Number(a) / s).toFixed(0)} ${peakRssKb()} ${cpu.user + cpu.system}\n`);
    return;
  }
  if (mode === 'latency') {
    const lat = [];
    process.stdout.write('ready\n');
    await runWorker(Number(a), Number(b), (job) => lat.push(Date.now() - job.data.t));
    lat.sort((x, y) => x - y);
    process.stdout.write(`${pct(lat, 50)} ${pct(lat, 99)} ${peakRssKb()}\n`);
    return;
  }
  throw new Error(`unknown mode ${mode}`);
}

main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
