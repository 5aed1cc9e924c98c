#!/usr/bin/env python3
"""Latency client for `codexpool-bench latency`: what a Python program on
the standard library's http.client sees.

    python3 latency.py CONFIG.json RESULT.json

Same CONFIG and RESULT as latency.mjs (see there), warm-up included.  One keep-alive
HTTPConnection per worker thread, `concurrency` threads; each thread runs
whole conversations, every turn a streamed POST with the full history.
Arrival times are CLOCK_REALTIME microseconds (time.time_ns), taken when
an event's blank line has been read.
"""
import http.client
import json
import sys
import threading
import time
import urllib.parse


def wall_us():
    return time.time_ns() / 1000.0


def instructions(conv, size):
    sentence = (f"Conversation {conv}: you are a careful assistant; "
                "answer briefly, cite the file you read, and never guess. ")
    return (sentence * (size // len(sentence) + 1))[:size]


class Target:
    def __init__(self, spec):
        self.name = spec["name"]
        url = urllib.parse.urlsplit(spec["url"])
        self.host, self.port = url.hostname, url.port or 80
        self.path = url.path
        self.headers = dict(spec.get("headers", {}))


def turn(conn, target, cfg, conv, t, history, instr, key_prefix):
    body = json.dumps({
        "model": cfg.get("model", "gpt-5.4"),
        "instructions": instr,
        "input": history,
        "stream": True,
        "store": False,
        "prompt_cache_key": f"{key_prefix}-{target.name}-{conv}",
    }).encode()
    headers = {"content-type": "application/json",
               "accept": "text/event-stream", **target.headers}
    rec = {"conv": conv, "turn": t, "status": 0, "ttft_us": -1,
           "total_us": -1, "events": 0, "max_gap_us": 0, "relay_us": [],
           "error": None}
    output, completed, last, data = [], False, -1.0, []
    start = wall_us()
    try:
        conn.request("POST", target.path, body=body, headers=headers)
        resp = conn.getresponse()
        rec["status"] = resp.status
        if resp.status != 200:
            resp.read()
            return rec, conn
        while True:
            line = resp.readline()
            if not line:
                break
            line = line.rstrip(b"\r\n")
            if line.startswith(b"data:"):
                data.append(line[5:].lstrip())
                continue
            if line or not data:
                continue
            at = wall_us()
            ev = json.loads(b"\n".join(data))
            data = []
            rec["events"] += 1
            if rec["ttft_us"] < 0:
                rec["ttft_us"] = round(at - start)
            if last >= 0:
                rec["max_gap_us"] = max(rec["max_gap_us"], round(at - last))
            last = at
            if isinstance(ev.get("sim_sent_us"), (int, float)):
                rec["relay_us"].append(round(at - ev["sim_sent_us"]))
            if ev.get("type") == "response.output_item.done":
                item = {k: v for k, v in ev["item"].items()
                        if k not in ("id", "status")}
                output.append(item)
            elif ev.get("type") == "response.completed":
                completed = True
        rec["total_us"] = round(wall_us() - start)
        if not completed:
            rec["error"] = "stream ended without response.completed"
    except (OSError, http.client.HTTPException, ValueError) as e:
        rec["error"] = f"{type(e).__name__}: {e}"
        conn.close()
        conn = http.client.HTTPConnection(target.host, target.port,
                                          timeout=conn.timeout)
    history.extend(output)
    return rec, conn


def run_target(target, cfg, conversations, nturns, key_prefix):
    turns, lock = [], threading.Lock()
    next_conv = [0]

    def worker(w):
        # Real users do not start in lock-step (see latency.mjs).
        time.sleep(w * cfg.get("stagger_ms", 0) / 1000)
        conn = http.client.HTTPConnection(
            target.host, target.port, timeout=cfg.get("timeout_ms", 60000) / 1000)
        while True:
            with lock:
                conv = next_conv[0]
                next_conv[0] += 1
            if conv >= conversations:
                break
            history = []
            instr = instructions(conv, cfg["instructions_bytes"])
            for t in range(nturns):
                history.append({"type": "message", "role": "user", "content": [
                    {"type": "input_text",
                     "text": f"question {t + 1} of conversation {conv}"}]})
                rec, conn = turn(conn, target, cfg, conv, t, history, instr,
                                 key_prefix)
                with lock:
                    turns.append(rec)
                if rec["error"] or rec["status"] != 200:
                    break
        conn.close()

    threads = [threading.Thread(target=worker, args=(w,))
               for w in range(cfg["concurrency"])]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return {"target": target.name, "turns": turns}


def main():
    if len(sys.argv) != 3:
        print("usage: python3 latency.py CONFIG.json RESULT.json", file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    results = []
    for spec in cfg["targets"]:
        target = Target(spec)
        if cfg.get("warmup_turns", 0) > 0:
            run_target(target, cfg, cfg["concurrency"], cfg["warmup_turns"], "warmup")
        results.append(run_target(target, cfg, cfg["conversations"], cfg["turns"],
                                  "latency"))
    with open(sys.argv[2], "w") as f:
        json.dump({"client": "python-http.client",
                   "version": sys.version.split()[0], "results": results}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
