#!/usr/bin/env python3
# Module layering (ARCHITECTURE.md "Layers", STYLE.md 4.2): a module's
# sources include only the public headers (include/tkv/<m>.h,
# include/tinykv/*.h) of modules BELOW it, plus its own private headers.
# The order is ARCHITECTURE.md's table (bottom up); src/config and
# src/status are split out of base/ and server/ (their READMEs say why).
# Also: the CMake link graph of the tkv_* libraries has no cycle (the
# generated nanopb C and the pb glue used to be two libraries that needed
# each other).
#
#   check_layering.py REPO        check the repository (exit 1 on violations)
#   check_layering.py --self-test show that an upward include is caught
import os
import re
import sys
import tempfile

ORDER = ["base", "config", "codec", "reactor", "rpc", "status", "pb", "engine", "raft",
         "raftlog", "router", "raftstore", "transport", "txn", "server", "client", "tools", "sched"]

# public header -> owning module (headers not listed belong to the module
# named like the header)
HEADER_OWNER = {
    "err": "base", "mem": "base", "arena": "base", "log": "base", "metrics": "base",
    "hostport": "base", "fsutil": "base", "common": "base", "txn_cluster": "txn",
    "transport": "transport",
}

INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', re.M)


def owner_of(header, module, own_private):
    """Module a quoted include belongs to, or None when not ours."""
    if header.startswith("tkv/") and header.endswith(".h"):
        name = header[4:-2]
        return HEADER_OWNER.get(name, name)
    if header.startswith("tinykv/"):
        return "client"
    if header.endswith(".pb.h"):
        return "pb"  # nanopb-generated messages live with the pb glue
    base = os.path.basename(header)
    if base in own_private:
        return module
    return None


def module_files(root):
    """(module, path) of every C source and header under src/<m>/ and sched/."""
    out = []
    src = os.path.join(root, "src")
    for m in sorted(os.listdir(src)):
        d = os.path.join(src, m)
        if os.path.isdir(d):
            for f in sorted(os.listdir(d)):
                if f.endswith((".c", ".h")):
                    out.append((m, os.path.join(d, f)))
    sched = os.path.join(root, "sched")
    if os.path.isdir(sched):
        for dirpath, _, files in os.walk(sched):
            for f in sorted(files):
                if f.endswith((".c", ".h")):
                    out.append(("sched", os.path.join(dirpath, f)))
    return out


def check(root):
    problems = []
    files = module_files(root)
    private = {}
    for m, p in files:
        if p.endswith(".h"):
            private.setdefault(m, set()).add(os.path.basename(p))
    for m, p in files:
        if m not in ORDER:
            problems.append("%s: module %r is not in the layering order (add it to ORDER in %s "
                            "and to ARCHITECTURE.md's table)" % (p, m, __file__))
            continue
        rank = ORDER.index(m)
        with open(p, encoding="utf-8", errors="replace") as f:
            text = f.read()
        for inc in INCLUDE.findall(text):
            own = private.get(m, set())
            o = owner_of(inc, m, own)
            if o is None:
                # a private header of ANOTHER module is never allowed
                for other, hdrs in private.items():
                    if other != m and os.path.basename(inc) in hdrs and not inc.startswith("tkv/"):
                        problems.append("%s includes %s, a private header of %s" % (p, inc, other))
                continue
            if o not in ORDER:
                problems.append("%s includes %s of unknown module %r" % (p, inc, o))
            elif ORDER.index(o) > rank:
                problems.append("%s (module %s) includes %s of module %s, which is above it" %
                                (p, m, inc, o))
    return problems


LINK_CALL = re.compile(r"\b(tkv_module|target_link_libraries)\s*\(([^)]*)\)", re.S)


def link_graph(root):
    """{tkv_x: {tkv_y, ...}} from the CMake files of src/, proto/ and sched/."""
    graph = {}
    dirs = [os.path.join(root, "proto"), os.path.join(root, "sched")]
    src = os.path.join(root, "src")
    dirs += [os.path.join(src, d) for d in sorted(os.listdir(src))]
    for d in dirs:
        path = os.path.join(d, "CMakeLists.txt")
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            text = re.sub(r"#.*", "", f.read())
        for kind, args in LINK_CALL.findall(text):
            words = args.split()
            if not words:
                continue
            target = "tkv_" + words[0] if kind == "tkv_module" else words[0]
            if not target.startswith("tkv_"):
                continue
            deps = {w for w in words[1:] if re.fullmatch(r"tkv_[a-z_]+", w)}
            graph.setdefault(target, set()).update(deps - {target})
    return graph


def link_cycles(graph):
    """Every cycle of library dependencies, as a list of names."""
    cycles, state = [], {}

    def visit(n, stack):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m, stack)
        stack.pop()
        state[n] = 2
    for n in sorted(graph):
        if n not in state:
            visit(n, [])
    return cycles


def self_test():
    with tempfile.TemporaryDirectory() as root:
        for m, body in [("base", '#include "tkv/err.h"\n#include "tkv/reactor.h"\n'),
                        ("reactor", '#include "tkv/log.h"\n#include "reactor_private.h"\n'),
                        ("raft", '#include "reactor_private.h"\n')]:
            os.makedirs(os.path.join(root, "src", m))
            with open(os.path.join(root, "src", m, m + "_x.c"), "w") as f:
                f.write(body)
        with open(os.path.join(root, "src", "reactor", "reactor_private.h"), "w") as f:
            f.write("\n")
        problems = check(root)
        want = ["includes tkv/reactor.h of module reactor, which is above it",
                "includes reactor_private.h, a private header of reactor"]
        for w in want:
            if not any(w in p for p in problems):
                print("self-test: the check missed: %s\n got: %s" % (w, problems))
                return 1
        if len(problems) != 2:
            print("self-test: unexpected problems: %s" % problems)
            return 1
        cyc = link_cycles({"tkv_pb": {"tkv_proto", "tkv_base"}, "tkv_proto": {"tkv_pb"},
                           "tkv_base": set()})
        if not cyc:
            print("self-test: the pb <-> proto link cycle was not found")
            return 1
    print("self-test ok: an upward include, a foreign private header and a link cycle are caught")
    return 0


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..", "..")
    problems = check(os.path.abspath(root))
    for c in link_cycles(link_graph(os.path.abspath(root))):
        problems.append("library dependency cycle: " + " -> ".join(c))
    for p in problems:
        print(p)
    if problems:
        print("%d layering violation(s); order (bottom up): %s" % (len(problems), " < ".join(ORDER)))
        return 1
    print("layering ok: %s" % " < ".join(ORDER))
    return 0


if __name__ == "__main__":
    sys.exit(main())
