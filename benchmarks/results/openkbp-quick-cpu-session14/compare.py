"""OpenKBP: ipnp with today's schedule (session 14) against partial-sup and session 9's ipnp (40/60/80), per seed."""
import json
from pathlib import Path
R = Path(__file__).resolve().parent.parent
def organs_of_results(p, title):
    d = json.loads(Path(p).read_text())
    run = next(r for r in d["runs"] if r["title"] == title)
    return run["summary"]["organs"], run.get("seconds")
def organs_of_summary(p):
    return json.loads(Path(p).read_text())["organs"], None
psup = [organs_of_results(R / "openkbp-quick-cpu-session6/partial-sup-results.json", "partial-sup"),
        organs_of_results(R / "openkbp-quick-cpu-session9/partial-sup-s1/results.json", "partial-sup"),
        organs_of_results(R / "openkbp-quick-cpu-session9/partial-sup-s2/results.json", "partial-sup")]
old = [organs_of_summary(R / "openkbp-quick-cpu-session8/ipnp-trust/summary.json"),
       organs_of_summary(R / "openkbp-quick-cpu-session9/ipnp-trust-s1/summary.json"),
       organs_of_summary(R / "openkbp-quick-cpu-session9/ipnp-trust-s2/summary.json")]
new = []
for s in range(3):
    p = R / f"openkbp-quick-cpu-session14/ipnp-s{s}/results.json"
    new.append(organs_of_results(p, "ipnp") if p.is_file() else None)
names = list(psup[0][0])
def dsc(o, n): return 100 * o[n]["dsc"]
def mean(o): return sum(dsc(o, n) for n in names) / len(names)
print("| OAR | partial-sup s0 / s1 / s2 | ipnp 40/60/80 (s8-9) | ipnp 70/80/90 (s14) | new − psup (mean) |")
print("|:---|---|---|---|---:|")
for n in names + ["**Average**"]:
    f = (lambda o: mean(o)) if n.startswith("**") else (lambda o, n=n: dsc(o, n))
    a = [f(x[0]) for x in psup]; b = [f(x[0]) for x in old]; c = [f(x[0]) if x else float("nan") for x in new]
    ok = [i for i in range(3) if new[i]]
    diff = sum(c[i] - a[i] for i in ok) / max(1, len(ok))
    fmt = lambda v: " / ".join(f"{x:.2f}" for x in v) + f" ({sum(v)/3:.2f})"
    print(f"| {n} | {fmt(a)} | {fmt(b)} | {fmt(c)} | {diff:+.2f} |")
for i in range(3):
    if new[i]:
        print(f"seed {i}: new − psup {mean(new[i][0]) - mean(psup[i][0]):+.2f}, new − old {mean(new[i][0]) - mean(old[i][0]):+.2f}, seconds {new[i][1]}")
