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
