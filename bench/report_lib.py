"""Helpers shared by the benchmark report scripts (lb_report.py,
faults_report.py, gen_report.py): reading what the shell scripts wrote."""
import os


def read_tsv(path):
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        header = f.readline().rstrip("\n").split("\t")
        for line in f:
            if line.strip():
                rows.append(dict(zip(header, line.rstrip("\n").split("\t"))))
    return rows


def read_meta(path):
    meta = {}
    with open(path) as f:
        for line in f:
            k, sep, v = line.rstrip("\n").partition("=")
            if sep:
                meta[k] = v
    return meta


def update_doc(doc, begin, end, section, heading, after=None):
    """Replace what stands between the begin and end markers of doc with
    section. When the markers are missing, insert heading + the marked section
    after the marker `after` if given and present, else at the end of the file
    (created as "# Benchmarks" when absent). Written atomically."""
    block = f"{begin}\n{section}{end}"
    if os.path.exists(doc):
        with open(doc) as f:
            text = f.read()
    else:
        text = "# Benchmarks\n"
    i, j = text.find(begin), text.find(end)
    k = text.find(after) if after else -1
    if i >= 0 and j > i:
        text = text[:i] + block + text[j + len(end):]
    elif k >= 0:
        k += len(after)
        text = text[:k] + "\n\n" + heading + block + text[k:]
    else:
        if not text.endswith("\n"):
            text += "\n"
        text += "\n" + heading + block + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(doc)), exist_ok=True)
    tmp = doc + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, doc)


def machine_note(meta, threshold=90):
    """How busy the machine was before the run: quiet when its CPUs were at
    least threshold % idle in the seconds before the script started its
    servers (cpu_idle_pct in scripts/bench-lib.sh), shared otherwise. The
    load average is no guide here: it still counts the benchmark before."""
    idle = meta.get("idle_start")
    if idle is None or not str(idle).isdigit():
        return "machine load before the run not recorded"
    if int(idle) >= threshold:
        return "quiet machine: CPUs %s%% idle in the 2 s before the run" % idle
    return ("**shared machine**: CPUs only %s%% idle in the 2 s before the run (other work ran: "
            "figures are noisy; compare the setups of one run, not runs of different days)"
            % idle)
