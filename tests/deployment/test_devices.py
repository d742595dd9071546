"""Device targets: the registry, the harness protocol, footprints, and failures reported.

Claims: every target's package data exists; the harness output is checked (row count,
checksum) so truncated or corrupted output fails; a model over a target's budget gets a
message with its numbers and a hint, never a linker error; a crashing or hanging firmware is
a ToolchainError within its timeout; a missing tool names its Debian package.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest

from fedge.deployment import device_harness as harness
from fedge.deployment.device_verify import measure_footprint, verify_on_device
from fedge.deployment.devices import (
    DEVICES,
    TARGETS_DIR,
    Requirement,
    compile_object,
    get_target,
    link_firmware,
    run_firmware,
)
from fedge.deployment.formats.c.emit import emit_c
from fedge.errors import ToolchainError
from fedge.ir import lower
from tools import require_tool

RUNNABLE = [name for name, t in DEVICES.items() if t.runnable]


def _require(target: str) -> None:
    for r in DEVICES[target].requirements:
        if not r.is_file:
            require_tool(r.what, r.package)


def _logreg(n_features: int = 30, n_classes: int = 2):
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    X, y = make_classification(
        200,
        n_features,
        n_informative=min(n_features, 4),
        n_redundant=0,
        n_classes=n_classes,
        n_clusters_per_class=1,
        random_state=0,
    )
    X = X.astype(np.float32)
    return LogisticRegression(max_iter=500).fit(X, y), X


# -- the registry -----------------------------------------------------------------------------


def test_the_registry_has_the_issue_targets_and_their_files() -> None:
    assert set(DEVICES) >= {
        "host",
        "cortex-m4f",
        "cortex-m3",
        "cortex-m0plus",
        "cortex-m7",
        "arduino-uno",
        "esp32c3",
        "raspberry-pi",
    }
    for t in DEVICES.values():
        assert (TARGETS_DIR / t.port).is_file()
        for f in (*t.startup, *([t.prelude] if t.prelude else [])):
            assert (TARGETS_DIR / f).is_file()
        for flag in t.ldflags:
            if "{targets}" in flag:
                assert Path(flag.replace("{targets}", str(TARGETS_DIR))).is_file()
        assert "-ffp-contract=off" in t.cflags
    uno = DEVICES["arduino-uno"]
    assert (uno.flash_budget, uno.ram_budget, uno.double_is_32bit) == (32768, 2048, True)
    assert not DEVICES["cortex-m0plus"].runnable and not DEVICES["cortex-m7"].runnable
    assert (TARGETS_DIR / "simavr_runner.c").is_file()


def test_an_unknown_target_lists_the_known_ones() -> None:
    with pytest.raises(ToolchainError, match="known targets: host, cortex-m4f"):
        get_target("esp8266")
    assert get_target(DEVICES["host"]) is DEVICES["host"]


def test_a_missing_compiler_names_its_package() -> None:
    fake = dataclasses.replace(
        get_target("cortex-m3"),
        name="fake-m3",
        compiler="fedge-no-such-gcc",
        requirements=(Requirement("fedge-no-such-gcc", "gcc-fedge-fake"),),
    )
    model, X = _logreg(4)
    with pytest.raises(ToolchainError, match="apt-get install gcc-fedge-fake"):
        verify_on_device(model, X[:2], fake)
    with pytest.raises(ToolchainError, match="apt-get install gcc-fedge-fake"):
        measure_footprint(model, fake)
    missing_file = dataclasses.replace(
        fake, requirements=(Requirement("/nonexistent/fedge/sim_avr.h", "libfake-dev"),)
    )
    with pytest.raises(ToolchainError, match="libfake-dev"):
        missing_file.check()


# -- the harness protocol ---------------------------------------------------------------------


def _fake_output(code, words: np.ndarray, *, rows: int | None = None, total: int = 0) -> str:
    lines = ["noise from the emulator", "FEDGE-BEGIN"]
    lines += ["R " + " ".join(f"{w:08x}" for w in row) + " " for row in words.tolist()]
    n = len(words) if rows is None else rows
    lines += [f"I {total:08x}", f"E {n:08x} {harness.checksum(words):08x}"]
    return "\n".join(lines) + "\n"


def test_parse_output_reads_exact_bits_and_rejects_bad_output() -> None:
    model, _ = _logreg(3)
    code = emit_c(lower(model), "m")
    per_row = harness.words_per_row(code)
    assert per_row == 1 + 2 + 1  # score, two probabilities, label
    scores = np.array([[0.1], [np.nan], [-0.0]], dtype=np.float32)
    proba = np.array([[0.3, 0.7], [0.5, 0.5], [1.0, 0.0]], dtype=np.float32)
    labels = np.array([[1], [0], [1]], dtype=np.uint32)
    words = np.concatenate([scores.view(np.uint32), proba.view(np.uint32), labels], axis=1)
    out = harness.parse_output(_fake_output(code, words, total=99), code, 3, where="t")
    assert out.scores.view(np.uint32).tolist() == scores.view(np.uint32).tolist()
    assert out.proba is not None and np.array_equal(out.proba, proba)
    assert out.predict.tolist() == [1, 0, 1] and out.counter_total == 99
    with pytest.raises(ToolchainError, match="stopped early"):
        harness.parse_output(_fake_output(code, words[:2]), code, 3, where="t")
    with pytest.raises(ToolchainError, match="printed no output"):
        harness.parse_output("Timer with period zero\n", code, 3, where="t")
    corrupt = _fake_output(code, words).replace("R 3dcccccd", "R 3dcccccc")
    with pytest.raises(ToolchainError, match="checksum"):
        harness.parse_output(corrupt, code, 3, where="t")
    with pytest.raises(ToolchainError, match="trailer says 4"):
        harness.parse_output(_fake_output(code, words, rows=4), code, 3, where="t")


def test_stack_usage_follows_the_call_graph() -> None:
    source = (
        "static float m_exp(float x) {\n    return x;\n}\n"
        "static float m_logistic(float x) {\n    return m_exp(x);\n}\n"
        "void m_decision_function(const float *x, float *s)\n{\n    s[0] = x[0];\n}\n"
        "void m_predict_proba(const float *x, float *p)\n{\n"
        "    float s[1];\n    m_decision_function(x, s);\n    p[0] = m_logistic(s[0]);\n}\n"
    )
    su = (
        "m.c:1:14:m_exp\t16\tstatic\n"
        "m.c:7:6:m_decision_function\t8\tstatic\n"
        "m.c:11:6:m_predict_proba\t40\tstatic\n"
    )  # m_logistic was inlined: no entry of its own
    entries = ["m_decision_function", "m_predict_proba"]
    assert harness.stack_usage(su, source, entries) == 40 + 16
    assert harness.stack_usage("", source, entries) is None


def test_table_bytes_counts_generated_tables() -> None:
    source = (
        "FEDGE_CONST float m_w[30] = {\n};\n"
        "FEDGE_CONST unsigned short m_c[10] = {\n};\n"
        "FEDGE_CONST unsigned char m_f[7] = {\n};\n"
    )
    assert harness.table_bytes(source) == 120 + 20 + 7


# -- footprints -------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_30_feature_logistic_regression_is_under_1_kib_on_cortex_m() -> None:
    require_tool("arm-none-eabi-gcc", "gcc-arm-none-eabi")
    model, _ = _logreg(30)
    for target in ("cortex-m4f", "cortex-m3", "cortex-m0plus", "cortex-m7"):
        fp = measure_footprint(model, target)
        assert fp.fits, fp.message
        assert fp.own_bytes is not None and fp.own_bytes < 1024, fp  # code + weights
        assert fp.flash_bytes >= fp.own_bytes - 64  # plus the libm/soft-float it calls
        assert fp.ram_bytes <= 128 and fp.stack_bytes is not None and fp.stack_bytes < 256
        assert "the model fits" in fp.message


@pytest.mark.slow
def test_a_500_tree_forest_does_not_fit_an_arduino_uno() -> None:
    _require("arduino-uno")
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    X, y = make_classification(300, 10, random_state=0)
    forest = RandomForestClassifier(500, max_depth=8, random_state=0).fit(X, y)
    fp = measure_footprint(forest, "arduino-uno")
    assert not fp.fits and not fp.fits_flash and fp.fits_ram
    assert fp.flash_bytes > 32768 and fp.flash_budget == 32768
    assert "does not fit arduino-uno (flash)" in fp.message
    assert "32,768 B" in fp.message and f"{fp.flash_bytes:,} B" in fp.message
    assert "quantize" in fp.message and "fewer" in fp.message
    with pytest.raises(ToolchainError, match="does not fit arduino-uno") as info:
        verify_on_device(forest, X[:3].astype(np.float32), "arduino-uno")
    assert "region" not in str(info.value) and "ld returned" not in str(info.value)
    assert measure_footprint(forest, "cortex-m4f").fits


@pytest.mark.slow
def test_a_model_too_large_to_compile_for_avr_still_gets_a_footprint() -> None:
    _require("arduino-uno")
    model, _ = _logreg(9000)  # a 36 KB weight table: avr-gcc refuses arrays over 32 KiB
    fp = measure_footprint(model, "arduino-uno")
    assert not fp.fits and fp.lower_bound and fp.flash_bytes >= 36000
    assert "at least 36,00" in fp.message and "quantize" in fp.message


@pytest.mark.slow
def test_size_only_targets_measure_but_do_not_run() -> None:
    require_tool("arm-none-eabi-gcc", "gcc-arm-none-eabi")
    model, X = _logreg(8)
    with pytest.raises(ToolchainError, match="size-only"):
        verify_on_device(model, X[:2], "cortex-m7")
    assert measure_footprint(model, "cortex-m0plus").fits


@pytest.mark.slow
def test_rows_are_split_over_several_firmware_runs() -> None:
    _require("esp32c3")
    model, X = _logreg(6, n_classes=3)
    report = verify_on_device(model, X[:20], "esp32c3", max_rows_per_run=8)
    assert report.runs == 3 and report.rows == 20 and report.passed, report.parity


# -- crashes and hangs ------------------------------------------------------------------------

FAULTY = """#include "fedge_port.h"
int main(void)
{
    fedge_port_init();
    fedge_port_write("FEDGE-BEGIN\\n");
#if FEDGE_FAULT == 1
    {
        volatile unsigned long bad = FEDGE_BAD_ADDRESS;
        ((void (*)(void))bad)();
    }
#else
    {
        volatile int spin = 1;
        while (spin) {
        }
    }
#endif
    fedge_port_exit(0);
    return 0;
}
"""
BAD_ADDRESS = {  # calling it faults on each target
    "host": "0x10",
    "raspberry-pi": "0x10",
    "cortex-m4f": "0x0",  # Thumb bit clear: an INVSTATE usage fault
    "cortex-m3": "0x0",
    "esp32c3": "0x10",  # nothing mapped there on QEMU virt
    "arduino-uno": "0x3000",  # erased flash: simavr reports a crash
}


def _faulty_firmware(target: str, tmp_path: Path, fault: int) -> Path:
    t = get_target(target)
    (tmp_path / "fedge_port.h").write_text((TARGETS_DIR / t.port).read_text())
    (tmp_path / "main.c").write_text(FAULTY)
    extra = (f"-DFEDGE_FAULT={fault}", f"-DFEDGE_BAD_ADDRESS={BAD_ADDRESS[target]}")
    objs = [
        compile_object(t, TARGETS_DIR / s, tmp_path / f"s{i}.o") for i, s in enumerate(t.startup)
    ]
    objs.append(compile_object(t, tmp_path / "main.c", tmp_path / "m.o", extra=extra))
    return link_firmware(t, objs, tmp_path / "faulty.elf")


@pytest.mark.slow
@pytest.mark.parametrize("target", RUNNABLE)
def test_a_crashing_firmware_is_a_failure(target: str, tmp_path: Path) -> None:
    _require(target)
    elf = _faulty_firmware(target, tmp_path, fault=1)
    start = time.monotonic()
    done = run_firmware(target, elf, timeout=20)
    assert done.status != 0
    with pytest.raises(ToolchainError, match=f"firmware on {target} failed.*crash"):
        done.check()
    assert time.monotonic() - start < 20


@pytest.mark.slow
@pytest.mark.parametrize("target", ["cortex-m3", "arduino-uno", "esp32c3", "host"])
def test_a_hanging_firmware_is_stopped_at_its_timeout(target: str, tmp_path: Path) -> None:
    _require(target)
    elf = _faulty_firmware(target, tmp_path, fault=2)
    start = time.monotonic()
    with pytest.raises(ToolchainError, match="did not finish within 2 s"):
        run_firmware(target, elf, timeout=2)
    assert time.monotonic() - start < 8


# -- the command line -------------------------------------------------------------------------


def test_fedge_targets_lists_budgets_and_tools(capsys) -> None:
    from tools import run_cli

    code, out, _ = run_cli(capsys, "targets")
    assert code == 0
    for name in DEVICES:
        assert name in out
    assert "32 KiB" in out and "2 KiB" in out and "size only" in out


@pytest.mark.slow
def test_fedge_export_to_a_target_prints_parity_and_footprint(tmp_path, capsys) -> None:
    import re

    import skops.io as sio

    from tools import run_cli

    _require("esp32c3")
    model, X = _logreg(5)
    sio.dump(model, tmp_path / "lr.skops")
    data = tmp_path / "d.csv"
    rows = [",".join([f"f{i}" for i in range(5)] + ["y"])]
    rows += [",".join([repr(float(v)) for v in r] + ["0"]) for r in X[:12]]
    data.write_text("\n".join(rows) + "\n")
    argv = ["export", str(tmp_path / "lr.skops"), "-f", "c", "-o", str(tmp_path / "out")]
    verify = ["--verify", str(data), "--label", "y"]
    code, out, err = run_cli(capsys, *argv, "--target", "esp32c3", *verify)
    assert code == 0, err
    flat = re.sub(r"[│\s]+", " ", out)
    assert "parity on 12 rows" in flat and "bit-exact" in flat and "minstret" in flat
    assert "labels differing from the source model 0" in flat and "fits yes" in flat
    code, out, err = run_cli(capsys, *argv, "--target", "cortex-m7", *verify)
    assert code == 0 and "size-only" in re.sub(r"[│\s]+", " ", out)
    code, _, err = run_cli(capsys, *argv, "--target", "esp8266")
    assert code == 1 and "known targets" in err
