"""Sweep grids, the results store and resume, with a fake federation (the real ones are in test_sweep_e2e)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fedcompress.config import RunConfig
from fedcompress.errors import ConfigError
from simulations.sweep import SweepRunner, load_grid, records, store

ROOT = Path(__file__).resolve().parents[1]
GRIDS = ROOT / "simulations" / "grids"

# A stand-in for one federation: reads cell.json, writes a result.json with the contract's keys.
# lr = 0.07 fails at "run time"; a file named `slow` in the sweep folder makes every cell take 30 s; a file named
# `children` makes it start two `sleep`s first (one in a process group of its own) and list its PIDs in `pids.txt`.
FAKE_CELL = textwrap.dedent(
    """
    import json, os, subprocess, sys, time
    from pathlib import Path
    from simulations.processes import tie_to_parent
    tie_to_parent()
    folder = Path(sys.argv[1])
    spec = json.loads((folder / "cell.json").read_text())
    cfg = spec["config"]
    if (folder.parents[1] / "children").exists():
        kids = [subprocess.Popen(["sleep", "300"]), subprocess.Popen(["sleep", "300"], process_group=0)]
        listed = folder.parents[1] / "pids.tmp"
        listed.write_text(" ".join(str(p) for p in [os.getpid()] + [k.pid for k in kids]))
        listed.replace(folder.parents[1] / "pids.txt")
    with open(folder.parents[1] / "invocations.txt", "a") as f:
        f.write(spec["id"] + "\\n")
    if cfg["lr"] == 0.07:
        (folder / "error.txt").write_text("RuntimeError: lr 0.07 is cursed")
        sys.exit(1)
    rounds = []
    for k in range(1, cfg["num-rounds"] + 1):
        if (folder.parents[1] / "slow").exists():
            time.sleep(30)
        print(f"[round {k}/{cfg['num-rounds']}] psnr={20 + k:.2f} dB", flush=True)
        rounds.append({"round": k, "psnr": 20.0 + k + cfg["seed"], "ssim": 0.5, "loss": 0.01,
                       "uplink_bytes": 1000, "downlink_bytes": 4000, "dense_uplink_bytes": 4000,
                       "clients_ok": 2, "clients_failed": 0, "seconds": 0.1, "skipped": False,
                       "epsilon": None if cfg["dp"] == "none" else 1.0 * k})
    private = cfg["dp"] != "none"
    privacy = {"epsilon": 3.0, "delta": cfg["delta"], "noise_multiplier": 1.1, "clip_norm": cfg["clip-norm"],
               "sample_rate": 0.25, "steps": 12, "rounds": cfg["num-rounds"], "accountant": "prv",
               "level": cfg["dp"], "trust": None, "summary": "fake", "ledger": [{}]} if private else {}
    final = {"psnr": rounds[-1]["psnr"], "ssim": 0.5, "psnr_initial": 15.0,
             "uplink_bytes": 1000 * len(rounds),
             "downlink_bytes": 1, "dense_uplink_bytes": 4000 * len(rounds), "compression_ratio": 4.0,
             "epsilon": privacy.get("epsilon")}
    result = {"status": "completed", "config": cfg, "rounds": rounds, "final": final, "privacy": privacy}
    (folder / "result.json").write_text(json.dumps(result))
    """
)


def fake_command(folder: Path) -> list[str]:
    return [sys.executable, "-c", FAKE_CELL, str(folder)]


def write_grid(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(textwrap.dedent(text))
    return path


SMALL = """
    [base]
    num-clients = 2
    num-rounds = 2
    target-epsilon = 4.0
    [grid]
    dp = ["none", "sample"]
    seed = [0, 1]
    [[cells]]
    label = "cursed"
    lr = 0.07
"""


def invocations(out: Path) -> list[str]:
    path = out / "invocations.txt"
    return path.read_text().split() if path.exists() else []


# ------------------------------------------------------------------ grids
@pytest.mark.parametrize("name", ["quick.toml", "tradeoff.toml", "seed-table.toml"])
def test_ready_grids_validate(name):
    sweep = load_grid(GRIDS / name)
    assert sweep.cells
    assert len({c.id for c in sweep.cells}) == len(sweep.cells)


def test_tradeoff_grid_has_three_seeds_per_configuration_and_both_baselines():
    sweep = load_grid(GRIDS / "tradeoff.toml")
    per_config: dict[str, set[int]] = {}
    for cell in sweep.cells:
        per_config.setdefault(records.series_key(cell.runner, cell.config.to_dict()), set()).add(cell.config.seed)
    assert all(len(seeds) >= 3 for seeds in per_config.values())
    assert any(c.runner == "flower-dp" for c in sweep.cells)
    assert any(c.config.dp == "none" and c.config.codec == "none" for c in sweep.cells)


def test_privacy_settings_collapse_when_dp_is_none(tmp_path):
    grid = write_grid(
        tmp_path,
        """
        [grid]
        dp = ["none", "sample"]
        target-epsilon = [1.0, 2.0, 4.0]
        codec = ["none", "balanced"]
    """,
    )
    sweep = load_grid(grid)
    assert len(sweep.cells) == 2 * 1 + 2 * 3
    assert sweep.collapsed == 4
    none_cells = [c for c in sweep.cells if c.config.dp == "none"]
    assert all(c.config.target_epsilon == 0.0 for c in none_cells)
    assert all("target-epsilon" not in c.label for c in none_cells)


def test_skip_rules_and_explicit_cells_expand_lists(tmp_path):
    grid = write_grid(
        tmp_path,
        """
        [base]
        target-epsilon = 2.0
        [grid]
        dp = ["sample"]
        codec = ["none", "balanced", "aggressive"]
        [[skip]]
        codec = ["aggressive"]
        [[cells]]
        label = "FedAvg float32"
        dp = "none"
        codec = "none"
        seed = [0, 1, 2]
    """,
    )
    sweep = load_grid(grid)
    assert sweep.skipped_by_rule == 1
    assert [c.config.codec for c in sweep.cells[:2]] == ["none", "balanced"]
    assert [c.label for c in sweep.cells[2:]] == ["FedAvg float32"] * 3
    assert [c.config.seed for c in sweep.cells[2:]] == [0, 1, 2]


def test_set_overrides_apply_to_every_cell(tmp_path):
    sweep = load_grid(write_grid(tmp_path, SMALL), {"num-rounds": "1"})
    assert {c.config.num_rounds for c in sweep.cells} == {1}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[grid]\ncodecs = ['none']\n", "'codecs'"),
        ("[base]\nnum-round = 3\n", "'num-round'"),
        ("[grid]\nnum-rounds = [0, 2]\n", "'num-rounds'"),
        ("[grid]\ncodec = 'none'\n", "'codec' must be a list"),
        ("[grid]\nseed = []\n", "'seed' has an empty list"),
        ("[grid]\ndp = ['maybe']\n", "'dp'"),
        ("[grids]\ndp = ['none']\n", "unknown table 'grids'"),
        ("[sweep]\ntimeout = 3\n", "'timeout'"),
        ("[base]\nout-dir = '/tmp/x'\n", "'out-dir'"),
        ("[[cells]]\nlabel = 'x'\nrunner = 'tff'\n", "runner 'tff'"),
        ("[[cells]]\nrunner = 'flower-dp'\ndp = 'sample'\ntarget-epsilon = 1.0\n", "dp="),
        ("[[skip]]\ncodek = 'none'\n", "'codek'"),
        ("[grid]\ndp = ['sample']\n", "target-epsilon"),
        ("[grid\n", "cannot read grid file"),
        ("[audit]\niteration = 5\n", "'iteration'"),
        ("[audit]\nepsilons = [0.0]\n", "[audit]"),
    ],
)
def test_bad_grid_files_fail_naming_the_key(tmp_path, text, fragment):
    with pytest.raises(ConfigError, match=None) as info:
        load_grid(write_grid(tmp_path, text))
    assert fragment in str(info.value)


def test_bad_grid_fails_before_anything_runs(tmp_path):
    grid = write_grid(tmp_path, "[grid]\nnum-clients = [2, -1]\n")
    proc = subprocess.run(
        [sys.executable, "-m", "simulations.sweep", str(grid), "--out", str(tmp_path / "o")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "'num-clients'" in proc.stderr
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ store
def test_cell_id_ignores_out_dir_and_key_order_but_not_settings():
    a = {"codec": "none", "seed": 0, "out-dir": "/x"}
    b = {"out-dir": "/y", "seed": 0, "codec": "none"}
    assert records.cell_id("simulate", a) == records.cell_id("simulate", b)
    assert records.cell_id("simulate", a) != records.cell_id("flower-dp", a)
    assert records.cell_id("simulate", a) != records.cell_id("simulate", {**a, "seed": 1})
    assert records.series_key("simulate", a) == records.series_key("simulate", {**a, "seed": 1})


def test_a_torn_last_line_is_skipped_and_the_next_record_survives(tmp_path):
    cell = {"id": "abc", "label": "x", "runner": "simulate", "config": {"seed": 0, "dp": "none"}}
    store.append_record(tmp_path, records.failed_record(cell, "boom", wall_seconds=1.0))
    with open(tmp_path / store.STORE_FILE, "a") as f:
        f.write('{"schema": 1, "cell": "half')  # a writer killed mid-line
    store.append_record(tmp_path, records.failed_record({**cell, "id": "def"}, "boom", wall_seconds=1.0))
    assert [r["cell"] for r in store.read_records(tmp_path)] == ["abc", "def"]


# ------------------------------------------------------------------ running, resume, failures
def test_sweep_records_every_cell_continues_after_a_failure_and_writes_csv(tmp_path):
    sweep = load_grid(write_grid(tmp_path, SMALL))
    out = tmp_path / "out"
    code = SweepRunner(sweep, out, command=fake_command).run()
    assert code == 1  # one cell failed
    latest = store.latest_records(store.read_records(out))
    assert len(latest) == len(sweep.cells) == 5
    statuses = {c.label: latest[c.id]["status"] for c in sweep.cells}
    assert statuses.pop("cursed") == "failed"
    assert set(statuses.values()) == {"ok"}
    cursed = next(r for r in latest.values() if r["label"] == "cursed")
    assert "lr 0.07 is cursed" in cursed["error"]
    header = (out / store.CSV_FILE).read_text().splitlines()[0].split(",")
    for column in (
        "cell",
        "status",
        "final_psnr",
        "privacy_epsilon",
        "privacy_delta",
        "privacy_noise_multiplier",
        "privacy_clip_norm",
        "privacy_sample_rate",
        "privacy_steps",
        "privacy_accountant",
        "privacy_noise_std",
        "target_epsilon",  # settings in snake_case like every other column
        "codec",
        "seed",
    ):
        assert column in header
    assert len((out / store.CSV_FILE).read_text().splitlines()) == 1 + 5


def test_rerun_skips_finished_and_failed_cells_unless_asked(tmp_path):
    sweep = load_grid(write_grid(tmp_path, SMALL))
    out = tmp_path / "out"
    SweepRunner(sweep, out, command=fake_command).run()
    assert len(invocations(out)) == 5
    SweepRunner(sweep, out, command=fake_command).run()
    assert len(invocations(out)) == 5
    SweepRunner(sweep, out, command=fake_command, retry_failed=True).run()
    cursed = next(c.id for c in sweep.cells if c.label == "cursed")
    assert invocations(out)[5:] == [cursed]


def test_an_interrupted_cell_resumes_in_its_own_folder_from_its_checkpoint(tmp_path):
    sweep = load_grid(write_grid(tmp_path, SMALL))
    out = tmp_path / "out"
    SweepRunner(sweep, out, command=fake_command).run()
    # Interrupted: the store lost the last ok cell's record, and its folder holds a run that stopped half way.
    lines = (out / store.STORE_FILE).read_text().splitlines()
    victim = json.loads(lines[3])
    (out / store.STORE_FILE).write_text("\n".join(lines[:3] + lines[4:]) + "\n")
    folder = out / "cells" / victim["cell"]
    (folder / "result.json").write_text('{"status": "running"}')
    (folder / "checkpoint.pt").write_bytes(b"the run's checkpoint")
    SweepRunner(sweep, out, command=fake_command).run()
    assert invocations(out)[5:] == [victim["cell"]]
    assert (folder / "checkpoint.pt").read_bytes() == b"the run's checkpoint"  # kept for the run to continue
    spec = json.loads((folder / "cell.json").read_text())
    assert spec["config"]["resume"] is True and spec["config"]["out-dir"] == str(folder)
    log = (folder / "log.txt").read_text()
    assert ": start" in log and ": resume" in log  # one log, both attempts
    assert store.latest_records(store.read_records(out))[victim["cell"]]["status"] == "ok"


@pytest.mark.parametrize("case", ["no checkpoint yet", "retried failure", "flower-dp runner"])
def test_cells_that_cannot_resume_start_from_an_empty_folder(tmp_path, case):
    grid = SMALL + (
        '[[cells]]\nrunner = "flower-dp"\ndp = "client"\ndp-noise = "central"\nclient-sampling = "poisson"\n'
        'codec = "none"\ntarget-epsilon = 8.0\n'
    )
    sweep = load_grid(write_grid(tmp_path, grid))
    cell = {
        "no checkpoint yet": sweep.cells[0],
        "retried failure": next(c for c in sweep.cells if c.label == "cursed"),
        "flower-dp runner": next(c for c in sweep.cells if c.runner == "flower-dp"),
    }[case]
    runner = SweepRunner(sweep, tmp_path / "out", command=fake_command)
    folder = tmp_path / "out" / "cells" / cell.id
    folder.mkdir(parents=True)
    (folder / "result.json").write_text('{"status": "running"}')
    if case != "no checkpoint yet":
        (folder / "checkpoint.pt").write_bytes(b"saved state")
    prepared, resume = runner._prepare_folder(cell, fresh=case == "retried failure")
    assert prepared == folder and resume is False
    assert sorted(p.name for p in folder.iterdir()) == ["cell.json"]
    assert json.loads((folder / "cell.json").read_text())["config"]["resume"] is False


def _sweep_in_a_process(grid: Path, out: Path) -> subprocess.Popen[str]:
    code = (
        "import sys; from pathlib import Path; from simulations.sweep import SweepRunner, load_grid; "
        f"fake = {FAKE_CELL!r}\n"
        "try:\n"
        f"    SweepRunner(load_grid({str(grid)!r}), Path({str(out)!r}), "
        "command=lambda d: [sys.executable, '-c', fake, str(d)]).run()\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(130)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=lambda s: s.name)
def test_a_stopped_sweep_leaves_nothing_of_its_cell_running_and_frees_its_lock(tmp_path, sig):
    from simulations.processes import process_alive, session_members
    from simulations.sweep import SweepLock

    grid = write_grid(tmp_path, SMALL)
    out = tmp_path / "out"
    out.mkdir()
    (out / "slow").touch()
    (out / "children").touch()  # the cell starts two sleeps, one of them in a process group of its own
    proc = _sweep_in_a_process(grid, out)
    deadline = time.monotonic() + 60
    while not (out / "pids.txt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    cell, *children = (int(pid) for pid in (out / "pids.txt").read_text().split())
    assert all(process_alive(pid) for pid in (cell, *children))
    proc.send_signal(sig)
    code = proc.wait(timeout=60)
    if sig == signal.SIGKILL:  # nobody left to clean up: Linux SIGTERMs the cell, which ends its session
        assert code == -signal.SIGKILL
        deadline = time.monotonic() + 120  # catches a hang; a loaded machine can be slow to run the handler
        while session_members(cell) and time.monotonic() < deadline:
            time.sleep(0.05)
    else:  # the sweep itself stops the cell's whole session before it exits
        assert code == 130
        assert "interrupted" in proc.stdout.read()
    assert session_members(cell) == []
    assert not any(process_alive(pid) for pid in (cell, *children))
    with SweepLock(out):  # the lock is free again
        pass
    assert store.read_records(out) == []  # an interrupted cell is not a failed one: a rerun runs it


def test_a_killed_sweep_loses_only_the_running_cell(tmp_path):
    grid = write_grid(tmp_path, SMALL)
    out = tmp_path / "out"
    out.mkdir()
    code = (
        "import sys; from pathlib import Path; from simulations.sweep import SweepRunner, load_grid; "
        f"fake = {FAKE_CELL!r}; "
        f"SweepRunner(load_grid({str(grid)!r}), Path({str(out)!r}), "
        "command=lambda d: [sys.executable, '-c', fake, str(d)]).run()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    deadline = time.monotonic() + 60
    while len(invocations(out)) < 2 and time.monotonic() < deadline:  # first cell done, second started
        if len(invocations(out)) == 1:
            (out / "slow").touch()
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (out / "slow").unlink()
    done = store.latest_records(store.read_records(out))
    assert len(done) >= 1
    time.sleep(2.5)  # the orphaned cell notices its sweep is gone and ends its process group
    assert SweepRunner(load_grid(grid), out, command=fake_command).run() == 1  # the lock is free again
    latest = store.latest_records(store.read_records(out))
    assert len(latest) == 5
    reruns = invocations(out)[len(done) + 1 :]
    assert len(reruns) == 5 - len(done)  # only the killed cell and those never started ran again


def test_a_second_sweep_on_the_same_folder_is_refused_while_one_runs(tmp_path):
    from fedcompress.errors import RunError
    from simulations.sweep import SweepLock

    out = tmp_path / "out"
    out.mkdir()
    with SweepLock(out), pytest.raises(RunError, match="another sweep"):
        SweepRunner(load_grid(write_grid(tmp_path, SMALL)), out, command=fake_command).run()


def test_register_adds_sweep_and_report_subcommands_for_the_cli():
    import argparse

    from simulations.commands import report, sweep

    parser = argparse.ArgumentParser(prog="fedcompress")
    sub = parser.add_subparsers(dest="command", required=True)
    sweep.register(sub)
    report.register(sub)
    args = parser.parse_args(["sweep", "g.toml", "--out", "d", "--set", "num-rounds=1", "--retry-failed"])
    assert (args.grid, args.out, args.set, args.retry_failed) == ("g.toml", "d", ["num-rounds=1"], True)
    assert callable(args.func)
    assert parser.parse_args(["report", "d"]).dir == "d"


def test_dry_run_lists_cells_and_runs_nothing(tmp_path, capsys):
    from simulations.commands.sweep import main

    grid = write_grid(tmp_path, SMALL)
    assert main([str(grid), "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    assert "5 cells" in capsys.readouterr().out
    assert not (tmp_path / "o").exists()


def test_eta_counts_each_finished_round_once(tmp_path):
    from simulations.sweep import Progress

    sweep = load_grid(write_grid(tmp_path, SMALL))  # 5 cells of 2 rounds
    progress = Progress(sweep.cells)
    assert progress.eta() is None
    progress.start_cell()
    progress.round_done(2)
    time.sleep(0.2)
    progress.finish_cell(sweep.cells[0])
    assert progress.eta() == pytest.approx(progress.spent * 4, rel=0.2)  # 8 of 10 rounds to go


def test_a_cell_past_its_timeout_is_stopped_and_recorded_as_failed(tmp_path):
    sweep = load_grid(write_grid(tmp_path, "[base]\nnum-rounds = 1\n"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "slow").touch()
    started = time.monotonic()
    assert SweepRunner(sweep, out, command=fake_command, cell_timeout=2).run() == 1
    assert time.monotonic() - started < 25
    (record,) = store.read_records(out)
    assert record["status"] == "failed" and "timed out after 2 s" in record["error"]


def test_cells_run_with_single_threaded_blas_unless_the_user_says_otherwise(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    sweep = load_grid(write_grid(tmp_path, "[base]\nnum-rounds = 1\n"))
    probe = (
        "import os, sys; open(sys.argv[1] + '/env.txt', 'w')"
        ".write(os.environ['OPENBLAS_NUM_THREADS'] + os.environ['OMP_NUM_THREADS'])"
    )
    SweepRunner(sweep, tmp_path / "out", command=lambda d: [sys.executable, "-c", probe, str(d)]).run()
    assert (tmp_path / "out" / "cells" / sweep.cells[0].id / "env.txt").read_text() == "13"


def test_a_store_written_before_a_setting_existed_still_knows_its_cells():
    from simulations.sweep import cell_id, latest_records

    config = RunConfig(codec="ultra", seed=3).to_dict()
    older = {k: v for k, v in config.items() if k not in ("server-optimizer", "dp-keep")}  # before those settings
    record = {"cell": "0123456789ab", "runner": "simulate", "config": older, "status": "ok"}
    latest = latest_records([record])
    assert list(latest) == [cell_id("simulate", config)]  # the cell a grid builds today
    assert latest[cell_id("simulate", config)]["cell"] == "0123456789ab"  # its folder keeps its old name
    assert cell_id("simulate", config) != cell_id("simulate", RunConfig(codec="ultra", seed=4).to_dict())
