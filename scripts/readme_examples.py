#!/usr/bin/python3
"""Runs the README's examples and compares what they print with what the
README shows (or, with --update, writes the current output into it).

An example is a ```sh block followed at once by a bare ``` block: the sh
block runs under bash from the repository root (its # lines are comments),
and its standard output must equal the bare block. Examples that read data/
(the datasets scripts/get_data.sh fetches) are skipped when data/ is absent.
The examples run with OMP_NUM_THREADS=1, so results do not depend on how busy
the machine is.

  scripts/readme_examples.py                 check; exit 1 on any difference
  scripts/readme_examples.py --update        rewrite the outputs in README.md
  scripts/readme_examples.py --bin DIR       executables in DIR, not build/bin
  scripts/readme_examples.py --only TEXT     only examples whose command has TEXT
"""
import argparse
import difflib
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def examples(lines):
    """(command_lines, output_start, output_end) for each example; the output
    is lines[output_start:output_end]."""
    i = 0
    while i < len(lines):
        if lines[i].rstrip() == "```sh":
            j = i + 1
            while j < len(lines) and lines[j].rstrip() != "```":
                j += 1
            if j + 1 < len(lines) and lines[j + 1].rstrip() == "```":
                k = j + 2
                while k < len(lines) and lines[k].rstrip() != "```":
                    k += 1
                if k == len(lines):
                    sys.exit(f"README.md:{j + 2}: output block never closed")
                yield i, lines[i + 1:j], j + 2, k
                i = k
            else:
                i = j
        i += 1


def run(commands, bin_dir, workdir):
    script = "\n".join(commands)
    if bin_dir != "build/bin":
        script = script.replace("build/bin/", bin_dir.rstrip("/") + "/")
    env = dict(os.environ, OMP_NUM_THREADS="1", LC_ALL="C.UTF-8")
    result = subprocess.run(["bash", "-o", "pipefail", "-c", script], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)
    return result.returncode, result.stdout.decode("utf-8", "replace"), result.stderr.decode("utf-8", "replace")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--update", action="store_true", help="write the current outputs into README.md")
    parser.add_argument("--bin", default="build/bin", help="directory of the executables (default build/bin)")
    parser.add_argument("--only", default="", help="run only examples whose command contains this text")
    parser.add_argument("--readme", default=os.path.join(ROOT, "README.md"))
    args = parser.parse_args()
    bin_dir = os.path.abspath(args.bin) if args.bin != "build/bin" else args.bin
    with open(args.readme, encoding="utf-8") as f:
        lines = f.read().split("\n")
    have_data = os.path.isdir(os.path.join(ROOT, "data"))
    checked = skipped = differ = failed = 0
    replacements = []
    with tempfile.TemporaryDirectory() as workdir:
        # The examples run in a scratch directory that sees the checkout's
        # build/, models/, scripts/ and data/, so files they write land there.
        for name in ("build", "models", "scripts", "data", "tests"):
            if os.path.exists(os.path.join(ROOT, name)):
                os.symlink(os.path.join(ROOT, name), os.path.join(workdir, name))
        for start, commands, out_start, out_end in examples(lines):
            code = [c for c in commands if c.strip() and not c.lstrip().startswith("#")]
            shown = " ".join(c.strip() for c in code)
            if args.only and args.only not in shown:
                continue
            if re.search(r"(^|[\s=])data/", shown) and not have_data:
                skipped += 1
                continue
            status, out, err = run(code, bin_dir, workdir)
            checked += 1
            where = f"{os.path.basename(args.readme)}:{start + 1}"
            if status != 0:
                failed += 1
                print(f"FAIL {where}: `{shown}` exited {status}: {err.strip().splitlines()[-1:] }")
                continue
            got = out.rstrip("\n").split("\n") if out else []
            want = lines[out_start:out_end]
            if got != want:
                differ += 1
                if args.update:
                    replacements.append((out_start, out_end, got))
                    print(f"updated {where}: `{shown}`")
                else:
                    print(f"DIFFERS {where}: `{shown}`")
                    sys.stdout.writelines(l + "\n" for l in difflib.unified_diff(
                        want, got, "README", "now", lineterm="", n=1))
    if args.update and replacements:
        for s, e, got in sorted(replacements, reverse=True):
            lines[s:e] = got
        with open(args.readme, "w", encoding="utf-8") as f:
            f.write("\n".join(lines))
    print(f"readme examples: {checked} run, {differ} differ{' (updated)' if args.update else ''}, "
          f"{failed} failed, {skipped} skipped (they need data/: scripts/get_data.sh)")
    return 1 if failed or (differ and not args.update) else 0


if __name__ == "__main__":
    sys.exit(main())
