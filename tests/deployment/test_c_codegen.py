"""The C backend's own rules: prefixes, linking two models, sanitizers, golden output, errors."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import fedge
from fedge.deployment import CompiledModel, emit_c
from fedge.deployment.toolchain import HOST_FLAGS, compile_c
from fedge.errors import InvalidInputError, ToolchainError, UnsupportedModelError
from fedge.ir import Linear, Link, Model, Task, TreeEnsemble
from tools import require_tool, run_sanitized
from zoo import case

GOLDEN = Path(__file__).parent.parent / "golden"


def tiny_model() -> Model:
    step = Linear(weights=np.array([[0.5], [-2.0]]), bias=np.array([0.25]))
    return Model(
        steps=(step,),
        task=Task.CLASSIFICATION,
        n_features=2,
        link=Link.LOGISTIC,
        classes=np.array([0, 1]),
        metadata={"source": {"estimator": "tiny"}},
    )


def tiny_trees() -> Model:
    """Two trees: a split with NaN going left over a split with NaN going right, and a leaf."""
    step = TreeEnsemble(
        feature=np.array([1, 0], dtype=np.int32),
        threshold=np.array([0.5, -1.25]),
        left=np.array([1, ~0], dtype=np.int32),
        right=np.array([~1, ~2], dtype=np.int32),
        missing_left=np.array([True, False]),
        leaf_values=np.array([[1.0], [-0.5], [2.0], [0.125]]),
        roots=np.array([0, ~3], dtype=np.int32),
        tree_offset=np.array([0, 0], dtype=np.int32),
        n_features=2,
        n_outputs=1,
        base_score=np.array([0.0]),
    )
    return Model(
        steps=(step,),
        task=Task.REGRESSION,
        n_features=2,
        link=Link.IDENTITY,
        metadata={"source": {"estimator": "tiny trees"}},
    )


@pytest.mark.parametrize(("name", "model"), [("tiny", tiny_model()), ("tiny_trees", tiny_trees())])
def test_golden_files_of_tiny_models(name: str, model: Model) -> None:
    """The exact text of small models (FEDGE_UPDATE_GOLDEN=1 rewrites the files: on purpose
    only, after reading the diff)."""
    code = emit_c(model, name)
    if os.environ.get("FEDGE_UPDATE_GOLDEN") == "1":
        (GOLDEN / f"{name}.h").write_text(code.header)
        (GOLDEN / f"{name}.c").write_text(code.source)
    assert code.header == (GOLDEN / f"{name}.h").read_text()
    assert code.source == (GOLDEN / f"{name}.c").read_text()


def test_tiny_trees_follow_their_missing_value_rules_in_c() -> None:
    require_tool("gcc", "gcc")
    model = tiny_trees()
    X = np.array([[0.0, 0.0], [-2.0, 0.0], [np.nan, 0.0], [0.0, np.nan], [0.0, 0.5], [0.0, 0.75]])
    expected = np.array([2.0, 1.0, 2.0, 2.0, 2.0, -0.5]) + 0.125
    compiled = CompiledModel(model)
    np.testing.assert_array_equal(fedge.predict(model, X, mode="device"), expected)
    np.testing.assert_array_equal(compiled.predict(X), expected)


@pytest.mark.parametrize("prefix", ["", "1abc", "a-b", "int", "x" * 40, "a b"])
def test_invalid_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(InvalidInputError, match="invalid C prefix"):
        emit_c(tiny_model(), prefix)


def test_unknown_layout_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="layout must be one of table, inline"):
        emit_c(tiny_model(), "t", layout="fast")


def test_inline_layout_refuses_large_ensembles(monkeypatch) -> None:
    from fedge.deployment.formats.c import emit

    monkeypatch.setattr(emit, "MAX_INLINE_SPLITS", 10)
    model = fedge.lower(case("forest_binary").estimator)
    with pytest.raises(InvalidInputError, match="inline layout is for small ensembles"):
        emit_c(model, "f", layout="inline")
    assert emit_c(model, "f", layout="table").source  # the table layout takes any size


def test_generation_is_deterministic() -> None:
    model = fedge.lower(case("forest_multiclass").estimator)
    assert emit_c(model, "f").source == emit_c(model, "f").source


@pytest.mark.slow
def test_two_models_link_into_one_program(tmp_path: Path) -> None:
    gcc = require_tool("gcc", "gcc")
    a = emit_c(fedge.lower(case("mlp_binary").estimator), "heart")
    b = emit_c(fedge.lower(case("xgb_multiclass").estimator), "lungs")
    for code in (a, b):
        (tmp_path / f"{code.prefix}.h").write_text(code.header)
        (tmp_path / f"{code.prefix}.c").write_text(code.source)
    # Two translation units include both headers; a C++-style guard check comes free.
    (tmp_path / "main.c").write_text(
        '#include <stdio.h>\n#include "heart.h"\n#include "lungs.h"\n#include "heart.h"\n'
        "int main(void) {\n"
        "    float x1[HEART_N_FEATURES] = {0}, x2[LUNGS_N_FEATURES] = {0};\n"
        '    printf("%d %d\\n", heart_predict(x1), lungs_predict(x2));\n    return 0;\n}\n'
    )
    exe = compile_c(
        [tmp_path / "heart.c", tmp_path / "lungs.c", tmp_path / "main.c"], tmp_path / "both"
    )
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=30, check=True)
    labels = [int(v) for v in out.stdout.split()]
    mlp = fedge.lower(case("mlp_binary").estimator)
    xgbm = fedge.lower(case("xgb_multiclass").estimator)
    assert (
        labels[0]
        == np.flatnonzero(mlp.classes == fedge.predict(mlp, np.zeros((1, 30)), mode="device")[0])[0]
    )
    assert labels[1] == fedge.predict(xgbm, np.zeros((1, 12)), mode="device")[0]
    # And as C++: the extern "C" guards make the same headers link from C++ code.
    if require_tool("g++", "g++"):
        (tmp_path / "main.cpp").write_text(
            '#include "heart.h"\n#include "lungs.h"\n'
            "int main() { float x[LUNGS_N_FEATURES] = {0}; return lungs_predict(x) < 0; }\n"
        )
        for code in (a, b):
            subprocess.run(
                [
                    gcc,
                    *HOST_FLAGS,
                    "-c",
                    str(tmp_path / f"{code.prefix}.c"),
                    "-o",
                    str(tmp_path / f"{code.prefix}.o"),
                ],
                check=True,
                timeout=60,
            )
        subprocess.run(
            [
                "g++",
                "-Wall",
                "-Werror",
                str(tmp_path / "main.cpp"),
                str(tmp_path / "heart.o"),
                str(tmp_path / "lungs.o"),
                "-lm",
                "-o",
                str(tmp_path / "cpp"),
            ],
            check=True,
            timeout=60,
        )


HOSTILE = np.array(
    [np.nan, np.inf, -np.inf, 3.4e38, -3.4e38, 1e-45, -1e-45, 1e-38, 0.0, -0.0], dtype=np.float32
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "forest_nan",
        "mlp_multiclass_tanh",
        "xgb_multiclass_nan",
        "lgbm_binary_nan",
        "logreg_imputed",
        "sgd_log_multiclass",
        "hgb_poisson",
    ],
)
def test_sanitizers_on_hostile_values(tmp_path: Path, name: str) -> None:
    """ASan/UBSan builds fed NaN, +-Inf, huge and denormal values: no error, no crash."""
    done = run_sanitized(tmp_path, emit_c(fedge.lower(case(name).estimator), "m"), HOSTILE)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert b"runtime error" not in done.stderr and len(done.stdout) > 0


def test_missing_compiler_is_a_toolchain_error(tmp_path: Path) -> None:
    (tmp_path / "a.c").write_text("int main(void) { return 0; }\n")
    with pytest.raises(ToolchainError, match="apt-get install no-such-cc"):
        compile_c([tmp_path / "a.c"], tmp_path / "a", compiler="no-such-cc")


def test_compile_errors_are_toolchain_errors(tmp_path: Path) -> None:
    require_tool("gcc", "gcc")
    (tmp_path / "a.c").write_text("int main(void) { return undeclared; }\n")
    with pytest.raises(ToolchainError, match="undeclared"):
        compile_c([tmp_path / "a.c"], tmp_path / "a")


def test_compiled_backend_validates_input() -> None:
    require_tool("gcc", "gcc")
    compiled = CompiledModel(fedge.lower(case("logreg_binary").estimator), prefix="lr")
    with pytest.raises(InvalidInputError, match="X has 3 features, but the model expects 30"):
        compiled.predict(np.zeros((2, 3)))
    with pytest.raises(InvalidInputError, match="NaN"):
        compiled.predict(np.full((1, 30), np.nan))
    with pytest.raises(InvalidInputError, match="float32 range"):
        compiled.predict(np.full((1, 30), 1e300))


def test_a_step_without_c_code_fails_loudly(monkeypatch) -> None:
    from fedge.deployment.formats.c import emit

    monkeypatch.setattr(
        emit._Emitter,
        "step",
        lambda *a: (_ for _ in ()).throw(
            UnsupportedModelError("the C backend cannot emit Foo steps")
        ),
    )
    with pytest.raises(UnsupportedModelError, match="cannot emit"):
        emit_c(tiny_model(), "t")


@pytest.mark.parametrize("name", ["mlp_multiclass_tanh", "sgd_log_multiclass", "ridge_multitarget"])
@pytest.mark.parametrize("vectors", [True, False])
def test_dot_products_equal_device_mode_with_and_without_vectors(
    tmp_path: Path, name: str, vectors: bool
) -> None:
    """The GNU C vector dot products (SSE here) and the four scalar chains (every other
    target, or -DFEDGE_NO_VECTORS) both give device mode's bits, and a layer whose input
    count is not a multiple of 4 included."""
    from fedge.deployment.verify import _split_output, harness_source
    from fedge.ir import runtime

    require_tool("gcc", "gcc")
    c = case(name)
    model = fedge.lower(c.estimator)
    X = runtime.check_input(model, c.dataset.X_test, "device")
    code = emit_c(model, "m")
    assert "M_VECTORS" in code.source
    (tmp_path / "m.h").write_text(code.header)
    (tmp_path / "m.c").write_text(code.source)
    (tmp_path / "main.c").write_text(harness_source(code))
    flags = HOST_FLAGS if vectors else (*HOST_FLAGS, "-DFEDGE_NO_VECTORS")
    exe = compile_c([tmp_path / "m.c", tmp_path / "main.c"], tmp_path / "h", flags=flags)
    raw = subprocess.run([str(exe)], input=X.astype(np.float32).tobytes(), capture_output=True,
                         check=True, timeout=60).stdout
    got = _split_output(raw, code, X.shape[0])["scores"]
    want = runtime.decision_function(model, X, mode="device").reshape(X.shape[0], -1)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_device_dot_product_order_in_c() -> None:
    """1e8 and -1e8 share lane 0 and cancel; the 1s in lanes 1-3 survive (in input order
    every 1 would be lost): the compiled C follows device mode's lanes, not input order."""
    from fedge.deployment.verify import verify_c

    step = Linear(weights=np.array([[1e8], [1.0], [1.0], [1.0], [-1e8]]), bias=np.zeros(1))
    model = Model(steps=(step,), task=Task.REGRESSION, n_features=5, link=Link.IDENTITY)
    report = verify_c(model, np.ones((3, 5)))
    assert report.identical, report
    assert fedge.predict(model, np.ones((1, 5)), mode="device").tolist() == [3.0]
