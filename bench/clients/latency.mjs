// Latency client for `codexpool-bench latency`: what a Node program
// using the openai SDK sees.  Stock Node only: the built-in fetch
// (undici) or the http module with its default keep-alive agent, no npm
// packages.
//
//   node latency.mjs CONFIG.json RESULT.json
//
// CONFIG: {"api":"fetch"|"http", "targets":[{"name","url","headers"}],
//          "conversations","turns","concurrency","instructions_bytes",
//          "model","timeout_ms","warmup_turns","stagger_ms"}
// For each target in turn: a warm-up (concurrency conversations x
// warmup_turns, not reported: JIT, keep-alive connections), then
// conversations x turns of stateless streamed
// Responses requests (full history every turn), `concurrency`
// conversations at a time.  RESULT gets one record per turn: time to
// first event, turn time, the largest gap between two events, and each
// event's relay latency (arrival minus the simulator's sim_sent_us, both
// CLOCK_REALTIME microseconds).
import { readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { performance } from 'node:perf_hooks';

const [configPath, resultPath] = process.argv.slice(2);
if (!configPath || !resultPath) {
	console.error('usage: node latency.mjs CONFIG.json RESULT.json');
	process.exit(2);
}
const cfg = JSON.parse(readFileSync(configPath, 'utf8'));
const api = cfg.api || 'fetch';

// CLOCK_REALTIME in microseconds, with sub-millisecond resolution.
const wallUs = () => (performance.timeOrigin + performance.now()) * 1000;

function instructions(conv, bytes) {
	const sentence = `Conversation ${conv}: you are a careful assistant; ` +
	    'answer briefly, cite the file you read, and never guess. ';
	return sentence.repeat(Math.ceil(bytes / sentence.length)).slice(0, bytes);
}

// Feeds SSE text; calls onEvent(json) for each complete data block.
function sseParser(onEvent) {
	let buf = '';
	return (text) => {
		buf += text;
		let i;
		while ((i = buf.indexOf('\n\n')) >= 0) {
			const block = buf.slice(0, i);
			buf = buf.slice(i + 2);
			const data = block.split('\n').filter((l) => l.startsWith('data:'))
			    .map((l) => l.slice(5).trimStart()).join('\n');
			if (data && data !== '[DONE]')
				onEvent(JSON.parse(data));
		}
	};
}

// POSTs body and feeds each body chunk to onChunk(text, arrivalUs).
async function postFetch(target, body, onChunk, timeoutMs) {
	const res = await fetch(target.url, {
		method: 'POST',
		headers: { 'content-type': 'application/json',
		    accept: 'text/event-stream', ...target.headers },
		body,
		signal: AbortSignal.timeout(timeoutMs),
	});
	if (res.status !== 200) {
		await res.text();
		return res.status;
	}
	const reader = res.body.getReader();
	const dec = new TextDecoder();
	for (;;) {
		const { done, value } = await reader.read();
		if (done)
			break;
		onChunk(dec.decode(value, { stream: true }), wallUs());
	}
	return 200;
}

function postHttp(target, body, onChunk, timeoutMs) {
	return new Promise((resolve, reject) => {
		const req = http.request(target.url, {
			method: 'POST',
			headers: { 'content-type': 'application/json',
			    accept: 'text/event-stream',
			    'content-length': Buffer.byteLength(body), ...target.headers },
			timeout: timeoutMs,
		}, (res) => {
			res.setEncoding('utf8');
			res.on('data', (text) => {
				if (res.statusCode === 200)
					onChunk(text, wallUs());
			});
			res.on('end', () => resolve(res.statusCode));
			res.on('error', reject);
		});
		req.on('timeout', () => req.destroy(new Error('timeout')));
		req.on('error', reject);
		req.end(body);
	});
}

const post = api === 'http' ? postHttp : postFetch;

async function turn(target, conv, t, history, instr, keyPrefix) {
	const body = JSON.stringify({
		model: cfg.model || 'gpt-5.4',
		instructions: instr,
		input: history,
		stream: true,
		store: false,
		prompt_cache_key: `${keyPrefix}-${target.name}-${conv}`,
	});
	const rec = { conv, turn: t, status: 0, ttft_us: -1, total_us: -1,
	    events: 0, max_gap_us: 0, relay_us: [], error: null };
	const output = [];
	let lastArrival = -1, completed = false, arrival = 0;
	const parse = sseParser((ev) => {
		rec.events++;
		if (rec.ttft_us < 0)
			rec.ttft_us = Math.round(arrival - start);
		if (lastArrival >= 0)
			rec.max_gap_us = Math.max(rec.max_gap_us, Math.round(arrival - lastArrival));
		lastArrival = arrival;
		if (typeof ev.sim_sent_us === 'number')
			rec.relay_us.push(Math.round(arrival - ev.sim_sent_us));
		if (ev.type === 'response.output_item.done') {
			const { id, status, ...item } = ev.item;
			output.push(item);
		}
		if (ev.type === 'response.completed')
			completed = true;
	});
	const start = wallUs();
	try {
		rec.status = await post(target, body, (text, at) => {
			arrival = at;
			parse(text);
		}, cfg.timeout_ms || 60000);
		rec.total_us = Math.round(wallUs() - start);
		if (rec.status === 200 && !completed)
			rec.error = 'stream ended without response.completed';
	} catch (e) {
		rec.error = String(e && e.message || e);
	}
	history.push(...output);
	return rec;
}

async function runTarget(target, conversations, nturns, keyPrefix) {
	const turns = [];
	let next = 0;
	async function worker(w) {
		// Real users do not start in lock-step: worker w starts
		// w * stagger_ms later, so turns do not all end at once.
		await new Promise((r) => setTimeout(r, w * (cfg.stagger_ms || 0)));
		for (;;) {
			const conv = next++;
			if (conv >= conversations)
				return;
			const history = [];
			const instr = instructions(conv, cfg.instructions_bytes);
			for (let t = 0; t < nturns; t++) {
				history.push({ type: 'message', role: 'user', content: [
				    { type: 'input_text', text: `question ${t + 1} of conversation ${conv}` }] });
				const rec = await turn(target, conv, t, history, instr, keyPrefix);
				turns.push(rec);
				if (rec.error || rec.status !== 200)
					break;	// the history is broken; the record counts as an error
			}
		}
	}
	await Promise.all(Array.from({ length: cfg.concurrency }, (_, w) => worker(w)));
	return { target: target.name, turns };
}

const results = [];
for (const target of cfg.targets) {
	if (cfg.warmup_turns > 0)
		await runTarget(target, cfg.concurrency, cfg.warmup_turns, 'warmup');
	results.push(await runTarget(target, cfg.conversations, cfg.turns, 'latency'));
}
writeFileSync(resultPath, JSON.stringify({ client: `node-${api}`,
    version: process.version, results }));
