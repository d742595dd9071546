"""The seed API: EdgeModelConverter(target_format=...).convert(...) and save_edge_model(...)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

import fedge
from fedge.deployment import EdgeFormat, EdgeModelConverter
from fedge.deployment.toolchain import compile_c
from fedge.errors import InvalidInputError
from tools import require_tool
from zoo import case


def test_c_code_round_trip_through_the_seed_api(tmp_path) -> None:
    require_tool("gcc", "gcc")
    est = case("mlp_binary").estimator
    converter = EdgeModelConverter(target_format=EdgeFormat.C_CODE)
    code = converter.convert(est, input_shape=(30,))
    files = converter.save_edge_model(code, tmp_path / "heart.c")
    assert [f.name for f in files] == ["heart.c", "heart.h"]
    assert '#include "heart.h"' in (tmp_path / "heart.c").read_text()
    (tmp_path / "main.c").write_text(
        '#include <stdio.h>\n#include "heart.h"\n'
        'int main(void) { float x[30] = {0}; printf("%d\\n", model_predict(x)); return 0; }\n'
    )
    exe = compile_c([tmp_path / "heart.c", tmp_path / "main.c"], tmp_path / "run")
    label = int(
        subprocess.run([str(exe)], capture_output=True, text=True, check=True, timeout=30).stdout
    )
    model = fedge.lower(est)
    assert model.classes[label] == fedge.predict(model, np.zeros((1, 30)), mode="device")[0]


def test_lite_through_the_seed_api(tmp_path) -> None:
    converter = EdgeModelConverter(target_format=EdgeFormat.SKLEARN_LITE)
    artifact = converter.convert(case("lasso").estimator)
    converter.save_edge_model(artifact, tmp_path / "m.fedge")
    assert fedge.ir.models_equal(fedge.load(tmp_path / "m.fedge"), artifact)


def test_wrong_input_shape_and_wrong_suffix() -> None:
    converter = EdgeModelConverter(target_format="c")
    with pytest.raises(InvalidInputError, match=r"input_shape \(4,\) does not fit the model's 30"):
        converter.convert(case("logreg_binary").estimator, input_shape=(4,))
    code = converter.convert(case("logreg_binary").estimator, input_shape=(None, 30))
    with pytest.raises(InvalidInputError, match=r"\.c suffix"):
        converter.save_edge_model(code, "model.txt")


@pytest.mark.parametrize(("fmt", "suffix"), [("tflite", ".tflite"), ("coreml", ".mlmodel")])
def test_every_format_through_the_facade(tmp_path, fmt, suffix) -> None:
    est = case("logreg_binary").estimator
    converter = EdgeModelConverter(target_format=fmt)
    artifact = converter.convert(est)
    files = converter.save_edge_model(artifact, tmp_path / f"m{suffix}")
    data = files[0].read_bytes()
    assert len(data) > 100
    # the same model gives the same bytes
    again = converter.save_edge_model(converter.convert(est), tmp_path / f"n{suffix}")
    assert again[0].read_bytes() == data
