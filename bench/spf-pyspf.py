#!/usr/bin/python3
# NAME
#   bench/spf-pyspf.py - run pyspf (Debian python3-spf) over the OpenSPF suite cases for bench/spf.ts
#
# DESCRIPTION
#   Reads one JSON request on stdin:
#     {"mode": "memory" | "dns", "durationMs": N,
#      "scenarios": [{"zone": {owner: {"A": [...], "AAAA": [...], "MX": [[pref, host]], "TXT": [...],
#                                      "PTR": [...], "CNAME": name?, "timeouts": [types]}},
#                     "port": N?, "cases": [{"host", "mailfrom", "helo"}]}]}
#   and writes one JSON answer on stdout:
#     {"version": "...", "answers": [[result, explanation], ...] (first round, in case order),
#      "evaluations": N, "elapsedMs": N}
#   In "memory" mode spf.DNSLookup is replaced by a lookup in the scenario's zone (as pyspf's own
#   test driver does); in "dns" mode pyspf asks the in-process DNS server of the scenario over
#   UDP on 127.0.0.1 through py3dns (even where pyspf would pick dnspython, which reads
#   /etc/resolv.conf), and every socket refuses destinations outside loopback. The default
#   explanation is "DEFAULT", as the suite expects.
#   If pyspf is not importable the answer is {"error": "..."}.
import json
import sys
import time

import loopback_only  # beside this script

try:
    import spf
    import DNS
except ImportError as err:  # the bench reports it; nothing else to do here
    print(json.dumps({"error": "pyspf is not installed (apt-get install python3-spf): %s" % err}))
    sys.exit(0)

request = json.load(sys.stdin)
current = {"zone": {}}


def memory_lookup(name, qtype, strict=True, timeout=None):
    owner = name.lower().rstrip('.')
    node = current["zone"].get(owner)
    if node is None:
        if owner.startswith('error.'):
            raise spf.TempError('DNS timeout (%s)' % owner)
        return []
    if qtype in node.get("timeouts", []):
        raise spf.TempError('DNS timeout (%s %s)' % (qtype, owner))
    key = (name, qtype)
    if node.get("CNAME") is not None:
        # As a server answers: the alias; pyspf follows it (and detects loops) itself.
        return [((name, 'CNAME'), node["CNAME"])]
    if qtype == 'TXT':
        return [(key, [text.encode('utf-8')]) for text in node.get("TXT", [])]
    if qtype == 'MX':
        return [(key, (pref, host)) for pref, host in node.get("MX", [])]
    return [(key, value) for value in node.get(qtype, [])]


loopback_only.install()
if request["mode"] == "memory":
    spf.DNSLookup = memory_lookup
else:
    # pyspf prefers dnspython when it is installed, which asks the servers of /etc/resolv.conf:
    # pydns, pointed at the scenario's server, in every case.
    spf.DNS = DNS
    spf.DNSLookup = spf.DNSLookup_pydns
    DNS.defaults['server'] = ['127.0.0.1']


def evaluate(scenario, case):
    current["zone"] = scenario["zone"]
    if request["mode"] == "dns":
        DNS.defaults['port'] = scenario["port"]
    query = spf.query(i=case["host"], s=case["mailfrom"], h=case["helo"], timeout=2)
    query.set_default_explanation('DEFAULT')
    try:
        result, _code, explanation = query.check()
    except Exception as err:  # a crash is reported as pyspf's answer, never stops the run
        return ['crash', str(err)]
    return [result, explanation]


answers = [evaluate(scenario, case) for scenario in request["scenarios"] for case in scenario["cases"]]
evaluations = 0
started = time.perf_counter()
deadline = started + request["durationMs"] / 1000.0
while time.perf_counter() < deadline:
    for scenario in request["scenarios"]:
        for case in scenario["cases"]:
            evaluate(scenario, case)
            evaluations += 1
elapsed = time.perf_counter() - started
print(json.dumps({"version": spf.__version__, "answers": answers, "evaluations": evaluations, "elapsedMs": elapsed * 1000.0}))
