#!/usr/bin/env python3
"""What packaging/monitoring's rules and dashboard refer to, for tests/monitoring/check.sh.

  refs.py names DIR             the journald_kafka_* metrics alerts.yml and dashboard.json name
  refs.py dashboard DIR OUT     checks the dashboard's structure; writes its queries to OUT as
                                recording rules, so that promtool parses them as PromQL
  refs.py missing DIR METRICS   the names that METRICS (a live agent's /metrics) does not serve

Plain python3 without PyYAML: CI machines and the Rust test that calls check.sh need nothing
beyond the interpreter, so alerts.yml's `expr:` values are read by indentation.
"""
import json
import re
import sys

NAME = re.compile(r"journald_kafka_[a-z0-9_]+")
# Grafana's variables, replaced by something PromQL parses.
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$instance": ".*"}


def rule_exprs(path):
    """Every `expr:` value of a rule file, inline or block scalar (`|`, `>-`)."""
    lines = open(path, encoding="utf-8").read().splitlines()
    exprs, i = [], 0
    while i < len(lines):
        m = re.match(r"^(\s*)(?:-\s+)?expr:\s*(.*)$", lines[i])
        i += 1
        if not m:
            continue
        indent, rest = len(m.group(1)), m.group(2).strip()
        if rest[:1] in ("|", ">"):
            body = []
            while i < len(lines) and (
                not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent
            ):
                body.append(lines[i].strip())
                i += 1
            exprs.append(" ".join(body))
        else:
            exprs.append(rest.strip("'\""))
    rules = len(re.findall(r"^\s*-\s+(?:alert|record):", "\n".join(lines), re.M))
    if not exprs or len(exprs) != rules:
        sys.exit(f"{path}: read {len(exprs)} expr values for {rules} rules")
    return exprs


def panels(dash):
    """Every panel, those inside collapsed rows too."""
    for p in dash.get("panels", []):
        yield p
        yield from p.get("panels", [])


def dashboard_exprs(dash):
    """(where, expr) for every panel target and every query variable; `where` is also a
    valid metric name, for promtool's messages."""
    out = []
    for p in panels(dash):
        for t in p.get("targets", []):
            out.append((f"panel_{p.get('id')}_query_{t.get('refId')}", t.get("expr", "")))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            out.append((f"variable_{v.get('name')}", q.get("query", "") if isinstance(q, dict) else q or ""))
    return out


def load_dashboard(d):
    with open(f"{d}/dashboard.json", encoding="utf-8") as f:
        return json.load(f)


def names(d):
    found = {}
    for e in rule_exprs(f"{d}/alerts.yml"):
        for n in NAME.findall(e):
            found.setdefault(n, set()).add("alerts.yml")
    for _, e in dashboard_exprs(load_dashboard(d)):
        for n in NAME.findall(e):
            found.setdefault(n, set()).add("dashboard.json")
    return found


def check_dashboard(d, out):
    dash = load_dashboard(d)
    bad = []
    if dash.get("uid") != "journald-kafka":
        bad.append(f"uid is {dash.get('uid')!r}, want 'journald-kafka'")
    if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
        bad.append(f"schemaVersion {dash.get('schemaVersion')!r}: want 36 or later")
    var = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    if var.get("datasource", {}).get("type") != "datasource" or var["datasource"].get("query") != "prometheus":
        bad.append("no Prometheus data source variable named datasource")
    if "instance" not in var:
        bad.append("no instance variable")
    ds = {"type": "prometheus", "uid": "${datasource}"}
    ids, boxes = set(), []
    for p in panels(dash):
        where = f"panel {p.get('id')} {p.get('title')!r}"
        if p.get("id") in ids:
            bad.append(f"{where}: id used twice")
        ids.add(p.get("id"))
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in "hwxy") or g["x"] + g["w"] > 24:
            bad.append(f"{where}: gridPos {g} outside the 24 columns")
            continue
        for other, og in boxes:
            if g["x"] < og["x"] + og["w"] and og["x"] < g["x"] + g["w"] and g["y"] < og["y"] + og["h"] and og["y"] < g["y"] + g["h"]:
                bad.append(f"{where}: overlaps {other}")
        boxes.append((where, g))
        if p.get("type") == "row":
            continue
        if p.get("datasource") != ds:
            bad.append(f"{where}: data source is not ${{datasource}}")
        refs = [t.get("refId") for t in p.get("targets", [])]
        if not refs or len(set(refs)) != len(refs):
            bad.append(f"{where}: no targets, or a refId used twice")
        for t in p.get("targets", []):
            if t.get("datasource") != ds:
                bad.append(f"{where} {t.get('refId')}: data source is not ${{datasource}}")
            if "$instance" not in t.get("expr", ""):
                bad.append(f"{where} {t.get('refId')}: the query ignores the instance variable")
    rules = []
    for where, e in dashboard_exprs(dash):
        if where.startswith("variable_"):
            if not re.fullmatch(r"label_values\(journald_kafka_[a-z0-9_]+,\s*instance\)", e.strip()):
                bad.append(f"{where}: query {e!r}")
            continue
        for k, v in GRAFANA_VARS.items():
            e = e.replace(k, v)
        rules.append({"record": where, "expr": e})
    for b in bad:
        print(f"dashboard.json: {b}", file=sys.stderr)
    # JSON is YAML: promtool reads this as a rule file.
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f, indent=1)
    return 1 if bad else 0


def served(path):
    """Sample names a /metrics text serves, descriptors of families without samples included
    (a labelled family such as entries_failed has only its `# TYPE` line until it counts)."""
    known = set()
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) < 4:
                continue
            fam, kind = parts[2], parts[3]
            if kind == "counter":
                known.add(fam if fam.endswith("_total") else fam + "_total")
            elif kind == "histogram":
                known.update({fam + "_bucket", fam + "_sum", fam + "_count"})
            elif kind == "summary":
                known.update({fam, fam + "_sum", fam + "_count"})
            else:
                known.add(fam)
        elif line and not line.startswith("#"):
            known.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return known


def main(argv):
    if len(argv) == 3 and argv[1] == "names":
        print("\n".join(sorted(names(argv[2]))))
        return 0
    if len(argv) == 4 and argv[1] == "dashboard":
        return check_dashboard(argv[2], argv[3])
    if len(argv) == 4 and argv[1] == "missing":
        have = served(argv[3])
        if not any(n.startswith("journald_kafka_") for n in have):
            print(f"{argv[3]}: no journald_kafka_ metric at all: not an agent's /metrics", file=sys.stderr)
            return 1
        missing = {n: used for n, used in names(argv[2]).items() if n not in have}
        for n in sorted(missing):
            print(f"{n} (named by {', '.join(sorted(missing[n]))})")
        return 1 if missing else 0
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
