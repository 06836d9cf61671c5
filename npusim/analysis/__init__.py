"""Looking at finished runs: inspect and diff traces, draw them, and sweep a grid of runs.

Every function here is a pure function of op records (rebuilt from a trace by npusim.trace.read) or of
sweep rows, and returns plain dicts or matplotlib figures; rendering for the terminal lives in
npusim/cli/trace_cmds.py and npusim/cli/sweep_cmd.py. Busy cycles, stall causes and the critical path
come from npusim.report (metrics, attribution), so a trace reports the same numbers as the run that wrote it.
"""
