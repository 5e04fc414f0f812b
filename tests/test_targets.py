"""Targets: conf/target/*.yaml, the TFLite op lint, and the compile step with the real vela."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from edgebuild import schema
from edgebuild.engine import StepContext
from edgebuild.errors import EdgebuildError
from edgebuild.resolve import slice_config
from edgebuild.steps import compile as compile_mod
from edgebuild.targets import neutron, oplint, vela
from edgebuild.targets.tflite_ops import builtin_op_names, read_model

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("imx8mp", "imx93", "imx95", "orin_nano", "cpu")
TARGET_KEYS = {f.name for f in fields(schema.TargetConfig)}


def target_yaml(name: str) -> dict:
    return yaml.safe_load((ROOT / "conf" / "target" / f"{name}.yaml").read_text())


def config(target: str, **target_overrides):
    t = {**target_yaml(target), **target_overrides}
    return schema.validate(OmegaConf.create({"target": t}))


# ---------------------------------------------------------------- config files (fast)

@pytest.mark.parametrize("name", TARGETS)
def test_target_yaml_has_exactly_the_schema_keys_and_validates(name):
    data = target_yaml(name)
    assert set(data) == TARGET_KEYS
    assert data["name"] == name and data["ops_source"]
    cfg = config(name)
    assert cfg.target.name == name


@pytest.mark.parametrize("name", TARGETS)
def test_supported_ops_are_real_tflite_builtin_names(name):
    ops = target_yaml(name)["supported_ops"]
    assert oplint.unknown_op_names(ops, builtin_op_names()) == []
    if ops is not None:
        assert len(ops) == len(set(ops)), "duplicate op names"


def test_board_specific_quantization_demands():
    assert target_yaml("imx8mp")["per_channel"] is False       # VeriSilicon NPU: per-tensor
    assert target_yaml("imx93")["compiler"] == "vela"
    assert target_yaml("imx95")["compiler"] == "neutron"
    assert "LOWER BOUND" in target_yaml("imx95")["ops_source"]
    assert target_yaml("orin_nano")["backend"] == "tensorrt"
    assert target_yaml("cpu")["supported_ops"] is None


def test_imx93_op_list_matches_installed_vela_report():
    exe = vela.find_vela(None)
    assert exe is not None, "ethos-u-vela must be installed for the imx93 target"
    assert sorted(target_yaml("imx93")["supported_ops"]) == vela.supported_ops_report(exe)


# ---------------------------------------------------------------- plan-time errors (fast)

def test_missing_compiler_path_is_a_plan_time_error(tmp_path):
    with pytest.raises(EdgebuildError) as e:
        compile_mod._precheck(config("imx93", compiler_path=str(tmp_path / "no-vela")))
    assert e.value.where == "target.compiler_path"


def test_typo_in_supported_ops_is_a_plan_time_error():
    with pytest.raises(EdgebuildError) as e:
        compile_mod._precheck(config("imx8mp", supported_ops=["CONV_2D", "CONV2D"]))
    assert e.value.where == "target.supported_ops" and "CONV2D" in e.value.problem


def test_vela_output_dir_cannot_be_overridden():
    with pytest.raises(EdgebuildError) as e:
        compile_mod._precheck(config("imx93", compiler_args=["--output-dir", "/tmp/x"]))
    assert e.value.where == "target.compiler_args"


def test_vela_arguments_are_a_list_with_u65_default(tmp_path):
    cmd = vela.command(Path("vela"), tmp_path / "m.tflite", tmp_path, ["--optimise", "Size"])
    assert cmd[cmd.index("--accelerator-config") + 1] == "ethos-u65-256" and cmd[-2:] == ["--optimise", "Size"]
    cmd = vela.command(Path("vela"), tmp_path / "m.tflite", tmp_path, ["--accelerator-config", "ethos-u55-128"])
    assert cmd.count("--accelerator-config") == 1


def test_fallback_lint():
    counts = {"CONV_2D": 3, "CUMSUM": 1, "CUSTOM:foo": 2}
    assert oplint.fallback_ops(counts, ["CONV_2D"]) == {"CUMSUM": 1, "CUSTOM:foo": 2}
    assert oplint.fallback_ops(counts, None) == {}


# ---------------------------------------------------------------- real models, real vela (slow)

def _convert(model, path: Path) -> Path:
    import numpy as np
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    conv.representative_dataset = lambda: ([rng.random((1, 32, 32, 3), dtype=np.float32)] for _ in range(8))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type, conv.inference_output_type = tf.uint8, tf.int8
    path.mkdir(parents=True)
    (path / "model.tflite").write_bytes(conv.convert())
    return path


def _keras(cumsum: bool):
    import tensorflow as tf

    inp = tf.keras.Input((32, 32, 3), batch_size=1)
    x = tf.keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = tf.keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = tf.keras.layers.Conv2D(16, 3, strides=2, padding="same")(x)
    if cumsum:   # no NPU of ours runs CUMSUM; the converter keeps it in float between DEQUANTIZE/QUANTIZE
        x = tf.keras.layers.Lambda(lambda t: tf.math.cumsum(t, axis=1))(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inp, tf.keras.layers.Dense(4)(x))


@pytest.fixture(scope="module")
def tflite_dirs(tmp_path_factory):
    """Two real full-INT8 models (uint8 input, per-channel weights): plain conv net and one with CUMSUM."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    root = tmp_path_factory.mktemp("tflite")
    return {"plain": _convert(_keras(False), root / "plain"), "cumsum": _convert(_keras(True), root / "cumsum")}


def run_compile(cfg, tflite_dir: Path, out: Path) -> dict:
    out.mkdir()
    ctx = StepContext("compile", slice_config(cfg, compile_mod.CONFIG), out, inputs={"tflite": tflite_dir})
    compile_mod.compile_step(ctx)
    return json.loads((out / "compile.json").read_text())


@pytest.mark.slow
def test_vela_compiles_a_real_int8_model_fully_on_the_npu(tflite_dirs, tmp_path):
    report = run_compile(config("imx93"), tflite_dirs["plain"], tmp_path / "out")
    c = report["compiler"]
    assert c["name"] == "vela" and c["ran"] is True
    s = c["summary"]
    assert s["cpu_ops"] == 0 and s["npu_ops"] >= 5 and s["cpu_ops_by_name"] == {}
    assert s["accelerator"] == "Ethos_U65_256"
    assert s["sram_kib"] > 0 and s["est_ms"] > 0 and s["cycles_total"] > 0 and s["nn_macs"] > 0
    assert report["fallback_ops"] == {} and report["fallback_source"] == "vela"
    assert report["ops"]["CONV_2D"] == 2
    assert all(ch["ok"] is not False for ch in report["quantization_checks"]), report["quantization_checks"]
    assert (tmp_path / "out" / "model_vela.tflite").is_file()
    assert read_model(tmp_path / "out" / "model_vela.tflite").op_counts() == {"CUSTOM:ethos-u": s["npu_subgraphs"]}


@pytest.mark.slow
def test_unsupported_op_is_flagged_by_vela_and_fail_on_fallback_raises(tflite_dirs, tmp_path):
    report = run_compile(config("imx93"), tflite_dirs["cumsum"], tmp_path / "a")
    assert report["fallback_ops"].get("CUMSUM") == 1 and report["fallback_source"] == "vela"
    assert report["compiler"]["summary"]["cpu_ops"] >= 1
    assert report["lint_fallback_ops"]["CUMSUM"] == 1
    integer_only = next(c for c in report["quantization_checks"] if c["name"] == "integer_only")
    assert integer_only["ok"] is False and "CUMSUM" in integer_only["detail"]
    with pytest.raises(EdgebuildError) as e:
        run_compile(config("imx93", fail_on_fallback=True), tflite_dirs["cumsum"], tmp_path / "b")
    assert e.value.where == "target.fail_on_fallback" and "CUMSUM x1" in e.value.problem


@pytest.mark.slow
def test_imx8mp_lint_flags_cumsum_and_per_channel_weights(tflite_dirs, tmp_path):
    report = run_compile(config("imx8mp"), tflite_dirs["cumsum"], tmp_path / "a")
    assert report["fallback_ops"] == {"CUMSUM": 1} and report["fallback_source"] == "supported_ops"
    assert report["compiler"]["ran"] is False
    weights = next(c for c in report["quantization_checks"] if c["name"] == "weight_granularity")
    assert weights["ok"] is False and "per-tensor" in weights["detail"]   # model is per-channel, NPU wants per-tensor
    with pytest.raises(EdgebuildError, match="CUMSUM"):
        run_compile(config("imx8mp", fail_on_fallback=True), tflite_dirs["cumsum"], tmp_path / "b")
    clean = run_compile(config("imx8mp", fail_on_fallback=True), tflite_dirs["plain"], tmp_path / "c")
    assert clean["fallback_ops"] == {}


@pytest.mark.slow
def test_input_quantization_check_catches_wrong_dtype(tflite_dirs, tmp_path):
    report = run_compile(config("cpu", input_dtype="int8"), tflite_dirs["plain"], tmp_path / "a")
    by_name = {c["name"].split("[")[0]: c for c in report["quantization_checks"]}
    assert by_name["input_dtype"]["ok"] is False                            # model input is uint8
    ok = run_compile(config("cpu"), tflite_dirs["plain"], tmp_path / "b")
    assert all(c["ok"] is not False for c in ok["quantization_checks"])
    assert ok["fallback_ops"] == {} and ok["compiler"]["name"] == "none"


@pytest.mark.slow
def test_neutron_without_converter_reports_why(tflite_dirs, tmp_path):
    if shutil.which(neutron.EXE_NAME):
        pytest.skip("neutron-converter is installed here; this test covers its absence")
    report = run_compile(config("imx95"), tflite_dirs["plain"], tmp_path / "a")
    assert report["compiler"] == {"name": "neutron", "ran": False, "reason": neutron.NOT_FOUND, "summary": {}}
    assert report["fallback_source"] == "supported_ops" and report["fallback_ops"] == {}


@pytest.mark.slow
def test_memory_budget_below_vela_sram_use_fails(tflite_dirs, tmp_path):
    with pytest.raises(EdgebuildError) as e:
        run_compile(config("imx93", memory_limit_kib=1), tflite_dirs["plain"], tmp_path / "a")
    assert e.value.where == "target.memory_limit_kib"


def test_single_output_channel_weights_count_as_either_granularity():
    from edgebuild.targets.tflite_ops import Op, Tensor, TfliteModel

    def w(name, shape, n_scales):
        return Tensor(name, "INT8", shape, (0.1,) * n_scales, (0,) * n_scales, 0, True)

    act = Tensor("x", "INT8", (1, 8, 8, 4), (0.1,), (0,), 0, False)
    tensors = [act, w("per_channel", (4, 3, 3, 4), 4), w("one_channel", (1, 1, 1, 4), 1), act]
    model = TfliteModel([Op("CONV_2D", (0, 1), (3,), 0), Op("CONV_2D", (0, 2), (3,), 0)], [tensors], [0], [3])
    check = next(c for c in oplint.quantization_checks(model, per_channel=True, input_dtype="int8")
                 if c["name"] == "weight_granularity")
    assert check["ok"] is True and "1 per-channel, 0 per-tensor" in check["detail"]
    tensors[1] = w("per_tensor", (4, 3, 3, 4), 1)
    check = next(c for c in oplint.quantization_checks(model, per_channel=True, input_dtype="int8")
                 if c["name"] == "weight_granularity")
    assert check["ok"] is False
