#!/usr/bin/python3
"""Checks that every loop marked `#pragma omp simd` (or CELLSTATE_SIMD) in
the library is vectorised by the compiler.

The hand-written kernels (recurrent passes, dropout masks, Adam, the loss,
the CRF, attention, top_log_probs, int8 rounding) are written to be
auto-vectorised, and nothing else notices when one stops being: a build
change once made the dropout mask loop scalar (15x slower) with every
test still passing. This recompiles each source that has such a loop with
its own command from compile_commands.json plus GCC's
-fopt-info-vec-optimized, and fails, naming FILE:LINE, for each marked loop
with no "loop vectorized" report within its first lines.

  check_vectorised.py BUILD_DIR            the library's sources
  check_vectorised.py --selftest FIXTURE   the check fails where it must

Exit 0: all vectorised; 1: some are not; 77: skipped (not GCC, or the
kernels are not built for this CPU, or no compile_commands.json).
"""
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile

MARK = re.compile(r'^\s*(#pragma\s+omp\s+simd\b|CELLSTATE_SIMD\s*$)')
REPORT = re.compile(r'^(.*?):(\d+):\d+: optimized: loop vectorized')
WINDOW = 4  # a report names a line of the loop's header or body


def is_gcc(compiler):
    try:
        out = subprocess.run([compiler, '--version'], capture_output=True, text=True).stdout
    except OSError:
        return False
    return 'Free Software Foundation' in out and 'clang' not in out.lower()


def marked_lines(path):
    with open(path, encoding='utf-8') as f:
        return [i + 1 for i, line in enumerate(f) if MARK.match(line) and '#define' not in line]


def vectorised_lines(args, source, directory):
    """Line numbers of `source` that GCC reports as vectorised loops."""
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, 'report.txt')
        cmd = args + ['-fopt-info-vec-optimized=' + report, '-o', os.devnull]
        done = subprocess.run(cmd, cwd=directory, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f'{source}: the compiler failed:\n{done.stderr[-2000:]}')
        lines = set()
        with open(report, encoding='utf-8') as f:
            for row in f:
                m = REPORT.match(row)
                if m and os.path.realpath(os.path.join(directory, m.group(1))) == os.path.realpath(source):
                    lines.add(int(m.group(2)))
        return lines


def strip_output(args):
    """The command without its output and dependency-file options."""
    kept, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a in ('-o', '-MF', '-MT', '-MQ'):
            skip = True
            continue
        if a in ('-MD', '-MMD'):
            continue
        kept.append(a)
    return kept


def check(source, args, directory):
    marks = marked_lines(source)
    if not marks:
        return []
    done = vectorised_lines(args, source, directory)
    return [f'{source}:{m}: the loop under this `omp simd` is not vectorised (GCC -fopt-info-vec-optimized '
            f'reports none in lines {m + 1}-{m + WINDOW})'
            for m in marks if not any(m < d <= m + WINDOW for d in done)]


def main():
    if len(sys.argv) == 3 and sys.argv[1] == '--selftest':
        fixture = os.path.abspath(sys.argv[2])
        if not is_gcc('c++'):
            print('not GCC: skipped')
            return 77
        failures = check(fixture, ['c++', '-std=c++17', '-O3', '-fopenmp', '-march=native', '-c', fixture],
                         os.path.dirname(fixture))
        bad = marked_lines(fixture)[:1]
        lines = [int(f.split(':')[1]) for f in failures]
        if lines != bad:
            print(f'self-test: expected exactly line {bad} reported, got {failures}')
            return 1
        print(f'self-test: the scalar loop was found ({failures[0]}); the vectorised one passed')
        return 0
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    build = sys.argv[1]
    db_path = os.path.join(build, 'compile_commands.json')
    if not os.path.exists(db_path):
        print(f'{db_path}: missing (configure with CMAKE_EXPORT_COMPILE_COMMANDS): skipped')
        return 77
    with open(db_path, encoding='utf-8') as f:
        db = json.load(f)
    entries = [e for e in db if '/lib/src/' in e['file']]
    checked, failures, gcc = 0, [], {}
    for e in entries:
        args = shlex.split(e['command']) if 'command' in e else list(e['arguments'])
        if args and os.path.basename(args[0]) == 'ccache':
            args = args[1:]
        if not marked_lines(e['file']):
            continue
        if args[0] not in gcc:
            gcc[args[0]] = is_gcc(args[0])
        if not gcc[args[0]]:
            print(f'{args[0]} is not GCC: skipped')
            return 77
        if '-march=native' not in args:
            print(f'{e["file"]}: not compiled with -march=native (CELLSTATE_NATIVE=OFF): skipped')
            return 77
        failures += check(e['file'], strip_output(args), e['directory'])
        checked += 1
    for f in failures:
        print(f)
    print(f'{checked} files with omp simd loops checked, {len(failures)} loop(s) not vectorised')
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
